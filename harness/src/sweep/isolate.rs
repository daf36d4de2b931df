//! Runs one unit of a sweep's work (a model's group, a method's build, a batch's timing) so
//! that an error *or a panic* comes back as a message for the cells it was to fill, and the
//! sweep goes on to the next unit. Owns the panic hook that gives those messages the panic's
//! source location; nothing else.
//!
//! Why a hook: `catch_unwind` hands back only the payload (the message). Where the panic
//! happened is known only to the hook, which runs before unwinding starts. Panics inside a
//! unit are reported through the cell (and the sweep's progress note), so the hook prints
//! nothing for them; any other panic goes to the hook that was installed before, as usual.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Units running now (rayon workers of a unit count as inside it: their panics are
/// re-raised on the unit's thread by rayon).
static DEPTH: AtomicUsize = AtomicUsize::new(0);
/// (message, location) of the last panics seen while units ran. A caught panic finds its
/// location by its message: the hook may run on a rayon worker, not the unit's thread, and
/// units on other threads (tests) may panic meanwhile.
static SEEN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Panics remembered at most (several workers of one unit may panic; rayon re-raises one).
const KEEP: usize = 16;
static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.load(Ordering::SeqCst) == 0 {
                return previous(info);
            }
            let at = info.location().map_or_else(String::new, |l| {
                format!(" (at {}:{}:{})", l.file(), l.line(), l.column())
            });
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() == KEEP {
                seen.remove(0);
            }
            seen.push((message(info.payload()), at));
        }));
    });
}

/// A panic payload as text (`panic!` gives a `&str` or a `String`).
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `work`; an `Err` becomes its message with the causes (`{:#}`), a panic
/// "panicked: <message> (at file:line:col)".
pub fn run<T>(work: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    install_hook();
    DEPTH.fetch_add(1, Ordering::SeqCst);
    // The unit's state is dropped or replaced by failed cells after a panic, never reused
    // half-updated, so asserting unwind safety is sound here.
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    DEPTH.fetch_sub(1, Ordering::SeqCst);
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(payload) => {
            let text = message(payload.as_ref());
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            let at = seen
                .iter()
                .rposition(|(m, _)| *m == text)
                .map_or_else(String::new, |i| seen.remove(i).1);
            Err(format!("panicked: {text}{at}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn errors_and_panics_become_messages_and_values_pass_through() {
        assert_eq!(run(|| Ok(7)), Ok(7));
        let e = run::<()>(|| Err(anyhow::anyhow!("inner").context("outer"))).unwrap_err();
        assert_eq!(e, "outer: inner");
        let v: Vec<usize> = Vec::new();
        let e = run(|| Ok(v[3])).unwrap_err();
        assert!(e.starts_with("panicked: index out of bounds"), "{e}");
        assert!(
            e.contains("harness/src/sweep/isolate.rs:"),
            "the location: {e}"
        );
    }

    #[test]
    fn a_panic_on_a_rayon_worker_is_caught_on_the_calling_thread() {
        let e = run(|| {
            let sum: usize = (0..64usize)
                .into_par_iter()
                .map(|i| {
                    if i == 41 {
                        panic!("worker {i} failed")
                    } else {
                        i
                    }
                })
                .sum();
            Ok(sum)
        })
        .unwrap_err();
        assert!(e.starts_with("panicked: worker 41 failed"), "{e}");
        // A unit after a panic runs normally.
        assert_eq!(run(|| Ok("next")), Ok("next"));
    }
}
