//! PLACEHOLDER: the NeonDotprod rung's kernels are being written; until then it has none.

use crate::gemm::RungKernels;
use crate::isa::Rung;

pub(crate) const KERNELS: RungKernels = RungKernels {
    rung: Rung::NeonDotprod,
    nr: 16,
    kr: 4,
    a_offset: 0,
    kernels: &[],
};
