//! im2col in row tiles: output pixels `first..first + rows` of one image and one group,
//! each row the concatenation over taps (ky, kx) of that tap's `c_in_g` input channels.
//! NHWC makes each tap a contiguous copy; out-of-image taps are filled with the value
//! that means zero (the activation zero point for u8, 0.0 for f32).

use crate::nhwc::{Nhwc, Window};

/// Rows per u8 tile: about 256 KiB of im2col, so a tile and its packed copy stay in L2,
/// but never fewer than 64 rows, so deep layers (k in the thousands) still give the
/// micro-kernel full row tiles.
pub(crate) fn tile_rows(k: usize, pixels: usize) -> usize {
    (256 * 1024 / k.max(1)).clamp(64, 4096).min(pixels.max(1))
}

/// Rows per f32 tile: the `gemm` crate packs the weights on every call, so the fp32
/// path takes few, large tiles (up to about 4 MiB of im2col, usually the whole image).
pub(crate) fn tile_rows_f32(k: usize, pixels: usize) -> usize {
    (4 * 1024 * 1024 / (4 * k.max(1)))
        .clamp(64, 1 << 16)
        .min(pixels.max(1))
}

/// One tile of output pixels: (image, first pixel, pixels).
pub(crate) type Tile = (usize, usize, usize);

/// The tiles of `images` images of `pixels` output pixels each, `tile_rows` pixels at most
/// per tile (tiles never cross images), in output order: tile after tile, their output
/// rows are contiguous.
pub(crate) fn tiles(images: usize, pixels: usize, tile_rows: usize) -> Vec<Tile> {
    let tile_rows = tile_rows.max(1);
    (0..images)
        .flat_map(|img| {
            (0..pixels)
                .step_by(tile_rows)
                .map(move |first| (img, first, tile_rows.min(pixels - first)))
        })
        .collect()
}

/// Fills `tile` (`rows × k`, k = kh·kw·cin_g) for u8 input; `pad` is the zero point.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
pub(crate) fn fill_u8(
    input: &[u8],
    shape: Nhwc,
    img: usize,
    c0: usize,
    cin_g: usize,
    window: &Window,
    out_w: usize,
    first: usize,
    pad: u8,
    tile: &mut [u8],
) {
    fill(
        input, shape, img, c0, cin_g, window, out_w, first, pad, tile,
    );
}

/// Fills `tile` for f32 input (padding 0.0).
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_f32(
    input: &[f32],
    shape: Nhwc,
    img: usize,
    c0: usize,
    cin_g: usize,
    window: &Window,
    out_w: usize,
    first: usize,
    tile: &mut [f32],
) {
    fill(
        input, shape, img, c0, cin_g, window, out_w, first, 0.0, tile,
    );
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill<T: Copy>(
    input: &[T],
    shape: Nhwc,
    img: usize,
    c0: usize,
    cin_g: usize,
    window: &Window,
    out_w: usize,
    first: usize,
    pad: T,
    tile: &mut [T],
) {
    let [kh, kw] = window.kernel;
    let k = kh * kw * cin_g;
    for (r, row) in tile.chunks_exact_mut(k).enumerate() {
        let pixel = first + r;
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        let ix0 = (ox * window.stride[1]) as isize - window.pads[1] as isize;
        // With dilation 1 the kw taps of a kernel row are adjacent pixels, and in NHWC
        // with one group their channels are one contiguous run: copy the row at once
        // when it lies inside the image (a 7x7 stem on RGB copies 21 bytes, not 7 × 3).
        let row_contiguous =
            window.dilation[1] == 1 && cin_g == shape.c && ix0 >= 0 && ix0 as usize + kw <= shape.w;
        for ky in 0..kh {
            let iy = (oy * window.stride[0] + ky * window.dilation[0]) as isize
                - window.pads[0] as isize;
            let dst_row = &mut row[ky * kw * cin_g..(ky + 1) * kw * cin_g];
            if iy < 0 || iy as usize >= shape.h {
                dst_row.fill(pad);
                continue;
            }
            if row_contiguous {
                let src = shape.index(img, iy as usize, ix0 as usize, c0);
                dst_row.copy_from_slice(&input[src..src + kw * cin_g]);
                continue;
            }
            for kx in 0..kw {
                let ix = ix0 + (kx * window.dilation[1]) as isize;
                let dst = &mut dst_row[kx * cin_g..(kx + 1) * cin_g];
                if ix < 0 || ix as usize >= shape.w {
                    dst.fill(pad);
                } else {
                    let src = shape.index(img, iy as usize, ix as usize, c0);
                    dst.copy_from_slice(&input[src..src + cin_g]);
                }
            }
        }
    }
}
