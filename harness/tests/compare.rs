//! `qbench compare`: the speed noise rule on both sides of its threshold, cells from
//! different machines compared for accuracy and size only, the accuracy threshold, and
//! exit codes with and without `--fail-on-regression`.

mod common;

use common::*;
use qbench::compare::{self, Rules, Verdict};
use qbench::results::{Backend, Method, Results};

fn pair(base_ms: f64, base_spread: f64, head_ms: f64, head_spread: f64) -> (Results, Results) {
    let mut b = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    set_latency(&mut b, base_ms, base_spread);
    let mut h = b.clone();
    set_latency(&mut h, head_ms, head_spread);
    (results(vec![b]), results(vec![h]))
}

fn speed_verdict(base: &Results, head: &Results, rules: &Rules) -> Verdict {
    compare::compare(base, head, rules).cells[0]
        .speed_verdict
        .clone()
}

#[test]
fn speed_counts_only_beyond_max_of_floor_and_k_spread() {
    let rules = Rules {
        k: 1.0,
        ..Rules::default()
    }; // floor 5 %, k 1
    assert_eq!((Rules::default().floor, Rules::default().k), (0.05, 2.0));
    // Quiet runs (spread 2 %): the floor rules. +4 % is noise, +6 % a regression.
    let (b, h) = pair(10.0, 0.02, 10.4, 0.02);
    assert_eq!(speed_verdict(&b, &h, &rules), Verdict::Unchanged);
    let (b, h) = pair(10.0, 0.02, 10.6, 0.02);
    assert!(matches!(
        speed_verdict(&b, &h, &rules),
        Verdict::Regression(_)
    ));
    // Noisy head (spread 30 %): +25 % is inside k × spread, +35 % beyond it.
    let (b, h) = pair(10.0, 0.02, 12.5, 0.30);
    assert_eq!(speed_verdict(&b, &h, &rules), Verdict::Unchanged);
    let (b, h) = pair(10.0, 0.02, 13.5, 0.30);
    assert!(
        matches!(speed_verdict(&b, &h, &rules), Verdict::Regression(w) if w.contains("+35.0 %") && w.contains("30.0 %"))
    );
    // The larger spread counts whichever run has it; k scales it.
    let (b, h) = pair(10.0, 0.30, 12.5, 0.02);
    assert_eq!(speed_verdict(&b, &h, &rules), Verdict::Unchanged);
    let k2 = Rules { k: 2.0, ..rules };
    let (b, h) = pair(10.0, 0.02, 15.0, 0.30);
    assert_eq!(speed_verdict(&b, &h, &k2), Verdict::Unchanged);
    // Faster beyond the band is an improvement, never a regression.
    let (b, h) = pair(10.0, 0.02, 8.0, 0.02);
    assert!(matches!(
        speed_verdict(&b, &h, &rules),
        Verdict::Improvement(_)
    ));
}

#[test]
fn different_machines_compare_accuracy_and_size_only() {
    let (b, mut h) = pair(10.0, 0.02, 30.0, 0.02); // 3x slower: would be a regression
    h.runs[0].machine = machine("Intel Xeon");
    h.machine = h.common_machine();
    let cmp = compare::compare(&b, &h, &Rules::default());
    let c = &cmp.cells[0];
    assert!(c.speed.is_none());
    assert!(
        matches!(&c.speed_verdict, Verdict::NotCompared(w) if w.contains("different machines") && w.contains("Intel Xeon"))
    );
    assert_eq!(cmp.regression_count(), 0);
    // Accuracy still counts across machines.
    let mut worse = h.clone();
    set_accuracy(&mut worse.cells[0], 0.99, 0.985);
    let cmp = compare::compare(&b, &worse, &Rules::default());
    assert_eq!(cmp.regression_count(), 1);
    assert!(matches!(&cmp.cells[0].accuracy, Verdict::Regression(w) if w.contains("-0.30 pp")));

    let dir = temp_dir("compare-machines");
    let (bp, hp) = (write(&dir, "base.json", &b), write(&dir, "head.json", &h));
    let out = qbench(&["compare", s(&bp), s(&hp), "--fail-on-regression"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("speed not compared: different machines"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn accuracy_threshold_is_configurable_and_exit_codes_follow_the_flag() {
    let (b, mut h) = pair(10.0, 0.02, 10.0, 0.02);
    set_accuracy(&mut h.cells[0], 0.99, 0.9865); // base 0.988: a 0.15 pp drop
    let dir = temp_dir("compare-acc");
    let (bp, hp) = (write(&dir, "base.json", &b), write(&dir, "head.json", &h));
    let out = qbench(&["compare", s(&bp), s(&hp), "--fail-on-regression"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("REGRESSION: accuracy -0.15 pp"),
        "{}",
        stdout(&out)
    );
    let out = qbench(&[
        "compare",
        s(&bp),
        s(&hp),
        "--fail-on-regression",
        "--acc-pp",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Without the flag a regression is reported but the exit code is 0.
    let out = qbench(&["compare", s(&bp), s(&hp)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("1 regression(s) in 1 compared cell(s)"));
    // Speed through the CLI, both sides of --floor.
    let (b, h) = pair(10.0, 0.02, 10.8, 0.02);
    let (bp, hp) = (write(&dir, "b2.json", &b), write(&dir, "h2.json", &h));
    let out = qbench(&["compare", s(&bp), s(&hp), "--fail-on-regression"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = qbench(&[
        "compare",
        s(&bp),
        s(&hp),
        "--fail-on-regression",
        "--floor",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Errors are 2 and name the file.
    let out = qbench(&["compare", s(&bp), s(&dir.join("missing.json"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.json"));
    let out = qbench(&["compare", s(&bp), s(&hp), "--floor", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn size_growth_failures_and_missing_cells() {
    let (b, mut h) = pair(10.0, 0.02, 10.0, 0.02);
    h.cells[0].size_bytes = Some(27_000); // +3.8 %
    let extra = measured("mlp-mnist", Method::Dynamic, Backend::Fbgemm, 1);
    h.cells.push(extra);
    let cmp = compare::compare(&b, &h, &Rules::default());
    assert!(matches!(&cmp.cells[0].size, Verdict::Regression(w) if w.contains("+3.85 %")));
    assert_eq!(cmp.only_in_head.len(), 1);
    let mut failed = b.clone();
    failed.cells[0].state = qbench::results::State::Failed;
    failed.cells[0].reason = Some("boom".into());
    let cmp = compare::compare(&b, &failed, &Rules::default());
    assert!(matches!(&cmp.cells[0].state, Verdict::Regression(w) if w.contains("boom")));
}
