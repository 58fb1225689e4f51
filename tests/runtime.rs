//! The runtime on real ONNX Runtime: loading model sets, VAE encode/sample/decode, and every kind of bad input.

use mirage::image::{from_model, to_model, Image};
use mirage::latent::{prior_latents, sample_latent};
use mirage::model_set::ModelSet;
use mirage::Error;

use crate::util::{read_json, tiny_set};

fn grey_image(seed: u8, w: u32, h: u32) -> Image {
    Image::new(w, h, 1, (0..w * h).map(|i| (i as u8).wrapping_mul(seed)).collect()).unwrap()
}

#[test]
fn encode_sample_decode_round_trip_shapes_and_determinism() {
    let (_tmp, dir) = tiny_set();
    let set = ModelSet::open(&dir).unwrap();
    let spec = set.manifest().image.clone();
    let images: Vec<Image> = (1..=3).map(|s| grey_image(s, spec.width, spec.height)).collect();
    let x = to_model(&images, &spec).unwrap();
    let (mean, logvar) = set.encode(&x, 3).unwrap();
    let len = set.latent_len().unwrap();
    assert_eq!(mean.len(), 3 * len);
    assert_eq!(logvar.len(), 3 * len);
    // Encoding is deterministic, sampling is seeded and bit-reproducible.
    assert_eq!(set.encode(&x, 3).unwrap().0, mean);
    let z1 = sample_latent(&mean, &logvar, 42).unwrap();
    let z2 = sample_latent(&mean, &logvar, 42).unwrap();
    assert!(z1.iter().zip(&z2).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_ne!(z1, sample_latent(&mean, &logvar, 43).unwrap());
    let out = set.decode(&z1, 3).unwrap();
    assert_eq!(out.len(), x.len());
    assert!(
        out.iter().all(|v| v.is_finite() && (-1.0001..=1.0001).contains(v)),
        "decoder output leaves tanh range (ORT's tanh may round 1e-7 past 1)"
    );
    let decoded = from_model(&out, 3, &spec).unwrap();
    assert_eq!(decoded.len(), 3);
    // Batching does not change results: the second image alone decodes to the same pixels.
    let single = set.decode(&z1[len..2 * len], 1).unwrap();
    let max = single.iter().zip(&out[x.len() / 3..2 * x.len() / 3]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(max < 1e-5, "batch-dependent decode: {max}");
}

#[test]
fn wrong_sizes_and_non_finite_values_are_refused() {
    let (_tmp, dir) = tiny_set();
    let set = ModelSet::open(&dir).unwrap();
    let ilen = set.image_len();
    let llen = set.latent_len().unwrap();
    let invalid = |r: mirage::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(set.encode(&vec![0.0; ilen - 1], 1).map(|_| ())));
    assert!(invalid(set.encode(&vec![0.0; ilen], 2).map(|_| ())));
    assert!(invalid(set.encode(&[], 0).map(|_| ())));
    assert!(invalid(set.decode(&vec![0.0; llen + 1], 1).map(|_| ())));
    let mut z = prior_latents(llen, 1, 0).unwrap();
    z[3] = f32::NAN;
    assert!(invalid(set.decode(&z, 1).map(|_| ())));
    z[3] = f32::INFINITY;
    let e = set.decode(&z, 1).unwrap_err().to_string();
    assert!(e.contains("inf"), "{e}");
    let mut x = vec![0.0; ilen];
    x[0] = f32::NAN;
    assert!(invalid(set.encode(&x, 1).map(|_| ())));
    // A host image of the wrong size or channel count is refused before it reaches the model.
    let spec = &set.manifest().image;
    assert!(to_model(&[grey_image(1, spec.width + 1, spec.height)], spec).is_err());
    let rgb = Image::new(spec.width, spec.height, 3, vec![0; (spec.width * spec.height * 3) as usize]).unwrap();
    assert!(to_model(&[rgb], spec).is_err());
    assert!(prior_latents(llen, 0, 0).is_err());
    assert!(prior_latents(llen, 1 << 20, 0).is_err());
}

#[test]
fn missing_or_broken_model_sets_give_clear_errors() {
    let (tmp, dir) = tiny_set();
    let err = |d: &std::path::Path| ModelSet::open(d).err().expect("open should fail").to_string();

    let e = err(&tmp.path().join("does-not-exist"));
    assert!(e.contains("no such directory"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(err(&empty).contains("no manifest.json"));

    let manifest = read_json(&dir.join("manifest.json"));
    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Value, &std::path::Path)| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["vae_encoder.onnx", "vae_decoder.onnx"] {
            std::fs::copy(dir.join(f), d.join(f)).unwrap();
        }
        let mut m = manifest.clone();
        edit(&mut m, &d);
        std::fs::write(d.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
        d
    };

    let d = copy("future", &|m, _| m["format_version"] = 99.into());
    assert!(err(&d).contains("format_version 99"));

    let d = copy("missing-file", &|_, d| std::fs::remove_file(d.join("vae_decoder.onnx")).unwrap());
    assert!(err(&d).contains("vae_decoder.onnx"));

    // Flipped bytes: the sha256 check refuses the file before ONNX Runtime sees it.
    let d = copy("corrupt", &|_, d| {
        let p = d.join("vae_encoder.onnx");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xff;
        std::fs::write(p, b).unwrap();
    });
    assert!(err(&d).contains("sha256 mismatch"));

    // Truncated, with the manifest's hash updated to match: ONNX Runtime itself must refuse it, cleanly.
    let d = copy("truncated", &|m, d| {
        let p = d.join("vae_encoder.onnx");
        let b = std::fs::read(&p).unwrap();
        let cut = &b[..b.len() / 3];
        std::fs::write(&p, cut).unwrap();
        m["vae"]["encoder"]["sha256"] = mirage::manifest::sha256_hex(cut).into();
    });
    let e = err(&d);
    assert!(e.contains("invalid model") && e.contains("vae_encoder"), "{e}");

    // Encoder and decoder swapped (hashes updated): the interface check catches it.
    let d = copy("swapped", &|m, d| {
        let (e, dd) = (d.join("vae_encoder.onnx"), d.join("vae_decoder.onnx"));
        let (eb, db) = (std::fs::read(&e).unwrap(), std::fs::read(&dd).unwrap());
        std::fs::write(&e, &db).unwrap();
        std::fs::write(&dd, &eb).unwrap();
        m["vae"]["encoder"]["sha256"] = mirage::manifest::sha256_hex(&db).into();
        m["vae"]["decoder"]["sha256"] = mirage::manifest::sha256_hex(&eb).into();
    });
    let e = err(&d);
    assert!(e.contains("differ from the manifest"), "{e}");

    let d = copy("bad-json", &|_, _| {});
    std::fs::write(d.join("manifest.json"), "{ not json").unwrap();
    assert!(err(&d).contains("not valid JSON"));
}

#[test]
fn runtime_reports_library_and_providers() {
    let rt = mirage::runtime::global().unwrap();
    assert!(rt.library().exists());
    assert!(rt.available_providers().contains(&"cpu"));
    // Asking again with other options is refused (one ONNX Runtime environment per process).
    let other = mirage::runtime::RuntimeOptions { intra_threads: 3, ..Default::default() };
    if *rt.options() != other {
        assert!(matches!(mirage::runtime::init(&other), Err(Error::RuntimeAlreadyInitialised(_))));
    }
    let (_tmp, dir) = tiny_set();
    let set = ModelSet::open_with(&dir, Some(mirage::runtime::Provider::Cuda)).unwrap();
    // No GPU build here: CUDA falls back to CPU (with a warning), and the context says so.
    assert!(set.providers().iter().all(|(_, p)| *p == mirage::runtime::Provider::Cpu));
}
