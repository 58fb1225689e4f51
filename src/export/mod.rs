//! Writing our models as ONNX, without torch (feature `export`, which `cli` and `train` turn on; the
//! runtime library never needs it: it only reads ONNX).
//!
//! tch cannot call `torch.onnx`, so the exporter is our own: [`onnx::GraphBuilder`] assembles ONNX protobuf
//! messages, and one module per model mirrors that model's `forward` node by node, reading its weights from
//! a flat name -> tensor map whose names are the trainer's VarStore paths:
//! - [`vae`]: the VAE encoder and decoder, and `manifest.json`;
//! - [`unet`]: the diffusion U-Net (unconditional or text-conditioned);
//! - [`minilm`]: the pretrained all-MiniLM-L6-v2 text encoder, from its safetensors;
//! - [`nn`]: the layers the U-Net needs (GroupNorm, Linear, attention pieces, pooling, upsampling).
//!
//! Every exported graph is checked against the trainer's own forward pass by the parity tests
//! (`tests/train.rs`). The exporters need no libtorch, so tests make small random-weight model sets with
//! them ([`vae::write_random_set`]).

pub mod minilm;
pub mod nn;
pub mod onnx;
pub mod unet;
pub mod vae;
