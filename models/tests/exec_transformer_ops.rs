//! The transformer ops of the fp32 executor (LayerNormalization, GELU/Erf, batched MatMul
//! between activations, Softmax with an additive mask, head split/merge by
//! Reshape/Transpose, ReduceSum/ReduceMean, LpNormalization, Gather embedding, Range,
//! Cast) against independent f64 computations written out here, on small graphs built in
//! the IR; then the same ops through ONNX export, re-import and tract.

use std::collections::BTreeMap;

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{CastTo, Dim, Graph, Node, Op, ValueInfo};
use qbench_models::onnx;
use qbench_models::rng::Rng;
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

/// A graph with runtime inputs `inputs` (shapes of the given tensors), initializers,
/// nodes, and one output.
fn graph(
    inputs: &[(&str, &Tensor)],
    inits: Vec<(&str, Tensor)>,
    nodes: Vec<Node>,
    out: &str,
) -> Graph {
    Graph {
        name: "test".into(),
        inputs: inputs.iter().map(|(n, t)| vi(n, t.shape())).collect(),
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

fn run(g: &Graph, xs: &[&Tensor]) -> Tensor {
    let xs: Vec<Tensor> = xs.iter().map(|t| (*t).clone()).collect();
    Executor::new(g, Options::default())
        .unwrap()
        .run(&xs)
        .unwrap()
        .remove(0)
}

/// Deterministic values in [-3, 3) from the workspace's seeded generator.
fn values(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape.to_vec(), Rng::new(seed).uniforms_f32(n, -3.0, 3.0)).unwrap()
}

fn assert_close(got: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape(), shape);
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.f32s().unwrap().iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * (1.0 + w.abs()),
            "at {i}: got {g}, want {w}"
        );
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.f32s().unwrap().iter().map(|&v| f64::from(v)).collect()
}

#[test]
fn layer_norm_over_last_axis_and_over_two_axes_matches_f64() {
    // [2, 3, 8] over the last axis; then over the last two (axis 1 of a rank-3 tensor),
    // with per-element scale and bias, and once without a bias.
    for (axis, norm_shape, with_bias) in [
        (-1i64, vec![8usize], true),
        (1, vec![3, 8], true),
        (-1, vec![8], false),
    ] {
        let x = values(&[2, 3, 8], 1);
        // Shift one row far from zero: the two-pass variance must not cancel.
        let mut xv = x.f32s().unwrap().to_vec();
        xv[..8].iter_mut().for_each(|v| *v += 1000.0);
        let x = Tensor::new(vec![2, 3, 8], xv).unwrap();
        let gamma = values(&norm_shape, 2);
        let beta = values(&norm_shape, 3);
        let eps = 1e-5f32;
        let mut inputs = vec!["x", "g"];
        let mut inits = vec![("g", gamma.clone())];
        if with_bias {
            inputs.push("b");
            inits.push(("b", beta.clone()));
        }
        let g = graph(
            &[("x", &x)],
            inits,
            vec![node(Op::LayerNorm { axis, epsilon: eps }, &inputs, "y")],
            "y",
        );
        let y = run(&g, &[&x]);
        let row: usize = norm_shape.iter().product();
        let (xv, gv, bv) = (f64s(&x), f64s(&gamma), f64s(&beta));
        let mut want = Vec::new();
        for r in xv.chunks(row) {
            let mean = r.iter().sum::<f64>() / row as f64;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / row as f64;
            for (j, v) in r.iter().enumerate() {
                let b = if with_bias { bv[j] } else { 0.0 };
                want.push((v - mean) / (var + f64::from(eps)).sqrt() * gv[j] + b);
            }
        }
        // f32 sums of ~24 terms around 1000: relative error ~1e-4 of the spread.
        assert_close(&y, &[2, 3, 8], &want, 2e-4);
    }
}

#[test]
fn erf_is_within_5e7_of_an_f64_erf() {
    let mut worst = 0f64;
    for i in -80_000..=80_000 {
        let x = i as f32 / 10_000.0; // -8 ..= 8, past the clamp at ±4
        let got = f64::from(qbench_models::exec::nn::erf(x));
        worst = worst.max((got - libm::erf(f64::from(x))).abs());
    }
    // The coefficients are good to 7e-8 in f64; f32 arithmetic adds a few ulps (measured 4.5e-7).
    assert!(worst <= 5e-7, "max |erf error| = {worst}");
}

#[test]
fn gelu_erf_and_tanh_and_erf_ops_match_f64() {
    let x = values(&[4, 16], 4);
    let xs = f64s(&x);
    for (op, f) in [
        (
            Op::Gelu { tanh: false },
            (|v: f64| 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()))) as fn(f64) -> f64,
        ),
        (Op::Gelu { tanh: true }, |v: f64| {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        }),
        (Op::Erf, libm::erf),
    ] {
        let g = graph(
            &[("x", &x)],
            vec![],
            vec![node(op.clone(), &["x"], "y")],
            "y",
        );
        let want: Vec<f64> = xs.iter().map(|&v| f(v)).collect();
        assert_close(&run(&g, &[&x]), &[4, 16], &want, 1e-6);
    }
}

/// Naive batched matmul in f64 with numpy broadcasting of the batch dims (both operands
/// of equal rank here).
fn matmul_f64(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
    let (sa, sb) = (a.shape(), b.shape());
    let r = sa.len();
    let (m, k, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    let batch: Vec<usize> = (0..r - 2).map(|i| sa[i].max(sb[i])).collect();
    let nb: usize = batch.iter().product();
    let (av, bv) = (f64s(a), f64s(b));
    let mut out = Vec::new();
    for l in 0..nb {
        // Batch index → offsets, broadcasting size-1 dims.
        let (mut rem, mut oa, mut ob, mut sa_mul, mut sb_mul) = (l, 0, 0, m * k, k * n);
        for ax in (0..r - 2).rev() {
            let i = rem % batch[ax];
            rem /= batch[ax];
            if sa[ax] != 1 {
                oa += i * sa_mul;
            }
            if sb[ax] != 1 {
                ob += i * sb_mul;
            }
            sa_mul *= sa[ax];
            sb_mul *= sb[ax];
        }
        for i in 0..m {
            for j in 0..n {
                out.push(
                    (0..k)
                        .map(|p| av[oa + i * k + p] * bv[ob + p * n + j])
                        .sum(),
                );
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

#[test]
fn matmul_between_activations_batched_and_broadcast_matches_f64() {
    for (sa, sb) in [
        (vec![2, 3, 4, 5], vec![2, 3, 5, 6]), // attention: per batch and head
        (vec![2, 1, 4, 5], vec![1, 3, 5, 6]), // broadcast both ways
    ] {
        let a = values(&sa, 5);
        let b = values(&sb, 6);
        let g = graph(
            &[("a", &a), ("b", &b)],
            vec![],
            vec![node(Op::MatMul, &["a", "b"], "y")],
            "y",
        );
        let (shape, want) = matmul_f64(&a, &b);
        assert_close(&run(&g, &[&a, &b]), &shape, &want, 1e-5);
    }
    // A 2-D constant weight against a 3-D activation (a Linear): one GEMM over all rows.
    let a = values(&[2, 7, 5], 7);
    let w = values(&[5, 3], 8);
    let g = graph(
        &[("a", &a)],
        vec![("w", w.clone())],
        vec![node(Op::MatMul, &["a", "w"], "y")],
        "y",
    );
    let w3 = w.clone().reshaped(vec![1, 5, 3]).unwrap();
    let (shape, want) = matmul_f64(&a, &w3);
    assert_eq!(shape, [2, 7, 3]);
    assert_close(&run(&g, &[&a]), &[2, 7, 3], &want, 1e-5);
}

#[test]
fn softmax_with_additive_attention_mask_ignores_padded_keys() {
    // Scores [N=2, heads=2, S=3, S=3]; sentence 1 has its last key padded.
    let s = values(&[2, 2, 3, 3], 9);
    let mask = Tensor::new(vec![2, 3], vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]).unwrap();
    let g = graph(
        &[("s", &s), ("mask", &mask)],
        vec![
            ("one", Tensor::scalar(1.0)),
            ("min", Tensor::scalar(f32::MIN)),
        ],
        vec![
            node(Op::Sub, &["one", "mask"], "inv"),
            node(Op::Mul, &["inv", "min"], "neg"),
            node(
                Op::Unsqueeze {
                    axes: Some(vec![1, 2]),
                },
                &["neg"],
                "ext",
            ),
            node(Op::Add, &["s", "ext"], "masked"),
            node(
                Op::Softmax {
                    axis: -1,
                    legacy: false,
                },
                &["masked"],
                "p",
            ),
        ],
        "p",
    );
    let p = run(&g, &[&s, &mask]);
    let (sv, mv) = (f64s(&s), f64s(&mask));
    let mut want = Vec::new();
    for (r, row) in sv.chunks(3).enumerate() {
        let n = r / 6; // 2 heads × 3 query rows per sentence
        let keep: Vec<bool> = (0..3).map(|j| mv[n * 3 + j] == 1.0).collect();
        let m = (0..3)
            .filter(|&j| keep[j])
            .map(|j| row[j])
            .fold(f64::MIN, f64::max);
        let z: f64 = (0..3)
            .filter(|&j| keep[j])
            .map(|j| (row[j] - m).exp())
            .sum();
        want.extend((0..3).map(|j| if keep[j] { (row[j] - m).exp() / z } else { 0.0 }));
    }
    assert_close(&p, &[2, 2, 3, 3], &want, 1e-6);
    // Padded keys get exactly zero weight, not merely a small one.
    for r in 6..12 {
        assert_eq!(p.f32s().unwrap()[r * 3 + 2], 0.0);
    }
}

#[test]
fn head_split_and_merge_by_reshape_and_transpose_round_trip() {
    // [N=2, S=3, H=8] → [N, S, heads=2, d=4] → [N, heads, S, d] and back.
    let x = values(&[2, 3, 8], 10);
    let g = graph(
        &[("x", &x)],
        vec![
            ("split", Tensor::from_i64s(vec![0, 0, 2, 4])),
            ("merge", Tensor::from_i64s(vec![0, 0, 8])),
        ],
        vec![
            node(Op::Reshape, &["x", "split"], "r"),
            node(
                Op::Transpose {
                    perm: Some(vec![0, 2, 1, 3]),
                },
                &["r"],
                "heads",
            ),
            node(
                Op::Transpose {
                    perm: Some(vec![0, 2, 1, 3]),
                },
                &["heads"],
                "back",
            ),
            node(Op::Reshape, &["back", "merge"], "y"),
        ],
        "y",
    );
    assert_eq!(run(&g, &[&x]), x);
    // The head view itself: heads[n][h][s][d] = x[n][s][h·4 + d].
    let g = Graph {
        outputs: vec![vi("heads", &[])],
        ..g
    };
    let heads = run(&g, &[&x]);
    let (hv, xv) = (heads.f32s().unwrap(), x.f32s().unwrap());
    for n in 0..2 {
        for h in 0..2 {
            for s in 0..3 {
                for d in 0..4 {
                    assert_eq!(
                        hv[((n * 2 + h) * 3 + s) * 4 + d],
                        xv[(n * 3 + s) * 8 + h * 4 + d]
                    );
                }
            }
        }
    }
}

#[test]
fn reduce_sum_and_mean_over_axes_with_and_without_keepdims_match_loops() {
    let x = values(&[2, 3, 4], 11);
    let xv = f64s(&x);
    let at = |i: usize, j: usize, k: usize| xv[(i * 3 + j) * 4 + k];
    type Case = (
        Vec<i64>,
        bool,
        Vec<usize>,
        fn(&dyn Fn(usize, usize, usize) -> f64) -> Vec<f64>,
    );
    let cases: Vec<Case> = vec![
        (vec![1], false, vec![2, 4], |f| {
            (0..2)
                .flat_map(|i| (0..4).map(move |k| (i, k)))
                .map(|(i, k)| (0..3).map(|j| f(i, j, k)).sum())
                .collect()
        }),
        (vec![-1, 0], true, vec![1, 3, 1], |f| {
            (0..3)
                .map(|j| {
                    (0..2)
                        .flat_map(|i| (0..4).map(move |k| (i, k)))
                        .map(|(i, k)| f(i, j, k))
                        .sum()
                })
                .collect()
        }),
        (vec![], false, vec![], |f| {
            vec![(0..24).map(|l| f(l / 12, (l / 4) % 3, l % 4)).sum()]
        }),
    ];
    for (axes, keep, shape, want_sum) in cases {
        let count = if axes.is_empty() {
            24
        } else {
            axes.iter()
                .map(|&a| [2, 3, 4][a.rem_euclid(3) as usize])
                .product::<usize>()
        };
        let sum = want_sum(&at);
        for mean in [false, true] {
            let op = if mean {
                Op::ReduceMean {
                    axes: Some(axes.clone()),
                    keepdims: keep,
                    noop_with_empty_axes: false,
                }
            } else {
                Op::ReduceSum {
                    axes: Some(axes.clone()),
                    keepdims: keep,
                    noop_with_empty_axes: false,
                }
            };
            let g = graph(&[("x", &x)], vec![], vec![node(op, &["x"], "y")], "y");
            let want: Vec<f64> = sum
                .iter()
                .map(|s| if mean { s / count as f64 } else { *s })
                .collect();
            assert_close(&run(&g, &[&x]), &shape, &want, 1e-6);
        }
    }
    // Axes from input 1 (opset ≥ 13 form), and the no-op flag with no axes.
    let g = graph(
        &[("x", &x)],
        vec![("axes", Tensor::from_i64s(vec![2]))],
        vec![node(
            Op::ReduceSum {
                axes: None,
                keepdims: false,
                noop_with_empty_axes: false,
            },
            &["x", "axes"],
            "y",
        )],
        "y",
    );
    assert_eq!(run(&g, &[&x]).shape(), &[2, 3]);
    let g = graph(
        &[("x", &x)],
        vec![],
        vec![node(
            Op::ReduceSum {
                axes: None,
                keepdims: true,
                noop_with_empty_axes: true,
            },
            &["x"],
            "y",
        )],
        "y",
    );
    assert_eq!(run(&g, &[&x]), x);
}

#[test]
fn lp_normalization_gives_unit_rows_and_keeps_zero_rows_zero() {
    let mut x = values(&[3, 5], 12);
    x.f32s_mut().unwrap()[5..10].fill(0.0);
    for p in [1u8, 2] {
        let g = graph(
            &[("x", &x)],
            vec![],
            vec![node(Op::LpNormalization { axis: -1, p }, &["x"], "y")],
            "y",
        );
        let mut want = Vec::new();
        for r in f64s(&x).chunks(5) {
            let n: f64 = if p == 1 {
                r.iter().map(|v| v.abs()).sum()
            } else {
                r.iter().map(|v| v * v).sum::<f64>().sqrt()
            };
            want.extend(r.iter().map(|v| if n == 0.0 { 0.0 } else { v / n }));
        }
        assert_close(&run(&g, &[&x]), &[3, 5], &want, 1e-6);
    }
}

#[test]
fn embedding_gather_with_cast_ids_and_range_positions() {
    // ids arrive as f32 [N=2, S=3]; word table [5, 4]; positions 0..S from the shape.
    let ids = Tensor::new(vec![2, 3], vec![4.0, 0.0, 2.0, 1.0, 1.0, 3.0]).unwrap();
    let table = values(&[5, 4], 13);
    let pos = values(&[6, 4], 14);
    let g = graph(
        &[("ids", &ids)],
        vec![
            ("table", table.clone()),
            ("pos", pos.clone()),
            ("one", Tensor::new_i64(vec![], vec![1]).unwrap()),
            ("zero", Tensor::new_i64(vec![], vec![0]).unwrap()),
        ],
        vec![
            node(Op::Cast { to: CastTo::I64 }, &["ids"], "idx"),
            node(Op::Gather { axis: 0 }, &["table", "idx"], "we"),
            node(Op::Shape, &["ids"], "shape"),
            node(Op::Gather { axis: 0 }, &["shape", "one"], "len"),
            node(Op::Range, &["zero", "len", "one"], "positions"),
            node(Op::Gather { axis: 0 }, &["pos", "positions"], "pe"),
            node(Op::Add, &["we", "pe"], "y"),
        ],
        "y",
    );
    let y = run(&g, &[&ids]);
    let (tv, pv) = (table.f32s().unwrap(), pos.f32s().unwrap());
    let mut want = Vec::new();
    for (l, &id) in ids.f32s().unwrap().iter().enumerate() {
        let s = l % 3;
        want.extend((0..4).map(|d| f64::from(tv[id as usize * 4 + d]) + f64::from(pv[s * 4 + d])));
    }
    assert_close(&y, &[2, 3, 4], &want, 1e-7);
}

#[test]
fn bad_inputs_of_the_new_ops_are_errors_naming_the_node() {
    // A token id outside the table names the Gather node; a fractional or huge id that
    // Cast cannot represent names the Cast node.
    let ids = Tensor::new(vec![1, 2], vec![1.0, 9.0]).unwrap();
    let g = graph(
        &[("ids", &ids)],
        vec![("table", values(&[5, 4], 1))],
        vec![
            node(Op::Cast { to: CastTo::I64 }, &["ids"], "idx"),
            node(Op::Gather { axis: 0 }, &["table", "idx"], "y"),
        ],
        "y",
    );
    let exec = Executor::new(&g, Options::default()).unwrap();
    let e = exec.run(&[ids]).unwrap_err().to_string();
    assert!(e.contains("n_y") && e.contains("out of range"), "{e}");
    let e = exec
        .run(&[Tensor::new(vec![1, 2], vec![1.0, f32::NAN]).unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_idx") && e.contains("Cast"), "{e}");
    // LayerNorm whose scale does not match the normalised axis.
    let x = values(&[2, 4], 2);
    let g = graph(
        &[("x", &x)],
        vec![("g", values(&[3], 3))],
        vec![node(
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-5,
            },
            &["x", "g"],
            "y",
        )],
        "y",
    );
    let e = Executor::new(&g, Options::default())
        .unwrap()
        .run(&[x])
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_y") && e.contains("scale has 3 values"), "{e}");
}

/// Every new op in one graph: exported to ONNX, re-imported (same results), and run by
/// tract on the exported file within the cross-check tolerance.
#[test]
fn new_ops_survive_onnx_export_reimport_and_agree_with_tract() {
    let ids = Tensor::new(vec![2, 3], vec![4.0, 0.0, 2.0, 1.0, 1.0, 3.0]).unwrap();
    let mask = Tensor::new(vec![2, 3], vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]).unwrap();
    let g = graph(
        &[("ids", &ids), ("mask", &mask)],
        vec![
            ("table", values(&[5, 4], 13)),
            ("pos", values(&[6, 4], 14)),
            ("g", values(&[4], 15)),
            ("b", values(&[4], 16)),
            ("one", Tensor::new_i64(vec![], vec![1]).unwrap()),
            ("zero", Tensor::new_i64(vec![], vec![0]).unwrap()),
        ],
        vec![
            node(Op::Cast { to: CastTo::I64 }, &["ids"], "idx"),
            node(Op::Gather { axis: 0 }, &["table", "idx"], "we"),
            node(Op::Shape, &["ids"], "shape"),
            node(Op::Gather { axis: 0 }, &["shape", "one"], "len"),
            node(Op::Range, &["zero", "len", "one"], "positions"),
            node(Op::Gather { axis: 0 }, &["pos", "positions"], "pe"),
            node(Op::Add, &["we", "pe"], "e"),
            node(
                Op::LayerNorm {
                    axis: -1,
                    epsilon: 1e-12,
                },
                &["e", "g", "b"],
                "ln",
            ),
            node(Op::Gelu { tanh: false }, &["ln"], "ge"),
            node(Op::Erf, &["ge"], "er"),
            node(Op::Gelu { tanh: true }, &["er"], "gt"),
            node(
                Op::Unsqueeze {
                    axes: Some(vec![2]),
                },
                &["mask"],
                "m3",
            ),
            node(Op::Mul, &["gt", "m3"], "masked"),
            node(
                Op::ReduceSum {
                    axes: Some(vec![1]),
                    keepdims: false,
                    noop_with_empty_axes: false,
                },
                &["masked"],
                "sum",
            ),
            node(
                Op::ReduceMean {
                    axes: Some(vec![1]),
                    keepdims: true,
                    noop_with_empty_axes: false,
                },
                &["m3"],
                "frac",
            ),
            node(Op::Div, &["sum", "frac"], "pooled"),
            node(Op::LpNormalization { axis: -1, p: 2 }, &["pooled"], "y"),
        ],
        "y",
    );
    // Declare the output's shape: the export writes it, and tract checks it.
    let g = Graph {
        outputs: vec![vi("y", &[2, 4])],
        ..g
    };
    let want = Executor::new(&g, Options::default())
        .unwrap()
        .run(&[ids.clone(), mask.clone()])
        .unwrap();
    let bytes = onnx::to_bytes(&g);
    let back = onnx::from_bytes(&bytes, "export").unwrap();
    let again = Executor::new(&back, Options::default())
        .unwrap()
        .run(&[ids.clone(), mask.clone()])
        .unwrap();
    assert_eq!(want, again, "re-imported graph computes something else");
    let path = std::env::temp_dir().join(format!(
        "qbench-transformer-ops-{}.onnx",
        std::process::id()
    ));
    onnx::save(&g, &path).unwrap();
    let tract = onnx::crosscheck::run_tract(&path, &[ids, mask]).unwrap();
    let _ = std::fs::remove_file(&path);
    let c = onnx::crosscheck::compare(&want, &tract).unwrap();
    assert!(c.passes(), "{c:?}");
}

/// On several threads (`Options::threads` inside a pool of that many workers) the
/// row-wise ops and batched MatMul give the same bits as on one: shapes large enough
/// to be shared out (softmax rows, layer-norm rows, GELU values, attention heads).
#[test]
fn row_ops_and_batched_matmul_give_the_same_bits_on_every_thread_count() {
    let scores = values(&[2, 4, 64, 64], 21);
    let hidden = values(&[2, 128, 384], 22);
    let (q, k) = (values(&[2, 6, 64, 32], 23), values(&[2, 6, 32, 64], 24));
    let cases: Vec<(Graph, Vec<&Tensor>)> = vec![
        (
            graph(
                &[("s", &scores)],
                vec![],
                vec![node(
                    Op::Softmax {
                        axis: -1,
                        legacy: false,
                    },
                    &["s"],
                    "y",
                )],
                "y",
            ),
            vec![&scores],
        ),
        (
            graph(
                &[("x", &hidden)],
                vec![("g", values(&[384], 25)), ("b", values(&[384], 26))],
                vec![node(
                    Op::LayerNorm {
                        axis: -1,
                        epsilon: 1e-12,
                    },
                    &["x", "g", "b"],
                    "y",
                )],
                "y",
            ),
            vec![&hidden],
        ),
        (
            graph(
                &[("x", &hidden)],
                vec![],
                vec![node(Op::Gelu { tanh: false }, &["x"], "y")],
                "y",
            ),
            vec![&hidden],
        ),
        (
            graph(
                &[("q", &q), ("k", &k)],
                vec![],
                vec![node(Op::MatMul, &["q", "k"], "y")],
                "y",
            ),
            vec![&q, &k],
        ),
    ];
    let bits = |t: &Tensor| {
        t.f32s()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    for (g, xs) in &cases {
        let xs: Vec<Tensor> = xs.iter().map(|t| (*t).clone()).collect();
        let want = bits(&run(g, &xs.iter().collect::<Vec<_>>()));
        for threads in [2, 3] {
            let exec = Executor::new(g, Options { threads }).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| exec.run(&xs).unwrap().remove(0));
            assert!(
                bits(&got) == want,
                "{:?} on {threads} threads differs from one thread",
                g.nodes[0].op
            );
        }
    }
}
