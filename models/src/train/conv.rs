//! Conv2d forward and backward (groups incl. depthwise, stride, dilation, pads) as
//! per-sample im2col + fp32 GEMM on the kernels crate, NCHW, ONNX weight layout
//! `[c_out][c_in/groups][kh][kw]`, so group g's weights are one contiguous row block.
//!
//! Backward recomputes the im2col columns instead of caching them: a few percent of the
//! GEMM time, and it keeps a batch's memory at the activations.

use qbench_kernels::fp32::sgemm_trans;
use rayon::prelude::*;

use super::{sum_partials, Buf, GROUP};

/// Resolved geometry of one convolution or pooling window on one input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Top and left pads (bottom and right only change the output size).
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Output size from ONNX's floor formula; `None` when the window does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        pads: [usize; 4],
    ) -> Option<Geom> {
        let eh = (k[0] - 1) * d[0] + 1;
        let ew = (k[1] - 1) * d[1] + 1;
        let ph = h + pads[0] + pads[2];
        let pw = w + pads[1] + pads[3];
        if ph < eh || pw < ew || s[0] == 0 || s[1] == 0 {
            return None;
        }
        Some(Geom {
            c,
            h,
            w,
            kh: k[0],
            kw: k[1],
            sh: s[0],
            sw: s[1],
            dh: d[0],
            dw: d[1],
            pt: pads[0],
            pl: pads[1],
            oh: (ph - eh) / s[0] + 1,
            ow: (pw - ew) / s[1] + 1,
        })
    }

    /// Input coordinate of output `o`, tap `t` along one axis, or `None` in the padding.
    #[inline]
    pub fn src(o: usize, t: usize, s: usize, d: usize, pad: usize, len: usize) -> Option<usize> {
        let v = (o * s + t * d).checked_sub(pad)?;
        (v < len).then_some(v)
    }
}

/// `cols[(ci·kh + i)·kw + j][oy·ow + ox]` for every input channel of one sample.
fn im2col(g: &Geom, x: &[f32], cols: &mut [f32]) {
    let p = g.oh * g.ow;
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((ci * g.kh + i) * g.kw + j) * p..][..p];
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    match Geom::src(oy, i, g.sh, g.dh, g.pt, g.h) {
                        None => dst.fill(0.0),
                        Some(y) => {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                *d = Geom::src(ox, j, g.sw, g.dw, g.pl, g.w)
                                    .map_or(0.0, |xx| plane[y * g.w + xx]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back into its input pixel.
fn col2im(g: &Geom, cols: &[f32], dx: &mut [f32]) {
    let p = g.oh * g.ow;
    for ci in 0..g.c {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((ci * g.kh + i) * g.kw + j) * p..][..p];
                for oy in 0..g.oh {
                    let Some(y) = Geom::src(oy, i, g.sh, g.dh, g.pt, g.h) else {
                        continue;
                    };
                    for ox in 0..g.ow {
                        if let Some(xx) = Geom::src(ox, j, g.sw, g.dw, g.pl, g.w) {
                            plane[y * g.w + xx] += row[oy * g.ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// A convolution's fixed shape: geometry on the input, output channels, groups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub g: Geom,
    pub cout: usize,
    pub groups: usize,
}

impl ConvShape {
    fn k_per_group(&self) -> usize {
        self.g.c / self.groups * self.g.kh * self.g.kw
    }
}

/// `y = conv(x, w) + b` over the batch.
pub(crate) fn forward(s: &ConvShape, x: &Buf, w: &[f32], b: Option<&[f32]>) -> Buf {
    let n = x.shape[0];
    let p = s.g.oh * s.g.ow;
    let (kg, cog) = (s.k_per_group(), s.cout / s.groups);
    let in_sz = x.per_sample();
    let mut y = Buf::zeros(vec![n, s.cout, s.g.oh, s.g.ow]);
    y.data
        .par_chunks_mut(s.cout * p)
        .zip(x.data.par_chunks(in_sz))
        .for_each_init(
            || vec![0.0f32; kg * s.groups * p],
            |cols, (ys, xs)| {
                im2col(&s.g, xs, cols);
                for gi in 0..s.groups {
                    let wg = &w[gi * cog * kg..(gi + 1) * cog * kg];
                    let cg = &cols[gi * kg * p..(gi + 1) * kg * p];
                    let out = &mut ys[gi * cog * p..(gi + 1) * cog * p];
                    sgemm_trans(cog, p, kg, wg, false, cg, false, out, false, 1);
                }
                if let Some(b) = b {
                    for (co, row) in ys.chunks_mut(p).enumerate() {
                        row.iter_mut().for_each(|v| *v += b[co]);
                    }
                }
            },
        );
    y
}

/// Gradients of the input, the weights and the bias given `dy`.
pub(crate) fn backward(s: &ConvShape, x: &Buf, w: &[f32], dy: &Buf) -> (Buf, Vec<f32>, Vec<f32>) {
    let p = s.g.oh * s.g.ow;
    let (kg, cog) = (s.k_per_group(), s.cout / s.groups);
    let in_sz = x.per_sample();
    let out_sz = s.cout * p;
    let mut dx = Buf::zeros(x.shape.clone());
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
        .data
        .par_chunks_mut(GROUP * in_sz)
        .zip(x.data.par_chunks(GROUP * in_sz))
        .zip(dy.data.par_chunks(GROUP * out_sz))
        .map(|((dxs, xs), dys)| {
            let mut dw = vec![0.0f32; w.len()];
            let mut db = vec![0.0f32; s.cout];
            let mut cols = vec![0.0f32; kg * s.groups * p];
            let mut dcols = vec![0.0f32; kg * s.groups * p];
            for ((dxi, xi), dyi) in dxs
                .chunks_mut(in_sz)
                .zip(xs.chunks(in_sz))
                .zip(dys.chunks(out_sz))
            {
                im2col(&s.g, xi, &mut cols);
                for gi in 0..s.groups {
                    let wg = &w[gi * cog * kg..(gi + 1) * cog * kg];
                    let dyg = &dyi[gi * cog * p..(gi + 1) * cog * p];
                    let cg = &cols[gi * kg * p..(gi + 1) * kg * p];
                    // dW_g += dY_g · cols_gᵀ; dcols_g = W_gᵀ · dY_g.
                    let dwg = &mut dw[gi * cog * kg..(gi + 1) * cog * kg];
                    sgemm_trans(cog, kg, p, dyg, false, cg, true, dwg, true, 1);
                    let dcg = &mut dcols[gi * kg * p..(gi + 1) * kg * p];
                    sgemm_trans(kg, p, cog, wg, true, dyg, false, dcg, false, 1);
                }
                for (co, row) in dyi.chunks(p).enumerate() {
                    db[co] += row.iter().sum::<f32>();
                }
                col2im(&s.g, &dcols, dxi);
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (dx, sum_partials(dws, w.len()), sum_partials(dbs, s.cout))
}
