//! The U-Net trainer's data: the training images in diffusion space (VAE latents, cached in the run
//! directory, or pixels), the caption table of a text-conditioned run (every caption embedded once,
//! cached), each step's caption draws, and the group weights that balance emoji against their skin-tone
//! variants.

use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::batches::uniform_0_1;
use super::data::{self, Split};
use super::{read_json, torch_err, write_json};
use crate::error::{Error, Result};
use crate::manifest::DiffusionSpace;
use crate::model_set::ModelSet;

const LATENTS: &str = "latents.safetensors";
const LATENTS_INFO: &str = "latents.json";

/// `latents.json`: what the cached latents are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct LatentsInfo {
    encoder_sha256: String,
    images: usize,
    limit: Option<usize>,
    shape: [i64; 3],
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// The training data in diffusion space.
pub(crate) struct TrainingData {
    /// [N, C, h, w], normalised per channel: (x - mean) / std.
    pub(crate) x: Tensor,
    pub(crate) space: DiffusionSpace,
    pub(crate) mean: Vec<f32>,
    pub(crate) std: Vec<f32>,
    /// sha256 of the VAE encoder that made the latents (empty in pixel space).
    pub(crate) encoder_sha256: String,
    /// Each image's captions.
    pub(crate) captions: Vec<Vec<String>>,
    /// Each image's stable name (`thumbsup_tone2`).
    pub(crate) names: Vec<String>,
}

/// Loads the set's training images from `data_dir` (Fashion-MNIST or the emoji, by the set's image shape;
/// the first `limit`) and, when the set has a VAE, encodes them (the mean of q(z|x), batches of 256 on ONNX
/// Runtime), caching the latents in `out`; measures the per-channel mean and std.
pub(crate) fn training_data(
    data_dir: &Path,
    limit: Option<usize>,
    emoji: &data::EmojiVersion,
    set: &ModelSet,
    out: &Path,
) -> Result<TrainingData> {
    let m = set.manifest();
    let spec = &m.image;
    if spec.mean != 0.5 || spec.std != 0.5 {
        return Err(Error::invalid(format!(
            "model set {:?}: the trainer's data is in [-1, 1] (mean = std = 0.5)",
            set.dir().display()
        )));
    }
    let shape = [spec.channels as i64, spec.height as i64, spec.width as i64];
    let loaded = data::load_for_shape(data_dir, Split::Train, limit, shape, emoji)?;
    let (images, captions, names) = (loaded.data, loaded.captions, loaded.names);
    let n = images.len() as usize;
    let (space, x, sha) = match &m.vae {
        Some(vae) => {
            let [c, h, w] = vae.latent_shape.map(|d| d as i64);
            let sha = vae.encoder.sha256.clone();
            let (lat_path, info_path) = (out.join(LATENTS), out.join(LATENTS_INFO));
            let cached = if info_path.is_file() && lat_path.is_file() {
                let info: LatentsInfo = read_json(&info_path)?;
                if info.encoder_sha256 == sha && info.images == n && info.shape == [c, h, w] {
                    let t = Tensor::read_safetensors(&lat_path).map_err(torch_err("latents cache"))?;
                    t.into_iter().next().map(|(_, t)| t)
                } else {
                    None
                }
            } else {
                None
            };
            let x = match cached {
                Some(x) => x,
                None => {
                    let flat = images.images.reshape([-1]);
                    let pixels = Vec::<f32>::try_from(&flat).map_err(torch_err("images"))?;
                    let per = set.image_len();
                    let mut lat = Vec::with_capacity(n * (c * h * w) as usize);
                    let pb = indicatif::ProgressBar::new(n as u64);
                    pb.set_message("encoding the training set");
                    for start in (0..n).step_by(256) {
                        let k = 256.min(n - start);
                        let (mean, _) = set.encode(&pixels[start * per..(start + k) * per], k)?;
                        lat.extend(mean);
                        pb.inc(k as u64);
                    }
                    pb.finish_and_clear();
                    let x = Tensor::f_from_slice(&lat).map_err(torch_err("latents"))?.view([n as i64, c, h, w]);
                    Tensor::write_safetensors(&[("latents", &x)], &lat_path).map_err(torch_err("latents cache"))?;
                    x
                }
            };
            (DiffusionSpace::Latent, x, sha)
        }
        None => (DiffusionSpace::Pixel, images.images, String::new()),
    };
    // Per-channel statistics over images and positions, in f64.
    let dims = [0i64, 2, 3];
    let mean = x.mean_dim(dims.as_slice(), true, Kind::Double); // [1, C, 1, 1]
    let std = x.std_dim(dims.as_slice(), false, true).to_kind(Kind::Double).clamp_min(1e-6); // [1, C, 1, 1]
    let to_vec = |t: &Tensor| Vec::<f32>::try_from(&t.to_kind(Kind::Float).reshape([-1])).map_err(torch_err("stats"));
    let (mean_v, std_v) = (to_vec(&mean)?, to_vec(&std)?);
    let shape = [x.size()[1], x.size()[2], x.size()[3]];
    let info =
        LatentsInfo { encoder_sha256: sha.clone(), images: n, limit, shape, mean: mean_v.clone(), std: std_v.clone() };
    if space == DiffusionSpace::Latent {
        write_json(&out.join(LATENTS_INFO), &info)?;
    }
    let xn = ((&x - mean.to_kind(Kind::Float)) / std.to_kind(Kind::Float)).to_kind(Kind::Float);
    Ok(TrainingData { x: xn, space, mean: mean_v, std: std_v, encoder_sha256: sha, captions, names })
}

/// Every distinct caption of the training set embedded once by the text encoder: row 0 is the empty
/// prompt (the unconditional side), `per_image[i]` lists image i's rows.
pub(crate) struct CaptionTable {
    /// [M, L, W] token embeddings.
    pub(crate) context: Tensor,
    /// [M, W] pooled embeddings.
    pub(crate) pooled: Tensor,
    pub(crate) per_image: Vec<Vec<i64>>,
    /// Some prompts, for the sample grids (first captions of evenly spaced images).
    pub(crate) grid_prompts: Vec<String>,
    /// sha256 of the encoder's text_encoder.onnx.
    pub(crate) encoder_sha256: String,
}

/// Embeds the captions (batches of 64 on ONNX Runtime), cached in `out` under a key of the encoder's
/// sha256, the token count and every caption.
pub(crate) fn caption_table(
    encoder_dir: &Path,
    tokens: i64,
    captions: &[Vec<String>],
    out: &Path,
) -> Result<CaptionTable> {
    use sha2::Digest;
    let onnx = encoder_dir.join("text_encoder.onnx");
    let encoder_sha256 = crate::manifest::sha256_hex(&std::fs::read(&onnx).map_err(|e| Error::io(&onnx, e))?);
    let mut rows: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    index.insert(String::new(), 0i64);
    let per_image: Vec<Vec<i64>> = captions
        .iter()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    *index.entry(c.clone()).or_insert_with(|| {
                        rows.push(c.clone());
                        rows.len() as i64 - 1
                    })
                })
                .collect()
        })
        .collect();
    if let Some(i) = per_image.iter().position(|r| r.is_empty()) {
        return Err(Error::invalid(format!("training image {i} has no caption")));
    }
    let mut h = sha2::Sha256::new();
    h.update(encoder_sha256.as_bytes());
    h.update(tokens.to_le_bytes());
    for r in &rows {
        h.update(r.as_bytes());
        h.update([0u8]);
    }
    let key = format!("{:x}", h.finalize());
    let (path, key_path) = (out.join("captions.safetensors"), out.join("captions.key"));
    let cached = std::fs::read_to_string(&key_path).is_ok_and(|k| k.trim() == key) && path.is_file();
    let (context, pooled) = if cached {
        let mut t: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&path).map_err(torch_err("captions cache"))?.into_iter().collect();
        let c = t.remove("context").ok_or_else(|| Error::invalid("captions cache lacks context"))?;
        let p = t.remove("pooled").ok_or_else(|| Error::invalid("captions cache lacks pooled"))?;
        (c, p)
    } else {
        let enc = crate::text::TextEncoder::open(encoder_dir, None, None)?;
        let w = crate::text::TEXT_WIDTH as i64;
        let (mut ctx, mut pooled) = (Vec::new(), Vec::new());
        let pb = indicatif::ProgressBar::new(rows.len() as u64);
        pb.set_message("embedding the captions");
        // Truncated captions are counted and reported once, not warned about one by one.
        let mut truncated: Vec<&str> = Vec::new();
        for chunk in rows.chunks(64) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let e = enc.encode_with(&refs, tokens as usize, false)?;
            truncated.extend(refs.iter().zip(&e.truncated).filter(|(_, &t)| t).map(|(r, _)| *r));
            ctx.extend(e.tokens.iter().copied());
            pooled.extend(e.pooled.iter().copied());
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        if let Some(first) = truncated.first() {
            crate::log_at!(
                crate::log::Level::Warn,
                "{} of {} captions have more than {tokens} tokens and were truncated to it (e.g. {})",
                truncated.len(),
                rows.len(),
                crate::limits::quote(first)
            );
        }
        let m = rows.len() as i64;
        let c = Tensor::f_from_slice(&ctx).map_err(torch_err("captions"))?.view([m, tokens, w]);
        let p = Tensor::f_from_slice(&pooled).map_err(torch_err("captions"))?.view([m, w]);
        Tensor::write_safetensors(&[("context", &c), ("pooled", &p)], &path).map_err(torch_err("captions cache"))?;
        std::fs::write(&key_path, &key).map_err(|e| Error::io(&key_path, e))?;
        (c, p)
    };
    let n = captions.len();
    let grid_prompts = (0..16).map(|k| captions[k * n / 16][0].clone()).collect();
    Ok(CaptionTable { context, pooled, per_image, grid_prompts, encoder_sha256 })
}

/// The caption row of each batch element for one step: the empty prompt with probability `uncond_prob`,
/// else one of the image's captions, drawn from a stream seeded by (seed, step) so that a resumed run
/// draws the same.
pub(crate) fn caption_rows(table: &CaptionTable, images: &[i64], uncond_prob: f64, seed: u64, step: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0xD134_2543_DE82_EF95) ^ 0x6361_7074);
    images
        .iter()
        .map(|&i| {
            let u = uniform_0_1(&mut rng);
            let opts = &table.per_image[i as usize];
            let pick = opts[(rng.next_u64() % opts.len() as u64) as usize];
            if u < uncond_prob {
                0
            } else {
                pick
            }
        })
        .collect()
}

/// The group of an image by its name: the emoji without its skin-tone suffix (`thumbsup_tone2` and
/// `thumbsup_tone2-5` -> `thumbsup`); other names are their own group.
fn group_of(name: &str) -> &str {
    name.split("_tone").next().unwrap_or(name)
}

/// Cumulative sampling weights that give every group of `names` the same total weight (1 / group size per
/// image), normalised to end at 1.
pub(crate) fn group_weights(names: &[String]) -> Vec<f64> {
    let mut size = std::collections::HashMap::new();
    for n in names {
        *size.entry(group_of(n)).or_insert(0usize) += 1;
    }
    let mut acc = 0.0;
    let mut cum: Vec<f64> = names
        .iter()
        .map(|n| {
            acc += 1.0 / size[group_of(n)] as f64;
            acc
        })
        .collect();
    cum.iter_mut().for_each(|c| *c /= acc);
    cum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batches::weighted_batch;

    #[test]
    fn balanced_batches_draw_each_group_equally() {
        assert_eq!(group_of("thumbsup_tone2"), "thumbsup");
        assert_eq!(group_of("couple_tone1-5"), "couple");
        assert_eq!(group_of("apple"), "apple");
        // One group of 1 (apple) and one of 4 (a hand and its tones): half the draws each.
        let names: Vec<String> =
            ["apple", "hand", "hand_tone1", "hand_tone2", "hand_tone3"].iter().map(|s| s.to_string()).collect();
        let cum = group_weights(&names);
        assert!((cum[4] - 1.0).abs() < 1e-12 && (cum[0] - 0.5).abs() < 1e-12);
        let mut count = [0usize; 5];
        for step in 0..200 {
            for i in weighted_batch(&cum, 64, 7, step) {
                count[i as usize] += 1;
            }
        }
        let total = 200.0 * 64.0;
        assert!((count[0] as f64 / total - 0.5).abs() < 0.02, "{count:?}");
        for &c in &count[1..] {
            assert!((c as f64 / total - 0.125).abs() < 0.02, "{count:?}");
        }
    }
}
