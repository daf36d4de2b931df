//! The tile-operations interface the AMX GEMM program is written against, and the tile
//! configuration it loads.
//!
//! Two implementations: [`super::hw::Hardware`] issues the instructions through `asm!`,
//! [`super::emu::Emulated`] follows the Intel SDM's pseudocode in plain Rust. The program,
//! the packing, the blocking and the epilogues are the same code over either, so every
//! machine tests everything above the instructions bit-exactly.

/// Tile rows (and C/A rows of a full tile): 16.
pub(crate) const TILE_ROWS: usize = 16;
/// Bytes per tile row: 64 (16 i32 of C, 64 u8 of A, 16 columns × 4 k of B).
pub(crate) const TILE_COLSB: usize = 64;

/// The 64-byte operand of `ldtilecfg`, palette 1: per tile register its rows and its
/// bytes per row. Tiles never used by a program may keep any valid shape.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TileConfig {
    pub palette: u8,
    pub start_row: u8,
    reserved: [u8; 14],
    pub colsb: [u16; 16],
    pub rows: [u8; 16],
}

impl TileConfig {
    /// Palette 1 with tiles `0..8` at `rows[t]` rows of 64 bytes.
    pub(crate) fn with_rows(rows: [u8; 8]) -> TileConfig {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for (t, &r) in rows.iter().enumerate() {
            debug_assert!((1..=TILE_ROWS as u8).contains(&r));
            cfg.rows[t] = r;
            cfg.colsb[t] = TILE_COLSB as u16;
        }
        cfg
    }
}

/// The AMX instructions the GEMM program uses. Tile registers are const parameters, as
/// they are immediates of the instructions. Tile state belongs to the calling thread.
///
/// # Safety (all methods)
/// For [`super::hw::Hardware`] the CPU has AMX-TILE and AMX-INT8 and the process holds
/// the tile-data permission; every method but `configure` needs a loaded configuration;
/// pointers are valid for the rows and bytes the loaded configuration names.
pub(crate) trait TileOps {
    /// `ldtilecfg`: loads the configuration (and zeroes every tile).
    unsafe fn configure(cfg: &TileConfig);
    /// `tilerelease`: back to the init state.
    unsafe fn release();
    /// `tilezero tmmT`.
    unsafe fn zero<const T: u8>();
    /// `tileloadd tmmT, [src + stride]`: the configured rows, `stride` bytes apart.
    unsafe fn load<const T: u8>(src: *const u8, stride: usize);
    /// `tilestored [dst + stride], tmmT`.
    unsafe fn store<const T: u8>(dst: *mut u8, stride: usize);
    /// `tdpbusd tmmC, tmmA, tmmB`: C[m][n] += Σ_k Σ_i u8(A[m][4k+i]) · s8(B[k][4n+i]),
    /// wrapping i32.
    unsafe fn dpbusd<const C: u8, const A: u8, const B: u8>();
}
