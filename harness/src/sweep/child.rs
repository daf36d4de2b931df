//! A model's groups in a child process: the sweep re-invokes its own binary
//! (`qbench sweep-group`, hidden) for each model, hands it the job on stdin, and reads
//! its cells back, one JSON line per batch of final cells, as they are recorded today.
//!
//! Why a process: [`super::isolate`] turns an error or a panic into failed cells, but a
//! segfault, an abort or an allocation failure ends the whole process, and with it every
//! model after the one that crashed. A child that dies takes only its own model's open
//! cells with it: the parent records them as failed with the signal or exit status and the
//! last lines of the child's stderr, and goes on to the next model.
//!
//! The protocol, child → parent on stdout, one JSON object per line:
//! `{"cells": [Cell, ...]}` (final cells), `{"step": "..."}` and `{"note": "..."}`
//! (progress), `{"group_failed": {"backend": "...", "reason": "..."}}` (an error or a
//! panic that escaped a backend's group, caught in the child as in-process).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::progress::{Progress, Relayed};
use crate::results::{Backend, Cell, CellKey, SweepConfig};

use super::plan::Plan;

/// The hidden subcommand a child runs.
pub const SUBCOMMAND: &str = "sweep-group";

/// Lines of a dead child's stderr kept for its cells' reason.
const STDERR_TAIL: usize = 12;

/// Test hook: `QBENCH_SWEEP_CRASH_MODEL=NAME` makes the child for model NAME kill itself
/// with SIGSEGV before any work, as a crashing kernel or model would. The crash test uses
/// it; no input can be relied on to segfault once every known crash is fixed.
pub const CRASH_MODEL_ENV: &str = "QBENCH_SWEEP_CRASH_MODEL";

/// One model's work, as the parent hands it to a child.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub config: SweepConfig,
    pub model: String,
    /// Each backend's cells still to fill, in grid order.
    pub groups: Vec<(Backend, Vec<CellKey>)>,
    /// Planned skips among those cells, with the reason.
    pub skips: Vec<(CellKey, String)>,
}

/// A line from the child.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Cells(Vec<Cell>),
    Step(String),
    Note(String),
    GroupFailed { backend: Backend, reason: String },
}

/// Runs `job` in a child process. `on_cells` records each batch of final cells (its error
/// ends the sweep); `on_group_failed` gets a backend whose group failed in the child.
/// Returns `Err(reason)` when the child died or exited with an error before finishing:
/// every cell not yet handed over is then to be recorded as failed with that reason.
pub fn run(
    job: &Job,
    progress: &Progress,
    on_cells: &mut dyn FnMut(Vec<Cell>) -> Result<()>,
    on_group_failed: &mut dyn FnMut(Backend, String),
) -> Result<std::result::Result<(), String>> {
    let exe = std::env::current_exe().context("finding qbench's own executable")?;
    let mut child = Command::new(&exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {SUBCOMMAND}", exe.display()))?;
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let stderr = child.stderr.take().context("the child's stderr")?;
    let stderr_reader = {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    };
    {
        let mut stdin = child.stdin.take().context("the child's stdin")?;
        serde_json::to_writer(&mut stdin, job)?;
        // Dropping stdin closes it: the child reads the job to its end.
    }
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut protocol_error = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the child's output")?;
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Cells(cells)) => on_cells(cells)?,
            Ok(Message::Step(s)) => progress.status(&s),
            Ok(Message::Note(s)) => progress.note(&s),
            Ok(Message::GroupFailed { backend, reason }) => on_group_failed(backend, reason),
            Err(e) => {
                protocol_error = Some(format!("unreadable line from the child ({e}): {line}"));
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for the child")?;
    let _ = stderr_reader.join();
    if status.success() && protocol_error.is_none() {
        return Ok(Ok(()));
    }
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    let last = if tail.is_empty() {
        "nothing on stderr".to_owned()
    } else {
        format!("last stderr lines: {}", Vec::from(tail.clone()).join("; "))
    };
    let how = protocol_error.unwrap_or_else(|| died(&status));
    Ok(Err(format!("{how}; {last}")))
}

/// "killed by signal 11 (SIGSEGV)" or "exited with status 134".
fn died(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!(
                "the model's sweep process was killed by signal {sig} ({})",
                signal_name(sig)
            );
        }
    }
    match status.code() {
        Some(code) => format!("the model's sweep process exited with status {code}"),
        None => "the model's sweep process ended without a status".to_owned(),
    }
}

#[cfg(unix)]
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL: out of memory, or killed",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The child: reads a [`Job`] from stdin, runs each backend's group as the in-process
/// sweep does, and writes [`Message`]s to stdout.
pub fn child_main() -> Result<()> {
    let job: Job = serde_json::from_reader(std::io::stdin().lock())
        .context("reading the sweep job from stdin")?;
    if std::env::var(CRASH_MODEL_ENV).ok().as_deref() == Some(job.model.as_str()) {
        eprintln!("{CRASH_MODEL_ENV}={}: crashing on purpose", job.model);
        #[cfg(unix)]
        // SAFETY: setting a signal's default disposition and raising it have no
        // memory-safety preconditions. The default is restored first because Rust's
        // stack-overflow handler would otherwise catch a raised SIGSEGV and return; the
        // default action ends the process, which is the point of the hook.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
        std::process::abort();
    }
    let progress = Progress::relay(Box::new(|kind, text| {
        let m = match kind {
            Relayed::Step => Message::Step(text.to_owned()),
            Relayed::Note => Message::Note(text.to_owned()),
        };
        // A lost progress line is no reason to stop measuring; a lost cell is (below).
        let _ = send(&m);
    }));
    let skips: BTreeMap<CellKey, String> = job.skips.into_iter().collect();
    let cells: Vec<CellKey> = job
        .groups
        .iter()
        .flat_map(|(_, keys)| keys.iter().cloned())
        .collect();
    let plan = Plan {
        config: job.config,
        shard: None,
        out: std::path::PathBuf::new(),
        cells,
        skips,
    };
    for (backend, keys) in job.groups {
        let mut emit = |cells: Vec<Cell>| send(&Message::Cells(cells));
        let outcome =
            super::run_group_isolated(&plan, &job.model, backend, &keys, &progress, &mut emit);
        if let Err(reason) = outcome {
            send(&Message::GroupFailed { backend, reason })?;
        }
    }
    Ok(())
}

/// Writes one message to the parent, a line of JSON, flushed at once so the parent records
/// the cells before the child can die.
fn send(m: &Message) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, m)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
