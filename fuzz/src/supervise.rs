//! Running one child process and turning what happens to it into case results.
//!
//! The child's events arrive on its stdout (read by a thread, so the parent can wait with
//! a timeout); its stderr's last lines are kept to explain an abort. When the child ends,
//! a case it started but did not finish is the one that killed it: the reason is the
//! budget refusal it reported if any, else the signal or exit status and the stderr tail.
//! A case that makes no progress for `timeout` is killed and reported as a hang.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::{self, Event};

/// What happened to one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Clean: peak bytes, and whether the input was accepted.
    Ok { peak: usize, accepted: bool },
    /// A finding, with its reason.
    Failed(String),
}

/// Results of one child, in case order, and whether it ended cleanly.
pub struct ChildRun {
    pub cases: Vec<(u64, Outcome)>,
    /// False when the child died, hung or could not be started: the caller restarts
    /// after the last case listed.
    pub clean: bool,
    /// The child could not be started at all (e.g. the binary was rebuilt under the
    /// run): restarting cannot help.
    pub spawn_error: Option<String>,
}

/// Lines of stderr kept to explain a death.
const STDERR_TAIL: usize = 4;

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        _ => "signal",
    }
}

/// Runs `cmd` (a `--child` invocation) to its end.
pub fn run(mut cmd: Command, timeout: Duration, budget: usize) -> ChildRun {
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            return ChildRun {
                cases: Vec::new(),
                clean: false,
                spawn_error: Some(e.to_string()),
            };
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ev) = protocol::parse(&line) {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let tail_w = Arc::clone(&tail);
    let err_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut t = tail_w.lock().expect("not poisoned");
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    });

    let mut cases = Vec::new();
    let mut started: Option<u64> = None;
    let mut refused: Option<(u64, usize, Option<String>)> = None;
    let mut hung = false;
    let mut idle = 0;
    loop {
        let event = rx.recv_timeout(timeout);
        if event.is_ok() {
            idle = 0;
        }
        match event {
            Ok(Event::Start(i)) => started = Some(i),
            Ok(Event::Done(i, peak, accepted)) => {
                started = None;
                cases.push((i, Outcome::Ok { peak, accepted }));
            }
            Ok(Event::Fail(i, mut reason)) => {
                started = None;
                // A refusal the case survived: where it came from is in its budget event.
                if let Some((_, _, Some(frame))) = refused.as_ref().filter(|r| r.0 == i) {
                    if reason.starts_with("allocation") {
                        reason = format!("{reason} at {frame}");
                    }
                }
                cases.push((i, Outcome::Failed(reason)));
            }
            Ok(Event::Budget(i, size, frame)) => {
                // The first refusal of a case is the one that aborts it.
                if refused.as_ref().is_none_or(|r| r.0 != i) {
                    refused = Some((i, size, frame));
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                idle += 1;
                // A case that runs too long is a hang; a child stuck outside any case
                // (building its seeds) gets ten times as long before it is given up.
                if started.is_some() || idle >= 10 {
                    hung = started.is_some();
                    // Our own child, by its handle.
                    let _ = child.kill();
                    break;
                }
                continue;
            }
        }
    }
    let status = child.wait();
    let _ = reader.join();
    let _ = err_reader.join();
    let tail: Vec<String> = tail.lock().expect("not poisoned").iter().cloned().collect();
    let tail = protocol::one_line(&tail.join(" | "));

    let clean = matches!(&status, Ok(s) if s.success()) && started.is_none() && !hung;
    if let Some(i) = started {
        let why = match (&status, refused) {
            _ if hung => format!("hang: no result after {} s", timeout.as_secs()),
            (_, Some((j, size, frame))) if j == i => format!(
                "allocation of {size} bytes over the budget of {budget} (aborted){}",
                frame.map(|f| format!(" at {f}")).unwrap_or_default()
            ),
            (Ok(s), _) => match s.signal() {
                Some(sig) => format!("{} ({sig}): {tail}", signal_name(sig)),
                None => format!("exit status {:?}: {tail}", s.code()),
            },
            (Err(e), _) => format!("child lost: {e}"),
        };
        cases.push((i, Outcome::Failed(protocol::one_line(&why))));
    } else if !clean {
        eprintln!("qbench-fuzz: a child ended between cases ({status:?}): {tail}");
    }
    ChildRun {
        cases,
        clean,
        spawn_error: None,
    }
}
