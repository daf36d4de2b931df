//! Progress on stderr, for the sweep and for `qbench quantize`. On a terminal: an indicatif bar of cells done out of
//! cells to run, with elapsed time, ETA and what runs now (model / backend: step). Not on
//! a terminal (CI logs, tests, `2> file`): one plain line per group and step, each with
//! the seconds since the start, since a redrawn bar is noise in a log.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    /// The running group, "model / backend", prefixed to each step.
    group: Mutex<String>,
}

impl Progress {
    /// Progress over `cells` cells; a bar only when stderr is a terminal.
    pub fn new(cells: usize) -> Progress {
        Progress::on_terminal(
            Some(cells as u64),
            "[{elapsed_precise}] {bar:30} {pos}/{len} cells, ETA {eta} {wide_msg}",
        )
    }

    /// Progress of one task (`qbench quantize`): a spinner with the current step on a
    /// terminal, plain lines otherwise.
    pub fn spinner() -> Progress {
        Progress::on_terminal(None, "[{elapsed_precise}] {spinner} {wide_msg}")
    }

    /// A bar of `len` steps (`None`: a spinner) drawn with `template`, when stderr is a
    /// terminal; plain lines otherwise.
    fn on_terminal(len: Option<u64>, template: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            bar.enable_steady_tick(std::time::Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            group: Mutex::new(String::new()),
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("[{:>6.1} s] {text}", self.start.elapsed().as_secs_f64()),
        }
    }

    /// A (model, backend) group of `cells` cells starts.
    pub fn group(&self, model: &str, backend: &str, cells: usize) {
        let name = format!("{model} / {backend}");
        self.line(&format!("{name}: {cells} cells"));
        if let Some(bar) = &self.bar {
            bar.set_message(name.clone());
        }
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    /// The running group moves to `step` ("quantizing static", "timing batch 32", ...).
    pub fn step(&self, step: &str) {
        let group = self.group.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match &self.bar {
            Some(bar) if group.is_empty() => bar.set_message(step.to_owned()),
            Some(bar) => bar.set_message(format!("{group}: {step}")),
            None => self.line(&format!("  {step}")),
        }
    }

    /// A message that must stay readable (a failure), above the bar.
    pub fn note(&self, text: &str) {
        self.line(&format!("  {text}"));
    }

    /// `cells` more cells are done.
    pub fn done(&self, cells: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(cells as u64);
        }
    }

    /// Removes the bar; later output starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
