//! Generation-quality evaluation (feature `train`): the Fréchet distance and KID against closed forms and
//! known cases, and a tiny end-to-end `classifier train` + `eval fid` on the random diffusion fixture.
#![cfg(feature = "train")]

use mirage::train::fid::{frechet_distance, kid, Gaussian};
use tch::{Device, Kind, Tensor};

use crate::util::mirage_train;

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

#[test]
fn frechet_distance_of_a_gaussian_with_itself_is_zero() {
    tch::manual_seed(1);
    let x = Tensor::randn([400, 16], F64) * Tensor::linspace(0.1, 3.0, 16, F64) + 0.5;
    let g = Gaussian::fit(&x).unwrap();
    let d = frechet_distance(&g, &g).unwrap();
    assert!(d.abs() < 1e-8, "FD(g, g) = {d}");
}

#[test]
fn frechet_distance_matches_the_closed_form_for_diagonal_gaussians() {
    // FD = |m1 - m2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) for diagonal covariances s1, s2.
    let (m1, m2): ([f64; 4], [f64; 4]) = ([0.0, 1.0, -2.0, 0.5], [1.0, 1.0, 0.0, -0.5]);
    let (s1, s2): ([f64; 4], [f64; 4]) = ([1.0, 4.0, 0.25, 2.0], [9.0, 1.0, 0.25, 0.5]);
    let expected: f64 = m1.iter().zip(&m2).map(|(a, b)| (a - b) * (a - b)).sum::<f64>()
        + s1.iter().zip(&s2).map(|(a, b)| a + b - 2.0 * (a * b).sqrt()).sum::<f64>();
    let g = |m: &[f64], s: &[f64]| Gaussian { mean: Tensor::from_slice(m), cov: Tensor::from_slice(s).diag(0) };
    let d = frechet_distance(&g(&m1, &s1), &g(&m2, &s2)).unwrap();
    assert!((d - expected).abs() < 1e-9, "FD {d}, closed form {expected}");

    // The distance does not depend on the basis: rotate both Gaussians by one orthogonal matrix.
    tch::manual_seed(2);
    let (q, _) = Tensor::linalg_qr(&Tensor::randn([4, 4], F64), "reduced");
    let rot = |m: &[f64], s: &[f64]| Gaussian {
        mean: q.matmul(&Tensor::from_slice(m)),
        cov: q.matmul(&Tensor::from_slice(s).diag(0)).matmul(&q.tr()),
    };
    let d = frechet_distance(&rot(&m1, &s1), &rot(&m2, &s2)).unwrap();
    assert!((d - expected).abs() < 1e-8, "rotated FD {d}, closed form {expected}");
}

#[test]
fn kid_is_near_zero_for_one_distribution_and_positive_for_shifted_sets() {
    tch::manual_seed(3);
    let x = Tensor::randn([600, 32], F64).relu();
    let y = Tensor::randn([600, 32], F64).relu();
    let same = kid(&x, &x, 20, 200, 7).unwrap();
    let twins = kid(&x, &y, 20, 200, 7).unwrap();
    let shifted = kid(&x, &(&y + 0.3), 20, 200, 7).unwrap();
    eprintln!("KID same {same:?}, same distribution {twins:?}, shifted {shifted:?}");
    // Unbiased: around 0, possibly slightly negative.
    assert!(same.mean.abs() < 0.02 && twins.mean.abs() < 0.01, "{same:?} {twins:?}");
    assert!(shifted.mean > 0.1 && shifted.mean > 10.0 * twins.mean.abs(), "{shifted:?} vs {twins:?}");
    assert_eq!((shifted.subsets, shifted.subset_size), (20, 200));
}

#[test]
fn tiny_classifier_and_fid_on_the_random_fixture() {
    crate::util::fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let clf = tmp.path().join("classifier");
    let clf_s = clf.to_str().unwrap();
    mirage_train(&["classifier", "train", "--out", clf_s, "--limit", "512", "--epochs", "1", "--threads", "1"]);
    for f in ["classifier.safetensors", "classifier.json", "metrics.jsonl"] {
        assert!(clf.join(f).is_file(), "{f} missing after training");
    }
    let state = crate::util::read_json(&clf.join("classifier.json"));
    let acc = state["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{state}");
    assert_eq!(state["test_images"], 512);

    let (_fixture, set) = crate::util::tiny_diffusion_set();
    let json = tmp.path().join("fid.json");
    #[rustfmt::skip]
    let args = [
        "eval", "fid", "--classifier", clf_s, "--set", set.to_str().unwrap(), "--count", "16", "--steps", "2",
        "--threads", "1", "--json", json.to_str().unwrap(),
    ];
    mirage_train(&args);
    let r = crate::util::read_json(&json);
    for pair in ["generated_vs_test", "train_vs_test"] {
        let fid = r[pair]["fid"].as_f64().unwrap();
        let kid = r[pair]["kid"]["mean"].as_f64().unwrap();
        assert!(fid.is_finite() && fid >= 0.0 && kid.is_finite(), "{pair}: {r}");
        assert_eq!(r[pair]["kid"]["subset_size"], 16);
    }
    // Random weights make blobs, not clothes: they should be further from the test set than real images.
    assert!(r["generated_vs_test"]["fid"].as_f64() > r["train_vs_test"]["fid"].as_f64(), "{r}");
    let fractions: Vec<f64> = r["class_fractions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(fractions.len(), 10);
    assert!((fractions.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{r}");
    assert_eq!((r["count"].as_u64(), r["steps"].as_u64()), (Some(16), Some(2)));
    assert!(r["generate_s"].as_f64().unwrap() > 0.0);
}
