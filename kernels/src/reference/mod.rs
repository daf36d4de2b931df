//! The reference: deliberately naive loops that define every result.
//!
//! This module is the arithmetic contract of qbench. Each function is written to be read,
//! not to be fast; tests compare every kernel against it bit for bit. It is never the
//! fast path. The rules it fixes:
//!
//! - **Accumulator.** `acc[m][n] = Σk (a[m][k] − za[m]) · (b[k][n] − zw[n])`, computed
//!   exactly and reduced modulo 2³² (wrapping i32). The value is exact whenever it fits
//!   in i32, which holds for every `k ≤ 33_025` (|a − za|, |b − zw| ≤ 255).
//! - **Requantization to u8.** `t = (acc + bias[n]) as f32` (i32 addition wrapping),
//!   `t = t · M[n]` (one f32 multiply), `q = round_half_even(t)` converted to i32
//!   saturating, `q = q + z_out` saturating, then clamped to `[qmin, qmax]`.
//! - **Dequantization to f32.** `s = sa[m] · sw[n]`, `y = (acc as f32) · s`, `y = y + bias[n]`:
//!   a multiply and an add, never fused into an FMA, so every rung rounds the same way.

pub mod conv;
pub mod eltwise;
pub mod pool;

use crate::error::KernelError;
use crate::gemm::{check_output, Dequant, MatA, MatB, Requant};

/// Zero-point-corrected i32 accumulators, `a.rows × b.cols`, written at stride `ldc`.
pub fn gemm_i32(a: &MatA, b: &MatB, c: &mut [i32], ldc: usize) -> Result<(), KernelError> {
    check_operands(a, b)?;
    check_output(c.len(), a.rows, b.cols, ldc)?;
    for m in 0..a.rows {
        for n in 0..b.cols {
            c[m * ldc + n] = accumulate(a, b, m, n);
        }
    }
    Ok(())
}

/// Dequantized f32 outputs, as the contract above defines them.
pub fn gemm_dequant(
    a: &MatA,
    b: &MatB,
    p: &Dequant,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    check_operands(a, b)?;
    p.validate(a.rows, b.cols)?;
    check_output(c.len(), a.rows, b.cols, ldc)?;
    for m in 0..a.rows {
        for n in 0..b.cols {
            let sw = if p.b_scale.len() == 1 {
                p.b_scale[0]
            } else {
                p.b_scale[n]
            };
            let bias = p.bias.map_or(0.0, |b| b[n]);
            c[m * ldc + n] = dequantize(accumulate(a, b, m, n), p.a_scale.of(m), sw, bias);
        }
    }
    Ok(())
}

/// Requantized u8 outputs, as the contract above defines them.
pub fn gemm_requant(
    a: &MatA,
    b: &MatB,
    p: &Requant,
    c: &mut [u8],
    ldc: usize,
) -> Result<(), KernelError> {
    check_operands(a, b)?;
    p.validate(b.cols)?;
    check_output(c.len(), a.rows, b.cols, ldc)?;
    for m in 0..a.rows {
        for n in 0..b.cols {
            let bias = p.bias.map_or(0, |b| b[n]);
            let multiplier = if p.multiplier.len() == 1 {
                p.multiplier[0]
            } else {
                p.multiplier[n]
            };
            c[m * ldc + n] = requantize(
                accumulate(a, b, m, n),
                bias,
                multiplier,
                p.out_zero_point,
                p.qmin,
                p.qmax,
            );
        }
    }
    Ok(())
}

/// One accumulator, exactly, then reduced modulo 2³².
pub fn accumulate(a: &MatA, b: &MatB, m: usize, n: usize) -> i32 {
    let za = i64::from(a.zero_point_of(m));
    let zw = i64::from(b.zero_point_of(n));
    let mut sum: i64 = 0;
    for k in 0..a.cols {
        let x = i64::from(a.data[m * a.stride + k]) - za;
        let w = i64::from(b.at(k, n)) - zw;
        sum += x * w;
    }
    sum as i32 // truncation is the definition: results are modulo 2^32
}

/// Requantizes one accumulator to u8.
pub fn requantize(
    acc: i32,
    bias: i32,
    multiplier: f32,
    out_zero_point: i32,
    qmin: u8,
    qmax: u8,
) -> u8 {
    let t = acc.wrapping_add(bias) as f32;
    let t = t * multiplier;
    let q = t.round_ties_even() as i32; // `as` saturates out-of-range floats
    let q = q.saturating_add(out_zero_point);
    q.clamp(i32::from(qmin), i32::from(qmax)) as u8
}

/// Dequantizes one accumulator to f32.
pub fn dequantize(acc: i32, a_scale: f32, b_scale: f32, bias: f32) -> f32 {
    let s = a_scale * b_scale;
    let y = acc as f32 * s;
    y + bias
}

fn check_operands(a: &MatA, b: &MatB) -> Result<(), KernelError> {
    a.validate()?;
    b.validate()?;
    if a.cols != b.rows {
        return Err(KernelError::Shape(format!(
            "activations have {} columns but weights have {} rows",
            a.cols, b.rows
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantize_rounds_half_to_even_and_clamps() {
        // 2.5 → 2, 3.5 → 4, -2.5 → -2 (ties to even), then + zero point.
        assert_eq!(requantize(5, 0, 0.5, 10, 0, 255), 12);
        assert_eq!(requantize(7, 0, 0.5, 10, 0, 255), 14);
        assert_eq!(requantize(-5, 0, 0.5, 10, 0, 255), 8);
        assert_eq!(requantize(i32::MAX, 0, 1e30, 0, 3, 200), 200);
        assert_eq!(requantize(i32::MIN, 0, 1e30, 255, 3, 200), 3);
        assert_eq!(requantize(1000, -1000, 1.0, 7, 0, 255), 7);
    }

    #[test]
    fn accumulate_applies_both_zero_points() {
        let a = [10u8, 20, 30, 40];
        let b = [1i8, -2, 3, 4, -5, 6];
        let za = [3i32, 7];
        let mat_a = MatA {
            data: &a,
            rows: 2,
            cols: 2,
            stride: 2,
            zero_point: crate::ActZeroPoints::PerRow(&za),
        };
        let mat_b = MatB {
            data: &b,
            rows: 2,
            cols: 3,
            zero_points: &[1, 0, -1],
            transposed: false,
        };
        let mut c = [0i32; 6];
        gemm_i32(&mat_a, &mat_b, &mut c, 3).unwrap();
        // Rows (10, 20) − 3 = (7, 17) and (30, 40) − 7 = (23, 33) against the columns
        // minus their zero points: (0, 3), (−2, −5), (4, 7).
        assert_eq!(
            c,
            [
                17 * 3,
                7 * -2 + 17 * -5,
                7 * 4 + 17 * 7,
                33 * 3,
                23 * -2 + 33 * -5,
                23 * 4 + 33 * 7
            ]
        );
    }

    #[test]
    fn shape_errors_name_the_operand() {
        let a = [0u8; 4];
        let b = [0i8; 6];
        let mat_a = MatA::new(&a, 2, 2, 0);
        let mat_b = MatB {
            data: &b,
            rows: 3,
            cols: 2,
            zero_points: &[0],
            transposed: false,
        };
        let err = gemm_i32(&mat_a, &mat_b, &mut [0; 4], 2).unwrap_err();
        assert!(err.to_string().contains("weights have 3 rows"), "{err}");
    }
}
