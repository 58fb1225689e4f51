//! A model set opened from a directory: its manifest and one session per model (VAE encoder and decoder,
//! U-Net, text encoder), and what each model is fed: VAE encode (image -> mean, log-variance) and decode
//! (latent -> image), the U-Net's noise prediction, prompts -> text embeddings.
//!
//! All tensors here are in model space: NCHW f32, images normalised as the manifest says (about [-1, 1]).
//! Conversions from and to host pixels live in [`crate::image`], latent arithmetic in [`crate::latent`],
//! the diffusion loop in [`crate::pipeline`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::limits::{call_values, check_batch, check_finite, MAX_BATCH};
use crate::manifest::{DiffusionSpace, Manifest, ModelFile, TextSpec};
use crate::runtime::{ModelSource, Provider};
use crate::sampler::SamplerKind;
use crate::session::{Feed, OnnxModel};
use crate::text::{Precision, TextEncoder, TEXT_WIDTH};

/// Which model of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    VaeEncoder,
    VaeDecoder,
    UNet,
    TextEncoder,
}

impl ModelKind {
    /// The name manifests and messages use: "vae_encoder", "vae_decoder", "unet", "text_encoder".
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::VaeEncoder => "vae_encoder",
            ModelKind::VaeDecoder => "vae_decoder",
            ModelKind::UNet => "unet",
            ModelKind::TextEncoder => "text_encoder",
        }
    }
}

/// Where a set's files are read from while it is opened.
enum Files<'a> {
    /// A model-set directory (manifest.json, the ONNX files, the text encoder's directory).
    Dir(&'a Path),
    /// A one-file pack (from a file or the host's memory); `label` names it in messages.
    Pack { pack: &'a crate::pack::Pack<'a>, label: &'a Path },
}

/// The entry of a pack that holds a text-conditioned set's encoder files.
pub const PACK_TEXT_ENCODER: &str = "text_encoder/";

impl Files<'_> {
    /// One model file of the set, checked against the manifest's sha256.
    fn model(&self, spec: &ModelFile) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Files::Dir(dir) => Ok(Manifest::read_model(dir, spec)?.into()),
            Files::Pack { pack, label } => {
                let bytes = pack.entry(&spec.file)?;
                if pack.sha256_hex(&spec.file).as_deref() != Some(spec.sha256.as_str()) {
                    return Err(Error::model(format!(
                        "{}: the pack's {:?} is not the file manifest.json lists (sha256 differs)",
                        crate::limits::quote_path(label),
                        crate::limits::clip(&spec.file)
                    )));
                }
                Ok(bytes.into())
            }
        }
    }
}

/// Loads one model file of the set: sha256 checked against the manifest, names against its interface.
/// `tileable`: its convolutions rewritten to pad circularly ([`crate::tile`]).
fn load_model(files: &Files, spec: &ModelFile, provider: Option<Provider>, tileable: bool) -> Result<OnnxModel> {
    let t = std::time::Instant::now();
    let what = format!("{} ({}{})", spec.kind, spec.file, if tileable { ", tileable" } else { "" });
    // A directory's model file the load cache vouches for (its digest recorded, the file unchanged since) is
    // not read here: its optimized graph usually comes from the session cache, and otherwise ONNX Runtime
    // reads the file itself (the U-Net's 8 MB read took 4-13 ms of a start's main thread). It must still be
    // that file once the session exists. The tileable rewrite needs the bytes.
    if let (Files::Dir(dir), false) = (files, tileable) {
        let make = |source: ModelSource<'_>| make_model(source, spec, provider, Some(&spec.sha256), &what);
        let limit = crate::limits::MAX_MODEL_BYTES;
        if let Some(model) = crate::manifest::make_from_vouched(&dir.join(&spec.file), limit, &spec.sha256, make)? {
            crate::log_at!(
                crate::log::Level::Info,
                "{what}: the file vouched for by the load cache (read by ONNX Runtime), session made in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            return Ok(model);
        }
    }
    let bytes = files.model(spec)?;
    let read = t.elapsed();
    let bytes = if tileable { crate::tile::circular(&bytes)?.into() } else { bytes };
    // The bytes match the manifest's sha256 (checked above): their optimized graph may be cached. The
    // tileable rewrite makes other bytes, which are not.
    let verified = (!tileable).then_some(spec.sha256.as_str());
    let model = make_model(ModelSource::Bytes(&bytes), spec, provider, verified, &what)?;
    crate::log_at!(
        crate::log::Level::Info,
        "{what}: {:.1} MB read and checked in {:.0} ms, session made in {:.0} ms",
        bytes.len() as f64 / 1e6,
        read.as_secs_f64() * 1e3,
        (t.elapsed() - read).as_secs_f64() * 1e3
    );
    Ok(model)
}

/// The session of one model file of the set, its names and shapes checked against the manifest. `verified`:
/// the sha256 the source was checked against (or the load cache vouches for), so that its optimized graph
/// may come from the session cache.
fn make_model(
    source: ModelSource,
    spec: &ModelFile,
    provider: Option<Provider>,
    verified: Option<&str>,
    what: &str,
) -> Result<OnnxModel> {
    let names = |t: &[crate::manifest::TensorSpec]| t.iter().map(|t| t.name.clone()).collect();
    let in_shapes: Vec<&[i64]> = spec.inputs.iter().map(|t| t.shape.as_slice()).collect();
    let out_shapes: Vec<&[i64]> = spec.outputs.iter().map(|t| t.shape.as_slice()).collect();
    let (inputs, outputs) = (names(&spec.inputs), names(&spec.outputs));
    let shapes = Some((in_shapes.as_slice(), out_shapes.as_slice()));
    let cache = verified.map(|sha256| crate::runtime::CacheAs { sha256, prepack: true });
    OnnxModel::create_from(source, cache, what.to_string(), provider, inputs, outputs, shapes, "the manifest")
}

/// The sessions of tileable output: the U-Net and the VAE decoder with circular padding.
struct Tiled {
    unet: Option<OnnxModel>,
    decoder: Option<OnnxModel>,
}

/// Where an open set came from, for what it loads later (the tileable sessions).
enum Origin {
    Dir(PathBuf),
    PackFile(PathBuf),
    /// A host's buffer, not kept: nothing can be loaded later.
    Memory,
}

struct Vae {
    encoder: OnnxModel,
    decoder: OnnxModel,
}

/// The text encoder of a mirage text-to-image set.
enum Text {
    /// Made when the set was opened.
    Ready(Box<TextEncoder>),
    /// With the prompt cache ([`crate::prompt_cache`]): its files were checked when the set was opened; the
    /// session is made when a prompt first misses the cache (a failure is remembered and reported each time).
    Deferred(Box<DeferredText>),
}

struct DeferredText {
    dir: PathBuf,
    provider: Option<Provider>,
    expected_sha256: String,
    precision: Precision,
    made: std::sync::OnceLock<std::result::Result<TextEncoder, String>>,
}

impl Text {
    /// The provider the encoder runs on: a deferred one is only made on the CPU (see `open_files`), whose
    /// session either loads there or fails, so it is known before it exists.
    fn provider(&self) -> Provider {
        match self {
            Text::Ready(enc) => enc.provider(),
            Text::Deferred(_) => Provider::Cpu,
        }
    }

    /// The encoder, made now if it was deferred.
    fn encoder(&self) -> Result<&TextEncoder> {
        let d = match self {
            Text::Ready(enc) => return Ok(enc),
            Text::Deferred(d) => d,
        };
        let made = d.made.get_or_init(|| {
            crate::log_at!(crate::log::Level::Info, "text encoder: a prompt is not in the prompt cache; loading it");
            TextEncoder::open_with_precision(&d.dir, d.provider, Some(&d.expected_sha256), d.precision)
                .map_err(|e| e.detail())
        });
        made.as_ref().map_err(|m| Error::model(format!("the set's text encoder did not load: {m}")))
    }
}

/// Where a set keeps its encoded prompts, and the identity of the encoder they come from.
struct PromptCache {
    root: PathBuf,
    identity: crate::prompt_cache::EncoderIdentity,
}

/// A model set opened from a directory or a pack: its manifest and ONNX sessions.
pub struct ModelSet {
    dir: PathBuf,
    origin: Origin,
    provider: Option<Provider>,
    manifest: Manifest,
    /// The tileable sessions, made on first use (or at open when asked).
    tiled: std::sync::OnceLock<std::result::Result<Tiled, String>>,
    vae: Option<Vae>,
    unet: Option<OnnxModel>,
    /// The text encoder of a text-conditioned U-Net.
    text: Option<Text>,
    /// Set when the runtime keeps encoded prompts and the set has its own text encoder.
    prompt_cache: Option<PromptCache>,
    /// What a diffusers-layout folder adds: its scheduler, tokenizer and the models' own interfaces.
    diffusers: Option<crate::diffusers::Extras>,
}

/// Text embeddings in the U-Net's layout, flattened: `context` [n, tokens, width], `pooled` [n, width].
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub n: usize,
    pub context: Vec<f32>,
    pub pooled: Vec<f32>,
}

impl Embeddings {
    /// Rows `rows` (indices into self) as a new batch: how prompts are repeated and mixed.
    pub fn gather(&self, rows: &[usize]) -> Result<Embeddings> {
        let (lc, lp) = (self.context.len() / self.n.max(1), self.pooled.len() / self.n.max(1));
        let mut out = Embeddings { n: rows.len(), context: Vec::new(), pooled: Vec::new() };
        for &r in rows {
            if r >= self.n {
                return Err(Error::invalid(format!("embedding row {r} of {}", self.n)));
            }
            out.context.extend_from_slice(&self.context[r * lc..(r + 1) * lc]);
            out.pooled.extend_from_slice(&self.pooled[r * lp..(r + 1) * lp]);
        }
        Ok(out)
    }

    /// Appends `other`'s rows (same layout).
    pub fn extend(&mut self, other: &Embeddings) {
        self.n += other.n;
        self.context.extend_from_slice(&other.context);
        self.pooled.extend_from_slice(&other.pooled);
    }
}

impl ModelSet {
    /// Opens `dir` on the runtime's default provider. See [`ModelSet::open_with`].
    pub fn open(dir: &Path) -> Result<ModelSet> {
        Self::open_with(dir, None)
    }

    /// Opens `path` — a model-set directory or a pack file (`mirage pack`) — on `provider` (None = the
    /// runtime's default): reads and validates the manifest, checks every file's sha256, creates the sessions.
    pub fn open_with(path: &Path, provider: Option<Provider>) -> Result<ModelSet> {
        Self::open_with_precision(path, provider, Precision::Fp32)
    }

    /// [`ModelSet::open_with`] with the text encoder at `precision` ([`Precision::Int8`]: its int8 export,
    /// a quarter of the bytes to read and load; mirage's text-conditioned sets only).
    pub fn open_with_precision(path: &Path, provider: Option<Provider>, precision: Precision) -> Result<ModelSet> {
        if path.is_file() {
            let bytes = crate::files::read_regular(path, crate::limits::MAX_PACK_BYTES, "model pack", "no such pack")?;
            let origin = Origin::PackFile(path.to_path_buf());
            return Self::open_pack(&bytes, path, origin, provider, false, precision);
        }
        if crate::diffusers::is_folder(path) && !path.join(crate::manifest::MANIFEST_FILE).exists() {
            if precision != Precision::Fp32 {
                return Err(Error::Unsupported(format!(
                    "{}: a diffusers folder's text encoder runs as exported; the {} precision is for mirage's own sets",
                    crate::limits::quote_path(path),
                    precision.name()
                )));
            }
            return Self::open_diffusers(path, provider);
        }
        let manifest = Manifest::load(path)?;
        let origin = Origin::Dir(path.to_path_buf());
        Self::open_files(&Files::Dir(path), manifest, path, origin, provider, false, precision)
    }

    /// Opens a pack held in memory (read during the call, nothing of it kept). The tileable sessions
    /// cannot be made later from a buffer that is gone: `tileable` makes them now.
    pub fn open_memory(bytes: &[u8], provider: Option<Provider>, tileable: bool) -> Result<ModelSet> {
        Self::open_memory_with(bytes, provider, tileable, Precision::Fp32)
    }

    /// [`ModelSet::open_memory`] with the text encoder at `precision` (see [`ModelSet::open_with_precision`]).
    pub fn open_memory_with(
        bytes: &[u8],
        provider: Option<Provider>,
        tileable: bool,
        precision: Precision,
    ) -> Result<ModelSet> {
        Self::open_pack(bytes, Path::new("<memory pack>"), Origin::Memory, provider, tileable, precision)
    }

    fn open_pack(
        bytes: &[u8],
        label: &Path,
        origin: Origin,
        provider: Option<Provider>,
        tileable: bool,
        precision: Precision,
    ) -> Result<ModelSet> {
        let pack = crate::pack::Pack::parse(bytes).map_err(|e| prefix_model(e, label))?;
        let text = std::str::from_utf8(pack.entry(crate::manifest::MANIFEST_FILE)?).map_err(|e| {
            Error::model(format!("{}: manifest.json is not UTF-8 ({e})", crate::limits::quote_path(label)))
        })?;
        let manifest = Manifest::parse(text).map_err(|e| prefix_model(e, label))?;
        Self::open_files(&Files::Pack { pack: &pack, label }, manifest, label, origin, provider, tileable, precision)
    }

    fn open_files(
        files: &Files,
        manifest: Manifest,
        dir: &Path,
        origin: Origin,
        provider: Option<Provider>,
        tileable: bool,
        precision: Precision,
    ) -> Result<ModelSet> {
        let load_vae = || -> Result<Option<Vae>> {
            let Some(spec) = &manifest.vae else { return Ok(None) };
            Ok(Some(Vae {
                encoder: load_model(files, &spec.encoder, provider, false)?,
                decoder: load_model(files, &spec.decoder, provider, false)?,
            }))
        };
        let load_unet =
            || manifest.unet.as_ref().map(|spec| load_model(files, &spec.model, provider, false)).transpose();
        let text_spec = manifest.unet.as_ref().and_then(|u| u.text.as_ref());
        // With the prompt cache, a directory's encoder is only checked now; its session waits for a prompt
        // that is not in the cache. Packs are read once, so theirs is made now; so is a GPU session (where
        // it runs, after a possible fallback, is only known once it exists, and hosts ask at open).
        let rt = crate::runtime::global()?;
        let cache_root = crate::runtime::prompt_cache_dir().map(Path::to_path_buf);
        let defer = cache_root.is_some() && matches!(files, Files::Dir(_)) && rt.cpu_only(provider);
        let load_text = || -> Result<Option<(Text, (String, String))>> {
            let Some(t) = text_spec else { return Ok(None) };
            let made = match files {
                Files::Dir(dir) if defer => {
                    let dir = dir.join(&t.encoder);
                    TextEncoder::check_files(&dir, Some(&t.encoder_sha256), precision).map(|identity| {
                        let d = DeferredText {
                            dir,
                            provider,
                            expected_sha256: t.encoder_sha256.clone(),
                            precision,
                            made: std::sync::OnceLock::new(),
                        };
                        (Text::Deferred(Box::new(d)), identity)
                    })
                }
                Files::Dir(dir) => TextEncoder::open_with_precision(
                    &dir.join(&t.encoder),
                    provider,
                    Some(&t.encoder_sha256),
                    precision,
                )
                .map(|enc| {
                    let identity = enc.identity();
                    (Text::Ready(Box::new(enc)), identity)
                }),
                Files::Pack { pack, label } => TextEncoder::open_in_pack_with_precision(
                    pack,
                    PACK_TEXT_ENCODER,
                    label,
                    provider,
                    Some(&t.encoder_sha256),
                    precision,
                )
                .map(|enc| {
                    let identity = enc.identity();
                    (Text::Ready(Box::new(enc)), identity)
                }),
            }
            .map_err(|e| match e {
                Error::ModelNotFound { path, reason } => Error::ModelNotFound {
                    path,
                    reason: format!(
                        "{reason} (the set's text encoder: make it with `scripts/setup.sh text` then \
                         `mirage text-encoder export`, or `make demo`)"
                    ),
                },
                other => other,
            })?;
            if TEXT_WIDTH != t.width as usize {
                return Err(Error::model(format!(
                    "the set's U-Net expects {}-wide text embeddings, its text encoder gives {TEXT_WIDTH}",
                    t.width
                )));
            }
            Ok(Some(made))
        };
        // The models load on two threads: a text encoder made now (the largest model: about three quarters of a
        // text-to-image set's load time) beside the VAE and the U-Net; otherwise the U-Net beside the VAE (and
        // the deferred encoder's checks). Three threads on this 2-core machine made the encoder's load 50-90 ms
        // later. Errors are reported in the fixed order VAE, U-Net, text encoder, whatever finished first.
        let (vae, unet, text) = if text_spec.is_some() && !defer {
            let (text, (vae, unet)) = crate::parallel::beside("mirage-load", load_text, || (load_vae(), load_unet()));
            (vae, unet, text)
        } else {
            let (unet, (vae, text)) = crate::parallel::beside("mirage-load", load_unet, || (load_vae(), load_text()));
            (vae, unet, text)
        };
        let (vae, unet) = (vae?, unet?);
        let (text, identity) = text?.unzip();
        let prompt_cache = cache_root.zip(identity).map(|(root, (onnx_sha256, tokenizer_sha256))| PromptCache {
            root,
            identity: crate::prompt_cache::EncoderIdentity {
                onnx_sha256,
                tokenizer_sha256,
                provider: provider.unwrap_or_else(crate::runtime::default_provider).name(),
                runtime: crate::runtime::version_string(),
            },
        });
        let set = ModelSet {
            dir: dir.to_path_buf(),
            origin,
            provider,
            manifest,
            tiled: std::sync::OnceLock::new(),
            vae,
            unet,
            text,
            prompt_cache,
            diffusers: None,
        };
        if tileable {
            set.check_tileable()?;
            let tiled = set.load_tiled(files)?;
            let _ = set.tiled.set(Ok(tiled));
        }
        Ok(set)
    }

    /// Opens a diffusers-layout folder ([`crate::diffusers`]).
    fn open_diffusers(dir: &Path, provider: Option<Provider>) -> Result<ModelSet> {
        let o = crate::diffusers::open(dir, provider)?;
        Ok(ModelSet {
            dir: dir.to_path_buf(),
            origin: Origin::Dir(dir.to_path_buf()),
            provider,
            manifest: o.manifest,
            tiled: std::sync::OnceLock::new(),
            vae: Some(Vae { encoder: o.encoder, decoder: o.decoder }),
            unet: Some(o.unet),
            text: None,
            prompt_cache: None,
            diffusers: Some(o.extras),
        })
    }

    /// Whether the set is a diffusers-layout folder (its scheduler, tokenizer and guidance rule apply).
    pub fn is_diffusers(&self) -> bool {
        self.diffusers.is_some()
    }

    /// Makes the tileable sessions now if they are not made yet (else on first use).
    pub fn prepare_tileable(&self) -> Result<()> {
        self.check_tileable()?;
        self.tiled().map(|_| ())
    }

    /// Whether the set's images can wrap: a latent-space set must decode each latent cell to a whole block of
    /// pixels (a decoder that crops, as the Fashion sets' 32 -> 28 does, cannot wrap at the image's edge).
    pub fn check_tileable(&self) -> Result<()> {
        if self.diffusers.is_some() {
            return Err(Error::Unsupported(format!(
                "model set {:?} is a diffusers folder: tileable output is made for mirage's own sets only (so far)",
                self.manifest.name
            )));
        }
        if let Some(v) = &self.manifest.vae {
            let [_, h, w] = v.latent_shape;
            let i = &self.manifest.image;
            if !i.width.is_multiple_of(w) || !i.height.is_multiple_of(h) || i.width / w != i.height / h {
                return Err(Error::Unsupported(format!(
                    "model set {:?} cannot make tileable images: it decodes {w}x{h} latents to {}x{} images (not a whole \
                     number of pixels per latent cell, e.g. a crop), so its images cannot wrap at their edges",
                    self.manifest.name, i.width, i.height
                )));
            }
        }
        Ok(())
    }

    /// Makes the tileable sessions from `files`.
    fn load_tiled(&self, files: &Files) -> Result<Tiled> {
        let m = &self.manifest;
        Ok(Tiled {
            unet: m.unet.as_ref().map(|u| load_model(files, &u.model, self.provider, true)).transpose()?,
            decoder: m.vae.as_ref().map(|v| load_model(files, &v.decoder, self.provider, true)).transpose()?,
        })
    }

    /// The tileable sessions, made on first use from where the set came from.
    fn tiled(&self) -> Result<&Tiled> {
        let made = self.tiled.get_or_init(|| {
            let made = match &self.origin {
                Origin::Dir(dir) => self.load_tiled(&Files::Dir(dir)),
                Origin::PackFile(path) => {
                    crate::files::read_regular(path, crate::limits::MAX_PACK_BYTES, "model pack", "no such pack")
                        .and_then(|bytes| {
                            let pack = crate::pack::Pack::parse(&bytes)?;
                            self.load_tiled(&Files::Pack { pack: &pack, label: path })
                        })
                }
                Origin::Memory => Err(Error::Unsupported(
                    "this model set was opened from memory without its tileable sessions: open it with \
                     tileable set (MirageContextParams::tileable) to generate tileable images"
                        .into(),
                )),
            };
            // Kept as a message: a failure is remembered (not retried on every call) and reported each time.
            made.map_err(|e| e.detail())
        });
        made.as_ref().map_err(|m| Error::Unsupported(format!("tileable output is not available: {m}")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// (model, provider it runs on) for every session of the set.
    pub fn providers(&self) -> Vec<(ModelKind, Provider)> {
        let mut v = Vec::new();
        if let Some(vae) = &self.vae {
            v.push((ModelKind::VaeEncoder, vae.encoder.provider()));
            v.push((ModelKind::VaeDecoder, vae.decoder.provider()));
        }
        if let Some(m) = &self.unet {
            v.push((ModelKind::UNet, m.provider()));
        }
        if let Some(t) = &self.text {
            v.push((ModelKind::TextEncoder, t.provider()));
        }
        if let Some(d) = &self.diffusers {
            v.push((ModelKind::TextEncoder, d.text_encoder.provider()));
        }
        v
    }

    /// The provider `kind` runs on; None when the set has no such model.
    pub fn provider(&self, kind: ModelKind) -> Option<Provider> {
        self.providers().into_iter().find(|(k, _)| *k == kind).map(|(_, p)| p)
    }

    /// The text conditioning of the set's U-Net, when it has one.
    pub fn text_spec(&self) -> Option<&TextSpec> {
        self.manifest.unet.as_ref().and_then(|u| u.text.as_ref())
    }

    /// [`ModelSet::text_spec`], or the one error every text operation gives for a set without text
    /// conditioning (Unsupported).
    pub fn require_text(&self) -> Result<&TextSpec> {
        self.text_spec().ok_or_else(|| self.not_text_conditioned())
    }

    /// The error of a text operation on a set without text conditioning.
    pub fn not_text_conditioned(&self) -> Error {
        Error::Unsupported(format!(
            "model set {:?} is not text-conditioned: it cannot take a prompt (text-to-image sets: e.g. models/emoji)",
            self.manifest.name
        ))
    }

    /// The set's own text encoder (None for a set without one, or a diffusers folder), made now if the
    /// prompt cache deferred it.
    pub fn text_encoder(&self) -> Result<Option<&TextEncoder>> {
        self.text.as_ref().map(Text::encoder).transpose()
    }

    /// Whether encoded prompts are kept between processes for this set ([`crate::prompt_cache`]).
    pub fn caches_prompts(&self) -> bool {
        self.prompt_cache.is_some()
    }

    /// Encodes prompts into the U-Net's text inputs (each padded or truncated to the set's token count).
    /// Errors with Unsupported when the set's U-Net is not text-conditioned.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Embeddings> {
        let spec = self.require_text()?;
        if prompts.is_empty() || prompts.len() > MAX_BATCH {
            return Err(Error::invalid(format!("{} prompts: 1..={MAX_BATCH} are accepted", prompts.len())));
        }
        if let Some(d) = &self.diffusers {
            let (context, pooled) = d.encode_prompts(prompts, spec.width as usize)?;
            return Ok(Embeddings { n: prompts.len(), context, pooled });
        }
        // Opened (or checked, when deferred) with the set whenever the manifest has a text spec.
        let text = self.text.as_ref().ok_or_else(|| Error::Inference("text encoder not loaded".into()))?;
        let l = spec.tokens as usize;
        let Some(cache) = &self.prompt_cache else {
            let e = text.encoder()?.encode(prompts, l)?;
            return Ok(Embeddings { n: prompts.len(), context: e.tokens, pooled: e.pooled });
        };
        let keys: Vec<String> = prompts.iter().map(|p| crate::prompt_cache::key(&cache.identity, l, p)).collect();
        let mut found: Vec<Option<crate::prompt_cache::Entry>> =
            keys.iter().map(|k| crate::prompt_cache::lookup(&cache.root, k, l)).collect();
        let missed: Vec<usize> = (0..prompts.len()).filter(|&i| found[i].is_none()).collect();
        if !missed.is_empty() {
            let batch: Vec<&str> = missed.iter().map(|&i| prompts[i]).collect();
            let e = text.encoder()?.encode(&batch, l)?;
            let row = l * TEXT_WIDTH;
            for (j, &i) in missed.iter().enumerate() {
                let entry = crate::prompt_cache::Entry {
                    tokens: e.tokens[j * row..(j + 1) * row].to_vec(),
                    pooled: e.pooled_row(j).to_vec(),
                    truncated: e.truncated[j],
                };
                crate::prompt_cache::store(&cache.root, &keys[i], &entry);
                found[i] = Some(entry);
            }
        }
        let mut out = Embeddings { n: 0, context: Vec::new(), pooled: Vec::new() };
        for (i, (p, entry)) in prompts.iter().zip(found).enumerate() {
            let entry = entry.ok_or_else(|| Error::Inference("prompt cache: a prompt was left unencoded".into()))?;
            // A prompt encoded just now had its warning from the encoder.
            if entry.truncated && !missed.contains(&i) {
                crate::text::warn_truncated(p, None, l);
            }
            out.extend(&Embeddings { n: 1, context: entry.tokens, pooled: entry.pooled });
        }
        crate::log_at!(
            crate::log::Level::Debug,
            "prompt cache: {} of {} prompts taken from the cache",
            prompts.len() - missed.len(),
            prompts.len()
        );
        Ok(out)
    }

    /// The sampler `kind` stands for on this set: `Auto` becomes the set's own (DDIM with its eta for
    /// mirage's sets, the folder's scheduler for a diffusers folder).
    pub fn resolve_sampler(&self, kind: SamplerKind) -> Result<SamplerKind> {
        match (kind, &self.diffusers) {
            (SamplerKind::Auto { eta }, None) => Ok(SamplerKind::Ddim { eta }),
            (SamplerKind::Auto { eta }, Some(d)) => match d.scheduler.default_kind()? {
                SamplerKind::Ddim { .. } => Ok(SamplerKind::Ddim { eta }),
                kind => Ok(kind),
            },
            (kind, _) => Ok(kind),
        }
    }

    /// A run of `kind` for a generation of `steps` steps, of which the `strength` fraction is run (img2img):
    /// on mirage's cosine schedule, or the diffusers scheduler of a diffusers folder.
    pub fn sampler(&self, kind: SamplerKind, steps: usize, strength: f32) -> Result<Box<dyn crate::sampler::Sampler>> {
        match &self.diffusers {
            Some(d) => crate::sampler::discrete::build(&d.scheduler, kind, steps, strength),
            None => {
                let spec = self.manifest.unet.as_ref().ok_or_else(|| self.no_unet())?;
                kind.build_cosine(spec.schedule, steps, strength)
            }
        }
    }

    /// Whether classifier-free guidance at scale `guidance` runs the unconditional side: mirage's sets skip
    /// it only at exactly 1 (where it is multiplied by 0; 0 is the unconditional side alone), diffusers
    /// folders whenever guidance <= 1, as diffusers does (the prompt alone: few-step models run at 0).
    pub fn runs_both_sides(&self, guidance: f32) -> bool {
        match &self.diffusers {
            // An LCM-distilled U-Net takes the guidance as an input instead.
            Some(d) => guidance > 1.0 && !d.embeds_guidance(),
            None => guidance != 1.0,
        }
    }

    fn vae(&self) -> Result<&Vae> {
        self.vae.as_ref().ok_or_else(|| Error::Unsupported(format!("model set {:?} has no VAE", self.manifest.name)))
    }

    /// Floats in one image: channels * height * width.
    pub fn image_len(&self) -> usize {
        let i = &self.manifest.image;
        (i.channels * i.height * i.width) as usize
    }

    /// Latent shape [C, h, w] (errors when the set has no VAE).
    pub fn latent_shape(&self) -> Result<[u32; 3]> {
        Ok(self.vae_spec()?.latent_shape)
    }

    /// The manifest's VAE (errors when the set has none).
    fn vae_spec(&self) -> Result<&crate::manifest::VaeSpec> {
        self.manifest.vae.as_ref().ok_or_else(|| Error::Unsupported("model set has no VAE".into()))
    }

    /// Whether the set's VAE was made for decoding points of the prior N(0, I) (its manifest says
    /// `"prior": "sampleable"`): elsewhere such points decode to blobs rather than images. Errors when the set
    /// has no VAE.
    pub fn prior_sampleable(&self) -> Result<bool> {
        Ok(self.vae_spec()?.prior == Some(crate::manifest::Prior::Sampleable))
    }

    /// Floats in one latent.
    pub fn latent_len(&self) -> Result<usize> {
        Ok(self.latent_shape()?.iter().map(|&d| d as usize).product())
    }

    /// Whether the set can generate by diffusion.
    pub fn has_unet(&self) -> bool {
        self.unet.is_some()
    }

    /// Shape [C, h, w] of what the U-Net denoises (latents, or pixels for a pixel-space set).
    pub fn diffusion_shape(&self) -> Result<[u32; 3]> {
        let spec = self.manifest.unet.as_ref().ok_or_else(|| self.no_unet())?;
        match spec.space {
            DiffusionSpace::Latent => self.latent_shape(),
            DiffusionSpace::Pixel => {
                let i = &self.manifest.image;
                Ok([i.channels, i.height, i.width])
            }
        }
    }

    fn no_unet(&self) -> Error {
        Error::Unsupported(format!("model set {:?} has no diffusion U-Net", self.manifest.name))
    }

    /// Predicts the noise in `n` normalised samples `x` at the given noise variances (one per sample).
    /// A text-conditioned U-Net needs `text` (n rows), an unconditional one refuses it.
    pub fn predict_noise(
        &self,
        x: &[f32],
        noise_variance: &[f32],
        n: usize,
        text: Option<&Embeddings>,
    ) -> Result<Vec<f32>> {
        self.predict_noise_with(x, noise_variance, n, text, false)
    }

    /// [`ModelSet::predict_noise`]; `tileable` runs the U-Net whose convolutions pad circularly.
    pub fn predict_noise_with(
        &self,
        x: &[f32],
        noise_variance: &[f32],
        n: usize,
        text: Option<&Embeddings>,
        tileable: bool,
    ) -> Result<Vec<f32>> {
        self.predict(x, noise_variance, n, text, tileable, 1.0)
    }

    /// The U-Net's prediction for `n` samples `x` (as the sampler scaled them) at the noise levels `levels`
    /// (noise variances for mirage's sets, timesteps for a diffusers folder); `guidance` feeds an
    /// LCM-distilled U-Net's guidance embedding (ignored elsewhere).
    pub fn predict(
        &self,
        x: &[f32],
        levels: &[f32],
        n: usize,
        text: Option<&Embeddings>,
        tileable: bool,
        guidance: f32,
    ) -> Result<Vec<f32>> {
        let noise_variance = levels;
        let plain = self.unet.as_ref().ok_or_else(|| self.no_unet())?;
        let unet = if tileable { self.tiled()?.unet.as_ref().ok_or_else(|| self.no_unet())? } else { plain };
        let [c, h, w] = self.diffusion_shape()?;
        let per = (c * h * w) as usize;
        check_batch(n, x.len(), per, "diffusion sample")?;
        check_batch(n, noise_variance.len(), 1, "noise variance")?;
        check_finite(x, "diffusion sample")?;
        let shape = vec![n as i64, c as i64, h as i64, w as i64];
        if let Some(d) = &self.diffusers {
            let (spec, e) = match (self.text_spec(), text) {
                (Some(spec), Some(e)) => (spec, e),
                _ => return Err(Error::invalid("this set's U-Net needs text embeddings")),
            };
            let (l, wd) = (spec.tokens as usize, spec.width as usize);
            if e.n != n {
                return Err(Error::invalid(format!("{} text embeddings for {n} samples", e.n)));
            }
            check_batch(n, e.context.len(), l * wd, "token embeddings")?;
            check_finite(&e.context, "token embeddings")?;
            check_finite(levels, "timesteps")?;
            let context_shape = vec![n as i64, l as i64, wd as i64];
            let feeds = d.unet_feeds(x.to_vec(), shape.clone(), levels, e.context.clone(), context_shape, guidance);
            // Bound between calls (OnnxModel::run_bound) when out_sample is the only output (its shape is x's).
            let out = if unet.output_count() == 1 { unet.run_bound(feeds, &[shape])? } else { unet.run(feeds)? };
            let out = out.into_iter().next().map(|o| o.data).unwrap_or_default();
            if out.len() != x.len() {
                return Err(Error::Inference(format!("unet returned {} values, expected {}", out.len(), x.len())));
            }
            return Ok(out);
        }
        let mut inputs = vec![
            Feed::F32 { shape: shape.clone(), data: x.to_vec() }, // x [n, C, h, w]
            Feed::F32 { shape: vec![n as i64, 1], data: noise_variance.to_vec() }, // noise_variance [n, 1]
        ];
        match (self.text_spec(), text) {
            (None, None) => {}
            (Some(spec), Some(e)) => {
                let (l, wd) = (spec.tokens as usize, spec.width as usize);
                if e.n != n {
                    return Err(Error::invalid(format!("{} text embeddings for {n} samples", e.n)));
                }
                check_batch(n, e.context.len(), l * wd, "token embeddings")?;
                check_batch(n, e.pooled.len(), wd, "pooled embedding")?;
                check_finite(&e.context, "token embeddings")?;
                check_finite(&e.pooled, "pooled embedding")?;
                inputs.push(Feed::F32 { shape: vec![n as i64, l as i64, wd as i64], data: e.context.clone() });
                inputs.push(Feed::F32 { shape: vec![n as i64, wd as i64], data: e.pooled.clone() });
            }
            (None, Some(_)) => return Err(self.not_text_conditioned()),
            (Some(_), None) => return Err(Error::invalid("this set's U-Net needs text embeddings")),
        }
        // Bound between calls: across a generation's steps the text embeddings are not copied again, and
        // on a GPU they stay on the device (see OnnxModel::run_bound).
        let out = unet.run_bound(inputs, &[shape])?.into_iter().next().map(|o| o.data).unwrap_or_default();
        if out.len() != x.len() {
            return Err(Error::Inference(format!("unet returned {} values, expected {}", out.len(), x.len())));
        }
        Ok(out)
    }

    /// Encodes `n` images (model-space NCHW) into the latent mean and log-variance, each `n * latent_len`.
    pub fn encode(&self, images: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let vae = self.vae()?;
        call_values(n, self.latent_len()?, "latents")?;
        check_batch(n, images.len(), self.image_len(), "image")?;
        check_finite(images, "image")?;
        let i = &self.manifest.image;
        let shape = vec![n as i64, i.channels as i64, i.height as i64, i.width as i64];
        let mut out = vae.encoder.run(vec![Feed::F32 { shape, data: images.to_vec() }])?.into_iter().map(|o| o.data);
        if let Some(d) = &self.diffusers {
            return d.split_encoding(out.next().unwrap_or_default(), n, self.latent_len()?);
        }
        let (mean, logvar) = (out.next().unwrap_or_default(), out.next().unwrap_or_default());
        let want = n * self.latent_len()?;
        if mean.len() != want || logvar.len() != want {
            return Err(Error::Inference(format!(
                "encoder returned {} / {} values, expected {want}",
                mean.len(),
                logvar.len()
            )));
        }
        Ok((mean, logvar))
    }

    /// Decodes `n` latents (NCHW, `n * latent_len` floats) into model-space images.
    pub fn decode(&self, latents: &[f32], n: usize) -> Result<Vec<f32>> {
        self.decode_with(latents, n, false)
    }

    /// [`ModelSet::decode`]; `tileable` runs the decoder whose convolutions pad circularly.
    pub fn decode_with(&self, latents: &[f32], n: usize, tileable: bool) -> Result<Vec<f32>> {
        let vae = self.vae()?;
        let decoder = if tileable {
            self.tiled()?.decoder.as_ref().ok_or_else(|| Error::Unsupported("model set has no VAE".into()))?
        } else {
            &vae.decoder
        };
        call_values(n, self.image_len(), "images")?;
        let [c, h, w] = self.latent_shape()?;
        check_batch(n, latents.len(), self.latent_len()?, "latent")?;
        check_finite(latents, "latent")?;
        let shape = vec![n as i64, c as i64, h as i64, w as i64];
        let out = decoder.run(vec![Feed::F32 { shape, data: latents.to_vec() }])?;
        let out = out.into_iter().next().map(|o| o.data).unwrap_or_default();
        if out.len() != n * self.image_len() {
            return Err(Error::Inference(format!(
                "decoder returned {} values, expected {}",
                out.len(),
                n * self.image_len()
            )));
        }
        Ok(out)
    }
}

/// Sets open in this process, by identity (see [`open_shared`]): a second context on the same set shares
/// the first one's sessions instead of loading them again.
static SHARED: std::sync::Mutex<Vec<(String, std::sync::Weak<ModelSet>)>> = std::sync::Mutex::new(Vec::new());

/// What makes two opens the same set: the manifest's sha256 (it lists the sha256 of every model file),
/// the provider asked for, and — for files on disk — the size and modification time of every file read, so
/// that a file changed since the first open is read and checked again rather than trusted.
fn identity(manifest_bytes: &[u8], provider: Option<Provider>, files: &[PathBuf]) -> String {
    let mut key = format!("{}|{provider:?}", crate::manifest::sha256_hex(manifest_bytes));
    for f in files {
        let stamp = std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())));
        key.push_str(&format!("|{}:{stamp:?}", f.display()));
    }
    key
}

/// The set of `key` if one is open, else `open()`'s, registered under `key`.
fn shared(key: String, open: impl FnOnce() -> Result<ModelSet>) -> Result<Arc<ModelSet>> {
    let found = {
        let mut reg = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|(_, w)| w.strong_count() > 0);
        reg.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade())
    };
    if let Some(set) = found {
        crate::log_at!(
            crate::log::Level::Debug,
            "model set {:?}: sharing the sessions already loaded",
            set.manifest.name
        );
        return Ok(set);
    }
    // Loaded outside the lock: opening another set meanwhile must not wait for this one.
    let set = Arc::new(open()?);
    SHARED.lock().unwrap_or_else(|p| p.into_inner()).push((key, Arc::downgrade(&set)));
    Ok(set)
}

/// [`ModelSet::open_with`], sharing the sessions of an identical set already open in this process (same
/// manifest, provider and unchanged files): what two contexts on one model set get.
pub fn open_shared(path: &Path, provider: Option<Provider>) -> Result<Arc<ModelSet>> {
    open_shared_with(path, provider, Precision::Fp32)
}

/// [`open_shared`] with the text encoder at `precision`: sets opened at different precisions are not shared.
pub fn open_shared_with(path: &Path, provider: Option<Provider>, precision: Precision) -> Result<Arc<ModelSet>> {
    let open = || ModelSet::open_with_precision(path, provider, precision);
    let p = precision.name();
    if path.is_file() {
        let key = identity(path.to_string_lossy().as_bytes(), provider, &[path.to_path_buf()]);
        return shared(format!("pack|{p}|{key}"), open);
    }
    if crate::diffusers::is_folder(path) && !path.join(crate::manifest::MANIFEST_FILE).exists() {
        // No hashes to key on: the folder's path and the size and mtime of every file it is read from.
        let parts = crate::diffusers::FILES.iter().map(|f| path.join(f)).collect::<Vec<_>>();
        let key = identity(path.to_string_lossy().as_bytes(), provider, &parts);
        return shared(format!("diffusers|{p}|{key}"), open);
    }
    let manifest_path = path.join(crate::manifest::MANIFEST_FILE);
    let bytes = match crate::files::read_regular(&manifest_path, crate::limits::MAX_MANIFEST_BYTES, "manifest", "") {
        Ok(b) => b,
        // Errors are the open's own (it says what is wrong, with the usual wording).
        Err(_) => return open().map(Arc::new),
    };
    let mut files = vec![manifest_path];
    if let Ok(m) = Manifest::parse(&String::from_utf8_lossy(&bytes)) {
        let specs =
            [m.vae.as_ref().map(|v| &v.encoder), m.vae.as_ref().map(|v| &v.decoder), m.unet.as_ref().map(|u| &u.model)];
        files.extend(specs.into_iter().flatten().map(|f| path.join(&f.file)));
        if let Some(t) = m.unet.as_ref().and_then(|u| u.text.as_ref()) {
            let d = path.join(&t.encoder);
            let names = [
                crate::text::DESCRIPTOR_FILE,
                crate::text::ONNX_FILE,
                crate::text::INT8_ONNX_FILE,
                crate::text::TOKENIZER_FILE,
            ];
            files.extend(names.iter().map(|f| d.join(f)));
        }
    }
    shared(format!("dir|{p}|{}", identity(&bytes, provider, &files)), open)
}

/// [`ModelSet::open_memory`], sharing as [`open_shared`] does: a buffer holding the same manifest (whose
/// sha256s fix every model file) gives the sessions already loaded.
pub fn open_memory_shared(bytes: &[u8], provider: Option<Provider>, tileable: bool) -> Result<Arc<ModelSet>> {
    open_memory_shared_with(bytes, provider, tileable, Precision::Fp32)
}

/// [`open_memory_shared`] with the text encoder at `precision`.
pub fn open_memory_shared_with(
    bytes: &[u8],
    provider: Option<Provider>,
    tileable: bool,
    precision: Precision,
) -> Result<Arc<ModelSet>> {
    let manifest =
        crate::pack::Pack::parse(bytes).and_then(|p| p.entry(crate::manifest::MANIFEST_FILE).map(|m| m.to_vec()));
    let open = || ModelSet::open_memory_with(bytes, provider, tileable, precision);
    let Ok(manifest) = manifest else { return open().map(Arc::new) };
    let set = shared(format!("memory|{}|{}", precision.name(), identity(&manifest, provider, &[])), open)?;
    if tileable {
        set.check_tileable()?;
    }
    if tileable && set.tiled.get().is_none() {
        let pack = crate::pack::Pack::parse(bytes)?;
        let tiled = set.load_tiled(&Files::Pack { pack: &pack, label: Path::new("<memory pack>") })?;
        let _ = set.tiled.set(Ok(tiled));
    }
    Ok(set)
}

/// The model set in `dir` as one pack (the bytes `mirage pack` writes): manifest.json, the ONNX files it
/// lists (each checked against its sha256), and a text-conditioned set's encoder files under
/// [`PACK_TEXT_ENCODER`] (checked against its descriptor). The manifest goes in as it is.
pub fn pack_set(dir: &Path) -> Result<Vec<u8>> {
    use crate::limits::{MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, MAX_TOKENIZER_BYTES};
    if crate::diffusers::is_folder(dir) && !dir.join(crate::manifest::MANIFEST_FILE).exists() {
        return Err(Error::Unsupported(format!(
            "{} is a diffusers folder: packs hold mirage's own model sets; open the folder itself",
            crate::limits::quote_path(dir)
        )));
    }
    let manifest_path = dir.join(crate::manifest::MANIFEST_FILE);
    let manifest_bytes = crate::files::read_regular(
        &manifest_path,
        MAX_MANIFEST_BYTES,
        "manifest.json",
        "the model set has no manifest.json",
    )?;
    let m = Manifest::load(dir)?;
    let mut entries: Vec<(String, Vec<u8>)> = vec![(crate::manifest::MANIFEST_FILE.to_string(), manifest_bytes)];
    let files =
        [m.vae.as_ref().map(|v| &v.encoder), m.vae.as_ref().map(|v| &v.decoder), m.unet.as_ref().map(|u| &u.model)];
    for f in files.into_iter().flatten() {
        entries.push((f.file.clone(), Manifest::read_model(dir, f)?));
    }
    if let Some(t) = m.unet.as_ref().and_then(|u| u.text.as_ref()) {
        let enc = dir.join(&t.encoder);
        let d = crate::text::EncoderDescriptor::load(&enc)?;
        let descriptor = crate::files::read_regular(
            &enc.join(crate::text::DESCRIPTOR_FILE),
            MAX_MANIFEST_BYTES,
            crate::text::DESCRIPTOR_FILE,
            "the text encoder has no descriptor",
        )?;
        let what = crate::text::DESCRIPTOR_FILE;
        let onnx = crate::manifest::read_checked(
            &enc.join(&d.onnx_file),
            MAX_MODEL_BYTES,
            &d.onnx_sha256,
            "text encoder model",
            what,
        )?;
        let tok = crate::manifest::read_checked(
            &enc.join(&d.tokenizer_file),
            MAX_TOKENIZER_BYTES,
            &d.tokenizer_sha256,
            "tokenizer",
            what,
        )?;
        entries.push((format!("{PACK_TEXT_ENCODER}{}", crate::text::DESCRIPTOR_FILE), descriptor));
        entries.push((format!("{PACK_TEXT_ENCODER}{}", d.onnx_file), onnx));
        entries.push((format!("{PACK_TEXT_ENCODER}{}", d.tokenizer_file), tok));
    }
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let mut out = Vec::new();
    crate::pack::write(&refs, &mut out)?;
    Ok(out)
}

/// Puts the pack's name in front of a message about its contents.
fn prefix_model(e: Error, label: &Path) -> Error {
    match e {
        Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", crate::limits::quote_path(label))),
        other => other,
    }
}
