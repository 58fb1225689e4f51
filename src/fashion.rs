//! Fashion-MNIST from its IDX files (as Debian's `dataset-fashion-mnist` installs them, gzipped or not),
//! without torch: the CLI's demo reads test images from here, the trainer turns them into tensors
//! (`train::data`).
//!
//! IDX: a big-endian header (two zero bytes, the element type 0x08 = u8, the number of dimensions, then
//! each dimension as a u32) followed by the raw bytes. Images are [N, 28, 28] (magic 0x00000803), labels
//! [N] (magic 0x00000801).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` puts the files (`scripts/setup.sh data` installs it).
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten class names, in label order.
pub const CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

pub const IMAGES_MAGIC: u32 = 0x0803;
pub const LABELS_MAGIC: u32 = 0x0801;

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

/// Labelled images of one split as bytes: `images` is [n, 28, 28] u8 row-major, `labels` [n] in 0..10.
pub struct LabelledImages {
    pub n: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
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
pub fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<LabelledImages> {
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
        return Err(Error::invalid("no examples selected (limit 0?)"));
    }
    let mut images = images.data;
    images.truncate(keep * 28 * 28);
    let mut labels = labels.data;
    labels.truncate(keep);
    Ok(LabelledImages { n: keep, images, labels })
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
