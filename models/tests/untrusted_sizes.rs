//! Regression tests for issue 18: crafted ONNX files whose sizes used to wrap, index out
//! of bounds or ask for terabytes. Each builds a tiny graph as protobuf (so it can say
//! what the IR would refuse to hold), runs it the way `inspect`/`crosscheck` do (import,
//! executor, one batch-1 run on zeros) and the way the quantizers' fusion does (passes
//! on the imported graph), and expects a clean error naming the file, node or tensor.
//!
//! With overflow checks on (the test profile) a wrap shows as a panic; in release it was
//! a SIGSEGV in the fp32 GEMM.

use qbench_models::error::ModelError;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::Dim;
use qbench_models::onnx;
use qbench_models::passes::{self, OutputNodes, Reach};
use qbench_models::tensor::Tensor;

#[path = "support/crafted.rs"]
mod crafted;
use crafted::{f32_init, i64_init, ints_attr, model, node, vi};

const FILE: &str = "crafted.onnx";
const BIG: i64 = 1 << 32;

/// What `inspect` and `crosscheck` do with a file: import, prepare, one run at batch 1
/// on zeros; and what the quantizers' fusion does: the shared passes on the imported
/// graph. The first error, or the outputs.
fn pipeline(bytes: &[u8]) -> Result<Vec<Tensor>, ModelError> {
    let g = onnx::from_bytes(bytes, FILE)?;
    let mut fused = g.clone();
    passes::fold_constants(&mut fused, OutputNodes::Keep)?;
    passes::fold_batch_norms(&mut fused, Reach::Anywhere)?;
    let _ = passes::fuse_activations(&fused);
    let exec = Executor::new(&g, Options::default())?;
    let inputs = g
        .inputs
        .iter()
        .map(|vi| {
            let dims = vi
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) => 1,
                })
                .collect();
            Tensor::zeros(dims)
        })
        .collect::<Vec<_>>();
    exec.run(&inputs)
}

/// The pipeline's error, checked to name each of `names`.
fn refused(bytes: &[u8], names: &[&str]) -> String {
    let e = pipeline(bytes)
        .expect_err("a crafted file must be refused")
        .to_string();
    for n in names {
        assert!(e.contains(n), "error should name {n:?}: {e}");
    }
    e
}

#[test]
fn matmul_of_an_input_of_2_pow_64_elements_is_refused_at_import() {
    let bytes = model(
        vec![node("mm", "MatMul", &["x", "x"], &["y"])],
        vec![vi("x", &[1, BIG, BIG])],
        vec![],
        "y",
    );
    let e = onnx::from_bytes(&bytes, FILE).expect_err("import must refuse the input");
    let e = e.to_string();
    assert!(e.contains(FILE) && e.contains("\"x\""), "{e}");
}

#[test]
fn reshape_of_an_empty_constant_to_2_pow_64_elements_is_refused() {
    // Folded at plan time: Reshape's element count used to wrap to 0 = 0.
    let bytes = model(
        vec![
            node("rs", "Reshape", &["e", "spec"], &["r"]),
            node("mm", "MatMul", &["r", "r"], &["y"]),
        ],
        vec![],
        vec![
            f32_init("e", &[0], &[]),
            i64_init("spec", &[2], &[BIG, BIG]),
        ],
        "y",
    );
    refused(&bytes, &["\"rs\"", "Reshape"]);
}

#[test]
fn reshape_of_an_empty_input_to_2_pow_64_elements_is_refused() {
    // The same at run time, on an activation.
    let bytes = model(
        vec![
            node("rs", "Reshape", &["x", "spec"], &["r"]),
            node("mm", "MatMul", &["r", "r"], &["y"]),
        ],
        vec![vi("x", &[1, 0])],
        vec![i64_init("spec", &[2], &[BIG, BIG])],
        "y",
    );
    refused(&bytes, &["\"rs\"", "Reshape"]);
}

#[test]
fn matmul_whose_output_would_wrap_is_refused() {
    // [2^32, 0] x [0, 2^32]: both operands empty, the product 2^64 elements.
    let bytes = model(
        vec![
            node("ra", "Reshape", &["x", "sa"], &["a"]),
            node("rb", "Reshape", &["x", "sb"], &["b"]),
            node("mm", "MatMul", &["a", "b"], &["y"]),
        ],
        vec![vi("x", &[1, 0])],
        // -1 is inferred as 0 from the empty input: a = [2^32, 0], b = [0, 2^32].
        vec![
            i64_init("sa", &[2], &[BIG, -1]),
            i64_init("sb", &[2], &[-1, BIG]),
        ],
        "y",
    );
    refused(&bytes, &["\"mm\"", "MatMul"]);
}

#[test]
fn conv_bias_shorter_than_its_channels_before_a_batch_norm_is_an_error() {
    let bytes = model(
        vec![
            node("conv", "Conv", &["x", "w", "b"], &["c"]),
            node(
                "bn",
                "BatchNormalization",
                &["c", "g", "be", "m", "v"],
                &["y"],
            ),
        ],
        vec![vi("x", &[1, 1, 2, 2])],
        vec![
            f32_init("w", &[2, 1, 1, 1], &[1.0, 2.0]),
            f32_init("b", &[1], &[0.5]),
            f32_init("g", &[2], &[1.0, 1.0]),
            f32_init("be", &[2], &[0.0, 0.0]),
            f32_init("m", &[2], &[0.0, 0.0]),
            f32_init("v", &[2], &[1.0, 1.0]),
        ],
        "y",
    );
    // At import: the quantizers' layer extraction indexed the bias by channel.
    let e = onnx::from_bytes(&bytes, FILE)
        .expect_err("short bias")
        .to_string();
    assert!(
        e.contains(FILE) && e.contains("\"conv\"") && e.contains("bias"),
        "{e}"
    );
    refused(&bytes, &["\"conv\""]);
}

fn conv_with_weight(dims: &[i64], values: &[f32]) -> Vec<u8> {
    model(
        vec![node("conv", "Conv", &["x", "w"], &["y"])],
        vec![vi("x", &[1, 1, 2, 2])],
        vec![f32_init("w", dims, values)],
        "y",
    )
}

/// Refused at import (so no consumer of the graph indexes the weight), naming the node.
fn weight_refused_at_import(bytes: &[u8]) {
    let e = onnx::from_bytes(bytes, FILE)
        .expect_err("bad weight")
        .to_string();
    assert!(
        e.contains(FILE) && e.contains("\"conv\"") && e.contains("weight"),
        "{e}"
    );
    refused(bytes, &["\"conv\"", "Conv"]);
}

#[test]
fn conv_weight_of_rank_0_is_an_error() {
    weight_refused_at_import(&conv_with_weight(&[], &[1.0]));
}

#[test]
fn conv_weight_with_0_input_channels_is_an_error() {
    weight_refused_at_import(&conv_with_weight(&[1, 0, 1, 1], &[]));
}

#[test]
fn conv_weight_with_0_output_channels_is_an_error() {
    weight_refused_at_import(&conv_with_weight(&[0, 1, 1, 1], &[]));
}

#[test]
fn conv_weight_of_0_output_channels_then_batch_norm_is_an_error() {
    let bytes = model(
        vec![
            node("conv", "Conv", &["x", "w"], &["c"]),
            node(
                "bn",
                "BatchNormalization",
                &["c", "g", "be", "m", "v"],
                &["y"],
            ),
        ],
        vec![vi("x", &[1, 1, 2, 2])],
        vec![
            f32_init("w", &[0, 1, 1, 1], &[]),
            f32_init("g", &[0], &[]),
            f32_init("be", &[0], &[]),
            f32_init("m", &[0], &[]),
            f32_init("v", &[0], &[]),
        ],
        "y",
    );
    refused(&bytes, &["\"conv\""]);
}

#[test]
fn gemm_or_conv_without_outputs_is_refused_at_import() {
    for (op, ins, inits) in [
        (
            "Gemm",
            vec!["x", "w"],
            vec![f32_init("w", &[4, 2], &[0.0; 8])],
        ),
        (
            "Conv",
            vec!["x4", "k"],
            vec![f32_init("k", &[1, 1, 1, 1], &[1.0])],
        ),
    ] {
        let mut dead = node("dead", op, &ins, &[]);
        if op == "Conv" {
            dead.input[0] = "x".into();
        }
        let bytes = model(
            vec![dead, node("id", "Relu", &["x"], &["y"])],
            vec![vi("x", &[1, 4])],
            inits,
            "y",
        );
        let e = onnx::from_bytes(&bytes, FILE).expect_err(op).to_string();
        assert!(e.contains("\"dead\"") && e.contains("output"), "{e}");
        refused(&bytes, &["\"dead\""]);
    }
}

#[test]
fn graph_input_of_rank_0_is_refused_at_import() {
    let bytes = model(
        vec![node("id", "Relu", &["x"], &["y"])],
        vec![vi("x", &[])],
        vec![],
        "y",
    );
    let e = onnx::from_bytes(&bytes, FILE)
        .expect_err("rank 0")
        .to_string();
    assert!(
        e.contains(FILE) && e.contains("\"x\"") && e.contains("rank 0"),
        "{e}"
    );
}

#[test]
fn duplicate_initializer_names_are_an_error_naming_the_name() {
    let bytes = model(
        vec![node("add", "Add", &["x", "c"], &["y"])],
        vec![vi("x", &[1, 1])],
        vec![f32_init("c", &[1], &[1.0]), f32_init("c", &[1], &[2.0])],
        "y",
    );
    let e = onnx::from_bytes(&bytes, FILE)
        .expect_err("duplicate")
        .to_string();
    assert!(
        e.contains(FILE) && e.contains("\"c\"") && e.contains("twice"),
        "{e}"
    );
}

#[test]
fn conv_pads_of_a_million_are_refused_naming_the_node_and_bytes() {
    let mut conv = node("conv", "Conv", &["x", "w"], &["y"]);
    conv.attribute.push(ints_attr("pads", &[1_000_000; 4]));
    let bytes = model(
        vec![conv],
        vec![vi("x", &[1, 4, 1, 1])],
        vec![f32_init("w", &[4, 4, 1, 1], &[0.0; 16])],
        "y",
    );
    let e = refused(&bytes, &["\"conv\"", "Conv", "bytes"]);
    assert!(e.contains("budget") || e.contains("too large"), "{e}");
}
