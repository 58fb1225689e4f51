//! Text embeddings of a text-conditioned model set: what its U-Net is conditioned on, for hosts that cache,
//! compare or mix prompts themselves.

use std::ffi::c_char;

use super::boundary::{self, handle, out, utf8};
use super::context::MirageContext;
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::model_set::ModelSet;

fn text_shape(set: &ModelSet) -> Result<(u32, u32)> {
    set.require_text().map(|t| (t.tokens, t.width))
}

/// The text conditioning of the set: `*tokens` per prompt ([CLS] and [SEP] included; prompts are padded or
/// truncated to it) and the embedding `*width` (384 for MiniLM-L6). A prompt's token embeddings are
/// tokens x width floats, its pooled embedding width floats.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set's U-Net is not
/// text-conditioned, or it has none).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_text_shape(
    ctx: *const MirageContext,
    tokens: *mut u32,
    width: *mut u32,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, t, w) = unsafe { (handle(ctx, "ctx")?, out(tokens, "tokens")?, out(width, "width")?) };
        let (nt, nw) = text_shape(&ctx.set)?;
        t.write(nt);
        w.write(nw);
        Ok(())
    })
}

/// Embeds `prompt` (UTF-8; "" is the unconditional prompt) with the set's text encoder, into host buffers:
/// `pooled` receives the L2-normalised sentence embedding (`width` floats, `pooled_len` must be at least
/// that), and `token_embeddings`, unless NULL, the per-token embeddings the U-Net attends to (`tokens` x
/// `width` floats, row-major; `tokens_len` at least that). Sizes from `mirage_context_text_shape`. A prompt
/// longer than the set's token count is truncated (and a warning logged). Nothing is written on failure.
/// Locks the text encoder's session for the call.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`, `prompt` or `pooled`, a prompt that is not UTF-8, a
/// buffer too small), MIRAGE_ERR_UNSUPPORTED (the set is not text-conditioned), MIRAGE_ERR_INFERENCE.
#[no_mangle]
pub unsafe extern "C" fn mirage_text_embed(
    ctx: *const MirageContext,
    prompt: *const c_char,
    pooled: *mut f32,
    pooled_len: usize,
    token_embeddings: *mut f32,
    tokens_len: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, prompt) = unsafe { (handle(ctx, "ctx")?, utf8(prompt, "prompt")?) };
        if pooled.is_null() {
            return Err(Error::invalid("pooled is NULL"));
        }
        let (t, w) = text_shape(&ctx.set)?;
        let (t, w) = (t as usize, w as usize);
        if pooled_len < w {
            return Err(Error::invalid(format!("pooled_len is {pooled_len}; the pooled embedding has {w} floats")));
        }
        if !token_embeddings.is_null() && tokens_len < t * w {
            return Err(Error::invalid(format!(
                "tokens_len is {tokens_len}; the token embeddings are {t} x {w} = {} floats",
                t * w
            )));
        }
        let e = ctx.set.encode_prompts(&[prompt])?;
        // SAFETY: the host promises `pooled_len` (>= w, checked) writable floats at `pooled`, and as many as
        // `tokens_len` (>= t * w, checked) at `token_embeddings` when not NULL.
        unsafe {
            std::ptr::copy_nonoverlapping(e.pooled.as_ptr(), pooled, w);
            if !token_embeddings.is_null() {
                std::ptr::copy_nonoverlapping(e.context.as_ptr(), token_embeddings, t * w);
            }
        }
        Ok(())
    })
}
