//! The ONNX exporter without torch: a random-weight VAE set, written at test time, loads in ONNX Runtime
//! and runs with the shapes and value ranges its manifest promises.

use mirage::export::vae::{random_weights, write_random_set, VaeArch};
use mirage::model_set::ModelSet;
use mirage::rng::Noise;

/// `n` images of `len` values in [-1, 1].
fn images(n: usize, len: usize, seed: u64) -> Vec<f32> {
    Noise::new(seed).normals(n * len).into_iter().map(|v| (v * 0.6).clamp(-1.0, 1.0)).collect()
}

#[test]
fn random_vae_set_runs_on_onnx_runtime() {
    for arch in [VaeArch::tiny(), VaeArch::fashion()] {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_random_set(dir.path(), &arch, 7).unwrap();
        assert_eq!(manifest.vae.as_ref().unwrap().latent_shape, [arch.latent_channels as u32, 8, 8]);
        let set = ModelSet::open(dir.path()).unwrap();
        let img_len = (arch.channels * arch.height * arch.width) as usize;
        assert_eq!(set.image_len(), img_len);
        let lat_len = set.latent_len().unwrap();
        assert_eq!(lat_len, (arch.latent_channels * 64) as usize);

        let n = 3;
        let x = images(n, img_len, 1);
        let (mean, logvar) = set.encode(&x, n).unwrap();
        assert_eq!((mean.len(), logvar.len()), (n * lat_len, n * lat_len));
        assert!(mean.iter().chain(&logvar).all(|v| v.is_finite()));
        assert!(logvar.iter().all(|&v| (arch.logvar_min..=arch.logvar_max).contains(&v)));

        let y = set.decode(&mean, n).unwrap();
        assert_eq!(y.len(), n * img_len);
        assert!(y.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)), "decoder output leaves tanh's range");

        // The batch dimension is dynamic and images do not influence each other.
        let (one, _) = set.encode(&x[img_len..2 * img_len], 1).unwrap();
        let d = one.iter().zip(&mean[lat_len..2 * lat_len]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "batch of 1 vs batch of 3 differ by {d}");
    }
}

#[test]
fn fixture_is_deterministic() {
    let a = random_weights(&VaeArch::tiny(), 5);
    assert_eq!(a, random_weights(&VaeArch::tiny(), 5));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m1 = write_random_set(d1.path(), &VaeArch::tiny(), 5).unwrap();
    let m2 = write_random_set(d2.path(), &VaeArch::tiny(), 5).unwrap();
    assert_eq!(m1.vae.unwrap().decoder.sha256, m2.vae.unwrap().decoder.sha256);
}
