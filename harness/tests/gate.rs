//! `qbench gate` on results files built through the schema types: every exit code, rule
//! precedence and cascading, glob matching, skipped / n/a / failed cells, the markdown
//! and JUnit outputs (JUnit parsed back), and errors naming the file and key.

mod common;

use common::*;
use qbench::ci::gate::{self, Outcome};
use qbench::ci::thresholds::{Limit, Thresholds};
use qbench::results::{Backend, Cell, Measure, Method, Results, State};
use std::path::Path;

fn rules(text: &str) -> Thresholds {
    Thresholds::parse(text, Path::new("t.toml")).unwrap()
}

fn outcome<'a>(r: &'a gate::GateReport, cell: &str, limit: Limit) -> &'a gate::Check {
    r.checks
        .iter()
        .find(|c| c.cell.to_string() == cell && c.limit == limit)
        .unwrap_or_else(|| panic!("no check of {} on {cell}: {r:#?}", limit.key()))
}

/// digit-cnn static fbgemm b1 with a 0.2 pp drop, mlp-mnist static fbgemm b1 with 0.2 pp.
fn two_static_cells() -> Results {
    let mut a = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    set_accuracy(&mut a, 0.99, 0.988);
    let mut b = measured("mlp-mnist", Method::Static, Backend::Fbgemm, 1);
    set_accuracy(&mut b, 0.99, 0.988);
    results(vec![a, b])
}

#[test]
fn most_specific_rule_wins_and_limits_cascade() {
    let t = rules(
        r#"
[[rule]]
model = "*"
method = "*"
backend = "*"
max_drop_pp = 1.0
max_size_ratio = 0.2

[[rule]]
model = "digit-cnn"
method = "static"
max_drop_pp = 0.1
"#,
    );
    let r = gate::evaluate(&two_static_cells(), &t);
    // digit-cnn: the specific rule's 0.1 pp limit, violated by the 0.2 pp drop.
    let c = outcome(&r, "digit-cnn/static/fbgemm/b1/t1", Limit::MaxDropPp);
    assert_eq!(c.bound, 0.1);
    assert!(c.rule.starts_with("rule[1]"), "{}", c.rule);
    assert!(matches!(c.outcome, Outcome::Violated { .. }), "{c:?}");
    // mlp-mnist: only the general rule matches; 0.2 ≤ 1.0 passes.
    let c = outcome(&r, "mlp-mnist/static/fbgemm/b1/t1", Limit::MaxDropPp);
    assert_eq!((c.bound, c.rule.starts_with("rule[0]")), (1.0, true));
    assert!(matches!(c.outcome, Outcome::Pass { .. }));
    // The general rule's size limit still applies under the specific rule: 0.26 > 0.2.
    let c = outcome(&r, "digit-cnn/static/fbgemm/b1/t1", Limit::MaxSizeRatio);
    assert!(c.rule.starts_with("rule[0]"));
    assert!(matches!(c.outcome, Outcome::Violated { .. }));
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn order_does_not_beat_specificity_but_breaks_ties() {
    // The specific rule comes first; the later wildcard rule must not override it.
    let t = rules(
        r#"
[[rule]]
model = "digit-cnn"
method = "static"
backend = "fbgemm"
max_drop_pp = 0.3
[[rule]]
max_drop_pp = 0.1
"#,
    );
    let r = gate::evaluate(&two_static_cells(), &t);
    let c = outcome(&r, "digit-cnn/static/fbgemm/b1/t1", Limit::MaxDropPp);
    assert_eq!(c.bound, 0.3);
    assert!(matches!(c.outcome, Outcome::Pass { .. }));
    // Two equally specific rules (model-literal vs method-literal): the later one wins.
    let t = rules(
        r#"
[[rule]]
model = "digit-cnn"
max_drop_pp = 0.1
[[rule]]
method = "static"
max_drop_pp = 0.5
"#,
    );
    let r = gate::evaluate(&two_static_cells(), &t);
    let c = outcome(&r, "digit-cnn/static/fbgemm/b1/t1", Limit::MaxDropPp);
    assert_eq!((c.bound, c.rule.starts_with("rule[1]")), (0.5, true));
}

#[test]
fn globs_alternation_classes_and_pinned_batch() {
    let t = rules(
        r#"
[[rule]]
model = "digit-*"
method = "{static,dynamic}"
backend = "fb?emm"
min_agreement = 0.999
[[rule]]
model = "[m]lp-mnist"
batch = 32
min_speedup = 2.0
"#,
    );
    let mut cells = vec![
        measured("digit-cnn", Method::Dynamic, Backend::Fbgemm, 1),
        measured("digit-cnn", Method::Static, Backend::Qnnpack, 1),
        measured("mlp-mnist", Method::Dynamic, Backend::Fbgemm, 1),
        measured("mlp-mnist", Method::Dynamic, Backend::Fbgemm, 32),
    ];
    cells[3].speedup_vs_fp32 = Some(1.9);
    let r = gate::evaluate(&results(cells), &t);
    // digit-cnn dynamic fbgemm: 0.995 < 0.999.
    assert!(matches!(
        outcome(&r, "digit-cnn/dynamic/fbgemm/b1/t1", Limit::MinAgreement).outcome,
        Outcome::Violated { .. }
    ));
    // qnnpack does not match fb?emm; batch 1 does not match batch = 32.
    assert!(r
        .uncovered
        .iter()
        .any(|k| k.to_string() == "digit-cnn/static/qnnpack/b1/t1"));
    assert!(r
        .uncovered
        .iter()
        .any(|k| k.to_string() == "mlp-mnist/dynamic/fbgemm/b1/t1"));
    let c = outcome(&r, "mlp-mnist/dynamic/fbgemm/b32/t1", Limit::MinSpeedup);
    assert!(matches!(c.outcome, Outcome::Violated { value: Some(v), .. } if v == 1.9));
    assert_eq!(r.checks.len(), 2);
}

#[test]
fn skipped_and_na_are_reported_not_passed_and_failed_cells_violate() {
    let mut skipped = Cell::new("mlp-mnist", Method::Static, Backend::Fbgemm, 1, 1);
    skipped.state = State::Skipped;
    skipped.reason = Some("no calibration data".into());
    let mut na = measured("digit-cnn", Method::Static, Backend::Qnnpack, 1);
    na.latency_ms = None;
    na.speedup_vs_fp32 = None;
    na.not_applicable.insert(
        Measure::Speed,
        "qnnpack's NEON kernels do not run on x86_64".into(),
    );
    let t = rules("[[rule]]\nmin_speedup = 1.5\n");
    let r = gate::evaluate(&results(vec![skipped.clone(), na.clone()]), &t);
    assert_eq!(r.exit_code(), 0, "nothing violated");
    assert_eq!(r.passed(), 0, "nothing may count as passing: {r:#?}");
    let whys: Vec<String> = r
        .not_checked()
        .map(|c| match &c.outcome {
            Outcome::NotChecked { why } => why.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(whys.len(), 2);
    assert!(whys
        .iter()
        .any(|w| w.contains("skipped: no calibration data")));
    assert!(whys.iter().any(|w| w.contains("n/a: qnnpack's NEON")));

    let dir = temp_dir("gate-na");
    let tp = dir.join("t.toml");
    std::fs::write(&tp, "[[rule]]\nmin_speedup = 1.5\n").unwrap();
    let rp = write(&dir, "r.json", &results(vec![skipped, na]));
    // Nothing passed or violated: a gate that checked nothing is no pass (exit 2)...
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp)]);
    assert_exit2(&out, &["nothing was checked", "--allow-empty"]);
    // ...unless the caller says that is expected.
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp), "--allow-empty"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("NOT CHECKED") && text.contains("no calibration data"),
        "{text}"
    );

    let mut failed = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    failed.state = State::Failed;
    failed.reason = Some("unsupported op Foo in node n3".into());
    let r = gate::evaluate(
        &results(vec![failed]),
        &rules("[[rule]]\nmax_drop_pp = 1\n"),
    );
    assert_eq!(r.exit_code(), 1);
    assert!(
        matches!(&r.checks[0].outcome, Outcome::Violated { why, .. } if why.contains("unsupported op Foo"))
    );
}

#[test]
fn an_empty_results_file_or_rule_set_is_exit_2_not_a_pass() {
    let dir = temp_dir("gate-empty");
    let rp = write(&dir, "empty.json", &results(vec![]));
    let tp = dir.join("t.toml");
    std::fs::write(&tp, "[[rule]]\nmax_drop_pp = 1\n").unwrap();
    assert_exit2(
        &qbench(&["gate", s(&rp), "--thresholds", s(&tp)]),
        &["nothing was checked", "0 cells"],
    );
    let full = write(&dir, "full.json", &two_static_cells());
    let none = dir.join("none.toml");
    std::fs::write(&none, "").unwrap();
    assert_exit2(
        &qbench(&["gate", s(&full), "--thresholds", s(&none)]),
        &["nothing was checked", "0 checks"],
    );
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp), "--allow-empty"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn exit_codes_and_violation_table() {
    let dir = temp_dir("gate-exit");
    let rp = write(&dir, "results.json", &two_static_cells());
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, "[[rule]]\nmethod = \"static\"\nmax_drop_pp = 0.5\nmin_relative = 0.99\nmax_size_ratio = 0.27\nmin_speedup = 1.5\nmin_agreement = 0.99\n").unwrap();
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&ok)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("gate passed: 10 checks: 10 passed, 0 violated"),
        "{}",
        stdout(&out)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nmodel = \"digit-cnn\"\nmax_drop_pp = 0.1\n").unwrap();
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for needle in [
        "VIOLATED",
        "digit-cnn/static/fbgemm/b1/t1",
        "rule[0] (digit-cnn/*/*)",
        "max_drop_pp ≤ 0.1",
        "0.2",
        "gate FAILED",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(
        !text.contains("mlp-mnist/static/fbgemm/b1/t1 │ rule"),
        "{text}"
    );
}

#[test]
fn min_relative_is_violated_where_max_drop_pp_holds() {
    // A weak fp32 model (50 % top-1) losing 1 point: within a 1.5 pp drop limit, but only
    // 98 % of fp32, below a 0.99 relative floor. The two rules catch different failures.
    let mut weak = measured("mlp-mnist", Method::Static, Backend::Fbgemm, 1);
    set_accuracy(&mut weak, 0.50, 0.49);
    let dir = temp_dir("gate-relative");
    let rp = write(&dir, "results.json", &results(vec![weak]));
    let tp = dir.join("t.toml");
    std::fs::write(
        &tp,
        "[[rule]]\nmethod = \"static\"\nmax_drop_pp = 1.5\nmin_relative = 0.99\n",
    )
    .unwrap();
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let violated = text
        .split("VIOLATED\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no violations table:\n{text}"));
    let rows: Vec<&str> = violated
        .lines()
        .filter(|l| l.contains("mlp-mnist/static/fbgemm/b1/t1"))
        .collect();
    assert_eq!(rows.len(), 1, "exactly one violation expected:\n{text}");
    for needle in [
        "rule[0] (*/static/*)",
        "min_relative ≥ 0.99",
        "0.98",
        "accuracy.relative is 0.98 < 0.99",
    ] {
        assert!(rows[0].contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(
        text.contains("2 checks: 1 passed, 1 violated"),
        "the drop limit holds:\n{text}"
    );
}

#[test]
fn a_drop_equal_to_the_limit_passes_despite_rounding() {
    // (0.9906 − 0.9886) × 100 = 0.20000000000000018 in f64.
    let mut c = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    set_accuracy(&mut c, 0.9906, 0.9886);
    assert!(c.accuracy.as_ref().unwrap().drop_pp > 0.2);
    let r = gate::evaluate(&results(vec![c]), &rules("[[rule]]\nmax_drop_pp = 0.2\n"));
    assert_eq!(r.exit_code(), 0, "{r:#?}");
}

#[test]
fn markdown_summary_for_a_pull_request() {
    let dir = temp_dir("gate-md");
    let rp = write(&dir, "results.json", &two_static_cells());
    let tp = dir.join("t.toml");
    std::fs::write(&tp, "[[rule]]\nmodel = \"digit-cnn\"\nmax_drop_pp = 0.1\n[[rule]]\nmodel = \"nonexistent\"\nmin_speedup = 1\n").unwrap();
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp), "--format", "md"]);
    assert_eq!(out.status.code(), Some(1));
    let md = stdout(&out);
    assert!(md.starts_with("## qbench gate: failed"), "{md}");
    assert!(
        md.contains("| cell | rule | limit | value | why |\n|---|---|---|---|---|\n"),
        "{md}"
    );
    assert!(md.contains("| `digit-cnn/static/fbgemm/b1/t1` | `rule[0] (digit-cnn/*/*)` | `max_drop_pp ≤ 0.1` | 0.2 |"), "{md}");
    assert!(
        md.contains("- `rule[1] (nonexistent/*/*)` matches no cell"),
        "{md}"
    );
    assert!(
        md.contains("no rule covers `mlp-mnist/static/fbgemm/b1/t1`"),
        "{md}"
    );
}

/// A parsed `<testcase>`: its name, `failure` or `skipped` if it has such a child, and
/// that child's message.
type Case = (String, Option<String>, Option<String>);
/// A parsed `<testsuite>`: its name and cases.
type Suite = (String, Vec<Case>);
/// Attributes as (name, unescaped value).
type Attrs = Vec<(String, String)>;

/// Reads JUnit XML back: the root's attributes and the suites.
fn parse_junit(xml: &str) -> (Attrs, Vec<Suite>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut root_attrs = Vec::new();
    let mut suites: Vec<Suite> = Vec::new();
    let attrs = |e: &quick_xml::events::BytesStart| -> Attrs {
        e.attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect()
    };
    let get =
        |a: &[(String, String)], k: &str| a.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let a = attrs(&e);
                match e.name().as_ref() {
                    b"testsuites" => root_attrs = a,
                    b"testsuite" => suites.push((get(&a, "name").unwrap(), Vec::new())),
                    b"testcase" => {
                        suites
                            .last_mut()
                            .unwrap()
                            .1
                            .push((get(&a, "name").unwrap(), None, None))
                    }
                    tag @ (b"failure" | b"skipped") => {
                        let case = suites.last_mut().unwrap().1.last_mut().unwrap();
                        case.1 = Some(String::from_utf8(tag.to_vec()).unwrap());
                        case.2 = get(&a, "message");
                    }
                    other => panic!("unexpected element {}", String::from_utf8_lossy(other)),
                }
            }
            _ => {}
        }
    }
    (root_attrs, suites)
}

#[test]
fn junit_xml_parses_back_with_one_case_per_limit_and_escaped_text() {
    let mut failed = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    failed.state = State::Failed;
    failed.reason = Some("node <conv1> & \"friends\" failed".into());
    let mut skipped = Cell::new("mlp-mnist", Method::Static, Backend::Fbgemm, 1, 1);
    skipped.state = State::Skipped;
    skipped.reason = Some("no eval set".into());
    let ok = measured("digit-cnn", Method::Dynamic, Backend::Fbgemm, 1);
    let dir = temp_dir("gate-junit");
    let rp = write(&dir, "results.json", &results(vec![failed, skipped, ok]));
    let tp = dir.join("t.toml");
    std::fs::write(&tp, "[[rule]]\nmax_drop_pp = 0.5\nmin_speedup = 1.5\n").unwrap();
    let junit = dir.join("out").join("gate.xml");
    let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp), "--junit", s(&junit)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{xml}"
    );
    let (root, suites) = parse_junit(&xml);
    let get = |k: &str| root.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(
        (get("tests"), get("failures"), get("skipped")),
        ("6".into(), "2".into(), "2".into())
    );
    assert_eq!(suites.len(), 3);
    let (name, cases) = &suites[0];
    assert_eq!(name, "digit-cnn/static/fbgemm/b1/t1");
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].0, "max_drop_pp ≤ 0.5 [rule[0] (*/*/*)]");
    assert_eq!(cases[0].1.as_deref(), Some("failure"));
    assert_eq!(
        cases[0].2.as_deref(),
        Some("the cell failed: node <conv1> & \"friends\" failed"),
        "escaping must round-trip"
    );
    assert!(suites[1].1.iter().all(
        |c| c.1.as_deref() == Some("skipped") && c.2.as_deref() == Some("skipped: no eval set")
    ));
    assert!(
        suites[2].1.iter().all(|c| c.1.is_none()),
        "passing cases have no child"
    );
}

fn assert_exit2(out: &std::process::Output, names: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {err}",
        stdout(out)
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in names {
        assert!(err.contains(n), "stderr does not name {n:?}: {err}");
    }
}

#[test]
fn bad_thresholds_and_results_are_exit_2_naming_file_and_key() {
    let dir = temp_dir("gate-errors");
    let rp = write(&dir, "results.json", &two_static_cells());
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "unknown.toml",
            "[[rule]]\nmax_drop = 0.5\n",
            &["unknown.toml", "rule[0]", "max_drop"],
        ),
        (
            "top.toml",
            "[rules]\nmax_drop_pp = 0.5\n",
            &["top.toml", "rules"],
        ),
        (
            "malformed.toml",
            "[[rule]\nmax_drop_pp = 0.5\n",
            &["malformed.toml", "malformed TOML"],
        ),
        (
            "type.toml",
            "[[rule]]\nmax_drop_pp = \"half\"\n",
            &["type.toml", "rule[0].max_drop_pp"],
        ),
        (
            "typo.toml",
            "[[rule]]\nmethod = \"statc\"\nmax_drop_pp = 0.5\n",
            &["typo.toml", "rule[0].method", "statc", "static"],
        ),
        (
            "percent.toml",
            "[[rule]]\nmin_relative = 99\n",
            &["percent.toml", "rule[0].min_relative", "0.99"],
        ),
        (
            "empty.toml",
            "[[rule]]\nmodel = \"x\"\n",
            &["empty.toml", "rule[0]", "no limit"],
        ),
    ];
    for (name, text, needles) in cases {
        let tp = dir.join(name);
        std::fs::write(&tp, text).unwrap();
        let out = qbench(&["gate", s(&rp), "--thresholds", s(&tp)]);
        assert_exit2(&out, needles);
    }
    let tp = dir.join("fine.toml");
    std::fs::write(&tp, "[[rule]]\nmax_drop_pp = 0.5\n").unwrap();
    // Missing results file, non-JSON, an unknown key, a wrong type deep inside, a
    // missing thresholds file.
    let missing = dir.join("nope.json");
    assert_exit2(
        &qbench(&["gate", s(&missing), "--thresholds", s(&tp)]),
        &["nope.json"],
    );
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{\"schema\": ").unwrap();
    assert_exit2(
        &qbench(&["gate", s(&garbage), "--thresholds", s(&tp)]),
        &["garbage.json", "not valid JSON"],
    );
    let mut v = serde_json::to_value(two_static_cells()).unwrap();
    v["cells"][1]["accurcy"] = serde_json::json!(1);
    let typo = dir.join("typo.json");
    std::fs::write(&typo, v.to_string()).unwrap();
    assert_exit2(
        &qbench(&["gate", s(&typo), "--thresholds", s(&tp)]),
        &["typo.json", "cells[1]", "accurcy"],
    );
    let mut v = serde_json::to_value(two_static_cells()).unwrap();
    v["cells"][0]["latency_ms"]["median"] = serde_json::json!("fast");
    let deep = dir.join("deep.json");
    std::fs::write(&deep, v.to_string()).unwrap();
    assert_exit2(
        &qbench(&["gate", s(&deep), "--thresholds", s(&tp)]),
        &["deep.json", "cells[0].latency_ms.median"],
    );
    assert_exit2(
        &qbench(&["gate", s(&rp), "--thresholds", s(&dir.join("none.toml"))]),
        &["none.toml"],
    );
    // A usage error (clap) is 2 as well.
    assert_eq!(qbench(&["gate", s(&rp)]).status.code(), Some(2));
}

#[test]
fn the_shipped_thresholds_parse_and_hold_the_issue_targets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/thresholds.toml");
    let t = Thresholds::read(&path).unwrap();
    let limit = |model: &str, method: Method, backend: Backend, batch: u32, l: Limit| {
        let c = measured(model, method, backend, batch);
        t.resolve(&c)
            .into_iter()
            .find(|a| a.limit == l)
            .map(|a| a.bound)
    };
    // Issue 5's targets under fbgemm, issue 6's for QAT.
    assert_eq!(
        limit(
            "digit-cnn",
            Method::Static,
            Backend::Fbgemm,
            1,
            Limit::MaxDropPp
        ),
        Some(0.2)
    );
    assert_eq!(
        limit(
            "resnet-fashion",
            Method::Static,
            Backend::Fbgemm,
            1,
            Limit::MaxDropPp
        ),
        Some(0.5)
    );
    assert_eq!(
        limit(
            "mlp-mnist",
            Method::Dynamic,
            Backend::Fbgemm,
            1,
            Limit::MaxDropPp
        ),
        Some(0.2)
    );
    assert_eq!(
        limit(
            "resnet-fashion",
            Method::Qat,
            Backend::Qnnpack,
            1,
            Limit::MaxDropPp
        ),
        Some(0.2)
    );
    assert_eq!(
        limit(
            "digit-cnn",
            Method::Qat,
            Backend::Fbgemm,
            1,
            Limit::MaxDropPp
        ),
        Some(0.1)
    );
    assert_eq!(
        limit(
            "digit-cnn",
            Method::Static,
            Backend::Vnni,
            1,
            Limit::MaxSizeRatio
        ),
        Some(0.27)
    );
    assert_eq!(
        limit(
            "digit-cnn",
            Method::Fp16,
            Backend::Fbgemm,
            1,
            Limit::MaxSizeRatio
        ),
        Some(0.52)
    );
    assert_eq!(
        limit(
            "resnet50",
            Method::Static,
            Backend::Fbgemm,
            1,
            Limit::MinSpeedup
        ),
        Some(2.5)
    );
    assert_eq!(
        limit(
            "mlp-mnist",
            Method::Dynamic,
            Backend::Fbgemm,
            32,
            Limit::MinSpeedup
        ),
        Some(2.0)
    );
    // resnet50 has no eval set: no accuracy limit is set for it at all.
    assert_eq!(
        limit(
            "resnet50",
            Method::Static,
            Backend::Fbgemm,
            1,
            Limit::MaxDropPp
        ),
        None
    );
}
