//! What the fuzz targets share: a tiny random-weight model set (VAE + U-Net) written once per
//! process, a context on it, and the checks every call's outcome must pass.
#![allow(dead_code)]

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use mirage::capi::*;

/// The longest message a failure may leave (as tests/hostile.rs).
pub const MAX_MESSAGE: usize = 700;

/// This process's folder under the temporary directory, for [`scratch`] folders.
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("mirage-fuzz-{}", std::process::id()))
}

/// A folder under [`scratch_root`] (the fuzzer leaves it behind; the replaying test removes the root).
pub fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root().join(name);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The tiny VAE + U-Net set (`mirage::export`'s random fixtures, as the tests use), written once.
pub fn tiny_set() -> &'static Path {
    static SET: OnceLock<PathBuf> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = scratch("tiny");
        let m = mirage::export::vae::write_random_set(&dir, &mirage::export::vae::VaeArch::tiny(), 1234)
            .expect("writing the tiny VAE");
        let [c, h, w] = m.vae.expect("vae").latent_shape;
        let arch = mirage::export::unet::UNetArch::tiny(c as i64, h as i64, w as i64);
        mirage::export::unet::add_random_unet(&dir, &arch, 99).expect("writing the tiny U-Net");
        dir
    })
}

/// Under the fuzzer: sets the library's log level to errors only (truncation warnings and the like would
/// flood the run) and one intra-op thread. Replayed in the tests, it does nothing: the test process's runtime
/// stays as its other tests expect it.
pub fn quiet() {
    #[cfg(fuzzing)]
    quiet_runtime();
}

#[cfg(fuzzing)]
fn quiet_runtime() {
    let mut o = std::mem::MaybeUninit::<MirageRuntimeOptions>::uninit();
    // SAFETY: a whole struct of its size; initialised by the init function before it is read.
    unsafe {
        assert_eq!(mirage_runtime_options_init(o.as_mut_ptr(), size_of::<MirageRuntimeOptions>()), MIRAGE_OK);
        let mut o = o.assume_init();
        o.log_level = MIRAGE_LOG_ERROR;
        o.intra_threads = 1;
        let s = mirage_runtime_init(&o);
        assert!(s == MIRAGE_OK || s == MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED, "runtime: {}", last_error());
    }
}

/// A context on [`tiny_set`], opened once (as an address: contexts may be shared between threads).
pub fn context() -> *const MirageContext {
    static CTX: OnceLock<usize> = OnceLock::new();
    *CTX.get_or_init(|| {
        quiet();
        let path = CString::new(tiny_set().to_str().expect("UTF-8 temp path")).unwrap();
        let mut ctx = null_mut();
        // SAFETY: valid pointers.
        let s = unsafe { mirage_context_new(path.as_ptr(), null(), &mut ctx) };
        assert_eq!(s, MIRAGE_OK, "opening the tiny set: {}", last_error());
        ctx as usize
    }) as *const MirageContext
}

/// The calling thread's last error message.
pub fn last_error() -> String {
    // SAFETY: a NULL buffer with len 0 asks for the size; the second call gets a buffer of that size.
    let n = unsafe { mirage_last_error(null_mut(), 0) };
    let mut buf = vec![0 as c_char; n + 1];
    // SAFETY: `buf` holds n + 1 bytes.
    unsafe { mirage_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by mirage_last_error.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// A call's status is one of `allowed`, and a failure leaves a short message.
pub fn check(what: &str, status: MirageStatus, allowed: &[MirageStatus]) {
    assert!(allowed.contains(&status), "{what}: status {status} is not one of {allowed:?}: {}", last_error());
    if status != MIRAGE_OK {
        let m = last_error();
        assert!(!m.is_empty() && m.len() <= MAX_MESSAGE, "{what}: message of {} bytes: {m:?}", m.len());
    }
}

/// Little-endian reads from the front of the fuzz input, zero when it runs out.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    pub fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    /// A NUL-terminated string of the next length-prefixed bytes (interior NULs end it early).
    pub fn c_string(&mut self) -> CString {
        let n = usize::from(self.u8());
        let bytes = self.take(n);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        CString::new(&bytes[..end]).unwrap()
    }
}

/// Bytes per pixel of a known format.
pub fn bytes_per_pixel(format: MiragePixelFormat) -> Option<usize> {
    match format {
        MIRAGE_PIXEL_GRAY8 => Some(1),
        MIRAGE_PIXEL_RGB8 => Some(3),
        MIRAGE_PIXEL_RGBA8 => Some(4),
        _ => None,
    }
}

/// A run's progress/preview callback: continue for `*user_data` calls, then cancel (bounds every run).
pub unsafe extern "C" fn progress(_step: u32, _total: u32, user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: the targets pass a pointer to a live u32 as user_data.
    let left = unsafe { &mut *user_data.cast::<u32>() };
    *left = left.saturating_sub(1);
    *left > 0
}

pub unsafe extern "C" fn preview(
    step: u32,
    images: *const MirageImage,
    count: usize,
    user_data: *mut std::ffi::c_void,
) -> bool {
    // Read every pixel of every preview image: ASan sees a preview that promises more than it holds.
    // SAFETY: mirage promises `count` images valid for the call.
    let images = unsafe { std::slice::from_raw_parts(images, count) };
    let mut sum = 0u64;
    for img in images {
        let bpp = bytes_per_pixel(img.format).expect("a preview has a known format");
        let stride = if img.stride == 0 { img.width as usize * bpp } else { img.stride as usize };
        for row in 0..img.height as usize {
            // SAFETY: as above: `height` rows of `stride` bytes, of which width * bpp are pixels.
            let px = unsafe { std::slice::from_raw_parts(img.data.add(row * stride), img.width as usize * bpp) };
            sum += px.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
    }
    std::hint::black_box(sum);
    // SAFETY: as `progress`.
    unsafe { progress(step, 0, user_data) }
}
