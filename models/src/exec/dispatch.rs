//! One op on its arguments: the executor's dispatch from an IR op (and what its step
//! prepared, [`Kernel`]) to the kernels crate and the bodies in `ops`, `nn` and `rows`.

use std::borrow::Cow;

use qbench_kernels::fp32::sgemm_into;

use super::*;
use crate::budget::check_shape;
use crate::tensor::{broadcast_binary, Data};

/// Evaluates one op. `args[i]` is `None` for an omitted optional input.
pub(super) fn eval(
    op: &Op,
    kernel: &Kernel,
    mut args: Vec<Option<Cow<Val>>>,
    threads: usize,
) -> Result<Vec<Val>> {
    let a = &mut args;
    let one = |v: Val| Ok(vec![v]);
    match op {
        Op::Conv { .. } => {
            let Kernel::Conv {
                packed,
                pads,
                activation,
            } = kernel
            else {
                return Err(ModelError::Tensor("conv was not prepared".into()));
            };
            let (x, shape) = to_nhwc(arg(a, 0)?)?;
            // An empty input may still have a dim near usize::MAX; the kernel adds the
            // pads to it unchecked.
            if shape.h.checked_add(pads[0] + pads[2]).is_none()
                || shape.w.checked_add(pads[1] + pads[3]).is_none()
            {
                return Err(ModelError::Tensor(format!(
                    "input {shape:?} with pads {pads:?} overflows"
                )));
            }
            let os = packed.output_shape(shape)?;
            // Pads up to 2^20 a side make a 1x1 input a 2-million-square output: the
            // size is checked here, before the buffer exists.
            let n = check_shape(&"the Conv output", &[os.n, os.h, os.w, os.c], 4)?;
            let mut out = vec![0f32; n];
            packed.run(x.f32s()?, shape, &mut out, threads)?;
            if let Some(act) = activation {
                act.apply(&mut out);
            }
            one(Val {
                t: Tensor::new(vec![os.n, os.h, os.w, os.c], out)?,
                nhwc: true,
            })
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let at = to_plain(arg(a, 0)?)?;
            if at.rank() != 2 {
                return Err(ModelError::Tensor(format!(
                    "Gemm A must be 2-D, has shape {:?}",
                    at.shape()
                )));
            }
            let at = if *trans_a {
                Cow::Owned(at.transposed(&[1, 0])?)
            } else {
                at
            };
            let (m, ka) = (at.shape()[0], at.shape()[1]);
            let runtime_b;
            let (bv, k, n): (&[f32], usize, usize) = match kernel {
                Kernel::Gemm { b, k, n } => (b, *k, *n),
                _ => {
                    let b = to_plain(arg(a, 1)?)?;
                    if b.rank() != 2 {
                        return Err(ModelError::Tensor(format!(
                            "Gemm B must be 2-D, has shape {:?}",
                            b.shape()
                        )));
                    }
                    let bt = if *trans_b {
                        b.transposed(&[1, 0])?
                    } else {
                        b.into_owned()
                    };
                    let (k, n) = (bt.shape()[0], bt.shape()[1]);
                    runtime_b = bt.f32s()?.iter().map(|x| x * alpha).collect::<Vec<f32>>();
                    (&runtime_b, k, n)
                }
            };
            if k != ka {
                return Err(ModelError::Tensor(format!(
                    "Gemm: A is {m}x{ka}, B' is {k}x{n}"
                )));
            }
            let len = check_shape(&"the Gemm output", &[m, n], 4)?;
            let mut out = match opt_arg(a, 2) {
                Some(c) => {
                    let c = to_plain(c)?;
                    let z = Tensor::try_zeros(vec![m, n])?;
                    let beta = *beta;
                    broadcast_binary(&z, &c, move |_, c| beta * c)?.into_f32s()?
                }
                None => vec![0f32; len],
            };
            if out.len() != len {
                return Err(ModelError::Tensor(format!(
                    "Gemm: C does not broadcast to {m}x{n}"
                )));
            }
            sgemm_into(m, n, k, at.f32s()?, k, bv, n, &mut out, n, threads);
            one(Val::plain(Tensor::new(vec![m, n], out)?))
        }
        Op::MatMul => {
            let x = to_plain(arg(a, 0)?)?;
            let y = to_plain(arg(a, 1)?)?;
            one(Val::plain(ops::matmul(&x, &y, threads)?))
        }
        Op::BatchNorm { epsilon } => {
            let x = arg(a, 0)?;
            let p = |a: &mut Vec<Option<Cow<Val>>>, i| -> Result<Vec<f32>> {
                Ok(to_plain(arg(a, i)?)?.f32s()?.to_vec())
            };
            let (scale, bias, mean, var) = (p(a, 1)?, p(a, 2)?, p(a, 3)?, p(a, 4)?);
            let c = x.logical_shape().get(1).copied().unwrap_or(0);
            if [&scale, &bias, &mean, &var].iter().any(|v| v.len() != c) {
                return Err(ModelError::Tensor(format!(
                    "BatchNormalization parameters must have {c} values"
                )));
            }
            let s: Vec<f32> = (0..c)
                .map(|i| scale[i] / (var[i] + epsilon).sqrt())
                .collect();
            let b: Vec<f32> = (0..c).map(|i| bias[i] - mean[i] * s[i]).collect();
            let mut v = x.into_owned();
            let shape = v.t.shape().to_vec();
            ops::channel_affine(v.t.f32s_mut()?, &shape, v.nhwc, &s, &b);
            one(v)
        }
        Op::Relu => one(map_in_place(arg(a, 0)?, relu)?),
        Op::Clip { min, max } => {
            let x = arg(a, 0)?;
            let lo = match min {
                Some(m) => *m,
                None => scalar_arg(a, 1)?.unwrap_or(f32::NEG_INFINITY),
            };
            let hi = match max {
                Some(m) => *m,
                None => scalar_arg(a, 2)?.unwrap_or(f32::INFINITY),
            };
            one(map_in_place(x, move |v| clip(v, lo, hi))?)
        }
        Op::Sigmoid => one(map_in_place(arg(a, 0)?, |x| 1.0 / (1.0 + (-x).exp()))?),
        Op::HardSigmoid { alpha, beta } => {
            let (al, be) = (*alpha, *beta);
            one(map_in_place(arg(a, 0)?, move |x| {
                (al * x + be).clamp(0.0, 1.0)
            })?)
        }
        Op::HardSwish => one(map_in_place(arg(a, 0)?, |x| {
            x * (x / 6.0 + 0.5).clamp(0.0, 1.0)
        })?),
        Op::Identity => one(arg(a, 0)?.into_owned()),
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Sum => match op {
            Op::Sub => one(fold_binary(op, args, |x, y| x - y)?),
            Op::Mul => one(fold_binary(op, args, |x, y| x * y)?),
            Op::Div => one(fold_binary(op, args, |x, y| x / y)?),
            _ => one(fold_binary(op, args, |x, y| x + y)?),
        },
        Op::MaxPool { spatial } | Op::AveragePool { spatial, .. } => {
            let (x, shape) = to_nhwc(arg(a, 0)?)?;
            let g = ops::pool_geom(spatial, shape)?;
            check_shape(&"the pool output", &[shape.n, g.oh, g.ow, shape.c], 4)?;
            let (max, cip) = match op {
                Op::AveragePool {
                    count_include_pad, ..
                } => (false, *count_include_pad),
                _ => (true, false),
            };
            let out = ops::pool_nhwc(x.f32s()?, shape, &g, max, cip);
            one(Val {
                t: Tensor::new(vec![shape.n, g.oh, g.ow, shape.c], out)?,
                nhwc: true,
            })
        }
        Op::GlobalAveragePool => {
            let (x, shape) = to_nhwc(arg(a, 0)?)?;
            let out = ops::global_avg_nhwc(x.f32s()?, shape);
            one(Val {
                t: Tensor::new(vec![shape.n, 1, 1, shape.c], out)?,
                nhwc: true,
            })
        }
        Op::Lrn {
            alpha,
            beta,
            bias,
            size,
        } => {
            let (x, shape) = to_nhwc(arg(a, 0)?)?;
            let out = ops::lrn_nhwc(x.f32s()?, shape.c, *alpha, *beta, *bias, *size);
            one(Val {
                t: Tensor::new(x.shape().to_vec(), out)?,
                nhwc: true,
            })
        }
        Op::Flatten { axis } => {
            let x = to_plain(arg(a, 0)?)?.into_owned();
            let r = x.rank() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis };
            if ax < 0 || ax > r {
                return Err(ModelError::Tensor(format!(
                    "Flatten axis {axis} out of range for rank {r}"
                )));
            }
            let ax = ax as usize;
            let shape = vec![
                x.shape()[..ax].iter().product(),
                x.shape()[ax..].iter().product(),
            ];
            one(Val::plain(x.reshaped(shape)?))
        }
        Op::Reshape => {
            let x = to_plain(arg(a, 0)?)?.into_owned();
            let spec = to_plain(arg(a, 1)?)?;
            let target = ops::reshape_target(x.shape(), spec.i64s()?)?;
            one(Val::plain(x.reshaped(target)?))
        }
        Op::Transpose { perm } => {
            let x = to_plain(arg(a, 0)?)?;
            let perm: Vec<usize> = perm
                .clone()
                .unwrap_or_else(|| (0..x.rank()).rev().collect());
            one(Val::plain(x.transposed(&perm)?))
        }
        Op::Concat { axis } => {
            let items: Vec<Cow<Val>> = args.into_iter().flatten().collect();
            let rank = items.first().map_or(0, |v| v.t.rank());
            let ax = ops::norm_axis(*axis, rank)?;
            if rank == 4 && items.iter().any(|v| v.nhwc) {
                let phys = [0, 3, 1, 2][ax];
                let parts = items
                    .into_iter()
                    .map(|v| to_nhwc(v).map(|p| p.0))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Tensor> = parts.iter().map(|c| c.as_ref()).collect();
                return one(Val {
                    t: ops::concat(&refs, phys)?,
                    nhwc: true,
                });
            }
            let parts = items
                .into_iter()
                .map(to_plain)
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = parts.iter().map(|c| c.as_ref()).collect();
            one(Val::plain(ops::concat(&refs, ax)?))
        }
        Op::Softmax { axis, legacy } => {
            let x = to_plain(arg(a, 0)?)?;
            one(Val::plain(ops::softmax(&x, *axis, *legacy, threads)?))
        }
        Op::Constant { value } => one(Val::plain(value.clone())),
        Op::ConstantOfShape { value } => {
            let s = to_plain(arg(a, 0)?)?;
            let shape = s
                .i64s()?
                .iter()
                .map(|&d| {
                    usize::try_from(d)
                        .map_err(|_| ModelError::Tensor(format!("negative dimension {d}")))
                })
                .collect::<Result<Vec<usize>>>()?;
            // The 31-byte input that asks for 16 GiB: refused by the budget, not the
            // allocator.
            let elem = if value.is_f32() { 4 } else { 8 };
            let n = check_shape(&"the ConstantOfShape output", &shape, elem)?;
            let t = match value.data() {
                Data::F32(v) => Tensor::new(shape, vec![v.first().copied().unwrap_or(0.0); n])?,
                Data::I64(v) => Tensor::new_i64(shape, vec![v.first().copied().unwrap_or(0); n])?,
            };
            one(Val::plain(t))
        }
        Op::Shape => {
            let x = arg(a, 0)?;
            one(Val::plain(Tensor::from_i64s(
                x.logical_shape().iter().map(|&d| d as i64).collect(),
            )))
        }
        Op::Gather { axis } => {
            let x = to_plain(arg(a, 0)?)?;
            let idx = to_plain(arg(a, 1)?)?;
            let ax = ops::norm_axis(*axis, x.rank())?;
            one(Val::plain(ops::gather(&x, &idx, ax)?))
        }
        Op::Unsqueeze { axes } | Op::Squeeze { axes } => {
            let x = to_plain(arg(a, 0)?)?.into_owned();
            let axes: Option<Vec<i64>> = match axes {
                Some(ax) => Some(ax.clone()),
                None => opt_arg(a, 1)
                    .map(|t| to_plain(t).and_then(|t| Ok(t.i64s()?.to_vec())))
                    .transpose()?,
            };
            let mut shape = x.shape().to_vec();
            if matches!(op, Op::Unsqueeze { .. }) {
                let axes = axes.ok_or_else(|| ModelError::Tensor("Unsqueeze needs axes".into()))?;
                let out_rank = shape.len() + axes.len();
                let mut norm = axes
                    .iter()
                    .map(|&ax| ops::norm_axis(ax, out_rank))
                    .collect::<Result<Vec<_>>>()?;
                norm.sort_unstable();
                for ax in norm {
                    shape.insert(ax, 1);
                }
            } else {
                match axes {
                    Some(axes) => {
                        let mut norm = axes
                            .iter()
                            .map(|&ax| ops::norm_axis(ax, shape.len()))
                            .collect::<Result<Vec<_>>>()?;
                        norm.sort_unstable();
                        for ax in norm.into_iter().rev() {
                            if shape[ax] != 1 {
                                return Err(ModelError::Tensor(format!(
                                    "Squeeze axis {ax} has size {}",
                                    shape[ax]
                                )));
                            }
                            shape.remove(ax);
                        }
                    }
                    None => shape.retain(|&d| d != 1),
                }
            }
            one(Val::plain(x.reshaped(shape)?))
        }
        Op::LayerNorm { axis, epsilon } => {
            let x = to_plain(arg(a, 0)?)?;
            let scale = to_plain(arg(a, 1)?)?;
            let bias = opt_arg(a, 2).map(to_plain).transpose()?;
            one(Val::plain(nn::layer_norm(
                &x,
                &scale,
                bias.as_deref(),
                *axis,
                *epsilon,
                threads,
            )?))
        }
        Op::Gelu { tanh } => {
            let mut x = to_plain(arg(a, 0)?)?.into_owned();
            if *tanh {
                rows::for_rows(x.f32s_mut()?, 1, threads, nn::gelu_tanh);
            } else {
                rows::for_rows(x.f32s_mut()?, 1, threads, nn::gelu_erf);
            }
            one(Val::plain(x))
        }
        Op::Erf => one(map_in_place(arg(a, 0)?, nn::erf)?),
        Op::ReduceSum {
            axes,
            keepdims,
            noop_with_empty_axes,
        }
        | Op::ReduceMean {
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = to_plain(arg(a, 0)?)?;
            let axes: Option<Vec<i64>> = match axes {
                Some(ax) => Some(ax.clone()),
                None => opt_arg(a, 1)
                    .map(|t| to_plain(t).and_then(|t| Ok(t.i64s()?.to_vec())))
                    .transpose()?,
            };
            let how = if matches!(op, Op::ReduceSum { .. }) {
                nn::Reduction::Sum
            } else {
                nn::Reduction::Mean
            };
            one(Val::plain(nn::reduce(
                &x,
                axes.as_deref(),
                *keepdims,
                *noop_with_empty_axes,
                how,
            )?))
        }
        Op::LpNormalization { axis, p } => {
            let x = to_plain(arg(a, 0)?)?;
            one(Val::plain(nn::lp_normalize(&x, *axis, *p)?))
        }
        Op::Range => {
            let s = to_plain(arg(a, 0)?)?;
            let l = to_plain(arg(a, 1)?)?;
            let d = to_plain(arg(a, 2)?)?;
            one(Val::plain(nn::range(&s, &l, &d)?))
        }
        Op::Cast { to } => {
            let x = to_plain(arg(a, 0)?)?;
            one(Val::plain(nn::cast(&x, *to)?))
        }
    }
}
