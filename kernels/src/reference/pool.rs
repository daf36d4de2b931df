//! Reference pooling: the naive loops that define [`crate::pool`]'s results.
//!
//! Every output value is computed on its own, tap by tap, with signed coordinates and an
//! explicit bounds test; nothing is shared with the fast path except validation (so both
//! refuse the same calls, before writing anything).
//!
//! - **Max pool**: the max over the window's in-bounds taps; padding never contributes.
//! - **Average pool**: `acc = Σ (x − z_in)` over the in-bounds taps, in i32;
//!   `count` = the number of those taps, or `kh·kw` with `count_include_pad`;
//!   `multiplier = in_scale / (count as f32 · out_scale)`; the output is
//!   [`super::requantize`]`(acc, 0, multiplier, z_out, qmin, qmax)`.
//! - **Global average pool**: the same over all `h·w` pixels of a channel.

use super::requantize;
use crate::error::KernelError;
use crate::nhwc::{Nhwc, Window};
use crate::pool::{check_avg_pool, check_global_avg_pool, check_max_pool, PoolQuant};

/// Input coordinate of tap `k` of output position `o`, or `None` in the padding.
fn tap(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> Option<usize> {
    let pos = (o * stride + k * dilation) as isize - pad as isize;
    (pos >= 0 && (pos as usize) < len).then_some(pos as usize)
}

/// Reference max pool; returns the output shape.
pub fn max_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out: &mut [u8],
) -> Result<Nhwc, KernelError> {
    let os = check_max_pool(input, shape, window, out)?;
    for n in 0..os.n {
        for oy in 0..os.h {
            for ox in 0..os.w {
                for c in 0..os.c {
                    let mut best: Option<u8> = None;
                    for ky in 0..window.kernel[0] {
                        for kx in 0..window.kernel[1] {
                            let y = tap(
                                oy,
                                ky,
                                window.stride[0],
                                window.dilation[0],
                                window.pads[0],
                                shape.h,
                            );
                            let x = tap(
                                ox,
                                kx,
                                window.stride[1],
                                window.dilation[1],
                                window.pads[1],
                                shape.w,
                            );
                            if let (Some(y), Some(x)) = (y, x) {
                                let v = input[shape.index(n, y, x, c)];
                                best = Some(best.map_or(v, |b| b.max(v)));
                            }
                        }
                    }
                    out[os.index(n, oy, ox, c)] = best.expect("validation refuses empty windows");
                }
            }
        }
    }
    Ok(os)
}

/// Reference average pool; returns the output shape.
pub fn avg_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    count_include_pad: bool,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<Nhwc, KernelError> {
    let os = check_avg_pool(input, shape, window, q, out)?;
    let z_in = q.in_q.zero_point;
    for n in 0..os.n {
        for oy in 0..os.h {
            for ox in 0..os.w {
                for c in 0..os.c {
                    let mut acc: i32 = 0;
                    let mut taps = 0usize;
                    for ky in 0..window.kernel[0] {
                        for kx in 0..window.kernel[1] {
                            let y = tap(oy, ky, window.stride[0], 1, window.pads[0], shape.h);
                            let x = tap(ox, kx, window.stride[1], 1, window.pads[1], shape.w);
                            if let (Some(y), Some(x)) = (y, x) {
                                acc += i32::from(input[shape.index(n, y, x, c)]) - z_in;
                                taps += 1;
                            }
                        }
                    }
                    let count = if count_include_pad {
                        window.kernel[0] * window.kernel[1]
                    } else {
                        taps
                    };
                    let multiplier = q.in_q.scale / (count as f32 * q.out_q.scale);
                    out[os.index(n, oy, ox, c)] =
                        requantize(acc, 0, multiplier, q.out_q.zero_point, q.qmin, q.qmax);
                }
            }
        }
    }
    Ok(os)
}

/// Reference global average pool; returns the output shape `(n, 1, 1, c)`.
pub fn global_avg_pool(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<Nhwc, KernelError> {
    let os = check_global_avg_pool(input, shape, q, out)?;
    let count = shape.h * shape.w;
    let multiplier = q.in_q.scale / (count as f32 * q.out_q.scale);
    for n in 0..shape.n {
        for c in 0..shape.c {
            let mut acc: i32 = 0;
            for y in 0..shape.h {
                for x in 0..shape.w {
                    acc += i32::from(input[shape.index(n, y, x, c)]) - q.in_q.zero_point;
                }
            }
            out[os.index(n, 0, 0, c)] =
                requantize(acc, 0, multiplier, q.out_q.zero_point, q.qmin, q.qmax);
        }
    }
    Ok(os)
}
