//! The seeded random numbers of the workspace: SplitMix64 (Steele, Lea, Flood 2014) and
//! what is drawn from it (uniforms, normals, Irwin–Hall "Gaussians", indices,
//! Fisher–Yates permutations). It lives in the lowest crate so that every crate, the
//! kernels' own tests included, draws from this one generator; `qbench_models::rng`
//! re-exports it.
//!
//! Written here rather than borrowed from a crate so that a seed gives the same stream on
//! every machine and every future version: trained weights, dataset shuffles and splits,
//! and report rows record seeds and must replay. Every draw below is a fixed function of
//! the stream; changing one changes published results, so add new draws instead.

/// SplitMix64: a tiny, well-mixed, fully specified generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi) as f32, from the top 24 bits (exactly representable steps):
    /// test data that is the same on every machine.
    pub fn uniform_f32(&mut self, lo: f32, hi: f32) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo) + lo
    }

    /// `n` values of [`Rng::uniform_f32`].
    pub fn uniforms_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform_f32(lo, hi)).collect()
    }

    /// A standard normal sample (Box–Muller, the cosine branch).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// `n` samples of N(0, std²).
    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }

    /// Irwin–Hall: the sum of 12 uniforms − 6 (mean 0, variance 1, range ±6). Additions
    /// only, so other languages reproduce it bit for bit (the PyTorch observer fixtures).
    pub fn irwin_hall(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }

    /// An index in `0..=max` by Lemire's multiply-shift (no division; its bias is at most
    /// max/2^64, far below anything a shuffle could notice).
    pub fn at_most(&mut self, max: usize) -> usize {
        ((u128::from(self.next_u64()) * (max as u128 + 1)) >> 64) as usize
    }

    /// An index in `0..=max` by the remainder: the draw of the Rotten Tomatoes split,
    /// kept because its seeded splits are recorded in reports.
    pub fn at_most_mod(&mut self, max: usize) -> usize {
        (self.next_u64() % (max as u64 + 1)) as usize
    }
}

/// The 64-bit LCG of Knuth's MMIX (multiplier 6364136223846793005), whose top 24 bits
/// give [`Lcg::uniform_f32`]. It draws the seeded random weights of the light models
/// (`qbench_models::onnx::random_weights`) and is kept beside SplitMix64 only because `qbench crosscheck`
/// records those seeds; everything new draws from [`Rng`].
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// The state after one step from `seed`.
    pub fn new(seed: u64) -> Lcg {
        let mut l = Lcg(seed);
        l.step();
        l
    }

    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// Uniform in [-1, 1) from the top 24 bits (an exactly representable f32 in [0, 1)).
    pub fn uniform_f32(&mut self) -> f32 {
        ((self.step() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A deterministic permutation of `0..n`: Fisher–Yates with [`Rng::at_most`].
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.at_most(i);
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs for seed 0 of the reference implementation (Vigna's
    /// splitmix64.c), so a change to the stream cannot pass unnoticed.
    #[test]
    fn stream_matches_the_reference_splitmix64() {
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::new(3);
        for i in 0..1000 {
            assert!((0.0..1.0).contains(&r.uniform()));
            assert!((-1.0..1.0).contains(&r.uniform_f32(-1.0, 1.0)));
            assert!(r.at_most(i) <= i);
            assert!(r.at_most_mod(i) <= i);
            assert!(r.irwin_hall().abs() <= 6.0);
        }
        let mut p = permutation(50, 9);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
