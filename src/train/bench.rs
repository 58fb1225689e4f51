//! The libtorch side of the benchmarks: what a user would run instead of mirage.
//!
//! - [`TorchUNet`]: a model set's U-Net as the trainer's own tch module, holding the very weights of the
//!   set's `unet.onnx` (its initializers are named by the trainer's VarStore paths, so the ONNX file is read
//!   back into the module), checked against ONNX Runtime on the way in; `mirage bench` times its forward
//!   pass beside mirage's step and the bare ONNX Runtime run.
//! - [`train_steps`]: one training step (forward, loss, backward, AdamW) of each architecture the trainer
//!   makes, on random data of the training shapes: `mirage-train bench`.
//! - [`sgemm_gflops`]: libtorch's single-precision matrix product rate on this machine.

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::torch_err;
use super::unet::{TextInput, UNet};
use super::vae::{load_weights, Vae};
use crate::error::{Error, Result};
use crate::export::onnx::read_initializers;
use crate::export::unet::UNetArch;
use crate::export::vae::{VaeArch, Weights};
use crate::manifest::Manifest;
use crate::model_set::ModelSet;

/// A model set's U-Net in libtorch, with the weights of its ONNX file.
pub struct TorchUNet {
    _vs: nn::VarStore,
    model: UNet,
    /// Max |ONNX Runtime - libtorch| on 4 random inputs: the two hold the same weights.
    pub parity: f32,
}

impl TorchUNet {
    /// The U-Net of `set` as a tch module; None for a set without one or a diffusers folder (whose U-Net is
    /// not ours).
    pub fn from_set(set: &ModelSet) -> Result<Option<TorchUNet>> {
        let Some(spec) = set.manifest().unet.as_ref().filter(|_| !set.is_diffusers()) else { return Ok(None) };
        let arch: UNetArch = serde_json::from_value(spec.architecture.clone())
            .map_err(|e| Error::model(format!("unet.architecture of the manifest: {e}")))?;
        let bytes = Manifest::read_model(set.dir(), &spec.model)?;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = UNet::new(&vs.root(), &arch)?;
        // The initializers that are parameters (the graph also holds constants such as the frequencies).
        let names: std::collections::HashSet<String> = vs.variables().into_keys().collect();
        let weights: Weights = read_initializers(&bytes)?.into_iter().filter(|(n, _)| names.contains(n)).collect();
        load_weights(&mut vs, &weights)?;
        let parity = super::unet_run::check_parity(&model, &bytes, 4, 99)?;
        Ok(Some(TorchUNet { _vs: vs, model, parity }))
    }

    /// Times the forward pass at batch `rows` (inputs of the shapes mirage feeds): [median, p10, p90] ms.
    pub fn time_forward(&self, rows: usize, iters: usize) -> Result<[f64; 3]> {
        let _guard = tch::no_grad_guard();
        let a = &self.model.arch;
        let n = rows as i64;
        let x = Tensor::randn([n, a.channels, a.height, a.width], (Kind::Float, Device::Cpu));
        let nv = Tensor::full([n, 1], 0.5, (Kind::Float, Device::Cpu));
        let text = a.text.as_ref().map(|t| {
            (
                Tensor::randn([n, t.tokens, t.width], (Kind::Float, Device::Cpu)),
                Tensor::randn([n, t.width], (Kind::Float, Device::Cpu)),
            )
        });
        let input = text.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
        crate::bench::time_ms(iters, || self.model.forward(&x, &nv, input.as_ref()).map(|_| ()))
    }
}

/// libtorch's single-precision matrix product on this machine, in GFLOP/s (best of `runs` n x n x n).
pub fn sgemm_gflops(n: i64, runs: usize) -> f64 {
    let _guard = tch::no_grad_guard();
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let mut best = f64::INFINITY;
    for i in 0..runs + 2 {
        let t = std::time::Instant::now();
        let _ = a.matmul(&b);
        if i >= 2 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// One architecture's training step, timed.
#[derive(Debug, serde::Serialize)]
pub struct StepTiming {
    pub model: String,
    pub batch: usize,
    pub parameters: i64,
    /// [median, p10, p90] ms of forward + loss + backward + AdamW step.
    pub step_ms: [f64; 3],
}

/// One training step of each architecture the trainer makes, at its training batch size, on random data
/// of the training shapes (the data pipeline is not timed): the VAEs of the Fashion and emoji sets
/// (reconstruction + KL, the sampling layer on) and the U-Nets of the Fashion and text-to-image sets (noise
/// prediction MSE).
pub fn train_steps(iters: usize) -> Result<Vec<StepTiming>> {
    let mut out = Vec::new();
    for (name, arch, batch) in [
        ("vae fashion (spatial)", VaeArch::fashion(), 128usize),
        ("vae fashion-dense", VaeArch::fashion_dense(), 128),
        ("vae emoji", VaeArch::emoji(), 32),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Vae::new(&vs.root(), &arch)?;
        let mut opt = nn::AdamW::default().build(&vs, 1e-3).map_err(torch_err("bench: AdamW"))?;
        let x = Tensor::rand([batch as i64, arch.channels, arch.height, arch.width], (Kind::Float, Device::Cpu)) * 2.0
            - 1.0;
        let step_ms = crate::bench::time_ms(iters, || {
            let (recon, mean, logvar) = model.forward(&x, true);
            let (rec, kl) = super::vae::losses(&x, &recon, &mean, &logvar);
            opt.backward_step(&(rec + kl * 1e-3));
            Ok(())
        })?;
        out.push(StepTiming { model: name.into(), batch, parameters: count(&vs), step_ms });
    }
    for (name, arch, batch) in [
        ("unet fashion (latent)", UNetArch::by_name("fashion", [4, 8, 8])?, 128usize),
        ("unet text (emoji latent)", UNetArch::by_name("text", [4, 8, 8])?, 64),
        ("unet text (emoji v2 latent)", UNetArch::by_name("text", [4, 16, 16])?, 64),
        ("unet text-deep (emoji v2 latent)", UNetArch::by_name("text-deep", [4, 16, 16])?, 64),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = UNet::new(&vs.root(), &arch)?;
        let mut opt = nn::AdamW::default().build(&vs, 1e-3).map_err(torch_err("bench: AdamW"))?;
        let n = batch as i64;
        let x = Tensor::randn([n, arch.channels, arch.height, arch.width], (Kind::Float, Device::Cpu));
        let eps = Tensor::randn([n, arch.channels, arch.height, arch.width], (Kind::Float, Device::Cpu));
        let nv = Tensor::rand([n, 1], (Kind::Float, Device::Cpu));
        let text = arch.text.as_ref().map(|t| {
            (
                Tensor::randn([n, t.tokens, t.width], (Kind::Float, Device::Cpu)),
                Tensor::randn([n, t.width], (Kind::Float, Device::Cpu)),
            )
        });
        let input = text.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
        let step_ms = crate::bench::time_ms(iters, || {
            let pred = model.forward(&x, &nv, input.as_ref())?;
            opt.backward_step(&(pred - &eps).square().mean(Kind::Float));
            Ok(())
        })?;
        out.push(StepTiming { model: name.into(), batch, parameters: count(&vs), step_ms });
    }
    Ok(out)
}

fn count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}
