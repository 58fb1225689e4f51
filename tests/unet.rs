//! The diffusion U-Net's ONNX export: the random-weight fixture runs on ONNX Runtime with the manifest's
//! shapes, and (feature `train`) the exported graph matches the tch model it came from.

use mirage::export::unet::{add_random_unet, UNetArch};
use mirage::export::vae::{write_random_set, VaeArch};
use mirage::manifest::Manifest;
use mirage::rng::Noise;
use ort::value::Tensor;

/// Runs the set's unet.onnx on ONNX Runtime: x [n, C, h, w] and noise variances [n] -> eps, flattened.
fn run_unet(set: &std::path::Path, x: &[f32], nv: &[f32]) -> Vec<f32> {
    let m = Manifest::load(set).unwrap();
    let spec = &m.unet.as_ref().unwrap().model;
    let bytes = Manifest::read_model(set, spec).unwrap();
    let mut session = mirage::runtime::global().unwrap().session(&bytes, "unet", None).unwrap();
    let n = nv.len() as i64;
    let mut shape = spec.inputs[0].shape.clone();
    shape[0] = n;
    let xt = Tensor::from_array((shape, x.to_vec())).unwrap();
    let nt = Tensor::from_array((vec![n, 1], nv.to_vec())).unwrap();
    let out = session.run(ort::inputs!["x" => xt, "noise_variance" => nt]).unwrap();
    let (_, data) = out.get("eps").expect("output eps").try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

/// As [`run_unet`] for a text-conditioned U-Net: plus context [n, L, W] and pooled [n, W].
#[allow(dead_code)]
fn run_unet_text(set: &std::path::Path, x: &[f32], nv: &[f32], ctx: &[f32], pooled: &[f32]) -> Vec<f32> {
    let m = Manifest::load(set).unwrap();
    let spec = &m.unet.as_ref().unwrap().model;
    let bytes = Manifest::read_model(set, spec).unwrap();
    let mut session = mirage::runtime::global().unwrap().session(&bytes, "unet", None).unwrap();
    let n = nv.len() as i64;
    let shape = |i: usize| {
        let mut s = spec.inputs[i].shape.clone();
        s[0] = n;
        s
    };
    let xt = Tensor::from_array((shape(0), x.to_vec())).unwrap();
    let nt = Tensor::from_array((vec![n, 1], nv.to_vec())).unwrap();
    let ct = Tensor::from_array((shape(2), ctx.to_vec())).unwrap();
    let pt = Tensor::from_array((shape(3), pooled.to_vec())).unwrap();
    let out = session.run(ort::inputs!["x" => xt, "noise_variance" => nt, "context" => ct, "pooled" => pt]).unwrap();
    let (_, data) = out.get("eps").expect("output eps").try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

/// A tiny VAE set (2x8x8 latents) with a tiny random U-Net added.
fn fixture(seed: u64) -> (tempfile::TempDir, UNetArch) {
    let dir = tempfile::tempdir().unwrap();
    write_random_set(dir.path(), &VaeArch::tiny(), 1).unwrap();
    let arch = UNetArch::tiny(2, 8, 8);
    add_random_unet(dir.path(), &arch, seed).unwrap();
    (dir, arch)
}

#[test]
fn random_unet_runs_on_onnx_runtime() {
    let (dir, arch) = fixture(9);
    let len = arch.shape().iter().product::<i64>() as usize;
    let n = 3;
    let x = Noise::new(2).normals(n * len);
    let eps = run_unet(dir.path(), &x, &[0.1, 0.5, 0.99]);
    assert_eq!(eps.len(), n * len);
    assert!(eps.iter().all(|v| v.is_finite()));
    let spread = eps.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(spread > 1e-3 && spread < 1e3, "output magnitude {spread} is implausible");
    // The batch is dynamic and samples do not influence each other.
    let one = run_unet(dir.path(), &x[len..2 * len], &[0.5]);
    let d = one.iter().zip(&eps[len..2 * len]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-5, "batch of 1 vs batch of 3 differ by {d}");
    // The noise variance is used.
    let other = run_unet(dir.path(), &x[len..2 * len], &[0.2]);
    assert_ne!(one, other);
}

#[cfg(feature = "train")]
mod parity {
    use super::*;
    use mirage::export::unet::random_unet_weights;
    use mirage::train::max_abs_diff;
    use mirage::train::unet::UNet;
    use mirage::train::vae::load_weights;
    use tch::{nn, Device};

    /// Exports random weights (not tch's init: its zero biases and unit norms would hide a wrongly wired
    /// bias or affine), loads the same weights into the tch model, and compares both on random inputs.
    fn parity_of(arch: &UNetArch, vae: Option<VaeArch>, batches: &[&[f32]]) -> f32 {
        let dir = tempfile::tempdir().unwrap();
        match vae {
            Some(v) => {
                write_random_set(dir.path(), &v, 1).unwrap();
            }
            None => {
                // A pixel-space set: the tiny VAE's manifest without its VAE.
                write_random_set(dir.path(), &VaeArch::tiny(), 1).unwrap();
                let mut m = Manifest::load(dir.path()).unwrap();
                m.vae = None;
                std::fs::write(dir.path().join("manifest.json"), serde_json::to_string(&m).unwrap()).unwrap();
            }
        }
        add_random_unet(dir.path(), arch, 17).unwrap();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = UNet::new(&vs.root(), arch).unwrap();
        load_weights(&mut vs, &random_unet_weights(arch, 17)).unwrap();
        let len = arch.shape().iter().product::<i64>() as usize;
        let mut worst = 0.0f32;
        for (k, nv) in batches.iter().enumerate() {
            let n = nv.len();
            let x = Noise::new(100 + k as u64).normals(n * len);
            let onnx = run_unet(dir.path(), &x, nv);
            let [c, h, w] = arch.shape();
            let xt = tch::Tensor::from_slice(&x).view([n as i64, c, h, w]);
            let nt = tch::Tensor::from_slice(nv).view([n as i64, 1]);
            let y = tch::no_grad(|| model.forward(&xt, &nt, None)).unwrap();
            let y = Vec::<f32>::try_from(&y.reshape([-1])).unwrap();
            let d = max_abs_diff(&y, &onnx);
            let scale = y.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            eprintln!("U-Net parity {:?} batch {n}: max |onnx - tch| = {d:e} (max |eps| {scale})", arch.widths);
            worst = worst.max(d);
        }
        assert!(worst <= 1e-4, "ONNX vs tch max abs diff {worst:e} > 1e-4");
        worst
    }

    #[test]
    fn onnx_export_matches_tch_tiny() {
        parity_of(&UNetArch::tiny(2, 8, 8), Some(VaeArch::tiny()), &[&[0.3], &[0.0975, 0.5, 0.9996]]);
    }

    #[test]
    fn onnx_export_matches_tch_fashion_latent() {
        parity_of(&UNetArch::fashion_latent(), Some(VaeArch::fashion()), &[&[0.25, 0.6, 0.95]]);
    }

    /// The text-conditioned U-Net: random weights, random (unit-scale) token embeddings and pooled vectors.
    fn text_parity_of(arch: &UNetArch, nv: &[f32]) -> f32 {
        let t = arch.text.clone().unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_random_set(dir.path(), &VaeArch::tiny(), 1).unwrap();
        let spec = mirage::manifest::TextSpec {
            encoder: "../minilm".into(),
            encoder_sha256: "0".repeat(64),
            width: t.width as u32,
            tokens: t.tokens as u32,
            guidance: 3.0,
        };
        mirage::export::unet::add_random_unet_with_text(dir.path(), arch, 21, Some(spec)).unwrap();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = UNet::new(&vs.root(), arch).unwrap();
        load_weights(&mut vs, &random_unet_weights(arch, 21)).unwrap();
        let n = nv.len();
        let len = arch.shape().iter().product::<i64>() as usize;
        let mut noise = Noise::new(5);
        let x = noise.normals(n * len);
        let ctx = noise.normals(n * (t.tokens * t.width) as usize);
        let pooled = noise.normals(n * t.width as usize);
        let onnx = run_unet_text(dir.path(), &x, nv, &ctx, &pooled);
        let [c, h, w] = arch.shape();
        let (n64, l, wd) = (n as i64, t.tokens, t.width);
        let xt = tch::Tensor::from_slice(&x).view([n64, c, h, w]);
        let nt = tch::Tensor::from_slice(nv).view([n64, 1]);
        let ct = tch::Tensor::from_slice(&ctx).view([n64, l, wd]);
        let pt = tch::Tensor::from_slice(&pooled).view([n64, wd]);
        let text = mirage::train::unet::TextInput { context: &ct, pooled: &pt };
        let y = tch::no_grad(|| model.forward(&xt, &nt, Some(&text))).unwrap();
        let y = Vec::<f32>::try_from(&y.reshape([-1])).unwrap();
        let d = max_abs_diff(&y, &onnx);
        eprintln!("text U-Net parity {:?}: max |onnx - tch| = {d:e}", arch.widths);
        assert!(d <= 1e-4, "ONNX vs tch max abs diff {d:e} > 1e-4");
        // The text matters: other token embeddings give another prediction.
        let ctx2 = Noise::new(6).normals(ctx.len());
        let other = run_unet_text(dir.path(), &x, nv, &ctx2, &pooled);
        assert!(max_abs_diff(&other, &onnx) > 1e-4, "the token embeddings are ignored");
        let pooled2 = Noise::new(7).normals(pooled.len());
        let other = run_unet_text(dir.path(), &x, nv, &ctx, &pooled2);
        assert!(max_abs_diff(&other, &onnx) > 1e-4, "the pooled embedding is ignored");
        // A conditioned model refuses to run without text, an unconditional one with it.
        assert!(tch::no_grad(|| model.forward(&xt, &nt, None)).is_err());
        d
    }

    #[test]
    fn onnx_export_matches_tch_text_conditioned() {
        // Cross-attention at every level (tiny_text), 5 tokens of width 12: small but every path is used.
        text_parity_of(&UNetArch::tiny_text(2, 8, 8, 12, 5), &[0.2, 0.9]);
        // The shipped text layout (cross-attention from level 1, MiniLM's width, 16 tokens).
        text_parity_of(&UNetArch::text_latent([2, 8, 8], 16), &[0.5]);
    }

    #[test]
    fn onnx_export_matches_tch_pixel_space() {
        // 1x28x28 pixels: odd sizes after one halving (14) are fine for tiny's single halving.
        parity_of(&UNetArch::tiny(1, 28, 28), None, &[&[0.2, 0.7, 0.45]]);
    }
}

/// The measurement behind [`UNetArch::fashion_latent`]'s size: median time of one AdamW training step on a
/// batch of 64 latents, one libtorch thread. Run by hand: `cargo test --features train --test tests
/// unet::step_time -- --ignored --nocapture`.
#[cfg(feature = "train")]
#[test]
#[ignore]
fn step_time() {
    use tch::nn::OptimizerConfig;
    use tch::{nn, Device, Kind, Tensor};
    tch::set_num_threads(std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1));
    let mut arch = UNetArch::fashion_latent();
    // WIDTHS=32,64,64 BLOCKS=1 try other sizes.
    if let Ok(w) = std::env::var("WIDTHS") {
        arch.widths = w.split(',').map(|v| v.parse().unwrap()).collect();
    }
    if let Some(b) = std::env::var("BLOCKS").ok().and_then(|b| b.parse().ok()) {
        arch.blocks_per_level = b;
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let model = mirage::train::unet::UNet::new(&vs.root(), &arch).unwrap();
    let mut opt = nn::AdamW::default().build(&vs, 1e-3).unwrap();
    let n_params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let mut times = Vec::new();
    for _ in 0..12 {
        let x = Tensor::randn([64, 3, 8, 8], (Kind::Float, Device::Cpu));
        let nv = Tensor::rand([64, 1], (Kind::Float, Device::Cpu));
        let t0 = std::time::Instant::now();
        let loss = (model.forward(&x, &nv, None).unwrap() - &x).square().mean(Kind::Float);
        opt.backward_step(&loss);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!("U-Net {:?} x{}, {n_params}", arch.widths, arch.blocks_per_level);
    eprintln!("{n_params} parameters: median step {:.1} ms (batch 64)", times[6]);
}

/// `mirage-train unet train | export` end to end on 512 images, the tiny architecture, a random tiny VAE
/// set: latents are encoded and cached, checkpoints resume, the export adds a U-Net that ONNX Runtime runs.
#[cfg(feature = "train")]
#[test]
fn tiny_unet_run_trains_resumes_and_exports() {
    use std::process::Command;
    let data = mirage::train::data::DEFAULT_DIR;
    assert!(
        std::path::Path::new(data).join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {data}: run scripts/setup.sh data"
    );
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    write_random_set(&set, &VaeArch::tiny(), 1).unwrap();
    let run = tmp.path().join("run");
    let (set_s, run_s) = (set.to_str().unwrap(), run.to_str().unwrap());
    let train = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mirage-train")).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "mirage-train {args:?} failed:\n{text}");
        text
    };
    let common = [
        "unet",
        "train",
        "--set",
        set_s,
        "--out",
        run_s,
        "--arch",
        "tiny",
        "--limit",
        "512",
        "--batch-size",
        "32",
        "--log-every",
        "2",
        "--ckpt-every",
        "3",
        "--grid-every",
        "3",
        "--sample-steps",
        "3",
    ];
    train(&[&common[..], &["--steps", "3"]].concat());
    for f in ["latents.safetensors", "latents.json", "checkpoint.json", "ema.safetensors", "grid-0000003.png"] {
        assert!(run.join(f).is_file(), "{f} missing after training");
    }
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latents.json")).unwrap()).unwrap();
    assert_eq!(info["images"], 512);
    // A fresh run refuses to overwrite; --resume continues to step 6.
    let again = Command::new(env!("CARGO_BIN_EXE_mirage-train")).args(&common[..]).output().unwrap();
    assert!(!again.status.success());
    train(&[&common[..], &["--steps", "6", "--resume"]].concat());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 6);
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(lines.lines().count() >= 3, "{lines}");

    train(&["unet", "export", "--ckpt", run_s, "--set", set_s]);
    let m = Manifest::load(&set).unwrap();
    assert!(m.training["unet"]["parity_max_abs_diff"].as_f64().unwrap() <= 1e-4);
    assert_eq!(m.training["seed"], 1, "the VAE's training facts are kept");
    let len = 2 * 8 * 8;
    let x = Noise::new(1).normals(len);
    let eps = run_unet(&set, &x, &[0.5]);
    assert!(eps.iter().all(|v| v.is_finite()));

    // The same checkpoint with its weights stored as f16: a smaller file, Casts ahead of f32 arithmetic,
    // parity within the f16 tolerance, and the same outputs to about f16's precision.
    let f32_len = std::fs::metadata(set.join("unet.onnx")).unwrap().len();
    train(&["unet", "export", "--ckpt", run_s, "--set", set_s, "--f16-weights"]);
    let m = Manifest::load(&set).unwrap();
    assert_eq!(m.training["unet"]["weights_storage"], "f16");
    assert!(m.training["unet"]["parity_max_abs_diff"].as_f64().unwrap() <= 1e-2);
    let f16_len = std::fs::metadata(set.join("unet.onnx")).unwrap().len();
    assert!(f16_len < f32_len, "f16 file {f16_len} bytes, f32 {f32_len}");
    let eps16 = run_unet(&set, &x, &[0.5]);
    let d = eps.iter().zip(&eps16).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d > 0.0 && d < 1e-2, "f16 weights moved eps by {d}");
}
