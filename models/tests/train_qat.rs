//! The trainer's quantization-aware pieces, with a fake quantizer defined here (a fixed
//! per-tensor grid; the quantizers crate supplies the real ones):
//! - the straight-through estimator: through fake quantization the gradient equals the
//!   finite difference of the identity where the value lies inside the grid, and is
//!   exactly zero where it was clamped, for activations and weights;
//! - Conv + BatchNorm folded QAT style: the same function as the unfolded pair (eval and
//!   train mode), its gradients (weights, γ through the fold factor, β, bias, input)
//!   against finite differences, frozen statistics, and fake quantization reaching the
//!   folded weights.

use std::collections::BTreeMap;

use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_models::train::init::Rng;
use qbench_models::train::{Buf, FakeQuantizer, Mode, Network, QatPlan};

/// Per-tensor affine fake quantization on a fixed grid; records the last tensor it saw.
#[derive(Debug, Clone)]
struct Grid {
    scale: f32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
    seen: std::sync::Arc<std::sync::Mutex<Vec<f32>>>,
}

impl Grid {
    fn new(scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> Grid {
        Grid {
            scale,
            zero_point,
            qmin,
            qmax,
            seen: Default::default(),
        }
    }

    /// The real interval the grid covers.
    fn bounds(&self) -> (f32, f32) {
        (
            (self.qmin - self.zero_point) as f32 * self.scale,
            (self.qmax - self.zero_point) as f32 * self.scale,
        )
    }
}

impl FakeQuantizer for Grid {
    fn fake_quantize(
        &mut self,
        _shape: &[usize],
        x: &[f32],
        _observe: bool,
    ) -> Result<(Vec<f32>, Vec<bool>), String> {
        *self.seen.lock().unwrap() = x.to_vec();
        let mut v = Vec::with_capacity(x.len());
        let mut m = Vec::with_capacity(x.len());
        for &x in x {
            let q = (x / self.scale).round_ties_even() + self.zero_point as f32;
            m.push(q >= self.qmin as f32 && q <= self.qmax as f32);
            let q = q.clamp(self.qmin as f32, self.qmax as f32);
            v.push((q - self.zero_point as f32) * self.scale);
        }
        Ok((v, m))
    }
}

fn bx(g: Grid) -> Box<dyn FakeQuantizer> {
    Box::new(g)
}

fn graph(nodes: Vec<Node>, inits: BTreeMap<String, Tensor>, x: &[usize], out: &str) -> Graph {
    let mut dims = vec![Dim::Symbolic("N".into())];
    dims.extend(x[1..].iter().map(|&d| Dim::Fixed(d)));
    Graph {
        name: "qat-test".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            dims,
        }],
        outputs: vec![ValueInfo {
            name: out.into(),
            dims: vec![],
        }],
        initializers: inits,
        nodes,
    }
}

fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![name.into()],
    }
}

fn gemm() -> Op {
    Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    }
}

/// `x [n, 6] → fc (W [4, 6], b) → fc`.
fn linear_graph(rng: &mut Rng) -> Graph {
    let mut inits = BTreeMap::new();
    inits.insert(
        "w".to_string(),
        Tensor::new(vec![4, 6], rng.normals(24, 0.5)).unwrap(),
    );
    inits.insert(
        "b".to_string(),
        Tensor::new(vec![4], rng.normals(4, 0.5)).unwrap(),
    );
    graph(
        vec![node("fc", gemm(), &["x", "w", "b"])],
        inits,
        &[3, 6],
        "fc",
    )
}

fn loss(net: &mut Network, x: &Buf, r: &[f32]) -> f64 {
    let t = net.forward(x, Mode::Eval).unwrap();
    t.output()
        .data
        .iter()
        .zip(r)
        .map(|(&o, &w)| f64::from(o) * f64::from(w))
        .sum()
}

#[test]
fn ste_passes_the_gradient_inside_the_grid_and_zeroes_it_outside() {
    let mut rng = Rng::new(1);
    let g = linear_graph(&mut rng);
    // The input grid covers [-1, 1.02]; the inputs reach ±2.5, so some are clamped.
    let grid = Grid::new(2.0 / 100.0, 50, 0, 101);
    let (lo, hi) = grid.bounds();
    let plan = QatPlan {
        activations: vec![("x".into(), bx(grid))],
        ..QatPlan::default()
    };
    let mut net = Network::with_qat(&g, plan).unwrap();
    let x = Buf::new(vec![3, 6], rng.normals(18, 1.2));
    let r = rng.normals(12, 1.0);
    let tape = net.forward(&x, Mode::Train).unwrap();
    let grads = net
        .backward(&tape, &Buf::new(vec![3, 4], r.clone()))
        .unwrap();
    // The identity's finite differences: the fake-quant-free network.
    net.fake_quant_enabled = false;
    let (mut inside, mut outside) = (0, 0);
    for i in 0..x.data.len() {
        let eps = 1e-2;
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data[i] += eps;
        xm.data[i] -= eps;
        let fd = (loss(&mut net, &xp, &r) - loss(&mut net, &xm, &r)) / (2.0 * f64::from(eps));
        let g = grads.input.data[i];
        // Up to half a step beyond the ends still rounds onto the grid (the mask's edge
        // is there); values within 0.1 step of that edge are not checked.
        let step = 2.0 / 100.0;
        if (lo - 0.4 * step..=hi + 0.4 * step).contains(&x.data[i]) {
            assert!(
                (f64::from(g) - fd).abs() < 1e-3 + 1e-3 * fd.abs(),
                "x[{i}] = {} inside: STE {g} vs finite difference {fd}",
                x.data[i]
            );
            inside += 1;
        } else if !(lo - 0.6 * step..=hi + 0.6 * step).contains(&x.data[i]) {
            assert_eq!(g, 0.0, "x[{i}] = {} was clamped: no gradient", x.data[i]);
            outside += 1;
        }
    }
    assert!(
        inside > 0 && outside > 0,
        "{inside} inside, {outside} outside"
    );
}

#[test]
fn ste_on_weights_and_the_forward_uses_the_fake_quantized_weights() {
    let mut rng = Rng::new(2);
    let g = linear_graph(&mut rng);
    // A coarse weight grid over [-0.6, 0.6]: the larger weights are clamped.
    let grid = Grid::new(0.6 / 7.0, 0, -7, 7);
    let (lo, hi) = grid.bounds();
    let wgrid = grid.clone();
    let plan = QatPlan {
        weights: vec![("fc".into(), bx(grid))],
        ..QatPlan::default()
    };
    let mut net = Network::with_qat(&g, plan).unwrap();
    let x = Buf::new(vec![3, 6], rng.normals(18, 1.0));
    let r = rng.normals(12, 1.0);
    let tape = net.forward(&x, Mode::Train).unwrap();
    // The forward pass ran on fq(W): compare with a network whose weights are fq(W).
    let w = net.params()[0].value.clone();
    let (wq, _) = wgrid.clone().fake_quantize(&[4, 6], &w, true).unwrap();
    let mut plain = Network::new(&g).unwrap();
    plain.params_mut()[0].value = wq;
    assert_eq!(
        plain.forward(&x, Mode::Eval).unwrap().output(),
        tape.output(),
        "the forward pass multiplies by the fake-quantized weights"
    );
    let grads = net
        .backward(&tape, &Buf::new(vec![3, 4], r.clone()))
        .unwrap();
    net.fake_quant_enabled = false;
    let (mut inside, mut outside) = (0, 0);
    for (i, &wi) in w.iter().enumerate() {
        let eps = 1e-2;
        net.params_mut()[0].value[i] = wi + eps;
        let lp = loss(&mut net, &x, &r);
        net.params_mut()[0].value[i] = wi - eps;
        let lm = loss(&mut net, &x, &r);
        net.params_mut()[0].value[i] = wi;
        let fd = (lp - lm) / (2.0 * f64::from(eps));
        let g = grads.params[0][i];
        let step = 0.6 / 7.0;
        if (lo - 0.4 * step..=hi + 0.4 * step).contains(&wi) {
            assert!(
                (f64::from(g) - fd).abs() < 1e-3 + 1e-3 * fd.abs(),
                "w[{i}] = {wi} inside: STE {g} vs {fd}"
            );
            inside += 1;
        } else if !(lo - 0.6 * step..=hi + 0.6 * step).contains(&wi) {
            assert_eq!(g, 0.0, "w[{i}] = {wi} was clamped");
            outside += 1;
        }
    }
    assert!(
        inside > 0 && outside > 0,
        "{inside} inside, {outside} outside"
    );
    // The bias is not fake-quantized: its gradient is the plain one.
    assert!(grads.params[1].iter().all(|v| v.is_finite()));
}

/// `x [n, 2, 5, 5] → conv (W [3, 2, 3, 3], bias?) → bn → relu → y`.
fn conv_bn(seed: u64, bias: bool) -> Graph {
    let mut rng = Rng::new(seed);
    let mut inits = BTreeMap::new();
    let mut t = |name: &str, shape: &[usize], v: Vec<f32>| {
        inits.insert(name.to_string(), Tensor::new(shape.to_vec(), v).unwrap());
    };
    t("w", &[3, 2, 3, 3], rng.normals(54, 0.5));
    t("b", &[3], rng.normals(3, 0.5));
    t("gamma", &[3], vec![0.8, -1.3, 1.7]);
    t("beta", &[3], rng.normals(3, 0.5));
    t("mean", &[3], rng.normals(3, 0.3));
    t("var", &[3], vec![0.5, 1.5, 2.0]);
    let conv_in: &[&str] = if bias { &["x", "w", "b"] } else { &["x", "w"] };
    graph(
        vec![
            node(
                "conv",
                Op::Conv {
                    spatial: Spatial {
                        kernel: Some([3, 3]),
                        strides: [1, 1],
                        dilations: [1, 1],
                        pads: [1; 4],
                        ..Spatial::default()
                    },
                    group: 1,
                },
                conv_in,
            ),
            node(
                "bn",
                Op::BatchNorm { epsilon: 1e-5 },
                &["conv", "gamma", "beta", "mean", "var"],
            ),
            node("relu", Op::Relu, &["bn"]),
        ],
        inits,
        &[2, 2, 5, 5],
        "relu",
    )
}

fn folded(g: &Graph) -> Network {
    Network::with_qat(
        g,
        QatPlan {
            fold_bn: vec!["conv".into()],
            ..QatPlan::default()
        },
    )
    .unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn folded_conv_bn_is_the_unfolded_pair_in_eval_and_train_mode() {
    for bias in [false, true] {
        let g = conv_bn(3, bias);
        let x = Buf::new(vec![4, 2, 5, 5], Rng::new(4).normals(200, 1.0));
        let (mut f, mut u) = (folded(&g), Network::new(&g).unwrap());
        let fe = f.forward(&x, Mode::Eval).unwrap().output().clone();
        let ue = u.forward(&x, Mode::Eval).unwrap().output().clone();
        close(&fe.data, &ue.data, 1e-5, "eval");
        // Train mode: batch statistics, and the running ones move the same way.
        let ft = f.forward(&x, Mode::Train).unwrap().output().clone();
        let ut = u.forward(&x, Mode::Train).unwrap().output().clone();
        close(&ft.data, &ut.data, 1e-4, "train");
        for name in ["mean", "var"] {
            let p = |n: &Network| n.params()[n.param_index(name).unwrap()].value.clone();
            close(&p(&f), &p(&u), 1e-5, name);
        }
        // The folded network exports the graph it was compiled from, BN and all.
        assert_eq!(f.to_graph().nodes.len(), 3);
    }
}

#[test]
fn frozen_bn_keeps_its_statistics_and_computes_as_in_eval_mode() {
    let g = conv_bn(5, true);
    let x = Buf::new(vec![4, 2, 5, 5], Rng::new(6).normals(200, 1.0));
    let mut f = folded(&g);
    f.bn_frozen = true;
    let before: Vec<Vec<f32>> = f.params().iter().map(|p| p.value.clone()).collect();
    let train = f.forward(&x, Mode::Train).unwrap().output().clone();
    let after: Vec<Vec<f32>> = f.params().iter().map(|p| p.value.clone()).collect();
    assert_eq!(before, after, "frozen statistics do not move");
    let eval = f.forward(&x, Mode::Eval).unwrap().output().clone();
    assert_eq!(train, eval);
}

/// Analytic gradients of the input and every trainable parameter against central finite
/// differences of `L = Σ out · R` (f64-accumulated, step 1e-2).
fn check_gradients(net: &mut Network, x: &Buf, mode: Mode) {
    // Running statistics must not drift between the evaluations.
    net.bn_momentum = 1.0;
    let tape = net.forward(x, mode).unwrap();
    let shape = tape.output().shape.clone();
    let r = Rng::new(9).normals(shape.iter().product(), 1.0);
    let grads = net.backward(&tape, &Buf::new(shape, r.clone())).unwrap();
    let f = |net: &mut Network, x: &Buf| -> f64 {
        let t = net.forward(x, mode).unwrap();
        t.output()
            .data
            .iter()
            .zip(&r)
            .map(|(&o, &w)| f64::from(o) * f64::from(w))
            .sum()
    };
    let eps = 1e-2f32;
    let ok = |what: &str, i: usize, a: f32, n: f64| {
        assert!(
            (f64::from(a) - n).abs() <= 3e-3 + 1e-2 * n.abs(),
            "{what}[{i}]: analytic {a}, finite difference {n}"
        );
    };
    for i in (0..x.data.len()).step_by(7) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data[i] += eps;
        xm.data[i] -= eps;
        ok(
            "input",
            i,
            grads.input.data[i],
            (f(net, &xp) - f(net, &xm)) / (2.0 * f64::from(eps)),
        );
    }
    for p in 0..net.params().len() {
        if !net.params()[p].trainable() {
            continue;
        }
        let name = net.params()[p].name.clone();
        for i in (0..net.params()[p].value.len()).step_by(5) {
            let v = net.params()[p].value[i];
            net.params_mut()[p].value[i] = v + eps;
            let lp = f(net, x);
            net.params_mut()[p].value[i] = v - eps;
            let lm = f(net, x);
            net.params_mut()[p].value[i] = v;
            ok(
                &name,
                i,
                grads.params[p][i],
                (lp - lm) / (2.0 * f64::from(eps)),
            );
        }
    }
}

#[test]
fn folded_conv_bn_gradients_match_finite_differences() {
    // No ReLU kinks near the inputs: drop the ReLU (its gradient is tested elsewhere).
    for bias in [false, true] {
        let mut g = conv_bn(7, bias);
        g.nodes.pop();
        g.outputs[0].name = "bn".into();
        let x = Buf::new(vec![3, 2, 5, 5], Rng::new(8).normals(150, 1.0));
        for (mode, frozen) in [
            (Mode::Train, false),
            (Mode::Train, true),
            (Mode::Eval, false),
        ] {
            let mut net = folded(&g);
            net.bn_frozen = frozen;
            check_gradients(&mut net, &x, mode);
        }
    }
}

#[test]
fn weight_fake_quantization_sees_the_folded_weights() {
    let g = conv_bn(11, false);
    let grid = Grid::new(0.05, 0, -127, 127);
    let seen = grid.seen.clone();
    let mut net = Network::with_qat(
        &g,
        QatPlan {
            weights: vec![("conv".into(), bx(grid))],
            fold_bn: vec!["conv".into()],
            ..QatPlan::default()
        },
    )
    .unwrap();
    let x = Buf::new(vec![2, 2, 5, 5], Rng::new(12).normals(100, 1.0));
    net.forward(&x, Mode::Train).unwrap();
    // W·γ/√(σ²+ε), as the static pipeline's fold computes it.
    let p = |n: &str| net.params()[net.param_index(n).unwrap()].value.clone();
    let (w, gamma, var) = (p("w"), p("gamma"), p("var"));
    let expect: Vec<f32> = w
        .chunks(18)
        .enumerate()
        .flat_map(|(c, row)| {
            let s = gamma[c] / (var[c] + 1e-5).sqrt();
            row.iter().map(move |v| v * s)
        })
        .collect();
    // `var` moved after the forward pass (momentum 0.9); the fold used the old value.
    let old_var = [0.5f32, 1.5, 2.0];
    let expect_old: Vec<f32> = w
        .chunks(18)
        .enumerate()
        .flat_map(|(c, row)| {
            let s = gamma[c] / (old_var[c] + 1e-5).sqrt();
            row.iter().map(move |v| v * s)
        })
        .collect();
    assert_ne!(expect, expect_old);
    assert_eq!(*seen.lock().unwrap(), expect_old);
}

#[test]
fn eval_passes_through_a_fake_quantized_fold_run_the_int8_form_and_have_no_gradient() {
    let g = conv_bn(14, true);
    let mut net = Network::with_qat(
        &g,
        QatPlan {
            weights: vec![("conv".into(), bx(Grid::new(1e-4, 0, -127_000, 127_000)))],
            fold_bn: vec!["conv".into()],
            ..QatPlan::default()
        },
    )
    .unwrap();
    let x = Buf::new(vec![2, 2, 5, 5], Rng::new(15).normals(100, 1.0));
    // On a grid this fine, the folded form is the BatchNorm's eval output.
    let folded = net.forward(&x, Mode::Eval).unwrap();
    let plain = Network::new(&g)
        .unwrap()
        .forward(&x, Mode::Eval)
        .unwrap()
        .output()
        .clone();
    close(&folded.output().data, &plain.data, 1e-3, "eval");
    let e = net
        .backward(&folded, &Buf::zeros(plain.shape.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv") && e.contains("eval-mode"), "{e}");
}

#[test]
fn bad_plans_are_refused_naming_the_culprit() {
    let g = conv_bn(13, false);
    let bad = |plan: QatPlan| Network::with_qat(&g, plan).unwrap_err().to_string();
    let e = bad(QatPlan {
        activations: vec![("nope".into(), bx(Grid::new(1.0, 0, 0, 255)))],
        ..QatPlan::default()
    });
    assert!(e.contains("\"nope\""), "{e}");
    let e = bad(QatPlan {
        fold_bn: vec!["relu".into()],
        ..QatPlan::default()
    });
    assert!(e.contains("\"relu\""), "{e}");
    let e = bad(QatPlan {
        fold_bn: vec!["conv".into(), "conv".into()],
        weights: vec![("conv".into(), bx(Grid::new(1.0, 0, -127, 127)))],
        activations: vec![
            ("x".into(), bx(Grid::new(1.0, 0, 0, 255))),
            ("x".into(), bx(Grid::new(1.0, 0, 0, 255))),
        ],
    });
    assert!(e.contains("\"x\"") && e.contains("twice"), "{e}");
    let e = bad(QatPlan {
        weights: vec![("relu".into(), bx(Grid::new(1.0, 0, -127, 127)))],
        ..QatPlan::default()
    });
    assert!(e.contains("relu") && e.contains("weight"), "{e}");
}
