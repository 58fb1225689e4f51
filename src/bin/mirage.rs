//! `mirage`: the command-line face of the library (and the README's demo).
//!
//! Every subcommand goes through the same public API a host uses (ModelSet, image conversions);
//! nothing here knows more about the models than the manifest says.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mirage::bench::{peak_rss, time_ms};
use mirage::image::{self as img, Image};
use mirage::latent;
use mirage::model_set::ModelSet;
use mirage::pipeline::{self, DiffusionParams, Hooks};
use mirage::runtime::{self, Provider, RuntimeOptions};
use mirage::sampler::SamplerKind;
use mirage::{Error, Result};

#[derive(Parser)]
#[command(name = "mirage", version, about = "Image generation from latent spaces: VAE, diffusion, text-to-image")]
struct Cli {
    #[command(flatten)]
    rt: RtArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct RtArgs {
    /// Path of libonnxruntime (default: ORT_DYLIB_PATH, beside libmirage, then .deps/onnxruntime).
    #[arg(long, global = true)]
    ort_lib: Option<PathBuf>,
    /// Execution provider: auto | tensorrt | cuda | cpu.
    #[arg(long, global = true, default_value = "auto")]
    provider: String,
    /// Fail instead of falling back to CPU when the provider is unavailable.
    #[arg(long, global = true)]
    strict: bool,
    /// Log informational lines (which provider each model got, where ONNX Runtime was found, load times);
    /// twice (-vv) also debug lines (each load step's time, the session cache's hits).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Intra-op threads per model, 0..=256 (0 = one per core). Results do not depend on it.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Folder of the load cache: verified model-file digests (unchanged files are not hashed again on the next
    /// start) and, on CPU, each model's optimized graph (sessions/), or "off". Default:
    /// $XDG_CACHE_HOME/mirage/digests, else ~/.cache/mirage/digests.
    #[arg(long, global = true)]
    digest_cache: Option<String>,
    /// Do not keep encoded prompts in the load cache's prompts/ folder. By default a prompt drawn before is
    /// taken from there, and the text encoder is only loaded when a prompt is not: a repeated prompt starts
    /// sooner (measured 0.12 s against 0.18 s to a first image). The folder holds embeddings of the prompts, not their text.
    #[arg(long, global = true)]
    no_prompt_cache: bool,
    /// TensorRT: build fp16 engines.
    #[arg(long, global = true)]
    tensorrt_fp16: bool,
    /// CUDA: capture the U-Net's steps as a CUDA graph per batch shape and replay it (no effect on TensorRT
    /// or the CPU).
    #[arg(long, global = true)]
    cuda_graph: bool,
    /// The text encoder's precision: fp32 | int8 (its reduced export: int8 embedding table, f16 linear
    /// weights, f32 arithmetic; 38 % of the bytes, a faster start; embeddings within cosine 0.999 of fp32's).
    #[arg(long, global = true, default_value = "fp32")]
    precision: String,
    /// TensorRT: folder for the engine and timing caches (engines are otherwise rebuilt in every process).
    #[arg(long, global = true)]
    tensorrt_cache: Option<PathBuf>,
}

impl RtArgs {
    /// The digest cache folder the flags and the environment give (None: off, or no home to put it in).
    fn digest_cache(&self) -> Option<PathBuf> {
        match self.digest_cache.as_deref() {
            Some("off") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("mirage").join("digests")),
        }
    }
}

#[derive(Args, Clone)]
struct ModelsArg {
    /// Model set directory (holds manifest.json); the default is the text-to-image emoji set.
    #[arg(long, default_value = "models/emoji")]
    models: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Versions, the ONNX Runtime found, available providers, and a model set's manifest.
    Info {
        #[command(flatten)]
        m: ModelsArg,
    },
    /// The variational autoencoder.
    Vae {
        #[command(subcommand)]
        cmd: VaeCmd,
    },
    /// Time VAE encode and decode on this machine (median and spread over repeated runs).
    /// One table of this machine's figures for a model set: open to first image, warm generation, per sampler
    /// step through mirage's pipeline and through a bare ONNX Runtime session of the same U-Net on the same
    /// inputs (mirage's overhead), text encoder per prompt, VAE encode/decode, peak RSS next to the model bytes.
    Bench {
        #[command(flatten)]
        m: ModelsArg,
        /// Images per call: a list (--batch 1,4,16) or the flag repeated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
        batch: Vec<usize>,
        /// Timed calls of each kind (after 3 untimed warm-up calls); medians are reported.
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Draw new images out of pure noise by reverse diffusion (a grid of --count images), of --prompt on a
    /// text-conditioned set.
    Generate {
        #[command(flatten)]
        m: ModelsArg,
        #[command(flatten)]
        d: DiffusionArgs,
        #[command(flatten)]
        t: PromptArgs,
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Enlarge the output by this integer factor (nearest neighbour: sprites stay crisp).
        #[arg(long, default_value_t = 1)]
        scale: u32,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Morph between prompts: --frames images along a path through each --prompt in turn, all from the same
    /// noise, written as an animated GIF (.gif) or a strip of frames (.png).
    Interpolate {
        #[command(flatten)]
        m: ModelsArg,
        #[command(flatten)]
        d: DiffusionArgs,
        /// The prompts to pass through, in order (at least two: --prompt A --prompt B ...).
        #[arg(long = "prompt", required = true)]
        prompts: Vec<String>,
        #[arg(long, default_value = "")]
        negative: String,
        /// Classifier-free guidance scale (default: the set's own).
        #[arg(long)]
        guidance: Option<f32>,
        #[arg(long, default_value_t = 24)]
        frames: usize,
        /// Frames per U-Net batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Milliseconds per GIF frame.
        #[arg(long, default_value_t = 120)]
        delay_ms: u32,
        #[arg(long, default_value_t = 4)]
        scale: u32,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Remove noise from an image: its latent is taken as a diffusion sample at level --strength (no noise
    /// added) and the remaining steps take the noise out. Higher strength for noisier inputs.
    Denoise {
        #[command(flatten)]
        m: ModelsArg,
        #[command(flatten)]
        d: DiffusionArgs,
        /// The noise level the input is taken to be at, in (0, 1].
        #[arg(long, default_value_t = 0.1)]
        strength: f32,
        #[arg(short, long)]
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Re-imagine an image at a chosen strength (0 keeps it, 1 ignores it).
    Img2img {
        #[command(flatten)]
        m: ModelsArg,
        #[command(flatten)]
        d: DiffusionArgs,
        #[arg(long, default_value_t = 0.6)]
        strength: f32,
        #[arg(short, long)]
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Fill the masked region (white in --mask) so that it fits the rest of the image.
    Inpaint {
        #[command(flatten)]
        m: ModelsArg,
        #[command(flatten)]
        d: DiffusionArgs,
        #[arg(long, default_value_t = 1.0)]
        strength: f32,
        #[arg(short, long)]
        input: PathBuf,
        /// Grey PNG of the image's size: 255 = invent, 0 = keep, values between blend.
        #[arg(long)]
        mask: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Pack a model set (its manifest, models and text encoder) into one file that --models and
    /// mirage_context_new / mirage_context_new_from_memory open like the directory.
    Pack {
        /// The model set directory.
        dir: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// The README's demo: Fashion-MNIST test images, their reconstructions, new images from random latents, and
    /// (when the set has a U-Net) images generated by reverse diffusion.
    Demo {
        /// A Fashion-MNIST model set (1x28x28).
        #[arg(long, default_value = "models/fashion")]
        models: PathBuf,
        /// Fashion-MNIST folder (IDX files).
        #[arg(long, default_value = mirage::fashion::DEFAULT_DIR)]
        data: PathBuf,
        /// Number of test images (and of random samples).
        #[arg(long, default_value_t = 16)]
        count: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Denoising row: Gaussian pixel noise added to the test images (std, as a fraction of the range).
        #[arg(long, default_value_t = 0.2)]
        noise: f32,
        /// Denoising row: img2img strength used to remove it.
        #[arg(long, default_value_t = 0.1)]
        denoise_strength: f32,
        /// The random-samples row decodes prior samples of this set when it exists and declares a sampleable
        /// prior (the VAE made for sampling); else of --models' own VAE.
        #[arg(long, default_value = "models/fashion-vae")]
        prior_models: PathBuf,
        #[arg(short, long, default_value = "out/demo.png")]
        output: PathBuf,
    },
    /// The pretrained text encoder (all-MiniLM-L6-v2): export it to ONNX.
    TextEncoder {
        #[command(subcommand)]
        cmd: TextEncoderCmd,
    },
    /// Embed prompts with the text encoder; prints JSON (prompt, token ids, pooled sentence embedding).
    Embed {
        /// Text-encoder directory (text_encoder.onnx, tokenizer.json, encoder.json).
        #[arg(long, default_value = "models/minilm")]
        encoder: PathBuf,
        /// Also print the token embeddings (one row of 384 per real token, [CLS] and [SEP] included).
        #[arg(long)]
        tokens: bool,
        /// Context length in tokens (2..=512): longer prompts are truncated with a warning.
        #[arg(long, default_value_t = 128)]
        context: usize,
        /// The prompts (one embedding each).
        #[arg(required = true)]
        prompts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TextEncoderCmd {
    /// Export all-MiniLM-L6-v2 from its safetensors weights (`scripts/setup.sh text`) to ONNX.
    Export {
        /// Folder with model.safetensors, config.json and tokenizer.json.
        #[arg(long, default_value = ".deps/minilm")]
        from: PathBuf,
        /// Output folder: text_encoder.onnx, tokenizer.json, encoder.json.
        #[arg(long, default_value = "models/minilm")]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct DiffusionArgs {
    /// Sampler steps for a full generation.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// auto (the set's own: ddim for mirage's sets, the folder's scheduler for a diffusers folder) | ddim |
    /// dpm++2m; diffusers folders also: dpm++2m-karras | euler | euler-a | pndm | lcm.
    #[arg(long, default_value = "auto")]
    sampler: String,
    /// DDIM stochasticity: 0 deterministic, 1 as DDPM.
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Images that wrap seamlessly at their edges (textures): the U-Net and VAE decoder pad circularly.
    #[arg(long)]
    tileable: bool,
    /// The initial noise instead of the seed's: a float32 .npy of shape [count, C, h, w] (or [C, h, w] for
    /// one image) of the set's diffusion shape.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// The noise stochastic samplers draw between steps, in their order, instead of the seed's: a float32
    /// .npy (any shape): to reproduce another implementation's stochastic run value for value.
    #[arg(long)]
    step_noise: Option<PathBuf>,
    /// Resize each image to WxH (e.g. 256x256) before writing it.
    #[arg(long)]
    size: Option<String>,
    /// Resize filter for --size: nearest (crisp pixel art) | bilinear.
    #[arg(long, default_value = "bilinear")]
    filter: String,
    /// Write each image repeated N x N times side by side (e.g. 3 to see whether a --tileable image has seams).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

/// What a text-conditioned set draws (ignored flags are refused by sets without text).
#[derive(Args, Clone)]
struct PromptArgs {
    /// What to draw (text-conditioned sets); empty = unconditional. Repeat it for a gallery: --count images
    /// of each prompt, one row per prompt.
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// What to steer away from (the unconditional side of classifier-free guidance).
    #[arg(long, default_value = "")]
    negative: String,
    /// Classifier-free guidance scale in [0, 50] (default: the set's own; 1 = the prompt alone). It applies
    /// only with a --prompt or a --negative; without either the generation is unconditional and it is ignored.
    #[arg(long)]
    guidance: Option<f32>,
}

impl PromptArgs {
    /// Rows of the output: the number of prompts (at least 1).
    fn rows(&self) -> usize {
        self.prompts.len().max(1)
    }

    /// The text guidance for `per_prompt` images of each prompt, under the pipeline's rule (None when no
    /// prompt or negative prompt is given; --guidance alone is then ignored, with a warning).
    fn guidance(&self, set: &ModelSet, per_prompt: usize) -> Result<Option<pipeline::TextGuidance>> {
        let neg: Vec<&str> = if self.negative.is_empty() { Vec::new() } else { vec![&self.negative] };
        let prompts: Vec<&str> = match self.prompts.as_slice() {
            [] => vec![""],
            ps => ps.iter().flat_map(|p| std::iter::repeat_n(p.as_str(), per_prompt)).collect(),
        };
        let text = pipeline::TextGuidance::request(set, &prompts, &neg, prompts.len(), self.guidance)
            .map_err(|e| e.prefixed("--"))?;
        if text.is_none() && self.guidance.is_some() {
            mirage::log_at!(mirage::log::Level::Warn, "--guidance has no effect without --prompt or --negative");
        }
        Ok(text)
    }
}

impl DiffusionArgs {
    fn params(&self, count: usize, strength: f32) -> Result<DiffusionParams> {
        let npy = |path: &Option<PathBuf>, flag: &str| -> Result<Option<std::sync::Arc<[f32]>>> {
            let Some(path) = path else { return Ok(None) };
            let bytes = mirage::files::read_regular(path, 1 << 30, flag, "no such file")?;
            let (_, values) = latent::read_npy(&bytes).map_err(|e| e.prefixed(&format!("{flag}: ")))?;
            Ok(Some(std::sync::Arc::from(values)))
        };
        let (noise, step_noise) = (npy(&self.noise, "--noise")?, npy(&self.step_noise, "--step-noise")?);
        let p = DiffusionParams {
            steps: self.steps,
            sampler: SamplerKind::parse(&self.sampler, self.eta).map_err(|e| e.prefixed("--"))?,
            seed: self.seed,
            count,
            strength,
            tileable: self.tileable,
            noise,
            step_noise,
        };
        p.validate().map_err(|e| e.prefixed("--"))?;
        self.finish(Vec::new())?;
        Ok(p)
    }

    /// The images as the output flags want them: resized (--size, --filter), repeated (--repeat).
    fn finish(&self, images: Vec<Image>) -> Result<Vec<Image>> {
        let filter = match self.filter.as_str() {
            "nearest" => mirage::pixels::Filter::Nearest,
            "bilinear" => mirage::pixels::Filter::Bilinear,
            other => return Err(Error::invalid(format!("--filter is {other:?}: nearest | bilinear"))),
        };
        let size = match &self.size {
            None => None,
            Some(s) => {
                let parsed =
                    s.split_once(['x', 'X']).and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
                Some(parsed.ok_or_else(|| Error::invalid(format!("--size is {s:?}: WxH, e.g. 256x256")))?)
            }
        };
        if !(1..=16).contains(&self.repeat) {
            return Err(Error::invalid(format!("--repeat must be 1..=16, got {}", self.repeat)));
        }
        images
            .into_iter()
            .map(|img| {
                let img = match size {
                    Some((w, h)) => mirage::pixels::resize(&img, w, h, filter).map_err(|e| e.prefixed("--size: "))?,
                    None => img,
                };
                if self.repeat == 1 {
                    return Ok(img);
                }
                let copies = vec![img; (self.repeat * self.repeat) as usize];
                img::grid(&copies, self.repeat as usize, 0, 0)
            })
            .collect()
    }

    /// Runs `f` with a progress bar hooked in (unless --quiet).
    fn with_progress<T>(&self, f: impl FnOnce(&mut Hooks) -> Result<T>) -> Result<T> {
        let bar = indicatif::ProgressBar::new(0);
        if self.quiet {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} steps {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(self.sampler.clone());
        let mut progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            true
        };
        let mut hooks = Hooks { progress: Some(&mut progress), ..Default::default() };
        let r = f(&mut hooks);
        bar.finish_and_clear();
        r
    }
}

#[derive(Subcommand)]
enum VaeCmd {
    /// Encode then decode an image (the latent mean, or a seeded sample with --sample).
    Reconstruct {
        #[command(flatten)]
        m: ModelsArg,
        #[arg(short, long)]
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Decode a sample of the posterior (mean + std * noise) instead of its mean.
        #[arg(long)]
        sample: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Encode an image into the latent mean and log-variance (JSON).
    Encode {
        #[command(flatten)]
        m: ModelsArg,
        #[arg(short, long)]
        input: PathBuf,
        /// JSON output (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Decode a latent (JSON from `encode`: its "mean", or a "latent" array) into an image.
    Decode {
        #[command(flatten)]
        m: ModelsArg,
        #[arg(short, long)]
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// With an encoder JSON: decode a seeded posterior sample instead of the mean.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// New images from random points of the latent prior N(0, I), as a grid.
    Sample {
        #[command(flatten)]
        m: ModelsArg,
        #[arg(long, default_value_t = 16)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// A walk through latent space: slerp between random prior points (one row per walk).
    Walk {
        #[command(flatten)]
        m: ModelsArg,
        /// Frames per walk.
        #[arg(long, default_value_t = 10)]
        frames: usize,
        /// Number of walks (rows).
        #[arg(long, default_value_t = 4)]
        walks: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// The latent plane of a set with a 2-D latent (e.g. models/fashion-vae/2d): a size x size grid of
    /// decoded points at the N(0, 1) quantiles 0.05..0.95 of each axis (z1 left to right, z2 bottom to top).
    Map {
        #[command(flatten)]
        m: ModelsArg,
        /// Points per axis, 2..=64.
        #[arg(long, default_value_t = 20)]
        size: usize,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let teardown = std::env::var_os("MIRAGE_CLI_TEARDOWN").is_some_and(|v| v == "1");
    let _ = TEARDOWN.set(teardown);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    let code = match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("mirage: error: {e}");
            1
        }
        Err(_) => 101, // the panic hook has printed the message
    };
    if teardown {
        KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        return ExitCode::from(code as u8);
    }
    // The work is done and every output written (files are written and closed inside `run`). Dropping the model
    // sets and running ONNX Runtime's C++ destructors would only give memory back to a process that is ending:
    // about 14 ms of a 1-step generation's 100 on a 2-core machine (docs/startup.md). The kernel frees it all.
    // MIRAGE_CLI_TEARDOWN=1 tears down instead (the valgrind tests, to check that path).
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing of ours is left to run.
    unsafe { libc::_exit(code) }
}

/// MIRAGE_CLI_TEARDOWN=1: the process drops what it made and exits through `exit` (see `main`).
static TEARDOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// The model sets this process opened, kept to its end when it skips the teardown (see `main`).
static KEPT: std::sync::Mutex<Vec<std::sync::Arc<ModelSet>>> = std::sync::Mutex::new(Vec::new());

/// The text encoder's precision every set of this process opens with (`--precision`).
static PRECISION: std::sync::OnceLock<mirage::text::Precision> = std::sync::OnceLock::new();

/// Opens a model set (directory, pack or diffusers folder) with the process's `--precision`.
fn open_set(path: &Path) -> Result<std::sync::Arc<ModelSet>> {
    let set =
        std::sync::Arc::new(ModelSet::open_with_precision(path, None, PRECISION.get().copied().unwrap_or_default())?);
    if !TEARDOWN.get().copied().unwrap_or(true) {
        KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(set.clone());
    }
    Ok(set)
}

fn run(cli: Cli) -> Result<()> {
    let level = match cli.rt.verbose {
        0 => mirage::log::Level::Warn,
        1 => mirage::log::Level::Info,
        _ => mirage::log::Level::Debug,
    };
    mirage::log::set_sink(None, level);
    let options = RuntimeOptions {
        ort_library: cli.rt.ort_lib.clone(),
        provider: Provider::parse(&cli.rt.provider)?,
        strict: cli.rt.strict,
        intra_threads: cli.rt.threads,
        digest_cache_dir: cli.rt.digest_cache(),
        tensorrt_fp16: cli.rt.tensorrt_fp16,
        tensorrt_cache_dir: cli.rt.tensorrt_cache.clone(),
        prompt_cache: !cli.rt.no_prompt_cache,
        cuda_graph: cli.rt.cuda_graph,
    };
    mirage::limits::check_threads(cli.rt.threads, "--threads")?;
    let precision = mirage::text::Precision::parse(&cli.rt.precision).map_err(|e| e.prefixed("--precision: "))?;
    let _ = PRECISION.set(precision);
    // Without the teardown, the process ends with _exit: the runtime may make its environment beside what
    // comes next (see runtime::start). Not for `bench`, whose open-to-first-image figure is a host's (whose
    // `mirage_init_runtime` makes the environment before any context).
    if TEARDOWN.get().copied().unwrap_or(true) || matches!(cli.cmd, Cmd::Bench { .. }) {
        runtime::init(&options)?;
    } else {
        runtime::start(&options)?;
    }
    match cli.cmd {
        Cmd::Info { m } => info(&m.models),
        Cmd::Bench { m, batch, iters, json } => bench(&m.models, &batch, iters, json.as_deref()),
        Cmd::Generate { m, d, t, count, scale, output } => {
            check_scale(scale)?;
            let set = open_set(&m.models)?;
            let n = count * t.rows();
            let p = d.params(n, 1.0)?;
            let text = t.guidance(&set, count)?;
            let x = d.with_progress(|hooks| pipeline::generate_with(&set, &p, text.as_ref(), hooks))?;
            let images = d.finish(img::from_model(&x, n, &set.manifest().image)?)?;
            let images: Vec<Image> = images.iter().map(|i| i.upscale(scale)).collect();
            // One prompt: a square grid; several: a row per prompt.
            let cols = if t.rows() > 1 { count } else { (count as f64).sqrt().ceil() as usize };
            match images.as_slice() {
                [one] => save(one, &output),
                _ => save(&img::grid(&images, cols, 2 * scale, 0)?, &output),
            }
        }
        Cmd::Interpolate { m, d, prompts, negative, guidance, frames, batch, delay_ms, scale, output } => {
            check_scale(scale)?;
            let set = open_set(&m.models)?;
            let g = pipeline::resolve_guidance(&set, guidance).map_err(|e| e.prefixed("--"))?;
            let p = d.params(batch.max(1), 1.0)?;
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            let x =
                d.with_progress(|hooks| pipeline::interpolate(&set, &refs, &negative, frames, Some(g), &p, hooks))?;
            let images: Vec<Image> =
                img::from_model(&x, frames, &set.manifest().image)?.iter().map(|i| i.upscale(scale)).collect();
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            if output.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif")) {
                img::save_gif(&images, delay_ms, &output)
            } else {
                save(&img::grid(&images, frames, scale, 0)?, &output)
            }
        }
        Cmd::Denoise { m, d, strength, input, output } => {
            image_to_image(&m.models, &d, strength, &input, &output, pipeline::denoise)
        }
        Cmd::Img2img { m, d, strength, input, output } => {
            image_to_image(&m.models, &d, strength, &input, &output, pipeline::img2img)
        }
        Cmd::Inpaint { m, d, strength, input, mask, output } => {
            let set = open_set(&m.models)?;
            let image = load_for(&set, &input)?;
            let mask_img = Image::load(&mask)?.to_channels(1)?;
            if (mask_img.width, mask_img.height) != (image.width, image.height) {
                return Err(Error::invalid(format!(
                    "mask is {}x{} but the image is {}x{}",
                    mask_img.width, mask_img.height, image.width, image.height
                )));
            }
            let mask: Vec<f32> = mask_img.data.iter().map(|&v| v as f32 / 255.0).collect();
            let p = d.params(1, strength)?;
            let x = img::to_model(std::slice::from_ref(&image), &set.manifest().image)?;
            let y = d.with_progress(|hooks| pipeline::inpaint(&set, &x, &mask, 1, &p, None, hooks))?;
            save(&d.finish(img::from_model(&y, 1, &set.manifest().image)?)?.remove(0), &output)
        }
        Cmd::Pack { dir, output } => pack(&dir, &output),
        Cmd::Demo { models, data, count, seed, noise, denoise_strength, prior_models, output } => {
            demo(&models, &prior_models, &data, count, seed, (noise, denoise_strength), &output)
        }
        Cmd::TextEncoder { cmd: TextEncoderCmd::Export { from, out } } => text_encoder_export(&from, &out),
        Cmd::Embed { encoder, tokens, context, prompts } => embed(&encoder, tokens, context, &prompts),
        Cmd::Vae { cmd } => match cmd {
            VaeCmd::Reconstruct { m, input, output, sample, seed } => {
                let set = open_set(&m.models)?;
                let image = load_for(&set, &input)?;
                let x = img::to_model(std::slice::from_ref(&image), &set.manifest().image)?;
                let (mean, logvar) = set.encode(&x, 1)?;
                let z = if sample { latent::sample_latent(&mean, &logvar, seed)? } else { mean };
                let out = decode_images(&set, &z, 1)?.remove(0);
                eprintln!("PSNR {:.2} dB", img::psnr(&image, &out)?);
                save(&out, &output)
            }
            VaeCmd::Encode { m, input, output } => {
                let set = open_set(&m.models)?;
                let image = load_for(&set, &input)?;
                let (mean, logvar) = set.encode(&img::to_model(&[image], &set.manifest().image)?, 1)?;
                let json = serde_json::json!({
                    "model_set": set.manifest().name,
                    "shape": set.latent_shape()?,
                    "mean": mean,
                    "logvar": logvar,
                });
                let text = serde_json::to_string_pretty(&json).map_err(|e| Error::invalid(e.to_string()))?;
                match output {
                    Some(p) => std::fs::write(&p, text + "\n").map_err(|e| Error::io(&p, e)),
                    None => {
                        println!("{text}");
                        Ok(())
                    }
                }
            }
            VaeCmd::Decode { m, input, output, seed } => {
                let set = open_set(&m.models)?;
                let text = std::fs::read_to_string(&input).map_err(|e| Error::io(&input, e))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", input.display())))?;
                let floats = |key: &str| -> Option<Vec<f32>> {
                    v.get(key)?.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
                };
                let z = match (floats("latent"), floats("mean"), floats("logvar"), seed) {
                    (Some(z), _, _, _) => z,
                    (None, Some(mean), Some(logvar), Some(s)) => latent::sample_latent(&mean, &logvar, s)?,
                    (None, Some(mean), _, None) => mean,
                    _ => {
                        return Err(Error::invalid(format!(
                            "{}: needs a \"latent\" or \"mean\" array of numbers",
                            input.display()
                        )))
                    }
                };
                let out = decode_images(&set, &z, 1)?.remove(0);
                save(&out, &output)
            }
            VaeCmd::Sample { m, count, seed, output } => {
                let set = open_set(&m.models)?;
                warn_unsampleable(&set);
                let z = latent::prior_latents(set.latent_len()?, count, seed)?;
                let images = decode_images(&set, &z, count)?;
                let cols = (count as f64).sqrt().ceil() as usize;
                save(&img::grid(&images, cols, 2, 0)?, &output)
            }
            VaeCmd::Walk { m, frames, walks, seed, output } => {
                let set = open_set(&m.models)?;
                if !(2..=256).contains(&frames) || !(1..=64).contains(&walks) {
                    return Err(Error::invalid("walk: --frames must be 2..=256 and --walks 1..=64"));
                }
                warn_unsampleable(&set);
                let len = set.latent_len()?;
                let ends = latent::prior_latents(len, walks + 1, seed)?;
                let mut z = Vec::with_capacity(walks * frames * len);
                for w in 0..walks {
                    let (a, b) = (&ends[w * len..(w + 1) * len], &ends[(w + 1) * len..(w + 2) * len]);
                    for f in 0..frames {
                        z.extend(latent::slerp(a, b, f as f32 / (frames - 1) as f32)?);
                    }
                }
                let images = decode_images(&set, &z, walks * frames)?;
                save(&img::grid(&images, frames, 2, 0)?, &output)
            }
            VaeCmd::Map { m, size, output } => vae_map(&m.models, size, &output),
        },
    }
}

/// The signature `pipeline::img2img` and `pipeline::denoise` share.
type ImageToImage =
    fn(&ModelSet, &[f32], usize, &DiffusionParams, Option<&pipeline::TextGuidance>, &mut Hooks) -> Result<Vec<f32>>;

/// `mirage img2img` and `mirage denoise`: one image in, one out.
fn image_to_image(
    models: &Path,
    d: &DiffusionArgs,
    strength: f32,
    input: &Path,
    output: &Path,
    op: ImageToImage,
) -> Result<()> {
    let set = open_set(models)?;
    let image = load_for(&set, input)?;
    let p = d.params(1, strength)?;
    let x = img::to_model(std::slice::from_ref(&image), &set.manifest().image)?;
    let y = d.with_progress(|hooks| op(&set, &x, 1, &p, None, hooks))?;
    save(&d.finish(img::from_model(&y, 1, &set.manifest().image)?)?.remove(0), output)
}

/// `mirage pack`: the set in `dir` (manifest, models, text encoder) as one pack file, checked by opening it.
fn pack(dir: &Path, output: &Path) -> Result<()> {
    let t = std::time::Instant::now();
    let buf = mirage::model_set::pack_set(dir)?;
    if let Some(parent) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(output, &buf).map_err(|e| Error::io(output, e))?;
    // The pack must open as the directory does (every checksum, every session).
    open_set(output)?;
    let entries = mirage::pack::Pack::parse(&buf)?.len();
    println!(
        "wrote {} ({entries} entries, {:.1} MB) from {} in {:.2} s; it opens as a model set",
        output.display(),
        buf.len() as f64 / 1e6,
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn text_encoder_export(from: &Path, out: &Path) -> Result<()> {
    let r = mirage::export::minilm::export_minilm(from, out)?;
    println!(
        "wrote {} ({:.1} MB, sha256 {}) with {} and {} in {:.1} s",
        r.onnx_path.display(),
        r.onnx_bytes as f64 / 1e6,
        r.descriptor.onnx_sha256,
        mirage::text::TOKENIZER_FILE,
        mirage::text::DESCRIPTOR_FILE,
        r.seconds
    );
    Ok(())
}

fn embed(dir: &Path, with_tokens: bool, context: usize, prompts: &[String]) -> Result<()> {
    let encoder = mirage::text::TextEncoder::open(dir, None, None)?;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let e = encoder.encode(&refs, context)?;
    let results: Vec<serde_json::Value> = (0..prompts.len())
        .map(|i| {
            let mut r = serde_json::json!({
                "prompt": prompts[i],
                "ids": e.ids[i],
                "token_count": e.token_counts[i],
                "pooled": e.pooled_row(i),
            });
            if with_tokens {
                let rows: Vec<Vec<f32>> = (0..e.token_counts[i]).map(|t| e.token(i, t).to_vec()).collect();
                r["tokens"] = serde_json::json!(rows);
            }
            r
        })
        .collect();
    let json = serde_json::json!({
        "encoder": dir.display().to_string(),
        "provider": encoder.provider().name(),
        "context": context,
        "width": mirage::text::TEXT_WIDTH,
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&json).map_err(|e| Error::invalid(e.to_string()))?);
    Ok(())
}

fn info(models: &Path) -> Result<()> {
    let rt = runtime::global()?;
    println!("mirage {}", mirage::VERSION);
    println!("onnxruntime: {}", rt.library().display());
    println!("  {}", runtime::version_string());
    println!("  providers in this build: {}", rt.available_providers().join(", "));
    match open_set(models) {
        Ok(set) => {
            let m = set.manifest();
            let i = &m.image;
            println!("model set {:?} at {}", m.name, models.display());
            println!("  image {}x{}x{} (mean {}, std {})", i.width, i.height, i.channels, i.mean, i.std);
            if set.is_diffusers() {
                let own = set.resolve_sampler(mirage::sampler::SamplerKind::Auto { eta: 0.0 })?;
                println!(
                    "  diffusers folder: scheduler {} (default sampler {})",
                    m.training["scheduler"].as_str().unwrap_or("?"),
                    own.name()
                );
            }
            if let Some(t) = set.text_spec() {
                println!("  text: {} tokens x {} wide, default guidance {}", t.tokens, t.width, t.guidance);
            }
            if let Some(v) = &m.vae {
                let ratio = (i.width * i.height * i.channels) as f64 / v.latent_shape.iter().product::<u32>() as f64;
                println!(
                    "  vae latent {:?} ({ratio:.2}x fewer values than pixels); prior {}",
                    v.latent_shape,
                    if set.prior_sampleable()? {
                        "sampleable (vae sample / walk give images)"
                    } else {
                        "not declared sampleable (vae sample / walk may give blobs; generate draws images)"
                    }
                );
            }
            for (kind, p) in set.providers() {
                println!("  {}: {}", kind.name(), p.name());
            }
            Ok(())
        }
        Err(e) => {
            println!("model set {}: {e}", models.display());
            Err(e)
        }
    }
}

fn demo(
    models: &Path,
    prior_models: &Path,
    data: &Path,
    count: usize,
    seed: u64,
    denoise: (f32, f32),
    output: &Path,
) -> Result<()> {
    let (sigma, strength) = denoise;
    if !(sigma.is_finite() && (0.0..=1.0).contains(&sigma)) {
        return Err(Error::invalid("demo: --noise must be in [0, 1]"));
    }
    if count == 0 || count > 256 {
        return Err(Error::invalid("demo: --count must be 1..=256"));
    }
    let set = open_set(models)?;
    let spec = set.manifest().image.clone();
    let test = mirage::fashion::load(data, mirage::fashion::Split::Test, Some(count))?;
    let originals: Vec<Image> =
        test.images.chunks_exact(28 * 28).map(|px| Image::new(28, 28, 1, px.to_vec())).collect::<Result<_>>()?;
    let n = originals.len();
    let (mean, _) = set.encode(&img::to_model(&originals, &spec)?, n)?;
    let recon = decode_images(&set, &mean, n)?;
    // Prior samples from the set made for sampling when it is there (and draws the same images), else from
    // this set's own VAE, said to be blobs.
    let prior_set = if prior_models.exists() {
        match open_set(prior_models) {
            Ok(p) => Some(p).filter(|p| p.prior_sampleable().unwrap_or(false) && p.manifest().image == spec),
            Err(e) => {
                eprintln!(
                    "mirage: warning: {}: {e}; the samples row uses {}'s own VAE",
                    prior_models.display(),
                    models.display()
                );
                None
            }
        }
    } else {
        None
    };
    let (sampler, prior_note) = match &prior_set {
        Some(p) => (p, format!("prior samples of {} (a VAE made for sampling)", prior_models.display())),
        None => (&set, format!("decoded from random latents of {}'s VAE (not made for sampling)", models.display())),
    };
    let samples = decode_images(sampler, &latent::prior_latents(sampler.latent_len()?, n, seed)?, n)?;
    let psnr: f64 = originals.iter().zip(&recon).map(|(a, b)| img::psnr(a, b)).sum::<Result<f64>>()? / n as f64;
    // Rows of 8: originals, their reconstructions, then random samples.
    let cols = n.min(8);
    let mut cells = Vec::new();
    for chunk in 0..n.div_ceil(cols) {
        let r = chunk * cols..((chunk + 1) * cols).min(n);
        cells.extend_from_slice(&originals[r.clone()]);
        cells.extend_from_slice(&recon[r]);
    }
    cells.extend(samples);
    // With a U-Net, the set can also generate by reverse diffusion: the images the VAE prior alone cannot make.
    let diffusion = if set.has_unet() {
        let p = DiffusionParams { steps: 50, seed, count: n, ..Default::default() };
        let x = pipeline::generate(&set, &p, &mut Hooks::default())?;
        cells.extend(img::from_model(&x, n, &spec)?);
        // Denoising: the test images with Gaussian pixel noise (sigma 0.2 of the range), then the diffusion
        // model's denoise (img2img at strength 0.4, deterministic DDIM).
        let mut noise = mirage::rng::Noise::new(seed ^ 0xd1ce);
        let noisy: Vec<Image> = originals
            .iter()
            .map(|o| {
                let px =
                    o.data.iter().map(|&v| (v as f32 + 255.0 * sigma * noise.normal()).round().clamp(0.0, 255.0) as u8);
                Image::new(o.width, o.height, o.channels, px.collect())
            })
            .collect::<Result<_>>()?;
        let p = DiffusionParams { steps: 50, seed, count: n, strength, ..Default::default() };
        let y = pipeline::denoise(&set, &img::to_model(&noisy, &spec)?, n, &p, None, &mut Hooks::default())?;
        let denoised = img::from_model(&y, n, &spec)?;
        // The VAE alone (encode the noisy image, decode its mean) is the baseline the diffusion must beat.
        let (z, _) = set.encode(&img::to_model(&noisy, &spec)?, n)?;
        let vae_only = decode_images(&set, &z, n)?;
        let mean_psnr = |v: &[Image]| -> Result<f64> {
            Ok(originals.iter().zip(v).map(|(a, b)| img::psnr(a, b)).sum::<Result<f64>>()? / n as f64)
        };
        let (before, after, baseline) = (mean_psnr(&noisy)?, mean_psnr(&denoised)?, mean_psnr(&vae_only)?);
        cells.extend(noisy);
        cells.extend(denoised);
        format!(
            "; {n} generated by 50 DDIM steps of latent diffusion; the test images with noise (sigma {sigma}, PSNR \
             {before:.2} dB) and denoised at strength {strength} (PSNR {after:.2} dB; the VAE's reconstruction of \
             the noisy images alone: {baseline:.2} dB)"
        )
    } else {
        String::new()
    };
    let g = img::grid(&cells, cols, 2, 40)?;
    save(&g, output)?;
    println!(
        "wrote {} ({n} test images and their reconstructions, mean PSNR {psnr:.2} dB; {n} {prior_note} (seed \
         {seed}){diffusion})",
        output.display(),
    );
    Ok(())
}

fn bench(models: &Path, batches: &[usize], iters: usize, json: Option<&Path>) -> Result<()> {
    if iters == 0 || iters > 100_000 {
        return Err(Error::invalid("bench: --iters must be 1..=100000"));
    }
    if batches.is_empty() || batches.iter().any(|&b| b == 0 || b > 256) {
        return Err(Error::invalid("bench: each --batch must be 1..=256"));
    }
    let mut report = serde_json::Map::new();
    let ms = |v: f64| (v * 1000.0).round() / 1000.0;
    // Open to first image: what a host pays before its first picture (the runtime is already up).
    let t = std::time::Instant::now();
    let set = open_set(models)?;
    let opened = t.elapsed().as_secs_f64() * 1e3;
    let prompt = if set.text_spec().is_some() { "a red apple" } else { "" };
    let text = |n: usize| -> Result<Option<pipeline::TextGuidance>> {
        pipeline::TextGuidance::request(&set, &[prompt], &[], n, None)
    };
    let mut first = None;
    if set.has_unet() {
        let p = DiffusionParams { steps: 1, ..Default::default() };
        pipeline::generate_with(&set, &p, text(1)?.as_ref(), &mut Hooks::default())?;
        first = Some(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let p = DiffusionParams { steps: 50, seed: 1, ..Default::default() };
        pipeline::generate_with(&set, &p, text(1)?.as_ref(), &mut Hooks::default())?;
        let warm = t.elapsed().as_secs_f64() * 1e3;
        report.insert("warm_50_step_image_ms".into(), ms(warm).into());
    }
    report.insert("open_ms".into(), ms(opened).into());
    // With the prompt cache, a prompt drawn before skips the text encoder: open and first image are then the
    // start of a host with fixed prompts (`--no-prompt-cache` for the start of one with a new prompt).
    report.insert("prompt_cache".into(), set.caches_prompts().into());
    if let Some(f) = first {
        report.insert("open_to_first_image_ms".into(), ms(f).into());
    }
    let providers: Vec<String> = set.providers().iter().map(|(k, p)| format!("{}={}", k.name(), p.name())).collect();
    let m = set.manifest();
    println!("model set {:?}; {}; {iters} timed calls each, medians (p10-p90)", m.name, providers.join(", "));
    // What the machine's multiply units do at best: ONNX Runtime's sgemm (and libtorch's, in a build with
    // the trainer), 1024 x 1024 x 1024, best of 10.
    let sgemm = mirage::bench::sgemm_gflops(1024, 10)?;
    report.insert("sgemm_gflops_onnxruntime".into(), ms(sgemm).into());
    #[cfg(feature = "train")]
    let torch = {
        let g = mirage::train::bench::sgemm_gflops(1024, 10);
        report.insert("sgemm_gflops_libtorch".into(), ms(g).into());
        println!("  sgemm 1024^3 (best of 10): ONNX Runtime {sgemm:.1} GFLOP/s, libtorch {g:.1} GFLOP/s");
        let t = mirage::train::bench::TorchUNet::from_set(&set)?;
        if let Some(t) = &t {
            println!("  libtorch U-Net: the trainer's module with the weights of the set's unet.onnx (max |ORT - libtorch| {:.1e})", t.parity);
            report.insert("libtorch_parity_max_abs_diff".into(), (t.parity as f64).into());
        }
        t
    };
    #[cfg(not(feature = "train"))]
    println!(
        "  sgemm 1024^3 (best of 10): ONNX Runtime {sgemm:.1} GFLOP/s (no libtorch column: this mirage was built \
         without the trainer; `make bench` builds it with --features train)"
    );
    println!(
        "  open {opened:.0} ms{}{}",
        match (first, report.get("warm_50_step_image_ms")) {
            (Some(f), Some(w)) => format!(", open to a first 1-step image {f:.0} ms; a warm 50-step image {w} ms"),
            _ => String::new(),
        },
        if set.caches_prompts() { " (prompt cache on: a prompt drawn before loads no text encoder)" } else { "" }
    );
    if let (Some(t), Some(encoder)) = (set.text_spec(), set.text_encoder()?) {
        let l = t.tokens as usize;
        let enc = time_ms(iters, || encoder.encode(&[prompt], l).map(|_| ()))?;
        println!("  text encoder: {:.3} ms per prompt ({l} tokens)", enc[0]);
        report.insert("text_encoder_ms_per_prompt".into(), ms(enc[0]).into());
        if set.caches_prompts() {
            let hit = time_ms(iters, || set.encode_prompts(&[prompt]).map(|_| ()))?;
            println!("  prompt cache: {:.3} ms per prompt drawn before (the encoder not run)", hit[0]);
            report.insert("prompt_cache_hit_ms_per_prompt".into(), ms(hit[0]).into());
        }
    }
    // A bare session of the same U-Net file, fed exactly what the pipeline feeds it: mirage's overhead.
    // (A diffusers folder's U-Net takes other inputs, in its own types: its steps are timed without it.)
    let bare = match &m.unet {
        Some(u) if !set.is_diffusers() => {
            let bytes = mirage::manifest::Manifest::read_model(set.dir(), &u.model)?;
            let session = runtime::global()?.session(&bytes, "bench: bare U-Net", None)?;
            Some((bytes, std::cell::RefCell::new(session)))
        }
        _ => None,
    };
    let mut rows = Vec::new();
    for &b in batches {
        let mut row = serde_json::Map::new();
        row.insert("batch".into(), b.into());
        let x: Vec<f32> =
            mirage::rng::Noise::new(1).normals(b * set.image_len()).iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let z = latent::prior_latents(set.latent_len()?, b, 2)?;
        let enc = time_ms(iters, || set.encode(&x, b).map(|_| ()))?;
        let dec = time_ms(iters, || set.decode(&z, b).map(|_| ()))?;
        println!(
            "  batch {b}: encode: median {:.3} ms (p10 {:.3}, p90 {:.3}), {:.1} images/s; decode: median {:.3} ms (p10 {:.3}, \
             p90 {:.3}), {:.3} ms per image",
            enc[0],
            enc[1],
            enc[2],
            b as f64 / enc[0] * 1e3,
            dec[0],
            dec[1],
            dec[2],
            dec[0] / b as f64
        );
        row.insert("vae_encode_ms".into(), ms(enc[0]).into());
        row.insert("vae_decode_ms".into(), ms(dec[0]).into());
        if set.has_unet() {
            // The pipeline: a plan of enough steps, stepped one at a time.
            let p = DiffusionParams { steps: (iters + 3).min(1000), count: b, ..Default::default() };
            let guidance = text(b)?;
            let guided = guidance.is_some() && set.runs_both_sides(pipeline::resolve_guidance(&set, None)?);
            let rows_per = if guided { 2 * b } else { b };
            let mut plan = pipeline::plan_generate(&set, &p, guidance.as_ref())?;
            let step = time_ms(iters.min(997), || plan.step(&set, &mut Hooks::default()))?;
            let per_image = (50.0 * step[0] + dec[0]) / b as f64;
            row.insert("unet_batch".into(), rows_per.into());
            row.insert("step_ms".into(), ms(step[0]).into());
            row.insert("ms_per_50_step_image".into(), ms(per_image).into());
            let Some((unet_bytes, session)) = &bare else {
                println!(
                    "    sampler step: mirage {:.3} ms (p10 {:.3}, p90 {:.3}) (U-Net batch {rows_per}); a finished 50-step \
                     image {per_image:.2} ms",
                    step[0],
                    step[1],
                    step[2]
                );
                rows.push(serde_json::Value::Object(row));
                continue;
            };
            // The same U-Net run on a bare session: inputs of the shapes the pipeline builds.
            let [c, h, w] = set.diffusion_shape()?;
            let mut feeds: Vec<(String, ort::value::DynValue)> = Vec::new();
            let names: Vec<String> = session.borrow().inputs().iter().map(|o| o.name().to_string()).collect();
            let noise = |n: usize| mirage::rng::Noise::new(3).normals(n);
            let shapes: Vec<Vec<i64>> = {
                let mut v = vec![vec![rows_per as i64, c as i64, h as i64, w as i64], vec![rows_per as i64, 1]];
                if let Some(t) = set.text_spec() {
                    v.push(vec![rows_per as i64, t.tokens as i64, t.width as i64]);
                    v.push(vec![rows_per as i64, t.width as i64]);
                }
                v
            };
            for (name, shape) in names.iter().zip(&shapes) {
                let len = shape.iter().product::<i64>() as usize;
                let data = if shape.len() == 2 && shape[1] == 1 { vec![0.5f32; len] } else { noise(len) };
                feeds.push((name.clone(), ort::value::Tensor::from_array((shape.clone(), data))?.into_dyn()));
            }
            let bare_ms = time_ms(iters, || {
                let mut s = session.borrow_mut();
                let inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
                    feeds.iter().map(|(n, v)| (n.as_str(), v.into())).collect();
                s.run(inputs)?;
                Ok(())
            })?;
            let overhead = (step[0] - bare_ms[0]) / bare_ms[0] * 100.0;
            println!(
                "    sampler step: mirage {:.3} ms (p10 {:.3}, p90 {:.3}), bare ONNX Runtime U-Net run {:.3} ms (U-Net batch \
                 {rows_per}): overhead {overhead:+.1} %; a finished 50-step image {per_image:.2} ms",
                step[0],
                step[1],
                step[2],
                bare_ms[0]
            );
            row.insert("bare_unet_run_ms".into(), ms(bare_ms[0]).into());
            row.insert("overhead_percent".into(), ((overhead * 10.0).round() / 10.0).into());
            // The arithmetic of that run, and the rate mirage's step achieved next to the sgemm rate.
            let flops = mirage::bench::count_flops(unet_bytes, "bench: U-Net (profiled)", &feeds)?;
            let rate = flops.total / (step[0] * 1e-3) / 1e9;
            println!(
                "    U-Net run: {:.3} GFLOP (convolutions and matrix products, {} of {} nodes); mirage's step runs at \
                 {rate:.1} GFLOP/s, {:.0} % of ONNX Runtime's sgemm rate",
                flops.total / 1e9,
                flops.counted,
                flops.nodes,
                rate / sgemm * 100.0
            );
            row.insert("unet_gflop".into(), (flops.total / 1e9).into());
            row.insert("step_gflops".into(), ms(rate).into());
            #[cfg(feature = "train")]
            if let Some(t) = &torch {
                let tm = t.time_forward(rows_per, iters)?;
                println!(
                    "    libtorch forward of the same U-Net: {:.3} ms (p10 {:.3}, p90 {:.3}): {:.2}x the bare ONNX Runtime run",
                    tm[0],
                    tm[1],
                    tm[2],
                    tm[0] / bare_ms[0]
                );
                row.insert("libtorch_forward_ms".into(), ms(tm[0]).into());
            }
        }
        rows.push(serde_json::Value::Object(row));
    }
    // The bytes of every model the set loaded (the text encoder's file too).
    let mut model_bytes = 0u64;
    let files =
        [m.vae.as_ref().map(|v| &v.encoder), m.vae.as_ref().map(|v| &v.decoder), m.unet.as_ref().map(|u| &u.model)];
    for f in files.into_iter().flatten() {
        model_bytes += std::fs::metadata(set.dir().join(&f.file)).map_or(0, |md| md.len());
    }
    if let Some(t) = m.unet.as_ref().and_then(|u| u.text.as_ref()) {
        model_bytes += std::fs::metadata(set.dir().join(&t.encoder).join(if set.is_diffusers() {
            "model.onnx"
        } else {
            mirage::text::ONNX_FILE
        }))
        .map_or(0, |md| md.len());
    }
    let rss = peak_rss();
    println!(
        "  peak RSS {:.1} MB for {:.1} MB of models{}",
        rss as f64 / 1e6,
        model_bytes as f64 / 1e6,
        if cfg!(feature = "train") { " (this build also loads libtorch and its U-Net copy)" } else { "" }
    );
    report.insert("batches".into(), rows.into());
    report.insert("peak_rss_bytes".into(), rss.into());
    report.insert("model_bytes".into(), model_bytes.into());
    report.insert("model_set".into(), m.name.clone().into());
    report.insert("providers".into(), providers.into());
    report.insert("iters".into(), iters.into());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))
            .map_err(|e| Error::invalid(format!("bench: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// `vae sample` and `vae walk` on a set whose manifest does not declare its prior sampleable: say so.
fn warn_unsampleable(set: &ModelSet) {
    if !set.prior_sampleable().unwrap_or(true) {
        eprintln!(
            "mirage: warning: model set {:?} does not declare a sampleable prior (no \"prior\": \"sampleable\" in its \
             manifest): its VAE was not made for decoding N(0, I) points, which may give blobs rather than images. \
             Generate with `mirage generate` (diffusion) where the set has a U-Net, or use a set made for sampling \
             such as models/fashion-vae.",
            set.manifest().name
        );
    }
}

/// `mirage vae map`: decodes a size x size grid over the latent plane of a 2-D-latent set.
fn vae_map(models: &Path, size: usize, output: &Path) -> Result<()> {
    if !(2..=64).contains(&size) {
        return Err(Error::invalid(format!("map: --size must be 2..=64, got {size}")));
    }
    let set = open_set(models)?;
    if set.latent_len()? != 2 {
        return Err(Error::invalid(format!(
            "map: model set {:?} has a latent of shape {:?}; the map needs a 2-D latent (e.g. models/fashion-vae/2d)",
            set.manifest().name,
            set.latent_shape()?
        )));
    }
    warn_unsampleable(&set);
    let q: Vec<f32> = (0..size).map(|i| normal_quantile(0.05 + 0.9 * i as f64 / (size - 1) as f64) as f32).collect();
    let mut z = Vec::with_capacity(size * size * 2);
    for row in 0..size {
        for &z1 in &q {
            // Top row: the largest z2, so that the picture is the plane with z2 pointing up.
            z.extend([z1, q[size - 1 - row]]);
        }
    }
    let images = decode_images(&set, &z, size * size)?;
    save(&img::grid(&images, size, 0, 0)?, output)
}

/// The standard normal distribution's quantile function for p in (0, 1): Acklam's rational approximation
/// (relative error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

fn load_for(set: &ModelSet, path: &Path) -> Result<Image> {
    let i = &set.manifest().image;
    let image = Image::load(path)?.to_channels(i.channels)?;
    if (image.width, image.height) != (i.width, i.height) {
        return Err(Error::invalid(format!(
            "{} is {}x{}; the model set {:?} takes {}x{} images",
            path.display(),
            image.width,
            image.height,
            set.manifest().name,
            i.width,
            i.height
        )));
    }
    Ok(image)
}

fn decode_images(set: &ModelSet, z: &[f32], n: usize) -> Result<Vec<Image>> {
    img::from_model(&set.decode(z, n)?, n, &set.manifest().image)
}

fn check_scale(scale: u32) -> Result<()> {
    if !(1..=16).contains(&scale) {
        return Err(Error::invalid(format!("--scale must be 1..=16, got {scale}")));
    }
    Ok(())
}

fn save(image: &Image, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    image.save(path)
}
