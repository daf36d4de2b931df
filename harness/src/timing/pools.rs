//! The threads a measurement runs on: a rayon pool of exactly the requested size for our
//! kernels, and tract's own executor of the same size, so that every implementation in an
//! interleaved run gets the same number of threads.

use anyhow::{bail, Result};
use tract_linalg::multithread::Executor as TractExecutor;

/// Refuses a thread count above this machine's cores: latencies on more threads than
/// cores would time the scheduler's time-slicing, not the kernels. Every command that
/// takes `--threads` checks it here, before any work.
pub fn check_threads(threads: usize) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if threads > cores {
        bail!(
            "threads {threads}: this machine has {cores} cores; latencies on more threads than cores would measure time-slicing (run those thread counts on a machine that has the cores)"
        );
    }
    Ok(())
}

/// Runs `work` where rayon parallelism uses exactly `threads` threads: on the calling
/// thread for 1 (whose kernels then never touch rayon), else inside a pool of `threads`
/// workers built for it, so a 4-thread measurement is not quietly capped by, or shared
/// with, the global pool.
pub fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
    if threads <= 1 {
        return Ok(work());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("qbench-measure-{i}"))
        .build()
        .map_err(|e| anyhow::anyhow!("building a pool of {threads} threads: {e}"))?;
    Ok(pool.install(work))
}

/// tract's executor for `threads` threads: its own pool of that many workers (tract-linalg's
/// `multithread-mm` feature), or its single-threaded default for one.
pub fn tract_executor(threads: usize) -> TractExecutor {
    if threads <= 1 {
        TractExecutor::SingleThread
    } else {
        TractExecutor::multithread(threads)
    }
}
