//! `mirage`: the command-line face of the library (and the README's demo).
//!
//! Every subcommand goes through the same public API a host uses (ModelSet, image conversions);
//! nothing here knows more about the models than the manifest says.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
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
    /// Log informational lines (which provider each model got, where ONNX Runtime was found).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Intra-op threads per model, 0..=256 (0 = one per core). Results do not depend on it.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
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
    Bench {
        #[command(flatten)]
        m: ModelsArg,
        /// Images per call.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Timed calls per model (after 3 untimed warm-up calls).
        #[arg(long, default_value_t = 50)]
        iters: usize,
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
    /// ddim | dpm++2m.
    #[arg(long, default_value = "ddim")]
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
        let noise = match &self.noise {
            None => None,
            Some(path) => {
                let bytes = mirage::files::read_regular(path, 1 << 30, "--noise", "no such file")?;
                let (_, values) = latent::read_npy(&bytes).map_err(|e| e.prefixed("--noise: "))?;
                Some(std::sync::Arc::from(values))
            }
        };
        let p = DiffusionParams {
            steps: self.steps,
            sampler: SamplerKind::parse(&self.sampler, self.eta).map_err(|e| e.prefixed("--"))?,
            seed: self.seed,
            count,
            strength,
            tileable: self.tileable,
            noise,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mirage: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let level = if cli.rt.verbose { mirage::log::Level::Info } else { mirage::log::Level::Warn };
    mirage::log::set_sink(None, level);
    let options = RuntimeOptions {
        ort_library: cli.rt.ort_lib.clone(),
        provider: Provider::parse(&cli.rt.provider)?,
        strict: cli.rt.strict,
        intra_threads: cli.rt.threads,
        ..Default::default()
    };
    mirage::limits::check_threads(cli.rt.threads, "--threads")?;
    runtime::init(&options)?;
    match cli.cmd {
        Cmd::Info { m } => info(&m.models),
        Cmd::Bench { m, batch, iters } => bench(&m.models, batch, iters),
        Cmd::Generate { m, d, t, count, scale, output } => {
            check_scale(scale)?;
            let set = ModelSet::open(&m.models)?;
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
            let set = ModelSet::open(&m.models)?;
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
            let set = ModelSet::open(&m.models)?;
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
        Cmd::Demo { models, data, count, seed, noise, denoise_strength, output } => {
            demo(&models, &data, count, seed, (noise, denoise_strength), &output)
        }
        Cmd::TextEncoder { cmd: TextEncoderCmd::Export { from, out } } => text_encoder_export(&from, &out),
        Cmd::Embed { encoder, tokens, context, prompts } => embed(&encoder, tokens, context, &prompts),
        Cmd::Vae { cmd } => match cmd {
            VaeCmd::Reconstruct { m, input, output, sample, seed } => {
                let set = ModelSet::open(&m.models)?;
                let image = load_for(&set, &input)?;
                let x = img::to_model(std::slice::from_ref(&image), &set.manifest().image)?;
                let (mean, logvar) = set.encode(&x, 1)?;
                let z = if sample { latent::sample_latent(&mean, &logvar, seed)? } else { mean };
                let out = decode_images(&set, &z, 1)?.remove(0);
                eprintln!("PSNR {:.2} dB", img::psnr(&image, &out)?);
                save(&out, &output)
            }
            VaeCmd::Encode { m, input, output } => {
                let set = ModelSet::open(&m.models)?;
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
                let set = ModelSet::open(&m.models)?;
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
                let set = ModelSet::open(&m.models)?;
                let z = latent::prior_latents(set.latent_len()?, count, seed)?;
                let images = decode_images(&set, &z, count)?;
                let cols = (count as f64).sqrt().ceil() as usize;
                save(&img::grid(&images, cols, 2, 0)?, &output)
            }
            VaeCmd::Walk { m, frames, walks, seed, output } => {
                let set = ModelSet::open(&m.models)?;
                if !(2..=256).contains(&frames) || !(1..=64).contains(&walks) {
                    return Err(Error::invalid("walk: --frames must be 2..=256 and --walks 1..=64"));
                }
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
    let set = ModelSet::open(models)?;
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
    ModelSet::open(output)?;
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
    match ModelSet::open(models) {
        Ok(set) => {
            let m = set.manifest();
            let i = &m.image;
            println!("model set {:?} at {}", m.name, models.display());
            println!("  image {}x{}x{} (mean {}, std {})", i.width, i.height, i.channels, i.mean, i.std);
            if let Some(v) = &m.vae {
                let ratio = (i.width * i.height * i.channels) as f64 / v.latent_shape.iter().product::<u32>() as f64;
                println!("  vae latent {:?} ({ratio:.2}x fewer values than pixels)", v.latent_shape);
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

fn demo(models: &Path, data: &Path, count: usize, seed: u64, denoise: (f32, f32), output: &Path) -> Result<()> {
    let (sigma, strength) = denoise;
    if !(sigma.is_finite() && (0.0..=1.0).contains(&sigma)) {
        return Err(Error::invalid("demo: --noise must be in [0, 1]"));
    }
    if count == 0 || count > 256 {
        return Err(Error::invalid("demo: --count must be 1..=256"));
    }
    let set = ModelSet::open(models)?;
    let spec = set.manifest().image.clone();
    let test = mirage::fashion::load(data, mirage::fashion::Split::Test, Some(count))?;
    let originals: Vec<Image> =
        test.images.chunks_exact(28 * 28).map(|px| Image::new(28, 28, 1, px.to_vec())).collect::<Result<_>>()?;
    let n = originals.len();
    let (mean, _) = set.encode(&img::to_model(&originals, &spec)?, n)?;
    let recon = decode_images(&set, &mean, n)?;
    let samples = decode_images(&set, &latent::prior_latents(set.latent_len()?, n, seed)?, n)?;
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
        "wrote {} ({n} test images and their reconstructions, mean PSNR {psnr:.2} dB; {n} decoded from random \
         latents (seed {seed}){diffusion})",
        output.display(),
    );
    Ok(())
}

fn bench(models: &Path, batch: usize, iters: usize) -> Result<()> {
    if iters == 0 || iters > 100_000 {
        return Err(Error::invalid("bench: --iters must be 1..=100000"));
    }
    let set = ModelSet::open(models)?;
    let x: Vec<f32> =
        mirage::rng::Noise::new(1).normals(batch * set.image_len()).iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let z = latent::prior_latents(set.latent_len()?, batch, 2)?;
    let time = |f: &dyn Fn() -> Result<()>| -> Result<Vec<f64>> {
        for _ in 0..3 {
            f()?;
        }
        let mut ms = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = std::time::Instant::now();
            f()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms)
    };
    let enc = time(&|| set.encode(&x, batch).map(|_| ()))?;
    let dec = time(&|| set.decode(&z, batch).map(|_| ()))?;
    let providers: Vec<String> = set.providers().iter().map(|(k, p)| format!("{}={}", k.name(), p.name())).collect();
    println!("model set {:?}, batch {batch}, {iters} timed calls each; {}", set.manifest().name, providers.join(", "));
    for (name, ms) in [("encode", enc), ("decode", dec)] {
        let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
        println!(
            "  {name}: median {:.3} ms (p10 {:.3}, p90 {:.3}), {:.1} images/s",
            q(0.5),
            q(0.1),
            q(0.9),
            batch as f64 / q(0.5) * 1e3
        );
    }
    Ok(())
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
