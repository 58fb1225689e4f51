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
/// The most worker threads of a context (`MirageContextParams::workers`).
pub const MIRAGE_MAX_WORKERS: u32 = 64;
/// The most jobs a context holds that have not started (`MirageContextParams::max_queued_jobs`).
pub const MIRAGE_MAX_QUEUED_JOBS: u32 = 4096;
/// The longest side of a host image or target buffer, in pixels.
pub const MIRAGE_MAX_IMAGE_SIDE: u32 = 4096;

const _: () = assert!(
    MIRAGE_MAX_BATCH as usize == limits::MAX_BATCH
        && MIRAGE_MAX_STEPS as usize == limits::MAX_STEPS
        && MIRAGE_MAX_GUIDANCE == limits::MAX_GUIDANCE
        && MIRAGE_MAX_THREADS as usize == limits::MAX_THREADS
        && MIRAGE_MAX_WORKERS as usize == limits::MAX_WORKERS
        && MIRAGE_MAX_QUEUED_JOBS as usize == limits::MAX_QUEUED_JOBS
        && MIRAGE_MAX_IMAGE_SIDE == crate::image::MAX_IMAGE_SIDE
);
