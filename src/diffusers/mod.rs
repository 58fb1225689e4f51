//! Stable-Diffusion-family folders in the layout Hugging Face `optimum` exports (`optimum-cli export onnx`):
//!
//! ```text
//! model_index.json                 the pipeline's parts (read: it marks the layout)
//! scheduler/scheduler_config.json  the diffusers scheduler and its betas ([`crate::sampler::discrete`])
//! tokenizer/                       CLIP BPE: vocab.json, merges.txt, tokenizer_config.json ([`tokenizer`])
//! text_encoder/model.onnx          input_ids -> last_hidden_state (+ pooler_output)
//! unet/model.onnx                  (sample, timestep, encoder_hidden_states) -> out_sample
//! vae_encoder/model.onnx           sample -> latent_parameters (mean and log-variance) or latent_sample
//! vae_decoder/model.onnx           latent_sample -> sample
//! ```
//!
//! Opened as a [`crate::model_set::ModelSet`] like mirage's own sets, with a manifest derived from the
//! folder's JSON files (never written: mirage's manifest format stays the one of its own sets). What
//! differs is kept in [`Extras`] and used where it differs: the tokenizer and 77-token context, the U-Net's
//! discrete timesteps (fed as the model declares them: float, float16 or int64), the VAE's scaling factor
//! (the U-Net works on `scaling_factor * (z - shift_factor)`: the manifest's per-channel normalisation),
//! the scheduler, and diffusers' guidance rule. Model files are not hashed against a list (the folder has
//! none); they are read with size limits and checked against the interface the layout needs.

pub mod tokenizer;

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::limits::{clip, quote_path};
use crate::manifest::{DiffusionSpace, ImageSpec, Manifest, ModelFile, TensorSpec, TextSpec, UNetSpec, VaeSpec};
use crate::runtime::Provider;
use crate::sampler::discrete::SchedulerConfig;
use crate::sampler::SamplerKind;
use crate::session::{Feed, OnnxModel, TensorInfo};

/// The file that marks a diffusers-layout folder.
pub const MODEL_INDEX: &str = "model_index.json";

/// Every file of a folder that is read (what identifies an open folder for sharing, with size and mtime).
pub const FILES: &[&str] = &[
    MODEL_INDEX,
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "text_encoder/config.json",
    "text_encoder/model.onnx",
    "unet/config.json",
    "unet/model.onnx",
    "vae_encoder/model.onnx",
    "vae_decoder/config.json",
    "vae_decoder/model.onnx",
];

/// The largest external weight file (`model.onnx_data`) a model may have: a float32 SDXL-sized U-Net is
/// about 10 GB.
const MAX_EXTERNAL_BYTES: u64 = 16 << 30;

/// The largest JSON file of a folder that is read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Whether `dir` is a diffusers-layout folder (it has `model_index.json`).
pub fn is_folder(dir: &Path) -> bool {
    dir.join(MODEL_INDEX).is_file()
}

/// What a diffusers folder adds to a model set.
pub(crate) struct Extras {
    pub scheduler: SchedulerConfig,
    pub tokenizer: tokenizer::ClipTokenizer,
    pub text_encoder: OnnxModel,
    /// The U-Net's inputs, in the order the model declares them.
    unet_inputs: Vec<UNetInput>,
    /// The VAE encoder's output: the distribution's parameters (mean then log-variance on the channel
    /// axis, optimum's `latent_parameters`) or an already drawn sample (older exports' `latent_sample`).
    encoder_gives_parameters: bool,
    /// The guidance-scale embedding width of an LCM-distilled U-Net (`timestep_cond`), when it has one.
    time_cond_dim: Option<usize>,
}

/// One input of a diffusers U-Net.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UNetInput {
    Sample,
    /// The timestep, as a vector of the batch (`rank1`) or a scalar.
    Timestep {
        rank1: bool,
    },
    EncoderHiddenStates,
    /// An LCM U-Net's guidance embedding [batch, time_cond_dim].
    TimestepCond,
}

/// The models and description of a folder, ready to become a [`crate::model_set::ModelSet`].
pub(crate) struct Opened {
    pub manifest: Manifest,
    pub encoder: OnnxModel,
    pub decoder: OnnxModel,
    pub unet: OnnxModel,
    pub extras: Extras,
}

/// Reads `dir/<part>/<file>` as JSON (size-limited), naming the file in errors.
fn read_json(dir: &Path, part: &str) -> Result<Value> {
    let path = dir.join(part);
    let bytes = crate::files::read_regular(&path, MAX_CONFIG_BYTES, "diffusers config", "missing from the folder")?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::model(format!("{}: not valid JSON ({})", quote_path(&path), clip(&e.to_string()))))
}

/// A whole number in `json[key]` within `range`, or `default` when absent.
fn int_field(
    json: &Value,
    key: &str,
    default: Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    file: &str,
) -> Result<u64> {
    let v = match json.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| Error::model(format!("{file}: {key} is missing")))?,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::model(format!("{file}: {key} is {}, not a whole number", clip(&v.to_string()))))?,
    };
    if !range.contains(&v) {
        return Err(Error::model(format!("{file}: {key} is {v}, out of range {}..={}", range.start(), range.end())));
    }
    Ok(v)
}

/// A finite number in `json[key]`, or `default` when absent.
fn float_field(json: &Value, key: &str, default: f64, file: &str) -> Result<f64> {
    match json.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Error::model(format!("{file}: {key} is {}, not a finite number", clip(&v.to_string())))),
    }
}

/// The U-Net's `sample_size`: a number, or [height, width].
fn sample_size(unet: &Value) -> Result<(u64, u64)> {
    const FILE: &str = "unet/config.json";
    match unet.get("sample_size") {
        Some(Value::Array(a)) if a.len() == 2 => {
            let side = |v: &Value| {
                v.as_u64()
                    .filter(|s| (1..=1024).contains(s))
                    .ok_or_else(|| Error::model(format!("{FILE}: sample_size {} is not a size", clip(&v.to_string()))))
            };
            Ok((side(&a[0])?, side(&a[1])?))
        }
        _ => {
            let s = int_field(unet, "sample_size", None, 1..=1024, FILE)?;
            Ok((s, s))
        }
    }
}

/// Loads one model of the folder: `dir/<part>/model.onnx`, read with the size limit, its session made
/// with the names the model itself declares (checked by the caller against the layout).
fn load(dir: &Path, part: &str, provider: Option<Provider>) -> Result<OnnxModel> {
    let path = dir.join(part).join("model.onnx");
    let t = std::time::Instant::now();
    let what = format!("{part} ({part}/model.onnx)");
    let external = dir.join(part).join("model.onnx_data");
    let model = if external.exists() {
        // Weights over protobuf's 2 GB limit (a float32 SD U-Net) sit in model.onnx_data beside the graph:
        // ONNX Runtime reads both from the folder. Both must be regular files of sane sizes first.
        for (f, max) in [(&path, crate::limits::MAX_MODEL_BYTES), (&external, MAX_EXTERNAL_BYTES)] {
            let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
            if !meta.is_file() || meta.len() > max {
                return Err(Error::model(format!("{}: not a regular file of at most {} bytes", quote_path(f), max)));
            }
        }
        OnnxModel::create_as_declared(crate::runtime::ModelSource::File(&path), what.clone(), provider)?
    } else {
        let bytes =
            crate::files::read_regular(&path, crate::limits::MAX_MODEL_BYTES, "ONNX model", "missing from the folder")?;
        OnnxModel::create_as_declared(crate::runtime::ModelSource::Bytes(&bytes), what.clone(), provider)?
    };
    crate::log_at!(
        crate::log::Level::Info,
        "{what}: read and session made in {:.0} ms{}",
        t.elapsed().as_secs_f64() * 1e3,
        if external.exists() { " (weights in model.onnx_data)" } else { "" }
    );
    Ok(model)
}

fn is_float(t: &TensorInfo) -> bool {
    use ort::value::TensorElementType as T;
    matches!(t.ty, Some(T::Float32 | T::Float16))
}

fn is_int(t: &TensorInfo) -> bool {
    use ort::value::TensorElementType as T;
    matches!(t.ty, Some(T::Int32 | T::Int64))
}

/// The error for a model whose interface does not fit the layout.
fn mismatch(part: &str, what: String, ins: &[TensorInfo], outs: &[TensorInfo]) -> Error {
    let list = |v: &[TensorInfo]| v.iter().map(|t| format!("{}: {:?} {:?}", t.name, t.ty, t.shape)).collect::<Vec<_>>();
    Error::model(clip(&format!(
        "{part}/model.onnx does not have the interface of the optimum layout: {what} (inputs {:?}, outputs {:?})",
        list(ins),
        list(outs)
    )))
}

fn tensor_specs(v: &[TensorInfo]) -> Vec<TensorSpec> {
    v.iter().map(|t| TensorSpec { name: t.name.clone(), shape: t.shape.clone() }).collect()
}

fn model_file(kind: &str, part: &str, model: &OnnxModel) -> ModelFile {
    let (ins, outs) = model.interface();
    ModelFile {
        kind: kind.into(),
        file: format!("{part}/model.onnx"),
        sha256: String::new(),
        inputs: tensor_specs(&ins),
        outputs: tensor_specs(&outs),
    }
}

/// Opens the diffusers folder `dir`: reads its JSON files, tokenizer and scheduler, loads the four models
/// (the text encoder on a thread of its own), checks each model's interface against the layout and derives
/// the manifest.
pub(crate) fn open(dir: &Path, provider: Option<Provider>) -> Result<Opened> {
    let index = read_json(dir, MODEL_INDEX)?;
    if !index.is_object() {
        return Err(Error::model(format!("{}: not a JSON object", quote_path(&dir.join(MODEL_INDEX)))));
    }
    if index.get("text_encoder_2").is_some_and(|v| !v.is_null()) {
        return Err(Error::Unsupported(format!(
            "{}: a pipeline with two text encoders (Stable Diffusion XL and later) is not supported; \
             Stable Diffusion 1.x / 2.x, SD-Turbo and LCM folders are",
            quote_path(dir)
        )));
    }
    let scheduler_path = dir.join("scheduler/scheduler_config.json");
    let scheduler_text = crate::files::read_regular(
        &scheduler_path,
        MAX_CONFIG_BYTES,
        "scheduler config",
        "missing from the folder (scheduler/scheduler_config.json names the scheduler)",
    )?;
    let scheduler_text = String::from_utf8(scheduler_text)
        .map_err(|_| Error::model(format!("{}: not UTF-8", quote_path(&scheduler_path))))?;
    let scheduler = SchedulerConfig::parse(&scheduler_text).map_err(|e| prefixed(e, &scheduler_path))?;
    // The folder's own scheduler must run: settings that only show when a run is made (PNDM's PRK steps, ...)
    // are refused at open, not at the first generation.
    crate::sampler::discrete::build(&scheduler, SamplerKind::Auto { eta: 0.0 }, 10, 1.0)
        .map_err(|e| prefixed(e, &scheduler_path))?;
    let tokenizer = tokenizer::ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
    let unet_cfg = read_json(dir, "unet/config.json")?;
    let vae_cfg = read_json(dir, "vae_decoder/config.json")?;
    let text_cfg = read_json(dir, "text_encoder/config.json")?;

    let (h, w) = sample_size(&unet_cfg)?;
    let channels = int_field(&unet_cfg, "in_channels", Some(4), 1..=64, "unet/config.json")?;
    let blocks = match vae_cfg.get("block_out_channels") {
        Some(Value::Array(a)) if (1..=8).contains(&a.len()) => a.len() as u32,
        other => {
            return Err(Error::model(format!(
                "vae_decoder/config.json: block_out_channels is {}, not a list of 1 to 8 widths",
                clip(&other.map(Value::to_string).unwrap_or_else(|| "missing".into()))
            )))
        }
    };
    let factor = 1u64 << (blocks - 1); // each block but the last halves the size
    let latent_channels = int_field(&vae_cfg, "latent_channels", Some(4), 1..=64, "vae_decoder/config.json")?;
    if latent_channels != channels {
        return Err(Error::model(format!(
            "the U-Net takes {channels} channels (unet/config.json in_channels) but the VAE makes {latent_channels} \
             (vae_decoder/config.json latent_channels): an inpainting or other special U-Net is not supported"
        )));
    }
    let scaling = float_field(&vae_cfg, "scaling_factor", 0.18215, "vae_decoder/config.json")?;
    let shift = float_field(&vae_cfg, "shift_factor", 0.0, "vae_decoder/config.json")?;
    if scaling <= 0.0 {
        return Err(Error::model(format!("vae_decoder/config.json: scaling_factor is {scaling}, must be > 0")));
    }
    let out_channels = int_field(&vae_cfg, "out_channels", Some(3), 3..=3, "vae_decoder/config.json")?;
    let width = int_field(&text_cfg, "hidden_size", None, 1..=16384, "text_encoder/config.json")?;
    let (img_h, img_w) = (h * factor, w * factor);
    if img_h > crate::image::MAX_IMAGE_SIDE as u64 || img_w > crate::image::MAX_IMAGE_SIDE as u64 {
        return Err(Error::model(format!("the folder's images would be {img_w}x{img_h}: too large")));
    }

    let (text_encoder, rest) = std::thread::scope(|scope| {
        let text = std::thread::Builder::new()
            .name("mirage-load".into())
            .spawn_scoped(scope, || load(dir, "text_encoder", provider))
            .ok();
        let rest = (|| -> Result<_> {
            Ok((load(dir, "unet", provider)?, load(dir, "vae_encoder", provider)?, load(dir, "vae_decoder", provider)?))
        })();
        let text = match text {
            Some(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => load(dir, "text_encoder", provider),
        };
        (text, rest)
    });
    let (unet, encoder, decoder) = rest?;
    let text_encoder = text_encoder?;

    // The text encoder: input_ids [batch, tokens] (int32 or int64) -> last_hidden_state [batch, tokens, width].
    let (ins, outs) = text_encoder.interface();
    let tokens = tokenizer.context_len() as i64;
    if ins.len() != 1
        || ins[0].name != "input_ids"
        || !is_int(&ins[0])
        || outs.first().is_none_or(|o| o.name != "last_hidden_state" || !is_float(o))
    {
        return Err(mismatch(
            "text_encoder",
            "one integer input input_ids and a float last_hidden_state first".into(),
            &ins,
            &outs,
        ));
    }
    if outs[0].shape.len() != 3 || ![-1, width as i64].contains(&outs[0].shape[2]) {
        return Err(mismatch("text_encoder", format!("last_hidden_state [batch, tokens, {width}]"), &ins, &outs));
    }

    // The U-Net: sample [b, C, h, w], timestep [b] or [], encoder_hidden_states [b, tokens, width]
    // (+ timestep_cond [b, d] for LCM) -> out_sample [b, C, h, w].
    let (ins, outs) = unet.interface();
    let mut unet_inputs = Vec::new();
    let mut time_cond_dim = None;
    for t in &ins {
        let input = match t.name.as_str() {
            "sample" if is_float(t) && t.shape.len() == 4 => UNetInput::Sample,
            "timestep" if (is_float(t) || is_int(t)) && t.shape.len() <= 1 => {
                UNetInput::Timestep { rank1: t.shape.len() == 1 }
            }
            "encoder_hidden_states" if is_float(t) && t.shape.len() == 3 => UNetInput::EncoderHiddenStates,
            "timestep_cond" if is_float(t) && t.shape.len() == 2 => {
                let d = int_field(&unet_cfg, "time_cond_proj_dim", None, 1..=4096, "unet/config.json")?;
                time_cond_dim = Some(d as usize);
                UNetInput::TimestepCond
            }
            "text_embeds" | "time_ids" => return Err(Error::Unsupported(
                "unet/model.onnx takes text_embeds and time_ids: a Stable Diffusion XL U-Net, which is not supported"
                    .into(),
            )),
            _ => {
                return Err(mismatch(
                    "unet",
                    format!(
                        "input {:?} is not one of sample, timestep, encoder_hidden_states, timestep_cond",
                        clip(&t.name)
                    ),
                    &ins,
                    &outs,
                ))
            }
        };
        if unet_inputs.contains(&input)
            || (matches!(input, UNetInput::Timestep { .. })
                && unet_inputs.iter().any(|i| matches!(i, UNetInput::Timestep { .. })))
        {
            return Err(mismatch("unet", format!("input {:?} appears twice", clip(&t.name)), &ins, &outs));
        }
        unet_inputs.push(input);
    }
    for need in [UNetInput::Sample, UNetInput::EncoderHiddenStates] {
        if !unet_inputs.contains(&need) {
            return Err(mismatch("unet", format!("no {need:?} input"), &ins, &outs));
        }
    }
    if !unet_inputs.iter().any(|i| matches!(i, UNetInput::Timestep { .. })) {
        return Err(mismatch("unet", "no timestep input".into(), &ins, &outs));
    }
    if outs.is_empty() || !is_float(&outs[0]) || outs[0].shape.len() != 4 {
        return Err(mismatch("unet", "a float output [batch, channels, height, width] first".into(), &ins, &outs));
    }

    // The VAE: encoder sample -> latent_parameters [b, 2C, h, w] or latent_sample [b, C, h, w]; decoder
    // latent_sample -> sample.
    let (ins, outs) = encoder.interface();
    let encoder_gives_parameters = match outs.first().map(|o| o.name.as_str()) {
        Some("latent_parameters") => true,
        Some("latent_sample") => false,
        _ => return Err(mismatch("vae_encoder", "an output latent_parameters or latent_sample".into(), &ins, &outs)),
    };
    if ins.len() != 1 || !is_float(&ins[0]) || ins[0].shape.len() != 4 {
        return Err(mismatch("vae_encoder", "one float input [batch, 3, height, width]".into(), &ins, &outs));
    }
    let (ins, outs) = decoder.interface();
    if ins.len() != 1 || !is_float(&ins[0]) || ins[0].shape.len() != 4 || outs.is_empty() || !is_float(&outs[0]) {
        return Err(mismatch(
            "vae_decoder",
            "one float input latent_sample and a float output sample".into(),
            &ins,
            &outs,
        ));
    }

    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "diffusers".into());
    let c = channels as usize;
    let manifest = Manifest {
        format_version: crate::manifest::FORMAT_VERSION,
        name: clip(&name),
        image: ImageSpec {
            width: img_w as u32,
            height: img_h as u32,
            channels: out_channels as u32,
            mean: 0.5,
            std: 0.5,
        },
        vae: Some(VaeSpec {
            latent_shape: [channels as u32, h as u32, w as u32],
            encoder: model_file("vae_encoder", "vae_encoder", &encoder),
            decoder: model_file("vae_decoder", "vae_decoder", &decoder),
            architecture: Value::Null,
            prior: None,
        }),
        unet: Some(UNetSpec {
            model: model_file("unet", "unet", &unet),
            space: DiffusionSpace::Latent,
            // Not used: a diffusers folder's noise levels come from its scheduler (ModelSet::sampler).
            schedule: crate::schedule::CosineSchedule::default(),
            // The U-Net works on scaling_factor * (z - shift_factor).
            data_mean: vec![shift as f32; c],
            data_std: vec![(1.0 / scaling) as f32; c],
            architecture: Value::Null,
            text: Some(TextSpec {
                encoder: "text_encoder".into(),
                encoder_sha256: String::new(),
                width: width as u32,
                tokens: tokens as u32,
                // diffusers' StableDiffusionPipeline default; few-step models (SD-Turbo, LCM) want 0 or 1.
                guidance: 7.5,
            }),
        }),
        training: serde_json::json!({ "layout": "diffusers (optimum ONNX export)", "scheduler": scheduler.class_name() }),
    };
    Ok(Opened {
        manifest,
        encoder,
        decoder,
        unet,
        extras: Extras { scheduler, tokenizer, text_encoder, unet_inputs, encoder_gives_parameters, time_cond_dim },
    })
}

fn prefixed(e: Error, path: &Path) -> Error {
    match e {
        Error::InvalidModel(m) | Error::InvalidArgument(m) => Error::model(format!("{}: {m}", quote_path(path))),
        Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", quote_path(path))),
        other => other,
    }
}

impl Extras {
    /// Token embeddings [n, tokens, width] and pooled embeddings [n, width] of `prompts` (the pooled ones
    /// are the text encoder's pooler_output when it has one, else the end token's embedding; the U-Net does
    /// not use them, walks between prompts interpolate them).
    pub(crate) fn encode_prompts(&self, prompts: &[&str], width: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let l = self.tokenizer.context_len();
        let mut ids = Vec::with_capacity(prompts.len() * l);
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?.into_iter().map(i64::from));
        }
        let n = prompts.len();
        let out = self.text_encoder.run(vec![Feed::I64 { shape: vec![n as i64, l as i64], data: ids }])?;
        let mut out = out.into_iter();
        let hidden = out.next().map(|o| o.data).unwrap_or_default();
        if hidden.len() != n * l * width {
            return Err(Error::Inference(format!(
                "text_encoder returned {} values for {n} prompts, expected {}",
                hidden.len(),
                n * l * width
            )));
        }
        let pooled = match out.next().filter(|o| o.data.len() == n * width) {
            Some(o) => o.data,
            None => (0..n).flat_map(|k| hidden[(k * l + l - 1) * width..(k * l + l) * width].to_vec()).collect(),
        };
        Ok((hidden, pooled))
    }

    /// The U-Net's feeds, in its declared order: `x` [n, C, h, w] (already scaled), the timestep (one per
    /// sample, all equal: a scalar input gets the first), the token embeddings [n, L, W], and for an LCM
    /// U-Net the guidance embedding of `guidance`.
    pub(crate) fn unet_feeds(
        &self,
        x: Vec<f32>,
        shape: Vec<i64>,
        levels: &[f32],
        context: Vec<f32>,
        context_shape: Vec<i64>,
        guidance: f32,
    ) -> Vec<Feed> {
        let n = shape[0];
        // Each input appears once (checked at open): the big buffers are moved, not copied.
        let (mut x, mut context) = (Some(x), Some(context));
        self.unet_inputs
            .iter()
            .map(|i| match *i {
                UNetInput::Sample => Feed::F32 { shape: shape.clone(), data: x.take().unwrap_or_default() },
                UNetInput::Timestep { rank1: true } => Feed::F32 { shape: vec![n], data: levels.to_vec() },
                UNetInput::Timestep { rank1: false } => Feed::F32 { shape: vec![], data: vec![levels[0]] },
                UNetInput::EncoderHiddenStates => {
                    Feed::F32 { shape: context_shape.clone(), data: context.take().unwrap_or_default() }
                }
                UNetInput::TimestepCond => {
                    let d = self.time_cond_dim.unwrap_or(0);
                    let e = guidance_embedding(guidance - 1.0, d);
                    Feed::F32 { shape: vec![n, d as i64], data: (0..n).flat_map(|_| e.iter().copied()).collect() }
                }
            })
            .collect()
    }

    /// Whether the U-Net takes an LCM guidance embedding (then guidance steers it, not a second batch).
    pub(crate) fn embeds_guidance(&self) -> bool {
        self.time_cond_dim.is_some()
    }

    /// The latent mean [n, C, h, w] and log-variance (zeros for an export that gives only a sample) from
    /// the encoder's first output.
    pub(crate) fn split_encoding(&self, out: Vec<f32>, n: usize, latent_len: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.encoder_gives_parameters {
            if out.len() != 2 * n * latent_len {
                return Err(Error::Inference(format!(
                    "vae_encoder returned {} values, expected {}",
                    out.len(),
                    2 * n * latent_len
                )));
            }
            let (mut mean, mut logvar) = (Vec::with_capacity(n * latent_len), Vec::with_capacity(n * latent_len));
            for k in 0..n {
                let row = &out[2 * k * latent_len..2 * (k + 1) * latent_len];
                mean.extend_from_slice(&row[..latent_len]);
                // diffusers clamps the log-variance to [-30, 20] before use.
                logvar.extend(row[latent_len..].iter().map(|v| v.clamp(-30.0, 20.0)));
            }
            Ok((mean, logvar))
        } else {
            if out.len() != n * latent_len {
                return Err(Error::Inference(format!(
                    "vae_encoder returned {} values, expected {}",
                    out.len(),
                    n * latent_len
                )));
            }
            Ok((out, vec![0.0; n * latent_len]))
        }
    }
}

/// diffusers' guidance-scale embedding of LCM U-Nets (`get_guidance_scale_embedding`): `w * 1000` through
/// sinusoids of `dim` frequencies, sines then cosines (zero-padded to an odd `dim`). In f32, as diffusers
/// computes it (f64 here moved the latents by 1e-6 relative).
fn guidance_embedding(w: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let w = w * 1000.0;
    let step = if half > 1 { 10000f32.ln() / (half as f32 - 1.0) } else { 0.0 };
    let args: Vec<f32> = (0..half).map(|i| w * (i as f32 * -step).exp()).collect();
    let mut e: Vec<f32> = args.iter().map(|a| a.sin()).collect();
    e.extend(args.iter().map(|a| a.cos()));
    e.resize(dim, 0.0);
    e
}
