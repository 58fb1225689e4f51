//! The U-Net in tch, built from the same block plan as the ONNX exporter ([`UNetArch::plan`]), so the
//! VarStore paths are the exporter's weight names (`down.0.res.1.conv1.weight`, ...). The layer table
//! with shapes is in [`crate::export::unet`]; every operation here has its node-for-node twin there.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::torch_err;
use crate::error::Result;
use crate::export::nn::GROUP_NORM_EPS;
use crate::export::unet::{ResBlock as ResPlan, UNetArch};

/// "down.0.res.1" -> root / "down" / "0" / "res" / "1" (tch joins path parts with '.').
fn sub<'a>(root: &nn::Path<'a>, name: &str) -> nn::Path<'a> {
    name.split('.').fold(root.clone(), |p, part| &p / part)
}

fn conv(p: &nn::Path, c_in: i64, c_out: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, k, nn::ConvConfig { padding: (k - 1) / 2, ..Default::default() })
}

fn norm(p: &nn::Path, groups: i64, c: i64) -> nn::GroupNorm {
    nn::group_norm(p, groups, c, nn::GroupNormConfig { eps: GROUP_NORM_EPS as f64, ..Default::default() })
}

/// GroupNorm, SiLU, conv, + temb projection, GroupNorm, SiLU, conv, + (1x1-projected) input.
#[derive(Debug)]
struct ResBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    temb: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    skip: Option<nn::Conv2D>,
    c_out: i64,
}

impl ResBlock {
    fn new(root: &nn::Path, r: &ResPlan, a: &UNetArch) -> ResBlock {
        let p = sub(root, &r.name);
        ResBlock {
            norm1: norm(&(&p / "norm1"), a.groups, r.c_in),
            conv1: conv(&(&p / "conv1"), r.c_in, r.c_out, 3),
            temb: nn::linear(&p / "temb", a.temb_dims, r.c_out, Default::default()),
            norm2: norm(&(&p / "norm2"), a.groups, r.c_out),
            conv2: conv(&(&p / "conv2"), r.c_out, r.c_out, 3),
            skip: (r.c_in != r.c_out).then(|| conv(&(&p / "skip"), r.c_in, r.c_out, 1)),
            c_out: r.c_out,
        }
    }

    /// x [N, c_in, h, w], temb_act [N, T] -> [N, c_out, h, w].
    fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Tensor {
        let t = self.conv1.forward(&self.norm1.forward(x).silu()); // [N, c_out, h, w]
        let e = self.temb.forward(temb_act).view([-1, self.c_out, 1, 1]); // [N, c_out, 1, 1]
        let t = self.conv2.forward(&self.norm2.forward(&(t + e)).silu());
        let skip = match &self.skip {
            Some(s) => s.forward(x),
            None => x.shallow_clone(),
        };
        skip + t
    }
}

/// Multi-head self-attention over the positions of [N, C, h, w], with a residual.
#[derive(Debug)]
struct Attention {
    norm: nn::GroupNorm,
    qkv: nn::Conv2D,
    proj: nn::Conv2D,
    heads: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let d = c / self.heads;
        let qkv = self.qkv.forward(&self.norm.forward(x)).view([n, 3, self.heads, d, h * w]); // [N, 3, heads, d, L]
        let q = qkv.select(1, 0) * (1.0 / (d as f64).sqrt()); // [N, heads, d, L]
        let k = qkv.select(1, 1);
        let v = qkv.select(1, 2);
        let s = q.transpose(2, 3).matmul(&k); // [N, heads, L, L]
        let p = s.softmax(-1, Kind::Float);
        let o = p.matmul(&v.transpose(2, 3)); // [N, heads, L, d]
        let o = o.transpose(2, 3).contiguous().view([n, c, h, w]); // [N, C, h, w]
        x + self.proj.forward(&o)
    }
}

/// The U-Net's parameters and forward pass.
#[derive(Debug)]
pub struct UNet {
    pub arch: UNetArch,
    /// [1, E/2] angular frequencies (a constant, not a parameter).
    freqs: Vec<f32>,
    lin1: nn::Linear,
    lin2: nn::Linear,
    conv_in: nn::Conv2D,
    down: Vec<Vec<ResBlock>>,
    mid: (ResBlock, Attention, ResBlock),
    up: Vec<(nn::Conv2D, Vec<ResBlock>)>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl UNet {
    /// Creates the layers under `root` (tch's default init: Kaiming-uniform weights, zero biases,
    /// GroupNorm 1 and 0).
    pub fn new(root: &nn::Path, arch: &UNetArch) -> Result<UNet> {
        arch.validate()?;
        let a = arch;
        let plan = a.plan();
        let m = a.widths[a.widths.len() - 1];
        let (e, t, w0) = (a.embedding_dims, a.temb_dims, a.widths[0]);
        let attn = root / "mid" / "attn";
        Ok(UNet {
            arch: a.clone(),
            freqs: a.embedding_frequencies(),
            lin1: nn::linear(root / "emb" / "lin1", e, t, Default::default()),
            lin2: nn::linear(root / "emb" / "lin2", t, t, Default::default()),
            conv_in: conv(&(root / "conv_in"), a.channels, w0, 3),
            down: plan.down.iter().map(|l| l.iter().map(|r| ResBlock::new(root, r, a)).collect()).collect(),
            mid: (
                ResBlock::new(root, &plan.mid[0], a),
                Attention {
                    norm: norm(&(&attn / "norm"), a.groups, m),
                    qkv: conv(&(&attn / "qkv"), m, 3 * m, 1),
                    proj: conv(&(&attn / "proj"), m, m, 1),
                    heads: a.heads,
                },
                ResBlock::new(root, &plan.mid[1], a),
            ),
            up: plan
                .up
                .iter()
                .map(|u| {
                    let c = conv(&sub(root, &u.up_conv.0), u.up_conv.1, u.up_conv.1, 3);
                    (c, u.res.iter().map(|r| ResBlock::new(root, r, a)).collect())
                })
                .collect(),
            norm_out: norm(&(root / "norm_out"), a.groups, w0),
            conv_out: conv(&(root / "conv_out"), w0, a.channels, 3),
        })
    }

    /// The device the parameters live on.
    pub fn device(&self) -> tch::Device {
        self.conv_in.ws.device()
    }

    /// x [N, C, h, w], noise_variance [N, 1] -> predicted noise [N, C, h, w].
    pub fn forward(&self, x: &Tensor, noise_variance: &Tensor) -> Result<Tensor> {
        let f = Tensor::f_from_slice(&self.freqs).map_err(torch_err("unet freqs"))?.view([1, -1]).to_device(x.device()); // [1, E/2]
        let ang = noise_variance * f; // [N, E/2]
        let emb = Tensor::cat(&[ang.sin(), ang.cos()], 1); // [N, E]
        let temb = self.lin2.forward(&self.lin1.forward(&emb).silu()); // [N, T]
        let temb_act = temb.silu();

        let mut h = self.conv_in.forward(x); // [N, w0, h, w]
        let mut skips = Vec::new();
        for level in &self.down {
            for r in level {
                h = r.forward(&h, &temb_act);
                skips.push(h.shallow_clone());
            }
            h = h.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>); // [N, c, h/2, w/2]
        }
        h = self.mid.0.forward(&h, &temb_act);
        h = self.mid.1.forward(&h);
        h = self.mid.2.forward(&h, &temb_act);
        for (up_conv, res) in &self.up {
            let (_, _, hh, ww) = h.size4().map_err(torch_err("unet up"))?;
            // With an explicit output size torch reads source index floor(dst * in / out) = floor(dst / 2):
            // ONNX's Resize nearest, asymmetric, floor.
            h = up_conv.forward(&h.upsample_nearest2d([2 * hh, 2 * ww], None::<f64>, None::<f64>)); // [N, c, 2h', 2w']
            for r in res {
                let skip = skips.pop().ok_or_else(|| crate::Error::invalid("U-Net: skip stack underflow"))?;
                h = r.forward(&Tensor::cat(&[&h, &skip], 1), &temb_act); // [N, c + c_skip] -> [N, w_i]
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward(&h).silu())) // [N, C, h, w]
    }
}
