//! The AVX-512 VNNI rung: this file owns its micro-kernel, its `#[target_feature]` entry
//! point and its registration.
//!
//! Scheme: `vpdpbusd` (the wrapping form, never `vpdpbusds`) multiplies four unsigned
//! bytes by four signed bytes and adds the four products into one i32 lane. Each product
//! is at most 255·128 in magnitude, so the four-product sum is exact and only the running
//! accumulator wraps, exactly as the contract's wrapping i32 sums do: the kernel is
//! bit-exact on full-range u8 activations and needs no activation offset.
//!
//! Per k-group (4 values of k) the kernel loads the B panel's `NR / 16` zmm vectors of
//! signed weights (`[column][kr]`, 64 bytes per 16 columns) and, for each row, broadcasts
//! the row's 4 activation bytes to every lane (`vpbroadcastd` from an unaligned 4-byte
//! read), then issues one `vpdpbusd` per weight vector. The tile is `MR` rows × `NR`
//! columns of zmm accumulators. Partial tiles dispatch on a const row count so a short
//! tile (and the M = 1 GEMV) does no wasted work; tiles with few accumulators split k
//! into two interleaved chains to hide the `vpdpbusd` latency. For dequantized f32
//! output the kernel applies the corrections and the output stage to its accumulators in
//! registers ([`MicroKernel::tile_dequant`]) and stores each value once.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setzero_si512, _mm512_storeu_ps, _mm512_storeu_si512, _mm512_sub_epi32,
};

use crate::gemm::{
    drive, DequantTile, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels,
};
use crate::isa::Rung;

/// zmm vectors of 16 columns per tile row: 6 rows × 4 vectors = 24 accumulators, plus
/// 4 weight vectors and a broadcast, out of 32 zmm registers. (Measured on Zen 4 against
/// 8×48 and 12×32: 6×64 was fastest, and 64 divides every benchmark width.)
const V: usize = 4;
/// Rows per tile; `tile` dispatches rows 1..=5 to their own bodies.
const MR: usize = 6;

/// `MR` rows × `16·V` columns, k in groups of 4.
struct Vnni;

impl MicroKernel for Vnni {
    const MR: usize = MR;
    const NR: usize = 16 * V;
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
        // SAFETY: every arm forwards the caller's contract with `R = rows ≤ MR`.
        unsafe {
            match rows {
                1 => store_i32(&body::<1, 2>(kgroups, a, a_stride, b), acc, acc_stride),
                2 => store_i32(&body::<2, 1>(kgroups, a, a_stride, b), acc, acc_stride),
                3 => store_i32(&body::<3, 1>(kgroups, a, a_stride, b), acc, acc_stride),
                4 => store_i32(&body::<4, 1>(kgroups, a, a_stride, b), acc, acc_stride),
                5 => store_i32(&body::<5, 1>(kgroups, a, a_stride, b), acc, acc_stride),
                _ => store_i32(&body::<MR, 1>(kgroups, a, a_stride, b), acc, acc_stride),
            }
        }
    }

    // The f32 stage is applied in registers and stored once: going through the driver's
    // stack tile and epilogue measured 2–6 % slower at the shapes from 16×768×768 up.
    const FUSED_DEQUANT: bool = true;

    #[inline(always)]
    unsafe fn tile_dequant(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        out: &DequantTile,
    ) {
        // SAFETY: every arm forwards the caller's contract with `R = rows ≤ MR`.
        unsafe {
            match rows {
                1 => store_dequant(&body::<1, 2>(kgroups, a, a_stride, b), out),
                2 => store_dequant(&body::<2, 1>(kgroups, a, a_stride, b), out),
                3 => store_dequant(&body::<3, 1>(kgroups, a, a_stride, b), out),
                4 => store_dequant(&body::<4, 1>(kgroups, a, a_stride, b), out),
                5 => store_dequant(&body::<5, 1>(kgroups, a, a_stride, b), out),
                _ => store_dequant(&body::<MR, 1>(kgroups, a, a_stride, b), out),
            }
        }
    }
}

/// Stores the raw accumulators of `R` rows at `acc`, rows `acc_stride` values apart.
///
/// # Safety
/// AVX-512 F is available; `acc` has `NR` writable values at each of `R` rows.
#[inline(always)]
unsafe fn store_i32<const R: usize>(sums: &[[__m512i; V]; R], acc: *mut i32, acc_stride: usize) {
    for (r, row) in sums.iter().enumerate() {
        for (v, &s) in row.iter().enumerate() {
            // SAFETY: row r < R of the tile has NR values at `acc_stride`; 16·v + 16 ≤ NR.
            unsafe { _mm512_storeu_si512(acc.add(r * acc_stride + 16 * v).cast(), s) };
        }
    }
}

/// `y = ((acc − coef[r] · Σb[c]) as f32) · (sa[r] · sw[c]) + bias[c]` for `R` rows, the
/// operations of [`crate::epilogue::dequantize_row`] in the same order (no fused
/// multiply-add; the conversion rounds to nearest even like `as f32`), so bit-exact.
///
/// # Safety
/// AVX-512 F is available; `out` describes `R` rows of `NR` values.
#[inline(always)]
unsafe fn store_dequant<const R: usize>(sums: &[[__m512i; V]; R], out: &DequantTile) {
    debug_assert!(out.col_coef.len() == R && out.a_scale.len() == R);
    debug_assert!(out.col_sums.len() == Vnni::NR && out.b_scale.len() == Vnni::NR);
    debug_assert!(out.bias.len() == Vnni::NR);
    // SAFETY: the column slices hold NR = 16·V values (caller's contract), read unaligned.
    let (col_sums, b_scale, bias): ([__m512i; V], [_; V], [_; V]) = unsafe {
        (
            core::array::from_fn(|v| _mm512_loadu_si512(out.col_sums.as_ptr().add(16 * v).cast())),
            core::array::from_fn(|v| _mm512_loadu_ps(out.b_scale.as_ptr().add(16 * v))),
            core::array::from_fn(|v| _mm512_loadu_ps(out.bias.as_ptr().add(16 * v))),
        )
    };
    for (r, row) in sums.iter().enumerate() {
        let coef = out.col_coef[r];
        // SAFETY: AVX-512 F is available (caller's contract).
        let (coef_v, sa) = unsafe { (_mm512_set1_epi32(coef), _mm512_set1_ps(out.a_scale[r])) };
        for (v, &raw) in row.iter().enumerate() {
            // SAFETY: AVX-512 F is available; value (r, 16·v..16·v + 16) of the tile lies
            // in the output (caller's contract), written unaligned.
            unsafe {
                // A zero coefficient (zero activation zero point) leaves `raw` unchanged.
                let acc = if coef == 0 {
                    raw
                } else {
                    _mm512_sub_epi32(raw, _mm512_mullo_epi32(coef_v, col_sums[v]))
                };
                let s = _mm512_mul_ps(sa, b_scale[v]);
                let y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), s), bias[v]);
                _mm512_storeu_ps(out.c.add(r * out.ldc + 16 * v), y);
            }
        }
    }
}

/// One k-group for `R` rows into one accumulator set.
///
/// # Safety
/// AVX-512 F and VNNI are available; `a` points to `R` rows at `a_stride` with 4 readable
/// bytes each; `b` points to one 64·V-byte group of the panel.
#[inline(always)]
unsafe fn group<const R: usize>(
    sums: &mut [[__m512i; V]; R],
    a: *const u8,
    a_stride: usize,
    b: *const i8,
) {
    // SAFETY: the group holds V vectors of 64 bytes (caller's contract).
    let w: [__m512i; V] =
        core::array::from_fn(|v| unsafe { _mm512_loadu_si512(b.add(64 * v).cast()) });
    for (r, row) in sums.iter_mut().enumerate() {
        // SAFETY: row r has 4 readable bytes here (caller's contract), read unaligned;
        // AVX-512 F and VNNI are available (caller's contract).
        unsafe {
            let x = _mm512_set1_epi32(a.add(r * a_stride).cast::<i32>().read_unaligned());
            for (s, &w) in row.iter_mut().zip(&w) {
                *s = _mm512_dpbusd_epi32(*s, x, w);
            }
        }
    }
}

/// The accumulators of the tile for a const row count `R`, with `U` interleaved chains
/// over k.
///
/// # Safety
/// AVX-512 F/BW and VNNI are available; the [`MicroKernel::tile`] contract with `rows = R`.
#[inline(always)]
unsafe fn body<const R: usize, const U: usize>(
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
) -> [[__m512i; V]; R] {
    // SAFETY: AVX-512 F is available (caller's contract).
    let mut sums = [[[unsafe { _mm512_setzero_si512() }; V]; R]; U];
    let mut g = 0;
    while g + U <= kgroups {
        for (u, set) in sums.iter_mut().enumerate() {
            // SAFETY: group g + u < kgroups exists in A (4 bytes per row) and in the panel.
            unsafe { group::<R>(set, a.add(4 * (g + u)), a_stride, b.add(64 * V * (g + u))) };
        }
        g += U;
    }
    while g < kgroups {
        // SAFETY: as above, for the remaining groups.
        unsafe { group::<R>(&mut sums[0], a.add(4 * g), a_stride, b.add(64 * V * g)) };
        g += 1;
    }
    let (first, rest) = sums.split_first_mut().expect("U ≥ 1");
    for set in rest {
        for (row, other) in first.iter_mut().zip(set.iter()) {
            for (s, &o) in row.iter_mut().zip(other) {
                // SAFETY: AVX-512 F is available (caller's contract).
                *s = unsafe { _mm512_add_epi32(*s, o) };
            }
        }
    }
    *first
}

/// # Safety
/// The CPU supports AVX-512 F/BW and VNNI; A and B were packed for this rung's layout.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: the features are enabled on this function; the layouts are the caller's promise.
    unsafe { drive::<Vnni>(a, b, out) }
}

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::Avx512Vnni,
    nr: Vnni::NR,
    kr: Vnni::KR,
    a_offset: 0,
    reads_exactly_k: true,
    kernels: &[KernelEntry {
        name: "avx512vnni_gemm_u8s8i32_6x64",
        mr: Vnni::MR,
        max_activation: 255,
        run,
    }],
};
