//! The VAE in tch, built from the same layer plan as the ONNX exporter ([`VaeArch::encoder_plan`],
//! [`VaeArch::decoder_plan`]), so the VarStore paths are the exporter's weight names
//! (`enc.conv_in.weight`, ...). The full layer table with shapes is in [`crate::export::vae`].

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::torch_err;
use crate::error::{Error, Result};
use crate::export::vae::{ConvLayer, LayerKind, VaeArch, Weights};

/// One layer of a plan, with its SiLU flag.
#[derive(Debug)]
enum Layer {
    Conv(nn::Conv2D, bool),
    Up(nn::ConvTranspose2D, bool),
}

impl Layer {
    fn new(root: &nn::Path, l: &ConvLayer) -> Layer {
        // "enc.level0.conv" -> root / "enc" / "level0" / "conv": tch paths are joined with '.'.
        let p = l.name.split('.').fold(root.clone(), |p, part| &p / part);
        match l.kind {
            LayerKind::Conv => {
                let cfg = nn::ConvConfig { stride: l.stride, padding: l.padding, ..Default::default() };
                Layer::Conv(nn::conv2d(&p, l.c_in, l.c_out, l.kernel, cfg), l.silu)
            }
            LayerKind::ConvTranspose => {
                let cfg = nn::ConvTransposeConfig { stride: l.stride, padding: l.padding, ..Default::default() };
                Layer::Up(nn::conv_transpose2d(&p, l.c_in, l.c_out, l.kernel, cfg), l.silu)
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (h, silu) = match self {
            Layer::Conv(c, s) => (c.forward(x), *s),
            Layer::Up(c, s) => (c.forward(x), *s),
        };
        if silu {
            h.silu()
        } else {
            h
        }
    }
}

/// The VAE's parameters and forward pass.
#[derive(Debug)]
pub struct Vae {
    pub arch: VaeArch,
    enc: Vec<Layer>,
    dec: Vec<Layer>,
}

impl Vae {
    /// Creates the layers under `root` (tch's default init: Kaiming-uniform weights, zero biases).
    pub fn new(root: &nn::Path, arch: &VaeArch) -> Result<Vae> {
        arch.validate()?;
        let enc = arch.encoder_plan().iter().map(|l| Layer::new(root, l)).collect();
        let dec = arch.decoder_plan().iter().map(|l| Layer::new(root, l)).collect();
        Ok(Vae { arch: arch.clone(), enc, dec })
    }

    /// image [N, C, H, W] in [-1, 1] -> (mean, logvar), each [N, Cz, h, w].
    pub fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let p = self.arch.pad;
        // [N, C, H+2p, W+2p]; torch's pad list is (left, right, top, bottom) for the last two axes.
        let mut h = if p > 0 { x.pad([p, p, p, p], "constant", self.arch.pad_value as f64) } else { x.shallow_clone() };
        for l in &self.enc {
            h = l.forward(&h);
        }
        // [N, 2 Cz, h, w] -> two [N, Cz, h, w]
        let cz = self.arch.latent_channels;
        let mean = h.narrow(1, 0, cz);
        let logvar = h.narrow(1, cz, cz).clamp(self.arch.logvar_min as f64, self.arch.logvar_max as f64);
        (mean, logvar)
    }

    /// latent [N, Cz, h, w] -> image [N, C, H, W] in (-1, 1).
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let mut h = z.shallow_clone();
        for l in &self.dec {
            h = l.forward(&h);
        }
        let y = h.tanh(); // [N, C, H+2p, W+2p]
        let (p, a) = (self.arch.pad, &self.arch);
        if p > 0 {
            y.narrow(2, p, a.height).narrow(3, p, a.width) // [N, C, H, W]
        } else {
            y
        }
    }

    /// The training forward pass: (reconstruction, mean, logvar), the reconstruction decoded from
    /// z = mean + exp(logvar / 2) * eps with eps ~ N(0, 1) (the reparameterisation trick, so gradients
    /// flow to mean and logvar); with `sample` false, z = mean (what eval and PSNR use).
    pub fn forward(&self, x: &Tensor, sample: bool) -> (Tensor, Tensor, Tensor) {
        let (mean, logvar) = self.encode(x);
        let z = if sample { &mean + (&logvar * 0.5).exp() * mean.randn_like() } else { mean.shallow_clone() };
        (self.decode(&z), mean, logvar)
    }
}

/// Per-image losses of a batch, averaged over the batch (scalars):
/// - `recon`: sum over pixels of the squared error in model space ([-1, 1]),
/// - `kl`: sum over latent elements of KL(N(mean, exp(logvar)) || N(0, 1)) in nats,
///
/// so that `recon + beta * kl` with beta = 1 is the negative ELBO (up to a constant) of a Gaussian decoder
/// with variance 1/2 in model space. Summing over pixels (not averaging) keeps beta's meaning independent
/// of the image size.
pub fn losses(x: &Tensor, recon: &Tensor, mean: &Tensor, logvar: &Tensor) -> (Tensor, Tensor) {
    let n = x.size()[0] as f64;
    let rec = (recon - x).square().sum(Kind::Float) / n;
    let kl = ((mean.square() + logvar.exp() - 1.0 - logvar) * 0.5).sum(Kind::Float) / n;
    (rec, kl)
}

/// Copies every variable of a VarStore out as exporter weights (name -> shape, data), on the CPU.
pub fn weights_of(vs: &nn::VarStore) -> Result<Weights> {
    let mut out = Weights::new();
    for (name, t) in vs.variables() {
        let t = t.f_detach().and_then(|t| t.f_to_device(tch::Device::Cpu)).map_err(torch_err("weights"))?;
        let shape = t.size();
        let flat = t.f_reshape([-1]).map_err(torch_err("weights"))?;
        let data = Vec::<f32>::try_from(&flat).map_err(torch_err(&name))?;
        out.insert(name, (shape, data));
    }
    Ok(out)
}

/// Copies exporter weights into a VarStore's variables (names and shapes must match).
pub fn load_weights(vs: &mut nn::VarStore, weights: &Weights) -> Result<()> {
    let vars = vs.variables();
    if vars.len() != weights.len() {
        return Err(Error::invalid(format!("{} weights for {} variables", weights.len(), vars.len())));
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            let (shape, data) =
                weights.get(&name).ok_or_else(|| Error::invalid(format!("no weight for variable {name}")))?;
            if *shape != var.size() {
                return Err(Error::invalid(format!("{name}: weight {shape:?}, variable {:?}", var.size())));
            }
            let src =
                Tensor::f_from_slice(data).and_then(|t| t.f_reshape(shape.as_slice())).map_err(torch_err(&name))?;
            var.f_copy_(&src).map_err(torch_err(&name))?;
        }
        Ok(())
    })
}
