//! `qbench compare`: the speed noise rule on both sides of its threshold, cells from
//! different machines compared for accuracy and size only, the accuracy threshold, lost
//! cells (measured in base; failed, skipped, absent or without accuracy in head) against
//! new and never-measured ones, and exit codes with and without `--fail-on-regression`.

mod common;

use common::*;
use qbench::ci::compare::{self, Rules, Verdict};
use qbench::results::{Backend, Cell, Measure, Method, Results, State};
use std::path::Path;

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

/// A cell timed with few samples (in either run) gets the wider band; the same change
/// with many samples is judged by floor and spread alone.
#[test]
fn few_sample_cells_get_the_wider_band() {
    let rules = Rules::default();
    assert_eq!((rules.few_samples, rules.few_samples_floor), (20, 0.35));
    let with_samples = |mut r: Results, n: usize| {
        r.cells[0].latency_ms.as_mut().unwrap().samples = n;
        r
    };
    // +30 % with 2 % spreads: a regression at 100 samples, noise at 11 in either run.
    let (b, h) = pair(10.0, 0.02, 13.0, 0.02);
    assert!(matches!(
        speed_verdict(&b, &h, &rules),
        Verdict::Regression(_)
    ));
    assert_eq!(
        speed_verdict(&with_samples(b.clone(), 11), &h, &rules),
        Verdict::Unchanged
    );
    assert_eq!(
        speed_verdict(&b, &with_samples(h.clone(), 11), &rules),
        Verdict::Unchanged
    );
    // Beyond 35 % it is a regression whatever the sample count.
    let (b, h) = pair(10.0, 0.02, 14.0, 0.02);
    assert!(matches!(
        speed_verdict(&with_samples(b, 11), &with_samples(h, 11), &rules),
        Verdict::Regression(w) if w.contains("35.0 %")
    ));
    // At the threshold the narrow band applies again.
    let (b, h) = pair(10.0, 0.02, 13.0, 0.02);
    assert!(matches!(
        speed_verdict(&with_samples(b, 20), &with_samples(h, 20), &rules),
        Verdict::Regression(_)
    ));
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
    assert!(
        stdout(&out).contains("1 regression(s) (0 lost cell(s)) in 1 compared cell(s)"),
        "{}",
        stdout(&out)
    );
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
    assert!(matches!(&cmp.cells[0].state, Verdict::Lost(w) if w.contains("failed in head: boom")));
    assert_eq!((cmp.regression_count(), cmp.lost_count()), (1, 1));
}

/// Runs `compare --fail-on-regression` on a written pair; returns (exit code, stdout).
fn compare_cli(dir: &Path, base: &Results, head: &Results) -> (Option<i32>, String) {
    let (bp, hp) = (write(dir, "base.json", base), write(dir, "head.json", head));
    let out = qbench(&["compare", s(&bp), s(&hp), "--fail-on-regression"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    (out.status.code(), stdout(&out))
}

/// `results` with a grid wide enough for MiniLM, QAT and vnni cells.
fn wide(cells: Vec<Cell>) -> Results {
    let mut r = results(cells);
    r.config.models.push("minilm".into());
    r.config.methods = qbench::results::Method::ALL.to_vec();
    r.config.backends = qbench::results::Backend::ALL.to_vec();
    r
}

fn minilm(backend: Backend) -> Cell {
    measured("minilm", Method::Dynamic, backend, 1)
}

#[test]
fn a_cell_measured_in_base_and_skipped_in_head_is_lost() {
    // A nightly without the MiniLM download: the same grid, MiniLM's cells skipped.
    let keep = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    let base = wide(vec![
        keep.clone(),
        minilm(Backend::Fbgemm),
        minilm(Backend::Vnni),
    ]);
    let mut head = base.clone();
    for c in &mut head.cells[1..] {
        *c = Cell::new("minilm", Method::Dynamic, c.backend, 1, 1);
        c.state = State::Skipped;
        c.reason = Some("minilm is not fetched (`qbench fetch minilm`)".into());
    }
    let cmp = compare::compare(&base, &head, &Rules::default());
    assert_eq!((cmp.regression_count(), cmp.lost_count()), (2, 2));
    assert!(cmp.cells.iter().filter(|c| c.is_lost()).all(|c| matches!(
        &c.state,
        Verdict::Lost(w) if w.contains("measured in base, skipped in head: minilm is not fetched")
    )));
    let dir = temp_dir("compare-lost-skipped");
    let (code, text) = compare_cli(&dir, &base, &head);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("LOST: measured in base, skipped in head: minilm is not fetched"),
        "{text}"
    );
    assert!(text.contains("2 regression(s) (2 lost cell(s))"), "{text}");
    // Without the flag the loss is reported and the exit code is 0.
    let (bp, hp) = (dir.join("base.json"), dir.join("head.json"));
    let out = qbench(&["compare", s(&bp), s(&hp)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("LOST"), "{}", stdout(&out));
}

#[test]
fn a_cell_measured_in_base_and_absent_in_head_is_lost() {
    let keep = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    let base = wide(vec![keep.clone(), minilm(Backend::Fbgemm)]);
    let head = wide(vec![keep]);
    let cmp = compare::compare(&base, &head, &Rules::default());
    assert_eq!(cmp.absent_in_head.len(), 1);
    assert_eq!(cmp.only_in_base, cmp.absent_in_head);
    assert_eq!((cmp.regression_count(), cmp.lost_count()), (1, 1));
    let (code, text) = compare_cli(&temp_dir("compare-lost-absent"), &base, &head);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("LOST: minilm/dynamic/fbgemm/b1/t1: measured in base, absent in head"),
        "{text}"
    );
}

#[test]
fn accuracy_measured_in_base_and_absent_in_head_is_lost() {
    let base = wide(vec![measured(
        "digit-cnn",
        Method::Static,
        Backend::Fbgemm,
        1,
    )]);
    let mut head = base.clone();
    let c = &mut head.cells[0];
    c.accuracy = None;
    c.agreement = None;
    for m in [Measure::Accuracy, Measure::Agreement] {
        c.not_applicable
            .insert(m, "digit-cnn has no eval set".into());
    }
    let cmp = compare::compare(&base, &head, &Rules::default());
    assert_eq!(cmp.cells[0].state, Verdict::Unchanged);
    assert!(matches!(
        &cmp.cells[0].accuracy,
        Verdict::Lost(w) if w.contains("accuracy measured in base, absent in head (n/a: digit-cnn has no eval set)")
    ));
    assert_eq!((cmp.regression_count(), cmp.lost_count()), (1, 1));
    let (code, text) = compare_cli(&temp_dir("compare-lost-accuracy"), &base, &head);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("LOST: accuracy measured in base, absent in head"),
        "{text}"
    );
    // The other way round (accuracy new in head) is not a regression.
    let cmp = compare::compare(&head, &base, &Rules::default());
    assert_eq!(cmp.regression_count(), 0);
    assert!(matches!(cmp.cells[0].accuracy, Verdict::NotCompared(_)));
}

#[test]
fn new_cells_and_cells_never_measured_are_reported_not_failed() {
    let not_measured = |model: &str, method: Method, state: State, reason: &str| {
        let mut c = Cell::new(model, method, Backend::Fbgemm, 1, 1);
        c.state = state;
        c.reason = Some(reason.into());
        c
    };
    let keep = measured("digit-cnn", Method::Static, Backend::Fbgemm, 1);
    // Base: a skipped and a failed cell that head drops, and a skipped cell head measures.
    let base = wide(vec![
        keep.clone(),
        not_measured("resnet50", Method::Qat, State::Skipped, "no training split"),
        not_measured("mlp-mnist", Method::Static, State::Failed, "boom"),
        not_measured("digit-cnn", Method::Qat, State::Skipped, "not built"),
    ]);
    let head = wide(vec![
        keep,
        measured("digit-cnn", Method::Qat, Backend::Fbgemm, 1),
        measured("mlp-mnist", Method::Dynamic, Backend::Fbgemm, 1),
    ]);
    let cmp = compare::compare(&base, &head, &Rules::default());
    assert_eq!(
        (cmp.regression_count(), cmp.lost_count()),
        (0, 0),
        "{cmp:#?}"
    );
    assert!(cmp.absent_in_head.is_empty());
    assert_eq!((cmp.only_in_base.len(), cmp.only_in_head.len()), (2, 1));
    let qat = cmp
        .cells
        .iter()
        .find(|c| c.key.to_string() == "digit-cnn/qat/fbgemm/b1/t1")
        .unwrap();
    assert!(matches!(&qat.state, Verdict::Improvement(w) if w.contains("skipped in base")));
    let (code, text) = compare_cli(&temp_dir("compare-new"), &base, &head);
    assert_eq!(code, Some(0), "{text}");
    for needle in [
        "new in head: mlp-mnist/dynamic/fbgemm/b1/t1",
        "only in base (not measured there): resnet50/qat/fbgemm/b1/t1",
        "only in base (not measured there): mlp-mnist/static/fbgemm/b1/t1",
        "better: skipped in base, measured in head",
        "0 regression(s) (0 lost cell(s))",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!text.contains("LOST"), "{text}");
}
