//! The blocked GEMM loop shared by every rung, the micro-kernel trait each rung
//! implements, and the epilogue that applies zero-point corrections and output stages.
//!
//! [`drive`] is `#[inline(always)]`: each rung calls it from its own
//! `#[target_feature]` entry point, so the loop and the epilogue are compiled (and
//! auto-vectorised) with that rung's instructions; the output stages themselves live in
//! [`crate::epilogue`], shared with the other kernel families.

use std::borrow::Cow;
use std::ops::Range;

use super::pack::PackedB;
use super::params::{MatA, Scales};
use crate::epilogue::{dequantize_row, requantize_row};

/// One register-blocked micro-kernel: `rows ≤ MR` rows of packed A times one packed B
/// panel of `NR` columns, over `kgroups` groups of `KR` values of k.
pub(crate) trait MicroKernel {
    const MR: usize;
    const NR: usize;
    const KR: usize;

    /// Writes `Σk a[r][k] · b[k][c]` (raw, wrapping i32) for `r < rows`, `c < NR` into
    /// `acc[r * acc_stride + c]`, and nothing else. With `kgroups == 0` it writes zeros.
    ///
    /// # Safety
    /// The CPU supports the kernel's instructions; `a` points to `rows` rows at
    /// `a_stride` bytes each holding at least `round_up(kgroups * KR, 16)` readable bytes
    /// (only `kgroups * KR` when the rung declares `reads_exactly_k`);
    /// `b` points to `kgroups * KR * NR` packed bytes; `acc` has `NR` writable values at
    /// each of `rows` rows `acc_stride` apart.
    unsafe fn tile(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        acc: *mut i32,
        acc_stride: usize,
    );

    /// Whether [`MicroKernel::tile_fused`] is implemented.
    const FUSED_OUTPUT: bool = false;

    /// [`MicroKernel::tile`] for `rows` rows and all `NR` columns followed by the
    /// corrections (without weight zero points) and the f32 or u8 output stage, applied to
    /// the accumulators in registers and stored once through `out`. Each value is computed
    /// with the operations of [`crate::epilogue`], in the same order, so bit-exactly.
    /// Only called when [`MicroKernel::FUSED_OUTPUT`] is true.
    ///
    /// # Safety
    /// As [`MicroKernel::tile`], with `out` describing `rows` rows of `NR` values.
    unsafe fn tile_fused(
        rows: usize,
        kgroups: usize,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        out: &FusedTile,
    ) {
        let _ = (rows, kgroups, a, a_stride, b, out);
        unreachable!("tile_fused is only called on kernels with FUSED_OUTPUT");
    }
}

/// What a fused output stage needs for one tile: rows `m0..m0 + rows` and the `NR`
/// columns from `n0` of an output whose weights have no zero points.
// Only the AVX-512 kernel implements the fused stage; elsewhere it is built, never read.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct FusedTile<'t> {
    /// Per tile row: the coefficient of the column sums (`za − a_offset`).
    pub col_coef: &'t [i32],
    /// Per tile column: `Σk b[k][c]`.
    pub col_sums: &'t [i32],
    pub stage: FusedStage<'t>,
}

/// The output stage of a [`FusedTile`]; `c` points to output value (m0, n0), and row r of
/// the tile starts `r · ldc` values further.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum FusedStage<'t> {
    /// The corrected accumulators themselves.
    I32 { c: *mut i32, ldc: usize },
    /// [`crate::epilogue::dequantize_row`]; `a_scale` per tile row, the rest per column.
    Dequant {
        c: *mut f32,
        ldc: usize,
        a_scale: &'t [f32],
        b_scale: &'t [f32],
        bias: &'t [f32],
    },
    /// [`crate::epilogue::requantize_row`]; `bias` and `multiplier` per tile column.
    Requant {
        c: *mut u8,
        ldc: usize,
        bias: &'t [i32],
        multiplier: &'t [f32],
        out_zero_point: i32,
        qmin: i32,
        qmax: i32,
    },
}

impl<'t> FusedTile<'t> {
    /// The fused stage for a tile of `out`. `a_scales` receives the tile rows' activation
    /// scales.
    #[allow(clippy::too_many_arguments)]
    fn new(
        out: &'t mut Output,
        a: &'t PackedA,
        b: &'t PackedB,
        m0: usize,
        rows: usize,
        n0: usize,
        nr: usize,
        a_scales: &'t mut [f32; 16],
    ) -> FusedTile<'t> {
        let cols = n0..n0 + nr;
        let stage = match out {
            Output::I32 { c, ldc } => FusedStage::I32 {
                c: c[m0 * *ldc + n0..].as_mut_ptr(),
                ldc: *ldc,
            },
            Output::Dequant {
                c,
                ldc,
                a_scale,
                b_scale,
                bias,
            } => {
                for (r, s) in a_scales.iter_mut().enumerate().take(rows) {
                    *s = a_scale.of(m0 + r);
                }
                FusedStage::Dequant {
                    c: c[m0 * *ldc + n0..].as_mut_ptr(),
                    ldc: *ldc,
                    a_scale: &a_scales[..rows],
                    b_scale: &b_scale[cols.clone()],
                    bias: &bias[cols.clone()],
                }
            }
            Output::Requant {
                c,
                ldc,
                bias,
                multiplier,
                out_zero_point,
                qmin,
                qmax,
            } => FusedStage::Requant {
                c: c[m0 * *ldc + n0..].as_mut_ptr(),
                ldc: *ldc,
                bias: &bias[cols.clone()],
                multiplier: &multiplier[cols.clone()],
                out_zero_point: *out_zero_point,
                qmin: *qmin,
                qmax: *qmax,
            },
        };
        FusedTile {
            col_coef: &a.col_coef[m0..m0 + rows],
            col_sums: &b.col_sums()[cols],
            stage,
        }
    }
}

/// The largest `MR · NR` of any kernel: the stack tile the driver hands to kernels.
pub(crate) const MAX_TILE: usize = 32 * 64;

/// Activations prepared for one call, with what the corrections need: either packed
/// (rows padded with zeros to `stride`, a multiple of 64, stored as `a XOR a_offset`) or,
/// when nothing needs changing, the caller's matrix itself ([`PackedA::direct`]).
pub(crate) struct PackedA<'a> {
    pub data: Cow<'a, [u8]>,
    /// Where row 0 starts in `data`: packed rows start on a 64-byte boundary.
    pub start: usize,
    pub rows: usize,
    pub stride: usize,
    pub kgroups: usize,
    /// `za[m] − a_offset`: coefficient of the column sums in the correction.
    pub col_coef: Cow<'a, [i32]>,
    /// `Σk a[m][k] − K · za[m]` (wrapping): coefficient of the weight zero points.
    pub row_term: Cow<'a, [i32]>,
    /// The largest activation value (before the offset), for domain dispatch.
    pub max: u8,
}

impl<'a> PackedA<'a> {
    /// The caller's activations as they lie: for rungs whose kernels read exactly
    /// `kgroups · KR` bytes of a row with no offset, when k is a multiple of KR, and when
    /// no weight zero point needs the row sums. `max` is left at 255 (unknown), so only
    /// rungs whose fastest kernel takes full-range u8 may use this.
    pub(crate) fn direct(a: &MatA<'a>, kr: usize) -> PackedA<'a> {
        debug_assert!(a.cols.is_multiple_of(kr));
        PackedA {
            data: Cow::Borrowed(a.data),
            start: 0,
            rows: a.rows,
            stride: a.stride,
            kgroups: a.cols / kr,
            col_coef: Cow::Owned((0..a.rows).map(|m| a.zero_point_of(m)).collect()),
            row_term: Cow::Owned(Vec::new()),
            max: u8::MAX,
        }
    }

    pub(crate) fn pack(a: &MatA, kr: usize, a_offset: u8) -> PackedA<'static> {
        let k = a.cols;
        let kgroups = k.div_ceil(kr);
        let stride = (kgroups * kr).div_ceil(64).max(1) * 64;
        // Rows start on a cache line (the stride is a multiple of 64), so a 64-byte load
        // of a row (an AMX tile row) touches one line.
        let mut storage = vec![0u8; a.rows * stride + 63];
        let start = storage.as_ptr().align_offset(64);
        let data = &mut storage[start..start + a.rows * stride];
        let mut col_coef = Vec::with_capacity(a.rows);
        let mut row_term = Vec::with_capacity(a.rows);
        let mut max = 0u8;
        for m in 0..a.rows {
            let src = &a.data[m * a.stride..m * a.stride + k];
            let dst = &mut data[m * stride..m * stride + k];
            let mut sum = 0i32;
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s ^ a_offset;
                sum = sum.wrapping_add(i32::from(s));
                max = max.max(s);
            }
            // Padding holds `0 XOR offset`; it meets zero weights, so it never counts.
            if a_offset != 0 {
                data[m * stride + k..(m + 1) * stride].fill(a_offset);
            }
            let za = a.zero_point_of(m);
            col_coef.push(za - i32::from(a_offset));
            row_term.push(sum.wrapping_sub((k as i32).wrapping_mul(za)));
        }
        PackedA {
            data: Cow::Owned(storage),
            start,
            rows: a.rows,
            stride,
            kgroups,
            col_coef: Cow::Owned(col_coef),
            row_term: Cow::Owned(row_term),
            max,
        }
    }

    /// Rows `range` as a matrix of their own, borrowing this one's data: what one thread
    /// of a split call multiplies.
    pub(crate) fn rows(&self, range: Range<usize>) -> PackedA<'_> {
        let row_term = if self.row_term.is_empty() {
            &self.row_term[..]
        } else {
            &self.row_term[range.clone()]
        };
        PackedA {
            data: Cow::Borrowed(&self.data[self.start + range.start * self.stride..]),
            start: 0,
            rows: range.len(),
            stride: self.stride,
            kgroups: self.kgroups,
            col_coef: Cow::Borrowed(&self.col_coef[range]),
            row_term: Cow::Borrowed(row_term),
            max: self.max,
        }
    }
}

/// Where the corrected accumulators go, with per-column parameters expanded to `n`.
pub(crate) enum Output<'a> {
    I32 {
        c: &'a mut [i32],
        ldc: usize,
    },
    Dequant {
        c: &'a mut [f32],
        ldc: usize,
        a_scale: Scales<'a>,
        b_scale: &'a [f32],
        bias: &'a [f32],
    },
    Requant {
        c: &'a mut [u8],
        ldc: usize,
        bias: &'a [i32],
        multiplier: &'a [f32],
        out_zero_point: i32,
        qmin: i32,
        qmax: i32,
    },
}

impl<'a> Output<'a> {
    /// Splits off rows `..rows` (which must exist) into their own output; `self` keeps the
    /// rest, renumbered from 0.
    pub(crate) fn split_rows(&mut self, rows: usize) -> Output<'a> {
        match self {
            Output::I32 { c, ldc } => Output::I32 {
                c: take_front(c, rows * *ldc),
                ldc: *ldc,
            },
            Output::Dequant {
                c,
                ldc,
                a_scale,
                b_scale,
                bias,
            } => {
                let head_scale = match a_scale {
                    Scales::PerTensor(s) => Scales::PerTensor(*s),
                    Scales::PerRow(s) => {
                        let (head, tail) = s.split_at(rows);
                        *a_scale = Scales::PerRow(tail);
                        Scales::PerRow(head)
                    }
                };
                Output::Dequant {
                    c: take_front(c, rows * *ldc),
                    ldc: *ldc,
                    a_scale: head_scale,
                    b_scale,
                    bias,
                }
            }
            Output::Requant {
                c,
                ldc,
                bias,
                multiplier,
                out_zero_point,
                qmin,
                qmax,
            } => Output::Requant {
                c: take_front(c, rows * *ldc),
                ldc: *ldc,
                bias,
                multiplier,
                out_zero_point: *out_zero_point,
                qmin: *qmin,
                qmax: *qmax,
            },
        }
    }
}

/// Splits the first `n` values (all, if fewer) off `values`, which keeps the rest, and
/// returns them: how an output is handed out in disjoint pieces, one per thread. "All, if
/// fewer": the last row of a strided output holds only its columns, not a whole stride.
pub(crate) fn take_front<'a, T>(values: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let n = n.min(values.len());
    let (head, tail) = std::mem::take(values).split_at_mut(n);
    *values = tail;
    head
}

/// Rows of A per cache block: keeps a block of packed A within about 256 KiB of L2 while
/// a B panel is swept across it.
fn rows_per_block(stride: usize, mr: usize) -> usize {
    let rows = (256 * 1024 / stride.max(1)).max(mr);
    rows / mr * mr
}

/// The blocked loop: for each block of A rows, for each B panel, for each tile of rows.
///
/// # Safety
/// The CPU supports `K`'s instructions; `a` and `b` were packed for `K`'s rung; the
/// output holds `a.rows × b.n()` values at its stride (checked by the public API).
#[inline(always)]
pub(crate) unsafe fn drive<K: MicroKernel>(a: &PackedA, b: &PackedB, out: &mut Output) {
    debug_assert!(K::MR * K::NR <= MAX_TILE);
    debug_assert_eq!(b.layout_nr(), K::NR);
    let n = b.n();
    let panel_len = a.kgroups * K::KR * K::NR;
    let mut tile = [0i32; MAX_TILE];
    let block = rows_per_block(a.stride, K::MR);
    for m_block in (0..a.rows).step_by(block) {
        let m_block_end = (m_block + block).min(a.rows);
        for (panel, n0) in (0..n).step_by(K::NR).enumerate() {
            let cols = K::NR.min(n - n0);
            // SAFETY: panel `panel` lies within the packed data: the B buffer holds
            // ceil(n / NR) panels of `panel_len` bytes each.
            let b_panel = unsafe { b.data().as_ptr().add(panel * panel_len) };
            for m0 in (m_block..m_block_end).step_by(K::MR) {
                let rows = K::MR.min(m_block_end - m0);
                let full = cols == K::NR;
                let fused = K::FUSED_OUTPUT && full && b.zero_points().is_none();
                match out {
                    // i32 output over a full panel: the kernel writes straight into the
                    // output. Going through the stack tile (an extra store and reload of
                    // every accumulator, then the copy) measured 4–12 % slower at the
                    // shapes from 128×768×768 up. With zero activation zero points there
                    // is nothing to correct, and this path measured 2–3 % faster than
                    // the fused one at 128×768×768 and 512³.
                    Output::I32 { c, ldc } if full && !(fused && corrects(a, m0, rows)) => {
                        // SAFETY: forwarded from this function's contract.
                        unsafe { tile_into_i32::<K>(c, *ldc, a, b, b_panel, m0, rows, n0) }
                    }
                    _ if fused => {
                        // SAFETY: forwarded from this function's contract.
                        unsafe { tile_fused::<K>(out, a, b, b_panel, m0, rows, n0) }
                    }
                    _ => {
                        // SAFETY: forwarded from this function's contract.
                        unsafe {
                            tile_then_finish::<K>(out, a, b, b_panel, m0, rows, n0, cols, &mut tile)
                        }
                    }
                }
            }
        }
    }
}

/// Whether any of rows `m0..m0 + rows` has a column-sum correction (a non-zero
/// `za − a_offset`).
#[inline(always)]
fn corrects(a: &PackedA, m0: usize, rows: usize) -> bool {
    a.col_coef[m0..m0 + rows].iter().any(|&z| z != 0)
}

/// The first of rows `m0..` of packed A.
#[inline(always)]
fn a_rows(a: &PackedA, m0: usize) -> *const u8 {
    a.data[a.start + m0 * a.stride..].as_ptr()
}

/// Runs the micro-kernel for rows `m0..m0 + rows` and the full panel at `n0` directly
/// into the i32 output, then applies the zero-point corrections there.
///
/// # Safety
/// As [`drive`]; `b_panel` is the panel of columns `n0..n0 + K::NR ≤ n`, rows
/// `m0..m0 + rows` exist in `a`, and `c` holds `a.rows × n` values at `ldc ≥ n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_into_i32<K: MicroKernel>(
    c: &mut [i32],
    ldc: usize,
    a: &PackedA,
    b: &PackedB,
    b_panel: *const i8,
    m0: usize,
    rows: usize,
    n0: usize,
) {
    let c_tile = c[m0 * ldc + n0..].as_mut_ptr();
    // SAFETY: A as in `tile_then_finish`; the kernel writes only columns 0..NR of its
    // `rows` rows at stride `ldc`, that is c[(m0 + r) · ldc + n0 ..][..NR] for r < rows,
    // within `c` since m0 + rows ≤ a.rows and n0 + NR ≤ n ≤ ldc.
    unsafe {
        K::tile(
            rows,
            a.kgroups,
            a_rows(a, m0),
            a.stride,
            b_panel,
            c_tile,
            ldc,
        )
    };
    correct_i32_in_place(c, ldc, a, b, m0, rows, n0, K::NR);
}

/// Runs the micro-kernel with its fused output stage for rows `m0..m0 + rows` and the
/// full panel at `n0`, writing straight into the output. Measured at the shapes from
/// 16×768×768 up: against the stack tile and the scalar epilogue, 2–6 % faster for f32
/// and 2–4 % for u8; against [`tile_into_i32`]'s corrections in place, up to 3 % faster
/// for i32 with activation zero point 128.
///
/// # Safety
/// As [`tile_into_i32`], for an output of any type holding `a.rows × n` values at
/// `ldc ≥ n`; the weights have no zero points.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_fused<K: MicroKernel>(
    out: &mut Output,
    a: &PackedA,
    b: &PackedB,
    b_panel: *const i8,
    m0: usize,
    rows: usize,
    n0: usize,
) {
    let mut a_scales = [0f32; 16];
    let t = FusedTile::new(out, a, b, m0, rows, n0, K::NR, &mut a_scales);
    // SAFETY: A and the panel as in `tile_then_finish`; `t`'s pointer is value (m0, n0) of
    // the output, which holds rows m0..m0+rows ≤ a.rows of columns n0..n0+NR ≤ n ≤ ldc
    // (checked by the public API).
    unsafe { K::tile_fused(rows, a.kgroups, a_rows(a, m0), a.stride, b_panel, &t) }
}

/// Runs the micro-kernel into the stack tile, then the epilogue row by row into `out`.
///
/// # Safety
/// As [`drive`]; `b_panel` is the panel of columns `n0..n0 + cols`, rows `m0..m0 + rows`
/// exist in `a`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_then_finish<K: MicroKernel>(
    out: &mut Output,
    a: &PackedA,
    b: &PackedB,
    b_panel: *const i8,
    m0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
    tile: &mut [i32; MAX_TILE],
) {
    // SAFETY: rows m0..m0+rows exist in packed A, each padded to `stride` (a multiple of
    // 64, so ≥ round_up(kgroups·KR, 16)); the tile holds MR·NR at stride NR.
    unsafe {
        K::tile(
            rows,
            a.kgroups,
            a_rows(a, m0),
            a.stride,
            b_panel,
            tile.as_mut_ptr(),
            K::NR,
        )
    };
    if cols == K::NR {
        // Full panels (the common case) get a compile-time row length, so the
        // epilogue vectorises without remainder loops or a library memcpy.
        for r in 0..rows {
            let raw = &tile[r * K::NR..(r + 1) * K::NR];
            finish_row(out, a, b, m0 + r, n0, raw);
        }
    } else {
        for r in 0..rows {
            let raw = &tile[r * K::NR..r * K::NR + cols];
            finish_row(out, a, b, m0 + r, n0, raw);
        }
    }
}

/// The i32 output stage applied where the micro-kernel left a full-width tile in the
/// output itself: the zero-point corrections only, and none at all for rows with a zero
/// activation zero point when the weights have none (the accumulators are the result).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn correct_i32_in_place(
    c: &mut [i32],
    ldc: usize,
    a: &PackedA,
    b: &PackedB,
    m0: usize,
    rows: usize,
    n0: usize,
    nr: usize,
) {
    for m in m0..m0 + rows {
        if a.col_coef[m] == 0 && b.zero_points().is_none() {
            continue;
        }
        let row = &mut c[m * ldc + n0..m * ldc + n0 + nr];
        let mut raw = [0i32; 64];
        raw[..nr].copy_from_slice(row);
        correct(row, &raw[..nr], a, b, m, n0);
    }
}

/// The zero-point corrections of row `m` from column `n0` on, into `acc`:
/// `raw − (za[m] − a_offset) · Σk b[k][c] − zw[c] · row_term[m]`, all wrapping.
#[inline(always)]
fn correct(acc: &mut [i32], raw: &[i32], a: &PackedA, b: &PackedB, m: usize, n0: usize) {
    let cols = raw.len();
    let col_sums = &b.col_sums()[n0..n0 + cols];
    let col_coef = a.col_coef[m];
    for ((acc, &raw), &sum) in acc.iter_mut().zip(raw).zip(col_sums) {
        *acc = raw.wrapping_sub(col_coef.wrapping_mul(sum));
    }
    if let Some(zw) = b.zero_points() {
        let row_term = a.row_term[m];
        for (acc, &zw) in acc.iter_mut().zip(&zw[n0..n0 + cols]) {
            *acc = acc.wrapping_sub(zw.wrapping_mul(row_term));
        }
    }
}

/// Applies the corrections and the output stage to one tile row.
#[inline(always)]
fn finish_row(out: &mut Output, a: &PackedA, b: &PackedB, m: usize, n0: usize, raw: &[i32]) {
    let cols = raw.len();
    let mut acc = [0i32; 64];
    let acc = &mut acc[..cols];
    correct(acc, raw, a, b, m, n0);
    match out {
        Output::I32 { c, ldc } => {
            c[m * *ldc + n0..m * *ldc + n0 + cols].copy_from_slice(acc);
        }
        Output::Dequant {
            c,
            ldc,
            a_scale,
            b_scale,
            bias,
        } => {
            let dst = &mut c[m * *ldc + n0..m * *ldc + n0 + cols];
            dequantize_row(acc, a_scale.of(m), &b_scale[n0..], &bias[n0..], dst);
        }
        Output::Requant {
            c,
            ldc,
            bias,
            multiplier,
            out_zero_point,
            qmin,
            qmax,
        } => {
            let dst = &mut c[m * *ldc + n0..m * *ldc + n0 + cols];
            requantize_row(
                acc,
                &bias[n0..],
                &multiplier[n0..],
                *out_zero_point,
                *qmin,
                *qmax,
                dst,
            );
        }
    }
}
