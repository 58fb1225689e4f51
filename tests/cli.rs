//! The `mirage` command line on the tiny fixture set (and on real Fashion-MNIST test images when installed).

use std::process::Command;

use crate::util::{mirage_bin, tiny_set};

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
    let g = mirage::image::Image::load(&out).unwrap();
    // 8 originals + 8 reconstructions + 8 samples, 8 columns -> 3 rows.
    assert_eq!((g.width, g.height), (8 * 30 + 2, 3 * 30 + 2));
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
