//! ONNX Runtime's optimized form of each model, kept between processes: on CPU, optimizing a model's graph
//! (fusions, constant folding, the NCHWc layout) is most of a session's creation time — about 100 ms of the
//! 8 MB emoji U-Net's, against about 20 ms to load the optimized form ONNX Runtime can save in its own ORT
//! format. With a load cache folder (`MirageRuntimeOptions::digest_cache_dir`; the CLI's `--digest-cache`)
//! that form is saved under `sessions/` on a model's first load and loaded, unoptimized again, afterwards.
//!
//! An entry is keyed by everything the optimized graph depends on: the model's verified sha256 (so a changed
//! model is a new entry), ONNX Runtime's version and build, and this CPU (model name and instruction-set
//! flags: the NCHWc layout and the kernels chosen are hardware-specific). It is two files: `<key>.ort` and
//! `<key>.sha256`, the digest of the .ort. Both are written to temporary names and renamed, so concurrent
//! processes never see half an entry, and an entry is never changed in place (a newer one is renamed over
//! it). A damaged or truncated entry is never loaded: it is optimized again and rewritten.
//!
//! ONNX Runtime uses an entry's bytes in place (no copy of the graph or the weights). An entry whose digest
//! the load cache recorded for that very file, unchanged since ([`crate::digests`]: recorded when this process
//! or another wrote or first checked it), is mapped into memory and not hashed again: the 90 MB text
//! encoder's entry then makes a session in 20-47 ms (unprepacked), where reading and hashing it took longer
//! than optimizing the graph anew. Any other entry is read and checked against its digest first. A mapped
//! entry must not be truncated by hand while a process uses it (reading the lost pages would fault): the
//! folder is mirage's.
//!
//! Only CPU sessions use it; at most [`MAX_ENTRIES`] entries of [`MAX_TOTAL_BYTES`] in all are kept (the
//! oldest go). Any failure of the cache is logged and only costs the optimization: it can never make a load
//! fail.

use std::path::Path;
use std::sync::OnceLock;

use crate::digests::Stamp;
use crate::error::Result;
use crate::log::Level;
use crate::log_at;
use crate::manifest::sha256_hex;
use crate::runtime::{CacheAs, LoadedSession, ModelBytes, ModelSource, Provider, Runtime, Tune};

/// Entries kept; past this the least recently written are removed.
pub const MAX_ENTRIES: usize = 64;

/// The entries' bytes kept together (the newest entry is always kept): a 90 MB text encoder's entry, with
/// its set's and a few others'.
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;

/// The largest optimized model loaded from the cache.
const MAX_ENTRY_BYTES: u64 = crate::limits::MAX_MODEL_BYTES;

/// A digest of this CPU's model name and instruction-set flags (from /proc/cpuinfo) and of the instruction
/// sets this process itself detects (CPUID), once per process. The second part is what ONNX Runtime's
/// kernels choose by: under an emulator such as valgrind, which has no AVX-512, /proc/cpuinfo still lists it,
/// and a graph optimized natively (NCHWc blocks of 16 channels) fails there (its kernels use blocks of 8).
pub(crate) fn cpu_identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let pick = |key: &str| {
            info.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map_or("", |(_, v)| v.trim())
        };
        let id = format!("{}|{}|{}|{}", std::env::consts::ARCH, pick("model name"), pick("flags"), detected_features());
        sha256_hex(id.as_bytes())
    })
}

/// The instruction sets ONNX Runtime's CPU kernels dispatch on, as this process detects them.
fn detected_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = Vec::new();
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    v.push($f);
                }
            )*};
        }
        probe!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avxvnni"
        );
        v.join(",")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

/// The entry name of a model: a digest of what the optimized graph depends on.
fn key(model_sha256: &str) -> String {
    let k = format!("{model_sha256}|{}|cpu|{}|level3", crate::runtime::version_string(), cpu_identity());
    sha256_hex(k.as_bytes())[..40].to_string()
}

/// A CPU session for the model of `source` (whose sha256 the caller verified): from the cache in
/// `root/sessions/` when it holds a sound entry, else optimized now (and saved for the next process).
pub(crate) fn session(
    rt: &Runtime,
    root: &Path,
    source: ModelSource,
    cache: &CacheAs,
    what: &str,
) -> Result<LoadedSession> {
    let dir = root.join("sessions");
    let k = key(cache.sha256);
    let (ort_path, digest_path) = (dir.join(format!("{k}.ort")), dir.join(format!("{k}.sha256")));
    if let Some(entry) = read_entry(root, &ort_path, &digest_path) {
        let made = rt.cpu_session_in_place(entry.model, what, cache.prepack);
        crate::files::test_change_after_load(&ort_path);
        match made {
            // A mapped entry must still be the inode that was vouched for: one changed in place meanwhile
            // (not by mirage, which only renames new entries over old ones) is optimized again.
            Ok(loaded)
                if entry
                    .file
                    .as_ref()
                    .is_none_or(|(f, st)| f.metadata().ok().map(|m| Stamp::of_metadata(&m)) == Some(*st)) =>
            {
                log_at!(
                    Level::Debug,
                    "{what}: optimized graph taken from the session cache{}",
                    if entry.file.is_some() { " (mapped)" } else { "" }
                );
                return Ok(loaded);
            }
            Ok(_) => {
                log_at!(Level::Warn, "{what}: the session cache's entry changed while it was loaded; optimizing again")
            }
            Err(e) => log_at!(Level::Warn, "{what}: the session cache's entry did not load ({e}); optimizing again"),
        }
    }
    // Optimize now, saving the optimized form beside the final name, then publish it.
    let saved = std::fs::create_dir_all(&dir).ok().map(|_| {
        let tmp = dir.join(format!(".{k}.{}.{:?}.tmp.ort", std::process::id(), std::thread::current().id()));
        tmp
    });
    let tune = Tune { save_to: saved.clone(), no_prepack: !cache.prepack, ..Tune::default() };
    let loaded = match rt.cpu_session(source, what, &tune) {
        Ok(s) => s,
        Err(e) => {
            if let Some(tmp) = &saved {
                let _ = std::fs::remove_file(tmp);
            }
            // Saving can fail where loading would not (an unwritable folder): load without the cache.
            if saved.is_some() {
                log_at!(Level::Debug, "{what}: creating the session while saving its optimized form failed ({e})");
                return rt.session_from_with(source, what, Some(Provider::Cpu), cache.prepack);
            }
            return Err(e);
        }
    };
    if let Some(tmp) = saved {
        publish(root, &tmp, &ort_path, &digest_path, what);
        crate::files::keep_newest(&dir, "ort", MAX_ENTRIES, MAX_TOTAL_BYTES, &["sha256"]);
    }
    Ok(loaded)
}

/// An entry's optimized model, and for a mapped one the open file with the stamp it was vouched for at.
struct Entry {
    model: ModelBytes,
    file: Option<(std::fs::File, Stamp)>,
}

/// The optimized model of an entry when its digest file matches its bytes; None otherwise. An entry whose
/// digest the load cache recorded for this very file, unchanged since ([`crate::digests`]: written when it
/// was published or first checked), is mapped and not hashed (the 90 MB text encoder's entry took longer to
/// read and hash than its graph takes to optimize); any other is read and hashed, and then recorded.
fn read_entry(root: &Path, ort_path: &Path, digest_path: &Path) -> Option<Entry> {
    let want = crate::files::read_regular(digest_path, 128, "session cache digest", "").ok()?;
    let want = String::from_utf8(want).ok()?.trim().to_string();
    let (file, meta) = crate::files::open_regular(ort_path, MAX_ENTRY_BYTES, "session cache entry", "").ok()?;
    let st = Stamp::of_metadata(&meta);
    if crate::digests::lookup(root, ort_path, &st).is_some_and(|d| d == want) {
        if let Ok(mapped) = crate::files::Mapped::of(&file, meta.len() as usize) {
            return Some(Entry { model: ModelBytes::Mapped(mapped), file: Some((file, st)) });
        }
    }
    let bytes = crate::files::read_open(&file, meta.len(), MAX_ENTRY_BYTES, "session cache entry", ort_path).ok()?;
    if sha256_hex(&bytes) != want {
        return None;
    }
    if file.metadata().ok().map(|m| Stamp::of_metadata(&m)) == Some(st) {
        crate::digests::store(root, ort_path, &st, &want);
    }
    Some(Entry { model: ModelBytes::Owned(bytes.into_boxed_slice()), file: None })
}

/// Moves the saved optimized model to its entry name and writes its digest (temporary name, then rename),
/// recording that digest in the load cache for the entry as renamed (so the next load maps it unhashed).
fn publish(root: &Path, tmp: &Path, ort_path: &Path, digest_path: &Path, what: &str) {
    let done = (|| -> std::io::Result<()> {
        let bytes = std::fs::read(tmp)?;
        let digest = sha256_hex(&bytes);
        let digest_tmp = tmp.with_extension("sha256");
        std::fs::write(&digest_tmp, &digest)?;
        let before = Stamp::of(tmp);
        std::fs::rename(tmp, ort_path)?;
        std::fs::rename(&digest_tmp, digest_path)?;
        // The stamp after the rename (which moves the ctime), if nothing else wrote the file meanwhile.
        let after = Stamp::of(ort_path);
        if let (Some(b), Some(a)) = (before, after) {
            if (b.ino(), b.size()) == (a.ino(), a.size()) {
                crate::digests::store(root, ort_path, &a, &digest);
            }
        }
        Ok(())
    })();
    match done {
        Ok(()) => log_at!(Level::Debug, "{what}: optimized graph saved to the session cache"),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            log_at!(Level::Debug, "{what}: the session cache could not be written ({e})");
        }
    }
}
