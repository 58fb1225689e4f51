//! Stable-Diffusion-family folders in optimum's layout (`tests/fixtures/sd`: tiny random-weight models with
//! the real architectures, made by `scripts/sd_fixtures.py`), against diffusers' own pipelines on the same
//! ONNX files (`tests/fixtures/sd/reference`): text embeddings, the latents after every scheduler step, the
//! final images; then the CLI and the C API on the folders, and folders that are broken in each way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mirage::model_set::ModelSet;
use mirage::pipeline::{self, DiffusionParams, Hooks, TextGuidance};
use mirage::sampler::SamplerKind;
use serde_json::Value;

use crate::util::{mirage_bin, read_json};

/// Per-step latents: the largest difference from diffusers', relative to the largest reference value (at
/// least 1). Measured: at most 3.1e-6 over the 20 float32 cases (f32 arithmetic in another order, ORT's
/// kernels on other batch layouts); the bound leaves room for other CPUs' kernels.
const STEP_TOLERANCE: f32 = 2e-5;
/// Final images: mean absolute difference in [0, 1] units (the bar: 1 / 255).
const IMAGE_MAD: f32 = 1.0 / 255.0;
/// The float16 folder: its reference is the same fp16 ONNX run, but f16 rounding makes every difference in
/// arithmetic order visible (measured 2.5e-3; image MAD 3.4e-4).
const FP16_STEP_TOLERANCE: f32 = 1e-2;

pub fn sd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn reference(name: &str) -> PathBuf {
    sd_dir().join("reference").join(name)
}

/// A float32 .npy of the reference folder: (shape, values).
fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(reference(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    mirage::latent::read_npy(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// One diffusers run of `pipelines.json` replayed through mirage's pipeline, step by step: returns the
/// worst relative step difference and the image's mean absolute difference.
fn replay(set: &ModelSet, case: &Value) -> (f32, f32) {
    let name = case["name"].as_str().unwrap();
    let n = case["num_images"].as_u64().unwrap() as usize;
    let str_of = |k: &str| case[k].as_str().unwrap_or("").to_string();
    let file = |k: &str| case[k].as_str().map(|f| Arc::from(npy(f).1));
    let p = DiffusionParams {
        steps: case["steps"].as_u64().unwrap() as usize,
        sampler: SamplerKind::parse(&str_of("sampler"), case["eta"].as_f64().unwrap() as f32).unwrap(),
        seed: case["seed"].as_u64().unwrap(),
        count: n,
        strength: case["strength"].as_f64().unwrap() as f32,
        noise: file("init_noise"),
        step_noise: file("step_noise"),
        ..Default::default()
    };
    let (prompt, negative) = (str_of("prompt"), str_of("negative_prompt"));
    let neg: Vec<&str> = if negative.is_empty() { vec![] } else { vec![&negative] };
    let guidance = case["guidance"].as_f64().unwrap() as f32;
    let text = TextGuidance::request(set, &[&prompt], &neg, n, Some(guidance)).unwrap();
    let mut plan = match case["pipeline"].as_str().unwrap() {
        "text2img" => pipeline::plan_generate(set, &p, text.as_ref()).unwrap(),
        "img2img" => {
            let png = reference(case["init_image"].as_str().unwrap());
            let image = mirage::image::Image::load(&png).unwrap();
            let images: Vec<_> = (0..n).map(|_| image.clone()).collect();
            let x = mirage::image::to_model(&images, &set.manifest().image).unwrap();
            pipeline::plan_image_to_image(set, &x, n, &p, text.as_ref(), true).unwrap()
        }
        other => panic!("{name}: pipeline {other}"),
    };
    let (shape, steps) = npy(case["step_latents"].as_str().unwrap());
    assert_eq!(plan.steps(), shape[0], "{name}: U-Net calls");
    let per = steps.len() / shape[0];
    let mut worst = 0f32;
    for k in 0..shape[0] {
        plan.step(set, &mut Hooks::default()).unwrap();
        let want = &steps[k * per..(k + 1) * per];
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        worst = worst.max(max_abs_diff(plan.samples(), want) / scale);
    }
    let images = plan.finish().unwrap(); // [n, 3, H, W] in [-1, 1]
    let (_, want) = npy(case["image"].as_str().unwrap()); // [n, 3, H, W] in [0, 1]
    assert_eq!(images.len(), want.len(), "{name}: image values");
    let mad = images.iter().zip(&want).map(|(a, b)| ((a * 0.5 + 0.5).clamp(0.0, 1.0) - b).abs()).sum::<f32>()
        / want.len() as f32;
    (worst, mad)
}

/// Every reference run of diffusers (7 schedulers on the SD-1.5-shaped folder with and without guidance and
/// negative prompt, img2img at two strengths, a batch of 2, v-prediction with Euler ancestral and DDIM, the
/// turbo folder at 1 and 4 steps without guidance, the float16 folder): the latents after every step and
/// the final image as diffusers made them.
#[test]
fn every_reference_run_matches_diffusers() {
    let cases = read_json(&reference("pipelines.json"));
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let mut sets: std::collections::HashMap<String, ModelSet> = Default::default();
    let mut report = Vec::new();
    for case in cases {
        let folder = case["folder"].as_str().unwrap().to_string();
        let set = sets.entry(folder.clone()).or_insert_with(|| ModelSet::open(&sd_dir().join(&folder)).unwrap());
        let (steps, mad) = replay(set, case);
        let name = case["name"].as_str().unwrap();
        report.push(format!("{name}: steps {steps:.2e}, image MAD {mad:.2e}"));
        let tol = if folder.ends_with("fp16") { FP16_STEP_TOLERANCE } else { STEP_TOLERANCE };
        assert!(steps <= tol, "{name}: per-step latents differ by {steps} (relative) > {tol}\n{}", report.join("\n"));
        assert!(mad <= IMAGE_MAD, "{name}: image MAD {mad} > 1/255\n{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

/// The text encoder's token embeddings for the reference prompts (ids from the folder's tokenizer).
#[test]
fn text_embeddings_match_diffusers() {
    let refs = read_json(&reference("embeddings.json"));
    for (folder, entry) in refs.as_object().unwrap() {
        let set = ModelSet::open(&sd_dir().join(folder)).unwrap();
        let prompts: Vec<&str> = entry["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let (_, want) = npy(entry["file"].as_str().unwrap_or(&format!("embeddings_{folder}.npy")));
        let got = set.encode_prompts(&prompts).unwrap();
        let d = max_abs_diff(&got.context, &want);
        assert!(d < 1e-4, "{folder}: embeddings differ by {d}");
    }
}

/// A copy of fixture folder `name` in a temporary directory, for a test to break.
fn copy_folder(name: &str) -> (tempfile::TempDir, PathBuf) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), &dest).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    copy(&sd_dir().join(name), &dir);
    (tmp, dir)
}

/// Opening `dir` fails with a message holding each of `needles`; returns the message.
fn open_fails(dir: &Path, needles: &[&str]) -> String {
    let e = ModelSet::open(dir).err().expect("the broken folder opened");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
    msg
}

#[test]
fn broken_folders_are_refused_with_the_reason() {
    // The scheduler: unknown, missing, not JSON, a setting mirage cannot honour.
    let (_t, dir) = copy_folder("sd15");
    let cfg = dir.join("scheduler/scheduler_config.json");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, original.replace("PNDMScheduler", "HeunDiscreteScheduler")).unwrap();
    open_fails(&dir, &["scheduler_config.json", "HeunDiscreteScheduler"]);
    std::fs::write(&cfg, "{ not json").unwrap();
    open_fails(&dir, &["scheduler_config.json"]);
    std::fs::write(&cfg, original.replace("\"skip_prk_steps\": true", "\"skip_prk_steps\": false")).unwrap();
    open_fails(&dir, &["skip_prk_steps"]);
    std::fs::remove_file(&cfg).unwrap();
    open_fails(&dir, &["scheduler_config.json"]);

    // The tokenizer: a missing merges file, a vocabulary that is not JSON.
    let (_t, dir) = copy_folder("sd15");
    std::fs::remove_file(dir.join("tokenizer/merges.txt")).unwrap();
    open_fails(&dir, &["merges.txt"]);
    let (_t, dir) = copy_folder("sd15");
    std::fs::write(dir.join("tokenizer/vocab.json"), "[1, 2").unwrap();
    open_fails(&dir, &["vocab.json"]);

    // A U-Net whose interface is not the layout's (here: the VAE decoder in its place).
    let (_t, dir) = copy_folder("sd15");
    std::fs::copy(dir.join("vae_decoder/model.onnx"), dir.join("unet/model.onnx")).unwrap();
    open_fails(&dir, &["unet/model.onnx", "interface"]);
    // A damaged model file.
    let (_t, dir) = copy_folder("sd15");
    std::fs::write(dir.join("text_encoder/model.onnx"), b"not an onnx file").unwrap();
    open_fails(&dir, &["text_encoder"]);
    // Configs that disagree with the models or name what mirage does not run.
    let (_t, dir) = copy_folder("sd15");
    let unet_cfg = dir.join("unet/config.json");
    let mut v: Value = read_json(&unet_cfg);
    v["in_channels"] = 9.into(); // an inpainting U-Net
    std::fs::write(&unet_cfg, v.to_string()).unwrap();
    open_fails(&dir, &["in_channels"]);
    let (_t, dir) = copy_folder("sd15");
    let index = dir.join("model_index.json");
    let mut v: Value = read_json(&index);
    v["text_encoder_2"] = serde_json::json!(["transformers", "CLIPTextModelWithProjection"]);
    std::fs::write(&index, v.to_string()).unwrap();
    open_fails(&dir, &["two text encoders"]);
    // An external weight file that is not a regular file.
    let (_t, dir) = copy_folder("sd15");
    std::fs::create_dir(dir.join("unet/model.onnx_data")).unwrap();
    open_fails(&dir, &["model.onnx_data", "regular file"]);
}

/// Moves every initializer of the ONNX file `model` into `model.onnx_data` beside it (as exporters do for
/// models over protobuf's 2 GB limit, e.g. a float32 Stable Diffusion U-Net); returns how many moved.
fn to_external_data(model: &Path) -> usize {
    use protobuf::Message;
    let mut m = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(model).unwrap()).unwrap();
    let mut data = Vec::new();
    let mut moved = 0;
    let graph = m.graph.as_mut().unwrap();
    for t in graph.initializer.iter_mut().filter(|t| !t.raw_data.is_empty()) {
        let entry = |k: &str, v: String| {
            let mut e = onnx_protobuf::StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            e
        };
        t.external_data = vec![
            entry("location", "model.onnx_data".into()),
            entry("offset", data.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        data.append(&mut t.raw_data);
        t.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
        moved += 1;
    }
    std::fs::write(model, m.write_to_bytes().unwrap()).unwrap();
    std::fs::write(model.with_file_name("model.onnx_data"), data).unwrap();
    moved
}

/// A U-Net whose weights sit in an external data file (what `optimum-cli export onnx` writes for a float32
/// SD 1.5 U-Net) loads and gives the same images as the single-file one.
#[test]
fn external_weight_files_load() {
    let (_t, dir) = copy_folder("sd15");
    let unet = dir.join("unet/model.onnx");
    let before = std::fs::metadata(&unet).unwrap().len();
    assert!(to_external_data(&unet) > 10);
    let after = std::fs::metadata(&unet).unwrap().len();
    assert!(after * 2 < before, "the weights did not move: {before} -> {after} bytes");
    let p = DiffusionParams { steps: 3, ..Default::default() };
    let run = |folder: &Path| {
        let set = ModelSet::open(folder).unwrap();
        let text = TextGuidance::request(&set, &["a red cube"], &[], 1, None).unwrap();
        pipeline::generate_with(&set, &p, text.as_ref(), &mut Hooks::default()).unwrap()
    };
    assert_eq!(run(&dir), run(&sd_dir().join("sd15")));
}

/// The CLI on the folders: diffusers' reference run reproduced from its initial noise (the same pixels,
/// up to rounding), a sampler chosen by name, img2img, the folder described by `info`.
#[test]
fn cli_runs_the_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let sd15 = sd_dir().join("sd15");
    let out = tmp.path().join("ref.png");
    let run = |args: &[std::ffi::OsString]| {
        let o = std::process::Command::new(mirage_bin()).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{args:?}: {text}");
        text
    };
    let s = |x: &str| std::ffi::OsString::from(x);
    run(&[
        s("generate"),
        s("--models"),
        sd15.clone().into(),
        s("--prompt"),
        s("a photo of an astronaut riding a horse on mars"),
        s("--negative"),
        s("blurry, low quality"),
        s("--guidance"),
        s("7.5"),
        s("--steps"),
        s("8"),
        s("--count"),
        s("1"),
        s("--quiet"),
        s("--noise"),
        reference("pipe_sd15-pndm-cfg-neg_init_noise.npy").into(),
        s("-o"),
        out.clone().into(),
    ]);
    let got = mirage::image::Image::load(&out).unwrap();
    let want = mirage::image::Image::load(&reference("pipe_sd15-pndm-cfg-neg_image.png")).unwrap();
    assert_eq!((got.width, got.height), (want.width, want.height));
    let got = got.to_channels(3).unwrap();
    let worst = got.data.iter().zip(&want.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 1, "the CLI's image differs from diffusers' by up to {worst} levels");

    let grid = tmp.path().join("euler-a.png");
    run(&[
        s("generate"),
        s("--models"),
        sd_dir().join("sd21-v").into(),
        s("--prompt"),
        s("a red cube"),
        s("--sampler"),
        s("euler-a"),
        s("--steps"),
        s("4"),
        s("--count"),
        s("2"),
        s("--quiet"),
        s("-o"),
        grid.clone().into(),
    ]);
    assert!(grid.is_file());
    let edited = tmp.path().join("img2img.png");
    run(&[
        s("img2img"),
        s("--models"),
        sd15.clone().into(),
        s("--input"),
        reference("init_image.png").into(),
        s("--strength"),
        s("0.6"),
        s("--steps"),
        s("5"),
        s("--quiet"),
        s("-o"),
        edited.clone().into(),
    ]);
    assert!(edited.is_file());
    let info = run(&[s("info"), s("--models"), sd15.into()]);
    assert!(info.contains("PNDMScheduler") && info.contains("64x64x3"), "{info}");
    // The float16 folder runs on the CPU (inputs cast as the model declares); on a provider this machine
    // cannot run, strict mode refuses it with the reason instead of falling back.
    let fp16 = sd_dir().join("sd15-fp16");
    let o = std::process::Command::new(mirage_bin())
        .args([s("--provider"), s("cuda"), s("--strict"), s("info"), s("--models"), fp16.clone().into()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        assert!(err.contains("cuda") && err.contains("unavailable"), "{err}");
    }
    run(&[s("info"), s("--models"), fp16.into()]);
}

/// tests/c/test_sd.c: the C API on the folders, from a C program compiled against the header.
#[test]
fn c_program_runs_the_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (_noise_shape, noise) = npy("pipe_sd15-pndm-cfg-neg_init_noise.npy");
    let noise_file = tmp.path().join("noise.f32");
    std::fs::write(&noise_file, noise.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()).unwrap();
    let want = mirage::image::Image::load(&reference("pipe_sd15-pndm-cfg-neg_image.png")).unwrap();
    let rgb = tmp.path().join("reference.rgb");
    std::fs::write(&rgb, &want.to_channels(3).unwrap().data).unwrap();
    let (_t, broken) = copy_folder("sd15");
    let cfg = broken.join("scheduler/scheduler_config.json");
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("PNDMScheduler", "KarrasVeScheduler")).unwrap();
    let exe = tmp.path().join("test_sd");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_sd.c");
    crate::util::compile(crate::util::Lang::C, &[src], &exe, &[]);
    let args = [sd_dir().join("sd15"), sd_dir().join("turbo"), noise_file, rgb, broken];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    let (ok, text) = crate::util::run(&exe, &args);
    assert!(ok && text.contains(" 0 failed"), "tests/c/test_sd.c failed:\n{text}");
    eprintln!("{text}");
}
