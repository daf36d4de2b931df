//! u8 elementwise add of two tensors with different quantizations (residual connections).
//!
//! This file owns the public API, the validation (every error is raised before anything
//! is written), the dispatch on [`isa::active`] and the portable (generic) rung, whose
//! per-element formula [`AddConsts::one`] the SIMD rungs also use for their tails.
//! [`crate::reference::eltwise`] defines the results; every rung matches it bit for bit.
//!
//! Arithmetic: `x = (a − za) as f32 · (sa / so)`, `y = (b − zb) as f32 · (sb / so)`,
//! `v = x + y` (two multiplies and an add, never fused; each ratio computed once), then
//! `q = clamp(round_half_even(v) + zo, qmin, qmax)`.

use crate::affine::{check_clamp, Affine};
use crate::error::KernelError;
use crate::isa::{self, Rung};
use crate::pool::{check_rung, check_scale_ratio};

/// Quantization of an add: both inputs, the output, and the output clamp `[qmin, qmax]`
/// (a fused ReLU when `qmin` is the output zero point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddQuant {
    pub a_q: Affine,
    pub b_q: Affine,
    pub out_q: Affine,
    pub qmin: u8,
    pub qmax: u8,
}

/// Bound applied before the f32 → i32 conversion, as in `epilogue`: any `|v| ≥ 2^30`
/// ends at qmin or qmax after adding a zero point in 0..=255, exactly as a saturating
/// conversion does, and below it the plain (vectorisable) conversion is exact.
pub(crate) const LIMIT: f32 = (1u32 << 30) as f32;

/// `out = a + b` elementwise in real values, requantized to `q.out_q` and clamped.
/// `a`, `b` and `out` have the same length (any layout: the op is elementwise).
/// Returns the name of the implementation that ran.
pub fn add(a: &[u8], b: &[u8], q: &AddQuant, out: &mut [u8]) -> Result<&'static str, KernelError> {
    add_on(isa::active(), a, b, q, out)
}

/// [`add`] on a given rung (tests and benchmarks); an error if the CPU lacks it.
pub fn add_on(
    rung: Rung,
    a: &[u8],
    b: &[u8],
    q: &AddQuant,
    out: &mut [u8],
) -> Result<&'static str, KernelError> {
    let k = check_add(a, b, q, out)?;
    check_rung(rung)?;
    Ok(match rung.borrowed() {
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 | Rung::Avx512Vnni if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { crate::x86_64::qops::add_avx2(a, b, &k, out) };
            "avx2_add_u8"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            // SAFETY: `check_rung` confirmed the rung, hence NEON, runs on this CPU.
            unsafe { crate::aarch64::qops::add_neon(a, b, &k, out) };
            "neon_add_u8"
        }
        _ => {
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = k.one(a, b);
            }
            "generic_add_u8"
        }
    })
}

/// Checks operands and parameters; returns the per-call constants.
pub(crate) fn check_add(
    a: &[u8],
    b: &[u8],
    q: &AddQuant,
    out: &[u8],
) -> Result<AddConsts, KernelError> {
    if b.len() != a.len() {
        return Err(KernelError::Shape(format!(
            "add: input b has {} values but input a has {}",
            b.len(),
            a.len()
        )));
    }
    if out.len() != a.len() {
        return Err(KernelError::Shape(format!(
            "add output: the buffer has {} values, the inputs have {}",
            out.len(),
            a.len()
        )));
    }
    q.a_q.check("add input a quantization")?;
    q.b_q.check("add input b quantization")?;
    q.out_q.check("add output quantization")?;
    check_clamp(q.qmin, q.qmax)?;
    check_scale_ratio("add", "input a", q.a_q.scale, q.out_q.scale)?;
    check_scale_ratio("add", "input b", q.b_q.scale, q.out_q.scale)?;
    Ok(AddConsts {
        za: q.a_q.zero_point,
        zb: q.b_q.zero_point,
        ra: q.a_q.scale / q.out_q.scale,
        rb: q.b_q.scale / q.out_q.scale,
        zo: q.out_q.zero_point,
        qmin: i32::from(q.qmin),
        qmax: i32::from(q.qmax),
    })
}

/// The constants of one add call: zero points, the two scale ratios (each computed once,
/// in f32) and the clamp. Validation keeps `ra, rb ≤ 2^64`, so `v` is always finite.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddConsts {
    pub za: i32,
    pub zb: i32,
    pub ra: f32,
    pub rb: f32,
    pub zo: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl AddConsts {
    /// One element, as the contract states it.
    #[inline(always)]
    pub(crate) fn one(&self, a: u8, b: u8) -> u8 {
        let x = (i32::from(a) - self.za) as f32 * self.ra;
        let y = (i32::from(b) - self.zb) as f32 * self.rb;
        let v = x + y;
        let t = v.clamp(-LIMIT, LIMIT).round_ties_even() as i32;
        (t + self.zo).clamp(self.qmin, self.qmax) as u8
    }
}
