//! `mirage-train vae train | eval | export` and `mirage-train eval prior`. Training is [`super::run_loop`]
//! with the VAE's loss (per-image reconstruction SSE + beta KL, optionally annealed), grids and checkpoints;
//! [`evaluate_prior`] measures a set's prior samples (FID/KID against the floor, the classifier's verdicts).
//!
//! A training run writes into its `--out` directory:
//! - `checkpoint.safetensors` + `checkpoint.json`: the latest weights and the state to resume from
//!   (every `ckpt_every` steps and at the end). The optimizer's moments are NOT saved (tch does not expose
//!   AdamW's state): a resumed run restarts them from zero, which costs a few noisy steps, nothing more.
//! - `metrics.jsonl`: one line per `log_every` steps (step, epoch, loss, recon, kl, lr, time_s,
//!   ms_per_step, images_per_s) and one per checkpoint with a quick evaluation on 1 000 test images.
//! - `grid-NNNNNNN.png` (every `grid_every` steps) and `grid.png` (the latest): rows of test images,
//!   their reconstructions, and decodings of random latents drawn from N(0, I).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::batches::Batches;
use super::data::{self, Dataset, Split};
use super::run_loop::{
    self, claim_run_dir, find_checkpoint, save_checkpoint, At, Cadence, Loss, Plan, Report, Resumed,
};
use super::vae::{load_weights, losses, weights_of, Vae};
use super::{load_varstore, max_abs_diff, read_json, scalar, set_threads, torch_err, write_json};
use crate::error::{Error, Result};
use crate::export::vae::{export_vae_with_prior, VaeArch, Weights};
use crate::image::{from_model, grid, Image};
use crate::manifest::{ImageSpec, Manifest, MANIFEST_FILE};
use crate::rng::Noise;

const CKPT_WEIGHTS: &str = "checkpoint.safetensors";
const CKPT_STATE: &str = "checkpoint.json";

/// Everything a training run is configured by (stored in each checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Architecture name ("fashion", "fashion-dense", "fashion-2d", "emoji", "tiny", "tiny-dense"; see
    /// [`VaeArch::by_name`]).
    pub arch: String,
    /// Overrides the architecture's channel widths (for experiments; the checkpoint stores the result).
    #[serde(default)]
    pub widths: Option<Vec<i64>>,
    /// Fashion-MNIST directory.
    pub data: PathBuf,
    /// Passes over the training set: 7 (13 125 steps of 32) took about 40 min with the fashion
    /// architecture on one free core (~180 images/s).
    pub epochs: u64,
    /// 32: on a CPU the time per image hardly depends on the batch, so smaller batches buy more updates per
    /// minute. Measured: 12 800 images at batch 32 / lr 2e-3 gave 22.0 dB test PSNR, at 64 / 1e-3 19.5 dB.
    pub batch_size: usize,
    /// Peak AdamW learning rate (after warm-up): 2e-3 with batch 32, see `batch_size`.
    pub lr: f64,
    /// AdamW's decoupled weight decay: only a gentle pull, since a 0.17 M-parameter model on 60 000 images
    /// underfits rather than overfits.
    pub weight_decay: f64,
    /// Weight of the KL term against the per-image sum of squared errors. Small (1e-3) because the
    /// issue ranks reconstruction PSNR first: with beta = 1 the KL of 192 informative latents (hundreds of
    /// nats) would outweigh an SSE of ~8 and blur everything; 1e-3 still keeps latents near N(0, I) in scale.
    pub beta: f64,
    /// KL annealing: the KL weight rises linearly from beta / kl_warmup_steps to beta over this many
    /// steps (0: beta from the start). Lets the decoder learn to use the latent before the KL term pulls
    /// the posteriors onto the prior.
    #[serde(default)]
    pub kl_warmup_steps: u64,
    /// The emoji data (v1 or v2 and its styles); ignored for Fashion-MNIST.
    #[serde(flatten)]
    pub emoji: data::EmojiChoice,
    /// Linear learning-rate warm-up steps before the cosine decay (see [`super::lr_at`]).
    pub warmup_steps: u64,
    /// The cosine decay ends at `lr * final_lr_ratio`.
    pub final_lr_ratio: f64,
    /// Seeds libtorch (init, reparameterisation noise) and the data order.
    pub seed: u64,
    /// libtorch intra-op threads: 2, the cores of the development machine, when the machine is the
    /// trainer's alone. On a shared machine pass 1: measured here, 2 threads fell from ~160 to ~50 images/s
    /// whenever another process took a core (every step waits for the slower thread), 1 thread held ~90-180.
    pub threads: usize,
    /// Use only the first `limit` training images (tests and quick tries).
    pub limit: Option<usize>,
    /// Metrics, checkpoints (each with a quick evaluation) and image grids every so many steps.
    #[serde(flatten)]
    pub cadence: Cadence,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: "fashion".into(),
            widths: None,
            data: PathBuf::from(data::DEFAULT_DIR),
            epochs: 7,
            batch_size: 32,
            lr: 2e-3,
            weight_decay: 1e-4,
            beta: 1e-3,
            kl_warmup_steps: 0,
            emoji: data::EmojiChoice::default(),
            warmup_steps: 300,
            final_lr_ratio: 0.05,
            seed: 0,
            threads: 2,
            limit: None,
            cadence: Cadence::default(),
        }
    }
}

/// `checkpoint.json`: where a run stands.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch the next step belongs to (0-based).
    pub epoch: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    /// Wall-clock seconds of training so far (all runs of a resumed training together).
    pub elapsed_s: f64,
    pub arch: VaeArch,
    pub config: TrainConfig,
    /// The weights file beside this one.
    pub weights: String,
    /// Said once here so nobody expects otherwise: AdamW moments are not saved.
    pub note: String,
}

/// What a finished (or interrupted-then-finished) training run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub elapsed_s: f64,
    pub last_eval: Option<EvalReport>,
}

/// Evaluation of a VAE on a set of images (see [`evaluate`] for exactly what each number is).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EvalReport {
    pub images: i64,
    /// 10 log10(1 / MSE), MSE over all pixels of all images on the [0, 1] pixel scale, reconstructions
    /// decoded from the mean latent (no sampling). The headline number.
    pub psnr_db: f64,
    /// The average over images of each image's own PSNR (same reconstructions); higher than `psnr_db`.
    pub psnr_mean_per_image_db: f64,
    /// The MSE behind `psnr_db` ([0, 1] scale).
    pub mse: f64,
    /// Per-image sum of squared errors in model space ([-1, 1]), decoding the mean latent.
    pub recon_sse_mean_latent: f64,
    /// Per-image sum of squared errors in model space, decoding one sample z ~ q(z|x) (the training term).
    pub recon_sse_sampled: f64,
    /// Per-image KL(q(z|x) || N(0, I)) in nats.
    pub kl_nats: f64,
    /// The training objective: recon_sse_sampled + beta * kl_nats.
    pub loss: f64,
    pub beta: f64,
    /// Per-image negative ELBO in nats of a Gaussian decoder with variance 1/2 in model space (the model
    /// our loss with beta = 1 is the likelihood of): recon_sse_sampled + (D / 2) ln(pi) + kl_nats, D = pixels
    /// x channels, one latent sample per image. A density on continuous model-space values, so it is not
    /// comparable with bits-per-dimension figures on discrete pixels.
    pub neg_elbo_nats: f64,
}

/// Loads a checkpoint (`DIR` or `DIR/checkpoint.json`) into a new VarStore on `device`.
pub fn load_checkpoint(ckpt: &Path, device: Device) -> Result<(nn::VarStore, Vae, CheckpointState)> {
    let (state_path, dir) = find_checkpoint(ckpt, CKPT_STATE)?;
    let state: CheckpointState = read_json(&state_path)?;
    let mut vs = nn::VarStore::new(device);
    let model = Vae::new(&vs.root(), &state.arch)?;
    load_varstore(&mut vs, &dir.join(&state.weights))?;
    Ok((vs, model, state))
}

/// Trains a VAE as `cfg` says, into `out`; with `resume`, continues from `out/checkpoint.json`.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<TrainSummary> {
    let mut arch = VaeArch::by_name(&cfg.arch)?;
    if let Some(w) = &cfg.widths {
        arch.widths = w.clone();
    }
    arch.validate()?;
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::invalid("epochs and batch size must be positive"));
    }
    cfg.cadence.validate()?;
    if !(cfg.lr > 0.0 && cfg.lr.is_finite() && cfg.beta >= 0.0 && cfg.beta.is_finite()) {
        return Err(Error::invalid("lr must be positive and beta non-negative"));
    }
    set_threads(cfg.threads)?;
    claim_run_dir(out, CKPT_STATE, resume)?;
    let device = Device::cuda_if_available();

    let shape = [arch.channels, arch.height, arch.width];
    let emoji = cfg.emoji.version()?;
    let train_set = data::load_for_shape(&cfg.data, Split::Train, cfg.limit, shape, &emoji)?.data;
    // 1 000 test images: enough for a PSNR within ~0.1 dB of the full set, cheap enough for every checkpoint.
    let test_set = data::load_for_shape(&cfg.data, Split::Test, Some(1000), shape, &emoji)?.data;
    let n = train_set.len() as usize;
    let bs = cfg.batch_size.min(n);
    let steps_per_epoch = (n / bs) as u64;

    let vs = nn::VarStore::new(device);
    tch::manual_seed(cfg.seed as i64);
    let model = Vae::new(&vs.root(), &arch)?;
    let plan = Plan {
        images: n,
        batch_size: bs,
        batches: Batches::Epochs { salt: 0 },
        total_steps: cfg.epochs * steps_per_epoch,
        seed: cfg.seed,
        lr: cfg.lr,
        warmup_steps: cfg.warmup_steps,
        final_lr_ratio: cfg.final_lr_ratio,
        weight_decay: cfg.weight_decay,
        grad_clip: None,
        log_every: cfg.cadence.log_every,
        grid_every: Some(cfg.cadence.grid_every),
        ckpt_every: Some(cfg.cadence.ckpt_every),
    };
    let images = train_set.images.to_device(device);
    let mut trainer = VaeTrainer { cfg, arch, vs, model, images, test_set, device, steps_per_epoch, last_eval: None };
    let s = run_loop::run(&mut trainer, &plan, out, resume)?;
    Ok(TrainSummary { steps: s.steps, elapsed_s: s.elapsed_s, last_eval: trainer.last_eval })
}

/// The VAE's part of the training loop: the ELBO-style loss, grids of reconstructions and samples,
/// checkpoints with a quick evaluation.
struct VaeTrainer<'a> {
    cfg: &'a TrainConfig,
    arch: VaeArch,
    vs: nn::VarStore,
    model: Vae,
    /// The training images on `device`.
    images: Tensor,
    /// The first 1 000 test images (grids and the quick evaluations).
    test_set: Dataset,
    device: Device,
    steps_per_epoch: u64,
    last_eval: Option<EvalReport>,
}

impl run_loop::Trainer for VaeTrainer<'_> {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn resume(&mut self, out: &Path) -> Result<Resumed> {
        let state: CheckpointState = read_json(&out.join(CKPT_STATE))?;
        if state.arch != self.arch || state.steps_per_epoch != self.steps_per_epoch {
            return Err(Error::invalid(format!(
                "cannot resume {}: it was trained with another architecture or {} steps per epoch (now {}); \
                 use the same --arch, --batch-size and --limit",
                out.display(),
                state.steps_per_epoch,
                self.steps_per_epoch
            )));
        }
        load_varstore(&mut self.vs, &out.join(&state.weights))?;
        Ok(Resumed { step: state.step, elapsed_s: state.elapsed_s })
    }

    /// Reconstruction SSE + beta KL per image, z sampled from q(z|x).
    fn loss(&mut self, batch: &[i64], step: u64) -> Result<Loss> {
        let idx = Tensor::from_slice(batch).to_device(self.device);
        let x = self.images.index_select(0, &idx); // [B, C, H, W]
        let (recon, mean, logvar) = self.model.forward(&x, true);
        let (rec, kl) = losses(&x, &recon, &mean, &logvar);
        let loss = &rec + &kl * kl_weight(self.cfg, step);
        Ok(Loss { loss, terms: vec![("recon", rec), ("kl", kl)] })
    }

    fn grid(&mut self) -> Result<Option<Image>> {
        sample_grid(&self.model, &self.test_set, self.device, self.cfg.seed.wrapping_add(1)).map(Some)
    }

    fn checkpoint(&mut self, out: &Path, at: &At) -> Result<Option<Report>> {
        let state = CheckpointState {
            step: at.step,
            epoch: at.epoch,
            steps_per_epoch: at.steps_per_epoch,
            total_steps: at.total_steps,
            elapsed_s: at.elapsed_s,
            arch: self.arch.clone(),
            config: self.cfg.clone(),
            weights: CKPT_WEIGHTS.into(),
            note: "AdamW moments are not saved; --resume restarts them".into(),
        };
        save_checkpoint(out, &[(&self.vs, CKPT_WEIGHTS)], CKPT_STATE, &state)?;
        let report = evaluate(&self.model, &self.test_set, self.device, self.cfg.beta, self.cfg.seed)?;
        // `evaluate` reseeded libtorch; continue from a seed of this step, exactly as `--resume` from this
        // checkpoint does, so a resumed run draws the same noise as an uninterrupted one.
        tch::manual_seed(self.cfg.seed.wrapping_add(at.step) as i64);
        let line = serde_json::json!({
            "step": at.step,
            "eval_images": report.images,
            "eval_psnr_db": report.psnr_db,
            "eval_kl_nats": report.kl_nats,
            "eval_loss": report.loss,
            "time_s": at.elapsed_s,
        });
        let message = format!(
            "checkpoint at step {}: test PSNR {:.2} dB, KL {:.1} nats",
            at.step, report.psnr_db, report.kl_nats
        );
        self.last_eval = Some(report);
        Ok(Some(Report { line, message }))
    }
}

/// The KL weight at `step` (0-based): beta, ramped up linearly over `kl_warmup_steps` when set.
pub fn kl_weight(cfg: &TrainConfig, step: u64) -> f64 {
    if cfg.kl_warmup_steps == 0 {
        return cfg.beta;
    }
    cfg.beta * ((step + 1) as f64 / cfg.kl_warmup_steps as f64).min(1.0)
}

/// Evaluates `model` on `set` (batches of 500, no gradients). With z = mean for the reconstructions behind
/// PSNR and `recon_sse_mean_latent`, and one seeded sample z ~ q(z|x) per image for `recon_sse_sampled`,
/// `loss` and `neg_elbo_nats`. See [`EvalReport`] for each field.
pub fn evaluate(model: &Vae, set: &Dataset, device: Device, beta: f64, seed: u64) -> Result<EvalReport> {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(seed as i64);
    let n = set.len();
    let dims = set.images.size()[1..].iter().product::<i64>() as f64;
    let (mut sq01, mut psnr_sum, mut sse_mean, mut sse_sampled, mut kl_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut start = 0;
    while start < n {
        let len = 500.min(n - start);
        let x = set.images.narrow(0, start, len).to_device(device); // [B, C, H, W]
        let (mean, logvar) = model.encode(&x);
        let recon = model.decode(&mean);
        let err = (&recon - &x).square(); // [B, C, H, W] in model space
        let per_image = err.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double); // [B]
        sse_mean += scalar(&per_image.sum(Kind::Double))?;
        // [0, 1] scale: (v + 1) / 2, so squared errors shrink by 4.
        sq01 += scalar(&per_image.sum(Kind::Double))? / 4.0;
        let mse_i = &per_image / (4.0 * dims);
        psnr_sum += scalar(&(mse_i.clamp_min(1e-10).log10() * -10.0).sum(Kind::Double))?;
        let z = &mean + (&logvar * 0.5).exp() * mean.randn_like();
        let sampled = (model.decode(&z) - &x).square().sum(Kind::Double);
        sse_sampled += scalar(&sampled)?;
        let (_, kl) = losses(&x, &recon, &mean, &logvar);
        kl_sum += scalar(&kl)? * len as f64;
        start += len;
    }
    let nf = n as f64;
    let mse = sq01 / (nf * dims);
    let (recon_sse_sampled, kl_nats) = (sse_sampled / nf, kl_sum / nf);
    Ok(EvalReport {
        images: n,
        psnr_db: -10.0 * mse.max(1e-10).log10(),
        psnr_mean_per_image_db: psnr_sum / nf,
        mse,
        recon_sse_mean_latent: sse_mean / nf,
        recon_sse_sampled,
        kl_nats,
        loss: recon_sse_sampled + beta * kl_nats,
        beta,
        neg_elbo_nats: recon_sse_sampled + 0.5 * dims * std::f64::consts::PI.ln() + kl_nats,
    })
}

/// Three rows of ten, doubled in size for viewing: the first test images, their reconstructions (from
/// the mean latent), and decodings of ten fixed N(0, I) latents (the same ones at every step).
pub fn sample_grid(model: &Vae, set: &Dataset, device: Device, seed: u64) -> Result<Image> {
    let _guard = tch::no_grad_guard();
    let a = &model.arch;
    let k = 10.min(set.len());
    let x = set.images.narrow(0, 0, k).to_device(device);
    let (mean, _) = model.encode(&x);
    let recon = model.decode(&mean);
    let [cz, lh, lw] = a.latent_shape();
    let z = Noise::new(seed).normals((k * cz * lh * lw) as usize);
    let z = Tensor::f_from_slice(&z).map_err(torch_err("grid"))?.view([k, cz, lh, lw]).to_device(device);
    let random = model.decode(&z);
    let spec = image_spec(a)?;
    let mut tiles = Vec::new();
    for t in [&x, &recon, &random] {
        let flat = t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
        let data = Vec::<f32>::try_from(&flat).map_err(torch_err("grid"))?;
        tiles.extend(from_model(&data, k as usize, &spec)?.iter().map(|i| i.upscale(2)));
    }
    grid(&tiles, k as usize, 4, 128)
}

fn image_spec(a: &VaeArch) -> Result<ImageSpec> {
    let u = |v: i64| u32::try_from(v).map_err(|_| Error::invalid("image size out of range"));
    Ok(ImageSpec { width: u(a.width)?, height: u(a.height)?, channels: u(a.channels)?, mean: 0.5, std: 0.5 })
}

/// `mirage-train vae eval`: evaluates a checkpoint on the test set (first `limit` images), optionally
/// writing the report as JSON.
pub fn eval_checkpoint(ckpt: &Path, data_dir: &Path, limit: Option<usize>, out: Option<&Path>) -> Result<EvalReport> {
    let device = Device::cuda_if_available();
    let (_vs, model, state) = load_checkpoint(ckpt, device)?;
    let a = &state.arch;
    let shape = [a.channels, a.height, a.width];
    let test = data::load_for_shape(data_dir, Split::Test, limit, shape, &state.config.emoji.version()?)?.data;
    let report = evaluate(&model, &test, device, state.config.beta, state.config.seed)?;
    if let Some(out) = out {
        write_json(out, &report)?;
    }
    Ok(report)
}

/// Max |ONNX - tch| over `n` random inputs: encoder mean, encoder logvar, decoder output.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Parity {
    pub inputs: usize,
    pub mean: f32,
    pub logvar: f32,
    pub decoded: f32,
}

impl Parity {
    pub fn max(&self) -> f32 {
        self.mean.max(self.logvar).max(self.decoded)
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
    Vec::<f32>::try_from(&flat).map_err(torch_err("to_vec"))
}

/// Runs `n` seeded random images (uniform in [-1, 1]) through the tch encoder and the exported set's ONNX
/// encoder, and `n` random N(0, I) latents through both decoders; returns the largest differences.
pub fn check_parity(model: &Vae, device: Device, set_dir: &Path, n: usize, seed: u64) -> Result<Parity> {
    let _guard = tch::no_grad_guard();
    let set = crate::model_set::ModelSet::open(set_dir)?;
    let a = &model.arch;
    let mut noise = Noise::new(seed);
    let img_len = (a.channels * a.height * a.width) as usize;
    let images: Vec<f32> = (0..n * img_len).map(|_| (noise.normal() * 0.6).clamp(-1.0, 1.0)).collect();
    let [cz, lh, lw] = a.latent_shape();
    let latents = noise.normals(n * (cz * lh * lw) as usize);
    let ni = n as i64;

    let x = Tensor::f_from_slice(&images).map_err(torch_err("parity"))?.view([ni, a.channels, a.height, a.width]);
    let (mean, logvar) = model.encode(&x.to_device(device));
    let z = Tensor::f_from_slice(&latents).map_err(torch_err("parity"))?.view([ni, cz, lh, lw]);
    let decoded = model.decode(&z.to_device(device));

    let (onnx_mean, onnx_logvar) = set.encode(&images, n)?;
    let onnx_decoded = set.decode(&latents, n)?;
    Ok(Parity {
        inputs: n,
        mean: max_abs_diff(&to_vec(&mean)?, &onnx_mean),
        logvar: max_abs_diff(&to_vec(&logvar)?, &onnx_logvar),
        decoded: max_abs_diff(&to_vec(&decoded)?, &onnx_decoded),
    })
}

/// What the manifest says the VAE was trained on.
fn data_description(a: &VaeArch, cfg: &TrainConfig) -> String {
    if a.channels == 4 {
        cfg.emoji.describe(a.width)
    } else {
        "Fashion-MNIST (Zalando, MIT), Debian package dataset-fashion-mnist: 60 000 training images".into()
    }
}

/// The largest ONNX-vs-tch difference an export accepts (f32 convolutions summed in another order).
pub const PARITY_TOLERANCE: f32 = 1e-4;

/// The spread of a dense VAE's aggregate posterior (the encoder's q(z|x) averaged over images), per latent
/// dimension: s_i = sqrt(E_x[mean_i(x)^2 + var_i(x)]), the zero-mean diagonal Gaussian that matches its
/// second moments; measured over `images` ([N, C, H, W], model space: the training images).
pub fn aggregate_posterior_std(model: &Vae, images: &Tensor) -> Result<Vec<f32>> {
    let a = &model.arch;
    if !a.dense {
        return Err(Error::invalid("the latent rescale is for dense latents (--arch fashion-dense, fashion-2d)"));
    }
    let n = images.size()[0];
    if n == 0 {
        return Err(Error::invalid("no training images to fit the latent rescale on"));
    }
    let _guard = tch::no_grad_guard();
    let mut second = Tensor::zeros([a.latent_channels], (Kind::Double, Device::Cpu));
    for start in (0..n).step_by(500) {
        let xb = images.narrow(0, start, 500.min(n - start));
        let (mean, logvar) = model.encode(&xb); // [b, d, 1, 1] each
        let m =
            (mean.square() + logvar.exp()).to_kind(Kind::Double).sum_dim_intlist([0i64, 2, 3].as_slice(), false, None);
        second += m;
    }
    let std = (second / n as f64).sqrt().to_kind(Kind::Float);
    let v = Vec::<f32>::try_from(&std).map_err(torch_err("latent spread"))?;
    if v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(Error::model(format!("the aggregate posterior's spread is not positive and finite: {v:?}")));
    }
    Ok(v)
}

/// Rewrites a dense VAE's weights so that its latent u is z / s per dimension (z the trained latent): the
/// encoder's mean head divided by s, its log-variance head shifted by -2 ln s, the decoder's first layer
/// multiplied by s. The composed model is the same function of its images (exactly, while the log-variance
/// stays inside its clamp), and N(0, I) in u is N(0, diag(s^2)) in z: with s from
/// [`aggregate_posterior_std`], the prior the runtime samples matches the latents the decoder was trained on.
pub fn rescale_latent(arch: &VaeArch, weights: &mut Weights, s: &[f32]) -> Result<()> {
    let d = arch.latent_channels as usize;
    if s.len() != d || !arch.dense {
        return Err(Error::invalid(format!("a latent rescale of {} values for a dense latent of {d}", s.len())));
    }
    let enc = arch.encoder_plan().last().map(|l| l.name.clone()).ok_or_else(|| Error::invalid("no encoder"))?;
    let dec = arch.decoder_plan().first().map(|l| l.name.clone()).ok_or_else(|| Error::invalid("no decoder"))?;
    fn get(weights: &mut Weights, name: String) -> Result<&mut (Vec<i64>, Vec<f32>)> {
        weights.get_mut(&name).ok_or_else(|| Error::invalid(format!("no weight {name}")))
    }
    // Encoder head: a convolution [2d, c_in, k, k] whose output channels are the mean (first d), then the
    // log-variance.
    let (shape, w) = get(weights, format!("{enc}.weight"))?;
    let per = shape[1..].iter().product::<i64>() as usize;
    if shape[0] as usize != 2 * d {
        return Err(Error::invalid(format!("{enc}.weight is {shape:?}, not [{}, ...]", 2 * d)));
    }
    for (i, &si) in s.iter().enumerate() {
        w[i * per..(i + 1) * per].iter_mut().for_each(|v| *v /= si);
    }
    let (_, b) = get(weights, format!("{enc}.bias"))?;
    for (i, &si) in s.iter().enumerate() {
        b[i] /= si;
        b[d + i] -= 2.0 * si.ln();
    }
    // Decoder input: a transposed convolution [d, c_out, k, k] (its bias does not depend on the latent).
    let (shape, w) = get(weights, format!("{dec}.weight"))?;
    if shape[0] as usize != d {
        return Err(Error::invalid(format!("{dec}.weight is {shape:?}, not [{d}, ...]")));
    }
    let per = shape[1..].iter().product::<i64>() as usize;
    for (i, &si) in s.iter().enumerate() {
        w[i * per..(i + 1) * per].iter_mut().for_each(|v| *v *= si);
    }
    Ok(())
}

/// A prior temperature (a factor on the latent's spread) in (0, 4], or an error naming `flag`.
fn check_temperature(t: f32, flag: &str) -> Result<()> {
    if t.is_finite() && t > 0.0 && t <= 4.0 {
        return Ok(());
    }
    Err(Error::invalid(format!("{flag} is {t}: give a value in (0, 4]")))
}

/// `mirage-train vae export`: checkpoint -> model set `out` (ONNX files + manifest named `name`). The
/// manifest's `training` field records the checkpoint's state, the evaluation in `eval_json` when given,
/// and — unless `skip_parity` — the measured ONNX Runtime vs tch parity, which must be within
/// [`PARITY_TOLERANCE`]. `prior` goes into the manifest (`vae.prior`; see
/// [`crate::manifest::VaeSpec::prior`]). With `fit` (the training data folder and a temperature t), the latent
/// is first rescaled to t times the aggregate posterior's spread over those training images
/// ([`rescale_latent`]).
pub fn export_checkpoint(
    ckpt: &Path,
    out: &Path,
    name: &str,
    eval_json: Option<&Path>,
    skip_parity: bool,
    prior: Option<crate::manifest::Prior>,
    fit: Option<(&Path, f32)>,
) -> Result<Manifest> {
    let device = Device::Cpu;
    let (mut vs, model, state) = load_checkpoint(ckpt, device)?;
    let mut weights = weights_of(&vs)?;
    let mut rescale = serde_json::Value::Null;
    if let Some((dir, t)) = fit {
        check_temperature(t, "--prior-temperature")?;
        let a = &state.arch;
        let shape = [a.channels, a.height, a.width];
        let train = data::load_for_shape(dir, Split::Train, None, shape, &state.config.emoji.version()?)?.data;
        let fitted = aggregate_posterior_std(&model, &train.images)?;
        let s: Vec<f32> = fitted.iter().map(|v| v * t).collect();
        rescale_latent(&model.arch, &mut weights, &s)?;
        // The tch model too, so that the parity check compares like with like.
        load_weights(&mut vs, &weights)?;
        rescale = serde_json::json!({
            "what": "latent u = z / s per dimension, s = temperature x the aggregate posterior's spread \
                     sqrt(E[mean^2 + var]) over the training images",
            "images": "all",
            "temperature": t,
            "fitted_spread": fitted,
            "s": s,
        });
    }
    let eval: serde_json::Value = match eval_json {
        Some(p) => read_json(p)?,
        None => serde_json::Value::Null,
    };
    let mut training = serde_json::json!({
        "data": data_description(&model.arch, &state.config),
        "trainer": format!("mirage-train {} (tch 0.24, libtorch 2.11.0)", crate::VERSION),
        "steps": state.step,
        "epochs": state.config.epochs,
        "elapsed_s": state.elapsed_s,
        "config": state.config,
        "eval": eval,
        "latent_rescale": rescale,
    });
    let mut manifest = export_vae_with_prior(&model.arch, &weights, out, name, training.clone(), prior)?;
    if !skip_parity {
        let parity = check_parity(&model, device, out, 8, 1234)?;
        if parity.max() > PARITY_TOLERANCE {
            return Err(Error::model(format!(
                "exported ONNX differs from the tch model by {} (> {PARITY_TOLERANCE}): {parity:?}",
                parity.max()
            )));
        }
        training["parity_max_abs_diff"] =
            serde_json::to_value(parity).map_err(|e| Error::invalid(format!("parity to JSON: {e}")))?;
        manifest.training = training;
        // Only the manifest changes (the ONNX files and their sha256 stay), so rewrite just it.
        write_json(&out.join(MANIFEST_FILE), &manifest)?;
        Manifest::load(out)?;
    }
    Ok(manifest)
}

/// What `mirage-train eval prior` is configured by: the quality of a VAE's prior samples, N(0, I) latents
/// decoded by the runtime (ONNX Runtime, as users get them), in the classifier's feature space.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PriorEvalConfig {
    /// Classifier directory (`mirage-train classifier train --out`).
    pub classifier: PathBuf,
    /// The model set whose VAE decoder makes the images.
    pub set: PathBuf,
    pub data: PathBuf,
    /// Generated, test and training images each: 2 000 as `eval fid`, so the floor is the same figure.
    pub count: usize,
    /// Batch k of [`super::fid::BATCH`] latents uses seed + k ([`crate::latent::prior_latents`], the same
    /// draws as `mirage vae sample --seed`); the real images and KID subsets are chosen as `eval fid` does.
    pub seed: u64,
    pub threads: usize,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    /// The prior's standard deviation: latents drawn from N(0, temperature^2 I) (1 = the prior itself; below
    /// 1, the "reduced temperature" sampling of the VAE literature, for measuring it).
    pub temperature: f32,
}

impl Default for PriorEvalConfig {
    fn default() -> Self {
        let f = super::fid::FidConfig::default();
        PriorEvalConfig {
            classifier: f.classifier,
            set: PathBuf::from("models/fashion-vae"),
            data: f.data,
            count: f.count,
            seed: f.seed,
            threads: f.threads,
            kid_subsets: f.kid_subsets,
            kid_subset_size: f.kid_subset_size,
            temperature: 1.0,
        }
    }
}

/// What `eval prior` reports (and writes as JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PriorReport {
    /// "fashion-classifier-penultimate", as `eval fid`.
    pub features: String,
    pub classifier_test_accuracy: f64,
    pub set: PathBuf,
    /// The set's latent shape and what its manifest says of its prior.
    pub latent_shape: [u32; 3],
    pub prior: Option<crate::manifest::Prior>,
    pub count: usize,
    pub seed: u64,
    /// The standard deviation the latents were drawn with (1 = N(0, I)).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Prior samples against test images, and training images against the same test images (the floor).
    pub generated_vs_test: super::fid::Distances,
    pub train_vs_test: super::fid::Distances,
    /// Prior samples against those training images: for choosing a sampling setting (the temperature)
    /// without looking at the test images.
    #[serde(default)]
    pub generated_vs_train: Option<super::fid::Distances>,
    /// generated_vs_test.fid / train_vs_test.fid.
    pub fid_over_floor: f64,
    /// Share of prior samples whose most likely class has a softmax probability >= 0.5 (the classifier is
    /// "sure" of something), and the same share for the test images (the reference).
    pub confident_fraction: f64,
    pub test_confident_fraction: f64,
    /// Mean over samples of the largest class probability.
    pub mean_max_probability: f64,
    /// Fraction of prior samples per predicted class, in label order (see `class_names`), and its entropy
    /// in bits (log2 10 = 3.32 when balanced).
    pub class_fractions: Vec<f64>,
    pub class_names: Vec<String>,
    pub class_entropy_bits: f64,
    pub test_class_fractions: Vec<f64>,
    /// Reconstruction through the runtime (encode, decode the mean) of the `count` test images: PSNR of
    /// the pooled MSE on the [0, 1] scale, after 8-bit rounding.
    pub recon_psnr_db: f64,
    /// Those reconstructions against the test images they reconstruct: what the decoder gives from the best
    /// latent it is shown, so about the lowest FID any way of choosing latents could reach with it.
    #[serde(default)]
    pub recon_vs_test: Option<super::fid::Distances>,
    pub generate_s: f64,
    pub ms_per_image: f64,
    pub total_s: f64,
}

fn one() -> f32 {
    1.0
}

/// `count` prior samples decoded by `set`: batch k of [`super::fid::BATCH`] from
/// `prior_latents(len, batch, seed + k)` times `temperature`, rounded to 8 bits as a saved PNG is:
/// [count, C, H, W] in [-1, 1].
pub fn prior_samples(set: &crate::model_set::ModelSet, count: usize, seed: u64, temperature: f32) -> Result<Tensor> {
    let len = set.latent_len()?;
    let i = &set.manifest().image;
    let mut pixels = Vec::with_capacity(count * set.image_len());
    for (k, start) in (0..count).step_by(super::fid::BATCH).enumerate() {
        let n = super::fid::BATCH.min(count - start);
        let mut z = crate::latent::prior_latents(len, n, seed.wrapping_add(k as u64))?;
        z.iter_mut().for_each(|v| *v *= temperature);
        pixels.extend(to_8bit(&set.decode(&z, n)?));
    }
    let shape = [count as i64, i.channels as i64, i.height as i64, i.width as i64];
    Ok(Tensor::f_from_slice(&pixels).map_err(torch_err("prior samples"))?.view(shape))
}

/// Model-space values -> the nearest of the 256 grey levels, back in model space (mean = std = 0.5).
fn to_8bit(v: &[f32]) -> impl Iterator<Item = f32> + '_ {
    v.iter().map(|&v| ((v * 0.5 + 0.5) * 255.0).round().clamp(0.0, 255.0) / 127.5 - 1.0)
}

/// `n` images of `split`, chosen as `eval fid` chooses them (seeded permutation, without replacement).
fn pick_real(dir: &Path, split: Split, n: usize, seed: u64) -> Result<Tensor> {
    let all = data::load(dir, split, None)?;
    let total = all.len() as usize;
    if n > total {
        return Err(Error::invalid(format!("--count {n} exceeds the {total} images of the {split:?} split")));
    }
    let pick = super::batches::permutation(total, seed);
    Ok(all.images.index_select(0, &Tensor::from_slice(&pick[..n])))
}

/// (fraction per class, entropy in bits, fraction with max probability >= 0.5, mean max probability) of
/// the classifier's verdicts on `x`.
fn verdicts(model: &super::classifier::Classifier, x: &Tensor) -> Result<(Vec<f64>, f64, f64, f64)> {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let mut maxp = Vec::new();
    for start in (0..n).step_by(500) {
        let xb = x.narrow(0, start, 500.min(n - start));
        maxp.push(model.forward(&xb).softmax(1, Kind::Float)); // [b, classes]
    }
    let p = Tensor::cat(&maxp, 0);
    let (top, pred) = p.max_dim(1, false);
    let counts = pred.bincount::<Tensor>(None, model.arch.classes).to_kind(Kind::Double) / n as f64;
    let fractions = Vec::<f64>::try_from(&counts).map_err(torch_err("class fractions"))?;
    let entropy = fractions.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.log2()).sum();
    let confident = scalar(&top.ge(0.5).to_kind(Kind::Double).mean(Kind::Double))?;
    let mean_top = scalar(&top.to_kind(Kind::Double).mean(Kind::Double))?;
    Ok((fractions, entropy, confident, mean_top))
}

/// `mirage-train eval prior`: FID/KID of `count` prior samples of the set's VAE against the test set,
/// next to the train-vs-test floor; the classifier's verdicts on them; the runtime's reconstruction PSNR.
pub fn evaluate_prior(cfg: &PriorEvalConfig, json: Option<&Path>) -> Result<PriorReport> {
    if cfg.count < 2 {
        return Err(Error::invalid("--count must be at least 2"));
    }
    check_temperature(cfg.temperature, "--temperature")?;
    super::set_threads(cfg.threads)?;
    let start = std::time::Instant::now();
    let (model, _vs, ckpt) = super::classifier::load(&cfg.classifier)?;
    if !crate::runtime::is_initialised() {
        crate::runtime::init(&crate::runtime::RuntimeOptions { intra_threads: cfg.threads, ..Default::default() })?;
    }
    let set = crate::model_set::ModelSet::open(&cfg.set)?;
    let spec = set.manifest().image.clone();
    if (spec.channels, spec.height, spec.width) != (1, 28, 28) || spec.mean != 0.5 || spec.std != 0.5 {
        return Err(Error::invalid(format!("model set {} does not make Fashion-MNIST images", cfg.set.display())));
    }
    // The same real images as `eval fid` with the same seed, so the floor is the same figure.
    let test = pick_real(&cfg.data, Split::Test, cfg.count, cfg.seed ^ 0x7465_7374)?;
    let train = pick_real(&cfg.data, Split::Train, cfg.count, cfg.seed ^ 0x7472_6169)?;

    let t_gen = std::time::Instant::now();
    let generated = prior_samples(&set, cfg.count, cfg.seed, cfg.temperature)?;
    let generate_s = t_gen.elapsed().as_secs_f64();

    let (f_gen, _) = model.embed(&generated);
    let (f_test, _) = model.embed(&test);
    let (f_train, _) = model.embed(&train);
    let dist = |a: &Tensor, b: &Tensor| -> Result<super::fid::Distances> {
        Ok(super::fid::Distances {
            fid: super::fid::fid(a, b)?,
            kid: super::fid::kid(a, b, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)?,
        })
    };
    let generated_vs_test = dist(&f_gen, &f_test)?;
    let generated_vs_train = Some(dist(&f_gen, &f_train)?);
    let train_vs_test = dist(&f_train, &f_test)?;
    let (class_fractions, class_entropy_bits, confident_fraction, mean_max_probability) = verdicts(&model, &generated)?;
    let (test_class_fractions, _, test_confident_fraction, _) = verdicts(&model, &test)?;

    // Reconstruction through the runtime, mean latent, 8-bit output.
    let n = cfg.count;
    let x = Vec::<f32>::try_from(&test.reshape([-1])).map_err(torch_err("test images"))?;
    let mut sq = 0.0f64;
    let mut recon = Vec::with_capacity(x.len());
    for s in (0..n).step_by(super::fid::BATCH) {
        let b = super::fid::BATCH.min(n - s);
        let il = set.image_len();
        let xb = &x[s * il..(s + b) * il];
        let (mean, _) = set.encode(xb, b)?;
        let y: Vec<f32> = to_8bit(&set.decode(&mean, b)?).collect();
        sq += y.iter().zip(xb).map(|(a, b)| ((a - b) as f64 / 2.0).powi(2)).sum::<f64>();
        recon.extend(y);
    }
    let recon_psnr_db = -10.0 * (sq / x.len() as f64).max(1e-12).log10();
    let recon = Tensor::f_from_slice(&recon).map_err(torch_err("reconstructions"))?.view_as(&test);
    let recon_vs_test = Some(dist(&model.embed(&recon).0, &f_test)?);

    let vae = set.manifest().vae.as_ref().ok_or_else(|| Error::invalid("model set has no VAE"))?;
    let report = PriorReport {
        features: "fashion-classifier-penultimate".into(),
        classifier_test_accuracy: ckpt.test_accuracy,
        set: cfg.set.clone(),
        latent_shape: vae.latent_shape,
        prior: vae.prior,
        count: cfg.count,
        seed: cfg.seed,
        temperature: cfg.temperature,
        fid_over_floor: generated_vs_test.fid / train_vs_test.fid.max(1e-12),
        generated_vs_test,
        train_vs_test,
        generated_vs_train,
        confident_fraction,
        test_confident_fraction,
        mean_max_probability,
        class_fractions,
        class_names: crate::fashion::CLASSES.iter().map(|s| s.to_string()).collect(),
        class_entropy_bits,
        test_class_fractions,
        recon_psnr_db,
        recon_vs_test,
        generate_s,
        ms_per_image: 1e3 * generate_s / cfg.count as f64,
        total_s: start.elapsed().as_secs_f64(),
    };
    if let Some(path) = json {
        write_json(path, &report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rescaled latent: the encoder's mean is z / s and its variance var / s^2, the decoder of u is the
    /// old decoder of s u, so encoding then decoding an image gives the same image; refused for a spatial
    /// latent or the wrong number of values.
    #[test]
    fn rescale_latent_keeps_the_round_trip_and_divides_the_latent() {
        tch::manual_seed(3);
        let arch = VaeArch::tiny_dense();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = Vae::new(&vs.root(), &arch).unwrap();
        let x = Tensor::rand([4, arch.channels, arch.height, arch.width], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let _guard = tch::no_grad_guard();
        let (mean0, logvar0) = model.encode(&x);
        let round0 = model.decode(&mean0);
        let d = arch.latent_channels as usize;
        let s: Vec<f32> = (0..d).map(|i| 0.5 + 0.7 * i as f32).collect();
        let st = Tensor::from_slice(&s).view([1, d as i64, 1, 1]);
        let probe = Tensor::randn([3, d as i64, 1, 1], (Kind::Float, Device::Cpu));
        let dec0 = model.decode(&(&probe * &st));

        let mut weights = weights_of(&vs).unwrap();
        rescale_latent(&arch, &mut weights, &s).unwrap();
        load_weights(&mut vs, &weights).unwrap();
        let (mean1, logvar1) = model.encode(&x);
        let close = |a: &Tensor, b: &Tensor| {
            let v = |t: &Tensor| Vec::<f32>::try_from(&t.reshape([-1])).unwrap();
            max_abs_diff(&v(a), &v(b)) < 1e-4
        };
        assert!(close(&mean1, &(&mean0 / &st)), "mean / s");
        assert!(close(&logvar1, &(&logvar0 - st.log() * 2.0)), "logvar - 2 ln s");
        assert!(close(&model.decode(&mean1), &round0), "encode then decode unchanged");
        assert!(close(&model.decode(&probe), &dec0), "decoder of u = old decoder of s u");

        assert!(rescale_latent(&arch, &mut weights, &s[1..]).is_err());
        assert!(rescale_latent(&VaeArch::tiny(), &mut weights, &s).is_err());
    }
}
