//! The limits a host can check against before it calls, as header macros: the very values the library
//! enforces (`crate::limits`; the assertion below keeps the two from drifting apart).

use crate::limits;

/// The most images, latents, frames or prompts one call takes (`count`, `frames`, `prompt_count`); with
/// classifier-free guidance `mirage_generate` takes half as many, since both sides run in one batch.
pub const MIRAGE_MAX_BATCH: u32 = 1024;
/// The most sampler steps (`MirageDiffusionParams::steps`).
pub const MIRAGE_MAX_STEPS: u32 = 1000;
/// The largest classifier-free guidance scale (`MirageDiffusionParams::guidance`, and a model set's default).
pub const MIRAGE_MAX_GUIDANCE: f32 = 50.0;
/// The most intra-op threads (`MirageRuntimeOptions::intra_threads`).
pub const MIRAGE_MAX_THREADS: u32 = 256;

const _: () = assert!(
    MIRAGE_MAX_BATCH as usize == limits::MAX_BATCH
        && MIRAGE_MAX_STEPS as usize == limits::MAX_STEPS
        && MIRAGE_MAX_GUIDANCE == limits::MAX_GUIDANCE
        && MIRAGE_MAX_THREADS as usize == limits::MAX_THREADS
);
