//! The limits every layer shares, and the checks that apply them: one constant per limit, so that a model
//! set, the pipeline, the C API and the CLI can never disagree about what is accepted. This module is the
//! bottom of the crate: it imports nothing but the error type.

use crate::error::{Error, Result};

/// Largest batch one call accepts (images, latents, prompts, frames). Far above any sensible use; it keeps a
/// bad `n` from a host from turning into a multi-gigabyte allocation.
pub const MAX_BATCH: usize = 1024;

/// More sampler steps than this are refused: 1000 is the number of levels DDPM trains with; beyond it a
/// sampler only repeats itself while the host waits.
pub const MAX_STEPS: usize = 1000;

/// The largest classifier-free guidance scale, for a call and for a model set's default alike: beyond ~30
/// guidance only saturates colours and breaks images, and a huge value is almost surely a unit mistake.
pub const MAX_GUIDANCE: f32 = 50.0;

/// The most intra-op threads one session may be given. ONNX Runtime starts every thread asked for, and a
/// thread storm (thousands of threads on a few cores) stalls the host instead of helping; no machine this
/// library targets has more cores than this.
pub const MAX_THREADS: usize = 256;

/// The largest model pack file read (`mirage pack`): a Stable-Diffusion-sized set with its text encoder.
pub const MAX_PACK_BYTES: u64 = 8 << 30;

/// The most worker threads one context may run jobs on (`MirageContextParams::workers`): each runs whole
/// generations, whose sessions already use every core, so more than a handful only queue on the model locks.
pub const MAX_WORKERS: usize = 64;

/// The most jobs one context may hold that have not started (`MirageContextParams::max_queued_jobs`);
/// beyond it a submission is refused as busy instead of growing a queue without limit.
pub const MAX_QUEUED_JOBS: usize = 4096;

/// The most values (f32) in one image or one latent of a model set: a 4096 x 4096 RGBA image. A manifest
/// whose image or latent shape is larger is refused when the set is opened.
pub const MAX_ITEM_VALUES: usize = 4096 * 4096 * 4;

/// The most values (f32) in the tensor one call builds: a batch of images, latents or noise (1 GiB). With
/// the largest items a call takes fewer than [`MAX_BATCH`] of them; the error says how many.
pub const MAX_CALL_VALUES: usize = 1 << 28;

/// The largest `manifest.json` or `encoder.json` read (a real one is a few KB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The largest tokenizer file read (MiniLM's is 0.7 MB; CLIP's BPE files are a few MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// The largest ONNX model file read: protobuf's own limit for one message, which ONNX Runtime cannot
/// exceed without external data files.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The values of `n` items of `per_item` values, refused when the product overflows or exceeds
/// [`MAX_CALL_VALUES`]: the check before any buffer of that size is allocated. `what` names the items.
pub fn call_values(n: usize, per_item: usize, what: &str) -> Result<usize> {
    match n.checked_mul(per_item) {
        Some(v) if v <= MAX_CALL_VALUES => Ok(v),
        _ => Err(Error::invalid(format!(
            "{n} {what} of {per_item} values each exceed the limit of {MAX_CALL_VALUES} values per call; at \
             most {} fit",
            MAX_CALL_VALUES / per_item.max(1)
        ))),
    }
}

/// An empty vector with room for `n` values, reserved fallibly: a failed allocation is an error naming
/// `what`, not an abort (Rust's default for a failed allocation, which would end the host process).
pub fn try_vec<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::invalid(format!("{what}: {n} values do not fit in memory ({} bytes)", n.saturating_mul(size_of::<T>())))
    })?;
    Ok(v)
}

/// Checks that a buffer holds `n` (1..=[`MAX_BATCH`]) items of `per_item` values.
pub fn check_batch(n: usize, len: usize, per_item: usize, what: &str) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!("batch size {n} out of range 1..={MAX_BATCH}")));
    }
    if Some(len) != n.checked_mul(per_item) {
        return Err(Error::invalid(format!(
            "{what} buffer has {len} values; {n} x {per_item} expected (wrong size or shape)"
        )));
    }
    Ok(())
}

/// Refuses NaN and infinite values (they would run through every model and come out as garbage).
pub fn check_finite(v: &[f32], what: &str) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::invalid(format!("{what} value {i} is {} (NaN or infinite values are refused)", v[i]))),
        None => Ok(()),
    }
}

/// Refuses a guidance scale that is not a finite number in [0, [`MAX_GUIDANCE`]].
pub fn check_guidance(g: f32) -> Result<()> {
    if !(g.is_finite() && (0.0..=MAX_GUIDANCE).contains(&g)) {
        return Err(Error::invalid(format!("guidance is {g}, must be in [0, {MAX_GUIDANCE}]")));
    }
    Ok(())
}

/// Refuses a thread count above [`MAX_THREADS`] (0 = ONNX Runtime's default).
pub fn check_threads(n: usize, what: &str) -> Result<()> {
    if n > MAX_THREADS {
        return Err(Error::invalid(format!("{what} is {n}, over the limit of {MAX_THREADS} (0 = one per core)")));
    }
    Ok(())
}

/// How messages quote what a caller passed: at most [`QUOTE_CHARS`] characters, escaped (control
/// characters, quotes, invalid UTF-8 as `\u{fffd}`), with the full length in bytes when it was cut, so
/// that a 100 KB string or 2 KB of binary never ends up whole in an error message or a log line.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

/// [`quote`] for a path: its start and its end (where the file name is), escaped, with its length when cut.
pub fn quote_path(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    let chars = s.chars().count();
    if chars <= 2 * QUOTE_CHARS {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(QUOTE_CHARS / 2).collect();
    let tail: String = s.chars().skip(chars - QUOTE_CHARS).collect();
    format!("{:?} (a path of {} bytes)", format!("{head}...{tail}"), path.as_os_str().len())
}

/// A message made by another library from hostile input (serde's "invalid type: string \"...\"", ONNX
/// Runtime's node names) cut to [`CLIP_CHARS`] characters, with its length when cut: such messages can
/// embed a whole 100 KB value.
pub fn clip(message: &str) -> String {
    clip_to(message, CLIP_CHARS)
}

/// [`clip`] to `chars` characters.
pub fn clip_to(message: &str, chars: usize) -> String {
    match message.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}... ({} bytes)", &message[..cut], message.len()),
        None => message.to_string(),
    }
}

/// Characters of another library's message that [`clip`] keeps.
pub const CLIP_CHARS: usize = 240;

/// Characters of a caller's string that [`quote`] keeps.
pub const QUOTE_CHARS: usize = 48;
