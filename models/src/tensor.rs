//! `Tensor`: a dense, contiguous, row-major array of f32 (activations, weights) or i64
//! (shapes and indices, which ONNX computes with), and the shape arithmetic around it
//! (numpy broadcasting, transposition).
//!
//! It owns no layout knowledge: a tensor is whatever order its shape says. The executor
//! decides when an activation is physically NHWC (see `exec`).
//!
//! **Invariant:** the product of a tensor's non-zero dims fits in `usize`
//! ([`crate::budget::numel`]), checked by every constructor. So code holding a tensor may
//! multiply any of its dims without overflow; shapes that do not come from a tensor
//! (broadcasts, op outputs) go through [`crate::budget::check_shape`] before anything is
//! allocated for them.

use crate::budget;
use crate::error::{tensor_err, Result};

/// The element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense row-major tensor. `shape` may be empty (a scalar, one element).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

/// The element count of `shape`, or an error when it breaks the invariant (see the
/// module docs).
fn numel(shape: &[usize]) -> Result<usize> {
    match budget::numel(shape) {
        Some(n) => Ok(n),
        None => tensor_err(format!(
            "shape {shape:?} has more elements than this machine can address"
        )),
    }
}

impl Tensor {
    /// An f32 tensor; an error when `data` does not hold `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n = numel(&shape)?;
        if n != data.len() {
            return tensor_err(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            ));
        }
        Ok(Tensor {
            shape,
            data: Data::F32(data),
        })
    }

    /// An i64 tensor; an error when `data` does not hold `shape`.
    pub fn new_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor> {
        let n = numel(&shape)?;
        if n != data.len() {
            return tensor_err(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            ));
        }
        Ok(Tensor {
            shape,
            data: Data::I64(data),
        })
    }

    /// An f32 tensor of zeros; an error when `shape` overflows or is over the memory
    /// budget (checked before allocating). For shapes read from a file.
    pub fn try_zeros(shape: Vec<usize>) -> Result<Tensor> {
        let n = budget::check_shape(&"a tensor", &shape, 4)?;
        Ok(Tensor {
            shape,
            data: Data::F32(vec![0.0; n]),
        })
    }

    /// [`Tensor::try_zeros`] for shapes the caller knows are sane (its own constants, or
    /// graph inputs whose declared shapes import checked).
    ///
    /// # Panics
    /// When `try_zeros` would return an error.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        match Tensor::try_zeros(shape) {
            Ok(t) => t,
            Err(e) => panic!("Tensor::zeros: {e}"),
        }
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: Data::F32(vec![v]),
        }
    }

    /// A 1-D i64 tensor (a shape or a list of indices).
    pub fn from_i64s(v: Vec<i64>) -> Tensor {
        Tensor {
            shape: vec![v.len()],
            data: Data::I64(v),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (the buffer's length; equal to the shape's product).
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// The bytes the elements take (4 per f32, 8 per i64).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => std::mem::size_of_val(v.as_slice()),
            Data::I64(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn is_f32(&self) -> bool {
        matches!(self.data, Data::F32(_))
    }

    /// The f32 elements, or an error naming the dtype found.
    pub fn f32s(&self) -> Result<&[f32]> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => tensor_err("expected an f32 tensor, found i64"),
        }
    }

    pub fn f32s_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => tensor_err("expected an f32 tensor, found i64"),
        }
    }

    /// The i64 elements, or an error naming the dtype found.
    pub fn i64s(&self) -> Result<&[i64]> {
        match &self.data {
            Data::I64(v) => Ok(v),
            Data::F32(_) => tensor_err("expected an i64 tensor, found f32"),
        }
    }

    pub fn into_f32s(self) -> Result<Vec<f32>> {
        match self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => tensor_err("expected an f32 tensor, found i64"),
        }
    }

    /// The same elements under another shape with as many elements.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor> {
        if numel(&shape)? != self.len() {
            return tensor_err(format!(
                "cannot reshape {:?} ({} values) to {shape:?}",
                self.shape,
                self.len()
            ));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Axes permuted: output axis `i` is input axis `perm[i]`.
    pub fn transposed(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return tensor_err(format!("perm {perm:?} is not a permutation of rank {rank}"));
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let in_strides = strides(&self.shape);
        let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let data = match &self.data {
            Data::F32(v) => Data::F32(gather_strided(v, &out_shape, &src_strides)),
            Data::I64(v) => Data::I64(gather_strided(v, &out_shape, &src_strides)),
        };
        Ok(Tensor {
            shape: out_shape,
            data,
        })
    }

    /// Index of the largest element of each row of the last axis (first on ties; NaN
    /// compares as smaller than everything).
    pub fn argmax_rows(&self) -> Result<Vec<usize>> {
        let v = self.f32s()?;
        let row = self.shape.last().copied().unwrap_or(1).max(1);
        Ok(v.chunks(row)
            .map(|r| {
                let mut best = 0;
                for (i, &x) in r.iter().enumerate() {
                    if x > r[best] || r[best].is_nan() && !x.is_nan() {
                        best = i;
                    }
                }
                best
            })
            .collect())
    }
}

/// Row-major strides of `shape`, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Copies `src` walked with `src_strides` over `out_shape` into a dense vector. The
/// innermost axis is a tight loop; a stride of 0 broadcasts.
pub(crate) fn gather_strided<T: Copy>(
    src: &[T],
    out_shape: &[usize],
    src_strides: &[usize],
) -> Vec<T> {
    // Callers pass a tensor's shape or one `check_shape` passed: no overflow.
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    // Axes of size 1 never move the walk: dropping them keeps the odometer's carries
    // proportional to the axes that matter, whatever rank the shape has.
    let (out_shape, src_strides): (Vec<usize>, Vec<usize>) = out_shape
        .iter()
        .zip(src_strides)
        .filter(|(&d, _)| d != 1)
        .map(|(&d, &s)| (d, s))
        .unzip();
    let rank = out_shape.len();
    if rank == 0 {
        out.push(src[0]);
        return out;
    }
    let inner = out_shape[rank - 1];
    let inner_stride = src_strides[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    let mut base = 0usize;
    loop {
        if inner_stride == 1 {
            out.extend_from_slice(&src[base..base + inner]);
        } else {
            out.extend((0..inner).map(|i| src[base + i * inner_stride]));
        }
        // Odometer increment of the outer axes.
        let mut ax = rank - 1;
        loop {
            if ax == 0 {
                return out;
            }
            ax -= 1;
            idx[ax] += 1;
            base += src_strides[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            base -= src_strides[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
}

/// The numpy broadcast of two shapes, or an error naming both.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return tensor_err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Strides to read a tensor of `shape` as if broadcast to `to` (0 on broadcast axes).
pub(crate) fn broadcast_strides(shape: &[usize], to: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let off = to.len() - shape.len();
    (0..to.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                s[i - off]
            }
        })
        .collect()
}

/// `a op b` element-wise with numpy broadcasting, on f32 tensors.
pub fn broadcast_binary(a: &Tensor, b: &Tensor, op: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
    let shape = broadcast_shapes(a.shape(), b.shape())?;
    // [n, 1] op [1, n] is n² values: the one growing case, checked before allocating.
    budget::check_shape(&"a broadcast result", &shape, 4)?;
    let (av, bv) = (a.f32s()?, b.f32s()?);
    if a.shape() == shape.as_slice() && b.shape() == shape.as_slice() {
        let data = av.iter().zip(bv).map(|(&x, &y)| op(x, y)).collect();
        return Tensor::new(shape, data);
    }
    let ax = gather_strided(av, &shape, &broadcast_strides(a.shape(), &shape));
    let bx = gather_strided(bv, &shape, &broadcast_strides(b.shape(), &shape));
    let data = ax.iter().zip(&bx).map(|(&x, &y)| op(x, y)).collect();
    Tensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_index_arithmetic() {
        let t = Tensor::new(vec![2, 3, 4], (0..24).map(|i| i as f32).collect()).unwrap();
        let p = t.transposed(&[2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        let v = p.f32s().unwrap();
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    assert_eq!(v[(k * 2 + i) * 3 + j], (i * 12 + j * 4 + k) as f32);
                }
            }
        }
        assert!(t.transposed(&[0, 0, 1]).is_err());
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
        let a = Tensor::new(vec![2, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::new(vec![3], vec![10.0, 20.0, 30.0]).unwrap();
        let c = broadcast_binary(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.f32s().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Tensor::new(vec![2, 2], vec![0.0; 3]).is_err());
        assert!(Tensor::zeros(vec![2, 3]).reshaped(vec![4]).is_err());
        assert!(Tensor::from_i64s(vec![1]).f32s().is_err());
    }
}
