//! What each int8-runtime step does ([`Kind`]) and running one step on its values.

use std::borrow::Cow;

use qbench_kernels::gemm::{ActZeroPoints, Dequant, MatA, PackedB, Scales};
use qbench_kernels::{
    conv_dequant, conv_requant, eltwise, pool, AddQuant, Affine, Nhwc, PackedConv, PoolQuant,
    Window,
};
use qbench_models::exec::{reshape_target, Executor};
use qbench_models::ir::Spatial;
use qbench_models::tensor::Tensor;

use super::pack::Requantize;
use super::values::{quantize_dynamic, quantize_tensor, DynAct, DynU8, QVal, U8Tensor};
use crate::error::{check_finite, QuantError, Result};

pub(super) enum Kind {
    Quantize {
        q: Affine,
        qmin: i32,
        qmax: i32,
    },
    Dequantize,
    Conv {
        conv: PackedConv,
        rq: Requantize,
    },
    Linear {
        b: PackedB,
        rq: Requantize,
    },
    /// Quantizes an f32 tensor for the dynamic layers that read it.
    DynQuantize {
        act: DynAct,
        k: usize,
    },
    /// Reads a [`QVal::Dyn`] made by a `DynQuantize` step.
    DynLinear {
        b: PackedB,
        w_scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        relu: bool,
    },
    DynConv {
        conv: PackedConv,
        w_scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        relu: bool,
        act: DynAct,
    },
    MaxPool {
        spatial: Spatial,
    },
    AvgPool {
        spatial: Spatial,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    Add {
        out: Affine,
        qmin: u8,
        qmax: u8,
    },
    Relu,
    Flatten {
        axis: i64,
    },
    Reshape {
        spec: Vec<i64>,
    },
    Fp32 {
        exec: Box<Executor>,
    },
}

pub(super) struct Step {
    /// The node (or region of nodes) this step runs, for errors.
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) ins: Vec<usize>,
    pub(super) outs: Vec<usize>,
}

/// Runs an fp32 region on its inputs, moving in those it was handed by value.
pub(super) fn run_fp32(exec: &Executor, args: Vec<Option<Cow<QVal>>>) -> Result<Vec<QVal>> {
    let ins = args
        .into_iter()
        .map(|a| match a {
            Some(Cow::Owned(QVal::F32(t))) => Ok(t),
            Some(Cow::Borrowed(QVal::F32(t))) => Ok(t.clone()),
            _ => Err(QuantError::Config {
                key: "runtime".into(),
                msg: "an input of an fp32 region is not f32".into(),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(exec.run_owned(ins)?.into_iter().map(QVal::F32).collect())
}

pub(super) fn want_u8(v: &QVal) -> Result<&U8Tensor> {
    match v {
        QVal::U8(u) => Ok(u),
        QVal::F32(_) | QVal::Dyn(_) => Err(QuantError::Config {
            key: "runtime".into(),
            msg: "expected a u8 activation, got f32".into(),
        }),
    }
}

pub(super) fn want_f32(v: &QVal) -> Result<&Tensor> {
    match v {
        QVal::F32(t) => Ok(t),
        QVal::U8(_) | QVal::Dyn(_) => Err(QuantError::Config {
            key: "runtime".into(),
            msg: "expected an f32 activation, got u8".into(),
        }),
    }
}

pub(super) fn pool_window(spatial: &Spatial, h: usize, w: usize) -> Window {
    let kernel = spatial.kernel.unwrap_or([1, 1]);
    Window::new(kernel[0], kernel[1])
        .stride(spatial.strides[0], spatial.strides[1])
        .dilation(spatial.dilations[0], spatial.dilations[1])
        .pads(spatial.resolve_pads(kernel, h, w))
}

pub(super) fn nhwc_out(shape: Nhwc, q: Affine, data: Vec<u8>) -> QVal {
    QVal::U8(U8Tensor {
        data,
        shape: vec![shape.n, shape.h, shape.w, shape.c],
        nhwc: true,
        q,
    })
}

pub(super) fn run_step(kind: &Kind, args: &[&QVal], threads: usize) -> Result<Vec<QVal>> {
    Ok(match kind {
        Kind::Quantize { q, qmin, qmax } => {
            let t = want_f32(args[0])?;
            check_finite("input", "activations", t.f32s()?)?;
            vec![QVal::U8(quantize_tensor(t, *q, *qmin, *qmax)?)]
        }
        Kind::Dequantize => vec![QVal::F32(want_u8(args[0])?.dequantize()?)],
        Kind::Conv { conv, rq } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let os = conv.output_shape(shape)?;
            let mut out = vec![0u8; os.len()];
            conv_requant(
                &x.data,
                shape,
                x.q.zero_point,
                conv,
                &rq.params(),
                &mut out,
                threads,
            )?;
            vec![nhwc_out(os, rq.out, out)]
        }
        Kind::Linear { b, rq } => {
            let x = want_u8(args[0])?;
            let k = b.k();
            let rows = x.data.len() / k.max(1);
            let mut out = vec![0u8; rows * b.n()];
            let a = MatA::new(&x.data, rows, k, x.q.zero_point);
            qbench_kernels::gemm::gemm_requant(&a, b, &rq.params(), &mut out, b.n(), threads)?;
            let mut shape = x.logical_shape();
            *shape.last_mut().unwrap_or(&mut 0) = b.n();
            vec![QVal::U8(U8Tensor {
                data: out,
                shape,
                nhwc: false,
                q: rq.out,
            })]
        }
        Kind::DynQuantize { act, k } => {
            let t = want_f32(args[0])?;
            let x = t.f32s()?;
            check_finite("input", "activations", x)?;
            let rows = x.len() / (*k).max(1);
            if rows * k != x.len() {
                return Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: format!("input shape {:?} does not end in {k}", t.shape()),
                });
            }
            let (data, scales, zero_points) = quantize_dynamic(x, rows, *k, *act, threads);
            vec![QVal::Dyn(DynU8 {
                data,
                shape: t.shape().to_vec(),
                scales,
                zero_points,
            })]
        }
        Kind::DynLinear {
            b,
            w_scales,
            bias,
            relu,
        } => {
            let QVal::Dyn(x) = args[0] else {
                return Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: "a dynamic Linear expects its quantized input".into(),
                });
            };
            let k = b.k();
            let rows = x.data.len() / k.max(1);
            let per_row = x.scales.len() > 1;
            let a = MatA {
                data: &x.data,
                rows,
                cols: k,
                stride: k,
                zero_point: if per_row {
                    ActZeroPoints::PerRow(&x.zero_points)
                } else {
                    ActZeroPoints::PerTensor(x.zero_points[0])
                },
            };
            let p = Dequant {
                a_scale: if per_row {
                    Scales::PerRow(&x.scales)
                } else {
                    Scales::PerTensor(x.scales[0])
                },
                b_scale: w_scales,
                bias: bias.as_deref(),
            };
            let mut out = vec![0f32; rows * b.n()];
            qbench_kernels::gemm::gemm_dequant(&a, b, &p, &mut out, b.n(), threads)?;
            if *relu {
                out.iter_mut()
                    .for_each(|v| *v = qbench_models::exec::relu(*v));
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().unwrap_or(&mut 0) = b.n();
            vec![QVal::F32(Tensor::new(shape, out)?)]
        }
        Kind::DynConv {
            conv,
            w_scales,
            bias,
            relu,
            act,
        } => {
            let t = want_f32(args[0])?;
            check_finite("input", "activations", t.f32s()?)?;
            let (s, z) = act.qparams(t.f32s()?);
            let x = quantize_tensor(t, Affine::new(s, z), act.spec.qmin, act.spec.qmax)?;
            let shape = x.nhwc_dims()?;
            let os = conv.output_shape(shape)?;
            let mut out = vec![0f32; os.len()];
            let p = Dequant {
                a_scale: Scales::PerTensor(s),
                b_scale: w_scales,
                bias: bias.as_deref(),
            };
            conv_dequant(&x.data, shape, z, conv, &p, &mut out, threads)?;
            if *relu {
                out.iter_mut()
                    .for_each(|v| *v = qbench_models::exec::relu(*v));
            }
            let nhwc = Tensor::new(vec![os.n, os.h, os.w, os.c], out)?;
            vec![QVal::F32(nhwc.transposed(&[0, 3, 1, 2])?)]
        }
        Kind::MaxPool { spatial } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let window = pool_window(spatial, shape.h, shape.w);
            let (oh, ow) = window.output_hw(shape.h, shape.w)?;
            let mut out = vec![0u8; shape.n * oh * ow * shape.c];
            let (os, _) = pool::max_pool(&x.data, shape, &window, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::AvgPool {
            spatial,
            count_include_pad,
        } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let window = pool_window(spatial, shape.h, shape.w);
            let (oh, ow) = window.output_hw(shape.h, shape.w)?;
            let mut out = vec![0u8; shape.n * oh * ow * shape.c];
            let q = PoolQuant {
                in_q: x.q,
                out_q: x.q,
                qmin: 0,
                qmax: 255,
            };
            let (os, _) =
                pool::avg_pool(&x.data, shape, &window, *count_include_pad, &q, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::GlobalAvgPool => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let mut out = vec![0u8; shape.n * shape.c];
            let q = PoolQuant {
                in_q: x.q,
                out_q: x.q,
                qmin: 0,
                qmax: 255,
            };
            let (os, _) = pool::global_avg_pool(&x.data, shape, &q, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::Add { out, qmin, qmax } => {
            let (a, b) = (want_u8(args[0])?, want_u8(args[1])?);
            if a.shape != b.shape || a.nhwc != b.nhwc {
                return Err(QuantError::Config {
                    key: "Add".into(),
                    msg: format!("operand shapes differ: {:?} and {:?}", a.shape, b.shape),
                });
            }
            let q = AddQuant {
                a_q: a.q,
                b_q: b.q,
                out_q: *out,
                qmin: *qmin,
                qmax: *qmax,
            };
            let mut data = vec![0u8; a.data.len()];
            eltwise::add(&a.data, &b.data, &q, &mut data)?;
            vec![QVal::U8(U8Tensor {
                data,
                shape: a.shape.clone(),
                nhwc: a.nhwc,
                q: *out,
            })]
        }
        Kind::Relu => {
            let x = want_u8(args[0])?;
            let floor = x.q.zero_point.clamp(0, 255) as u8;
            let mut y = x.clone();
            y.data.iter_mut().for_each(|v| *v = (*v).max(floor));
            vec![QVal::U8(y)]
        }
        Kind::Flatten { axis } => {
            let x = want_u8(args[0])?;
            let logical = x.logical_shape();
            let r = logical.len() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&ax) {
                return Err(QuantError::Config {
                    key: "Flatten".into(),
                    msg: format!("axis {axis} out of range for rank {r}"),
                });
            }
            let ax = ax as usize;
            vec![QVal::U8(U8Tensor {
                data: x.plain_data(),
                shape: vec![
                    logical[..ax].iter().product(),
                    logical[ax..].iter().product(),
                ],
                nhwc: false,
                q: x.q,
            })]
        }
        Kind::Reshape { spec } => {
            let x = want_u8(args[0])?;
            let target = reshape_target(&x.logical_shape(), spec)?;
            vec![QVal::U8(U8Tensor {
                data: x.plain_data(),
                shape: target,
                nhwc: false,
                q: x.q,
            })]
        }
        Kind::Fp32 { exec } => {
            run_fp32(exec, args.iter().map(|v| Some(Cow::Borrowed(*v))).collect())?
        }
    })
}
