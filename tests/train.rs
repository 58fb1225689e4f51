//! The trainer (feature `train`): the exported ONNX VAE matches the tch model it came from, and a tiny
//! end-to-end run (train, resume, eval, export) leaves every file it promises.
#![cfg(feature = "train")]

use std::path::Path;
use std::process::Command;

use mirage::export::vae::{export_vae, VaeArch};
use mirage::model_set::ModelSet;
use mirage::train::vae::{weights_of, Vae};
use mirage::train::vae_run::{check_parity, PARITY_TOLERANCE};

use crate::util::mirage_train;
use tch::{nn, Device, Tensor};

/// Builds the tch VAE with random weights (tch's init, plus random biases: tch starts them at zero,
/// which would hide a bias wired wrongly), exports it, and compares ONNX Runtime with tch.
fn parity_of(arch: &VaeArch, n: usize) -> f32 {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Vae::new(&vs.root(), arch).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with(".bias") {
                let _ = t.f_add_(&(Tensor::randn_like(&t) * 0.1)).unwrap();
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    export_vae(arch, &weights_of(&vs).unwrap(), dir.path(), "parity", serde_json::Value::Null).unwrap();
    let p = check_parity(&model, Device::Cpu, dir.path(), n, 5).unwrap();
    eprintln!("parity {:?}: max |onnx - tch| = {:e} ({p:?})", arch.widths, p.max());
    assert!(p.max() <= PARITY_TOLERANCE, "ONNX vs tch max abs diff {} > {PARITY_TOLERANCE}: {p:?}", p.max());
    p.max()
}

#[test]
fn onnx_export_matches_tch_tiny() {
    parity_of(&VaeArch::tiny(), 6);
}

#[test]
fn onnx_export_matches_tch_fashion() {
    parity_of(&VaeArch::fashion(), 4);
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn tiny_run_trains_resumes_evaluates_and_exports() {
    crate::util::fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    let common = ["--arch", "tiny", "--limit", "512", "--batch-size", "64", "--log-every", "2", "--ckpt-every", "4"];

    // 512 images / 64 = 8 steps per epoch.
    mirage_train(&[&["vae", "train", "--out", run_s, "--epochs", "1", "--grid-every", "4"][..], &common].concat());
    for f in ["checkpoint.safetensors", "checkpoint.json", "metrics.jsonl", "grid.png", "grid-0000004.png"] {
        assert!(run.join(f).is_file(), "{f} missing after training");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 8);
    let logged = lines(&run.join("metrics.jsonl"));
    assert!(logged >= 4 + 2, "4 training lines and 2 eval lines expected, got {logged}");
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    for k in ["step", "loss", "recon", "kl", "lr", "time_s"] {
        assert!(first.get(k).is_some(), "metrics line lacks {k}: {first}");
    }

    // A fresh run must not overwrite (and append to the log of) an existing one.
    let again = Command::new(env!("CARGO_BIN_EXE_mirage-train"))
        .args([&["vae", "train", "--out", run_s, "--epochs", "1"][..], &common].concat())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    // Resume into a second epoch: the step count continues, the log grows.
    mirage_train(
        &[&["vae", "train", "--out", run_s, "--epochs", "2", "--resume", "--grid-every", "8"][..], &common].concat(),
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 16);
    assert!(lines(&run.join("metrics.jsonl")) > logged);
    assert!(run.join("grid-0000016.png").is_file());

    let eval = tmp.path().join("eval.json");
    mirage_train(&["vae", "eval", "--ckpt", run_s, "--limit", "200", "--json", eval.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval).unwrap()).unwrap();
    assert!(report["psnr_db"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["images"], 200);

    let set = tmp.path().join("set");
    mirage_train(&[
        "vae",
        "export",
        "--ckpt",
        run_s,
        "--out",
        set.to_str().unwrap(),
        "--name",
        "tiny",
        "--eval",
        eval.to_str().unwrap(),
    ]);
    let opened = ModelSet::open(&set).unwrap();
    assert_eq!(opened.manifest().name, "tiny");
    let training = &opened.manifest().training;
    assert!(training["parity_max_abs_diff"]["mean"].as_f64().unwrap() <= PARITY_TOLERANCE as f64);
    assert_eq!(training["eval"]["images"], 200);
    let z = vec![0.0f32; opened.latent_len().unwrap()];
    assert_eq!(opened.decode(&z, 1).unwrap().len(), 784);
}

/// `mirage-train bench`: one timed training step of each architecture, as a table and as JSON.
#[test]
fn bench_times_a_training_step_of_each_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = mirage_train(&["bench", "--iters", "1", "--threads", "1", "--json", json.to_str().unwrap()]);
    assert!(out.contains("sgemm 1024^3") && out.contains("unet text-deep (emoji v2 latent)"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let steps = v["steps"].as_array().unwrap();
    // Three VAEs, four U-Nets (fashion; text at 8x8; text and text-deep at 16x16).
    assert_eq!(steps.len(), 7, "{v}");
    for s in steps {
        assert!(s["step_ms"][0].as_f64().unwrap() > 0.0 && s["parameters"].as_i64().unwrap() > 100_000, "{s}");
    }
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_mirage-train"))
        .args(["bench", "--iters", "0"])
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("--iters must be 1..=10000"));
}

/// `eval adherence` on a set trained on the emoji v2 data (here: a random-weight 64 px RGBA set whose manifest
/// says so): matching against every style's real images, style adherence per style, diversity across seeds.
#[test]
fn adherence_reads_a_v2_set_against_every_style() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v2");
    let arch = VaeArch { channels: 4, height: 64, width: 64, pad: 0, ..VaeArch::tiny() };
    mirage::export::vae::write_random_set(&dir, &arch, 5).unwrap();
    let m = mirage::manifest::Manifest::load(&dir).unwrap();
    let [c, h, w] = m.vae.unwrap().latent_shape;
    let enc = crate::util::text_encoder_dir();
    let onnx = std::fs::read(enc.join("text_encoder.onnx")).unwrap();
    let spec = mirage::manifest::TextSpec {
        encoder: enc.to_str().unwrap().to_string(),
        encoder_sha256: mirage::manifest::sha256_hex(&onnx),
        width: 384,
        tokens: 8,
        guidance: 2.0,
    };
    let unet = mirage::export::unet::UNetArch::tiny_text(c as i64, h as i64, w as i64, 384, 8);
    mirage::export::unet::add_random_unet_with_text(&dir, &unet, 3, Some(spec)).unwrap();
    // What `unet export` records of a run on `--emoji-data v2 --styles noto,twemoji`.
    let path = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["training"]["unet"]["config"] = serde_json::json!({"emoji_data": "v2", "styles": "noto,twemoji"});
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    let cfg = mirage::train::adherence::AdherenceConfig {
        set: dir,
        data: std::path::PathBuf::from(mirage::train::captions::EMOJI_DIR),
        prompts: 10,
        steps: 2,
        ..Default::default()
    };
    let r = mirage::train::adherence::evaluate(&cfg, None).unwrap();
    assert_eq!(r.emoji_data.as_deref(), Some("v2: noto,twemoji"));
    // Every style's real images are candidates: 3 758 training + 28 held-out emoji in each of two styles.
    assert_eq!(r.seen.as_ref().unwrap().candidates, 2 * (3758 + 28));
    let styles = r.style_adherence.as_ref().unwrap();
    assert_eq!(styles.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["noto", "twemoji"]);
    for (_, share, m) in styles {
        assert!((0.0..=1.0).contains(share) && m.prompts == 2, "{styles:?}");
        // The style prompts name their style.
        assert!(m.examples.iter().all(|(p, _)| p.contains("noto") || p.contains("twemoji")), "{m:?}");
    }
    let d = r.diversity.as_ref().unwrap();
    assert_eq!((d.prompts, d.seeds), (16, 8));
    assert_eq!(d.nearest_styles.iter().map(|s| s.1).sum::<usize>(), 16 * 8);
    assert!(d.real_pairwise > 0.0 && d.ratio.is_finite() && (0.0..=1.0).contains(&d.all_styles_share), "{d:?}");
}
