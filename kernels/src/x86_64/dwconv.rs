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
