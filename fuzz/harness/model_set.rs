//! Opening a model set from a folder of fuzzed files, then using it: a valid tiny set (VAE + U-Net,
//! random weights) with one of its four files (manifest.json, vae_encoder.onnx, vae_decoder.onnx,
//! unet.onnx) replaced, truncated, or overwritten at an offset by the input; optionally with the
//! manifest's sha256 of the changed model updated to match, so that ONNX Runtime parses the damaged
//! bytes instead of the hash check refusing them. Then mirage_context_new, and if it opens, a prior draw,
//! a decode and a one-step generation. Property: a documented status with a short message; never a
//! crash, an abort, a leak or a hang.

use std::ffi::CString;
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use mirage::capi::*;

use super::common::{check, Bytes};

const FILES: [&str; 4] = ["manifest.json", "vae_encoder.onnx", "vae_decoder.onnx", "unet.onnx"];

/// The tiny set's files, and the folder each input is written to.
fn base() -> &'static (Vec<Vec<u8>>, PathBuf) {
    static BASE: OnceLock<(Vec<Vec<u8>>, PathBuf)> = OnceLock::new();
    BASE.get_or_init(|| {
        super::common::quiet();
        let set = super::common::tiny_set();
        let files = FILES.iter().map(|f| std::fs::read(set.join(f)).expect("tiny set file")).collect();
        (files, super::common::scratch("work"))
    })
}

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let (files, work) = base();
    let mut b = Bytes(data);
    let which = usize::from(b.u8()) % FILES.len();
    let how = b.u8();
    let offset = b.u32() as usize;
    let mut contents = files.clone();
    let f = &mut contents[which];
    match how % 3 {
        0 => *f = b.0.to_vec(),
        1 => f.truncate(offset % (f.len() + 1)),
        _ => {
            let at = offset % (f.len() + 1);
            let end = (at + b.0.len()).min(f.len());
            f[at..end].copy_from_slice(&b.0[..end - at]);
        }
    }
    if which > 0 && how & 0x80 != 0 {
        // Keep the manifest's hash in step with the damaged model, so that ONNX Runtime reads it.
        let digest = mirage::manifest::sha256_hex(&contents[which]);
        let old = mirage::manifest::sha256_hex(&files[which]);
        let manifest = String::from_utf8_lossy(&contents[0]).replace(&old, &digest);
        contents[0] = manifest.into_bytes();
    }
    for (name, bytes) in FILES.iter().zip(&contents) {
        std::fs::write(work.join(name), bytes).expect("writing the work set");
    }

    let path = CString::new(work.to_str().expect("UTF-8 temp path")).unwrap();
    let mut ctx = null_mut();
    // SAFETY: valid pointers.
    let status = unsafe { mirage_context_new(path.as_ptr(), null(), &mut ctx) };
    check(
        "mirage_context_new",
        status,
        &[MIRAGE_OK, MIRAGE_ERR_INVALID_MODEL, MIRAGE_ERR_MODEL_NOT_FOUND, MIRAGE_ERR_UNSUPPORTED, MIRAGE_ERR_IO],
    );
    if status != MIRAGE_OK {
        assert!(ctx.is_null(), "a failed open wrote its out-parameter");
        return;
    }
    let runs = [MIRAGE_OK, MIRAGE_ERR_UNSUPPORTED, MIRAGE_ERR_INFERENCE, MIRAGE_ERR_INVALID_ARGUMENT];
    // SAFETY: a live context; params from their init function.
    unsafe {
        let mut z = null_mut();
        let s = mirage_vae_sample_prior(ctx, 2, 1, &mut z);
        check("sample_prior", s, &runs);
        if s == MIRAGE_OK {
            let mut images = null_mut();
            check("decode", mirage_vae_decode(ctx, z, MIRAGE_PIXEL_RGBA8, &mut images), &runs);
            mirage_image_batch_free(images);
        }
        mirage_latent_free(z);
        let mut p = std::mem::MaybeUninit::<MirageDiffusionParams>::uninit();
        mirage_diffusion_params_init(p.as_mut_ptr(), size_of::<MirageDiffusionParams>());
        let mut p = p.assume_init();
        p.steps = 1;
        let mut out = null_mut();
        check("generate", mirage_generate(ctx, &p, &mut out), &runs);
        mirage_image_batch_free(out);
        mirage_context_free(ctx);
    }
}
