//! Writing our models as ONNX, without torch.
//!
//! tch cannot call `torch.onnx`, so the exporter is our own: [`onnx::GraphBuilder`] assembles ONNX protobuf
//! messages, and one module per model (today [`vae`]) mirrors that model's `forward` node by node, reading
//! its weights from a flat name -> tensor map whose names are the trainer's VarStore paths. Every exported
//! graph is checked against the trainer's own forward pass by the parity tests (`tests/train.rs`).
//!
//! This module lives in the runtime crate (no `train` feature needed) so that tests and hosts can make
//! small random-weight model sets without libtorch ([`vae::write_random_set`]).

pub mod minilm;
pub mod nn;
pub mod onnx;
pub mod unet;
pub mod vae;
