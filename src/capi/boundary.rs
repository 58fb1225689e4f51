//! The panic boundary every export runs inside, and the checks that turn C arguments into Rust values
//! (NULL, alignment, lengths, UTF-8, `struct_size`) with an `InvalidArgument` that names the argument.

use std::any::Any;
use std::ffi::{c_char, CStr};
use std::panic::{self, AssertUnwindSafe};

use super::status::{clear_last_error, set_last_error, status_of, MirageStatus, MIRAGE_ERR_PANIC, MIRAGE_OK};
use crate::error::{Error, Result};

/// Runs the body of an export that returns a status: clears the thread's last error, then maps `Ok` to
/// `MIRAGE_OK`, an [`Error`] to its status and message, and a panic to `MIRAGE_ERR_PANIC` with the panic's
/// text. Nothing unwinds into the host: unwinding out of an `extern "C"` function would abort it.
pub(crate) fn run(body: impl FnOnce() -> Result<()>) -> MirageStatus {
    clear_last_error();
    // AssertUnwindSafe: after a panic the only state we leave behind is behind mutexes that the runtime
    // already recovers from poisoning (`unwrap_or_else(|p| p.into_inner())`), or the caller's own handles.
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MIRAGE_OK,
        Ok(Err(e)) => {
            // Every message is made short where it is made (a caller's input is quoted, not echoed); this
            // cap is the last line of defence for the host's buffers and logs.
            set_last_error(crate::limits::clip_to(&e.detail(), MAX_MESSAGE_CHARS));
            status_of(&e)
        }
        Err(payload) => {
            set_last_error(panic_message(payload));
            MIRAGE_ERR_PANIC
        }
    }
}

/// The longest message `mirage_last_error` gives, in characters.
const MAX_MESSAGE_CHARS: usize = 600;

/// Runs the body of an export that cannot fail (a getter, a `_free`): a panic becomes `on_panic` and the
/// thread's last error; the last error is otherwise left alone.
pub(crate) fn run_or<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(panic_message(payload));
            on_panic
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = match payload.downcast_ref::<&'static str>() {
        Some(s) => s.to_string(),
        None => payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "(no message)".into()),
    };
    // The payload is dropped inside the boundary too: a payload whose Drop panics must not escape.
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
    format!("internal error: mirage panicked: {text} (please report this as a bug)")
}

/// Checks that `ptr` is usable as a `&T`: not NULL and aligned. `name` is the argument as the header
/// spells it, for the message.
///
/// # Safety
/// When not NULL, `ptr` must point to a valid `T` that stays alive and unchanged for `'a`.
pub(crate) unsafe fn arg<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    check_ptr(ptr, name)?;
    // SAFETY: not NULL and aligned (checked); valid for 'a by the caller's promise.
    Ok(unsafe { &*ptr })
}

/// A type the library hands to C as an opaque pointer (`Box::into_raw`), carrying a tag that says it is
/// alive: [`handle`] checks it on entry and [`take`] poisons it on free. That catches the common caller
/// errors cheaply — a freed handle used again or freed twice, a pointer to something else — as long as
/// its memory has not been reused for another handle of the same type; it is a diagnostic, not a promise
/// (the header says what is and is not detected).
pub(crate) trait Handle {
    /// The type's name in the header, for messages.
    const NAME: &'static str;
    /// The tag of a live handle of this type (distinct per type).
    const LIVE: u64;
    fn tag(&self) -> u64;
    fn set_tag(&mut self, tag: u64);
}

/// Implements [`Handle`] for a struct with a `tag: u64` field: `handle_type!(MirageLatent, 0x...)`.
macro_rules! handle_type {
    ($t:ident, $live:expr) => {
        impl $crate::capi::boundary::Handle for $t {
            const NAME: &'static str = stringify!($t);
            const LIVE: u64 = $live;
            fn tag(&self) -> u64 {
                self.tag
            }
            fn set_tag(&mut self, tag: u64) {
                self.tag = tag;
            }
        }
    };
}
pub(crate) use handle_type;

/// The tag a handle gets when it is freed.
pub(crate) const FREED: u64 = 0x6465_6166_5f65_6572; // "reef_aed": no type's LIVE tag

/// [`arg`] for a library handle: also checks its tag (see [`Handle`]).
///
/// # Safety
/// As [`arg`]: `ptr` is NULL or was made by this library; a pointer to freed memory is the caller's error,
/// which this check usually, but not always, turns into an `InvalidArgument`.
pub(crate) unsafe fn handle<'a, T: Handle>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: forwarded from the caller.
    let h = unsafe { arg(ptr, name) }?;
    if h.tag() != T::LIVE {
        return Err(Error::invalid(format!(
            "{name} is not a live {} (freed already, or not made by this library)",
            T::NAME
        )));
    }
    Ok(h)
}

/// Takes back a handle for freeing: None for NULL, and for a pointer whose tag is not live (a double free,
/// or not ours), which is then left alone and reported through the last error and the log.
///
/// # Safety
/// As [`handle`]; a live handle must not be used again after this.
pub(crate) unsafe fn take<T: Handle>(ptr: *mut T, name: &str) -> Option<Box<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: forwarded from the caller.
    if let Err(e) = unsafe { handle(ptr, name) } {
        crate::log_at!(crate::log::Level::Error, "{e}: not freed");
        set_last_error(e.detail());
        return None;
    }
    // SAFETY: made by Box::into_raw in this library (its tag is live) and not freed yet.
    let mut b = unsafe { Box::from_raw(ptr) };
    b.set_tag(FREED);
    Some(b)
}

/// Checks an out-parameter up front (before any work is done), so that it can be written at the very end,
/// only on success.
///
/// # Safety
/// When not NULL, `ptr` must be valid for writing a `T` until [`Out::write`] is called.
pub(crate) unsafe fn out<T>(ptr: *mut T, name: &str) -> Result<Out<T>> {
    check_ptr(ptr, name)?;
    Ok(Out(ptr))
}

/// A checked out-parameter; see [`out`].
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Stores the result. The old contents are not dropped: out-parameters are uninitialised C memory.
    pub(crate) fn write(self, value: T) {
        // SAFETY: checked by `out`, whose caller promised the pointer is writable.
        unsafe { self.0.write(value) }
    }
}

/// A C array of `len` items as a slice; NULL is allowed only when `len == 0`.
///
/// # Safety
/// When not NULL, `ptr` must point to `len` valid `T` that stay alive and unchanged for `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr(ptr, name)?;
    // from_raw_parts requires the whole slice to fit in isize::MAX bytes; a larger len is a bad argument.
    if len.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(Error::invalid(format!("{name}: length {len} is too large")));
    }
    // SAFETY: not NULL, aligned, size in range (checked); valid for 'a by the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

fn check_ptr<T>(ptr: *const T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(Error::invalid(format!("{name} is not aligned for its type ({ptr:p})")));
    }
    Ok(())
}

/// A NUL-terminated UTF-8 string argument. Paths are strings too: mirage takes UTF-8 on every platform,
/// so a path means the same thing on Windows (UTF-16 underneath) as on Linux.
///
/// # Safety
/// When not NULL, `ptr` must point to a NUL-terminated string that stays alive and unchanged for `'a`.
pub(crate) unsafe fn utf8<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: not NULL; NUL-terminated and alive by the caller's promise.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "{name} is not valid UTF-8 ({e}): {}; mirage takes UTF-8 strings and paths",
            crate::limits::quote(&String::from_utf8_lossy(bytes))
        ))
    })
}

/// Copies `s` into a caller buffer snprintf-style (see `mirage_last_error`) and returns `s.len()`.
/// NUL bytes inside `s` would end the C string early, so they are copied as spaces.
///
/// # Safety
/// When not NULL, `buf` must be valid for writing `len` bytes.
pub(crate) unsafe fn copy_str(s: &str, buf: *mut c_char, len: usize) -> usize {
    if buf.is_null() || len == 0 {
        return s.len();
    }
    let mut n = s.len().min(len - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` holds `len > n` bytes by the caller's promise; c_char and u8 have the same layout.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n + 1) };
    for (d, &b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = if b == 0 { b' ' } else { b };
    }
    dst[n] = 0;
    s.len()
}

/// No params struct will ever be this large; a `struct_size` above it is garbage, not a newer header.
const MAX_STRUCT_SIZE: usize = 4096;

/// A params struct: `#[repr(C)]`, first field `size_t struct_size`, grown only by appending fields.
pub(crate) trait Params: Copy {
    /// Every earlier published version, oldest first: (its `sizeof`, the end of its last field). The end
    /// matters because a new field may sit in what was an older version's trailing padding, which a host
    /// built against that version never set (copying a struct need not copy its padding).
    const OLDER: &'static [(usize, usize)];
    /// The defaults, with `struct_size` set to the host's.
    fn defaults(struct_size: usize) -> Self;
}

/// The (sizeof, end of last field) of an older version whose last field is `$field` of `$t`.
macro_rules! older_version {
    ($t:ty, $field:ident, $ft:ty) => {{
        const END: usize = std::mem::offset_of!($t, $field) + size_of::<$ft>();
        const ALIGN: usize = align_of::<$t>();
        (END.div_ceil(ALIGN) * ALIGN, END)
    }};
}
pub(crate) use older_version;

/// Reads a params struct whose first field is `size_t struct_size`.
///
/// The versioning rule, written in the header: a host built against an older header passes that
/// version's `sizeof`, and gets the fields it knows plus this library's defaults for the rest; any other
/// size below the current one is refused; larger (a host built against a newer header) is accepted when
/// every byte this library does not know is zero, so that a field the host set is never silently ignored
/// (Linux's `copy_struct_from_user` rule).
///
/// # Safety
/// When not NULL, `ptr` must point to a struct of at least `struct_size` readable bytes starting with a
/// `size_t` that holds that size, and which is valid as `T` (or as the older version its size names).
pub(crate) unsafe fn read_params<T: Params>(ptr: *const T, name: &str) -> Result<T> {
    check_ptr(ptr, name)?;
    // SAFETY: every params struct starts with `size_t struct_size`; the pointer is checked.
    let size = unsafe { ptr.cast::<usize>().read() };
    let known = size_of::<T>();
    if size < known {
        let Some(&(_, end)) = T::OLDER.iter().find(|(sz, _)| *sz == size) else {
            let first = T::OLDER.first().map_or(known, |v| v.0);
            return Err(Error::invalid(format!(
                "{name}->struct_size is {size}, not the size of any version of this struct (the first has {first} \
                 bytes, this library's {known}); fill it with its _init function and sizeof"
            )));
        };
        let mut value = T::defaults(size);
        // SAFETY: the host's older struct holds `size >= end` readable bytes whose first `end` are that
        // version's fields, each laid out as in `T` (fields are only ever appended); `value` is a whole `T`.
        unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), end) };
        return Ok(value);
    }
    if size > MAX_STRUCT_SIZE {
        // Far beyond any version of any params struct: most likely an uninitialised struct_size. Refusing
        // it beats reading that many bytes of the host's memory.
        return Err(Error::invalid(format!(
            "{name}->struct_size is {size}: implausibly large (uninitialised?); fill it with its _init function"
        )));
    }
    if size > known {
        // SAFETY: the caller says the struct has `size` readable bytes.
        let tail = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(known), size - known) };
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "{name}->struct_size is {size} but this library (version {}) knows {known} bytes, and byte {} \
                 beyond those is set: the host uses a field this library does not have",
                crate::VERSION,
                known + i
            )));
        }
    }
    // SAFETY: at least size_of::<T>() valid bytes (checked and promised).
    Ok(unsafe { ptr.read() })
}

/// Fills a params struct for the host: zeroes its `struct_size` bytes (so that fields of a newer header
/// that this library does not know read as zero, see [`read_params`]), then writes the defaults — all of
/// them, or for a host built against an older header (`struct_size` an older version's sizeof) the fields
/// of that version.
///
/// # Safety
/// When not NULL, `ptr` must be valid for writing `struct_size` bytes.
pub(crate) unsafe fn init_params<T: Params>(ptr: *mut T, struct_size: usize, name: &str) -> Result<()> {
    check_ptr(ptr, name)?;
    let known = size_of::<T>();
    let defaults = T::defaults(struct_size);
    if struct_size < known {
        let Some(&(_, end)) = T::OLDER.iter().find(|(sz, _)| *sz == struct_size) else {
            return Err(Error::invalid(format!(
                "struct_size is {struct_size}, not the size of any version of this struct (this library's has \
                 {known} bytes); pass sizeof of the struct"
            )));
        };
        // SAFETY: writable for `struct_size >= end` bytes by the caller's promise; `defaults` is a whole `T`.
        unsafe {
            ptr.cast::<u8>().write_bytes(0, struct_size);
            std::ptr::copy_nonoverlapping((&defaults as *const T).cast::<u8>(), ptr.cast::<u8>(), end);
        }
        return Ok(());
    }
    if struct_size > MAX_STRUCT_SIZE {
        // The same bound `read_params` applies: a struct this init filled must be one it can read back.
        return Err(Error::invalid(format!(
            "struct_size is {struct_size}: over {MAX_STRUCT_SIZE}, no version of any params struct is that large; \
             pass sizeof of the struct"
        )));
    }
    // SAFETY: writable for `struct_size >= size_of::<T>()` bytes by the caller's promise; aligned (checked).
    unsafe {
        ptr.cast::<u8>().write_bytes(0, struct_size);
        ptr.write(defaults);
    }
    Ok(())
}

/// A test-only export (cargo feature `test-panic`, never in the header) that panics inside the boundary,
/// so that tests can prove a panic comes back as `MIRAGE_ERR_PANIC` with its message and does not abort.
#[cfg(feature = "test-panic")]
#[no_mangle]
pub extern "C" fn mirage_debug_panic() -> MirageStatus {
    run(|| panic!("mirage_debug_panic was called"))
}
