//! ONNX Runtime's optimized form of each model, kept between processes: on CPU, optimizing a model's graph
//! (fusions, constant folding, the NCHWc layout) is most of a session's creation time — about 100 ms of the
//! 8 MB emoji U-Net's, against about 20 ms to load the optimized form ONNX Runtime can save in its own ORT
//! format. With a load cache folder (`MirageRuntimeOptions::digest_cache_dir`; the CLI's `--digest-cache`)
//! that form is saved under `sessions/` on a model's first load and loaded, unoptimized again, afterwards.
//!
//! An entry is keyed by everything the optimized graph depends on: the model's verified sha256 (so a changed
//! model is a new entry), ONNX Runtime's version and build, and this CPU (model name and instruction-set
//! flags: the NCHWc layout and the kernels chosen are hardware-specific). It is two files: `<key>.ort` and
//! `<key>.sha256`, the digest of the .ort written after it, checked on every load (a damaged or truncated
//! entry is never loaded: it is optimized again and rewritten). Both are written to temporary names and
//! renamed, so concurrent processes never see half an entry. Only CPU sessions use it; at most
//! [`MAX_ENTRIES`] entries are kept (the oldest go). Any failure of the cache is logged and only costs the
//! optimization: it can never make a load fail.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::Result;
use crate::log::Level;
use crate::log_at;
use crate::manifest::sha256_hex;
use crate::runtime::{LoadedSession, Provider, Runtime, Tune};

/// Entries kept; past this the least recently written are removed.
pub const MAX_ENTRIES: usize = 64;

/// The largest optimized model loaded from the cache.
const MAX_ENTRY_BYTES: u64 = crate::limits::MAX_MODEL_BYTES;

/// A digest of this CPU's model name and instruction-set flags (from /proc/cpuinfo), once per process.
pub(crate) fn cpu_identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let pick = |key: &str| {
            info.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map_or("", |(_, v)| v.trim())
        };
        let id = format!("{}|{}|{}", std::env::consts::ARCH, pick("model name"), pick("flags"));
        sha256_hex(id.as_bytes())
    })
}

/// The entry name of a model: a digest of what the optimized graph depends on.
fn key(model_sha256: &str) -> String {
    let k = format!("{model_sha256}|{}|cpu|{}|level3", crate::runtime::version_string(), cpu_identity());
    sha256_hex(k.as_bytes())[..40].to_string()
}

/// A CPU session for `bytes` (whose sha256 the caller verified): from the cache in `root/sessions/` when
/// it holds a sound entry, else optimized now (and saved for the next process).
pub(crate) fn session(rt: &Runtime, root: &Path, bytes: &[u8], sha256: &str, what: &str) -> Result<LoadedSession> {
    let dir = root.join("sessions");
    let k = key(sha256);
    let (ort_path, digest_path) = (dir.join(format!("{k}.ort")), dir.join(format!("{k}.sha256")));
    if let Some(ort_bytes) = read_entry(&ort_path, &digest_path) {
        match rt.cpu_session_in_place(ort_bytes, what) {
            Ok(loaded) => {
                log_at!(Level::Debug, "{what}: optimized graph taken from the session cache");
                return Ok(loaded);
            }
            Err(e) => log_at!(Level::Warn, "{what}: the session cache's entry did not load ({e}); optimizing again"),
        }
    }
    // Optimize now, saving the optimized form beside the final name, then publish it.
    let saved = std::fs::create_dir_all(&dir).ok().map(|_| {
        let tmp = dir.join(format!(".{k}.{}.{:?}.tmp.ort", std::process::id(), std::thread::current().id()));
        tmp
    });
    let tune = Tune { save_to: saved.clone(), ..Tune::default() };
    let loaded = match rt.cpu_session(bytes, what, &tune) {
        Ok(s) => s,
        Err(e) => {
            if let Some(tmp) = &saved {
                let _ = std::fs::remove_file(tmp);
            }
            // Saving can fail where loading would not (an unwritable folder): load without the cache.
            if saved.is_some() {
                log_at!(Level::Debug, "{what}: creating the session while saving its optimized form failed ({e})");
                return rt.session(bytes, what, Some(Provider::Cpu));
            }
            return Err(e);
        }
    };
    if let Some(tmp) = saved {
        publish(&tmp, &ort_path, &digest_path, what);
        crate::files::keep_newest(&dir, "ort", MAX_ENTRIES, &["sha256"]);
    }
    Ok(loaded)
}

/// The optimized model of an entry when its digest file matches its bytes; None otherwise.
fn read_entry(ort_path: &Path, digest_path: &Path) -> Option<Vec<u8>> {
    let want = crate::files::read_regular(digest_path, 128, "session cache digest", "").ok()?;
    let want = String::from_utf8(want).ok()?;
    let bytes = crate::files::read_regular(ort_path, MAX_ENTRY_BYTES, "session cache entry", "").ok()?;
    (sha256_hex(&bytes) == want.trim()).then_some(bytes)
}

/// Moves the saved optimized model to its entry name and writes its digest (temporary name, then rename).
fn publish(tmp: &Path, ort_path: &Path, digest_path: &Path, what: &str) {
    let done = (|| -> std::io::Result<()> {
        let bytes = std::fs::read(tmp)?;
        let digest_tmp = tmp.with_extension("sha256");
        std::fs::write(&digest_tmp, sha256_hex(&bytes))?;
        std::fs::rename(tmp, ort_path)?;
        std::fs::rename(&digest_tmp, digest_path)
    })();
    match done {
        Ok(()) => log_at!(Level::Debug, "{what}: optimized graph saved to the session cache"),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            log_at!(Level::Debug, "{what}: the session cache could not be written ({e})");
        }
    }
}
