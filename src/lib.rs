//! mirage: image generation from latent spaces, embeddable from C and C++.
//!
//! Module map (one generation reads top to bottom in [`vae`] today, `pipeline` once diffusion lands):
//! - [`error`]: the one [`Error`] enum and [`Result`].
//! - [`runtime`]: finding and loading libonnxruntime, execution-provider choice and fallback.
//! - [`manifest`]: `models/<set>/manifest.json`, validated before any model file is opened.
//! - [`vae`]: a loaded model set: VAE encode, seeded sampling, decode; U-Net noise prediction.
//! - [`pipeline`]: reverse diffusion: generate, img2img / denoise, inpaint — one readable loop.
//! - [`fashion`]: Fashion-MNIST IDX files (the demo's test images; the trainer's data).
//! - [`image`]: pixel buffers, conversions to and from model tensors, PNG I/O, grids.
//! - [`schedule`]: the cosine diffusion schedule (one source for trainer and runtime).
//! - [`sampler`]: reverse-diffusion samplers (DDIM, DPM-Solver++ 2M) behind one trait.
//! - [`text`]: the text encoder (MiniLM-L6 tokenizer + ONNX session): prompts -> token and sentence embeddings.
//! - [`rng`]: the seeded normal noise every sampler uses (bit-reproducible on one machine).
//! - [`export`]: a small ONNX graph builder and the exporters of our models (no torch needed).
//! - `train` (feature `train`): the libtorch trainer behind `mirage-train`.
//! - [`capi`]: every `extern "C"` item of `include/mirage.h`.

pub mod capi;
pub mod error;
pub mod export;
pub mod fashion;
pub mod image;
pub mod latent;
pub mod limits;
pub mod log;
pub mod manifest;
pub mod model_set;
pub mod pipeline;
pub mod rng;
pub mod runtime;
pub mod sampler;
pub mod schedule;
pub mod text;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};

/// The version of this library (Cargo.toml's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
