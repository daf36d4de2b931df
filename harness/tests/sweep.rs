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
    let cases: [(&[&str], &[&str]); 6] = [
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
        // More threads than cores would time the scheduler; the message says so.
        (&["--threads", "1,4096"], &["threads 4096", "cores"]),
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
    // Not on a terminal, progress is plain lines: the group, then each step with the
    // cells it works on (model / method / backend / batch).
    let log = stderr(&o);
    for line in [
        "digit-cnn / fbgemm: 3 cells",
        "  digit-cnn / static / fbgemm / b1: quantizing",
        "  digit-cnn / fp32,dynamic,static / fbgemm / b1: timing",
        "  digit-cnn / fp32,dynamic,static / fbgemm / b1: tract",
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
    check_report_rows(&r, &md_rows(&md), "report.md");

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
    // The markdown and terminal tables, parsed back into rows and columns, say what the
    // results file says.
    check_report_rows(&back, &md_rows(&report("md")), "md");
    check_report_rows(&back, &table_rows(&report("table")), "table");

    let o = qbench(&["report", path.to_str().unwrap(), "--format", "pdf"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("md, csv, json, html"), "{}", stderr(&o));
}

/// A sweep on 1 and 2 threads (1 only, refused with the reason, on a one-core machine):
/// both thread counts get measured cells, the 2-thread ones with the same kernels,
/// accuracy, sizes and tract agreement (those do not depend on threads) and their own
/// latencies, speedups and tract latencies.
#[test]
fn a_two_thread_sweep_measures_int8_and_fp32_on_two_threads() {
    let dir = temp_dir("sweep-threads");
    let out = dir.join("run");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        let mut args: Vec<&str> = QUICK.to_vec();
        args.extend(["--threads", "1,2", "--out", out.to_str().unwrap()]);
        let o = qbench(&args);
        assert!(
            !o.status.success() && stderr(&o).contains("cores"),
            "{}",
            stderr(&o)
        );
        return;
    }
    sweep(&out, &["--threads", "1,2"]);
    let r = Results::read(&out.join("results.json")).expect("results.json validates");
    assert_eq!(r.cells.len(), 6, "3 methods × 2 thread counts");
    for c in r.cells.iter().filter(|c| c.threads == 2) {
        let one = r
            .cells
            .iter()
            .find(|o| o.threads == 1 && o.method == c.method)
            .unwrap();
        let m = c.method;
        assert_eq!(c.state, State::Measured, "{m:?}: {:?}", c.reason);
        assert_eq!(c.kernel, one.kernel, "{m:?}");
        assert_eq!(c.size_bytes, one.size_bytes, "{m:?}");
        assert_eq!(c.accuracy, one.accuracy, "{m:?}");
        assert!(c.latency_ms.as_ref().unwrap().median > 0.0, "{m:?}");
        assert!(c.speedup_vs_fp32.unwrap() > 0.0, "{m:?}");
        // tract: the same agreement, its own 2-thread latencies (and ours from that run).
        let tract = c.tract.as_ref().expect("tract columns");
        let tract_one = one.tract.as_ref().unwrap();
        assert_eq!(tract.agreement, tract_one.agreement, "{m:?}");
        assert!(
            tract.fp32_ms.unwrap() > 0.0 && tract.ours_ms.unwrap() > 0.0,
            "{m:?}"
        );
        assert_eq!(
            tract.int8_ms.is_some(),
            m != Method::Fp32,
            "{m:?}: {tract:?}"
        );
        assert_ne!(
            tract.fp32_ms, tract_one.fp32_ms,
            "{m:?}: a separate measurement"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("digit-cnn — fbgemm, batch 1, 2 threads"),
        "{md}"
    );
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
    assert!(a.cells.iter().all(|c| c.backend.name() == "fbgemm"));
    assert!(b.cells.iter().all(|c| c.backend.name() == "qnnpack"));
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
    // Two shards of one machine: the merged file names it.
    assert_eq!(all.machine.as_ref(), Some(&a.runs[0].machine));

    // The same grid unsharded: the same cells, and every deterministic field equal
    // (latencies and quantization times are measurements of the moment and may differ).
    let whole = dir.join("whole");
    let o = qbench(&[&grid[..], &["--out", whole.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let one = Results::read(&whole.join("results.json")).unwrap();
    let by_key = |r: &Results| {
        r.cells
            .iter()
            .map(|c| (c.key(), c.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (all_cells, one_cells) = (by_key(&all), by_key(&one));
    assert_eq!(
        all_cells.keys().collect::<Vec<_>>(),
        one_cells.keys().collect::<Vec<_>>(),
        "the shards together are the unsharded grid"
    );
    assert_eq!(all_cells.len(), 4);
    for ((key, m), u) in all_cells.iter().zip(one_cells.values()) {
        assert_eq!(m.state, u.state, "{key}");
        assert_eq!(m.reason, u.reason, "{key}: skip reason or error");
        assert_eq!(m.kernel, u.kernel, "{key}");
        assert_eq!(m.size_bytes, u.size_bytes, "{key}");
        assert_eq!(m.size_ratio, u.size_ratio, "{key}");
        assert_eq!(m.accuracy, u.accuracy, "{key}");
        assert_eq!(m.agreement, u.agreement, "{key}");
        assert_eq!(m.sqnr, u.sqnr, "{key}: SQNR summary and per layer");
        assert_eq!(m.not_applicable, u.not_applicable, "{key}: n/a reasons");
        assert_eq!(
            m.tract
                .as_ref()
                .map(|t| (t.agreement, t.agreement_fp32, t.samples)),
            u.tract
                .as_ref()
                .map(|t| (t.agreement, t.agreement_fp32, t.samples)),
            "{key}: tract's argmax agreement"
        );
        assert_eq!(m.state, State::Measured, "{key}: {:?}", m.reason);
    }
}

#[test]
fn a_killed_sweep_keeps_every_recorded_cell_and_resume_completes_the_rest() {
    let dir = temp_dir("sweep-kill");
    let out = dir.join("run");
    // Two (model, backend) groups of two batch sizes: 4 cells a group, 2 a batch.
    let grid = [
        "sweep",
        "--quick",
        "--models",
        "digit-cnn",
        "--methods",
        "fp32,static",
        "--backends",
        "fbgemm,vnni",
        "--batch",
        "1,2",
    ];
    // The sweep dies (abort, no cleanup: what a kill -9 leaves) right after its first
    // write of recorded cells; QBENCH_ABORT_AFTER_RECORDS stops it exactly there, where
    // killing it from here would race against its next write.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(grid)
        .args(["--out", out.to_str().unwrap()])
        .env("RUST_BACKTRACE", "0")
        .env("QBENCH_ABORT_AFTER_RECORDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "the sweep was to die after its first write"
    );
    let path = out.join("results.json");
    let first = Results::read(&path).expect("the file a killed sweep leaves validates");
    // Cells are written as they become final, not per group: the first write holds the
    // first batch of the first group (both methods, timed in one interleaved run), not
    // the whole group.
    let firsts: Vec<String> = first.cells.iter().map(|c| c.key().to_string()).collect();
    assert_eq!(
        firsts,
        [
            "digit-cnn/fp32/fbgemm/b1/t1",
            "digit-cnn/static/fbgemm/b1/t1"
        ],
        "the first write"
    );
    let killed = first;
    assert!(
        killed.runs[0].finished_at.is_none(),
        "killed before finishing"
    );

    let o = qbench(&[&grid[..], &["--resume", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains(&format!(
            "8 cells planned, {} already done, {} to run",
            killed.cells.len(),
            8 - killed.cells.len()
        )),
        "{log}"
    );
    // Only the open cells ran: the first group's batch 1 is not timed again.
    assert!(
        !log.contains("digit-cnn / fp32,static / fbgemm / b1: timing"),
        "{log}"
    );
    let done = Results::read(&path).unwrap();
    assert_eq!(done.cells.len(), 8);
    assert_eq!(done.runs.len(), 2);
    assert!(done.runs[1].finished_at.is_some());
    for c in &killed.cells {
        assert_eq!(
            done.cells.iter().find(|d| d.key() == c.key()),
            Some(c),
            "kept as measured"
        );
    }
    assert_eq!(
        done.cells.iter().filter(|c| c.run == 1).count(),
        8 - killed.cells.len()
    );
    assert!(done.cells.iter().all(|c| c.state == State::Measured));
}

/// A model that cannot load (an op the importer refuses) fails its own cells, with the
/// error, and the sweep measures the others and succeeds.
#[test]
fn a_failing_model_fails_only_its_cells_and_the_sweep_goes_on() {
    let dir = temp_dir("sweep-isolated");
    // mlp-mnist with its first Relu turned into Selu, a real ONNX op qbench does not import.
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/mlp-mnist/model.onnx");
    let graph = qbench_models::onnx::load(&zoo).unwrap();
    let mut proto = qbench_models::onnx::to_model_proto(&graph);
    let node = proto
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .expect("mlp-mnist has a Relu");
    node.op_type = "Selu".into();
    let relu = node.name.clone();
    let bad = dir.join("selu.onnx");
    std::fs::write(&bad, prost::Message::encode_to_vec(&proto)).unwrap();
    let out = dir.join("run");
    let o = qbench(&[
        "sweep",
        "--quick",
        "--models",
        &format!("mlp-mnist,{}", bad.display()),
        "--methods",
        "fp32,static",
        "--backends",
        "fbgemm",
        "--batch",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "the sweep goes on: {}", stderr(&o));
    assert!(
        stderr(&o).contains("2 cell(s) failed"),
        "the failure is shown: {}",
        stderr(&o)
    );
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.cells.len(), 4);
    for c in &r.cells {
        if c.model == "mlp-mnist" {
            assert_eq!(c.state, State::Measured, "{}: {:?}", c.key(), c.reason);
            assert!(c.accuracy.is_some());
        } else {
            assert_eq!(c.model, bad.display().to_string());
            assert_eq!(c.state, State::Failed, "{}", c.key());
            let why = c.reason.as_deref().unwrap();
            assert!(
                why.contains("selu.onnx") && why.contains(&relu) && why.contains("Selu"),
                "the error names the file, the node and the op: {why}"
            );
        }
    }
    // The reports carry the failure too.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("static failed: "), "{md}");
    check_report_rows(&r, &md_rows(&md), "report.md");
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

/// A report's rows parsed back: (section heading, method) → column name → text. A
/// section's tables are joined: each names its method in the first column.
type Rows =
    std::collections::BTreeMap<(String, String), std::collections::BTreeMap<String, String>>;

/// The rows of every table in a markdown report, under the `## ` heading they follow.
fn md_rows(md: &str) -> Rows {
    // Cells as a markdown reader sees them: split on unescaped pipes, then `\X` is `X`
    // (the report escapes what a file names).
    let split = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        let (mut cells, mut cur, mut chars) = (Vec::new(), String::new(), inner.chars());
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => cur.extend(chars.next()),
                '|' => cells.push(std::mem::take(&mut cur).trim().to_owned()),
                _ => cur.push(ch),
            }
        }
        cells.push(cur.trim().to_owned());
        cells
    };
    let mut rows = Rows::new();
    let mut section = String::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    for line in md.lines().chain([""]) {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.to_owned();
        } else if line.starts_with('|') {
            table.push(split(line));
        } else if !table.is_empty() {
            let (header, sep) = (&table[0], &table[1]);
            assert!(sep.iter().all(|c| c == "---"), "not a table: {table:?}");
            for row in &table[2..] {
                assert_eq!(row.len(), header.len(), "{section}: {row:?}");
                let cols = rows.entry((section.clone(), row[0].clone())).or_default();
                for (h, v) in header.iter().zip(row) {
                    cols.insert(h.clone(), v.clone());
                }
            }
            table.clear();
        }
    }
    rows
}

/// The rows of the terminal report (tabled, rounded style) under the section line before
/// each table.
fn table_rows(text: &str) -> Rows {
    let mut rows = Rows::new();
    let mut section = String::new();
    let mut header: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with('│') {
            let cells: Vec<String> = line
                .trim_matches('│')
                .split('│')
                .map(|c| c.trim().to_owned())
                .collect();
            match &header {
                None => header = Some(cells),
                Some(h) => {
                    assert_eq!(cells.len(), h.len(), "{section}: {line}");
                    let cols = rows.entry((section.clone(), cells[0].clone())).or_default();
                    for (h, v) in h.iter().zip(&cells) {
                        cols.insert(h.clone(), v.clone());
                    }
                }
            }
        } else if line.starts_with('╰') {
            header = None;
        } else if !line.starts_with(['╭', '├'])
            && !line.trim().is_empty()
            && !line.starts_with("  - ")
        {
            section = line.trim().to_owned();
        }
    }
    rows
}

/// `text` as a number, or a panic naming what was parsed.
fn num(text: &str, what: &str) -> f64 {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {text:?} is not a number: {e}"))
}

/// `printed` (a value printed with `decimals` decimals) is `value`.
fn close(printed: f64, value: f64, decimals: i32, what: &str) {
    let tol = 0.5 * 10f64.powi(-decimals) + 1e-9;
    assert!(
        (printed - value).abs() <= tol,
        "{what}: the report says {printed}, results.json {value}"
    );
}

/// Every cell of `r` has its row in `rows` (one row per cell, no others), and each
/// column holds the cell's value as results.json has it.
fn check_report_rows(r: &Results, rows: &Rows, format: &str) {
    use qbench::results::Measure;
    assert_eq!(
        rows.len(),
        r.cells.len(),
        "{format}: one row per cell: {rows:?}"
    );
    for c in &r.cells {
        let section = format!(
            "{} — {}, batch {}, {} thread{}",
            c.model,
            c.backend.name(),
            c.batch,
            c.threads,
            if c.threads == 1 { "" } else { "s" }
        );
        let row = rows
            .get(&(section.clone(), c.method.name().to_owned()))
            .unwrap_or_else(|| panic!("{format}: no row {section} / {:?}", c.method));
        let what = |col: &str| format!("{format} {section} {} {col}", c.method.name());
        let absent = |m: Measure| match c.state {
            State::Skipped => "skipped",
            State::Failed => "failed",
            State::Measured if c.not_applicable.contains_key(&m) => "n/a",
            State::Measured => "—",
        };
        for (col, text) in row {
            let w = what(col);
            match col.as_str() {
                "Method" => {}
                "Size" => match (c.size_ratio, c.size_bytes) {
                    (Some(ratio), Some(bytes)) => {
                        let (x, rest) = text.split_once("x (").expect(&w);
                        close(num(x, &w), ratio, 2, &w);
                        let (v, unit) = rest.trim_end_matches(')').split_once(' ').expect(&w);
                        let scale = match unit {
                            "KiB" => 1024.0,
                            "MiB" => 1024.0 * 1024.0,
                            other => panic!("{w}: unit {other}"),
                        };
                        close(num(v, &w), bytes as f64 / scale, 1, &w);
                    }
                    _ => assert_eq!(text, absent(Measure::Size), "{w}"),
                },
                "Speed" => match (c.speedup_vs_fp32, &c.latency_ms) {
                    (Some(s), Some(l)) => {
                        let (x, rest) = text.split_once("x (").expect(&w);
                        close(num(x, &w), s, 2, &w);
                        let (ms, band) = rest.split_once(" ms ±").expect(&w);
                        close(num(ms, &w), l.median, 3, &w);
                        close(
                            num(band.trim_end_matches(" %)"), &w),
                            50.0 * l.spread,
                            0,
                            &w,
                        );
                    }
                    _ => assert_eq!(text, absent(Measure::Speed), "{w}"),
                },
                "Accuracy" => match &c.accuracy {
                    Some(a) => {
                        let (rel, rest) = text.split_once(" % (").expect(&w);
                        close(num(rel, &w), 100.0 * a.relative, 2, &w);
                        let (v, metric) = rest.split_once(" % ").expect(&w);
                        close(num(v, &w), 100.0 * a.value, 2, &w);
                        assert_eq!(metric.trim_end_matches(')'), a.metric, "{w}");
                    }
                    None => assert_eq!(text, absent(Measure::Accuracy), "{w}"),
                },
                "Kernel" => assert_eq!(
                    Some(text.as_str()),
                    c.kernel.as_deref().or(Some("—")),
                    "{w}"
                ),
                "Drop (pp)" => match &c.accuracy {
                    Some(a) => close(num(text, &w), a.drop_pp, 2, &w),
                    None => assert_eq!(text, "—", "{w}"),
                },
                "Agreement" => match c.agreement {
                    Some(a) => close(num(text.trim_end_matches(" %"), &w), 100.0 * a, 2, &w),
                    None => assert_eq!(text, "—", "{w}"),
                },
                "Worst layer SQNR" => match &c.sqnr {
                    Some(q) => {
                        let (db, layer) = text.split_once(" dB (").expect(&w);
                        close(num(db, &w), q.worst_db, 1, &w);
                        assert_eq!(layer.trim_end_matches(')'), q.worst_layer, "{w}");
                    }
                    None => assert_eq!(text, "—", "{w}"),
                },
                "Quantize (s)" => match c.quantize_s {
                    Some(q) => close(num(text, &w), q, 2, &w),
                    None => assert_eq!(text, "—", "{w}"),
                },
                "tract (ms)" => match &c.tract {
                    Some(t) => {
                        let (times, ours) = match text.split_once(" (ours ") {
                            Some((a, b)) => (a, Some(b.trim_end_matches(')'))),
                            None => (text.as_str(), None),
                        };
                        match (ours, t.ours_ms) {
                            (Some(o), Some(v)) => close(num(o, &w), v, 3, &w),
                            (None, None) => {}
                            other => panic!("{w}: ours {other:?}"),
                        }
                        let parts: Vec<&str> = times.split(", ").collect();
                        let ms = |p: &str, name: &str, v: Option<f64>| {
                            let value = p.strip_prefix(&format!("{name} ")).expect(&w);
                            match v {
                                Some(v) => close(num(value, &w), v, 3, &w),
                                None => assert_eq!(value, "—", "{w}"),
                            }
                        };
                        ms(parts[0], "fp32", t.fp32_ms);
                        if c.method == Method::Fp32 {
                            assert_eq!(parts.len(), 1, "{w}");
                        } else {
                            ms(parts[1], c.method.name(), t.int8_ms);
                        }
                    }
                    None => assert_eq!(text, absent(Measure::Tract), "{w}"),
                },
                "tract agreement" => {
                    match c.tract.as_ref().map(|t| (t.agreement, t.agreement_fp32)) {
                        Some((Some(a), f)) => {
                            let (own, vs) = match text.split_once(" (vs fp32 ") {
                                Some((a, b)) => (a, Some(b.trim_end_matches(" %)"))),
                                None => (text.as_str(), None),
                            };
                            close(num(own.trim_end_matches(" %"), &w), 100.0 * a, 2, &w);
                            match (vs, f) {
                                (Some(v), Some(f)) => close(num(v, &w), 100.0 * f, 2, &w),
                                (None, None) => {}
                                other => panic!("{w}: vs fp32 {other:?}"),
                            }
                        }
                        Some((None, _)) => assert_eq!(text, "—", "{w}"),
                        None => assert_eq!(text, absent(Measure::Tract), "{w}"),
                    }
                }
                other => panic!("{w}: a column the test does not know: {other}"),
            }
        }
        // Both tables (markdown) or the one (terminal) gave every column.
        let wanted: &[&str] = if format.contains("table") {
            &[
                "Size",
                "Speed",
                "Accuracy",
                "Agreement",
                "Worst layer SQNR",
                "tract (ms)",
                "tract agreement",
            ]
        } else {
            &[
                "Size",
                "Speed",
                "Accuracy",
                "Kernel",
                "Drop (pp)",
                "Agreement",
                "Worst layer SQNR",
                "Quantize (s)",
                "tract (ms)",
                "tract agreement",
            ]
        };
        for col in wanted {
            assert!(row.contains_key(*col), "{}: column missing", what(col));
        }
    }
}
