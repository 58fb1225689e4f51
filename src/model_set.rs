//! A model set opened from a directory: its manifest and one session per model (VAE encoder and decoder,
//! U-Net, text encoder), and what each model is fed: VAE encode (image -> mean, log-variance) and decode
//! (latent -> image), the U-Net's noise prediction, prompts -> text embeddings.
//!
//! All tensors here are in model space: NCHW f32, images normalised as the manifest says (about [-1, 1]).
//! Conversions from and to host pixels live in [`crate::image`], latent arithmetic in [`crate::latent`],
//! the diffusion loop in [`crate::pipeline`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::{call_values, check_batch, check_finite, MAX_BATCH};
use crate::manifest::{DiffusionSpace, Manifest, ModelFile, TextSpec};
use crate::runtime::Provider;
use crate::session::{Feed, OnnxModel};
use crate::text::{TextEncoder, TEXT_WIDTH};

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

/// Loads one model file of the set: sha256 checked against the manifest, names against its interface.
fn load_model(dir: &Path, spec: &ModelFile, provider: Option<Provider>) -> Result<OnnxModel> {
    let bytes = Manifest::read_model(dir, spec)?;
    let names = |t: &[crate::manifest::TensorSpec]| t.iter().map(|t| t.name.clone()).collect();
    let in_shapes: Vec<&[i64]> = spec.inputs.iter().map(|t| t.shape.as_slice()).collect();
    let out_shapes: Vec<&[i64]> = spec.outputs.iter().map(|t| t.shape.as_slice()).collect();
    let what = format!("{} ({})", spec.kind, spec.file);
    let (inputs, outputs) = (names(&spec.inputs), names(&spec.outputs));
    OnnxModel::create(&bytes, what, provider, inputs, outputs, Some((&in_shapes, &out_shapes)), "the manifest")
}

struct Vae {
    encoder: OnnxModel,
    decoder: OnnxModel,
}

/// A model set opened from a directory: its manifest and ONNX sessions.
pub struct ModelSet {
    dir: PathBuf,
    manifest: Manifest,
    vae: Option<Vae>,
    unet: Option<OnnxModel>,
    /// The text encoder of a text-conditioned U-Net.
    text: Option<TextEncoder>,
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

    /// Opens `dir`: reads and validates the manifest, checks every file's sha256, creates the sessions.
    pub fn open_with(dir: &Path, provider: Option<Provider>) -> Result<ModelSet> {
        let manifest = Manifest::load(dir)?;
        let vae = match &manifest.vae {
            Some(spec) => Some(Vae {
                encoder: load_model(dir, &spec.encoder, provider)?,
                decoder: load_model(dir, &spec.decoder, provider)?,
            }),
            None => None,
        };
        let unet = match &manifest.unet {
            Some(spec) => Some(load_model(dir, &spec.model, provider)?),
            None => None,
        };
        let text = match manifest.unet.as_ref().and_then(|u| u.text.as_ref()) {
            Some(t) => {
                let enc =
                    TextEncoder::open(&dir.join(&t.encoder), provider, Some(&t.encoder_sha256)).map_err(
                        |e| match e {
                            Error::ModelNotFound { path, reason } => Error::ModelNotFound {
                                path,
                                reason: format!(
                                    "{reason} (the set's text encoder: make it with `scripts/setup.sh text` then \
                                 `mirage text-encoder export`, or `make demo`)"
                                ),
                            },
                            other => other,
                        },
                    )?;
                if TEXT_WIDTH != t.width as usize {
                    return Err(Error::model(format!(
                        "the set's U-Net expects {}-wide text embeddings, its text encoder gives {TEXT_WIDTH}",
                        t.width
                    )));
                }
                Some(enc)
            }
            None => None,
        };
        Ok(ModelSet { dir: dir.to_path_buf(), manifest, vae, unet, text })
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

    /// Encodes prompts into the U-Net's text inputs (each padded or truncated to the set's token count).
    /// Errors with Unsupported when the set's U-Net is not text-conditioned.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Embeddings> {
        let spec = self.require_text()?;
        // Opened with the set whenever the manifest has a text spec (`open_with`).
        let enc = self.text.as_ref().ok_or_else(|| Error::Inference("text encoder not loaded".into()))?;
        if prompts.is_empty() || prompts.len() > MAX_BATCH {
            return Err(Error::invalid(format!("{} prompts: 1..={MAX_BATCH} are accepted", prompts.len())));
        }
        let e = enc.encode(prompts, spec.tokens as usize)?;
        Ok(Embeddings { n: prompts.len(), context: e.tokens, pooled: e.pooled })
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
        Ok(self.manifest.vae.as_ref().ok_or_else(|| Error::Unsupported("model set has no VAE".into()))?.latent_shape)
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
        let unet = self.unet.as_ref().ok_or_else(|| self.no_unet())?;
        let [c, h, w] = self.diffusion_shape()?;
        let per = (c * h * w) as usize;
        check_batch(n, x.len(), per, "diffusion sample")?;
        check_batch(n, noise_variance.len(), 1, "noise variance")?;
        check_finite(x, "diffusion sample")?;
        let shape = vec![n as i64, c as i64, h as i64, w as i64];
        let mut inputs = vec![
            Feed::F32 { shape, data: x.to_vec() }, // x [n, C, h, w]
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
        let out = unet.run(inputs)?.into_iter().next().map(|o| o.data).unwrap_or_default();
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
        let vae = self.vae()?;
        call_values(n, self.image_len(), "images")?;
        let [c, h, w] = self.latent_shape()?;
        check_batch(n, latents.len(), self.latent_len()?, "latent")?;
        check_finite(latents, "latent")?;
        let shape = vec![n as i64, c as i64, h as i64, w as i64];
        let out = vae.decoder.run(vec![Feed::F32 { shape, data: latents.to_vec() }])?;
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
