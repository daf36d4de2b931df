//! MaxPool, AveragePool and GlobalAveragePool forward and backward over NCHW planes,
//! planes in parallel. Padding never wins a max (it is −∞) and counts in an average
//! only with `count_include_pad`.

use rayon::prelude::*;

use super::conv::Geom;
use super::Buf;

/// Max pooling; also returns, per output, the flat in-plane index of the winner.
pub(crate) fn max_forward(g: &Geom, x: &Buf) -> (Buf, Vec<u32>) {
    let n = x.shape[0];
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let mut y = Buf::zeros(vec![n, g.c, g.oh, g.ow]);
    let mut arg = vec![0u32; y.data.len()];
    y.data
        .par_chunks_mut(op)
        .zip(arg.par_chunks_mut(op))
        .zip(x.data.par_chunks(ip))
        .for_each(|((ys, args), xs)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (mut best, mut at) = (f32::NEG_INFINITY, u32::MAX);
                    for i in 0..g.kh {
                        let Some(yy) = Geom::src(oy, i, g.sh, g.dh, g.pt, g.h) else {
                            continue;
                        };
                        for j in 0..g.kw {
                            if let Some(xx) = Geom::src(ox, j, g.sw, g.dw, g.pl, g.w) {
                                let v = xs[yy * g.w + xx];
                                // `>` keeps the first of equal values, as ONNX runtimes do.
                                if v > best || at == u32::MAX {
                                    (best, at) = (v, (yy * g.w + xx) as u32);
                                }
                            }
                        }
                    }
                    ys[oy * g.ow + ox] = best;
                    args[oy * g.ow + ox] = at;
                }
            }
        });
    (y, arg)
}

/// Routes each output gradient to its window's winner.
pub(crate) fn max_backward(g: &Geom, x_shape: &[usize], arg: &[u32], dy: &Buf) -> Buf {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let mut dx = Buf::zeros(x_shape.to_vec());
    dx.data
        .par_chunks_mut(ip)
        .zip(arg.par_chunks(op))
        .zip(dy.data.par_chunks(op))
        .for_each(|((dxs, args), dys)| {
            for (&a, &d) in args.iter().zip(dys) {
                if a != u32::MAX {
                    dxs[a as usize] += d;
                }
            }
        });
    dx
}

/// Divisor of output (oy, ox): the window size, or only its in-image taps.
fn divisor(g: &Geom, oy: usize, ox: usize, include_pad: bool) -> f32 {
    if include_pad {
        return (g.kh * g.kw) as f32;
    }
    let rows = (0..g.kh)
        .filter(|&i| Geom::src(oy, i, g.sh, g.dh, g.pt, g.h).is_some())
        .count();
    let cols = (0..g.kw)
        .filter(|&j| Geom::src(ox, j, g.sw, g.dw, g.pl, g.w).is_some())
        .count();
    (rows * cols).max(1) as f32
}

/// Visits every (output, input) pair of a window that lies inside the image.
fn for_taps(g: &Geom, mut f: impl FnMut(usize, usize)) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let o = oy * g.ow + ox;
            for i in 0..g.kh {
                let Some(yy) = Geom::src(oy, i, g.sh, g.dh, g.pt, g.h) else {
                    continue;
                };
                for j in 0..g.kw {
                    if let Some(xx) = Geom::src(ox, j, g.sw, g.dw, g.pl, g.w) {
                        f(o, yy * g.w + xx);
                    }
                }
            }
        }
    }
}

pub(crate) fn avg_forward(g: &Geom, x: &Buf, include_pad: bool) -> Buf {
    let n = x.shape[0];
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let div: Vec<f32> = (0..op)
        .map(|o| divisor(g, o / g.ow, o % g.ow, include_pad))
        .collect();
    let mut y = Buf::zeros(vec![n, g.c, g.oh, g.ow]);
    y.data
        .par_chunks_mut(op)
        .zip(x.data.par_chunks(ip))
        .for_each(|(ys, xs)| {
            for_taps(g, |o, i| ys[o] += xs[i]);
            for (v, d) in ys.iter_mut().zip(&div) {
                *v /= d;
            }
        });
    y
}

pub(crate) fn avg_backward(g: &Geom, x_shape: &[usize], dy: &Buf, include_pad: bool) -> Buf {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let div: Vec<f32> = (0..op)
        .map(|o| divisor(g, o / g.ow, o % g.ow, include_pad))
        .collect();
    let mut dx = Buf::zeros(x_shape.to_vec());
    dx.data
        .par_chunks_mut(ip)
        .zip(dy.data.par_chunks(op))
        .for_each(|(dxs, dys)| for_taps(g, |o, i| dxs[i] += dys[o] / div[o]));
    dx
}

/// `[n, c, h, w] → [n, c, 1, 1]`, the mean of each plane.
pub(crate) fn gap_forward(x: &Buf) -> Buf {
    let (n, c) = (x.shape[0], x.shape[1]);
    let hw: usize = x.shape[2..].iter().product();
    let data = x
        .data
        .chunks(hw)
        .map(|p| p.iter().sum::<f32>() / hw as f32)
        .collect();
    Buf::new(vec![n, c, 1, 1], data)
}

pub(crate) fn gap_backward(x_shape: &[usize], dy: &Buf) -> Buf {
    let hw: usize = x_shape[2..].iter().product();
    let mut dx = Buf::zeros(x_shape.to_vec());
    for (plane, &d) in dx.data.chunks_mut(hw).zip(&dy.data) {
        plane.fill(d / hw as f32);
    }
    dx
}
