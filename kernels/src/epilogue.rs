//! Output stages shared by every kernel family: i32 accumulators to requantized u8 or to
//! dequantized f32, written as plain scalar Rust that follows [`crate::reference`]'s
//! contract operation for operation.
//!
//! The functions are `#[inline(always)]` so that each ISA's `#[target_feature]` entry
//! point compiles them with its own vector instructions. Vectorisation cannot change a
//! result: Rust never fuses a multiply and an add, and min/max, round-half-even and
//! in-range conversions are exact.

/// Bound applied before the f32 → i32 conversion: any `|t| ≥ 2^30` ends at qmin or qmax
/// after adding a zero point in 0..=255, exactly as the reference's saturating conversion
/// does, and below it the plain (vectorisable) conversion is exact.
const LIMIT: f32 = (1u32 << 30) as f32;

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
    let t = t.clamp(-LIMIT, LIMIT).round_ties_even() as i32;
    (t + out_zero_point).clamp(qmin, qmax) as u8
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
