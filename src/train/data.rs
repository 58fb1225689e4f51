//! Fashion-MNIST from its IDX files (as Debian's `dataset-fashion-mnist` installs them, gzipped or not).
//!
//! IDX: a big-endian header (two zero bytes, the element type 0x08 = u8, the number of dimensions, then
//! each dimension as a u32) followed by the raw bytes. Images are [N, 28, 28] (magic 0x00000803), labels
//! [N] (magic 0x00000801).

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` puts the files (`scripts/setup.sh data` installs it).
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

const IMAGES_MAGIC: u32 = 0x0803;
const LABELS_MAGIC: u32 = 0x0801;

/// The training (60 000 images) or the test (10 000) split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// One split in memory.
pub struct Dataset {
    /// [N, 1, 28, 28] f32, pixel / 255 mapped to [-1, 1] (the manifest's mean = std = 0.5).
    pub images: Tensor,
    /// [N] i64 class ids 0..10 (unused by the VAE; the classifier and U-Net conditioning will read them).
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

/// A parsed IDX file: its dimensions and its u8 payload.
#[derive(Debug)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed); `magic` is the expected type-and-rank word.
pub fn parse_idx(bytes: &[u8], magic: u32, what: &str) -> Result<Idx> {
    let bad = |m: String| Error::invalid(format!("{what}: {m}"));
    if bytes.len() < 4 {
        return Err(bad("shorter than an IDX header".into()));
    }
    let word = |i: usize| -> Option<u32> { bytes.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) };
    let got = word(0).unwrap_or(0);
    if got != magic {
        return Err(bad(format!("magic number {got:#010x}, expected {magic:#010x} (not this kind of IDX file)")));
    }
    let rank = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(rank);
    for k in 0..rank {
        let d = word(4 + 4 * k).ok_or_else(|| bad("header cut short".into()))?;
        dims.push(d as usize);
    }
    let header = 4 + 4 * rank;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != n {
        return Err(bad(format!("dimensions {dims:?} need {n} bytes of data, the file has {}", bytes.len() - header)));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Reads `dir/name.gz` (or `dir/name` when not gzipped).
fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    let mut out = Vec::new();
    if gz.is_file() {
        let f = std::fs::File::open(&gz).map_err(|e| Error::io(&gz, e))?;
        flate2::read::GzDecoder::new(f).read_to_end(&mut out).map_err(|e| Error::io(&gz, e))?;
        Ok((gz, out))
    } else if plain.is_file() {
        out = std::fs::read(&plain).map_err(|e| Error::io(&plain, e))?;
        Ok((plain, out))
    } else {
        Err(Error::invalid(format!(
            "Fashion-MNIST file {} not found (run scripts/setup.sh data, or pass --data DIR)",
            gz.display()
        )))
    }
}

/// Loads one split from `dir`, keeping only the first `limit` examples when given.
pub fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let p = split.prefix();
    let (ipath, ibytes) = read_maybe_gz(dir, &format!("{p}-images-idx3-ubyte"))?;
    let (lpath, lbytes) = read_maybe_gz(dir, &format!("{p}-labels-idx1-ubyte"))?;
    let images = parse_idx(&ibytes, IMAGES_MAGIC, &ipath.display().to_string())?;
    let labels = parse_idx(&lbytes, LABELS_MAGIC, &lpath.display().to_string())?;
    let n = images.dims[0];
    if images.dims[1..] != [28, 28] {
        return Err(Error::invalid(format!("{}: images are {:?}, expected 28x28", ipath.display(), &images.dims[1..])));
    }
    if labels.dims[0] != n {
        return Err(Error::invalid(format!("{}: {} labels for {n} images", lpath.display(), labels.dims[0])));
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(Error::invalid(format!("{}: label {bad} outside 0..=9", lpath.display())));
    }
    let keep = limit.map_or(n, |l| l.min(n));
    if keep == 0 {
        return Err(Error::invalid("no examples selected (--limit 0?)"));
    }
    let pixels = &images.data[..keep * 28 * 28];
    // u8 [keep*784] -> f32 [keep, 1, 28, 28] in [-1, 1]
    let images = Tensor::from_slice(pixels).to_kind(Kind::Float).view([keep as i64, 1, 28, 28]) / 127.5 - 1.0;
    let labels = Tensor::from_slice(&labels.data[..keep]).to_kind(Kind::Int64);
    Ok(Dataset { images, labels })
}

/// Where `scripts/setup.sh emoji` puts the Noto emoji and their metadata.
pub const EMOJI_DIR: &str = ".deps/emoji";

/// A data set with captions: images in model space plus, per image, its captions (several phrasings).
pub struct Captioned {
    pub data: Dataset,
    pub captions: Vec<Vec<String>>,
    /// A stable name per image (emoji short name, or Fashion-MNIST class-index).
    pub names: Vec<String>,
}

/// Loads the images a model of `shape` = [channels, height, width] trains on: [1, 28, 28] is Fashion-MNIST
/// from `dir` (test split = its 10 000 test images), 4 channels are the Noto emoji from `dir` (test split =
/// the held-out emoji, never trained on), box-filtered down to height x width.
pub fn load_for_shape(dir: &Path, split: Split, limit: Option<usize>, shape: [i64; 3]) -> Result<Captioned> {
    match shape {
        [1, 28, 28] => {
            let data = load(dir, split, limit)?;
            let labels = Vec::<i64>::try_from(&data.labels).map_err(crate::train::torch_err("labels"))?;
            let captions = labels.iter().map(|&l| super::captions::fashion_captions(l as usize)).collect();
            let names = labels.iter().enumerate().map(|(i, l)| format!("{l}-{i}")).collect();
            Ok(Captioned { data, captions, names })
        }
        [4, h, w] if h > 0 && w > 0 && h <= 64 && w <= 64 && 64 % h == 0 && 64 % w == 0 && h == w => {
            let (train, held_out) = super::captions::load_emoji(dir)?;
            let set = if split == Split::Train { train } else { held_out };
            emoji_dataset(&set, h as u32, limit)
        }
        other => Err(Error::invalid(format!(
            "no data set for images of shape {other:?} (Fashion-MNIST is [1, 28, 28], the emoji [4, s, s] with s dividing 64)"
        ))),
    }
}

/// The emoji (64x64 straight-alpha RGBA) as a [N, 4, size, size] model-space tensor. Downscaling averages
/// premultiplied colour (so that transparent pixels, whose colour is meaningless, do not darken the edges),
/// then divides by the averaged alpha again; fully transparent results get colour 0.
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
    for i in 0..n {
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

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn parses_and_validates_idx() {
        let ok = idx(IMAGES_MAGIC, &[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let p = parse_idx(&ok, IMAGES_MAGIC, "t").unwrap();
        assert_eq!(p.dims, vec![2, 2, 2]);
        assert_eq!(p.data[7], 7);
        let e = parse_idx(&ok, LABELS_MAGIC, "t").unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        let short = idx(IMAGES_MAGIC, &[2, 2, 2], &[0; 7]);
        assert!(parse_idx(&short, IMAGES_MAGIC, "t").unwrap_err().to_string().contains("need 8 bytes"));
        assert!(parse_idx(&[0, 0], IMAGES_MAGIC, "t").is_err());
        assert!(parse_idx(&idx(IMAGES_MAGIC, &[2], &[]), IMAGES_MAGIC, "t").is_err());
    }

    #[test]
    fn missing_files_say_how_to_get_them() {
        let d = tempfile::tempdir().unwrap();
        let e = load(d.path(), Split::Test, None).err().unwrap().to_string();
        assert!(e.contains("setup.sh data"), "{e}");
    }
}
