//! fp32 row math for the glue between a transformer's matrix products: `exp`, `erf`,
//! softmax rows, layer-norm rows, the exact GELU, and a finiteness scan.
//!
//! These run in the fp32 executor and in the fp32 regions of every int8 model, so they
//! set the floor under both: in MiniLM at 128 tokens, libm's scalar `expf` in the
//! attention softmax and sequential f32 sums cost more than the int8 GEMMs themselves.
//!
//! Each operation is written once, in portable Rust whose reductions are split into
//! [`LANES`] fixed partial sums combined in a fixed order, and whose transcendental
//! functions are branch-free polynomials. The compiler vectorises that code at whatever
//! width the target offers, and because no lane's arithmetic depends on the width (and
//! Rust never contracts `a * b + c` into an FMA), the AVX-512, AVX2 and portable builds
//! of the same function give the same bits. The dispatch picks the widest build allowed
//! by [`isa::active`] (so the `QBENCH_KERNEL` knob caps these too); the tests compare
//! every build with the portable one bit for bit.

use crate::isa::{self, Rung};

/// Partial sums per reduction: one zmm of f32. Fixed, so results do not depend on the
/// vector width the code is compiled for.
pub const LANES: usize = 16;

/// Which compiled build of the row functions runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// Compiled for the architecture's baseline (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 with AVX2 and FMA enabled (the arithmetic stays unfused).
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL enabled.
    Avx512,
}

impl Width {
    /// The widest build the active kernel rung allows.
    pub fn active() -> Width {
        match isa::active().borrowed() {
            Rung::Avx512Vnni => Width::Avx512,
            Rung::Avx2 => Width::Avx2,
            _ => Width::Portable,
        }
    }

    /// Whether this CPU runs the build (std caches the feature detection, so this is a
    /// few loads on every dispatch, no allocation).
    pub fn is_available(self) -> bool {
        match self {
            Width::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Width::Avx2 | Width::Avx512 => false,
        }
    }

    /// Every build this CPU can run (tests compare them).
    pub fn available() -> Vec<Width> {
        [Width::Portable, Width::Avx2, Width::Avx512]
            .into_iter()
            .filter(|w| w.is_available())
            .collect()
    }
}

/// Defines `pub fn $name(args) -> ret` dispatching on [`Width::active`], a `$name_on`
/// taking the width explicitly (tests), and the x86-64 builds of the `$body` function.
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident, $name_on:ident, $body:ident ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            $name_on(Width::active(), $($arg),*)
        }

        /// The same on a given build; the portable one when the CPU lacks `width`.
        pub fn $name_on(width: Width, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if width.is_available() {
                    match width {
                        // SAFETY: the CPU has the features this build enables (checked
                        // just above).
                        Width::Avx512 => return unsafe { avx512($($arg),*) },
                        // SAFETY: as above.
                        Width::Avx2 => return unsafe { avx2($($arg),*) },
                        Width::Portable => {}
                    }
                }
            }
            let _ = width;
            $body($($arg),*)
        }
    };
}

/// `e^x` in f32, branch-free: Cody–Waite reduction `x = n·ln2 + r` with `|r| ≤ ln2/2`,
/// Cephes' degree-6 polynomial for `e^r` (within 2 ulp of `exp` over the normal range;
/// the tests hold it to that against f64), and `2^n` built from exponent bits in two
/// halves so that `n = 128` (results up to `f32::MAX`) needs no special case. Results
/// below the smallest normal (x < −87.34) are 0, `+inf` overflows to `inf`, NaN stays
/// NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| ≤ 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer (half to even) in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55; // ln(2^-126)
    const HI: f32 = 88.722_84; // just above ln(f32::MAX)
                               // Comparisons with NaN are false, so NaN passes both clamps unchanged.
    let xc = if x < LO { LO } else { x };
    let xc = if xc > HI { HI } else { xc };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI;
    let r = r - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * (r * r) + r + 1.0;
    // n ∈ [−126, 128] as an integer, from t's low mantissa bits; 2^n = 2^h · 2^(n−h),
    // both factors normal, and multiplying by a power of two is exact until the last
    // step, which rounds once (to inf above f32::MAX).
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let h = ni >> 1;
    let s1 = f32::from_bits(((h + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - h + 127) as u32) << 23);
    let y = e * s1 * s2;
    if x < LO {
        0.0
    } else {
        y
    }
}

/// erf(x) in f32 by a rational approximation, `x·P(x²)/Q(x²)` on x clamped to [−4, 4]
/// (beyond, erf is ±1 in f32). Coefficients of Eigen's and XLA's f32 erf: within 7e-8 of
/// erf evaluated in f64, 4.5e-7 in this f32 arithmetic (tested against an f64 erf). No
/// branches and no calls, so a loop over it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Σ x over [`LANES`] partial sums, combined pairwise in a fixed order.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    fold_lanes(acc)
}

#[inline(always)]
fn fold_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

/// The largest value (NaN ignored, as `f32::max` does; `-inf` when empty).
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = a.max(v);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn softmax_rows_body(x: &[f32], y: &mut [f32], n: usize) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let m = lane_max(xr);
        for (d, &v) in yr.iter_mut().zip(xr) {
            *d = exp(v - m);
        }
        let sum = lane_sum(yr, |v| v);
        for d in yr.iter_mut() {
            *d /= sum;
        }
    }
}

dispatched!(
    /// Softmax of each row of `n` values: `exp(x − max) / Σ`, the sum over [`LANES`]
    /// partial sums. A row containing NaN, or only `-inf`, gives NaN, as the textbook
    /// formula does. `x` and `y` have the same length, a multiple of `n` (`n > 0`).
    softmax_rows, softmax_rows_on, softmax_rows_body(x: &[f32], y: &mut [f32], n: usize) -> ()
);

#[inline(always)]
fn layer_norm_rows_body(y: &mut [f32], g: &[f32], b: &[f32], epsilon: f32) {
    let row = g.len();
    let inv_n = 1.0 / row as f32;
    for r in y.chunks_exact_mut(row) {
        // Two passes (mean, then the squared deviations): the one-pass Σx² − (Σx)² form
        // cancels catastrophically when the mean is large next to the spread.
        let mean = lane_sum(r, |v| v) * inv_n;
        let var = lane_sum(r, |v| (v - mean) * (v - mean)) * inv_n;
        let inv_std = 1.0 / (var + epsilon).sqrt();
        for ((v, &gi), &bi) in r.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv_std * gi + bi;
        }
    }
}

dispatched!(
    /// Layer normalisation in place over rows of `g.len()` values:
    /// `(x − mean) / √(var + ε) · g + b`, with the population variance. `b` has
    /// `g.len()` values; `y`'s length is a multiple of it (`g` non-empty).
    layer_norm_rows, layer_norm_rows_on, layer_norm_rows_body(y: &mut [f32], g: &[f32], b: &[f32], epsilon: f32) -> ()
);

#[inline(always)]
fn gelu_erf_body(v: &mut [f32]) {
    for x in v {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

dispatched!(
    /// GELU, exact form (BERT's), in place: `x/2 · (1 + erf(x/√2))`.
    gelu_erf, gelu_erf_on, gelu_erf_body(v: &mut [f32]) -> ()
);

#[inline(always)]
fn all_finite_body(x: &[f32]) -> bool {
    // |x| as bits is at most f32::MAX's for every finite value; inf and NaN are above.
    // A max over integer lanes has no early exit, so it vectorises.
    const MAX_FINITE: u32 = 0x7f7f_ffff;
    let mut acc = [0u32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = (*a).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = (*a).max(v.to_bits() & 0x7fff_ffff);
    }
    acc.into_iter().max().unwrap_or(0) <= MAX_FINITE
}

dispatched!(
    /// Whether every value is finite (no NaN, no ±inf).
    all_finite, all_finite_on, all_finite_body(x: &[f32]) -> bool
);
