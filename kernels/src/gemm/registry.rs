//! The registry: every GEMM kernel compiled into this binary, grouped by rung, so tests,
//! benches and the CLI can enumerate them and dispatch can pick one.

use super::driver::{Output, PackedA};
use super::pack::PackedB;
use crate::isa::Rung;

/// One kernel: a micro-kernel wrapped in its rung's `#[target_feature]` driver.
pub(crate) struct KernelEntry {
    pub name: &'static str,
    pub mr: usize,
    /// Largest activation value for which the kernel is exact (127 for 7-bit kernels).
    pub max_activation: u8,
    /// # Safety
    /// See [`super::drive`]: the CPU supports the rung, and A and B were packed for it.
    pub run: unsafe fn(&PackedA, &PackedB, &mut Output),
}

/// The kernels of one rung. They share the B layout (`nr`, `kr`) and the activation
/// offset; they differ in the activation domain they are exact for, or in the row counts
/// they are fastest at. Listed fastest first; the last one covers full-range u8 and any
/// row count.
pub(crate) struct RungKernels {
    pub rung: Rung,
    pub nr: usize,
    pub kr: usize,
    /// Activations are stored as `a XOR a_offset` (128 turns u8 into s8 for `sdot`).
    pub a_offset: u8,
    /// The kernels read only the first `kgroups · KR` bytes of each activation row (never
    /// the padding), so the caller's matrix can be used in place when k fits the groups.
    pub reads_exactly_k: bool,
    pub kernels: &'static [KernelEntry],
}

impl RungKernels {
    /// The kernels of `rung`, if this binary has them.
    pub(crate) fn of(rung: Rung) -> Option<&'static RungKernels> {
        // The tile program runs on the hardware or on its emulator, decided once.
        #[cfg(target_arch = "x86_64")]
        if rung == Rung::Amx {
            return Some(crate::x86_64::amx::kernels());
        }
        ALL.iter().copied().find(|k| k.rung == rung)
    }

    /// The fastest kernel whose domain holds activations up to `max` and which is worth
    /// running on `rows` rows.
    pub(crate) fn pick(&self, max: u8, rows: usize) -> &'static KernelEntry {
        self.kernels
            .iter()
            .find(|k| max <= k.max_activation && rows >= min_rows(k))
            .expect("every rung ends with a full-range kernel for any row count")
    }

    /// Whether the caller's activation rows can be read in place when k is a multiple of
    /// this (the kernels never read past `k` bytes then): the k group, or for AMX a whole
    /// tile row of 64 bytes, since its last k step reads that far.
    pub(crate) fn direct_k_multiple(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.rung == Rung::Amx {
            return crate::x86_64::amx::DIRECT_K_MULTIPLE;
        }
        self.kr
    }

    /// Zero bytes kept after the last panel of packed B, which a kernel may read past it.
    pub(crate) fn b_slack(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.rung == Rung::Amx {
            return crate::x86_64::amx::B_SLACK;
        }
        0
    }
}

/// The fewest rows of A a kernel is run on; with fewer, the rung's next kernel runs. AMX
/// tiles are 16 rows tall, and below that the VNNI kernel is faster.
fn min_rows(k: &KernelEntry) -> usize {
    #[cfg(target_arch = "x86_64")]
    if k.name == crate::x86_64::amx::HW_NAME {
        return crate::x86_64::amx::MIN_ROWS;
    }
    let _ = k;
    0
}

#[cfg(target_arch = "x86_64")]
const ALL: &[&RungKernels] = &[
    &crate::generic::KERNELS,
    &crate::x86_64::avx2::KERNELS,
    &crate::x86_64::avx512vnni::KERNELS,
];

#[cfg(target_arch = "aarch64")]
const ALL: &[&RungKernels] = &[
    &crate::generic::KERNELS,
    &crate::aarch64::neon::KERNELS,
    &crate::aarch64::dotprod::KERNELS,
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALL: &[&RungKernels] = &[&crate::generic::KERNELS];

/// What a caller may know about a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// `{isa}_gemm_{types}_{MR}x{NR}`, e.g. `avx512vnni_gemm_u8s8i32_8x48`.
    pub name: &'static str,
    pub rung: Rung,
    pub mr: usize,
    pub nr: usize,
    pub kr: usize,
    /// Activations above this value are routed to another kernel of the rung.
    pub max_activation: u8,
}

/// The kernels compiled for `rung`, fastest first (empty for another architecture's rung).
pub fn kernels_of(rung: Rung) -> Vec<KernelInfo> {
    RungKernels::of(rung).map_or_else(Vec::new, |rk| {
        rk.kernels
            .iter()
            .map(|k| KernelInfo {
                name: k.name,
                rung,
                mr: k.mr,
                nr: rk.nr,
                kr: rk.kr,
                max_activation: k.max_activation,
            })
            .collect()
    })
}
