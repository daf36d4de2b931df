//! Op bodies the transformer encoders need, on plain row-major tensors with ONNX
//! semantics: LayerNormalization, GELU and Erf, ReduceSum/ReduceMean, LpNormalization,
//! Range and Cast, with ONNX's shape rules and errors. The row loops that run on every
//! token (layer norm, GELU's erf) are `qbench_kernels::fmath`'s vectorised ones: written
//! as plain scalar loops they cost a transformer more than its int8 GEMMs. Nothing here
//! knows about NHWC: the executor hands these ops NCHW/plain tensors.

use crate::budget::check_shape;
use crate::error::{tensor_err, ModelError, Result};
use crate::exec::ops::norm_axis;
use crate::ir::CastTo;
use crate::tensor::{Data, Tensor};

/// `(x − mean) / sqrt(var + ε) · scale + bias`, mean and (biased) variance over the axes
/// from `axis` to the last (ONNX LayerNormalization, opset 17). `scale` and `bias` have
/// the shape of those trailing axes (or broadcast to it as one value).
pub fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    epsilon: f32,
    threads: usize,
) -> Result<Tensor> {
    let shape = x.shape();
    let a = norm_axis(axis, shape.len())?;
    let row: usize = shape[a..].iter().product();
    let params = |t: &Tensor, what: &str| -> Result<Vec<f32>> {
        let v = t.f32s()?;
        match v.len() {
            n if n == row => Ok(v.to_vec()),
            1 => Ok(vec![v[0]; row]),
            n => tensor_err(format!(
                "LayerNormalization {what} has {n} values, the normalised axes {:?} hold {row}",
                &shape[a..]
            )),
        }
    };
    let g = params(scale, "scale")?;
    let b = match bias {
        Some(t) => params(t, "bias")?,
        None => vec![0.0; row],
    };
    let mut y = x.f32s()?.to_vec();
    if row > 0 {
        super::rows::for_rows(&mut y, row, threads, |rows| {
            qbench_kernels::fmath::layer_norm_rows(rows, &g, &b, epsilon)
        });
    }
    Tensor::new(shape.to_vec(), y)
}

pub use qbench_kernels::fmath::erf;

/// GELU, exact form (BERT's): `x/2 · (1 + erf(x/√2))`, vectorised at the widest width
/// the kernel rung allows (the same bits at every width).
pub fn gelu_erf(v: &mut [f32]) {
    qbench_kernels::fmath::gelu_erf(v);
}

/// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(v: &mut [f32]) {
    const C: f32 = 0.797_884_6; // √(2/π)
    for x in v {
        *x = 0.5 * *x * (1.0 + (C * (*x + 0.044_715 * *x * *x * *x)).tanh());
    }
}

/// Which reduction [`reduce`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Sum,
    Mean,
}

/// ReduceSum / ReduceMean over `axes` (ONNX semantics: `None` or empty reduces every axis
/// unless `noop_with_empty_axes`, in which case the input is returned unchanged).
pub fn reduce(
    x: &Tensor,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
    how: Reduction,
) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    let rank = shape.len();
    let axes = axes.unwrap_or(&[]);
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let mut reduced = vec![axes.is_empty(); rank];
    for &ax in axes {
        let a = norm_axis(ax, rank)?;
        if std::mem::replace(&mut reduced[a], true) {
            return tensor_err(format!("reduce axes {axes:?} name axis {a} twice"));
        }
    }
    let out_full: Vec<usize> = (0..rank)
        .map(|i| if reduced[i] { 1 } else { shape[i] })
        .collect();
    let out_len: usize = out_full.iter().product();
    let xv = x.f32s()?;
    let mut out = vec![0f32; out_len];
    let out_strides = crate::tensor::strides(&out_full);
    // Walk the input in order; each element adds into the output slot whose index drops
    // the reduced axes (an odometer over the input shape).
    let mut idx = vec![0usize; rank];
    let mut o = 0usize;
    for &v in xv {
        out[o] += v;
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            if !reduced[ax] {
                o += out_strides[ax];
            }
            if idx[ax] < shape[ax] {
                break;
            }
            if !reduced[ax] {
                o -= out_strides[ax] * idx[ax];
            }
            idx[ax] = 0;
        }
    }
    if how == Reduction::Mean {
        let count: usize = (0..rank)
            .filter(|&i| reduced[i])
            .map(|i| shape[i])
            .product();
        let inv = 1.0 / count.max(1) as f32;
        out.iter_mut().for_each(|v| *v *= inv);
    }
    let out_shape = if keepdims {
        out_full
    } else {
        (0..rank)
            .filter(|&i| !reduced[i])
            .map(|i| shape[i])
            .collect()
    };
    Tensor::new(out_shape, out)
}

/// `x / ‖x‖_p` along `axis` (p = 1 or 2). A slice whose norm is zero stays zero (as
/// tract does and as sentence-transformers' `F.normalize` does) instead of becoming NaN.
pub fn lp_normalize(x: &Tensor, axis: i64, p: u8) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    let a = norm_axis(axis, shape.len())?;
    let (outer, n, inner) = (
        shape[..a].iter().product::<usize>(),
        shape[a],
        shape[a + 1..].iter().product::<usize>(),
    );
    let mut y = x.f32s()?.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let norm = match p {
                1 => (0..n).map(|j| y[at(j)].abs()).sum::<f32>(),
                2 => (0..n).map(|j| y[at(j)] * y[at(j)]).sum::<f32>().sqrt(),
                _ => return tensor_err(format!("LpNormalization p = {p}: only 1 and 2")),
            };
            let inv = if norm == 0.0 { 1.0 } else { 1.0 / norm };
            for j in 0..n {
                y[at(j)] *= inv;
            }
        }
    }
    Tensor::new(shape, y)
}

/// ONNX Range: `start, start + delta, ...` while below `limit` (above, for a negative
/// delta); all three scalars of one dtype, the result of that dtype.
pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    for (what, t) in [("start", start), ("limit", limit), ("delta", delta)] {
        if t.len() != 1 {
            return tensor_err(format!(
                "Range {what} must be a scalar, has shape {:?}",
                t.shape()
            ));
        }
    }
    match (start.data(), limit.data(), delta.data()) {
        (Data::I64(s), Data::I64(l), Data::I64(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return tensor_err("Range delta is 0");
            }
            // In f64: `l - s` overflows i64 for far-apart bounds. A count past usize
            // saturates and the budget refuses it.
            let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0) as usize;
            check_shape(&"the Range output", &[n], 8)?;
            (0..n as i64)
                .map(|i| {
                    i.checked_mul(d)
                        .and_then(|x| x.checked_add(s))
                        .ok_or_else(|| ModelError::Tensor(format!("Range {s}, {l}, {d} overflows")))
                })
                .collect::<Result<Vec<i64>>>()
                .map(Tensor::from_i64s)
        }
        (Data::F32(s), Data::F32(l), Data::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0.0 || !d.is_finite() {
                return tensor_err(format!("Range delta is {d}"));
            }
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            check_shape(&"the Range output", &[n], 4)?;
            Tensor::new(vec![n], (0..n).map(|i| s + i as f32 * d).collect())
        }
        _ => tensor_err("Range inputs must share one dtype (f32 or i64)"),
    }
}

/// ONNX Cast between f32 and i64. f32 → i64 truncates toward zero, as ONNX and numpy do;
/// a non-finite or out-of-range value is an error rather than a silent saturation,
/// because here such a value is a token id gone wrong.
pub fn cast(x: &Tensor, to: CastTo) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    match (x.data(), to) {
        (Data::F32(_), CastTo::F32) | (Data::I64(_), CastTo::I64) => Ok(x.clone()),
        (Data::I64(v), CastTo::F32) => Tensor::new(shape, v.iter().map(|&i| i as f32).collect()),
        (Data::F32(v), CastTo::I64) => {
            let out = v
                .iter()
                .map(|&f| {
                    // 2^63 is exactly representable; anything at or past it is out of range.
                    if f.is_finite() && f.abs() < 9.223_372e18 {
                        Ok(f.trunc() as i64)
                    } else {
                        tensor_err(format!("Cast to int64 of {f}"))
                    }
                })
                .collect::<Result<Vec<i64>>>()?;
            Tensor::new_i64(shape, out)
        }
    }
}
