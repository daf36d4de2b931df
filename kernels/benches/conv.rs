//! criterion benches of the int8 convolution on each rung and of the fp32 conv, on
//! ResNet-50 and MobileNetV2 layers (batch 1). Ids: `conv/{rung}/{network}_{layer}` and
//! `conv/fp32/{network}_{layer}`; throughput in operations (2·MACs). For the interleaved
//! one-run comparison with ratios, use `qbench bench-conv`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qbench_kernels::conv::fp32::PackedConvF32;
use qbench_kernels::{conv_requant, isa, ConvWeights, Nhwc, PackedConv, Requant, Window};
use std::hint::black_box;

/// (id, input h = w, c_in, c_out, kernel, stride, groups)
const LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 5] = [
    ("resnet50_stage2_3x3", 28, 128, 128, 3, 1, 1),
    ("resnet50_stage3_1x1", 14, 1024, 256, 1, 1, 1),
    ("resnet50_stem_7x7s2", 224, 3, 64, 7, 2, 1),
    ("mobilenetv2_dw3x3s1", 112, 32, 32, 3, 1, 32),
    ("mobilenetv2_dw3x3s2", 112, 96, 96, 3, 2, 96),
];

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    for (id, hw, cin, cout, k, s, groups) in LAYERS {
        let input = Nhwc::new(1, hw, hw, cin);
        let window = Window::new(k, k).stride(s, s).pads([k / 2; 4]);
        let cig = cin / groups;
        let w: Vec<i8> = (0..cout * cig * k * k)
            .map(|i| (i * 37 % 255) as i8)
            .collect();
        let weights = ConvWeights {
            data: &w,
            out_channels: cout,
            in_channels_per_group: cig,
            kernel: [k, k],
            zero_points: &[0],
        };
        let x: Vec<u8> = (0..input.len()).map(|i| (i * 31 % 128) as u8).collect();
        let mult = vec![1e-3f32; cout];
        let requant = Requant {
            bias: None,
            multiplier: &mult,
            out_zero_point: 0,
            qmin: 0,
            qmax: 255,
        };
        let (oh, ow) = window.output_hw(hw, hw).unwrap();
        group.throughput(Throughput::Elements(
            (2 * oh * ow * cout * k * k * cig) as u64,
        ));
        for &rung in isa::ladder().iter().filter(|r| r.is_available()) {
            let conv = PackedConv::for_rung(&weights, groups, window, rung).unwrap();
            let mut out = vec![0u8; oh * ow * cout];
            group.bench_function(BenchmarkId::new(rung.name(), id), |b| {
                b.iter(|| {
                    conv_requant(black_box(&x), input, 0, &conv, &requant, &mut out, 1).unwrap()
                })
            });
        }
        let wf: Vec<f32> = w.iter().map(|&v| f32::from(v) / 64.0).collect();
        let xf: Vec<f32> = x.iter().map(|&v| f32::from(v) / 128.0).collect();
        let conv = PackedConvF32::new(&wf, cout, cig, groups, window, None).unwrap();
        let mut out = vec![0f32; oh * ow * cout];
        group.bench_function(BenchmarkId::new("fp32", id), |b| {
            b.iter(|| conv.run(black_box(&xf), input, &mut out, 1).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
