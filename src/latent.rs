//! Latent-space arithmetic of the VAE: the sampling layer (reparameterisation), draws from the prior and
//! spherical interpolation (walks). Pure functions on flat NCHW buffers; no session is involved.

use crate::error::{Error, Result};
use crate::limits::{call_values, check_batch, check_finite};
use crate::rng::Noise;

/// The VAE's sampling layer: z = mean + exp(logvar / 2) * eps, eps ~ N(0, 1) from `seed`.
/// Bit-reproducible for a given seed on one machine.
pub fn sample_latent(mean: &[f32], logvar: &[f32], seed: u64) -> Result<Vec<f32>> {
    if mean.len() != logvar.len() {
        return Err(Error::invalid(format!("mean has {} values but logvar {}", mean.len(), logvar.len())));
    }
    check_finite(mean, "mean")?;
    check_finite(logvar, "logvar")?;
    let mut noise = Noise::new(seed);
    // logvar is clamped so that exp cannot overflow to inf for a hand-made latent.
    Ok(mean.iter().zip(logvar).map(|(&m, &lv)| m + (0.5 * lv.clamp(-30.0, 20.0)).exp() * noise.normal()).collect())
}

/// `n` latents drawn from the prior N(0, I): the "new images from random points" of the lecture.
pub fn prior_latents(latent_len: usize, n: usize, seed: u64) -> Result<Vec<f32>> {
    // The size first: `n * latent_len` must not overflow before the batch check multiplies it back.
    let len = call_values(n, latent_len, "latents")?;
    check_batch(n, len, latent_len, "latent")?;
    Noise::new(seed).try_normals(len)
}

/// Spherical interpolation between two latents (the path that keeps a Gaussian sample's norm typical),
/// falling back to linear when they are (anti)parallel.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Result<Vec<f32>> {
    if a.len() != b.len() {
        return Err(Error::invalid("slerp: latents of different sizes"));
    }
    if !t.is_finite() {
        return Err(Error::invalid("slerp: t must be finite"));
    }
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = if na > 0.0 && nb > 0.0 { (dot / (na * nb)).clamp(-1.0, 1.0) } else { 1.0 };
    let omega = cos.acos();
    let t = t as f64;
    let (wa, wb) = if omega.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
    };
    Ok(a.iter().zip(b).map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_seeded_and_follows_the_variance() {
        let mean = vec![1.0f32; 4000];
        let logvar = vec![(0.25f32).ln(); 4000]; // std 0.5
        let a = sample_latent(&mean, &logvar, 3).unwrap();
        let b = sample_latent(&mean, &logvar, 3).unwrap();
        assert_eq!(a, b);
        let m = a.iter().sum::<f32>() / a.len() as f32;
        let sd = (a.iter().map(|x| (x - m).powi(2)).sum::<f32>() / a.len() as f32).sqrt();
        assert!((m - 1.0).abs() < 0.05 && (sd - 0.5).abs() < 0.05, "{m} {sd}");
        assert!(sample_latent(&[f32::NAN], &[0.0], 1).is_err());
        assert!(sample_latent(&[0.0; 2], &[0.0], 1).is_err());
    }

    #[test]
    fn a_plausible_latent_at_the_largest_count_is_refused_before_allocating() {
        // [512, 512, 64] passes a manifest's checks; 1024 of them would be 64 GiB: an error, not an abort.
        let e = prior_latents(512 * 512 * 64, 1024, 0).unwrap_err().to_string();
        assert!(e.contains("exceed the limit") && e.contains("at most 16 fit"), "{e}");
        assert_eq!(prior_latents(512 * 512 * 64, 1, 0).unwrap().len(), 512 * 512 * 64);
        assert!(prior_latents(usize::MAX, 2, 0).is_err(), "an overflowing product");
    }

    #[test]
    fn slerp_ends_and_midpoint() {
        let a = vec![1.0, 0.0];
        let b = vec![0.0, 1.0];
        assert_eq!(slerp(&a, &b, 0.0).unwrap(), a);
        let e = slerp(&a, &b, 1.0).unwrap();
        assert!((e[0]).abs() < 1e-6 && (e[1] - 1.0).abs() < 1e-6);
        let m = slerp(&a, &b, 0.5).unwrap();
        assert!((m[0] - m[1]).abs() < 1e-6 && ((m[0] * m[0] + m[1] * m[1]) - 1.0).abs() < 1e-5);
    }
}
