//! The child process: runs a range of cases (or one file) in-process and reports each on
//! the protocol channel.
//!
//! Each case runs inside `catch_unwind` with the counting allocator armed. A panic is
//! reported with its message and location (captured by a silent panic hook, so the
//! child's stderr stays for what cannot be caught: abort messages). A signal or an abort
//! ends the child; the parent learns which case from the last `start` line.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::format::Format;
use crate::{alloc, case, protocol, seeds, targets};

/// The message of the last panic, set by the hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);
/// Whether a case is running (a panic outside one is the driver's bug).
static IN_CASE: AtomicBool = AtomicBool::new(false);

fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string payload)".to_string()
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // A panic inside std (`capacity overflow`, an overflowing `product`) is located in
        // std; the qbench frames that led there are what a reader needs.
        let caller = crate::frames::here()
            .map(|f| format!(" (from {f})"))
            .unwrap_or_default();
        let msg = format!("{msg}{at}{caller}");
        if !IN_CASE.load(Ordering::Relaxed) {
            // Not qbench's panic but the driver's own (building a case): say so, loudly.
            eprintln!("qbench-fuzz child: driver panic outside a case: {msg}");
        }
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(msg);
        }
    }));
}

/// Runs one input as case `index` and reports it.
fn run_one(format: Format, bytes: &[u8], ctx: &targets::Context, index: u64) {
    protocol::emit_start(index);
    alloc::arm(index);
    IN_CASE.store(true, Ordering::Relaxed);
    let result = panic::catch_unwind(AssertUnwindSafe(|| targets::run(format, bytes, ctx)));
    IN_CASE.store(false, Ordering::Relaxed);
    let usage = alloc::disarm();
    match result {
        Err(_) => {
            let msg = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut m| m.take())
                .unwrap_or_else(|| "(no message)".into());
            protocol::emit_fail(index, &format!("panic: {msg}"));
        }
        Ok(_) if usage.refused.is_some() => {
            let size = usage.refused.unwrap_or(0);
            protocol::emit_fail(
                index,
                &format!("allocation of {size} bytes over the budget (refused, handled)"),
            );
        }
        Ok(accepted) => protocol::emit_done(index, usage.peak, accepted),
    }
}

/// `--child`: cases `start..start + count` of the run seeded `seed`.
pub fn run_cases(format: Format, seed: u64, start: u64, count: u64, budget: usize) {
    install_panic_hook();
    let seeds = seeds::for_format(format);
    let ctx = targets::Context::new(format);
    alloc::set_budget(budget);
    // qbench's own memory budget, as `--max-memory` sets it, well inside the allocator's
    // cap: it limits one tensor (and a plan's constants), and a run holds several.
    qbench_models::budget::MemoryBudget::bytes(budget as u64 / 4).set_global();
    for i in start..start.saturating_add(count) {
        // Built before the allocator is armed: generating is not the case's usage.
        let c = case::generate(format, &seeds, seed, i);
        run_one(format, &c.bytes, &ctx, i);
    }
}

/// `--child --file`: one saved input, reported as case 0.
pub fn run_file(format: Format, path: &Path, budget: usize) -> std::io::Result<()> {
    install_panic_hook();
    let bytes = std::fs::read(path)?;
    let ctx = targets::Context::new(format);
    alloc::set_budget(budget);
    // qbench's own memory budget, as `--max-memory` sets it, well inside the allocator's
    // cap: it limits one tensor (and a plan's constants), and a run holds several.
    qbench_models::budget::MemoryBudget::bytes(budget as u64 / 4).set_global();
    run_one(format, &bytes, &ctx, 0);
    Ok(())
}
