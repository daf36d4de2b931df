//! Every trainable op's gradients against central finite differences on small random
//! shapes, through `train::Network` (the same code path training uses).
//!
//! The loss is `L = Σ out · R` with a fixed random R, so `dL/dout = R`. Finite
//! differences use a step of 1e-2 on an f64-accumulated loss; Conv and Gemm are linear
//! in each operand (the difference quotient is exact up to rounding), and inputs to Relu
//! and MaxPool are kept at least 0.05 from their kinks so the step cannot cross one.

use std::collections::BTreeMap;

use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_models::train::init::Rng;
use qbench_models::train::loss::softmax_cross_entropy;
use qbench_models::train::{Buf, Mode, Network};

struct G {
    nodes: Vec<Node>,
    inits: BTreeMap<String, Tensor>,
    rng: Rng,
}

impl G {
    fn new(seed: u64) -> G {
        G {
            nodes: vec![],
            inits: BTreeMap::new(),
            rng: Rng::new(seed),
        }
    }
    fn param(&mut self, name: &str, shape: &[usize], scale: f32) -> String {
        let n = shape.iter().product();
        let v = self.rng.normals(n, scale);
        self.inits
            .insert(name.into(), Tensor::new(shape.to_vec(), v).unwrap());
        name.into()
    }
    fn node(&mut self, op: Op, inputs: &[&str], out: &str) -> String {
        self.nodes.push(Node {
            name: out.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
        });
        out.into()
    }
    fn graph(self, in_shape: &[usize], out: &str) -> Graph {
        let mut dims = vec![Dim::Symbolic("N".into())];
        dims.extend(in_shape[1..].iter().map(|&d| Dim::Fixed(d)));
        Graph {
            name: "test".into(),
            inputs: vec![ValueInfo {
                name: "x".into(),
                dims,
            }],
            outputs: vec![ValueInfo {
                name: out.into(),
                dims: vec![],
            }],
            initializers: self.inits,
            nodes: self.nodes,
        }
    }
}

fn spatial(k: usize, s: usize, pads: [usize; 4], d: usize) -> Spatial {
    Spatial {
        kernel: Some([k, k]),
        strides: [s, s],
        dilations: [d, d],
        pads,
        ..Spatial::default()
    }
}

/// Random input values kept at least `gap` away from 0 (the Relu kink).
fn input(rng: &mut Rng, shape: &[usize], gap: f32) -> Buf {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let v = rng.normal();
            if v.abs() < gap {
                v.signum() * gap + v
            } else {
                v
            }
        })
        .collect();
    Buf::new(shape.to_vec(), data)
}

fn loss(net: &mut Network, x: &Buf, r: &[f32], mode: Mode) -> f64 {
    let tape = net.forward(x, mode).unwrap();
    tape.output()
        .data
        .iter()
        .zip(r)
        .map(|(&o, &w)| f64::from(o) * f64::from(w))
        .sum()
}

/// Checks the analytic gradients of the input and every trainable parameter at up to 24
/// positions each.
fn check(graph: Graph, x: Buf, mode: Mode) {
    let mut net = Network::new(&graph).unwrap();
    let tape = net.forward(&x, mode).unwrap();
    let mut rng = Rng::new(99);
    let out_shape = tape.output().shape.clone();
    let r = rng.normals(out_shape.iter().product(), 1.0);
    let grads = net
        .backward(&tape, &Buf::new(out_shape, r.clone()))
        .unwrap();
    let eps = 1e-2f32;
    let close = |what: &str, i: usize, analytic: f32, numeric: f64| {
        let tol = 2e-3 + 1e-2 * numeric.abs();
        assert!(
            (f64::from(analytic) - numeric).abs() <= tol,
            "{what}[{i}]: analytic {analytic}, finite difference {numeric}"
        );
    };
    // Input gradient.
    let n = x.data.len();
    for i in (0..n).step_by(n.div_ceil(24)) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data[i] += eps;
        xm.data[i] -= eps;
        let fd = (loss(&mut net, &xp, &r, mode) - loss(&mut net, &xm, &r, mode))
            / (2.0 * f64::from(eps));
        close("input", i, grads.input.data[i], fd);
    }
    let mut checked = 0;
    for p in 0..net.params().len() {
        if !net.params()[p].trainable() {
            continue;
        }
        let name = net.params()[p].name.clone();
        let len = net.params()[p].value.len();
        assert_eq!(grads.params[p].len(), len, "{name} has a gradient");
        for i in (0..len).step_by(len.div_ceil(24)) {
            let v = net.params()[p].value[i];
            net.params_mut()[p].value[i] = v + eps;
            let lp = loss(&mut net, &x, &r, mode);
            net.params_mut()[p].value[i] = v - eps;
            let lm = loss(&mut net, &x, &r, mode);
            net.params_mut()[p].value[i] = v;
            close(
                &name,
                i,
                grads.params[p][i],
                (lp - lm) / (2.0 * f64::from(eps)),
            );
            checked += 1;
        }
    }
    assert!(checked > 0 || graph_has_no_params(&net));
}

fn graph_has_no_params(net: &Network) -> bool {
    net.params().iter().all(|p| !p.trainable())
}

fn gemm(trans_b: bool) -> Op {
    Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b,
    }
}

#[test]
fn gemm_gradients_both_weight_layouts() {
    for trans_b in [true, false] {
        let mut g = G::new(1);
        let w = if trans_b {
            g.param("w", &[5, 7], 0.5)
        } else {
            g.param("w", &[7, 5], 0.5)
        };
        let b = g.param("b", &[5], 0.5);
        g.node(gemm(trans_b), &["x", &w, &b], "y");
        let x = input(&mut Rng::new(2), &[3, 7], 0.0);
        check(g.graph(&[3, 7], "y"), x, Mode::Train);
    }
}

/// (c_in, c_out, k, stride, pads, dilation, groups, h, w, bias)
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    [usize; 4],
    usize,
    usize,
    usize,
    usize,
    bool,
);

#[test]
fn conv_gradients_over_geometries() {
    // (c_in, c_out, k, stride, pads, dilation, groups, h, w, bias)
    let cases: &[ConvCase] = &[
        (2, 3, 3, 1, [1, 1, 1, 1], 1, 1, 5, 6, true),
        (3, 4, 3, 2, [0, 1, 2, 0], 1, 1, 7, 6, false),
        (4, 6, 3, 1, [1, 1, 1, 1], 1, 2, 5, 5, true),
        (4, 4, 3, 2, [1, 1, 1, 1], 1, 4, 6, 7, false), // depthwise, stride 2
        (2, 2, 3, 1, [2, 2, 2, 2], 2, 1, 5, 5, false), // dilation
        (3, 5, 1, 1, [0, 0, 0, 0], 1, 1, 4, 4, true),  // pointwise
    ];
    for (idx, &(ci, co, k, s, pads, d, groups, h, w, bias)) in cases.iter().enumerate() {
        let mut g = G::new(10 + idx as u64);
        let wt = g.param("w", &[co, ci / groups, k, k], 0.5);
        let mut inputs = vec!["x".to_string(), wt];
        if bias {
            inputs.push(g.param("b", &[co], 0.5));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        g.node(
            Op::Conv {
                spatial: spatial(k, s, pads, d),
                group: groups,
            },
            &refs,
            "y",
        );
        let x = input(&mut Rng::new(idx as u64), &[2, ci, h, w], 0.0);
        check(g.graph(&[2, ci, h, w], "y"), x, Mode::Train);
    }
}

fn bn_graph(seed: u64) -> G {
    let mut g = G::new(seed);
    let w = g.param("w", &[3, 2, 3, 3], 0.5);
    g.node(
        Op::Conv {
            spatial: spatial(3, 1, [1; 4], 1),
            group: 1,
        },
        &["x", &w],
        "c",
    );
    let gamma = g.param("gamma", &[3], 0.5);
    let beta = g.param("beta", &[3], 0.5);
    let mean = g.param("mean", &[3], 0.3);
    g.inits.insert(
        "var".into(),
        Tensor::new(vec![3], vec![0.5, 1.5, 2.0]).unwrap(),
    );
    g.node(
        Op::BatchNorm { epsilon: 1e-5 },
        &["c", &gamma, &beta, &mean, "var"],
        "y",
    );
    g
}

#[test]
fn batchnorm_gradients_in_train_and_eval_mode() {
    for mode in [Mode::Train, Mode::Eval] {
        let x = input(&mut Rng::new(5), &[3, 2, 4, 4], 0.0);
        check(bn_graph(4).graph(&[3, 2, 4, 4], "y"), x, mode);
    }
}

#[test]
fn relu_add_and_residual_gradients() {
    // x → conv → relu; y = relu(x) + conv(x): the input's gradient has two paths.
    let mut g = G::new(6);
    let w = g.param("w", &[2, 2, 3, 3], 0.5);
    g.node(
        Op::Conv {
            spatial: spatial(3, 1, [1; 4], 1),
            group: 1,
        },
        &["x", &w],
        "c",
    );
    g.node(Op::Relu, &["x"], "r");
    g.node(Op::Add, &["r", "c"], "y");
    let x = input(&mut Rng::new(7), &[2, 2, 4, 5], 0.05);
    check(g.graph(&[2, 2, 4, 5], "y"), x, Mode::Train);
}

#[test]
fn pooling_and_flatten_gradients() {
    let pools = [
        Op::MaxPool {
            spatial: spatial(3, 2, [1, 1, 1, 1], 1),
        },
        Op::MaxPool {
            spatial: spatial(2, 2, [0; 4], 1),
        },
        Op::AveragePool {
            spatial: spatial(3, 2, [1, 0, 1, 1], 1),
            count_include_pad: true,
        },
        Op::AveragePool {
            spatial: spatial(3, 2, [1, 0, 1, 1], 1),
            count_include_pad: false,
        },
        Op::GlobalAveragePool,
    ];
    for (i, op) in pools.into_iter().enumerate() {
        let mut g = G::new(20 + i as u64);
        g.node(op, &["x"], "p");
        g.node(Op::Flatten { axis: 1 }, &["p"], "f");
        let x_shape = [2, 2, 6, 5];
        // Flatten's width depends on the pool; size the Gemm from a forward pass.
        let mut tmp = G::new(0);
        tmp.nodes = g.nodes.clone();
        let mut net = Network::new(&tmp.graph(&x_shape, "f")).unwrap();
        let width = net
            .forward(&Buf::zeros(x_shape.to_vec()), Mode::Eval)
            .unwrap()
            .output()
            .shape[1];
        let w = g.param("w", &[4, width], 0.5);
        g.node(gemm(true), &["f", &w], "y");
        // Distinct values (a random permutation of a grid spaced 0.1 apart) keep every
        // max-pool window's winner 0.1 ahead of the runner-up: a 1e-2 step cannot swap them.
        let n: usize = x_shape.iter().product();
        let perm = qbench_models::data::permutation(n, 3);
        let data = perm.iter().map(|&p| p as f32 * 0.1 - 3.0).collect();
        check(
            g.graph(&x_shape, "y"),
            Buf::new(x_shape.to_vec(), data),
            Mode::Train,
        );
    }
}

#[test]
fn softmax_cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(8);
    let logits = Buf::new(vec![4, 5], rng.normals(20, 3.0));
    let labels = [0u8, 4, 2, 2];
    let (_, grad) = softmax_cross_entropy(&logits, &labels).unwrap();
    for i in 0..20 {
        let (mut p, mut m) = (logits.clone(), logits.clone());
        p.data[i] += 1e-2;
        m.data[i] -= 1e-2;
        let lp = softmax_cross_entropy(&p, &labels).unwrap().0;
        let lm = softmax_cross_entropy(&m, &labels).unwrap().0;
        let fd = (f64::from(lp) - f64::from(lm)) / 2e-2;
        assert!(
            (f64::from(grad.data[i]) - fd).abs() < 1e-3,
            "logit {i}: {} vs {fd}",
            grad.data[i]
        );
    }
    // Huge logits: still finite, and the loss of a confident right answer is ~0.
    let big = Buf::new(vec![1, 3], vec![1000.0, -1000.0, 0.0]);
    let (l, g) = softmax_cross_entropy(&big, &[0]).unwrap();
    assert!(l.abs() < 1e-6 && g.data.iter().all(|v| v.is_finite()));
    assert!(softmax_cross_entropy(&big, &[3])
        .unwrap_err()
        .contains("label 3"));
}
