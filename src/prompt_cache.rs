//! Encoded prompts kept between processes, so that a host that draws the same prompts again (a game's fixed
//! set, a plug-in's presets, a script run twice) never loads the text encoder for them: on CPU the 90 MB
//! encoder is about three quarters of a text-to-image set's start. On when the runtime has a load cache
//! folder and `prompt_cache` (`MirageRuntimeOptions::prompt_cache`; the CLI's default, `--no-prompt-cache`
//! turns it off): entries go under the folder's `prompts/`. A set opened with it creates its text encoder's
//! session only when a prompt misses ([`crate::model_set::ModelSet::encode_prompts`]).
//!
//! An entry is one prompt's U-Net inputs (token embeddings [L, 384] and the pooled embedding [384]) as the
//! encoder computed them the first time, keyed by everything they depend on: the prompt's bytes, the
//! context length, the sha256 of the encoder's ONNX file (of the precision used) and of its tokenizer, the
//! provider asked for, ONNX Runtime's version and this CPU. A changed encoder, tokenizer or runtime is a new
//! key, so an entry is never served for inputs it was not computed from. Each file holds its key and ends
//! with the sha256 of what precedes it; a damaged, truncated or foreign entry is not used (the prompt is
//! encoded again and the entry rewritten). Files are written to a temporary name and renamed; at most
//! [`MAX_ENTRIES`] are kept (the oldest go). Any failure of the cache only costs the encoding.
//!
//! The entries hold embeddings of the prompts, not their text; a host that must keep nothing of its users'
//! prompts on disk leaves the option off.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::log::Level;
use crate::log_at;
use crate::manifest::sha256_hex;
use crate::text::TEXT_WIDTH;

/// Entries kept; past this the least recently written are removed. At 16 tokens an entry is 26 KB.
pub const MAX_ENTRIES: usize = 2048;

/// The first bytes of every entry.
const MAGIC: &[u8; 16] = b"mirage prompt 1\n";

/// The largest context an entry may hold ([`crate::text::MAX_CONTEXT`]).
const MAX_TOKENS: usize = crate::text::MAX_CONTEXT;

/// What, besides the prompt and the context length, an encoded prompt depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncoderIdentity {
    /// sha256 of the ONNX file the session is (or would be) made from, and of `tokenizer.json`.
    pub onnx_sha256: String,
    pub tokenizer_sha256: String,
    /// The provider asked for ("auto", "cpu", ...).
    pub provider: &'static str,
    /// ONNX Runtime's version and build ([`crate::runtime::version_string`]).
    pub runtime: String,
}

/// One prompt's encoding as the U-Net takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// [L, 384]
    pub tokens: Vec<f32>,
    /// [384]
    pub pooled: Vec<f32>,
    /// Whether the prompt had more tokens than L and was truncated (the warning is given again on every
    /// use).
    pub truncated: bool,
}

/// The cache folder: `root/prompts`.
pub(crate) fn dir(root: &Path) -> PathBuf {
    root.join("prompts")
}

/// How mirage runs the encoder, part of every key: changed whenever that changes the numbers (v2: its
/// weights are not prepacked, `runtime::CacheAs`), so that entries computed the old way are not served.
const COMPUTED_AS: &str = "encoder-run-v2";

/// The key of `prompt` at `context_len` for the encoder `id`: 64 hex digits.
pub(crate) fn key(id: &EncoderIdentity, context_len: usize, prompt: &str) -> String {
    let mut k = format!(
        "{COMPUTED_AS}|{}|{}|{}|{context_len}|{}|{}|",
        id.onnx_sha256,
        id.tokenizer_sha256,
        id.provider,
        id.runtime,
        crate::session_cache::cpu_identity()
    )
    .into_bytes();
    k.extend_from_slice(prompt.as_bytes());
    sha256_hex(&k)
}

fn path(root: &Path, key: &str) -> PathBuf {
    dir(root).join(format!("{}.emb", &key[..40]))
}

/// Bytes of an entry of `context_len` tokens.
fn entry_len(context_len: usize) -> usize {
    MAGIC.len() + 64 + 8 + (context_len + 1) * TEXT_WIDTH * 4 + 32
}

/// The entry of `key` when the cache holds a sound one of `context_len` tokens; None otherwise.
pub(crate) fn lookup(root: &Path, key: &str, context_len: usize) -> Option<Entry> {
    if !(1..=MAX_TOKENS).contains(&context_len) {
        return None;
    }
    let want = entry_len(context_len);
    let bytes = crate::files::read_regular(&path(root, key), want as u64, "prompt cache entry", "").ok()?;
    let entry = parse(&bytes, key, context_len);
    if entry.is_none() {
        log_at!(Level::Debug, "prompt cache: the entry {} is damaged or foreign; encoding again", &key[..40]);
    }
    entry
}

fn parse(bytes: &[u8], key: &str, context_len: usize) -> Option<Entry> {
    if bytes.len() != entry_len(context_len) {
        return None;
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if sha2::Sha256::digest(body)[..] != digest[..] {
        return None;
    }
    let (head, floats) = body.split_at(MAGIC.len() + 64 + 8);
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or_default()) as usize;
    let at = MAGIC.len() + 64;
    if &head[..MAGIC.len()] != MAGIC || &head[MAGIC.len()..at] != key.as_bytes() || u32_at(at) != context_len {
        return None;
    }
    let truncated = match u32_at(at + 4) {
        0 => false,
        1 => true,
        _ => return None,
    };
    let mut values = floats.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let tokens: Vec<f32> = values.by_ref().take(context_len * TEXT_WIDTH).collect();
    let pooled: Vec<f32> = values.collect();
    let sound = pooled.len() == TEXT_WIDTH && tokens.iter().chain(&pooled).all(|v| v.is_finite());
    sound.then_some(Entry { tokens, pooled, truncated })
}

/// Records `entry` under `key`. Best effort: a failure is logged at debug level.
pub(crate) fn store(root: &Path, key: &str, entry: &Entry) {
    let context_len = entry.tokens.len() / TEXT_WIDTH;
    if entry.tokens.len() != context_len * TEXT_WIDTH
        || !(1..=MAX_TOKENS).contains(&context_len)
        || entry.pooled.len() != TEXT_WIDTH
    {
        return;
    }
    let mut bytes = Vec::with_capacity(entry_len(context_len));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(context_len as u32).to_le_bytes());
    bytes.extend_from_slice(&u32::from(entry.truncated).to_le_bytes());
    for v in entry.tokens.iter().chain(&entry.pooled) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let digest = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let dir = dir(root);
    let file = path(root, key);
    let tmp = dir.join(format!(".{}.{}.{:?}.tmp.emb", &key[..40], std::process::id(), std::thread::current().id()));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&tmp, &bytes))
        .and_then(|_| std::fs::rename(&tmp, &file));
    match written {
        Ok(()) => crate::files::keep_newest(&dir, "emb", MAX_ENTRIES, u64::MAX, &[]),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            log_at!(Level::Debug, "prompt cache: could not record {}: {e}", crate::limits::quote_path(&file));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EncoderIdentity {
        let runtime = "onnxruntime 1.2.3".into();
        EncoderIdentity { onnx_sha256: "a".repeat(64), tokenizer_sha256: "b".repeat(64), provider: "cpu", runtime }
    }

    fn entry(l: usize) -> Entry {
        let tokens = (0..l * TEXT_WIDTH).map(|i| i as f32 * 0.25 - 3.0).collect();
        Entry { tokens, pooled: (0..TEXT_WIDTH).map(|i| -(i as f32) / 7.0).collect(), truncated: true }
    }

    #[test]
    fn an_entry_comes_back_exactly_and_only_for_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let k = key(&id(), 8, "a red apple");
        assert_eq!(lookup(tmp.path(), &k, 8), None, "nothing stored yet");
        store(tmp.path(), &k, &entry(8));
        assert_eq!(lookup(tmp.path(), &k, 8), Some(entry(8)));
        assert_eq!(lookup(tmp.path(), &k, 9), None, "another context length");
        // Every ingredient of the key changes it.
        let other = [
            key(&id(), 9, "a red apple"),
            key(&id(), 8, "a red apple "),
            key(&EncoderIdentity { provider: "cuda", ..id() }, 8, "a red apple"),
            key(&EncoderIdentity { onnx_sha256: "c".repeat(64), ..id() }, 8, "a red apple"),
            key(&EncoderIdentity { tokenizer_sha256: "c".repeat(64), ..id() }, 8, "a red apple"),
            key(&EncoderIdentity { runtime: "onnxruntime 1.2.4".into(), ..id() }, 8, "a red apple"),
        ];
        for o in other {
            assert_ne!(o, k);
            assert_eq!(lookup(tmp.path(), &o, 8), None);
        }
    }

    #[test]
    fn a_damaged_or_foreign_entry_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let k = key(&id(), 4, "fire");
        store(tmp.path(), &k, &entry(4));
        let file = path(tmp.path(), &k);
        let good = std::fs::read(&file).unwrap();
        for at in [0, MAGIC.len() + 3, MAGIC.len() + 64 + 1, good.len() / 2, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x10;
            std::fs::write(&file, &b).unwrap();
            assert_eq!(lookup(tmp.path(), &k, 4), None, "byte {at} flipped");
        }
        std::fs::write(&file, &good[..good.len() - 4]).unwrap();
        assert_eq!(lookup(tmp.path(), &k, 4), None, "truncated");
        // Another key's sound entry under this key's name (a collision of the first 40 digits).
        let other = key(&id(), 4, "water");
        store(tmp.path(), &other, &entry(4));
        std::fs::copy(path(tmp.path(), &other), &file).unwrap();
        assert_eq!(lookup(tmp.path(), &k, 4), None, "an entry names its key");
        // A non-finite value is refused even with a matching digest.
        let mut bad = entry(4);
        bad.pooled[3] = f32::NAN;
        store(tmp.path(), &k, &bad);
        assert_eq!(lookup(tmp.path(), &k, 4), None);
        store(tmp.path(), &k, &entry(4));
        assert_eq!(lookup(tmp.path(), &k, 4), Some(entry(4)), "rewritten");
    }

    #[test]
    fn the_folder_keeps_the_newest_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..5).map(|i| key(&id(), 2, &format!("p{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            store(tmp.path(), k, &entry(2));
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options().write(true).open(path(tmp.path(), k)).unwrap().set_modified(t).unwrap();
        }
        crate::files::keep_newest(&dir(tmp.path()), "emb", 3, u64::MAX, &[]);
        let kept: Vec<bool> = keys.iter().map(|k| lookup(tmp.path(), k, 2).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }
}
