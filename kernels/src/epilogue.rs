//! Output stages shared by every kernel family: i32 accumulators to requantized u8 or to
//! dequantized f32, written as plain scalar Rust that follows [`crate::reference`]'s
//! contract operation for operation.
//!
//! The functions are `#[inline(always)]` so that each ISA's `#[target_feature]` entry
//! point compiles them with its own vector instructions. Vectorisation cannot change a
//! result: Rust never fuses a multiply and an add, and min/max, round-half-even and
//! in-range conversions are exact.

/// Bound applied before rounding: any `|t| ≥ 2^22` ends at qmin or qmax after adding a
/// zero point in 0..=255, exactly as the reference's saturating conversion does.
pub(crate) const LIMIT: f32 = (1u32 << 22) as f32;

/// `1.5 · 2^23`: adding and subtracting it rounds any `|t| ≤ 2^22` to an integer, half to
/// even (the default IEEE rounding of the addition does the work). This keeps the loop a
/// chain of vector adds where `f32::round_ties_even` would be a libm call per element.
pub(crate) const ROUNDER: f32 = 12_582_912.0;

/// `q = clamp(round_half_even((acc + bias) as f32 · m) + z, qmin, qmax)` for one value.
#[inline(always)]
pub(crate) fn requantize(
    acc: i32,
    bias: i32,
    multiplier: f32,
    out_zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> u8 {
    let t = acc.wrapping_add(bias) as f32 * multiplier;
    let rounded = (t.clamp(-LIMIT, LIMIT) + ROUNDER) - ROUNDER;
    // Integers of magnitude < 2^23 are exact in f32, so the rest can stay in f32.
    let q = (rounded + out_zero_point as f32).clamp(qmin as f32, qmax as f32);
    // SAFETY: q is an integer in [qmin, qmax] ⊆ [0, 255] (finite: t was clamped), so the
    // conversion is exact and in range. The checked `as u8` would saturate lane by lane
    // and keep the loop scalar.
    let q: i32 = unsafe { q.to_int_unchecked() };
    q as u8
}

/// Requantizes a row of accumulators with per-column bias and multiplier.
#[inline(always)]
pub(crate) fn requantize_row(
    acc: &[i32],
    bias: &[i32],
    multiplier: &[f32],
    out_zero_point: i32,
    qmin: i32,
    qmax: i32,
    dst: &mut [u8],
) {
    for (((q, &acc), &bias), &m) in dst.iter_mut().zip(acc).zip(bias).zip(multiplier) {
        *q = requantize(acc, bias, m, out_zero_point, qmin, qmax);
    }
}

/// `y = (acc as f32) · (sa · sw[n]) + bias[n]` for a row: a multiply, then an add.
#[inline(always)]
pub(crate) fn dequantize_row(
    acc: &[i32],
    a_scale: f32,
    b_scale: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    for (((y, &acc), &sw), &bias) in dst.iter_mut().zip(acc).zip(b_scale).zip(bias) {
        let s = a_scale * sw;
        let v = acc as f32 * s;
        *y = v + bias;
    }
}
