//! `qbench gate`: checks every cell of a results file against the limits the thresholds
//! file resolves for it, and renders the outcome as a terminal table, a markdown summary
//! (for a pull-request comment) or JUnit XML (one test case per cell × limit).
//!
//! A limit on a measurement that a cell lacks is never passed: a skipped cell or an n/a
//! measurement is reported as "not checked" with its reason, and a failed cell violates
//! every limit that applies to it. Exit codes are the caller's (`cli`): 0 when nothing
//! is violated, 1 otherwise; reading errors are 2.

use super::thresholds::{Limit, Thresholds};
use super::TOLERANCE;
use crate::results::{Cell, CellKey, Measure, Results, State};
use anyhow::{bail, Context, Result};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass { value: f64 },
    Violated { value: Option<f64>, why: String },
    NotChecked { why: String },
}

/// One limit applied to one cell.
#[derive(Clone, Debug)]
pub struct Check {
    pub cell: CellKey,
    pub limit: Limit,
    pub bound: f64,
    /// The rule the limit came from, as `rule[2] (*/static/*)`.
    pub rule: String,
    pub outcome: Outcome,
}

impl Check {
    /// `max_drop_pp ≤ 0.5`.
    pub fn condition(&self) -> String {
        format!(
            "{} {} {}",
            self.limit.key(),
            if self.limit.is_max() { "≤" } else { "≥" },
            fmt_num(self.bound)
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct GateReport {
    pub checks: Vec<Check>,
    /// Cells no rule sets any limit for.
    pub uncovered: Vec<CellKey>,
    /// Rules that matched no cell (a typo in a model name, or a model not in this run).
    pub unused_rules: Vec<String>,
}

impl GateReport {
    pub fn violations(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Violated { .. }))
    }

    pub fn not_checked(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::NotChecked { .. }))
    }

    pub fn passed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Pass { .. }))
            .count()
    }

    /// 0 when no limit is violated, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.violations().next().is_some())
    }

    /// One line: `gate: 40 checks, 37 passed, 1 violated, 2 not checked`.
    pub fn summary(&self) -> String {
        format!(
            "{} checks: {} passed, {} violated, {} not checked; {} cells without a rule",
            self.checks.len(),
            self.passed(),
            self.violations().count(),
            self.not_checked().count(),
            self.uncovered.len()
        )
    }
}

/// Checks every cell against its resolved limits.
pub fn evaluate(results: &Results, thresholds: &Thresholds) -> GateReport {
    let mut report = GateReport::default();
    let mut used = vec![false; thresholds.rules.len()];
    for cell in &results.cells {
        for (i, r) in thresholds.rules.iter().enumerate() {
            used[i] |= r.matches(cell);
        }
        let applied = thresholds.resolve(cell);
        if applied.is_empty() {
            report.uncovered.push(cell.key());
        }
        for a in applied {
            report.checks.push(Check {
                cell: cell.key(),
                limit: a.limit,
                bound: a.bound,
                rule: a.rule.to_string(),
                outcome: check(cell, a.limit, a.bound),
            });
        }
    }
    report.unused_rules = thresholds
        .rules
        .iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(r, _)| r.to_string())
        .collect();
    report
}

fn check(cell: &Cell, limit: Limit, bound: f64) -> Outcome {
    let (measure, value) = match limit {
        Limit::MaxDropPp => (Measure::Accuracy, cell.accuracy.as_ref().map(|a| a.drop_pp)),
        Limit::MinRelative => (
            Measure::Accuracy,
            cell.accuracy.as_ref().map(|a| a.relative),
        ),
        Limit::MinAgreement => (Measure::Agreement, cell.agreement),
        Limit::MaxSizeRatio => (Measure::Size, cell.size_ratio),
        Limit::MinSpeedup => (Measure::Speed, cell.speedup_vs_fp32),
    };
    if cell.state == State::Failed {
        return Outcome::Violated {
            value,
            why: format!(
                "the cell failed: {}",
                cell.reason.as_deref().unwrap_or("no error recorded")
            ),
        };
    }
    let Some(value) = value else {
        return Outcome::NotChecked {
            // Validation guarantees a reason for a measured cell's missing measurement.
            why: cell
                .absence(measure)
                .unwrap_or_else(|| format!("{} not measured", limit.field())),
        };
    };
    let holds = if limit.is_max() {
        value <= bound + TOLERANCE
    } else {
        value >= bound - TOLERANCE
    };
    if holds {
        Outcome::Pass { value }
    } else {
        Outcome::Violated {
            value: Some(value),
            why: format!(
                "{} is {} {} {}",
                limit.field(),
                fmt_num(value),
                if limit.is_max() { ">" } else { "<" },
                fmt_num(bound)
            ),
        }
    }
}

/// Four significant decimals, trailing zeros trimmed: limits read as written.
pub fn fmt_num(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn value_of(c: &Check) -> String {
    match &c.outcome {
        Outcome::Pass { value }
        | Outcome::Violated {
            value: Some(value), ..
        } => fmt_num(*value),
        Outcome::Violated { value: None, .. } | Outcome::NotChecked { .. } => "—".to_owned(),
    }
}

/// The terminal report: violations and not-checked limits as tables, then the summary.
pub fn render_text(report: &GateReport) -> String {
    use tabled::{builder::Builder, settings::Style};
    let mut out = String::new();
    let table = |rows: Vec<&Check>, with_value: bool| {
        let mut b = Builder::default();
        let mut head = vec!["cell", "rule", "limit"];
        if with_value {
            head.push("value");
        }
        head.push("why");
        b.push_record(head);
        for c in rows {
            let why = match &c.outcome {
                Outcome::Violated { why, .. } | Outcome::NotChecked { why } => why.clone(),
                Outcome::Pass { .. } => String::new(),
            };
            let mut row = vec![c.cell.to_string(), c.rule.clone(), c.condition()];
            if with_value {
                row.push(value_of(c));
            }
            row.push(why);
            b.push_record(row);
        }
        b.build().with(Style::rounded()).to_string()
    };
    let violations: Vec<&Check> = report.violations().collect();
    if !violations.is_empty() {
        out.push_str("VIOLATED\n");
        out.push_str(&table(violations, true));
        out.push('\n');
    }
    let skipped: Vec<&Check> = report.not_checked().collect();
    if !skipped.is_empty() {
        out.push_str("NOT CHECKED (no value to compare; not counted as passing)\n");
        out.push_str(&table(skipped, false));
        out.push('\n');
    }
    for r in &report.unused_rules {
        out.push_str(&format!("note: {r} matches no cell\n"));
    }
    if !report.uncovered.is_empty() {
        let names: Vec<String> = report.uncovered.iter().map(ToString::to_string).collect();
        out.push_str(&format!("note: no rule covers {}\n", names.join(", ")));
    }
    if report.checks.is_empty() {
        out.push_str("warning: no limit applied to any cell: nothing was checked\n");
    }
    out.push_str(&format!(
        "gate {}: {}\n",
        if report.exit_code() == 0 {
            "passed"
        } else {
            "FAILED"
        },
        report.summary()
    ));
    out
}

/// A markdown summary for a pull-request comment.
pub fn render_markdown(report: &GateReport, results_name: &str) -> String {
    // Names from the files go in code spans (a backtick would end one; a pipe would end
    // the table cell even inside one); free text is escaped as markdown.
    let code = |s: &str| {
        s.replace('`', "'")
            .replace('|', "\\|")
            .replace(['\n', '\r'], " ")
    };
    let esc = crate::report::md_escape;
    let mut out = format!(
        "## qbench gate: {}\n\n`{}`: {}\n",
        if report.exit_code() == 0 {
            "passed ✅"
        } else {
            "failed ❌"
        },
        code(results_name),
        report.summary()
    );
    let violations: Vec<&Check> = report.violations().collect();
    if !violations.is_empty() {
        out.push_str(
            "\n### Violations\n\n| cell | rule | limit | value | why |\n|---|---|---|---|---|\n",
        );
        for c in violations {
            let why = match &c.outcome {
                Outcome::Violated { why, .. } => why.as_str(),
                _ => "",
            };
            out.push_str(&format!(
                "| `{}` | `{}` | `{}` | {} | {} |\n",
                code(&c.cell.to_string()),
                code(&c.rule),
                c.condition(),
                value_of(c),
                esc(why)
            ));
        }
    }
    let skipped: Vec<&Check> = report.not_checked().collect();
    if !skipped.is_empty() {
        out.push_str("\n### Not checked\n\nThese limits had no value to check; they are not counted as passing.\n\n| cell | rule | limit | why |\n|---|---|---|---|\n");
        for c in skipped {
            let why = match &c.outcome {
                Outcome::NotChecked { why } => why.as_str(),
                _ => "",
            };
            out.push_str(&format!(
                "| `{}` | `{}` | `{}` | {} |\n",
                code(&c.cell.to_string()),
                code(&c.rule),
                c.condition(),
                esc(why)
            ));
        }
    }
    if !report.unused_rules.is_empty() || !report.uncovered.is_empty() {
        out.push_str("\n### Notes\n\n");
        for r in &report.unused_rules {
            out.push_str(&format!("- `{}` matches no cell\n", code(r)));
        }
        for c in &report.uncovered {
            out.push_str(&format!("- no rule covers `{}`\n", code(&c.to_string())));
        }
    }
    out
}

/// JUnit XML: `<testsuites>` with one `<testsuite>` per cell and one `<testcase>` per
/// limit (`<failure>` when violated, `<skipped>` when not checked). Written with
/// quick-xml, which escapes attribute values and text.
pub fn render_junit(report: &GateReport) -> Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let io = |e: std::io::Error| anyhow::anyhow!("writing JUnit XML: {e}");
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io)?;
    let count = |pred: &dyn Fn(&Outcome) -> bool, key: Option<&CellKey>| {
        report
            .checks
            .iter()
            .filter(|c| key.is_none_or(|k| &c.cell == k) && pred(&c.outcome))
            .count()
            .to_string()
    };
    let is_fail = |o: &Outcome| matches!(o, Outcome::Violated { .. });
    let is_skip = |o: &Outcome| matches!(o, Outcome::NotChecked { .. });
    let any = |_: &Outcome| true;
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "qbench gate"));
    root.push_attribute(("tests", count(&any, None).as_str()));
    root.push_attribute(("failures", count(&is_fail, None).as_str()));
    root.push_attribute(("skipped", count(&is_skip, None).as_str()));
    w.write_event(Event::Start(root)).map_err(io)?;
    let mut cells: Vec<&CellKey> = Vec::new();
    for c in &report.checks {
        if !cells.contains(&&c.cell) {
            cells.push(&c.cell);
        }
    }
    for key in cells {
        let name = key.to_string();
        let mut suite = BytesStart::new("testsuite");
        suite.push_attribute(("name", name.as_str()));
        suite.push_attribute(("tests", count(&any, Some(key)).as_str()));
        suite.push_attribute(("failures", count(&is_fail, Some(key)).as_str()));
        suite.push_attribute(("errors", "0"));
        suite.push_attribute(("skipped", count(&is_skip, Some(key)).as_str()));
        w.write_event(Event::Start(suite)).map_err(io)?;
        for c in report.checks.iter().filter(|c| &c.cell == key) {
            let mut case = BytesStart::new("testcase");
            let classname = format!("qbench.gate.{name}");
            let case_name = format!("{} [{}]", c.condition(), c.rule);
            case.push_attribute(("classname", classname.as_str()));
            case.push_attribute(("name", case_name.as_str()));
            match &c.outcome {
                Outcome::Pass { .. } => w.write_event(Event::Empty(case)).map_err(io)?,
                Outcome::Violated { why, .. } | Outcome::NotChecked { why } => {
                    let tag = if is_fail(&c.outcome) {
                        "failure"
                    } else {
                        "skipped"
                    };
                    w.write_event(Event::Start(case)).map_err(io)?;
                    let mut inner = BytesStart::new(tag);
                    inner.push_attribute(("message", why.as_str()));
                    if tag == "failure" {
                        inner.push_attribute(("type", c.limit.key()));
                        w.write_event(Event::Start(inner)).map_err(io)?;
                        let body = format!(
                            "cell {}: {} from {}; value {}",
                            c.cell,
                            c.condition(),
                            c.rule,
                            value_of(c)
                        );
                        w.write_event(Event::Text(BytesText::new(&body)))
                            .map_err(io)?;
                        w.write_event(Event::End(BytesEnd::new(tag))).map_err(io)?;
                    } else {
                        w.write_event(Event::Empty(inner)).map_err(io)?;
                    }
                    w.write_event(Event::End(BytesEnd::new("testcase")))
                        .map_err(io)?;
                }
            }
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))
            .map_err(io)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))
        .map_err(io)?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// Options of `qbench gate`.
pub struct GateArgs<'a> {
    pub results: &'a Path,
    pub thresholds: &'a Path,
    pub markdown: bool,
    pub junit: Option<&'a Path>,
    /// Exit 0 even when no limit was checked (an empty results file or rule set).
    pub allow_empty: bool,
}

/// Runs the gate: prints the report, writes JUnit if asked, returns the exit code
/// (0 or 1). Any error (unreadable or invalid input) is the caller's exit 2.
pub fn run(args: &GateArgs<'_>) -> Result<i32> {
    // Both inputs are read and validated before anything is printed or written.
    let thresholds = Thresholds::read(args.thresholds)?;
    let results = Results::read(args.results)?;
    let report = evaluate(&results, &thresholds);
    if let Some(path) = args.junit {
        let xml = render_junit(&report)?;
        crate::output::write_atomic(path, &xml)
            .with_context(|| format!("writing JUnit XML to {}", path.display()))?;
    }
    if args.markdown {
        print!(
            "{}",
            render_markdown(&report, &args.results.display().to_string())
        );
    } else {
        print!("{}", render_text(&report));
    }
    // A gate that checked nothing must not read as a pass: an empty results file, a
    // rule set that matches no cell, or cells that all lack the measurements.
    let checked = report.passed() + report.violations().count();
    if checked == 0 && !args.allow_empty {
        bail!(
            "nothing was checked: {} cells in {}, {} checks in {}, none passed or violated (pass --allow-empty if that is expected)",
            results.cells.len(),
            args.results.display(),
            report.checks.len(),
            args.thresholds.display()
        );
    }
    Ok(report.exit_code())
}
