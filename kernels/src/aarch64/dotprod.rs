//! The NeonDotprod rung: aarch64 Advanced SIMD with the dot-product extension (`sdot`).
//!
//! This file owns the rung's B layout (`NR = 8`, `KR = 4`, activations stored as
//! `a XOR 0x80`, i.e. `a_offset = 0x80`) and its one kernel, `neondot_gemm_u8s8i32_8x8`,
//! exact on full-range u8.
//!
//! Arithmetic scheme: with `a_offset = 0x80` a stored activation byte read as s8 is
//! `a − 128`, so both operands are s8 and `sdot` (s8 × s8, four products summed into
//! each i32 lane) is exact; the driver's epilogue adds back `128 · Σk b[k][c]` through
//! `col_coef = za − 128`. Each `sdot` adds at most 4 · 128 · 128 = 65 536 per lane and the
//! accumulation is modular, which is the contract's wrapping i32.
//!
//! One B k-group of the 8-column panel is 32 bytes: columns 0–3 in one register, 4–7 in
//! the next, each column's four weights in one 32-bit lane. Sixteen bytes of an A row
//! hold four consecutive k-groups, so one load per row feeds four rounds of the indexed
//! form `sdot vd.4s, vn.16b, vm.4b[lane]` with lanes 0..3; a tail of `kgroups % 4`
//! groups uses the first lanes of one more load (the row padding keeps it in bounds).
//!
//! Register blocking: 8 rows × 8 columns = 16 i32x4 accumulators, plus 8 A rows and 2 B
//! registers: 26 of aarch64's 32 vector registers. An 8 × 16 tile would need 32
//! accumulators alone; 8 × 8 loads 4 B + A vectors per 16 `sdot`s against 5 for 4 × 16.
//!
//! `vdotq_laneq_s32` is still unstable, so `sdot` is emitted with `asm!` inside functions
//! inlined into the `#[target_feature(enable = "neon,dotprod")]` entry point.

use core::arch::aarch64::{int32x4_t, int8x16_t, vdupq_n_s32, vld1q_s8, vst1q_s32};
use core::arch::asm;

use crate::gemm::{drive, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels};
use crate::isa::Rung;

/// 8 rows × 8 columns, k in groups of 4.
struct NeonDot8x8;

impl MicroKernel for NeonDot8x8 {
    const MR: usize = 8;
    const NR: usize = 8;
    const KR: usize = 4;

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
        // SAFETY: the caller's contract (see `MicroKernel::tile`, including dotprod support)
        // is passed on unchanged; `rows ≤ MR` selects a tile that reads only existing rows.
        unsafe {
            match rows {
                1 => tile_rows::<1>(kgroups, a, a_stride, b, acc, acc_stride),
                2 => tile_rows::<2>(kgroups, a, a_stride, b, acc, acc_stride),
                3 => tile_rows::<3>(kgroups, a, a_stride, b, acc, acc_stride),
                4 => tile_rows::<4>(kgroups, a, a_stride, b, acc, acc_stride),
                5 => tile_rows::<5>(kgroups, a, a_stride, b, acc, acc_stride),
                6 => tile_rows::<6>(kgroups, a, a_stride, b, acc, acc_stride),
                7 => tile_rows::<7>(kgroups, a, a_stride, b, acc, acc_stride),
                _ => tile_rows::<8>(kgroups, a, a_stride, b, acc, acc_stride),
            }
        }
    }
}

/// `acc + Σj b[4i + j] · a[4L + j]` in lane i: one indexed `sdot`.
///
/// # Safety
/// The CPU supports the dot-product extension.
#[inline(always)]
unsafe fn sdot<const L: u32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads and writes the named vector registers; the caller
    // guarantees the CPU has it. `L < 4` is a valid lane for the `.4b` element form.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            b = in(vreg) b,
            a = in(vreg) a,
            lane = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Accumulates one k-group (B at `b`, lane `L` of each row's A vector) into the tile.
///
/// # Safety
/// The CPU supports the dot-product extension; `b` points to 32 readable bytes.
#[inline(always)]
unsafe fn group<const R: usize, const L: u32>(
    sums: &mut [[int32x4_t; 2]; R],
    a: &[int8x16_t; R],
    b: *const i8,
) {
    // SAFETY: 32 bytes at `b` are readable and dotprod is available (caller's contract).
    unsafe {
        let b0 = vld1q_s8(b);
        let b1 = vld1q_s8(b.add(16));
        for (s, &x) in sums.iter_mut().zip(a) {
            s[0] = sdot::<L>(s[0], b0, x);
            s[1] = sdot::<L>(s[1], b1, x);
        }
    }
}

/// Sixteen bytes (four k-groups) of each row at byte offset `off`, as s8.
///
/// # Safety
/// Each of the `R` rows at `a + r · a_stride + off` has 16 readable bytes.
#[inline(always)]
unsafe fn load_a<const R: usize>(a: *const u8, a_stride: usize, off: usize) -> [int8x16_t; R] {
    core::array::from_fn(|r| {
        // SAFETY: the caller guarantees 16 readable bytes in row r at `off`.
        unsafe { vld1q_s8(a.add(r * a_stride + off).cast::<i8>()) }
    })
}

/// The kernel for exactly `R` rows.
///
/// # Safety
/// As [`MicroKernel::tile`] with `rows = R ≤ 8`.
#[inline(always)]
unsafe fn tile_rows<const R: usize>(
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    // SAFETY: NEON is baseline on aarch64.
    let mut sums = [[unsafe { vdupq_n_s32(0) }; 2]; R];
    let blocks = kgroups / 4;
    for blk in 0..blocks {
        // SAFETY: groups 4·blk..4·blk + 4 ≤ kgroups: 16 bytes of each row and 4 · 32 bytes
        // of the panel, all within the caller's buffers; dotprod is the caller's promise.
        unsafe {
            let x = load_a::<R>(a, a_stride, blk * 16);
            let bg = b.add(blk * 128);
            group::<R, 0>(&mut sums, &x, bg);
            group::<R, 1>(&mut sums, &x, bg.add(32));
            group::<R, 2>(&mut sums, &x, bg.add(64));
            group::<R, 3>(&mut sums, &x, bg.add(96));
        }
    }
    let tail = kgroups % 4;
    if tail > 0 {
        // SAFETY: rows are readable up to round_up(kgroups · 4, 16) = 16 · (blocks + 1)
        // bytes (lanes past the tail are padding and never used); only the panel's last
        // `tail` groups are read.
        unsafe {
            let x = load_a::<R>(a, a_stride, blocks * 16);
            let bg = b.add(blocks * 128);
            group::<R, 0>(&mut sums, &x, bg);
            if tail > 1 {
                group::<R, 1>(&mut sums, &x, bg.add(32));
            }
            if tail > 2 {
                group::<R, 2>(&mut sums, &x, bg.add(64));
            }
        }
    }
    for (r, s) in sums.iter().enumerate() {
        // SAFETY: row r < R of the tile has NR = 8 values at `acc_stride`.
        unsafe {
            vst1q_s32(acc.add(r * acc_stride), s[0]);
            vst1q_s32(acc.add(r * acc_stride + 4), s[1]);
        }
    }
}

/// # Safety
/// The CPU has NEON and the dot-product extension; A and B were packed for this rung.
#[target_feature(enable = "neon,dotprod")]
unsafe fn run(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: dotprod is enabled for this function (the caller checked the CPU); the
    // layouts are the caller's promise.
    unsafe { drive::<NeonDot8x8>(a, b, out) }
}

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::NeonDotprod,
    nr: NeonDot8x8::NR,
    kr: NeonDot8x8::KR,
    a_offset: 0x80,
    reads_exactly_k: false,
    kernels: &[KernelEntry {
        name: "neondot_gemm_u8s8i32_8x8",
        mr: NeonDot8x8::MR,
        max_activation: 255,
        run,
    }],
};
