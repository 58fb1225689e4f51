//! `mirage-train unet train | export`: the lecture's diffusion training on the latents of an exported VAE
//! model set (or on its pixels when the set has no VAE).
//!
//! Training, per step: a batch x0 of normalised latents, t ~ U(0, 1), the cosine schedule's rates
//! (signal, noise) at t, eps ~ N(0, I), x_t = signal x0 + noise eps; the U-Net predicts eps from
//! (x_t, noise^2); the loss is the MSE (or MAE) between prediction and eps. AdamW, an EMA copy of the
//! weights (what is exported and sampled), optional gradient clipping. The loop around that step is
//! [`super::run_loop`]'s; the data (latents, captions, group balancing) is [`super::unet_data`]'s.
//!
//! A run writes into `--out`:
//! - `latents.safetensors` + `latents.json`: the encoded training set (latent means) and its per-channel
//!   mean and std, cached: reused while the set's encoder and `--limit` are the same;
//! - text-conditioned: `captions.safetensors` + `captions.key` (the caption embeddings, cached) and
//!   `grid-prompts.txt` (the grids' prompts);
//! - `checkpoint.safetensors` (training weights), `ema.safetensors` (EMA weights), `checkpoint.json`;
//!   AdamW's moments are not saved (tch does not expose them), as in the VAE trainer;
//! - `metrics.jsonl`: step, epoch, loss, lr, time_s, ms_per_step, images_per_s every `log_every` steps;
//! - `grid-NNNNNNN.png` and `grid.png`: DDIM samples of the EMA model (fixed seed), decoded by the VAE.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::batches::Batches;
use super::data;
use super::run_loop::{
    self, claim_run_dir, find_checkpoint, save_checkpoint, At, Cadence, Loss, Plan, Report, Resumed, Summary,
};
use super::unet::{TextInput, UNet};
use super::unet_data::{caption_rows, caption_table, group_weights, training_data, CaptionTable, TrainingData};
use super::vae::weights_of;
use super::{load_varstore, max_abs_diff, read_json, set_threads, torch_err};
use crate::error::{Error, Result};
use crate::export::unet::{export_unet, unet_bytes, UNetArch};
use crate::image::{from_model, grid, Image};
use crate::manifest::{DiffusionSpace, ImageSpec, Manifest, TextSpec};
use crate::model_set::ModelSet;
use crate::rng::Noise;
use crate::sampler::SamplerKind;
use crate::schedule::CosineSchedule;

const CKPT_WEIGHTS: &str = "checkpoint.safetensors";
const CKPT_EMA: &str = "ema.safetensors";
const CKPT_STATE: &str = "checkpoint.json";

/// The largest ONNX-vs-tch difference an export accepts.
pub const PARITY_TOLERANCE: f32 = 1e-4;
/// The same with the weights stored as f16 (`unet export --f16-weights`): each weight off by up to 2^-11 of
/// itself, measured on the emoji-v2 U-Net (step 4 000) as a max |eps difference| of 1.7e-3 on the 8 parity
/// inputs, and its 50-step DDIM images at 47.3 dB PSNR from the f32 file's (16 images, the worst 41.5 dB).
pub const PARITY_TOLERANCE_F16: f32 = 1e-2;

/// Everything a U-Net training run is configured by (stored in each checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// A name of [`UNetArch::by_name`], sized to the set's latent (or image) shape: "fashion"
    /// ([`UNetArch::fashion_latent`]), "wide" (the text layout without text), "text"
    /// ([`UNetArch::text_latent`]), "text-deep" ([`UNetArch::text_latent_deep`], 16x16 latents), "tiny" or
    /// "tiny-text" (tests).
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
    /// Linear warm-up steps, then cosine decay to `lr * final_lr_ratio` (see [`super::lr_at`]).
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
    /// Metrics, checkpoints and sample grids every so many steps.
    #[serde(flatten)]
    pub cadence: Cadence,
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
    /// The emoji data (v1 or v2 and its styles); ignored for Fashion-MNIST.
    #[serde(flatten)]
    pub emoji: data::EmojiChoice,
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
            cadence: Cadence::default(),
            text_encoder: None,
            uncond_prob: default_uncond_prob(),
            guidance: default_guidance(),
            balance_groups: false,
            emoji: data::EmojiChoice::default(),
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

/// The cosine schedule's rates for a tensor of times t [B, 1] in tch: (signal, noise), each [B, 1]. The
/// angle's end points come from the same f64 expressions as [`CosineSchedule::rates`]; the unit test
/// checks that both agree.
pub fn rates_tch(schedule: &CosineSchedule, t: &Tensor) -> (Tensor, Tensor) {
    let start = (schedule.max_signal_rate as f64).acos();
    let end = (schedule.min_signal_rate as f64).acos();
    let angle = t.clamp(0.0, 1.0) * (end - start) + start; // [B, 1]
    (angle.cos(), angle.sin())
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

/// Trains a U-Net as `cfg` says, into `out`; with `resume`, continues from `out/checkpoint.json`.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<Summary> {
    if cfg.batch_size == 0 || cfg.steps == 0 {
        return Err(Error::invalid("steps and batch size must be positive"));
    }
    cfg.cadence.validate()?;
    if !(cfg.lr > 0.0 && cfg.lr.is_finite() && (0.0..1.0).contains(&cfg.ema_decay)) {
        return Err(Error::invalid("lr must be positive and ema_decay in [0, 1)"));
    }
    if cfg.sample_steps == 0 {
        return Err(Error::invalid("sample_steps must be positive"));
    }
    set_threads(cfg.threads)?;
    claim_run_dir(out, CKPT_STATE, resume)?;
    let device = Device::cuda_if_available();
    let set = ModelSet::open(&cfg.set)?;
    let mut data = training_data(&cfg.data, cfg.limit, &cfg.emoji.version()?, &set, out)?;
    let shape = [data.x.size()[1], data.x.size()[2], data.x.size()[3]];
    let arch = UNetArch::by_name(&cfg.arch, shape)?;
    arch.validate()?;
    if !(0.0..1.0).contains(&cfg.uncond_prob) {
        return Err(Error::invalid(format!("uncond_prob must be in [0, 1), got {}", cfg.uncond_prob)));
    }
    crate::limits::check_guidance(cfg.guidance)?;
    let table = match (&arch.text, &cfg.text_encoder) {
        (Some(t), Some(dir)) => Some(caption_table(dir, t.tokens, &data.captions, out)?),
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
    let text = table.as_ref().map(|t| (t.context.to_device(device), t.pooled.to_device(device)));
    data.x = data.x.to_device(device);
    let n = data.x.size()[0] as usize;
    let batches = match cfg.balance_groups {
        true => Batches::Weighted(group_weights(&data.names)),
        false => Batches::Epochs { salt: 0x756e_6574 },
    };

    let vs = nn::VarStore::new(device);
    let ema_vs = nn::VarStore::new(device);
    tch::manual_seed(cfg.seed as i64);
    let model = UNet::new(&vs.root(), &arch)?;
    let ema_model = UNet::new(&ema_vs.root(), &arch)?;
    let mut ema = Ema::new(&ema_vs, &vs, cfg.ema_decay)?;
    ema.copy_from_live()?;
    let plan = Plan {
        images: n,
        batch_size: cfg.batch_size.min(n),
        batches,
        total_steps: cfg.steps,
        seed: cfg.seed,
        lr: cfg.lr,
        warmup_steps: cfg.warmup_steps,
        final_lr_ratio: cfg.final_lr_ratio,
        weight_decay: cfg.weight_decay,
        grad_clip: cfg.grad_clip,
        log_every: cfg.cadence.log_every,
        grid_every: Some(cfg.cadence.grid_every),
        ckpt_every: Some(cfg.cadence.ckpt_every),
    };
    let mut trainer = UNetTrainer {
        cfg,
        arch,
        set,
        data,
        table,
        text,
        schedule: CosineSchedule::default(),
        vs,
        ema_vs,
        model,
        ema_model,
        ema,
    };
    run_loop::run(&mut trainer, &plan, out, resume)
}

/// The U-Net's part of the training loop: the noise-prediction loss, the EMA, grids of the EMA model's
/// samples, checkpoints of both weight sets.
struct UNetTrainer<'a> {
    cfg: &'a TrainConfig,
    arch: UNetArch,
    /// The model set whose VAE made the latents (and decodes the grids).
    set: ModelSet,
    /// The training data, `x` on the device.
    data: TrainingData,
    table: Option<CaptionTable>,
    /// The table's token and pooled embeddings on the device.
    text: Option<(Tensor, Tensor)>,
    schedule: CosineSchedule,
    vs: nn::VarStore,
    ema_vs: nn::VarStore,
    model: UNet,
    ema_model: UNet,
    ema: Ema,
}

impl run_loop::Trainer for UNetTrainer<'_> {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn resume(&mut self, out: &Path) -> Result<Resumed> {
        let (cfg, out_s) = (self.cfg, out.display());
        let state: CheckpointState = read_json(&out.join(CKPT_STATE))?;
        if state.encoder_sha256 != self.data.encoder_sha256 {
            return Err(Error::invalid(format!(
                "cannot resume {out_s}: it was trained on the latents of another VAE than {}'s",
                cfg.set.display()
            )));
        }
        if state.text_encoder_sha256.as_ref() != self.table.as_ref().map(|t| &t.encoder_sha256) {
            return Err(Error::invalid(format!(
                "cannot resume {out_s}: it was trained with another text encoder than {}",
                cfg.text_encoder.as_deref().map_or("none".into(), |d| d.display().to_string())
            )));
        }
        if state.arch != self.arch || state.config.batch_size != cfg.batch_size || state.config.limit != cfg.limit {
            return Err(Error::invalid(format!(
                "cannot resume {out_s}: it was trained with another architecture, --batch-size or --limit"
            )));
        }
        load_varstore(&mut self.vs, &out.join(CKPT_WEIGHTS))?;
        load_varstore(&mut self.ema_vs, &out.join(CKPT_EMA))?;
        Ok(Resumed { step: state.step, elapsed_s: state.elapsed_s })
    }

    /// x_t = signal x0 + noise eps at t ~ U(0, 1); the loss is the MSE (or MAE) of the predicted eps.
    fn loss(&mut self, batch: &[i64], step: u64) -> Result<Loss> {
        let device = self.model.device();
        let idx = Tensor::from_slice(batch).to_device(device);
        let x0 = self.data.x.index_select(0, &idx); // [B, C, h, w]
        let text = match (&self.table, &self.text) {
            (Some(table), Some((context, pooled))) => {
                let rows = caption_rows(table, batch, self.cfg.uncond_prob, self.cfg.seed, step);
                let rows = Tensor::from_slice(&rows).to_device(device);
                Some((context.index_select(0, &rows), pooled.index_select(0, &rows)))
                // [B, L, W], [B, W]
            }
            _ => None,
        };
        let text_in = text.as_ref().map(|(c, p)| TextInput { context: c, pooled: p });
        let t = Tensor::rand([batch.len() as i64, 1], (Kind::Float, device)); // [B, 1]
        let (signal, noise) = rates_tch(&self.schedule, &t); // [B, 1] each
        let eps = x0.randn_like();
        let xt = &x0 * signal.view([-1, 1, 1, 1]) + &eps * noise.view([-1, 1, 1, 1]); // [B, C, h, w]
        let pred = self.model.forward(&xt, &noise.square(), text_in.as_ref())?; // [B, C, h, w]
        let err = &pred - &eps;
        let loss = if self.cfg.mae { err.abs().mean(Kind::Float) } else { err.square().mean(Kind::Float) };
        Ok(Loss { loss, terms: Vec::new() })
    }

    fn after_step(&mut self, step: u64) -> Result<()> {
        self.ema.update(step)
    }

    fn grid(&mut self) -> Result<Option<Image>> {
        let (d, cfg) = (&self.data, self.cfg);
        let seed = cfg.seed.wrapping_add(1);
        sample_grid(&self.ema_model, &self.set, d.space, &d.mean, &d.std, cfg, self.table.as_ref(), seed).map(Some)
    }

    fn checkpoint(&mut self, out: &Path, at: &At) -> Result<Option<Report>> {
        let d = &self.data;
        let state = CheckpointState {
            step: at.step,
            total_steps: at.total_steps,
            elapsed_s: at.elapsed_s,
            arch: self.arch.clone(),
            config: self.cfg.clone(),
            space: d.space,
            schedule: self.schedule,
            data_mean: d.mean.clone(),
            data_std: d.std.clone(),
            encoder_sha256: d.encoder_sha256.clone(),
            text_encoder_sha256: self.table.as_ref().map(|t| t.encoder_sha256.clone()),
            note: "AdamW moments are not saved: a resumed run restarts them".into(),
        };
        save_checkpoint(out, &[(&self.vs, CKPT_WEIGHTS), (&self.ema_vs, CKPT_EMA)], CKPT_STATE, &state)?;
        Ok(None)
    }
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
    let mut sampler = SamplerKind::Ddim { eta: 0.0 }.build_cosine(schedule, steps, 1.0)?;
    let device = model.device();
    for k in 0..steps {
        let nv = sampler.input(k).level; // the noise variance at this step
        let xt = Tensor::f_from_slice(&x).map_err(torch_err("sample"))?.view([n as i64, c, h, w]).to_device(device);
        let nv = Tensor::full([n as i64, 1], nv as f64, (Kind::Float, device));
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
        sampler.step(k, &mut x, &eps, &mut noise)?;
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
    let mut session = crate::runtime::global()?.session(onnx, "unet (parity)", None)?;
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
/// With `f16_weights` the weight tensors are stored as float16 ([`crate::export::unet::unet_bytes`]) and
/// the parity check allows [`PARITY_TOLERANCE_F16`].
pub fn export_checkpoint(ckpt: &Path, set: &Path, skip_parity: bool, f16_weights: bool) -> Result<Manifest> {
    let (state_path, dir) = find_checkpoint(ckpt, CKPT_STATE)?;
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
    load_varstore(&mut vs, &dir.join(CKPT_EMA))?;
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
        format!(
            "{} with captions from their names, emojibase labels and tags (npm emojibase-data@17.0.0); encoded by \
             this set's VAE",
            state.config.emoji.describe(manifest.image.width as i64)
        )
    } else if state.arch.text.is_some() {
        "Fashion-MNIST (Zalando, MIT) with captions from its 10 class names; encoded by this set's VAE".into()
    } else {
        "Fashion-MNIST (Zalando, MIT), Debian package dataset-fashion-mnist: training images encoded by this set's VAE"
            .into()
    };
    let mut training = serde_json::json!({
        "data": data,
        "trainer": format!("mirage-train {} (tch 0.24, libtorch 2.11.0)", crate::VERSION),
        "steps": state.step,
        "elapsed_s": state.elapsed_s,
        "weights": "EMA",
        "config": state.config,
    });
    training["weights_storage"] = serde_json::json!(if f16_weights { "f16" } else { "f32" });
    // Built once: the bytes checked are the bytes written.
    let bytes = unet_bytes(&state.arch, &weights, f16_weights)?;
    if !skip_parity {
        let d = check_parity(&model, &bytes, 8, 1234)?;
        let tolerance = if f16_weights { PARITY_TOLERANCE_F16 } else { PARITY_TOLERANCE };
        if d > tolerance {
            return Err(Error::model(format!("exported U-Net differs from the tch model by {d} (> {tolerance})")));
        }
        training["parity_max_abs_diff"] = serde_json::json!(d);
        training["parity_tolerance"] = serde_json::json!(tolerance);
    }
    export_unet(&state.arch, bytes, set, state.space, state.schedule, state.data_mean, state.data_std, text, training)
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
}
