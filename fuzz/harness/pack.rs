//! Arbitrary bytes as a model pack: `mirage::pack::Pack::parse`, then every entry it lists read back, and
//! the same bytes through `mirage_context_new_from_memory` when they parse. Property: a clear error or a
//! pack whose entries lie inside the buffer and match their checksums; never a panic, a read outside the
//! buffer (AddressSanitizer), a hang or a leak. The corpus starts from a real pack of a tiny set (made by
//! `mirage::model_set::pack_set`) and from packs of a few small entries.

use std::ptr::null_mut;

use mirage::capi::*;

use super::common::{check, quiet};

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    quiet();
    let Ok(pack) = mirage::pack::Pack::parse(data) else { return };
    let base = data.as_ptr() as usize;
    let names: Vec<&str> = pack.names().collect();
    for name in &names {
        if let Ok(bytes) = pack.entry(name) {
            let at = bytes.as_ptr() as usize;
            assert!(at >= base && at + bytes.len() <= base + data.len(), "entry {name:?} outside the buffer");
            assert_eq!(pack.size(name), Some(bytes.len()));
        }
    }
    // Only packs that hold a manifest get as far as ONNX Runtime (whose parser is not ours to fuzz).
    if !pack.contains("manifest.json") || data.len() > 64 << 20 {
        return;
    }
    let mut ctx = null_mut();
    // SAFETY: `data` holds `data.len()` readable bytes for the call.
    let s = unsafe { mirage_context_new_from_memory(data.as_ptr().cast(), data.len(), std::ptr::null(), &mut ctx) };
    check(
        "mirage_context_new_from_memory",
        s,
        &[MIRAGE_OK, MIRAGE_ERR_INVALID_MODEL, MIRAGE_ERR_MODEL_NOT_FOUND, MIRAGE_ERR_UNSUPPORTED],
    );
    // SAFETY: NULL or the context just made.
    unsafe { mirage_context_free(ctx) };
}
