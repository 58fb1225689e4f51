//! The `mirage` command line on the tiny fixture set (and on real Fashion-MNIST test images when installed).

use std::process::Command;

use crate::util::{mirage_bin, tiny_diffusion_set, tiny_set, tiny_text_set_own_encoder};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(mirage_bin()).args(args).output().expect("running mirage");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn info_sample_walk_encode_decode_reconstruct() {
    let (tmp, dir) = tiny_set();
    let d = dir.to_str().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();

    let (ok, out, err) = run(&["info", "--models", d]);
    assert!(ok, "{err}");
    assert!(out.contains("vae latent") && out.contains("vae_encoder: cpu"), "{out}");

    let (ok, out, err) = run(&["bench", "--models", d, "--batch", "2", "--iters", "3"]);
    assert!(ok && out.contains("encode: median") && out.contains("decode: median"), "{out}{err}");
    // With a U-Net: the pipeline's step next to a bare ONNX Runtime run, and the JSON of the same figures.
    let (_tmp2, unet_set) = crate::util::tiny_diffusion_set();
    let json = t("bench.json");
    let args = [
        "bench",
        "--models",
        unet_set.to_str().unwrap(),
        "--batch",
        "1",
        "--batch",
        "3",
        "--iters",
        "3",
        "--json",
        &json,
    ];
    let (ok, out, err) = run(&args);
    assert!(ok && out.contains("bare ONNX Runtime U-Net run") && out.contains("peak RSS"), "{out}{err}");
    let v = crate::util::read_json(std::path::Path::new(&json));
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1]["batch"], 3);
    for key in ["step_ms", "bare_unet_run_ms", "overhead_percent", "vae_decode_ms", "ms_per_50_step_image"] {
        assert!(batches[1][key].as_f64().is_some(), "{key} missing: {v}");
    }
    assert!(v["open_to_first_image_ms"].as_f64().unwrap() > 0.0 && v["peak_rss_bytes"].as_u64().unwrap() > 0);
    // The arithmetic, read off ONNX Runtime's profile: every counted operator scales with the batch, so batch 3
    // is exactly three times batch 1; and the rates beside the machine's sgemm.
    let gflop = |i: usize| batches[i]["unet_gflop"].as_f64().unwrap();
    assert!(gflop(0) > 0.0 && (gflop(1) / gflop(0) - 3.0).abs() < 1e-9, "{v}");
    assert!(v["sgemm_gflops_onnxruntime"].as_f64().unwrap() > 0.0 && batches[1]["step_gflops"].as_f64().is_some());
    // The tests' mirage is built with the trainer: the same U-Net in libtorch, its weights read back from the
    // set's unet.onnx (parity proves they are the same weights), timed at the same batch.
    assert!(v["libtorch_parity_max_abs_diff"].as_f64().unwrap() < 1e-4, "{v}");
    assert!(batches[1]["libtorch_forward_ms"].as_f64().unwrap() > 0.0 && v["sgemm_gflops_libtorch"].as_f64().is_some());
    let (ok, _, err) = run(&["bench", "--models", d, "--batch", "0"]);
    assert!(!ok && err.contains("--batch must be 1..=256"), "{err}");

    let (ok, _, err) = run(&["vae", "sample", "--models", d, "--count", "4", "--seed", "3", "-o", &t("s1.png")]);
    assert!(ok, "{err}");
    run(&["vae", "sample", "--models", d, "--count", "4", "--seed", "3", "-o", &t("s2.png")]);
    assert_eq!(std::fs::read(t("s1.png")).unwrap(), std::fs::read(t("s2.png")).unwrap(), "same seed, same PNG");

    let (ok, _, err) = run(&["vae", "walk", "--models", d, "--frames", "5", "--walks", "2", "-o", &t("walk.png")]);
    assert!(ok, "{err}");
    let walk = mirage::image::Image::load(&tmp.path().join("walk.png")).unwrap();
    assert_eq!(walk.width, 5 * (28 + 2) + 2);

    // Decode a sample to get an input image, then encode -> JSON -> decode, and reconstruct.
    let (ok, out, err) = run(&["vae", "encode", "--models", d, "-i", &t("walk.png")]);
    assert!(!ok && out.is_empty() && err.contains("28x28"), "wrong-size input must fail clearly: {err}");
    let (ok, _, err) = run(&["vae", "sample", "--models", d, "--count", "1", "-o", &t("one.png")]);
    assert!(ok, "{err}");
    // A grid of 1 has a 2-pixel border: crop it out with the image API.
    let g = mirage::image::Image::load(&tmp.path().join("one.png")).unwrap();
    let px: Vec<u8> =
        (0..28).flat_map(|y| g.data[((y + 2) * 32 + 2) as usize..((y + 2) * 32 + 30) as usize].to_vec()).collect();
    mirage::image::Image::new(28, 28, 1, px).unwrap().save(&tmp.path().join("in.png")).unwrap();
    let (ok, _, err) = run(&["vae", "encode", "--models", d, "-i", &t("in.png"), "-o", &t("z.json")]);
    assert!(ok, "{err}");
    let z = crate::util::read_json(&tmp.path().join("z.json"));
    assert_eq!(z["mean"].as_array().unwrap().len(), z["logvar"].as_array().unwrap().len());
    let (ok, _, err) = run(&["vae", "decode", "--models", d, "-i", &t("z.json"), "-o", &t("dec.png"), "--seed", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["vae", "reconstruct", "--models", d, "-i", &t("in.png"), "-o", &t("rec.png")]);
    assert!(ok && err.contains("PSNR"), "{err}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let (tmp, dir) = tiny_set();
    let d = dir.to_str().unwrap();
    let o = tmp.path().join("x.png");
    let o = o.to_str().unwrap();
    for args in [
        vec!["info", "--models", "/nonexistent/set"],
        vec!["vae", "sample", "--models", d, "--count", "0", "-o", o],
        vec!["vae", "walk", "--models", d, "--frames", "1", "-o", o],
        vec!["--provider", "quantum", "info", "--models", d],
        vec!["--ort-lib", "/nonexistent/libonnxruntime.so", "info", "--models", d],
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn demo_on_real_fashion_mnist() {
    let data = std::path::Path::new(mirage::fashion::DEFAULT_DIR);
    if !data.join("t10k-images-idx3-ubyte.gz").exists() {
        panic!("Fashion-MNIST is not installed: run scripts/setup.sh data (the README's test command does)");
    }
    let (tmp, dir) = tiny_set();
    let out = tmp.path().join("demo.png");
    let (ok, stdout, err) =
        run(&["demo", "--models", dir.to_str().unwrap(), "--count", "8", "-o", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("mean PSNR"), "{stdout}");
    // The samples row comes from the shipped VAE made for sampling (models/fashion-vae, the default).
    assert!(stdout.contains("prior samples of models/fashion-vae"), "{stdout}");
    let g = mirage::image::Image::load(&out).unwrap();
    // 8 originals + 8 reconstructions + 8 samples, 8 columns -> 3 rows.
    assert_eq!((g.width, g.height), (8 * 30 + 2, 3 * 30 + 2));
    let args = ["demo", "--models", dir.to_str().unwrap(), "--count", "8", "--prior-models", "no/such/set", "-o"];
    let (ok, stdout, err) = run(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(ok && stdout.contains("not made for sampling"), "{stdout}{err}");

    // With a U-Net the demo adds diffusion samples, noisy test images and their denoised versions.
    let (tmp, dir) = crate::util::tiny_diffusion_set();
    let out = tmp.path().join("demo.png");
    let (ok, stdout, err) =
        run(&["demo", "--models", dir.to_str().unwrap(), "--count", "8", "-o", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("generated by 50 DDIM steps") && stdout.contains("denoised at strength"), "{stdout}");
    let g = mirage::image::Image::load(&out).unwrap();
    assert_eq!((g.width, g.height), (8 * 30 + 2, 6 * 30 + 2));
}

#[test]
fn generate_denoise_img2img_inpaint() {
    let (tmp, dir) = crate::util::tiny_diffusion_set();
    let d = dir.to_str().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let gen = |out: &str, seed: &str| {
        run(&["generate", "--models", d, "--count", "4", "--steps", "5", "--seed", seed, "--quiet", "-o", out])
    };
    let (ok, _, err) = gen(&t("g1.png"), "7");
    assert!(ok, "{err}");
    gen(&t("g2.png"), "7");
    assert_eq!(std::fs::read(t("g1.png")).unwrap(), std::fs::read(t("g2.png")).unwrap(), "same seed, same grid");
    // --guidance without --prompt or --negative is ignored (the C API's rule too), with a warning: the same
    // grid, also on this set without text; a field error is named as the flag.
    let (ok, _, err) = run(&[
        "generate",
        "--models",
        d,
        "--count",
        "4",
        "--steps",
        "5",
        "--seed",
        "7",
        "--guidance",
        "7",
        "--quiet",
        "-o",
        &t("g3.png"),
    ]);
    assert!(ok && err.contains("--guidance has no effect"), "{err}");
    assert_eq!(std::fs::read(t("g1.png")).unwrap(), std::fs::read(t("g3.png")).unwrap(), "--guidance alone changed it");
    let (ok, _, err) = run(&["generate", "--models", d, "--steps", "0", "-o", &t("x.png")]);
    assert!(!ok && err.contains("--steps is 0, out of range 1..=1000"), "{err}");
    // The same seed gives the same bits whatever the intra-op thread count; a thread storm is refused.
    for threads in ["1", "2"] {
        let out = t(&format!("threads{threads}.png"));
        let (ok, _, err) = run(&[
            "--threads",
            threads,
            "generate",
            "--models",
            d,
            "--count",
            "4",
            "--steps",
            "5",
            "--seed",
            "7",
            "--quiet",
            "-o",
            &out,
        ]);
        assert!(ok, "{err}");
        assert_eq!(std::fs::read(t("g1.png")).unwrap(), std::fs::read(&out).unwrap(), "--threads {threads} differs");
    }
    let (ok, _, err) = run(&["--threads", "20000", "info", "--models", d]);
    assert!(!ok && err.contains("--threads is 20000, over the limit of 256"), "{err}");

    let image = mirage::image::Image::new(28, 28, 1, (0..784).map(|i| (i % 251) as u8).collect()).unwrap();
    image.save(&tmp.path().join("in.png")).unwrap();
    let mask = mirage::image::Image::new(28, 28, 1, (0..784).map(|i| if i % 28 >= 14 { 255 } else { 0 }).collect());
    mask.unwrap().save(&tmp.path().join("mask.png")).unwrap();
    for args in [
        vec!["denoise", "--models", d, "--strength", "0.4", "--steps", "10", "-i", &t("in.png"), "-o", &t("dn.png")],
        vec!["img2img", "--models", d, "--sampler", "dpm++2m", "--steps", "4", "-i", &t("in.png"), "-o", &t("i2.png")],
        vec![
            "inpaint",
            "--models",
            d,
            "--steps",
            "4",
            "-i",
            &t("in.png"),
            "--mask",
            &t("mask.png"),
            "-o",
            &t("ip.png"),
        ],
    ] {
        let (ok, _, err) = run(&args);
        assert!(ok, "{args:?}: {err}");
    }
    // Inpainting keeps the unmasked half pixel for pixel.
    let out = mirage::image::Image::load(&tmp.path().join("ip.png")).unwrap();
    assert!((0..784).filter(|i| i % 28 < 14).all(|i| out.data[i] == image.data[i]));

    for args in [
        vec!["generate", "--models", d, "--steps", "0", "-o", &t("x.png")],
        vec!["generate", "--models", d, "--steps", "100000", "-o", &t("x.png")],
        vec!["generate", "--models", d, "--sampler", "euler-magic", "-o", &t("x.png")],
        vec!["generate", "--models", d, "--eta", "NaN", "-o", &t("x.png")],
        vec!["denoise", "--models", d, "--strength", "1.5", "-i", &t("in.png"), "-o", &t("x.png")],
        vec!["inpaint", "--models", d, "-i", &t("in.png"), "--mask", &t("g1.png"), "-o", &t("x.png")],
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains("error"), "{args:?} should fail: {err}");
    }
}

/// The game-loop issue's flags: `mirage pack` and `--models` on the pack, `--noise FILE.npy` (the seed's own
/// noise reproduces the seed's image; a wrong size is refused), `--size`/`--filter`, `--repeat`, and
/// `--tileable` (refused on a set whose decoder crops, with the reason).
#[test]
fn pack_noise_size_repeat_and_tileable_flags() {
    let (tmp, dir) = crate::util::tiny_diffusion_set();
    let d = dir.to_str().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (ok, out, err) = run(&["pack", d, "-o", &t("set.mirage")]);
    assert!(ok && out.contains("it opens as a model set"), "{out}{err}");
    let gen = |models: &str, extra: &[&str], out: &str| {
        let mut args = vec!["generate", "--models", models, "--count", "2", "--steps", "3", "--seed", "5", "--quiet"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", out]);
        run(&args)
    };
    let (ok, _, err) = gen(d, &[], &t("dir.png"));
    assert!(ok, "{err}");
    let (ok, _, err) = gen(&t("set.mirage"), &[], &t("pack.png"));
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(t("dir.png")).unwrap(), std::fs::read(t("pack.png")).unwrap(), "pack = directory");

    let set = mirage::model_set::ModelSet::open(&dir).unwrap();
    let [c, h, w] = set.latent_shape().unwrap().map(|v| v as usize);
    let seed_noise = mirage::rng::Noise::new(5).try_normals(2 * c * h * w).unwrap();
    std::fs::write(t("noise.npy"), mirage::latent::write_npy(&[2, c, h, w], &seed_noise).unwrap()).unwrap();
    let (ok, _, err) = gen(d, &["--noise", &t("noise.npy")], &t("noise.png"));
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(t("dir.png")).unwrap(), std::fs::read(t("noise.png")).unwrap(), "the seed's noise, given");
    std::fs::write(t("short.npy"), mirage::latent::write_npy(&[c, h, w], &seed_noise[..c * h * w]).unwrap()).unwrap();
    let (ok, _, err) = gen(d, &["--noise", &t("short.npy")], &t("x.png"));
    assert!(!ok && err.contains("noise holds"), "{err}");
    std::fs::write(t("bad.npy"), b"not numpy").unwrap();
    let (ok, _, err) = gen(d, &["--noise", &t("bad.npy")], &t("x.png"));
    assert!(!ok && err.contains("--noise: ") && err.contains(".npy"), "{err}");

    let (ok, _, err) = run(&[
        "generate",
        "--models",
        d,
        "--count",
        "1",
        "--steps",
        "2",
        "--quiet",
        "--size",
        "50x30",
        "--filter",
        "nearest",
        "--repeat",
        "3",
        "-o",
        &t("sized.png"),
    ]);
    assert!(ok, "{err}");
    let img = mirage::image::Image::load(&tmp.path().join("sized.png")).unwrap();
    assert_eq!((img.width, img.height), (150, 90));
    for (flag, value, needle) in
        [("--size", "50", "WxH"), ("--filter", "cubic", "nearest | bilinear"), ("--repeat", "0", "1..=16")]
    {
        let (ok, _, err) = run(&["generate", "--models", d, "--steps", "1", flag, value, "-o", &t("x.png")]);
        assert!(!ok && err.contains(needle), "{flag} {value}: {err}");
    }
    // The tiny set decodes like the Fashion sets (a crop), so it cannot wrap.
    let (ok, _, err) = gen(d, &["--tileable"], &t("x.png"));
    assert!(!ok && err.contains("cannot make tileable images"), "{err}");
}

/// The digest cache: a first run records the digests of the files it verified, a second run reuses them, and
/// a model file changed since (same size) is still refused by its sha256, never served from the cache.
#[test]
fn the_digest_cache_never_hides_a_changed_file() {
    let (tmp, dir) = tiny_set();
    let d = dir.to_str().unwrap();
    let cache = tmp.path().join("digests");
    let c = cache.to_str().unwrap();
    let out = tmp.path().join("s.png");
    let sample = |cache: &str| {
        run(&["--digest-cache", cache, "vae", "sample", "--models", d, "--count", "1", "-o", out.to_str().unwrap()])
    };
    let (ok, _, err) = sample(c);
    assert!(ok, "{err}");
    let digests = |cache: &std::path::Path| {
        std::fs::read_dir(cache)
            .map(|r| r.flatten().filter(|e| e.path().extension() == Some("digest".as_ref())).count())
    };
    // One per verified model file (encoder, decoder) and one per session-cache entry written for them.
    assert_eq!(digests(&cache).unwrap_or(0), 4, "model files and sessions/ entries");
    let (ok, _, err) = sample(c);
    assert!(ok, "{err}");
    // Same size, other bytes: refused with the sha256 message, cache or not.
    let m = mirage::manifest::Manifest::load(&dir).unwrap();
    let decoder = dir.join(&m.vae.unwrap().decoder.file);
    let mut bytes = std::fs::read(&decoder).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&decoder, &bytes).unwrap();
    let (ok, _, err) = sample(c);
    assert!(!ok && err.contains("sha256 mismatch"), "{err}");
    let (ok, _, err) = sample("off");
    assert!(!ok && err.contains("sha256 mismatch"), "{err}");
}

/// The session cache (the load cache folder's `sessions/`): the first run saves each model's optimized graph,
/// later runs load it and give the same pixels; a damaged entry is never loaded (the model is optimized
/// again and the entry rewritten), and a cache that cannot be written costs nothing but the saving.
#[test]
fn the_session_cache_gives_the_same_images_and_survives_damage() {
    let (tmp, dir) = tiny_diffusion_set();
    let d = dir.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let c = cache.to_str().unwrap();
    let gen = |cache: &str, out: &str| {
        let out = tmp.path().join(out);
        let args =
            ["--digest-cache", cache, "--provider", "cpu", "generate", "--models", d, "--count", "2", "--steps", "3"];
        let (ok, _, err) = run(&[&args[..], &["--quiet", "-o", out.to_str().unwrap()]].concat());
        assert!(ok, "{err}");
        std::fs::read(out).unwrap()
    };
    let plain = gen("off", "plain.png");
    assert_eq!(gen(c, "first.png"), plain, "saving the optimized graphs changed the images");
    let sessions = cache.join("sessions");
    let entries = |ext: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&sessions)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(ext.as_ref()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(entries("ort").len(), 3, "one entry per model of the set (VAE encoder, decoder, U-Net)");
    assert_eq!(entries("sha256").len(), 3);
    assert_eq!(gen(c, "cached.png"), plain, "the cached optimized graphs changed the images");
    // The entries the first run wrote are vouched for by the load cache: mapped, not read and hashed.
    let out = tmp.path().join("mapped.png");
    let (ok, _, err) = run(&[
        "-vv",
        "--digest-cache",
        c,
        "generate",
        "--models",
        d,
        "--count",
        "2",
        "--steps",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok && err.matches("from the session cache (mapped)").count() == 3, "{err}");
    // Cached graphs are used in place (ONNX Runtime refers to the entry's bytes for the session's lifetime):
    // no read of freed or foreign memory, nothing lost. In a cache folder of its own, filled by a first run
    // under valgrind: valgrind's CPU has no AVX-512, so on a host that has it the entries made above are
    // keyed to another CPU (their NCHWc blocks would not fit valgrind's kernels) and not used there.
    if crate::capi::valgrind_wanted() {
        let out = tmp.path().join("valgrind.png");
        let vg_cache = tmp.path().join("vg-cache");
        let head =
            ["-vv", "--digest-cache", vg_cache.to_str().unwrap(), "--provider", "cpu", "generate", "--models", d];
        let tail = "--count 1 --steps 2 --quiet -o".split(' ');
        let args: Vec<&std::ffi::OsStr> =
            head.into_iter().chain(tail).map(std::ffi::OsStr::new).chain([out.as_os_str()]).collect();
        crate::capi::assert_valgrind_clean(&mirage_bin(), &args);
        let text = crate::capi::assert_valgrind_clean(&mirage_bin(), &args);
        assert_eq!(text.matches("from the session cache (mapped)").count(), 3, "{text}");
        // The same with the teardown the CLI skips by default (sessions dropped before their mapped entries,
        // the runtime made before the sets instead of beside them).
        let text = crate::capi::assert_valgrind_clean_env(&mirage_bin(), &args, &[("MIRAGE_CLI_TEARDOWN", "1")]);
        assert_eq!(text.matches("from the session cache (mapped)").count(), 3, "{text}");
    }
    // Damage every entry: each is refused by its digest, optimized again and rewritten.
    for e in entries("ort") {
        let mut b = std::fs::read(&e).unwrap();
        let at = b.len() / 3;
        b[at] ^= 0x55;
        std::fs::write(&e, b).unwrap();
    }
    assert_eq!(gen(c, "damaged.png"), plain);
    for e in entries("ort") {
        let digest = std::fs::read_to_string(e.with_extension("sha256")).unwrap();
        assert_eq!(mirage::manifest::sha256_hex(&std::fs::read(&e).unwrap()), digest.trim(), "{e:?} not rewritten");
    }
    // A cache folder that cannot be created (a file stands in its way).
    let blocked = tmp.path().join("blocked");
    std::fs::write(&blocked, b"not a folder").unwrap();
    assert_eq!(gen(blocked.to_str().unwrap(), "blocked.png"), plain);
}

/// Runs mirage with MIRAGE_TEST_CHANGE_AFTER_LOAD set to `change` (when given: the test hook that rewrites a
/// file at the moment a load relied on it staying unchanged; the tests' build has it). Returns whether it
/// succeeded, its stderr, and the PNG it wrote (empty when none).
fn run_changing(args: &[&str], change: Option<&str>, out: &std::path::Path) -> (bool, String, Vec<u8>) {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(mirage_bin());
    cmd.args(args).arg("-o").arg(out);
    if let Some(c) = change {
        cmd.env("MIRAGE_TEST_CHANGE_AFTER_LOAD", c);
    }
    let o = cmd.output().expect("running mirage");
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into(), std::fs::read(out).unwrap_or_default())
}

/// A model file, or a cached optimized graph, that changes while mirage loads it after the load cache vouched
/// for it (another process rewriting it: the test hook does it at the moment the load relied on it): the same
/// bytes give the same image after a warning and a second read (or a new optimization); other bytes are refused
/// with the digest's message, and nothing crashes.
#[test]
fn a_model_file_changed_while_it_loads_is_read_again() {
    let (tmp, dir) = tiny_diffusion_set();
    let cache = tmp.path().join("cache");
    let args = [
        "-vv",
        "--digest-cache",
        cache.to_str().unwrap(),
        "--provider",
        "cpu",
        "generate",
        "--models",
        dir.to_str().unwrap(),
        "--count",
        "2",
        "--steps",
        "3",
    ];
    let out = tmp.path().join("out.png");
    let (ok, err, plain) = run_changing(&args, None, &out);
    assert!(ok, "{err}");
    let (ok, err, png) = run_changing(&args, None, &out);
    assert!(ok && png == plain, "{err}");
    assert!(err.matches("the file vouched for by the load cache").count() == 3, "{err}");
    assert!(err.matches("from the session cache (mapped)").count() == 3, "{err}");
    // The U-Net's file rewritten with its own bytes while its session was made from it.
    let (ok, err, png) = run_changing(&args, Some("unet.onnx"), &out);
    assert!(ok && png == plain, "{err}");
    assert!(err.contains("unet.onnx\": changed while it was loaded; reading it again"), "{err}");
    // Every cached graph rewritten in place while its session used it: optimized again.
    let (ok, err, png) = run_changing(&args, Some(".ort"), &out);
    assert!(ok && png == plain, "{err}");
    assert_eq!(
        err.matches("the session cache's entry changed while it was loaded; optimizing again").count(),
        3,
        "{err}"
    );
    // Other bytes (the file vouched for again first): refused by its sha256, no image.
    let (ok, err, _) = run_changing(&args, None, &out);
    assert!(ok, "{err}");
    let original = std::fs::read(dir.join("unet.onnx")).unwrap();
    let (ok, err, png) = run_changing(&args, Some("unet.onnx:corrupt"), &out);
    assert!(!ok && png.is_empty(), "{err}");
    assert!(err.contains("changed while it was loaded") && err.contains("sha256 mismatch"), "{err}");
    std::fs::write(dir.join("unet.onnx"), original).unwrap();
    let (ok, err, png) = run_changing(&args, None, &out);
    assert!(ok && png == plain, "{err}");
}

/// The same for the text encoder's model (a copy: the test changes it).
#[test]
fn a_text_encoder_changed_while_it_loads_is_read_again() {
    let (tmp, dir) = tiny_text_set_own_encoder();
    let cache = tmp.path().join("cache");
    let args = [
        "-vv",
        "--digest-cache",
        cache.to_str().unwrap(),
        "--no-prompt-cache",
        "--provider",
        "cpu",
        "generate",
        "--models",
        dir.to_str().unwrap(),
        "--prompt",
        "a red apple",
        "--count",
        "1",
        "--steps",
        "2",
    ];
    let out = tmp.path().join("out.png");
    let (ok, err, plain) = run_changing(&args, None, &out);
    assert!(ok, "{err}");
    let (ok, err, png) = run_changing(&args, None, &out);
    assert!(ok && png == plain && err.contains("vouched for by the load cache: read by ONNX Runtime"), "{err}");
    let (ok, err, png) = run_changing(&args, Some("text_encoder.onnx"), &out);
    assert!(ok && png == plain, "{err}");
    assert!(err.contains("text_encoder.onnx\": changed while it was loaded; reading it again"), "{err}");
    let (ok, err, _) = run_changing(&args, None, &out);
    assert!(ok, "{err}");
    let (ok, err, png) = run_changing(&args, Some("text_encoder.onnx:corrupt"), &out);
    assert!(!ok && png.is_empty(), "{err}");
    assert!(err.contains("changed while it was loaded") && err.contains("sha256 mismatch"), "{err}");
}
