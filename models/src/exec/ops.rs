//! The executor's op bodies on plain tensors (ONNX semantics, row-major) and on NHWC
//! buffers (pooling, LRN, per-channel affine). Conv and the GEMMs call the kernels crate;
//! everything here is light compared to them and written for clarity first.

use qbench_kernels::fp32::sgemm;
use qbench_kernels::Nhwc;
use rayon::prelude::*;

use crate::budget::{self, check_shape};
use crate::error::{tensor_err, Result};
use crate::ir::Spatial;
use crate::tensor::{broadcast_shapes, broadcast_strides, Data, Tensor};

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return tensor_err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Output size of one spatial axis for a pool or conv window (ONNX, with `ceil_mode`:
/// a window must start inside the input or its begin pad).
pub fn pool_out(
    input: usize,
    pad_b: usize,
    pad_e: usize,
    k: usize,
    d: usize,
    s: usize,
    ceil: bool,
) -> Result<usize> {
    // k, d, s and the pads are below 2^20 (import checks them), so span cannot wrap;
    // the input's extent is a tensor dim, so only the sum with the pads can.
    let span = d * (k.max(1) - 1) + 1;
    let Some(total) = input.checked_add(pad_b).and_then(|t| t.checked_add(pad_e)) else {
        return tensor_err(format!("input {input} with pads {pad_b}+{pad_e} overflows"));
    };
    if total < span || s == 0 || k == 0 {
        return tensor_err(format!(
            "window {k} (dilation {d}) does not fit input {input} with pads {pad_b}+{pad_e}"
        ));
    }
    let mut out = if ceil {
        (total - span).div_ceil(s) + 1
    } else {
        (total - span) / s + 1
    };
    if ceil && (out - 1) * s >= input + pad_b {
        out -= 1;
    }
    Ok(out)
}

pub struct PoolGeom {
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub d: [usize; 2],
    pub pads: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

pub fn pool_geom(sp: &Spatial, shape: Nhwc) -> Result<PoolGeom> {
    let Some(k) = sp.kernel else {
        return tensor_err("pool without kernel_shape");
    };
    let pads = sp.resolve_pads(k, shape.h, shape.w);
    let oh = pool_out(
        shape.h,
        pads[0],
        pads[2],
        k[0],
        sp.dilations[0],
        sp.strides[0],
        sp.ceil_mode,
    )?;
    let ow = pool_out(
        shape.w,
        pads[1],
        pads[3],
        k[1],
        sp.dilations[1],
        sp.strides[1],
        sp.ceil_mode,
    )?;
    Ok(PoolGeom {
        k,
        s: sp.strides,
        d: sp.dilations,
        pads,
        oh,
        ow,
    })
}

/// Max or average pool on an NHWC buffer. For the average, `count_include_pad` counts
/// taps in the padded region (but not those past the end pad that `ceil_mode` adds).
pub fn pool_nhwc(
    x: &[f32],
    shape: Nhwc,
    g: &PoolGeom,
    max: bool,
    count_include_pad: bool,
) -> Vec<f32> {
    let c = shape.c;
    let mut out = vec![0f32; shape.n * g.oh * g.ow * c];
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    for img in 0..shape.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let o = ((img * g.oh + oy) * g.ow + ox) * c;
                let acc = &mut out[o..o + c];
                acc.fill(init);
                let mut taps = 0usize;
                let mut padded_taps = 0usize;
                for ky in 0..g.k[0] {
                    let iy = (oy * g.s[0] + ky * g.d[0]) as isize - g.pads[0] as isize;
                    let in_pad_h = iy < (shape.h + g.pads[2]) as isize;
                    for kx in 0..g.k[1] {
                        let ix = (ox * g.s[1] + kx * g.d[1]) as isize - g.pads[1] as isize;
                        if in_pad_h && ix < (shape.w + g.pads[3]) as isize {
                            padded_taps += 1;
                        }
                        if iy < 0 || ix < 0 || iy as usize >= shape.h || ix as usize >= shape.w {
                            continue;
                        }
                        taps += 1;
                        let i = shape.index(img, iy as usize, ix as usize, 0);
                        let row = &x[i..i + c];
                        if max {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a = a.max(v);
                            }
                        } else {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += v;
                            }
                        }
                    }
                }
                if !max {
                    let n = if count_include_pad { padded_taps } else { taps };
                    let inv = 1.0 / n.max(1) as f32;
                    for a in acc.iter_mut() {
                        *a *= inv;
                    }
                }
            }
        }
    }
    out
}

/// Global average pool on NHWC: one row of `c` means per image.
pub fn global_avg_nhwc(x: &[f32], shape: Nhwc) -> Vec<f32> {
    let c = shape.c;
    let hw = shape.h * shape.w;
    let mut out = vec![0f32; shape.n * c];
    for img in 0..shape.n {
        let acc = &mut out[img * c..(img + 1) * c];
        for p in 0..hw {
            let row = &x[(img * hw + p) * c..][..c];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        let inv = 1.0 / hw.max(1) as f32;
        acc.iter_mut().for_each(|a| *a *= inv);
    }
    out
}

/// LRN across the channels of each NHWC pixel:
/// `y = x / (bias + alpha/size · Σ x²)^beta` over channels `c - ⌊(size-1)/2⌋ ..= c + ⌈(size-1)/2⌉`.
pub fn lrn_nhwc(x: &[f32], c: usize, alpha: f32, beta: f32, bias: f32, size: usize) -> Vec<f32> {
    let lo = (size - 1) / 2;
    let hi = (size - 1).div_ceil(2);
    let mut out = vec![0f32; x.len()];
    if c == 0 {
        return out;
    }
    for (row, orow) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        for ch in 0..c {
            let a = ch.saturating_sub(lo);
            let b = (ch + hi).min(c - 1);
            let sq: f32 = row[a..=b].iter().map(|v| v * v).sum();
            orow[ch] = row[ch] / (bias + alpha / size as f32 * sq).powf(beta);
        }
    }
    out
}

/// Softmax over `axis`; `legacy` (opset < 13) coerces to 2-D at `axis` first.
pub fn softmax(t: &Tensor, axis: i64, legacy: bool, threads: usize) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let a = norm_axis(axis, shape.len())?;
    let x = t.f32s()?;
    let (outer, n, inner) = if legacy {
        (
            shape[..a].iter().product::<usize>(),
            shape[a..].iter().product::<usize>(),
            1,
        )
    } else {
        (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product(),
        )
    };
    let mut y = vec![0f32; x.len()];
    if n == 0 {
        return Tensor::new(shape, y);
    }
    // The last axis (attention scores): contiguous rows, straight to the vectorised rows.
    if inner == 1 {
        super::rows::map_rows(x, &mut y, n, threads, |x, y| {
            qbench_kernels::fmath::softmax_rows(x, y, n)
        });
        return Tensor::new(shape, y);
    }
    // Another axis: each strided row is gathered, normalised by the same row function
    // (so both layouts give the same bits) and scattered back.
    let (mut row, mut out) = (vec![0f32; n], vec![0f32; n]);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            for (j, r) in row.iter_mut().enumerate() {
                *r = x[at(j)];
            }
            qbench_kernels::fmath::softmax_rows(&row, &mut out, n);
            for (j, &v) in out.iter().enumerate() {
                y[at(j)] = v;
            }
        }
    }
    Tensor::new(shape, y)
}

/// numpy matmul with broadcast batch dims; 1-D operands are promoted and the added axis
/// removed from the result.
pub fn matmul(a: &Tensor, b: &Tensor, threads: usize) -> Result<Tensor> {
    let (mut ash, mut bsh) = (a.shape().to_vec(), b.shape().to_vec());
    let (a1, b1) = (ash.len() == 1, bsh.len() == 1);
    if ash.is_empty() || bsh.is_empty() {
        return tensor_err("MatMul of a scalar");
    }
    if a1 {
        ash.insert(0, 1);
    }
    if b1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return tensor_err(format!(
            "MatMul {:?} x {:?}: inner dims differ",
            a.shape(),
            b.shape()
        ));
    }
    // A 2-D B (a Linear's weight) against a batched A is one GEMM over all rows of A:
    // one large call blocks better than one call per batch entry.
    if bsh.len() == 2 && !b1 && !a1 && ash.len() > 2 {
        let rows: usize = ash[..ash.len() - 1].iter().product();
        let mut out = vec![0f32; check_shape(&"the MatMul output", &[rows, n], 4)?];
        sgemm(rows, n, k, a.f32s()?, b.f32s()?, &mut out, threads);
        let mut shape = ash[..ash.len() - 1].to_vec();
        shape.push(n);
        return Tensor::new(shape, out);
    }
    let batch = broadcast_shapes(&ash[..ash.len() - 2], &bsh[..bsh.len() - 2])?;
    // [2^32, 0] x [0, 2^32] holds no values but asks for 2^64: the output's size is the
    // one product here not bounded by an operand's, so it is checked before anything is
    // allocated; every offset below is then below an operand's or the output's length.
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let total = check_shape(&"the MatMul output", &out_shape, 4)?;
    let nb: usize = batch.iter().product();
    // Batch index → offset of each operand's matrix (0 stride where broadcast).
    let offsets = |sh: &[usize], mat: usize| -> Vec<usize> {
        let bs = broadcast_strides(sh, &batch);
        (0..nb)
            .map(|l| {
                let mut rem = l;
                let mut off = 0;
                for (ax, &d) in batch.iter().enumerate().rev() {
                    off += (rem % d) * bs[ax];
                    rem /= d;
                }
                off * mat
            })
            .collect()
    };
    let ao = offsets(&ash[..ash.len() - 2], m * k);
    let bo = offsets(&bsh[..bsh.len() - 2], k * n);
    let (av, bv) = (a.f32s()?, b.f32s()?);
    let mut out = vec![0f32; total];
    let product = |i: usize, out: &mut [f32], threads: usize| {
        sgemm(
            m,
            n,
            k,
            &av[ao[i]..ao[i] + m * k],
            &bv[bo[i]..bo[i] + k * n],
            out,
            threads,
        )
    };
    // Attention's per-head products are each too small to split; the heads are shared
    // out instead, whole.
    if threads > 1 && nb >= threads && m * n > 0 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, out)| product(i, out, 1));
    } else {
        for i in 0..nb {
            product(i, &mut out[i * m * n..(i + 1) * m * n], threads);
        }
    }
    let mut shape = batch;
    if !a1 {
        shape.push(m);
    }
    if !b1 {
        shape.push(n);
    }
    Tensor::new(shape, out)
}

/// ONNX Reshape target: 0 copies the input dim (allowzero = 0), -1 is inferred.
pub fn reshape_target(input: &[usize], spec: &[i64]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => match input.get(i) {
                Some(&d) => out.push(d),
                None => {
                    return tensor_err(format!(
                        "Reshape {spec:?}: 0 at {i} past input rank {}",
                        input.len()
                    ))
                }
            },
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            _ => return tensor_err(format!("Reshape {spec:?}: invalid dimension {s}")),
        }
    }
    // `input` is a tensor's shape, so its product fits; the spec's comes from a file and
    // is checked (an empty tensor reshaped to [2^32, 2^32] wrapped to 0 = 0 and passed).
    let total: usize = input.iter().product();
    if budget::numel(&out).is_none() {
        return tensor_err(format!(
            "Reshape {input:?} to {spec:?}: the target has more elements than this machine can address"
        ));
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return tensor_err(format!(
                "Reshape {input:?} to {spec:?}: -1 cannot be inferred"
            ));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return tensor_err(format!(
            "Reshape {input:?} to {spec:?}: element counts differ"
        ));
    }
    Ok(out)
}

pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| crate::error::ModelError::Tensor("Concat of nothing".into()))?;
    let rank = first.rank();
    let mut shape = first.shape().to_vec();
    if axis >= rank {
        return tensor_err(format!("Concat axis {axis} out of range for rank {rank}"));
    }
    shape[axis] = 0;
    for p in parts {
        let ok =
            p.rank() == rank && (0..rank).all(|i| i == axis || p.shape()[i] == first.shape()[i]);
        if !ok {
            return tensor_err(format!(
                "Concat: shapes {:?} and {:?} differ off axis {axis}",
                first.shape(),
                p.shape()
            ));
        }
        shape[axis] = shape[axis]
            .checked_add(p.shape()[axis])
            .ok_or_else(|| crate::error::ModelError::Tensor("Concat: the axis overflows".into()))?;
    }
    check_shape(
        &"the Concat output",
        &shape,
        if first.is_f32() { 4 } else { 8 },
    )?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    macro_rules! cat {
        ($get:ident, $ctor:ident) => {{
            let mut out = Vec::with_capacity(shape.iter().product());
            let srcs = parts.iter().map(|p| p.$get()).collect::<Result<Vec<_>>>()?;
            for o in 0..outer {
                for (p, src) in parts.iter().zip(&srcs) {
                    let run = p.shape()[axis] * inner;
                    out.extend_from_slice(&src[o * run..(o + 1) * run]);
                }
            }
            Tensor::$ctor(shape, out)
        }};
    }
    if first.is_f32() {
        cat!(f32s, new)
    } else {
        cat!(i64s, new_i64)
    }
}

pub fn gather(data: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor> {
    let ds = data.shape();
    if axis >= ds.len() {
        return tensor_err(format!(
            "Gather axis {axis} out of range for rank {}",
            ds.len()
        ));
    }
    let dim = ds[axis];
    let indices = idx
        .i64s()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if j < 0 || j >= dim as i64 {
                tensor_err(format!("Gather index {i} out of range for dim {dim}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let outer: usize = ds[..axis].iter().product();
    let inner: usize = ds[axis + 1..].iter().product();
    let mut shape = ds[..axis].to_vec();
    shape.extend_from_slice(idx.shape());
    shape.extend_from_slice(&ds[axis + 1..]);
    // Many indices into a large row: the output can dwarf both inputs.
    check_shape(
        &"the Gather output",
        &shape,
        if data.is_f32() { 4 } else { 8 },
    )?;
    macro_rules! g {
        ($v:expr, $ctor:ident) => {{
            let v = $v;
            let mut out = Vec::with_capacity(outer * indices.len() * inner);
            for o in 0..outer {
                for &j in &indices {
                    out.extend_from_slice(&v[(o * dim + j) * inner..][..inner]);
                }
            }
            Tensor::$ctor(shape, out)
        }};
    }
    match data.data() {
        Data::F32(v) => g!(v, new),
        Data::I64(v) => g!(v, new_i64),
    }
}

/// `bias + x·scale` per channel; `channel_last` for NHWC, else channel axis 1.
pub fn channel_affine(
    x: &mut [f32],
    shape: &[usize],
    channel_last: bool,
    scale: &[f32],
    shift: &[f32],
) {
    let c = scale.len();
    // No channels means no values (a [n, 0, h, w] activation); chunks of 0 would panic.
    if c == 0 || x.is_empty() {
        return;
    }
    if channel_last {
        for row in x.chunks_exact_mut(c) {
            for ((v, &s), &b) in row.iter_mut().zip(scale).zip(shift) {
                *v = *v * s + b;
            }
        }
    } else {
        let inner: usize = shape[2..].iter().product();
        for (i, plane) in x.chunks_exact_mut(inner.max(1)).enumerate() {
            let ch = i % c;
            for v in plane {
                *v = *v * scale[ch] + shift[ch];
            }
        }
    }
}
