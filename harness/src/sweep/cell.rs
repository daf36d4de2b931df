//! A sweep cell from what its group measured: the measured cell, a failed or skipped one,
//! and why a machine cannot time a backend's kernels natively.

use std::collections::BTreeMap;

use anyhow::Result;
use qbench_kernels::isa::Rung;

use super::executors::{Built, EvalData};
use crate::results::{Accuracy, Backend, Cell, CellKey, Latency, Measure, Method, State};

/// Why this machine cannot time `backend`'s kernels natively, if it cannot. Accuracy is
/// still computed: every rung is bit-exact with the reference, so the scheme's numbers
/// are the same on whichever rung runs here.
pub(crate) fn speed_absent(backend: Backend, rung: Rung) -> Option<String> {
    // A rung above the scheme's own (amx above avx512vnni) runs it natively too: it has
    // the instructions the scheme's kernels were written for, and faster ones.
    let native = match backend {
        Backend::Fbgemm => matches!(rung, Rung::Avx2 | Rung::Avx512Vnni | Rung::Amx),
        Backend::Vnni => matches!(rung, Rung::Avx512Vnni | Rung::Amx),
        Backend::Qnnpack => matches!(rung, Rung::Neon | Rung::NeonDotprod),
    };
    let isa = match backend {
        Backend::Fbgemm => "x86-64 AVX2",
        Backend::Vnni => "AVX-512 VNNI",
        Backend::Qnnpack => "aarch64 NEON",
    };
    (!native).then(|| {
        format!("{isa} is absent here (rung {rung}); accuracy is exact regardless: this scheme ran on the {rung} rung, bit-exact with the generic one")
    })
}

/// Cells as a group runner hands them over, each batch as soon as it is final.
pub(crate) type Emit<'a> = dyn FnMut(Vec<Cell>) -> Result<()> + 'a;

pub(crate) fn failed(key: &CellKey, reason: &str) -> Cell {
    let mut c = Cell::new(&key.model, key.method, key.backend, key.batch, key.threads);
    c.state = State::Failed;
    c.reason = Some(reason.to_owned());
    c
}

pub(crate) fn skipped(key: &CellKey, reason: &str) -> Cell {
    let mut c = failed(key, reason);
    c.state = State::Skipped;
    c
}

/// What a group knows before timing: fp32's results and why speed may be absent.
pub(super) struct Facts<'a> {
    pub(super) model: &'a str,
    pub(super) backend: Backend,
    pub(super) fp32_size: u64,
    pub(super) fp32_acc: Option<f64>,
    pub(super) fp32_pred: Option<&'a [usize]>,
    pub(super) data: Option<&'a EvalData>,
    /// Why this machine cannot time the backend's int8 kernels, if it cannot.
    pub(super) no_speed: Option<&'a str>,
}

/// The cell of `key` from its group's facts, its batch's timings and its built method.
pub(super) fn measured_cell(
    key: &CellKey,
    f: &Facts,
    timed: &BTreeMap<Method, (Latency, f64)>,
    built: Option<&std::result::Result<Built, String>>,
) -> Cell {
    let mut c = Cell::new(f.model, key.method, f.backend, key.batch, key.threads);
    // Speed: measured, or why not.
    match timed.get(&key.method) {
        Some((lat, speedup)) => {
            c.latency_ms = Some(lat.clone());
            c.speedup_vs_fp32 = Some(*speedup);
        }
        None => {
            c.not_applicable
                .insert(Measure::Speed, f.no_speed.unwrap_or("not timed").to_owned());
        }
    }
    if key.method == Method::Fp32 {
        c.kernel = Some("fp32".into());
        c.size_bytes = Some(f.fp32_size);
        c.size_ratio = Some(1.0);
        c.not_applicable
            .insert(Measure::Sqnr, "fp32 is the reference".into());
        c.not_applicable
            .insert(Measure::Quantize, "fp32 is not quantized".into());
        match (f.fp32_acc, f.data) {
            (Some(a), Some(d)) => {
                c.accuracy = Some(accuracy(a, a, d.labels.len()));
                c.agreement = Some(1.0);
            }
            _ => na_accuracy(&mut c, f.model),
        }
        return c;
    }
    let b = match built {
        Some(Ok(b)) => b,
        Some(Err(e)) => return failed(key, e),
        None => return failed(key, "not built"),
    };
    // fp16 stores weights as f16 and computes in f32: no int8 rung runs.
    c.kernel = Some(if key.method == Method::Fp16 {
        "fp32 (f16 weights)".to_owned()
    } else {
        b.exec.rung().name().to_owned()
    });
    c.size_bytes = Some(b.size);
    c.size_ratio = Some(b.size as f64 / f.fp32_size as f64);
    c.quantize_s = Some(b.quantize_s);
    match &b.sqnr {
        Some(s) => c.sqnr = Some(s.clone()),
        None => {
            c.not_applicable.insert(
                Measure::Sqnr,
                b.sqnr_note
                    .clone()
                    .unwrap_or_else(|| "no int8 layer".into()),
            );
        }
    }
    match (&b.accuracy, f.fp32_acc, f.data) {
        (Some((v, pred)), Some(fp32), Some(d)) => {
            c.accuracy = Some(accuracy(*v, fp32, d.labels.len()));
            let same = f
                .fp32_pred
                .map_or(0, |fp| fp.iter().zip(pred).filter(|(a, b)| a == b).count());
            c.agreement = Some(same as f64 / d.labels.len() as f64);
        }
        _ => na_accuracy(&mut c, f.model),
    }
    c
}

pub(super) fn na_accuracy(c: &mut Cell, model: &str) {
    let r = format!("{model} has no eval set");
    c.not_applicable.insert(Measure::Accuracy, r.clone());
    c.not_applicable.insert(Measure::Agreement, r);
}

pub(super) fn accuracy(value: f64, fp32: f64, samples: usize) -> Accuracy {
    Accuracy {
        metric: "top1".into(),
        value,
        fp32,
        drop_pp: (fp32 - value) * 100.0,
        relative: if fp32 == 0.0 { 0.0 } else { value / fp32 },
        samples,
    }
}

/// A measured summary (nanoseconds per run of `batch` inputs) as a cell's latency.
pub(crate) fn latency(s: &crate::timing::stats::Summary, batch: usize) -> Latency {
    let ms = s.median / 1e6;
    Latency {
        median: ms,
        p10: s.p10 / 1e6,
        p90: s.p90 / 1e6,
        spread: s.spread,
        samples: s.samples,
        throughput: batch as f64 / (ms / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rung_above_the_schemes_own_times_it_natively() {
        assert_eq!(speed_absent(Backend::Vnni, Rung::Amx), None);
        assert_eq!(speed_absent(Backend::Vnni, Rung::Avx512Vnni), None);
        assert_eq!(speed_absent(Backend::Fbgemm, Rung::Amx), None);
        assert_eq!(speed_absent(Backend::Fbgemm, Rung::Avx2), None);
        let why = speed_absent(Backend::Vnni, Rung::Avx2).expect("avx2 lacks VNNI");
        assert!(
            why.contains("AVX-512 VNNI") && why.contains("avx2"),
            "{why}"
        );
        assert!(speed_absent(Backend::Qnnpack, Rung::Amx).is_some());
        assert_eq!(speed_absent(Backend::Qnnpack, Rung::NeonDotprod), None);
    }
}
