//! The trainer behind `mirage-train` (feature `train`): libtorch through tch.
//!
//! - [`run_loop`]: the training loop the trainers share (batches, learning rate, AdamW, metrics log,
//!   sample grids, checkpoints, resuming); [`batches`]: which images each step sees.
//! - [`vae`]: the VAE in tch (same layer plan and weight names as [`crate::export::vae`]) and its losses;
//!   [`vae_run`]: `mirage-train vae train | eval | export`: its training, evaluation, export, and
//!   `mirage-train eval prior`: the quality of a VAE's prior samples (a sampleable set's measure).
//! - [`unet`]: the diffusion U-Net in tch (same block plan and weight names as [`crate::export::unet`]);
//!   [`unet_run`]: `mirage-train unet train | export`: diffusion training on VAE latents, export;
//!   [`unet_data`]: its data: latents (cached), caption embeddings, caption and group-balanced draws.
//! - [`classifier`]: `mirage-train classifier train`: the Fashion-MNIST CNN whose features FID/KID compare.
//! - [`fid`]: `mirage-train eval fid`: FID, KID and class balance of the runtime's generated images.
//! - [`adherence`]: `mirage-train eval adherence`: how well a text-conditioned set follows its prompts.
//! - [`data`]: the training images as tensors in [-1, 1] (Fashion-MNIST through [`crate::fashion`], the
//!   emoji), with captions; [`captions`]: the captioned data sets (`mirage-train prepare`) and their captions.
//! - here: what every part shares: checkpoint files, JSON, the metrics log, the learning-rate schedule,
//!   the progress bar, the ONNX-vs-tch comparison.
//!
//! Only this module and the `mirage-train` binary link libtorch; the runtime library never does.

pub mod adherence;
pub mod batches;
pub mod bench;
pub mod captions;
pub mod classifier;
pub mod data;
pub mod emoji_styles;
pub mod fid;
pub mod run_loop;
pub mod unet;
pub mod unet_data;
pub mod unet_run;
pub mod vae;
pub mod vae_run;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// Maps a tch error to ours, naming what was being done. libtorch failures that reach here are about
/// files (checkpoints) or tensors of unexpected shapes, i.e. unusable input.
pub(crate) fn torch_err(what: &str) -> impl Fn(tch::TchError) -> Error + '_ {
    move |e| Error::invalid(format!("libtorch: {what}: {e}"))
}

/// Sets libtorch's intra-op threads (the trainer's default is 2, the cores of the machines it was
/// developed on; more threads than cores only adds contention).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 || n > 1024 {
        return Err(Error::invalid(format!("--threads {n} out of range 1..=1024")));
    }
    tch::set_num_threads(n as i32);
    Ok(())
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps from lr / warmup,
/// then a cosine decay to `lr * final_ratio` at the last step. Warm-up keeps Adam's first, noisy second-moment
/// estimates from taking huge steps; the decay buys the last dB of PSNR at the end of the run.
pub fn lr_at(step: u64, total: u64, lr: f64, warmup: u64, final_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
    lr * (final_ratio + (1.0 - final_ratio) * cos)
}

/// [`lr_at`] for a run resumed at step `resumed_at` (0 for a fresh run): AdamW's moments are not in the
/// checkpoint, so a resumed run warms up again over `warmup` steps from its first step, towards the
/// schedule's value (resuming with a larger --steps would otherwise jump from the decayed rate to a
/// mid-schedule one with fresh moments, i.e. one step of about `lr` on every weight).
pub fn lr_resumed(step: u64, resumed_at: u64, total: u64, lr: f64, warmup: u64, final_ratio: f64) -> f64 {
    let base = lr_at(step, total, lr, warmup, final_ratio);
    if resumed_at == 0 || warmup == 0 || step < warmup {
        return base;
    }
    base * ((step - resumed_at + 1) as f64 / warmup as f64).min(1.0)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a crash mid-write never
/// leaves a half-written checkpoint where `--resume` will look.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves a VarStore to `path` (safetensors) atomically.
pub fn save_varstore(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    // tch picks the format from the extension, so the temporary name must keep ".safetensors".
    let tmp = path.with_extension("tmp.safetensors");
    vs.save(&tmp).map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Loads the safetensors file `path` into `vs`, whose variables must already exist (the model built).
pub fn load_varstore(vs: &mut tch::nn::VarStore, path: &Path) -> Result<()> {
    vs.load(path).map_err(torch_err(&path.display().to_string()))
}

/// The value of a scalar tensor.
pub(crate) fn scalar(t: &tch::Tensor) -> Result<f64> {
    t.f_double_value(&[]).map_err(torch_err("scalar"))
}

/// Writes a value as pretty JSON (atomically, with a final newline).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::invalid(format!("{}: to JSON: {e}", path.display())))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON file into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// An append-only JSON-lines log (one object per line), flushed after every line so that `tail -f`
/// and a crash both see everything written so far.
pub struct JsonLines {
    file: std::fs::File,
    path: PathBuf,
}

impl JsonLines {
    /// Opens `path` for appending (a resumed run continues the same log).
    pub fn append(path: &Path) -> Result<JsonLines> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(JsonLines { file, path: path.to_path_buf() })
    }

    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes()).and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

/// Largest absolute difference between two equally long slices (NaN anywhere gives infinity).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// The trainers' progress bar: elapsed time, steps done of `total`, rate, ETA and a message.
pub fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta} {msg}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_warms_up_then_decays_to_the_floor() {
        let (lr, total) = (1e-3, 1000);
        assert!(lr_at(0, total, lr, 100, 0.1) < 2e-5);
        assert!((lr_at(99, total, lr, 100, 0.1) - lr).abs() < 1e-12);
        assert!((lr_at(100, total, lr, 100, 0.1) - lr).abs() < 1e-12);
        assert!(lr_at(500, total, lr, 100, 0.1) < lr);
        assert!((lr_at(1000, total, lr, 100, 0.1) - 1e-4).abs() < 1e-12);
        assert!((lr_at(5000, total, lr, 100, 0.1) - 1e-4).abs() < 1e-12);
        // A fresh run is unchanged; a resumed one warms up again from its first step.
        assert_eq!(lr_resumed(500, 0, total, lr, 100, 0.1), lr_at(500, total, lr, 100, 0.1));
        assert!(lr_resumed(1000, 1000, 2000, lr, 100, 0.1) < 0.02 * lr);
        assert_eq!(lr_resumed(1099, 1000, 2000, lr, 100, 0.1), lr_at(1099, 2000, lr, 100, 0.1));
        assert!(lr_resumed(1050, 1000, 2000, lr, 100, 0.1) < lr_at(1050, 2000, lr, 100, 0.1));
    }

    #[test]
    fn max_abs_diff_sees_nan() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_abs_diff(&[f32::NAN], &[0.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[1.0], &[]), f32::INFINITY);
    }
}
