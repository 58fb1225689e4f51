//! Host pixels <-> model tensors, PNG I/O, and image grids.
//!
//! Host images are 8-bit, rows top to bottom, channels interleaved (grey, RGB or RGBA). Model tensors are
//! NCHW f32, normalised as the manifest says: value = (pixel / 255 - mean) / std.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::ImageSpec;

/// The largest side, in pixels, of an image file [`Image::load`] / [`Image::decode`] accept (the largest
/// image the library's limits let through, `limits::MAX_ITEM_VALUES` = 4096 x 4096 x 4).
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// The largest image file [`Image::load`] reads: far above any PNG of [`MAX_IMAGE_SIDE`] pixels a side.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// An 8-bit image owned by Rust. `data.len() == width * height * channels`, rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 = grey, 3 = RGB, 4 = RGBA.
    pub channels: u32,
    pub data: Vec<u8>,
}

impl Image {
    /// Checks the buffer against the dimensions.
    pub fn new(width: u32, height: u32, channels: u32, data: Vec<u8>) -> Result<Image> {
        if ![1, 3, 4].contains(&channels) {
            return Err(Error::invalid(format!("channels must be 1, 3 or 4, not {channels}")));
        }
        let want = width as usize * height as usize * channels as usize;
        if width == 0 || height == 0 || data.len() != want {
            return Err(Error::invalid(format!(
                "image {width}x{height}x{channels} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image { width, height, channels, data })
    }

    /// Converts to another channel count (grey <-> RGB <-> RGBA; grey from colour uses Rec. 601 luma;
    /// alpha is dropped by compositing over black, the background of the data sets trained so far).
    pub fn to_channels(&self, channels: u32) -> Result<Image> {
        if channels == self.channels {
            return Ok(self.clone());
        }
        let px = (self.width * self.height) as usize;
        let mut out = Vec::with_capacity(px * channels as usize);
        for p in self.data.chunks_exact(self.channels as usize) {
            let (r, g, b, a) = match p.len() {
                1 => (p[0], p[0], p[0], 255),
                3 => (p[0], p[1], p[2], 255),
                _ => (p[0], p[1], p[2], p[3]),
            };
            let over = |c: u8| if channels == 4 { c } else { ((c as u32 * a as u32 + 127) / 255) as u8 };
            match channels {
                1 => {
                    let y = 0.299 * over(r) as f32 + 0.587 * over(g) as f32 + 0.114 * over(b) as f32;
                    out.push(y.round().clamp(0.0, 255.0) as u8)
                }
                3 => out.extend([over(r), over(g), over(b)]),
                4 => out.extend([r, g, b, a]),
                _ => return Err(Error::invalid(format!("channels must be 1, 3 or 4, not {channels}"))),
            }
        }
        Image::new(self.width, self.height, channels, out)
    }

    /// Reads a PNG (any colour type the `image` crate decodes; 16-bit is reduced to 8) from a regular file
    /// of at most [`MAX_IMAGE_FILE_BYTES`], decoded as [`Image::decode`] does.
    ///
    /// Errors: [`Error::Io`] for a file that is missing or unreadable, [`Error::Image`] for anything that is
    /// not a regular file (a FIFO is refused without blocking), too large, or not a decodable image.
    pub fn load(path: &Path) -> Result<Image> {
        let bytes = crate::files::read_regular(path, MAX_IMAGE_FILE_BYTES, "image", "").map_err(|e| match e {
            Error::ModelNotFound { path, .. } => {
                Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
            }
            Error::InvalidModel(m) => Error::Image(m),
            e => e,
        })?;
        Image::decode(&bytes).map_err(|e| match e {
            Error::Image(m) => Error::Image(format!("{}: {m}", crate::limits::quote_path(path))),
            e => e,
        })
    }

    /// Decodes an encoded image (PNG or GIF, the formats this build reads) from memory. The declared size is
    /// checked before any pixel is decoded: at most [`MAX_IMAGE_SIDE`] pixels a side, and the decoder's
    /// allocations are bounded too, so that a small file declaring a huge image (a "decompression bomb")
    /// is an error, not gigabytes of memory.
    pub fn decode(bytes: &[u8]) -> Result<Image> {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::Image(format!("reading the image header: {e}")))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        // 16-bit RGBA at the largest size, plus the 8-bit copy made from it.
        limits.max_alloc = Some(3 * (MAX_IMAGE_SIDE as u64).pow(2) * 4 * 2);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| Error::Image(crate::limits::clip(&e.to_string())))?;
        let (w, h) = (img.width(), img.height());
        match img.color().channel_count() {
            1 | 2 => Image::new(w, h, 1, img.into_luma8().into_raw()),
            3 => Image::new(w, h, 3, img.into_rgb8().into_raw()),
            _ => Image::new(w, h, 4, img.into_rgba8().into_raw()),
        }
    }

    /// Writes a PNG.
    pub fn save(&self, path: &Path) -> Result<()> {
        let color = match self.channels {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            _ => image::ExtendedColorType::Rgba8,
        };
        image::save_buffer(path, &self.data, self.width, self.height, color)
            .map_err(|e| Error::Image(format!("{}: {e}", path.display())))
    }
}

impl Image {
    /// Nearest-neighbour enlargement by an integer factor (1 = a copy): small sprites stay crisp.
    pub fn upscale(&self, f: u32) -> Image {
        let (w, h, c, f) = (self.width as usize, self.height as usize, self.channels as usize, f.max(1) as usize);
        let mut data = Vec::with_capacity(w * h * c * f * f);
        for y in 0..h * f {
            for x in 0..w * f {
                let s = ((y / f) * w + x / f) * c;
                data.extend_from_slice(&self.data[s..s + c]);
            }
        }
        Image { width: (w * f) as u32, height: (h * f) as u32, channels: self.channels, data }
    }
}

/// Writes `frames` (same size) as a looping animated GIF, `delay_ms` per frame. Transparent pixels (alpha
/// below 128) stay transparent; GIF's 256-colour palette is chosen per frame.
pub fn save_gif(frames: &[Image], delay_ms: u32, path: &Path) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let first = frames.first().ok_or_else(|| Error::invalid("a GIF needs at least one frame"))?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    let err = |e: image::ImageError| Error::Image(format!("{}: {e}", path.display()));
    enc.set_repeat(Repeat::Infinite).map_err(err)?;
    for f in frames {
        if (f.width, f.height) != (first.width, first.height) {
            return Err(Error::invalid("GIF frames must all have the same size"));
        }
        let rgba = f.to_channels(4)?;
        let buf = image::RgbaImage::from_raw(f.width, f.height, rgba.data)
            .ok_or_else(|| Error::Image("GIF frame buffer size".into()))?;
        let delay = image::Delay::from_numer_denom_ms(delay_ms, 1);
        enc.encode_frame(image::Frame::from_parts(buf, 0, 0, delay)).map_err(err)?;
    }
    Ok(())
}

/// Host images -> one NCHW model tensor. Every image must have exactly the set's size and channels.
/// RGBA: the colour of a fully transparent pixel is meaningless and taken as 0, as in the training data (PNG
/// writers leave anything there: Twemoji's files hold white, which put a 64 px emoji 6 dB off its encoding).
pub fn to_model(images: &[Image], spec: &ImageSpec) -> Result<Vec<f32>> {
    let (c, h, w) = (spec.channels as usize, spec.height as usize, spec.width as usize);
    let mut out = Vec::with_capacity(images.len() * c * h * w);
    for (k, img) in images.iter().enumerate() {
        if (img.width, img.height, img.channels) != (spec.width, spec.height, spec.channels) {
            return Err(Error::invalid(format!(
                "image {k} is {}x{}x{}, the model set expects {}x{}x{} (width x height x channels)",
                img.width, img.height, img.channels, spec.width, spec.height, spec.channels
            )));
        }
        for ch in 0..c {
            out.extend(img.data.chunks_exact(c).map(|px| (visible(px, ch) as f32 / 255.0 - spec.mean) / spec.std));
        }
    }
    Ok(out)
}

/// Channel `ch` of pixel `px` with the colour of a fully transparent RGBA pixel taken as 0.
fn visible(px: &[u8], ch: usize) -> u8 {
    if px.len() == 4 && ch < 3 && px[3] == 0 {
        0
    } else {
        px[ch]
    }
}

/// One NCHW model tensor -> `n` host images (values clamped to [0, 255] and rounded).
pub fn from_model(data: &[f32], n: usize, spec: &ImageSpec) -> Result<Vec<Image>> {
    let (c, h, w) = (spec.channels as usize, spec.height as usize, spec.width as usize);
    if data.len() != n * c * h * w {
        return Err(Error::invalid(format!("tensor has {} values, {n} images of {c}x{h}x{w} expected", data.len())));
    }
    data.chunks_exact(c * h * w)
        .map(|chw| {
            let mut px = vec![0u8; c * h * w];
            for ch in 0..c {
                for i in 0..h * w {
                    let v = (chw[ch * h * w + i] * spec.std + spec.mean) * 255.0;
                    px[i * c + ch] = if v.is_nan() { 0 } else { v.round().clamp(0.0, 255.0) as u8 };
                }
            }
            Image::new(spec.width, spec.height, spec.channels, px)
        })
        .collect()
}

/// Lays images of one size out in a grid with `cols` columns and a `gap`-pixel border of `background`.
pub fn grid(images: &[Image], cols: usize, gap: u32, background: u8) -> Result<Image> {
    let first = images.first().ok_or_else(|| Error::invalid("grid of no images"))?;
    let cols = cols.clamp(1, images.len());
    let rows = images.len().div_ceil(cols);
    let (w, h, c) = (first.width, first.height, first.channels);
    let gw = cols as u32 * (w + gap) + gap;
    let gh = rows as u32 * (h + gap) + gap;
    let mut data = vec![background; (gw * gh * c) as usize];
    if c == 4 {
        data.chunks_exact_mut(4).for_each(|p| p[3] = 255);
    }
    for (k, img) in images.iter().enumerate() {
        if (img.width, img.height, img.channels) != (w, h, c) {
            return Err(Error::invalid("grid images must share one size and channel count"));
        }
        let (x0, y0) = (gap + (k % cols) as u32 * (w + gap), gap + (k / cols) as u32 * (h + gap));
        for y in 0..h {
            let src = (y * w * c) as usize..((y + 1) * w * c) as usize;
            let dst = (((y0 + y) * gw + x0) * c) as usize;
            data[dst..dst + (w * c) as usize].copy_from_slice(&img.data[src]);
        }
    }
    Image::new(gw, gh, c, data)
}

/// Peak signal-to-noise ratio in dB between two equally sized 8-bit images (peak 255). RGBA: the colour of
/// fully transparent pixels counts as 0 in both (it cannot be seen; see [`to_model`]).
pub fn psnr(a: &Image, b: &Image) -> Result<f64> {
    if a.data.len() != b.data.len() || a.channels != b.channels {
        return Err(Error::invalid("psnr: images of different sizes"));
    }
    let c = a.channels as usize;
    let mse = a
        .data
        .chunks_exact(c)
        .zip(b.data.chunks_exact(c))
        .flat_map(|(p, q)| (0..c).map(move |ch| (visible(p, ch) as f64 - visible(q, ch) as f64).powi(2)))
        .sum::<f64>()
        / a.data.len() as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE) of a PNG chunk's type and data.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// A PNG whose header declares `w` x `h` RGBA8 pixels, followed by a few bytes of (empty) data.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            png.extend_from_slice(&body);
            png.extend_from_slice(&crc32(&body).to_be_bytes());
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        png
    }

    #[test]
    fn a_small_file_declaring_a_huge_image_is_refused_before_decoding() {
        let t = std::time::Instant::now();
        for (w, h) in [(100_000, 100_000), (MAX_IMAGE_SIDE + 1, 1), (1, MAX_IMAGE_SIDE + 1), (u32::MAX / 4, 2)] {
            let err = Image::decode(&png_declaring(w, h)).unwrap_err();
            assert!(matches!(err, Error::Image(_)), "{w}x{h}: {err}");
            assert!(err.to_string().contains("limit"), "{w}x{h}: {err}");
        }
        // The checker itself: a declared size within the limits gets as far as the (truncated) pixel data.
        let err = Image::decode(&png_declaring(4, 4)).unwrap_err().to_string();
        assert!(!err.contains("limit"), "{err}");
        assert!(t.elapsed().as_secs() < 5, "nothing of the declared size is allocated");
    }

    #[test]
    fn load_refuses_what_is_not_a_regular_image_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Image::load(&dir.path().join("none.png")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
        let err = Image::load(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::Image(m) if m.contains("directory")), "{err}");
        let fifo = dir.path().join("fifo.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Image::load(&fifo).unwrap_err(); // returns at once: never waits for a writer
        assert!(matches!(&err, Error::Image(m) if m.contains("FIFO")), "{err}");
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not a picture at all").unwrap();
        let err = Image::load(&junk).unwrap_err();
        assert!(matches!(&err, Error::Image(m) if m.contains("junk.png")), "{err}");
        let good = dir.path().join("good.png");
        let img = Image::new(3, 2, 3, (0..18).collect()).unwrap();
        img.save(&good).unwrap();
        assert_eq!(Image::load(&good).unwrap(), img);
    }

    fn spec(c: u32) -> ImageSpec {
        ImageSpec { width: 3, height: 2, channels: c, mean: 0.5, std: 0.5 }
    }

    #[test]
    fn model_round_trip_is_exact_for_u8() {
        let img = Image::new(3, 2, 3, (0..18).map(|i| (i * 14) as u8).collect()).unwrap();
        let t = to_model(std::slice::from_ref(&img), &spec(3)).unwrap();
        assert_eq!(t.len(), 18);
        assert_eq!(t[0], -1.0); // pixel 0 channel 0
        assert_eq!(from_model(&t, 1, &spec(3)).unwrap()[0], img);
    }

    /// RGBA: what lies under a fully transparent pixel is not seen; the model gets colour 0 there (as in the
    /// training data) and PSNR ignores it, while any visible difference still counts.
    #[test]
    fn the_colour_of_fully_transparent_pixels_is_taken_as_zero() {
        let spec = ImageSpec { width: 2, height: 1, channels: 4, mean: 0.5, std: 0.5 };
        let white_under = Image::new(2, 1, 4, vec![255, 255, 255, 0, 10, 20, 30, 1]).unwrap();
        let x = to_model(std::slice::from_ref(&white_under), &spec).unwrap();
        // NCHW: R of both pixels, then G, B, A. The transparent pixel's colour is -1 (pixel 0); the barely
        // visible one (alpha 1) keeps its colour.
        let v = |p: u8| p as f32 / 255.0 * 2.0 - 1.0;
        assert_eq!(x, vec![-1.0, v(10), -1.0, v(20), -1.0, v(30), v(0), v(1)]);
        let black_under = Image::new(2, 1, 4, vec![0, 0, 0, 0, 10, 20, 30, 1]).unwrap();
        assert_eq!(psnr(&white_under, &black_under).unwrap(), f64::INFINITY);
        let visible = Image::new(2, 1, 4, vec![0, 0, 0, 0, 10, 20, 31, 1]).unwrap();
        assert!(psnr(&white_under, &visible).unwrap().is_finite());
        // Grey and RGB images have no alpha: every value counts.
        let (a, b) = (Image::new(1, 1, 3, vec![0, 0, 0]).unwrap(), Image::new(1, 1, 3, vec![0, 0, 1]).unwrap());
        assert!(psnr(&a, &b).unwrap().is_finite());
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let img = Image::new(3, 2, 1, vec![0; 6]).unwrap();
        assert!(to_model(&[img], &spec(3)).is_err());
        assert!(Image::new(3, 2, 1, vec![0; 5]).is_err());
        assert!(Image::new(3, 2, 2, vec![0; 12]).is_err());
        assert!(from_model(&[0.0; 5], 1, &spec(1)).is_err());
    }

    #[test]
    fn grid_places_images() {
        let a = Image::new(1, 1, 1, vec![10]).unwrap();
        let b = Image::new(1, 1, 1, vec![20]).unwrap();
        let g = grid(&[a, b], 2, 1, 0).unwrap();
        assert_eq!((g.width, g.height), (5, 3));
        assert_eq!(g.data[5 + 1], 10);
        assert_eq!(g.data[5 + 3], 20);
    }

    #[test]
    fn channel_conversion() {
        let rgba = Image::new(1, 1, 4, vec![255, 255, 255, 0]).unwrap();
        assert_eq!(rgba.to_channels(1).unwrap().data, vec![0]);
        let grey = Image::new(1, 1, 1, vec![77]).unwrap();
        assert_eq!(grey.to_channels(3).unwrap().data, vec![77, 77, 77]);
    }
}
