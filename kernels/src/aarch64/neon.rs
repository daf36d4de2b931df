//! The Neon rung: aarch64 Advanced SIMD without the dot-product extension.
//!
//! This file owns the rung's B layout (`NR = 16`, `KR = 1`, activations stored as plain u8,
//! `a_offset = 0`) and its one kernel, `neon_gemm_u8s8i32_4x16`, exact on full-range u8.
//!
//! Arithmetic scheme: widen both operands to i16 and multiply-accumulate into i32.
//! For each k, the packed B row of 16 s8 weights is sign-extended into two i16x8
//! (`sxtl`/`sxtl2`); eight consecutive activations of a row are zero-extended into one
//! i16x8 (`uxtl`), which holds every u8 exactly. `smlal`/`smlal2` by lane
//! (`vmlal_laneq_s16`/`vmlal_high_laneq_s16`) then add `a[r][k] · b[k][c]` into the 4 × 4
//! i32x4 accumulators of a 4-row × 16-column tile. Each product is at most
//! 255 · 128 = 32 640 in magnitude and is formed exactly in 32 bits; the accumulation is
//! modular, which is the contract's wrapping i32. The tile uses 16 accumulator registers,
//! 4 for the widened activations and 3 for B, within aarch64's 32.
//!
//! Why not `a_offset = 0x80` with s8 `smull` + `sadalp`: that is exact too, but with
//! `KR > 1` each column's partial sums land in separate lanes and need a horizontal
//! reduction, while the widening form needs none and keeps full-range u8 exact with one
//! kernel.

use core::arch::aarch64::{
    int16x8_t, int32x4_t, vdupq_n_s32, vget_low_s16, vget_low_s8, vld1_u8, vld1q_s8,
    vmlal_high_laneq_s16, vmlal_laneq_s16, vmovl_high_s8, vmovl_s8, vmovl_u8,
    vreinterpretq_s16_u16, vst1q_s32,
};

use crate::gemm::{drive, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels};
use crate::isa::Rung;

/// 4 rows × 16 columns, one k per B row (`KR = 1`).
struct Neon4x16;

impl MicroKernel for Neon4x16 {
    const MR: usize = 4;
    const NR: usize = 16;
    const KR: usize = 1;

    #[inline(always)]
    unsafe fn tile(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        acc: *mut i32,
        acc_stride: usize,
    ) {
        // SAFETY: the caller's contract (see `MicroKernel::tile`) is passed on unchanged;
        // `rows ≤ MR` selects a tile that touches only the rows that exist.
        unsafe {
            match rows {
                1 => tile_rows::<1>(kgroups, a, a_stride, b, acc, acc_stride),
                2 => tile_rows::<2>(kgroups, a, a_stride, b, acc, acc_stride),
                3 => tile_rows::<3>(kgroups, a, a_stride, b, acc, acc_stride),
                _ => tile_rows::<4>(kgroups, a, a_stride, b, acc, acc_stride),
            }
        }
    }
}

/// Accumulates one k (B row at `b`, activation lane `L` of each row's i16x8) into the tile.
///
/// # Safety
/// `b` points to 16 readable bytes.
#[inline(always)]
unsafe fn step<const R: usize, const L: i32>(
    sums: &mut [[int32x4_t; 4]; R],
    a: &[int16x8_t; R],
    b: *const i8,
) {
    // SAFETY: 16 bytes at `b` are readable (caller's contract); NEON is baseline on aarch64.
    unsafe {
        let w = vld1q_s8(b);
        let lo = vmovl_s8(vget_low_s8(w));
        let hi = vmovl_high_s8(w);
        for (s, &x) in sums.iter_mut().zip(a) {
            s[0] = vmlal_laneq_s16::<L>(s[0], vget_low_s16(lo), x);
            s[1] = vmlal_high_laneq_s16::<L>(s[1], lo, x);
            s[2] = vmlal_laneq_s16::<L>(s[2], vget_low_s16(hi), x);
            s[3] = vmlal_high_laneq_s16::<L>(s[3], hi, x);
        }
    }
}

/// Eight activations of each row at byte offset `k`, zero-extended to i16.
///
/// # Safety
/// Each of the `R` rows at `a + r · a_stride + k` has 8 readable bytes.
#[inline(always)]
unsafe fn load_a<const R: usize>(a: *const u8, a_stride: usize, k: usize) -> [int16x8_t; R] {
    core::array::from_fn(|r| {
        // SAFETY: the caller guarantees 8 readable bytes in row r at offset k; NEON is
        // baseline on aarch64.
        unsafe { vreinterpretq_s16_u16(vmovl_u8(vld1_u8(a.add(r * a_stride + k)))) }
    })
}

/// The kernel for exactly `R` rows.
///
/// # Safety
/// As [`MicroKernel::tile`] with `rows = R ≤ 4` and `KR = 1` (so `kgroups` is k).
#[inline(always)]
unsafe fn tile_rows<const R: usize>(
    k: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    // SAFETY: NEON is baseline on aarch64.
    let mut sums = [[unsafe { vdupq_n_s32(0) }; 4]; R];
    let full = k / 8 * 8;
    let mut kk = 0;
    while kk < full {
        // SAFETY: bytes kk..kk + 8 ≤ full ≤ k lie within each row; B rows kk..kk + 8 lie
        // within the panel of k rows of 16 bytes.
        unsafe {
            let x = load_a::<R>(a, a_stride, kk);
            let bk = b.add(kk * 16);
            step::<R, 0>(&mut sums, &x, bk);
            step::<R, 1>(&mut sums, &x, bk.add(16));
            step::<R, 2>(&mut sums, &x, bk.add(32));
            step::<R, 3>(&mut sums, &x, bk.add(48));
            step::<R, 4>(&mut sums, &x, bk.add(64));
            step::<R, 5>(&mut sums, &x, bk.add(80));
            step::<R, 6>(&mut sums, &x, bk.add(96));
            step::<R, 7>(&mut sums, &x, bk.add(112));
        }
        kk += 8;
    }
    let tail = k - full;
    if tail > 0 {
        // SAFETY: rows are readable up to round_up(k, 16) ≥ full + 8 bytes (padding beyond
        // k holds zeros and its lanes are never used); only B rows full..k are read.
        unsafe {
            let x = load_a::<R>(a, a_stride, full);
            let bk = b.add(full * 16);
            step::<R, 0>(&mut sums, &x, bk);
            if tail > 1 {
                step::<R, 1>(&mut sums, &x, bk.add(16));
            }
            if tail > 2 {
                step::<R, 2>(&mut sums, &x, bk.add(32));
            }
            if tail > 3 {
                step::<R, 3>(&mut sums, &x, bk.add(48));
            }
            if tail > 4 {
                step::<R, 4>(&mut sums, &x, bk.add(64));
            }
            if tail > 5 {
                step::<R, 5>(&mut sums, &x, bk.add(80));
            }
            if tail > 6 {
                step::<R, 6>(&mut sums, &x, bk.add(96));
            }
        }
    }
    for (r, s) in sums.iter().enumerate() {
        for (j, &v) in s.iter().enumerate() {
            // SAFETY: row r < R of the tile has NR = 16 values at `acc_stride`; j < 4.
            unsafe { vst1q_s32(acc.add(r * acc_stride + j * 4), v) };
        }
    }
}

/// # Safety
/// The CPU has NEON (always true on aarch64); A and B were packed for this rung.
#[target_feature(enable = "neon")]
unsafe fn run(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: NEON is enabled for this function; the layouts are the caller's promise.
    unsafe { drive::<Neon4x16>(a, b, out) }
}

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::Neon,
    nr: Neon4x16::NR,
    kr: Neon4x16::KR,
    a_offset: 0,
    reads_exactly_k: false,
    kernels: &[KernelEntry {
        name: "neon_gemm_u8s8i32_4x16",
        mr: Neon4x16::MR,
        max_activation: 255,
        run,
    }],
};
