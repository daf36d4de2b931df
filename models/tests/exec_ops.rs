//! Op semantics of the fp32 executor against hand-computed or f64 references, on small
//! graphs built directly in the IR (including NHWC/NCHW layout transitions).

use std::collections::BTreeMap;

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{AutoPad, Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::tensor::Tensor;

fn vi(name: &str, dims: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    }
}

fn node(op: Op, inputs: &[&str], out: &str) -> Node {
    Node {
        name: format!("n_{out}"),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
    }
}

fn graph(inputs: Vec<ValueInfo>, inits: Vec<(&str, Tensor)>, nodes: Vec<Node>, out: &str) -> Graph {
    Graph {
        name: "test".into(),
        inputs,
        outputs: vec![ValueInfo {
            name: out.into(),
            dims: vec![],
        }],
        initializers: inits
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        nodes,
    }
}

fn run(g: &Graph, x: Tensor) -> Tensor {
    Executor::new(g, Options::default())
        .unwrap()
        .run(&[x])
        .unwrap()
        .remove(0)
}

fn seq(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(f).collect()).unwrap()
}

/// Direct NCHW conv in f64, the reference.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &Tensor,
    w: &Tensor,
    b: &[f32],
    group: usize,
    s: [usize; 2],
    d: [usize; 2],
    pads: [usize; 4],
) -> (Vec<usize>, Vec<f64>) {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, cig, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let oh = (h + pads[0] + pads[2] - d[0] * (kh - 1) - 1) / s[0] + 1;
    let ow = (wd + pads[1] + pads[3] - d[1] * (kw - 1) - 1) / s[1] + 1;
    let (xv, wv) = (x.f32s().unwrap(), w.f32s().unwrap());
    let cog = co / group;
    let mut out = vec![0f64; n * co * oh * ow];
    for img in 0..n {
        for o in 0..co {
            let g = o / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = f64::from(b[o]);
                    for ci in 0..cig {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s[0] + ky * d[0]) as isize - pads[0] as isize;
                                let ix = (ox * s[1] + kx * d[1]) as isize - pads[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                let xi =
                                    ((img * c + g * cig + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * cig + ci) * kh + ky) * kw + kx;
                                acc += f64::from(xv[xi]) * f64::from(wv[wi]);
                            }
                        }
                    }
                    out[((img * co + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (vec![n, co, oh, ow], out)
}

fn assert_close(got: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape(), shape);
    for (i, (&g, &w)) in got.f32s().unwrap().iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * (1.0 + w.abs()),
            "at {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn conv_groups_strides_asymmetric_pads_dilation_match_f64() {
    for (group, cin, cout, k, s, d, pads) in [
        (1, 3, 4, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 5, 7, 3, [2, 1], [1, 2], [0, 1, 2, 0]),
        (2, 4, 6, 3, [1, 2], [1, 1], [1, 0, 0, 1]),
        (6, 6, 6, 3, [2, 2], [1, 1], [1, 1, 1, 1]), // depthwise
        (1, 8, 5, 1, [1, 1], [1, 1], [0, 0, 0, 0]), // pointwise
    ] {
        let x = seq(&[2, cin, 9, 8], |i| ((i * 37 % 17) as f32 - 8.0) / 8.0);
        let w = seq(&[cout, cin / group, k, k], |i| {
            ((i * 13 % 11) as f32 - 5.0) / 10.0
        });
        let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.25 - 0.5).collect();
        let spatial = Spatial {
            kernel: Some([k, k]),
            strides: s,
            dilations: d,
            pads,
            ..Spatial::default()
        };
        let g = graph(
            vec![vi("x", &[2, cin, 9, 8])],
            vec![
                ("w", w.clone()),
                ("b", Tensor::new(vec![cout], b.clone()).unwrap()),
            ],
            vec![node(Op::Conv { spatial, group }, &["x", "w", "b"], "y")],
            "y",
        );
        let (shape, want) = conv_ref(&x, &w, &b, group, s, d, pads);
        assert_close(&run(&g, x), &shape, &want, 1e-5);
    }
}

#[test]
fn conv_bn_relu_fold_matches_unfused_math() {
    let x = seq(&[1, 2, 5, 5], |i| ((i * 7 % 13) as f32 - 6.0) / 6.0);
    let w = seq(&[3, 2, 3, 3], |i| ((i * 5 % 7) as f32 - 3.0) / 7.0);
    let (scale, bias, mean, var) = (
        [1.5f32, 0.5, 2.0],
        [0.1f32, -0.2, 0.3],
        [0.05f32, -0.1, 0.2],
        [0.9f32, 1.1, 0.4],
    );
    let t = |v: [f32; 3]| Tensor::new(vec![3], v.to_vec()).unwrap();
    let sp = Spatial {
        pads: [1; 4],
        ..Spatial::default()
    };
    let g = graph(
        vec![vi("x", &[1, 2, 5, 5])],
        vec![
            ("w", w.clone()),
            ("s", t(scale)),
            ("bb", t(bias)),
            ("m", t(mean)),
            ("v", t(var)),
        ],
        vec![
            node(
                Op::Conv {
                    spatial: sp,
                    group: 1,
                },
                &["x", "w"],
                "c",
            ),
            node(
                Op::BatchNorm { epsilon: 1e-5 },
                &["c", "s", "bb", "m", "v"],
                "bn",
            ),
            node(Op::Relu, &["bn"], "y"),
        ],
        "y",
    );
    let exec = Executor::new(&g, Options::default()).unwrap();
    assert_eq!(
        exec.num_steps(),
        1,
        "BN folded and Relu fused into the conv"
    );
    let (shape, conv) = conv_ref(&x, &w, &[0.0; 3], 1, [1, 1], [1, 1], [1; 4]);
    let want: Vec<f64> = conv
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let ch = i / 25;
            let y = (c - f64::from(mean[ch])) / (f64::from(var[ch]) + 1e-5).sqrt()
                * f64::from(scale[ch])
                + f64::from(bias[ch]);
            y.max(0.0)
        })
        .collect();
    assert_close(&exec.run(&[x]).unwrap()[0], &shape, &want, 1e-5);
}

#[test]
fn gemm_alpha_beta_transposes_and_bias_broadcast() {
    // A' = Aᵀ (A is 3x2 → A' 2x3), B' = Bᵀ (B is 4x3 → 3x4), C is a row of 4.
    let a = seq(&[3, 2], |i| i as f32);
    let b = seq(&[4, 3], |i| (i as f32) * 0.5 - 1.0);
    let c = Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let g = graph(
        vec![vi("a", &[3, 2])],
        vec![("b", b.clone()), ("c", c)],
        vec![node(
            Op::Gemm {
                alpha: 2.0,
                beta: 0.5,
                trans_a: true,
                trans_b: true,
            },
            &["a", "b", "c"],
            "y",
        )],
        "y",
    );
    let (av, bv) = (a.f32s().unwrap(), b.f32s().unwrap());
    let mut want = vec![0f64; 8];
    for i in 0..2 {
        for j in 0..4 {
            let dot: f64 = (0..3)
                .map(|k| f64::from(av[k * 2 + i]) * f64::from(bv[j * 3 + k]))
                .sum();
            want[i * 4 + j] = 2.0 * dot + 0.5 * (j + 1) as f64;
        }
    }
    assert_close(&run(&g, a), &[2, 4], &want, 1e-6);
}

#[test]
fn matmul_broadcasts_batch_dims() {
    let a = seq(&[2, 1, 2, 3], |i| i as f32);
    let b = seq(&[3, 3, 2], |i| 1.0 - i as f32 * 0.1);
    let g = graph(
        vec![vi("a", &[2, 1, 2, 3])],
        vec![("b", b.clone())],
        vec![node(Op::MatMul, &["a", "b"], "y")],
        "y",
    );
    let y = run(&g, a.clone());
    assert_eq!(y.shape(), &[2, 3, 2, 2]);
    let (av, bv, yv) = (a.f32s().unwrap(), b.f32s().unwrap(), y.f32s().unwrap());
    for p in 0..2 {
        for q in 0..3 {
            for i in 0..2 {
                for j in 0..2 {
                    let want: f32 = (0..3)
                        .map(|k| av[p * 6 + i * 3 + k] * bv[q * 6 + k * 2 + j])
                        .sum();
                    assert!((yv[((p * 3 + q) * 2 + i) * 2 + j] - want).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn pools_follow_onnx_padding_and_counting() {
    // 1x1x3x3 input 1..9; 2x2 windows, stride 2, pads [0,0,1,1] (bottom/right).
    let x = seq(&[1, 1, 3, 3], |i| (i + 1) as f32);
    let sp = Spatial {
        kernel: Some([2, 2]),
        strides: [2, 2],
        pads: [0, 0, 1, 1],
        ..Spatial::default()
    };
    let mk = |op: Op| {
        graph(
            vec![vi("x", &[1, 1, 3, 3])],
            vec![],
            vec![node(op, &["x"], "y")],
            "y",
        )
    };
    let max = run(
        &mk(Op::MaxPool {
            spatial: sp.clone(),
        }),
        x.clone(),
    );
    assert_eq!(max.f32s().unwrap(), &[5.0, 6.0, 8.0, 9.0]);
    let avg = run(
        &mk(Op::AveragePool {
            spatial: sp.clone(),
            count_include_pad: false,
        }),
        x.clone(),
    );
    assert_eq!(avg.f32s().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
    let avg_pad = run(
        &mk(Op::AveragePool {
            spatial: sp.clone(),
            count_include_pad: true,
        }),
        x.clone(),
    );
    assert_eq!(
        avg_pad.f32s().unwrap(),
        &[3.0, 9.0 / 4.0, 15.0 / 4.0, 9.0 / 4.0]
    );
    // ceil_mode without pads: 3x3, k2 s2 → 2x2 with partial windows.
    let ceil = Spatial {
        pads: [0; 4],
        ceil_mode: true,
        ..sp
    };
    assert_eq!(
        run(&mk(Op::MaxPool { spatial: ceil }), x.clone())
            .f32s()
            .unwrap(),
        &[5.0, 6.0, 8.0, 9.0]
    );
    let gap = run(&mk(Op::GlobalAveragePool), x);
    assert_eq!(
        (gap.shape(), gap.f32s().unwrap()),
        (&[1usize, 1, 1, 1][..], &[5.0f32][..])
    );
}

#[test]
fn same_upper_and_lower_pads() {
    let sp = Spatial {
        kernel: Some([2, 2]),
        auto_pad: AutoPad::SameUpper,
        ..Spatial::default()
    };
    assert_eq!(sp.resolve_pads([2, 2], 5, 5), [0, 0, 1, 1]);
    let lower = Spatial {
        auto_pad: AutoPad::SameLower,
        ..sp.clone()
    };
    assert_eq!(lower.resolve_pads([2, 2], 5, 5), [1, 1, 0, 0]);
    let s2 = Spatial {
        strides: [2, 2],
        ..sp
    };
    // out = ceil(5/2) = 3, total = (3-1)*2 + 2 - 5 = 1.
    assert_eq!(s2.resolve_pads([2, 2], 5, 5), [0, 0, 1, 1]);
}

#[test]
fn activations_match_their_formulas() {
    let x = seq(&[1, 7], |i| i as f32 - 3.5);
    let xs: Vec<f32> = x.f32s().unwrap().to_vec();
    type Case = (Op, fn(f32) -> f32);
    let cases: Vec<Case> = vec![
        (Op::Relu, |v: f32| v.max(0.0)),
        (Op::Sigmoid, |v: f32| 1.0 / (1.0 + (-v).exp())),
        (
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            |v: f32| (0.2 * v + 0.5).clamp(0.0, 1.0),
        ),
        (Op::HardSwish, |v: f32| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        (
            Op::Clip {
                min: Some(-1.0),
                max: Some(2.0),
            },
            |v: f32| v.clamp(-1.0, 2.0),
        ),
    ];
    for (op, f) in cases {
        let g = graph(
            vec![vi("x", &[1, 7])],
            vec![],
            vec![node(op.clone(), &["x"], "y")],
            "y",
        );
        let y = run(&g, x.clone());
        for (&a, &v) in y.f32s().unwrap().iter().zip(&xs) {
            assert!((a - f(v)).abs() < 1e-6, "{op:?} at {v}");
        }
        // NaN stays NaN through every activation (ONNX and PyTorch semantics): a NaN
        // turned into 0 would hide bad input from the checks downstream.
        let y = run(&g, Tensor::new(vec![1, 7], vec![f32::NAN; 7]).unwrap());
        assert!(
            y.f32s().unwrap().iter().all(|v| v.is_nan()),
            "{op:?} swallowed NaN: {:?}",
            y.f32s().unwrap()
        );
    }
    // Clip with bounds as inputs (opset ≥ 11).
    let g = graph(
        vec![vi("x", &[1, 7])],
        vec![("lo", Tensor::scalar(0.0)), ("hi", Tensor::scalar(6.0))],
        vec![node(
            Op::Clip {
                min: None,
                max: None,
            },
            &["x", "lo", "hi"],
            "y",
        )],
        "y",
    );
    assert_eq!(
        run(&g, seq(&[1, 7], |i| i as f32 * 2.0 - 4.0))
            .f32s()
            .unwrap(),
        &[0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 6.0]
    );
}

#[test]
fn softmax_axis_and_legacy_coercion() {
    let x = seq(&[2, 2, 2], |i| i as f32);
    let sm = |axis, legacy| {
        let g = graph(
            vec![vi("x", &[2, 2, 2])],
            vec![],
            vec![node(Op::Softmax { axis, legacy }, &["x"], "y")],
            "y",
        );
        run(&g, x.clone())
    };
    let e = |d: f32| 1.0 / (1.0 + d.exp());
    // axis 1 (opset 13): pairs (0,2), (1,3) ... differ by 2.
    let y = sm(1, false);
    assert!((y.f32s().unwrap()[0] - e(2.0)).abs() < 1e-6);
    // legacy axis 1: softmax over the 4 values of each batch row.
    let y = sm(1, true);
    let z: f32 = (0..4).map(|i| (i as f32).exp()).sum();
    assert!((y.f32s().unwrap()[3] - 3f32.exp() / z).abs() < 1e-6);
    let y = sm(-1, false);
    assert!((y.f32s().unwrap()[1] - (1.0 - e(1.0))).abs() < 1e-6);
}

/// Export writes a legacy Softmax as Shape → Flatten → Softmax → Reshape (opset 13 has no
/// coercing Softmax); import folds that back into the one node, unless a part of the
/// expansion is read elsewhere, where the expansion stays and still computes the same.
#[test]
fn legacy_softmax_survives_export_and_import() {
    let x = seq(&[2, 2, 2], |i| i as f32 * 0.5);
    let softmax = node(
        Op::Softmax {
            axis: 1,
            legacy: true,
        },
        &["x"],
        "y",
    );
    let g = graph(vec![vi("x", &[2, 2, 2])], vec![], vec![softmax], "y");
    let exported = qbench_models::onnx::to_model_proto(&g);
    let ops: Vec<_> = exported
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(ops, ["Shape", "Flatten", "Softmax", "Reshape"]);
    let back = qbench_models::onnx::from_bytes(&qbench_models::onnx::to_bytes(&g), "t").unwrap();
    assert_eq!(back.nodes, g.nodes);

    // The flattened tensor also a graph output: the expansion stays, and agrees.
    let mut proto = exported;
    let gp = proto.graph.as_mut().unwrap();
    let mut extra = gp.output[0].clone();
    extra.name = gp.node[1].output[0].clone();
    gp.output.push(extra);
    let kept = qbench_models::onnx::from_model_proto(&proto, "t").unwrap();
    assert_eq!(kept.nodes.len(), 4);
    let want = run(&g, x.clone());
    let got = Executor::new(&kept, Options::default())
        .unwrap()
        .run(&[x])
        .unwrap();
    assert_eq!(got[0], want);
}

#[test]
fn layout_transitions_through_conv_concat_broadcast_reshape_transpose() {
    // conv (NHWC inside) → Mul by a [C,1,1] constant (broadcast in NHWC) → Concat with
    // the NCHW input on channels → Transpose → Reshape with 0 and -1 → Flatten.
    let x = seq(&[2, 2, 3, 3], |i| (i % 5) as f32 - 2.0);
    let w = seq(&[2, 2, 1, 1], |i| [1.0, 0.0, 0.0, 1.0][i]); // identity 1x1 conv
    let g = graph(
        vec![vi("x", &[2, 2, 3, 3])],
        vec![
            ("w", w),
            ("k", Tensor::new(vec![2, 1, 1], vec![2.0, 3.0]).unwrap()),
            ("shape", Tensor::from_i64s(vec![0, -1, 3])),
        ],
        vec![
            node(
                Op::Conv {
                    spatial: Spatial::default(),
                    group: 1,
                },
                &["x", "w"],
                "c",
            ),
            node(Op::Mul, &["c", "k"], "m"),
            node(Op::Concat { axis: 1 }, &["m", "x"], "cat"),
            node(
                Op::Transpose {
                    perm: Some(vec![0, 2, 3, 1]),
                },
                &["cat"],
                "t",
            ),
            node(Op::Reshape, &["t", "shape"], "r"),
            node(Op::Flatten { axis: 1 }, &["r"], "y"),
        ],
        "y",
    );
    let y = run(&g, x.clone());
    assert_eq!(y.shape(), &[2, 36]);
    let xv = x.f32s().unwrap();
    let yv = y.f32s().unwrap();
    for n in 0..2 {
        for h in 0..3 {
            for w in 0..3 {
                for c in 0..4usize {
                    let src = xv[((n * 2 + c % 2) * 3 + h) * 3 + w];
                    let want = if c < 2 { src * [2.0, 3.0][c] } else { src };
                    assert_eq!(yv[n * 36 + (h * 3 + w) * 4 + c], want);
                }
            }
        }
    }
}

#[test]
fn shape_subgraph_folds_and_batch_is_free() {
    // Reshape(x, Concat(Gather(Shape(x), 0) unsqueezed, [-1])): the PyTorch flatten idiom.
    let g = graph(
        vec![ValueInfo {
            name: "x".into(),
            dims: vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(2),
                Dim::Fixed(2),
            ],
        }],
        vec![
            ("zero", Tensor::new_i64(vec![], vec![0]).unwrap()),
            ("minus1", Tensor::from_i64s(vec![-1])),
        ],
        vec![
            node(Op::Shape, &["x"], "s"),
            node(Op::Gather { axis: 0 }, &["s", "zero"], "n"),
            node(
                Op::Unsqueeze {
                    axes: Some(vec![0]),
                },
                &["n"],
                "n1",
            ),
            node(Op::Concat { axis: 0 }, &["n1", "minus1"], "spec"),
            node(Op::Reshape, &["x", "spec"], "y"),
        ],
        "y",
    );
    for batch in [1, 3] {
        let y = run(&g, seq(&[batch, 2, 2, 2], |i| i as f32));
        assert_eq!(y.shape(), &[batch, 8]);
    }
    // Constant subgraphs fold at load: only the runtime nodes remain as steps.
    let c = graph(
        vec![vi("x", &[1, 4])],
        vec![("s", Tensor::from_i64s(vec![1, 4]))],
        vec![
            node(
                Op::ConstantOfShape {
                    value: Tensor::scalar(0.5),
                },
                &["s"],
                "half",
            ),
            node(Op::Add, &["x", "half"], "y"),
        ],
        "y",
    );
    let exec = Executor::new(&c, Options::default()).unwrap();
    assert_eq!(exec.num_steps(), 1);
    assert_eq!(
        exec.run(&[seq(&[1, 4], |i| i as f32)]).unwrap()[0]
            .f32s()
            .unwrap(),
        &[0.5, 1.5, 2.5, 3.5]
    );
}

#[test]
fn lrn_matches_formula() {
    let x = seq(&[1, 4, 1, 1], |i| i as f32 + 1.0);
    let g = graph(
        vec![vi("x", &[1, 4, 1, 1])],
        vec![],
        vec![node(
            Op::Lrn {
                alpha: 0.1,
                beta: 0.75,
                bias: 1.0,
                size: 3,
            },
            &["x"],
            "y",
        )],
        "y",
    );
    let y = run(&g, x);
    let v = [1f32, 2.0, 3.0, 4.0];
    for c in 0..4usize {
        let sq: f32 = (c.saturating_sub(1_usize)..=(c + 1).min(3))
            .map(|j| v[j] * v[j])
            .sum();
        let want = v[c] / (1.0f32 + 0.1 / 3.0 * sq).powf(0.75);
        assert!((y.f32s().unwrap()[c] - want).abs() < 1e-6);
    }
}

#[test]
fn runtime_errors_name_the_node() {
    let g = graph(
        vec![vi("x", &[1, 3])],
        vec![("b", Tensor::zeros(vec![4]))],
        vec![node(Op::Add, &["x", "b"], "y")],
        "y",
    );
    let e = Executor::new(&g, Options::default())
        .unwrap()
        .run(&[Tensor::zeros(vec![1, 3])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("n_y") && e.contains("Add") && e.contains("broadcast"),
        "{e}"
    );
    let e = Executor::new(&g, Options::default())
        .unwrap()
        .run(&[Tensor::zeros(vec![1, 4])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input \"x\""), "{e}");
}
