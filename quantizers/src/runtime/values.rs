//! The int8 runtime's values: u8 activations (NHWC at rank 4) with their affine
//! qparams, f32 tensors, and f32 tensors quantized once for the dynamic layers that read
//! them; quantizing into and out of them.

use qbench_kernels::Affine;
use qbench_kernels::Nhwc;
use qbench_models::tensor::Tensor;
use rayon::prelude::*;

use crate::error::{QuantError, Result};
use crate::qparams::{quantize, QSpec};

/// A u8 activation: data, physical shape (NHWC when `nhwc`), its scale and zero point.
#[derive(Clone, Debug)]
pub(super) struct U8Tensor {
    pub(super) data: Vec<u8>,
    pub(super) shape: Vec<usize>,
    pub(super) nhwc: bool,
    pub(super) q: Affine,
}

impl U8Tensor {
    pub(super) fn logical_shape(&self) -> Vec<usize> {
        if self.nhwc {
            let s = &self.shape;
            vec![s[0], s[3], s[1], s[2]]
        } else {
            self.shape.clone()
        }
    }

    pub(super) fn nhwc_dims(&self) -> Result<Nhwc> {
        if !self.nhwc {
            return Err(QuantError::Config {
                key: "runtime".into(),
                msg: format!("expected an NHWC activation, got shape {:?}", self.shape),
            });
        }
        let s = &self.shape;
        Ok(Nhwc::new(s[0], s[1], s[2], s[3]))
    }

    /// The data in logical (NCHW) order.
    pub(super) fn plain_data(&self) -> Vec<u8> {
        if !self.nhwc {
            return self.data.clone();
        }
        let [n, h, w, c] = [self.shape[0], self.shape[1], self.shape[2], self.shape[3]];
        let mut out = vec![0u8; self.data.len()];
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let src = ((b * h + y) * w + x) * c;
                    for ch in 0..c {
                        out[((b * c + ch) * h + y) * w + x] = self.data[src + ch];
                    }
                }
            }
        }
        out
    }

    pub(super) fn dequantize(&self) -> Result<Tensor> {
        let (s, z) = (self.q.scale, self.q.zero_point);
        let data = self
            .plain_data()
            .into_iter()
            .map(|v| (v as i32 - z) as f32 * s)
            .collect();
        Ok(Tensor::new(self.logical_shape(), data)?)
    }
}

/// Quantizes an f32 (NCHW) tensor; rank 4 comes out NHWC.
pub(super) fn quantize_tensor(t: &Tensor, q: Affine, qmin: i32, qmax: i32) -> Result<U8Tensor> {
    let x = t.f32s()?;
    let shape = t.shape();
    let quant = |v: f32| quantize(v, q.scale, q.zero_point, qmin, qmax) as u8;
    if shape.len() == 4 {
        let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        let mut data = vec![0u8; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    let src = ((b * c + ch) * h + y) * w;
                    for xx in 0..w {
                        data[((b * h + y) * w + xx) * c + ch] = quant(x[src + xx]);
                    }
                }
            }
        }
        Ok(U8Tensor {
            data,
            shape: vec![n, h, w, c],
            nhwc: true,
            q,
        })
    } else {
        Ok(U8Tensor {
            data: x.iter().map(|&v| quant(v)).collect(),
            shape: shape.to_vec(),
            nhwc: false,
            q,
        })
    }
}

#[derive(Clone, Debug)]
pub(super) enum QVal {
    F32(Tensor),
    U8(U8Tensor),
    /// An f32 tensor quantized for dynamic layers: rows of `k` bytes with the parameters
    /// of each row (or one pair for the whole tensor). Made once per tensor and shared by
    /// every dynamic layer reading it (a transformer's Q, K and V projections).
    Dyn(DynU8),
}

#[derive(Clone, Debug)]
pub(super) struct DynU8 {
    pub(super) data: Vec<u8>,
    /// The logical shape of the f32 tensor (last axis = k).
    pub(super) shape: Vec<usize>,
    pub(super) scales: Vec<f32>,
    pub(super) zero_points: Vec<i32>,
}

/// What a dynamic layer does to its activations on each call.
#[derive(Clone, Copy, Debug)]
pub(super) struct DynAct {
    pub(super) spec: QSpec,
    pub(super) per_row: bool,
}

impl DynAct {
    pub(super) fn qparams(&self, data: &[f32]) -> (f32, i32) {
        let (lo, hi) = qbench_kernels::quantize::min_max(data);
        if lo > hi {
            return self.spec.qparams_for_range(0.0, 0.0);
        }
        self.spec.qparams_for_range(lo, hi)
    }
}

/// Quantizes f32 rows with per-tensor or per-row parameters for a dynamic layer, on the
/// kernels' vector quantizer (bit-exact with `qparams::quantize`). Per row, on several
/// threads, the rows are shared out whole (each row's parameters depend on it alone).
pub(super) fn quantize_dynamic(
    x: &[f32],
    rows: usize,
    k: usize,
    act: DynAct,
    threads: usize,
) -> (Vec<u8>, Vec<f32>, Vec<i32>) {
    let mut q = vec![0u8; x.len()];
    let quantize = |x: &[f32], q: &mut [u8]| {
        let (s, z) = act.qparams(x);
        qbench_kernels::quantize::quantize_u8(x, s, z, act.spec.qmin as u8, act.spec.qmax as u8, q);
        (s, z)
    };
    if !act.per_row {
        let (s, z) = quantize(x, &mut q);
        return (q, vec![s], vec![z]);
    }
    let params: Vec<(f32, i32)> = if k == 0 {
        (0..rows).map(|_| quantize(&[], &mut [])).collect()
    } else if threads > 1 && rows > 1 && x.len() >= 1 << 14 {
        x.par_chunks(k)
            .zip(q.par_chunks_mut(k))
            .with_min_len(rows.div_ceil(threads))
            .map(|(x, q)| quantize(x, q))
            .collect()
    } else {
        x.chunks(k)
            .zip(q.chunks_mut(k))
            .map(|(x, q)| quantize(x, q))
            .collect()
    };
    let (scales, zps) = params.into_iter().unzip();
    (q, scales, zps)
}
