//! The HTML report in a real browser: `qbench report reports/baseline.json --format html`
//! (the committed baseline, 150 cells of a real sweep) is loaded by headless Chromium, and
//! a probe script, added to a copy of the page by this test only (the report itself has no
//! script), counts what the browser laid out: tables with their rows, and plots with a
//! non-empty box and their bars and points.
//!
//! Chromium comes from `QBENCH_CHROMIUM` or `chromium` / `chromium-browser` on the PATH
//! (`ci/test.sh` installs Debian's). Without one the test fails, saying how to install it,
//! unless `QBENCH_SKIP_BROWSER=1` says to skip.

mod common;

use common::{qbench, stderr, stdout, temp_dir};
use qbench::results::Results;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QBENCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Written into the page's body once it has loaded: what the browser rendered.
const PROBE: &str = r#"<script>
window.addEventListener('load', () => {
  const svgs = [...document.querySelectorAll('svg.plot')];
  const drawn = svgs.filter(s => { const b = s.getBoundingClientRect(); return b.width > 0 && b.height > 0; });
  const tables = [...document.querySelectorAll('table')];
  const out = {
    tables: tables.length,
    tables_with_rows: tables.filter(t => t.rows.length > 1 && t.getBoundingClientRect().height > 0).length,
    plots: svgs.length,
    plots_drawn: drawn.length,
    bars_drawn: [...document.querySelectorAll('svg.plot rect')].filter(r => r.getBBox().width > 0).length,
    points: document.querySelectorAll('svg.plot circle').length,
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

#[test]
fn the_html_report_renders_its_tables_and_plots_in_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var_os("QBENCH_SKIP_BROWSER").is_some() {
            eprintln!("skipped: no chromium and QBENCH_SKIP_BROWSER is set");
            return;
        }
        panic!(
            "no chromium found: install it (apt-get install chromium; ci/test.sh does), point \
             QBENCH_CHROMIUM at one, or set QBENCH_SKIP_BROWSER=1 to skip this check"
        );
    };
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/baseline.json");
    let results = Results::read(&baseline).unwrap();
    let o = qbench(&["report", baseline.to_str().unwrap(), "--format", "html"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = stdout(&o);

    let dir = temp_dir("report-browser");
    let page = dir.join("report.html");
    std::fs::write(&page, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let run = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox", // CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(run.status.success(), "{}", stderr(&run));
    let dom = stdout(&run);
    let probe = dom
        .split("<pre id=\"probe\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| {
            panic!(
                "the probe did not run; DOM tail: {}",
                &dom[dom.len().saturating_sub(500)..]
            )
        });
    let probe = probe.replace("&quot;", "\"").replace("&amp;", "&");
    let got: serde_json::Value = serde_json::from_str(&probe).unwrap();
    eprintln!("{got}");

    // One table per (model, backend, batch, threads) section, each with its cells' rows,
    // and a second in sections of a sentence encoder (the embedding metrics).
    let section_of =
        |c: &qbench::results::Cell| (c.model.clone(), c.backend.name(), c.batch, c.threads);
    let mut sections: Vec<_> = results.cells.iter().map(section_of).collect();
    sections.sort();
    sections.dedup();
    let mut encoder_sections: Vec<_> = results
        .cells
        .iter()
        .filter(|c| c.embedding.is_some())
        .map(section_of)
        .collect();
    encoder_sections.sort();
    encoder_sections.dedup();
    assert!(
        !encoder_sections.is_empty(),
        "the baseline has MiniLM cells"
    );
    let tables = sections.len() + encoder_sections.len();
    assert_eq!(got["tables"], tables);
    assert_eq!(got["tables_with_rows"], tables);
    // Every plot the file holds is laid out with a box, and the bars have width.
    let plots = html.matches("<svg").count();
    assert!(
        plots >= 3 * 4,
        "scatter, latency and SQNR plots per model: {plots}"
    );
    assert_eq!(got["plots"], plots);
    assert_eq!(got["plots_drawn"], plots);
    assert!(got["bars_drawn"].as_u64().unwrap() > 100, "{got}");
    // A scatter point per quantized cell with both a speedup and an accuracy drop.
    let points = results
        .cells
        .iter()
        .filter(|c| c.method.name() != "fp32")
        .filter(|c| c.speedup_vs_fp32.is_some() && c.accuracy.is_some())
        .count();
    assert_eq!(got["points"], points);
    let mut models: Vec<&str> = results.cells.iter().map(|c| c.model.as_str()).collect();
    models.dedup();
    assert_eq!(got["headings"], serde_json::json!(models));
}
