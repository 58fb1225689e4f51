//! `mirage-train`: trains, evaluates and exports mirage's models (libtorch through tch).
//!
//! ```text
//! mirage-train vae train  --out out/fashion-vae [--epochs 12 --batch-size 64 --lr 1e-3 --beta 1e-3 ...]
//! mirage-train vae train  --out out/fashion-vae --resume      (continue from out/fashion-vae/checkpoint.json)
//! mirage-train vae eval   --ckpt out/fashion-vae [--json out/fashion-vae/eval.json]
//! mirage-train vae export --ckpt out/fashion-vae --out models/fashion [--eval out/fashion-vae/eval.json]
//! mirage-train unet train  --set models/fashion --out out/fashion-unet [--steps 20000 --batch-size 64 ...]
//! mirage-train unet export --ckpt out/fashion-unet --set models/fashion
//! ```
//! Later model kinds (`unet`, `classifier`) and data preparation (`prepare`) become sibling subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mirage::train::unet_run;
use mirage::train::vae_run::{self, TrainConfig};

#[derive(Parser)]
#[command(name = "mirage-train", version, about = "Train, evaluate and export mirage's models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The variational autoencoder (image <-> latent).
    Vae {
        #[command(subcommand)]
        command: VaeCommand,
    },
    /// The diffusion U-Net (noise predictor on the VAE's latents).
    Unet {
        #[command(subcommand)]
        command: UNetCommand,
    },
}

#[derive(Subcommand)]
enum UNetCommand {
    /// Train a U-Net on the latents of a model set's VAE (Fashion-MNIST encoded), with checkpoints,
    /// metrics and DDIM sample grids in --out.
    Train(UNetTrainArgs),
    /// Export a checkpoint's EMA weights as unet.onnx into the model set it was trained on, checking parity.
    Export(UNetExportArgs),
}

#[derive(Args)]
struct UNetTrainArgs {
    /// Run directory: latents cache, checkpoint, metrics.jsonl, grids.
    #[arg(long)]
    out: PathBuf,
    /// The model set whose VAE encodes the training images (and decodes the grids).
    #[arg(long)]
    set: PathBuf,
    /// Continue from --out's checkpoint (same --arch, --batch-size and --limit).
    #[arg(long)]
    resume: bool,
    /// Architecture: fashion (shipped) or tiny (tests), sized to the set's latent shape.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().arch)]
    arch: String,
    #[arg(long, default_value_os_t = unet_run::TrainConfig::default().data)]
    data: PathBuf,
    /// Total optimizer steps (a resumed run may raise it).
    #[arg(long, default_value_t = unet_run::TrainConfig::default().steps)]
    steps: u64,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (linear warm-up, then cosine decay).
    #[arg(long, default_value_t = unet_run::TrainConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().weight_decay)]
    weight_decay: f64,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().warmup_steps)]
    warmup_steps: u64,
    /// Decay of the exported EMA weights.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().ema_decay)]
    ema_decay: f64,
    /// Mean absolute error instead of mean squared error.
    #[arg(long)]
    mae: bool,
    /// Clip the gradient norm to this; 0 turns clipping off.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().grad_clip.unwrap_or(0.0))]
    grad_clip: f64,
    /// DDIM steps of the sample grids.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().sample_steps)]
    sample_steps: usize,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().seed)]
    seed: u64,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().threads)]
    threads: usize,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().log_every)]
    log_every: u64,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().ckpt_every)]
    ckpt_every: u64,
    #[arg(long, default_value_t = unet_run::TrainConfig::default().grid_every)]
    grid_every: u64,
}

#[derive(Args)]
struct UNetExportArgs {
    /// Run directory or its checkpoint.json.
    #[arg(long)]
    ckpt: PathBuf,
    /// The model set to add unet.onnx to (the one the U-Net was trained on).
    #[arg(long)]
    set: PathBuf,
    /// Skip the ONNX Runtime vs tch parity check.
    #[arg(long)]
    skip_parity: bool,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum VaeCommand {
    /// Train a VAE on Fashion-MNIST, with checkpoints, metrics and image grids in --out.
    Train(TrainArgs),
    /// Evaluate a checkpoint on the Fashion-MNIST test set (PSNR, reconstruction, KL, ELBO).
    Eval(EvalArgs),
    /// Export a checkpoint as a model set (ONNX encoder and decoder + manifest.json), checking parity.
    Export(ExportArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Run directory: checkpoint, metrics.jsonl, grids.
    #[arg(long)]
    out: PathBuf,
    /// Continue from --out's checkpoint (same --arch, --batch-size and --limit).
    #[arg(long)]
    resume: bool,
    /// Architecture: fashion (shipped) or tiny (tests).
    #[arg(long, default_value_t = TrainConfig::default().arch)]
    arch: String,
    /// Override the architecture's channel widths, full resolution first (e.g. 16,32,64).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<i64>>,
    /// Fashion-MNIST directory (IDX files, gzipped or not).
    #[arg(long, default_value_os_t = TrainConfig::default().data)]
    data: PathBuf,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: u64,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (linear warm-up, then cosine decay).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    /// Weight of the KL term against the per-image sum of squared errors.
    #[arg(long, default_value_t = TrainConfig::default().beta)]
    beta: f64,
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps)]
    warmup_steps: u64,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = TrainConfig::default().threads)]
    threads: usize,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = TrainConfig::default().log_every)]
    log_every: u64,
    #[arg(long, default_value_t = TrainConfig::default().ckpt_every)]
    ckpt_every: u64,
    #[arg(long, default_value_t = TrainConfig::default().grid_every)]
    grid_every: u64,
}

#[derive(Args)]
struct EvalArgs {
    /// Run directory or its checkpoint.json.
    #[arg(long)]
    ckpt: PathBuf,
    #[arg(long, default_value_os_t = TrainConfig::default().data)]
    data: PathBuf,
    /// Evaluate only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = TrainConfig::default().threads)]
    threads: usize,
}

#[derive(Args)]
struct ExportArgs {
    /// Run directory or its checkpoint.json.
    #[arg(long)]
    ckpt: PathBuf,
    /// Model set directory to write (e.g. models/fashion).
    #[arg(long)]
    out: PathBuf,
    /// The set's name in manifest.json.
    #[arg(long, default_value = "fashion")]
    name: String,
    /// An eval report (from `vae eval --json`) to record in the manifest.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Skip the ONNX Runtime vs tch parity check (when no ONNX Runtime library is at hand).
    #[arg(long)]
    skip_parity: bool,
    #[arg(long, default_value_t = TrainConfig::default().threads)]
    threads: usize,
}

fn run(cli: Cli) -> mirage::Result<()> {
    match cli.command {
        Command::Vae { command: VaeCommand::Train(a) } => {
            let cfg = TrainConfig {
                arch: a.arch,
                widths: a.widths,
                data: a.data,
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                weight_decay: a.weight_decay,
                beta: a.beta,
                warmup_steps: a.warmup_steps,
                seed: a.seed,
                threads: a.threads,
                limit: a.limit,
                log_every: a.log_every,
                ckpt_every: a.ckpt_every,
                grid_every: a.grid_every,
                ..TrainConfig::default()
            };
            let s = vae_run::train(&cfg, &a.out, a.resume)?;
            let psnr =
                s.last_eval.map(|e| format!(", test PSNR {:.2} dB (1 000 images)", e.psnr_db)).unwrap_or_default();
            println!("trained {} steps in {:.0} s{psnr}; checkpoint in {}", s.steps, s.elapsed_s, a.out.display());
        }
        Command::Vae { command: VaeCommand::Eval(a) } => {
            mirage::train::set_threads(a.threads)?;
            let r = vae_run::eval_checkpoint(&a.ckpt, &a.data, a.limit, a.json.as_deref())?;
            let text = serde_json::to_string_pretty(&r).map_err(|e| mirage::Error::invalid(e.to_string()))?;
            println!("{text}");
        }
        Command::Vae { command: VaeCommand::Export(a) } => {
            mirage::train::set_threads(a.threads)?;
            let m = vae_run::export_checkpoint(&a.ckpt, &a.out, &a.name, a.eval.as_deref(), a.skip_parity)?;
            let parity = m.training.get("parity_max_abs_diff").map(|p| format!(", parity {p}")).unwrap_or_default();
            println!("exported model set {:?} to {}{parity}", m.name, a.out.display());
        }
        Command::Unet { command: UNetCommand::Train(a) } => {
            let cfg = unet_run::TrainConfig {
                arch: a.arch,
                set: a.set,
                data: a.data,
                steps: a.steps,
                batch_size: a.batch_size,
                lr: a.lr,
                weight_decay: a.weight_decay,
                warmup_steps: a.warmup_steps,
                ema_decay: a.ema_decay,
                mae: a.mae,
                grad_clip: (a.grad_clip > 0.0).then_some(a.grad_clip),
                sample_steps: a.sample_steps,
                seed: a.seed,
                threads: a.threads,
                limit: a.limit,
                log_every: a.log_every,
                ckpt_every: a.ckpt_every,
                grid_every: a.grid_every,
                ..unet_run::TrainConfig::default()
            };
            let s = unet_run::train(&cfg, &a.out, a.resume)?;
            println!(
                "trained {} steps in {:.0} s (last loss {:.4}, {:.0} ms/step); checkpoint in {}",
                s.steps,
                s.elapsed_s,
                s.last_loss,
                s.ms_per_step,
                a.out.display()
            );
        }
        Command::Unet { command: UNetCommand::Export(a) } => {
            mirage::train::set_threads(a.threads)?;
            let m = unet_run::export_checkpoint(&a.ckpt, &a.set, a.skip_parity)?;
            let parity =
                m.training["unet"].get("parity_max_abs_diff").map(|p| format!(", parity {p}")).unwrap_or_default();
            println!("added unet.onnx to model set {:?} in {}{parity}", m.name, a.set.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mirage-train: {e}");
            ExitCode::FAILURE
        }
    }
}
