//! The diffusion params struct as raw bytes through the C entry points (mirage_generate, img2img,
//! denoise, inpaint, interpolate) on a tiny random-weight set: every field as the bytes say (struct_size,
//! steps, eta, seed, count, strength, format, guidance, the bytes past the struct), except what no host
//! could pass as raw bytes: the string pointers (NULL or strings from the input) and the callbacks (NULL
//! or ours, which cancel after 1 to 3 calls, so that a run is bounded). Property: a documented status
//! with a short message, never a crash, abort, leak or hang.

use std::ffi::CString;
use std::ptr::{null, null_mut};

use mirage::capi::*;

use super::common::{bytes_per_pixel, check, context, Bytes};

const SIZE: usize = size_of::<MirageDiffusionParams>();

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let ctx = context();
    let mut b = Bytes(data);
    let op = b.u8();
    let flags = b.u8();
    // The struct: `struct_size` and the rest of its first SIZE bytes straight from the input, then as many
    // bytes past it as struct_size claims (up to 4 KiB, beyond which the library reads only struct_size).
    let raw = b.take(SIZE).to_vec();
    // struct_size as the library will read it: the first 8 bytes, zero-padded when the input is shorter.
    let mut head = [0u8; 8];
    head[..raw.len().min(8)].copy_from_slice(&raw[..raw.len().min(8)]);
    let claimed = usize::from_le_bytes(head);
    let tail_len = claimed.saturating_sub(SIZE).min(4096);
    let mut words = vec![0u64; (SIZE + tail_len).div_ceil(8)];
    // SAFETY: `words` holds at least SIZE + tail_len bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), SIZE + tail_len) };
    bytes[..raw.len()].copy_from_slice(&raw);
    let tail = b.take(tail_len).to_vec();
    bytes[SIZE..SIZE + tail.len()].copy_from_slice(&tail);
    let p = words.as_mut_ptr().cast::<MirageDiffusionParams>();

    let strings: Vec<CString> = (0..4).map(|_| b.c_string()).collect();
    let pick = |sel: u8| if sel & 1 == 0 { null() } else { strings[usize::from(sel >> 1) % 4].as_ptr() };
    let mut calls_left = u32::from(flags % 3) + 1;
    // SAFETY: `p` points to SIZE + tail_len aligned bytes; the pointer fields are written as whole values
    // before the struct is read as a MirageDiffusionParams.
    unsafe {
        (&raw mut (*p).sampler).write(pick(flags >> 2));
        (&raw mut (*p).prompt).write(pick(flags >> 4));
        (&raw mut (*p).negative_prompt).write(pick(flags >> 5));
        (&raw mut (*p).progress).write(if flags & 0x40 == 0 { None } else { Some(super::common::progress) });
        (&raw mut (*p).preview).write(if flags & 0x80 == 0 { None } else { Some(super::common::preview) });
        (&raw mut (*p).user_data).write((&raw mut calls_left).cast());
        if flags & 0xC0 == 0 {
            // No callback to stop it: keep the run small (the struct's other fields stay as fuzzed).
            (&raw mut (*p).steps).write((*p).steps % 4);
            (&raw mut (*p).count).write((*p).count % 4);
        }
    }

    // Host images of the set's size and format for the image operations.
    let (mut w, mut h, mut ch) = (0, 0, 0);
    // SAFETY: a live context, valid pointers.
    unsafe { mirage_context_image_size(ctx, &mut w, &mut h, &mut ch) };
    let format = [MIRAGE_PIXEL_GRAY8, MIRAGE_PIXEL_RGB8, MIRAGE_PIXEL_RGBA8][usize::from(flags) % 3];
    let n = 1 + usize::from(op >> 4) % 3;
    let bpp = bytes_per_pixel(format).unwrap();
    let mut pixels = vec![0x80u8; w as usize * h as usize * bpp * n];
    let mut masks = vec![0u8; w as usize * h as usize * n];
    masks.iter_mut().step_by(3).for_each(|m| *m = 255);
    let image = |buf: &mut [u8], i: usize, format, bpp: usize| MirageImage {
        width: w,
        height: h,
        stride: 0,
        format,
        data: buf[i * w as usize * h as usize * bpp..].as_mut_ptr(),
    };
    let images: Vec<MirageImage> = (0..n).map(|i| image(&mut pixels, i, format, bpp)).collect();
    let mask_images: Vec<MirageImage> = (0..n).map(|i| image(&mut masks, i, MIRAGE_PIXEL_GRAY8, 1)).collect();
    let prompts: Vec<*const std::ffi::c_char> = strings.iter().map(|s| s.as_ptr()).collect();

    let mut out = null_mut();
    // SAFETY: every pointer is valid for what it promises: the params struct for struct_size bytes (up to
    // 4 KiB; larger sizes are refused after reading the size), the images for their size.
    let status = unsafe {
        match op % 5 {
            0 => mirage_generate(ctx, p, &mut out),
            1 => mirage_img2img(ctx, images.as_ptr(), n, p, &mut out),
            2 => mirage_denoise(ctx, images.as_ptr(), n, p, &mut out),
            3 => mirage_inpaint(ctx, images.as_ptr(), mask_images.as_ptr(), n, p, &mut out),
            _ => mirage_interpolate(
                ctx,
                prompts.as_ptr(),
                2 + usize::from(op >> 6) % 3,
                u32::from(flags >> 5),
                p,
                &mut out,
            ),
        }
    };
    check(
        "diffusion call",
        status,
        &[MIRAGE_OK, MIRAGE_ERR_INVALID_ARGUMENT, MIRAGE_ERR_UNSUPPORTED, MIRAGE_ERR_CANCELLED],
    );
    assert_eq!(status == MIRAGE_OK, !out.is_null(), "a result exactly when the call succeeds");
    // SAFETY: NULL or a batch of this library.
    unsafe { mirage_image_batch_free(out) };
}
