//! AVX2 pooling and elementwise-add kernels (`avx2_maxpool_u8`, `avx2_avgpool_u8`,
//! `avx2_global_avgpool_u8`, `avx2_add_u8`); the avx512vnni rung runs them too, since
//! these memory-bound ops gain little from wider vectors.
//!
//! This file owns the AVX2 channel-row primitives of [`PoolRows`] and the
//! `#[target_feature]` entry points that instantiate the shared drivers of
//! [`crate::pool`] with them, plus the whole add loop. Everything vectorises across
//! contiguous elements (channels in NHWC); tails shorter than a vector use the scalar
//! formula the generic rung uses, so they are exact by construction.
//!
//! Exactness of the vector requantization: i32 → f32 conversion, the f32 multiply and
//! add, min/max and the clamp to ±2^30 are the same IEEE operations as the scalar code;
//! `vcvtps2dq` rounds half to even under the default MXCSR, and after the clamp it is in
//! range, so it equals `round_ties_even() as i32`.

use core::arch::x86_64::{
    __m128i, __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_castsi256_si128,
    _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_cvtps_epi32, _mm256_extracti128_si256,
    _mm256_loadu_si256, _mm256_max_epi32, _mm256_max_epu8, _mm256_max_ps, _mm256_min_epi32,
    _mm256_min_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_storeu_si256,
    _mm256_sub_epi32, _mm_loadl_epi64, _mm_loadu_si128, _mm_max_epu8, _mm_packs_epi32,
    _mm_packus_epi16, _mm_storel_epi64, _mm_storeu_si128,
};

use crate::eltwise::{AddConsts, LIMIT};
use crate::nhwc::{Nhwc, Window};
use crate::pool::{
    avg_pool_with, global_avg_pool_with, max_pool_with, AvgJob, PoolQuant, PoolRows, RowRequant,
};

/// AVX2 channel-row primitives.
struct Avx2;

/// Rounds 8 finite f32 to nearest even, adds the zero point and clamps: the vector form
/// of the scalar `(v.clamp(±2^30).round_ties_even() as i32 + zo).clamp(qmin, qmax)`.
/// Returns 8 values in `qmin..=qmax` as i32.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn finish(v: __m256, zo: __m256i, qmin: __m256i, qmax: __m256i) -> __m256i {
    // SAFETY: AVX2 is available (caller's contract).
    unsafe {
        let v = _mm256_min_ps(
            _mm256_max_ps(v, _mm256_set1_ps(-LIMIT)),
            _mm256_set1_ps(LIMIT),
        );
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), zo);
        _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax)
    }
}

/// Narrows 8 i32 in 0..=255 to 8 bytes in the low half of the result.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn narrow8(q: __m256i) -> __m128i {
    // SAFETY: AVX2 is available (caller's contract).
    unsafe {
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        _mm_packus_epi16(words, words)
    }
}

/// Loads 8 bytes at `p` and zero-extends them to 8 i32.
///
/// # Safety
/// AVX2 is available and `p` points to 8 readable bytes.
#[inline(always)]
unsafe fn load8_epi32(p: *const u8) -> __m256i {
    // SAFETY: AVX2 is available and 8 bytes are readable at p (caller's contract);
    // `_mm_loadl_epi64` has no alignment requirement.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())) }
}

impl PoolRows for Avx2 {
    #[inline(always)]
    unsafe fn max_row(dst: &mut [u8], src: &[u8]) {
        let n = dst.len().min(src.len());
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: AVX2 is available (caller's contract); every access is within the
        // first n elements of both slices (i + 32 ≤ n, i + 16 ≤ n); unaligned forms.
        unsafe {
            while i + 32 <= n {
                let x = _mm256_loadu_si256(s.add(i).cast());
                let y = _mm256_loadu_si256(d.add(i).cast::<__m256i>());
                _mm256_storeu_si256(d.add(i).cast(), _mm256_max_epu8(x, y));
                i += 32;
            }
            if i + 16 <= n {
                let x = _mm_loadu_si128(s.add(i).cast());
                let y = _mm_loadu_si128(d.add(i).cast::<__m128i>());
                _mm_storeu_si128(d.add(i).cast(), _mm_max_epu8(x, y));
                i += 16;
            }
        }
        for (d, &s) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = (*d).max(s);
        }
    }

    #[inline(always)]
    unsafe fn sum_row(acc: &mut [i32], src: &[u8]) {
        let n = acc.len().min(src.len());
        let (a, s) = (acc.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: AVX2 is available (caller's contract); i + 8 ≤ n keeps the 8-byte load
        // and the 8-lane i32 load/store inside both slices; unaligned forms.
        unsafe {
            while i + 8 <= n {
                let x = load8_epi32(s.add(i));
                let sum = _mm256_add_epi32(_mm256_loadu_si256(a.add(i).cast::<__m256i>()), x);
                _mm256_storeu_si256(a.add(i).cast(), sum);
                i += 8;
            }
        }
        for (a, &s) in acc[i..n].iter_mut().zip(&src[i..n]) {
            *a += i32::from(s);
        }
    }

    #[inline(always)]
    unsafe fn requant_row(acc: &[i32], r: &RowRequant, dst: &mut [u8]) {
        let n = acc.len().min(dst.len());
        let (a, d) = (acc.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        // SAFETY: AVX2 is available (caller's contract); i + 8 ≤ n keeps the 8-lane i32
        // load and the 8-byte store inside both slices; unaligned forms.
        unsafe {
            let offset = _mm256_set1_epi32(r.offset);
            let m = _mm256_set1_ps(r.multiplier);
            let zo = _mm256_set1_epi32(r.zero_point);
            let qmin = _mm256_set1_epi32(r.qmin);
            let qmax = _mm256_set1_epi32(r.qmax);
            while i + 8 <= n {
                let x = _mm256_add_epi32(_mm256_loadu_si256(a.add(i).cast()), offset);
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(x), m);
                _mm_storel_epi64(d.add(i).cast(), narrow8(finish(t, zo, qmin, qmax)));
                i += 8;
            }
        }
        for (d, &a) in dst[i..n].iter_mut().zip(&acc[i..n]) {
            *d = r.one(a);
        }
    }
}

/// AVX2 max pool over validated buffers.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn max_pool_avx2(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    out: &mut [u8],
) {
    // SAFETY: AVX2 is enabled on this function (caller's contract).
    unsafe { max_pool_with::<Avx2>(input, shape, window, out_shape, out) }
}

/// AVX2 average pool over a validated job.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn avg_pool_avx2(job: &AvgJob, out: &mut [u8]) {
    // SAFETY: AVX2 is enabled on this function (caller's contract).
    unsafe { avg_pool_with::<Avx2>(job, out) }
}

/// AVX2 global average pool over validated buffers.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn global_avg_pool_avx2(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) {
    // SAFETY: AVX2 is enabled on this function (caller's contract).
    unsafe { global_avg_pool_with::<Avx2>(input, shape, q, out) }
}

/// AVX2 add of two same-length u8 tensors, 8 elements per step.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_avx2(a: &[u8], b: &[u8], k: &AddConsts, out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    // SAFETY: AVX2 is enabled on this function (caller's contract); i + 8 ≤ n keeps the
    // 8-byte loads and the 8-byte store inside the three slices; unaligned forms.
    unsafe {
        let za = _mm256_set1_epi32(k.za);
        let zb = _mm256_set1_epi32(k.zb);
        let ra = _mm256_set1_ps(k.ra);
        let rb = _mm256_set1_ps(k.rb);
        let zo = _mm256_set1_epi32(k.zo);
        let qmin = _mm256_set1_epi32(k.qmin);
        let qmax = _mm256_set1_epi32(k.qmax);
        while i + 8 <= n {
            let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_epi32(pa.add(i)), za));
            let y = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_epi32(pb.add(i)), zb));
            // Two multiplies and an add: no FMA, as the contract requires.
            let v = _mm256_add_ps(_mm256_mul_ps(x, ra), _mm256_mul_ps(y, rb));
            _mm_storel_epi64(po.add(i).cast(), narrow8(finish(v, zo, qmin, qmax)));
            i += 8;
        }
    }
    for ((o, &a), &b) in out[i..n].iter_mut().zip(&a[i..n]).zip(&b[i..n]) {
        *o = k.one(a, b);
    }
}
