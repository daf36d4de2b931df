//! AVX-512 depthwise 3x3 blocks, int8 and fp32: sixteen channels (one zmm) at a time,
//! the nine taps' weights held in nine zmm registers for the whole block, one zmm
//! accumulator per output pixel.
//!
//! int8: `acc += (x − za) · w` in i32 lanes (u8 zero-extended, `vpmulld`), exact; the
//! output stage then runs in registers with the operations of [`crate::epilogue`] in
//! the same order (no FMA, round half to even by the 1.5·2^23 trick), so the results are
//! those of the portable body bit for bit. fp32: `acc = fma(x, w, acc)` from the bias.

use crate::conv::depthwise::tap_range;
use crate::nhwc::{Nhwc, Window};
use std::arch::x86_64::*;

/// Walks the output pixels of one output row `(img, oy)` with their in-image tap ranges
/// and the input pixel index of tap (0, 0) (which may lie in the padding: only in-range
/// taps are used).
#[inline(always)]
fn for_each_pixel_of_row(
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    (img, oy): (usize, usize),
    mut f: impl FnMut(usize, (usize, usize), (usize, usize), isize),
) {
    let ys = tap_range(
        oy,
        window.stride[0],
        window.dilation[0],
        window.pads[0],
        3,
        shape.h,
    );
    let iy0 = (oy * window.stride[0]) as isize - window.pads[0] as isize;
    for ox in 0..out_shape.w {
        let (s, d, pad) = (window.stride[1], window.dilation[1], window.pads[1]);
        // Interior columns (all three taps in the image) skip the tap search: it cost as
        // much as the nine taps of a 16-channel block.
        let xs = if ox * s >= pad && ox * s - pad + 2 * d < shape.w {
            (0, 3)
        } else {
            tap_range(ox, s, d, pad, 3, shape.w)
        };
        let ix0 = (ox * window.stride[1]) as isize - window.pads[1] as isize;
        let origin = ((img * shape.h) as isize + iy0) * shape.w as isize + ix0;
        f(out_shape.index(img, oy, ox, 0), ys, xs, origin);
    }
}

/// Walks every output pixel, row by row. (Sweeping the whole image per channel block
/// measured faster here than visiting every block per row: the block's setup stays out
/// of the loop and the input rows still stream through L2.)
#[inline(always)]
fn for_each_pixel(
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    mut f: impl FnMut(usize, (usize, usize), (usize, usize), isize),
) {
    for img in 0..shape.n {
        for oy in 0..out_shape.h {
            for_each_pixel_of_row(shape, window, out_shape, (img, oy), &mut f);
        }
    }
}

/// How the int8 block finishes a pixel: the same output stages as the portable
/// epilogue, on the sixteen lanes of a zmm, with per-channel vectors indexed from `c0`.
pub(crate) enum Finish<'a> {
    Requant {
        bias: &'a [i32],
        multiplier: &'a [f32],
        zero_point: i32,
        qmin: i32,
        qmax: i32,
        out: &'a mut [u8],
    },
    Dequant {
        a_scale: f32,
        b_scale: &'a [f32],
        bias: &'a [f32],
        out: &'a mut [f32],
    },
}

/// int8 3x3 depthwise for channels `c0..c0 + 16` .
///
/// # Safety
/// The CPU supports AVX-512 F and BW; `input` holds `shape`; `taps` is `[9][shape.c]`;
/// `c0 + 16 ≤ shape.c`; `window.kernel == [3, 3]` and `out_shape` is its output shape;
/// the per-channel vectors and the output of `finish` hold `shape.c` and `out_shape`.
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dw3x3_u8_block16(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    c0: usize,
    finish: &mut Finish,
) {
    let c = shape.c;
    let mut w = [_mm512_setzero_si512(); 9];
    for (t, w) in w.iter_mut().enumerate() {
        // SAFETY: taps holds 9·c values and c0 + 16 ≤ c: sixteen i16 are in bounds.
        *w = _mm512_cvtepi16_epi32(unsafe {
            _mm256_loadu_si256(taps.as_ptr().add(t * c + c0).cast())
        });
    }
    let zero_point = _mm512_set1_epi32(za);
    let (dy, dx) = (window.dilation[0] as isize, window.dilation[1] as isize);
    let row = (shape.w * c) as isize;
    let tap_offset: [isize; 9] =
        std::array::from_fn(|t| (t / 3) as isize * dy * row + (t % 3) as isize * dx * c as isize);
    let accumulate = |origin: isize, ys: (usize, usize), xs: (usize, usize)| {
        let base = origin * c as isize + c0 as isize;
        let mut acc = _mm512_setzero_si512();
        let mut tap = |t: usize| {
            // SAFETY: only in-image taps are visited, so their 16 channels from c0 lie in `input`.
            let x = unsafe { _mm_loadu_si128(input.as_ptr().offset(base + tap_offset[t]).cast()) };
            let x = _mm512_sub_epi32(_mm512_cvtepu8_epi32(x), zero_point);
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(x, w[t]));
        };
        if ys == (0, 3) && xs == (0, 3) {
            (0..9).for_each(&mut tap); // interior pixel: all nine taps, unrolled
        } else {
            for ky in ys.0..ys.1 {
                for kx in xs.0..xs.1 {
                    tap(ky * 3 + kx);
                }
            }
        }
        acc
    };
    match finish {
        Finish::Requant {
            bias,
            multiplier,
            zero_point,
            qmin,
            qmax,
            out,
        } => {
            // The scalar epilogue's operations, in its order, on sixteen lanes.
            // SAFETY: both vectors hold c ≥ c0 + 16 values.
            let bias = unsafe { _mm512_loadu_si512(bias.as_ptr().add(c0).cast()) };
            // SAFETY: as above.
            let multiplier = unsafe { _mm512_loadu_ps(multiplier.as_ptr().add(c0)) };
            let limit = _mm512_set1_ps((1u32 << 22) as f32);
            let rounder = _mm512_set1_ps(12_582_912.0);
            let (zp, lo, hi) = (
                _mm512_set1_ps(*zero_point as f32),
                _mm512_set1_ps(*qmin as f32),
                _mm512_set1_ps(*qmax as f32),
            );
            for_each_pixel(shape, window, out_shape, |out_offset, ys, xs, origin| {
                let t = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(_mm512_add_epi32(accumulate(origin, ys, xs), bias)),
                    multiplier,
                );
                let t = _mm512_min_ps(
                    _mm512_max_ps(t, _mm512_sub_ps(_mm512_setzero_ps(), limit)),
                    limit,
                );
                let t = _mm512_sub_ps(_mm512_add_ps(t, rounder), rounder);
                let q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, zp), lo), hi);
                let q = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
                let dst = &mut out[out_offset + c0..out_offset + c0 + 16];
                // SAFETY: dst is 16 writable bytes.
                unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), q) };
            });
        }
        Finish::Dequant {
            a_scale,
            b_scale,
            bias,
            out,
        } => {
            // SAFETY: both vectors hold c ≥ c0 + 16 values.
            let scale = _mm512_mul_ps(_mm512_set1_ps(*a_scale), unsafe {
                _mm512_loadu_ps(b_scale.as_ptr().add(c0))
            });
            // SAFETY: as above.
            let bias = unsafe { _mm512_loadu_ps(bias.as_ptr().add(c0)) };
            for_each_pixel(shape, window, out_shape, |out_offset, ys, xs, origin| {
                let y = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(accumulate(origin, ys, xs)), scale),
                    bias,
                );
                let dst = &mut out[out_offset + c0..out_offset + c0 + 16];
                // SAFETY: dst is 16 writable floats.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), y) };
            });
        }
    }
}

/// fp32 3x3 depthwise for channels `c0..c0 + 16` , accumulating
/// onto `out` (pre-filled with the bias).
///
/// # Safety
/// The CPU supports AVX-512 F; `input` holds `shape`, `out` holds `out_shape`; `taps` is
/// `[9][shape.c]`; `c0 + 16 ≤ shape.c`; `window.kernel == [3, 3]`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dw3x3_f32_block16(
    input: &[f32],
    shape: Nhwc,
    taps: &[f32],
    window: &Window,
    out_shape: Nhwc,
    c0: usize,
    out: &mut [f32],
) {
    let c = shape.c;
    let mut w = [_mm512_setzero_ps(); 9];
    for (t, w) in w.iter_mut().enumerate() {
        // SAFETY: taps holds 9·c values and c0 + 16 ≤ c.
        *w = unsafe { _mm512_loadu_ps(taps.as_ptr().add(t * c + c0)) };
    }
    let (dy, dx) = (window.dilation[0] as isize, window.dilation[1] as isize);
    let row = (shape.w * c) as isize;
    for_each_pixel(
        shape,
        window,
        out_shape,
        |out_offset, (ky0, ky1), (kx0, kx1), origin| {
            let dst = out[out_offset + c0..out_offset + c0 + 16].as_mut_ptr();
            // SAFETY: dst points to 16 floats of `out` (sliced above).
            let mut acc = unsafe { _mm512_loadu_ps(dst) };
            for ky in ky0..ky1 {
                for kx in kx0..kx1 {
                    let pixel = origin * c as isize
                        + ky as isize * dy * row
                        + kx as isize * dx * c as isize;
                    // SAFETY: the tap is inside the image, so its 16 channels from c0 are in `input`.
                    let x = unsafe { _mm512_loadu_ps(input.as_ptr().offset(pixel + c0 as isize)) };
                    acc = _mm512_fmadd_ps(x, w[ky * 3 + kx], acc);
                }
            }
            // SAFETY: as for the load above.
            unsafe { _mm512_storeu_ps(dst, acc) };
        },
    );
}

/// int8 3x3 depthwise for channels `c0..c0 + 8` on AVX2: the AVX-512 block's
/// operations on eight lanes of a ymm, the nine taps' weights in nine ymm registers.
///
/// # Safety
/// The CPU supports AVX2; `input` holds `shape`; `taps` is `[9][shape.c]`;
/// `c0 + 8 ≤ shape.c`; `window.kernel == [3, 3]` and `out_shape` is its output shape;
/// the per-channel vectors and the output of `finish` hold `shape.c` and `out_shape`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dw3x3_u8_block8_avx2(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    c0: usize,
    finish: &mut Finish,
) {
    let c = shape.c;
    let mut w = [_mm256_setzero_si256(); 9];
    for (t, w) in w.iter_mut().enumerate() {
        // SAFETY: taps holds 9·c values and c0 + 8 ≤ c: eight i16 are in bounds.
        *w =
            _mm256_cvtepi16_epi32(unsafe { _mm_loadu_si128(taps.as_ptr().add(t * c + c0).cast()) });
    }
    let zero_point = _mm256_set1_epi32(za);
    let (dy, dx) = (window.dilation[0] as isize, window.dilation[1] as isize);
    let row = (shape.w * c) as isize;
    let tap_offset: [isize; 9] =
        std::array::from_fn(|t| (t / 3) as isize * dy * row + (t % 3) as isize * dx * c as isize);
    let accumulate = |origin: isize, ys: (usize, usize), xs: (usize, usize)| {
        let base = origin * c as isize + c0 as isize;
        let mut acc = _mm256_setzero_si256();
        let mut tap = |t: usize| {
            // SAFETY: only in-image taps are visited, so their 8 channels from c0 lie in `input`.
            let x = unsafe { _mm_loadl_epi64(input.as_ptr().offset(base + tap_offset[t]).cast()) };
            let x = _mm256_sub_epi32(_mm256_cvtepu8_epi32(x), zero_point);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, w[t]));
        };
        if ys == (0, 3) && xs == (0, 3) {
            (0..9).for_each(&mut tap); // interior pixel: all nine taps, unrolled
        } else {
            for ky in ys.0..ys.1 {
                for kx in xs.0..xs.1 {
                    tap(ky * 3 + kx);
                }
            }
        }
        acc
    };
    match finish {
        Finish::Requant {
            bias,
            multiplier,
            zero_point,
            qmin,
            qmax,
            out,
        } => {
            // The scalar epilogue's operations, in its order, on eight lanes.
            // SAFETY: both vectors hold c ≥ c0 + 8 values.
            let bias = unsafe { _mm256_loadu_si256(bias.as_ptr().add(c0).cast()) };
            // SAFETY: as above.
            let multiplier = unsafe { _mm256_loadu_ps(multiplier.as_ptr().add(c0)) };
            let limit = _mm256_set1_ps((1u32 << 22) as f32);
            let rounder = _mm256_set1_ps(12_582_912.0);
            let (zp, lo, hi) = (
                _mm256_set1_ps(*zero_point as f32),
                _mm256_set1_ps(*qmin as f32),
                _mm256_set1_ps(*qmax as f32),
            );
            for_each_pixel(shape, window, out_shape, |out_offset, ys, xs, origin| {
                let t = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_add_epi32(accumulate(origin, ys, xs), bias)),
                    multiplier,
                );
                let t = _mm256_min_ps(
                    _mm256_max_ps(t, _mm256_sub_ps(_mm256_setzero_ps(), limit)),
                    limit,
                );
                let t = _mm256_sub_ps(_mm256_add_ps(t, rounder), rounder);
                let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, zp), lo), hi);
                // Integers in [qmin, qmax] ⊆ [0, 255]: the saturating packs keep them.
                let q = _mm256_cvttps_epi32(q);
                let q16 =
                    _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                let q8 = _mm_packus_epi16(q16, q16);
                let dst = &mut out[out_offset + c0..out_offset + c0 + 8];
                // SAFETY: dst is 8 writable bytes.
                unsafe { _mm_storel_epi64(dst.as_mut_ptr().cast(), q8) };
            });
        }
        Finish::Dequant {
            a_scale,
            b_scale,
            bias,
            out,
        } => {
            // SAFETY: both vectors hold c ≥ c0 + 8 values.
            let scale = _mm256_mul_ps(_mm256_set1_ps(*a_scale), unsafe {
                _mm256_loadu_ps(b_scale.as_ptr().add(c0))
            });
            // SAFETY: as above.
            let bias = unsafe { _mm256_loadu_ps(bias.as_ptr().add(c0)) };
            for_each_pixel(shape, window, out_shape, |out_offset, ys, xs, origin| {
                let y = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(accumulate(origin, ys, xs)), scale),
                    bias,
                );
                let dst = &mut out[out_offset + c0..out_offset + c0 + 8];
                // SAFETY: dst is 8 writable floats.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), y) };
            });
        }
    }
}
