//! Writing images into memory the host owns (a texture being uploaded, a frame buffer): the pixel format
//! (grey, RGB, RGBA, BGRA, linear RGBA float), the row order (top-down, or bottom-up as OpenGL and Unity
//! textures expect), premultiplied alpha or not, any row stride, and a resize to the host's size (nearest
//! for pixel art, or bilinear). [`Layout::required_bytes`] checks the geometry before a byte is written, so
//! a wrong size or stride is an error, never a write outside the host's buffer. Bytes of the buffer between
//! rows (stride padding) are left as they are. The C API's host-buffer outputs (issue 12) build on this.

use crate::error::{Error, Result};
use crate::image::{Image, MAX_IMAGE_SIDE};

/// How a host stores a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Gray8,
    Rgb8,
    Rgba8,
    /// Blue, green, red, alpha: the order of Windows bitmaps, Direct3D and many engines' textures.
    Bgra8,
    /// Four native-endian f32 per pixel, colour converted from sRGB to linear light, alpha as is.
    Rgba32F,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
            PixelFormat::Rgba32F => 16,
        }
    }
}

/// How an image is resized to the host's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Each output pixel copies the input pixel it falls in: crisp pixel art.
    Nearest,
    /// Linear interpolation between the four nearest input pixel centres, in premultiplied alpha (so that
    /// transparent pixels do not darken the edges of opaque ones).
    Bilinear,
}

/// The host's buffer for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the start of the next, at least `width * bytes per pixel`.
    pub stride: usize,
    pub format: PixelFormat,
    /// Rows bottom to top (the first row of the buffer is the image's last).
    pub bottom_up: bool,
    /// Colour multiplied by alpha.
    pub premultiplied: bool,
}

impl Layout {
    /// The bytes a buffer for this layout must hold: `(height - 1) * stride` plus one row's pixels.
    ///
    /// Errors: a zero side, a side over [`MAX_IMAGE_SIDE`], a stride smaller than a row of pixels, or a
    /// size that does not fit in memory's address range (`Error::InvalidArgument`, naming the field).
    pub fn required_bytes(&self) -> Result<usize> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > MAX_IMAGE_SIDE {
                return Err(Error::invalid(format!("{name} is {v}, out of range 1..={MAX_IMAGE_SIDE}")));
            }
        }
        let row = self.width as usize * self.format.bytes_per_pixel();
        if self.stride < row {
            return Err(Error::invalid(format!(
                "stride is {}, smaller than a row of {} {:?} pixels ({row} bytes)",
                self.stride, self.width, self.format
            )));
        }
        (self.height as usize - 1)
            .checked_mul(self.stride)
            .and_then(|b| b.checked_add(row))
            .ok_or_else(|| Error::invalid(format!("stride {} x height {} overflows", self.stride, self.height)))
    }
}

/// Writes `img` into `out` as `layout` says, resized with `filter` when the sizes differ. Colour images
/// written as grey use Rec. 601 luma, and alpha dropped (grey, RGB) is composited over black, as
/// [`Image::to_channels`] does. Nothing is written unless the layout and `out` pass their checks.
///
/// Errors: as [`Layout::required_bytes`], and `out` shorter than that.
pub fn write_into(img: &Image, layout: &Layout, filter: Filter, out: &mut [u8]) -> Result<()> {
    let need = layout.required_bytes()?;
    if out.len() < need {
        return Err(Error::invalid(format!(
            "the buffer has {} bytes; a {}x{} {:?} image with stride {} needs {need}",
            out.len(),
            layout.width,
            layout.height,
            layout.format,
            layout.stride
        )));
    }
    let sized = if (img.width, img.height) == (layout.width, layout.height) {
        img.clone()
    } else {
        resize(img, layout.width, layout.height, filter)?
    };
    let channels = match layout.format {
        PixelFormat::Gray8 => 1,
        PixelFormat::Rgb8 => 3,
        _ => 4,
    };
    let px = sized.to_channels(channels)?;
    let (w, bpp) = (layout.width as usize, layout.format.bytes_per_pixel());
    for y in 0..layout.height as usize {
        let src_row = &px.data[y * w * channels as usize..(y + 1) * w * channels as usize];
        let dst_y = if layout.bottom_up { layout.height as usize - 1 - y } else { y };
        let dst = &mut out[dst_y * layout.stride..dst_y * layout.stride + w * bpp];
        for (s, d) in src_row.chunks_exact(channels as usize).zip(dst.chunks_exact_mut(bpp)) {
            write_pixel(s, d, layout);
        }
    }
    Ok(())
}

/// One pixel of the set's channel count (1, 3 or 4, as the format wants) into its bytes.
fn write_pixel(s: &[u8], d: &mut [u8], layout: &Layout) {
    let pre = |c: u8, a: u8| if layout.premultiplied { ((c as u32 * a as u32 + 127) / 255) as u8 } else { c };
    match layout.format {
        PixelFormat::Gray8 | PixelFormat::Rgb8 => d.copy_from_slice(s),
        PixelFormat::Rgba8 => d.copy_from_slice(&[pre(s[0], s[3]), pre(s[1], s[3]), pre(s[2], s[3]), s[3]]),
        PixelFormat::Bgra8 => d.copy_from_slice(&[pre(s[2], s[3]), pre(s[1], s[3]), pre(s[0], s[3]), s[3]]),
        PixelFormat::Rgba32F => {
            let a = s[3] as f32 / 255.0;
            let k = if layout.premultiplied { a } else { 1.0 };
            let v = [srgb_to_linear(s[0]) * k, srgb_to_linear(s[1]) * k, srgb_to_linear(s[2]) * k, a];
            for (chunk, x) in d.chunks_exact_mut(4).zip(v) {
                chunk.copy_from_slice(&x.to_ne_bytes());
            }
        }
    }
}

/// The sRGB transfer function inverted: an 8-bit sRGB value as linear light in [0, 1].
pub fn srgb_to_linear(c: u8) -> f32 {
    let v = c as f32 / 255.0;
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// `img` at `width` x `height`, keeping its channel count.
pub fn resize(img: &Image, width: u32, height: u32, filter: Filter) -> Result<Image> {
    Layout {
        width,
        height,
        stride: width as usize * 4,
        format: PixelFormat::Rgba8,
        bottom_up: false,
        premultiplied: false,
    }
    .required_bytes()?;
    let src = img.to_channels(4)?;
    let (sw, sh) = (src.width as usize, src.height as usize);
    let (w, h) = (width as usize, height as usize);
    let at = |x: usize, y: usize| -> [f32; 4] {
        let p = &src.data[(y * sw + x) * 4..(y * sw + x) * 4 + 4];
        let a = p[3] as f32 / 255.0;
        [p[0] as f32 * a, p[1] as f32 * a, p[2] as f32 * a, p[3] as f32]
    };
    let mut data = crate::limits::try_vec(w * h * 4, "resized image")?;
    for y in 0..h {
        for x in 0..w {
            let v = match filter {
                Filter::Nearest => at(x * sw / w, y * sh / h),
                Filter::Bilinear => {
                    // The output pixel's centre in input coordinates, clamped to the input's pixel centres.
                    let fx = ((x as f32 + 0.5) * sw as f32 / w as f32 - 0.5).clamp(0.0, (sw - 1) as f32);
                    let fy = ((y as f32 + 0.5) * sh as f32 / h as f32 - 0.5).clamp(0.0, (sh - 1) as f32);
                    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
                    let (x1, y1) = ((x0 + 1).min(sw - 1), (y0 + 1).min(sh - 1));
                    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
                    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
                    std::array::from_fn(|i| {
                        let top = a[i] + tx * (b[i] - a[i]);
                        let bottom = c[i] + tx * (d[i] - c[i]);
                        top + ty * (bottom - top)
                    })
                }
            };
            // Back from premultiplied: colour = premultiplied colour / alpha (0 where nothing is visible).
            let alpha = v[3];
            let un = |c: f32| if alpha > 0.0 { (c * 255.0 / alpha).round().clamp(0.0, 255.0) as u8 } else { 0 };
            data.extend([un(v[0]), un(v[1]), un(v[2]), alpha.round().clamp(0.0, 255.0) as u8]);
        }
    }
    Image::new(width, height, 4, data)?.to_channels(img.channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(width: u32, height: u32, format: PixelFormat) -> Layout {
        Layout {
            width,
            height,
            stride: width as usize * format.bytes_per_pixel(),
            format,
            bottom_up: false,
            premultiplied: false,
        }
    }

    /// A 3x2 RGBA image with distinct pixels; the first is half transparent.
    fn sample() -> Image {
        #[rustfmt::skip]
        let data = vec![
            0, 10, 20, 128,   200, 100, 50, 255,   1, 2, 3, 255,
            30, 40, 50, 255,  60, 70, 80, 255,     90, 100, 110, 255,
        ];
        Image::new(3, 2, 4, data).unwrap()
    }

    #[test]
    fn bad_layouts_and_short_buffers_are_refused_before_writing() {
        let img = sample();
        let mut buf = vec![7u8; 64];
        for (l, needle) in [
            (Layout { width: 0, ..layout(3, 2, PixelFormat::Rgba8) }, "width is 0"),
            (Layout { height: MAX_IMAGE_SIDE + 1, ..layout(3, 2, PixelFormat::Rgba8) }, "height is 4097"),
            (Layout { stride: 11, ..layout(3, 2, PixelFormat::Rgba8) }, "stride is 11, smaller than a row"),
            (layout(3, 2, PixelFormat::Rgba32F), "needs 96"),
        ] {
            let err = write_into(&img, &l, Filter::Nearest, &mut buf).unwrap_err().to_string();
            assert!(err.contains(needle), "{l:?}: {err}");
        }
        assert!(buf.iter().all(|&b| b == 7), "nothing written on failure");
        let huge = Layout { stride: usize::MAX / 2, ..layout(3, 4, PixelFormat::Gray8) };
        assert!(huge.required_bytes().unwrap_err().to_string().contains("overflows"));
    }

    #[test]
    fn formats_row_order_stride_and_premultiplied_alpha() {
        let img = sample();
        // RGBA8, packed, top-down: the image's own bytes.
        let mut buf = vec![0u8; 24];
        write_into(&img, &layout(3, 2, PixelFormat::Rgba8), Filter::Nearest, &mut buf).unwrap();
        assert_eq!(buf, img.data);
        // BGRA8, bottom-up, stride 16 (4 bytes of padding a row, left untouched), premultiplied.
        let l = Layout { stride: 16, bottom_up: true, premultiplied: true, ..layout(3, 2, PixelFormat::Bgra8) };
        let mut buf = vec![0xABu8; 28];
        write_into(&img, &l, Filter::Nearest, &mut buf).unwrap();
        assert_eq!(&buf[12..16], &[0xAB; 4], "stride padding untouched");
        // The image's first row is the buffer's second; its pixel 0 (0, 10, 20, 128) premultiplied.
        let p0 = &buf[16..20];
        assert_eq!(p0, &[10, 5, 0, 128], "BGR order, each times 128/255, rounded");
        assert_eq!(&buf[20..24], &[50, 100, 200, 255], "an opaque pixel is unchanged but for the order");
        // Grey and RGB composite over black (as Image::to_channels).
        let mut grey = vec![0u8; 6];
        write_into(&img, &layout(3, 2, PixelFormat::Gray8), Filter::Nearest, &mut grey).unwrap();
        assert_eq!(grey, img.to_channels(1).unwrap().data);
        // Linear float: 0 -> 0, 255 -> 1, sRGB 128 -> 0.2158, alpha as is; premultiplied in linear light.
        let white = Image::new(1, 1, 4, vec![255, 128, 0, 128]).unwrap();
        let mut f = vec![0u8; 16];
        let l = Layout { premultiplied: true, ..layout(1, 1, PixelFormat::Rgba32F) };
        write_into(&white, &l, Filter::Nearest, &mut f).unwrap();
        let v: Vec<f32> = f.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
        let a = 128.0 / 255.0;
        assert!((v[0] - a).abs() < 1e-6 && (v[1] - 0.215_861 * a).abs() < 1e-5 && v[2] == 0.0, "{v:?}");
        assert!((v[3] - a).abs() < 1e-6);
    }

    #[test]
    fn resizing_nearest_keeps_pixels_bilinear_keeps_flat_areas_and_clean_edges() {
        // Nearest 2x: each pixel becomes a 2x2 block.
        let img = Image::new(2, 1, 1, vec![10, 200]).unwrap();
        let big = resize(&img, 4, 2, Filter::Nearest).unwrap();
        assert_eq!(big.data, vec![10, 10, 200, 200, 10, 10, 200, 200]);
        // Bilinear of a flat colour is that colour at any size.
        let flat = Image::new(3, 3, 3, [40, 90, 200].repeat(9)).unwrap();
        for (w, h) in [(1, 1), (5, 7), (64, 64)] {
            let r = resize(&flat, w, h, Filter::Bilinear).unwrap();
            assert!(r.data.chunks_exact(3).all(|p| p == [40, 90, 200]), "{w}x{h}");
        }
        // Red next to fully transparent black: in premultiplied space the colour of every visible pixel
        // stays pure red (no dark fringe), only alpha falls off.
        let edge = Image::new(2, 1, 4, vec![255, 0, 0, 255, 0, 0, 0, 0]).unwrap();
        let r = resize(&edge, 8, 1, Filter::Bilinear).unwrap();
        for p in r.data.chunks_exact(4) {
            assert!(p[3] == 0 || p[..3] == [255, 0, 0], "{p:?}");
        }
        assert!(r.data.chunks_exact(4).any(|p| p[3] > 0 && p[3] < 255), "a soft edge");
        // Into a host buffer at another size, by the same resize.
        let mut buf = vec![0u8; 8 * 4];
        write_into(&edge, &layout(8, 1, PixelFormat::Rgba8), Filter::Bilinear, &mut buf).unwrap();
        assert_eq!(buf, r.data);
        assert!(resize(&edge, 0, 1, Filter::Nearest).is_err());
    }
}
