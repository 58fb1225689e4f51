//! The C API: every `extern "C"` item of `include/mirage.h` lives here and nowhere else.
//!
//! The header is generated from these files by cbindgen (`cbindgen.toml`; `tests/header.rs` regenerates it
//! and fails when the checked-in copy differs), so the doc comments below are the C documentation.
//!
//! Conventions (DESIGN.md, "The C API in one page"):
//! - Every export runs inside `boundary::run`: a panic becomes `MIRAGE_ERR_PANIC`, a [`crate::Error`]
//!   becomes its status (one mapping, `status::status_of`) and the calling thread's last error message.
//! - Out-parameters are written only on success; NULL pointers give `MIRAGE_ERR_INVALID_ARGUMENT`.
//! - Enumerations are `typedef uint32_t X` plus `#define`d values rather than C enums: a C host can store
//!   any integer in an enum-typed field, and a Rust enum holding a value it does not list is undefined
//!   behaviour. As plain integers every value reaches Rust safely and unknown ones are refused by a check.
//! - Params structs start with `struct_size` (see `boundary::read_params` for the versioning rule).
//! - What a handle borrows, who frees it and how long a returned pointer stays valid is written on each
//!   function.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Every export takes raw pointers from C and so is `unsafe`; its pointer contract is written in its doc in
// C terms (that doc is the header). A Rust-style `# Safety` heading on each would only repeat it.
#![allow(clippy::missing_safety_doc)]

// In the order the header shows them: statuses and errors first, then each object with its functions.
mod status;
// The limits hosts can check against (MIRAGE_MAX_*).
mod limits;
// (the panic boundary and argument checks; no exports but the test-only mirage_debug_panic)
mod boundary;
// Process-wide set-up.
mod runtime;
// A loaded model set.
mod context;
// Pixels in and out.
mod image;
// Latent tensors.
mod latent;
// The VAE operations.
mod vae;
// Diffusion: generate, img2img (denoise), inpaint, interpolate; prompts, callbacks and cancellation.
mod diffusion;
// Text embeddings of text-conditioned sets.
mod text;
// Jobs: every operation without blocking, on workers or stepped by the host; results into host memory.
mod job;

#[cfg(feature = "test-panic")]
pub use boundary::mirage_debug_panic;
pub use context::*;
pub use diffusion::*;
pub use image::*;
pub use job::*;
pub use latent::*;
pub use limits::*;
pub use runtime::*;
pub use status::*;
pub use text::*;
pub use vae::*;
