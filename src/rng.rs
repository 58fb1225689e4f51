//! Seeded Gaussian noise. ChaCha8 with our own Box-Muller transform, so the numbers depend only on the
//! seed (not on a distribution crate's version): the same seed gives the same latents bit for bit.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A source of standard-normal f32 values: seeded, or the values a caller gave (to reproduce another
/// implementation's stochastic run draw for draw).
pub struct Noise {
    source: Source,
    spare: Option<f32>,
}

enum Source {
    Seeded(Box<ChaCha8Rng>),
    /// The caller's values, in order; `pos` is the next one. Drawing past the end gives NaN and sets
    /// `short` (see [`Noise::ran_short`]).
    Given {
        values: std::sync::Arc<[f32]>,
        pos: usize,
        short: bool,
    },
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise { source: Source::Seeded(Box::new(ChaCha8Rng::seed_from_u64(seed))), spare: None }
    }

    /// The values `values`, in order, instead of random draws.
    pub fn given(values: std::sync::Arc<[f32]>) -> Self {
        Noise { source: Source::Given { values, pos: 0, short: false }, spare: None }
    }

    /// Whether more values were drawn than were given (those draws were NaN).
    pub fn ran_short(&self) -> bool {
        matches!(self.source, Source::Given { short: true, .. })
    }

    /// A uniform value in the open interval (0, 1).
    fn uniform(rng: &mut ChaCha8Rng) -> f64 {
        // 53 random bits, shifted by half a step so that 0 never occurs (ln(0) below).
        ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// One standard-normal sample.
    pub fn normal(&mut self) -> f32 {
        let rng = match &mut self.source {
            Source::Seeded(rng) => rng,
            Source::Given { values, pos, short } => {
                let v = values.get(*pos).copied().unwrap_or_else(|| {
                    *short = true;
                    f32::NAN
                });
                *pos += 1;
                return v;
            }
        };
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (Self::uniform(rng), Self::uniform(rng));
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

    #[test]
    fn given_values_come_back_in_order_then_run_short() {
        let mut n = Noise::given(vec![1.0, -2.0, 3.5].into());
        assert_eq!(n.normals(3), [1.0, -2.0, 3.5]);
        assert!(!n.ran_short());
        assert!(n.normal().is_nan());
        assert!(n.ran_short());
    }
}
