//! The trainer's stateful parts: BatchNorm train vs eval mode and its running statistics,
//! SGD and Adam against hand-computed updates, determinism (bit-identical weights for a
//! seed, whatever the thread count), and refusals that name the node.

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Graph, Op};
use qbench_models::tensor::Tensor;
use qbench_models::train::builder::GraphBuilder;
use qbench_models::train::fit::OptimizerKind;
use qbench_models::train::init::Rng;
use qbench_models::train::{
    arch, fit, Adam, Buf, FitConfig, Mode, Network, Optimizer, Param, ParamKind, Sgd,
};

/// conv 3x3 (2→3) → BatchNorm, from the builder (γ = 1, β = 0, mean 0, var 1).
fn conv_bn() -> Graph {
    let mut b = GraphBuilder::new("conv-bn", 3, "x", &[2, 5, 5]);
    let x = b.input();
    let c = b.conv(&x, "c", 2, 3, 3, 1, 1, 1);
    let y = b.batchnorm(&c, "bn", 3);
    b.finish(&y, 3)
}

fn per_channel_stats(y: &Buf) -> Vec<(f64, f64)> {
    let (n, c) = (y.shape[0], y.shape[1]);
    let hw: usize = y.shape[2..].iter().product();
    (0..c)
        .map(|ch| {
            let v: Vec<f64> = (0..n)
                .flat_map(|i| {
                    y.data[(i * c + ch) * hw..][..hw]
                        .iter()
                        .map(|&v| f64::from(v))
                })
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
            (m, var)
        })
        .collect()
}

#[test]
fn batchnorm_train_mode_normalises_and_updates_running_stats_eval_mode_does_not() {
    let graph = conv_bn();
    let mut net = Network::new(&graph).unwrap();
    let mut rng = Rng::new(4);
    let x = Buf::new(vec![4, 2, 5, 5], rng.normals(200, 2.0));
    // What the conv produces: the same graph without the BN, via the executor.
    let mut conv_only = graph.clone();
    conv_only.nodes.pop();
    conv_only.outputs[0].name = "c".into();
    let conv = Executor::new(&conv_only, Options { threads: 1 })
        .unwrap()
        .run(&[Tensor::new(x.shape.clone(), x.data.clone()).unwrap()])
        .unwrap()
        .remove(0);
    let conv = Buf::new(conv.shape().to_vec(), conv.f32s().unwrap().to_vec());
    let batch = per_channel_stats(&conv);

    let y = net.forward(&x, Mode::Train).unwrap().output().clone();
    for (ch, (m, v)) in per_channel_stats(&y).into_iter().enumerate() {
        assert!(m.abs() < 1e-5, "channel {ch}: train-mode mean {m}");
        // var(x̂) = σ²/(σ² + ε).
        let want = batch[ch].1 / (batch[ch].1 + 1e-5);
        assert!(
            (v - want).abs() < 1e-4,
            "channel {ch}: variance {v}, want {want}"
        );
    }
    // Running statistics: m·run + (1 − m)·batch, variance unbiased (100 values/channel).
    let rm = &net.params()[net.param_index("bn.running_mean").unwrap()].value;
    let rv = &net.params()[net.param_index("bn.running_var").unwrap()].value;
    for ch in 0..3 {
        let (m, v) = batch[ch];
        assert!(
            (f64::from(rm[ch]) - 0.1 * m).abs() < 1e-5,
            "running mean {ch}"
        );
        let want = 0.9 + 0.1 * v * 100.0 / 99.0;
        assert!((f64::from(rv[ch]) - want).abs() < 1e-4, "running var {ch}");
    }
    // Eval mode uses the running statistics, leaves them alone, and equals the executor
    // (which folds the BN into the conv) on the exported graph.
    let before = net.params().to_vec();
    let e = net.forward(&x, Mode::Eval).unwrap().output().clone();
    assert_eq!(net.params(), &before[..]);
    let exec = Executor::new(&net.to_graph(), Options { threads: 1 })
        .unwrap()
        .run(&[Tensor::new(x.shape.clone(), x.data.clone()).unwrap()])
        .unwrap()
        .remove(0);
    for (a, b) in e.data.iter().zip(exec.f32s().unwrap()) {
        assert!(
            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
            "eval {a} vs executor {b}"
        );
    }
    // And eval mode is not train mode: the outputs differ once the statistics do.
    assert!(e
        .data
        .iter()
        .zip(&y.data)
        .any(|(a, b)| (a - b).abs() > 1e-2));
}

fn params(kind: ParamKind) -> Vec<Param> {
    vec![Param {
        name: "p".into(),
        shape: vec![2],
        value: vec![1.0, -2.0],
        kind,
    }]
}

fn close(got: &[f32], want: &[f32]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn sgd_momentum_and_weight_decay_match_hand_computed_steps() {
    let grads = vec![vec![0.5, 0.25]];
    let mut p = params(ParamKind::Weight);
    let mut opt = Sgd::new(0.9, 0.1);
    // Step 1: g = ∇ + 0.1·w = [0.6, 0.05]; v = g; w = w − 0.1·v.
    opt.step(&mut p, &grads, 0.1);
    close(&p[0].value, &[0.94, -2.005]);
    // Step 2: g = [0.5 + 0.094, 0.25 − 0.2005] = [0.594, 0.0495];
    // v = 0.9·[0.6, 0.05] + g = [1.134, 0.0945]; w −= 0.1·v.
    opt.step(&mut p, &grads, 0.1);
    close(&p[0].value, &[0.8266, -2.01445]);
    // Biases do not decay: step 1 is plain 0.1·∇.
    let mut b = params(ParamKind::Bias);
    Sgd::new(0.9, 0.1).step(&mut b, &grads, 0.1);
    close(&b[0].value, &[0.95, -2.025]);
    // Running statistics are never touched, even with a gradient slot.
    let mut r = params(ParamKind::RunningVar);
    Sgd::new(0.9, 0.1).step(&mut r, &grads, 0.1);
    assert_eq!(r[0].value, vec![1.0, -2.0]);
}

#[test]
fn adam_matches_hand_computed_steps() {
    let grads = vec![vec![0.5, 0.25]];
    let mut p = params(ParamKind::Weight);
    let mut opt = Adam::new(0.0);
    // With a constant gradient the bias-corrected m̂ = g and v̂ = g², so each step moves
    // every weight by lr·g/(|g| + ε) = lr·sign(g) (to 1e-8).
    opt.step(&mut p, &grads, 0.1);
    close(&p[0].value, &[0.9, -2.1]);
    opt.step(&mut p, &grads, 0.1);
    close(&p[0].value, &[0.8, -2.2]);
    // A changing gradient: step 1 with g1 = 1, step 2 with g2 = −1 (scalar):
    // m = 0.9·0.1 − 0.1 = −0.01, m̂ = −0.01/0.19; v = 0.999·0.001 + 0.001 = 0.001999,
    // v̂ = 1; w = 1 − 0.1 − 0.1·(−0.01/0.19)/(1 + 1e-8).
    let mut q = vec![Param {
        name: "q".into(),
        shape: vec![1],
        value: vec![1.0],
        kind: ParamKind::Weight,
    }];
    let mut opt = Adam::new(0.0);
    opt.step(&mut q, &[vec![1.0]], 0.1);
    opt.step(&mut q, &[vec![-1.0]], 0.1);
    close(&q[0].value, &[0.9 + 0.1 * 0.01 / 0.19]);
    // L2 decay enters the gradient: g = 0 + 0.5·w → a step of −lr·sign(w).
    let mut d = params(ParamKind::Weight);
    Adam::new(0.5).step(&mut d, &[vec![0.0, 0.0]], 0.1);
    close(&d[0].value, &[0.9, -1.9]);
}

fn train_small(seed: u64, threads: usize) -> Vec<Param> {
    let data = Dataset::load(DatasetKind::FashionMnist, Split::Train)
        .unwrap()
        .take(96);
    let mut b = GraphBuilder::new("small", seed, "input", &[1, 28, 28]);
    let x = b.input();
    let x = b.conv(&x, "c1", 1, 4, 3, 2, 1, 1);
    let x = b.batchnorm(&x, "bn1", 4);
    let x = b.relu(&x, "r1");
    let x = b.conv(&x, "dw", 4, 4, 3, 2, 1, 4);
    let x = b.global_avg_pool(&x, "gap");
    let x = b.flatten(&x, "f");
    let x = b.linear(&x, "fc", 4, 10);
    let mut net = Network::new(&b.finish(&x, 10)).unwrap();
    let cfg = FitConfig {
        epochs: 2,
        batch: 32,
        lr: 0.05,
        weight_decay: 1e-4,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        seed,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| fit(&mut net, &data, &cfg, |_| {}).unwrap());
    net.params().to_vec()
}

#[test]
fn training_is_bit_identical_for_a_seed_whatever_the_thread_count() {
    let a = train_small(7, 1);
    let b = train_small(7, 3);
    for (p, q) in a.iter().zip(&b) {
        let (pb, qb): (Vec<u32>, Vec<u32>) = (
            p.value.iter().map(|v| v.to_bits()).collect(),
            q.value.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(pb, qb, "{} differs between 1 and 3 threads", p.name);
    }
    let c = train_small(8, 1);
    assert_ne!(a, c, "a different seed trains different weights");
}

#[test]
fn unsupported_graphs_are_refused_naming_the_node() {
    let mut g = arch::mlp_mnist(1);
    g.nodes[1].op = Op::Sigmoid;
    let err = Network::new(&g).unwrap_err().to_string();
    assert!(err.contains("fc1") && err.contains("Sigmoid"), "{err}");

    let mut g = arch::mlp_mnist(1);
    if let Op::Gemm { alpha, .. } = &mut g.nodes[1].op {
        *alpha = 2.0;
    }
    let err = Network::new(&g).unwrap_err().to_string();
    assert!(err.contains("fc1") && err.contains("alpha"), "{err}");

    // A wrong input shape is an error naming the graph, not a panic.
    let mut net = Network::new(&arch::mlp_mnist(1)).unwrap();
    let Err(err) = net.forward(&Buf::zeros(vec![2, 1, 27, 28]), Mode::Train) else {
        panic!("a 27x28 image was accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("mlp-mnist") && err.contains("[2, 1, 27, 28]"),
        "{err}"
    );
}

#[test]
fn zoo_architectures_have_the_specified_layers() {
    let mlp = Network::new(&arch::mlp_mnist(1)).unwrap();
    let shapes: Vec<_> = mlp.params().iter().map(|p| p.shape.clone()).collect();
    assert_eq!(
        shapes,
        [
            vec![512, 784],
            vec![512],
            vec![256, 512],
            vec![256],
            vec![10, 256],
            vec![10]
        ]
    );
    let g = arch::resnet_fashion(1);
    let count = |f: &dyn Fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    assert_eq!(
        count(&|o| matches!(o, Op::Add)),
        3,
        "one residual Add per stage"
    );
    assert_eq!(
        count(&|o| matches!(o, Op::Conv { group, .. } if *group == 64)),
        1,
        "one depthwise conv"
    );
    assert_eq!(count(&|o| matches!(o, Op::GlobalAveragePool)), 1);
    let strided = count(&|o| matches!(o, Op::Conv { spatial, .. } if spatial.strides == [2, 2]));
    assert_eq!(
        strided, 5,
        "the stem, and a stride-2 conv + 1x1 shortcut in stages 2 and 3"
    );
    let mut net = Network::new(&g).unwrap();
    let out = net
        .forward(&Buf::zeros(vec![2, 1, 28, 28]), Mode::Eval)
        .unwrap();
    assert_eq!(out.output().shape, [2, 10]);
}
