//! The AMX rung: u8 × s8 → i32 GEMM on tiles with `tdpbusd`, its detection, and its
//! registration. Only GEMM has a tile kernel; everything else this rung borrows from
//! `avx512vnni` ([`crate::isa::Rung::borrowed`]).
//!
//! The tile program ([`Tiles`]) is written once against [`tiles::TileOps`] and runs on
//! the instructions ([`hw::Hardware`]) or on the emulator ([`emu::Emulated`], chosen with
//! `QBENCH_AMX_EMULATE=1`), with the same packing, blocking and epilogues, so the suite
//! tests it bit-exactly on every machine.
//!
//! Blocking (as MLAS's AMX kernel): a tile of 32 rows × 64 columns is computed in two
//! halves of 32 columns, each with 2×2 accumulator tiles of 16×16 i32 (tmm0–3), two A
//! tiles of 16 rows × 64 k (tmm4–5) and two B tiles of 16 k-groups × 16 columns (tmm6–7):
//! four loads feed four `tdpbusd` per 64 values of k. A tile of 16 rows or fewer uses
//! the four accumulators across all 64 columns in one pass, so its A is loaded once.
//!
//! Layout: B is the shared packed layout with 64-column panels and k in groups of 4
//! (`[panel][group][column][4]`), the same as `avx512vnni`'s, so one `PackedB` serves
//! both kernels of the rung. A B tile is 16 consecutive groups of 16 columns: rows of 64
//! bytes, 256 bytes apart, read straight from the panel. A tiles are read straight from
//! the activations (packed or the caller's) at their row stride. The last step of k reads
//! up to 16 groups: A rows are zero there (packed A is zero-padded to 64 bytes, and the
//! caller's rows are used in place only when k is a multiple of 64), so whatever B bytes
//! lie there add nothing; `PackedB` keeps 16 groups of zero slack after its last panel so
//! the read stays in bounds. Tiles of fewer than 32 rows load a configuration with
//! fewer rows for their A and C tiles.
//!
//! Below 16 rows the rung runs the VNNI kernel, which is faster there (the registry
//! picks by row count, so the result names the kernel that ran).

mod emu;
mod hw;
mod tiles;

use std::marker::PhantomData;
use std::sync::OnceLock;

use crate::gemm::{drive, KernelEntry, MicroKernel, Output, PackedA, PackedB, RungKernels};
use crate::isa::{Rung, AMX_EMULATE_ENV};
use emu::Emulated;
use hw::Hardware;
use tiles::{TileConfig, TileOps, TILE_ROWS};

/// Rows per micro-tile: two A tiles.
const MR: usize = 2 * TILE_ROWS;
/// Columns per panel: four B tiles of 16, the panel width of `avx512vnni`.
const NR: usize = 64;
/// k per group, as every rung's B layout.
const KR: usize = 4;
/// Bytes between consecutive k-groups of a panel: the B tiles' row stride.
const B_STRIDE: usize = NR * KR;
/// k-groups per `tdpbusd` step (64 values of k).
const STEP_GROUPS: usize = 16;

/// Bytes of zero slack `PackedB` keeps after the last panel: one step of k-groups, which
/// the last step may read past the panel's own groups.
pub(crate) const B_SLACK: usize = STEP_GROUPS * B_STRIDE;
/// The caller's activation rows are read in place only when k is a multiple of this.
pub(crate) const DIRECT_K_MULTIPLE: usize = 64;
/// The hardware kernel's name; the registry sends calls of fewer than [`MIN_ROWS`] rows to
/// the kernel after it.
pub(crate) const HW_NAME: &str = "amx_gemm_u8s8i32_32x64";
/// The fewest rows for which the tile kernel beats the VNNI kernel.
pub(crate) const MIN_ROWS: usize = TILE_ROWS;

// Tile registers.
const C00: u8 = 0;
const C01: u8 = 1;
const C10: u8 = 2;
const C11: u8 = 3;
const A0: u8 = 4;
const A1: u8 = 5;
const B0: u8 = 6;
const B1: u8 = 7;

/// How the rung runs here, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Hardware,
    Emulated,
}

/// Whether the rung runs in this process, decided once: emulated when
/// `QBENCH_AMX_EMULATE=1`, else on the hardware when the CPU, the OS and Linux's
/// permission allow it, else the reason it does not.
pub(crate) fn availability() -> &'static Result<Mode, String> {
    static AVAILABILITY: OnceLock<Result<Mode, String>> = OnceLock::new();
    AVAILABILITY.get_or_init(|| {
        if std::env::var(AMX_EMULATE_ENV).is_ok_and(|v| v == "1") {
            Ok(Mode::Emulated)
        } else {
            hw::detect().map(|()| Mode::Hardware)
        }
    })
}

/// The rung's kernels: the tile kernel on hardware (and VNNI below 16 rows), or the same
/// tile program on the emulator for every row count.
pub(crate) fn kernels() -> &'static RungKernels {
    match availability() {
        Ok(Mode::Emulated) => &EMULATED,
        _ => &HARDWARE,
    }
}

/// The configuration for a tile of `rows` (1..=32) rows. Over 16 rows ([`program_2x2`]):
/// A0 and its accumulators C00, C01 hold the first 16 rows, A1, C10 and C11 the rest. Up
/// to 16 ([`program_1x4`]): A0 and all four accumulators hold them (A1 unused). B tiles
/// always have 16 groups.
fn config_for(rows: usize) -> TileConfig {
    debug_assert!((1..=MR).contains(&rows));
    if rows > TILE_ROWS {
        let r1 = (rows - TILE_ROWS) as u8;
        TileConfig::with_rows([16, 16, r1, r1, 16, r1, 16, 16])
    } else {
        let r0 = rows as u8;
        TileConfig::with_rows([r0, r0, r0, r0, r0, 16, 16, 16])
    }
}

/// The tile program over the instructions `T`.
struct Tiles<T>(PhantomData<T>);

impl<T: TileOps> MicroKernel for Tiles<T> {
    const MR: usize = MR;
    const NR: usize = NR;
    const KR: usize = KR;

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
        // A short tile (the last of a band) switches configuration and back; every other
        // tile runs on the full one its entry point loaded.
        let short = !rows.is_multiple_of(TILE_ROWS);
        // SAFETY: the entry point loaded a configuration; the caller's contract (see
        // `MicroKernel::tile` and the module doc on what the last k step reads) covers
        // the rows, bytes and panel each program reads and the tile it writes.
        unsafe {
            if short {
                T::configure(&config_for(rows));
            }
            if rows > TILE_ROWS {
                program_2x2::<T>(kgroups, a, a_stride, b, acc, acc_stride);
            } else {
                program_1x4::<T>(kgroups, a, a_stride, b, acc, acc_stride);
            }
            if short {
                T::configure(&config_for(MR));
            }
        }
    }
}

/// Up to 16 rows: A0 against the 64 columns of the panel at `b` in one pass over k, with
/// four accumulators: one A load and four B loads feed four `tdpbusd`, where two passes
/// of [`program_2x2`]'s upper half would load A twice.
///
/// # Safety
/// As [`program_2x2`].
#[inline(always)]
unsafe fn program_1x4<T: TileOps>(
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    let steps = kgroups.div_ceil(STEP_GROUPS);
    let c_stride = 4 * acc_stride;
    // SAFETY: all offsets stay within the memory the caller's contract names.
    unsafe {
        T::zero::<C00>();
        T::zero::<C01>();
        T::zero::<C10>();
        T::zero::<C11>();
        let b = b.cast::<u8>();
        for s in 0..steps {
            let bs = b.add(s * STEP_GROUPS * B_STRIDE);
            T::load::<A0>(a.add(s * 64), a_stride);
            T::load::<B0>(bs, B_STRIDE);
            T::load::<B1>(bs.add(64), B_STRIDE);
            T::dpbusd::<C00, A0, B0>();
            T::dpbusd::<C01, A0, B1>();
            T::load::<B0>(bs.add(128), B_STRIDE);
            T::load::<B1>(bs.add(192), B_STRIDE);
            T::dpbusd::<C10, A0, B0>();
            T::dpbusd::<C11, A0, B1>();
        }
        let c = acc.cast::<u8>();
        T::store::<C00>(c, c_stride);
        T::store::<C01>(c.add(64), c_stride);
        T::store::<C10>(c.add(128), c_stride);
        T::store::<C11>(c.add(192), c_stride);
    }
}

/// 17 to 32 rows: A0 and A1 against the 64 columns of the panel at `b`, in two halves of
/// 32 columns with 2×2 accumulators, stored as i32 at `acc`, rows `acc_stride` values
/// apart.
///
/// # Safety
/// A configuration for this tile's rows is loaded; A has the configured rows at
/// `a_stride` with `64 · ceil(kgroups / 16)` readable bytes each; `b` is a panel followed
/// by at least that many groups' bytes; `acc` has 64 writable values on each row.
#[inline(always)]
unsafe fn program_2x2<T: TileOps>(
    kgroups: usize,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    acc: *mut i32,
    acc_stride: usize,
) {
    let steps = kgroups.div_ceil(STEP_GROUPS);
    let c_stride = 4 * acc_stride;
    for half in 0..2 {
        // SAFETY: all offsets stay within the memory the caller's contract names.
        unsafe {
            T::zero::<C00>();
            T::zero::<C01>();
            T::zero::<C10>();
            T::zero::<C11>();
            let b_half = b.cast::<u8>().add(half * 2 * 64);
            for s in 0..steps {
                let bs = b_half.add(s * STEP_GROUPS * B_STRIDE);
                let at = a.add(s * 64);
                T::load::<A0>(at, a_stride);
                T::load::<B0>(bs, B_STRIDE);
                T::load::<B1>(bs.add(64), B_STRIDE);
                T::load::<A1>(at.add(TILE_ROWS * a_stride), a_stride);
                T::dpbusd::<C00, A0, B0>();
                T::dpbusd::<C01, A0, B1>();
                T::dpbusd::<C10, A1, B0>();
                T::dpbusd::<C11, A1, B1>();
            }
            let c = acc.add(half * 32).cast::<u8>();
            T::store::<C00>(c, c_stride);
            T::store::<C01>(c.add(64), c_stride);
            let c1 = c.add(TILE_ROWS * c_stride);
            T::store::<C10>(c1, c_stride);
            T::store::<C11>(c1.add(64), c_stride);
        }
    }
}

/// # Safety
/// The CPU has AMX-INT8 and AVX-512 VNNI and the process the tile-data permission
/// ([`availability`] is `Hardware`); A and B were packed for this rung.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run_hardware(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: AMX is available (caller's contract); the program runs between the load of
    // the full configuration and the release, on this thread.
    unsafe {
        Hardware::configure(&config_for(MR));
        drive::<Tiles<Hardware>>(a, b, out);
        Hardware::release();
    }
}

/// # Safety
/// A and B were packed for this rung.
unsafe fn run_emulated(a: &PackedA, b: &PackedB, out: &mut Output) {
    // SAFETY: the emulator needs no CPU feature; as `run_hardware` otherwise.
    unsafe {
        Emulated::configure(&config_for(MR));
        drive::<Tiles<Emulated>>(a, b, out);
        Emulated::release();
    }
}

const HARDWARE: RungKernels = RungKernels {
    rung: Rung::Amx,
    nr: NR,
    kr: KR,
    a_offset: 0,
    reads_exactly_k: true,
    kernels: &[
        KernelEntry {
            name: HW_NAME,
            mr: MR,
            max_activation: 255,
            run: run_hardware,
        },
        crate::x86_64::avx512vnni::ENTRY,
    ],
};

const EMULATED: RungKernels = RungKernels {
    rung: Rung::Amx,
    nr: NR,
    kr: KR,
    a_offset: 0,
    reads_exactly_k: true,
    kernels: &[KernelEntry {
        name: "amx_gemm_u8s8i32_32x64_emulated",
        mr: MR,
        max_activation: 255,
        run: run_emulated,
    }],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded tile data from the workspace's generator.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| (r.next_u64() >> 56) as u8).collect()
    }

    /// C (tmm0) = C + A (tmm4) · B (tmm6) for a C and A of `rows` rows, from 16×64-byte
    /// buffers at a 64-byte stride; returns C as stored.
    fn one_product<T: TileOps>(rows: u8, a: &[u8], b: &[u8], c: &[u8]) -> Vec<u8> {
        let mut out = vec![0xEEu8; 16 * 64];
        let cfg = TileConfig::with_rows([rows, 16, 16, 16, rows, 16, 16, 16]);
        // SAFETY: the buffers hold 16 rows of 64 bytes; the caller checked that `T` runs.
        unsafe {
            T::configure(&cfg);
            T::load::<C00>(c.as_ptr(), 64);
            T::load::<A0>(a.as_ptr(), 64);
            T::load::<B0>(b.as_ptr(), 64);
            T::dpbusd::<C00, A0, B0>();
            T::store::<C00>(out.as_mut_ptr(), 64);
            T::release();
        }
        out
    }

    fn i32s(bytes: &[u8]) -> Vec<i32> {
        bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Values worked out by hand: all-255 A against all −128 B over 64 values of k, on a
    /// C of i32::MAX − 1, wraps; the rows past the configured ones are not stored.
    #[test]
    fn emulator_tdpbusd_sums_and_wraps_as_the_sdm_says() {
        let a = vec![255u8; 1024];
        let b = vec![0x80u8; 1024]; // −128 as s8
        let mut c = Vec::new();
        for _ in 0..256 {
            c.extend_from_slice(&(i32::MAX - 1).to_le_bytes());
        }
        let out = i32s(&one_product::<Emulated>(3, &a, &b, &c));
        let want = (i32::MAX - 1).wrapping_add(64 * 255 * -128);
        assert!(out[..3 * 16].iter().all(|&v| v == want), "{:?}", &out[..16]);
        assert!(out[3 * 16..].iter().all(|&v| v == 0xEEEE_EEEEu32 as i32));
        // An A of u8 1, 2, 3, 4 in the first group against B of 1, −1, 1, −1 in column 0.
        let mut a = vec![0u8; 1024];
        a[..4].copy_from_slice(&[1, 2, 3, 4]);
        let mut b = vec![0u8; 1024];
        b[..4].copy_from_slice(&[1, 0xFF, 1, 0xFF]);
        let out = i32s(&one_product::<Emulated>(1, &a, &b, &vec![0; 1024]));
        assert_eq!(out[0], 1 - 2 + 3 - 4);
        assert!(out[1..16].iter().all(|&v| v == 0));
    }

    #[test]
    #[should_panic(expected = "do not agree")]
    fn emulator_refuses_mismatched_shapes_as_hardware_faults() {
        let data = vec![0u8; 1024];
        let cfg = TileConfig::with_rows([3, 16, 16, 16, 4, 16, 16, 16]);
        // SAFETY: the emulator needs no CPU feature; the buffer holds 16 rows of 64 bytes.
        unsafe {
            Emulated::configure(&cfg);
            Emulated::load::<A0>(data.as_ptr(), 64);
            Emulated::dpbusd::<C00, A0, B0>();
        }
    }

    /// Where the CPU has AMX, the emulator gives the instructions' bits on random tiles
    /// of every row count.
    #[test]
    fn emulator_matches_the_hardware() {
        if let Err(why) = hw::detect() {
            eprintln!("skipped: {why}");
            return;
        }
        for rows in 1..=16u8 {
            let seed = u64::from(rows);
            let (a, b, c) = (
                bytes(seed, 1024),
                bytes(seed + 100, 1024),
                bytes(seed + 200, 1024),
            );
            assert_eq!(
                one_product::<Hardware>(rows, &a, &b, &c),
                one_product::<Emulated>(rows, &a, &b, &c),
                "{rows} rows"
            );
        }
    }
}
