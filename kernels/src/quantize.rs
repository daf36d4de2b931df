//! Quantizing f32 activations to u8 at run time: the per-call step of dynamic
//! quantization (find the range of a tensor or of each row, then map every value onto
//! the grid). A transformer quantizes about two million activations per sentence, so
//! the scalar loop (a libm `roundeven` call per value on baseline x86-64) would cost
//! more than the int8 GEMMs it feeds.
//!
//! The contract, shared with the scalar definition in `qbench-quantizers`
//! (`qparams::quantize`): `q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`
//! with the division and the addition in f32. The AVX2 path uses the same IEEE
//! operations (`vdivps`, `vroundps` to nearest even, `vaddps`), clamps in f32 (equal to
//! the scalar integer clamp for every non-NaN value, infinities included, since qmin and
//! qmax are exact in f32) and converts an integral value, so it is bit-exact; the tests
//! compare every byte with the scalar form. NaN inputs are the caller's to refuse.

/// The scalar definition (also the tail of the vector loop).
#[inline(always)]
fn quantize_one(x: f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) -> u8 {
    let q = (x / scale).round_ties_even() + zero_point;
    q.max(qmin).min(qmax) as u8
}

/// Quantizes `x` into `out` (same length): `clamp(round_half_even(x / scale) + zero_point,
/// qmin, qmax)`.
///
/// # Panics
/// When `out` and `x` differ in length, or `qmin > qmax`.
pub fn quantize_u8(x: &[f32], scale: f32, zero_point: i32, qmin: u8, qmax: u8, out: &mut [u8]) {
    assert_eq!(x.len(), out.len(), "quantize_u8: input and output lengths");
    assert!(qmin <= qmax, "quantize_u8: qmin {qmin} > qmax {qmax}");
    let (zp, lo, hi) = (zero_point as f32, f32::from(qmin), f32::from(qmax));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected just above.
        unsafe { quantize_avx2(x, scale, zp, lo, hi, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, scale, zp, lo, hi);
    }
}

/// The smallest and largest value of `x` (`(+inf, −inf)` when empty). NaN is ignored by
/// the scalar path and may or may not be by the vector one: callers refuse NaN first.
pub fn min_max(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected just above.
        return unsafe { min_max_avx2(x) };
    }
    x.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], scale: f32, zp: f32, lo: f32, hi: f32, out: &mut [u8]) {
    use core::arch::x86_64::{
        _mm256_add_ps, _mm256_castsi256_si128, _mm256_cvtps_epi32, _mm256_div_ps,
        _mm256_extracti128_si256, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_round_ps,
        _mm256_set1_ps, _mm_packs_epi32, _mm_packus_epi16, _mm_storel_epi64, _MM_FROUND_NO_EXC,
        _MM_FROUND_TO_NEAREST_INT,
    };
    let n = x.len() / 8 * 8;
    let (vs, vz, vlo, vhi) = (
        _mm256_set1_ps(scale),
        _mm256_set1_ps(zp),
        _mm256_set1_ps(lo),
        _mm256_set1_ps(hi),
    );
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 ≤ n ≤ x.len() = out.len(); unaligned loads and stores.
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_div_ps(v, vs),
            );
            let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), vlo), vhi);
            let q = _mm256_cvtps_epi32(q);
            let words =
                _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(
                out.as_mut_ptr().add(i).cast(),
                _mm_packus_epi16(words, words),
            );
        }
        i += 8;
    }
    for (o, &v) in out[n..].iter_mut().zip(&x[n..]) {
        *o = quantize_one(v, scale, zp, lo, hi);
    }
}

/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_max_avx2(x: &[f32]) -> (f32, f32) {
    use core::arch::x86_64::{
        _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_set1_ps, _mm256_storeu_ps,
    };
    let n = x.len() / 8 * 8;
    let mut vlo = _mm256_set1_ps(f32::INFINITY);
    let mut vhi = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 ≤ n ≤ x.len().
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
        i += 8;
    }
    let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
    // SAFETY: each array holds 8 f32.
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), vlo);
        _mm256_storeu_ps(h.as_mut_ptr(), vhi);
    }
    let lo = l
        .iter()
        .chain(&x[n..])
        .fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = h
        .iter()
        .chain(&x[n..])
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte against the scalar definition, on values around ties, far outside the
    /// grid, infinities and every length up to two vectors plus a tail.
    #[test]
    fn vector_quantize_matches_the_scalar_definition() {
        let mut vals: Vec<f32> = Vec::new();
        for i in -600..600 {
            vals.push(i as f32 * 0.25); // many exact .5 ties at scale 0.5
            vals.push(i as f32 * 0.013_7);
        }
        vals.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, -0.0]);
        for &(scale, zp, qmin, qmax) in &[
            (0.5f32, 128, 0u8, 255u8),
            (0.05, 0, 0, 127),
            (1e-3, 64, 0, 127),
            (3.0, 255, 10, 200),
        ] {
            for len in [0, 1, 7, 8, 9, 17, vals.len()] {
                let x = &vals[..len];
                let mut got = vec![0u8; len];
                quantize_u8(x, scale, zp, qmin, qmax, &mut got);
                let want: Vec<u8> = x
                    .iter()
                    .map(|&v| {
                        let q = (v / scale).round_ties_even() + zp as f32;
                        (q as i32).clamp(i32::from(qmin), i32::from(qmax)) as u8
                    })
                    .collect();
                assert_eq!(got, want, "scale {scale} zp {zp} len {len}");
            }
        }
    }

    #[test]
    fn min_max_finds_the_extremes_in_the_body_and_the_tail() {
        for len in [1usize, 7, 8, 9, 33] {
            for at in 0..len {
                let mut x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
                x[at] = -5.0;
                let (lo, hi) = min_max(&x);
                let want_hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!((lo, hi), (-5.0, want_hi), "len {len} at {at}");
            }
        }
        assert_eq!(min_max(&[]), (f32::INFINITY, f32::NEG_INFINITY));
    }
}
