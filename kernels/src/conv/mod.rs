//! int8 2-D convolution in NHWC on the GEMM ladder, and the fp32 convolution baseline.
//!
//! A convolution is packed once ([`PackedConv`]) and then run on any batch of inputs:
//! - **pointwise** (1x1, stride 1, no padding, one group): the NHWC input already is the
//!   `(n·h·w) × c` activation matrix, so it goes straight to GEMM, no copy;
//! - **depthwise** (groups = channels, one output per channel): its own kernel
//!   ([`depthwise`]), vectorised across channels;
//! - **everything else** (any kernel, stride, dilation, asymmetric padding, groups):
//!   im2col in row tiles that stay in cache ([`im2col`]), each tile multiplied by the
//!   group's packed weights with the same GEMM micro-kernels as a Linear layer.
//!
//! Weights arrive as ONNX/PyTorch lay them out, `[c_out][c_in / groups][kh][kw]` s8, with
//! zero points per output channel; outputs are requantized u8 (with a fused clamp for
//! ReLU/ReLU6) or dequantized f32, with the arithmetic of [`crate::reference`].

pub(crate) mod depthwise;
pub mod fp32;
mod im2col;

use crate::error::KernelError;
use crate::gemm::{self, take_front, Dequant, MatA, MatB, PackedB, Requant, Scales};
use crate::isa::{self, Rung};
use crate::nhwc::{Nhwc, Window};
use rayon::prelude::*;

/// Convolution weights as ONNX stores them: `[c_out][c_in / groups][kh][kw]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvWeights<'a> {
    pub data: &'a [i8],
    pub out_channels: usize,
    /// Input channels seen by each group (`c_in / groups`).
    pub in_channels_per_group: usize,
    pub kernel: [usize; 2],
    /// 1 value (per tensor) or `out_channels` values, in -128..=127.
    pub zero_points: &'a [i32],
}

impl ConvWeights<'_> {
    /// Weight of output channel `co`, input channel `ci` (within its group), tap (ky, kx).
    pub fn at(&self, co: usize, ci: usize, ky: usize, kx: usize) -> i8 {
        let [kh, kw] = self.kernel;
        self.data[((co * self.in_channels_per_group + ci) * kh + ky) * kw + kx]
    }

    pub fn zero_point_of(&self, co: usize) -> i32 {
        if self.zero_points.len() == 1 {
            self.zero_points[0]
        } else {
            self.zero_points[co]
        }
    }

    fn validate(&self, groups: usize) -> Result<(), KernelError> {
        let [kh, kw] = self.kernel;
        let want = self.out_channels * self.in_channels_per_group * kh * kw;
        if self.data.len() != want {
            return Err(KernelError::Shape(format!(
                "conv weights: {}x{}x{kh}x{kw} needs {want} values, got {}",
                self.out_channels,
                self.in_channels_per_group,
                self.data.len()
            )));
        }
        if groups == 0 || !self.out_channels.is_multiple_of(groups) {
            return Err(KernelError::Shape(format!(
                "conv: {} output channels do not split into {groups} groups",
                self.out_channels
            )));
        }
        if self.zero_points.len() != 1 && self.zero_points.len() != self.out_channels {
            return Err(KernelError::Shape(format!(
                "conv weight zero points: expected 1 or {} values, got {}",
                self.out_channels,
                self.zero_points.len()
            )));
        }
        if let Some(z) = self.zero_points.iter().find(|z| !(-128..=127).contains(*z)) {
            return Err(KernelError::Param(format!(
                "conv weight zero point {z} is outside -128..=127"
            )));
        }
        Ok(())
    }
}

/// How a packed convolution runs.
enum Plan {
    /// 1x1, stride 1, no padding, one group: GEMM on the input as it lies.
    Pointwise(PackedB),
    /// groups = c_in = c_out: taps × channels weights, `w − zw` widened to i16.
    Depthwise { taps: Vec<i16> },
    /// im2col tiles × one packed B per group (k = kh·kw·c_in_g, n = c_out_g).
    Im2col(Vec<PackedB>),
}

/// A convolution packed once for one rung, ready to run on any input size and batch.
pub struct PackedConv {
    plan: Plan,
    rung: Rung,
    window: Window,
    groups: usize,
    in_channels: usize,
    out_channels: usize,
}

impl PackedConv {
    /// Packs for the active rung. `window.kernel` must equal the weights' kernel.
    pub fn new(w: &ConvWeights, groups: usize, window: Window) -> Result<PackedConv, KernelError> {
        PackedConv::for_rung(w, groups, window, isa::active())
    }

    /// Packs for a given rung (fails when the CPU lacks it).
    pub fn for_rung(
        w: &ConvWeights,
        groups: usize,
        window: Window,
        rung: Rung,
    ) -> Result<PackedConv, KernelError> {
        w.validate(groups)?;
        if window.kernel != w.kernel {
            return Err(KernelError::Shape(format!(
                "conv: window kernel {:?} differs from the weights' {:?}",
                window.kernel, w.kernel
            )));
        }
        if let Some(reason) = rung.unavailable_reason() {
            return Err(KernelError::Param(reason));
        }
        let in_channels = w.in_channels_per_group * groups;
        let out_per_group = w.out_channels / groups;
        let [kh, kw] = w.kernel;
        let is_pointwise =
            groups == 1 && w.kernel == [1, 1] && window.stride == [1, 1] && window.pads == [0; 4];
        let is_depthwise = groups > 1 && w.in_channels_per_group == 1 && out_per_group == 1;
        let plan = if is_depthwise {
            let c = w.out_channels;
            let mut taps = vec![0i16; kh * kw * c];
            for ch in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        taps[(ky * kw + kx) * c + ch] =
                            (i32::from(w.at(ch, 0, ky, kx)) - w.zero_point_of(ch)) as i16;
                    }
                }
            }
            Plan::Depthwise { taps }
        } else {
            let k = kh * kw * w.in_channels_per_group;
            let mut packed = Vec::with_capacity(groups);
            for g in 0..groups {
                // B[k][n] with k = (ky·kw + kx)·c_in_g + ci: the order im2col writes a row in.
                let mut b = vec![0i8; k * out_per_group];
                for j in 0..out_per_group {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for ci in 0..w.in_channels_per_group {
                                let row = (ky * kw + kx) * w.in_channels_per_group + ci;
                                b[row * out_per_group + j] =
                                    w.at(g * out_per_group + j, ci, ky, kx);
                            }
                        }
                    }
                }
                let zero_points: Vec<i32> = (0..out_per_group)
                    .map(|j| w.zero_point_of(g * out_per_group + j))
                    .collect();
                let mat = MatB {
                    data: &b,
                    rows: k,
                    cols: out_per_group,
                    zero_points: &zero_points,
                    transposed: false,
                };
                packed.push(PackedB::for_rung(&mat, rung)?);
            }
            if is_pointwise {
                Plan::Pointwise(packed.pop().expect("one group"))
            } else {
                Plan::Im2col(packed)
            }
        };
        Ok(PackedConv {
            plan,
            rung,
            window,
            groups,
            in_channels,
            out_channels: w.out_channels,
        })
    }

    /// The output shape for an input shape, or why the input does not fit.
    pub fn output_shape(&self, input: Nhwc) -> Result<Nhwc, KernelError> {
        if input.c != self.in_channels {
            return Err(KernelError::Shape(format!(
                "conv expects {} input channels, the input has {}",
                self.in_channels, input.c
            )));
        }
        let (oh, ow) = self.window.output_hw(input.h, input.w)?;
        Ok(Nhwc::new(input.n, oh, ow, self.out_channels))
    }

    pub fn rung(&self) -> Rung {
        self.rung
    }

    /// `pointwise`, `depthwise` or `im2col`: which path this convolution takes.
    pub fn path(&self) -> &'static str {
        match self.plan {
            Plan::Pointwise(_) => "pointwise",
            Plan::Depthwise { .. } => "depthwise",
            Plan::Im2col(_) => "im2col",
        }
    }
}

impl std::fmt::Debug for PackedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv")
            .field("path", &self.path())
            .field("rung", &self.rung)
            .field("window", &self.window)
            .field("groups", &self.groups)
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .finish()
    }
}

/// Requantized u8 output. `p` is the GEMM requantization with per-output-channel bias and
/// multipliers (`sa · sw[co] / s_out`). Runs on `threads` threads (1 = the calling thread
/// only). Returns the output shape and the kernel that ran.
pub fn conv_requant(
    input: &[u8],
    shape: Nhwc,
    in_zero_point: i32,
    conv: &PackedConv,
    p: &Requant,
    out: &mut [u8],
    threads: usize,
) -> Result<(Nhwc, &'static str), KernelError> {
    let out_shape = check_io(input, shape, in_zero_point, conv, out.len())?;
    p.validate(conv.out_channels)?;
    let name = run(
        input,
        shape,
        in_zero_point,
        conv,
        out_shape,
        &mut Stage::Requant { p, out },
        threads,
    )?;
    Ok((out_shape, name))
}

/// Dequantized f32 output (`y = acc · sa · sw[co] + bias[co]`). `p.a_scale` must be per
/// tensor. Runs on `threads` threads.
pub fn conv_dequant(
    input: &[u8],
    shape: Nhwc,
    in_zero_point: i32,
    conv: &PackedConv,
    p: &Dequant,
    out: &mut [f32],
    threads: usize,
) -> Result<(Nhwc, &'static str), KernelError> {
    let out_shape = check_io(input, shape, in_zero_point, conv, out.len())?;
    if matches!(p.a_scale, Scales::PerRow(_)) {
        return Err(KernelError::Param(
            "conv: the activation scale must be per tensor".into(),
        ));
    }
    p.validate(1, conv.out_channels)?;
    let name = run(
        input,
        shape,
        in_zero_point,
        conv,
        out_shape,
        &mut Stage::Dequant { p, out },
        threads,
    )?;
    Ok((out_shape, name))
}

fn check_io(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    conv: &PackedConv,
    out_len: usize,
) -> Result<Nhwc, KernelError> {
    shape.check("conv input", input.len())?;
    if !(0..=255).contains(&za) {
        return Err(KernelError::Param(format!(
            "conv input zero point {za} is outside 0..=255"
        )));
    }
    let out_shape = conv.output_shape(shape)?;
    out_shape.check("conv output", out_len)?;
    Ok(out_shape)
}

/// The output stage of one call, borrowed through the whole run.
pub(crate) enum Stage<'p, 'o> {
    Requant {
        p: &'p Requant<'p>,
        out: &'o mut [u8],
    },
    Dequant {
        p: &'p Dequant<'p>,
        out: &'o mut [f32],
    },
}

impl<'p, 'o> Stage<'p, 'o> {
    /// Splits off the first `values` output values into a stage of their own; `self`
    /// keeps the rest.
    fn split_off_front(&mut self, values: usize) -> Stage<'p, 'o> {
        match self {
            Stage::Requant { p, out } => Stage::Requant {
                p,
                out: take_front(out, values),
            },
            Stage::Dequant { p, out } => Stage::Dequant {
                p,
                out: take_front(out, values),
            },
        }
    }
}

/// Per-channel parameters of group `g` (`len` channels), or the single shared value.
fn group_slice<T>(values: &[T], g: usize, len: usize) -> &[T] {
    if values.len() == 1 {
        values
    } else {
        &values[g * len..(g + 1) * len]
    }
}

/// Runs one GEMM whose rows land at `out_offset` with row stride `ldc` in the output.
fn gemm_into(
    a: &MatA,
    b: &PackedB,
    g: usize,
    stage: &mut Stage,
    out_offset: usize,
    ldc: usize,
    threads: usize,
) -> Result<&'static str, KernelError> {
    let n = b.n();
    match stage {
        Stage::Requant { p, out } => {
            let bias = p.bias.map(|b| group_slice(b, g, n));
            let part = Requant {
                bias,
                multiplier: group_slice(p.multiplier, g, n),
                ..**p
            };
            gemm::gemm_requant(a, b, &part, &mut out[out_offset..], ldc, threads)
        }
        Stage::Dequant { p, out } => {
            let part = Dequant {
                a_scale: p.a_scale,
                b_scale: group_slice(p.b_scale, g, n),
                bias: p.bias.map(|b| group_slice(b, g, n)),
            };
            gemm::gemm_dequant(a, b, &part, &mut out[out_offset..], ldc, threads)
        }
    }
}

fn run(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    conv: &PackedConv,
    out_shape: Nhwc,
    stage: &mut Stage,
    threads: usize,
) -> Result<&'static str, KernelError> {
    match &conv.plan {
        Plan::Pointwise(b) => {
            let rows = shape.n * shape.h * shape.w;
            let a = MatA::new(input, rows, shape.c, za);
            gemm_into(&a, b, 0, stage, 0, conv.out_channels, threads)
        }
        Plan::Depthwise { taps } => {
            let image = |input: &[u8], shape: Nhwc, out_shape: Nhwc, stage: &mut Stage| {
                depthwise::run(
                    input,
                    shape,
                    za,
                    taps,
                    &conv.window,
                    out_shape,
                    conv.rung,
                    stage,
                )
            };
            let [kh, kw] = conv.window.kernel;
            let threads = gemm::split::useful_threads(out_shape.len() * kh * kw, threads);
            if threads <= 1 || out_shape.is_empty() {
                return image(input, shape, out_shape, stage);
            }
            // Bands of output rows, each image cut into enough bands that every thread
            // gets one even at batch 1. A band's output rows are contiguous; its input is
            // the rows its taps reach, with the top padding it still sees.
            let per_image = threads.div_ceil(shape.n).min(out_shape.h);
            let jobs: Vec<_> = (0..shape.n)
                .flat_map(|img| {
                    (0..per_image).map(move |b| {
                        let (y0, y1) = (
                            out_shape.h * b / per_image,
                            out_shape.h * (b + 1) / per_image,
                        );
                        (img, y0, y1)
                    })
                })
                .filter(|&(_, y0, y1)| y0 < y1)
                .map(|(img, y0, y1)| {
                    let out_band = Nhwc::new(1, y1 - y0, out_shape.w, out_shape.c);
                    (img, y0, y1, stage.split_off_front(out_band.len()))
                })
                .collect();
            jobs.into_par_iter()
                .map(|(img, y0, y1, mut part)| {
                    let w = &conv.window;
                    let (s, d, top) = (w.stride[0], w.dilation[0], w.pads[0]);
                    let origin = (y0 * s) as isize - top as isize;
                    let first = origin.max(0) as usize;
                    let end = ((y1 - 1) * s + (kh - 1) * d + 1)
                        .saturating_sub(top)
                        .min(shape.h)
                        .max(first);
                    let mut window = *w;
                    window.pads[0] = (-origin).max(0) as usize;
                    let in_band = Nhwc::new(1, end - first, shape.w, shape.c);
                    let row = shape.w * shape.c;
                    let start = (img * shape.h + first) * row;
                    let input = &input[start..start + in_band.len()];
                    let out_band = Nhwc::new(1, y1 - y0, out_shape.w, out_shape.c);
                    depthwise::run(
                        input, in_band, za, taps, &window, out_band, conv.rung, &mut part,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|names| names[0])
        }
        Plan::Im2col(groups) => {
            im2col_gemms(input, shape, za, conv, groups, out_shape, stage, threads)
        }
    }
}

/// The im2col path: the output pixels of each image in tiles of rows that stay in cache,
/// each tile filled and then multiplied by every group's weights. With several threads,
/// whole tiles (fill and multiply) are shared out when there are at least as many tiles
/// as threads; otherwise the tiles run in turn, each GEMM on all threads.
#[allow(clippy::too_many_arguments)]
fn im2col_gemms(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    conv: &PackedConv,
    groups: &[PackedB],
    out_shape: Nhwc,
    stage: &mut Stage,
    threads: usize,
) -> Result<&'static str, KernelError> {
    let pixels = out_shape.h * out_shape.w;
    let cin_g = conv.in_channels / conv.groups;
    let k = conv.window.kernel[0] * conv.window.kernel[1] * cin_g;
    let mut tile_rows = im2col::tile_rows(k, pixels);
    let tiles_per_image = pixels.div_ceil(tile_rows.max(1));
    if threads > 1 && shape.n * tiles_per_image >= threads {
        // Shared out whole, the tiles should come in a multiple of the threads, or the
        // last round leaves threads idle (7 tiles on 2 threads measured 1.59x, not ~2x):
        // a few more, slightly smaller tiles.
        let balanced = (shape.n * tiles_per_image).next_multiple_of(threads);
        tile_rows = pixels.div_ceil(balanced.div_ceil(shape.n)).max(1);
    }
    let tiles = im2col::tiles(shape.n, pixels, tile_rows);
    // Fills one tile and multiplies it by every group's weights into `part`, which holds
    // the tile's output rows (all groups' columns) from its first one.
    let tile_gemms = |(img, first, rows): im2col::Tile,
                      buffer: &mut Vec<u8>,
                      part: &mut Stage,
                      gemm_threads: usize| {
        let mut name = "";
        buffer.resize(rows * k, 0);
        for (g, b) in groups.iter().enumerate() {
            im2col::fill_u8(
                input,
                shape,
                img,
                g * cin_g,
                cin_g,
                &conv.window,
                out_shape.w,
                first,
                za as u8,
                buffer,
            );
            let a = MatA::new(buffer, rows, k, za);
            name = gemm_into(&a, b, g, part, g * b.n(), conv.out_channels, gemm_threads)?;
        }
        Ok::<_, KernelError>(name)
    };
    let cout = conv.out_channels;
    if threads <= 1 || tiles.len() < threads {
        let mut buffer = Vec::with_capacity(tile_rows * k);
        let mut name = "";
        for tile in tiles {
            let mut part = stage.split_off_front(tile.2 * cout);
            name = tile_gemms(tile, &mut buffer, &mut part, threads)?;
        }
        return Ok(name);
    }
    let jobs: Vec<_> = tiles
        .into_iter()
        .map(|tile| (tile, stage.split_off_front(tile.2 * cout)))
        .collect();
    let names = jobs
        .into_par_iter()
        .map_init(Vec::new, |buffer, (tile, mut part)| {
            tile_gemms(tile, buffer, &mut part, 1)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names[0])
}
