//! The reference int8 convolution: a direct loop over output pixels, channels and taps,
//! NHWC activations and ONNX-layout weights. Out-of-image taps are the value zero
//! (their `x − za` term is 0). Accumulators, requantization and dequantization follow the
//! GEMM contract in [`super`] exactly.

use crate::conv::ConvWeights;
use crate::error::KernelError;
use crate::gemm::{Dequant, Requant};
use crate::nhwc::{Nhwc, Window};

/// The zero-point-corrected accumulators `[n][oh][ow][c_out]` and their shape.
pub fn conv_acc(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    w: &ConvWeights,
    groups: usize,
    window: &Window,
) -> Result<(Nhwc, Vec<i32>), KernelError> {
    shape.check("conv input", input.len())?;
    if w.in_channels_per_group * groups != shape.c
        || groups == 0
        || !w.out_channels.is_multiple_of(groups)
    {
        return Err(KernelError::Shape(format!(
            "conv: {} input channels, {} per group × {groups} groups, {} outputs",
            shape.c, w.in_channels_per_group, w.out_channels
        )));
    }
    let (oh, ow) = window.output_hw(shape.h, shape.w)?;
    let os = Nhwc::new(shape.n, oh, ow, w.out_channels);
    let cog = w.out_channels / groups;
    let mut acc = vec![0i32; os.len()];
    for n in 0..shape.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..w.out_channels {
                    let g = co / cog;
                    let mut sum: i64 = 0;
                    for ky in 0..w.kernel[0] {
                        for kx in 0..w.kernel[1] {
                            let iy = (oy * window.stride[0] + ky * window.dilation[0]) as i64
                                - window.pads[0] as i64;
                            let ix = (ox * window.stride[1] + kx * window.dilation[1]) as i64
                                - window.pads[1] as i64;
                            if iy < 0 || ix < 0 || iy >= shape.h as i64 || ix >= shape.w as i64 {
                                continue;
                            }
                            for ci in 0..w.in_channels_per_group {
                                let x = input[shape.index(
                                    n,
                                    iy as usize,
                                    ix as usize,
                                    g * w.in_channels_per_group + ci,
                                )];
                                let wv = w.at(co, ci, ky, kx);
                                sum += (i64::from(x) - i64::from(za))
                                    * (i64::from(wv) - i64::from(w.zero_point_of(co)));
                            }
                        }
                    }
                    acc[os.index(n, oy, ox, co)] = sum as i32; // modulo 2^32, as the contract says
                }
            }
        }
    }
    Ok((os, acc))
}

/// Requantized u8 output; `p` has per-output-channel (or single) bias and multipliers.
#[allow(clippy::too_many_arguments)]
pub fn conv_requant(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    w: &ConvWeights,
    groups: usize,
    window: &Window,
    p: &Requant,
    out: &mut [u8],
) -> Result<Nhwc, KernelError> {
    let (os, acc) = conv_acc(input, shape, za, w, groups, window)?;
    os.check("conv output", out.len())?;
    for (i, (&acc, q)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let co = i % os.c;
        let bias = p.bias.map_or(0, |b| b[co]);
        let m = if p.multiplier.len() == 1 {
            p.multiplier[0]
        } else {
            p.multiplier[co]
        };
        *q = super::requantize(acc, bias, m, p.out_zero_point, p.qmin, p.qmax);
    }
    Ok(os)
}

/// Dequantized f32 output with a per-tensor activation scale.
#[allow(clippy::too_many_arguments)]
pub fn conv_dequant(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    w: &ConvWeights,
    groups: usize,
    window: &Window,
    p: &Dequant,
    out: &mut [f32],
) -> Result<Nhwc, KernelError> {
    let (os, acc) = conv_acc(input, shape, za, w, groups, window)?;
    os.check("conv output", out.len())?;
    for (i, (&acc, y)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let co = i % os.c;
        let sw = if p.b_scale.len() == 1 {
            p.b_scale[0]
        } else {
            p.b_scale[co]
        };
        *y = super::dequantize(acc, p.a_scale.of(0), sw, p.bias.map_or(0.0, |b| b[co]));
    }
    Ok(os)
}
