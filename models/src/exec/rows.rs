//! Row-wise work of the fp32 executor (softmax, layer norm, GELU, batched MatMul) shared
//! across threads: whole rows per thread, so each row is computed exactly as on one
//! thread and the result has the same bits for any thread count.

use rayon::prelude::*;

/// The least values worth a share of their own: below this, handing work to another
/// thread costs more than it saves (a rayon hand-off is a few microseconds; a softmax
/// row of 128 scores takes well under one).
const MIN_VALUES_PER_SHARE: usize = 1 << 14;

/// How many rows of `row_len` values each share takes when `rows` rows are split across
/// `threads` threads; `rows` (one share) when splitting would not pay.
pub(crate) fn rows_per_share(rows: usize, row_len: usize, threads: usize) -> usize {
    let values = rows.saturating_mul(row_len.max(1));
    let shares = threads.min(rows).min(values / MIN_VALUES_PER_SHARE).max(1);
    rows.div_ceil(shares).max(1)
}

/// Runs `f` on `data` (rows of `row_len` values) in shares of whole rows on up to
/// `threads` threads of the current rayon pool.
pub(crate) fn for_rows(
    data: &mut [f32],
    row_len: usize,
    threads: usize,
    f: impl Fn(&mut [f32]) + Sync,
) {
    let row_len = row_len.max(1);
    let rows = data.len() / row_len;
    let per = rows_per_share(rows, row_len, threads);
    if per >= rows {
        f(data);
    } else {
        data.par_chunks_mut(per * row_len).for_each(&f);
    }
}

/// As [`for_rows`], reading `input` and writing `output`, row for row.
pub(crate) fn map_rows(
    input: &[f32],
    output: &mut [f32],
    row_len: usize,
    threads: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let row_len = row_len.max(1);
    let rows = output.len() / row_len;
    let per = rows_per_share(rows, row_len, threads);
    if per >= rows {
        f(input, output);
    } else {
        input
            .par_chunks(per * row_len)
            .zip(output.par_chunks_mut(per * row_len))
            .for_each(|(x, y)| f(x, y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_work_or_one_thread_is_one_share_and_shares_are_whole_rows() {
        assert_eq!(rows_per_share(128, 128, 1), 128);
        assert_eq!(rows_per_share(4, 16, 8), 4, "64 values do not pay");
        assert_eq!(rows_per_share(1536, 128, 2), 768);
        assert_eq!(rows_per_share(1537, 128, 2), 769);
        assert_eq!(
            rows_per_share(3, 1 << 16, 8),
            1,
            "never more shares than rows"
        );
    }

    #[test]
    fn every_row_is_visited_once_whatever_the_split() {
        for threads in [1, 2, 3, 7] {
            let mut data: Vec<f32> = (0..1000 * 40).map(|i| i as f32).collect();
            for_rows(&mut data, 40, threads, |rows| {
                for v in rows {
                    *v += 1.0;
                }
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
            let mut out = vec![0f32; data.len()];
            map_rows(&data, &mut out, 40, threads, |x, y| y.copy_from_slice(x));
            assert_eq!(out, data);
        }
    }
}
