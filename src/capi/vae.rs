//! The VAE of a context: encode images to latents, sample, draw from the prior, decode.

use super::boundary::{self, handle, out, slice};
use super::context::MirageContext;
use super::image::{channels_of, read_images, Layout, MirageImage, MirageImageBatch, MiragePixelFormat};
use super::latent::MirageLatent;
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::image::{from_model, to_model, Image};
use crate::latent::{prior_latents, sample_latent};
use crate::limits::MAX_BATCH;

/// Checks that `latent` is a batch of the context's latents; returns the batch size.
fn batch_of(ctx: &MirageContext, latent: &MirageLatent, name: &str) -> Result<usize> {
    let [c, h, w] = ctx.set.latent_shape()?;
    let [n, lc, lh, lw] = latent.shape;
    if [lc, lh, lw] != [c, h, w] {
        return Err(Error::invalid(format!(
            "{name} has shape {:?}; this model set's latents are [n, {c}, {h}, {w}]",
            latent.shape
        )));
    }
    Ok(n as usize)
}

fn check_count(count: usize, name: &str) -> Result<()> {
    if count == 0 || count > MAX_BATCH {
        return Err(Error::invalid(format!("{name} is {count}, out of range 1..={MAX_BATCH}")));
    }
    Ok(())
}

/// Encodes `count` images into the latent distribution the VAE gives each: on success `*mean` and
/// `*logvar` receive new latents of shape {count, channels, height, width} (see
/// `mirage_context_latent_shape`), owned by the caller and freed with `mirage_latent_free`.
///
/// `images` is an array of `count` host images, read during the call and not kept. Each must have exactly
/// the set's width, height and channel count (`mirage_context_image_size`: a grey set takes
/// MIRAGE_PIXEL_GRAY8); any stride is honoured. Runs the encoder session (locks it for the call).
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `mean == logvar`, `count` 0 or over 1024, an image
/// of the wrong size or format, a bad stride), MIRAGE_ERR_UNSUPPORTED (no VAE), MIRAGE_ERR_INFERENCE.
#[no_mangle]
pub unsafe extern "C" fn mirage_vae_encode(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    mean: *mut *mut MirageLatent,
    logvar: *mut *mut MirageLatent,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, mean_out, logvar_out) = unsafe { (handle(ctx, "ctx")?, out(mean, "mean")?, out(logvar, "logvar")?) };
        if mean == logvar {
            return Err(Error::invalid("mean and logvar point to the same place; one result would be lost"));
        }
        // SAFETY: `count` host images (caller's promise).
        let host = unsafe { read_images(images, count, "images", &ctx.set.manifest().image) }?;
        let x = to_model(&host, &ctx.set.manifest().image)?;
        let (m, lv) = ctx.set.encode(&x, count)?;
        let [c, h, w] = ctx.set.latent_shape()?;
        let shape = [count as u32, c, h, w];
        let (m, lv) = (MirageLatent::new(shape, m)?, MirageLatent::new(shape, lv)?);
        mean_out.write(m.into_raw());
        logvar_out.write(lv.into_raw());
        Ok(())
    })
}

/// Draws one latent per item from the distributions `mean`, `logvar` (as `mirage_vae_encode` gives them):
/// z = mean + exp(logvar / 2) * eps, with eps standard-normal noise from `seed`. The same inputs and seed
/// give the same bits. On success `*out` receives a new latent of the same shape, owned by the caller.
///
/// `mean` and `logvar` are read during the call and not kept; they must have the same shape, one that
/// matches the context's latents, and finite values.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, mismatched shapes, NaN or infinite values),
/// MIRAGE_ERR_UNSUPPORTED (no VAE).
#[no_mangle]
pub unsafe extern "C" fn mirage_vae_sample(
    ctx: *const MirageContext,
    mean: *const MirageLatent,
    logvar: *const MirageLatent,
    seed: u64,
    out: *mut *mut MirageLatent,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, mean, logvar, result) = unsafe {
            (handle(ctx, "ctx")?, handle(mean, "mean")?, handle(logvar, "logvar")?, boundary::out(out, "out")?)
        };
        batch_of(ctx, mean, "mean")?;
        batch_of(ctx, logvar, "logvar")?;
        if mean.shape != logvar.shape {
            return Err(Error::invalid(format!(
                "mean has shape {:?} but logvar {:?}; they must be equal",
                mean.shape, logvar.shape
            )));
        }
        let z = sample_latent(&mean.data, &logvar.data, seed)?;
        result.write(MirageLatent::new(mean.shape, z)?.into_raw());
        Ok(())
    })
}

/// Draws `count` random points of the prior N(0, I), shaped as the context's latents: decode them to get
/// new images. The same seed gives the same bits. On success `*out` receives a new latent of shape
/// {count, channels, height, width}, owned by the caller.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx` or `out`, `count` 0 or over 1024),
/// MIRAGE_ERR_UNSUPPORTED (no VAE).
///
/// Decoded, these points are images only on a set made for it: see `mirage_context_prior_sampleable`.
#[no_mangle]
pub unsafe extern "C" fn mirage_vae_sample_prior(
    ctx: *const MirageContext,
    count: usize,
    seed: u64,
    out: *mut *mut MirageLatent,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, result) = unsafe { (handle(ctx, "ctx")?, boundary::out(out, "out")?) };
        check_count(count, "count")?;
        let [c, h, w] = ctx.set.latent_shape()?;
        let z = prior_latents(ctx.set.latent_len()?, count, seed)?;
        result.write(MirageLatent::new([count as u32, c, h, w], z)?.into_raw());
        Ok(())
    })
}

/// Whether the set's VAE was made for decoding points of its prior N(0, I) (`"prior": "sampleable"` in the
/// set's manifest, e.g. models/fashion-vae): `*sampleable` is true when `mirage_vae_sample_prior` +
/// `mirage_vae_decode` give images, false when they may give blobs (a VAE trained for reconstruction and for
/// diffusion in its latent space; such a set draws new images with `mirage_generate`). Hosts can offer
/// prior sampling and latent walks only where it is true, or warn.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set has no VAE).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_prior_sampleable(
    ctx: *const MirageContext,
    sampleable: *mut bool,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, result) = unsafe { (handle(ctx, "ctx")?, boundary::out(sampleable, "sampleable")?) };
        result.write(ctx.set.prior_sampleable()?);
        Ok(())
    })
}

/// Decodes latents into images of `format` (converted from the set's channels: grey is replicated into
/// RGB, alpha is 255). On success `*out` receives a new batch of n images of the set's size, owned by the
/// caller and freed with `mirage_image_batch_free`. `latents` is read during the call and not kept. Runs
/// the decoder session (locks it for the call).
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a shape that does not match the context's latents,
/// NaN or infinite values, an unknown format), MIRAGE_ERR_UNSUPPORTED (no VAE), MIRAGE_ERR_INFERENCE.
#[no_mangle]
pub unsafe extern "C" fn mirage_vae_decode(
    ctx: *const MirageContext,
    latents: *const MirageLatent,
    format: MiragePixelFormat,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, latents, result) =
            unsafe { (handle(ctx, "ctx")?, handle(latents, "latents")?, boundary::out(out, "out")?) };
        let channels = channels_of(format, "format")?;
        let images = decode(ctx, latents)?.iter().map(|img| img.to_channels(channels)).collect::<Result<Vec<_>>>()?;
        result.write(MirageImageBatch::into_raw(images, format));
        Ok(())
    })
}

/// Decodes latents straight into host-owned pixels (a texture, a canvas): `images` is an array of `count`
/// host images, one per latent (`count` must equal the latents' n), each of the set's width and height, in
/// any MIRAGE_PIXEL_* format (converted as in `mirage_vae_decode`) and any stride. Only the pixels of each
/// row are written, and only on success: every argument is checked and the decoder has run before the
/// first byte is written. Nothing is kept after the call.
///
/// Errors: as `mirage_vae_decode`, plus MIRAGE_ERR_INVALID_ARGUMENT for a wrong `count`, image size, format
/// or stride, or NULL `data`.
#[no_mangle]
pub unsafe extern "C" fn mirage_vae_decode_into(
    ctx: *const MirageContext,
    latents: *const MirageLatent,
    images: *const MirageImage,
    count: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, latents) = unsafe { (handle(ctx, "ctx")?, handle(latents, "latents")?) };
        let n = batch_of(ctx, latents, "latents")?;
        if count != n {
            return Err(Error::invalid(format!("count is {count} but latents holds {n} latents")));
        }
        // SAFETY: `count` host images (caller's promise).
        let targets = unsafe { slice(images, count, "images") }?;
        let spec = &ctx.set.manifest().image;
        let layouts = targets
            .iter()
            .enumerate()
            .map(|(k, img)| {
                if (img.width, img.height) != (spec.width, spec.height) {
                    return Err(Error::invalid(format!(
                        "images[{k}] is {}x{}; this model set makes {}x{} images",
                        img.width, img.height, spec.width, spec.height
                    )));
                }
                Layout::of(img, &format!("images[{k}]"))
            })
            .collect::<Result<Vec<_>>>()?;
        let decoded = decode(ctx, latents)?;
        for ((layout, target), image) in layouts.iter().zip(targets).zip(&decoded) {
            // SAFETY: the layout was checked against this target; its pixels are writable (caller's promise).
            unsafe { layout.write(image, target) }?;
        }
        Ok(())
    })
}

/// Runs the decoder on a checked batch; images in the set's own channel count.
fn decode(ctx: &MirageContext, latents: &MirageLatent) -> Result<Vec<Image>> {
    let n = batch_of(ctx, latents, "latents")?;
    let y = ctx.set.decode(&latents.data, n)?;
    from_model(&y, n, &ctx.set.manifest().image)
}
