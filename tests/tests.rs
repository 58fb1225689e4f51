//! Integration tests as one binary (ripgrep's layout); each module's line says what it covers.

mod util;

// The runtime on real ONNX Runtime: model sets, VAE encode/sample/decode, bad input of every kind.
mod runtime;
// The `mirage` CLI: info, vae sample/walk/encode/decode/reconstruct, demo, argument errors.
mod cli;
// Reverse diffusion (generate, img2img, inpaint, hooks, cancel) with a tiny random-weight U-Net.
mod pipeline;
// Jobs: diffusion advanced in steps on a budget, polled, previewed, cancelled, waited for and taken.
mod jobs;
// Text-to-image: the real MiniLM encoder, a tiny random text-conditioned U-Net, guidance, interpolation.
mod text2img;

// Tileable output: convolutions rewritten to pad circularly, against a reference and on the shipped models.
mod tile;

// Stable-Diffusion-family folders (optimum's ONNX layout): parity with diffusers per scheduler step, the CLI
// and the C API on them, broken folders.
mod diffusers;

// The ONNX exporter and its random-weight fixture, run through ONNX Runtime (no torch needed).
mod export;
// The all-MiniLM-L6-v2 text encoder: export, parity with sentence-transformers, tokenisation, `mirage embed`.
mod text;
// The diffusion U-Net's export: the random fixture on ONNX Runtime; ONNX-vs-tch parity under `train`.
mod unet;
// The trainer: ONNX-vs-tch parity of the exported VAE, a tiny train/resume/eval/export run.
#[cfg(feature = "train")]
mod train;
// Quality figures: Fréchet distance and KID against closed forms, a tiny classifier + `eval fid` run.
#[cfg(feature = "train")]
mod quality;
// The sampleable VAE (models/fashion-vae, dense latent): dense export parity, prior samples are garments
// (and blobs fail the same check), `mirage vae map`, the manifest's `vae.prior`.
mod vae_prior;
// The captioned data sets: `mirage-train prepare emoji|fashion` on the real data, held-out emoji kept out.
#[cfg(feature = "train")]
mod prepare;

// The C API from Rust and from C programs (tests/c/test_api.c, test_diffusion.c), optionally under valgrind.
mod capi;
// Hostile input through the C API: damaged model sets, hostile files, every param at its edges, freed
// handles, a stress run of generations, cancels and frees.
mod hostile;
// NULL in every pointer of every export (read from include/mirage.h), one at a time.
mod nulls;
// The game-loop API from C and C++: jobs on workers and stepped on a frame budget, results written into a
// bottom-up BGRA buffer, checked against the blocking API (tests/c/test_gameloop.c), under valgrind too.
mod gameloop;
// Text-to-image through the C API from C and C++ programs (tests/c/test_text.c, test_text.cpp).
mod capi_text;
// include/mirage.h: freshness against cbindgen, version macros, strict C and C++ builds, the C++ wrapper.
mod header;

// The repository itself: the working tree's size against the device machine's limit.
mod repo;
