//! Observers against independent computations on known distributions: sorting for MinMax
//! and PerChannelMinMax (per channel from the values as generated), an f64 moving average
//! of sorted batch extremes for MovingAverageMinMax, PyTorch's own numbers for Histogram,
//! sorting for Percentile, a literal KL search for Entropy, a brute-force search on the
//! raw values for MSE, and the common contract (no data, NaN/Inf, constant tensors,
//! batching) for every kind.

use qbench_quantizers::observer::{
    Entropy, Histogram, Mse, Observer, ObserverKind, Percentile, ENTROPY_LEVELS, MSE_STEPS,
};
use qbench_quantizers::qparams::{Granularity, QDType, QParams, QSpec};
use qbench_quantizers::QuantError;

// The workspace's SplitMix64; the PyTorch fixture below was made with the same generator
// and the same Irwin–Hall draws in Python.
use qbench_models::rng::Rng;

fn gauss(seed: u64, n: usize, sigma: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| (r.irwin_hall() * sigma) as f32).collect()
}

fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| (r.uniform() * (hi - lo) + lo) as f32)
        .collect()
}

/// Mean squared error of fake-quantizing `data` with `qp`.
fn fq_mse(qp: &QParams, data: &[f32]) -> f64 {
    let fq = qp.fake_quantize_tensor(&[data.len()], data);
    data.iter()
        .zip(&fq)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / data.len() as f64
}

/// The real range a per-tensor qparams covers.
fn covered(qp: &QParams) -> (f32, f32) {
    (
        qp.dequantize_one(qp.spec.qmin, 0),
        qp.dequantize_one(qp.spec.qmax, 0),
    )
}

fn observe_all(kind: ObserverKind, spec: QSpec, batches: &[&[f32]]) -> QParams {
    let mut obs = kind.build(spec, "layer").unwrap();
    for b in batches {
        obs.observe(&[b.len()], b).unwrap();
    }
    obs.qparams().unwrap()
}

fn specs() -> [QSpec; 3] {
    [
        QSpec::activation_quint8(true),
        QSpec::activation_quint8(false),
        QSpec::weight_qint8(None),
    ]
}

fn clipping_kinds() -> [ObserverKind; 4] {
    [
        ObserverKind::Histogram { bins: 2048 },
        ObserverKind::Percentile { percentile: 99.99 },
        ObserverKind::Entropy { bins: 2048 },
        ObserverKind::Mse,
    ]
}

// ---------------------------------------------------------------- the common contract

#[test]
fn every_observer_refuses_qparams_before_data_and_names_the_layer() {
    for kind in ObserverKind::all() {
        for spec in specs() {
            let obs = kind.build(spec, "encoder.fc1").unwrap();
            let err = obs.qparams().unwrap_err();
            assert!(matches!(err, QuantError::NoData { .. }), "{kind:?}: {err}");
            assert!(err.to_string().contains("\"encoder.fc1\""), "{err}");
            // An empty batch is not data either.
            let mut obs = kind.build(spec, "encoder.fc1").unwrap();
            obs.observe(&[0], &[]).unwrap();
            assert!(obs.qparams().is_err(), "{kind:?} after an empty batch");
        }
    }
}

#[test]
fn every_observer_rejects_nan_and_inf_naming_the_layer() {
    for kind in ObserverKind::all() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut obs = kind
                .build(QSpec::activation_quint8(false), "conv3")
                .unwrap();
            obs.observe(&[2], &[0.5, 1.0]).unwrap();
            let err = obs.observe(&[3], &[0.1, bad, 0.2]).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, QuantError::NonFinite { index: 1, .. }),
                "{msg}"
            );
            assert!(msg.contains("\"conv3\""), "{kind:?}: {msg}");
            // The bad batch left no trace: qparams are those of the good batch alone.
            let mut clean = kind
                .build(QSpec::activation_quint8(false), "conv3")
                .unwrap();
            clean.observe(&[2], &[0.5, 1.0]).unwrap();
            assert_eq!(obs.qparams().unwrap(), clean.qparams().unwrap(), "{kind:?}");
        }
    }
}

#[test]
fn every_observer_gives_a_valid_scale_on_a_constant_tensor() {
    for kind in ObserverKind::all() {
        for spec in specs() {
            for c in [0.0f32, 3.5, -2.0, 1e-30] {
                let data = vec![c; 1000];
                // Twice: the second batch exercises each observer's merge path.
                let qp = observe_all(kind, spec, &[&data, &data]);
                let (s, z) = (qp.scales[0], qp.zero_points[0]);
                assert!(s.is_finite() && s > 0.0, "{kind:?} {spec:?} {c}: scale {s}");
                assert!((spec.qmin..=spec.qmax).contains(&z), "{kind:?} {c}: zp {z}");
                // The constant itself survives quantization (within half a step).
                let back = qp.dequantize_one(qp.quantize_one(c, 0), 0);
                assert!(
                    (back - c).abs() <= s / 2.0 * 1.0001,
                    "{kind:?} {spec:?}: {c} comes back as {back} (scale {s})"
                );
            }
        }
    }
}

#[test]
fn unknown_parameters_are_config_errors_naming_the_layer() {
    let spec = QSpec::activation_quint8(false);
    for kind in [
        ObserverKind::Histogram { bins: 1 },
        ObserverKind::Entropy { bins: 100 },
        ObserverKind::Percentile { percentile: 0.0 },
        ObserverKind::Percentile { percentile: 101.0 },
    ] {
        let err = kind.build(spec, "head").err().unwrap().to_string();
        assert!(err.starts_with("head.observer."), "{kind:?}: {err}");
    }
    // Per-channel is MinMax's job.
    let err = ObserverKind::Mse
        .build(QSpec::weight_qint8(Some(0)), "head")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("per-tensor"), "{err}");
}

// ---------------------------------------------------------------- outliers

#[test]
fn clipping_observers_beat_minmax_on_gaussian_data_with_outliers() {
    // 1M N(0, 1) values and three far outliers: MinMax spreads the grid over [−50, 60].
    // Each clipping observer must narrow the range and lower the error on the data.
    // (PyTorch's Histogram walk stops at the first step that raises its L2 estimate, so it
    // drops an outlier at distance d only when N·(R² − R'²)/(12·256²) > d²: here it pays;
    // with 20k values it does not, see `histogram_matches_pytorch_*`.)
    let mut data = gauss(7, 1_000_000, 1.0);
    data.extend([40.0, -50.0, 60.0]);
    for spec in [
        QSpec::activation_quint8(true),
        QSpec::activation_quint8(false),
    ] {
        let minmax = observe_all(ObserverKind::MinMax, spec, &[&data]);
        let minmax_err = fq_mse(&minmax, &data);
        for kind in clipping_kinds() {
            let qp = observe_all(kind, spec, &[&data]);
            let err = fq_mse(&qp, &data);
            assert!(
                qp.scales[0] < minmax.scales[0] * 0.9,
                "{kind:?} {spec:?}: scale {} vs minmax {}",
                qp.scales[0],
                minmax.scales[0]
            );
            assert!(
                err < minmax_err * 0.9,
                "{kind:?} {spec:?}: mse {err} vs minmax {minmax_err}"
            );
        }
    }
}

// ---------------------------------------------------------------- Histogram

/// PyTorch 2.15 `HistogramObserver` on the same data (the generator above, in Python):
/// `_non_linear_param_search()` → (min, max) and `calculate_qparams()` → (scale, zp), as
/// printed by `tests/fixtures/torch_histogram.py` under torch 2.15.0.
struct TorchCase {
    spec: QSpec,
    min: f32,
    max: f32,
    scale: f32,
    zp: i32,
}

fn check_against_torch(batches: &[Vec<f32>], case: &TorchCase) {
    let mut obs = Histogram::new(case.spec, 2048, "h".into()).unwrap();
    for b in batches {
        obs.observe(&[b.len()], b).unwrap();
    }
    let (_, lo, hi) = obs.histogram().unwrap();
    let bin = (hi - lo) / 2048.0;
    let (min, max) = obs.search_range().unwrap();
    // The same bins chosen: equal to within float noise, far below one bin.
    assert!(
        (min - case.min).abs() < bin * 0.01 && (max - case.max).abs() < bin * 0.01,
        "search range ({min}, {max}) vs torch ({}, {}), bin {bin}",
        case.min,
        case.max
    );
    let qp = obs.qparams().unwrap();
    assert!(
        (qp.scales[0] - case.scale).abs() <= case.scale * 1e-5,
        "scale {} vs torch {}",
        qp.scales[0],
        case.scale
    );
    assert_eq!(qp.zero_points[0], case.zp);
}

#[test]
fn histogram_matches_pytorch_on_outliers_reduce_range_and_symmetric() {
    let mut data = gauss(1, 20_000, 1.0);
    data.extend([25.0, -30.0, 40.0]);
    // 20k values cannot pay for clipping a far outlier in L2: PyTorch keeps the range.
    check_against_torch(
        &[data.clone()],
        &TorchCase {
            spec: QSpec::activation_quint8(true),
            min: -30.0,
            max: 39.965_82,
            scale: 0.550_911_96,
            zp: 54,
        },
    );
    check_against_torch(
        &[data],
        &TorchCase {
            spec: QSpec::weight_qint8(None),
            min: -30.0,
            max: 39.965_82,
            scale: 0.313_457_4,
            zp: 0,
        },
    );
    // 100k values: PyTorch's greedy walk clips the negative outlier and stops at +8.
    let mut data = gauss(7, 100_000, 1.0);
    data.extend([6.5, 7.0, -7.5, 8.0]);
    check_against_torch(
        &[data],
        &TorchCase {
            spec: QSpec::activation_quint8(false),
            min: -3.844_482_4,
            max: 8.0,
            scale: 0.046_448_95,
            zp: 83,
        },
    );
}

#[test]
fn histogram_matches_pytorch_when_the_range_grows_across_batches() {
    let mut third = gauss(4, 5000, 2.0);
    third.push(20.0);
    let batches = vec![gauss(2, 5000, 0.5), gauss(3, 5000, 1.0), third];
    let case = TorchCase {
        spec: QSpec::activation_quint8(false),
        min: -7.024_815_6,
        max: 19.986_805,
        scale: 0.105_927_92,
        zp: 66,
    };
    check_against_torch(&batches, &case);
    // And the single batch on the concatenation lands on the same qparams.
    check_against_torch(&[batches.concat()], &case);
}

#[test]
fn histogram_keeps_nearly_the_full_range_of_uniform_data() {
    let data = uniform(5, 50_000, -1.0, 3.0);
    let mut obs = Histogram::new(QSpec::activation_quint8(false), 2048, "u".into()).unwrap();
    obs.observe(&[data.len()], &data).unwrap();
    let (min, max) = obs.search_range().unwrap();
    // PyTorch: (−0.99999, 2.99803): within half a percent of [−1, 3].
    assert!(min <= -0.99 && max >= 2.99, "({min}, {max})");
    assert!((min - -0.999_988_7).abs() < 1e-4 && (max - 2.998_028_5).abs() < 1e-4);
}

#[test]
fn histogram_in_batches_closely_matches_one_batch() {
    // Batches in an order where the range grows twice (re-binning each time).
    let data = {
        let mut d = gauss(11, 60_000, 1.0);
        d.extend(gauss(12, 20, 3.0));
        d
    };
    let batches = [&data[..20_000], &data[20_000..40_000], &data[40_000..]];
    let spec = QSpec::activation_quint8(true);
    let whole = observe_all(ObserverKind::Histogram { bins: 2048 }, spec, &[&data]);
    let split = observe_all(ObserverKind::Histogram { bins: 2048 }, spec, &batches);
    let rel = (whole.scales[0] - split.scales[0]).abs() / whole.scales[0];
    assert!(
        rel < 0.02,
        "scale {} vs {}",
        split.scales[0],
        whole.scales[0]
    );
    assert!((whole.zero_points[0] - split.zero_points[0]).abs() <= 2);
}

// ---------------------------------------------------------------- Percentile

/// numpy.percentile(…, method="linear") by sorting everything.
fn sorted_percentile(values: &[f32], p: f64) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let h = (v.len() - 1) as f64 * p / 100.0;
    let i = h.floor() as usize;
    let j = (i + 1).min(v.len() - 1);
    (f64::from(v[i]) + (h - i as f64) * (f64::from(v[j]) - f64::from(v[i]))) as f32
}

#[test]
fn percentile_equals_sorting_the_concatenation_in_any_batching() {
    let mut data = gauss(21, 300_000, 1.5);
    data.extend([50.0, -80.0, 33.0]);
    let abs: Vec<f32> = data.iter().map(|v| v.abs()).collect();
    for p in [99.99, 99.9, 99.0, 90.0] {
        let kind = ObserverKind::Percentile { percentile: p };
        // Affine: each tail loses (100 − p)/2 %.
        let spec = QSpec::activation_quint8(false);
        let cut = (100.0 - p) / 2.0;
        let lo = sorted_percentile(&data, cut);
        let hi = sorted_percentile(&data, 100.0 - cut);
        let chunks: Vec<&[f32]> = data.chunks(70_001).collect();
        for batches in [vec![&data[..]], chunks] {
            let qp = observe_all(kind, spec, &batches);
            assert_eq!(qp, spec.qparams(&[lo], &[hi]), "p {p}");
            let mut obs = Percentile::new(spec, p, "x".into()).unwrap();
            for b in &batches {
                obs.observe(&[b.len()], b).unwrap();
            }
            assert_eq!(obs.clip_range().unwrap(), (lo, hi), "p {p}");
        }
        // Symmetric: the p-th percentile of |x|.
        let spec = QSpec::weight_qint8(None);
        let t = sorted_percentile(&abs, p);
        let qp = observe_all(kind, spec, &[&data[..150_000], &data[150_000..]]);
        assert_eq!(qp, spec.qparams(&[-t], &[t]), "p {p}");
    }
}

#[test]
fn percentile_keeps_a_one_sided_range_one_sided() {
    // ReLU outputs: the lower tail is all zeros, so the range still starts at 0 and the
    // affine grid spends every level above it.
    let data: Vec<f32> = gauss(22, 50_000, 1.0).iter().map(|v| v.max(0.0)).collect();
    let mut obs = Percentile::new(QSpec::activation_quint8(false), 99.9, "relu".into()).unwrap();
    obs.observe(&[data.len()], &data).unwrap();
    let (lo, hi) = obs.clip_range().unwrap();
    assert_eq!(lo, 0.0);
    assert_eq!(hi, sorted_percentile(&data, 99.95));
    assert_eq!(obs.qparams().unwrap().zero_points[0], 0);
}

// ---------------------------------------------------------------- Entropy

/// The TensorRT recipe written out literally: explicit P and Q arrays for every candidate,
/// normalised, KL summed; returns the argmin (first on ties) and every KL. Bin 0 takes bin
/// 1's count first, as NVIDIA's `_compute_amax_entropy`.
fn reference_kl_search(hist: &[f64]) -> (usize, Vec<f64>) {
    let n = hist.len();
    let mut hist = hist.to_vec();
    hist[0] = hist[1];
    let mut kls = Vec::new();
    for i in ENTROPY_LEVELS..=n {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        let per = i / ENTROPY_LEVELS;
        let mut q = vec![0.0; i];
        for level in 0..ENTROPY_LEVELS {
            let start = level * per;
            let end = if level + 1 == ENTROPY_LEVELS {
                i
            } else {
                start + per
            };
            let merged: f64 = hist[start..end].iter().sum();
            let nonzero = p[start..end].iter().filter(|&&v| v > 0.0).count();
            for k in start..end {
                if p[k] > 0.0 {
                    q[k] = merged / nonzero as f64;
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        let mut kl = 0.0;
        for k in 0..i {
            let (pk, qk) = (p[k] / ps, q[k] / qs);
            if pk > 0.0 {
                kl += if qk > 0.0 {
                    pk * (pk / qk).ln()
                } else {
                    f64::INFINITY
                };
            }
        }
        kls.push(kl);
    }
    let best = (0..kls.len()).fold(0, |b, k| if kls[k] < kls[b] { k } else { b });
    (best + ENTROPY_LEVELS, kls)
}

#[test]
fn entropy_threshold_matches_a_literal_kl_search() {
    for (seed, outliers) in [
        (31, vec![9.0f32, -12.0, 20.0]),
        (32, vec![]),
        (33, vec![60.0]),
    ] {
        let mut data = gauss(seed, 80_000, 1.0);
        let has_outliers = !outliers.is_empty();
        data.extend(outliers);
        // The |x| histogram built here, independently: 2048 bins over [0, max|x|], the
        // top edge in the last bin.
        let amax = data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let width = f64::from(amax) / 2048.0;
        let mut hist = vec![0.0; 2048];
        for v in &data {
            let k = ((f64::from(v.abs()) / width).floor() as usize).min(2047);
            hist[k] += 1.0;
        }
        let (best, kls) = reference_kl_search(&hist);
        let mut obs = Entropy::new(QSpec::weight_qint8(None), 2048, "e".into()).unwrap();
        obs.observe(&[data.len()], &data).unwrap();
        let t = obs.threshold().unwrap();
        let chosen = (f64::from(t) / width).round() as usize;
        // Same candidate, or one whose KL ties the minimum to rounding.
        let (kl_chosen, kl_best) = (kls[chosen - ENTROPY_LEVELS], kls[best - ENTROPY_LEVELS]);
        assert!(
            chosen == best || (kl_chosen - kl_best).abs() <= 1e-12 * kl_best.max(1e-300),
            "seed {seed}: lib keeps {chosen} bins (KL {kl_chosen}), reference {best} (KL {kl_best})"
        );
        assert!(
            ((best as f64 * width) as f32 - t).abs() <= f32::EPSILON * t * 4.0,
            "threshold {t} vs {}",
            best as f64 * width
        );
        // Outliers far beyond the bulk (|x| ≤ 6 here) are clipped.
        if has_outliers {
            assert!(t < 7.0, "seed {seed}: threshold {t} of max {amax}");
        }
    }
}

#[test]
fn entropy_is_not_fooled_by_the_zeros_of_a_relu() {
    // Half of a ReLU's outputs are exactly 0. Without NVIDIA's bin-0 fix the KL search
    // clipped this data at 1.96 (and 1M such values at 1.54, 400x MinMax's error).
    let data: Vec<f32> = gauss(34, 200_000, 1.0).iter().map(|v| v.max(0.0)).collect();
    let spec = QSpec::activation_quint8(true);
    let entropy = observe_all(ObserverKind::Entropy { bins: 2048 }, spec, &[&data]);
    let minmax = observe_all(ObserverKind::MinMax, spec, &[&data]);
    let (lo, hi) = covered(&entropy);
    assert_eq!(lo, 0.0);
    assert!(hi > 2.5, "entropy clips ReLU(N(0,1)) at {hi}");
    assert!(fq_mse(&entropy, &data) < 2.0 * fq_mse(&minmax, &data));
}

// ---------------------------------------------------------------- MSE

#[test]
fn mse_choice_matches_a_brute_force_search_on_the_raw_values() {
    let cases: Vec<(Vec<f32>, QSpec)> = vec![
        (
            {
                let mut d = gauss(41, 50_000, 1.0);
                d.extend([15.0, -11.0]);
                d
            },
            QSpec::activation_quint8(false),
        ),
        (
            gauss(42, 50_000, 2.0).iter().map(|v| v.max(0.0)).collect(),
            QSpec::activation_quint8(true),
        ),
        (uniform(43, 30_000, -2.0, 1.0), QSpec::weight_qint8(None)),
    ];
    for (data, spec) in cases {
        let lo = data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Brute force: the same candidate ranges, each scored by fake-quantizing every value.
        let mut best = (f64::INFINITY, 0usize);
        let mut errs = Vec::new();
        for k in 1..=MSE_STEPS {
            let a = k as f32 / MSE_STEPS as f32;
            let qp = spec.qparams(&[a * lo], &[a * hi]);
            let e = fq_mse(&qp, &data);
            errs.push(e);
            if e < best.0 {
                best = (e, k);
            }
        }
        let mut obs = Mse::new(spec, "m".into());
        obs.observe(&[data.len()], &data).unwrap();
        let qp = obs.qparams().unwrap();
        let err = fq_mse(&qp, &data);
        // The histogram estimate may pick a neighbour of the raw optimum on a flat bottom;
        // its true error must be within 1 % of the best.
        assert!(
            err <= best.0 * 1.01,
            "{spec:?}: chosen error {err}, brute force {} at k = {}",
            best.0,
            best.1
        );
        let (clo, chi) = obs.clip_range().unwrap();
        let k = ((if hi > 0.0 { chi / hi } else { clo / lo }) * MSE_STEPS as f32).round();
        assert!(
            (k - best.1 as f32).abs() <= 3.0,
            "{spec:?}: picked k = {k}, brute force k = {}",
            best.1
        );
    }
}

// ---------------------------------------------------------------- batching

#[test]
fn exact_observers_give_the_single_batch_answer_when_the_first_batch_holds_the_extremes() {
    // Entropy and MSE merge on a fixed grid: with the extremes first, nothing is re-binned
    // and the histogram, hence the qparams, equal the single-batch ones. Percentile and
    // MinMax are exact in any order.
    let mut data = gauss(51, 40_000, 1.0);
    data.extend([-9.0, 12.0]);
    data.rotate_right(2); // extremes first
    let batches: Vec<&[f32]> = data.chunks(9_999).collect();
    for spec in specs() {
        for kind in [
            ObserverKind::Entropy { bins: 2048 },
            ObserverKind::Mse,
            ObserverKind::Percentile { percentile: 99.9 },
            ObserverKind::MinMax,
        ] {
            let one = observe_all(kind, spec, &[&data]);
            let many = observe_all(kind, spec, &batches);
            assert_eq!(one, many, "{kind:?} {spec:?}");
        }
    }
}

#[test]
fn entropy_and_mse_stay_close_to_the_single_batch_answer_when_the_range_grows() {
    let data = gauss(52, 60_000, 1.0);
    // Small values first, so the grid is merged as later batches widen it.
    let mut sorted_by_size = data.clone();
    sorted_by_size.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let batches: Vec<&[f32]> = sorted_by_size.chunks(15_000).collect();
    for spec in [QSpec::activation_quint8(false), QSpec::weight_qint8(None)] {
        for kind in [ObserverKind::Entropy { bins: 2048 }, ObserverKind::Mse] {
            let one = observe_all(kind, spec, &[&data]);
            let many = observe_all(kind, spec, &batches);
            let (e1, e2) = (fq_mse(&one, &data), fq_mse(&many, &data));
            assert!(
                (e2 - e1).abs() <= 0.05 * e1,
                "{kind:?} {spec:?}: batched mse {e2} vs single {e1} (ranges {:?} {:?})",
                covered(&many),
                covered(&one)
            );
        }
    }
}

// ---------------------------------------------------------------- the min/max family

/// Min and max of `values` by sorting (independent of the observers' running fold).
fn sorted_extremes(values: &[f32]) -> (f32, f32) {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    (v[0], v[v.len() - 1])
}

/// Ten batches of 5,000 values whose distribution drifts: uniform, then normal with a
/// growing spread and a moving centre, so running, averaged and last-batch ranges differ.
fn drifting_batches() -> Vec<Vec<f32>> {
    (0..10u64)
        .map(|i| {
            if i % 2 == 0 {
                uniform(100 + i, 5_000, -1.0 - 0.3 * i as f64, 2.0 + 0.1 * i as f64)
            } else {
                let shift = 0.25 * i as f32;
                gauss(100 + i, 5_000, 0.5 + 0.1 * i as f64)
                    .into_iter()
                    .map(|x| x + shift)
                    .collect()
            }
        })
        .collect()
}

#[test]
fn minmax_keeps_the_running_extremes_of_seeded_uniform_and_normal_batches() {
    let batches = drifting_batches();
    let all: Vec<f32> = batches.concat();
    let (lo, hi) = sorted_extremes(&all);
    // The data really spans several batches' extremes (not all from one batch).
    let argmin = batches.iter().position(|b| b.contains(&lo)).unwrap();
    let argmax = batches.iter().position(|b| b.contains(&hi)).unwrap();
    assert_ne!(argmin, argmax);
    let refs: Vec<&[f32]> = batches.iter().map(Vec::as_slice).collect();
    for spec in specs() {
        let qp = observe_all(ObserverKind::MinMax, spec, &refs);
        assert_eq!(qp, spec.qparams(&[lo], &[hi]), "{spec:?}");
    }
    // Symmetric qint8, PyTorch's formula written out: scale = max(|min|, max) / 127.5.
    let qp = observe_all(ObserverKind::MinMax, QSpec::weight_qint8(None), &refs);
    assert_eq!(qp.scales, vec![lo.abs().max(hi) / 127.5]);
    assert_eq!(qp.zero_points, vec![0]);
}

#[test]
fn moving_average_minmax_follows_the_ema_of_each_batchs_extremes() {
    let batches = drifting_batches();
    let refs: Vec<&[f32]> = batches.iter().map(Vec::as_slice).collect();
    let spec = QSpec::activation_quint8(false);
    for c in [0.01f32, 0.3, 1.0] {
        // PyTorch: the first batch sets the range, then x ← x + c·(batch − x); in f64 here.
        let mut ema: Option<(f64, f64)> = None;
        for b in &batches {
            let (lo, hi) = sorted_extremes(b);
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            let c = f64::from(c);
            ema = Some(match ema {
                None => (lo, hi),
                Some((a, z)) => (a + c * (lo - a), z + c * (hi - z)),
            });
        }
        let (lo, hi) = ema.unwrap();
        let want = spec.qparams(&[lo as f32], &[hi as f32]);
        let kind = ObserverKind::MovingAverageMinMax {
            averaging_constant: c,
        };
        let got = observe_all(kind, spec, &refs);
        let rel = (got.scales[0] / want.scales[0] - 1.0).abs();
        assert!(
            rel < 1e-5,
            "c = {c}: scale {} vs {}",
            got.scales[0],
            want.scales[0]
        );
        assert!(
            (got.zero_points[0] - want.zero_points[0]).abs() <= 1,
            "c = {c}: zp {} vs {}",
            got.zero_points[0],
            want.zero_points[0]
        );
        if c == 1.0 {
            // c = 1 is the last batch's range alone (PyTorch's dynamic-quantization use).
            let (lo, hi) = sorted_extremes(batches.last().unwrap());
            assert_eq!(got, spec.qparams(&[lo], &[hi]));
        } else {
            // The average lags the running extremes on drifting data.
            let minmax = observe_all(ObserverKind::MinMax, spec, &refs);
            assert!(got.scales[0] < minmax.scales[0], "c = {c}");
        }
    }
}

#[test]
fn per_channel_minmax_matches_each_channels_extremes_along_the_axis() {
    // Activations [N, C, H, W] per channel on axis 1 and weights [C, K] on axis 0, each
    // channel from its own distribution, over three batches. The expected extremes are
    // taken from the values as generated per channel, before they were laid out in the
    // tensor, so the observer's indexing is checked too.
    let mut rng_seed = 300;
    let mut channel_values = |c: usize, n: usize| -> Vec<f32> {
        rng_seed += 1;
        match c % 3 {
            0 => uniform(rng_seed, n, -0.1 * (c + 1) as f64, 0.5 * (c + 1) as f64),
            1 => gauss(rng_seed, n, 0.2 * (c + 1) as f64),
            // ReLU-like: non-negative only, so the range's min is clamped to 0.
            _ => gauss(rng_seed, n, 1.0)
                .into_iter()
                .map(|x| x.max(0.0))
                .collect(),
        }
    };
    for (shape, axis) in [(vec![4usize, 5, 3, 3], 1usize), (vec![6, 40], 0)] {
        let channels = shape[axis];
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut per_channel: Vec<Vec<f32>> = vec![Vec::new(); channels];
        let mut batches = Vec::new();
        for _ in 0..3 {
            let fresh: Vec<Vec<f32>> = (0..channels)
                .map(|c| channel_values(c, outer * inner))
                .collect();
            let mut data = vec![0f32; outer * channels * inner];
            for (c, vals) in fresh.iter().enumerate() {
                for o in 0..outer {
                    for i in 0..inner {
                        data[(o * channels + c) * inner + i] = vals[o * inner + i];
                    }
                }
                per_channel[c].extend(vals);
            }
            batches.push(data);
        }
        let (mins, maxs): (Vec<f32>, Vec<f32>) =
            per_channel.iter().map(|v| sorted_extremes(v)).unzip();
        for base in [QSpec::activation_quint8(false), QSpec::weight_qint8(None)] {
            let spec = QSpec {
                granularity: Granularity::PerChannel { axis },
                ..base
            };
            let mut obs = ObserverKind::MinMax.build(spec, "conv").unwrap();
            for b in &batches {
                obs.observe(&shape, b).unwrap();
            }
            let qp = obs.qparams().unwrap();
            assert_eq!(qp, spec.qparams(&mins, &maxs), "{shape:?} {spec:?}");
            if base.dtype == QDType::QInt8 {
                let want: Vec<f32> = mins
                    .iter()
                    .zip(&maxs)
                    .map(|(lo, hi)| lo.abs().max(*hi) / 127.5)
                    .collect();
                assert_eq!(qp.scales, want, "{shape:?}");
            }
        }
        // The channels really differ, so a per-tensor answer would not pass.
        assert!(maxs.iter().any(|m| *m != maxs[0]));
    }
}
