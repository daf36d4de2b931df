//! The architectures of the zoo models qbench trains itself, as IR graphs with seeded
//! initial weights: `mlp-mnist` and `resnet-fashion`.

use crate::ir::Graph;

use super::builder::GraphBuilder;

/// 784-512-256-10 ReLU MLP (Flatten first, so it takes the same `[N, 1, 28, 28]` images
/// as every image model of the zoo).
pub fn mlp_mnist(seed: u64) -> Graph {
    let mut b = GraphBuilder::new("mlp-mnist", seed, "input", &[1, 28, 28]);
    let x = b.input();
    let x = b.flatten(&x, "flatten");
    let x = b.linear(&x, "fc1", 784, 512);
    let x = b.relu(&x, "relu1");
    let x = b.linear(&x, "fc2", 512, 256);
    let x = b.relu(&x, "relu2");
    let x = b.linear(&x, "fc3", 256, 10);
    b.finish(&x, 10)
}

/// conv-bn(-relu), named `{name}.conv` / `{name}.bn` / `{name}.relu`.
fn cbr(
    b: &mut GraphBuilder,
    x: &str,
    name: &str,
    (cin, cout, k, stride, groups): (usize, usize, usize, usize, usize),
    relu: bool,
) -> String {
    let y = b.conv(
        x,
        &format!("{name}.conv"),
        cin,
        cout,
        k,
        stride,
        k / 2,
        groups,
    );
    let y = b.batchnorm(&y, &format!("{name}.bn"), cout);
    if relu {
        b.relu(&y, &format!("{name}.relu"))
    } else {
        y
    }
}

/// A basic block: two 3x3 conv-bn, the first with `stride`, plus the shortcut (identity,
/// or a strided 1x1 conv-bn when the shape changes), then ReLU.
fn basic_block(
    b: &mut GraphBuilder,
    x: &str,
    name: &str,
    cin: usize,
    cout: usize,
    stride: usize,
) -> String {
    let y = cbr(b, x, &format!("{name}.a"), (cin, cout, 3, stride, 1), true);
    let y = cbr(b, &y, &format!("{name}.b"), (cout, cout, 3, 1, 1), false);
    let short = if stride != 1 || cin != cout {
        cbr(
            b,
            x,
            &format!("{name}.down"),
            (cin, cout, 1, stride, 1),
            false,
        )
    } else {
        x.to_string()
    };
    let s = b.add(&y, &short, &format!("{name}.add"));
    b.relu(&s, &format!("{name}.relu"))
}

/// Channels of the three stages of `resnet-fashion`.
pub const RESNET_FASHION_WIDTHS: [usize; 3] = [16, 32, 64];

/// A small ResNet for 28x28 Fashion-MNIST: conv3x3/2-bn-relu stem (16 channels, 14x14),
/// stage 1: a basic block at 16 channels 14x14; stage 2: a stride-2 block to 32 channels
/// 7x7; stage 3: a stride-2 block to 64 channels 4x4, then a depthwise-separable block
/// (depthwise 3x3 + bn + relu, pointwise 1x1 + bn + relu); global average pool; FC 64→10.
///
/// The stem is strided so that an epoch over 60,000 images stays at a few minutes on two
/// cores (about 2.4 M multiply-adds per image forward; a stride-1 stem would quadruple
/// stage 1's cost for a fraction of a point on 28x28 images).
pub fn resnet_fashion(seed: u64) -> Graph {
    let [w1, w2, w3] = RESNET_FASHION_WIDTHS;
    let mut b = GraphBuilder::new("resnet-fashion", seed, "input", &[1, 28, 28]);
    let x = b.input();
    let x = cbr(&mut b, &x, "stem", (1, w1, 3, 2, 1), true);
    let x = basic_block(&mut b, &x, "stage1.0", w1, w1, 1);
    let x = basic_block(&mut b, &x, "stage2.0", w1, w2, 2);
    let x = basic_block(&mut b, &x, "stage3.0", w2, w3, 2);
    let x = cbr(&mut b, &x, "stage3.dw", (w3, w3, 3, 1, w3), true);
    let x = cbr(&mut b, &x, "stage3.pw", (w3, w3, 1, 1, 1), true);
    let x = b.global_avg_pool(&x, "gap");
    let x = b.flatten(&x, "flatten");
    let x = b.linear(&x, "fc", w3, 10);
    b.finish(&x, 10)
}
