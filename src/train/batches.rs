//! Which training images each step sees: epochs of seeded permutations, or draws with replacement by
//! weight. Every draw depends on the seed and the epoch or step alone, so that a resumed run sees exactly
//! what an uninterrupted one would have.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a run draws the images of each step.
#[derive(Clone, Debug)]
pub enum Batches {
    /// Epochs over the images, each a seeded permutation ([`epoch_order`] with this salt, which gives each
    /// trainer its own orders) cut into batches; the last partial batch is dropped, so that every step sees
    /// a full batch (the same loss scale).
    Epochs { salt: u64 },
    /// With replacement by these cumulative weights ([`weighted_batch`]), e.g. to balance groups of images.
    Weighted(Vec<f64>),
}

/// Draws the batches of a run of `images` images, `batch_size` at a time.
pub struct BatchDrawer {
    batches: Batches,
    images: usize,
    batch_size: usize,
    seed: u64,
    /// The epoch whose order is cached, and its order.
    order: (u64, Vec<i64>),
}

impl BatchDrawer {
    /// `batch_size` must be in 1..=`images`.
    pub fn new(batches: Batches, images: usize, batch_size: usize, seed: u64) -> BatchDrawer {
        BatchDrawer { batches, images, batch_size, seed, order: (u64::MAX, Vec::new()) }
    }

    /// Full batches in one pass over the images.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.images / self.batch_size) as u64
    }

    /// The image indices of step `step` (0-based).
    pub fn batch(&mut self, step: u64) -> Vec<i64> {
        let bs = self.batch_size;
        match &self.batches {
            Batches::Weighted(cum) => weighted_batch(cum, bs, self.seed, step),
            Batches::Epochs { salt } => {
                let epoch = step / self.steps_per_epoch();
                if self.order.0 != epoch {
                    self.order = (epoch, epoch_order(self.images, self.seed, epoch, *salt));
                }
                let b = (step % self.steps_per_epoch()) as usize;
                self.order.1[b * bs..(b + 1) * bs].to_vec()
            }
        }
    }
}

/// A deterministic permutation of 0..n: our own Fisher-Yates over ChaCha8, so that the order depends on
/// nothing but the seed.
pub fn permutation(n: usize, seed: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        // Modulo bias is below 1e-13 for n <= 60 000: irrelevant for a data order.
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The permutation of 0..n for epoch `epoch` of a run seeded `seed`; `salt` makes each trainer's orders
/// its own.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, salt: u64) -> Vec<i64> {
    permutation(n, seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

/// A uniform draw in [0, 1) from the top 53 bits of the next u64.
pub fn uniform_0_1(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// `bs` image indices drawn with replacement by the cumulative weights `cum` (ending at 1), from a stream
/// seeded by (seed, step).
pub fn weighted_batch(cum: &[f64], bs: usize, seed: u64, step: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x6261_6c61);
    (0..bs)
        .map(|_| {
            let u = uniform_0_1(&mut rng);
            cum.partition_point(|&c| c <= u).min(cum.len() - 1) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(100, 1, 0, 7);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<i64>>());
        assert_eq!(a, epoch_order(100, 1, 0, 7));
        assert_ne!(a, epoch_order(100, 1, 1, 7));
        assert_ne!(a, epoch_order(100, 1, 0, 8));
        assert_ne!(permutation(50, 3), permutation(50, 4));
    }

    #[test]
    fn epoch_batches_cover_each_epoch_once() {
        let mut d = BatchDrawer::new(Batches::Epochs { salt: 0 }, 10, 3, 5);
        assert_eq!(d.steps_per_epoch(), 3);
        let mut seen: Vec<i64> = (0..3).flat_map(|s| d.batch(s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "one image of 10 is left over, none drawn twice");
        assert_eq!(d.batch(3), epoch_order(10, 5, 1, 0)[..3]);
    }

    #[test]
    fn weighted_batches_are_seeded_by_step() {
        let cum = [0.5, 1.0];
        assert_eq!(weighted_batch(&cum, 64, 7, 3), weighted_batch(&cum, 64, 7, 3));
        assert_ne!(weighted_batch(&cum, 64, 7, 3), weighted_batch(&cum, 64, 7, 4));
        let mut d = BatchDrawer::new(Batches::Weighted(cum.to_vec()), 2, 2, 7);
        assert_eq!(d.batch(3), weighted_batch(&cum, 2, 7, 3));
    }
}
