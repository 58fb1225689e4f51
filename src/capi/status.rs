//! Status codes, the one mapping from [`Error`] to a status, the calling thread's last error message, and
//! the library version.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use super::boundary::{self, copy_str};
use crate::error::Error;

/// The result of every fallible mirage call: `MIRAGE_OK` (0) or one of the `MIRAGE_ERR_*` values.
///
/// Values are never renumbered or reused; new ones are only ever added. `mirage_status_str` names any
/// value, and `mirage_last_error` gives the detailed message of the calling thread's last failure.
pub type MirageStatus = u32;

/// Success.
pub const MIRAGE_OK: MirageStatus = 0;
/// A NULL pointer, a wrong size, shape, format or struct_size, a NaN, a value out of range, a string that
/// is not UTF-8. The message names the argument.
pub const MIRAGE_ERR_INVALID_ARGUMENT: MirageStatus = 1;
/// The ONNX Runtime shared library could not be found or loaded.
pub const MIRAGE_ERR_RUNTIME_LOAD: MirageStatus = 2;
/// `mirage_runtime_init` was called after the runtime had been set up with other options (ONNX Runtime
/// can be loaded once per process).
pub const MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED: MirageStatus = 3;
/// A model directory, its manifest.json or a model file it lists does not exist.
pub const MIRAGE_ERR_MODEL_NOT_FOUND: MirageStatus = 4;
/// A manifest or model file is unusable: bad JSON, another format_version, wrong shapes, sha256 mismatch,
/// a file ONNX Runtime rejects.
pub const MIRAGE_ERR_INVALID_MODEL: MirageStatus = 5;
/// The model set lacks what the call needs (e.g. a VAE), or a strict execution provider is unavailable.
pub const MIRAGE_ERR_UNSUPPORTED: MirageStatus = 6;
/// ONNX Runtime failed while running a model.
pub const MIRAGE_ERR_INFERENCE: MirageStatus = 7;
/// Reading or writing a file failed.
pub const MIRAGE_ERR_IO: MirageStatus = 8;
/// An image file could not be decoded or encoded.
pub const MIRAGE_ERR_IMAGE: MirageStatus = 9;
/// The host cancelled the operation.
pub const MIRAGE_ERR_CANCELLED: MirageStatus = 10;
/// A bug in mirage: a panic was caught at the API boundary. The message says where it came from.
pub const MIRAGE_ERR_PANIC: MirageStatus = 11;
/// A bounded queue is full: the context already holds `max_queued_jobs` jobs that have not started
/// (`MirageContextParams`). Nothing was submitted; try again once some of them have started or ended.
pub const MIRAGE_ERR_BUSY: MirageStatus = 12;

/// The status of an error: the one place where [`Error`] variants meet C status values. Exhaustive, so a
/// new variant does not compile until it has its own value.
pub(crate) fn status_of(e: &Error) -> MirageStatus {
    match e {
        Error::InvalidArgument(_) => MIRAGE_ERR_INVALID_ARGUMENT,
        Error::RuntimeLoad(_) => MIRAGE_ERR_RUNTIME_LOAD,
        Error::RuntimeAlreadyInitialised(_) => MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED,
        Error::ModelNotFound { .. } => MIRAGE_ERR_MODEL_NOT_FOUND,
        Error::InvalidModel(_) => MIRAGE_ERR_INVALID_MODEL,
        Error::Unsupported(_) => MIRAGE_ERR_UNSUPPORTED,
        Error::Inference(_) => MIRAGE_ERR_INFERENCE,
        Error::Io { .. } => MIRAGE_ERR_IO,
        Error::Image(_) => MIRAGE_ERR_IMAGE,
        Error::Cancelled => MIRAGE_ERR_CANCELLED,
        Error::Busy(_) => MIRAGE_ERR_BUSY,
    }
}

fn status_text(status: MirageStatus) -> &'static CStr {
    match status {
        MIRAGE_OK => c"ok",
        MIRAGE_ERR_INVALID_ARGUMENT => c"invalid argument",
        MIRAGE_ERR_RUNTIME_LOAD => c"ONNX Runtime could not be loaded",
        MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED => c"runtime already initialised with other options",
        MIRAGE_ERR_MODEL_NOT_FOUND => c"model not found",
        MIRAGE_ERR_INVALID_MODEL => c"invalid model",
        MIRAGE_ERR_UNSUPPORTED => c"unsupported",
        MIRAGE_ERR_INFERENCE => c"inference failed",
        MIRAGE_ERR_IO => c"i/o error",
        MIRAGE_ERR_IMAGE => c"image error",
        MIRAGE_ERR_CANCELLED => c"cancelled",
        MIRAGE_ERR_PANIC => c"internal error (panic)",
        MIRAGE_ERR_BUSY => c"busy: the job queue is full",
        _ => c"unknown status",
    }
}

/// A short static description of `status`, e.g. "invalid argument"; "unknown status" for a value this
/// library does not define. Never NULL; the text is static: do not free it.
#[no_mangle]
pub extern "C" fn mirage_status_str(status: MirageStatus) -> *const c_char {
    boundary::run_or(c"unknown status".as_ptr(), || status_text(status).as_ptr())
}

thread_local! {
    // Per thread, so that concurrent calls on one context each read their own failure.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the detailed message of the current call's failure.
pub(crate) fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Forgets the previous message: every status-returning call starts with this, so a message always belongs
/// to the latest such call on the thread.
pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| e.borrow_mut().clear());
}

/// Copies the detailed message of the calling thread's last failed call into `buf`, snprintf-style:
/// at most `len - 1` bytes followed by a NUL (cut at a UTF-8 character boundary, so the copy stays valid
/// UTF-8), and returns the full message length in bytes without the NUL. Call it with `len == 0` (`buf` may
/// then be NULL) to learn the size, then again with `len >= size + 1`.
///
/// The message is UTF-8 and belongs to the most recent call on this thread that returns `MirageStatus`:
/// every such call clears it, a failing one sets it, so after `MIRAGE_OK` the length is 0. Functions that
/// return no status (the `_free` functions, `mirage_image_batch_count`, `mirage_version`, ...) leave it as it
/// is, so a handle freed between a failing call and this one does not lose its message; only a `_free` of a
/// handle that is not live sets it. Calls on other threads never change it. `buf` is written only when it
/// is not NULL and `len > 0`.
#[no_mangle]
pub unsafe extern "C" fn mirage_last_error(buf: *mut c_char, len: usize) -> usize {
    boundary::run_or(0, || {
        // SAFETY: the caller promises `buf` holds `len` writable bytes when it is not NULL.
        LAST_ERROR.with(|e| unsafe { copy_str(&e.borrow(), buf, len) })
    })
}

/// This library's version as "MAJOR.MINOR.PATCH" (Cargo.toml's). Compare it with MIRAGE_VERSION_STRING to
/// detect a header/library mismatch. Never NULL; static: do not free it.
#[no_mangle]
pub extern "C" fn mirage_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL byte"),
    };
    boundary::run_or(VERSION.as_ptr(), || VERSION.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_text() {
        let known: Vec<_> = (MIRAGE_OK..=MIRAGE_ERR_BUSY).map(status_text).collect();
        let mut unique = known.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), known.len());
        assert!(!known.contains(&c"unknown status"));
        assert_eq!(status_text(MIRAGE_ERR_BUSY + 1), c"unknown status");
    }
}
