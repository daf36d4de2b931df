//! fp32 latency of an ONNX model, ours vs tract, batch 1, single thread, interleaved in
//! one process so both see the same machine state. Prints medians and the ratio; asserts
//! nothing (timing is not a test).
//!
//! `cargo run --release -p qbench-models --example fp32_latency [model.onnx] [iterations]`
//! (default: models/zoo/light/light_resnet50.onnx, 30 iterations).

use std::path::PathBuf;
use std::time::Instant;

use qbench_models::exec::{Executor, Options};
use qbench_models::onnx;
use qbench_models::tensor::Tensor;
use tract_onnx::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zoo/light/light_resnet50.onnx")
    });
    let iters: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let shape = [1usize, 3, 224, 224];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let input = Tensor::new(shape.to_vec(), data.clone())?;

    let graph = onnx::load(&path)?;
    let ours = Executor::new(&graph, Options { threads: 1 })?;

    // tract single-threaded: its default executor runs on the calling thread.
    let plan = tract_onnx::onnx()
        .model_for_path(&path)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let tinput: TValue = tract_onnx::prelude::Tensor::from_shape(&shape, &data)?.into();

    // Warm-up both (allocations, caches, lazy packing).
    for _ in 0..3 {
        ours.run(std::slice::from_ref(&input))?;
        plan.run(tvec![tinput.clone()])?;
    }
    let (mut t_ours, mut t_tract) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        ours.run(std::slice::from_ref(&input))?;
        t_ours.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        plan.run(tvec![tinput.clone()])?;
        t_tract.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (mo, mt) = (median(t_ours), median(t_tract));
    println!(
        "model {} batch 1, 1 thread, {iters} interleaved iterations",
        path.display()
    );
    println!("ours  median {mo:8.2} ms  ({} steps)", ours.num_steps());
    println!("tract median {mt:8.2} ms");
    println!("ratio ours/tract {:.3}", mo / mt);
    Ok(())
}
