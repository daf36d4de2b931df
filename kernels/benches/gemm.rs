//! criterion benches of the int8 GEMM rungs and the fp32 baseline, on the shapes of the
//! zoo's real layers. Ids: `gemm/{rung}/{m}x{n}x{k}` and `gemm/fp32-gemm/{m}x{n}x{k}`;
//! throughput is in operations (2·m·n·k), so criterion prints GOP/s beside each time.
//! For the interleaved one-run comparison with ratios, use `qbench bench-gemm`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qbench_kernels::{fp32, gemm, isa, MatA, MatB, PackedB};
use std::hint::black_box;

const SHAPES: [(usize, usize, usize); 5] = [
    (1, 768, 768),
    (16, 768, 768),
    (128, 768, 768),
    (128, 3072, 768),
    (512, 512, 512),
];

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(20);
    for (m, n, k) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let shape = format!("{m}x{n}x{k}");
        // 7-bit activations: the domain every rung (AVX2 included) runs natively.
        let a: Vec<u8> = (0..m * k).map(|i| (i * 31 % 128) as u8).collect();
        let w: Vec<i8> = (0..k * n).map(|i| (i * 17 % 255) as i8).collect();
        let mat_a = MatA::new(&a, m, k, 64);
        let mat_b = MatB {
            data: &w,
            rows: k,
            cols: n,
            zero_points: &[0],
            transposed: false,
        };
        let mut out = vec![0i32; m * n];
        for &rung in isa::ladder().iter().filter(|r| r.is_available()) {
            let packed = PackedB::for_rung(&mat_b, rung).expect("pack");
            group.bench_function(BenchmarkId::new(rung.name(), &shape), |bench| {
                bench.iter(|| gemm::gemm_i32(black_box(&mat_a), &packed, &mut out, n, 1).unwrap())
            });
        }
        let af: Vec<f32> = a.iter().map(|&x| f32::from(x)).collect();
        let bf: Vec<f32> = w.iter().map(|&x| f32::from(x)).collect();
        let mut cf = vec![0f32; m * n];
        group.bench_function(BenchmarkId::new(fp32::BASELINE_NAME, &shape), |bench| {
            bench.iter(|| fp32::sgemm(m, n, k, black_box(&af), &bf, &mut cf, 1))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
