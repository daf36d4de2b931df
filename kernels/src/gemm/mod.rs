//! Packed int8 GEMM: `C = A · B`, u8 activations × s8 weights, i32 accumulators, with
//! three output stages (raw i32, dequantized f32, requantized u8).
//!
//! Weights are packed once into a [`PackedB`] whose layout belongs to one rung of the
//! ladder, together with their column sums, so zero-point corrections are applied in the
//! epilogue and never in the inner loop. Each call packs the activations (padding `k`,
//! computing row sums and the largest value) and then picks, among the rung's kernels,
//! the fastest whose input domain holds the data: AVX2's `vpmaddubsw` kernel is only
//! exact for 7-bit activations, so full-range data goes to its exact split kernel.
//!
//! Every call takes a thread count: with more than one, the rows of the output are split
//! into that many bands (see [`split`]) multiplied on the current rayon pool. Each output
//! value is computed by the same kernel over the same k order whatever the split, so the
//! result is bit-identical for any thread count.

mod driver;
mod pack;
mod params;
mod registry;
pub(crate) mod split;

use crate::error::KernelError;
pub use pack::PackedB;
pub(crate) use params::check_output;
pub use params::{ActZeroPoints, Dequant, MatA, MatB, Requant, Scales};
use rayon::prelude::*;
pub use registry::{kernels_of, KernelInfo};
#[doc(hidden)]
pub use split::split_every_call;

pub(crate) use driver::{drive, take_front, MicroKernel, Output, PackedA};
#[cfg(target_arch = "x86_64")]
pub(crate) use driver::{FusedStage, FusedTile};
pub(crate) use registry::{KernelEntry, RungKernels};

/// Zero-point-corrected i32 accumulators into `c` (`a.rows × b.n()` at stride `ldc`), on
/// `threads` threads (1 = the calling thread only). Returns the name of the kernel that ran.
pub fn gemm_i32(
    a: &MatA,
    b: &PackedB,
    c: &mut [i32],
    ldc: usize,
    threads: usize,
) -> Result<&'static str, KernelError> {
    check_call(a, b)?;
    check_output(c.len(), a.rows, b.n(), ldc)?;
    let mut out = Output::I32 { c, ldc };
    Ok(run(a, b, &mut out, threads))
}

/// Dequantized f32 outputs (dynamic quantization), on `threads` threads. Returns the name
/// of the kernel that ran.
pub fn gemm_dequant(
    a: &MatA,
    b: &PackedB,
    p: &Dequant,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) -> Result<&'static str, KernelError> {
    check_call(a, b)?;
    p.validate(a.rows, b.n())?;
    check_output(c.len(), a.rows, b.n(), ldc)?;
    let n = b.n();
    let b_scale = per_column(p.b_scale, n);
    let bias = p.bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
    let mut out = Output::Dequant {
        c,
        ldc,
        a_scale: p.a_scale,
        b_scale: &b_scale,
        bias: &bias,
    };
    Ok(run(a, b, &mut out, threads))
}

/// Requantized u8 outputs (static quantization), on `threads` threads. Returns the name of
/// the kernel that ran.
pub fn gemm_requant(
    a: &MatA,
    b: &PackedB,
    p: &Requant,
    c: &mut [u8],
    ldc: usize,
    threads: usize,
) -> Result<&'static str, KernelError> {
    check_call(a, b)?;
    p.validate(b.n())?;
    check_output(c.len(), a.rows, b.n(), ldc)?;
    let n = b.n();
    let bias = p.bias.map_or_else(|| vec![0; n], <[i32]>::to_vec);
    let multiplier = per_column(p.multiplier, n);
    let mut out = Output::Requant {
        c,
        ldc,
        bias: &bias,
        multiplier: &multiplier,
        out_zero_point: p.out_zero_point,
        qmin: i32::from(p.qmin),
        qmax: i32::from(p.qmax),
    };
    Ok(run(a, b, &mut out, threads))
}

fn check_call(a: &MatA, b: &PackedB) -> Result<(), KernelError> {
    a.validate()?;
    if a.cols != b.k() {
        return Err(KernelError::Shape(format!(
            "activations have {} columns but the packed weights have k = {}",
            a.cols,
            b.k()
        )));
    }
    Ok(())
}

fn per_column(values: &[f32], n: usize) -> Vec<f32> {
    if values.len() == 1 {
        vec![values[0]; n]
    } else {
        values.to_vec()
    }
}

fn run(a: &MatA, b: &PackedB, out: &mut Output, threads: usize) -> &'static str {
    let kernels = b.kernels();
    // Copying A costs as much as the multiply when k is small (a 1x1 conv over many
    // pixels); skip it when the kernels can read the caller's rows as they are.
    let direct = kernels.reads_exactly_k
        && kernels.a_offset == 0
        && a.cols.is_multiple_of(kernels.direct_k_multiple())
        && b.zero_points().is_none()
        && kernels.kernels[0].max_activation == u8::MAX;
    let packed_a = if direct {
        PackedA::direct(a, kernels.kr)
    } else {
        PackedA::pack(a, kernels.kr, kernels.a_offset)
    };
    let kernel = kernels.pick(packed_a.max, a.rows);
    if a.rows == 0 || b.n() == 0 {
        return kernel.name;
    }
    let bands = split::row_bands(a.rows, b.n(), a.cols, kernel.mr, threads);
    if bands.len() == 1 {
        // SAFETY: `PackedB` only holds kernels of rungs this CPU supports (checked when it
        // was packed), the packed A was laid out for this rung's `kr` and offset, and the
        // output was checked against `a.rows × b.n()` above.
        unsafe { (kernel.run)(&packed_a, b, out) };
    } else {
        let jobs: Vec<(PackedA, Output)> = bands
            .into_iter()
            .map(|rows| (packed_a.rows(rows.clone()), out.split_rows(rows.len())))
            .collect();
        jobs.into_par_iter().for_each(|(band_a, mut band_out)| {
            // SAFETY: as above, for each band: its rows of packed A and the output's
            // matching rows, renumbered from 0 (bands are disjoint and cover all rows).
            unsafe { (kernel.run)(&band_a, b, &mut band_out) };
        });
    }
    kernel.name
}
