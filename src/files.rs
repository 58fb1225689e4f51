//! Reading the files of a model set without trusting them: a model set comes from disk, a download, a mod
//! or a plug-in folder, so a manifest or model path may name a FIFO (opening it for reading would block
//! forever), a device (`/dev/zero` never ends), a directory, or a file far larger than any model.
//! [`read_regular`] opens without blocking, refuses anything but a regular file, and reads at most a
//! bounded number of bytes into a fallibly reserved buffer.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads the regular file at `path` (symlinks followed), of at most `max_bytes`. `what` names the file in
/// messages ("manifest.json", "unet (unet.onnx)").
///
/// Errors: a missing file is [`Error::ModelNotFound`] with `missing` as its reason (what the file is and how
/// to get it); anything that is not a regular file, or is larger than `max_bytes`, is
/// [`Error::InvalidModel`]; other failures are [`Error::Io`].
pub fn read_regular(path: &Path, max_bytes: u64, what: &str, missing: &str) -> Result<Vec<u8>> {
    let (file, meta) = open_regular(path, max_bytes, what, missing)?;
    read_open(&file, meta.len(), max_bytes, what, path)
}

/// Opens the regular file at `path` for reading as [`read_regular`] does (never blocking, nothing but a
/// regular file of at most `max_bytes`), with its metadata, without reading it.
pub(crate) fn open_regular(
    path: &Path,
    max_bytes: u64,
    what: &str,
    missing: &str,
) -> Result<(std::fs::File, std::fs::Metadata)> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, possibly forever. It has no
    // effect on a regular file, and nothing else gets past the check below.
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(
            |e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::ModelNotFound { path: path.to_path_buf(), reason: missing.to_string() }
                }
                _ => Error::io(path, e),
            },
        )?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(Error::model(format!("{what}: {} is {kind}", crate::limits::quote_path(path))));
    }
    if meta.len() > max_bytes {
        return Err(Error::model(format!(
            "{what}: {} has {} bytes, over the limit of {max_bytes} for such a file",
            crate::limits::quote_path(path),
            meta.len()
        )));
    }
    Ok((file, meta))
}

/// Reads a file opened by [`open_regular`] (`len`: its size then) into a fallibly reserved buffer, never past
/// `max_bytes`.
pub(crate) fn read_open(file: &std::fs::File, len: u64, max_bytes: u64, what: &str, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| Error::model(format!("{what}: {len} bytes do not fit in memory")))?;
    // `take`: the file may grow between the check and the read; never read past the limit.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::model(format!("{what}: the file grew past the limit of {max_bytes} bytes while read")));
    }
    Ok(bytes)
}

/// Keeps the newest `max` entries (files named `*.{ext}`) of the cache folder `dir`, and of those only as many
/// as fit in `max_bytes` together (the newest is always kept), removing each older entry with its
/// `companions` (the same name with those extensions), and removes temporary files (names starting with '.'
/// and holding ".tmp.") older than an hour: what every cache of the load cache folder does after writing an
/// entry ([`crate::session_cache`], [`crate::prompt_cache`]). Best effort: a file that cannot be listed or
/// removed is left.
pub(crate) fn keep_newest(dir: &Path, ext: &str, max: usize, max_bytes: u64, companions: &[&str]) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<(std::time::SystemTime, u64, std::path::PathBuf)> = Vec::new();
    let now = std::time::SystemTime::now();
    for e in read.flatten() {
        let path = e.path();
        let meta = e.metadata().ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok()).unwrap_or(now);
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp.") {
            if now.duration_since(modified).is_ok_and(|age| age.as_secs() > 3600) {
                let _ = std::fs::remove_file(&path);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            entries.push((modified, meta.map_or(0, |m| m.len()), path));
        }
    }
    // Newest first; keep while within both limits.
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
    let mut total = 0u64;
    for (i, (_, len, path)) in entries.iter().enumerate() {
        total = total.saturating_add(*len);
        if i == 0 || (i < max && total <= max_bytes) {
            continue;
        }
        let _ = std::fs::remove_file(path);
        for c in companions {
            let _ = std::fs::remove_file(path.with_extension(c));
        }
    }
}

/// A whole regular file mapped read-only into memory (`mmap`, private), unmapped on drop: a large file used
/// in place (ONNX Runtime's ORT-format sessions, [`crate::session_cache`]) without reading it into a buffer.
/// Pages are read when first touched. The file must not be changed in place while it is mapped (truncating
/// it would make a read of the lost pages fault): only for files that mirage writes itself, under a
/// temporary name renamed into place, so that a newer version replaces the inode instead of changing it.
pub(crate) struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a read-only mapping, never written through; the pointer is only read as a byte slice.
unsafe impl Send for Mapped {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the first `len` bytes (the whole file, `len` > 0) of `file`, opened for reading.
    pub(crate) fn of(file: &std::fs::File, len: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an empty file cannot be mapped"));
        }
        // SAFETY: a new private read-only mapping of an open descriptor; the result is checked below.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap gave NULL"))?;
        Ok(Mapped { ptr, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes are mapped at `ptr` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Test hook (cargo feature `test-panic`, which only the tests enable; a no-op otherwise): called where a load
/// relied on a file staying unchanged and checks that it did. With `MIRAGE_TEST_CHANGE_AFTER_LOAD=SUFFIX` (or
/// `SUFFIX:corrupt`) set, a `path` ending with SUFFIX is rewritten in place, as another process could while
/// mirage loaded it: the same bytes (a new modification time) or one byte flipped. In place, with the same
/// length, so that a mapping of the file stays valid.
#[cfg(feature = "test-panic")]
pub(crate) fn test_change_after_load(path: &Path) {
    use std::io::Write;
    let Some(spec) = std::env::var_os("MIRAGE_TEST_CHANGE_AFTER_LOAD") else { return };
    let spec = spec.to_string_lossy();
    let (suffix, corrupt) = match spec.strip_suffix(":corrupt") {
        Some(s) => (s, true),
        None => (&*spec, false),
    };
    if !path.to_string_lossy().ends_with(suffix) {
        return;
    }
    let mut bytes = std::fs::read(path).expect("test hook: reading the file");
    if corrupt {
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
    }
    // The modification time must move even within the file system's timestamp granularity.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut f = std::fs::OpenOptions::new().write(true).open(path).expect("test hook: opening the file");
    f.write_all(&bytes).expect("test hook: rewriting the file");
}

#[cfg(not(feature = "test-panic"))]
#[inline(always)]
pub(crate) fn test_change_after_load(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_newest_entries_within_count_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let names = ["a", "b", "c", "d"];
        for (i, n) in names.iter().enumerate() {
            let p = tmp.path().join(format!("{n}.ort"));
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            std::fs::write(tmp.path().join(format!("{n}.sha256")), "x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        let kept = || names.map(|n| tmp.path().join(format!("{n}.ort")).exists());
        keep_newest(tmp.path(), "ort", 3, u64::MAX, &["sha256"]);
        assert_eq!(kept(), [false, true, true, true], "three by count");
        assert!(!tmp.path().join("a.sha256").exists(), "with its companion");
        keep_newest(tmp.path(), "ort", 3, 250, &["sha256"]);
        assert_eq!(kept(), [false, false, true, true], "two fit in 250 bytes");
        keep_newest(tmp.path(), "ort", 3, 10, &["sha256"]);
        assert_eq!(kept(), [false, false, false, true], "the newest is kept whatever its size");
    }

    #[test]
    fn a_mapped_file_reads_as_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let m = Mapped::of(&f, data.len()).unwrap();
        drop(f);
        // Replaced by a rename (as the caches write): the mapping keeps the old contents.
        std::fs::write(tmp.path().join("n.bin"), b"other").unwrap();
        std::fs::rename(tmp.path().join("n.bin"), &p).unwrap();
        assert_eq!(m.bytes(), &data[..]);
        assert!(Mapped::of(&std::fs::File::open(tmp.path()).unwrap(), 0).is_err(), "nothing to map");
    }
}
