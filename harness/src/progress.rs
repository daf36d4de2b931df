//! Progress on stderr, for the sweep and for `qbench quantize`. On a terminal: an
//! indicatif bar of cells done out of cells to run, advanced as each cell is recorded, with
//! elapsed time, ETA and the cells running now and their step
//! (`digit-cnn / static / fbgemm / b1,b32: quantizing`). Not on a terminal (CI logs, tests,
//! `2> file`): one plain line per group and step, each with the seconds since the start,
//! since a redrawn bar is noise in a log. In a sweep's child process ([`Progress::relay`])
//! steps and notes go to the parent, which shows them as its own.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use crate::results::CellKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    /// What runs now ("model / backend", or the cells' names), prefixed to each step.
    group: Mutex<String>,
    /// In a child process: where steps and notes go instead of stderr.
    relay: Option<Relay>,
}

/// What a relayed line is: a step (shown as the bar's message, or a log line) or a note
/// (a line that stays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed {
    Step,
    Note,
}

type Relay = Box<dyn Fn(Relayed, &str) + Send + Sync>;

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
            relay: None,
        }
    }

    /// Progress that hands each step and note to `relay` instead of drawing (a sweep's
    /// child process sends them to its parent).
    pub fn relay(relay: Relay) -> Progress {
        Progress {
            bar: None,
            start: Instant::now(),
            group: Mutex::new(String::new()),
            relay: Some(relay),
        }
    }

    /// A step relayed from a child, already named: the bar's message, or a log line.
    pub fn status(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_owned()),
            None => self.line(&format!("  {text}")),
        }
    }

    fn line(&self, text: &str) {
        if let Some(relay) = &self.relay {
            return relay(Relayed::Note, text.trim_start());
        }
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

    /// Work on `cells` starts (building a method, timing a batch): the bar shows their
    /// names and `step`, a log gets a line.
    pub fn cells(&self, cells: &[&CellKey], step: &str) {
        let name = cell_names(cells);
        match (&self.relay, &self.bar) {
            (Some(relay), _) => relay(Relayed::Step, &format!("{name}: {step}")),
            (None, Some(bar)) => bar.set_message(format!("{name}: {step}")),
            (None, None) => self.line(&format!("  {name}: {step}")),
        }
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    /// The running group moves to `step` ("quantizing static", "timing batch 32", ...).
    pub fn step(&self, step: &str) {
        let group = self.group.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(relay) = &self.relay {
            let text = if group.is_empty() {
                step.to_owned()
            } else {
                format!("{group}: {step}")
            };
            return relay(Relayed::Step, &text);
        }
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

/// Cells as "model / method / backend / batch", several methods or batches joined by
/// commas (one interleaved timing run covers every method of a batch; one build serves
/// every batch of a method); threads are named only when not 1.
pub fn cell_names(cells: &[&CellKey]) -> String {
    /// The distinct values of one key part, in first-seen order, joined by commas.
    fn list(cells: &[&CellKey], part: impl Fn(&CellKey) -> String) -> String {
        let mut out: Vec<String> = Vec::new();
        for c in cells {
            let v = part(c);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out.join(",")
    }
    if cells.is_empty() {
        return String::new();
    }
    let mut name = format!(
        "{} / {} / {} / {}",
        list(cells, |c| c.model.clone()),
        list(cells, |c| c.method.name().to_owned()),
        list(cells, |c| c.backend.name().to_owned()),
        list(cells, |c| format!("b{}", c.batch)),
    );
    if cells.iter().any(|c| c.threads != 1) {
        name.push_str(&format!(
            " / {}",
            list(cells, |c| format!("t{}", c.threads))
        ));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Backend, Method};

    fn key(method: Method, batch: u32, threads: u32) -> CellKey {
        CellKey {
            model: "digit-cnn".into(),
            method,
            backend: Backend::Fbgemm,
            batch,
            threads,
        }
    }

    #[test]
    fn cell_names_say_model_method_backend_batch() {
        let (a, b, c) = (
            key(Method::Static, 1, 1),
            key(Method::Static, 32, 1),
            key(Method::Fp32, 1, 1),
        );
        assert_eq!(cell_names(&[&a]), "digit-cnn / static / fbgemm / b1");
        assert_eq!(
            cell_names(&[&a, &b]),
            "digit-cnn / static / fbgemm / b1,b32"
        );
        assert_eq!(
            cell_names(&[&c, &a]),
            "digit-cnn / fp32,static / fbgemm / b1"
        );
        let t2 = key(Method::Static, 1, 2);
        assert_eq!(cell_names(&[&t2]), "digit-cnn / static / fbgemm / b1 / t2");
        assert_eq!(cell_names(&[]), "");
    }
}
