//! `mirage-train unet train | export`: the lecture's diffusion training on the latents of an exported VAE
//! model set (or on its pixels when the set has no VAE).
//!
//! Training, per step: a batch x0 of normalised latents, t ~ U(0, 1), the cosine schedule's rates
//! (signal, noise) at t, eps ~ N(0, I), x_t = signal x0 + noise eps; the U-Net predicts eps from
//! (x_t, noise^2); the loss is the MSE (or MAE) between prediction and eps. AdamW, an EMA copy of the
//! weights (what is exported and sampled), optional gradient clipping.
//!
//! A run writes into `--out`:
//! - `latents.safetensors` + `latents.json`: the encoded training set (latent means) and its per-channel
//!   mean and std, cached: reused while the set's encoder and `--limit` are the same;
//! - `checkpoint.safetensors` (training weights), `ema.safetensors` (EMA weights), `checkpoint.json`;
//!   AdamW's moments are not saved (tch does not expose them), as in the VAE trainer;
//! - `metrics.jsonl`: step, loss, lr, time_s, ms_per_step, images_per_s every `log_every` steps;
//! - `grid-NNNNNNN.png` and `grid.png`: DDIM samples of the EMA model (fixed seed), decoded by the VAE.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use super::data::{self, Split};
use super::unet::{TextInput, UNet};
use super::vae::weights_of;
use super::{lr_resumed, max_abs_diff, read_json, save_varstore, set_threads, torch_err, write_json, JsonLines};
use crate::error::{Error, Result};
use crate::export::onnx::encode;
use crate::export::unet::{export_unet, unet_graph, UNetArch};
use crate::image::{from_model, grid, Image};
use crate::manifest::{DiffusionSpace, ImageSpec, Manifest, TextSpec};
use crate::model_set::ModelSet;
use crate::rng::Noise;
use crate::sampler::SamplerKind;
use crate::schedule::CosineSchedule;

const CKPT_WEIGHTS: &str = "checkpoint.safetensors";
const CKPT_EMA: &str = "ema.safetensors";
const CKPT_STATE: &str = "checkpoint.json";
const LATENTS: &str = "latents.safetensors";
const LATENTS_INFO: &str = "latents.json";

/// The largest ONNX-vs-tch difference an export accepts.
pub const PARITY_TOLERANCE: f32 = 1e-4;

/// Everything a U-Net training run is configured by (stored in each checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// "fashion" ([`UNetArch::fashion_latent`]) or "tiny", sized to the set's latent (or image) shape.
    pub arch: String,
    /// The model set whose VAE encodes the training images (and decodes the sample grids).
    pub set: PathBuf,
    /// Fashion-MNIST directory.
    pub data: PathBuf,
    /// Optimizer steps: 20 000 of batch 64 is ~21 passes over the 60 000 latents, ~40 min at the
    /// measured ~120 ms per step.
    pub steps: u64,
    /// 64: the batch the step time was measured at; diffusion losses are noisy (random t per sample), so
    /// a batch much smaller than this makes the loss curve hard to read.
    pub batch_size: usize,
    /// Peak AdamW learning rate: 1e-3 as the Keras DDIM example.
    pub lr: f64,
    /// AdamW weight decay: 1e-4 as the Keras DDIM example.
    pub weight_decay: f64,
    /// Linear warm-up steps, then cosine decay to `lr * final_lr_ratio` (see [`lr_at`]).
    pub warmup_steps: u64,
    pub final_lr_ratio: f64,
    /// EMA decay of the exported weights: 0.999 averages over ~1 000 steps, as the Keras example's ema.
    pub ema_decay: f64,
    /// Mean absolute error instead of squared error (the Keras example uses MAE; MSE is DDPM's).
    pub mae: bool,
    /// Clip the global gradient norm to this (None: no clipping).
    pub grad_clip: Option<f64>,
    /// DDIM steps of the sample grids.
    pub sample_steps: usize,
    /// Seeds libtorch (init, t, eps) and the data order.
    pub seed: u64,
    /// libtorch intra-op threads: 1. Measured here with another process on the second core, 2 threads
    /// took 5 s per step instead of ~0.2 s (each step waits for the slower thread). Pass 2 on an idle machine.
    pub threads: usize,
    /// Use only the first `limit` training images (tests and quick tries).
    pub limit: Option<usize>,
    pub log_every: u64,
    pub ckpt_every: u64,
    pub grid_every: u64,
    /// Text-conditioned architectures: the text encoder directory whose embeddings of each image's captions
    /// condition the U-Net (e.g. models/minilm).
    #[serde(default)]
    pub text_encoder: Option<PathBuf>,
    /// Fraction of samples trained on the empty prompt instead of a caption, so that one network also
    /// predicts unconditionally, as classifier-free guidance needs (the issue asks 10-20 %).
    #[serde(default = "default_uncond_prob")]
    pub uncond_prob: f64,
    /// Guidance scale of the sample grids, recorded in the manifest as the set's default.
    #[serde(default = "default_guidance")]
    pub guidance: f32,
    /// Draw each batch with replacement so that every group of images (an emoji and its skin-tone
    /// variants, by name) is as likely as any other, instead of epoch permutations over images. On the emoji
    /// 1 893 groups hold 3 758 images and People & Body is 60 % of the images; balanced, it is 20 %, and an
    /// emoji with one image (the red apple) is drawn twice as often.
    #[serde(default)]
    pub balance_groups: bool,
}

fn default_uncond_prob() -> f64 {
    0.15
}

fn default_guidance() -> f32 {
    3.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: "fashion".into(),
            set: PathBuf::from("models/fashion"),
            data: PathBuf::from(data::DEFAULT_DIR),
            steps: 20_000,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_steps: 500,
            final_lr_ratio: 0.05,
            ema_decay: 0.999,
            mae: false,
            grad_clip: Some(1.0),
            sample_steps: 20,
            seed: 0,
            threads: 1,
            limit: None,
            log_every: 100,
            ckpt_every: 1000,
            grid_every: 2000,
            text_encoder: None,
            uncond_prob: default_uncond_prob(),
            guidance: default_guidance(),
            balance_groups: false,
        }
    }
}

/// `checkpoint.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CheckpointState {
    pub step: u64,
    pub total_steps: u64,
    pub elapsed_s: f64,
    pub arch: UNetArch,
    pub config: TrainConfig,
    pub space: DiffusionSpace,
    pub schedule: CosineSchedule,
    /// Per-channel statistics of the training data (the U-Net sees (x - mean) / std).
    pub data_mean: Vec<f32>,
    pub data_std: Vec<f32>,
    /// sha256 of the VAE encoder the latents came from (empty in pixel space).
    pub encoder_sha256: String,
    /// sha256 of the text encoder's ONNX file (text-conditioned U-Nets).
    #[serde(default)]
    pub text_encoder_sha256: Option<String>,
    pub note: String,
}

/// `latents.json`: what the cached latents are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct LatentsInfo {
    encoder_sha256: String,
    images: usize,
    limit: Option<usize>,
    shape: [i64; 3],
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// What a training run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub elapsed_s: f64,
    pub last_loss: f64,
    pub ms_per_step: f64,
}

/// The cosine schedule's rates for a tensor of times t [B, 1] in tch: (signal, noise), each [B, 1]. The
/// angle's end points come from the same f64 expressions as [`CosineSchedule::rates`]; the unit test
/// checks that both agree.
pub fn rates_tch(schedule: &CosineSchedule, t: &Tensor) -> (Tensor, Tensor) {
    let start = (schedule.max_signal_rate as f64).acos();
    let end = (schedule.min_signal_rate as f64).acos();
    let angle = t.clamp(0.0, 1.0) * (end - start) + start; // [B, 1]
    (angle.cos(), angle.sin())
}

/// The training data in diffusion space.
struct TrainingData {
    /// [N, C, h, w], normalised per channel: (x - mean) / std.
    x: Tensor,
    space: DiffusionSpace,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// sha256 of the VAE encoder that made the latents (empty in pixel space).
    encoder_sha256: String,
    /// Each image's captions.
    captions: Vec<Vec<String>>,
    /// Each image's stable name (`thumbsup_tone2`).
    names: Vec<String>,
}

/// Loads the set's training images (Fashion-MNIST or the emoji, by the set's image shape) and, when the
/// set has a VAE, encodes them (the mean of q(z|x), batches of 256 on ONNX Runtime), caching the latents in
/// `out`; measures the per-channel mean and std.
fn training_data(cfg: &TrainConfig, set: &ModelSet, out: &Path) -> Result<TrainingData> {
    let m = set.manifest();
    let spec = &m.image;
    if spec.mean != 0.5 || spec.std != 0.5 {
        return Err(Error::invalid(format!(
            "model set {:?}: the trainer's data is in [-1, 1] (mean = std = 0.5)",
            set.dir().display()
        )));
    }
    let shape = [spec.channels as i64, spec.height as i64, spec.width as i64];
    let loaded = data::load_for_shape(&cfg.data, Split::Train, cfg.limit, shape)?;
    let (images, captions, names) = (loaded.data, loaded.captions, loaded.names);
    let n = images.len() as usize;
    let (space, x, sha) = match &m.vae {
        Some(vae) => {
            let [c, h, w] = vae.latent_shape.map(|d| d as i64);
            let sha = vae.encoder.sha256.clone();
            let (lat_path, info_path) = (out.join(LATENTS), out.join(LATENTS_INFO));
            let cached = if info_path.is_file() && lat_path.is_file() {
                let info: LatentsInfo = read_json(&info_path)?;
                if info.encoder_sha256 == sha && info.images == n && info.shape == [c, h, w] {
                    let t = Tensor::read_safetensors(&lat_path).map_err(torch_err("latents cache"))?;
                    t.into_iter().next().map(|(_, t)| t)
                } else {
                    None
                }
            } else {
                None
            };
            let x = match cached {
                Some(x) => x,
                None => {
                    let flat = images.images.reshape([-1]);
                    let pixels = Vec::<f32>::try_from(&flat).map_err(torch_err("images"))?;
                    let per = set.image_len();
                    let mut lat = Vec::with_capacity(n * (c * h * w) as usize);
                    let pb = indicatif::ProgressBar::new(n as u64);
                    pb.set_message("encoding the training set");
                    for start in (0..n).step_by(256) {
                        let k = 256.min(n - start);
                        let (mean, _) = set.encode(&pixels[start * per..(start + k) * per], k)?;
                        lat.extend(mean);
                        pb.inc(k as u64);
                    }
                    pb.finish_and_clear();
                    let x = Tensor::f_from_slice(&lat).map_err(torch_err("latents"))?.view([n as i64, c, h, w]);
                    Tensor::write_safetensors(&[("latents", &x)], &lat_path).map_err(torch_err("latents cache"))?;
                    x
                }
            };
            (DiffusionSpace::Latent, x, sha)
        }
        None => (DiffusionSpace::Pixel, images.images, String::new()),
    };
    // Per-channel statistics over images and positions, in f64.
    let dims = [0i64, 2, 3];
    let mean = x.mean_dim(dims.as_slice(), true, Kind::Double); // [1, C, 1, 1]
    let std = x.std_dim(dims.as_slice(), false, true).to_kind(Kind::Double).clamp_min(1e-6); // [1, C, 1, 1]
    let to_vec = |t: &Tensor| Vec::<f32>::try_from(&t.to_kind(Kind::Float).reshape([-1])).map_err(torch_err("stats"));
    let (mean_v, std_v) = (to_vec(&mean)?, to_vec(&std)?);
    let shape = [x.size()[1], x.size()[2], x.size()[3]];
    let info = LatentsInfo {
        encoder_sha256: sha.clone(),
        images: n,
        limit: cfg.limit,
        shape,
        mean: mean_v.clone(),
        std: std_v.clone(),
    };
    if space == DiffusionSpace::Latent {
        write_json(&out.join(LATENTS_INFO), &info)?;
    }
    let xn = ((&x - mean.to_kind(Kind::Float)) / std.to_kind(Kind::Float)).to_kind(Kind::Float);
    Ok(TrainingData { x: xn, space, mean: mean_v, std: std_v, encoder_sha256: sha, captions, names })
}

/// Every distinct caption of the training set embedded once by the text encoder: row 0 is the empty
/// prompt (the unconditional side), `per_image[i]` lists image i's rows.
struct CaptionTable {
    /// [M, L, W] token embeddings.
    context: Tensor,
    /// [M, W] pooled embeddings.
    pooled: Tensor,
    per_image: Vec<Vec<i64>>,
    /// Some prompts, for the sample grids (first captions of evenly spaced images).
    grid_prompts: Vec<String>,
    /// sha256 of the encoder's text_encoder.onnx.
    encoder_sha256: String,
}

/// Embeds the captions (batches of 64 on ONNX Runtime), cached in `out` under a key of the encoder's
/// sha256, the token count and every caption.
fn caption_table(encoder_dir: &Path, tokens: i64, captions: &[Vec<String>], out: &Path) -> Result<CaptionTable> {
    use sha2::Digest;
    let onnx = encoder_dir.join("text_encoder.onnx");
    let encoder_sha256 = crate::manifest::sha256_hex(&std::fs::read(&onnx).map_err(|e| Error::io(&onnx, e))?);
    let mut rows: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    index.insert(String::new(), 0i64);
    let per_image: Vec<Vec<i64>> = captions
        .iter()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    *index.entry(c.clone()).or_insert_with(|| {
                        rows.push(c.clone());
                        rows.len() as i64 - 1
                    })
                })
                .collect()
        })
        .collect();
    if let Some(i) = per_image.iter().position(|r| r.is_empty()) {
        return Err(Error::invalid(format!("training image {i} has no caption")));
    }
    let mut h = sha2::Sha256::new();
    h.update(encoder_sha256.as_bytes());
    h.update(tokens.to_le_bytes());
    for r in &rows {
        h.update(r.as_bytes());
        h.update([0u8]);
    }
    let key = format!("{:x}", h.finalize());
    let (path, key_path) = (out.join("captions.safetensors"), out.join("captions.key"));
    let cached = std::fs::read_to_string(&key_path).is_ok_and(|k| k.trim() == key) && path.is_file();
    let (context, pooled) = if cached {
        let mut t: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&path).map_err(torch_err("captions cache"))?.into_iter().collect();
        let c = t.remove("context").ok_or_else(|| Error::invalid("captions cache lacks context"))?;
        let p = t.remove("pooled").ok_or_else(|| Error::invalid("captions cache lacks pooled"))?;
        (c, p)
    } else {
        let enc = crate::text::TextEncoder::open(encoder_dir, None, None)?;
        let w = crate::text::TEXT_WIDTH as i64;
        let (mut ctx, mut pooled) = (Vec::new(), Vec::new());
        let pb = indicatif::ProgressBar::new(rows.len() as u64);
        pb.set_message("embedding the captions");
        for chunk in rows.chunks(64) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let e = enc.encode(&refs, tokens as usize)?;
            ctx.extend(e.tokens.iter().copied());
            pooled.extend(e.pooled.iter().copied());
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        let m = rows.len() as i64;
        let c = Tensor::f_from_slice(&ctx).map_err(torch_err("captions"))?.view([m, tokens, w]);
        let p = Tensor::f_from_slice(&pooled).map_err(torch_err("captions"))?.view([m, w]);
        Tensor::write_safetensors(&[("context", &c), ("pooled", &p)], &path).map_err(torch_err("captions cache"))?;
        std::fs::write(&key_path, &key).map_err(|e| Error::io(&key_path, e))?;
        (c, p)
    };
    let n = captions.len();
    let grid_prompts = (0..16).map(|k| captions[k * n / 16][0].clone()).collect();
    Ok(CaptionTable { context, pooled, per_image, grid_prompts, encoder_sha256 })
}

/// A uniform draw in [0, 1) from the top 53 bits of the next u64.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The caption row of each batch element for one step: the empty prompt with probability `uncond_prob`,
/// else one of the image's captions, drawn from a stream seeded by (seed, step) so that a resumed run
/// draws the same.
fn caption_rows(table: &CaptionTable, images: &[i64], uncond_prob: f64, seed: u64, step: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0xD134_2543_DE82_EF95) ^ 0x6361_7074);
    images
        .iter()
        .map(|&i| {
            let u = unit(&mut rng);
            let opts = &table.per_image[i as usize];
            let pick = opts[(rng.next_u64() % opts.len() as u64) as usize];
            if u < uncond_prob {
                0
            } else {
                pick
            }
        })
        .collect()
}

/// The group of an image by its name: the emoji without its skin-tone suffix (`thumbsup_tone2` and
/// `thumbsup_tone2-5` -> `thumbsup`); other names are their own group.
fn group_of(name: &str) -> &str {
    name.split("_tone").next().unwrap_or(name)
}

/// Cumulative sampling weights that give every group of `names` the same total weight (1 / group size per
/// image), normalised to end at 1.
fn group_weights(names: &[String]) -> Vec<f64> {
    let mut size = std::collections::HashMap::new();
    for n in names {
        *size.entry(group_of(n)).or_insert(0usize) += 1;
    }
    let mut acc = 0.0;
    let mut cum: Vec<f64> = names
        .iter()
        .map(|n| {
            acc += 1.0 / size[group_of(n)] as f64;
            acc
        })
        .collect();
    cum.iter_mut().for_each(|c| *c /= acc);
    cum
}

/// `bs` image indices drawn with replacement by the cumulative weights `cum`, from a stream seeded by
/// (seed, step) so that a resumed run draws the same.
fn weighted_batch(cum: &[f64], bs: usize, seed: u64, step: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x6261_6c61);
    (0..bs)
        .map(|_| {
            let u = unit(&mut rng);
            cum.partition_point(|&c| c <= u).min(cum.len() - 1) as i64
        })
        .collect()
}

/// A deterministic permutation of 0..n for one epoch (own Fisher-Yates over ChaCha8, so that a resumed
/// run sees the same order).
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x756e_6574);
    let mut v: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The EMA weights: one (ema, live) pair of tensors per variable, sorted by name.
struct Ema {
    pairs: Vec<(Tensor, Tensor)>,
    decay: f64,
}

impl Ema {
    fn new(ema: &nn::VarStore, live: &nn::VarStore, decay: f64) -> Result<Ema> {
        let (e, l) = (ema.variables(), live.variables());
        let mut names: Vec<&String> = l.keys().collect();
        names.sort();
        let mut pairs = Vec::new();
        for name in names {
            let et = e.get(name).ok_or_else(|| Error::invalid(format!("EMA has no variable {name}")))?;
            pairs.push((et.shallow_clone(), l[name].shallow_clone()));
        }
        Ok(Ema { pairs, decay })
    }

    /// ema = d ema + (1 - d) live, with d = min(decay, (1 + step) / (10 + step)): early on the average
    /// follows the weights closely instead of staying near the random init for ~1/(1 - decay) steps.
    fn update(&mut self, step: u64) -> Result<()> {
        let d = self.decay.min((1.0 + step as f64) / (10.0 + step as f64));
        tch::no_grad(|| {
            for (e, l) in &mut self.pairs {
                // e += (1 - d) (l - e)
                let _ = e.f_lerp_(l, 1.0 - d).map_err(torch_err("EMA update"))?;
            }
            Ok(())
        })
    }

    fn copy_from_live(&mut self) -> Result<()> {
        tch::no_grad(|| {
            for (e, l) in &mut self.pairs {
                e.f_copy_(l).map_err(torch_err("EMA init"))?;
            }
            Ok(())
        })
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.f_double_value(&[]).map_err(torch_err("scalar"))
}

/// Trains a U-Net as `cfg` says, into `out`; with `resume`, continues from `out/checkpoint.json`.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<TrainSummary> {
    if cfg.batch_size == 0 || cfg.steps == 0 || cfg.log_every == 0 || cfg.ckpt_every == 0 || cfg.grid_every == 0 {
        return Err(Error::invalid("steps, batch size and the every-N-steps settings must be positive"));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite() && (0.0..1.0).contains(&cfg.ema_decay)) {
        return Err(Error::invalid("lr must be positive and ema_decay in [0, 1)"));
    }
    if cfg.sample_steps == 0 {
        return Err(Error::invalid("sample_steps must be positive"));
    }
    set_threads(cfg.threads)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if !resume && out.join(CKPT_STATE).exists() {
        return Err(Error::invalid(format!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    let device = Device::cuda_if_available();
    let set = ModelSet::open(&cfg.set)?;
    let TrainingData { x: x_all, space, mean: data_mean, std: data_std, encoder_sha256, captions, names } =
        training_data(cfg, &set, out)?;
    let balance = cfg.balance_groups.then(|| group_weights(&names));
    let shape = [x_all.size()[1], x_all.size()[2], x_all.size()[3]];
    let arch = UNetArch::by_name(&cfg.arch, shape)?;
    arch.validate()?;
    if !(0.0..1.0).contains(&cfg.uncond_prob) {
        return Err(Error::invalid(format!("uncond_prob must be in [0, 1), got {}", cfg.uncond_prob)));
    }
    crate::pipeline::check_guidance(cfg.guidance)?;
    let table = match (&arch.text, &cfg.text_encoder) {
        (Some(t), Some(dir)) => Some(caption_table(dir, t.tokens, &captions, out)?),
        (Some(_), None) => {
            return Err(Error::invalid(format!(
                "architecture {:?} is text-conditioned: pass --text-encoder (e.g. models/minilm)",
                cfg.arch
            )))
        }
        (None, _) => None,
    };
    if let Some(t) = &table {
        let path = out.join("grid-prompts.txt");
        std::fs::write(&path, t.grid_prompts.join("\n") + "\n").map_err(|e| Error::io(&path, e))?;
    }
    let (ctx_all, pooled_all) = match &table {
        Some(t) => (Some(t.context.to_device(device)), Some(t.pooled.to_device(device))),
        None => (None, None),
    };
    let schedule = CosineSchedule::default();
    let x_all = x_all.to_device(device);
    let n = x_all.size()[0] as usize;
    let bs = cfg.batch_size.min(n);
    let steps_per_epoch = (n / bs) as u64;
    let total = cfg.steps;

    let mut vs = nn::VarStore::new(device);
    let mut ema_vs = nn::VarStore::new(device);
    tch::manual_seed(cfg.seed as i64);
    let model = UNet::new(&vs.root(), &arch)?;
    let ema_model = UNet::new(&ema_vs.root(), &arch)?;
    let mut ema = Ema::new(&ema_vs, &vs, cfg.ema_decay)?;
    ema.copy_from_live()?;
    let (mut step, mut elapsed_before) = (0u64, 0.0f64);
    let mut resumed_at = 0u64;
    if resume {
        let state: CheckpointState = read_json(&out.join(CKPT_STATE))?;
        if state.encoder_sha256 != encoder_sha256 {
            return Err(Error::invalid(format!(
                "cannot resume {}: it was trained on the latents of another VAE than {}'s",
                out.display(),
                cfg.set.display()
            )));
        }
        let text_sha = table.as_ref().map(|t| &t.encoder_sha256);
        if state.text_encoder_sha256.as_ref() != text_sha {
            return Err(Error::invalid(format!(
                "cannot resume {}: it was trained with another text encoder than {}",
                out.display(),
                cfg.text_encoder.as_deref().map_or("none".into(), |d| d.display().to_string())
            )));
        }
        if state.arch != arch || state.config.batch_size != cfg.batch_size || state.config.limit != cfg.limit {
            return Err(Error::invalid(format!(
                "cannot resume {}: it was trained with another architecture, --batch-size or --limit",
                out.display()
            )));
        }
        for (store, file) in [(&mut vs, CKPT_WEIGHTS), (&mut ema_vs, CKPT_EMA)] {
            let p = out.join(file);
            store.load(&p).map_err(torch_err(&p.display().to_string()))?;
        }
        step = state.step;
        resumed_at = step;
        elapsed_before = state.elapsed_s;
        tch::manual_seed(cfg.seed.wrapping_add(step) as i64);
        eprintln!("resuming {} at step {step} of {total}", out.display());
    }
    let mut opt =
        nn::AdamW { wd: cfg.weight_decay, ..Default::default() }.build(&vs, cfg.lr).map_err(torch_err("optimizer"))?;
    let mut metrics = JsonLines::append(&out.join("metrics.jsonl"))?;
    let pb = super::progress_bar(total);
    pb.set_position(step);

    let start = Instant::now();
    let mut order: (u64, Vec<i64>) = (u64::MAX, Vec::new());
    let (mut acc_loss, mut acc_n) = (0.0, 0u64);
    let (mut last_loss, mut ms_per_step) = (f64::NAN, f64::NAN);
    let mut interval = Instant::now();
    let grid_seed = cfg.seed.wrapping_add(1);
    let opts = (Kind::Float, device);
    while step < total {
        let epoch = step / steps_per_epoch;
        if balance.is_none() && order.0 != epoch {
            order = (epoch, epoch_order(n, cfg.seed, epoch));
        }
        let b = (step % steps_per_epoch) as usize;
        let drawn;
        let batch = match &balance {
            Some(cum) => {
                drawn = weighted_batch(cum, bs, cfg.seed, step);
                &drawn[..]
            }
            None => &order.1[b * bs..(b + 1) * bs],
        };
        let idx = Tensor::from_slice(batch).to_device(device);
        let x0 = x_all.index_select(0, &idx); // [B, C, h, w]
        let text = match (&table, &ctx_all, &pooled_all) {
            (Some(t), Some(c), Some(p)) => {
                let rows =
                    Tensor::from_slice(&caption_rows(t, batch, cfg.uncond_prob, cfg.seed, step)).to_device(device);
                Some((c.index_select(0, &rows), p.index_select(0, &rows))) // [B, L, W], [B, W]
            }
            _ => None,
        };
        let text_in = text.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
        let t = Tensor::rand([bs as i64, 1], opts); // [B, 1]
        let (signal, noise) = rates_tch(&schedule, &t); // [B, 1] each
        let eps = x0.randn_like();
        let xt = &x0 * signal.view([-1, 1, 1, 1]) + &eps * noise.view([-1, 1, 1, 1]); // [B, C, h, w]
        let pred = model.forward(&xt, &noise.square(), text_in.as_ref())?; // [B, C, h, w]
        let err = &pred - &eps;
        let loss = if cfg.mae { err.abs().mean(Kind::Float) } else { err.square().mean(Kind::Float) };

        let lr = lr_resumed(step, resumed_at, total, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio);
        opt.set_lr(lr);
        match cfg.grad_clip {
            Some(c) => opt.backward_step_clip_norm(&loss, c),
            None => opt.backward_step(&loss),
        }
        ema.update(step)?;
        step += 1;
        pb.inc(1);
        let l = scalar(&loss)?;
        if !l.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged at step {step} (loss {l}); the last checkpoint is untouched: resume with a lower --lr"
            )));
        }
        (acc_loss, acc_n) = (acc_loss + l, acc_n + 1);

        if step % cfg.log_every == 0 || step == total {
            let secs = interval.elapsed().as_secs_f64();
            (last_loss, ms_per_step) = (acc_loss / acc_n as f64, 1e3 * secs / acc_n as f64);
            let line = serde_json::json!({
                "step": step,
                "epoch": epoch,
                "loss": last_loss,
                "lr": lr,
                "time_s": elapsed_before + start.elapsed().as_secs_f64(),
                "ms_per_step": ms_per_step,
                "images_per_s": (acc_n as f64 * bs as f64) / secs.max(1e-9),
            });
            metrics.write(&line)?;
            pb.set_message(format!("loss {last_loss:.4}, {ms_per_step:.0} ms/step"));
            if pb.is_hidden() {
                eprintln!("{line}");
            }
            (acc_loss, acc_n) = (0.0, 0);
            interval = Instant::now();
        }
        if step % cfg.grid_every == 0 || step == total {
            let g = sample_grid(&ema_model, &set, space, &data_mean, &data_std, cfg, table.as_ref(), grid_seed)?;
            g.save(&out.join(format!("grid-{step:07}.png")))?;
            g.save(&out.join("grid.png"))?;
        }
        if step % cfg.ckpt_every == 0 || step == total {
            save_varstore(&vs, &out.join(CKPT_WEIGHTS))?;
            save_varstore(&ema_vs, &out.join(CKPT_EMA))?;
            let state = CheckpointState {
                step,
                total_steps: total,
                elapsed_s: elapsed_before + start.elapsed().as_secs_f64(),
                arch: arch.clone(),
                config: cfg.clone(),
                space,
                schedule,
                data_mean: data_mean.clone(),
                data_std: data_std.clone(),
                encoder_sha256: encoder_sha256.clone(),
                text_encoder_sha256: table.as_ref().map(|t| t.encoder_sha256.clone()),
                note: "AdamW moments are not saved: a resumed run restarts them".into(),
            };
            // The state goes last: it names weights that are already complete.
            write_json(&out.join(CKPT_STATE), &state)?;
        }
    }
    pb.finish_and_clear();
    Ok(TrainSummary { steps: step, elapsed_s: elapsed_before + start.elapsed().as_secs_f64(), last_loss, ms_per_step })
}

/// Generates `n` samples with DDIM (eta 0) from fixed seeded noise on the tch model; returns them in
/// diffusion space, de-normalised (latents or model-space pixels), flattened.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &UNet,
    schedule: CosineSchedule,
    mean: &[f32],
    std: &[f32],
    n: usize,
    steps: usize,
    seed: u64,
    text: Option<(&TextInput, f32)>,
) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let [c, h, w] = model.arch.shape();
    let len = (c * h * w) as usize;
    let mut noise = Noise::new(seed);
    let mut x = noise.normals(n * len);
    let times = schedule.timesteps(steps, 1.0)?;
    let mut sampler = SamplerKind::Ddim { eta: 0.0 }.build(schedule);
    let device = model.device();
    for k in 0..steps {
        let nr = schedule.rates(times[k]).noise;
        let xt = Tensor::f_from_slice(&x).map_err(torch_err("sample"))?.view([n as i64, c, h, w]).to_device(device);
        let nv = Tensor::full([n as i64, 1], (nr * nr) as f64, (Kind::Float, device));
        let eps = match text {
            // Classifier-free guidance as the runtime does it: the prompt rows and the empty-prompt rows
            // (`text` holds 2n rows) in one batch.
            Some((t, g)) => {
                let out = model.forward(&Tensor::cat(&[&xt, &xt], 0), &Tensor::cat(&[&nv, &nv], 0), Some(t))?;
                let (c, u) = (out.narrow(0, 0, n as i64), out.narrow(0, n as i64, n as i64));
                &u + (c - &u) * g as f64
            }
            None => model.forward(&xt, &nv, None)?,
        };
        let eps = eps.to_device(Device::Cpu).reshape([-1]);
        let eps = Vec::<f32>::try_from(&eps).map_err(torch_err("sample"))?;
        let next = times.get(k + 1).copied().filter(|_| k + 1 < steps);
        sampler.step(&mut x, &eps, times[k], next, &mut noise)?;
    }
    let plane = (h * w) as usize;
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / plane) % c as usize;
        *v = *v * std[ch] + mean[ch];
    }
    Ok(x)
}

/// A 2 x 8 grid of DDIM samples (fixed seed, so grids of one run are comparable), decoded by the set's
/// VAE in latent space, shown at 2x. A text-conditioned model draws the table's grid prompts (listed in
/// `grid-prompts.txt`, row by row) at the configured guidance.
#[allow(clippy::too_many_arguments)]
fn sample_grid(
    model: &UNet,
    set: &ModelSet,
    space: DiffusionSpace,
    mean: &[f32],
    std: &[f32],
    cfg: &TrainConfig,
    table: Option<&CaptionTable>,
    seed: u64,
) -> Result<Image> {
    let n = 16;
    let text = match table {
        Some(t) => {
            // The grid prompts are the first captions of images 0, n/16, ...: look their rows up again.
            let rows: Vec<i64> = (0..n).map(|k| t.per_image[k * t.per_image.len() / n][0]).collect();
            let rows: Vec<i64> = rows.iter().copied().chain(std::iter::repeat_n(0, n)).collect();
            let r = Tensor::from_slice(&rows).to_device(model.device());
            Some((
                t.context.to_device(model.device()).index_select(0, &r),
                t.pooled.to_device(model.device()).index_select(0, &r),
            ))
        }
        None => None,
    };
    let input = text.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
    let x = sample(
        model,
        CosineSchedule::default(),
        mean,
        std,
        n,
        cfg.sample_steps,
        seed,
        input.as_ref().map(|t| (t, cfg.guidance)),
    )?;
    let pixels = match space {
        DiffusionSpace::Latent => set.decode(&x, n)?,
        DiffusionSpace::Pixel => x.into_iter().map(|v| v.clamp(-1.0, 1.0)).collect(),
    };
    let spec: &ImageSpec = &set.manifest().image;
    let tiles: Vec<Image> = from_model(&pixels, n, spec)?.iter().map(|i| i.upscale(2)).collect();
    grid(&tiles, 8, 4, 128)
}

/// Max |ONNX Runtime - tch| of the U-Net graph `onnx` against `model` on `n` random inputs (x ~ N(0, I),
/// noise variances spread over the schedule's range).
pub fn check_parity(model: &UNet, onnx: &[u8], n: usize, seed: u64) -> Result<f32> {
    let _guard = tch::no_grad_guard();
    let [c, h, w] = model.arch.shape();
    let mut noise = Noise::new(seed);
    let x = noise.normals(n * (c * h * w) as usize);
    let nv: Vec<f32> = (0..n).map(|i| 0.1 + 0.9 * (i as f32 + 0.5) / n as f32).collect();
    let mut session = crate::runtime::global()?.session(onnx, "unet (parity)", None)?.session;
    let xt = ort::value::Tensor::from_array((vec![n as i64, c, h, w], x.clone()))?;
    let nt = ort::value::Tensor::from_array((vec![n as i64, 1], nv.clone()))?;
    // Text inputs: token embeddings of unit-ish scale (as the encoder's LayerNorm-ed outputs), unit pooled.
    let text = model.arch.text.as_ref().map(|t| {
        let ctx = noise.normals(n * (t.tokens * t.width) as usize);
        let mut pooled = noise.normals(n * t.width as usize);
        for row in pooled.chunks_mut(t.width as usize) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        (t.tokens, t.width, ctx, pooled)
    });
    let outputs = match &text {
        Some((l, wd, ctx, pooled)) => {
            let ct = ort::value::Tensor::from_array((vec![n as i64, *l, *wd], ctx.clone()))?;
            let pt = ort::value::Tensor::from_array((vec![n as i64, *wd], pooled.clone()))?;
            session.run(ort::inputs!["x" => xt, "noise_variance" => nt, "context" => ct, "pooled" => pt])?
        }
        None => session.run(ort::inputs!["x" => xt, "noise_variance" => nt])?,
    };
    let value = outputs.get("eps").ok_or_else(|| Error::Inference("unet: no output eps".into()))?;
    let (_, onnx_eps) = value.try_extract_tensor::<f32>()?;
    let xt = Tensor::f_from_slice(&x).map_err(torch_err("parity"))?.view([n as i64, c, h, w]);
    let nt = Tensor::f_from_slice(&nv).map_err(torch_err("parity"))?.view([n as i64, 1]);
    let tt = match &text {
        Some((l, wd, ctx, pooled)) => Some((
            Tensor::f_from_slice(ctx).map_err(torch_err("parity"))?.view([n as i64, *l, *wd]),
            Tensor::f_from_slice(pooled).map_err(torch_err("parity"))?.view([n as i64, *wd]),
        )),
        None => None,
    };
    let ti = tt.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
    let y = model.forward(&xt, &nt, ti.as_ref())?.reshape([-1]);
    let y = Vec::<f32>::try_from(&y).map_err(torch_err("parity"))?;
    Ok(max_abs_diff(&y, onnx_eps))
}

/// `mirage-train unet export`: the checkpoint's EMA weights -> `unet.onnx` in the model set `set` (which
/// must be the set the U-Net was trained on), after checking ONNX Runtime against tch (unless
/// `skip_parity`).
pub fn export_checkpoint(ckpt: &Path, set: &Path, skip_parity: bool) -> Result<Manifest> {
    let state_path = if ckpt.is_dir() { ckpt.join(CKPT_STATE) } else { ckpt.to_path_buf() };
    if !state_path.is_file() {
        return Err(Error::invalid(format!("no checkpoint at {} (expected {CKPT_STATE})", state_path.display())));
    }
    let dir = state_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let state: CheckpointState = read_json(&state_path)?;
    let manifest = Manifest::load(set)?;
    let set_sha = manifest.vae.as_ref().map(|v| v.encoder.sha256.clone()).unwrap_or_default();
    if set_sha != state.encoder_sha256 {
        return Err(Error::invalid(format!(
            "{} is not the model set this U-Net was trained on (its VAE encoder differs): the latents would not match",
            set.display()
        )));
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = UNet::new(&vs.root(), &state.arch)?;
    let ema = dir.join(CKPT_EMA);
    vs.load(&ema).map_err(torch_err(&ema.display().to_string()))?;
    let weights = weights_of(&vs)?;
    let text = match (&state.arch.text, &state.config.text_encoder, &state.text_encoder_sha256) {
        (Some(t), Some(dir), Some(sha)) => Some(TextSpec {
            encoder: relative_dir(set, dir)?,
            encoder_sha256: sha.clone(),
            width: t.width as u32,
            tokens: t.tokens as u32,
            guidance: state.config.guidance,
        }),
        (Some(_), _, _) => {
            return Err(Error::invalid("checkpoint of a text-conditioned U-Net without its text encoder"))
        }
        (None, _, _) => None,
    };
    let data = if manifest.image.channels == 4 {
        "Noto emoji (npm emoji-datasource-google@16.0.0, Apache-2.0) with captions from their names, emojibase \
         labels and tags (npm emojibase-data@17.0.0); held-out emoji excluded; encoded by this set's VAE"
    } else if state.arch.text.is_some() {
        "Fashion-MNIST (Zalando, MIT) with captions from its 10 class names; encoded by this set's VAE"
    } else {
        "Fashion-MNIST (Zalando, MIT), Debian package dataset-fashion-mnist: training images encoded by this set's VAE"
    };
    let mut training = serde_json::json!({
        "data": data,
        "trainer": format!("mirage-train {} (tch 0.24, libtorch 2.11.0)", crate::VERSION),
        "steps": state.step,
        "elapsed_s": state.elapsed_s,
        "weights": "EMA",
        "config": state.config,
    });
    if !skip_parity {
        let bytes = encode(&unet_graph(&state.arch, &weights)?.finish()?)?;
        let d = check_parity(&model, &bytes, 8, 1234)?;
        if d > PARITY_TOLERANCE {
            return Err(Error::model(format!(
                "exported U-Net differs from the tch model by {d} (> {PARITY_TOLERANCE})"
            )));
        }
        training["parity_max_abs_diff"] = serde_json::json!(d);
    }
    export_unet(
        &state.arch,
        &weights,
        set,
        state.space,
        state.schedule,
        state.data_mean,
        state.data_std,
        text,
        training,
    )
}

/// `to` as a path relative to the directory `from` (both made absolute first), e.g. models/emoji ->
/// models/minilm gives "../minilm": what a manifest stores so that the set can move with its encoder.
fn relative_dir(from: &Path, to: &Path) -> Result<String> {
    let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| Error::io(p, e));
    let (from, to) = (abs(from)?, abs(to)?);
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c.as_os_str());
    }
    rel.to_str().map(str::to_string).ok_or_else(|| Error::invalid("text encoder path is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tch_rates_agree_with_the_schedule() {
        let s = CosineSchedule::default();
        let ts: Vec<f32> = (0..=100).map(|k| k as f32 / 100.0).collect();
        let (sig, noi) = rates_tch(&s, &Tensor::from_slice(&ts).view([-1, 1]));
        let sig = Vec::<f32>::try_from(&sig.reshape([-1])).unwrap();
        let noi = Vec::<f32>::try_from(&noi.reshape([-1])).unwrap();
        for (i, &t) in ts.iter().enumerate() {
            let r = s.rates(t);
            assert!((r.signal - sig[i]).abs() < 1e-6 && (r.noise - noi[i]).abs() < 1e-6, "t = {t}");
        }
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 1, 0);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<i64>>());
        assert_eq!(a, epoch_order(100, 1, 0));
        assert_ne!(a, epoch_order(100, 1, 1));
    }

    #[test]
    fn balanced_batches_draw_each_group_equally() {
        assert_eq!(group_of("thumbsup_tone2"), "thumbsup");
        assert_eq!(group_of("couple_tone1-5"), "couple");
        assert_eq!(group_of("apple"), "apple");
        // One group of 1 (apple) and one of 4 (a hand and its tones): half the draws each.
        let names: Vec<String> =
            ["apple", "hand", "hand_tone1", "hand_tone2", "hand_tone3"].iter().map(|s| s.to_string()).collect();
        let cum = group_weights(&names);
        assert!((cum[4] - 1.0).abs() < 1e-12 && (cum[0] - 0.5).abs() < 1e-12);
        let mut count = [0usize; 5];
        for step in 0..200 {
            for i in weighted_batch(&cum, 64, 7, step) {
                count[i as usize] += 1;
            }
        }
        let total = 200.0 * 64.0;
        assert!((count[0] as f64 / total - 0.5).abs() < 0.02, "{count:?}");
        for &c in &count[1..] {
            assert!((c as f64 / total - 0.125).abs() < 0.02, "{count:?}");
        }
        assert_eq!(weighted_batch(&cum, 64, 7, 3), weighted_batch(&cum, 64, 7, 3));
        assert_ne!(weighted_batch(&cum, 64, 7, 3), weighted_batch(&cum, 64, 7, 4));
    }
}
