//! The AVX2 rung: this file owns its two micro-kernels, their `#[target_feature]` entry
//! points and their registration.
//!
//! Scheme: per k-group (4 values of k) the kernels load the B panel's `NR / 8` ymm vectors
//! of signed weights (`[column][kr]`, 32 bytes per 8 columns), broadcast each row's 4
//! activation bytes to every lane, and reduce each column's 4 products into one i32 lane
//! with `vpmaddubsw` (u8 × s8, adjacent pairs summed into **saturating** i16) followed by
//! `vpmaddwd` against ones (i16 pairs into i32) and a wrapping `vpaddd`.
//!
//! * `avx2_gemm_u7s8i32`: exact only for activations ≤ 127. A pair sum of u8 × s8 can
//!   reach 2·255·128 = 65280 and saturate i16; with 7-bit activations it is at most
//!   2·127·128 = 32512 in magnitude, so `vpmaddubsw` never saturates and every step is
//!   exact. The dispatcher routes data with a larger value to the next kernel.
//! * `avx2_gemm_u8s8i32`: exact on all u8. Each activation is split as
//!   `a = (a & 0x7F) + (a & 0x80)`. The low part is 7-bit (exact as above); the high part
//!   is 0 or 128, so its pair sums are `128·(w0 + w1)` in [−32768, 32512], which i16
//!   holds exactly. Both halves go through `vpmaddwd` with ones separately (their i16 sum
//!   could overflow) and are added in i32, which is exact, so the total equals the
//!   contract's wrapping sum.

use core::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_setzero_si256,
    _mm256_storeu_si256,
};

use crate::gemm::{drive, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels};
use crate::isa::Rung;

/// ymm vectors of 8 columns per tile row (shared by both kernels: one B layout).
const V: usize = 2;
/// Columns per panel.
const NR: usize = 8 * V;

/// How one k-group of one row is multiplied into its accumulators.
trait Scheme {
    /// Adds `Σ_{j<4} a[j]·w[c][j]` for each column of `w` into `sums`.
    ///
    /// # Safety
    /// AVX2 is available.
    unsafe fn madd(sums: &mut [__m256i; V], a: i32, w: &[__m256i; V]);
}

/// 7-bit activations: one `vpmaddubsw` + `vpmaddwd` per vector.
struct U7;

impl Scheme for U7 {
    #[inline(always)]
    unsafe fn madd(sums: &mut [__m256i; V], a: i32, w: &[__m256i; V]) {
        // SAFETY: AVX2 is available (caller's contract).
        unsafe {
            let x = _mm256_set1_epi32(a);
            let ones = _mm256_set1_epi16(1);
            for (s, &w) in sums.iter_mut().zip(w) {
                let pairs = _mm256_maddubs_epi16(x, w);
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(pairs, ones));
            }
        }
    }
}

/// Full-range activations: low 7 bits and the top bit in two exact `vpmaddubsw`.
struct U8;

impl Scheme for U8 {
    #[inline(always)]
    unsafe fn madd(sums: &mut [__m256i; V], a: i32, w: &[__m256i; V]) {
        // SAFETY: AVX2 is available (caller's contract).
        unsafe {
            let x = _mm256_set1_epi32(a);
            let ones = _mm256_set1_epi16(1);
            let lo = _mm256_and_si256(x, _mm256_set1_epi32(0x7F7F_7F7F));
            let hi = _mm256_and_si256(x, _mm256_set1_epi32(0x8080_8080_u32 as i32));
            for (s, &w) in sums.iter_mut().zip(w) {
                let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, w), ones);
                let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, w), ones);
                *s = _mm256_add_epi32(*s, _mm256_add_epi32(lo, hi));
            }
        }
    }
}

/// The tile for a const row count `R`.
///
/// # Safety
/// AVX2 is available; the [`MicroKernel::tile`] contract with `rows = R` and `NR` columns.
#[inline(always)]
unsafe fn body<S: Scheme, const R: usize>(
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    // SAFETY: AVX2 is available (caller's contract).
    let mut sums = [[unsafe { _mm256_setzero_si256() }; V]; R];
    for g in 0..kgroups {
        // SAFETY: group g of the panel is 32·V bytes at offset 32·V·g (caller's contract).
        let w: [__m256i; V] =
            core::array::from_fn(|v| unsafe { _mm256_loadu_si256(b.add(32 * (V * g + v)).cast()) });
        for (r, row) in sums.iter_mut().enumerate() {
            // SAFETY: row r holds kgroups·4 readable bytes (caller's contract), read
            // unaligned; AVX2 is available.
            unsafe {
                let x = a.add(r * a_stride + 4 * g).cast::<i32>().read_unaligned();
                S::madd(row, x, &w);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (v, s) in row.iter().enumerate() {
            // SAFETY: row r < R of the tile has NR values at `acc_stride`; 8·v + 8 ≤ NR.
            unsafe { _mm256_storeu_si256(acc.add(r * acc_stride + 8 * v).cast(), *s) };
        }
    }
}

/// Dispatches a partial tile to the body for its exact row count.
///
/// # Safety
/// AVX2 is available; the [`MicroKernel::tile`] contract with `rows ≤ MAX_R`.
#[inline(always)]
unsafe fn dispatch<S: Scheme, const MAX_R: usize>(
    rows: usize,
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    debug_assert!(rows <= MAX_R && MAX_R <= 6);
    // SAFETY: every arm forwards the caller's contract with `R = rows ≤ MAX_R`.
    unsafe {
        match rows {
            1 => body::<S, 1>(kgroups, a, a_stride, b, acc, acc_stride),
            2 => body::<S, 2>(kgroups, a, a_stride, b, acc, acc_stride),
            3 => body::<S, 3>(kgroups, a, a_stride, b, acc, acc_stride),
            4 if MAX_R >= 4 => body::<S, 4>(kgroups, a, a_stride, b, acc, acc_stride),
            5 if MAX_R >= 5 => body::<S, 5>(kgroups, a, a_stride, b, acc, acc_stride),
            _ => body::<S, MAX_R>(kgroups, a, a_stride, b, acc, acc_stride),
        }
    }
}

/// 7-bit kernel: 6 rows × 16 columns.
struct Avx2U7;

impl MicroKernel for Avx2U7 {
    const MR: usize = 6;
    const NR: usize = NR;
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
        // SAFETY: forwarded from the caller's contract (rows ≤ MR).
        unsafe { dispatch::<U7, 6>(rows, kgroups, a, a_stride, b, acc, acc_stride) }
    }
}

/// Full-range kernel: 4 rows × 16 columns.
struct Avx2U8;

impl MicroKernel for Avx2U8 {
    const MR: usize = 4;
    const NR: usize = NR;
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
        // SAFETY: forwarded from the caller's contract (rows ≤ MR).
        unsafe { dispatch::<U8, 4>(rows, kgroups, a, a_stride, b, acc, acc_stride) }
    }
}

/// # Safety
/// The CPU supports AVX2; A and B were packed for this rung's layout; every activation
/// is at most 127.
#[target_feature(enable = "avx2")]
unsafe fn run_u7(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: AVX2 is enabled on this function; the layouts are the caller's promise.
    unsafe { drive::<Avx2U7>(a, b, out) }
}

/// # Safety
/// The CPU supports AVX2; A and B were packed for this rung's layout.
#[target_feature(enable = "avx2")]
unsafe fn run_u8(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: AVX2 is enabled on this function; the layouts are the caller's promise.
    unsafe { drive::<Avx2U8>(a, b, out) }
}

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::Avx2,
    nr: NR,
    kr: 4,
    a_offset: 0,
    reads_exactly_k: false,
    kernels: &[
        KernelEntry {
            name: "avx2_gemm_u7s8i32_6x16",
            mr: Avx2U7::MR,
            max_activation: 127,
            run: run_u7,
        },
        KernelEntry {
            name: "avx2_gemm_u8s8i32_4x16",
            mr: Avx2U8::MR,
            max_activation: 255,
            run: run_u8,
        },
    ],
};
