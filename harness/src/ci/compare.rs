//! `qbench compare base.json head.json`: per-cell deltas of accuracy, size and speed
//! between two results files, and which of them are regressions.
//!
//! The rules (defaults in [`Rules::default`]):
//! - **speed**: the latency median of a cell changes by `Δ = head / base − 1`. It is a
//!   regression only when `Δ > max(floor, k × max(base spread, head spread))`, where a
//!   run's spread is `(p90 − p10) / median` of that cell's samples (an improvement
//!   likewise below the negative band); anything inside the band is noise. A cell timed
//!   with fewer than `few_samples` samples in either run has a band of at least
//!   `few_samples_floor`: its samples cover one short window (MiniLM at batch 32: 11
//!   samples of 1.3 s), so a slowdown of the whole machine during that window moves its
//!   median without showing in its spread. Two recorded sweeps of identical code
//!   (`reports/noise/`) have such cells 5–30 % apart with spreads of 1–5 %. Speed is
//!   compared only when both cells were measured on the same machine fingerprint (CPU
//!   model, arch, ISA features, cores, OS); otherwise the cell says so and only accuracy
//!   and size are compared.
//! - **accuracy**: a drop of more than `acc_pp` percentage points of the metric.
//! - **size**: growth of `size_bytes` by more than `size_pct` percent.
//! - **lost**: a cell measured in base that is failed, skipped or absent in head, or
//!   whose accuracy was measured in base and is absent in head, is a regression: a nightly
//!   that silently stops measuring a cell has lost coverage (a run without the MiniLM
//!   download skips the baseline's 18 measured MiniLM cells). Cells new in head, and
//!   cells in base only that were not measured there, are listed, not judged.
//!
//! Owns the rules and their rendering; reading is `results`', exit codes `cli`'s.

use super::TOLERANCE;
use crate::results::{Cell, CellKey, Measure, Results, State};
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
    /// Cells with fewer samples than this in either run get `few_samples_floor`.
    pub few_samples: usize,
    /// The smallest band of a few-sample cell (0.35 = 35 %).
    pub few_samples_floor: f64,
    /// Accuracy drop, in percentage points, that counts as a regression.
    pub acc_pp: f64,
    /// Size growth, in percent, that counts as a regression.
    pub size_pct: f64,
}

impl Default for Rules {
    /// floor 5 %, k = 2, 35 % below 20 samples, accuracy 0.1 pp, size 1 %. k = 2
    /// because the spread within one run understates the drift between runs on a loaded
    /// machine: two `bench-gemm` runs of identical code here, under a load of ~10 on 2
    /// cores, had fp32 medians 29 % apart with spreads of 18 % and 26 %. 35 % below 20
    /// samples because two idle sweeps of identical code had 11-sample cells up to 30 %
    /// apart (module docs); cells with hundreds of samples stayed inside 2 × spread.
    fn default() -> Rules {
        Rules {
            floor: 0.05,
            k: 2.0,
            few_samples: 20,
            few_samples_floor: 0.35,
            acc_pp: 0.1,
            size_pct: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Regression(String),
    Improvement(String),
    /// Measured in base, no longer measured in head: counted as a regression.
    Lost(String),
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
    /// The cell's state: `Lost` when measured in base and failed or skipped in head.
    pub state: Verdict,
}

impl CellDelta {
    /// Every regression of the cell, lost measurements included.
    pub fn regressions(&self) -> Vec<String> {
        [&self.state, &self.accuracy, &self.size, &self.speed_verdict]
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Regression(why) | Verdict::Lost(why) => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the cell, or its accuracy, was measured in base and is not in head.
    pub fn is_lost(&self) -> bool {
        matches!(self.state, Verdict::Lost(_)) || matches!(self.accuracy, Verdict::Lost(_))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Cells in both files.
    pub cells: Vec<CellDelta>,
    /// Every cell in base only (measured there or not).
    pub only_in_base: Vec<CellKey>,
    /// The cells of `only_in_base` that were measured in base: lost, and regressions.
    pub absent_in_head: Vec<CellKey>,
    /// Cells new in head: reported, never a regression.
    pub only_in_head: Vec<CellKey>,
}

impl Comparison {
    /// Regressions of the cells in both files, plus one per measured cell absent in head.
    pub fn regression_count(&self) -> usize {
        self.cells
            .iter()
            .map(|c| c.regressions().len())
            .sum::<usize>()
            + self.absent_in_head.len()
    }

    /// Cells lost from base to head: measured in base and failed, skipped or absent in
    /// head, or with their accuracy gone.
    pub fn lost_count(&self) -> usize {
        self.cells.iter().filter(|c| c.is_lost()).count() + self.absent_in_head.len()
    }
}

/// The speed rule on its own: `None` when either side has no latency.
pub fn speed_delta(base: &Cell, head: &Cell, rules: &Rules) -> Option<(SpeedDelta, Verdict)> {
    let (b, h) = (base.latency_ms.as_ref()?, head.latency_ms.as_ref()?);
    let change = h.median / b.median - 1.0;
    let mut band = rules.floor.max(rules.k * b.spread.max(h.spread));
    if b.samples.min(h.samples) < rules.few_samples {
        band = band.max(rules.few_samples_floor);
    }
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
    let only_in_base: Vec<CellKey> = bi
        .keys()
        .filter(|k| !hi.contains_key(*k))
        .cloned()
        .collect();
    let mut out = Comparison {
        absent_in_head: only_in_base
            .iter()
            .filter(|k| base.cells[bi[*k]].state == State::Measured)
            .cloned()
            .collect(),
        only_in_base,
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
            (State::Measured, State::Failed) => Verdict::Lost(format!(
                "measured in base, failed in head: {}",
                hc.reason.as_deref().unwrap_or("")
            )),
            (State::Measured, State::Skipped) => Verdict::Lost(format!(
                "measured in base, skipped in head: {}",
                hc.reason.as_deref().unwrap_or("")
            )),
            (State::Failed, State::Measured) => {
                Verdict::Improvement("failed in base, measured in head".into())
            }
            (State::Skipped, State::Measured) => {
                Verdict::Improvement("skipped in base, measured in head".into())
            }
            _ => Verdict::Unchanged,
        };
        // Accuracy and size are properties of the scheme: comparable across machines.
        let accuracy_pp = match (&bc.accuracy, &hc.accuracy) {
            (Some(a), Some(b)) => Some((b.value - a.value) * 100.0),
            _ => None,
        };
        let accuracy = match accuracy_pp {
            // A cell lost as a whole is counted once, by its state.
            None if bc.accuracy.is_some() && !matches!(state, Verdict::Lost(_)) => {
                Verdict::Lost(format!(
                    "accuracy measured in base, absent in head ({})",
                    hc.absence(Measure::Accuracy)
                        .unwrap_or_else(|| "no reason given".into())
                ))
            }
            None => Verdict::NotCompared("no accuracy on one side".into()),
            Some(d) if -d > rules.acc_pp + TOLERANCE => Verdict::Regression(format!(
                "accuracy {:+.2} pp (more than {} pp)",
                d, rules.acc_pp
            )),
            Some(d) if d > rules.acc_pp + TOLERANCE => {
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
            format!(
                "{}: {}",
                if c.is_lost() { "LOST" } else { "REGRESSION" },
                regressions.join("; ")
            )
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
    for k in &cmp.absent_in_head {
        out.push_str(&format!("LOST: {k}: measured in base, absent in head\n"));
    }
    for k in cmp
        .only_in_base
        .iter()
        .filter(|k| !cmp.absent_in_head.contains(k))
    {
        out.push_str(&format!("only in base (not measured there): {k}\n"));
    }
    for k in &cmp.only_in_head {
        out.push_str(&format!("new in head: {k}\n"));
    }
    out.push_str(&format!(
        "rules: speed regression beyond max({} %, {} × the larger spread); accuracy drop > {} pp; size growth > {} %; a cell or accuracy measured in base and not in head is lost\n{} regression(s) ({} lost cell(s)) in {} compared cell(s), {} cell(s) in base only, {} new in head\n",
        rules.floor * 100.0,
        rules.k,
        rules.acc_pp,
        rules.size_pct,
        cmp.regression_count(),
        cmp.lost_count(),
        cmp.cells.len(),
        cmp.only_in_base.len(),
        cmp.only_in_head.len()
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
