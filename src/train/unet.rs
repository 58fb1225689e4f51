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

/// Cross-attention from [N, C, h, w] features to [N, L, W] token embeddings, with a residual (the exporter's
/// `cross_attention`).
#[derive(Debug)]
struct CrossAttention {
    norm: nn::GroupNorm,
    q: nn::Conv2D,
    k: nn::Linear,
    v: nn::Linear,
    proj: nn::Conv2D,
    heads: i64,
}

impl CrossAttention {
    fn new(p: &nn::Path, a: &UNetArch, c: i64, width: i64) -> CrossAttention {
        CrossAttention {
            norm: norm(&(p / "norm"), a.groups, c),
            q: conv(&(p / "q"), c, c, 1),
            k: nn::linear(p / "k", width, c, Default::default()),
            v: nn::linear(p / "v", width, c, Default::default()),
            proj: conv(&(p / "proj"), c, c, 1),
            heads: a.heads,
        }
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Tensor {
        let (n, c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let l = ctx.size()[1];
        let d = c / self.heads;
        let q = self.q.forward(&self.norm.forward(x)).view([n, self.heads, d, h * w]).transpose(2, 3); // [N, heads, HW, d]
        let q = q * (1.0 / (d as f64).sqrt());
        let k = self.k.forward(ctx).view([n, l, self.heads, d]).permute([0, 2, 3, 1]); // [N, heads, d, L]
        let v = self.v.forward(ctx).view([n, l, self.heads, d]).permute([0, 2, 1, 3]); // [N, heads, L, d]
        let p = q.matmul(&k).softmax(-1, Kind::Float); // [N, heads, HW, L]
        let o = p.matmul(&v).transpose(2, 3).contiguous().view([n, c, h, w]); // [N, C, h, w]
        x + self.proj.forward(&o)
    }
}

/// A residual block and, where the plan says so, its cross-attention.
#[derive(Debug)]
struct Block {
    res: ResBlock,
    cross: Option<CrossAttention>,
}

impl Block {
    fn new(root: &nn::Path, r: &ResPlan, a: &UNetArch) -> Block {
        let cross = match (&a.text, r.cross) {
            (Some(t), true) => Some(CrossAttention::new(&(sub(root, &r.name) / "xattn"), a, r.c_out, t.width)),
            _ => None,
        };
        Block { res: ResBlock::new(root, r, a), cross }
    }

    fn forward(&self, x: &Tensor, temb_act: &Tensor, ctx: Option<&Tensor>) -> Tensor {
        let y = self.res.forward(x, temb_act);
        match (&self.cross, ctx) {
            (Some(c), Some(ctx)) => c.forward(&y, ctx),
            _ => y,
        }
    }
}

/// The text a conditioned U-Net sees: token embeddings [N, L, W] and the pooled embedding [N, W].
pub struct TextInput<'a> {
    pub context: &'a Tensor,
    pub pooled: &'a Tensor,
}

/// The U-Net's parameters and forward pass.
#[derive(Debug)]
pub struct UNet {
    pub arch: UNetArch,
    /// [1, E/2] angular frequencies (a constant, not a parameter).
    freqs: Vec<f32>,
    lin1: nn::Linear,
    lin2: nn::Linear,
    /// pooled [N, W] -> [N, T], added to temb (text-conditioned U-Nets only).
    text: Option<nn::Linear>,
    conv_in: nn::Conv2D,
    down: Vec<Vec<Block>>,
    mid: (ResBlock, Attention, Option<CrossAttention>, ResBlock),
    up: Vec<(nn::Conv2D, Vec<Block>)>,
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
            text: a.text.as_ref().map(|tc| nn::linear(root / "emb" / "text", tc.width, t, Default::default())),
            conv_in: conv(&(root / "conv_in"), a.channels, w0, 3),
            down: plan.down.iter().map(|l| l.iter().map(|r| Block::new(root, r, a)).collect()).collect(),
            mid: (
                ResBlock::new(root, &plan.mid[0], a),
                Attention {
                    norm: norm(&(&attn / "norm"), a.groups, m),
                    qkv: conv(&(&attn / "qkv"), m, 3 * m, 1),
                    proj: conv(&(&attn / "proj"), m, m, 1),
                    heads: a.heads,
                },
                match (&a.text, plan.mid_cross) {
                    (Some(t), true) => Some(CrossAttention::new(&(root / "mid" / "xattn"), a, m, t.width)),
                    _ => None,
                },
                ResBlock::new(root, &plan.mid[1], a),
            ),
            up: plan
                .up
                .iter()
                .map(|u| {
                    let c = conv(&sub(root, &u.up_conv.0), u.up_conv.1, u.up_conv.1, 3);
                    (c, u.res.iter().map(|r| Block::new(root, r, a)).collect())
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

    /// x [N, C, h, w], noise_variance [N, 1] -> predicted noise [N, C, h, w]. `text` is required by (and
    /// only by) a text-conditioned U-Net.
    pub fn forward(&self, x: &Tensor, noise_variance: &Tensor, text: Option<&TextInput>) -> Result<Tensor> {
        if self.text.is_some() != text.is_some() {
            return Err(crate::Error::invalid(if text.is_some() {
                "U-Net: text given to an unconditional U-Net"
            } else {
                "U-Net: this U-Net is text-conditioned and needs the prompt's embeddings"
            }));
        }
        let ctx = text.map(|t| t.context);
        let f = Tensor::f_from_slice(&self.freqs).map_err(torch_err("unet freqs"))?.view([1, -1]).to_device(x.device()); // [1, E/2]
        let ang = noise_variance * f; // [N, E/2]
        let emb = Tensor::cat(&[ang.sin(), ang.cos()], 1); // [N, E]
        let mut temb = self.lin2.forward(&self.lin1.forward(&emb).silu()); // [N, T]
        if let (Some(lin), Some(t)) = (&self.text, text) {
            temb += lin.forward(t.pooled); // [N, T]
        }
        let temb_act = temb.silu();

        let mut h = self.conv_in.forward(x); // [N, w0, h, w]
        let mut skips = Vec::new();
        for level in &self.down {
            for r in level {
                h = r.forward(&h, &temb_act, ctx);
                skips.push(h.shallow_clone());
            }
            h = h.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>); // [N, c, h/2, w/2]
        }
        h = self.mid.0.forward(&h, &temb_act);
        h = self.mid.1.forward(&h);
        if let (Some(c), Some(ctx)) = (&self.mid.2, ctx) {
            h = c.forward(&h, ctx);
        }
        h = self.mid.3.forward(&h, &temb_act);
        for (up_conv, res) in &self.up {
            let (_, _, hh, ww) = h.size4().map_err(torch_err("unet up"))?;
            // With an explicit output size torch reads source index floor(dst * in / out) = floor(dst / 2):
            // ONNX's Resize nearest, asymmetric, floor.
            h = up_conv.forward(&h.upsample_nearest2d([2 * hh, 2 * ww], None::<f64>, None::<f64>)); // [N, c, 2h', 2w']
            for r in res {
                let skip = skips.pop().ok_or_else(|| crate::Error::invalid("U-Net: skip stack underflow"))?;
                h = r.forward(&Tensor::cat(&[&h, &skip], 1), &temb_act, ctx); // [N, c + c_skip] -> [N, w_i]
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward(&h).silu())) // [N, C, h, w]
    }
}
