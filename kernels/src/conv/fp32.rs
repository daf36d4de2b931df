//! The fp32 convolution, NHWC: the baseline int8 is measured against and the fp32
//! executor's conv. General convolutions are im2col row tiles times packed weights on the
//! same `gemm` crate as the fp32 GEMM baseline (bias pre-filled, then accumulated into);
//! 1x1 stride-1 convolutions are a single GEMM on the input as it lies; depthwise is
//! direct, vectorised across channels with FMA where the CPU has it.

use super::im2col;
use crate::error::KernelError;
use crate::fp32::sgemm_into;
use crate::nhwc::{Nhwc, Window};
use rayon::prelude::*;

enum Plan {
    Pointwise {
        w: Vec<f32>,
    },
    Depthwise {
        taps: Vec<f32>,
    },
    /// One `k × c_out_g` row-major weight matrix per group.
    Im2col {
        w: Vec<Vec<f32>>,
    },
}

/// An fp32 convolution with its weights rearranged once.
pub struct PackedConvF32 {
    plan: Plan,
    window: Window,
    groups: usize,
    in_channels: usize,
    out_channels: usize,
    bias: Vec<f32>,
}

impl PackedConvF32 {
    /// `weights` as ONNX lays them out, `[c_out][c_in / groups][kh][kw]`; `window.kernel`
    /// gives kh, kw.
    pub fn new(
        weights: &[f32],
        out_channels: usize,
        in_channels_per_group: usize,
        groups: usize,
        window: Window,
        bias: Option<&[f32]>,
    ) -> Result<PackedConvF32, KernelError> {
        let [kh, kw] = window.kernel;
        let want = out_channels * in_channels_per_group * kh * kw;
        if weights.len() != want {
            return Err(KernelError::Shape(format!(
                "fp32 conv weights: {out_channels}x{in_channels_per_group}x{kh}x{kw} needs {want} values, got {}",
                weights.len()
            )));
        }
        if groups == 0 || !out_channels.is_multiple_of(groups) {
            return Err(KernelError::Shape(format!(
                "fp32 conv: {out_channels} output channels do not split into {groups} groups"
            )));
        }
        if let Some(b) = bias.filter(|b| b.len() != out_channels) {
            return Err(KernelError::Shape(format!(
                "fp32 conv bias: expected {out_channels} values, got {}",
                b.len()
            )));
        }
        let cog = out_channels / groups;
        let at = |co: usize, ci: usize, ky: usize, kx: usize| {
            weights[((co * in_channels_per_group + ci) * kh + ky) * kw + kx]
        };
        let plan = if groups > 1 && in_channels_per_group == 1 && cog == 1 {
            let c = out_channels;
            let mut taps = vec![0f32; kh * kw * c];
            for ch in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        taps[(ky * kw + kx) * c + ch] = at(ch, 0, ky, kx);
                    }
                }
            }
            Plan::Depthwise { taps }
        } else {
            let k = kh * kw * in_channels_per_group;
            let per_group: Vec<Vec<f32>> = (0..groups)
                .map(|g| {
                    let mut b = vec![0f32; k * cog];
                    for j in 0..cog {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                for ci in 0..in_channels_per_group {
                                    b[((ky * kw + kx) * in_channels_per_group + ci) * cog + j] =
                                        at(g * cog + j, ci, ky, kx);
                                }
                            }
                        }
                    }
                    b
                })
                .collect();
            let pointwise = groups == 1
                && window.kernel == [1, 1]
                && window.stride == [1, 1]
                && window.pads == [0; 4];
            if pointwise {
                Plan::Pointwise {
                    w: per_group.into_iter().next().expect("one group"),
                }
            } else {
                Plan::Im2col { w: per_group }
            }
        };
        Ok(PackedConvF32 {
            plan,
            window,
            groups,
            in_channels: in_channels_per_group * groups,
            out_channels,
            bias: bias.map_or_else(|| vec![0.0; out_channels], <[f32]>::to_vec),
        })
    }

    pub fn output_shape(&self, input: Nhwc) -> Result<Nhwc, KernelError> {
        if input.c != self.in_channels {
            return Err(KernelError::Shape(format!(
                "fp32 conv expects {} input channels, the input has {}",
                self.in_channels, input.c
            )));
        }
        let (oh, ow) = self.window.output_hw(input.h, input.w)?;
        Ok(Nhwc::new(input.n, oh, ow, self.out_channels))
    }

    /// Runs on `threads` threads (1 = the calling thread) and returns the output shape.
    pub fn run(
        &self,
        input: &[f32],
        shape: Nhwc,
        out: &mut [f32],
        threads: usize,
    ) -> Result<Nhwc, KernelError> {
        shape.check("fp32 conv input", input.len())?;
        let os = self.output_shape(shape)?;
        os.check("fp32 conv output", out.len())?;
        let cout = self.out_channels;
        for row in out.chunks_exact_mut(cout) {
            row.copy_from_slice(&self.bias);
        }
        match &self.plan {
            Plan::Pointwise { w } => {
                let rows = shape.n * shape.h * shape.w;
                sgemm_into(
                    rows, cout, shape.c, input, shape.c, w, cout, out, cout, threads,
                );
            }
            Plan::Depthwise { taps } => {
                // As the int8 depthwise kernel: whole images shared out across threads.
                let one = |s: Nhwc| Nhwc::new(1, s.h, s.w, s.c);
                if threads <= 1 || shape.n <= 1 || one(shape).is_empty() || one(os).is_empty() {
                    depthwise(input, shape, taps, &self.window, os, out);
                } else {
                    input
                        .par_chunks_exact(one(shape).len())
                        .zip(out.par_chunks_exact_mut(one(os).len()))
                        .for_each(|(x, y)| {
                            depthwise(x, one(shape), taps, &self.window, one(os), y)
                        });
                }
            }
            Plan::Im2col { w } => self.im2col_gemms(w, input, shape, os, out, threads),
        }
        Ok(os)
    }

    /// The im2col path, shared out as the int8 one is (`super::im2col_gemms`): whole
    /// tiles (fill and multiply) across threads when there are at least as many tiles as
    /// threads, otherwise tile after tile, each GEMM on all threads.
    fn im2col_gemms(
        &self,
        w: &[Vec<f32>],
        input: &[f32],
        shape: Nhwc,
        os: Nhwc,
        out: &mut [f32],
        threads: usize,
    ) {
        let cout = self.out_channels;
        let cin_g = self.in_channels / self.groups;
        let cog = cout / self.groups;
        let k = self.window.kernel[0] * self.window.kernel[1] * cin_g;
        let pixels = os.h * os.w;
        let tile_rows = im2col::tile_rows_f32(k, pixels);
        let tiles = im2col::tiles(shape.n, pixels, tile_rows);
        // Fills one tile and adds its product with every group's weights into `part`, the
        // tile's output rows (all groups' columns, pre-filled with the bias).
        let tile_gemms = |(img, first, rows): im2col::Tile,
                          buffer: &mut Vec<f32>,
                          part: &mut [f32],
                          gemm_threads: usize| {
            buffer.resize(rows * k, 0.0);
            for (g, wg) in w.iter().enumerate() {
                im2col::fill_f32(
                    input,
                    shape,
                    img,
                    g * cin_g,
                    cin_g,
                    &self.window,
                    os.w,
                    first,
                    buffer,
                );
                sgemm_into(
                    rows,
                    cog,
                    k,
                    buffer,
                    k,
                    wg,
                    cog,
                    &mut part[g * cog..],
                    cout,
                    gemm_threads,
                );
            }
        };
        let mut rest = out;
        let parts: Vec<&mut [f32]> = tiles
            .iter()
            .map(|tile| crate::gemm::take_front(&mut rest, tile.2 * cout))
            .collect();
        if threads <= 1 || tiles.len() < threads {
            let mut buffer = Vec::with_capacity(tile_rows * k);
            for (tile, part) in tiles.into_iter().zip(parts) {
                tile_gemms(tile, &mut buffer, part, threads);
            }
        } else {
            tiles
                .into_par_iter()
                .zip(parts)
                .for_each_init(Vec::new, |buffer, (tile, part)| {
                    tile_gemms(tile, buffer, part, 1)
                });
        }
    }
}

fn depthwise(input: &[f32], shape: Nhwc, taps: &[f32], window: &Window, os: Nhwc, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            let full = if window.kernel == [3, 3] {
                shape.c / 16 * 16
            } else {
                0
            };
            for c0 in (0..full).step_by(16) {
                // SAFETY: AVX-512 F was just detected; the block lies within the
                // channels, the window is 3x3 and `os` is its output shape.
                unsafe {
                    crate::x86_64::dwconv::dw3x3_f32_block16(
                        input, shape, taps, window, os, c0, out,
                    )
                };
            }
            if full < shape.c {
                // SAFETY: AVX-512 F (which implies FMA) was just detected.
                unsafe { depthwise_avx512(input, shape, taps, window, os, out, full) };
            }
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were just detected.
            return unsafe { depthwise_avx2(input, shape, taps, window, os, out) };
        }
    }
    depthwise_body::<false>(input, shape, taps, window, os, out, 0);
}

/// # Safety
/// The CPU supports AVX-512 F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn depthwise_avx512(
    input: &[f32],
    shape: Nhwc,
    taps: &[f32],
    window: &Window,
    os: Nhwc,
    out: &mut [f32],
    c_from: usize,
) {
    depthwise_body::<true>(input, shape, taps, window, os, out, c_from);
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(
    input: &[f32],
    shape: Nhwc,
    taps: &[f32],
    window: &Window,
    os: Nhwc,
    out: &mut [f32],
) {
    depthwise_body::<true>(input, shape, taps, window, os, out, 0);
}

/// Channels `c_from..` of every output pixel; output rows arrive pre-filled with the
/// bias. `FMA` selects `mul_add`, which is only fast where the target has FMA
/// instructions (elsewhere it is a libm call).
#[inline(always)]
fn depthwise_body<const FMA: bool>(
    input: &[f32],
    shape: Nhwc,
    taps: &[f32],
    window: &Window,
    os: Nhwc,
    out: &mut [f32],
    c_from: usize,
) {
    let c = shape.c;
    let [kh, kw] = window.kernel;
    for img in 0..shape.n {
        for oy in 0..os.h {
            for ox in 0..os.w {
                let o = os.index(img, oy, ox, 0);
                let acc = &mut out[o + c_from..o + c];
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
                        let x = &input[shape.index(img, iy as usize, ix as usize, c_from)..]
                            [..c - c_from];
                        let w = &taps[(ky * kw + kx) * c + c_from..][..c - c_from];
                        for ((acc, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                            *acc = if FMA {
                                x.mul_add(w, *acc)
                            } else {
                                *acc + x * w
                            };
                        }
                    }
                }
            }
        }
    }
}
