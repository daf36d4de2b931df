//! `qbench bench-conv`: the convolution layers of ResNet-50 and MobileNetV2 at their real
//! feature-map sizes (batch 1, 224x224 input), every int8 rung this machine runs
//! (requantized u8 output, the static-quantization path) and the fp32 conv, interleaved
//! in one run per layer, single thread.

use crate::bench::gemm::int8_variants;
use crate::timing::measure::{interleaved, Budget, Candidate};
use anyhow::{bail, Result};
use qbench_kernels::conv::fp32::PackedConvF32;
use qbench_kernels::{conv_requant, ConvWeights, Nhwc, PackedConv, Requant, Window};
use serde::Serialize;
use std::hint::black_box;

/// One benchmark layer: `{network}/{layer}`; depthwise layer names start with `dw`.
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub id: &'static str,
    pub input: Nhwc,
    pub out_channels: usize,
    pub groups: usize,
    pub window: Window,
}

const fn layer(
    id: &'static str,
    hw: usize,
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    groups: usize,
) -> Layer {
    Layer {
        id,
        input: Nhwc::new(1, hw, hw, cin),
        out_channels: cout,
        groups,
        window: Window::new(k, k).stride(s, s).pads([k / 2; 4]),
    }
}

/// ResNet-50: the stem, and per stage the bottleneck's 3x3 and its reducing 1x1;
/// MobileNetV2: depthwise 3x3 at stride 1 and 2, a pointwise expansion and a projection.
pub const LAYERS: [Layer; 13] = [
    layer("resnet50/stem_7x7s2", 224, 3, 64, 7, 2, 1),
    layer("resnet50/stage1_3x3", 56, 64, 64, 3, 1, 1),
    layer("resnet50/stage1_1x1", 56, 256, 64, 1, 1, 1),
    layer("resnet50/stage2_3x3", 28, 128, 128, 3, 1, 1),
    layer("resnet50/stage2_1x1", 28, 512, 128, 1, 1, 1),
    layer("resnet50/stage3_3x3", 14, 256, 256, 3, 1, 1),
    layer("resnet50/stage3_1x1", 14, 1024, 256, 1, 1, 1),
    layer("resnet50/stage4_3x3", 7, 512, 512, 3, 1, 1),
    layer("resnet50/stage4_1x1", 7, 2048, 512, 1, 1, 1),
    layer("mobilenetv2/dw3x3s1", 112, 32, 32, 3, 1, 32),
    layer("mobilenetv2/dw3x3s2", 112, 96, 96, 3, 2, 96),
    layer("mobilenetv2/pw_expand", 56, 24, 144, 1, 1, 1),
    layer("mobilenetv2/pw_project", 56, 144, 24, 1, 1, 1),
];

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: &'static str,
    pub layer: &'static str,
    /// Threads the int8 and fp32 convolutions ran on.
    pub threads: usize,
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The kernel that ran (GEMM micro-kernel or depthwise kernel), or `fp32-gemm`.
    pub kernel: String,
    /// `pointwise`, `depthwise` or `im2col`.
    pub path: String,
    pub activations: Option<&'static str>,
    pub gops: f64,
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub samples: usize,
    pub speedup_vs_fp32: f64,
}

/// Selects layers by id or prefix (`resnet50`, `mobilenetv2/dw3x3s2`).
pub fn select(filter: Option<&str>) -> Result<Vec<Layer>> {
    let Some(filter) = filter else {
        return Ok(LAYERS.to_vec());
    };
    let mut chosen = Vec::new();
    for want in filter.split(',').map(str::trim) {
        let matched: Vec<Layer> = LAYERS
            .iter()
            .copied()
            .filter(|l| l.id == want || l.id.starts_with(&format!("{want}/")))
            .collect();
        if matched.is_empty() {
            let ids: Vec<&str> = LAYERS.iter().map(|l| l.id).collect();
            bail!("--layers: no layer {want:?}; valid: {}", ids.join(", "));
        }
        chosen.extend(matched);
    }
    Ok(chosen)
}

pub fn bench_layer(l: &Layer, budget: Budget, threads: usize) -> Result<Vec<Row>> {
    let [kh, kw] = l.window.kernel;
    let cig = l.input.c / l.groups;
    let w: Vec<i8> = (0..l.out_channels * cig * kh * kw)
        .map(|i| (i.wrapping_mul(40_503) >> 5) as i8)
        .collect();
    let weights = ConvWeights {
        data: &w,
        out_channels: l.out_channels,
        in_channels_per_group: cig,
        kernel: [kh, kw],
        zero_points: &[0],
    };
    let x_u8: Vec<u8> = (0..l.input.len())
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    let x_u7: Vec<u8> = x_u8.iter().map(|x| x & 0x7F).collect();
    let multiplier = vec![1.0 / (64.0 * (kh * kw * cig) as f32); l.out_channels];
    let requant = Requant {
        bias: None,
        multiplier: &multiplier,
        out_zero_point: 0,
        qmin: 0,
        qmax: 255,
    };

    let variants = int8_variants();
    let convs: Vec<PackedConv> = variants
        .iter()
        .map(|v| PackedConv::for_rung(&weights, l.groups, l.window, v.rung))
        .collect::<Result<_, _>>()?;
    let out_shape = convs[0].output_shape(l.input)?;
    let mut outputs: Vec<Vec<u8>> = variants.iter().map(|_| vec![0; out_shape.len()]).collect();
    let mut kernels = Vec::new();
    for ((v, conv), out) in variants.iter().zip(&convs).zip(&mut outputs) {
        let x = if v.u7 { &x_u7 } else { &x_u8 };
        kernels.push(
            conv_requant(x, l.input, 0, conv, &requant, out, threads)?
                .1
                .to_owned(),
        );
    }

    let wf: Vec<f32> = w.iter().map(|&v| f32::from(v) / 64.0).collect();
    let xf: Vec<f32> = x_u8.iter().map(|&v| f32::from(v) / 255.0).collect();
    let conv_f32 = PackedConvF32::new(&wf, l.out_channels, cig, l.groups, l.window, None)?;
    let mut out_f32 = vec![0f32; out_shape.len()];

    let mut candidates: Vec<Candidate> = Vec::new();
    for ((v, conv), out) in variants.iter().zip(&convs).zip(outputs.iter_mut()) {
        let x = if v.u7 { &x_u7 } else { &x_u8 };
        let input = l.input;
        let requant = &requant;
        candidates.push(Candidate {
            name: v.label.clone(),
            run: Box::new(move || {
                conv_requant(black_box(x), input, 0, conv, requant, out, threads)
                    .expect("validated above");
            }),
        });
    }
    candidates.push(Candidate {
        name: "fp32".to_owned(),
        run: Box::new(|| {
            conv_f32
                .run(black_box(&xf), l.input, &mut out_f32, threads)
                .expect("validated above");
        }),
    });
    let summaries = interleaved(&mut candidates, budget);
    let fp32_median = summaries.last().expect("fp32").median;
    let ops = 2.0 * (out_shape.h * out_shape.w * l.out_channels * kh * kw * cig) as f64;
    Ok(candidates
        .iter()
        .zip(&summaries)
        .enumerate()
        .map(|(i, (c, s))| Row {
            op: "conv",
            layer: l.id,
            threads,
            implementation: c.name.clone(),
            kernel: kernels
                .get(i)
                .cloned()
                .unwrap_or_else(|| qbench_kernels::fp32::BASELINE_NAME.to_owned()),
            path: convs.get(i).map_or("fp32", |c| c.path()).to_owned(),
            activations: variants.get(i).map(|v| if v.u7 { "u7" } else { "u8" }),
            gops: ops / s.median,
            median_ns: s.median,
            p10_ns: s.p10,
            p90_ns: s.p90,
            samples: s.samples,
            speedup_vs_fp32: fp32_median / s.median,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_are_unique_and_depthwise_ones_say_so() {
        let mut ids: Vec<&str> = LAYERS.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), LAYERS.len());
        for l in LAYERS {
            let depthwise = l.groups == l.input.c && l.groups > 1;
            assert_eq!(
                depthwise,
                l.id.split('/').nth(1).unwrap().starts_with("dw"),
                "{}",
                l.id
            );
        }
    }

    #[test]
    fn selection_by_prefix_and_unknown_names() {
        assert_eq!(select(Some("resnet50")).unwrap().len(), 9);
        assert_eq!(select(Some("mobilenetv2/dw3x3s2")).unwrap().len(), 1);
        let err = select(Some("vgg")).unwrap_err().to_string();
        assert!(
            err.contains("\"vgg\"") && err.contains("resnet50/stem_7x7s2"),
            "{err}"
        );
    }

    #[test]
    fn a_small_layer_measures_every_variant_and_fp32() {
        let l = layer("test/dw", 8, 16, 16, 3, 2, 16);
        let rows = bench_layer(
            &l,
            Budget {
                min_samples: 2,
                max_samples: 2,
                ..Budget::QUICK
            },
            1,
        )
        .unwrap();
        assert_eq!(rows.len(), int8_variants().len() + 1);
        assert!(rows
            .iter()
            .take(rows.len() - 1)
            .all(|r| r.path == "depthwise" && r.kernel.contains("dwconv")));
        assert_eq!(rows.last().unwrap().implementation, "fp32");
    }
}
