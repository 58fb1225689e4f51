//! Host images with arbitrary headers (width, height, stride, format, count) through the C entry points
//! that read or write host pixels: mirage_vae_encode, mirage_vae_decode_into, mirage_img2img,
//! mirage_inpaint (images and masks). Each image's buffer holds exactly the bytes its header promises
//! (inputs over 16 MiB are skipped), so AddressSanitizer catches any read or write past them. Property: a
//! documented status with a short message; no access outside the promised bytes; never a crash or leak.

use std::ptr::null_mut;

use mirage::capi::*;

use super::common::{bytes_per_pixel, check, context, Bytes};

/// The bytes an image header promises: the last row needs only its pixels.
fn promised(img: &MirageImage) -> Option<usize> {
    let bpp = bytes_per_pixel(img.format).unwrap_or(4);
    let row = (img.width as usize).checked_mul(bpp)?;
    let stride = if img.stride == 0 { row } else { (img.stride as usize).max(row) };
    if img.height == 0 || row == 0 {
        return Some(0);
    }
    (img.height as usize - 1).checked_mul(stride)?.checked_add(row)
}

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let ctx = context();
    let mut b = Bytes(data);
    let op = b.u8();
    let count = usize::from(b.u8() % 4);
    let (mut w, mut h, mut ch) = (0, 0, 0);
    // SAFETY: a live context.
    unsafe { mirage_context_image_size(ctx, &mut w, &mut h, &mut ch) };
    // Each header: fields from the input, or (a flag bit) the set's own size so that inputs get past the
    // size check to the format and stride rules.
    let header = |b: &mut Bytes| {
        let flags = b.u8();
        let (fw, fh, stride, format) = (b.u32(), b.u32(), b.u32(), b.u32());
        MirageImage {
            width: if flags & 1 != 0 { w } else { fw },
            height: if flags & 2 != 0 { h } else { fh },
            stride: if flags & 4 != 0 { 0 } else { stride },
            format: if flags & 8 != 0 { 1 + format % 3 } else { format },
            data: null_mut(),
        }
    };
    let mut images: Vec<MirageImage> = (0..count).map(|_| header(&mut b)).collect();
    let mut masks: Vec<MirageImage> = (0..count).map(|_| header(&mut b)).collect();
    let mut buffers = Vec::new();
    for img in images.iter_mut().chain(masks.iter_mut()) {
        let Some(n) = promised(img).filter(|&n| n <= 16 << 20) else { return };
        // Exactly `n` bytes (a NULL data pointer when the flag says so and the header promises nothing).
        let mut buf = vec![0u8; n];
        for (i, v) in buf.iter_mut().enumerate() {
            *v = (i * 31) as u8;
        }
        img.data = if n == 0 && op & 0x80 != 0 { null_mut() } else { buf.as_mut_ptr() };
        buffers.push(buf);
    }

    let mut params = std::mem::MaybeUninit::<MirageDiffusionParams>::uninit();
    // SAFETY: a whole struct of its size.
    let params = unsafe {
        mirage_diffusion_params_init(params.as_mut_ptr(), size_of::<MirageDiffusionParams>());
        let mut p = params.assume_init();
        p.steps = 2;
        p.strength = 0.5;
        p
    };
    let statuses = [MIRAGE_OK, MIRAGE_ERR_INVALID_ARGUMENT];
    // SAFETY: every image's data holds the bytes its header promises; the latents and batches are ours.
    unsafe {
        match op % 4 {
            0 => {
                let (mut mean, mut logvar) = (null_mut(), null_mut());
                let s = mirage_vae_encode(ctx, images.as_ptr(), count, &mut mean, &mut logvar);
                check("vae_encode", s, &statuses);
                mirage_latent_free(mean);
                mirage_latent_free(logvar);
            }
            1 => {
                let mut z = null_mut();
                if mirage_vae_sample_prior(ctx, count.max(1), 7, &mut z) == MIRAGE_OK {
                    check("vae_decode_into", mirage_vae_decode_into(ctx, z, images.as_ptr(), count), &statuses);
                }
                mirage_latent_free(z);
            }
            2 => {
                let mut out = null_mut();
                check("img2img", mirage_img2img(ctx, images.as_ptr(), count, &params, &mut out), &statuses);
                mirage_image_batch_free(out);
            }
            _ => {
                let mut out = null_mut();
                let s = mirage_inpaint(ctx, images.as_ptr(), masks.as_ptr(), count, &params, &mut out);
                check("inpaint", s, &statuses);
                mirage_image_batch_free(out);
            }
        }
    }
    drop(buffers);
}
