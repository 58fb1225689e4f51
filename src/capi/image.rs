//! Images across the boundary: `MirageImage` describes pixels (the host's or the library's), and
//! `MirageImageBatch` owns the images the library returns.

use std::ffi::c_void;

use super::boundary::{self, handle, handle_type, out, slice, take, Handle};
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::limits::MAX_BATCH;
use crate::manifest::ImageSpec;

/// Layout of 8-bit pixels, channels interleaved, rows top to bottom.
pub type MiragePixelFormat = u32;

/// 1 byte per pixel: grey.
pub const MIRAGE_PIXEL_GRAY8: MiragePixelFormat = 1;
/// 3 bytes per pixel: red, green, blue.
pub const MIRAGE_PIXEL_RGB8: MiragePixelFormat = 2;
/// 4 bytes per pixel: red, green, blue, alpha (straight, not premultiplied).
pub const MIRAGE_PIXEL_RGBA8: MiragePixelFormat = 3;

/// 4 bytes per pixel: blue, green, red, alpha (Windows bitmaps, Direct3D, many engines' textures).
/// Only for a `MirageTarget`.
pub const MIRAGE_PIXEL_BGRA8: MiragePixelFormat = 4;
/// 16 bytes per pixel: red, green, blue, alpha as native-endian floats, colour converted from sRGB to
/// linear light (alpha as is), what HDR and linear-workflow renderers upload. Only for a `MirageTarget`.
pub const MIRAGE_PIXEL_RGBA32F: MiragePixelFormat = 5;

/// Channels of a pixel format (its bytes per pixel).
pub(crate) fn channels_of(format: MiragePixelFormat, name: &str) -> Result<u32> {
    match format {
        MIRAGE_PIXEL_GRAY8 => Ok(1),
        MIRAGE_PIXEL_RGB8 => Ok(3),
        MIRAGE_PIXEL_RGBA8 => Ok(4),
        MIRAGE_PIXEL_BGRA8 | MIRAGE_PIXEL_RGBA32F => Err(Error::invalid(format!(
            "{name} is {format} (MIRAGE_PIXEL_{}): that format is for a MirageTarget only (mirage_image_batch_write, \
             mirage_job_take_into)",
            if format == MIRAGE_PIXEL_BGRA8 { "BGRA8" } else { "RGBA32F" }
        ))),
        other => Err(Error::invalid(format!("{name} is {other}, not a MIRAGE_PIXEL_* value"))),
    }
}

/// How an image is resized to a `MirageTarget` of another size.
pub type MirageFilter = u32;
/// Linear interpolation between the four nearest pixels, in premultiplied alpha (no dark fringes around
/// transparent areas). The default (0).
pub const MIRAGE_FILTER_BILINEAR: MirageFilter = 0;
/// Each target pixel copies the source pixel it falls in: crisp pixel art at integer scales.
pub const MIRAGE_FILTER_NEAREST: MirageFilter = 1;

/// `MirageTarget::flags`: rows bottom to top (the buffer's first row is the image's last), as OpenGL and
/// Unity textures expect.
pub const MIRAGE_TARGET_BOTTOM_UP: u32 = 1;
/// `MirageTarget::flags`: colour multiplied by alpha (premultiplied alpha), as most compositors blend.
pub const MIRAGE_TARGET_PREMULTIPLIED: u32 = 2;

/// Memory the host owns that one image is written into (a texture being uploaded, a frame buffer), with its
/// layout. The library resizes the image to `width` x `height` with `filter`, converts it to `format`, and
/// writes `height` rows of `width` pixels, `stride` bytes apart, inside the `size` bytes at `data`; bytes
/// between rows are left as they are. Every field of every target of a call is checked before the first
/// byte is written, so a wrong size or stride is an error, never a write outside the buffer. Zero the
/// struct (`MirageTarget t = {0};`), then set the fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageTarget {
    /// The first byte of the buffer (the first row top-down, or the image's last row with
    /// MIRAGE_TARGET_BOTTOM_UP); aligned to 4 bytes for MIRAGE_PIXEL_RGBA32F.
    pub data: *mut c_void,
    /// Bytes available at `data`: at least (height - 1) * stride + width * bytes per pixel.
    pub size: usize,
    /// Pixels per row, 1 to MIRAGE_MAX_IMAGE_SIDE; need not be the set's: the image is resized.
    pub width: u32,
    /// Rows, 1 to MIRAGE_MAX_IMAGE_SIDE.
    pub height: u32,
    /// Bytes from the start of one row to the start of the next; at least width * bytes per pixel. 0 means
    /// exactly that (packed rows).
    pub stride: usize,
    /// MIRAGE_PIXEL_GRAY8, _RGB8, _RGBA8, _BGRA8 or _RGBA32F.
    pub format: MiragePixelFormat,
    /// MIRAGE_TARGET_* flags, or-ed; 0 = top-down, straight alpha.
    pub flags: u32,
    /// MIRAGE_FILTER_*; 0 = bilinear.
    pub filter: MirageFilter,
}

/// A target's layout, checked against its buffer.
struct CheckedTarget {
    layout: crate::pixels::Layout,
    filter: crate::pixels::Filter,
}

fn check_target(t: &MirageTarget, name: &str) -> Result<CheckedTarget> {
    use crate::pixels::{Filter, Layout, PixelFormat};
    let format = match t.format {
        MIRAGE_PIXEL_GRAY8 => PixelFormat::Gray8,
        MIRAGE_PIXEL_RGB8 => PixelFormat::Rgb8,
        MIRAGE_PIXEL_RGBA8 => PixelFormat::Rgba8,
        MIRAGE_PIXEL_BGRA8 => PixelFormat::Bgra8,
        MIRAGE_PIXEL_RGBA32F => PixelFormat::Rgba32F,
        other => return Err(Error::invalid(format!("{name}.format is {other}, not a MIRAGE_PIXEL_* value"))),
    };
    let filter = match t.filter {
        MIRAGE_FILTER_BILINEAR => Filter::Bilinear,
        MIRAGE_FILTER_NEAREST => Filter::Nearest,
        other => return Err(Error::invalid(format!("{name}.filter is {other}, not a MIRAGE_FILTER_* value"))),
    };
    let known = MIRAGE_TARGET_BOTTOM_UP | MIRAGE_TARGET_PREMULTIPLIED;
    if t.flags & !known != 0 {
        return Err(Error::invalid(format!("{name}.flags is {:#x}: unknown bits {:#x}", t.flags, t.flags & !known)));
    }
    let stride = if t.stride == 0 { t.width as usize * format.bytes_per_pixel() } else { t.stride };
    let layout = Layout {
        width: t.width,
        height: t.height,
        stride,
        format,
        bottom_up: t.flags & MIRAGE_TARGET_BOTTOM_UP != 0,
        premultiplied: t.flags & MIRAGE_TARGET_PREMULTIPLIED != 0,
    };
    let need = layout.required_bytes().map_err(|e| e.prefixed(&format!("{name}.")))?;
    if t.data.is_null() {
        return Err(Error::invalid(format!("{name}.data is NULL")));
    }
    if format == PixelFormat::Rgba32F && !(t.data as usize).is_multiple_of(4) {
        return Err(Error::invalid(format!("{name}.data is not 4-byte aligned, as MIRAGE_PIXEL_RGBA32F needs")));
    }
    if t.size < need {
        return Err(Error::invalid(format!(
            "{name}.size is {}; a {}x{} image of this format with stride {stride} needs {need} bytes",
            t.size, t.width, t.height
        )));
    }
    Ok(CheckedTarget { layout, filter })
}

/// Writes `images` into `targets` (as many of each): every target is checked before the first write.
///
/// # Safety
/// Each target's `data` holds `size` writable bytes (the caller's promise), none overlapping another's.
pub(crate) unsafe fn write_targets(images: &[Image], targets: &[MirageTarget], name: &str) -> Result<()> {
    if images.len() != targets.len() {
        return Err(Error::invalid(format!("{} targets for {} images", targets.len(), images.len())));
    }
    let checked = targets
        .iter()
        .enumerate()
        .map(|(k, t)| check_target(t, &format!("{name}[{k}]")))
        .collect::<Result<Vec<_>>>()?;
    for ((img, t), c) in images.iter().zip(targets).zip(&checked) {
        // SAFETY: `data` holds `size` writable bytes (caller's promise), not NULL (checked).
        let buf = unsafe { std::slice::from_raw_parts_mut(t.data.cast::<u8>(), t.size) };
        crate::pixels::write_into(img, &c.layout, c.filter, buf)?;
    }
    Ok(())
}

/// A view of 8-bit pixels: a plain struct, no ownership implied.
///
/// Hosts fill it to pass their own pixels (`mirage_vae_encode` reads them, `mirage_vae_decode_into` writes
/// them); the library fills it to show pixels it owns (`mirage_image_batch_get`). Row `y` starts at
/// `data + y * stride`; a row holds `width` pixels of the format's size, and the bytes between the end of a
/// row and the next row's start are never read or written.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageImage {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from the start of one row to the start of the next; at least width * bytes per pixel.
    /// 0 means exactly width * bytes per pixel (packed rows).
    pub stride: u32,
    /// One of MIRAGE_PIXEL_*.
    pub format: MiragePixelFormat,
    /// The first pixel of the first row.
    pub data: *mut u8,
}

/// A host image's layout, checked: the bytes it spans fit in memory and every row fits in its stride.
pub(crate) struct Layout {
    width: usize,
    height: usize,
    channels: u32,
    stride: usize,
    /// Bytes from the first pixel to the end of the last row (the last row needs no padding).
    span: usize,
}

impl Layout {
    pub(crate) fn of(img: &MirageImage, name: &str) -> Result<Layout> {
        let channels = channels_of(img.format, &format!("{name}.format"))?;
        let (width, height) = (img.width as usize, img.height as usize);
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!("{name} is {width}x{height}: width and height must be > 0")));
        }
        let row = width
            .checked_mul(channels as usize)
            .ok_or_else(|| Error::invalid(format!("{name}: a row of {width} pixels does not fit in memory")))?;
        let stride = if img.stride == 0 { row } else { img.stride as usize };
        if stride < row {
            return Err(Error::invalid(format!(
                "{name}.stride is {stride} bytes, less than a row of {width} pixels x {channels} bytes ({row})"
            )));
        }
        if img.data.is_null() {
            return Err(Error::invalid(format!("{name}.data is NULL")));
        }
        let span = (height - 1)
            .checked_mul(stride)
            .and_then(|b| b.checked_add(row))
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid(format!("{name}: {height} rows of stride {stride} do not fit in memory")))?;
        Ok(Layout { width, height, channels, stride, span })
    }

    /// Copies the host's pixels into a packed [`Image`].
    ///
    /// # Safety
    /// `img.data` must be readable for `self.span` bytes (the layout was made from `img`).
    pub(crate) unsafe fn read(&self, img: &MirageImage) -> Result<Image> {
        // SAFETY: by the caller's promise.
        let src = unsafe { std::slice::from_raw_parts(img.data, self.span) };
        let row = self.width * self.channels as usize;
        let mut data = Vec::with_capacity(row * self.height);
        for y in 0..self.height {
            data.extend_from_slice(&src[y * self.stride..y * self.stride + row]);
        }
        Image::new(img.width, img.height, self.channels, data)
    }

    /// Writes `image` into the host's pixels, converting it to the host's format; the bytes between rows are
    /// left as they are. Sizes must already agree.
    ///
    /// # Safety
    /// `dst.data` must be writable for `self.span` bytes and not be read or written by anyone else meanwhile.
    pub(crate) unsafe fn write(&self, image: &Image, dst: &MirageImage) -> Result<()> {
        let image = image.to_channels(self.channels)?;
        let row = self.width * self.channels as usize;
        if image.data.len() != row * self.height {
            return Err(Error::invalid("internal: image and destination sizes differ"));
        }
        // SAFETY: by the caller's promise.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.data, self.span) };
        for (y, src) in image.data.chunks_exact(row).enumerate() {
            out[y * self.stride..y * self.stride + row].copy_from_slice(src);
        }
        Ok(())
    }
}

/// Reads `count` (1 to [`MAX_BATCH`]) host images, each of `spec`'s width and height, in any format and
/// stride, into packed images (their own channel count). `name` is the array as the header spells it.
///
/// # Safety
/// `images` is NULL or points to `count` host images whose pixels are readable (the export's caller promises).
pub(crate) unsafe fn read_images(
    images: *const MirageImage,
    count: usize,
    name: &str,
    spec: &ImageSpec,
) -> Result<Vec<Image>> {
    if count == 0 || count > MAX_BATCH {
        return Err(Error::invalid(format!("count is {count}, out of range 1..={MAX_BATCH}")));
    }
    // What the images become in model space, checked before a byte is copied.
    crate::limits::call_values(count, (spec.width * spec.height * spec.channels) as usize, name)?;
    // SAFETY: by the caller's promise.
    let images = unsafe { slice(images, count, name) }?;
    images
        .iter()
        .enumerate()
        .map(|(k, img)| {
            let layout = Layout::of(img, &format!("{name}[{k}]"))?;
            if (img.width, img.height) != (spec.width, spec.height) {
                return Err(Error::invalid(format!(
                    "{name}[{k}] is {}x{}; this model set works on {}x{} images",
                    img.width, img.height, spec.width, spec.height
                )));
            }
            // SAFETY: the layout was checked against this image; its pixels are readable (caller's promise).
            unsafe { layout.read(img) }
        })
        .collect()
}

/// Images allocated by the library (what `mirage_vae_decode` returns), all of one size and format. Read
/// them with `mirage_image_batch_count` and `mirage_image_batch_get`; free them with
/// `mirage_image_batch_free`. Immutable, so several threads may read one batch at once.
pub struct MirageImageBatch {
    /// [`Handle`]'s tag.
    tag: u64,
    images: Vec<Image>,
    format: MiragePixelFormat,
}

impl MirageImageBatch {
    /// A batch of `images`, all in `format`, handed to C.
    pub(crate) fn into_raw(images: Vec<Image>, format: MiragePixelFormat) -> *mut MirageImageBatch {
        Box::into_raw(Box::new(MirageImageBatch { tag: Self::LIVE, images, format }))
    }
}

handle_type!(MirageImageBatch, 0x6d69_7261_6765_4942); // "BIegarim"

/// The number of images in `batch`; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn mirage_image_batch_count(batch: *const MirageImageBatch) -> usize {
    boundary::run_or(0, || {
        // SAFETY: a live batch when not NULL, by the caller's promise.
        unsafe { handle(batch, "batch") }.map_or(0, |b| b.images.len())
    })
}

/// Describes image `index` of `batch` in `*image`: packed rows (stride = width * bytes per pixel), the
/// batch's format. `image->data` points into the batch: it stays valid until `mirage_image_batch_free` and
/// must only be read (it is the library's memory).
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `index >= count`).
#[no_mangle]
pub unsafe extern "C" fn mirage_image_batch_get(
    batch: *const MirageImageBatch,
    index: usize,
    image: *mut MirageImage,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (batch, result) = unsafe { (handle(batch, "batch")?, out(image, "image")?) };
        let img = batch.images.get(index).ok_or_else(|| {
            Error::invalid(format!("index {index} is out of range: the batch holds {} images", batch.images.len()))
        })?;
        result.write(MirageImage {
            width: img.width,
            height: img.height,
            stride: img.width * img.channels,
            format: batch.format,
            // Only ever read through (the doc says so); the *mut is the struct's, shared with host images.
            data: img.data.as_ptr().cast_mut(),
        });
        Ok(())
    })
}

/// Writes image `index` of `batch` into host memory described by `target` (resized, converted, in the
/// target's row order and alpha mode; see `MirageTarget`). Every field is checked before a byte is written;
/// nothing is kept. MIRAGE_PIXEL_RGBA32F holds the 8-bit sRGB pixels converted to linear light (as every
/// target does, whatever its format: images are made at 8 bits per channel).
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `index >= count`, a bad target: NULL data, zero or
/// oversized width or height, a stride smaller than a row, a size smaller than the layout needs, an unknown
/// format, filter or flag).
#[no_mangle]
pub unsafe extern "C" fn mirage_image_batch_write(
    batch: *const MirageImageBatch,
    index: usize,
    target: *const MirageTarget,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (batch, target) = unsafe { (handle(batch, "batch")?, boundary::arg(target, "target")?) };
        let img = batch.images.get(index).ok_or_else(|| {
            Error::invalid(format!("index {index} is out of range: the batch holds {} images", batch.images.len()))
        })?;
        // SAFETY: the target's buffer is writable for `size` bytes (caller's promise).
        unsafe { write_targets(std::slice::from_ref(img), std::slice::from_ref(target), "target") }.map_err(|e| match e
        {
            Error::InvalidArgument(m) => Error::InvalidArgument(m.replace("target[0]", "target")),
            other => other,
        })
    })
}

/// Frees a batch and its pixels. NULL does nothing. Every `MirageImage` got from it dangles afterwards.
#[no_mangle]
pub unsafe extern "C" fn mirage_image_batch_free(batch: *mut MirageImageBatch) {
    boundary::run_or((), || {
        // SAFETY: made by this library and, by the caller's promise, freed once (a second free is usually
        // caught by the tag and ignored).
        drop(unsafe { take(batch, "batch") });
    })
}
