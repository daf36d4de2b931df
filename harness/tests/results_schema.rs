//! The results schema (`qbench.results/1`): a file built through the types round-trips,
//! invalid files are refused naming the file and key, the shipped sweep configs parse;
//! `qbench merge` joins shards and refuses duplicates and mismatches; `qbench baseline
//! update` refuses unfinished or failed runs and reports what changed.

mod common;

use common::*;
use qbench::results::{Backend, Cell, Measure, Method, Results, State, SweepConfig};
use std::path::Path;

fn err_of(r: &Results) -> String {
    let text = serde_json::to_string(r).unwrap();
    format!(
        "{:#}",
        Results::parse(&text, Path::new("runs/x/results.json")).unwrap_err()
    )
}

#[test]
fn a_file_built_through_the_types_round_trips() {
    let mut na = measured("resnet50", Method::Static, Backend::Qnnpack, 1);
    na.accuracy = None;
    na.agreement = None;
    na.not_applicable
        .insert(Measure::Accuracy, "no eval set".into());
    na.not_applicable
        .insert(Measure::Agreement, "no eval set".into());
    let r = results(vec![
        measured("digit-cnn", Method::Static, Backend::Fbgemm, 1),
        na,
    ]);
    let dir = temp_dir("schema-roundtrip");
    let p = dir.join("results.json");
    r.write(&p).unwrap();
    let back = Results::read(&p).unwrap();
    assert_eq!(back, r);
    // Absent measurements are explicit nulls under their stable names.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["schema"], "qbench.results/1");
    assert_eq!(v["cells"][1]["accuracy"], serde_json::Value::Null);
    assert_eq!(v["cells"][1]["not_applicable"]["accuracy"], "no eval set");
    assert_eq!(v["cells"][0]["latency_ms"]["median"], 2.0);
    assert_eq!(
        v["cells"][0]["accuracy"]["drop_pp"]
            .as_f64()
            .unwrap()
            .round(),
        0.0
    );
    assert_eq!(v["runs"][0]["machine"]["cpu_model"], "AMD EPYC");
}

#[test]
fn invalid_files_are_refused_naming_file_and_key() {
    let good = || {
        results(vec![measured(
            "digit-cnn",
            Method::Static,
            Backend::Fbgemm,
            1,
        )])
    };
    let mut r = good();
    r.cells[0].accuracy.as_mut().unwrap().drop_pp = 0.5;
    let e = err_of(&r);
    assert!(
        e.contains("runs/x/results.json")
            && e.contains("cells[0]")
            && e.contains("accuracy.drop_pp"),
        "{e}"
    );
    let mut r = good();
    r.cells[0].latency_ms = None;
    let e = err_of(&r);
    assert!(e.contains("not_applicable.speed"), "{e}");
    let mut r = good();
    r.cells[0] = Cell::new("digit-cnn", Method::Static, Backend::Fbgemm, 1, 1);
    r.cells[0].state = State::Skipped;
    assert!(err_of(&r).contains("`reason` is missing"));
    let mut r = good();
    r.cells.push(r.cells[0].clone());
    let e = err_of(&r);
    assert!(
        e.contains("cells[1]") && e.contains("same cell as `cells[0]`"),
        "{e}"
    );
    let mut r = good();
    r.cells[0].model = "bert".into();
    let e = err_of(&r);
    assert!(
        e.contains("cells[0].model") && e.contains("config.models"),
        "{e}"
    );
    let mut r = good();
    r.cells[0].run = 3;
    assert!(err_of(&r).contains("`run` is 3"));
    let mut r = good();
    r.runs[0].started_at = "yesterday".into();
    assert!(err_of(&r).contains("runs[0].started_at"));
    let mut r = good();
    r.schema = "qbench.results/2".into();
    let e = err_of(&r);
    assert!(
        e.contains("key `schema`") && e.contains("qbench.results/2"),
        "{e}"
    );
    let mut v = serde_json::to_value(good()).unwrap();
    v["cells"][0]["method"] = serde_json::json!("int4");
    let e = format!(
        "{:#}",
        Results::parse(&v.to_string(), Path::new("r.json")).unwrap_err()
    );
    assert!(e.contains("cells[0].method") && e.contains("int4"), "{e}");
}

#[test]
fn the_shipped_sweep_config_parses_and_bad_keys_are_named() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let c = SweepConfig::read_toml(&root.join("ci/nightly.toml")).unwrap();
    assert!(c.models.contains(&"resnet-fashion".to_owned()));
    assert_eq!(c.methods.len(), 5);
    let dir = temp_dir("schema-config");
    let p = dir.join("sweep.toml");
    let text = std::fs::read_to_string(root.join("ci/nightly.toml")).unwrap();
    std::fs::write(&p, format!("{text}\nbatches = [1]\n")).unwrap();
    let e = format!("{:#}", SweepConfig::read_toml(&p).unwrap_err());
    assert!(e.contains("sweep.toml") && e.contains("batches"), "{e}");
    std::fs::write(&p, text.replace("\"static\"", "\"statik\"")).unwrap();
    let e = format!("{:#}", SweepConfig::read_toml(&p).unwrap_err());
    assert!(
        e.contains("sweep.toml") && e.contains("methods") && e.contains("statik"),
        "{e}"
    );
    std::fs::write(&p, text.replace("batch = [1, 32]", "batch = [1, 1]")).unwrap();
    let e = format!("{:#}", SweepConfig::read_toml(&p).unwrap_err());
    assert!(e.contains("`batch` lists 1 twice"), "{e}");
}

#[test]
fn the_top_level_machine_is_the_runs_fingerprint_and_older_files_get_it_from_their_runs() {
    let r = results(vec![measured(
        "digit-cnn",
        Method::Static,
        Backend::Fbgemm,
        1,
    )]);
    let mut v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["machine"]["cpu_model"], "AMD EPYC");
    // A file written before the key existed reads, with the machine of its runs.
    v.as_object_mut().unwrap().remove("machine");
    let old = Results::parse(&v.to_string(), Path::new("old.json")).unwrap();
    assert_eq!(old.machine, Some(machine("AMD EPYC")));
    assert_eq!(old, r);
    // A `machine` the runs contradict is refused, naming the key and both machines.
    let mut wrong = r.clone();
    wrong.machine = Some(machine("Intel Xeon"));
    let e = err_of(&wrong);
    assert!(
        e.contains("runs/x/results.json")
            && e.contains("key `machine`")
            && e.contains("Intel Xeon")
            && e.contains("AMD EPYC"),
        "{e}"
    );
    let mut null = r.clone();
    null.machine = None;
    assert!(
        err_of(&null).contains("key `machine` is null"),
        "{}",
        err_of(&null)
    );
    // Runs on two machines: only null is right.
    let mut two = r.clone();
    two.runs.push(run("Ampere Altra", None));
    two.machine = Some(machine("AMD EPYC"));
    assert!(err_of(&two).contains("must be null"), "{}", err_of(&two));
    two.machine = two.common_machine();
    assert_eq!(two.machine, None);
    Results::parse(&serde_json::to_string(&two).unwrap(), Path::new("two.json")).unwrap();

    // The committed baseline predates the key: every reader still takes it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let baseline = root.join("reports/baseline.json");
    let b = Results::read(&baseline).unwrap();
    assert!(b.runs.len() == 1 && b.machine.as_ref() == Some(&b.runs[0].machine));
    let out = qbench(&["compare", s(&baseline), s(&baseline)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let thresholds = root.join("ci/thresholds.toml");
    let out = qbench(&["gate", s(&baseline), "--thresholds", s(&thresholds)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = qbench(&["report", s(&baseline), "--format", "md"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = temp_dir("schema-machine-merge");
    let merged = dir.join("m.json");
    let out = qbench(&["merge", s(&baseline), "-o", s(&merged)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(
        v["machine"]["cpu_model"], "AMD EPYC",
        "written out by merge"
    );
}

/// Two shards on two machines: digit-cnn/fbgemm and digit-cnn/qnnpack.
fn shards() -> (Results, Results) {
    let mut a = results(vec![
        measured("digit-cnn", Method::Fp32, Backend::Fbgemm, 1),
        measured("digit-cnn", Method::Static, Backend::Fbgemm, 1),
    ]);
    a.runs = vec![run("AMD EPYC", Some((0, 2)))];
    a.machine = a.common_machine();
    let mut b = results(vec![
        measured("digit-cnn", Method::Fp32, Backend::Qnnpack, 1),
        measured("digit-cnn", Method::Static, Backend::Qnnpack, 1),
    ]);
    b.runs = vec![run("Ampere Altra", Some((1, 2)))];
    b.machine = b.common_machine();
    (a, b)
}

#[test]
fn merge_joins_disjoint_shards_keeping_each_cells_machine() {
    let (a, b) = shards();
    let dir = temp_dir("merge-ok");
    let (pa, pb) = (write(&dir, "a.json", &a), write(&dir, "b.json", &b));
    let out_path = dir.join("all").join("results.json");
    let out = qbench(&["merge", s(&pa), s(&pb), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = Results::read(&out_path).unwrap();
    assert_eq!((m.runs.len(), m.cells.len()), (2, 4));
    let qnn = m
        .cells
        .iter()
        .find(|c| c.backend == Backend::Qnnpack && c.method == Method::Static)
        .unwrap();
    assert_eq!(m.machine_of(qnn).cpu_model, "Ampere Altra");
    assert_eq!(m.machine_of(&m.cells[0]).cpu_model, "AMD EPYC");
    // Two machines: no common fingerprint, so the top-level `machine` is null.
    assert_eq!(m.machine, None);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(v["machine"], serde_json::Value::Null);
    assert!(!stderr(&out).contains("missing"), "{}", stderr(&out));
    // One shard of two: merged, with a warning naming the missing shard.
    let half = dir.join("half.json");
    let out = qbench(&["merge", s(&pa), "-o", s(&half)]);
    assert_eq!(out.status.code(), Some(0));
    // One machine: it is the top-level `machine`.
    let h = Results::read(&half).unwrap();
    assert_eq!(h.machine.map(|m| m.cpu_model).as_deref(), Some("AMD EPYC"));
    assert!(
        stderr(&out).contains("shard(s) 1 of 2 are missing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn merge_refuses_duplicates_and_mismatches() {
    let dir = temp_dir("merge-refuse");
    let (a, b) = shards();
    let pa = write(&dir, "a.json", &a);
    let out_path = dir.join("out.json");
    // The same cell in two files (a shard run twice under different shard ids).
    let mut dup = a.clone();
    dup.runs[0].shard = Some(qbench::results::Shard { index: 1, count: 2 });
    let pd = write(&dir, "dup.json", &dup);
    let out = qbench(&["merge", s(&pa), s(&pd), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("digit-cnn/fp32/fbgemm/b1/t1") && e.contains("a.json") && e.contains("dup.json"),
        "{e}"
    );
    assert!(!out_path.exists(), "nothing written on refusal");
    // The same shard twice.
    let out = qbench(&["merge", s(&pa), s(&pa), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("shard 0/2 appears in both"),
        "{}",
        stderr(&out)
    );
    // A different config (seed) and a different build.
    let mut other = b.clone();
    other.config.seed = 8;
    let po = write(&dir, "seed.json", &other);
    let out = qbench(&["merge", s(&pa), s(&po), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("seed.json") && stderr(&out).contains("`config.seed`: 7 vs 8"),
        "{}",
        stderr(&out)
    );
    let mut other = b.clone();
    other.git_commit = "fff".into();
    let po = write(&dir, "commit.json", &other);
    let out = qbench(&["merge", s(&pa), s(&po), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("commit.json") && stderr(&out).contains("git_commit"),
        "{}",
        stderr(&out)
    );
    let mut other = b;
    other.runs[0].shard = Some(qbench::results::Shard { index: 1, count: 3 });
    let po = write(&dir, "count.json", &other);
    let out = qbench(&["merge", s(&pa), s(&po), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("3 shards") || stderr(&out).contains("2 shards"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn baseline_update_validates_writes_and_reports_changes() {
    let dir = temp_dir("baseline");
    let to = dir.join("reports").join("baseline.json");
    let first = results(vec![measured(
        "digit-cnn",
        Method::Static,
        Backend::Fbgemm,
        1,
    )]);
    let p1 = write(&dir, "r1.json", &first);
    let out = qbench(&["baseline", "update", "--from", s(&p1), "--to", s(&to)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("there was no baseline before"));
    assert_eq!(Results::read(&to).unwrap(), first);

    let mut second = first.clone();
    set_accuracy(&mut second.cells[0], 0.99, 0.987);
    second
        .cells
        .push(measured("mlp-mnist", Method::Dynamic, Backend::Fbgemm, 1));
    let p2 = write(&dir, "r2.json", &second);
    let out = qbench(&["baseline", "update", "--from", s(&p2), "--to", s(&to)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("added mlp-mnist/dynamic/fbgemm/b1/t1"),
        "{text}"
    );
    assert!(
        text.contains("digit-cnn/static/fbgemm/b1/t1: accuracy -0.10 pp"),
        "{text}"
    );

    // Refused: an unfinished run, a failed cell; the baseline stays as it was.
    let mut unfinished = second.clone();
    unfinished.runs[0].finished_at = None;
    let pu = write(&dir, "unfinished.json", &unfinished);
    let out = qbench(&["baseline", "update", "--from", s(&pu), "--to", s(&to)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("runs[0].finished_at"),
        "{}",
        stderr(&out)
    );
    let mut failed = second.clone();
    failed.cells[1].state = State::Failed;
    failed.cells[1].reason = Some("oops".into());
    let pf = write(&dir, "failed.json", &failed);
    let out = qbench(&["baseline", "update", "--from", s(&pf), "--to", s(&to)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("mlp-mnist/dynamic/fbgemm/b1/t1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(Results::read(&to).unwrap(), second);
}
