//! Packed weights: the s8 matrix rearranged into the panel layout of one rung, with the
//! column sums and zero points the epilogue's corrections need.
//!
//! Layout: `ceil(n / NR)` panels of `NR` columns; within a panel, `ceil(k / KR)` groups
//! of `KR` consecutive k; within a group, `NR` columns, each holding its `KR` weights
//! contiguously (`[panel][group][column][kr]`). Rows past k and columns past n are zero,
//! so kernels never need edge cases on B. `KR = 4` matches `vpdpbusd`, `sdot` and
//! `vpmaddubsw`+`vpmaddwd`, which all sum four adjacent products into one i32 lane.

use super::params::MatB;
use super::registry::RungKernels;
use crate::error::KernelError;
use crate::isa::{self, Rung};

/// Weights packed once for one rung of the ladder.
pub struct PackedB {
    kernels: &'static RungKernels,
    k: usize,
    n: usize,
    /// The panels start at `data[offset]`, a 64-byte boundary.
    data: Vec<i8>,
    offset: usize,
    col_sums: Vec<i32>,
    /// Per-column zero points, or `None` when all are zero (the common case).
    zero_points: Option<Vec<i32>>,
}

impl PackedB {
    /// Packs for the rung this process uses ([`isa::active`]).
    pub fn new(b: &MatB) -> Result<PackedB, KernelError> {
        PackedB::for_rung(b, isa::active())
    }

    /// Packs for a given rung; fails when the rung does not run on this CPU.
    pub fn for_rung(b: &MatB, rung: Rung) -> Result<PackedB, KernelError> {
        b.validate()?;
        if let Some(reason) = rung.unavailable_reason() {
            return Err(KernelError::Param(reason));
        }
        let kernels = RungKernels::of(rung).ok_or_else(|| {
            KernelError::Param(format!("no GEMM kernels are compiled for {rung}"))
        })?;
        let (k, n, nr, kr) = (b.rows, b.cols, kernels.nr, kernels.kr);
        let kgroups = k.div_ceil(kr);
        let panels = n.div_ceil(nr);
        // Panels start on a cache line: a kernel's 64-byte loads of a group (a zmm vector,
        // an AMX tile row) then touch one line each, not two. AMX measured up to 2× slower
        // on an unaligned panel.
        let len = panels * kgroups * nr * kr + kernels.b_slack();
        let mut storage = vec![0i8; len + 63];
        let offset = storage.as_ptr().align_offset(64);
        let data = &mut storage[offset..offset + len];
        for panel in 0..panels {
            for g in 0..kgroups {
                let group = &mut data[(panel * kgroups + g) * nr * kr..][..nr * kr];
                for c in 0..nr.min(n - panel * nr) {
                    for r in 0..kr.min(k - g * kr) {
                        group[c * kr + r] = b.at(g * kr + r, panel * nr + c);
                    }
                }
            }
        }
        let col_sums = (0..n)
            .map(|col| (0..k).fold(0i32, |s, row| s.wrapping_add(i32::from(b.at(row, col)))))
            .collect();
        let zero_points = b
            .zero_points
            .iter()
            .any(|&z| z != 0)
            .then(|| (0..n).map(|col| b.zero_point_of(col)).collect());
        Ok(PackedB {
            kernels,
            k,
            n,
            data: storage,
            offset,
            col_sums,
            zero_points,
        })
    }

    /// Rows of the weight matrix (the reduction dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the weight matrix (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The rung whose layout this is.
    pub fn rung(&self) -> Rung {
        self.kernels.rung
    }

    /// Bytes held by the packed weights and their corrections.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
            + 4 * self.col_sums.len()
            + 4 * self.zero_points.as_ref().map_or(0, Vec::len)
    }

    pub(crate) fn kernels(&self) -> &'static RungKernels {
        self.kernels
    }

    pub(crate) fn layout_nr(&self) -> usize {
        self.kernels.nr
    }

    pub(crate) fn data(&self) -> &[i8] {
        &self.data[self.offset..]
    }

    pub(crate) fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }

    pub(crate) fn zero_points(&self) -> Option<&[i32]> {
        self.zero_points.as_deref()
    }
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("rung", &self.kernels.rung)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}
