//! `models/<set>/manifest.json`: what a model set contains and how to feed it.
//!
//! The trainer writes it (`export`), the runtime reads and validates it before it opens any ONNX file:
//! format version, model kinds, file names, input/output names and shapes, pixel normalisation, latent
//! shape, and the sha256 of every ONNX file (checked at load, so a corrupt or swapped file is refused).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::files::read_regular;
use crate::limits::{clip, quote, quote_path, MAX_ITEM_VALUES, MAX_MANIFEST_BYTES, MAX_MODEL_BYTES};

/// The manifest format this build reads and writes. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// The longest set name or tensor name a manifest may give (they appear in messages).
pub const MAX_NAME_CHARS: usize = 128;

/// The file name of a model set's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A whole model set: `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Short name of the set, e.g. "fashion".
    pub name: String,
    /// The images this set works on (the host-facing size, before any padding the encoder does).
    pub image: ImageSpec,
    /// The variational autoencoder, when the set has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<VaeSpec>,
    /// The diffusion denoiser, when the set has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unet: Option<UNetSpec>,
    /// Free-form facts about how the set was made (data, command, metrics). Not read by the runtime.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub training: serde_json::Value,
}

/// Pixel layout and normalisation of the set's images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    /// 1 (grey), 3 (RGB) or 4 (RGBA).
    pub channels: u32,
    /// Model value = (pixel / 255 - mean) / std. mean = std = 0.5 maps [0, 255] to [-1, 1].
    pub mean: f32,
    pub std: f32,
}

/// The VAE: an encoder (image -> mean, log-variance) and a decoder (latent -> image).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaeSpec {
    /// Latent tensor shape without the batch: [channels, height, width].
    pub latent_shape: [u32; 3],
    /// kind "vae_encoder": input [N, C, H, W] image; outputs mean and log-variance, both [N, *latent_shape].
    pub encoder: ModelFile,
    /// kind "vae_decoder": input [N, *latent_shape]; output [N, C, H, W] image in about [-1, 1].
    pub decoder: ModelFile,
    /// The architecture the trainer used (opaque to the runtime; the exporter and trainer read it).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub architecture: serde_json::Value,
    /// Whether decoding points of the prior N(0, I) is meant to give images (`"prior": "sampleable"`,
    /// a VAE trained and measured for it) or not (absent: the latent is an autoencoder's, to be sampled by
    /// diffusion; random latents decode to blobs). Optional, so older manifests load unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
}

/// What the VAE's latent prior is good for (see [`VaeSpec::prior`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Prior {
    /// N(0, I) latents decode to images of the data set (measured: see the set's model card).
    Sampleable,
}

/// Where the diffusion model works.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiffusionSpace {
    /// On the VAE's latents (the set must have a VAE): generation ends with a decode.
    Latent,
    /// On normalised pixels (the Keras DDIM setting): no VAE needed.
    Pixel,
}

/// The U-Net denoiser: predicts the noise in a noisy sample, given the noise level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UNetSpec {
    /// kind "unet": inputs "x" [N, C, h, w] (normalised as below) and "noise_variance" [N, 1]
    /// (= noise_rate(t)^2, the level the lecture's network is conditioned on); output "eps" [N, C, h, w].
    pub model: ModelFile,
    pub space: DiffusionSpace,
    pub schedule: crate::schedule::CosineSchedule,
    /// Per-channel mean and standard deviation of the training data in `space`, measured by the trainer:
    /// the U-Net sees (x - mean) / std, so that the data has unit variance as the schedule assumes.
    pub data_mean: Vec<f32>,
    pub data_std: Vec<f32>,
    /// The architecture the trainer used (opaque to the runtime).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub architecture: serde_json::Value,
    /// Present when the U-Net is text-conditioned: then its model has two more inputs, "context"
    /// [N, tokens, width] (the text encoder's token embeddings) and "pooled" [N, width].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSpec>,
}

/// The text encoder a conditioned U-Net was trained with, and how prompts are fed to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The encoder's directory (text_encoder.onnx, tokenizer.json, encoder.json), relative to the set's
    /// directory, e.g. "../minilm": one encoder serves several sets and is made by the setup, not shipped.
    pub encoder: String,
    /// sha256 of its text_encoder.onnx: the export is byte-deterministic, so a different file is a different
    /// encoder, which the U-Net was not trained with (refused at load).
    pub encoder_sha256: String,
    /// Embedding width (MiniLM-L6: 384).
    pub width: u32,
    /// Tokens per prompt, [CLS] and [SEP] included: prompts are padded or truncated to this.
    pub tokens: u32,
    /// The classifier-free guidance scale the set was tuned for (the CLI's and the C API's default).
    pub guidance: f32,
}

/// One ONNX file of the set and its interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// What the file is: "vae_encoder", "vae_decoder", ...
    pub kind: String,
    /// File name relative to the set's directory (no path separators).
    pub file: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Name and shape of a model input or output; -1 marks a dynamic dimension (the batch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub fn new(name: &str, shape: &[i64]) -> Self {
        TensorSpec { name: name.to_string(), shape: shape.to_vec() }
    }
}

/// Lower-case hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// Reads and validates `dir/manifest.json` (structure only; files are checked by [`Manifest::read_model`]).
    pub fn load(dir: &Path) -> Result<Manifest> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound { path: dir.to_path_buf(), reason: "no such directory".into() });
        }
        let path = dir.join(MANIFEST_FILE);
        let bytes = read_regular(&path, MAX_MANIFEST_BYTES, MANIFEST_FILE, "the model set has no manifest.json")?;
        let named = |m: String| Error::InvalidModel(format!("{}: {m}", quote_path(&path)));
        let text = std::str::from_utf8(&bytes).map_err(|e| named(format!("not UTF-8 text ({e})")))?;
        Self::parse(text).map_err(|e| match e {
            Error::InvalidModel(m) => named(m),
            other => other,
        })
    }

    /// Parses and validates manifest JSON.
    pub fn parse(text: &str) -> Result<Manifest> {
        // A key given twice would be read as its last value by one reader and its first by another: refused.
        let not_json = |e: serde_json::Error| Error::model(format!("not valid JSON: {}", clip(&e.to_string())));
        serde_json::from_str::<NoDuplicateKeys>(text).map_err(not_json)?;
        // Read the version first so that a future format gets a clear message, not a field error.
        let raw: serde_json::Value = serde_json::from_str(text).map_err(not_json)?;
        match raw.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(Error::model(format!(
                    "manifest format_version {v} is not supported by this build (it reads version {FORMAT_VERSION})"
                )))
            }
            None => return Err(Error::model("manifest has no numeric format_version")),
        }
        let m: Manifest =
            serde_json::from_value(raw).map_err(|e| Error::model(format!("manifest: {}", clip(&e.to_string()))))?;
        // Validation messages quote the manifest's own values: clipped, whatever their size.
        m.validate().map_err(|e| match e {
            Error::InvalidModel(msg) => Error::InvalidModel(clip(&msg)),
            other => other,
        })?;
        Ok(m)
    }

    /// Checks the invariants the runtime relies on.
    pub fn validate(&self) -> Result<()> {
        // Every name ends up in messages and logs: a sane length, so that they stay short.
        if self.name.is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(Error::model(format!("name {} must have 1..={MAX_NAME_CHARS} characters", quote(&self.name))));
        }
        let img = &self.image;
        if !(1..=4096).contains(&img.width) || !(1..=4096).contains(&img.height) {
            return Err(Error::model(format!("image size {}x{} out of range", img.width, img.height)));
        }
        if ![1, 3, 4].contains(&img.channels) {
            return Err(Error::model(format!("image channels must be 1, 3 or 4, not {}", img.channels)));
        }
        if !(img.std.is_finite() && img.std > 0.0 && img.mean.is_finite()) {
            return Err(Error::model("image normalisation mean/std must be finite, std > 0"));
        }
        if let Some(vae) = &self.vae {
            let values = vae.latent_shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
            if vae.latent_shape.iter().any(|&d| d == 0 || d > 4096) || values.is_none_or(|v| v > MAX_ITEM_VALUES) {
                return Err(Error::model(format!(
                    "latent_shape {:?} out of range: each dimension 1..=4096, at most {MAX_ITEM_VALUES} values in all",
                    vae.latent_shape
                )));
            }
            let img_shape = [-1, img.channels as i64, img.height as i64, img.width as i64];
            let lat = vae.latent_shape;
            let lat_shape = [-1, lat[0] as i64, lat[1] as i64, lat[2] as i64];
            check_file(&vae.encoder, "vae_encoder", &[&img_shape], &[&lat_shape, &lat_shape])?;
            check_file(&vae.decoder, "vae_decoder", &[&lat_shape], &[&img_shape])?;
        }
        if let Some(unet) = &self.unet {
            unet.schedule.validate().map_err(|e| Error::model(format!("unet: {e}")))?;
            let shape: Vec<i64> = match (unet.space, &self.vae) {
                (DiffusionSpace::Latent, Some(vae)) => vae.latent_shape.iter().map(|&d| d as i64).collect(),
                (DiffusionSpace::Latent, None) => {
                    return Err(Error::model("unet works in latent space but the set has no vae"));
                }
                (DiffusionSpace::Pixel, _) => vec![img.channels as i64, img.height as i64, img.width as i64],
            };
            let c = shape[0] as usize;
            if unet.data_mean.len() != c || unet.data_std.len() != c {
                return Err(Error::model(format!("unet: data_mean and data_std need {c} values (one per channel)")));
            }
            if unet.data_mean.iter().chain(&unet.data_std).any(|v| !v.is_finite())
                || unet.data_std.iter().any(|&v| v <= 0.0)
            {
                return Err(Error::model("unet: data_mean must be finite and data_std finite and positive"));
            }
            let x = [&[-1][..], &shape[..]].concat();
            match &unet.text {
                None => check_file(&unet.model, "unet", &[&x, &[-1, 1]], &[&x])?,
                Some(t) => {
                    if !(1..=4096).contains(&t.width) || !(2..=512).contains(&t.tokens) {
                        return Err(Error::model(format!(
                            "unet.text: width {} / tokens {} out of range",
                            t.width, t.tokens
                        )));
                    }
                    // The same limit as every call's: a default the pipeline would refuse is refused here,
                    // at load, not at the first generation.
                    if crate::limits::check_guidance(t.guidance).is_err() {
                        return Err(Error::model(format!(
                            "unet.text.guidance is {}, must be in [0, {}]",
                            t.guidance,
                            crate::limits::MAX_GUIDANCE
                        )));
                    }
                    if t.encoder.is_empty() || t.encoder.len() > 4096 || t.encoder_sha256.len() != 64 {
                        return Err(Error::model("unet.text: encoder directory and its 64-digit sha256 are required"));
                    }
                    let (l, w) = (t.tokens as i64, t.width as i64);
                    check_file(&unet.model, "unet", &[&x, &[-1, 1], &[-1, l, w], &[-1, w]], &[&x])?;
                }
            }
        }
        Ok(())
    }

    /// Reads one model file of the set and checks its sha256 against the manifest.
    pub fn read_model(dir: &Path, file: &ModelFile) -> Result<Vec<u8>> {
        let path: PathBuf = dir.join(&file.file);
        read_checked(&path, MAX_MODEL_BYTES, &file.sha256, &file.kind, MANIFEST_FILE)
    }
}

/// Reads the regular file `path` (at most `max_bytes`) and checks it against the `sha256` that `listed_in`
/// gives for it: the one way every model-set file is read (ONNX models, the text encoder's files).
pub fn read_checked(path: &Path, max_bytes: u64, sha256: &str, what: &str, listed_in: &str) -> Result<Vec<u8>> {
    read_checked_with(path, max_bytes, sha256, what, listed_in, true)
}

/// [`read_checked`]; `look_up` false when the caller has just found no digest recorded for the file.
fn read_checked_with(
    path: &Path,
    max_bytes: u64,
    sha256: &str,
    what: &str,
    listed_in: &str,
    look_up: bool,
) -> Result<Vec<u8>> {
    let cache = crate::runtime::digest_cache_dir();
    let before = cache.and_then(|_| crate::digests::Stamp::of(path));
    let bytes = read_regular(path, max_bytes, what, &format!("the {what} listed in {listed_in}"))?;
    // A digest recorded for this very file, unchanged since (before and after the read): no need to hash.
    let unchanged = || before.is_some() && crate::digests::Stamp::of(path) == before;
    if let (Some(dir), Some(st), true) = (cache, &before, look_up) {
        if crate::digests::lookup(dir, path, st).is_some_and(|d| d.eq_ignore_ascii_case(sha256)) && unchanged() {
            crate::log_at!(crate::log::Level::Debug, "{what}: sha256 taken from the digest cache");
            return Ok(bytes);
        }
    }
    let got = sha256_hex(&bytes);
    if got != sha256 {
        return Err(Error::model(format!(
            "{}: sha256 mismatch ({listed_in} {sha256}, file {got}): the {what} is corrupt or from another set",
            quote_path(path)
        )));
    }
    if let (Some(dir), Some(st)) = (cache, &before) {
        if unchanged() {
            crate::digests::store(dir, path, st, &got);
        }
    }
    Ok(bytes)
}

/// Checks the regular file `path` against `sha256` as [`read_checked`] does, without keeping its bytes: with
/// a load cache whose digest of this very file is recorded and unchanged ([`crate::digests`]), nothing is
/// read; otherwise the file is read and hashed.
pub fn verify_checked(path: &Path, max_bytes: u64, sha256: &str, what: &str, listed_in: &str) -> Result<()> {
    if vouched_stamp(path, max_bytes, sha256).is_some() {
        crate::log_at!(crate::log::Level::Debug, "{what}: sha256 taken from the digest cache (not read)");
        return Ok(());
    }
    read_checked_with(path, max_bytes, sha256, what, listed_in, false).map(drop)
}

/// The stamp of `path` when the load cache vouches for it without reading it: a regular file of at most
/// `max_bytes` whose recorded digest is `sha256` and which is unchanged since ([`crate::digests`]). A caller
/// that lets another reader (ONNX Runtime) read the file compares the stamp again afterwards.
pub fn vouched_stamp(path: &Path, max_bytes: u64, sha256: &str) -> Option<crate::digests::Stamp> {
    let dir = crate::runtime::digest_cache_dir()?;
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= max_bytes);
    let st = crate::digests::Stamp::of(path).filter(|_| regular)?;
    crate::digests::lookup(dir, path, &st).is_some_and(|d| d.eq_ignore_ascii_case(sha256)).then_some(st)
}

/// `make(ModelSource::File(path))` when the load cache vouches for `path` ([`vouched_stamp`]): mirage does not
/// read the file itself (ONNX Runtime does, or uses the session cache's graph of it), and checks once `make`
/// is done that it is still the file vouched for. None when it is not vouched for, or changed meanwhile (with a
/// warning): the caller then reads and checks it, as without the cache.
pub(crate) fn make_from_vouched<T>(
    path: &Path,
    max_bytes: u64,
    sha256: &str,
    make: impl FnOnce(crate::runtime::ModelSource) -> Result<T>,
) -> Result<Option<T>> {
    let Some(stamp) = vouched_stamp(path, max_bytes, sha256) else { return Ok(None) };
    let made = make(crate::runtime::ModelSource::File(path))?;
    crate::files::test_change_after_load(path);
    if crate::digests::Stamp::of(path) == Some(stamp) {
        return Ok(Some(made));
    }
    crate::log_at!(
        crate::log::Level::Warn,
        "{}: changed while it was loaded; reading it again",
        crate::limits::quote_path(path)
    );
    Ok(None)
}

/// Deserialises any JSON and refuses an object that names one key twice, at any depth.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<NoDuplicateKeys>()?;
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {} appears twice", quote(&key))));
            }
        }
        Ok(self)
    }
}

fn check_file(f: &ModelFile, kind: &str, inputs: &[&[i64]], outputs: &[&[i64]]) -> Result<()> {
    if f.kind != kind {
        return Err(Error::model(format!("expected a model of kind {kind}, found {:?}", f.kind)));
    }
    let long = f.file.len() > 255 || f.inputs.iter().chain(&f.outputs).any(|t| t.name.chars().count() > MAX_NAME_CHARS);
    if long {
        return Err(Error::model(format!(
            "{kind}: file names of 1..=255 bytes, tensor names of 1..={MAX_NAME_CHARS} characters"
        )));
    }
    if f.file.is_empty() || f.file.contains(['/', '\\']) || f.file == ".." {
        return Err(Error::model(format!("{kind}: file name {:?} must be a plain name inside the set", f.file)));
    }
    if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::model(format!("{kind}: sha256 must be 64 lower-case hex digits")));
    }
    let check = |what: &str, got: &[TensorSpec], want: &[&[i64]]| -> Result<()> {
        if got.len() != want.len() {
            return Err(Error::model(format!("{kind}: expected {} {what}, manifest lists {}", want.len(), got.len())));
        }
        for (t, w) in got.iter().zip(want) {
            if t.shape != *w {
                return Err(Error::model(format!(
                    "{kind}: {what} {:?} has shape {:?}, expected {:?} from the image and latent specs",
                    t.name, t.shape, w
                )));
            }
        }
        Ok(())
    };
    check("inputs", &f.inputs, inputs)?;
    check("outputs", &f.outputs, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let file = |kind: &str, i: Vec<TensorSpec>, o: Vec<TensorSpec>| ModelFile {
            kind: kind.into(),
            file: format!("{kind}.onnx"),
            sha256: "0".repeat(64),
            inputs: i,
            outputs: o,
        };
        Manifest {
            format_version: FORMAT_VERSION,
            name: "t".into(),
            image: ImageSpec { width: 28, height: 28, channels: 1, mean: 0.5, std: 0.5 },
            vae: Some(VaeSpec {
                latent_shape: [3, 8, 8],
                encoder: file(
                    "vae_encoder",
                    vec![TensorSpec::new("image", &[-1, 1, 28, 28])],
                    vec![TensorSpec::new("mean", &[-1, 3, 8, 8]), TensorSpec::new("logvar", &[-1, 3, 8, 8])],
                ),
                decoder: file(
                    "vae_decoder",
                    vec![TensorSpec::new("latent", &[-1, 3, 8, 8])],
                    vec![TensorSpec::new("image", &[-1, 1, 28, 28])],
                ),
                architecture: serde_json::Value::Null,
                prior: None,
            }),
            unet: None,
            training: serde_json::Value::Null,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        let text = serde_json::to_string_pretty(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn rejects_other_format_versions() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format_version"] = 2.into();
        let e = Manifest::parse(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("format_version 2"), "{e}");
    }

    #[test]
    fn rejects_mismatched_shapes_and_paths() {
        let mut m = sample();
        m.vae.as_mut().unwrap().decoder.outputs[0].shape = vec![-1, 3, 28, 28];
        assert!(m.validate().unwrap_err().to_string().contains("shape"));
        let mut m = sample();
        m.vae.as_mut().unwrap().encoder.file = "../x.onnx".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.vae.as_mut().unwrap().encoder.kind = "vae_decoder".into();
        assert!(m.validate().is_err());
    }

    /// A latent-space U-Net spec for [`sample`]'s 3x8x8 latents, text-conditioned (8 tokens) or not.
    fn unet_spec(text: Option<TextSpec>) -> UNetSpec {
        let x = vec![-1, 3, 8, 8];
        let mut inputs = vec![TensorSpec::new("x", &x), TensorSpec::new("noise_variance", &[-1, 1])];
        if text.is_some() {
            inputs.push(TensorSpec::new("context", &[-1, 8, 384]));
            inputs.push(TensorSpec::new("pooled", &[-1, 384]));
        }
        UNetSpec {
            model: ModelFile {
                kind: "unet".into(),
                file: "unet.onnx".into(),
                sha256: "0".repeat(64),
                inputs,
                outputs: vec![TensorSpec::new("eps", &x)],
            },
            space: DiffusionSpace::Latent,
            schedule: Default::default(),
            data_mean: vec![0.0; 3],
            data_std: vec![1.0; 3],
            architecture: serde_json::Value::Null,
            text,
        }
    }

    #[test]
    fn unet_spec_is_checked_against_the_latent_shape() {
        let mut m = sample();
        m.unet = Some(unet_spec(None));
        m.validate().unwrap();
        assert_eq!(Manifest::parse(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        let mut bad = m.clone();
        bad.unet.as_mut().unwrap().data_std = vec![1.0, 0.0, 1.0];
        assert!(bad.validate().is_err());
        let mut bad = m.clone();
        bad.unet.as_mut().unwrap().space = DiffusionSpace::Pixel; // 1x28x28 pixels, not 3x8x8 latents
        assert!(bad.validate().is_err());
        let mut bad = m;
        bad.vae = None;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_default_guidance_the_pipeline_would_refuse_is_refused_at_load() {
        let mut m = sample();
        let text = TextSpec {
            encoder: "../minilm".into(),
            encoder_sha256: "0".repeat(64),
            width: 384,
            tokens: 8,
            guidance: 3.0,
        };
        m.unet = Some(unet_spec(Some(text)));
        m.validate().unwrap();
        for (g, ok) in
            [(0.0, true), (crate::limits::MAX_GUIDANCE, true), (50.5, false), (100.0, false), (f32::NAN, false)]
        {
            m.unet.as_mut().unwrap().text.as_mut().unwrap().guidance = g;
            assert_eq!(m.validate().is_ok(), ok, "default guidance {g}");
        }
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("unet.text.guidance is NaN, must be in [0, 50]"), "{e}");
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth_and_huge_latents() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(Manifest::parse(&text).is_ok());
        let dup = text.replacen("\"name\":\"t\"", "\"name\":\"t\",\"name\":\"u\"", 1);
        let e = Manifest::parse(&dup).unwrap_err().to_string();
        assert!(e.contains("key \"name\" appears twice"), "{e}");
        let nested = text.replacen("\"width\":28", "\"width\":28,\"width\":29", 1);
        assert!(Manifest::parse(&nested).unwrap_err().to_string().contains("appears twice"));
        let mut m = sample();
        for shape in [[4096, 4096, 4096], [512, 512, 512], [4096, 4096, 5]] {
            m.vae.as_mut().unwrap().latent_shape = shape;
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains("latent_shape") && e.contains("values in all"), "{e}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Manifest::parse("{").is_err());
        assert!(Manifest::parse("{\"format_version\": 1}").is_err());
        assert!(Manifest::parse("[]").is_err());
    }
}
