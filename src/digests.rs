//! A cache of verified sha256 digests, so that a process does not hash the same unchanged model file again
//! (the 90 MB text encoder cost about 0.1 s of every start). Off unless the host names a folder
//! (`MirageRuntimeOptions::digest_cache_dir`; the CLI's `--digest-cache`, on by default there).
//!
//! An entry records a file's digest with the file's identity and change stamps: device, inode, size,
//! modification time and status-change time (ctime), to the nanosecond. A digest is reused only while all of
//! them are unchanged, before and after the read. ctime cannot be set by a user (any write, `touch -d` or
//! `chmod` moves it), so a file changed in place, even with its size and mtime restored, is hashed again;
//! a copied or moved set is hashed once more in its new place. Each entry is one small file, named by a hash
//! of the model file's canonical path, written to a temporary name and renamed (concurrent processes never
//! see half an entry). A missing, damaged or foreign entry only means hashing; failing to write one is
//! logged and ignored: the cache can never make a load fail or accept bytes that were not checked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::log::Level;
use crate::log_at;

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of the file at `path` (symlinks followed); None when it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m| Stamp::of_metadata(&m))
    }

    /// The stamp of an open file (`File::metadata`): of the very inode read, whatever its path names now.
    pub fn of_metadata(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {}.{} {}.{}",
            self.dev, self.ino, self.len, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }
}

const HEADER: &str = "mirage digest v1";

/// The entry file of `path` in the cache folder `dir`.
fn entry(dir: &Path, path: &Path) -> Option<(PathBuf, PathBuf)> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let key = crate::manifest::sha256_hex(canonical.as_os_str().as_encoded_bytes());
    Some((dir.join(format!("{}.digest", &key[..32])), canonical))
}

/// The digest recorded for `path` with exactly `stamp`, if any.
pub fn lookup(dir: &Path, path: &Path, stamp: &Stamp) -> Option<String> {
    let (file, canonical) = entry(dir, path)?;
    let text = crate::files::read_regular(&file, 4096, "digest cache entry", "").ok()?;
    let text = String::from_utf8(text).ok()?;
    let mut lines = text.lines();
    let ok = lines.next() == Some(HEADER)
        && lines.next() == Some(canonical.to_str()?)
        && lines.next() == Some(stamp.line().as_str());
    let digest = lines.next()?;
    (ok && digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
}

/// Beyond this many entries, [`store`] first drops the entries of files that no longer exist (temporary
/// model sets, moved folders), so that the folder does not grow without bound.
const PRUNE_ABOVE: usize = 512;

/// Removes the entries whose file is gone.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    if entries.len() <= PRUNE_ABOVE {
        return;
    }
    for e in entries {
        let gone = crate::files::read_regular(&e, 4096, "digest cache entry", "")
            .ok()
            .and_then(|t| String::from_utf8(t).ok())
            .and_then(|t| t.lines().nth(1).map(|p| !Path::new(p).exists()))
            .unwrap_or(true);
        if gone {
            let _ = std::fs::remove_file(e);
        }
    }
}

/// Records `digest` (just computed from the bytes read) for `path` with `stamp`. Best effort.
pub fn store(dir: &Path, path: &Path, stamp: &Stamp, digest: &str) {
    prune(dir);
    let Some((file, canonical)) = entry(dir, path) else { return };
    let Some(name) = canonical.to_str() else { return };
    let text = format!("{HEADER}\n{name}\n{}\n{digest}\n", stamp.line());
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        log_at!(Level::Debug, "digest cache: could not record {}: {e}", crate::limits::quote_path(&file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_only_while_the_file_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, file) = (tmp.path().join("cache"), tmp.path().join("model.onnx"));
        std::fs::write(&file, b"weights").unwrap();
        let st = Stamp::of(&file).unwrap();
        assert_eq!(lookup(&dir, &file, &st), None, "nothing recorded yet");
        let d = crate::manifest::sha256_hex(b"weights");
        store(&dir, &file, &st, &d);
        assert_eq!(lookup(&dir, &file, &st).as_deref(), Some(d.as_str()));
        // Rewritten with the same size, its mtime set back: the ctime still moved, so the stamp differs.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"WEIGHTS").unwrap();
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
        let st2 = Stamp::of(&file).unwrap();
        assert_ne!(st, st2, "a rewrite with the mtime restored still changes the stamp (ctime)");
        assert_eq!(lookup(&dir, &file, &st2), None);
        // A damaged entry is a miss, not an error.
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::write(e.unwrap().path(), "mirage digest v1\ngarbage").unwrap();
        }
        assert_eq!(lookup(&dir, &file, &st), None);
        // An unwritable cache folder is ignored.
        store(Path::new("/proc/no-such-cache"), &file, &st2, &d);
    }

    #[test]
    fn entries_of_files_that_are_gone_are_pruned_past_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let kept = tmp.path().join("kept.onnx");
        std::fs::write(&kept, b"x").unwrap();
        for k in 0..PRUNE_ABOVE + 5 {
            let f = tmp.path().join(format!("gone{k}.onnx"));
            std::fs::write(&f, b"y").unwrap();
            store(&dir, &f, &Stamp::of(&f).unwrap(), &crate::manifest::sha256_hex(b"y"));
            std::fs::remove_file(&f).unwrap();
        }
        let st = Stamp::of(&kept).unwrap();
        store(&dir, &kept, &st, &crate::manifest::sha256_hex(b"x"));
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert!(left <= PRUNE_ABOVE, "{left} entries left");
        assert!(lookup(&dir, &kept, &st).is_some());
    }
}
