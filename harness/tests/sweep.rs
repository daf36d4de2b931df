//! `qbench sweep` and `qbench report` through the binary: plan validation, a real quick
//! sweep of digit-cnn validated by the results schema, resume, and each report format
//! parsed back.

mod common;

use common::{qbench, stderr, stdout, temp_dir};
use qbench::results::{Method, Results, State};
use std::path::Path;

const QUICK: &[&str] = &[
    "sweep",
    "--quick",
    "--models",
    "digit-cnn",
    "--methods",
    "fp32,dynamic,static",
    "--backends",
    "fbgemm",
    "--batch",
    "1",
];

fn sweep(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = QUICK.to_vec();
    args.extend_from_slice(extra);
    let o = qbench(&[args.as_slice(), &["--out", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    o
}

#[test]
fn dry_run_prints_the_plan_with_skips_and_does_no_work() {
    let dir = temp_dir("sweep-dry");
    let out = dir.join("run");
    let o = qbench(&[
        "sweep",
        "--dry-run",
        "--models",
        "digit-cnn",
        "--backends",
        "fbgemm,qnnpack",
        "--batch",
        "1,32",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // 1 model × 5 methods × 2 backends × 2 batches.
    assert!(text.contains("sweep plan: 20 cells"), "{text}");
    assert!(text.contains("digit-cnn/static/qnnpack/b32/t1"), "{text}");
    // QAT runs on every model with a training split.
    assert!(text.contains("digit-cnn/qat/fbgemm/b1/t1\n"), "{text}");
    assert!(!out.exists(), "a dry run wrote {}", out.display());
}

#[test]
fn bad_plans_fail_at_once_naming_the_flag_and_the_valid_names() {
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--methods", "fp32,int4"],
            &["--methods", "\"int4\"", "fp32, fp16, dynamic, static, qat"],
        ),
        (
            &["--backends", "arm"],
            &["--backends", "\"arm\"", "fbgemm, vnni, qnnpack"],
        ),
        (
            &["--models", "no-such-model"],
            &["no-such-model", "digit-cnn"],
        ),
        (&["--shard", "4/4"], &["--shard", "0-based"]),
        (&["--batch", "0"], &["batch", "0"]),
    ];
    for (flags, wanted) in cases {
        let o = qbench(&[&["sweep", "--dry-run"], flags].concat());
        assert!(!o.status.success(), "{flags:?} was accepted");
        let err = stderr(&o);
        for w in wanted {
            assert!(err.contains(w), "{flags:?}: {w:?} not in {err}");
        }
    }
    let dir = temp_dir("sweep-badcfg");
    let cfg = dir.join("s.toml");
    std::fs::write(
        &cfg,
        "models = [\"digit-cnn\"]\nmethods = [\"fp32\"]\nbogus = 1\n",
    )
    .unwrap();
    let o = qbench(&["sweep", "--dry-run", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("s.toml") && stderr(&o).contains("bogus"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn quick_sweep_writes_valid_results_and_reports_and_resume_completes_only_the_rest() {
    let dir = temp_dir("sweep-quick");
    let out = dir.join("run");
    let o = sweep(&out, &[]);
    // Not on a terminal, progress is plain lines: the group, then each step.
    let log = stderr(&o);
    for line in [
        "digit-cnn / fbgemm: 3 cells",
        "  quantizing: static",
        "  timing batch 1",
        "  tract",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    assert!(!log.contains('\r'), "no bar redraws in a log: {log}");
    let path = out.join("results.json");
    let r = Results::read(&path).expect("results.json validates");
    assert_eq!(r.cells.len(), 3);
    assert!(r.runs[0].finished_at.is_some());
    assert_eq!(r.config.eval_limit, Some(500), "--quick evaluates a slice");
    let cell = |m: Method| r.cells.iter().find(|c| c.method == m).unwrap();
    for m in [Method::Fp32, Method::Dynamic, Method::Static] {
        let c = cell(m);
        assert_eq!(c.state, State::Measured, "{m:?}: {:?}", c.reason);
        let acc = c.accuracy.as_ref().unwrap();
        assert!(acc.fp32 > 0.95, "digit-cnn fp32 top-1 {}", acc.fp32);
        assert!(acc.drop_pp.abs() < 2.0, "{m:?} drops {} pp", acc.drop_pp);
        assert_eq!(acc.samples, 500);
        assert!(c.agreement.unwrap() > 0.97);
        assert!(c.latency_ms.as_ref().unwrap().median > 0.0);
        assert!(c.kernel.is_some());
    }
    assert_eq!(cell(Method::Fp32).size_ratio, Some(1.0));
    assert_eq!(cell(Method::Fp32).speedup_vs_fp32, Some(1.0));
    // Static quantizes every conv and linear layer: about a quarter of fp32. Dynamic
    // quantizes only Gemm/MatMul (as PyTorch's default), so convs stay fp32.
    let s = cell(Method::Static);
    assert!(
        s.size_ratio.unwrap() < 0.3,
        "static size ratio {:?}",
        s.size_ratio
    );
    assert!(cell(Method::Dynamic).size_ratio.unwrap() < 1.0);
    assert!(s.sqnr.as_ref().unwrap().worst_db > 10.0);
    assert!(s.quantize_s.unwrap() > 0.0);
    for f in ["report.md", "report.html", "results.csv"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| Method | Size | Speed | Accuracy |"), "{md}");
    assert!(md.contains("| fp32 | 1.00x"), "{md}");

    // A second sweep into the same directory refuses rather than overwriting.
    let mut again: Vec<&str> = QUICK.to_vec();
    again.extend(["--out", out.to_str().unwrap()]);
    let o = qbench(&again);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));

    // Interrupt: drop the static cell and the finish time, as a killed run leaves them.
    let mut cut = r.clone();
    cut.cells.retain(|c| c.method != Method::Static);
    cut.runs[0].finished_at = None;
    cut.write(&path).unwrap();
    let mut resume: Vec<&str> = QUICK.to_vec();
    resume.extend(["--resume", out.to_str().unwrap()]);
    let o = qbench(&resume);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 cells planned, 2 already done, 1 to run"),
        "{}",
        stderr(&o)
    );
    let back = Results::read(&path).unwrap();
    assert_eq!(back.runs.len(), 2, "the resuming process is a second run");
    assert_eq!(back.cells.len(), 3);
    for c in &back.cells {
        if c.method == Method::Static {
            assert_eq!(c.run, 1);
        } else {
            // Kept as they were, measured by the first run.
            assert_eq!(Some(c), r.cells.iter().find(|o| o.key() == c.key()));
        }
    }

    // Resume with a different grid is refused.
    let o = qbench(&[
        "sweep",
        "--quick",
        "--models",
        "digit-cnn",
        "--methods",
        "fp32",
        "--backends",
        "fbgemm",
        "--batch",
        "1",
        "--resume",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("config differs"), "{}", stderr(&o));

    // Report formats parse back.
    let report = |f: &str| {
        let o = qbench(&["report", path.to_str().unwrap(), "--format", f]);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
        stdout(&o)
    };
    let json = report("json");
    let parsed = Results::parse(&json, Path::new("stdout")).unwrap();
    assert_eq!(parsed, back);
    let csv = report("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header + 3 rows: {csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header, qbench::report::CSV_HEADER);
    for row in &lines[1..] {
        // No field of these rows holds a comma, so a plain split is the parse.
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), header.len(), "{row}");
        assert_eq!(fields[0], "digit-cnn");
        assert_eq!(fields[5], "measured");
        let acc: f64 = fields[16].parse().unwrap();
        assert!(acc > 0.95);
    }
    let html = report("html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<svg") && html.contains("<table>"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    // Each inline plot is well-formed XML (an SVG a browser renders, not tag soup).
    let mut plots = 0;
    for piece in html.split("<svg").skip(1) {
        let svg = format!("<svg{}</svg>", piece.split("</svg>").next().unwrap());
        let mut reader = quick_xml::Reader::from_str(&svg);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("plot {plots} is not well-formed: {e}\n{svg}"),
            }
        }
        assert!(svg.contains("<rect"), "{svg}");
        plots += 1;
    }
    assert!(plots >= 3, "{plots} plots");
    for title in [
        "digit-cnn: speedup vs accuracy drop",
        "digit-cnn: median latency (ms), batch 1",
        "Per-layer SQNR (dB): static / fbgemm",
    ] {
        assert!(html.contains(&format!("aria-label=\"{title}\"")), "{title}");
    }
    assert!(report("md").contains("## digit-cnn — fbgemm, batch 1"));
    let table = report("table");
    assert!(
        table.contains("digit-cnn — fbgemm, batch 1, 1 thread"),
        "{table}"
    );
    // One tabled row per cell, its method in the first column.
    for c in &back.cells {
        let row = format!("│ {:<8}│", c.method.as_str());
        assert!(table.contains(&row), "{row:?} in {table}");
    }

    let o = qbench(&["report", path.to_str().unwrap(), "--format", "pdf"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("md, csv, json, html"), "{}", stderr(&o));
}

#[test]
fn shards_split_by_model_and_backend_and_merge_into_the_whole_grid() {
    let dir = temp_dir("sweep-shard");
    let grid = [
        "sweep",
        "--quick",
        "--models",
        "digit-cnn",
        "--methods",
        "fp32,static",
        "--backends",
        "fbgemm,qnnpack",
        "--batch",
        "1",
    ];
    let mut files = Vec::new();
    for shard in ["0/2", "1/2"] {
        let out = dir.join(shard.replace('/', "-"));
        let o = qbench(
            &[
                &grid[..],
                &["--shard", shard, "--out", out.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        files.push(out.join("results.json"));
    }
    let a = Results::read(&files[0]).unwrap();
    let b = Results::read(&files[1]).unwrap();
    // Each shard holds one whole (model, backend) pair, its own fp32 baseline included.
    assert!(a.cells.iter().all(|c| c.backend.as_str() == "fbgemm"));
    assert!(b.cells.iter().all(|c| c.backend.as_str() == "qnnpack"));
    assert_eq!((a.cells.len(), b.cells.len()), (2, 2));
    // qnnpack's NEON is absent on x86-64: int8 speed n/a with the reason, accuracy exact.
    if cfg!(target_arch = "x86_64") {
        let s = b.cells.iter().find(|c| c.method == Method::Static).unwrap();
        assert!(s.latency_ms.is_none() && s.accuracy.is_some());
        let why = &s.not_applicable[&qbench::results::Measure::Speed];
        assert!(why.contains("NEON") && why.contains("bit-exact"), "{why}");
    }
    let merged = dir.join("all.json");
    let o = qbench(&[
        "merge",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = Results::read(&merged).unwrap();
    let mut keys: Vec<String> = all.cells.iter().map(|c| c.key().to_string()).collect();
    keys.sort();
    let o = qbench(&[&grid[..], &["--dry-run"]].concat());
    let mut planned: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect();
    planned.sort();
    assert_eq!(keys, planned, "the shards together are the unsharded grid");
}

#[test]
fn a_killed_sweep_keeps_its_finished_groups_and_resume_completes_the_rest() {
    let dir = temp_dir("sweep-kill");
    let out = dir.join("run");
    let grid = [
        "sweep",
        "--quick",
        "--models",
        "digit-cnn",
        "--methods",
        "fp32,static",
        "--backends",
        "fbgemm,vnni,qnnpack",
        "--batch",
        "1",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(grid)
        .args(["--out", out.to_str().unwrap()])
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = out.join("results.json");
    // Kill as soon as the first (model, backend) group is on disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let first = loop {
        if let Ok(r) = Results::read(&path) {
            if !r.cells.is_empty() {
                break r;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no cells written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Results::read(&path).expect("the file a killed sweep leaves validates");
    assert!(
        killed.runs[0].finished_at.is_none(),
        "killed before finishing"
    );
    assert!(killed.cells.len() < 6, "{} cells", killed.cells.len());
    assert!(first.cells.len() <= killed.cells.len());

    let o = qbench(&[&grid[..], &["--resume", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let done = Results::read(&path).unwrap();
    assert_eq!(done.cells.len(), 6);
    assert_eq!(done.runs.len(), 2);
    assert!(done.runs[1].finished_at.is_some());
    for c in &killed.cells {
        assert_eq!(
            done.cells.iter().find(|d| d.key() == c.key()),
            Some(c),
            "kept as measured"
        );
    }
    assert!(done.cells.iter().filter(|c| c.run == 1).count() >= 2);
}

/// MiniLM is built from fetched weights: the default sweep must plan it whether or not
/// they are here. Without them (an empty cache) every MiniLM cell is skipped with the fetch
/// message and the rest of the plan stands.
#[test]
fn minilm_without_its_weights_is_skipped_with_the_fetch_message_not_a_failed_plan() {
    let cache = temp_dir("sweep-minilm-nocache");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(["sweep", "--dry-run", "--backends", "fbgemm", "--batch", "1"])
        .env("RUST_BACKTRACE", "0")
        .env("QBENCH_CACHE_DIR", cache.to_str().unwrap())
        .output()
        .expect("qbench runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("digit-cnn/static/fbgemm/b1/t1\n"), "{text}");
    for method in ["fp32", "fp16", "dynamic", "static", "qat"] {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("minilm/{method}/fbgemm/b1/t1"))
            })
            .unwrap_or_else(|| panic!("no minilm/{method} cell in {text}"));
        assert!(
            line.contains("skip:") && line.contains("qbench fetch minilm"),
            "{line}"
        );
    }
}
