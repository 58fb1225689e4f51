//! Host targets with arbitrary fields (size, width, height, stride, format, flags, filter) through
//! mirage_image_batch_write, over a buffer of exactly `size` bytes (inputs over 16 MiB skipped), so that
//! AddressSanitizer catches any write outside it. Property: MIRAGE_OK with every byte outside the promised
//! rows untouched, or MIRAGE_ERR_INVALID_ARGUMENT with nothing written at all; never a crash.

use std::ptr::null_mut;
use std::sync::OnceLock;

use mirage::capi::*;

use super::common::{check, context, Bytes};

/// A batch of one decoded image of the fixture set, made once (its address as usize: the batch is
/// immutable and read by one call at a time here).
fn batch() -> *const MirageImageBatch {
    static BATCH: OnceLock<usize> = OnceLock::new();
    *BATCH.get_or_init(|| {
        let ctx = context();
        let (mut z, mut b) = (null_mut(), null_mut());
        // SAFETY: a live context and valid out-pointers.
        unsafe {
            check("sample_prior", mirage_vae_sample_prior(ctx, 1, 3, &mut z), &[MIRAGE_OK]);
            check("decode", mirage_vae_decode(ctx, z, MIRAGE_PIXEL_RGBA8, &mut b), &[MIRAGE_OK]);
            mirage_latent_free(z);
        }
        b as usize
    }) as *const MirageImageBatch
}

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let mut b = Bytes(data);
    let flags = b.u8();
    let size = (b.u32() as usize) & 0xFF_FFFF;
    let mut t = MirageTarget {
        data: null_mut(),
        size,
        width: b.u32() % if flags & 1 != 0 { 300 } else { u32::MAX },
        height: b.u32() % if flags & 1 != 0 { 300 } else { u32::MAX },
        stride: b.u32() as usize % if flags & 2 != 0 { 2000 } else { usize::MAX },
        format: b.u32() % if flags & 4 != 0 { 6 } else { u32::MAX },
        flags: b.u32() % if flags & 8 != 0 { 4 } else { u32::MAX },
        filter: b.u32() % if flags & 16 != 0 { 2 } else { u32::MAX },
    };
    let len = if flags & 32 != 0 { size.saturating_sub(1) } else { size };
    // One guard byte on each side, then exactly `size` bytes promised to the library (`len` really there when
    // a flag shortens it: the target then lies about its size, which the library cannot know: skipped).
    if len != size {
        return;
    }
    let mut buf = vec![0x5Au8; size + 2];
    if flags & 64 == 0 || size == 0 {
        t.data = buf[1..].as_mut_ptr().cast();
    }
    // SAFETY: `t.data` is NULL or holds `size` writable bytes.
    let s = unsafe { mirage_image_batch_write(batch(), (flags >> 7) as usize, &t) };
    check("mirage_image_batch_write", s, &[MIRAGE_OK, MIRAGE_ERR_INVALID_ARGUMENT]);
    assert!(buf[0] == 0x5A && buf[size + 1] == 0x5A, "a guard byte was written");
    if s != MIRAGE_OK {
        assert!(buf.iter().all(|&v| v == 0x5A), "a refused target was written");
    }
}
