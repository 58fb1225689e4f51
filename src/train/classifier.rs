//! `mirage-train classifier train`: a small Fashion-MNIST CNN whose penultimate layer is the feature space of
//! the generation-quality figures in [`super::fid`] (the role Inception-v3's pool3 plays for FID on photos:
//! Inception never saw 28x28 clothes, so a classifier trained on the data itself gives the features).
//!
//! The network (shapes for a batch of B images):
//! ```text
//! x      [B, 1, 28, 28]  in [-1, 1]
//! conv1  [B, 16, 28, 28]  3x3, GroupNorm(8), ReLU
//! conv2  [B, 32, 14, 14]  3x3 stride 2, GroupNorm(8), ReLU
//! conv3  [B, 64, 7, 7]    3x3 stride 2, GroupNorm(8), ReLU
//! flat   [B, 3136]
//! feat   [B, 128]         linear, ReLU: the features FID and KID compare
//! logits [B, 10]          linear
//! ```
//! A flattening head rather than global average pooling: after three 3x3 convolutions a unit sees only a
//! 9x9 patch, so an average over positions would throw away the garment's outline (shirt vs pullover vs
//! coat is mostly outline), and a deeper stack to widen the receptive field would cost more than the
//! few-minute single-thread budget. GroupNorm rather than BatchNorm: no running statistics, so features
//! never depend on train/eval mode or on what else is in the batch.
//!
//! A run writes into `--out`: `classifier.safetensors` (the VarStore), `classifier.json`
//! ([`ClassifierCheckpoint`]: architecture, config, measured test accuracy), both at the end, and
//! `metrics.jsonl` (step, epoch, loss, lr, time_s, ms_per_step, images_per_s every `log_every` steps; test
//! accuracy after each epoch). Training is [`super::run_loop`] with a cross-entropy loss.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

use super::batches::Batches;
use super::data::{self, Dataset, Split};
use super::run_loop::{self, save_checkpoint, At, Loss, Plan, Report};
use super::{load_varstore, read_json, set_threads, torch_err};
use crate::error::{Error, Result};

/// The weights file in a classifier directory.
pub const WEIGHTS: &str = "classifier.safetensors";
/// The description file in a classifier directory (written last: it names complete weights).
pub const STATE: &str = "classifier.json";

/// The layer plan (stored in the checkpoint so that a later change of defaults cannot misread it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClassifierArch {
    /// Channels of the three convolutions; the 2nd and 3rd halve the resolution (28 -> 14 -> 7).
    pub widths: [i64; 3],
    /// GroupNorm groups (must divide every width).
    pub groups: i64,
    /// Width of the penultimate layer: the dimension d of the FID/KID features.
    pub features: i64,
    pub classes: i64,
}

impl Default for ClassifierArch {
    fn default() -> Self {
        // 16/32/64: ~2.3 M multiply-adds per image, an epoch of 60 000 images in ~50 s on one core
        // (measured: 0.8 ms per image and step; 32/64/128 took 3 ms, too slow for the few-minute budget).
        // 128 features keep FID's covariances well estimated from 2 000 images (a 128x128 covariance has
        // ~8 000 free parameters, Inception's 2048x2048 ~2 M).
        ClassifierArch { widths: [16, 32, 64], groups: 8, features: 128, classes: 10 }
    }
}

/// The classifier in tch.
pub struct Classifier {
    convs: Vec<(nn::Conv2D, nn::GroupNorm)>,
    /// [flat] -> [features]
    feat: nn::Linear,
    /// [features] -> [classes]
    head: nn::Linear,
    pub arch: ClassifierArch,
}

impl Classifier {
    /// Builds the layers under `p` (names: conv{1,2,3}, norm{1,2,3}, feat, head).
    pub fn new(p: &nn::Path, arch: &ClassifierArch) -> Result<Classifier> {
        if arch.widths.iter().any(|&w| w <= 0 || arch.groups <= 0 || w % arch.groups != 0)
            || arch.features <= 0
            || arch.classes <= 1
        {
            return Err(Error::invalid(format!("classifier architecture {arch:?} is not usable")));
        }
        let mut convs = Vec::new();
        let mut cin = 1;
        for (i, &w) in arch.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let cfg = nn::ConvConfig { stride, padding: 1, ..Default::default() };
            let conv = nn::conv2d(p / format!("conv{}", i + 1), cin, w, 3, cfg);
            let norm = nn::group_norm(p / format!("norm{}", i + 1), arch.groups, w, Default::default());
            convs.push((conv, norm));
            cin = w;
        }
        let flat = arch.widths[2] * 7 * 7;
        let feat = nn::linear(p / "feat", flat, arch.features, Default::default());
        let head = nn::linear(p / "head", arch.features, arch.classes, Default::default());
        Ok(Classifier { convs, feat, head, arch: arch.clone() })
    }

    /// x [B, 1, 28, 28] in [-1, 1] -> the penultimate features [B, features] (after the ReLU).
    pub fn features(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (conv, norm) in &self.convs {
            h = norm.forward(&conv.forward(&h)).relu();
        }
        self.feat.forward(&h.flatten(1, -1)).relu()
    }

    /// x [B, 1, 28, 28] -> logits [B, classes].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.head.forward(&self.features(x))
    }

    /// Features and predicted classes of `x` [N, 1, 28, 28], in batches of 500 without gradients:
    /// ([N, features] f32, [N] i64).
    pub fn embed(&self, x: &Tensor) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let (mut feats, mut preds) = (Vec::new(), Vec::new());
        let n = x.size()[0];
        for start in (0..n).step_by(500) {
            let xb = x.narrow(0, start, 500.min(n - start));
            let f = self.features(&xb); // [b, features]
            preds.push(self.head.forward(&f).argmax(1, false)); // [b]
            feats.push(f);
        }
        (Tensor::cat(&feats, 0), Tensor::cat(&preds, 0))
    }
}

/// Everything a classifier run is configured by (stored in the checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub arch: ClassifierArch,
    /// Fashion-MNIST directory.
    pub data: std::path::PathBuf,
    /// 5 passes (~4-5 min on one core): a classifier this size is near its plateau by then; more buys
    /// little for feature extraction and costs about a minute each.
    pub epochs: u64,
    /// 128: large enough for libtorch's convolutions to run efficiently on one core, small enough for
    /// ~470 steps per epoch.
    pub batch_size: usize,
    /// Peak AdamW learning rate: 2e-3, a common choice for a small CNN with Adam and warm-up.
    pub lr: f64,
    /// AdamW weight decay: a mild 1e-4, as the other trainers.
    pub weight_decay: f64,
    /// Linear warm-up steps, then cosine decay to `lr * final_lr_ratio` (see [`super::lr_at`]).
    pub warmup_steps: u64,
    pub final_lr_ratio: f64,
    /// Random horizontal flips of half the batch: Fashion-MNIST's garments are left-right symmetric in
    /// distribution, so this doubles the data for free.
    pub flip: bool,
    /// Seeds libtorch (init, flips) and the data order.
    pub seed: u64,
    /// libtorch intra-op threads: 1, as the other trainers (see unet_run's note on contention).
    pub threads: usize,
    /// Use only the first `limit` training and test images (tests and quick tries; the recorded accuracy
    /// is then on that many test images).
    pub limit: Option<usize>,
    pub log_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: ClassifierArch::default(),
            data: std::path::PathBuf::from(data::DEFAULT_DIR),
            epochs: 5,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            warmup_steps: 100,
            final_lr_ratio: 0.02,
            flip: true,
            seed: 0,
            threads: 1,
            limit: None,
            log_every: 50,
        }
    }
}

/// `classifier.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ClassifierCheckpoint {
    pub arch: ClassifierArch,
    pub config: TrainConfig,
    pub steps: u64,
    pub elapsed_s: f64,
    /// Fraction of the test images (all 10 000 unless `config.limit`) classified correctly.
    pub test_accuracy: f64,
    pub test_images: usize,
}

/// Fraction of `images` [N, 1, 28, 28] whose predicted class is `labels` [N].
pub fn accuracy(model: &Classifier, images: &Tensor, labels: &Tensor) -> Result<f64> {
    let (_, pred) = model.embed(images);
    let right = pred.eq_tensor(labels).to_kind(Kind::Double).mean(Kind::Double);
    right.f_double_value(&[]).map_err(torch_err("accuracy"))
}

/// Trains a classifier as `cfg` says, into `out` (refuses a directory that already holds one).
pub fn train(cfg: &TrainConfig, out: &Path) -> Result<ClassifierCheckpoint> {
    if cfg.batch_size == 0 || cfg.epochs == 0 || cfg.log_every == 0 {
        return Err(Error::invalid("epochs, batch size and log_every must be positive"));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(Error::invalid("lr must be positive"));
    }
    set_threads(cfg.threads)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if out.join(STATE).exists() {
        return Err(Error::invalid(format!("{} already holds a classifier: choose another --out", out.display())));
    }
    let train_set = data::load(&cfg.data, Split::Train, cfg.limit)?;
    let test_set = data::load(&cfg.data, Split::Test, cfg.limit)?;
    let n = train_set.len() as usize;
    let bs = cfg.batch_size.min(n);

    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &cfg.arch)?;
    let plan = Plan {
        images: n,
        batch_size: bs,
        batches: Batches::Epochs { salt: 0x636c_6173 },
        total_steps: cfg.epochs * (n / bs) as u64,
        seed: cfg.seed,
        lr: cfg.lr,
        warmup_steps: cfg.warmup_steps,
        final_lr_ratio: cfg.final_lr_ratio,
        weight_decay: cfg.weight_decay,
        grad_clip: None,
        log_every: cfg.log_every,
        grid_every: None,
        ckpt_every: None,
    };
    let mut trainer = ClassifierTrainer { cfg, vs, model, train_set, test_set, test_accuracy: f64::NAN, saved: None };
    run_loop::run(&mut trainer, &plan, out, false)?;
    trainer.saved.ok_or_else(|| Error::invalid("the classifier run ended without saving"))
}

/// The classifier's part of the training loop: cross-entropy on (optionally flipped) images, the test
/// accuracy after each epoch, the weights and `classifier.json` at the end.
struct ClassifierTrainer<'a> {
    cfg: &'a TrainConfig,
    vs: nn::VarStore,
    model: Classifier,
    train_set: Dataset,
    test_set: Dataset,
    /// After the latest epoch.
    test_accuracy: f64,
    saved: Option<ClassifierCheckpoint>,
}

impl run_loop::Trainer for ClassifierTrainer<'_> {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn loss(&mut self, batch: &[i64], _step: u64) -> Result<Loss> {
        let idx = Tensor::from_slice(batch);
        let mut x = self.train_set.images.index_select(0, &idx); // [B, 1, 28, 28]
        let y = self.train_set.labels.index_select(0, &idx); // [B]
        if self.cfg.flip {
            // Mirror a random half of the batch along the width axis.
            let mask = Tensor::rand([batch.len() as i64, 1, 1, 1], (Kind::Float, Device::Cpu)).lt(0.5); // [B, 1, 1, 1]
            x = x.flip([3]).where_self(&mask, &x);
        }
        Ok(Loss { loss: self.model.forward(&x).cross_entropy_for_logits(&y), terms: Vec::new() })
    }

    fn end_of_epoch(&mut self, at: &At) -> Result<Option<Report>> {
        self.test_accuracy = accuracy(&self.model, &self.test_set.images, &self.test_set.labels)?;
        let line = serde_json::json!({
            "step": at.step,
            "epoch": at.epoch,
            "test_accuracy": self.test_accuracy,
            "time_s": at.elapsed_s,
        });
        Ok(Some(Report { message: line.to_string(), line }))
    }

    /// Only at the end: the weights, then `classifier.json` naming them.
    fn checkpoint(&mut self, out: &Path, at: &At) -> Result<Option<Report>> {
        let state = ClassifierCheckpoint {
            arch: self.cfg.arch.clone(),
            config: self.cfg.clone(),
            steps: at.step,
            elapsed_s: at.elapsed_s,
            test_accuracy: self.test_accuracy,
            test_images: self.test_set.len() as usize,
        };
        save_checkpoint(out, &[(&self.vs, WEIGHTS)], STATE, &state)?;
        self.saved = Some(state);
        Ok(None)
    }
}

/// Loads a trained classifier from its directory (on the CPU). The VarStore is returned with the model:
/// the model's layers hold its tensors.
pub fn load(dir: &Path) -> Result<(Classifier, nn::VarStore, ClassifierCheckpoint)> {
    let state_path = dir.join(STATE);
    if !state_path.is_file() {
        return Err(Error::invalid(format!(
            "no classifier at {} (expected {STATE}; train one with `mirage-train classifier train`)",
            dir.display()
        )));
    }
    let state: ClassifierCheckpoint = read_json(&state_path)?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &state.arch)?;
    load_varstore(&mut vs, &dir.join(WEIGHTS))?;
    Ok((model, vs, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_plan() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Classifier::new(&vs.root(), &ClassifierArch::default()).unwrap();
        let x = Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        assert_eq!(m.features(&x).size(), vec![3, 128]);
        assert_eq!(m.forward(&x).size(), vec![3, 10]);
        let (f, p) = m.embed(&Tensor::zeros([501, 1, 28, 28], (Kind::Float, Device::Cpu)));
        assert_eq!((f.size(), p.size()), (vec![501, 128], vec![501]));
    }
}
