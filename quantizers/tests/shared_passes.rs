//! The graph passes live once, in `qbench_models::passes`: the fp32 executor, the static
//! quantizer's fusion and the QAT trainer fold BatchNorm through the same code. Each test
//! would fail if one of the three kept a private copy of the fold.

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::Graph;
use qbench_models::passes::BnFold;
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_models::train::builder::GraphBuilder;
use qbench_models::train::{Buf, Mode, Network, QatPlan};
use qbench_quantizers::fuse::fold_batch_norms;

/// x[N,2,6,6] → Conv 3x3 (4 out, no bias) → BatchNorm with non-trivial statistics → Relu
/// → GlobalAveragePool → Flatten → Gemm (3 classes).
fn conv_bn_graph() -> Graph {
    let mut b = GraphBuilder::new("convbn", 7, "x", &[2, 6, 6]);
    let x = b.input();
    let c = b.conv(&x, "conv", 2, 4, 3, 1, 1, 1);
    let n = b.batchnorm(&c, "bn", 4);
    let r = b.relu(&n, "relu");
    let p = b.global_avg_pool(&r, "gap");
    let f = b.flatten(&p, "flat");
    let mut g = b.finish(&f, 3);
    let mut rng = Rng::new(11);
    for (stat, lo, hi) in [
        ("bn.weight", 0.5, 1.5),
        ("bn.bias", -0.5, 0.5),
        ("bn.running_mean", -0.3, 0.3),
        ("bn.running_var", 0.2, 2.0),
    ] {
        let t = Tensor::new(vec![4], rng.uniforms_f32(4, lo, hi)).unwrap();
        g.initializers.insert(stat.into(), t);
    }
    g
}

fn stat(g: &Graph, name: &str) -> Vec<f32> {
    g.initializers[name].f32s().unwrap().to_vec()
}

#[test]
fn executor_quantizer_and_trainer_fold_batch_norm_through_the_shared_pass() {
    let g = conv_bn_graph();
    let folds = BnFold::computed_on_this_thread;

    let before = folds();
    Executor::new(&g, Options::default()).unwrap();
    assert_eq!(
        folds(),
        before + 1,
        "the fp32 executor folds through passes"
    );

    let before = folds();
    let (fused, pairs) = fold_batch_norms(&g).unwrap();
    assert_eq!(
        folds(),
        before + 1,
        "the quantizers' fusion folds through passes"
    );
    assert_eq!(pairs.len(), 1);

    let before = folds();
    let mut net = Network::with_qat(
        &g,
        QatPlan {
            fold_bn: vec!["conv".into()],
            ..QatPlan::default()
        },
    )
    .unwrap();
    let x = Buf::new(vec![2, 2, 6, 6], Rng::new(3).normals(144, 1.0));
    net.forward(&x, Mode::Eval).unwrap();
    assert_eq!(folds(), before + 1, "the QAT trainer folds through passes");

    // The quantizers' folded weights are the shared fold's, bit for bit.
    let fold = BnFold::factors(
        &stat(&g, "bn.weight"),
        &stat(&g, "bn.running_var"),
        qbench_models::train::builder::BN_EPS,
    );
    let conv = fused.nodes.iter().find(|n| n.name == "conv").unwrap();
    assert_eq!(
        stat(&fused, &conv.inputs[1]),
        fold.scale_weights(&stat(&g, "conv.weight"))
    );
    assert_eq!(
        stat(&fused, &conv.inputs[2]),
        fold.bias(None, &stat(&g, "bn.running_mean"), &stat(&g, "bn.bias"))
    );
}

/// The executor folds the same weights as the quantizers: running the graph and the
/// quantizers' folded graph gives the same bits.
#[test]
fn executor_on_the_graph_and_on_the_quantizers_folded_graph_agree_bit_for_bit() {
    let g = conv_bn_graph();
    let (fused, _) = fold_batch_norms(&g).unwrap();
    let x = Tensor::new(vec![3, 2, 6, 6], Rng::new(5).uniforms_f32(216, -1.0, 1.0)).unwrap();
    let run = |g: &Graph| {
        Executor::new(g, Options::default())
            .unwrap()
            .run(std::slice::from_ref(&x))
            .unwrap()
    };
    let (a, b) = (run(&g), run(&fused));
    assert_eq!(a[0].f32s().unwrap(), b[0].f32s().unwrap());
}
