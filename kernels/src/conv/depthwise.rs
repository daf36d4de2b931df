//! int8 depthwise convolution (groups = channels, one output per channel), NHWC.
//!
//! Each in-image tap adds `(x − za) · (w − zw)` for a block of channels at once: NHWC makes
//! the channels of a pixel contiguous, so the channel block is the vector. The kernel is
//! register-blocked: for a block of [`BLOCK`] channels, the weights of every tap are held
//! in a fixed-size array (registers, for 3x3), and for each output pixel the accumulators
//! live in one fixed-size array that never leaves registers until the epilogue. Channels
//! past the last full block go through the same code with a dynamic width.
//!
//! Out-of-image taps add nothing (padding means the value zero, and `za − za = 0`). The
//! body is one `#[inline(always)]` function compiled once per ISA through
//! `#[target_feature]` entry points; it is integer arithmetic plus the shared epilogue,
//! so every rung gives identical results by construction (the tests check anyway).

use super::Stage;
#[cfg(target_arch = "aarch64")]
use crate::aarch64::dwconv::Finish;
use crate::epilogue::{dequantize_row, requantize_row};
use crate::error::KernelError;
use crate::isa::Rung;
use crate::nhwc::{Nhwc, Window};
#[cfg(target_arch = "x86_64")]
use crate::x86_64::dwconv::Finish;

/// Channels per block: one zmm of i32 lanes, two ymm, four NEON q registers.
const BLOCK: usize = 16;

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

impl Out<'_> {
    /// Finishes channels `c0..c0 + acc.len()` of the output pixel at `offset`.
    #[inline(always)]
    fn store(&mut self, offset: usize, c0: usize, acc: &[i32]) {
        let range = c0..c0 + acc.len();
        let dst = offset + c0..offset + c0 + acc.len();
        match self {
            Out::Requant {
                bias,
                multiplier,
                zero_point,
                qmin,
                qmax,
                out,
            } => requantize_row(
                acc,
                &bias[range.clone()],
                &multiplier[range],
                *zero_point,
                *qmin,
                *qmax,
                &mut out[dst],
            ),
            Out::Dequant {
                a_scale,
                b_scale,
                bias,
                out,
            } => dequantize_row(
                acc,
                *a_scale,
                &b_scale[range.clone()],
                &bias[range],
                &mut out[dst],
            ),
        }
    }
}

fn expand<T: Copy>(values: &[T], c: usize) -> Vec<T> {
    if values.len() == 1 {
        vec![values[0]; c]
    } else {
        values.to_vec()
    }
}

struct Args<'a> {
    input: &'a [u8],
    shape: Nhwc,
    za: i32,
    /// `[tap][channel]`, `w − zw` as i16.
    taps: &'a [i16],
    window: &'a Window,
    out_shape: Nhwc,
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
    // A rung without depthwise kernels of its own (amx) runs the ones it borrows.
    let name = match rung.borrowed() {
        #[cfg(target_arch = "x86_64")]
        r @ (Rung::Avx2 | Rung::Avx512Vnni)
            if window.kernel == [3, 3] || window.kernel == [5, 5] =>
        {
            let mut finish = finish_of(&mut out);
            // SAFETY: the rung (checked when packing) implies its features (AVX2; AVX-512
            // F, BW and VNNI); the window is 3x3 or 5x5, out_shape is its output shape,
            // taps is [kh·kw][c], and the vectors hold c values.
            unsafe {
                if r == Rung::Avx512Vnni {
                    crate::x86_64::dwconv_u8::dw_u8_avx512(
                        input,
                        shape,
                        za,
                        taps,
                        window,
                        out_shape,
                        &mut finish,
                    )
                } else {
                    crate::x86_64::dwconv_u8::dw_u8_avx2(
                        input,
                        shape,
                        za,
                        taps,
                        window,
                        out_shape,
                        &mut finish,
                    )
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 => {
            // SAFETY: the avx2 rung (checked when packing) implies AVX2.
            unsafe { body_avx2(&args, &mut out) };
            "avx2_dwconv_u8s8_portable"
        }
        #[cfg(target_arch = "x86_64")]
        Rung::Avx512Vnni => {
            // SAFETY: AVX-512 F and BW come with the rung (checked when packing).
            unsafe { body_avx512(&args, &mut out) };
            "avx512vnni_dwconv_u8s8_portable"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            if window.kernel == [3, 3] || window.kernel == [5, 5] {
                // SAFETY: both aarch64 rungs imply Advanced SIMD; the window is 3x3 or
                // 5x5, out_shape is its output shape, taps is [kh·kw][c], and the vectors
                // hold c values.
                unsafe {
                    crate::aarch64::dwconv::dw_u8_neon(
                        input,
                        shape,
                        za,
                        taps,
                        window,
                        out_shape,
                        &mut finish_of(&mut out),
                    )
                };
                "neon_dwconv_u8s8_c16"
            } else {
                // SAFETY: both aarch64 rungs imply Advanced SIMD.
                unsafe { body_neon(&args, &mut out) };
                "neon_dwconv_u8s8_portable"
            }
        }
        _ => {
            body(&args, &mut out);
            "generic_dwconv_u8s8_c16"
        }
    };
    Ok(name)
}

/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn body_avx512(args: &Args, out: &mut Out) {
    body(args, out);
}

/// The SIMD kernels' view of the output stage (per-channel vectors borrowed).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn finish_of<'o>(out: &'o mut Out<'_>) -> Finish<'o> {
    match out {
        Out::Requant {
            bias,
            multiplier,
            zero_point,
            qmin,
            qmax,
            out,
        } => Finish::Requant {
            bias,
            multiplier,
            zero_point: *zero_point,
            qmin: *qmin,
            qmax: *qmax,
            out,
        },
        Out::Dequant {
            a_scale,
            b_scale,
            bias,
            out,
        } => Finish::Dequant {
            a_scale: *a_scale,
            b_scale,
            bias,
            out,
        },
    }
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
    let c = args.shape.c;
    let full = c / BLOCK * BLOCK;
    let is_3x3 = args.window.kernel == [3, 3];
    for c0 in (0..full).step_by(BLOCK) {
        if is_3x3 {
            block::<9>(args, out, c0);
        } else {
            block_any(args, out, c0, BLOCK);
        }
    }
    if full < c {
        block_any(args, out, full, c - full);
    }
}

/// In-image tap range `[first, last)` along one axis for output coordinate `o`.
#[inline(always)]
pub(crate) fn tap_range(
    o: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    taps: usize,
    size: usize,
) -> (usize, usize) {
    let origin = (o * stride) as isize - pad as isize;
    let valid = |t: usize| {
        let i = origin + (t * dilation) as isize;
        i >= 0 && (i as usize) < size
    };
    let first = (0..taps).find(|&t| valid(t)).unwrap_or(taps);
    let last = (first..taps)
        .rev()
        .find(|&t| valid(t))
        .map_or(first, |t| t + 1);
    (first, last)
}

/// A full block of channels with `TAPS = kh·kw` known at compile time (3x3).
#[inline(always)]
fn block<const TAPS: usize>(args: &Args, out: &mut Out, c0: usize) {
    let Args {
        input,
        shape,
        za,
        taps,
        window,
        out_shape,
    } = *args;
    let (c, [kh, kw]) = (shape.c, window.kernel);
    let mut weights = [[0i32; BLOCK]; TAPS];
    for (t, w) in weights.iter_mut().enumerate() {
        for (lane, w) in w.iter_mut().enumerate() {
            *w = i32::from(taps[t * c + c0 + lane]);
        }
    }
    for img in 0..shape.n {
        for oy in 0..out_shape.h {
            let (ky0, ky1) = tap_range(
                oy,
                window.stride[0],
                window.dilation[0],
                window.pads[0],
                kh,
                shape.h,
            );
            for ox in 0..out_shape.w {
                let (kx0, kx1) = tap_range(
                    ox,
                    window.stride[1],
                    window.dilation[1],
                    window.pads[1],
                    kw,
                    shape.w,
                );
                let mut acc = [0i32; BLOCK];
                for ky in ky0..ky1 {
                    let iy = oy * window.stride[0] + ky * window.dilation[0] - window.pads[0];
                    for kx in kx0..kx1 {
                        let ix = ox * window.stride[1] + kx * window.dilation[1] - window.pads[1];
                        let x: &[u8; BLOCK] = input[shape.index(img, iy, ix, c0)..][..BLOCK]
                            .try_into()
                            .expect("block");
                        let w = &weights[ky * kw + kx];
                        for lane in 0..BLOCK {
                            acc[lane] = acc[lane]
                                .wrapping_add((i32::from(x[lane]) - za).wrapping_mul(w[lane]));
                        }
                    }
                }
                out.store(out_shape.index(img, oy, ox, 0), c0, &acc);
            }
        }
    }
}

/// Channels `c0..c0 + width` (`width ≤ BLOCK`) with any kernel size.
#[inline(always)]
fn block_any(args: &Args, out: &mut Out, c0: usize, width: usize) {
    let Args {
        input,
        shape,
        za,
        taps,
        window,
        out_shape,
    } = *args;
    let (c, [kh, kw]) = (shape.c, window.kernel);
    for img in 0..shape.n {
        for oy in 0..out_shape.h {
            let (ky0, ky1) = tap_range(
                oy,
                window.stride[0],
                window.dilation[0],
                window.pads[0],
                kh,
                shape.h,
            );
            for ox in 0..out_shape.w {
                let (kx0, kx1) = tap_range(
                    ox,
                    window.stride[1],
                    window.dilation[1],
                    window.pads[1],
                    kw,
                    shape.w,
                );
                let mut acc = [0i32; BLOCK];
                let acc = &mut acc[..width];
                for ky in ky0..ky1 {
                    let iy = oy * window.stride[0] + ky * window.dilation[0] - window.pads[0];
                    for kx in kx0..kx1 {
                        let ix = ox * window.stride[1] + kx * window.dilation[1] - window.pads[1];
                        let x = &input[shape.index(img, iy, ix, c0)..][..width];
                        let w = &taps[(ky * kw + kx) * c + c0..][..width];
                        for ((acc, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                            *acc = acc.wrapping_add((i32::from(x) - za).wrapping_mul(i32::from(w)));
                        }
                    }
                }
                out.store(out_shape.index(img, oy, ox, 0), c0, acc);
            }
        }
    }
}
