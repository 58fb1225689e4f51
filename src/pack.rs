//! The one-file model pack: a model set (its `manifest.json`, its ONNX files, its text encoder's files)
//! stored as one file, so that it can be shipped as one asset and opened from a path or from a buffer the
//! host owns (a game engine's own archive). This module is only the container: [`write()`] makes a pack,
//! [`Pack::parse`] checks one and hands out its entries as slices of the caller's buffer, without copying.
//!
//! # Format, version 1
//!
//! All integers are little-endian. A pack is a header, then the entries' data.
//!
//! Header (`H` bytes, `N` entries):
//!
//! | Offset   | Size | Field                                                                  |
//! |----------|------|------------------------------------------------------------------------|
//! | 0        | 8    | magic, the bytes `MIRAGEPK` ([`MAGIC`])                                |
//! | 8        | 4    | format version, u32: `1` ([`VERSION`])                                 |
//! | 12       | 4    | entry count `N`, u32: `0..=4096` ([`MAX_ENTRIES`])                     |
//! | 16       | ...  | `N` entry records, in entry order, each as below                       |
//! | `H - 32` | 32   | header checksum: sha256 of bytes `0..H-32`, all of the header before it |
//!
//! Entry record (`50 + L` bytes):
//!
//! | Offset   | Size | Field                                                                  |
//! |----------|------|------------------------------------------------------------------------|
//! | 0        | 2    | name length `L`, u16: `1..=1024` ([`MAX_NAME_BYTES`])                  |
//! | 2        | `L`  | name, UTF-8 (rules below)                                              |
//! | `2 + L`  | 8    | data offset, u64, from the start of the pack                          |
//! | `10 + L` | 8    | data length, u64                                                       |
//! | `18 + L` | 32   | sha256 of the entry's data                                             |
//!
//! Data, from byte `H` on:
//!
//! | Rule    | Statement                                                                          |
//! |---------|------------------------------------------------------------------------------------|
//! | order   | the entries' data in entry order, after the header, never overlapping              |
//! | offsets | entry `i` starts at the first multiple of 64 ([`ALIGN`]) at or after the end of    |
//! |         | entry `i - 1`'s data (entry 0: of the header); an empty entry takes no bytes       |
//! | padding | the bytes skipped to reach a multiple of 64 are zero                               |
//! | end     | the pack ends at the end of the last entry's data (of the header when `N` is 0)    |
//!
//! Names: relative paths with `/` between components, unique (exact byte comparison), `1..=1024` bytes of
//! UTF-8, with no empty, `.` or `..` component (so no leading or trailing `/`, no `//`), no backslash and no
//! NUL byte. They name the files of the set (`manifest.json`, `unet.onnx`, `text_encoder/tokenizer.json`).
//!
//! # What a reader checks
//!
//! The layout is canonical: for one list of entries there is exactly one valid pack, byte for byte, and
//! every byte of it is checked: the header by its checksum, the padding for zeros, each entry's data by its
//! sha256. [`Pack::parse`] checks, in this order: the magic; the version; the entry count (at most 4096,
//! and records that fit in the buffer); the header checksum; every name; every entry's offset (after the
//! header, in order, not overlapping, at its canonical 64-byte-aligned place, inside the buffer) and the
//! padding; and that nothing follows the last entry, so that a truncated or extended file is refused.
//! An entry's sha256 is checked by [`Pack::entry`], each time it is called, so that opening a pack costs
//! only its header and a caller hashes only what it loads.
//!
//! Every fault in the bytes is [`Error::InvalidModel`] with a message saying what is wrong and where. A
//! hostile buffer never makes the reader panic, nor allocate more than in proportion to its size.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::limits::quote;

/// The first 8 bytes of every pack.
pub const MAGIC: [u8; 8] = *b"MIRAGEPK";

/// The pack format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The most entries a pack may hold.
pub const MAX_ENTRIES: usize = 4096;

/// The longest entry name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Every entry's data starts at a multiple of this many bytes from the start of the pack.
pub const ALIGN: u64 = 64;

/// Bytes of a sha256 digest.
const SHA_LEN: usize = 32;

/// Bytes before the first entry record: magic, version, entry count.
const PREAMBLE_LEN: usize = 16;

/// Bytes of an entry record besides its name: name length, offset, length, sha256.
const RECORD_FIXED_LEN: usize = 2 + 8 + 8 + SHA_LEN;

/// The smallest entry record (a 1-byte name).
const MIN_RECORD_LEN: usize = RECORD_FIXED_LEN + 1;

/// The path that [`write()`]'s I/O errors carry: the writer has no path of its own.
const WRITE_TARGET: &str = "<pack being written>";

/// Whether `prefix` (the first bytes of a file or buffer) starts like a pack: it begins with [`MAGIC`].
/// Fewer than 8 bytes are not a pack.
pub fn is_pack(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

/// Checks an entry name against the rules of the format; the error completes "pack entry name "x" ...".
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_string());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("has {} bytes, over the limit of {MAX_NAME_BYTES}", name.len()));
    }
    if name.contains('\0') {
        return Err("contains a NUL byte".to_string());
    }
    if name.contains('\\') {
        return Err("contains a backslash (separate directories with /)".to_string());
    }
    if name.starts_with('/') {
        return Err("is absolute (starts with /); names are relative paths".to_string());
    }
    for component in name.split('/') {
        match component {
            "" => return Err("has an empty component (// or a trailing /)".to_string()),
            "." | ".." => return Err(format!("has a {component:?} component")),
            _ => {}
        }
    }
    Ok(())
}

/// `at` rounded up to the next multiple of [`ALIGN`] (`None` on overflow).
fn align_up(at: u64) -> Option<u64> {
    at.checked_next_multiple_of(ALIGN)
}

/// Writes a pack of `entries` (name, bytes), in that order.
///
/// Errors: more than [`MAX_ENTRIES`] entries, an invalid name or a name given twice is
/// [`Error::InvalidArgument`], and nothing is written then; a failure of `out` is [`Error::Io`] with the
/// placeholder path `<pack being written>` (a caller writing a file can put its path in instead).
pub fn write<W: Write + ?Sized>(entries: &[(&str, &[u8])], out: &mut W) -> Result<()> {
    if entries.len() > MAX_ENTRIES {
        return Err(Error::invalid(format!(
            "a pack holds at most {MAX_ENTRIES} entries, {} were given",
            entries.len()
        )));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    for (name, _) in entries {
        check_name(name).map_err(|why| Error::invalid(format!("pack entry name {} {why}", quote(name))))?;
        if !seen.insert(*name) {
            return Err(Error::invalid(format!("pack entry name {} is given twice", quote(name))));
        }
    }

    let header_len = PREAMBLE_LEN + entries.iter().map(|(n, _)| RECORD_FIXED_LEN + n.len()).sum::<usize>() + SHA_LEN;
    let too_large = || Error::invalid("the pack's entries add up to more bytes than a pack can address");
    let mut header = Vec::with_capacity(header_len);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut end = header_len as u64;
    for (name, data) in entries {
        let offset = align_up(end).ok_or_else(too_large)?;
        end = offset.checked_add(data.len() as u64).ok_or_else(too_large)?;
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(data));
    }
    let checksum = Sha256::digest(&header);
    header.extend_from_slice(&checksum);

    let io = |e: std::io::Error| Error::io(WRITE_TARGET, e);
    out.write_all(&header).map_err(io)?;
    let zeros = [0u8; ALIGN as usize];
    let mut at = header_len as u64;
    for (_, data) in entries {
        // Cannot fail: the same sums were checked above.
        let start = align_up(at).ok_or_else(too_large)?;
        out.write_all(&zeros[..(start - at) as usize]).map_err(io)?;
        out.write_all(data).map_err(io)?;
        at = start + data.len() as u64;
    }
    out.flush().map_err(io)
}

/// One entry of a parsed pack.
#[derive(Clone)]
struct Entry<'a> {
    name: &'a str,
    data: &'a [u8],
    sha256: &'a [u8],
}

/// A pack read from a buffer. [`Pack::parse`] has checked the header (magic, version, checksum, every
/// name, every entry inside the buffer, in place and non-overlapping, no trailing bytes); entries are
/// borrowed slices of the buffer, not copies.
#[derive(Clone)]
pub struct Pack<'a> {
    entries: Vec<Entry<'a>>,
}

impl std::fmt::Debug for Pack<'_> {
    /// Names and sizes, not the data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|e| (e.name, e.data.len()))).finish()
    }
}

/// The fields of an entry record as read, before the header checksum vouches for them.
struct RawRecord<'a> {
    name: &'a [u8],
    offset: u64,
    length: u64,
    sha256: &'a [u8],
}

/// Reads the header front to back; running out of bytes is a "pack truncated" error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes; `what` names them in the error when the buffer ends first.
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        let end = self.pos.saturating_add(n);
        match self.bytes.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::model(format!(
                "pack truncated: {} ends at byte {end}, the pack has {} bytes",
                what(),
                self.bytes.len()
            ))),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, || what.to_string())?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A little-endian u64 from the 8 bytes at `at` of `b` (the caller has checked the length).
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl<'a> Pack<'a> {
    /// Checks the pack in `bytes` (see the module documentation for what is checked, in which order).
    ///
    /// Errors: anything wrong with the bytes is [`Error::InvalidModel`].
    pub fn parse(bytes: &'a [u8]) -> Result<Pack<'a>> {
        let len = bytes.len();
        if !is_pack(bytes) {
            return Err(Error::model(if len == 0 {
                "not a mirage pack (the buffer is empty)".to_string()
            } else if len < MAGIC.len() && MAGIC.starts_with(bytes) {
                format!("pack truncated: it has {len} bytes, fewer than the 8 of its magic \"MIRAGEPK\"")
            } else {
                "not a mirage pack (the first bytes are not \"MIRAGEPK\")".to_string()
            }));
        }
        let mut r = Reader { bytes, pos: MAGIC.len() };
        let version = r.u32("the format version")?;
        if version != VERSION {
            return Err(Error::model(format!(
                "pack format version {version} is not supported by this build (it reads version {VERSION})"
            )));
        }
        let count = r.u32("the entry count")?;
        if count as usize > MAX_ENTRIES {
            return Err(Error::model(format!("pack has {count} entries, over the limit of {MAX_ENTRIES}")));
        }
        let count = count as usize;
        // Before allocating for `count` records: they and the checksum must fit in what is left.
        let min_len = PREAMBLE_LEN + count * MIN_RECORD_LEN + SHA_LEN;
        if len < min_len {
            return Err(Error::model(format!(
                "pack truncated: its header lists {count} entries, which need at least {min_len} bytes, \
                 the pack has {len} bytes"
            )));
        }

        let mut raw = Vec::with_capacity(count);
        for i in 0..count {
            let record = || format!("the record of entry {} of {count}", i + 1);
            let name_len = r.take(2, record)?;
            let name_len = u16::from_le_bytes([name_len[0], name_len[1]]) as usize;
            let rest = r.take(name_len + RECORD_FIXED_LEN - 2, record)?;
            let (name, fields) = rest.split_at(name_len);
            raw.push(RawRecord {
                name,
                offset: le_u64(fields, 0),
                length: le_u64(fields, 8),
                sha256: &fields[16..16 + SHA_LEN],
            });
        }
        let checked_len = r.pos;
        let stored = r.take(SHA_LEN, || "the header checksum".to_string())?;
        if Sha256::digest(&bytes[..checked_len]).as_slice() != stored {
            return Err(Error::model("pack header checksum mismatch: the header is corrupt"));
        }
        let header_len = r.pos;

        let mut names = Vec::with_capacity(count);
        let mut seen = HashSet::with_capacity(count);
        for (i, rec) in raw.iter().enumerate() {
            let name = std::str::from_utf8(rec.name).map_err(|_| {
                Error::model(format!(
                    "pack entry {} of {count}: its name {} is not UTF-8",
                    i + 1,
                    quote(&String::from_utf8_lossy(rec.name))
                ))
            })?;
            check_name(name).map_err(|why| Error::model(format!("pack entry name {} {why}", quote(name))))?;
            if !seen.insert(name) {
                return Err(Error::model(format!("pack has two entries named {}", quote(name))));
            }
            names.push(name);
        }

        let mut entries = Vec::with_capacity(count);
        // The end of the header or of the previous entry's data.
        let mut end = header_len as u64;
        for (rec, name) in raw.iter().zip(names) {
            let q = quote(name);
            let offset = rec.offset;
            if offset < header_len as u64 {
                return Err(Error::model(format!(
                    "pack entry {q} starts at byte {offset}, inside the header (bytes 0..{header_len})"
                )));
            }
            if offset < end {
                return Err(Error::model(format!(
                    "pack entry {q} starts at byte {offset}, before the end of the previous entry's data \
                     (byte {end}): entries overlap or are out of order"
                )));
            }
            if !offset.is_multiple_of(ALIGN) {
                return Err(Error::model(format!(
                    "pack entry {q} starts at byte {offset}, not at a multiple of {ALIGN}"
                )));
            }
            // `end` is at most `len`, so this cannot overflow.
            let expected = align_up(end).unwrap_or(u64::MAX);
            if offset != expected {
                return Err(Error::model(format!(
                    "pack entry {q} starts at byte {offset}, not at byte {expected}: the data has a gap \
                     (each entry follows the previous one, padded only to {ALIGN} bytes)"
                )));
            }
            let entry_end = offset.checked_add(rec.length).ok_or_else(|| {
                Error::model(format!("pack entry {q}: its length {} overflows a 64-bit offset", rec.length))
            })?;
            if entry_end > len as u64 {
                return Err(Error::model(format!(
                    "pack truncated: entry {q} ends at byte {entry_end}, the pack has {len} bytes"
                )));
            }
            // Both are at most `len` now, so they fit in usize.
            let (pad_start, start, stop) = (end as usize, offset as usize, entry_end as usize);
            if bytes[pad_start..start].iter().any(|&b| b != 0) {
                return Err(Error::model(format!(
                    "pack padding before entry {q} (bytes {pad_start}..{start}) is not zero: the pack is corrupt"
                )));
            }
            entries.push(Entry { name, data: &bytes[start..stop], sha256: rec.sha256 });
            end = entry_end;
        }
        if len as u64 > end {
            return Err(Error::model(format!(
                "pack has trailing bytes: its last entry ends at byte {end}, the pack has {len} bytes (the \
                 file was extended or holds more than one pack)"
            )));
        }
        Ok(Pack { entries })
    }

    /// The entries' names, in pack order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.entries.iter().map(|e| e.name)
    }

    /// How many entries the pack has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pack has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack has an entry named `name` (exact byte comparison).
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The length in bytes of entry `name`, without checking its data; `None` if there is no such entry.
    pub fn size(&self, name: &str) -> Option<usize> {
        self.find(name).map(|e| e.data.len())
    }

    /// The sha256 of entry `name` as its header records it, in lower-case hex (as manifests write it), without
    /// hashing the data; `None` if there is no such entry. [`Pack::entry`] checks the data against it, so
    /// comparing it with a manifest's sha256 after `entry` succeeded checks the data against the manifest.
    pub fn sha256_hex(&self, name: &str) -> Option<String> {
        self.find(name).map(|e| e.sha256.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The bytes of entry `name`, a slice of the parsed buffer, after checking their sha256 (on every call).
    ///
    /// Errors: no such entry is [`Error::ModelNotFound`] with `name` as its path; a sha256 mismatch is
    /// [`Error::InvalidModel`].
    pub fn entry(&self, name: &str) -> Result<&'a [u8]> {
        let e = self.find(name).ok_or_else(|| Error::ModelNotFound {
            path: PathBuf::from(name),
            reason: "the pack has no entry of this name".to_string(),
        })?;
        if Sha256::digest(e.data).as_slice() != e.sha256 {
            return Err(Error::model(format!("pack entry {}: sha256 mismatch (the data is corrupt)", quote(e.name))));
        }
        Ok(e.data)
    }

    fn find(&self, name: &str) -> Option<&Entry<'a>> {
        self.entries.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed xorshift64 generator: tests need reproducible bytes, not good randomness.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    fn payload() -> Vec<u8> {
        (0..1000u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    const NAMES: [&str; 3] = ["empty.txt", "one.bin", "minilm/tokenizer.json"];

    fn sample_entries(big: &[u8]) -> Vec<(&'static str, &[u8])> {
        vec![(NAMES[0], &[][..]), (NAMES[1], &[0x5a][..]), (NAMES[2], big)]
    }

    fn pack_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        write(entries, &mut out).unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        pack_of(&sample_entries(&payload()))
    }

    /// Where each entry record of a pack of `names` starts, and the header's length.
    fn layout(names: &[&str]) -> (Vec<usize>, usize) {
        let mut at = PREAMBLE_LEN;
        let mut records = Vec::new();
        for n in names {
            records.push(at);
            at += RECORD_FIXED_LEN + n.len();
        }
        (records, at + SHA_LEN)
    }

    /// Byte offset of record `i`'s data-offset field.
    fn offset_field(names: &[&str], i: usize) -> usize {
        layout(names).0[i] + 2 + names[i].len()
    }

    fn read_u64(bytes: &[u8], at: usize) -> u64 {
        le_u64(bytes, at)
    }

    fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Recomputes the header checksum of a pack whose header is `header_len` bytes (after a crafted edit).
    fn reseal(bytes: &mut [u8], header_len: usize) {
        let sum = Sha256::digest(&bytes[..header_len - SHA_LEN]);
        bytes[header_len - SHA_LEN..header_len].copy_from_slice(&sum);
    }

    fn parse_err(bytes: &[u8]) -> String {
        match Pack::parse(bytes) {
            Ok(p) => panic!("parsed: {p:?}"),
            Err(e @ Error::InvalidModel(_)) => e.to_string(),
            Err(e) => panic!("not InvalidModel: {e}"),
        }
    }

    fn assert_contains(msg: &str, parts: &[&str]) {
        for p in parts {
            assert!(msg.contains(p), "{msg:?} lacks {p:?}");
        }
    }

    /// Whether a (possibly mutated) pack is refused: by `parse`, or by `entry` of some entry.
    fn refused(bytes: &[u8]) -> bool {
        match Pack::parse(bytes) {
            Err(_) => true,
            Ok(p) => p.names().any(|n| p.entry(n).is_err()),
        }
    }

    #[test]
    fn round_trip() {
        let big = payload();
        let entries = sample_entries(&big);
        let bytes = pack_of(&entries);
        assert!(is_pack(&bytes));
        let pack = Pack::parse(&bytes).unwrap();
        assert_eq!(pack.names().collect::<Vec<_>>(), NAMES);
        assert_eq!(pack.len(), 3);
        assert!(!pack.is_empty());
        for (name, data) in &entries {
            let got = pack.entry(name).unwrap();
            assert_eq!(got, *data);
            assert_eq!(pack.size(name), Some(data.len()));
            assert!(pack.contains(name));
            // Borrowed from the buffer, at a 64-aligned offset.
            let at = got.as_ptr() as usize - bytes.as_ptr() as usize;
            assert!(at < bytes.len() || data.is_empty());
            assert!(at.is_multiple_of(64), "{name}");
        }
        let (_, header_len) = layout(&NAMES);
        let mut end = header_len as u64;
        for (i, (_, data)) in entries.iter().enumerate() {
            let off = read_u64(&bytes, offset_field(&NAMES, i));
            assert!(off.is_multiple_of(ALIGN));
            assert_eq!(off, align_up(end).unwrap());
            assert_eq!(read_u64(&bytes, offset_field(&NAMES, i) + 8), data.len() as u64);
            end = off + data.len() as u64;
        }
        assert_eq!(end, bytes.len() as u64);
        assert!(!pack.contains("minilm"));
        assert!(!pack.contains("MINILM/tokenizer.json"));
        assert_eq!(pack.size("x.onnx"), None);
        assert_eq!(pack.sha256_hex("x.onnx"), None);
        for (name, data) in &entries {
            assert_eq!(pack.sha256_hex(name).unwrap(), crate::manifest::sha256_hex(data));
        }
        match pack.entry("x.onnx") {
            Err(Error::ModelNotFound { path, reason }) => {
                assert_eq!(path, PathBuf::from("x.onnx"));
                assert!(reason.contains("no entry"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(format!("{pack:?}"), r#"{"empty.txt": 0, "one.bin": 1, "minilm/tokenizer.json": 1000}"#);
    }

    #[test]
    fn empty_pack() {
        let bytes = pack_of(&[]);
        assert_eq!(bytes.len(), PREAMBLE_LEN + SHA_LEN);
        let pack = Pack::parse(&bytes).unwrap();
        assert!(pack.is_empty());
        assert_eq!(pack.names().count(), 0);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_contains(
            &parse_err(&longer),
            &["trailing bytes: its last entry ends at byte 48, the pack has 49 bytes"],
        );
    }

    #[test]
    fn is_pack_needs_the_whole_magic() {
        assert!(is_pack(b"MIRAGEPK"));
        assert!(is_pack(b"MIRAGEPK\x01\0\0\0"));
        assert!(!is_pack(b"MIRAGEP"));
        assert!(!is_pack(b""));
        assert!(!is_pack(b"mIRAGEPK"));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(Pack::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Cut at each section boundary: the message says truncated.
        let (records, header_len) = layout(&NAMES);
        let pack = Pack::parse(&bytes).unwrap();
        let mut boundaries = vec![1, 8, 12, 16];
        boundaries.extend(records.iter().skip(1));
        boundaries.extend([header_len - SHA_LEN, header_len]);
        for name in NAMES {
            let data = pack.entry(name).unwrap();
            let end = data.as_ptr() as usize - bytes.as_ptr() as usize + data.len();
            if end < bytes.len() {
                boundaries.push(end);
            }
        }
        for cut in boundaries {
            let msg = parse_err(&bytes[..cut]);
            assert_contains(&msg, &["truncated"]);
            assert!(msg.len() < 300, "{msg}");
        }
        assert_contains(&parse_err(&bytes[..8]), &["format version ends at byte 12, the pack has 8 bytes"]);
        assert_contains(&parse_err(&bytes[..12]), &["entry count ends at byte 16"]);
        assert_contains(&parse_err(&bytes[..16]), &["lists 3 entries"]);
        assert_contains(&parse_err(&bytes[..header_len - 1]), &["header checksum ends at byte"]);
        let last_end = bytes.len();
        assert_contains(
            &parse_err(&bytes[..last_end - 1]),
            &[&format!("entry \"minilm/tokenizer.json\" ends at byte {last_end}, the pack has {}", last_end - 1)],
        );
        assert_contains(&parse_err(&bytes[..3]), &["truncated", "magic"]);
        assert_contains(&parse_err(&[]), &["not a mirage pack", "empty"]);
    }

    #[test]
    fn checksums() {
        let bytes = sample();
        let (records, header_len) = layout(&NAMES);

        // The header checksum itself.
        let mut b = bytes.clone();
        b[header_len - 5] ^= 0x10;
        assert_contains(&parse_err(&b), &["header checksum mismatch"]);

        // An entry's stored sha256 is under the header checksum.
        for (i, name) in NAMES.iter().enumerate() {
            let mut b = bytes.clone();
            b[records[i] + 18 + name.len() + 7] ^= 1;
            assert_contains(&parse_err(&b), &["header checksum mismatch"]);
        }

        // Data: parse succeeds, the entry does not, the others do.
        let pack = Pack::parse(&bytes).unwrap();
        for flipped in NAMES.iter().filter(|n| pack.size(n) != Some(0)) {
            let data = pack.entry(flipped).unwrap();
            let at = data.as_ptr() as usize - bytes.as_ptr() as usize + data.len() / 2;
            let mut b = bytes.clone();
            b[at] ^= 0x80;
            let p = Pack::parse(&b).unwrap();
            for name in NAMES {
                let got = p.entry(name);
                if name == *flipped {
                    let msg = got.unwrap_err().to_string();
                    assert_contains(&msg, &[&format!("pack entry {name:?}: sha256 mismatch (the data is corrupt)")]);
                } else {
                    assert_eq!(got.unwrap(), pack.entry(name).unwrap());
                }
            }
        }

        // Padding between the header and the first entry, and between entries.
        let mut b = bytes.clone();
        let pad = header_len;
        assert!(!(pad as u64).is_multiple_of(ALIGN), "the sample's header should need padding");
        b[pad] = 1;
        assert_contains(&parse_err(&b), &["padding before entry \"empty.txt\"", "not zero"]);
        let one_end = pack.entry("one.bin").unwrap().as_ptr() as usize - bytes.as_ptr() as usize + 1;
        let mut b = bytes.clone();
        b[one_end] = 0xff;
        assert_contains(&parse_err(&b), &["padding before entry \"minilm/tokenizer.json\""]);
    }

    #[test]
    fn every_byte_is_covered() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for x in [0x01, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= x;
                assert!(refused(&b), "flipping bit {x:#x} of byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let bytes = sample();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut b = bytes.clone();
            let at = (rng.next() % b.len() as u64) as usize;
            let v = rng.next() as u8;
            let changed = b[at] != v;
            b[at] = v;
            assert!(!changed || refused(&b), "byte {at} set to {v:#x} went unnoticed");
        }
        // And a few hundred multi-byte mutations and truncations of mutated packs.
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..(rng.next() % 8 + 1) {
                let at = (rng.next() % b.len() as u64) as usize;
                b[at] = rng.next() as u8;
            }
            let cut = (rng.next() % (b.len() as u64 + 1)) as usize;
            let _ = refused(&b[..cut]);
        }
    }

    #[test]
    fn foreign_buffers() {
        assert_contains(&parse_err(b""), &["not a mirage pack"]);
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_contains(&parse_err(png), &["not a mirage pack (the first bytes are not \"MIRAGEPK\")"]);
        let mut rng = XorShift(42);
        let mut noise: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
        assert_contains(&parse_err(&noise), &["not a mirage pack"]);
        // Random bytes behind a valid magic and version: the entry count is refused without allocating for it.
        noise[..8].copy_from_slice(&MAGIC);
        noise[8..12].copy_from_slice(&1u32.to_le_bytes());
        for count in [0u32, 1, 2, 100, 4096, 4097, u32::MAX] {
            noise[12..16].copy_from_slice(&count.to_le_bytes());
            parse_err(&noise);
        }
    }

    #[test]
    fn version_count_and_trailing_bytes() {
        let bytes = sample();
        let (_, header_len) = layout(&NAMES);

        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        reseal(&mut b, header_len);
        assert_contains(&parse_err(&b), &["pack format version 2 is not supported by this build (it reads version 1)"]);

        let mut b = bytes.clone();
        b[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_contains(&parse_err(&b), &["4097 entries, over the limit of 4096"]);

        let mut b = bytes.clone();
        b.extend_from_slice(&[0; 3]);
        assert_contains(
            &parse_err(&b),
            &[&format!(
                "trailing bytes: its last entry ends at byte {}, the pack has {} bytes",
                bytes.len(),
                bytes.len() + 3
            )],
        );
        let mut b = bytes.clone();
        b.extend_from_slice(&bytes);
        assert_contains(&parse_err(&b), &["trailing bytes"]);
    }

    #[test]
    fn too_many_entries() {
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("e{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
        let mut out = Vec::new();
        let err = write(&entries, &mut out).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_contains(&err.to_string(), &["at most 4096", "4097"]);
        assert!(out.is_empty());
        entries.pop();
        let bytes = pack_of(&entries);
        assert_eq!(Pack::parse(&bytes).unwrap().len(), MAX_ENTRIES);
    }

    #[test]
    fn crafted_layouts() {
        let bytes = sample();
        let (_, header_len) = layout(&NAMES);
        let first = read_u64(&bytes, offset_field(&NAMES, 0));
        let craft = |entry: usize, offset: u64| {
            let mut b = bytes.clone();
            set_u64(&mut b, offset_field(&NAMES, entry), offset);
            reseal(&mut b, header_len);
            parse_err(&b)
        };
        // Entry 2 over entry 1 (both start where the empty entry 0 is).
        assert_contains(&craft(2, first), &["\"minilm/tokenizer.json\" starts at byte", "overlap"]);
        assert_contains(&craft(0, 0), &["\"empty.txt\" starts at byte 0, inside the header"]);
        assert_contains(&craft(1, 16), &["inside the header"]);
        assert_contains(&craft(2, first + 1), &["not at a multiple of 64"]);
        assert_contains(&craft(2, first + 128), &["gap"]);
        assert_contains(&craft(0, first - 64), &["inside the header"]);

        // A length past the end, and one that overflows.
        let mut b = bytes.clone();
        set_u64(&mut b, offset_field(&NAMES, 2) + 8, 1001);
        reseal(&mut b, header_len);
        assert_contains(&parse_err(&b), &["truncated: entry \"minilm/tokenizer.json\" ends at byte"]);
        set_u64(&mut b, offset_field(&NAMES, 2) + 8, u64::MAX - 10);
        reseal(&mut b, header_len);
        assert_contains(&parse_err(&b), &["overflows"]);
        set_u64(&mut b, offset_field(&NAMES, 2) + 8, 999);
        reseal(&mut b, header_len);
        assert_contains(&parse_err(&b), &["trailing bytes"]);
    }

    #[test]
    fn crafted_names() {
        let names = ["a.onnx", "b.onnx"];
        let bytes = pack_of(&[(names[0], b"x"), (names[1], b"y")]);
        let (records, header_len) = layout(&names);
        let craft = |name: &[u8]| {
            let mut b = bytes.clone();
            b[records[1] + 2..records[1] + 2 + name.len()].copy_from_slice(name);
            reseal(&mut b, header_len);
            parse_err(&b)
        };
        assert_contains(&craft(b"a.onnx"), &["two entries named \"a.onnx\""]);
        assert_contains(&craft(b"b\xff.onn"), &["entry 2 of 2", "not UTF-8"]);
        assert_contains(&craft(b"../onn"), &["\"../onn\" has a \"..\" component"]);
        assert_contains(&craft(b"/b.onn"), &["absolute"]);
        assert_contains(&craft(b"b\\.onn"), &["backslash"]);
        assert_contains(&craft(b"b\0onnx"), &["NUL"]);
        assert_contains(&craft(b"a//onn"), &["empty component"]);
    }

    #[test]
    fn invalid_names_at_write() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for (name, why) in [
            ("../x", "\"..\" component"),
            ("./x", "\".\" component"),
            ("a/./x", "\".\" component"),
            ("/abs", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("", "is empty"),
            ("a\\b", "backslash"),
            ("a\0b", "NUL"),
            (long.as_str(), "over the limit of 1024"),
        ] {
            let mut out = Vec::new();
            let err = write(&[("ok", b"1"), (name, b"2")], &mut out).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{name:?}: {err}");
            assert_contains(&err.to_string(), &[why]);
            assert!(out.is_empty());
        }
        // The longest name is fine, and so are dots inside a component.
        let longest = "y".repeat(MAX_NAME_BYTES);
        let bytes = pack_of(&[(&longest, b"1"), ("..a/b..", b"2"), ("é/ü.json", b"3")]);
        let pack = Pack::parse(&bytes).unwrap();
        assert_eq!(pack.entry("é/ü.json").unwrap(), b"3");
        // A long name is quoted short in messages.
        let mut out = Vec::new();
        let err = write(&[(&longest, b"1"), (&longest, b"2")], &mut out).unwrap_err();
        assert_contains(&err.to_string(), &["given twice", "(1024 bytes)"]);
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn duplicate_names_at_write() {
        let mut out = Vec::new();
        let err = write(&[("a", b"1"), ("b", b""), ("a", b"2")], &mut out).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_contains(&err.to_string(), &["\"a\" is given twice"]);
        assert!(out.is_empty());
        // Exact byte comparison: case differs, so these are two names.
        pack_of(&[("a", b"1"), ("A", b"2")]);
    }

    #[test]
    fn write_errors_are_io() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let big = payload();
        let entries = sample_entries(&big);
        let full = pack_of(&entries).len();
        for room in [0, 10, full - 1] {
            let err = write(&entries, &mut Full(room)).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert_contains(&err.to_string(), &["disk full"]);
        }
        write(&entries, &mut Full(full)).unwrap();
        // Through a trait object too.
        let mut v = Vec::new();
        let dyn_out: &mut dyn Write = &mut v;
        write(&entries, dyn_out).unwrap();
        assert_eq!(v, pack_of(&entries));
    }
}
