//! The portable rung: a register-blocked micro-kernel in plain Rust that every
//! architecture runs. It is the production fallback, registered like any ISA (unlike
//! [`crate::reference`], which is only the oracle).

use crate::gemm::{drive, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels};
use crate::isa::Rung;

/// 4 rows × 16 columns, k in groups of 4 (the common B layout).
struct Generic;

impl MicroKernel for Generic {
    const MR: usize = 4;
    const NR: usize = 16;
    const KR: usize = 4;

    unsafe fn tile(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        acc: *mut i32,
        acc_stride: usize,
    ) {
        let mut sums = [[0i32; 16]; 4];
        for g in 0..kgroups {
            // SAFETY: group g of the panel is 64 bytes at offset 64·g (caller's contract).
            let bg: &[i8; 64] = unsafe { &*b.add(g * 64).cast::<[i8; 64]>() };
            for (r, row_sums) in sums.iter_mut().enumerate().take(rows) {
                // SAFETY: row r holds at least kgroups·4 bytes (caller's contract).
                let ar: &[u8; 4] = unsafe { &*a.add(r * a_stride + g * 4).cast::<[u8; 4]>() };
                let [a0, a1, a2, a3] = ar.map(i32::from);
                for (sum, w) in row_sums.iter_mut().zip(bg.chunks_exact(4)) {
                    // Four products of |u8·s8| ≤ 32640 cannot overflow; only the running
                    // sum may wrap, as the contract allows.
                    let dot = a0 * i32::from(w[0])
                        + a1 * i32::from(w[1])
                        + a2 * i32::from(w[2])
                        + a3 * i32::from(w[3]);
                    *sum = sum.wrapping_add(dot);
                }
            }
        }
        for (r, row_sums) in sums.iter().enumerate().take(rows) {
            // SAFETY: row r < rows of the tile has NR values at `acc_stride` (caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(row_sums.as_ptr(), acc.add(r * acc_stride), 16)
            };
        }
    }
}

/// # Safety
/// A and B were packed for the generic layout.
unsafe fn run(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: the generic kernel needs no CPU feature; the layouts are the caller's promise.
    unsafe { drive::<Generic>(a, b, out) }
}

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::Generic,
    nr: Generic::NR,
    kr: Generic::KR,
    a_offset: 0,
    reads_exactly_k: true,
    kernels: &[KernelEntry {
        name: "generic_gemm_u8s8i32_4x16",
        mr: Generic::MR,
        max_activation: 255,
        run,
    }],
};
