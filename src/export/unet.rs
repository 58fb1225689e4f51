//! The diffusion U-Net: its architecture ([`UNetArch`]), its block plan (shared by the trainer's tch model
//! and this exporter, so both build the same layers under the same names), and its export to ONNX into an
//! existing model set.
//!
//! The network is the lecture's (Keras DDIM style) noise predictor, with GroupNorm residual blocks and one
//! self-attention at the lowest resolution. For [`UNetArch::fashion_latent`] (widths [32, 48, 64], one
//! residual block per level) on the 3x8x8 Fashion-MNIST latents:
//!
//! ```text
//! noise_variance [N,1] -sin/cos of 2 pi f v, f in [1, 1000]-> [N,32] -emb.lin1, SiLU, emb.lin2-> temb [N,128]
//! x [N,3,8,8] -conv_in 3x3-> [N,32,8,8]
//! down.0  res.0 (32)                     [N,32,8,8]     output kept as a skip
//!         avg-pool 2                     [N,32,4,4]
//! down.1  res.0 (32->48)                 [N,48,4,4]     skip
//!         avg-pool 2                     [N,48,2,2]
//! mid     res1 (48->64), attn (4 heads over 2*2 = 4 positions), res2   [N,64,2,2]
//! up.1    nearest x2 + up.conv 3x3       [N,64,4,4]
//!         concat skip [N,112,4,4], res.0 (112->48)                     [N,48,4,4]
//! up.0    nearest x2 + up.conv 3x3       [N,48,8,8]
//!         concat skip [N,80,8,8], res.0 (80->32)                       [N,32,8,8]
//! norm_out, SiLU, conv_out 3x3           eps [N,3,8,8]
//! ```
//!
//! With more blocks per level every block's output is a skip, and each up level has as many blocks, each
//! concatenating one skip (last pushed, first used).
//!
//! A residual block is GroupNorm, SiLU, conv 3x3, + Linear(SiLU(temb)) per channel, GroupNorm, SiLU,
//! conv 3x3, plus the input (through a 1x1 conv when the channels change).
//!
//! Text conditioning (reserved, not built): a `cond` input [N, L, 384] of text-encoder token embeddings
//! will enter through cross-attention layers after each attention-resolution block (queries from the image,
//! keys/values from `cond`), and its pooled vector will be added to `temb` through a Linear. Both are new
//! parameters under new names, so the plan below gains entries without renaming any existing one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::onnx::{encode, GraphBuilder};
use super::vae::Weights;
use crate::error::{Error, Result};
use crate::manifest::{sha256_hex, DiffusionSpace, Manifest, ModelFile, TensorSpec, TextSpec, UNetSpec, MANIFEST_FILE};
use crate::rng::Noise;
use crate::schedule::CosineSchedule;

/// File name of the exported U-Net inside a model set.
pub const UNET_FILE: &str = "unet.onnx";

/// The U-Net's shape. Stored in the manifest (`unet.architecture`) and in training checkpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UNetArch {
    /// Channels of x and eps (latent or image channels).
    pub channels: i64,
    /// Spatial size of x.
    pub height: i64,
    pub width: i64,
    /// Channel width per resolution, full resolution first; the last is the middle stage's (lowest
    /// resolution), so there are `widths.len() - 1` halvings.
    pub widths: Vec<i64>,
    /// Residual blocks per down level (the up levels have as many, one per skip).
    pub blocks_per_level: usize,
    /// GroupNorm groups (must divide every width).
    pub groups: i64,
    /// Size of the sinusoidal embedding of the noise variance (even).
    pub embedding_dims: i64,
    /// Lowest and highest embedding frequency (the Keras example: 1 and 1000).
    pub embedding_min_frequency: f32,
    pub embedding_max_frequency: f32,
    /// Width of the noise embedding after its MLP (what each residual block projects from).
    pub temb_dims: i64,
    /// Attention heads in the middle stage (must divide the last width) and in every cross-attention
    /// (must divide the widths of the levels that have one).
    pub heads: i64,
    /// Text conditioning; absent = an unconditional U-Net (the Fashion-MNIST one of the diffusion issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextCond>,
}

/// How a U-Net is conditioned on a prompt: cross-attention from its features to the text encoder's token
/// embeddings, and the pooled sentence embedding added to the noise-level embedding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextCond {
    /// Width of the token and pooled embeddings (MiniLM-L6: 384).
    pub width: i64,
    /// Tokens per prompt the U-Net sees ([CLS] ... [SEP] then padding): prompts are padded or truncated to it.
    pub tokens: i64,
    /// Cross-attention follows every residual block of the levels `>= cross_from_level` (0 = full
    /// resolution) and the middle stage's self-attention.
    pub cross_from_level: usize,
}

impl UNetArch {
    /// The U-Net for the Fashion-MNIST VAE's 3x8x8 latents.
    pub fn fashion_latent() -> Self {
        UNetArch {
            channels: 3,
            height: 8,
            width: 8,
            // 8x8 -> 4x4 -> 2x2 middle, where attention lets every position see the whole latent. Sized to
            // the CPU budget (one step on batch 64 well under 150 ms, one libtorch thread, the other core
            // busy; tests/unet.rs `step_time`): [32, 48, 64] x 1 block took 112 ms (0.44 M parameters);
            // [32, 64, 64] x 1 151 ms, [32, 64, 64] x 2 223 ms, [64, 128, 128] x 2 663 ms (3.0 M).
            widths: vec![32, 48, 64],
            // One block per level (Keras uses 2): the second block cost 50 % more time per step, and on a CPU
            // more steps buy more than depth.
            blocks_per_level: 1,
            // 8 groups of 4 / 6 / 8 channels: GroupNorm's usual 32 would leave 1 channel per group at 32.
            groups: 8,
            // The Keras example's embedding: 32 dims, frequencies 1 to 1000.
            embedding_dims: 32,
            embedding_min_frequency: 1.0,
            embedding_max_frequency: 1000.0,
            // 4x the embedding, as DDPM's time MLP.
            temb_dims: 128,
            // 16 dims per head over the 64 middle channels.
            heads: 4,
            text: None,
        }
    }

    /// The text-conditioned U-Net for latents of shape [c, h, w] (the emoji VAE's 4x8x8, Fashion-MNIST's
    /// 3x8x8): the fashion layout, wider, with cross-attention at the two lower resolutions (4x4 and the
    /// 2x2 middle; at 8x8 it would cost most and matter least: layout is decided coarse).
    pub fn text_latent(shape: [i64; 3], tokens: i64) -> Self {
        UNetArch {
            channels: shape[0],
            height: shape[1],
            width: shape[2],
            widths: vec![64, 96, 128],
            groups: 8,
            // 16 dims per head at every level that attends.
            heads: 4,
            text: Some(TextCond { width: crate::text::TEXT_WIDTH as i64, tokens, cross_from_level: 1 }),
            ..Self::fashion_latent()
        }
    }

    /// The text-conditioned U-Net for 16x16 latents (emoji v2's 4x16x16): one more halving than
    /// [`UNetArch::text_latent`] (16x16 -> 8x8 -> 4x4 -> 2x2 middle) with narrower full-resolution levels,
    /// so a step costs about what the 8x8 text U-Net's did instead of the 3-4x that layout costs at 16x16
    /// (`mirage-train bench`); cross-attention from 8x8 down, as there.
    pub fn text_latent_deep(shape: [i64; 3], tokens: i64) -> Self {
        UNetArch { widths: vec![32, 64, 96, 128], ..Self::text_latent(shape, tokens) }
    }

    /// A very small U-Net of the same structure for tests and the random fixture, on [c, h, w] inputs
    /// (h and w even).
    pub fn tiny(c: i64, h: i64, w: i64) -> Self {
        UNetArch {
            channels: c,
            height: h,
            width: w,
            // One halving keeps the test shapes small yet exercises down, skip-concat and up.
            widths: vec![8, 16],
            // Two blocks per level (fashion has one), so the tests cover the skip order with several skips.
            blocks_per_level: 2,
            // 2 groups of 4 / 8 channels: exercises the grouping (1 group would be a LayerNorm).
            groups: 2,
            embedding_dims: 8,
            temb_dims: 16,
            // 2 heads of 8 dims: exercises the head split.
            heads: 2,
            ..Self::fashion_latent()
        }
    }

    /// [`UNetArch::tiny`] with text conditioning of `width`-wide embeddings over `tokens` tokens, cross-
    /// attention at every level (so the tests cover it at full resolution too).
    pub fn tiny_text(c: i64, h: i64, w: i64, width: i64, tokens: i64) -> Self {
        UNetArch { text: Some(TextCond { width, tokens, cross_from_level: 0 }), ..Self::tiny(c, h, w) }
    }

    /// The architecture called `name` for command-line flags: "fashion" ([`UNetArch::fashion_latent`]),
    /// "text" ([`UNetArch::text_latent`], 24 tokens), "wide" (its layout without text), "tiny" or "tiny-text"
    /// (MiniLM's width, 16 tokens), on `shape`.
    pub fn by_name(name: &str, shape: [i64; 3]) -> Result<Self> {
        match name {
            "fashion" => {
                Ok(UNetArch { channels: shape[0], height: shape[1], width: shape[2], ..Self::fashion_latent() })
            }
            "tiny" => Ok(Self::tiny(shape[0], shape[1], shape[2])),
            // 24 tokens: the emoji captions run to 20 ("a people & body emoji: ... medium-dark skin tone");
            // 16 would cut the skin tone off the longest.
            "text" => Ok(Self::text_latent(shape, 24)),
            "text-deep" => Ok(Self::text_latent_deep(shape, 24)),
            // The text layout without text: the next candidate for the unconditional Fashion U-Net's FID aim.
            "wide" => Ok(UNetArch { text: None, ..Self::text_latent(shape, 24) }),
            "tiny-text" => Ok(Self::tiny_text(shape[0], shape[1], shape[2], crate::text::TEXT_WIDTH as i64, 16)),
            other => Err(Error::invalid(format!(
                "unknown U-Net architecture {other:?} (fashion | wide | text | text-deep | tiny | tiny-text)"
            ))),
        }
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("U-Net architecture: {m}")));
        if !(1..=64).contains(&self.channels) || self.height < 1 || self.width < 1 {
            return bad(format!("input {}x{}x{} out of range", self.channels, self.height, self.width));
        }
        if self.widths.len() < 2 || self.widths.len() > 8 || self.widths.iter().any(|&w| w < 1) {
            return bad(format!("widths {:?} must be 2 to 8 positive numbers", self.widths));
        }
        let f = 1i64 << (self.widths.len() - 1);
        if self.height % f != 0 || self.width % f != 0 {
            return bad(format!("size {}x{} must be divisible by {f}", self.height, self.width));
        }
        if self.blocks_per_level < 1 || self.blocks_per_level > 8 {
            return bad("blocks_per_level must be 1 to 8".into());
        }
        if self.groups < 1 || self.widths.iter().any(|w| w % self.groups != 0) {
            return bad(format!("groups {} must divide every width {:?}", self.groups, self.widths));
        }
        let mid = self.widths[self.widths.len() - 1];
        if self.heads < 1 || mid % self.heads != 0 {
            return bad(format!("heads {} must divide the middle width {mid}", self.heads));
        }
        if self.embedding_dims < 2 || self.embedding_dims % 2 != 0 || self.temb_dims < 1 {
            return bad("embedding_dims must be even and positive, temb_dims positive".into());
        }
        let (lo, hi) = (self.embedding_min_frequency, self.embedding_max_frequency);
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi) {
            return bad(format!("embedding frequencies {lo}..{hi} must be finite and 0 < min <= max"));
        }
        if let Some(t) = &self.text {
            if !(1..=4096).contains(&t.width) || !(1..=512).contains(&t.tokens) {
                return bad(format!("text width {} / tokens {} out of range", t.width, t.tokens));
            }
            if t.cross_from_level >= self.widths.len() {
                return bad(format!("cross_from_level {} beyond the {} levels", t.cross_from_level, self.widths.len()));
            }
            if let Some(w) = self.widths[t.cross_from_level..].iter().find(|&&w| w % self.heads != 0) {
                return bad(format!("heads {} must divide the cross-attention width {w}", self.heads));
            }
        }
        Ok(())
    }

    /// Shape of x and eps without the batch: [C, h, w].
    pub fn shape(&self) -> [i64; 3] {
        [self.channels, self.height, self.width]
    }

    /// The angular frequencies 2 pi f of the sinusoidal embedding, f geometric from min to max
    /// (`embedding_dims / 2` values). Computed once in f64 and rounded to f32, so that tch and ONNX
    /// multiply by the very same constants.
    pub fn embedding_frequencies(&self) -> Vec<f32> {
        let half = (self.embedding_dims / 2).max(1) as usize;
        let (lo, hi) = ((self.embedding_min_frequency as f64).ln(), (self.embedding_max_frequency as f64).ln());
        (0..half)
            .map(|k| {
                let t = if half > 1 { k as f64 / (half - 1) as f64 } else { 0.0 };
                (std::f64::consts::TAU * (lo + t * (hi - lo)).exp()) as f32
            })
            .collect()
    }

    /// The block plan: every layer's name and channels, in forward order.
    pub fn plan(&self) -> Plan {
        let w = &self.widths;
        let levels = w.len() - 1;
        let cross = |level: usize| self.text.as_ref().is_some_and(|t| level >= t.cross_from_level);
        let (mut h, mut wd) = (self.height, self.width);
        let mut cur = w[0];
        let mut down = Vec::new();
        let mut skips = Vec::new(); // channels of each skip, in push order
        for (i, &c) in w[..levels].iter().enumerate() {
            let mut res = Vec::new();
            for j in 0..self.blocks_per_level {
                res.push(ResBlock::new(&format!("down.{i}.res.{j}"), cur, c, (h, wd), cross(i)));
                cur = c;
                skips.push(c);
            }
            down.push(res);
            (h, wd) = (h / 2, wd / 2);
        }
        let m = w[levels];
        // The middle's cross-attention is not a block's: it follows the self-attention (`mid.xattn`).
        let mid = [ResBlock::new("mid.res1", cur, m, (h, wd), false), ResBlock::new("mid.res2", m, m, (h, wd), false)];
        cur = m;
        let mut up = Vec::new();
        for i in (0..levels).rev() {
            (h, wd) = (h * 2, wd * 2);
            let up_conv = (format!("up.{i}.up.conv"), cur);
            let mut res = Vec::new();
            for j in 0..self.blocks_per_level {
                let skip = skips.pop().unwrap_or(0);
                res.push(ResBlock::new(&format!("up.{i}.res.{j}"), cur + skip, w[i], (h, wd), cross(i)));
                cur = w[i];
            }
            up.push(UpLevel { level: i, up_conv, res });
        }
        Plan { down, mid, up, mid_cross: self.text.is_some() }
    }

    /// Every parameter's name and shape.
    pub fn parameters(&self) -> Vec<(String, Vec<i64>)> {
        let (e, t, c, w0) = (self.embedding_dims, self.temb_dims, self.channels, self.widths[0]);
        let lin = |n: &str, i: i64, o: i64| vec![(format!("{n}.weight"), vec![o, i]), (format!("{n}.bias"), vec![o])];
        let conv = |n: &str, i: i64, o: i64, k: i64| {
            vec![(format!("{n}.weight"), vec![o, i, k, k]), (format!("{n}.bias"), vec![o])]
        };
        let norm = |n: &str, ch: i64| vec![(format!("{n}.weight"), vec![ch]), (format!("{n}.bias"), vec![ch])];
        let tw = self.text.as_ref().map_or(0, |t| t.width);
        let xattn = |n: &str, ch: i64| {
            let mut v = norm(&format!("{n}.norm"), ch);
            v.extend(conv(&format!("{n}.q"), ch, ch, 1));
            v.extend(lin(&format!("{n}.k"), tw, ch));
            v.extend(lin(&format!("{n}.v"), tw, ch));
            v.extend(conv(&format!("{n}.proj"), ch, ch, 1));
            v
        };
        let res = |r: &ResBlock| {
            let mut v = norm(&format!("{}.norm1", r.name), r.c_in);
            v.extend(conv(&format!("{}.conv1", r.name), r.c_in, r.c_out, 3));
            v.extend(lin(&format!("{}.temb", r.name), t, r.c_out));
            v.extend(norm(&format!("{}.norm2", r.name), r.c_out));
            v.extend(conv(&format!("{}.conv2", r.name), r.c_out, r.c_out, 3));
            if r.c_in != r.c_out {
                v.extend(conv(&format!("{}.skip", r.name), r.c_in, r.c_out, 1));
            }
            if r.cross {
                v.extend(xattn(&format!("{}.xattn", r.name), r.c_out));
            }
            v
        };
        let plan = self.plan();
        let m = self.widths[self.widths.len() - 1];
        let mut p = lin("emb.lin1", e, t);
        p.extend(lin("emb.lin2", t, t));
        if self.text.is_some() {
            p.extend(lin("emb.text", tw, t));
        }
        p.extend(conv("conv_in", c, w0, 3));
        for r in plan.down.iter().flatten() {
            p.extend(res(r));
        }
        p.extend(res(&plan.mid[0]));
        p.extend(norm("mid.attn.norm", m));
        p.extend(conv("mid.attn.qkv", m, 3 * m, 1));
        p.extend(conv("mid.attn.proj", m, m, 1));
        if plan.mid_cross {
            p.extend(xattn("mid.xattn", m));
        }
        p.extend(res(&plan.mid[1]));
        for u in &plan.up {
            p.extend(conv(&u.up_conv.0, u.up_conv.1, u.up_conv.1, 3));
            for r in &u.res {
                p.extend(res(r));
            }
        }
        p.extend(norm("norm_out", w0));
        p.extend(conv("conv_out", w0, c, 3));
        p
    }
}

/// One residual block of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ResBlock {
    /// VarStore prefix: `{name}.norm1`, `.conv1`, `.temb`, `.norm2`, `.conv2`, `.skip` (when c_in != c_out).
    pub name: String,
    pub c_in: i64,
    pub c_out: i64,
    /// Spatial size (unchanged by the block).
    pub size: (i64, i64),
    /// Followed by a cross-attention to the text (`{name}.xattn.*`).
    pub cross: bool,
}

impl ResBlock {
    fn new(name: &str, c_in: i64, c_out: i64, size: (i64, i64), cross: bool) -> Self {
        ResBlock { name: name.into(), c_in, c_out, size, cross }
    }
}

/// One up level: nearest x2 then `up_conv` (name, channels kept), then its residual blocks, each fed the
/// current features concatenated with one skip.
#[derive(Clone, Debug, PartialEq)]
pub struct UpLevel {
    pub level: usize,
    pub up_conv: (String, i64),
    pub res: Vec<ResBlock>,
}

/// The whole block plan (see the module's table).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per down level, its residual blocks; every block's output is a skip; each level ends with avg-pool 2.
    pub down: Vec<Vec<ResBlock>>,
    /// res1, (attention between them), res2.
    pub mid: [ResBlock; 2],
    /// Up levels, lowest resolution first.
    pub up: Vec<UpLevel>,
    /// A cross-attention (`mid.xattn`) after the middle's self-attention.
    pub mid_cross: bool,
}

/// Checks that `weights` holds exactly the architecture's parameters, with the right shapes, finite.
pub fn check_weights(arch: &UNetArch, weights: &Weights) -> Result<()> {
    let params = arch.parameters();
    for (name, shape) in &params {
        let (got, data) =
            weights.get(name).ok_or_else(|| Error::invalid(format!("U-Net export: weight {name:?} is missing")))?;
        if got != shape || data.len() as i64 != shape.iter().product::<i64>() {
            return Err(Error::invalid(format!(
                "U-Net export: weight {name:?} has shape {got:?} ({} values), the architecture needs {shape:?}",
                data.len()
            )));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("U-Net export: weight {name:?} holds NaN or infinity")));
        }
    }
    if weights.len() != params.len() {
        let extra: Vec<&String> = weights.keys().filter(|k| !params.iter().any(|(n, _)| n == *k)).collect();
        return Err(Error::invalid(format!("U-Net export: weights not in the architecture: {extra:?}")));
    }
    Ok(())
}

/// One residual block: x [N, c_in, h, w], temb_act = SiLU(temb) [N, T] -> [N, c_out, h, w].
fn res_block(
    b: &mut GraphBuilder,
    wt: &Weights,
    a: &UNetArch,
    r: &ResBlock,
    x: &str,
    temb_act: &str,
) -> Result<String> {
    let (h, w) = r.size;
    let n = &r.name;
    let t = b.group_norm(wt, &format!("{n}.norm1"), x, a.groups, (r.c_in, h, w))?; // [N, c_in, h, w]
    let t = b.silu(&t)?;
    let t = b.conv2d(wt, &format!("{n}.conv1"), &t, 1)?; // [N, c_out, h, w]
    let e = b.linear(wt, &format!("{n}.temb"), temb_act)?; // [N, c_out]
    let e = b.reshape(&e, &[0, r.c_out, 1, 1])?; // [N, c_out, 1, 1]
    let t = b.add(&t, &e)?;
    let t = b.group_norm(wt, &format!("{n}.norm2"), &t, a.groups, (r.c_out, h, w))?;
    let t = b.silu(&t)?;
    let t = b.conv2d(wt, &format!("{n}.conv2"), &t, 1)?; // [N, c_out, h, w]
    let skip = if r.c_in != r.c_out { b.conv2d(wt, &format!("{n}.skip"), x, 1)? } else { x.to_string() };
    b.add(&skip, &t)
}

/// Multi-head self-attention over the h*w positions, with a residual: x [N, C, h, w] -> same.
fn attention(b: &mut GraphBuilder, wt: &Weights, a: &UNetArch, x: &str, chw: (i64, i64, i64)) -> Result<String> {
    let (c, h, w) = chw;
    let (heads, l) = (a.heads, h * w);
    let d = c / heads;
    let t = b.group_norm(wt, "mid.attn.norm", x, a.groups, chw)?; // [N, C, h, w]
    let qkv = b.conv2d(wt, "mid.attn.qkv", &t, 1)?; // [N, 3C, h, w]
    let qkv = b.reshape(&qkv, &[0, 3, heads, d, l])?; // [N, 3, heads, d, L]
    let q = b.select(&qkv, 1, 0)?; // [N, heads, d, L]
    let k = b.select(&qkv, 1, 1)?; // [N, heads, d, L]
    let v = b.select(&qkv, 1, 2)?; // [N, heads, d, L]
    let scale = b.scalar_f32("attn_scale", 1.0 / (d as f32).sqrt())?;
    let q = b.mul(&q, &scale)?;
    let qt = b.transpose(&q, &[0, 1, 3, 2])?; // [N, heads, L, d]
    let s = b.matmul(&qt, &k)?; // [N, heads, L, L]
    let p = b.softmax_last(&s)?; // [N, heads, L(query), L(key)]
    let vt = b.transpose(&v, &[0, 1, 3, 2])?; // [N, heads, L, d]
    let o = b.matmul(&p, &vt)?; // [N, heads, L, d]
    let o = b.transpose(&o, &[0, 1, 3, 2])?; // [N, heads, d, L]
    let o = b.reshape(&o, &[0, c, h, w])?; // [N, C, h, w]
    let o = b.conv2d(wt, "mid.attn.proj", &o, 1)?;
    b.add(x, &o)
}

/// Cross-attention from the features to the text, with a residual: x [N, C, h, w], ctx [N, L, W] -> same
/// as x. Queries from the (GroupNorm-ed) features, keys and values from the token embeddings; heads of
/// C / heads dims; the softmax runs over the L tokens.
fn cross_attention(
    b: &mut GraphBuilder,
    wt: &Weights,
    a: &UNetArch,
    prefix: &str,
    x: &str,
    ctx: &str,
    chw: (i64, i64, i64),
) -> Result<String> {
    let (c, h, w) = chw;
    let (heads, hw) = (a.heads, h * w);
    let d = c / heads;
    let tokens = a.text.as_ref().map_or(1, |t| t.tokens);
    let t = b.group_norm(wt, &format!("{prefix}.norm"), x, a.groups, chw)?; // [N, C, h, w]
    let q = b.conv2d(wt, &format!("{prefix}.q"), &t, 1)?; // [N, C, h, w]
    let q = b.reshape(&q, &[0, heads, d, hw])?; // [N, heads, d, HW]
    let q = b.transpose(&q, &[0, 1, 3, 2])?; // [N, heads, HW, d]
    let scale = b.scalar_f32("xattn_scale", 1.0 / (d as f32).sqrt())?;
    let q = b.mul(&q, &scale)?;
    let k = b.linear_nd(wt, &format!("{prefix}.k"), ctx)?; // [N, L, C]
    let k = b.reshape(&k, &[0, tokens, heads, d])?; // [N, L, heads, d]
    let k = b.transpose(&k, &[0, 2, 3, 1])?; // [N, heads, d, L]
    let v = b.linear_nd(wt, &format!("{prefix}.v"), ctx)?; // [N, L, C]
    let v = b.reshape(&v, &[0, tokens, heads, d])?; // [N, L, heads, d]
    let v = b.transpose(&v, &[0, 2, 1, 3])?; // [N, heads, L, d]
    let s = b.matmul(&q, &k)?; // [N, heads, HW, L]
    let p = b.softmax_last(&s)?; // over the L tokens
    let o = b.matmul(&p, &v)?; // [N, heads, HW, d]
    let o = b.transpose(&o, &[0, 1, 3, 2])?; // [N, heads, d, HW]
    let o = b.reshape(&o, &[0, c, h, w])?; // [N, C, h, w]
    let o = b.conv2d(wt, &format!("{prefix}.proj"), &o, 1)?;
    b.add(x, &o)
}

/// A residual block, then its cross-attention when the plan gives it one.
#[allow(clippy::too_many_arguments)]
fn block(
    b: &mut GraphBuilder,
    wt: &Weights,
    a: &UNetArch,
    r: &ResBlock,
    x: &str,
    temb_act: &str,
    ctx: Option<&str>,
) -> Result<String> {
    let y = res_block(b, wt, a, r, x, temb_act)?;
    match ctx {
        Some(ctx) if r.cross => {
            cross_attention(b, wt, a, &format!("{}.xattn", r.name), &y, ctx, (r.c_out, r.size.0, r.size.1))
        }
        _ => Ok(y),
    }
}

/// The U-Net graph: "x" [N, C, h, w], "noise_variance" [N, 1] (and, when text-conditioned, "context"
/// [N, L, W] token embeddings and "pooled" [N, W]) -> "eps" [N, C, h, w].
pub fn unet_graph(arch: &UNetArch, weights: &Weights) -> Result<GraphBuilder> {
    arch.validate()?;
    check_weights(arch, weights)?;
    let a = arch;
    let [c, h, w] = a.shape();
    let wt = weights;
    let mut b = GraphBuilder::new("mirage_unet");
    b.set_doc("mirage U-Net: noisy sample x and its noise variance -> predicted noise eps");
    let x = b.input("x", &[-1, c, h, w])?; // [N, C, h, w]
    let nv = b.input("noise_variance", &[-1, 1])?; // [N, 1]
    let text = match &a.text {
        Some(t) => Some((b.input("context", &[-1, t.tokens, t.width])?, b.input("pooled", &[-1, t.width])?)),
        None => None,
    };
    let ctx = text.as_ref().map(|(c, _)| c.as_str());

    // Sinusoidal embedding: [N, 1] * [1, E/2] -> sin, cos -> [N, E].
    let freqs = a.embedding_frequencies();
    let fname = b.fresh_name("emb_freqs");
    let f = b.initializer(&fname, &[1, freqs.len() as i64], &freqs)?;
    let ang = b.mul(&nv, &f)?; // [N, E/2]
    let sin = b.node("Sin", &[&ang], Vec::new())?;
    let cos = b.node("Cos", &[&ang], Vec::new())?;
    let emb = b.concat(&[&sin, &cos], 1)?; // [N, E]
    let t = b.linear(wt, "emb.lin1", &emb)?; // [N, T]
    let t = b.silu(&t)?;
    let mut temb = b.linear(wt, "emb.lin2", &t)?; // [N, T]
    if let Some((_, pooled)) = &text {
        let p = b.linear(wt, "emb.text", pooled)?; // [N, W] -> [N, T]
        temb = b.add(&temb, &p)?;
    }
    // Every block projects from SiLU(temb) (the DDPM convention); computed once here.
    let temb_act = b.silu(&temb)?; // [N, T]

    let plan = a.plan();
    let mut hcur = b.conv2d(wt, "conv_in", &x, 1)?; // [N, w0, h, w]
    let mut skips = Vec::new();
    for level in &plan.down {
        for r in level {
            hcur = block(&mut b, wt, a, r, &hcur, &temb_act, ctx)?; // [N, c_out, size]
            skips.push(hcur.clone());
        }
        hcur = b.avg_pool2(&hcur)?; // [N, c, size/2]
    }
    let [r1, r2] = &plan.mid;
    hcur = res_block(&mut b, wt, a, r1, &hcur, &temb_act)?; // [N, m, h/f, w/f]
    hcur = attention(&mut b, wt, a, &hcur, (r1.c_out, r1.size.0, r1.size.1))?;
    if let (true, Some(ctx)) = (plan.mid_cross, ctx) {
        hcur = cross_attention(&mut b, wt, a, "mid.xattn", &hcur, ctx, (r1.c_out, r1.size.0, r1.size.1))?;
    }
    hcur = res_block(&mut b, wt, a, r2, &hcur, &temb_act)?;
    for u in &plan.up {
        hcur = b.upsample_nearest2(&hcur)?; // [N, c, 2h', 2w']
        hcur = b.conv2d(wt, &u.up_conv.0, &hcur, 1)?;
        for r in &u.res {
            let skip = skips.pop().ok_or_else(|| Error::invalid("U-Net export: skip stack underflow"))?;
            let cat = b.concat(&[&hcur, &skip], 1)?; // [N, c + c_skip, size]
            hcur = block(&mut b, wt, a, r, &cat, &temb_act, ctx)?; // [N, w_i, size]
        }
    }
    let o = b.group_norm(wt, "norm_out", &hcur, a.groups, (a.widths[0], h, w))?; // [N, w0, h, w]
    let o = b.silu(&o)?;
    let eps = b.conv2d(wt, "conv_out", &o, 1)?; // [N, C, h, w]
    b.output(&eps, "eps", &[-1, c, h, w])?;
    Ok(b)
}

/// The U-Net's ONNX inputs for `arch` (the manifest lists them; the runtime feeds them by these names).
pub fn unet_inputs(arch: &UNetArch) -> Vec<TensorSpec> {
    let [c, h, w] = arch.shape();
    let mut v = vec![TensorSpec::new("x", &[-1, c, h, w]), TensorSpec::new("noise_variance", &[-1, 1])];
    if let Some(t) = &arch.text {
        v.push(TensorSpec::new("context", &[-1, t.tokens, t.width]));
        v.push(TensorSpec::new("pooled", &[-1, t.width]));
    }
    v
}

/// Smallest weight tensor stored as f16 by [`unet_bytes`]: the convolution and projection weights (the
/// U-Nets' smallest, the 3x3 input convolution of a 3-channel latent at width 32, has 864 values) go to f16;
/// biases, norms and embedding frequencies (at most a few hundred values) stay f32.
pub const F16_MIN_VALUES: usize = 512;

/// The bytes of `unet.onnx` for `arch` with `weights`; with `f16_weights` the weight tensors are stored as
/// float16 ([`GraphBuilder::weights_to_f16`]: half the file, f32 arithmetic, outputs within
/// `mirage::train::unet_run::PARITY_TOLERANCE_F16` of the f32 file's).
pub fn unet_bytes(arch: &UNetArch, weights: &Weights, f16_weights: bool) -> Result<Vec<u8>> {
    let mut g = unet_graph(arch, weights)?;
    if f16_weights {
        g.weights_to_f16(F16_MIN_VALUES)?;
    }
    encode(&g.finish()?)
}

/// Exports a U-Net (its file's `bytes`, from [`unet_bytes`]) into the EXISTING model set `set_dir`: writes
/// `unet.onnx`, adds the `unet` entry to its manifest (keeping everything else; `training` goes under the
/// manifest's `training["unet"]`), validates and rewrites `manifest.json`. Returns the new manifest.
#[allow(clippy::too_many_arguments)]
pub fn export_unet(
    arch: &UNetArch,
    bytes: Vec<u8>,
    set_dir: &Path,
    space: DiffusionSpace,
    schedule: CosineSchedule,
    data_mean: Vec<f32>,
    data_std: Vec<f32>,
    text: Option<TextSpec>,
    training: serde_json::Value,
) -> Result<Manifest> {
    let mut manifest = Manifest::load(set_dir)?;
    match (&arch.text, &text) {
        (None, None) => {}
        (Some(a), Some(t)) if a.width == t.width as i64 && a.tokens == t.tokens as i64 => {}
        _ => {
            return Err(Error::invalid(format!(
                "U-Net export: the architecture's text conditioning {:?} does not match the manifest's {:?}",
                arch.text, text
            )))
        }
    }
    let [c, h, w] = arch.shape();
    let x = [-1, c, h, w];
    manifest.unet = Some(UNetSpec {
        model: ModelFile {
            kind: "unet".into(),
            file: UNET_FILE.into(),
            sha256: sha256_hex(&bytes),
            inputs: unet_inputs(arch),
            outputs: vec![TensorSpec::new("eps", &x)],
        },
        space,
        schedule,
        data_mean,
        data_std,
        architecture: serde_json::to_value(arch)
            .map_err(|e| Error::invalid(format!("U-Net export: architecture to JSON: {e}")))?,
        text,
    });
    match &mut manifest.training {
        serde_json::Value::Object(map) => {
            map.insert("unet".into(), training);
        }
        other => {
            let vae = std::mem::take(other);
            let mut map = serde_json::Map::new();
            if !vae.is_null() {
                map.insert("vae".into(), vae);
            }
            map.insert("unet".into(), training);
            *other = serde_json::Value::Object(map);
        }
    }
    // Checks the U-Net's shapes against the set's latent or image shape before anything is written.
    manifest.validate()?;
    let path = set_dir.join(UNET_FILE);
    std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
    let mut text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::invalid(format!("U-Net export: manifest to JSON: {e}")))?;
    text.push('\n');
    // The manifest goes last: it names the new file only once that file is complete.
    let mpath = set_dir.join(MANIFEST_FILE);
    std::fs::write(&mpath, text.as_bytes()).map_err(|e| Error::io(&mpath, e))?;
    Ok(manifest)
}

/// Deterministic random weights for `arch`: conv and linear weights N(0, 1 / fan_in) (variance-keeping
/// without ReLU's factor 2, so that the 10+ residual additions stay in range), biases N(0, 0.05^2), norm
/// scales 1 + N(0, 0.1^2) and shifts N(0, 0.05^2) (not 1 and 0, so that tests see them used).
pub fn random_unet_weights(arch: &UNetArch, seed: u64) -> Weights {
    let mut noise = Noise::new(seed);
    let mut out = Weights::new();
    for (name, shape) in arch.parameters() {
        let n = shape.iter().product::<i64>() as usize;
        let z = noise.normals(n);
        let is_norm = name.contains("norm");
        let data = if name.ends_with(".bias") {
            z.into_iter().map(|v| v * 0.05).collect()
        } else if is_norm {
            z.into_iter().map(|v| 1.0 + v * 0.1).collect()
        } else {
            let fan_in: i64 = shape[1..].iter().product();
            let std = (1.0 / fan_in.max(1) as f32).sqrt();
            z.into_iter().map(|v| v * std).collect()
        };
        out.insert(name, (shape, data));
    }
    out
}

/// Adds a random-weight U-Net ([`random_unet_weights`]) to the existing model set `set_dir`: the fixture
/// the runtime tests build at test time. It works on the set's latents when the set has a VAE, else on its
/// pixels; data mean 0 and std 1, the default cosine schedule. `arch`'s shape must match that space.
pub fn add_random_unet(set_dir: &Path, arch: &UNetArch, seed: u64) -> Result<Manifest> {
    add_random_unet_with_text(set_dir, arch, seed, None)
}

/// [`add_random_unet`] for a text-conditioned `arch`: `text` names the encoder the set will load.
pub fn add_random_unet_with_text(
    set_dir: &Path,
    arch: &UNetArch,
    seed: u64,
    text: Option<TextSpec>,
) -> Result<Manifest> {
    let manifest = Manifest::load(set_dir)?;
    let space = if manifest.vae.is_some() { DiffusionSpace::Latent } else { DiffusionSpace::Pixel };
    let c = arch.channels as usize;
    let training = serde_json::json!({
        "fixture": "random weights, not trained",
        "made_by": "mirage::export::unet::add_random_unet",
        "seed": seed,
    });
    export_unet(
        arch,
        unet_bytes(arch, &random_unet_weights(arch, seed), false)?,
        set_dir,
        space,
        CosineSchedule::default(),
        vec![0.0; c],
        vec![1.0; c],
        text,
        training,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::vae::{write_random_set, VaeArch};

    #[test]
    fn plans_and_parameters_fit() {
        let a = UNetArch::fashion_latent();
        a.validate().unwrap();
        let p = a.plan();
        assert_eq!(p.down.len(), 2);
        assert_eq!(p.mid[0].size, (2, 2));
        assert_eq!(p.up[0].res[0].c_in, 64 + 48);
        assert_eq!(p.up[1].res[0].c_in, 48 + 32);
        let n: i64 = a.parameters().iter().map(|(_, s)| s.iter().product::<i64>()).sum();
        assert!(n > 100_000, "{n} parameters");
        UNetArch::tiny(1, 28, 28).validate().unwrap();
        assert!(UNetArch::tiny(1, 7, 7).validate().is_err());
        let mut bad = UNetArch::tiny(2, 8, 8);
        bad.heads = 3;
        assert!(bad.validate().is_err());
        assert_eq!(a.embedding_frequencies().len(), 16);
        assert!((a.embedding_frequencies()[15] - 1000.0 * std::f32::consts::TAU).abs() < 0.01);
    }

    #[test]
    fn random_unet_is_added_deterministically_and_keeps_the_vae() {
        let go = |seed| {
            let d = tempfile::tempdir().unwrap();
            let vae = write_random_set(d.path(), &VaeArch::tiny(), 1).unwrap();
            let m = add_random_unet(d.path(), &UNetArch::tiny(2, 8, 8), seed).unwrap();
            assert_eq!(m.vae, vae.vae);
            assert_eq!(m.training["seed"], 1, "the VAE's training facts stay at the top");
            assert_eq!(m.training["unet"]["seed"], seed);
            let loaded = Manifest::load(d.path()).unwrap();
            assert_eq!(loaded, m);
            let u = m.unet.as_ref().unwrap();
            assert_eq!(u.space, DiffusionSpace::Latent);
            Manifest::read_model(d.path(), &u.model).unwrap();
            (u.model.sha256.clone(), d)
        };
        let (a, _d) = go(3);
        assert_eq!(a, go(3).0);
        assert_ne!(a, go(4).0);
        // Wrong shape for the set's latents: refused before anything is written.
        let d = tempfile::tempdir().unwrap();
        write_random_set(d.path(), &VaeArch::tiny(), 1).unwrap();
        assert!(add_random_unet(d.path(), &UNetArch::tiny(3, 8, 8), 1).is_err());
        assert!(!d.path().join(UNET_FILE).exists());
    }
}
