//! The memory budget refuses, before allocating, what a tiny crafted file asks for:
//! ConstantOfShape and Range outputs, broadcasts, the total of folded constants, IDX data
//! behind a lying header. Every test sets the same 1 MiB budget (the process-wide
//! setter the harness's `--max-memory` calls), so they may run in any order.

use std::io::Write;

use qbench_models::budget::MemoryBudget;
use qbench_models::exec::{Executor, Options};
use qbench_models::idx::{read_idx, IdxError};
use qbench_models::onnx;
use tract_onnx::pb;

#[path = "support/crafted.rs"]
mod crafted;
use crafted::{i64_init, node, vi};

/// A crafted model whose one graph input is `x: [1, 4]`.
fn model_x(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>, output: &str) -> Vec<u8> {
    crafted::model(nodes, vec![vi("x", &[1, 4])], inits, output)
}

const BUDGET: u64 = 1 << 20;

fn budget() {
    MemoryBudget::bytes(BUDGET).set_global();
}

/// Imports and prepares (constant folding runs the ops: plan time); the error.
fn plan_error(bytes: &[u8]) -> String {
    let g = onnx::from_bytes(bytes, "crafted.onnx").unwrap();
    match Executor::new(&g, Options::default()) {
        Ok(_) => panic!("the plan must be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn constant_of_shape_over_the_budget_is_refused_naming_node_and_bytes() {
    budget();
    // 16 GiB of f32 from a file of a few dozen bytes.
    let bytes = model_x(
        vec![node("huge", "ConstantOfShape", &["s"], &["y"])],
        vec![i64_init("s", &[2], &[1 << 16, 1 << 16])],
        "y",
    );
    assert!(bytes.len() < 200, "{}", bytes.len());
    let e = plan_error(&bytes);
    assert!(
        e.contains("\"huge\"") && e.contains("17179869184 bytes") && e.contains("budget"),
        "{e}"
    );
}

#[test]
fn range_over_the_budget_is_refused() {
    budget();
    let bytes = model_x(
        vec![node("r", "Range", &["a", "b", "d"], &["y"])],
        vec![
            i64_init("a", &[], &[0]),
            i64_init("b", &[], &[1 << 40]),
            i64_init("d", &[], &[1]),
        ],
        "y",
    );
    let e = plan_error(&bytes);
    assert!(
        e.contains("\"r\"") && e.contains("Range") && e.contains("budget"),
        "{e}"
    );
    // Bounds so far apart that `limit - start` overflows i64.
    let bytes = model_x(
        vec![node("r", "Range", &["a", "b", "d"], &["y"])],
        vec![
            i64_init("a", &[], &[i64::MIN]),
            i64_init("b", &[], &[i64::MAX]),
            i64_init("d", &[], &[1]),
        ],
        "y",
    );
    let e = plan_error(&bytes);
    assert!(e.contains("\"r\"") && e.contains("address"), "{e}");
}

#[test]
fn a_broadcast_over_the_budget_is_refused() {
    budget();
    // [1024, 1] + [1, 1024] is 4 MiB of f32 from two 4 KiB shapes.
    let bytes = model_x(
        vec![
            node("ca", "ConstantOfShape", &["sa"], &["a"]),
            node("cb", "ConstantOfShape", &["sb"], &["b"]),
            node("add", "Add", &["a", "b"], &["y"]),
        ],
        vec![
            i64_init("sa", &[2], &[1024, 1]),
            i64_init("sb", &[2], &[1, 1024]),
        ],
        "y",
    );
    let e = plan_error(&bytes);
    assert!(e.contains("\"add\"") && e.contains("4194304 bytes"), "{e}");
}

#[test]
fn folded_constants_are_budgeted_in_total() {
    budget();
    // Three 400 KB constants: each fits the 1 MiB budget, all three do not.
    let nodes = (0..3)
        .map(|i| {
            node(
                &format!("c{i}"),
                "ConstantOfShape",
                &["s"],
                &[&format!("v{i}")],
            )
        })
        .chain([node("sum", "Sum", &["v0", "v1", "v2"], &["y"])])
        .collect();
    let bytes = model_x(nodes, vec![i64_init("s", &[1], &[100_000])], "y");
    let e = plan_error(&bytes);
    assert!(e.contains("\"c2\"") && e.contains("budget"), "{e}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn scratch(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qbench-budget-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn idx_decompression_stops_past_the_declared_size() {
    budget();
    // A 10-byte array followed by 256 MiB of zeros: the bomb compresses to a few
    // hundred KiB. Reading stops 1 MiB past the 10 declared bytes.
    let mut raw = vec![0, 0, 8, 1, 0, 0, 0, 10];
    raw.resize(raw.len() + 10 + (256 << 20), 0);
    let path = scratch("bomb.idx.gz", &gzip(&raw));
    drop(raw);
    match read_idx(&path) {
        Err(IdxError::TrailingData {
            expected: 10,
            extra,
            ..
        }) => assert!(extra <= 1 << 20, "{extra}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_idx_header_over_the_budget_is_refused_before_reading_the_data() {
    budget();
    // [1024, 1024, 2]: 2 MiB declared, over the 1 MiB budget.
    let raw = [0, 0, 8, 3, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0, 2];
    let path = scratch("big.idx.gz", &gzip(&raw));
    let e = read_idx(&path).unwrap_err();
    assert!(matches!(e, IdxError::OverBudget { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("big.idx.gz") && msg.contains("2097152 bytes"),
        "{msg}"
    );
}

#[test]
fn a_tensor_of_absurd_rank_is_refused_before_it_is_walked() {
    budget();
    // ConstantOfShape of 65,536 ones: one element, rank 65,536. Found by the fuzzer: the
    // broadcasts over it ran for minutes with every byte count in budget.
    let ones = vec![1i64; 1 << 16];
    let bytes = model_x(
        vec![node("wide", "ConstantOfShape", &["s"], &["y"])],
        vec![i64_init("s", &[1 << 16], &ones)],
        "y",
    );
    let e = plan_error(&bytes);
    assert!(e.contains("\"wide\"") && e.contains("rank 65536"), "{e}");
}

/// Plan time: tensors that each fit the budget but are alive together over it are
/// refused by the memory plan, before the first step runs, naming the step where they
/// meet. (Before shapes were inferred this ran: every tensor was checked on its own.)
#[test]
fn activations_alive_together_over_the_budget_are_refused_at_plan_time() {
    budget();
    let bytes = crafted::model(
        vec![
            node("a", "Relu", &["x"], &["ra"]),
            node("b", "Sigmoid", &["x"], &["sb"]),
            node("sum", "Add", &["ra", "sb"], &["y"]),
        ],
        vec![vi("x", &[1, 4096])],
        vec![],
        "y",
    );
    let g = onnx::from_bytes(&bytes, "crafted.onnx").unwrap();
    let exec = Executor::new(&g, Options::default()).unwrap();
    // 48 × 4096 f32 = 768 KiB a tensor: each under 1 MiB; x, ra and sb at once are not.
    let shape = vec![48, 4096];
    let plan = exec.memory_plan(std::slice::from_ref(&shape));
    let e = plan.expect_err("the plan must be refused").to_string();
    assert!(
        e.contains("\"b\"") && e.contains("2359296 bytes") && e.contains("budget"),
        "{e}"
    );
    let x = qbench_models::tensor::Tensor::new(shape, vec![0.5; 48 * 4096]).unwrap();
    let run = exec
        .run(&[x])
        .expect_err("run checks the plan first")
        .to_string();
    assert_eq!(run, e);
    // A batch whose tensors fit together runs.
    let small = qbench_models::tensor::Tensor::new(vec![8, 4096], vec![0.5; 8 * 4096]).unwrap();
    let plan = exec.memory_plan(&[vec![8, 4096]]).unwrap();
    assert_eq!(plan.peak, 3 * 8 * 4096 * 4);
    assert_eq!(plan.unknown, 0);
    exec.run(&[small]).unwrap();
}
