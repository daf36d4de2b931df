//! `qbench compare base.json head.json`: per-cell deltas of accuracy, size and speed
//! between two results files, and which of them are regressions.
//!
//! The rules (defaults in [`Rules::default`]):
//! - **speed**: the latency median of a cell changes by `Δ = head / base − 1`. It is a
//!   regression only when `Δ > max(floor, k × max(base spread, head spread))`, where a
//!   run's spread is `(p90 − p10) / median` of that cell's samples (an improvement
//!   likewise below the negative band); anything inside the band is noise. Speed is
//!   compared only when both cells were measured on the same machine fingerprint (CPU
//!   model, arch, ISA features, cores, OS); otherwise the cell says so and only accuracy
//!   and size are compared.
//! - **accuracy**: a drop of more than `acc_pp` percentage points of the metric.
//! - **size**: growth of `size_bytes` by more than `size_pct` percent.
//! - a cell measured in base that failed in head is a regression; cells present in only
//!   one file are listed, not judged.
//!
//! Owns the rules and their rendering; reading is `results`', exit codes `main`'s.

use crate::results::{Cell, CellKey, Results, State};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// The thresholds of a comparison.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Smallest relative latency change that can count (0.05 = 5 %).
    pub floor: f64,
    /// Multiple of the larger of the two runs' spreads a change must exceed.
    pub k: f64,
    /// Accuracy drop, in percentage points, that counts as a regression.
    pub acc_pp: f64,
    /// Size growth, in percent, that counts as a regression.
    pub size_pct: f64,
}

impl Default for Rules {
    /// floor 5 %, k = 2, accuracy 0.1 pp, size 1 %. k = 2 because the spread within one
    /// run understates the drift between runs on a loaded machine: two `bench-gemm`
    /// runs of identical code here, under a load of ~10 on 2 cores, had fp32 medians
    /// 29 % apart with spreads of 18 % and 26 %.
    fn default() -> Rules {
        Rules {
            floor: 0.05,
            k: 2.0,
            acc_pp: 0.1,
            size_pct: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Regression(String),
    Improvement(String),
    Unchanged,
    /// Not compared, and why.
    NotCompared(String),
}

/// The speed comparison of one cell.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedDelta {
    pub base_ms: f64,
    pub head_ms: f64,
    /// head / base − 1.
    pub change: f64,
    /// max(floor, k × max spread): the band a change must leave.
    pub band: f64,
}

#[derive(Clone, Debug)]
pub struct CellDelta {
    pub key: CellKey,
    /// head − base, percentage points.
    pub accuracy_pp: Option<f64>,
    /// head / base − 1 of `size_bytes`.
    pub size_change: Option<f64>,
    pub speed: Option<SpeedDelta>,
    pub accuracy: Verdict,
    pub size: Verdict,
    pub speed_verdict: Verdict,
    /// A cell-level regression (measured in base, failed in head).
    pub state: Verdict,
}

impl CellDelta {
    pub fn regressions(&self) -> Vec<String> {
        [&self.state, &self.accuracy, &self.size, &self.speed_verdict]
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Regression(why) => Some(why.clone()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub cells: Vec<CellDelta>,
    pub only_in_base: Vec<CellKey>,
    pub only_in_head: Vec<CellKey>,
}

impl Comparison {
    pub fn regression_count(&self) -> usize {
        self.cells.iter().map(|c| c.regressions().len()).sum()
    }
}

/// The speed rule on its own: `None` when either side has no latency.
pub fn speed_delta(base: &Cell, head: &Cell, rules: &Rules) -> Option<(SpeedDelta, Verdict)> {
    let (b, h) = (base.latency_ms.as_ref()?, head.latency_ms.as_ref()?);
    let change = h.median / b.median - 1.0;
    let band = rules.floor.max(rules.k * b.spread.max(h.spread));
    let d = SpeedDelta {
        base_ms: b.median,
        head_ms: h.median,
        change,
        band,
    };
    let verdict = if change > band {
        Verdict::Regression(format!(
            "latency {:.4} → {:.4} ms ({:+.1} %, beyond the ±{:.1} % noise band)",
            b.median,
            h.median,
            change * 100.0,
            band * 100.0
        ))
    } else if change < -band {
        Verdict::Improvement(format!("latency {:+.1} %", change * 100.0))
    } else {
        Verdict::Unchanged
    };
    Some((d, verdict))
}

pub fn compare(base: &Results, head: &Results, rules: &Rules) -> Comparison {
    let index = |r: &Results| -> BTreeMap<CellKey, usize> {
        r.cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key(), i))
            .collect()
    };
    let (bi, hi) = (index(base), index(head));
    let mut out = Comparison {
        only_in_base: bi
            .keys()
            .filter(|k| !hi.contains_key(*k))
            .cloned()
            .collect(),
        only_in_head: hi
            .keys()
            .filter(|k| !bi.contains_key(*k))
            .cloned()
            .collect(),
        ..Comparison::default()
    };
    for (key, &b) in &bi {
        let Some(&h) = hi.get(key) else { continue };
        let (bc, hc) = (&base.cells[b], &head.cells[h]);
        let state = match (bc.state, hc.state) {
            (State::Measured, State::Failed) => Verdict::Regression(format!(
                "measured in base, failed in head: {}",
                hc.reason.as_deref().unwrap_or("")
            )),
            (State::Failed, State::Measured) => {
                Verdict::Improvement("failed in base, measured in head".into())
            }
            _ => Verdict::Unchanged,
        };
        // Accuracy and size are properties of the scheme: comparable across machines.
        let accuracy_pp = match (&bc.accuracy, &hc.accuracy) {
            (Some(a), Some(b)) => Some((b.value - a.value) * 100.0),
            _ => None,
        };
        let accuracy = match accuracy_pp {
            None => Verdict::NotCompared("no accuracy on one side".into()),
            Some(d) if -d > rules.acc_pp + crate::gate::TOLERANCE => Verdict::Regression(format!(
                "accuracy {:+.2} pp (more than {} pp)",
                d, rules.acc_pp
            )),
            Some(d) if d > rules.acc_pp + crate::gate::TOLERANCE => {
                Verdict::Improvement(format!("accuracy {d:+.2} pp"))
            }
            Some(_) => Verdict::Unchanged,
        };
        let size_change = match (bc.size_bytes, hc.size_bytes) {
            (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64 - 1.0),
            _ => None,
        };
        let size = match size_change {
            None => Verdict::NotCompared("no size on one side".into()),
            Some(c) if c * 100.0 > rules.size_pct => Verdict::Regression(format!(
                "size {:+.2} % (more than {} %)",
                c * 100.0,
                rules.size_pct
            )),
            Some(c) if c * 100.0 < -rules.size_pct => {
                Verdict::Improvement(format!("size {:+.2} %", c * 100.0))
            }
            Some(_) => Verdict::Unchanged,
        };
        let (bm, hm) = (base.machine_of(bc), head.machine_of(hc));
        let (speed, speed_verdict) = if bm != hm {
            (
                None,
                Verdict::NotCompared(format!(
                    "different machines (base: {}; head: {}): accuracy and size only",
                    bm, hm
                )),
            )
        } else {
            match speed_delta(bc, hc, rules) {
                Some((d, v)) => (Some(d), v),
                None => (None, Verdict::NotCompared("no latency on one side".into())),
            }
        };
        out.cells.push(CellDelta {
            key: key.clone(),
            accuracy_pp,
            size_change,
            speed,
            accuracy,
            size,
            speed_verdict,
            state,
        });
    }
    out
}

/// The terminal (markdown-compatible) table and notes.
pub fn render(cmp: &Comparison, rules: &Rules) -> String {
    use tabled::{builder::Builder, settings::Style};
    let mut b = Builder::default();
    b.push_record([
        "cell",
        "accuracy Δpp",
        "size Δ",
        "latency ms base → head",
        "Δ (band)",
        "verdict",
    ]);
    for c in &cmp.cells {
        let speed = match &c.speed {
            Some(s) => (
                format!("{:.4} → {:.4}", s.base_ms, s.head_ms),
                format!("{:+.1} % (±{:.1} %)", s.change * 100.0, s.band * 100.0),
            ),
            None => ("—".to_owned(), "—".to_owned()),
        };
        let regressions = c.regressions();
        let verdict = if !regressions.is_empty() {
            format!("REGRESSION: {}", regressions.join("; "))
        } else {
            let mut notes: Vec<String> = Vec::new();
            for v in [&c.state, &c.accuracy, &c.size, &c.speed_verdict] {
                if let Verdict::Improvement(w) = v {
                    notes.push(format!("better: {w}"));
                }
            }
            if let Verdict::NotCompared(w) = &c.speed_verdict {
                notes.push(format!("speed not compared: {w}"));
            }
            if notes.is_empty() {
                "ok".to_owned()
            } else {
                notes.join("; ")
            }
        };
        b.push_record([
            c.key.to_string(),
            c.accuracy_pp.map_or("—".into(), |d| format!("{d:+.2}")),
            c.size_change
                .map_or("—".into(), |d| format!("{:+.2} %", d * 100.0)),
            speed.0,
            speed.1,
            verdict,
        ]);
    }
    let mut out = b.build().with(Style::markdown()).to_string();
    out.push('\n');
    for k in &cmp.only_in_base {
        out.push_str(&format!("only in base: {k}\n"));
    }
    for k in &cmp.only_in_head {
        out.push_str(&format!("only in head: {k}\n"));
    }
    out.push_str(&format!(
        "rules: speed regression beyond max({} %, {} × the larger spread); accuracy drop > {} pp; size growth > {} %\n{} regression(s) in {} compared cell(s)\n",
        rules.floor * 100.0,
        rules.k,
        rules.acc_pp,
        rules.size_pct,
        cmp.regression_count(),
        cmp.cells.len()
    ));
    out
}

/// Runs `qbench compare`; returns the exit code (1 only with `fail_on_regression` and a
/// regression). Errors are the caller's exit 2.
pub fn run(base: &Path, head: &Path, rules: &Rules, fail_on_regression: bool) -> Result<i32> {
    let (b, h) = (Results::read(base)?, Results::read(head)?);
    let cmp = compare(&b, &h, rules);
    print!("{}", render(&cmp, rules));
    Ok(i32::from(fail_on_regression && cmp.regression_count() > 0))
}
