//! Text-to-image on real ONNX Runtime with the real MiniLM encoder and a tiny random-weight
//! text-conditioned U-Net: prompts, classifier-free guidance, negative prompts, interpolation, bad input.

use mirage::model_set::ModelSet;
use mirage::pipeline::{self, DiffusionParams, Hooks, TextGuidance};
use mirage::Error;

use crate::util::{text_encoder_dir, tiny_diffusion_set, tiny_text_set};

fn params(steps: usize, seed: u64, count: usize) -> DiffusionParams {
    DiffusionParams { steps, seed, count, ..Default::default() }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn prompts_guidance_and_negative_prompts_steer_the_generation() {
    let (_tmp, dir) = tiny_text_set();
    let set = ModelSet::open(&dir).unwrap();
    assert_eq!(set.text_spec().unwrap().tokens, 8);
    assert!(set.providers().iter().any(|(k, _)| *k == mirage::model_set::ModelKind::TextEncoder));
    let gen = |prompt: &str, negative: &[&str], g: f32, seed: u64| {
        let t = TextGuidance::new(&set, &[prompt], negative, 2, Some(g)).unwrap();
        pipeline::generate_with(&set, &params(4, seed, 2), Some(&t), &mut Hooks::default()).unwrap()
    };
    let apple = gen("a red apple", &[], 3.0, 1);
    assert_eq!(apple, gen("a red apple", &[], 3.0, 1), "not reproducible");
    assert!(apple.iter().all(|v| v.is_finite()));
    let per = apple.len() / 2;
    assert!(max_diff(&apple[..per], &apple[per..]) > 1e-4, "the two images of one prompt share their noise");
    assert!(max_diff(&apple, &gen("a blue car", &[], 3.0, 1)) > 1e-4, "the prompt is ignored");
    assert!(max_diff(&apple, &gen("a red apple", &[], 1.0, 1)) > 1e-4, "the guidance is ignored");
    assert!(max_diff(&apple, &gen("a red apple", &["green"], 3.0, 1)) > 1e-4, "the negative prompt is ignored");
    // Guidance 0 is the unconditional side alone: the prompt no longer matters, the negative prompt does.
    let u1 = gen("a red apple", &["green"], 0.0, 1);
    assert!(max_diff(&u1, &gen("a blue car", &["green"], 0.0, 1)) < 1e-6);
    // No text on a text set = the empty prompt at guidance 1.
    let plain = pipeline::generate(&set, &params(4, 1, 2), &mut Hooks::default()).unwrap();
    assert!(max_diff(&plain, &gen("", &[], 1.0, 1)) < 1e-6);
    // One prompt per image.
    let t = TextGuidance::new(&set, &["a red apple", "a blue car"], &[], 2, Some(3.0)).unwrap();
    let mixed = pipeline::generate_with(&set, &params(4, 1, 2), Some(&t), &mut Hooks::default()).unwrap();
    assert!(max_diff(&mixed[..per], &apple[..per]) < 1e-5, "image 0 of a mixed batch differs from its own prompt's");
    // img2img and inpaint take text too.
    let x = vec![0.1f32; set.image_len()];
    let t1 = TextGuidance::new(&set, &["a cat"], &[], 1, Some(2.0)).unwrap();
    let p = DiffusionParams { strength: 0.6, ..params(4, 2, 1) };
    let a = pipeline::img2img(&set, &x, 1, &p, Some(&t1), &mut Hooks::default()).unwrap();
    let b = pipeline::img2img(&set, &x, 1, &p, None, &mut Hooks::default()).unwrap();
    assert!(max_diff(&a, &b) > 1e-5);
}

#[test]
fn interpolation_walks_between_prompts_from_fixed_noise() {
    let (_tmp, dir) = tiny_text_set();
    let set = ModelSet::open(&dir).unwrap();
    let p = params(3, 5, 2);
    let mut steps_seen = Vec::new();
    let mut progress = |d: usize, total: usize| {
        steps_seen.push((d, total));
        true
    };
    let mut previews = Vec::new();
    let mut preview = |d: usize, images: &[f32]| {
        previews.push((d, images.len()));
        true
    };
    let mut hooks = Hooks { progress: Some(&mut progress), preview: Some(&mut preview), ..Default::default() };
    let frames =
        pipeline::interpolate(&set, &["a cat face", "a dog face", "a red apple"], "", 5, Some(2.0), &p, &mut hooks)
            .unwrap();
    let per = set.image_len();
    assert_eq!(frames.len(), 5 * per);
    // 5 frames in batches of 2: 3 runs of 3 steps, counted as one progress of 9.
    assert_eq!(steps_seen.last(), Some(&(9, 9)));
    assert_eq!(steps_seen.len(), 9);
    // The preview too, with the frames of the running batch (2, 2, then 1).
    let want: Vec<_> = (1..=9).map(|d| (d, if d <= 6 { 2 } else { 1 } * per)).collect();
    assert_eq!(previews, want);
    // The end frames are the prompts themselves (same seed, same noise), the middle one the second prompt.
    for (frame, prompt) in [(0, "a cat face"), (2, "a dog face"), (4, "a red apple")] {
        let t = TextGuidance::new(&set, &[prompt], &[], 1, Some(2.0)).unwrap();
        let direct = pipeline::generate_with(&set, &params(3, 5, 1), Some(&t), &mut Hooks::default()).unwrap();
        let d = max_diff(&frames[frame * per..(frame + 1) * per], &direct);
        assert!(d < 1e-4, "frame {frame} differs from {prompt:?} by {d}");
    }
    // Frames change along the path.
    assert!(max_diff(&frames[..per], &frames[per..2 * per]) > 1e-5);
    // With a stochastic sampler, batching frames must not change their noise.
    let sampler = mirage::sampler::SamplerKind::parse("ddim", 1.0).unwrap();
    let walk = |count: usize| {
        let p = DiffusionParams { sampler, ..params(2, 5, count) };
        pipeline::interpolate(&set, &["a cat face", "a dog face"], "", 2, Some(2.0), &p, &mut Hooks::default()).unwrap()
    };
    assert!(max_diff(&walk(1), &walk(2)) < 1e-5, "frames depend on the batch with eta > 0");
    // Bad input.
    let mut h = Hooks::default();
    for (prompts, frames) in [(&["one"][..], 4), (&["a", "b"][..], 1), (&["a", "b"][..], 0)] {
        let e = pipeline::interpolate(&set, prompts, "", frames, Some(2.0), &p, &mut h).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}

#[test]
fn bad_text_input_is_refused_clearly() {
    let (_tmp, dir) = tiny_text_set();
    let set = ModelSet::open(&dir).unwrap();
    for g in [f32::NAN, -0.5, 1e6, f32::INFINITY] {
        let e = TextGuidance::new(&set, &["x"], &[], 1, Some(g)).unwrap_err();
        assert!(e.to_string().contains("guidance"), "{e}");
    }
    assert!(TextGuidance::new(&set, &["a", "b", "c"], &[], 2, Some(2.0)).is_err(), "3 prompts for 2 images");
    // A long prompt is truncated to the set's 8 tokens, not refused; the empty prompt is valid.
    let long = "a very long prompt about a red apple on a wooden table in the morning sun with a cat";
    let e = set.encode_prompts(&[long, ""]).unwrap();
    assert_eq!((e.n, e.context.len(), e.pooled.len()), (2, 2 * 8 * 384, 2 * 384));
    // A prompt to a set that takes none.
    let (_t2, plain) = tiny_diffusion_set();
    let plain = ModelSet::open(&plain).unwrap();
    assert!(matches!(TextGuidance::new(&plain, &["x"], &[], 1, Some(2.0)), Err(Error::Unsupported(_))));
    // A set whose U-Net expects another encoder (sha256), or whose encoder is gone.
    let mut m = mirage::manifest::Manifest::load(&dir).unwrap();
    let good = m.clone();
    m.unet.as_mut().unwrap().text.as_mut().unwrap().encoder_sha256 = "1".repeat(64);
    let write = |m: &mirage::manifest::Manifest| {
        std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(m).unwrap()).unwrap()
    };
    write(&m);
    let e = ModelSet::open(&dir).err().unwrap();
    assert!(matches!(e, Error::InvalidModel(_)) && e.to_string().contains("sha256"), "{e}");
    m = good.clone();
    m.unet.as_mut().unwrap().text.as_mut().unwrap().encoder = "/nonexistent/minilm".into();
    write(&m);
    let e = ModelSet::open(&dir).err().unwrap();
    assert!(matches!(e, Error::ModelNotFound { .. }) && e.to_string().contains("setup.sh text"), "{e}");
    // A width the encoder does not give: the manifest no longer matches the U-Net file's inputs.
    m = good.clone();
    m.unet.as_mut().unwrap().text.as_mut().unwrap().width = 256;
    write(&m);
    assert!(ModelSet::open(&dir).is_err());
    write(&good);
    ModelSet::open(&dir).unwrap();
    let _ = text_encoder_dir();
}

#[test]
fn cli_generates_from_prompts_and_interpolates_to_a_gif() {
    use std::process::Command;
    let (tmp, dir) = tiny_text_set();
    let d = dir.to_str().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let o = Command::new(crate::util::mirage_bin()).args(args).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let gen = |prompt: &str, file: &str| {
        run(&[
            "generate",
            "--models",
            d,
            "--prompt",
            prompt,
            "--count",
            "1",
            "--steps",
            "3",
            "--seed",
            "4",
            "--scale",
            "2",
            "--quiet",
            "-o",
            &out(file),
        ])
    };
    let (ok, err) = gen("a red apple", "a.png");
    assert!(ok, "{err}");
    let a = mirage::image::Image::load(std::path::Path::new(&out("a.png"))).unwrap();
    assert_eq!((a.width, a.height), (56, 56), "one 28x28 image at --scale 2");
    assert!(gen("a red apple", "b.png").0);
    assert_eq!(std::fs::read(out("a.png")).unwrap(), std::fs::read(out("b.png")).unwrap(), "not reproducible");
    assert!(gen("a blue car", "c.png").0);
    // A gallery: two prompts, two images each, one row per prompt (28 px tiles, gaps of 2 at --scale 1).
    let (ok, err) = run(&[
        "generate",
        "--models",
        d,
        "--prompt",
        "a red apple",
        "--prompt",
        "a blue car",
        "--count",
        "2",
        "--steps",
        "2",
        "--quiet",
        "-o",
        &out("g.png"),
    ]);
    assert!(ok, "{err}");
    let g = mirage::image::Image::load(std::path::Path::new(&out("g.png"))).unwrap();
    assert!(g.width > 2 * 28 && g.width < 3 * 28 && g.height > 2 * 28 && g.height < 3 * 28, "{}x{}", g.width, g.height);
    assert_ne!(std::fs::read(out("a.png")).unwrap(), std::fs::read(out("c.png")).unwrap());
    let (ok, err) =
        run(&["generate", "--models", d, "--prompt", "x", "--guidance", "NaN", "--quiet", "-o", &out("n.png")]);
    assert!(!ok && err.contains("guidance"), "{err}");
    let (ok, err) = run(&[
        "interpolate",
        "--models",
        d,
        "--prompt",
        "a cat face",
        "--prompt",
        "a dog face",
        "--frames",
        "4",
        "--steps",
        "2",
        "--quiet",
        "-o",
        &out("m.gif"),
    ]);
    assert!(ok, "{err}");
    let gif = std::fs::read(out("m.gif")).unwrap();
    assert!(gif.starts_with(b"GIF89a"), "not a GIF");
    let (ok, err) = run(&["interpolate", "--models", d, "--prompt", "only one", "--quiet", "-o", &out("x.gif")]);
    assert!(!ok && err.contains("at least 2 prompts"), "{err}");
    // A prompt to a set without text conditioning.
    let (_t2, plain) = tiny_diffusion_set();
    let (ok, err) =
        run(&["generate", "--models", plain.to_str().unwrap(), "--prompt", "x", "--quiet", "-o", &out("p.png")]);
    assert!(!ok && err.contains("not text-conditioned"), "{err}");
}

/// The int8 text encoder (`MirageContextParams::precision`, `--precision int8`): the same generation,
/// steered by embeddings within cosine 0.999 of fp32's, so close images; refused values and sets.
#[test]
fn the_int8_text_encoder_steers_like_fp32() {
    use mirage::capi::*;
    use mirage::text::Precision;
    let (_tmp, dir) = tiny_text_set();
    let fp32 = ModelSet::open(&dir).unwrap();
    let int8 = ModelSet::open_with_precision(&dir, None, Precision::Int8).unwrap();
    let gen = |set: &ModelSet| {
        let t = TextGuidance::new(set, &["a red apple"], &["green"], 2, Some(3.0)).unwrap();
        pipeline::generate_with(set, &params(4, 7, 2), Some(&t), &mut Hooks::default()).unwrap()
    };
    let (a, b) = (gen(&fp32), gen(&int8));
    assert_ne!(a, b, "the int8 encoder was not used");
    // The tiny random-weight U-Net amplifies small embedding differences into a few pixels (measured: max
    // 1.27, mean 0.004 at guidance 3): the mean is what shows the generation is steered the same way.
    let mean = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    assert!(mean < 0.02, "int8 embeddings moved the images by {mean} on average (model-space units)");
    // Through the C API: a context per precision; an unknown value; a diffusers folder refuses int8.
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: valid pointers and params made by init.
    unsafe {
        let mut p: MirageContextParams = std::mem::zeroed();
        assert_eq!(mirage_context_params_init(&mut p, size_of::<MirageContextParams>()), MIRAGE_OK);
        assert_eq!(p.precision, MIRAGE_PRECISION_FP32);
        p.precision = MIRAGE_PRECISION_INT8;
        let mut ctx = std::ptr::null_mut();
        assert_eq!(mirage_context_new(path.as_ptr(), &p, &mut ctx), MIRAGE_OK);
        mirage_context_free(ctx);
        p.precision = 7;
        assert_eq!(mirage_context_new(path.as_ptr(), &p, &mut ctx), MIRAGE_ERR_INVALID_ARGUMENT);
        let sd = crate::diffusers::sd_dir().join("sd15");
        let sd = std::ffi::CString::new(sd.to_str().unwrap()).unwrap();
        p.precision = MIRAGE_PRECISION_INT8;
        assert_eq!(mirage_context_new(sd.as_ptr(), &p, &mut ctx), MIRAGE_ERR_UNSUPPORTED);
    }
}

/// The prompt cache (on by default in the CLI, `MirageRuntimeOptions::prompt_cache`): a prompt drawn before
/// loads no text encoder and gives the same image as an encode; a damaged entry is encoded again; an encoder
/// file changed since is still refused when the set opens, cached prompts or not.
#[test]
fn the_prompt_cache_skips_the_encoder_and_never_serves_a_changed_encoder() {
    use std::process::Command;
    let (tmp, dir) = tiny_text_set();
    let d = dir.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let c = cache.to_str().unwrap();
    let gen = |flags: &[&str], file: &str| {
        let out = tmp.path().join(file);
        let args = ["-v", "--provider", "cpu", "generate", "--models", d, "--prompt", "a red apple", "--steps", "2"];
        let o = Command::new(crate::util::mirage_bin())
            .args([flags, &args, &["--quiet", "-o", out.to_str().unwrap()]].concat())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{err}");
        // The encoder's load line (read and checked, session made), logged at info level.
        (std::fs::read(out).unwrap(), err.contains("tokenizer and session made"))
    };
    let (plain, loaded) = gen(&["--digest-cache", "off"], "plain.png");
    assert!(loaded);
    let (first, loaded) = gen(&["--digest-cache", c], "first.png");
    assert!(loaded, "nothing cached yet: the encoder runs");
    assert_eq!(first, plain);
    let entries = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(cache.join("prompts")).unwrap().flatten().map(|e| e.path()).collect();
        v.sort();
        v
    };
    assert_eq!(entries().len(), 2, "the prompt and the empty prompt of guidance: {:?}", entries());
    let (cached, loaded) = gen(&["--digest-cache", c], "cached.png");
    assert!(!loaded, "both prompts were cached: the encoder must not be loaded");
    assert_eq!(cached, plain, "the cached embeddings changed the image");
    let (_, loaded) = gen(&["--digest-cache", c, "--no-prompt-cache"], "off.png");
    assert!(loaded, "--no-prompt-cache encodes");
    // The encoder's optimized graph, saved by the first run's session cache, is mapped (not read and hashed).
    let o = Command::new(crate::util::mirage_bin())
        .args(["-vv", "--digest-cache", c, "--no-prompt-cache", "generate", "--models", d, "--prompt", "a red apple"])
        .args(["--steps", "2", "--quiet", "-o"])
        .arg(tmp.path().join("mapped.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("text_encoder.onnx): optimized graph taken from the session cache (mapped)"),
        "{err}"
    );
    assert_eq!(std::fs::read(tmp.path().join("mapped.png")).unwrap(), plain, "the mapped encoder changed the image");
    // A damaged entry is not used: encoded again (same image) and rewritten.
    for e in entries() {
        let mut b = std::fs::read(&e).unwrap();
        let at = b.len() / 3;
        b[at] ^= 1;
        std::fs::write(&e, b).unwrap();
    }
    let (again, loaded) = gen(&["--digest-cache", c], "again.png");
    assert!(loaded && again == plain);
    assert!(!gen(&["--digest-cache", c], "healed.png").1, "the entries were rewritten");
    // The encoder's tokenizer changed on disk (same size): refused at open although every prompt is cached.
    let copy = tmp.path().join("encoder");
    std::fs::create_dir(&copy).unwrap();
    let src = text_encoder_dir();
    // The 90 MB model linked, not copied (it is not changed); the files that are changed, copied.
    std::fs::hard_link(src.join("text_encoder.onnx"), copy.join("text_encoder.onnx"))
        .or_else(|_| std::fs::copy(src.join("text_encoder.onnx"), copy.join("text_encoder.onnx")).map(drop))
        .unwrap();
    for f in ["encoder.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let pointed = manifest.replace(text_encoder_dir().to_str().unwrap(), copy.to_str().unwrap());
    assert_ne!(pointed, manifest);
    std::fs::write(dir.join("manifest.json"), pointed).unwrap();
    assert_eq!(gen(&["--digest-cache", c], "copy.png").0, plain, "the same encoder in another folder");
    let tok = copy.join("tokenizer.json");
    let mut b = std::fs::read(&tok).unwrap();
    let at = b.iter().position(|&x| x == b'[').unwrap();
    b[at] = b'{';
    std::fs::write(&tok, b).unwrap();
    let o = Command::new(crate::util::mirage_bin())
        .args(["--digest-cache", c, "generate", "--models", d, "--prompt", "a red apple", "--steps", "2", "-o"])
        .arg(tmp.path().join("x.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sha256 mismatch") && err.contains("tokenizer"), "{err}");
}
