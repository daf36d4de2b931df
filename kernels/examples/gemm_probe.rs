//! A quick single-thread throughput probe of the int8 GEMM on the active rung (set
//! `QBENCH_KERNEL` to pick another): for each shape (the six of the MLAS comparison, or
//! `MxNxK[,MxNxK...]` given as the first argument) it times `gemm_i32`, `gemm_dequant`
//! (per-column weight scales and a bias) and `gemm_requant` (per-column multipliers, a
//! bias, output zero point 128) on full-range u8 activations with zero point
//! `PROBE_ZA` (default 0; the MLAS script uses 128),
//! through the public API exactly as a caller uses it (A in place, weights packed once),
//! and prints the median GOP/s over at least `PROBE_SECS` seconds (default 1) per output
//! after a warm-up. Run with
//! `cargo run --release -p qbench-kernels --example gemm_probe [-- SHAPES]`.

use qbench_kernels::{
    gemm_dequant, gemm_i32, gemm_requant, Dequant, MatA, MatB, PackedB, Requant, Scales,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SHAPES: [(usize, usize, usize); 6] = [
    (1, 768, 768),
    (16, 768, 768),
    (128, 768, 768),
    (128, 3072, 768),
    (512, 512, 512),
    (1024, 1024, 1024),
];

fn main() {
    let shapes: Vec<(usize, usize, usize)> = match std::env::args().nth(1) {
        Some(spec) => spec.split(',').map(parse_shape).collect(),
        None => SHAPES.to_vec(),
    };
    let secs: f64 = std::env::var("PROBE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let za: i32 = std::env::var("PROBE_ZA")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for (m, n, k) in shapes {
        probe(m, n, k, za, budget);
    }
}

fn parse_shape(s: &str) -> (usize, usize, usize) {
    let d: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse().expect("MxNxK"))
        .collect();
    assert_eq!(d.len(), 3, "shape {s:?} is not MxNxK");
    (d[0], d[1], d[2])
}

fn probe(m: usize, n: usize, k: usize, za: i32, budget: Duration) {
    // The same pseudo-random full-range data as `qbench bench-gemm`.
    let a: Vec<u8> = (0..m * k)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let w: Vec<i8> = (0..k * n)
        .map(|i| (i.wrapping_mul(40_503) >> 5) as i8)
        .collect();
    let mat_b = MatB {
        data: &w,
        rows: k,
        cols: n,
        zero_points: &[0],
        transposed: false,
    };
    let packed = PackedB::new(&mat_b).expect("pack");
    let mat_a = MatA::new(&a, m, k, za);
    let mut c32 = vec![0i32; m * n];
    let kernel = gemm_i32(&mat_a, &packed, &mut c32, n, 1).expect("gemm_i32");
    let t_i32 = median_ns(budget, || {
        gemm_i32(black_box(&mat_a), &packed, &mut c32, n, 1).expect("gemm_i32");
    });
    let b_scale: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-5).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
    let p = Dequant {
        a_scale: Scales::PerTensor(0.02),
        b_scale: &b_scale,
        bias: Some(&bias),
    };
    let mut cf = vec![0f32; m * n];
    let t_f32 = median_ns(budget, || {
        gemm_dequant(black_box(&mat_a), &packed, &p, &mut cf, n, 1).expect("gemm_dequant");
    });
    let multiplier: Vec<f32> = (0..n).map(|j| 1e-4 + j as f32 * 1e-8).collect();
    let bias_i32: Vec<i32> = (0..n).map(|j| j as i32 * 7 - 1000).collect();
    let q = Requant {
        bias: Some(&bias_i32),
        multiplier: &multiplier,
        out_zero_point: 128,
        qmin: 0,
        qmax: 255,
    };
    let mut cu8 = vec![0u8; m * n];
    let t_u8 = median_ns(budget, || {
        gemm_requant(black_box(&mat_a), &packed, &q, &mut cu8, n, 1).expect("gemm_requant");
    });
    let ops = 2.0 * (m * n * k) as f64;
    println!(
        "{m}x{n}x{k}: i32 {:6.1} GOP/s  f32 {:6.1} GOP/s  u8 {:6.1} GOP/s  ({kernel})",
        ops / t_i32,
        ops / t_f32,
        ops / t_u8
    );
}

/// Median wall time of `f` in ns, after a 0.2 s warm-up, over at least `budget` and 15 calls.
fn median_ns(budget: Duration, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 15 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_nanos() as f64);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
