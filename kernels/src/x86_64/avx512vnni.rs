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
//! into two interleaved chains to hide the `vpdpbusd` latency. Over full panels the
//! kernel applies the corrections and the output stage (i32, f32 or u8) to its
//! accumulators in registers ([`MicroKernel::tile_fused`]) and stores each value once.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_add_ps, _mm512_castsi512_ps, _mm512_cvtepi32_epi8,
    _mm512_cvtepi32_ps, _mm512_cvtps_epi32, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_max_ps,
    _mm512_min_ps, _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32, _mm512_set1_ps,
    _mm512_setzero_si512, _mm512_storeu_ps, _mm512_storeu_si512, _mm512_sub_epi32, _mm512_sub_ps,
    _mm_storeu_si128,
};

use crate::epilogue::{LIMIT, ROUNDER};

use crate::gemm::{
    drive, FusedStage, FusedTile, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels,
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

    // The corrections and the output stages are applied in registers, and each value is
    // stored once: the driver's other paths measured slower (see `gemm::driver`).
    const FUSED_OUTPUT: bool = true;

    #[inline(always)]
    unsafe fn tile_fused(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        out: &FusedTile,
    ) {
        // SAFETY: every arm forwards the caller's contract with `R = rows ≤ MR`.
        unsafe {
            match rows {
                1 => store_fused(&body::<1, 2>(kgroups, a, a_stride, b), out),
                2 => store_fused(&body::<2, 1>(kgroups, a, a_stride, b), out),
                3 => store_fused(&body::<3, 1>(kgroups, a, a_stride, b), out),
                4 => store_fused(&body::<4, 1>(kgroups, a, a_stride, b), out),
                5 => store_fused(&body::<5, 1>(kgroups, a, a_stride, b), out),
                _ => store_fused(&body::<MR, 1>(kgroups, a, a_stride, b), out),
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

/// The output stage of `out` on the accumulators of `R` rows.
///
/// The per-column parameters are read from memory at each use rather than held in
/// registers: with the 24 accumulators live, holding them made the compiler spill the
/// accumulators, which measured 2–7 % slower.
///
/// # Safety
/// AVX-512 F is available; `out` describes `R` rows of `NR` values.
#[inline(always)]
unsafe fn store_fused<const R: usize>(sums: &[[__m512i; V]; R], out: &FusedTile) {
    debug_assert!(out.col_coef.len() == R && out.col_sums.len() == Vnni::NR);
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match &out.stage {
            FusedStage::I32 { c, ldc } => {
                for (r, row) in sums.iter().enumerate() {
                    let acc = corrected(row, out.col_coef[r], out.col_sums);
                    store_i32(&[acc], c.add(r * ldc), *ldc);
                }
            }
            FusedStage::Dequant {
                c,
                ldc,
                a_scale,
                b_scale,
                bias,
            } => store_dequant(sums, out, *c, *ldc, a_scale, b_scale, bias),
            FusedStage::Requant {
                c,
                ldc,
                bias,
                multiplier,
                out_zero_point,
                qmin,
                qmax,
            } => store_requant(
                sums,
                out,
                *c,
                *ldc,
                bias,
                multiplier,
                [*out_zero_point, *qmin, *qmax],
            ),
        }
    }
}

/// Vector `v` (values 16·v..16·v + 16) of a per-column parameter of 4-byte values.
///
/// # Safety
/// AVX-512 F is available; `p` holds at least `NR` values of 4 bytes; `v < V`.
#[inline(always)]
unsafe fn column<T: Copy>(p: &[T], v: usize) -> __m512i {
    debug_assert!(p.len() >= Vnni::NR && core::mem::size_of::<T>() == 4 && v < V);
    // SAFETY: 16·v + 16 ≤ NR values of 4 bytes lie within `p`, read unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().add(16 * v).cast()) }
}

/// The zero-point correction of a row: `acc − coef · Σk b[k][c]`, wrapping, where a zero
/// coefficient (zero activation zero point) leaves the accumulators unchanged.
///
/// # Safety
/// AVX-512 F is available; `col_sums` holds `NR` values.
#[inline(always)]
unsafe fn corrected(row: &[__m512i; V], coef: i32, col_sums: &[i32]) -> [__m512i; V] {
    if coef == 0 {
        return *row;
    }
    // SAFETY: AVX-512 F is available and `col_sums` holds NR values (caller's contract).
    unsafe {
        let coef = _mm512_set1_epi32(coef);
        core::array::from_fn(|v| {
            _mm512_sub_epi32(row[v], _mm512_mullo_epi32(coef, column(col_sums, v)))
        })
    }
}

/// `y = (acc as f32) · (sa[r] · sw[c]) + bias[c]`: the operations of
/// [`crate::epilogue::dequantize_row`] in the same order (no fused multiply-add; the
/// conversion rounds to nearest even like `as f32`), so bit-exact.
///
/// # Safety
/// AVX-512 F is available; `c` has `NR` writable values at each of `R` rows `ldc` apart;
/// `a_scale` holds `R` values, `b_scale` and `bias` `NR`.
#[inline(always)]
unsafe fn store_dequant<const R: usize>(
    sums: &[[__m512i; V]; R],
    out: &FusedTile,
    c: *mut f32,
    ldc: usize,
    a_scale: &[f32],
    b_scale: &[f32],
    bias: &[f32],
) {
    for (r, row) in sums.iter().enumerate() {
        // SAFETY: AVX-512 F is available; the slices hold NR values and row r < R of `c`
        // has NR values (caller's contract), written unaligned.
        unsafe {
            let acc = corrected(row, out.col_coef[r], out.col_sums);
            let sa = _mm512_set1_ps(a_scale[r]);
            for (v, &acc) in acc.iter().enumerate() {
                let s = _mm512_mul_ps(sa, _mm512_castsi512_ps(column(b_scale, v)));
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
                let y = _mm512_add_ps(y, _mm512_castsi512_ps(column(bias, v)));
                _mm512_storeu_ps(c.add(r * ldc + 16 * v), y);
            }
        }
    }
}

/// `q = clamp(round_half_even(clamp((acc + bias[c]) as f32 · m[c], ±2^22)) + z, qmin,
/// qmax)`: the operations of [`crate::epilogue::requantize`] in the same order (the same
/// add-and-subtract rounding, min/max for the clamps, exact conversions), so bit-exact.
/// The last argument is `[out_zero_point, qmin, qmax]`.
///
/// # Safety
/// AVX-512 F is available; `c` has `NR` writable bytes at each of `R` rows `ldc` apart;
/// `bias` and `multiplier` hold `NR` values; `qmin ≤ qmax` within 0..=255.
#[inline(always)]
unsafe fn store_requant<const R: usize>(
    sums: &[[__m512i; V]; R],
    out: &FusedTile,
    c: *mut u8,
    ldc: usize,
    bias: &[i32],
    multiplier: &[f32],
    [out_zero_point, qmin, qmax]: [i32; 3],
) {
    // SAFETY: AVX-512 F is available; the slices hold NR values and row r < R of `c` has
    // NR bytes (caller's contract), written unaligned.
    unsafe {
        let limit = _mm512_set1_ps(LIMIT);
        let neg_limit = _mm512_set1_ps(-LIMIT);
        let rounder = _mm512_set1_ps(ROUNDER);
        let zero_point = _mm512_set1_ps(out_zero_point as f32);
        let (lo, hi) = (_mm512_set1_ps(qmin as f32), _mm512_set1_ps(qmax as f32));
        for (r, row) in sums.iter().enumerate() {
            let acc = corrected(row, out.col_coef[r], out.col_sums);
            for (v, &acc) in acc.iter().enumerate() {
                let x = _mm512_add_epi32(acc, column(bias, v));
                let m = _mm512_castsi512_ps(column(multiplier, v));
                let t = _mm512_mul_ps(_mm512_cvtepi32_ps(x), m);
                let t = _mm512_min_ps(_mm512_max_ps(t, neg_limit), limit);
                let rounded = _mm512_sub_ps(_mm512_add_ps(t, rounder), rounder);
                let q = _mm512_add_ps(rounded, zero_point);
                let q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
                // q is an integer in qmin..=qmax ⊆ 0..=255: the conversion is exact and
                // the narrowing to bytes keeps it.
                let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
                _mm_storeu_si128(c.add(r * ldc + 16 * v).cast(), bytes);
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

/// The kernel, also listed by the `amx` rung, which shares its B layout and runs it below
/// 16 rows.
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "avx512vnni_gemm_u8s8i32_6x64",
    mr: Vnni::MR,
    max_activation: 255,
    run,
};

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::Avx512Vnni,
    nr: Vnni::NR,
    kr: Vnni::KR,
    a_offset: 0,
    reads_exactly_k: true,
    kernels: &[ENTRY],
};
