//! `qbench bench-gemm`: every int8 GEMM rung this machine runs and the fp32 baseline,
//! interleaved in one run per shape, on the same number of threads (1 unless `--threads`),
//! with each rung's ratio to fp32.

use crate::timing::measure::{interleaved, Budget, Candidate};
use anyhow::{bail, Context, Result};
use qbench_kernels::gemm::{gemm_i32, kernels_of};
use qbench_kernels::{fp32, isa, MatA, MatB, PackedB, Rung};
use serde::Serialize;
use std::hint::black_box;

/// (M, N, K) of the table: BERT-base/MiniLM projections and square references.
pub const DEFAULT_SHAPES: [(usize, usize, usize); 7] = [
    (1, 768, 768),
    (1, 3072, 768),
    (16, 768, 768),
    (128, 768, 768),
    (128, 3072, 768),
    (512, 512, 512),
    (1024, 1024, 1024),
];

/// One measured implementation at one shape.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: &'static str,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Threads every implementation ran on (the int8 kernels' row bands, the fp32
    /// crate's parallelism).
    pub threads: usize,
    /// `avx512vnni`, `avx2`, `avx2-u8`, `generic`, ... or `fp32-gemm`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The kernel that ran (its registry name), or the fp32 crate.
    pub kernel: String,
    /// Activation domain the int8 kernel was fed: `u7` (≤ 127) or `u8`.
    pub activations: Option<&'static str>,
    pub gops: f64,
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub samples: usize,
    /// fp32 median time / this median time, from the same run.
    pub speedup_vs_fp32: f64,
}

/// Parses `MxNxK[,MxNxK...]`.
pub fn parse_shapes(spec: &str) -> Result<Vec<(usize, usize, usize)>> {
    spec.split(',')
        .map(|s| {
            let dims: Vec<usize> = s
                .trim()
                .split('x')
                .map(|d| d.parse::<usize>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("--shapes: {s:?} is not MxNxK"))?;
            let (m, n, k) = match dims[..] {
                [m, n, k] if m > 0 && n > 0 && k > 0 => (m, n, k),
                _ => bail!("--shapes: {s:?} is not MxNxK with positive sizes"),
            };
            // The matrices are allocated from these sizes: each is checked (no overflow,
            // within the memory budget) before any measurement starts. f32 is the widest
            // element the bench holds (the fp32 baseline, dequantized outputs).
            for (name, shape) in [("A", [m, k]), ("B", [k, n]), ("C", [m, n])] {
                qbench_models::budget::check_shape(
                    &format_args!("--shapes {s}: matrix {name}"),
                    &shape,
                    std::mem::size_of::<f32>(),
                )?;
            }
            Ok((m, n, k))
        })
        .collect()
}

/// One int8 implementation to measure: a rung, fed 7-bit or full-range activations.
pub struct Int8Variant {
    /// `avx2` (its fast domain) or `avx2-u8` (full range, its exact kernel), `avx512vnni`, ...
    pub label: String,
    pub rung: Rung,
    /// Feed activations ≤ 127 (the domain of 7-bit kernels such as AVX2's `vpmaddubsw`).
    pub u7: bool,
}

/// Every available rung; a rung whose fastest kernel is 7-bit appears twice, on 7-bit
/// data (`avx2`) and on full-range data (`avx2-u8`), so both of its kernels are measured.
pub fn int8_variants() -> Vec<Int8Variant> {
    let mut variants = Vec::new();
    for &rung in isa::ladder().iter().filter(|r| r.is_available()) {
        let narrow = kernels_of(rung)
            .first()
            .is_some_and(|k| k.max_activation < 255);
        variants.push(Int8Variant {
            label: rung.name().to_owned(),
            rung,
            u7: narrow,
        });
        if narrow {
            variants.push(Int8Variant {
                label: format!("{}-u8", rung.name()),
                rung,
                u7: false,
            });
        }
    }
    variants
}

/// Measures one shape: every available rung (AVX2 twice: on 7-bit activations, its fast
/// domain, and on full-range u8, its exact kernel) and the fp32 baseline.
pub fn bench_shape(
    (m, n, k): (usize, usize, usize),
    budget: Budget,
    threads: usize,
) -> Result<Vec<Row>> {
    let a_u8: Vec<u8> = (0..m * k)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let a_u7: Vec<u8> = a_u8.iter().map(|x| x & 0x7F).collect();
    let w: Vec<i8> = (0..k * n)
        .map(|i| (i.wrapping_mul(40_503) >> 5) as i8)
        .collect();
    let b = MatB {
        data: &w,
        rows: k,
        cols: n,
        zero_points: &[0],
        transposed: false,
    };

    let impls = int8_variants();
    let packed: Vec<PackedB> = impls
        .iter()
        .map(|i| PackedB::for_rung(&b, i.rung))
        .collect::<Result<_, _>>()?;
    let mut outputs: Vec<Vec<i32>> = impls.iter().map(|_| vec![0; m * n]).collect();
    let mut kernel_names = Vec::new();
    for ((imp, p), out) in impls.iter().zip(&packed).zip(&mut outputs) {
        let a = MatA::new(if imp.u7 { &a_u7 } else { &a_u8 }, m, k, 0);
        kernel_names.push(gemm_i32(&a, p, out, n, threads)?.to_owned());
    }

    let af: Vec<f32> = a_u8.iter().map(|&x| f32::from(x)).collect();
    let bf: Vec<f32> = w.iter().map(|&x| f32::from(x)).collect();
    let mut cf = vec![0f32; m * n];

    let mut candidates: Vec<Candidate> = Vec::new();
    for ((imp, p), out) in impls.iter().zip(&packed).zip(outputs.iter_mut()) {
        let a = MatA::new(if imp.u7 { &a_u7 } else { &a_u8 }, m, k, 0);
        candidates.push(Candidate {
            name: imp.label.clone(),
            run: Box::new(move || {
                gemm_i32(black_box(&a), p, out, n, threads).expect("validated above");
            }),
        });
    }
    candidates.push(Candidate {
        name: fp32::BASELINE_NAME.to_owned(),
        run: Box::new(|| fp32::sgemm(m, n, k, black_box(&af), &bf, &mut cf, threads)),
    });
    let summaries = interleaved(&mut candidates, budget);
    let fp32_median = summaries.last().expect("fp32 candidate").median;
    let ops = 2.0 * (m * n * k) as f64;
    let rows = candidates
        .iter()
        .zip(&summaries)
        .enumerate()
        .map(|(i, (c, s))| Row {
            op: "gemm",
            m,
            n,
            k,
            threads,
            implementation: c.name.clone(),
            kernel: kernel_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| c.name.clone()),
            activations: impls.get(i).map(|imp| if imp.u7 { "u7" } else { "u8" }),
            gops: ops / s.median,
            median_ns: s.median,
            p10_ns: s.p10,
            p90_ns: s.p90,
            samples: s.samples,
            speedup_vs_fp32: fp32_median / s.median,
        })
        .collect();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_shapes("1x768x768, 2x3x4").unwrap(),
            vec![(1, 768, 768), (2, 3, 4)]
        );
        let err = parse_shapes("1x768").unwrap_err().to_string();
        assert!(err.contains("\"1x768\""), "{err}");
        assert!(parse_shapes("0x1x1").is_err());
    }

    #[test]
    fn one_tiny_shape_measures_every_rung_and_the_baseline() {
        let budget = Budget {
            min_samples: 3,
            max_samples: 3,
            ..Budget::QUICK
        };
        let rows = bench_shape((3, 20, 10), budget, 1).unwrap();
        let available = isa::ladder().iter().filter(|r| r.is_available()).count();
        assert!(rows.len() > available, "{rows:?}");
        let fp32 = rows.last().unwrap();
        assert_eq!(fp32.implementation, fp32::BASELINE_NAME);
        assert!((fp32.speedup_vs_fp32 - 1.0).abs() < 1e-12);
        assert!(rows.iter().all(|r| r.gops > 0.0 && r.samples == 3));
    }
}
