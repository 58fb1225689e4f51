//! `mirage-train`: trains, evaluates and exports mirage's models (libtorch through tch).
//!
//! ```text
//! mirage-train vae train  --out out/fashion-vae [--epochs 12 --batch-size 64 --lr 1e-3 --beta 1e-3 ...]
//! mirage-train vae train  --out out/fashion-vae --resume      (continue from out/fashion-vae/checkpoint.json)
//! mirage-train vae eval   --ckpt out/fashion-vae [--json out/fashion-vae/eval.json]
//! mirage-train vae export --ckpt out/fashion-vae --out models/fashion [--eval out/fashion-vae/eval.json]
//! mirage-train unet train  --set models/fashion --out out/fashion-unet [--steps 20000 --batch-size 64 ...]
//! mirage-train unet export --ckpt out/fashion-unet --set models/fashion
//! mirage-train classifier train --out out/classifier [--epochs 5 --batch-size 128 --lr 2e-3 ...]
//! mirage-train eval fid --classifier out/classifier --set models/fashion [--count 2000 --steps 50 --json F]
//! mirage-train eval prior --classifier out/classifier --set models/fashion-vae [--count 2000 --json F]
//! ```
//! `mirage-train prepare emoji|fashion --out DIR` writes a captioned data set's captions, contact sheet and
//! counts for a look (the trainers read the data themselves).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mirage::train::run_loop::Cadence;
use mirage::train::vae_run::{self, TrainConfig};
use mirage::train::{adherence, classifier, fid, unet_run};

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
    /// The Fashion-MNIST classifier whose features the quality figures compare.
    Classifier {
        #[command(subcommand)]
        command: ClassifierCommand,
    },
    /// Quality of a model set's generated images.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// A captioned data set for text-to-image: writes captions.jsonl, sheet.png and stats.json into --out.
    Prepare(PrepareArgs),
    /// One training step (forward, loss, backward, AdamW) of each architecture the trainer makes, on random data
    /// of the training shapes, in libtorch on this machine.
    Bench {
        /// Timed steps of each (after 3 untimed ones); medians are reported.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// libtorch intra-op threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Export the pretrained text encoder (all-MiniLM-L6-v2 from `scripts/setup.sh text`) to ONNX: the same
    /// exporter as `mirage text-encoder export`, which needs no torch and so runs in the demo's set-up.
    TextEncoder {
        /// The unzipped package's model folder.
        #[arg(long, default_value = ".deps/minilm")]
        from: PathBuf,
        #[arg(long, default_value = "models/minilm")]
        out: PathBuf,
    },
}

/// The captioned data sets `prepare` knows.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PrepareSet {
    /// Noto emoji 64x64 RGBA with captions from their names, labels and tags (.deps/emoji).
    Emoji,
    /// Emoji v2: the same emoji in several art styles (--styles), 64x64 RGBA, captions with style words.
    #[value(name = "emoji-v2")]
    EmojiV2,
    /// Fashion-MNIST with captions per class.
    Fashion,
}

#[derive(Args)]
struct PrepareArgs {
    #[arg(value_enum)]
    set: PrepareSet,
    /// Output directory (created if needed; its files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// The source data (default: .deps/emoji, or the Fashion-MNIST directory).
    #[arg(long, alias = "data")]
    source: Option<PathBuf>,
    /// emoji-v2 only: the styles, comma-separated (noto, twemoji, openmoji, line-art; or all).
    #[arg(long, default_value = "noto,twemoji,openmoji")]
    styles: String,
}

#[derive(Subcommand)]
enum ClassifierCommand {
    /// Train the CNN classifier on Fashion-MNIST; writes classifier.safetensors, classifier.json (with the
    /// test accuracy) and metrics.jsonl into --out.
    Train(ClassifierTrainArgs),
}

#[derive(Args)]
struct ClassifierTrainArgs {
    /// Output directory (must not already hold a classifier).
    #[arg(long)]
    out: PathBuf,
    /// Channels of the three convolutions (default 16,32,64).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<i64>>,
    #[arg(long, default_value_os_t = classifier::TrainConfig::default().data)]
    data: PathBuf,
    #[arg(long, default_value_t = classifier::TrainConfig::default().epochs)]
    epochs: u64,
    #[arg(long, default_value_t = classifier::TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (linear warm-up, then cosine decay).
    #[arg(long, default_value_t = classifier::TrainConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = classifier::TrainConfig::default().seed)]
    seed: u64,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = classifier::TrainConfig::default().threads)]
    threads: usize,
    /// Use only the first N training and test images.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// FID and KID (classifier features) of images generated by the runtime against the test set, the
    /// train-vs-test floor, and the class balance of the generated images.
    Fid(FidArgs),
    /// Prompt adherence of a text-conditioned set: classifier accuracy on "a photo of a <class>" images
    /// (Fashion-MNIST), or nearest-real-emoji top-1/top-5, the negative prompt's effect and interpolation
    /// smoothness (emoji).
    Adherence(AdherenceArgs),
    /// Quality of a VAE's prior samples (N(0, I) latents decoded by the runtime): FID and KID against the
    /// test set next to the train-vs-test floor, the share the classifier is sure of (max probability >=
    /// 0.5), their class balance, and the runtime's reconstruction PSNR.
    Prior(PriorArgs),
}

#[derive(Args)]
struct PriorArgs {
    /// Classifier directory (from `classifier train`).
    #[arg(long, default_value_os_t = vae_run::PriorEvalConfig::default().classifier)]
    classifier: PathBuf,
    /// The model set whose VAE is sampled.
    #[arg(long, default_value_os_t = vae_run::PriorEvalConfig::default().set)]
    set: PathBuf,
    #[arg(long, default_value_os_t = vae_run::PriorEvalConfig::default().data)]
    data: PathBuf,
    /// Generated, test and training images each.
    #[arg(long, default_value_t = vae_run::PriorEvalConfig::default().count)]
    count: usize,
    #[arg(long, default_value_t = vae_run::PriorEvalConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = vae_run::PriorEvalConfig::default().threads)]
    threads: usize,
    /// Draw the latents from N(0, t^2 I) instead of N(0, I) (reduced-temperature sampling, for measuring it).
    #[arg(long, default_value_t = vae_run::PriorEvalConfig::default().temperature)]
    temperature: f32,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct AdherenceArgs {
    /// The text-conditioned model set.
    #[arg(long, default_value_os_t = adherence::AdherenceConfig::default().set)]
    set: PathBuf,
    /// The images: Fashion-MNIST's directory, or .deps/emoji.
    #[arg(long, default_value_os_t = adherence::AdherenceConfig::default().data)]
    data: PathBuf,
    /// Fashion-MNIST sets: the classifier directory (from `classifier train`).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Fashion-MNIST: images per class.
    #[arg(long, default_value_t = adherence::AdherenceConfig::default().per_class)]
    per_class: usize,
    /// Emoji: training prompts checked.
    #[arg(long, default_value_t = adherence::AdherenceConfig::default().prompts)]
    prompts: usize,
    #[arg(long, default_value_t = adherence::AdherenceConfig::default().steps)]
    steps: usize,
    /// Guidance scale (default: the set's own).
    #[arg(long)]
    guidance: Option<f32>,
    #[arg(long, default_value_t = adherence::AdherenceConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = adherence::AdherenceConfig::default().threads)]
    threads: usize,
    /// Also write the report here as JSON (it is always printed).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct FidArgs {
    /// Classifier directory (from `classifier train`).
    #[arg(long)]
    classifier: PathBuf,
    /// Model set to generate with (VAE + U-Net).
    #[arg(long)]
    set: PathBuf,
    #[arg(long, default_value_os_t = fid::FidConfig::default().data)]
    data: PathBuf,
    /// Images generated, and real images drawn from each split.
    #[arg(long, default_value_t = fid::FidConfig::default().count)]
    count: usize,
    #[arg(long, default_value_t = fid::FidConfig::default().steps)]
    steps: usize,
    /// ddim | dpm++2m.
    #[arg(long, default_value_t = fid::FidConfig::default().sampler)]
    sampler: String,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = fid::FidConfig::default().eta)]
    eta: f32,
    #[arg(long, default_value_t = fid::FidConfig::default().seed)]
    seed: u64,
    /// Intra-op threads of libtorch and ONNX Runtime.
    #[arg(long, default_value_t = fid::FidConfig::default().threads)]
    threads: usize,
    /// KID subsets and their size.
    #[arg(long, default_value_t = fid::FidConfig::default().kid_subsets)]
    kid_subsets: usize,
    #[arg(long, default_value_t = fid::FidConfig::default().kid_subset_size)]
    kid_subset_size: usize,
    /// Also write the report here as JSON (it is always printed).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum UNetCommand {
    /// Train a U-Net on the latents of a model set's VAE (Fashion-MNIST encoded), with checkpoints,
    /// metrics and DDIM sample grids in --out.
    Train(Box<UNetTrainArgs>),
    /// Export a checkpoint's EMA weights as unet.onnx into the model set it was trained on, checking parity.
    Export(UNetExportArgs),
}

#[derive(Args)]
struct UNetTrainArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    emoji: EmojiDataArgs,
    /// The model set whose VAE encodes the training images (and decodes the grids).
    #[arg(long)]
    set: PathBuf,
    /// Architecture, sized to the set's latent shape: fashion (shipped, unconditional), wide (the text layout,
    /// unconditional), text (text-conditioned), text-deep (text-conditioned, one more level: for 16x16
    /// latents), tiny or tiny-text (tests).
    #[arg(long, default_value_t = unet_run::TrainConfig::default().arch)]
    arch: String,
    /// The images: Fashion-MNIST's directory, or the emoji's (.deps/emoji) for an RGBA set.
    #[arg(long, default_value_os_t = unet_run::TrainConfig::default().data)]
    data: PathBuf,
    /// Text encoder directory for text-conditioned architectures (e.g. models/minilm).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// Fraction of samples trained on the empty prompt (classifier-free guidance).
    #[arg(long, default_value_t = unet_run::TrainConfig::default().uncond_prob)]
    uncond_prob: f64,
    /// Guidance scale of the sample grids, recorded as the set's default.
    #[arg(long, default_value_t = unet_run::TrainConfig::default().guidance)]
    guidance: f32,
    /// Balance the batches over groups of images (an emoji and its skin-tone variants count as one), drawn
    /// with replacement, instead of epochs over images.
    #[arg(long)]
    balance_groups: bool,
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
    /// Store the weight tensors as float16 (half the file; f32 arithmetic, the Casts folded by ONNX Runtime
    /// at load; parity tolerance 1e-2 instead of 1e-4).
    #[arg(long)]
    f16_weights: bool,
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

/// What the resumable trainers (VAE, U-Net) share: the run directory, resuming, the data subset, and how
/// often the run logs, checkpoints and draws grids.
#[derive(Args)]
struct RunArgs {
    /// Run directory: checkpoint, metrics.jsonl, grids (and the U-Net's latents and captions caches).
    #[arg(long)]
    out: PathBuf,
    /// Continue from --out's checkpoint (same --arch, --batch-size and --limit).
    #[arg(long)]
    resume: bool,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// A metrics.jsonl line every N steps.
    #[arg(long, default_value_t = Cadence::default().log_every)]
    log_every: u64,
    /// A checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = Cadence::default().ckpt_every)]
    ckpt_every: u64,
    /// An image grid every N steps (and at the end).
    #[arg(long, default_value_t = Cadence::default().grid_every)]
    grid_every: u64,
}

impl RunArgs {
    fn cadence(&self) -> Cadence {
        Cadence { log_every: self.log_every, ckpt_every: self.ckpt_every, grid_every: self.grid_every }
    }
}

/// Which emoji data a training run reads (VAE and U-Net alike).
#[derive(Args)]
struct EmojiDataArgs {
    /// Emoji data version: v1 (Noto at 32 px, the shipped models/emoji) or v2 (several art styles at 64 px,
    /// models/emoji/DATA-v2.md; VAE archs emoji64 or emoji64-16).
    #[arg(long, default_value = "v1")]
    emoji_data: String,
    /// The v2 styles: a comma-separated list of noto, twemoji, openmoji, line-art, or "all" (default: the
    /// three colour styles).
    #[arg(long)]
    styles: Option<String>,
}

impl EmojiDataArgs {
    fn choice(self) -> mirage::train::data::EmojiChoice {
        mirage::train::data::EmojiChoice { emoji_data: self.emoji_data, styles: self.styles }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Architecture: fashion (models/fashion: spatial 3x8x8 latent), fashion-dense (models/fashion-vae: the
    /// lecture's dense latent of 32, a sampleable prior), fashion-2d (its 2-D variant), emoji (32x32 RGBA, with
    /// --data .deps/emoji), emoji64 (64x64 RGBA, latent 8x8x8) or emoji64-16 (latent 16x16x4) with
    /// --emoji-data v2, tiny or tiny-dense (tests).
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
    /// Weight of the KL term against the per-image sum of squared errors in model space ([-1, 1]). beta =
    /// 2 sigma^2 makes the loss the negative ELBO of a Gaussian decoder with std sigma in model space
    /// (0.08: sigma 0.2, i.e. 0.1 of the pixel range).
    #[arg(long, default_value_t = TrainConfig::default().beta)]
    beta: f64,
    /// KL annealing: raise the KL weight linearly to --beta over this many steps (0: off).
    #[arg(long, default_value_t = TrainConfig::default().kl_warmup_steps)]
    kl_warmup_steps: u64,
    #[command(flatten)]
    emoji: EmojiDataArgs,
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps)]
    warmup_steps: u64,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = TrainConfig::default().threads)]
    threads: usize,
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
    /// Declare the set's prior sampleable in its manifest (`"prior": "sampleable"`): only for a VAE whose
    /// N(0, I) samples were measured to be images (`mirage-train eval prior`).
    #[arg(long)]
    sampleable_prior: bool,
    /// Dense latents: rescale the latent per dimension to the spread of the encoder's aggregate posterior over
    /// the training images of this data folder (so that N(0, I) matches what the decoder was trained on;
    /// the composed encoder and decoder are unchanged).
    #[arg(long)]
    fit_prior_scale: Option<PathBuf>,
    /// With --fit-prior-scale: widen (or narrow) the fitted spread by this factor, so that N(0, I) in the
    /// exported latent is N(0, (t s)^2) of the trained one (chosen by `eval prior --temperature`'s FID against
    /// training images).
    #[arg(long, default_value_t = 1.0, requires = "fit_prior_scale")]
    prior_temperature: f32,
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
                kl_warmup_steps: a.kl_warmup_steps,
                emoji: a.emoji.choice(),
                warmup_steps: a.warmup_steps,
                seed: a.seed,
                threads: a.threads,
                limit: a.run.limit,
                cadence: a.run.cadence(),
                ..TrainConfig::default()
            };
            let s = vae_run::train(&cfg, &a.run.out, a.run.resume)?;
            let psnr = s
                .last_eval
                .map(|e| format!(", test PSNR {:.2} dB ({} images)", e.psnr_db, e.images))
                .unwrap_or_default();
            println!("trained {} steps in {:.0} s{psnr}; checkpoint in {}", s.steps, s.elapsed_s, a.run.out.display());
        }
        Command::Vae { command: VaeCommand::Eval(a) } => {
            mirage::train::set_threads(a.threads)?;
            print_json(&vae_run::eval_checkpoint(&a.ckpt, &a.data, a.limit, a.json.as_deref())?)?;
        }
        Command::Vae { command: VaeCommand::Export(a) } => {
            mirage::train::set_threads(a.threads)?;
            let prior = a.sampleable_prior.then_some(mirage::manifest::Prior::Sampleable);
            let m = vae_run::export_checkpoint(
                &a.ckpt,
                &a.out,
                &a.name,
                a.eval.as_deref(),
                a.skip_parity,
                prior,
                a.fit_prior_scale.as_deref().map(|d| (d, a.prior_temperature)),
            )?;
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
                limit: a.run.limit,
                cadence: a.run.cadence(),
                text_encoder: a.text_encoder,
                uncond_prob: a.uncond_prob,
                guidance: a.guidance,
                balance_groups: a.balance_groups,
                emoji: a.emoji.choice(),
                ..unet_run::TrainConfig::default()
            };
            let s = unet_run::train(&cfg, &a.run.out, a.run.resume)?;
            println!(
                "trained {} steps in {:.0} s (last loss {:.4}, {:.0} ms/step); checkpoint in {}",
                s.steps,
                s.elapsed_s,
                s.last_loss,
                s.ms_per_step,
                a.run.out.display()
            );
        }
        Command::Unet { command: UNetCommand::Export(a) } => {
            mirage::train::set_threads(a.threads)?;
            let m = unet_run::export_checkpoint(&a.ckpt, &a.set, a.skip_parity, a.f16_weights)?;
            let parity =
                m.training["unet"].get("parity_max_abs_diff").map(|p| format!(", parity {p}")).unwrap_or_default();
            println!("added unet.onnx to model set {:?} in {}{parity}", m.name, a.set.display());
        }
        Command::Classifier { command: ClassifierCommand::Train(a) } => {
            let mut arch = classifier::ClassifierArch::default();
            if let Some(w) = a.widths {
                arch.widths = w.try_into().map_err(|_| mirage::Error::invalid("--widths takes three numbers"))?;
            }
            let cfg = classifier::TrainConfig {
                arch,
                data: a.data,
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                seed: a.seed,
                threads: a.threads,
                limit: a.limit,
                ..classifier::TrainConfig::default()
            };
            let s = classifier::train(&cfg, &a.out)?;
            println!(
                "trained {} steps in {:.0} s; test accuracy {:.4} ({} images); classifier in {}",
                s.steps,
                s.elapsed_s,
                s.test_accuracy,
                s.test_images,
                a.out.display()
            );
        }
        Command::Eval { command: EvalCommand::Fid(a) } => {
            let cfg = fid::FidConfig {
                classifier: a.classifier,
                set: a.set,
                data: a.data,
                count: a.count,
                steps: a.steps,
                sampler: a.sampler,
                eta: a.eta,
                seed: a.seed,
                threads: a.threads,
                kid_subsets: a.kid_subsets,
                kid_subset_size: a.kid_subset_size,
            };
            print_json(&fid::evaluate(&cfg, a.json.as_deref())?)?;
        }
        Command::Eval { command: EvalCommand::Prior(a) } => {
            let cfg = vae_run::PriorEvalConfig {
                classifier: a.classifier,
                set: a.set,
                data: a.data,
                count: a.count,
                seed: a.seed,
                threads: a.threads,
                temperature: a.temperature,
                ..vae_run::PriorEvalConfig::default()
            };
            print_json(&vae_run::evaluate_prior(&cfg, a.json.as_deref())?)?;
        }
        Command::Eval { command: EvalCommand::Adherence(a) } => {
            let cfg = adherence::AdherenceConfig {
                set: a.set,
                data: a.data,
                classifier: a.classifier,
                per_class: a.per_class,
                prompts: a.prompts,
                steps: a.steps,
                guidance: a.guidance,
                seed: a.seed,
                threads: a.threads,
            };
            print_json(&adherence::evaluate(&cfg, a.json.as_deref())?)?;
        }
        Command::Prepare(a) => prepare(a)?,
        Command::Bench { iters, threads, json } => {
            if !(1..=10_000).contains(&iters) {
                return Err(mirage::Error::invalid("bench: --iters must be 1..=10000"));
            }
            mirage::train::set_threads(threads)?;
            let sgemm = mirage::train::bench::sgemm_gflops(1024, 10);
            println!("libtorch, {threads} threads: sgemm 1024^3 {sgemm:.1} GFLOP/s (best of 10); {iters} timed steps each, medians (p10-p90)");
            let rows = mirage::train::bench::train_steps(iters)?;
            for r in &rows {
                println!(
                    "  {:<26} batch {:>3}, {:>9} parameters: {:>8.1} ms per step ({:.1}-{:.1}), {:>7.1} images/s",
                    r.model,
                    r.batch,
                    r.parameters,
                    r.step_ms[0],
                    r.step_ms[1],
                    r.step_ms[2],
                    r.batch as f64 / r.step_ms[0] * 1e3
                );
            }
            println!(
                "  (PyTorch from Python is not measured beside it: the repository has no Python copy of these \
                 architectures to time)"
            );
            if let Some(path) = json {
                mirage::train::write_json(
                    &path,
                    &serde_json::json!({ "threads": threads, "iters": iters, "sgemm_gflops": sgemm, "steps": rows }),
                )?;
            }
        }
        Command::TextEncoder { from, out } => {
            let r = mirage::export::minilm::export_minilm(&from, &out)?;
            println!(
                "wrote {} ({:.1} MB, sha256 {}) in {:.1} s",
                r.onnx_path.display(),
                r.onnx_bytes as f64 / 1e6,
                r.descriptor.onnx_sha256,
                r.seconds
            );
        }
    }
    Ok(())
}

/// Prints a report as pretty JSON on stdout.
fn print_json(r: &impl serde::Serialize) -> mirage::Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(|e| mirage::Error::invalid(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `prepare emoji|emoji-v2|fashion`: writes the set's files and prints a summary.
fn prepare(a: PrepareArgs) -> mirage::Result<()> {
    use mirage::train::captions;
    match a.set {
        PrepareSet::Emoji => {
            let src = a.source.unwrap_or_else(|| PathBuf::from(captions::EMOJI_DIR));
            let s = captions::prepare_emoji(&src, &a.out)?;
            println!(
                "emoji: {} images ({} training, {} held out: {} emoji with their skin tones), {} captions, \
                 {} entries skipped; loaded in {:.1} s",
                s["images"],
                s["train_images"],
                s["held_out_images"],
                captions::EMOJI_HELD_OUT.len(),
                s["captions"],
                s["skipped"],
                s["load_seconds"].as_f64().unwrap_or(0.0)
            );
        }
        PrepareSet::EmojiV2 => {
            use mirage::train::emoji_styles;
            let src = a.source.unwrap_or_else(|| PathBuf::from(captions::EMOJI_DIR));
            let styles = emoji_styles::parse_styles(&a.styles)?;
            let s = emoji_styles::prepare_emoji_v2(&src, &a.out, &styles)?;
            let per: Vec<String> = styles
                .iter()
                .map(|st| {
                    let c = &s["per_style"][st.id()];
                    format!("{st} {} + {} held out", c["train"], c["held_out"])
                })
                .collect();
            println!(
                "emoji v2: {} images ({} training, {} held out) of {} concepts, {} in every style; {}; \
                 {} captions ({} with style words); loaded in {:.1} s",
                s["images"],
                s["train_images"],
                s["held_out_images"],
                s["concepts"],
                s["matched_in_all_styles"],
                per.join(", "),
                s["captions"],
                s["captions_with_style_words"],
                s["load_seconds"].as_f64().unwrap_or(0.0)
            );
        }
        PrepareSet::Fashion => {
            let src = a.source.unwrap_or_else(|| PathBuf::from(mirage::fashion::DEFAULT_DIR));
            let s = captions::prepare_fashion(&src, &a.out)?;
            println!(
                "fashion: {} training and {} test images, 10 classes, {} captions in all (e.g. {})",
                s["train_images"], s["test_images"], s["captions"], s["prompts"][0]
            );
        }
    }
    println!("wrote captions.jsonl, sheet.png and stats.json to {}", a.out.display());
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
