//! The training loop every trainer shares (VAE, U-Net, classifier): batches, learning-rate schedule,
//! AdamW step, the metrics log, sample grids, checkpoints and resuming. A trainer plugs in what is its own
//! through [`Trainer`]: its weights, its loss on a batch, and what it writes at a checkpoint.
//!
//! One step, as [`run`] takes it:
//! 1. draw the step's image indices ([`BatchDrawer`]);
//! 2. set the learning rate of the step ([`lr_resumed`]);
//! 3. the trainer's forward pass and loss ([`Trainer::loss`]);
//! 4. backward pass and AdamW step (with gradient clipping when asked), then [`Trainer::after_step`];
//! 5. refuse a non-finite loss, add the loss terms to the interval's means;
//! 6. every `log_every` steps a line in `metrics.jsonl`; at an epoch's end [`Trainer::end_of_epoch`];
//!    every `grid_every` steps a sample grid; every `ckpt_every` steps and at the end a checkpoint.
//!
//! AdamW's moments are not in the checkpoints (tch does not expose them): a resumed run restarts them,
//! warming the learning rate up again (see [`lr_resumed`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Tensor};

use super::batches::{BatchDrawer, Batches};
use super::{lr_resumed, progress_bar, scalar, torch_err, JsonLines};
use crate::error::{Error, Result};
use crate::image::Image;

/// The metrics log in a run directory.
pub const METRICS: &str = "metrics.jsonl";

/// How often a resumable run logs, checkpoints and draws sample grids (flattened into its config).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Cadence {
    /// A metrics line every this many steps: ~one per 20 s on a CPU core.
    pub log_every: u64,
    /// Checkpoint every this many steps (and at the end): ~every 3 min on a CPU core, so a crash costs little.
    pub ckpt_every: u64,
    /// Sample grid every this many steps (and at the end).
    pub grid_every: u64,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence { log_every: 100, ckpt_every: 1000, grid_every: 2000 }
    }
}

impl Cadence {
    pub fn validate(&self) -> Result<()> {
        if self.log_every == 0 || self.ckpt_every == 0 || self.grid_every == 0 {
            return Err(Error::invalid("the every-N-steps settings must be positive"));
        }
        Ok(())
    }
}

/// What a run is: its size, its batches and its optimizer settings.
pub struct Plan {
    /// Training images, and images per step (1..=images).
    pub images: usize,
    pub batch_size: usize,
    pub batches: Batches,
    /// Optimizer steps of the whole run (a resumed run may have raised it).
    pub total_steps: u64,
    /// Seeds the data order; after a resume, libtorch is reseeded with `seed + step`.
    pub seed: u64,
    /// Peak AdamW learning rate, its linear warm-up and the end of its cosine decay ([`lr_resumed`]).
    pub lr: f64,
    pub warmup_steps: u64,
    pub final_lr_ratio: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    pub grad_clip: Option<f64>,
    pub log_every: u64,
    /// Sample grids every this many steps and at the end (None: no grids).
    pub grid_every: Option<u64>,
    /// Checkpoints every this many steps and at the end (None: only at the end, and no resuming).
    pub ckpt_every: Option<u64>,
}

/// The loss of one step: what is minimised, and the named terms logged beside it (e.g. the VAE's recon
/// and KL), each a scalar tensor.
pub struct Loss {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

/// Where a run stands at an epoch's end or a checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// Optimizer steps done.
    pub step: u64,
    /// Whole epochs done (the epoch the next step belongs to).
    pub epoch: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    /// Wall-clock seconds of training so far (all runs of a resumed training together).
    pub elapsed_s: f64,
}

/// A line for `metrics.jsonl` and a message for the console (printed above the progress bar; the line
/// itself goes to stderr when there is no bar).
pub struct Report {
    pub line: serde_json::Value,
    pub message: String,
}

/// Where a checkpoint left a run.
pub struct Resumed {
    pub step: u64,
    pub elapsed_s: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub steps: u64,
    pub elapsed_s: f64,
    /// The mean loss of the last logged interval, and its milliseconds per step (NaN if nothing ran).
    pub last_loss: f64,
    pub ms_per_step: f64,
}

/// A trainer's part of [`run`].
pub trait Trainer {
    /// The weights AdamW trains.
    fn var_store(&self) -> &nn::VarStore;

    /// Checks that the checkpoint in `out` belongs to this run (architecture, data, batch size ...) and
    /// loads its weights. Only called when resuming.
    fn resume(&mut self, out: &Path) -> Result<Resumed> {
        Err(Error::invalid(format!("cannot resume {}: this trainer has no resumable checkpoints", out.display())))
    }

    /// The forward pass and loss on the images `batch` (indices into the training set) at step `step`.
    fn loss(&mut self, batch: &[i64], step: u64) -> Result<Loss>;

    /// After the optimizer step `step` (e.g. the U-Net's EMA update).
    fn after_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// After the last step of an epoch (e.g. the classifier's test accuracy).
    fn end_of_epoch(&mut self, _at: &At) -> Result<Option<Report>> {
        Ok(None)
    }

    /// The sample grid saved as `grid-NNNNNNN.png` and `grid.png`.
    fn grid(&mut self) -> Result<Option<Image>> {
        Ok(None)
    }

    /// Writes a checkpoint into `out`; may report on it (e.g. the VAE's quick evaluation).
    fn checkpoint(&mut self, out: &Path, at: &At) -> Result<Option<Report>>;
}

/// Creates the run directory `out` and refuses one that already holds a run (its `state` file) unless
/// `resume`.
pub fn claim_run_dir(out: &Path, state: &str, resume: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if !resume && out.join(state).exists() {
        return Err(Error::invalid(format!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// The loss terms summed over one log interval.
struct Interval {
    sums: Vec<f64>,
    steps: u64,
    start: Instant,
}

impl Interval {
    fn new() -> Interval {
        Interval { sums: Vec::new(), steps: 0, start: Instant::now() }
    }

    fn add(&mut self, values: &[f64]) {
        self.sums.resize(values.len(), 0.0);
        self.sums.iter_mut().zip(values).for_each(|(s, v)| *s += v);
        self.steps += 1;
    }

    fn mean(&self, k: usize) -> f64 {
        self.sums[k] / self.steps as f64
    }
}

/// Trains `trainer` as `plan` says, writing `metrics.jsonl`, grids and checkpoints into `out`; with
/// `resume`, continues from the trainer's checkpoint there. libtorch must already be seeded (the trainer
/// seeds it before building its model).
pub fn run(trainer: &mut impl Trainer, plan: &Plan, out: &Path, resume: bool) -> Result<Summary> {
    let total = plan.total_steps;
    let mut batches = BatchDrawer::new(plan.batches.clone(), plan.images, plan.batch_size, plan.seed);
    let steps_per_epoch = batches.steps_per_epoch();
    let (mut step, mut elapsed_before) = (0u64, 0.0f64);
    if resume {
        Resumed { step, elapsed_s: elapsed_before } = trainer.resume(out)?;
        // The seed an uninterrupted run continues with after a checkpoint at this step (when the trainer
        // reseeds there, as the VAE does after its evaluation).
        tch::manual_seed(plan.seed.wrapping_add(step) as i64);
        eprintln!("resuming {} at step {step} of {total}", out.display());
    }
    let resumed_at = step;
    let mut opt = nn::AdamW { wd: plan.weight_decay, ..Default::default() }
        .build(trainer.var_store(), plan.lr)
        .map_err(torch_err("optimizer"))?;
    let mut metrics = JsonLines::append(&out.join(METRICS))?;
    let pb = progress_bar(total);
    pb.set_position(step);
    if step >= total {
        eprintln!("nothing to do: step {step} >= {total} total steps");
    }
    let start = Instant::now();
    let elapsed = || elapsed_before + start.elapsed().as_secs_f64();
    let at = |step: u64| At {
        step,
        epoch: step / steps_per_epoch,
        steps_per_epoch,
        total_steps: total,
        elapsed_s: elapsed(),
    };
    let mut interval = Interval::new();
    let (mut last_loss, mut ms_per_step) = (f64::NAN, f64::NAN);
    while step < total {
        // 1-2. The step's images and learning rate.
        let epoch = step / steps_per_epoch;
        let batch = batches.batch(step);
        let lr = lr_resumed(step, resumed_at, total, plan.lr, plan.warmup_steps, plan.final_lr_ratio);
        opt.set_lr(lr);
        // 3. Forward pass and loss: the trainer's own.
        let loss = trainer.loss(&batch, step)?;
        // 4. Backward pass, optimizer step.
        match plan.grad_clip {
            Some(c) => opt.backward_step_clip_norm(&loss.loss, c),
            None => opt.backward_step(&loss.loss),
        }
        trainer.after_step(step)?;
        step += 1;
        pb.inc(1);

        // 5. The loss and its terms as numbers.
        let mut values = vec![scalar(&loss.loss)?];
        for (_, t) in &loss.terms {
            values.push(scalar(t)?);
        }
        if !values[0].is_finite() {
            let hint = if plan.ckpt_every.is_some() {
                "the last checkpoint is untouched: resume with a lower --lr"
            } else {
                "lower --lr"
            };
            return Err(Error::invalid(format!("training diverged at step {step} (loss {}); {hint}", values[0])));
        }
        interval.add(&values);

        // 6. What is written every so many steps.
        if step % plan.log_every == 0 || step == total {
            let secs = interval.start.elapsed().as_secs_f64();
            (last_loss, ms_per_step) = (interval.mean(0), 1e3 * secs / interval.steps as f64);
            let mut line = serde_json::json!({
                "step": step,
                "epoch": epoch,
                "loss": last_loss,
                "lr": lr,
                "time_s": elapsed(),
                "ms_per_step": ms_per_step,
                "images_per_s": (interval.steps * plan.batch_size as u64) as f64 / secs.max(1e-9),
            });
            let mut message = format!("loss {last_loss:.4}");
            for (k, (name, _)) in loss.terms.iter().enumerate() {
                line[*name] = serde_json::json!(interval.mean(k + 1));
                message += &format!(" {name} {:.3}", interval.mean(k + 1));
            }
            metrics.write(&line)?;
            pb.set_message(format!("{message}, {ms_per_step:.0} ms/step"));
            if pb.is_hidden() {
                eprintln!("{line}");
            }
            interval = Interval::new();
        }
        if step % steps_per_epoch == 0 {
            if let Some(r) = trainer.end_of_epoch(&at(step))? {
                write_report(&mut metrics, &pb, r)?;
            }
        }
        if plan.grid_every.is_some_and(|k| step % k == 0 || step == total) {
            if let Some(g) = trainer.grid()? {
                g.save(&out.join(format!("grid-{step:07}.png")))?;
                g.save(&out.join("grid.png"))?;
            }
        }
        if plan.ckpt_every.is_some_and(|k| step % k == 0) || step == total {
            if let Some(r) = trainer.checkpoint(out, &at(step))? {
                write_report(&mut metrics, &pb, r)?;
            }
        }
    }
    pb.finish_and_clear();
    Ok(Summary { steps: step, elapsed_s: elapsed(), last_loss, ms_per_step })
}

fn write_report(metrics: &mut JsonLines, pb: &indicatif::ProgressBar, r: Report) -> Result<()> {
    metrics.write(&r.line)?;
    pb.println(r.message);
    if pb.is_hidden() {
        eprintln!("{}", r.line);
    }
    Ok(())
}

/// The state file and the directory of a checkpoint named by `ckpt`: the run directory or its `state` file.
pub fn find_checkpoint(ckpt: &Path, state: &str) -> Result<(PathBuf, PathBuf)> {
    let state_path = if ckpt.is_dir() { ckpt.join(state) } else { ckpt.to_path_buf() };
    if !state_path.is_file() {
        return Err(Error::invalid(format!("no checkpoint at {} (expected {state})", state_path.display())));
    }
    let dir = state_path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((state_path, dir))
}

/// Saves a checkpoint: the VarStores to their files in `out`, then the `state` JSON, last, so that it only
/// ever names complete weights.
pub fn save_checkpoint(
    out: &Path,
    stores: &[(&nn::VarStore, &str)],
    state: &str,
    value: &impl Serialize,
) -> Result<()> {
    for (vs, file) in stores {
        super::save_varstore(vs, &out.join(file))?;
    }
    super::write_json(&out.join(state), value)
}
