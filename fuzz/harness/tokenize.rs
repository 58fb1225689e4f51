//! Prompt tokenisation (the text encoder's WordPiece tokenizer, as `mirage_text_embed` and every prompt of
//! the C API use it) on arbitrary UTF-8 with an arbitrary context length. Property: never a panic; 2 to
//! `context_len` ids ([CLS] ... [SEP], checked by `tokenize` itself) or a short error. Needs the exported encoder: models/minilm
//! (`make test` makes it) or MIRAGE_FUZZ_TEXT_ENCODER.

use std::path::PathBuf;
use std::sync::OnceLock;

use mirage::text::TextEncoder;

/// The encoder's folder, when set before the first input (the replaying test sets its own); else
/// MIRAGE_FUZZ_TEXT_ENCODER, else models/minilm of this checkout.
pub static DIR: OnceLock<PathBuf> = OnceLock::new();

fn encoder() -> &'static TextEncoder {
    static ENC: OnceLock<TextEncoder> = OnceLock::new();
    ENC.get_or_init(|| {
        super::common::quiet();
        let dir = DIR.get().cloned().unwrap_or_else(|| {
            std::env::var_os("MIRAGE_FUZZ_TEXT_ENCODER").map(PathBuf::from).unwrap_or_else(|| {
                // The fuzz crate's folder is fuzz/, the tests' is the checkout: look upwards.
                let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                let mut dirs = here.ancestors().map(|a| a.join("models/minilm"));
                dirs.find(|d| d.join("encoder.json").is_file()).unwrap_or_else(|| here.join("models/minilm"))
            })
        });
        TextEncoder::open(&dir, None, None).unwrap_or_else(|e| panic!("the text encoder at {}: {e}", dir.display()))
    })
}

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let Some((&len, text)) = data.split_first() else { return };
    let Ok(prompt) = std::str::from_utf8(text) else { return };
    let context_len = usize::from(len);
    let enc = encoder();
    match enc.tokenize(prompt, context_len) {
        Ok(ids) => {
            assert!((2..=context_len).contains(&ids.len()), "{} ids for a context of {context_len}", ids.len());
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.len() <= 700, "a message of {} bytes", m.len());
        }
    }
}
