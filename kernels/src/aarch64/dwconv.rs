//! NEON int8 depthwise convolution (`neon_dwconv_u8s8_c16`), run by both aarch64 rungs:
//! vectorised across channels (NHWC), a row of output pixels per channel block per call,
//! 3x3 and 5x5 windows specialised at compile time, the horizontal stride specialised
//! for 1 and 2, and the requantization in registers.
//!
//! Arithmetic, per tap and per 8 channels (the scheme of XNNPACK's `neon-mul16`
//! depthwise microkernels): `usubl` forms `x − za` from the u8 activations as i16
//! (|x − za| ≤ 255, exact), the packed weights are `w − zw` as i16 (exact), and
//! `smlal`/`smlal2` add their products into two i32x4 accumulators. Each product is at
//! most 255·255 in magnitude, exact in 32 bits, and the accumulation wraps modulo 2^32 as
//! the contract's wrapping i32 does. The accumulators start at the bias (requantized
//! output) or zero (dequantized), so `acc + bias` is the same wrapping sum.
//!
//! The output stage computes the shared epilogue's result on four lanes at a time:
//! `scvtf` and `fmul` as the epilogue does, then the clamp moved before the rounding
//! (to `[qmin − z, qmax − z]`, which equals the epilogue's clamps to ±2^22 and to
//! `[qmin, qmax]` around it: see `Requant4`), `fcvtns` (round half to even) and an integer add
//! of the zero point; six operations where the literal sequence takes ten. Narrowing
//! (`sqxtn`, `sqxtun`) is exact on integers already in 0..=255. The dequantized stage is
//! a separate `fmul` and `fadd` (never `fmla`). So every result is the portable body's,
//! bit for bit.
//!
//! Padding stays out of the inner loop: for each output row the columns whose window lies
//! wholly inside the image (in width) are computed apart; in rows whose window is also
//! wholly inside in height, those pixels run the `K·K` taps unrolled with fixed offsets
//! from one pointer that advances by `stride·c` per pixel. Border pixels visit only their
//! in-image taps (the padding means the value zero, which adds nothing).
//!
//! Channels: blocks of 16 (two 8-lane halves; for 3x3, 18 weight registers and four
//! accumulators, which with the output constants is more than aarch64's 32 vector
//! registers, so the compiler reloads some weights from the stack per pixel), then one
//! block of 8, then the last `c mod 8` channels through the same code with 8-lane vectors
//! whose input loads and output stores go through a small stack buffer, so no channel
//! leaves the kernel.
//!
//! Why no `sdot` on the neon-dotprod rung: `sdot` sums four adjacent bytes of one lane,
//! but a depthwise output sums taps of *one* channel at different pixels, which NHWC
//! stores a whole pixel apart. Using it would take a byte transpose (`tbl`/`zip`) per
//! four taps and activations shifted to s8 with a correction term, and `w − zw` does not
//! fit s8 when the weight zero point is not 0. The widening multiply-accumulate above
//! needs no correction and no shuffle, so both aarch64 rungs run this one kernel.

use core::arch::aarch64::{
    float32x4_t, int16x8_t, int32x4_t, uint8x8_t, vaddq_f32, vaddq_s32, vcombine_s16,
    vcvtnq_s32_f32, vcvtq_f32_s32, vdup_n_u8, vdupq_n_f32, vdupq_n_s16, vdupq_n_s32, vget_low_s16,
    vld1_u8, vld1q_f32, vld1q_s16, vld1q_s32, vmaxq_f32, vminq_f32, vmlal_high_s16, vmlal_s16,
    vmulq_f32, vqmovn_s32, vqmovun_s16, vreinterpretq_s16_u16, vst1_u8, vst1q_f32, vsubl_u8,
};

use crate::conv::depthwise::tap_range;
use crate::nhwc::{Nhwc, Window};

/// How the kernel finishes a pixel: the output stages of the portable epilogue, with
/// per-channel vectors of `shape.c` values.
pub(crate) enum Finish<'a> {
    Requant {
        bias: &'a [i32],
        multiplier: &'a [f32],
        zero_point: i32,
        qmin: i32,
        qmax: i32,
        out: &'a mut [u8],
    },
    Dequant {
        a_scale: f32,
        b_scale: &'a [f32],
        bias: &'a [f32],
        out: &'a mut [f32],
    },
}

/// The geometry of one call, shared by every row and channel block.
struct Geometry<'a> {
    input: &'a [u8],
    shape: Nhwc,
    za: uint8x8_t,
    /// `[tap][channel]`, `w − zw`.
    taps: &'a [i16],
    window: &'a Window,
    out_shape: Nhwc,
}

/// A channel block: `width` channels from `c0`, held in `V` vectors of 8 lanes; `TAIL`
/// when `width < 8·V` (then `V = 1`).
#[derive(Clone, Copy)]
struct Block {
    c0: usize,
    width: usize,
}

/// The block's values of a per-channel vector, readable as `8·V` lanes: in place for a
/// full block, else copied into `buf` with zeros past `width`.
#[inline(always)]
fn lanes<T: Copy + Default, const TAIL: bool>(
    values: &[T],
    b: Block,
    buf: &mut [T; 16],
) -> *const T {
    let values = &values[b.c0..b.c0 + b.width];
    if TAIL {
        buf[..b.width].copy_from_slice(values);
        buf.as_ptr()
    } else {
        values.as_ptr()
    }
}

/// int8 `K`x`K` depthwise over all channels, every image and output row of `out_shape`.
///
/// # Safety
/// The CPU supports NEON; `input` holds `shape`; `taps` is `[K·K][shape.c]`;
/// `window.kernel == [K, K]` with `K` 3 or 5, and `out_shape` is the window's output shape
/// for `shape`; the per-channel vectors of `finish` hold `shape.c` values and its output
/// holds `out_shape`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dw_u8_neon(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    finish: &mut Finish,
) {
    debug_assert!(window.kernel == [3, 3] || window.kernel == [5, 5]);
    debug_assert_eq!(input.len(), shape.len());
    debug_assert_eq!(taps.len(), window.kernel[0] * window.kernel[1] * shape.c);
    let g = Geometry {
        input,
        shape,
        za: vdup_n_u8(za as u8),
        taps,
        window,
        out_shape,
    };
    // SAFETY: NEON is enabled on this function; the geometry is the caller's contract.
    unsafe {
        match (window.kernel[0], window.stride[1]) {
            (3, 1) => channels::<3, 9, 1>(&g, finish),
            (3, 2) => channels::<3, 9, 2>(&g, finish),
            (3, _) => channels::<3, 9, 0>(&g, finish),
            (_, 1) => channels::<5, 25, 1>(&g, finish),
            (_, 2) => channels::<5, 25, 2>(&g, finish),
            _ => channels::<5, 25, 0>(&g, finish),
        }
    }
}

/// Every output row, and in each row every channel block (16, then 8, then the rest), so
/// the input rows a row of outputs reads stay in cache across the blocks.
///
/// # Safety
/// As [`dw_u8_neon`], with `TAPS = K·K` and `S` the horizontal stride or 0 (any stride).
#[inline(always)]
unsafe fn channels<const K: usize, const TAPS: usize, const S: usize>(
    g: &Geometry,
    finish: &mut Finish,
) {
    let c = g.shape.c;
    for img in 0..g.shape.n {
        for oy in 0..g.out_shape.h {
            let mut c0 = 0;
            // SAFETY: each block lies within the c channels (caller's contract for the rest).
            unsafe {
                while c0 + 16 <= c {
                    row::<K, TAPS, S, 2, false>(g, img, oy, Block { c0, width: 16 }, finish);
                    c0 += 16;
                }
                if c0 + 8 <= c {
                    row::<K, TAPS, S, 1, false>(g, img, oy, Block { c0, width: 8 }, finish);
                    c0 += 8;
                }
                if c0 < c {
                    let width = c - c0;
                    row::<K, TAPS, S, 1, true>(g, img, oy, Block { c0, width }, finish);
                }
            }
        }
    }
}

/// Accumulators of a block: two i32x4 per 8 channels.
type Acc<const V: usize> = [[int32x4_t; 2]; V];

/// One output row `(img, oy)` of one channel block: sets up the block's weights and
/// output constants in registers and sweeps the row with the matching store.
///
/// # Safety
/// As [`dw_u8_neon`]; the block lies within the channels.
#[inline(always)]
unsafe fn row<
    const K: usize,
    const TAPS: usize,
    const S: usize,
    const V: usize,
    const TAIL: bool,
>(
    g: &Geometry,
    img: usize,
    oy: usize,
    b: Block,
    finish: &mut Finish,
) {
    let c = g.shape.c;
    let mut buf_i16 = [0i16; 16];
    let (mut buf_i32, mut buf_f32, mut buf2_f32) = ([0i32; 16], [0f32; 16], [0f32; 16]);
    // SAFETY: NEON is available (caller's contract); every vector load reads within the
    // 8·V values `lanes` vouches for (lane offsets below 8·V).
    unsafe {
        let mut w = [[vdupq_n_s16(0); V]; TAPS];
        for (t, w) in w.iter_mut().enumerate() {
            let lanes = lanes::<_, TAIL>(&g.taps[t * c..(t + 1) * c], b, &mut buf_i16);
            for (h, w) in w.iter_mut().enumerate() {
                *w = vld1q_s16(lanes.add(8 * h));
            }
        }
        let out_pixel = g.out_shape.index(img, oy, 0, 0) + b.c0;
        let out_c = g.out_shape.c;
        match finish {
            Finish::Requant {
                bias,
                multiplier,
                zero_point,
                qmin,
                qmax,
                out,
            } => {
                let bias = lanes::<_, TAIL>(bias, b, &mut buf_i32);
                let multiplier = lanes::<_, TAIL>(multiplier, b, &mut buf_f32);
                let mut init = [[vdupq_n_s32(0); 2]; V];
                let mut m = [[vdupq_n_f32(0.0); 2]; V];
                for h in 0..V {
                    for q in 0..2 {
                        init[h][q] = vld1q_s32(bias.add(8 * h + 4 * q));
                        m[h][q] = vld1q_f32(multiplier.add(8 * h + 4 * q));
                    }
                }
                let requant = Requant4::new(*zero_point, *qmin, *qmax);
                sweep::<K, TAPS, S, V, TAIL>(g, img, oy, b, &w, init, |ox, acc| {
                    let dst = &mut out[out_pixel + ox * out_c..][..b.width];
                    let mut bytes = [0u8; 16];
                    for h in 0..V {
                        let q = vcombine_s16(
                            vqmovn_s32(requant.apply(acc[h][0], m[h][0])),
                            vqmovn_s32(requant.apply(acc[h][1], m[h][1])),
                        );
                        let q = vqmovun_s16(q);
                        if TAIL {
                            vst1_u8(bytes.as_mut_ptr(), q);
                        } else {
                            // dst holds 8·V = width bytes.
                            vst1_u8(dst.as_mut_ptr().add(8 * h), q);
                        }
                    }
                    if TAIL {
                        dst.copy_from_slice(&bytes[..b.width]);
                    }
                });
            }
            Finish::Dequant {
                a_scale,
                b_scale,
                bias,
                out,
            } => {
                let b_scale = lanes::<_, TAIL>(b_scale, b, &mut buf_f32);
                let bias = lanes::<_, TAIL>(bias, b, &mut buf2_f32);
                let a_scale = vdupq_n_f32(*a_scale);
                let mut scale = [[vdupq_n_f32(0.0); 2]; V];
                let mut add = [[vdupq_n_f32(0.0); 2]; V];
                for h in 0..V {
                    for q in 0..2 {
                        scale[h][q] = vmulq_f32(a_scale, vld1q_f32(b_scale.add(8 * h + 4 * q)));
                        add[h][q] = vld1q_f32(bias.add(8 * h + 4 * q));
                    }
                }
                let init = [[vdupq_n_s32(0); 2]; V];
                sweep::<K, TAPS, S, V, TAIL>(g, img, oy, b, &w, init, |ox, acc| {
                    let dst = &mut out[out_pixel + ox * out_c..][..b.width];
                    let mut floats = [0f32; 16];
                    for h in 0..V {
                        for q in 0..2 {
                            // A multiply, then an add: never fused.
                            let y = vaddq_f32(
                                vmulq_f32(vcvtq_f32_s32(acc[h][q]), scale[h][q]),
                                add[h][q],
                            );
                            if TAIL {
                                vst1q_f32(floats.as_mut_ptr().add(8 * h + 4 * q), y);
                            } else {
                                // dst holds 8·V = width floats.
                                vst1q_f32(dst.as_mut_ptr().add(8 * h + 4 * q), y);
                            }
                        }
                    }
                    if TAIL {
                        dst.copy_from_slice(&floats[..b.width]);
                    }
                });
            }
        }
    }
}

/// The requantized output stage on four lanes (see [`crate::epilogue::requantize`]).
///
/// It computes the epilogue's result in fewer operations, equal by construction: with
/// `a = qmin − z` and `b = qmax − z` (integers in [−255, 255], inside ±2^22) and `r` round
/// half to even (monotone, and fixing integers),
/// `clamp(r(clamp(t, ±2^22)) + z, qmin, qmax) = r(clamp(t, a, b)) + z` for every `t`,
/// infinities included (`t` is never NaN: the multiplier is finite and positive). `fcvtns`
/// is `r` to i32 and the add of `z` is exact. The unit test below compares it with the
/// scalar epilogue on accumulator, multiplier, zero point and clamp extremes and on ties.
#[derive(Clone, Copy)]
struct Requant4 {
    lo: float32x4_t,
    hi: float32x4_t,
    zero_point: int32x4_t,
}

impl Requant4 {
    /// # Safety
    /// NEON is available.
    #[inline(always)]
    unsafe fn new(zero_point: i32, qmin: i32, qmax: i32) -> Requant4 {
        // SAFETY: NEON is available (caller's contract).
        unsafe {
            Requant4 {
                lo: vdupq_n_f32((qmin - zero_point) as f32),
                hi: vdupq_n_f32((qmax - zero_point) as f32),
                zero_point: vdupq_n_s32(zero_point),
            }
        }
    }

    /// `clamp(round_half_even((acc as f32) · m) + z, qmin, qmax)` lane by lane (the bias
    /// is already in `acc`).
    ///
    /// # Safety
    /// NEON is available.
    #[inline(always)]
    unsafe fn apply(&self, acc: int32x4_t, m: float32x4_t) -> int32x4_t {
        // SAFETY: NEON is available (caller's contract).
        unsafe {
            let t = vmulq_f32(vcvtq_f32_s32(acc), m);
            let t = vminq_f32(vmaxq_f32(t, self.lo), self.hi);
            vaddq_s32(vcvtnq_s32_f32(t), self.zero_point)
        }
    }
}

/// `x − za` for the block's channels of the pixel at `p`, as i16.
///
/// # Safety
/// NEON is available; `p` points to the block's first channel of an in-image pixel (so
/// `width` bytes are readable, and `8·V` when not `TAIL`).
#[inline(always)]
unsafe fn load<const V: usize, const TAIL: bool>(
    p: *const u8,
    width: usize,
    za: uint8x8_t,
) -> [int16x8_t; V] {
    // SAFETY: NEON is available; the reads stay within the bytes the caller vouches for.
    unsafe {
        let mut x = [vdupq_n_s16(0); V];
        if TAIL {
            let mut bytes = [0u8; 8];
            core::ptr::copy_nonoverlapping(p, bytes.as_mut_ptr(), width);
            x[0] = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(bytes.as_ptr()), za));
        } else {
            for (h, x) in x.iter_mut().enumerate() {
                *x = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(p.add(8 * h)), za));
            }
        }
        x
    }
}

/// `acc += x · w` lane by lane, widening i16 products into i32 (`smlal`, `smlal2`).
///
/// # Safety
/// NEON is available.
#[inline(always)]
unsafe fn mac<const V: usize>(acc: &mut Acc<V>, x: &[int16x8_t; V], w: &[int16x8_t; V]) {
    // SAFETY: NEON is available (caller's contract).
    unsafe {
        for h in 0..V {
            acc[h][0] = vmlal_s16(acc[h][0], vget_low_s16(x[h]), vget_low_s16(w[h]));
            acc[h][1] = vmlal_high_s16(acc[h][1], x[h], w[h]);
        }
    }
}

/// Output columns whose window lies wholly inside the image in width: `lo..hi`.
#[inline(always)]
fn interior_columns(
    out_w: usize,
    in_w: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    k: usize,
) -> (usize, usize) {
    // ox·s ≥ pad and ox·s − pad + (k − 1)·d ≤ in_w − 1.
    let span = (k - 1) * dilation;
    let hi = if in_w + pad > span {
        ((in_w - 1 + pad - span) / stride + 1).min(out_w)
    } else {
        0
    };
    let lo = pad.div_ceil(stride).min(hi);
    (lo, hi)
}

/// Sweeps output row `(img, oy)` for one block: border columns tap by tap over their
/// in-image taps, interior columns with all `K` taps of each in-image window row (and
/// fully unrolled where the whole window is in the image). Hands each pixel's
/// accumulators to `store` with its column.
///
/// # Safety
/// As [`row`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sweep<
    const K: usize,
    const TAPS: usize,
    const S: usize,
    const V: usize,
    const TAIL: bool,
>(
    g: &Geometry,
    img: usize,
    oy: usize,
    b: Block,
    w: &[[int16x8_t; V]; TAPS],
    init: Acc<V>,
    mut store: impl FnMut(usize, Acc<V>),
) {
    let (shape, window) = (g.shape, g.window);
    let c = shape.c as isize;
    let sx = if S == 0 { window.stride[1] } else { S };
    let (dy, dx) = (window.dilation[0], window.dilation[1]);
    let (pad_top, pad_left) = (window.pads[0], window.pads[1]);
    let ys = tap_range(oy, window.stride[0], dy, pad_top, K, shape.h);
    let (lo, hi) = interior_columns(g.out_shape.w, shape.w, sx, dx, pad_left, K);
    let row = shape.w as isize * c;
    let offset: [isize; TAPS] =
        core::array::from_fn(|t| (t / K * dy) as isize * row + (t % K * dx) as isize * c);
    // Element index of tap (0, 0)'s channel c0 for column ox (in the padding for border
    // pixels: only in-image taps are added to it).
    let iy0 = (oy * window.stride[0]) as isize - pad_top as isize;
    let base = |ox: usize| {
        let ix0 = (ox * sx) as isize - pad_left as isize;
        ((img * shape.h) as isize + iy0) * row + ix0 * c + b.c0 as isize
    };
    let input = g.input.as_ptr();
    // SAFETY (for the loads below): every visited tap lies in the image, by tap_range for
    // border pixels and by `interior_columns` and `ys` for the others, so the block's
    // channels of its pixel lie in `input` (caller's contract for the block).
    let pixel = |ox: usize, xs: (usize, usize)| {
        let mut acc = init;
        let origin = base(ox);
        for ky in ys.0..ys.1 {
            for kx in xs.0..xs.1 {
                let t = ky * K + kx;
                // SAFETY: see above.
                unsafe {
                    let x = load::<V, TAIL>(input.offset(origin + offset[t]), b.width, g.za);
                    mac(&mut acc, &x, &w[t]);
                }
            }
        }
        acc
    };
    let border = |ox: usize| tap_range(ox, sx, dx, pad_left, K, shape.w);
    for ox in 0..lo {
        store(ox, pixel(ox, border(ox)));
    }
    if ys == (0, K) && lo < hi {
        // The interior: no tap search, the window unrolled, one pointer stepping by s·c.
        let step = sx as isize * c;
        let mut p = base(lo);
        for ox in lo..hi {
            let mut acc = init;
            for t in 0..TAPS {
                // SAFETY: see above.
                unsafe {
                    let x = load::<V, TAIL>(input.offset(p + offset[t]), b.width, g.za);
                    mac(&mut acc, &x, &w[t]);
                }
            }
            store(ox, acc);
            p += step;
        }
    } else {
        for ox in lo..hi {
            store(ox, pixel(ox, (0, K)));
        }
    }
    for ox in hi..g.out_shape.w {
        store(ox, pixel(ox, border(ox)));
    }
}

#[cfg(test)]
mod tests {
    use super::Requant4;
    use crate::epilogue::requantize;
    use core::arch::aarch64::{vdupq_n_f32, vld1q_s32, vst1q_s32};

    /// The four-lane output stage against the scalar epilogue, value for value.
    #[test]
    fn requant4_is_the_epilogue() {
        let mut accs = vec![
            i32::MIN,
            i32::MIN + 1,
            -1 << 24,
            -255,
            -3,
            -1,
            0,
            1,
            2,
            3,
            5,
            255,
        ];
        accs.extend([1 << 22, (1 << 24) + 1, i32::MAX - 1, i32::MAX]);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every magnitude: shift a random word right by 0..=31 bits.
            accs.push((x as i32) >> (x >> 59));
        }
        while accs.len() % 4 != 0 {
            accs.push(0);
        }
        let multipliers = [
            f32::MIN_POSITIVE,
            1e-9,
            1e-4,
            3.1e-3,
            0.25,
            0.5, // every odd accumulator is a tie
            1.0,
            1.5, // 1.5 · odd is a tie too
            7.0,
            1e6,
            f32::MAX,
        ];
        for zero_point in [0, 1, 127, 128, 254, 255] {
            for (qmin, qmax) in [(0, 255), (0, 0), (255, 255), (17, 17), (0, 6), (3, 200)] {
                // SAFETY: NEON is part of the aarch64 baseline these tests run on.
                let r = unsafe { Requant4::new(zero_point, qmin, qmax) };
                for &m in &multipliers {
                    for acc in accs.chunks(4) {
                        let mut got = [0i32; 4];
                        // SAFETY: as above; `acc` and `got` hold four i32.
                        unsafe {
                            let q = r.apply(vld1q_s32(acc.as_ptr()), vdupq_n_f32(m));
                            vst1q_s32(got.as_mut_ptr(), q);
                        }
                        for (lane, &a) in acc.iter().enumerate() {
                            let want = requantize(a, 0, m, zero_point, qmin, qmax);
                            assert_eq!(
                                got[lane],
                                i32::from(want),
                                "acc {a} m {m:e} z {zero_point} [{qmin}, {qmax}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
