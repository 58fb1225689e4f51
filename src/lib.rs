//! mirage: image generation from latent spaces, embeddable from C and C++.
//!
//! Module map, from the bottom up (a module uses only those above it; the C API and the binaries sit on top):
//! - [`error`]: the one [`Error`] enum and [`Result`].
//! - [`limits`]: every limit the layers share (batch, steps, guidance, threads) and the checks applying them.
//! - [`log`]: the log sink (stderr or the host's callback).
//! - [`rng`]: the seeded normal noise every sampler uses (bit-reproducible on one machine).
//! - [`schedule`]: the cosine diffusion schedule (one source for trainer and runtime).
//! - [`sampler`]: reverse-diffusion samplers (DDIM, DPM-Solver++ 2M) behind one trait.
//! - [`image`]: pixel buffers, conversions to and from model tensors, PNG/GIF I/O, grids.
//! - [`pixels`]: writing images into host-owned buffers (formats, strides, row order, alpha, resize).
//! - [`latent`]: the VAE's sampling layer, draws from the prior, slerp walks, `.npy` noise files.
//! - [`digests`]: the optional cache of verified file digests (skips re-hashing unchanged model files).
//! - [`manifest`]: `models/<set>/manifest.json`, validated before any model file is opened.
//! - [`runtime`]: finding and loading libonnxruntime, execution-provider choice and fallback.
//! - [`tile`]: rewriting a graph's convolutions to pad circularly (tileable output), at load time.
//! - [`session`]: one ONNX session as every model uses it (lock, interface check, run).
//! - [`text`]: the text encoder (MiniLM-L6 tokenizer + session): prompts -> token and sentence embeddings.
//! - [`pack`]: the one-file model pack container (`mirage pack`), read from a file or a host's memory.
//! - [`model_set`]: a loaded set: its sessions (VAE, U-Net, text encoder) and what each is fed.
//! - [`pipeline`]: reverse diffusion: generate, img2img / denoise, inpaint, interpolate — one readable loop;
//!   owns the validation of every diffusion parameter.
//! - [`jobs`]: a diffusion plan (or a VAE call) run in steps without blocking its caller; a context's workers.
//! - [`capi`]: every `extern "C"` item of `include/mirage.h`.
//! - [`export`] (feature `export`, on with `cli`): a small ONNX graph builder and the exporters of our models.
//! - [`fashion`] (feature `cli`): Fashion-MNIST IDX files (the CLI demo's test images; the trainer's data).
//! - `train` (feature `train`): the libtorch trainer behind `mirage-train`.

// Every unsafe block says why it is sound (clippy -D warnings in `make lint` turns this into an error).
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "cli")]
pub mod bench;
pub mod capi;
pub mod diffusers;
pub mod digests;
pub mod error;
#[cfg(feature = "export")]
pub mod export;
#[cfg(feature = "cli")]
pub mod fashion;
pub mod files;
pub mod image;
pub mod jobs;
pub mod latent;
pub mod limits;
pub mod log;
pub mod manifest;
pub mod model_set;
pub mod pack;
mod parallel;
pub mod pipeline;
pub mod pixels;
pub mod prompt_cache;
pub mod rng;
pub mod runtime;
pub mod sampler;
pub mod schedule;
pub mod session;
pub mod session_cache;
pub mod text;
pub mod tile;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};

/// The version of this library (Cargo.toml's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
