//! Gemm/Linear forward and backward: `y = x · op(W) + b` with `op(W) = Wᵀ` when
//! `trans_b` (PyTorch/ONNX Linear, W `[out][in]`), on the kernels crate's fp32 GEMM over
//! fixed row groups of the batch.

use qbench_kernels::fp32::sgemm_trans;
use rayon::prelude::*;

use super::{sum_partials, Buf, GROUP};

/// Rows of the batch per task: bigger than the conv group because a row is cheap.
const ROWS: usize = GROUP * 4;

/// `x [n][fin]`, W `[fout][fin]` (`trans_b`) or `[fin][fout]`.
pub(crate) fn forward(x: &Buf, w: &[f32], trans_b: bool, fout: usize, b: Option<&[f32]>) -> Buf {
    let (n, fin) = (x.shape[0], x.per_sample());
    let mut y = Buf::zeros(vec![n, fout]);
    y.data
        .par_chunks_mut(ROWS * fout)
        .zip(x.data.par_chunks(ROWS * fin))
        .for_each(|(ys, xs)| {
            let rows = xs.len() / fin;
            sgemm_trans(rows, fout, fin, xs, false, w, trans_b, ys, false, 1);
            if let Some(b) = b {
                for row in ys.chunks_mut(fout) {
                    super::add_into(row, b);
                }
            }
        });
    y
}

/// Gradients of x, W and b given `dy [n][fout]`.
pub(crate) fn backward(
    x: &Buf,
    w: &[f32],
    trans_b: bool,
    fout: usize,
    dy: &Buf,
) -> (Buf, Vec<f32>, Vec<f32>) {
    let fin = x.per_sample();
    let mut dx = Buf::zeros(x.shape.clone());
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
        .data
        .par_chunks_mut(ROWS * fin)
        .zip(x.data.par_chunks(ROWS * fin))
        .zip(dy.data.par_chunks(ROWS * fout))
        .map(|((dxs, xs), dys)| {
            let rows = xs.len() / fin;
            let mut dw = vec![0.0f32; w.len()];
            if trans_b {
                // dx = dy · W (W [fout][fin]); dW = dyᵀ · x.
                sgemm_trans(rows, fin, fout, dys, false, w, false, dxs, false, 1);
                sgemm_trans(fout, fin, rows, dys, true, xs, false, &mut dw, false, 1);
            } else {
                // dx = dy · Wᵀ (W [fin][fout]); dW = xᵀ · dy.
                sgemm_trans(rows, fin, fout, dys, false, w, true, dxs, false, 1);
                sgemm_trans(fin, fout, rows, xs, true, dys, false, &mut dw, false, 1);
            }
            let mut db = vec![0.0f32; fout];
            for row in dys.chunks(fout) {
                super::add_into(&mut db, row);
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (dx, sum_partials(dws, w.len()), sum_partials(dbs, fout))
}
