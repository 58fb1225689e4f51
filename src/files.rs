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
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(meta.len() as usize)
        .map_err(|_| Error::model(format!("{what}: {} bytes do not fit in memory", meta.len())))?;
    // `take`: the file may grow between the check and the read; never read past the limit.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::model(format!("{what}: the file grew past the limit of {max_bytes} bytes while read")));
    }
    Ok(bytes)
}

/// Keeps the newest `max` entries (files named `*.{ext}`) of the cache folder `dir`, removing each older
/// entry with its `companions` (the same name with those extensions), and removes temporary files (names
/// starting with '.' and holding ".tmp.") older than an hour: what every cache of the load cache folder does
/// after writing an entry ([`crate::session_cache`], [`crate::prompt_cache`]). Best effort: a file that
/// cannot be listed or removed is left.
pub(crate) fn keep_newest(dir: &Path, ext: &str, max: usize, companions: &[&str]) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
    let now = std::time::SystemTime::now();
    for e in read.flatten() {
        let path = e.path();
        let modified = e.metadata().and_then(|m| m.modified()).unwrap_or(now);
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp.") {
            if now.duration_since(modified).is_ok_and(|age| age.as_secs() > 3600) {
                let _ = std::fs::remove_file(&path);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            entries.push((modified, path));
        }
    }
    if entries.len() <= max {
        return;
    }
    entries.sort();
    for (_, path) in &entries[..entries.len() - max] {
        let _ = std::fs::remove_file(path);
        for c in companions {
            let _ = std::fs::remove_file(path.with_extension(c));
        }
    }
}
