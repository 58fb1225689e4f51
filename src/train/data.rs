//! The trainers' data as tensors: Fashion-MNIST (read by [`crate::fashion`]) and the emoji, in model
//! space [-1, 1], with captions for the text-conditioned U-Net. The emoji come in two versions
//! ([`EmojiVersion`]): v1, the Noto emoji (what `models/emoji` was trained on, and what [`load_for_shape`]
//! gives), and v2, several art styles at 64x64 ([`super::emoji_styles`], [`load_emoji_for`]).

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
pub use crate::fashion::{Split, DEFAULT_DIR};

/// One split in memory.
pub struct Dataset {
    /// [N, C, H, W] f32 in [-1, 1]: Fashion-MNIST's pixel / 255 so mapped (the manifest's mean = std = 0.5).
    pub images: Tensor,
    /// [N] i64 class ids (Fashion-MNIST's 0..10, the emoji's categories).
    pub labels: Tensor,
}

impl Dataset {
    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads one Fashion-MNIST split from `dir` (see [`crate::fashion::load`]) as tensors: images
/// [N, 1, 28, 28] in [-1, 1], labels [N].
pub fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let raw = crate::fashion::load(dir, split, limit)?;
    // u8 [n*784] -> f32 [n, 1, 28, 28] in [-1, 1]
    let images = Tensor::from_slice(&raw.images).to_kind(Kind::Float).view([raw.n as i64, 1, 28, 28]) / 127.5 - 1.0;
    let labels = Tensor::from_slice(&raw.labels).to_kind(Kind::Int64);
    Ok(Dataset { images, labels })
}

/// A data set with captions: images in model space plus, per image, its captions (several phrasings).
pub struct Captioned {
    pub data: Dataset,
    pub captions: Vec<Vec<String>>,
    /// A stable name per image (emoji short name, or Fashion-MNIST class-index).
    pub names: Vec<String>,
}

/// Loads the images a model of `shape` = [channels, height, width] trains on: [1, 28, 28] is Fashion-MNIST
/// from `dir` (test split = its 10 000 test images), 4 channels are the emoji from `dir` (test split = the
/// held-out emoji, never trained on) in the data version `emoji` (v1: Noto only; v2: the styles it names),
/// box-filtered down to height x width.
pub fn load_for_shape(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    shape: [i64; 3],
    emoji: &EmojiVersion,
) -> Result<Captioned> {
    match shape {
        [1, 28, 28] => {
            let data = load(dir, split, limit)?;
            let labels = Vec::<i64>::try_from(&data.labels).map_err(crate::train::torch_err("labels"))?;
            let captions = labels.iter().map(|&l| super::captions::fashion_captions(l as usize)).collect();
            let names = labels.iter().enumerate().map(|(i, l)| format!("{l}-{i}")).collect();
            Ok(Captioned { data, captions, names })
        }
        [4, h, w] if h > 0 && w > 0 && h <= 64 && w <= 64 && 64 % h == 0 && 64 % w == 0 && h == w => {
            load_emoji_for(dir, split, limit, h as u32, emoji)
        }
        other => Err(Error::invalid(format!(
            "no data set for images of shape {other:?} (Fashion-MNIST is [1, 28, 28], the emoji [4, s, s] with s dividing 64)"
        ))),
    }
}

/// Which emoji data a trainer reads: what a `--data-version v1|v2` and `--styles noto,twemoji,openmoji`
/// pair of options would select ([`EmojiVersion::from_args`]).
/// Which emoji data a training run reads, as its config and checkpoint record it (flattened into them as
/// `emoji_data` and `styles`; absent in checkpoints older than v2: v1).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct EmojiChoice {
    /// "v1" (Noto, what the shipped models/emoji was trained on) or "v2" (several art styles); ignored for
    /// Fashion-MNIST.
    #[serde(default = "EmojiChoice::v1")]
    pub emoji_data: String,
    /// The v2 styles (comma-separated, or "all"); None: v2's default three.
    #[serde(default)]
    pub styles: Option<String>,
}

impl Default for EmojiChoice {
    fn default() -> Self {
        EmojiChoice { emoji_data: Self::v1(), styles: None }
    }
}

impl EmojiChoice {
    fn v1() -> String {
        "v1".into()
    }

    /// The data version this names (an error for an unknown version or styles with v1).
    pub fn version(&self) -> Result<EmojiVersion> {
        EmojiVersion::from_args(&self.emoji_data, self.styles.as_deref())
    }

    /// What the data is, for a manifest's `training.data` of an emoji set of `size` px.
    pub fn describe(&self, size: i64) -> String {
        match self.version() {
            Ok(EmojiVersion::V2(styles)) => format!(
                "emoji v2: Noto (Apache-2.0), Twemoji (CC-BY 4.0) and OpenMoji (CC-BY-SA 4.0) art from npm \
                 emoji-datasource-google@16.0.0, emoji-datasource-twitter@16.0.0 and openmoji@17.0.0, styles {}, \
                 {size}x{size} RGBA, held-out emoji excluded (models/emoji/DATA-v2.md)",
                styles.iter().map(|s| s.id()).collect::<Vec<_>>().join(",")
            ),
            _ => format!(
                "Noto emoji (Google, Apache-2.0) from npm emoji-datasource-google@16.0.0, 64x64 RGBA box-filtered to \
                 {size}x{size}, held-out emoji excluded"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmojiVersion {
    /// The Noto emoji alone, names without a style (`thumbsup_tone2`): the data of `models/emoji`.
    #[default]
    V1,
    /// Emoji v2: these styles (at least one, in [`super::emoji_styles::EmojiStyle::ALL`] order), names
    /// `<style>.<name>`, captions with and without style words.
    V2(Vec<super::emoji_styles::EmojiStyle>),
}

impl EmojiVersion {
    /// From a version ("v1", "v2"; "1", "2") and an optional comma-separated style list (v2 only; default
    /// [`super::emoji_styles::DEFAULT_STYLES`]).
    pub fn from_args(version: &str, styles: Option<&str>) -> Result<Self> {
        match (version.trim_start_matches('v'), styles) {
            ("1", None) => Ok(EmojiVersion::V1),
            ("1", Some(_)) => Err(Error::invalid("--styles needs emoji data version 2 (v1 is Noto only)")),
            ("2", None) => Ok(EmojiVersion::V2(super::emoji_styles::DEFAULT_STYLES.to_vec())),
            ("2", Some(list)) => Ok(EmojiVersion::V2(super::emoji_styles::parse_styles(list)?)),
            _ => Err(Error::invalid(format!("unknown emoji data version {version:?} (v1 or v2)"))),
        }
    }
}

/// Loads the emoji of `dir` (`.deps/emoji`) in `version` as a [N, 4, size, size] model-space set: the
/// training split, or for [`Split::Test`] the held-out emoji (in every style for v2). `size` divides 64; 64
/// keeps the images as they are. v1 at size 32 is what [`load_for_shape`] gives for [4, 32, 32].
pub fn load_emoji_for(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    size: u32,
    version: &EmojiVersion,
) -> Result<Captioned> {
    let (train, held_out) = match version {
        EmojiVersion::V1 => super::captions::load_emoji(dir)?,
        EmojiVersion::V2(styles) => {
            let d = super::emoji_styles::load_emoji_styles(dir, styles)?;
            (d.train, d.held_out)
        }
    };
    emoji_dataset(if split == Split::Train { &train } else { &held_out }, size, limit)
}

/// The emoji (64x64 straight-alpha RGBA) as a [N, 4, size, size] model-space tensor. Downscaling averages
/// premultiplied colour (so that transparent pixels, whose colour is meaningless, do not darken the edges),
/// then divides by the averaged alpha again; fully transparent results get colour 0. At `size` 64 every
/// value is exactly (pixel / 255 - 0.5) / 0.5.
pub fn emoji_dataset(set: &super::captions::CaptionedSet, size: u32, limit: Option<usize>) -> Result<Captioned> {
    let (w, h, c) = (set.width as usize, set.height as usize, set.channels as usize);
    if c != 4 || w != h || size == 0 || w % size as usize != 0 {
        return Err(Error::invalid(format!("emoji are {w}x{h}x{c}, cannot make {size}x{size} RGBA of them")));
    }
    let per = w * h * c;
    let total = set.pixels.len() / per;
    let n = limit.map_or(total, |l| l.min(total));
    if n == 0 {
        return Err(Error::invalid("no emoji selected (--limit 0, or an empty set)"));
    }
    let (s, f) = (size as usize, w / size as usize);
    let mut out = vec![0f32; n * 4 * s * s];
    if f == 1 {
        // No filtering: straight pixels (transparent ones already have colour 0), HWC -> CHW.
        for i in 0..n {
            for (k, p) in set.pixels[i * per..(i + 1) * per].chunks_exact(4).enumerate() {
                for ch in 0..4 {
                    out[(i * 4 + ch) * s * s + k] = p[ch] as f32 / 255.0 * 2.0 - 1.0;
                }
            }
        }
    }
    for i in (0..n).filter(|_| f > 1) {
        let img = &set.pixels[i * per..(i + 1) * per];
        for y in 0..s {
            for x in 0..s {
                let mut acc = [0f32; 4];
                for dy in 0..f {
                    for dx in 0..f {
                        let p = &img[((y * f + dy) * w + x * f + dx) * 4..][..4];
                        let a = p[3] as f32 / 255.0;
                        for k in 0..3 {
                            acc[k] += p[k] as f32 / 255.0 * a;
                        }
                        acc[3] += a;
                    }
                }
                let area = (f * f) as f32;
                let a = acc[3] / area;
                for k in 0..4 {
                    let v = if k == 3 {
                        a
                    } else if a > 0.0 {
                        (acc[k] / area / a).min(1.0)
                    } else {
                        0.0
                    };
                    // [0, 1] -> model space [-1, 1], channel-planar.
                    out[((i * 4 + k) * s + y) * s + x] = v * 2.0 - 1.0;
                }
            }
        }
    }
    let images = Tensor::from_slice(&out).view([n as i64, 4, s as i64, s as i64]);
    let labels = Tensor::from_slice(&set.labels[..n].iter().map(|&l| l as i64).collect::<Vec<_>>());
    Ok(Captioned {
        data: Dataset { images, labels },
        captions: set.captions[..n].to_vec(),
        names: set.names[..n].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::vae_run::TrainConfig;

    #[test]
    fn emoji_choice_is_flattened_into_configs_and_old_checkpoints_read_as_v1() {
        let cfg = TrainConfig {
            emoji: EmojiChoice { emoji_data: "v2".into(), styles: Some("noto,twemoji".into()) },
            ..TrainConfig::default()
        };
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!((v["emoji_data"].as_str(), v["styles"].as_str()), (Some("v2"), Some("noto,twemoji")));
        assert!(v.get("emoji").is_none(), "flattened: {v}");
        let back: TrainConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, cfg);
        assert!(matches!(back.emoji.version().unwrap(), EmojiVersion::V2(s) if s.len() == 2));
        assert!(back.emoji.describe(64).contains("styles noto,twemoji, 64x64 RGBA"));
        // A checkpoint written before v2 has neither key: v1, the Noto data.
        let mut old = v;
        old.as_object_mut().unwrap().retain(|k, _| k != "emoji_data" && k != "styles");
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.emoji, EmojiChoice::default());
        assert_eq!(old.emoji.version().unwrap(), EmojiVersion::V1);
        assert!(old.emoji.describe(32).starts_with("Noto emoji"));
        let bad = EmojiChoice { emoji_data: "v1".into(), styles: Some("noto".into()) };
        assert!(bad.version().is_err());
    }
}
