//! How one GEMM call is split across threads: into bands of output rows, each a whole
//! number of micro-kernel tiles, and only when every band has enough work to pay for
//! handing it to another thread.
//!
//! Rows, not columns: a band of rows is a contiguous piece of the output, so each thread
//! owns its part outright, and every thread streams the same packed weights, which stay
//! shared in the last-level cache. Calls with fewer rows than two tiles (a GEMV at batch
//! 1) stay on the calling thread.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The least work (multiply-adds) worth a band of its own. Handing a band to a rayon
/// worker costs a few microseconds when the worker has to be woken; at the ~450 GOP/s of
/// one AVX-512 VNNI core, 2^20 multiply-adds take about 5 µs.
const MIN_MACS_PER_BAND: usize = 1 << 20;

/// [`MIN_MACS_PER_BAND`], or 1 once [`split_every_call`] has been called.
static MIN_MACS: AtomicUsize = AtomicUsize::new(MIN_MACS_PER_BAND);

/// Splits every call with several threads and tiles, however small, so tests reach the
/// split on small shapes. Only speed depends on it, never a result.
pub fn split_every_call() {
    MIN_MACS.store(1, Ordering::Relaxed);
}

/// How many of `threads` threads a product of `macs` multiply-adds can use so that each
/// gets enough work to pay for the hand-off (at least 1). The fp32 baseline follows the
/// same rule, so both sides of a speedup split alike.
pub(crate) fn useful_threads(macs: usize, threads: usize) -> usize {
    threads.min(macs / MIN_MACS.load(Ordering::Relaxed)).max(1)
}

/// The row bands of a `rows × n × k` call with micro-kernel height `mr` on `threads`
/// threads: one band (all rows) when splitting would not pay, else at most `threads`
/// bands of whole tiles, the last one holding the remainder.
pub(crate) fn row_bands(
    rows: usize,
    n: usize,
    k: usize,
    mr: usize,
    threads: usize,
) -> Vec<Range<usize>> {
    let tiles = rows.div_ceil(mr.max(1));
    let macs = rows.saturating_mul(n).saturating_mul(k.max(1));
    let bands = useful_threads(macs, threads.min(tiles));
    let tiles_per_band = tiles.div_ceil(bands);
    let band_rows = tiles_per_band * mr.max(1);
    (0..rows)
        .step_by(band_rows)
        .map(|start| start..(start + band_rows).min(rows))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_or_little_work_is_one_band() {
        assert_eq!(row_bands(512, 512, 512, 6, 1), vec![0..512]);
        assert_eq!(row_bands(16, 16, 16, 6, 8), vec![0..16]);
        // A GEMV has one tile of rows, whatever its size.
        assert_eq!(row_bands(1, 4096, 4096, 6, 4), vec![0..1]);
    }

    #[test]
    fn bands_are_whole_tiles_and_cover_every_row_once() {
        for (rows, mr, threads) in [
            (512, 6, 2),
            (128, 6, 3),
            (49, 6, 2),
            (13, 4, 8),
            (1000, 8, 7),
        ] {
            let bands = row_bands(rows, 1024, 1024, mr, threads);
            assert!(
                bands.len() <= threads,
                "{rows} rows, {threads} threads: {bands:?}"
            );
            assert!(bands.len() > 1, "{rows} rows, {threads} threads: {bands:?}");
            assert_eq!(bands.first().unwrap().start, 0);
            assert_eq!(bands.last().unwrap().end, rows);
            for pair in bands.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert_eq!(pair[0].len() % mr, 0, "{bands:?}");
            }
        }
    }
}
