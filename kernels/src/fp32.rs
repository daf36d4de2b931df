//! The fp32 baseline: single-precision GEMM through the `gemm` crate, whose AVX-512
//! kernels (enabled by its `x86-v4` feature) reach the FMA peak on this class of CPU.
//!
//! Speedups of the int8 kernels are quoted against this, never against a naive loop.

/// The crate behind the baseline, as reports name it (`fp32-gemm`).
pub const BASELINE_NAME: &str = "fp32-gemm";

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major and dense, on `threads` threads (1 = the
/// calling thread only).
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    sgemm_strided(m, n, k, a, k, b, n, c, n, false, threads);
}

/// `c[m×n] += a[m×k] · b[k×n]` with row strides `lda`, `ldb`, `ldc` (accumulates into c).
#[allow(clippy::too_many_arguments)] // BLAS shape: every argument is a dimension or stride
pub fn sgemm_into(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) {
    sgemm_strided(m, n, k, a, lda, b, ldb, c, ldc, true, threads);
}

/// `c[m×n] (+)= op(a) · op(b)` with dense operands, where `op(a)` is `a` read as m×k
/// row-major, or, when `trans_a`, `a` stored k×m row-major and read transposed (likewise
/// `b`: k×n, or n×k when `trans_b`). `accumulate` adds into `c` instead of overwriting it.
/// The trainer's backward passes need the transposed forms (`dW = dYᵀ·X`, `dX = dY·W`);
/// strides express them without copying.
///
/// # Panics
/// When a slice is shorter than its shape says.
#[allow(clippy::too_many_arguments)] // BLAS shape: every argument is a dimension or flag
pub fn sgemm_trans(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    // Checked products: a wrapped `m * k` would pass these and let the unsafe call read
    // past the buffers.
    let fits =
        |len: usize, rows: usize, cols: usize| rows.checked_mul(cols).is_some_and(|n| len >= n);
    assert!(
        fits(a.len(), m, k),
        "sgemm_trans: a holds {} values, needs {m}x{k}",
        a.len()
    );
    assert!(
        fits(b.len(), k, n),
        "sgemm_trans: b holds {} values, needs {k}x{n}",
        b.len()
    );
    assert!(
        fits(c.len(), m, n),
        "sgemm_trans: c holds {} values, needs {m}x{n}",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // (column stride, row stride) of each operand as the product reads it.
    let (a_cs, a_rs) = if trans_a { (m, 1) } else { (1, k) };
    let (b_cs, b_rs) = if trans_b { (k, 1) } else { (1, n) };
    let parallelism = parallelism(m, n, k, threads);
    // SAFETY: every element (i, p) of op(a) lies at i·a_rs + p·a_cs < m·k ≤ a.len(), and
    // likewise for op(b) and c (checked above); `c` is `&mut` so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    // Whether `len` values hold `rows` rows of `cols` at stride `ld`: `(rows-1)*ld + cols`
    // in checked arithmetic. Unchecked, [1, 2^32, 2^32] wrapped it to 0 and the unsafe
    // call below read far past an empty buffer.
    let holds = |len: usize, rows: usize, cols: usize, ld: usize| {
        rows == 0
            || cols == 0
            || (rows - 1)
                .checked_mul(ld)
                .and_then(|x| x.checked_add(cols))
                .is_some_and(|need| len >= need)
    };
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "sgemm: a stride is smaller than its row"
    );
    // The strides go to the kernel as isize.
    assert!(
        [lda, ldb, ldc]
            .iter()
            .all(|&ld| isize::try_from(ld).is_ok()),
        "sgemm: a stride exceeds isize::MAX"
    );
    assert!(
        holds(a.len(), m, k, lda),
        "sgemm: a holds {} values, {m}x{k} at stride {lda} needs more",
        a.len()
    );
    assert!(
        holds(b.len(), k, n, ldb),
        "sgemm: b holds {} values, {k}x{n} at stride {ldb} needs more",
        b.len()
    );
    assert!(
        holds(c.len(), m, n, ldc),
        "sgemm: c holds {} values, {m}x{n} at stride {ldc} needs more",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = parallelism(m, n, k, threads);
    // SAFETY: the buffers hold the strided row-major shapes checked above (column stride
    // 1); `c` is `&mut` so it aliases neither input; with `read_dst` false c's old
    // contents are never read, with it true they are scaled by alpha = 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The `gemm` crate's parallelism for a product on `threads` threads: no more threads than
/// the int8 kernels would use for the same work (see `gemm::split`). Measured before this
/// rule, a 1x768x768 product on 2 threads took 50 µs, slower than on one.
fn parallelism(m: usize, n: usize, k: usize, threads: usize) -> gemm::Parallelism {
    let macs = m.saturating_mul(n).saturating_mul(k);
    match crate::gemm::split::useful_threads(macs, threads) {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    }
}

#[cfg(test)]
mod tests {
    /// 5 rows at stride 2^62 need 4·2^62 + 1 values: unchecked, that wrapped to 1, the
    /// one value `a` holds, and the GEMM read 2^64 bytes past it.
    #[test]
    #[should_panic(expected = "a holds 1 values")]
    fn a_wrapping_bounds_check_is_refused() {
        let mut c = [0f32; 5];
        super::sgemm_into(5, 1, 1, &[1.0], 1 << 62, &[1.0], 1, &mut c, 1, 1);
    }

    #[test]
    fn matches_a_naive_f64_product() {
        let (m, n, k) = (5, 7, 33);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5)
            .collect();
        let mut c = vec![f32::NAN; m * n];
        super::sgemm(m, n, k, &a, &b, &mut c, 1);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
                // Inputs are multiples of 1/4 and 1/2 with small sums: exact in f32.
                assert_eq!(f64::from(c[i * n + j]), want, "({i},{j})");
            }
        }
    }

    #[test]
    fn transposed_operands_match_a_naive_product() {
        let (m, n, k) = (4, 6, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
            let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
            let mut c = vec![1.0f32; m * n];
            super::sgemm_trans(m, n, k, &a, ta, &b, tb, &mut c, true, 1);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = 1.0 + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f32>();
                    // Small multiples of 1/2: every partial sum is exact in f32.
                    assert_eq!(c[i * n + j], want, "trans ({ta},{tb}) ({i},{j})");
                }
            }
        }
    }
}
