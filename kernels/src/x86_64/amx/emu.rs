//! A tile emulator: the AMX instructions the GEMM program uses, in plain Rust after the
//! Intel SDM's pseudocode, so the program runs (slowly) on any CPU and the test suite
//! checks it against the reference everywhere.
//!
//! What it reproduces: the per-tile rows and bytes per row of the loaded configuration
//! (loads, stores and `tdpbusd` touch only those; a load zeroes the rest of the tile, as
//! `tdpbusd` does beyond its destination's shape), `ldtilecfg` zeroing every tile,
//! `tdpbusd`'s wrapping i32 sums of four u8 × s8 products, and its shape rules (a
//! violation, a #UD on hardware, panics here). Tile state is per thread, as on hardware.

use std::cell::RefCell;

use super::tiles::{TileConfig, TileOps, TILE_COLSB, TILE_ROWS};

/// One thread's tile registers and configuration.
struct State {
    /// `(rows, colsb)` per tile, or `None` before `ldtilecfg` / after `tilerelease`.
    shape: Option<[(usize, usize); 8]>,
    tiles: [[u8; TILE_ROWS * TILE_COLSB]; 8],
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { shape: None, tiles: [[0; TILE_ROWS * TILE_COLSB]; 8] })
    };
}

impl State {
    fn shape_of(&self, t: u8, op: &str) -> (usize, usize) {
        let shape = self
            .shape
            .unwrap_or_else(|| panic!("{op} tmm{t} without a tile configuration (#UD)"));
        shape[usize::from(t)]
    }
}

/// The emulated instructions.
pub(crate) struct Emulated;

impl TileOps for Emulated {
    unsafe fn configure(cfg: &TileConfig) {
        assert_eq!(cfg.palette, 1, "ldtilecfg: only palette 1 is emulated");
        assert_eq!(cfg.start_row, 0, "ldtilecfg: start_row must be 0");
        let mut shape = [(0, 0); 8];
        for (t, s) in shape.iter_mut().enumerate() {
            let (rows, colsb) = (usize::from(cfg.rows[t]), usize::from(cfg.colsb[t]));
            assert!(
                rows <= TILE_ROWS && colsb <= TILE_COLSB && (rows == 0) == (colsb == 0),
                "ldtilecfg: tile {t} of {rows} rows × {colsb} bytes is invalid (#GP)"
            );
            *s = (rows, colsb);
        }
        STATE.with_borrow_mut(|s| {
            s.shape = Some(shape);
            s.tiles = [[0; TILE_ROWS * TILE_COLSB]; 8];
        });
    }

    unsafe fn release() {
        STATE.with_borrow_mut(|s| {
            s.shape = None;
            s.tiles = [[0; TILE_ROWS * TILE_COLSB]; 8];
        });
    }

    unsafe fn zero<const T: u8>() {
        STATE.with_borrow_mut(|s| {
            s.shape_of(T, "tilezero");
            s.tiles[usize::from(T)] = [0; TILE_ROWS * TILE_COLSB];
        });
    }

    unsafe fn load<const T: u8>(src: *const u8, stride: usize) {
        STATE.with_borrow_mut(|s| {
            let (rows, colsb) = s.shape_of(T, "tileloadd");
            let tile = &mut s.tiles[usize::from(T)];
            *tile = [0; TILE_ROWS * TILE_COLSB];
            for r in 0..rows {
                // SAFETY: the caller guarantees `colsb` readable bytes at each configured
                // row `stride` apart (trait contract).
                let row = unsafe { std::slice::from_raw_parts(src.add(r * stride), colsb) };
                tile[r * TILE_COLSB..r * TILE_COLSB + colsb].copy_from_slice(row);
            }
        });
    }

    unsafe fn store<const T: u8>(dst: *mut u8, stride: usize) {
        STATE.with_borrow(|s| {
            let (rows, colsb) = s.shape_of(T, "tilestored");
            let tile = &s.tiles[usize::from(T)];
            for r in 0..rows {
                // SAFETY: the caller guarantees `colsb` writable bytes at each configured
                // row `stride` apart (trait contract); the tile is not in that memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        tile[r * TILE_COLSB..].as_ptr(),
                        dst.add(r * stride),
                        colsb,
                    )
                };
            }
        });
    }

    unsafe fn dpbusd<const C: u8, const A: u8, const B: u8>() {
        STATE.with_borrow_mut(|s| {
            let (c_rows, c_colsb) = s.shape_of(C, "tdpbusd");
            let (a_rows, a_colsb) = s.shape_of(A, "tdpbusd");
            let (b_rows, b_colsb) = s.shape_of(B, "tdpbusd");
            assert!(
                C != A && C != B && A != B,
                "tdpbusd tmm{C}, tmm{A}, tmm{B}: registers must differ (#UD)"
            );
            assert!(
                c_rows == a_rows && c_colsb == b_colsb && a_colsb == 4 * b_rows,
                "tdpbusd tmm{C}, tmm{A}, tmm{B}: shapes {c_rows}x{c_colsb}, {a_rows}x{a_colsb}, \
                 {b_rows}x{b_colsb} do not agree (#UD)"
            );
            let (a, b) = (s.tiles[usize::from(A)], s.tiles[usize::from(B)]);
            let c = &mut s.tiles[usize::from(C)];
            for m in 0..c_rows {
                for n in 0..c_colsb / 4 {
                    let at = m * TILE_COLSB + 4 * n;
                    let mut acc = i32::from_le_bytes(c[at..at + 4].try_into().unwrap());
                    for k in 0..a_colsb / 4 {
                        // Four products of u8 · s8 sum exactly; only the running sum wraps.
                        let dot: i32 = (0..4)
                            .map(|i| {
                                i32::from(a[m * TILE_COLSB + 4 * k + i])
                                    * i32::from(b[k * TILE_COLSB + 4 * n + i] as i8)
                            })
                            .sum();
                        acc = acc.wrapping_add(dot);
                    }
                    c[at..at + 4].copy_from_slice(&acc.to_le_bytes());
                }
                // Bytes past the destination's row width are zeroed.
                c[m * TILE_COLSB + c_colsb..(m + 1) * TILE_COLSB].fill(0);
            }
            // So are the rows past its row count.
            c[c_rows * TILE_COLSB..].fill(0);
        });
    }
}
