//! Seeded Gaussian noise. ChaCha8 with our own Box-Muller transform, so the numbers depend only on the
//! seed (not on a distribution crate's version): the same seed gives the same latents bit for bit.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded source of standard-normal f32 values.
pub struct Noise {
    rng: ChaCha8Rng,
    spare: Option<f32>,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise { rng: ChaCha8Rng::seed_from_u64(seed), spare: None }
    }

    /// A uniform value in the open interval (0, 1).
    fn uniform(&mut self) -> f64 {
        // 53 random bits, shifted by half a step so that 0 never occurs (ln(0) below).
        ((self.rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// One standard-normal sample.
    pub fn normal(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }

    /// `n` standard-normal samples.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// [`Noise::normals`] for buffers whose size a caller chose: the memory is reserved fallibly, so an
    /// allocation the machine cannot make is an error, not an abort of the host.
    pub fn try_normals(&mut self, n: usize) -> crate::Result<Vec<f32>> {
        let mut v = crate::limits::try_vec(n, "noise")?;
        v.extend((0..n).map(|_| self.normal()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bits_and_standard_moments() {
        let a = Noise::new(7).normals(20_000);
        let b = Noise::new(7).normals(20_000);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_ne!(a[..8], Noise::new(8).normals(8)[..]);
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert!(a.iter().all(|x| x.is_finite()));
    }
}
