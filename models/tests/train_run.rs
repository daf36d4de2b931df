//! A small real training run: the MLP of `mlp-mnist` on 2,000 MNIST training images for
//! 3 epochs must reach 85 % top-1 on 1,000 test images (untrained: about 10 %), and the
//! exported ONNX must score the same on the executor.

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::exec::{Executor, Options};
use qbench_models::tensor::Tensor;
use qbench_models::train::fit::OptimizerKind;
use qbench_models::train::{arch, evaluate, fit, FitConfig, Network};

#[test]
fn mlp_learns_mnist_from_a_2000_image_slice() {
    let train = Dataset::load(DatasetKind::Mnist, Split::Train)
        .unwrap()
        .shuffled(1)
        .take(2000);
    let test = Dataset::load(DatasetKind::Mnist, Split::Test)
        .unwrap()
        .take(1000);
    let mut net = Network::new(&arch::mlp_mnist(1)).unwrap();
    let before = evaluate(&mut net, &test, 500).unwrap();
    let cfg = FitConfig {
        epochs: 3,
        batch: 64,
        lr: 0.05,
        weight_decay: 1e-4,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        seed: 1,
    };
    let reports = fit(&mut net, &train, &cfg, |_| {}).unwrap();
    assert!(reports[2].loss < reports[0].loss, "{reports:?}");
    let after = evaluate(&mut net, &test, 500).unwrap();
    assert!(before < 0.3, "untrained accuracy {before}");
    assert!(
        after >= 0.85,
        "trained accuracy {after} (untrained {before})"
    );

    // The exported graph on the executor predicts the same.
    let bytes = qbench_models::onnx::to_bytes(&net.to_graph());
    let g = qbench_models::onnx::from_bytes(&bytes, "trained").unwrap();
    let exec = Executor::new(&g, Options { threads: 1 }).unwrap();
    let x = Tensor::new(vec![1000, 1, 28, 28], test.images().to_vec()).unwrap();
    let pred = exec.run(&[x]).unwrap()[0].argmax_rows().unwrap();
    let hits = pred
        .iter()
        .zip(test.labels())
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    assert_eq!(hits as f64 / 1000.0, after);
}
