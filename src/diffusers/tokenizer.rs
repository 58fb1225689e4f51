//! The CLIP tokenizer of Stable Diffusion: prompt -> the 77 token ids its CLIP text encoder reads, exactly as
//! Hugging Face transformers' fast `CLIPTokenizer` gives them for
//! `tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)`, which
//! is what diffusers' pipelines call.
//!
//! A diffusers (or optimum ONNX) folder keeps the tokenizer in `tokenizer/` as the files of the original,
//! "slow" tokenizer: `vocab.json`, `merges.txt`, `tokenizer_config.json` and often `special_tokens_map.json`;
//! there is no `tokenizer.json`. transformers builds its fast tokenizer from those files in code, and so do
//! we here, stage by stage with the `tokenizers` crate (the library transformers itself runs):
//!
//! 1. Special tokens (`<|startoftext|>`, `<|endoftext|>`, the pad token...) written literally in the prompt
//!    are matched first, as transformers' "added tokens", with the flags transformers gives them (see
//!    [`ClipTokenizer`]).
//! 2. Normalizer: NFC, every run of whitespace to one space, lower case.
//! 3. Pre-tokenizer: CLIP's regex keeps contractions ('s 't 're 've 'm 'll 'd), runs of letters, single
//!    digits and runs of other non-space characters, and drops the spaces; then GPT-2's byte-level mapping
//!    (each UTF-8 byte to one printable character), with no space added in front.
//! 4. Model: BPE over `vocab.json` / `merges.txt`, the last symbol of each word carrying CLIP's end-of-word
//!    suffix `</w>`, no prefix on continuing pieces.
//! 5. `<|startoftext|>` + ids + `<|endoftext|>`, truncated to `model_max_length` (the end token kept: the
//!    text is cut, not the frame) and padded to it with the pad token's id: `<|endoftext|>` (49407) for
//!    SD 1.x, `!` (0) for SD 2.x.
//!
//! Where transformers' slow tokenizer (and older transformers) differ, we follow the fast one; see
//! [`ClipTokenizer`] for the differences.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};
use crate::files::read_regular;
use crate::limits::{clip, quote, quote_path};
use crate::log::Level;
use crate::log_at;

/// The BPE vocabulary: token -> id (CLIP's has 49408 entries, ids 0..49407).
pub const VOCAB_FILE: &str = "vocab.json";
/// The BPE merges, one "left right" pair a line in rank order, after a `#version` header line.
pub const MERGES_FILE: &str = "merges.txt";
/// The tokenizer's settings: `model_max_length`, the special tokens, `added_tokens_decoder`...
pub const CONFIG_FILE: &str = "tokenizer_config.json";
/// Optional: the special tokens again; where `tokenizer_config.json` has no `added_tokens_decoder`, its
/// entries override the config's (as in transformers).
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

/// Largest file of a tokenizer folder we read. CLIP's `vocab.json` is about 1.6 MB and its `merges.txt`
/// about 0.5 MB; a hostile folder must not make us allocate gigabytes.
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 16 << 20;

/// Longest context accepted from `model_max_length`. CLIP's is 77; transformers writes 1e30 there for
/// "no limit", which a CLIP text encoder (a fixed table of positions) cannot have.
pub const MAX_CONTEXT: usize = 4096;

/// Shortest context: room for the start and the end token.
pub const MIN_CONTEXT: usize = 2;

/// Longest prompt [`ClipTokenizer::encode`] takes, in bytes. Only the first few hundred bytes of a prompt
/// can reach a 77-token context; this bounds the work a caller can ask for.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;

/// CLIP's end-of-word suffix, glued to the last symbol of every word in `vocab.json` and `merges.txt`.
const END_OF_WORD: &str = "</w>";

/// CLIP's pre-tokenization regex, as transformers' fast `CLIPTokenizer` writes it: the two special tokens
/// whole (they only matter where they are not matched as added tokens first), English contractions, runs
/// of letters, single digits, runs of anything else but whitespace. The matches are the pieces; what lies
/// between (whitespace) is dropped.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The special tokens of transformers, in the order it registers them (`SPECIAL_TOKENS_ATTRIBUTES`): where
/// two name the same text (CLIP's eos, unk and, in SD 1.x, pad are all `<|endoftext|>`), the flags of the
/// last one win.
const NAMED_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// transformers' defaults for `CLIPTokenizer`'s four tokens when the config names none.
const CLIP_DEFAULTS: [(&str, &str); 4] = [
    ("bos_token", "<|startoftext|>"),
    ("eos_token", "<|endoftext|>"),
    ("unk_token", "<|endoftext|>"),
    ("pad_token", "<|endoftext|>"),
];

/// A Stable Diffusion CLIP tokenizer, loaded from a folder's `tokenizer/` directory.
///
/// It reproduces transformers 5's `CLIPTokenizer` (a fast, `tokenizers`-backed class), including which
/// special tokens written in a prompt are matched as such: a token the config gives as a plain string is
/// matched case-sensitively, one given as an object with `"normalized": true` in the lower-cased text, and
/// where several names share a text (eos, unk and pad in SD 1.x) the last of bos, eos, unk, sep, pad wins.
/// So with SD 1.x's hub files "<|ENDOFTEXT|>" is not the end token but with SD 2.x's it is; and SD 2.x's
/// pad token "!" is a special token, so every "!" of a prompt is id 0 there ("!!" is two ids 0, not the
/// "!!" merge; the slow tokenizer does the same since transformers 4.34).
///
/// Differences from other transformers tokenizers, checked on the real SD 1.5 and 2.1 vocabularies:
///
/// - transformers 4.x `CLIPTokenizerFast`: the same ids, except that it matches the special tokens in any
///   case ("<|ENDOFTEXT|>", "<|StartOfText|>") with every config.
/// - The slow `CLIPTokenizer` of transformers 4.x (the class diffusers named until transformers 5 made it
///   the fast one), with ftfy installed, runs `ftfy.fix_text` first: HTML entities unescaped ("&amp;" ->
///   "&" when the text has no "<"), curly quotes straightened, full-width letters and ligatures ("ＡＢＣ",
///   "ﬁ") to ASCII, mojibake repaired, control characters dropped. Without ftfy it runs BERT's
///   BasicTokenizer instead: control and format characters (NUL, DEL, U+200D in emoji sequences) and
///   U+FFFD dropped, CJK ideographs split into separate words. Either way it lower-cases with Python's
///   `str.lower`, which turns a word-final "Σ" into "ς" where the fast one gives "σ". Here, as in the fast
///   tokenizer, the text only gets NFC, whitespace collapsing and per-character lower-casing.
pub struct ClipTokenizer {
    /// The directory the files came from, for messages.
    dir: PathBuf,
    /// The pipeline; truncation and padding to `context_len` are configured on it.
    tokenizer: Tokenizer,
    /// `model_max_length`.
    context_len: usize,
    /// Ids of the start, end and pad tokens.
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    /// Entries of `vocab.json` (ids are 0..vocab_size, checked at load).
    vocab_size: usize,
    /// `truncation_side` is "right" (the default): the end of an over-long prompt is dropped, which lets
    /// [`ClipTokenizer::encode`] tokenize only the prompt's start.
    truncate_right: bool,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("dir", &self.dir)
            .field("context_len", &self.context_len)
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads the tokenizer from `dir`, a diffusers folder's `tokenizer/` (or `tokenizer_2/`) directory:
    /// `vocab.json`, `merges.txt`, `tokenizer_config.json` and, if present, `special_tokens_map.json`.
    ///
    /// Errors: a missing required file is [`Error::ModelNotFound`]; a file that is not regular, is over
    /// [`MAX_TOKENIZER_FILE_BYTES`], is not valid JSON / UTF-8, a `merges.txt` without its `#version`
    /// header or with a malformed line or a pair the vocabulary cannot form, a vocabulary whose ids are
    /// not 0..N each once or that lacks a special token, a `model_max_length` that is absent or outside
    /// [`MIN_CONTEXT`]..=[`MAX_CONTEXT`] (e.g. transformers' 1e30 for "unlimited"), a tokenizer class other
    /// than CLIP's: all [`Error::InvalidModel`], naming the file.
    pub fn from_dir(dir: &Path) -> Result<ClipTokenizer> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                path: dir.to_path_buf(),
                reason: "the CLIP tokenizer directory (a diffusers folder's tokenizer/) does not exist".into(),
            });
        }
        let config_path = dir.join(CONFIG_FILE);
        let config = read_json_object(&config_path, CONFIG_FILE, true)?.unwrap_or_default();
        let named = |m: String| Error::model(format!("{}: {m}", quote_path(&config_path)));
        if let Some(class) = config.get("tokenizer_class") {
            match class.as_str() {
                Some(c) if c.starts_with("CLIPTokenizer") => {}
                _ => return Err(named(format!("tokenizer_class is {}, not CLIPTokenizer", clip(&class.to_string())))),
            }
        }
        let context_len = model_max_length(&config).map_err(named)?;
        let truncate_right = side(&config, "truncation_side").map_err(named)?;
        let pad_right = side(&config, "padding_side").map_err(named)?;

        let map_path = dir.join(SPECIAL_TOKENS_FILE);
        let special_map = if config.contains_key("added_tokens_decoder") {
            None // transformers then ignores special_tokens_map.json
        } else {
            read_json_object(&map_path, SPECIAL_TOKENS_FILE, false)?
        };
        let specials = special_tokens(&config, special_map.as_ref())
            .map_err(|m| Error::model(format!("{} / {SPECIAL_TOKENS_FILE}: {m}", quote_path(&config_path))))?;

        let vocab_path = dir.join(VOCAB_FILE);
        let vocab = read_vocab(&vocab_path)?;
        let merges_path = dir.join(MERGES_FILE);
        let merges = read_merges(&merges_path, &vocab)?;

        let in_vocab = |key: &str| -> Result<(String, u32)> {
            let content = specials.named.get(key).map(|t| t.content.clone()).ok_or_else(|| {
                named(format!("no {key}: a CLIP tokenizer needs bos_token, eos_token, unk_token and pad_token"))
            })?;
            let id = vocab.get(&content).copied().ok_or_else(|| {
                Error::model(format!(
                    "{}: the vocabulary has no {key} {} (not a CLIP vocabulary?)",
                    quote_path(&vocab_path),
                    quote(&content)
                ))
            })?;
            Ok((content, id))
        };
        let (bos, bos_id) = in_vocab("bos_token")?;
        let (eos, eos_id) = in_vocab("eos_token")?;
        let (unk, _) = in_vocab("unk_token")?;
        let (pad, pad_id) = in_vocab("pad_token")?;
        let vocab_size = vocab.len();

        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
            .unk_token(unk)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(END_OF_WORD.to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::model(format!("{}: {}", quote_path(&merges_path), clip(&e.to_string()))))?;
        let mut tokenizer = Tokenizer::new(bpe);
        // The normalizer before the added tokens: tokens flagged `normalized` are matched in normalized
        // text, in the form the normalizer gives them.
        let replace = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| Error::model(format!("CLIP normalizer: {e}")))?;
        tokenizer
            .with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), replace.into(), Lowercase.into()])))
            .map_err(|e| Error::model(format!("CLIP normalizer: {e}")))?;
        let split = Split::new(SplitPattern::Regex(CLIP_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| Error::model(format!("CLIP pre-tokenizer: {e}")))?;
        // ByteLevel(add_prefix_space=false, trim_offsets, use_regex) as transformers makes it: its GPT-2
        // regex never splits one of CLIP's pieces further, but it costs nothing to be the same.
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos.clone(), eos_id), (bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        tokenizer.add_special_tokens(specials.added.iter().cloned()).map_err(|e| named(clip(&e.to_string())))?;
        // A token of the vocabulary keeps its id there whatever added_tokens_decoder says (as in
        // transformers); one beyond it gets the next free id, which must be the one the config gives.
        for (token, want) in &specials.ids {
            let got = tokenizer.token_to_id(&token.content);
            if got != Some(*want) && got.is_some_and(|id| id as usize >= vocab_size) {
                return Err(named(format!(
                    "added_tokens_decoder gives {} the id {want}, but it would get {got:?} (ids of tokens beyond \
                     the vocabulary must follow it without gaps)",
                    quote(&token.content)
                )));
            }
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: if truncate_right { TruncationDirection::Right } else { TruncationDirection::Left },
                max_length: context_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| named(format!("truncation to {context_len}: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_len),
            direction: if pad_right { PaddingDirection::Right } else { PaddingDirection::Left },
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad,
        }));
        Ok(ClipTokenizer {
            dir: dir.to_path_buf(),
            tokenizer,
            context_len,
            bos_id,
            eos_id,
            pad_id,
            vocab_size,
            truncate_right,
        })
    }

    /// Tokens per prompt (`model_max_length`, 77 for CLIP): the length of every [`ClipTokenizer::encode`].
    pub fn context_len(&self) -> usize {
        self.context_len
    }

    /// Entries in `vocab.json` (49408 for CLIP). Ids of tokens from the config's `added_tokens_decoder`
    /// (textual-inversion tokens) may lie beyond it; a text encoder should check ids against its table.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Ids of the start, end and pad tokens (49406, 49407 and 49407 or 0 in Stable Diffusion's files).
    pub fn special_ids(&self) -> (u32, u32, u32) {
        (self.bos_id, self.eos_id, self.pad_id)
    }

    /// The ids of one prompt: start token, the text's tokens, end token, then the pad token up to
    /// [`ClipTokenizer::context_len`]. A prompt with more than `context_len - 2` tokens is cut (its end
    /// dropped, the end token kept) with a warning, as diffusers does. The empty prompt is valid.
    ///
    /// Errors: a prompt over [`MAX_PROMPT_BYTES`] is [`Error::InvalidArgument`].
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(Error::invalid(format!(
                "prompt {} has {} bytes; at most {MAX_PROMPT_BYTES} (CLIP reads {} tokens)",
                quote(prompt),
                prompt.len(),
                self.context_len
            )));
        }
        let text = if self.truncate_right { head_words(prompt, self.context_len) } else { prompt };
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| Error::invalid(format!("tokenizing {}: {}", quote(prompt), clip(&e.to_string()))))?;
        if text.len() < prompt.len() || !enc.get_overflowing().is_empty() {
            log_at!(
                Level::Warn,
                "CLIP tokenizer: prompt {} is longer than {} tokens; the rest is dropped",
                quote(prompt),
                self.context_len
            );
        }
        let ids = enc.get_ids().to_vec();
        if ids.len() != self.context_len {
            return Err(Error::model(format!(
                "{}: the tokenizer gave {} ids, not {}",
                quote_path(&self.dir),
                ids.len(),
                self.context_len
            )));
        }
        Ok(ids)
    }
}

/// The start of `prompt` that holds its first `words` space-separated words, or all of it: enough to give
/// the same first `words - 2` tokens as the whole prompt, since each word (a run of non-whitespace) makes
/// at least one token and nothing in the pipeline joins across a space (the normalizer works within a
/// character and its combining marks, the regex never matches a space, special tokens have none). A long
/// prompt thus costs no more than its first words.
fn head_words(prompt: &str, words: usize) -> &str {
    let mut seen = 0;
    let mut end = 0;
    for piece in prompt.split(' ') {
        end += piece.len();
        if piece.chars().any(|c| !c.is_whitespace()) {
            seen += 1;
            if seen >= words {
                return &prompt[..end];
            }
        }
        end += 1; // the space
    }
    prompt
}

/// Reads a JSON object file; `None` when the file is absent and not `required`.
fn read_json_object(path: &Path, what: &str, required: bool) -> Result<Option<Map<String, Value>>> {
    let missing = "a CLIP tokenizer directory needs vocab.json, merges.txt and tokenizer_config.json";
    let bytes = match read_regular(path, MAX_TOKENIZER_FILE_BYTES, what, missing) {
        Ok(b) => b,
        Err(Error::ModelNotFound { .. }) if !required => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(Error::model(format!("{}: not a JSON object", quote_path(path)))),
        Err(e) => Err(Error::model(format!("{}: not valid JSON: {}", quote_path(path), clip(&e.to_string())))),
    }
}

/// `model_max_length`: a whole number in `MIN_CONTEXT..=MAX_CONTEXT`.
fn model_max_length(config: &Map<String, Value>) -> std::result::Result<usize, String> {
    let v = config
        .get("model_max_length")
        .ok_or_else(|| "no model_max_length: CLIP needs its fixed context length (77) in the config".to_string())?;
    let n = v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e9).map(|f| f as u64));
    match n {
        Some(n) if (MIN_CONTEXT as u64..=MAX_CONTEXT as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "model_max_length is {}; a CLIP context of {MIN_CONTEXT}..={MAX_CONTEXT} tokens is needed (transformers \
             writes 1e30 for \"no limit\", which a CLIP text encoder cannot have)",
            clip(&v.to_string())
        )),
    }
}

/// `truncation_side` / `padding_side`: true for "right" (the default), false for "left".
fn side(config: &Map<String, Value>, key: &str) -> std::result::Result<bool, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) if s == "right" => Ok(true),
        Some(Value::String(s)) if s == "left" => Ok(false),
        Some(v) => Err(format!("{key} is {}; \"right\" or \"left\"", clip(&v.to_string()))),
    }
}

/// The special tokens as transformers registers them.
#[derive(Debug, Default)]
struct Specials {
    /// The named tokens (`bos_token`...), with their final flags.
    named: HashMap<String, AddedToken>,
    /// Every added token, in registration order, each text once with the flags of its last registration.
    added: Vec<AddedToken>,
    /// The ids `added_tokens_decoder` gives, to check against what the tokenizer assigns.
    ids: Vec<(AddedToken, u32)>,
}

/// Resolves the special tokens the way transformers 5 does when it loads a slow tokenizer's files:
///
/// - Each named token (bos, eos, unk, pad...) comes from `tokenizer_config.json`, overridden by
///   `special_tokens_map.json` (`special_map`, read only when the config has no `added_tokens_decoder`),
///   else CLIP's default. A string is a special token matched case-sensitively in the raw text
///   (normalized=false); an object ({"content": ...}) keeps its flags ("normalized": true means matched in
///   the lower-cased text). Where the config has `added_tokens_decoder`, a named token takes the flags of
///   the entry with its text there.
/// - The tokens registered: first `added_tokens_decoder`'s by id, then the named ones in
///   [`NAMED_TOKENS`] order, then `additional_special_tokens` / `extra_special_tokens`. A text registered
///   twice keeps the flags of its last registration: in SD 1.x the pad token "<|endoftext|>", a plain
///   string, makes the end token case-sensitive.
fn special_tokens(
    config: &Map<String, Value>,
    special_map: Option<&Map<String, Value>>,
) -> std::result::Result<Specials, String> {
    let mut s = Specials::default();
    let mut decoder: Vec<(u32, AddedToken)> = Vec::new();
    if let Some(d) = config.get("added_tokens_decoder") {
        let d = d.as_object().ok_or("added_tokens_decoder is not an object")?;
        for (id, v) in d {
            let id: u32 = id.parse().map_err(|_| format!("added_tokens_decoder key {} is not an id", quote(id)))?;
            let t = parse_token(v, None, "added_tokens_decoder")?.ok_or("added_tokens_decoder has a null token")?;
            decoder.push((id, t));
        }
        decoder.sort_by_key(|(id, _)| *id);
    }
    let by_content: HashMap<&str, &AddedToken> = decoder.iter().map(|(_, t)| (t.content.as_str(), t)).collect();

    let mut order: Vec<AddedToken> = decoder.iter().map(|(_, t)| t.clone()).collect();
    for key in NAMED_TOKENS {
        let from_map = special_map.and_then(|m| m.get(key));
        let token = match (from_map, config.get(key)) {
            (Some(v), _) => parse_token(v, Some(true), key)?,
            (None, Some(v)) => parse_token(v, None, key)?,
            (None, None) => CLIP_DEFAULTS.iter().find(|(k, _)| *k == key).map(|(_, c)| AddedToken::from(*c, true)),
        };
        let Some(mut token) = token else { continue };
        if let Some(t) = by_content.get(token.content.as_str()) {
            token = (*t).clone();
        }
        token.special = true;
        s.named.insert(key.to_string(), token.clone());
        order.push(token);
    }
    for key in ["additional_special_tokens", "extra_special_tokens"] {
        let list = special_map.and_then(|m| m.get(key)).or_else(|| config.get(key));
        match list {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for v in items {
                    if let Some(mut t) = parse_token(v, Some(true), key)? {
                        t.special = true;
                        order.push(t);
                    }
                }
            }
            Some(_) => return Err(format!("{key} is not a list of tokens")),
        }
    }
    // Last registration wins; the position is the first one's (a re-registration keeps the id).
    let mut index: HashMap<String, usize> = HashMap::new();
    for t in order {
        if t.content.is_empty() {
            continue;
        }
        match index.get(&t.content) {
            Some(&i) => s.added[i] = t,
            None => {
                index.insert(t.content.clone(), s.added.len());
                s.added.push(t);
            }
        }
    }
    s.ids = decoder.into_iter().map(|(id, t)| (t, id)).collect();
    Ok(s)
}

/// One token of the config: a string (a special token, matched in the raw text) or an object with
/// "content" and optional flags. `special`: forced value of the special flag (special_tokens_map.json's
/// objects are special), else the object's own (default false). As in the Python `AddedToken`, an absent
/// "normalized" means "not special". `Ok(None)` for JSON null.
fn parse_token(v: &Value, special: Option<bool>, key: &str) -> std::result::Result<Option<AddedToken>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(AddedToken::from(s.clone(), true))),
        Value::Object(o) => {
            let content = o
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{key}: a token object without a \"content\" string"))?;
            let flag = |name: &str| -> std::result::Result<Option<bool>, String> {
                match o.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Bool(b)) => Ok(Some(*b)),
                    Some(other) => Err(format!("{key}: \"{name}\" is {}, not true or false", clip(&other.to_string()))),
                }
            };
            let own_special = flag("special")?.unwrap_or(false);
            let special = special.unwrap_or(own_special);
            Ok(Some(
                AddedToken::from(content.to_string(), special)
                    .normalized(flag("normalized")?.unwrap_or(!special))
                    .lstrip(flag("lstrip")?.unwrap_or(false))
                    .rstrip(flag("rstrip")?.unwrap_or(false))
                    .single_word(flag("single_word")?.unwrap_or(false)),
            ))
        }
        other => Err(format!("{key} is {}, not a string or a token object", clip(&other.to_string()))),
    }
}

/// Reads `vocab.json`: an object token -> id whose ids are exactly 0..N, each once.
fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let map = read_json_object(path, VOCAB_FILE, true)?.unwrap_or_default();
    let bad = |m: String| Error::model(format!("{}: {m}", quote_path(path)));
    let n = map.len();
    let mut seen = vec![false; n];
    let mut vocab = HashMap::with_capacity(n);
    for (token, id) in map {
        let id =
            id.as_u64().filter(|&i| (i as usize) < n).ok_or_else(|| {
                bad(format!("the id of {} is {}; ids are 0..{n}", quote(&token), clip(&id.to_string())))
            })? as usize;
        if std::mem::replace(&mut seen[id], true) {
            return Err(bad(format!("id {id} is given to two tokens")));
        }
        vocab.insert(token, id as u32);
    }
    if n == 0 {
        return Err(bad("the vocabulary is empty".into()));
    }
    Ok(vocab)
}

/// Reads `merges.txt`: a `#version` header line, then one merge a line, "left right" separated by one
/// space, each side and their concatenation in the vocabulary. Further `#version` lines are skipped and
/// an empty line is an error, as the `tokenizers` library reads the file for transformers.
fn read_merges(path: &Path, vocab: &HashMap<String, u32>) -> Result<Vec<(String, String)>> {
    let missing = "a CLIP tokenizer directory needs vocab.json, merges.txt and tokenizer_config.json";
    let bytes = read_regular(path, MAX_TOKENIZER_FILE_BYTES, MERGES_FILE, missing)?;
    let bad = |m: String| Error::model(format!("{}: {m}", quote_path(path)));
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.starts_with("#version") => {}
        _ => return Err(bad("no \"#version\" header line: not a BPE merges file".into())),
    }
    let mut merges = Vec::new();
    for (i, line) in lines {
        if line.starts_with("#version") {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("line {}: {} is not two symbols separated by one space", i + 1, quote(line))));
        };
        for s in [a, b, &format!("{a}{b}")] {
            if !vocab.contains_key(s) {
                return Err(bad(format!("line {}: {} is not in {VOCAB_FILE}", i + 1, quote(s))));
            }
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's byte -> printable character table, the alphabet of CLIP's vocabulary: the characters indexed
    /// by byte, and in the order of CLIP's vocabulary (the printable bytes first, so "!" is id 0).
    fn byte_chars() -> (Vec<char>, Vec<char>) {
        let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let order: Vec<char> = cs.iter().map(|&c| char::from_u32(c).unwrap()).collect();
        let mut by_byte = vec!['\0'; 256];
        for (&b, &c) in bs.iter().zip(&order) {
            by_byte[b as usize] = c;
        }
        (by_byte, order)
    }

    /// The merges of the toy vocabulary (laid out as CLIP's: 256 byte symbols, the same with `</w>`, one
    /// token per merge, then the two special tokens).
    const MERGES: &[(&str, &str)] = &[
        ("h", "e"),
        ("l", "l"),
        ("ll", "o</w>"),
        ("he", "llo</w>"),
        ("c", "a"),
        ("ca", "t</w>"),
        ("!", "!</w>"),
        ("w", "o"),
        ("wo", "r"),
        ("wor", "l"),
        ("worl", "d</w>"),
        ("'", "s</w>"),
    ];

    struct Toy {
        dir: tempfile::TempDir,
        vocab: serde_json::Map<String, Value>,
    }

    impl Toy {
        /// A tokenizer folder like SD 1.x's (`pad` "<|endoftext|>") or SD 2.x's (`pad` "!"), with the token
        /// objects of the real files in tokenizer_config.json and special_tokens_map.json.
        fn new(pad: &str) -> Toy {
            let order = byte_chars().1;
            let mut tokens: Vec<String> = order.iter().map(|c| c.to_string()).collect();
            tokens.extend(order.iter().map(|c| format!("{c}</w>")));
            tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
            tokens.extend(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
            let vocab: serde_json::Map<String, Value> =
                tokens.into_iter().enumerate().map(|(i, t)| (t, Value::from(i))).collect();
            let toy = Toy { dir: tempfile::tempdir().unwrap(), vocab };
            toy.write(VOCAB_FILE, &Value::Object(toy.vocab.clone()).to_string());
            let merges: String = MERGES.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
            toy.write(MERGES_FILE, &format!("#version: 0.2\n{merges}"));
            let object = |c: &str| {
                serde_json::json!({"__type": "AddedToken", "content": c, "lstrip": false, "normalized": true,
                                   "rstrip": false, "single_word": false})
            };
            let config = serde_json::json!({
                "add_prefix_space": false, "bos_token": object("<|startoftext|>"), "do_lower_case": true,
                "eos_token": object("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
                "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": object("<|endoftext|>")});
            toy.write(CONFIG_FILE, &config.to_string());
            let mut map = serde_json::Map::new();
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                let mut v = config[key].clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("__type");
                }
                map.insert(key.into(), v);
            }
            toy.write(SPECIAL_TOKENS_FILE, &Value::Object(map).to_string());
            toy
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }

        fn config(&self) -> serde_json::Map<String, Value> {
            serde_json::from_slice(&std::fs::read(self.dir.path().join(CONFIG_FILE)).unwrap()).unwrap()
        }

        fn set_config(&self, key: &str, v: Value) {
            let mut c = self.config();
            c.insert(key.into(), v);
            self.write(CONFIG_FILE, &Value::Object(c).to_string());
        }

        fn id(&self, token: &str) -> u32 {
            self.vocab[token].as_u64().unwrap() as u32
        }

        fn load(&self) -> Result<ClipTokenizer> {
            ClipTokenizer::from_dir(self.dir.path())
        }

        /// The ids of `prompt` without the frame and the padding.
        fn inner(&self, prompt: &str) -> Vec<u32> {
            let t = self.load().unwrap();
            let ids = t.encode(prompt).unwrap();
            assert_eq!(ids.len(), 77);
            assert_eq!(ids[0], t.bos_id);
            // Strip the padding (and with it the end token, where it is also the pad token).
            let mut end = ids.len();
            while end > 1 && ids[end - 1] == t.pad_id {
                end -= 1;
            }
            if t.pad_id == t.eos_id {
                end += 1;
            }
            assert_eq!(ids[end - 1], t.eos_id, "{ids:?}");
            ids[1..end - 1].to_vec()
        }

        /// The error message of loading, which must be an invalid-model error naming `file`.
        fn load_error(&self, file: &str) -> String {
            let e = self.load().unwrap_err();
            assert!(matches!(e, Error::InvalidModel(_)), "{e}");
            let m = e.to_string();
            assert!(m.contains(file), "{m} does not name {file}");
            m
        }
    }

    #[test]
    fn bpe_merges_and_end_of_word() {
        let t = Toy::new("<|endoftext|>");
        assert_eq!(t.inner("hello"), [t.id("hello</w>")]);
        assert_eq!(t.inner("cat"), [t.id("cat</w>")]);
        // Partial merges: "world" -> "worl" + "d</w>" -> "world</w>"; "help" stops at "he" + "l" + "p</w>".
        assert_eq!(t.inner("world"), [t.id("world</w>")]);
        assert_eq!(t.inner("help"), [t.id("he"), t.id("l"), t.id("p</w>")]);
        // A single character is its own word: "x</w>", not "x".
        assert_eq!(t.inner("x"), [t.id("x</w>")]);
        // Digits are single pieces; punctuation runs are pieces; contractions split off.
        assert_eq!(t.inner("42"), [t.id("4</w>"), t.id("2</w>")]);
        assert_eq!(t.inner("cat's"), [t.id("cat</w>"), t.id("'s</w>")]);
        assert_eq!(t.inner("hello!!"), [t.id("hello</w>"), t.id("!!</w>")]);
        // Bytes of non-ASCII text: "é" is two bytes, two symbols.
        let e: Vec<u32> = "é"
            .bytes()
            .map(|b| byte_chars().0[b as usize])
            .enumerate()
            .map(|(i, c)| t.id(&if i == 1 { format!("{c}</w>") } else { c.to_string() }))
            .collect();
        assert_eq!(t.inner("é"), e);
    }

    #[test]
    fn lower_case_whitespace_and_nfc() {
        let t = Toy::new("<|endoftext|>");
        let want = t.inner("hello world");
        assert_eq!(want, [t.id("hello</w>"), t.id("world</w>")]);
        assert_eq!(t.inner("HeLLo WORLD"), want);
        assert_eq!(t.inner("  hello \t\n\u{3000} world  "), want);
        assert_eq!(t.inner(""), Vec::<u32>::new());
        assert_eq!(t.inner(" \n\t "), Vec::<u32>::new());
        // NFC: "e" + combining acute is "é".
        assert_eq!(t.inner("e\u{301}"), t.inner("\u{e9}"));
    }

    #[test]
    fn truncation_keeps_the_end_token_and_padding_uses_the_pad_id() {
        let t = Toy::new("<|endoftext|>");
        let tok = t.load().unwrap();
        assert_eq!(tok.context_len(), 77);
        let (bos, eos, pad) = tok.special_ids();
        assert_eq!((bos, eos, pad), (t.id("<|startoftext|>"), t.id("<|endoftext|>"), t.id("<|endoftext|>")));
        let long = "cat ".repeat(200);
        let ids = tok.encode(&long).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], bos);
        assert_eq!(ids[76], eos);
        assert!(ids[1..76].iter().all(|&i| i == t.id("cat</w>")));
        // Exactly 75 tokens fit without truncation; 76 lose the last.
        let ids75 = tok.encode(&"cat ".repeat(75)).unwrap();
        assert_eq!(ids75, ids);
        let mut prompt = "cat ".repeat(75);
        prompt.push_str("hello");
        assert_eq!(tok.encode(&prompt).unwrap(), ids);
        // Short prompt: padded with the pad id.
        let ids = tok.encode("hello").unwrap();
        assert_eq!(&ids[..3], &[bos, t.id("hello</w>"), eos]);
        assert!(ids[3..].iter().all(|&i| i == pad));

        let t2 = Toy::new("!");
        let tok2 = t2.load().unwrap();
        assert_eq!(tok2.special_ids().2, 0);
        let ids = tok2.encode("hello").unwrap();
        assert_eq!(&ids[..3], &[bos, t2.id("hello</w>"), eos]);
        assert!(ids[3..].iter().all(|&i| i == 0));
        // A smaller context from the config.
        t2.set_config("model_max_length", Value::from(5));
        let tok = t2.load().unwrap();
        assert_eq!(tok.context_len(), 5);
        assert_eq!(
            tok.encode("hello cat hello cat").unwrap(),
            [bos, t2.id("hello</w>"), t2.id("cat</w>"), t2.id("hello</w>"), eos]
        );
        assert_eq!(tok.encode("cat").unwrap(), [bos, t2.id("cat</w>"), eos, 0, 0]);
        t2.set_config("model_max_length", Value::from(2));
        assert_eq!(t2.load().unwrap().encode("cat").unwrap(), [bos, eos]);
    }

    #[test]
    fn long_prompts_are_cut_to_their_first_words_with_the_same_ids() {
        let t = Toy::new("<|endoftext|>");
        let tok = t.load().unwrap();
        let words = ["hello", "WORLD!!", "x", "  ", "\t", "42", "<|endoftext|>", "é", "cat's", "help", "\u{3000}"];
        for n in [0, 1, 10, 30, 70, 75, 76, 77, 78, 80, 120, 300] {
            let prompt: String = (0..n).map(|i| words[(i * 7 + n) % words.len()]).collect::<Vec<_>>().join(" ");
            let whole = tok.tokenizer.encode_fast(prompt.as_str(), true).unwrap().get_ids().to_vec();
            assert_eq!(tok.encode(&prompt).unwrap(), whole, "{n} words: {prompt:?}");
        }
        assert_eq!(head_words("a b  c", 2), "a b");
        assert_eq!(head_words(" a\t \nb c", 2), " a\t \nb");
        assert_eq!(head_words("a b", 3), "a b");
        let big = "word ".repeat(MAX_PROMPT_BYTES / 5);
        assert_eq!(tok.encode(&big).unwrap(), tok.encode(&"word ".repeat(80)).unwrap());
        let e = tok.encode(&format!("{big}extra")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn special_tokens_in_the_prompt_follow_transformers_flags() {
        // SD 1.x: "<|endoftext|>" is registered last as the plain-string pad token: matched case-sensitively.
        let t = Toy::new("<|endoftext|>");
        let (hello, cat, eos) = (t.id("hello</w>"), t.id("cat</w>"), t.id("<|endoftext|>"));
        assert_eq!(t.inner("hello <|endoftext|> cat"), [hello, eos, cat]);
        assert_eq!(t.inner("hello<|endoftext|>cat"), [hello, eos, cat]);
        assert_eq!(t.inner("<|startoftext|>"), [t.id("<|startoftext|>")]);
        // Upper case: not the token; the pieces "<|", "endoftext", "|>" by bytes.
        assert_eq!(t.inner("<|ENDOFTEXT|>").len(), 2 + 9 + 2);
        assert_eq!(t.inner("hello!!"), [hello, t.id("!!</w>")]);

        // SD 2.x: eos keeps the config's normalized=true (matched after lower-casing), and "!" is special.
        let t = Toy::new("!");
        assert_eq!(t.inner("hello <|ENDOFTEXT|> cat"), [hello, eos, cat]);
        assert_eq!(t.inner("hello!!"), [hello, 0, 0]);
        assert_eq!(t.inner("a ! b"), [t.id("a</w>"), 0, t.id("b</w>")]);

        // Strings everywhere (no special_tokens_map.json): all case-sensitive.
        let t = Toy::new("!");
        std::fs::remove_file(t.dir.path().join(SPECIAL_TOKENS_FILE)).unwrap();
        for key in ["bos_token", "eos_token", "unk_token"] {
            let v = t.config()[key]["content"].clone();
            t.set_config(key, v);
        }
        assert_eq!(t.inner("<|ENDOFTEXT|>").len(), 13);
        assert_eq!(t.inner("<|endoftext|>"), [eos]);

        // added_tokens_decoder wins over special_tokens_map.json, and adds tokens beyond the vocabulary.
        let t = Toy::new("<|endoftext|>");
        let n = t.vocab.len();
        let entry = |c: &str, normalized: bool| {
            serde_json::json!({"content": c, "lstrip": false, "normalized": normalized, "rstrip": false,
                               "single_word": false, "special": true})
        };
        t.set_config(
            "added_tokens_decoder",
            serde_json::json!({(n - 1).to_string(): entry("<|endoftext|>", true), n.to_string(): entry("<cat-toy>", false)}),
        );
        // The pad string takes the decoder entry's flags (normalized=true): matched in any case.
        assert_eq!(t.inner("hello <|ENDOFTEXT|> <cat-toy>"), [hello, eos, n as u32]);
        t.set_config("added_tokens_decoder", serde_json::json!({(n + 5).to_string(): entry("<cat-toy>", false)}));
        assert!(t.load_error(CONFIG_FILE).contains("<cat-toy>"));
    }

    #[test]
    fn padding_and_truncation_sides() {
        let t = Toy::new("!");
        t.set_config("model_max_length", Value::from(4));
        t.set_config("padding_side", Value::from("left"));
        let (bos, eos, cat, hello) =
            (t.id("<|startoftext|>"), t.id("<|endoftext|>"), t.id("cat</w>"), t.id("hello</w>"));
        assert_eq!(t.load().unwrap().encode("cat").unwrap(), [0, bos, cat, eos]);
        t.set_config("truncation_side", Value::from("left"));
        assert_eq!(t.load().unwrap().encode("cat cat hello").unwrap(), [bos, cat, hello, eos]);
        t.set_config("truncation_side", Value::from("middle"));
        assert!(t.load_error(CONFIG_FILE).contains("truncation_side"));
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClipTokenizer>();
    }

    #[test]
    fn missing_files() {
        for file in [VOCAB_FILE, MERGES_FILE, CONFIG_FILE] {
            let t = Toy::new("!");
            std::fs::remove_file(t.dir.path().join(file)).unwrap();
            let e = t.load().unwrap_err();
            assert!(matches!(e, Error::ModelNotFound { .. }), "{e}");
            assert!(e.to_string().contains(file), "{e}");
        }
        // special_tokens_map.json is optional.
        let t = Toy::new("!");
        std::fs::remove_file(t.dir.path().join(SPECIAL_TOKENS_FILE)).unwrap();
        t.load().unwrap();
        let e = ClipTokenizer::from_dir(&t.dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, Error::ModelNotFound { .. }), "{e}");
        // A directory where a file should be, and an over-large file.
        let t = Toy::new("!");
        std::fs::remove_file(t.dir.path().join(MERGES_FILE)).unwrap();
        std::fs::create_dir(t.dir.path().join(MERGES_FILE)).unwrap();
        t.load_error(MERGES_FILE);
        let t = Toy::new("!");
        let f = std::fs::OpenOptions::new().write(true).open(t.dir.path().join(VOCAB_FILE)).unwrap();
        f.set_len(MAX_TOKENIZER_FILE_BYTES + 1).unwrap();
        assert!(t.load_error(VOCAB_FILE).contains("over the limit"));
    }

    #[test]
    fn bad_json_files() {
        for file in [VOCAB_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE] {
            for text in ["{\"a\": ", "[1, 2]", "\u{feff}{}", ""] {
                let t = Toy::new("!");
                t.write(file, text);
                t.load_error(file);
            }
        }
    }

    #[test]
    fn bad_vocab() {
        let t = Toy::new("!");
        let mut v = t.vocab.clone();
        v.insert("hello</w>".into(), Value::from(5));
        t.write(VOCAB_FILE, &Value::Object(v).to_string());
        assert!(t.load_error(VOCAB_FILE).contains("two tokens"));
        for bad in [Value::from(-1), Value::from(1e30), Value::from("3"), Value::from(100000), Value::from(1.5)] {
            let mut v = t.vocab.clone();
            v.insert("hello</w>".into(), bad);
            t.write(VOCAB_FILE, &Value::Object(v).to_string());
            t.load_error(VOCAB_FILE);
        }
        t.write(VOCAB_FILE, "{}");
        t.load_error(VOCAB_FILE);
        // Without a special token (the last id, so the rest stays 0..N).
        let mut v = t.vocab.clone();
        v.remove("<|endoftext|>");
        t.write(VOCAB_FILE, &Value::Object(v).to_string());
        assert!(t.load_error(VOCAB_FILE).contains("eos_token"));
    }

    #[test]
    fn bad_merges() {
        let cases = [
            ("h e\nl l\n", "#version"),
            ("", "#version"),
            ("#version: 0.2\nh e\nl  l\n", "line 3"),
            ("#version: 0.2\nh e\nl\n", "line 3"),
            ("#version: 0.2\nh e\n\n", "line 3"),
            ("#version: 0.2\nh e l\n", "line 2"),
            ("#version: 0.2\nh e\nq z\n", "\"qz\""),
            ("#version: 0.2\nh e\nhe zz\n", "\"zz\""),
        ];
        for (text, says) in cases {
            let t = Toy::new("!");
            t.write(MERGES_FILE, text);
            let m = t.load_error(MERGES_FILE);
            assert!(m.contains(says), "{m} (for {text:?})");
        }
        let t = Toy::new("!");
        std::fs::write(t.dir.path().join(MERGES_FILE), b"#version: 0.2\nh \xff\n").unwrap();
        assert!(t.load_error(MERGES_FILE).contains("UTF-8"));
        // CRLF line ends and a header-only file are fine.
        t.write(MERGES_FILE, "#version: 0.2\r\nh e\r\nl l\r\nll o</w>\r\nhe llo</w>\r\n");
        assert_eq!(t.inner("hello"), [t.id("hello</w>")]);
        t.write(MERGES_FILE, "#version: 0.2\n");
        assert_eq!(t.inner("hello"), ["h", "e", "l", "l", "o</w>"].map(|s| t.id(s)));
    }

    #[test]
    fn bad_config() {
        let t = Toy::new("!");
        for bad in [
            Value::from(1e30),
            Value::from(0),
            Value::from(1),
            Value::from(4097),
            Value::from("77"),
            Value::from(77.5),
            Value::Null,
        ] {
            t.set_config("model_max_length", bad.clone());
            assert!(t.load_error(CONFIG_FILE).contains("model_max_length"), "{bad}");
        }
        let mut c = t.config();
        c.remove("model_max_length");
        t.write(CONFIG_FILE, &Value::Object(c).to_string());
        assert!(t.load_error(CONFIG_FILE).contains("model_max_length"));
        t.set_config("model_max_length", Value::from(4096));
        assert_eq!(t.load().unwrap().context_len(), 4096);
        t.set_config("model_max_length", Value::from(77.0));
        assert_eq!(t.load().unwrap().context_len(), 77);

        t.set_config("tokenizer_class", Value::from("T5Tokenizer"));
        assert!(t.load_error(CONFIG_FILE).contains("T5Tokenizer"));
        t.set_config("tokenizer_class", Value::from("CLIPTokenizerFast"));
        t.load().unwrap();

        // Special tokens: a pad token not in the vocabulary, a null one, objects without content or with
        // a flag that is not a bool, a list that is not a list.
        let t = Toy::new("<pad>");
        assert!(t.load_error(VOCAB_FILE).contains("pad_token"));
        let t = Toy::new("!");
        t.write(SPECIAL_TOKENS_FILE, "{\"pad_token\": null}");
        assert!(t.load_error(CONFIG_FILE).contains("pad_token"));
        t.write(SPECIAL_TOKENS_FILE, "{\"bos_token\": {\"lstrip\": false}}");
        assert!(t.load_error(CONFIG_FILE).contains("content"));
        t.write(SPECIAL_TOKENS_FILE, "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"normalized\": 1}}");
        assert!(t.load_error(CONFIG_FILE).contains("normalized"));
        t.write(SPECIAL_TOKENS_FILE, "{\"bos_token\": 5}");
        assert!(t.load_error(CONFIG_FILE).contains("bos_token"));
        t.write(SPECIAL_TOKENS_FILE, "{\"additional_special_tokens\": \"x\"}");
        assert!(t.load_error(CONFIG_FILE).contains("additional_special_tokens"));
        // A list of extra special tokens: matched in the raw text before anything else.
        t.write(SPECIAL_TOKENS_FILE, "{\"additional_special_tokens\": [\"ca\"]}");
        assert_eq!(t.inner("cats cat"), ["ca", "t", "s</w>", "ca", "t</w>"].map(|s| t.id(s)));
        let t = Toy::new("!");
        t.set_config("added_tokens_decoder", serde_json::json!({"x": {"content": "a"}}));
        t.load_error(CONFIG_FILE);
        t.set_config("added_tokens_decoder", serde_json::json!([]));
        t.load_error(CONFIG_FILE);
    }

    /// The tiny SD folders of tests/fixtures/sd carry the real CLIP vocabularies of SD 1.5 and SD 2.1; their
    /// reference ids were made by transformers' `CLIPTokenizer` from the same files.
    #[test]
    fn reference_prompts_match_transformers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd");
        let reference: Value =
            serde_json::from_slice(&std::fs::read(root.join("reference/tokens.json")).unwrap()).unwrap();
        for folder in ["sd15", "sd21-v"] {
            let r = &reference[folder];
            let tok = ClipTokenizer::from_dir(&root.join(folder).join("tokenizer")).unwrap();
            assert_eq!(tok.context_len() as u64, r["max_length"].as_u64().unwrap(), "{folder}");
            let (bos, eos, pad) = tok.special_ids();
            let want = |k: &str| r[k].as_u64().unwrap() as u32;
            assert_eq!((bos, eos, pad), (want("bos_id"), want("eos_id"), want("pad_id")), "{folder}");
            assert_eq!(tok.vocab_size(), 49408, "{folder}");
            let prompts = r["prompts"].as_array().unwrap();
            let ids = r["ids"].as_array().unwrap();
            assert!(!prompts.is_empty() && prompts.len() == ids.len(), "{folder}");
            for (p, want) in prompts.iter().zip(ids) {
                let p = p.as_str().unwrap();
                let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
                assert_eq!(tok.encode(p).unwrap(), want, "{folder}: {p:?}");
            }
        }
    }
}
