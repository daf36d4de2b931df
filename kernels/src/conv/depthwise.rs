//! int8 depthwise convolution (groups = channels, one output per channel), NHWC.
//!
//! For each output pixel, each in-image tap adds `(x − za) · (w − zw)` for all channels
//! at once: NHWC makes the channels of a pixel contiguous, so the channel loop is the
//! vector loop. Out-of-image taps add nothing (padding means the value zero, and
//! `za − za = 0`). The body is one `#[inline(always)]` function compiled once per ISA
//! through `#[target_feature]` entry points; it is integer arithmetic plus the shared
//! epilogue, so every rung gives identical results by construction (tests check anyway).

use super::Stage;
use crate::epilogue::{dequantize_row, requantize_row};
use crate::error::KernelError;
use crate::isa::Rung;
use crate::nhwc::{Nhwc, Window};

/// The output stage with per-channel parameters expanded to `c` values.
enum Out<'a> {
    Requant {
        bias: Vec<i32>,
        multiplier: Vec<f32>,
        zero_point: i32,
        qmin: i32,
        qmax: i32,
        out: &'a mut [u8],
    },
    Dequant {
        a_scale: f32,
        b_scale: Vec<f32>,
        bias: Vec<f32>,
        out: &'a mut [f32],
    },
}

fn expand<T: Copy>(values: &[T], c: usize) -> Vec<T> {
    if values.len() == 1 {
        vec![values[0]; c]
    } else {
        values.to_vec()
    }
}

/// Runs the depthwise convolution on `rung`; returns the kernel name.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    rung: Rung,
    stage: &mut Stage,
) -> Result<&'static str, KernelError> {
    let c = shape.c;
    let mut out = match stage {
        Stage::Requant { p, out } => Out::Requant {
            bias: p.bias.map_or_else(|| vec![0; c], <[i32]>::to_vec),
            multiplier: expand(p.multiplier, c),
            zero_point: p.out_zero_point,
            qmin: i32::from(p.qmin),
            qmax: i32::from(p.qmax),
            out,
        },
        Stage::Dequant { p, out } => Out::Dequant {
            a_scale: p.a_scale.of(0),
            b_scale: expand(p.b_scale, c),
            bias: p.bias.map_or_else(|| vec![0.0; c], <[f32]>::to_vec),
            out,
        },
    };
    let args = Args {
        input,
        shape,
        za,
        taps,
        window,
        out_shape,
    };
    let name = match rung {
        #[cfg(target_arch = "x86_64")]
        Rung::Avx512Vnni => {
            // SAFETY: a PackedConv is only built for rungs the CPU supports, and the
            // avx512vnni rung implies AVX-512 F and BW.
            unsafe { body_avx512(&args, &mut out) };
            "avx512_dwconv_u8s8"
        }
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 => {
            // SAFETY: as above; the avx2 rung implies AVX2.
            unsafe { body_avx2(&args, &mut out) };
            "avx2_dwconv_u8s8"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            // SAFETY: both aarch64 rungs imply Advanced SIMD.
            unsafe { body_neon(&args, &mut out) };
            "neon_dwconv_u8s8"
        }
        _ => {
            body(&args, &mut out);
            "generic_dwconv_u8s8"
        }
    };
    Ok(name)
}

struct Args<'a> {
    input: &'a [u8],
    shape: Nhwc,
    za: i32,
    taps: &'a [i16],
    window: &'a Window,
    out_shape: Nhwc,
}

/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn body_avx512(args: &Args, out: &mut Out) {
    body(args, out);
}

/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn body_avx2(args: &Args, out: &mut Out) {
    body(args, out);
}

/// # Safety
/// The CPU supports Advanced SIMD (every aarch64 Linux CPU does).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn body_neon(args: &Args, out: &mut Out) {
    body(args, out);
}

#[inline(always)]
fn body(args: &Args, out: &mut Out) {
    let Args {
        input,
        shape,
        za,
        taps,
        window,
        out_shape,
    } = *args;
    let c = shape.c;
    let [kh, kw] = window.kernel;
    let mut acc = vec![0i32; c];
    for img in 0..shape.n {
        for oy in 0..out_shape.h {
            for ox in 0..out_shape.w {
                acc.fill(0);
                for ky in 0..kh {
                    let iy = (oy * window.stride[0] + ky * window.dilation[0]) as isize
                        - window.pads[0] as isize;
                    if iy < 0 || iy as usize >= shape.h {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * window.stride[1] + kx * window.dilation[1]) as isize
                            - window.pads[1] as isize;
                        if ix < 0 || ix as usize >= shape.w {
                            continue;
                        }
                        let x = &input[shape.index(img, iy as usize, ix as usize, 0)..][..c];
                        let w = &taps[(ky * kw + kx) * c..][..c];
                        for ((acc, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                            *acc = acc.wrapping_add((i32::from(x) - za).wrapping_mul(i32::from(w)));
                        }
                    }
                }
                let o = out_shape.index(img, oy, ox, 0);
                match out {
                    Out::Requant {
                        bias,
                        multiplier,
                        zero_point,
                        qmin,
                        qmax,
                        out,
                    } => {
                        requantize_row(
                            &acc,
                            bias,
                            multiplier,
                            *zero_point,
                            *qmin,
                            *qmax,
                            &mut out[o..o + c],
                        );
                    }
                    Out::Dequant {
                        a_scale,
                        b_scale,
                        bias,
                        out,
                    } => {
                        dequantize_row(&acc, *a_scale, b_scale, bias, &mut out[o..o + c]);
                    }
                }
            }
        }
    }
}
