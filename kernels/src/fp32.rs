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
    assert!(
        a.len() >= m * k,
        "sgemm: a holds {} values, {m}x{k} needs {}",
        a.len(),
        m * k
    );
    assert!(
        b.len() >= k * n,
        "sgemm: b holds {} values, {k}x{n} needs {}",
        b.len(),
        k * n
    );
    assert!(
        c.len() >= m * n,
        "sgemm: c holds {} values, {m}x{n} needs {}",
        c.len(),
        m * n
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the three buffers hold the row-major shapes checked above (row stride = the
    // column count, column stride 1), `c` is not aliased by `a` or `b` (it is `&mut`), and
    // `read_dst = false` means c's old contents are never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
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
}
