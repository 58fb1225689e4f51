//! Latents: a batch of latent tensors, NCHW f32, owned by the library.

use super::boundary::{self, arg, handle, handle_type, out, slice, take, Handle};
use super::status::MirageStatus;
use crate::error::{Error, Result};

/// A batch of latents: shape {n, channels, height, width} and n * channels * height * width floats in that
/// (NCHW, row-major) order. Made by `mirage_latent_new` or the `mirage_vae_*` functions, freed by
/// `mirage_latent_free`. Immutable, so several threads may read one latent at once.
pub struct MirageLatent {
    /// [`Handle`]'s tag.
    tag: u64,
    pub(crate) shape: [u32; 4],
    pub(crate) data: Vec<f32>, // (n, c, h, w)
}

handle_type!(MirageLatent, 0x6d69_7261_6765_4c54); // "TLegarim"

impl MirageLatent {
    /// A latent from its shape and data, which must agree.
    pub(crate) fn new(shape: [u32; 4], data: Vec<f32>) -> Result<MirageLatent> {
        let want = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        if shape.contains(&0) || want != Some(data.len()) {
            return Err(Error::invalid(format!(
                "latent shape {shape:?} needs {} floats, got {} (every dimension must be > 0)",
                want.map_or("too many".to_string(), |w| w.to_string()),
                data.len()
            )));
        }
        Ok(MirageLatent { tag: Self::LIVE, shape, data })
    }

    /// Hands the latent to C.
    pub(crate) fn into_raw(self) -> *mut MirageLatent {
        Box::into_raw(Box::new(self))
    }
}

/// Makes a latent from `len` floats at `data` (copied; `data` need not outlive the call) and its
/// `shape[4]` = {n, channels, height, width}; `len` must equal the product of the shape. Any float is
/// accepted here; the `mirage_vae_*` functions refuse NaN and infinity.
///
/// On success `*out` receives a new latent, owned by the caller and freed with `mirage_latent_free`.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a zero dimension, `len` not the shape's product).
/// cbindgen:ptrs-as-arrays=[[shape;4]]
#[no_mangle]
pub unsafe extern "C" fn mirage_latent_new(
    data: *const f32,
    len: usize,
    shape: *const u32,
    out: *mut *mut MirageLatent,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (shape, result) = unsafe { (arg(shape.cast::<[u32; 4]>(), "shape")?, boundary::out(out, "out")?) };
        // SAFETY: `len` readable floats at `data` when not NULL, by the caller's promise.
        let data = unsafe { slice(data, len, "data") }?;
        if data.is_empty() {
            return Err(Error::invalid("len is 0: a latent holds at least one value"));
        }
        result.write(MirageLatent::new(*shape, data.to_vec())?.into_raw());
        Ok(())
    })
}

/// Copies the latent's shape {n, channels, height, width} into `shape[4]`.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
/// cbindgen:ptrs-as-arrays=[[shape;4]]
#[no_mangle]
pub unsafe extern "C" fn mirage_latent_shape(latent: *const MirageLatent, shape: *mut u32) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (latent, result) = unsafe { (handle(latent, "latent")?, out(shape.cast::<[u32; 4]>(), "shape")?) };
        result.write(latent.shape);
        Ok(())
    })
}

/// Gives the latent's floats: `*data` points to `*len` values in NCHW order. Borrowed: the pointer belongs
/// to the latent, stays valid until `mirage_latent_free`, and must only be read.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
#[no_mangle]
pub unsafe extern "C" fn mirage_latent_data(
    latent: *const MirageLatent,
    data: *mut *const f32,
    len: *mut usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (latent, d, n) = unsafe { (handle(latent, "latent")?, out(data, "data")?, out(len, "len")?) };
        d.write(latent.data.as_ptr());
        n.write(latent.data.len());
        Ok(())
    })
}

/// Frees a latent. NULL does nothing. Pointers got from `mirage_latent_data` dangle afterwards.
#[no_mangle]
pub unsafe extern "C" fn mirage_latent_free(latent: *mut MirageLatent) {
    boundary::run_or((), || {
        // SAFETY: made by this library and, by the caller's promise, freed once (a second free is usually
        // caught by the tag and ignored).
        drop(unsafe { take(latent, "latent") });
    })
}
