//! x86 int8 depthwise convolution: `avx512vnni_dwconv_u8s8_c32` (32 channels per block,
//! `vpdpwssd` on zmm) and `avx2_dwconv_u8s8_c16` (16 channels per block, `vpmaddwd` +
//! `vpaddd` on ymm), one body written once over the [`Lanes`] of each ISA. 3x3 and 5x5
//! windows are compile-time parameters, as is the horizontal stride (1, 2, or any).
//!
//! Arithmetic, per tap and per block: the block's activation bytes are zero-extended to
//! 16-bit words (`vpmovzxbw`), so 32-bit lane `j` holds channels `2j` (low word) and
//! `2j + 1` (high word). Two weight vectors per tap hold `(w − zw, 0)` and `(0, w − zw)` in
//! those words (packed once per call), so one `vpdpwssd` (or `vpmaddwd` + `vpaddd`) adds
//! the even channels' products into one accumulator and another the odd channels' into a
//! second; the output stage puts the channels back in order. Every product is at most
//! 255·255 in magnitude (exact in i32), the other word of the pair is multiplied by zero,
//! and the accumulation wraps modulo 2^32 as the contract's wrapping i32 does.
//!
//! Zero points: border pixels (whose window leaves the image) subtract `za` from the
//! words (`vpsubw`, exact: |x − za| ≤ 255) and add only their in-image taps. Pixels whose
//! whole window lies in the image add raw `x · (w − zw)` from accumulators that start at
//! `bias − za · Σ_t (w − zw)`, equal to `bias + Σ_t (x − za)(w − zw)` modulo 2^32 (a ring
//! identity), one operation fewer per tap.
//!
//! Padding stays out of the inner loop: per output row, the columns whose window lies in
//! the image in width are computed apart from the border ones, and in rows whose window
//! also lies in the image in height they run the `K·K` taps unrolled from one pointer
//! stepping `stride·c`.
//!
//! The output stage computes the shared epilogue's result: `(acc as f32) · M` (one
//! multiply, no FMA), clamped to `[qmin − z, qmax − z]`, rounded half to even by the
//! conversion (`vcvtps2dq` under the default rounding mode) and `z` added in i32. That
//! equals the epilogue's clamp to ±2^22, round, add `z`, clamp to `[qmin, qmax]` for every
//! `t` (rounding is monotone and fixes integers, and `qmin − z`, `qmax − z` are integers
//! inside ±2^22); the unit test below compares the two value by value. The dequantized
//! stage is a multiply by `sa·sw` then an add of the bias, as the epilogue.
//!
//! Channels: blocks of `W` (32 or 16), the last partial block through the same code with
//! masked loads and stores (AVX-512) or a zero-padded stack copy (AVX2).

use std::arch::x86_64::*;

use super::dwconv::Finish;
use crate::conv::depthwise::tap_range;
use crate::nhwc::{Nhwc, Window};

/// One ISA's vectors for the depthwise body: `V` is a vector of `W / 2` i32 lanes (or of
/// `W` i16 words), `F` of `W / 2` f32 lanes.
pub(crate) trait Lanes {
    /// Channels per block.
    const W: usize;
    type V: Copy;
    type F: Copy;
    /// The kernel name.
    const NAME: &'static str;

    /// # Safety
    /// The ISA is available.
    unsafe fn splat_words(v: i16) -> Self::V;
    /// # Safety
    /// The ISA is available; `p` points to `W / 2` readable i32.
    unsafe fn load_i32(p: *const i32) -> Self::V;
    /// # Safety
    /// The ISA is available; `p` points to `W / 2` readable f32.
    unsafe fn load_f32(p: *const f32) -> Self::F;
    /// `W` activation bytes (only `width` of them when `TAIL`, the rest zero) as words.
    ///
    /// # Safety
    /// The ISA is available; `p` points to `width` readable bytes, `W` when not `TAIL`.
    unsafe fn load_x<const TAIL: bool>(p: *const u8, width: usize) -> Self::V;
    /// # Safety
    /// The ISA is available.
    unsafe fn sub_words(x: Self::V, za: Self::V) -> Self::V;
    /// `acc + lo(x)·lo(w) + hi(x)·hi(w)` per 32-bit lane, wrapping.
    ///
    /// # Safety
    /// The ISA is available.
    unsafe fn mac(acc: Self::V, x: Self::V, w: Self::V) -> Self::V;
    /// The requantized output stage for the even and odd lanes, channels put back in
    /// order and stored to `dst` (`width` bytes when `TAIL`, else `W`).
    ///
    /// # Safety
    /// The ISA is available; `dst` has room for those bytes.
    unsafe fn requant_store<const TAIL: bool>(
        acc: [Self::V; 2],
        m: [Self::F; 2],
        r: &Requant,
        dst: *mut u8,
        width: usize,
    );
    /// The dequantized output stage (`acc · scale + bias`), stored in channel order.
    ///
    /// # Safety
    /// The ISA is available; `dst` has room for `width` floats when `TAIL`, else `W`.
    unsafe fn dequant_store<const TAIL: bool>(
        acc: [Self::V; 2],
        scale: [Self::F; 2],
        bias: [Self::F; 2],
        dst: *mut f32,
        width: usize,
    );
}

/// The requantization constants: `lo = qmin − z`, `hi = qmax − z`, `z`.
pub(crate) struct Requant {
    lo: f32,
    hi: f32,
    zero_point: i32,
}

impl Requant {
    pub(crate) fn new(zero_point: i32, qmin: i32, qmax: i32) -> Requant {
        Requant {
            lo: (qmin - zero_point) as f32,
            hi: (qmax - zero_point) as f32,
            zero_point,
        }
    }
}

/// AVX-512 (F, BW, VNNI): 32 channels per zmm of words.
pub(crate) struct Avx512;

impl Avx512 {
    /// `clamp((acc as f32)·m, lo, hi)`, rounded half to even, plus `z`.
    #[inline(always)]
    unsafe fn requant(acc: __m512i, m: __m512, r: &Requant) -> __m512i {
        // SAFETY: AVX-512 F is available (caller's contract).
        unsafe {
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), m);
            let t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(r.lo)), _mm512_set1_ps(r.hi));
            _mm512_add_epi32(_mm512_cvtps_epi32(t), _mm512_set1_epi32(r.zero_point))
        }
    }
}

impl Lanes for Avx512 {
    const W: usize = 32;
    type V = __m512i;
    type F = __m512;
    const NAME: &'static str = "avx512vnni_dwconv_u8s8_c32";

    #[inline(always)]
    unsafe fn splat_words(v: i16) -> __m512i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm512_set1_epi16(v) }
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m512i {
        // SAFETY: 16 i32 are readable (caller's contract).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> __m512 {
        // SAFETY: 16 f32 are readable (caller's contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_x<const TAIL: bool>(p: *const u8, width: usize) -> __m512i {
        // SAFETY: the full load reads the 32 bytes the caller vouches for; the masked load
        // reads only the `width` bytes whose mask bits are set (masked-out bytes are not
        // accessed).
        unsafe {
            let bytes = if TAIL {
                _mm512_castsi512_si256(_mm512_maskz_loadu_epi8((1u64 << width) - 1, p.cast()))
            } else {
                _mm256_loadu_si256(p.cast())
            };
            _mm512_cvtepu8_epi16(bytes)
        }
    }
    #[inline(always)]
    unsafe fn sub_words(x: __m512i, za: __m512i) -> __m512i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm512_sub_epi16(x, za) }
    }
    #[inline(always)]
    unsafe fn mac(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm512_dpwssd_epi32(acc, x, w) }
    }
    #[inline(always)]
    unsafe fn requant_store<const TAIL: bool>(
        acc: [__m512i; 2],
        m: [__m512; 2],
        r: &Requant,
        dst: *mut u8,
        width: usize,
    ) {
        // SAFETY: the ISA is available (caller's contract).
        unsafe {
            let even = Self::requant(acc[0], m[0], r);
            let odd = Self::requant(acc[1], m[1], r);
            // Both in [qmin, qmax] ⊆ [0, 255]: word 2j is channel 2j, word 2j + 1 channel
            // 2j + 1, and truncating the words to bytes is exact.
            let words = _mm512_or_si512(even, _mm512_slli_epi32::<16>(odd));
            let bytes = _mm512_cvtepi16_epi8(words);
            if TAIL {
                // SAFETY: only the `width` bytes whose mask bits are set are written.
                _mm512_mask_storeu_epi8(
                    dst.cast(),
                    (1u64 << width) - 1,
                    _mm512_castsi256_si512(bytes),
                );
            } else {
                // SAFETY: 32 bytes of room (caller's contract).
                _mm256_storeu_si256(dst.cast(), bytes);
            }
        }
    }
    #[inline(always)]
    unsafe fn dequant_store<const TAIL: bool>(
        acc: [__m512i; 2],
        scale: [__m512; 2],
        bias: [__m512; 2],
        dst: *mut f32,
        width: usize,
    ) {
        // SAFETY: the ISA is available (caller's contract).
        unsafe {
            // A multiply, then an add: never fused.
            let even = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[0]), scale[0]), bias[0]);
            let odd = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[1]), scale[1]), bias[1]);
            // Lane i of the first half is channel i: even lane i/2 or odd lane i/2.
            let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
            let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
            let first = _mm512_permutex2var_ps(even, lo, odd);
            let second = _mm512_permutex2var_ps(even, hi, odd);
            if TAIL {
                // SAFETY: only the lanes whose mask bits are set (channels below width) are
                // written.
                _mm512_mask_storeu_ps(dst, ((1u32 << width.min(16)) - 1) as u16, first);
                if width > 16 {
                    _mm512_mask_storeu_ps(dst.add(16), ((1u32 << (width - 16)) - 1) as u16, second);
                }
            } else {
                // SAFETY: 32 floats of room (caller's contract).
                _mm512_storeu_ps(dst, first);
                _mm512_storeu_ps(dst.add(16), second);
            }
        }
    }
}

/// AVX2: 16 channels per ymm of words.
pub(crate) struct Avx2;

impl Avx2 {
    #[inline(always)]
    unsafe fn requant(acc: __m256i, m: __m256, r: &Requant) -> __m256i {
        // SAFETY: AVX2 is available (caller's contract).
        unsafe {
            let t = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), m);
            let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(r.lo)), _mm256_set1_ps(r.hi));
            _mm256_add_epi32(_mm256_cvtps_epi32(t), _mm256_set1_epi32(r.zero_point))
        }
    }
}

impl Lanes for Avx2 {
    const W: usize = 16;
    type V = __m256i;
    type F = __m256;
    const NAME: &'static str = "avx2_dwconv_u8s8_c16";

    #[inline(always)]
    unsafe fn splat_words(v: i16) -> __m256i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm256_set1_epi16(v) }
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m256i {
        // SAFETY: 8 i32 are readable (caller's contract).
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: 8 f32 are readable (caller's contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_x<const TAIL: bool>(p: *const u8, width: usize) -> __m256i {
        // SAFETY: reads the 16 bytes (or, through a zero-padded copy, the `width` bytes)
        // the caller vouches for.
        unsafe {
            let bytes = if TAIL {
                let mut buf = [0u8; 16];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), width);
                _mm_loadu_si128(buf.as_ptr().cast())
            } else {
                _mm_loadu_si128(p.cast())
            };
            _mm256_cvtepu8_epi16(bytes)
        }
    }
    #[inline(always)]
    unsafe fn sub_words(x: __m256i, za: __m256i) -> __m256i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm256_sub_epi16(x, za) }
    }
    #[inline(always)]
    unsafe fn mac(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
        // SAFETY: the ISA is available (caller's contract).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)) }
    }
    #[inline(always)]
    unsafe fn requant_store<const TAIL: bool>(
        acc: [__m256i; 2],
        m: [__m256; 2],
        r: &Requant,
        dst: *mut u8,
        width: usize,
    ) {
        // SAFETY: the ISA is available (caller's contract).
        unsafe {
            let even = Self::requant(acc[0], m[0], r);
            let odd = Self::requant(acc[1], m[1], r);
            // Words in channel order, each in [0, 255]: the saturating pack keeps them.
            let words = _mm256_or_si256(even, _mm256_slli_epi32::<16>(odd));
            let bytes = _mm_packus_epi16(
                _mm256_castsi256_si128(words),
                _mm256_extracti128_si256::<1>(words),
            );
            if TAIL {
                let mut buf = [0u8; 16];
                _mm_storeu_si128(buf.as_mut_ptr().cast(), bytes);
                // SAFETY: `width` bytes of room (caller's contract).
                std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, width);
            } else {
                // SAFETY: 16 bytes of room (caller's contract).
                _mm_storeu_si128(dst.cast(), bytes);
            }
        }
    }
    #[inline(always)]
    unsafe fn dequant_store<const TAIL: bool>(
        acc: [__m256i; 2],
        scale: [__m256; 2],
        bias: [__m256; 2],
        dst: *mut f32,
        width: usize,
    ) {
        // SAFETY: the ISA is available (caller's contract).
        unsafe {
            // A multiply, then an add: never fused.
            let even = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[0]), scale[0]), bias[0]);
            let odd = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[1]), scale[1]), bias[1]);
            // [c0..c3 | c8..c11] and [c4..c7 | c12..c15], then the halves in order.
            let lo = _mm256_unpacklo_ps(even, odd);
            let hi = _mm256_unpackhi_ps(even, odd);
            let first = _mm256_permute2f128_ps::<0x20>(lo, hi);
            let second = _mm256_permute2f128_ps::<0x31>(lo, hi);
            if TAIL {
                let mut buf = [0f32; 16];
                _mm256_storeu_ps(buf.as_mut_ptr(), first);
                _mm256_storeu_ps(buf.as_mut_ptr().add(8), second);
                // SAFETY: `width` floats of room (caller's contract).
                std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, width);
            } else {
                // SAFETY: 16 floats of room (caller's contract).
                _mm256_storeu_ps(dst, first);
                _mm256_storeu_ps(dst.add(8), second);
            }
        }
    }
}

/// Per-call block data, `W` channels per block with the last block zero-padded, each
/// per-channel vector split into even and odd channels (`[2][W / 2]` per block).
struct Packed {
    /// `[block][tap][even/odd][W / 2]`: `(w − zw, 0)` / `(0, w − zw)` as word pairs.
    weights: Vec<i32>,
    /// `[block][2][W / 2]`: the accumulators' start for border pixels (bias or 0).
    init_border: Vec<i32>,
    /// `[block][2][W / 2]`: `init_border − za · Σ_t (w − zw)` for interior pixels.
    init_interior: Vec<i32>,
    /// `[block][2][W / 2]`: the multiplier, or `sa · sw` (dequantized).
    scale: Vec<f32>,
    /// `[block][2][W / 2]`: the f32 bias (dequantized), else 0.
    bias: Vec<f32>,
}

fn pack(
    w: usize,
    taps_per_window: usize,
    taps: &[i16],
    c: usize,
    za: i32,
    finish: &Finish,
) -> Packed {
    let h = w / 2;
    let blocks = c.div_ceil(w);
    let lanes = blocks * 2 * h;
    let mut p = Packed {
        weights: vec![0; lanes * taps_per_window],
        init_border: vec![0; lanes],
        init_interior: vec![0; lanes],
        scale: vec![0.0; lanes],
        bias: vec![0.0; lanes],
    };
    for b in 0..blocks {
        for half in 0..2 {
            for j in 0..h {
                let ch = b * w + 2 * j + half;
                if ch >= c {
                    continue;
                }
                let lane = (b * 2 + half) * h + j;
                let mut sum = 0i32;
                for t in 0..taps_per_window {
                    let v = i32::from(taps[t * c + ch]);
                    sum += v;
                    p.weights[((b * taps_per_window + t) * 2 + half) * h + j] = if half == 0 {
                        i32::from(v as u16)
                    } else {
                        v << 16
                    };
                }
                let init = match finish {
                    Finish::Requant {
                        bias, multiplier, ..
                    } => {
                        p.scale[lane] = multiplier[ch];
                        bias[ch]
                    }
                    Finish::Dequant {
                        a_scale,
                        b_scale,
                        bias,
                        ..
                    } => {
                        // The epilogue's `sa · sw`, the same f32 multiply.
                        p.scale[lane] = a_scale * b_scale[ch];
                        p.bias[lane] = bias[ch];
                        0
                    }
                };
                p.init_border[lane] = init;
                p.init_interior[lane] = init.wrapping_sub(za.wrapping_mul(sum));
            }
        }
    }
    p
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

/// The geometry of one call.
struct Geometry<'a> {
    input: &'a [u8],
    shape: Nhwc,
    za: i32,
    window: &'a Window,
    out_shape: Nhwc,
}

/// int8 `K`x`K` depthwise (K = 3 or 5) over all channels, every image and output row.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VNNI; `input` holds `shape`; `taps` is
/// `[K·K][shape.c]` of `w − zw`; `window.kernel == [K, K]` with K 3 or 5 and `out_shape`
/// is the window's output shape for `shape`; the per-channel vectors of `finish` hold
/// `shape.c` values and its output holds `out_shape`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dw_u8_avx512(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    finish: &mut Finish,
) -> &'static str {
    // SAFETY: the features are enabled on this function; the rest is the caller's contract.
    unsafe { dispatch::<Avx512>(input, shape, za, taps, window, out_shape, finish) }
}

/// As [`dw_u8_avx512`] on AVX2.
///
/// # Safety
/// As [`dw_u8_avx512`], with AVX2 in place of the AVX-512 features.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dw_u8_avx2(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    finish: &mut Finish,
) -> &'static str {
    // SAFETY: AVX2 is enabled on this function; the rest is the caller's contract.
    unsafe { dispatch::<Avx2>(input, shape, za, taps, window, out_shape, finish) }
}

/// # Safety
/// As [`dw_u8_avx512`], for the ISA of `L`.
#[inline(always)]
unsafe fn dispatch<L: Lanes>(
    input: &[u8],
    shape: Nhwc,
    za: i32,
    taps: &[i16],
    window: &Window,
    out_shape: Nhwc,
    finish: &mut Finish,
) -> &'static str {
    debug_assert!(window.kernel == [3, 3] || window.kernel == [5, 5]);
    debug_assert_eq!(input.len(), shape.len());
    debug_assert_eq!(taps.len(), window.kernel[0] * window.kernel[1] * shape.c);
    let packed = pack(
        L::W,
        window.kernel[0] * window.kernel[1],
        taps,
        shape.c,
        za,
        finish,
    );
    let g = Geometry {
        input,
        shape,
        za,
        window,
        out_shape,
    };
    // SAFETY: the caller's contract; `packed` is laid out for L::W.
    unsafe {
        match (window.kernel[0], window.stride[1]) {
            (3, 1) => rows::<L, 3, 9, 1>(&g, &packed, finish),
            (3, 2) => rows::<L, 3, 9, 2>(&g, &packed, finish),
            (3, _) => rows::<L, 3, 9, 0>(&g, &packed, finish),
            (_, 1) => rows::<L, 5, 25, 1>(&g, &packed, finish),
            (_, 2) => rows::<L, 5, 25, 2>(&g, &packed, finish),
            _ => rows::<L, 5, 25, 0>(&g, &packed, finish),
        }
    }
    L::NAME
}

/// Every output row, and in each row every channel block, so the input rows one row of
/// outputs reads stay in cache across the blocks.
///
/// # Safety
/// As [`dispatch`], with `TAPS = K·K` and `S` the horizontal stride or 0 (any stride).
#[inline(always)]
unsafe fn rows<L: Lanes, const K: usize, const TAPS: usize, const S: usize>(
    g: &Geometry,
    p: &Packed,
    finish: &mut Finish,
) {
    let c = g.shape.c;
    let full = c / L::W;
    for img in 0..g.shape.n {
        for oy in 0..g.out_shape.h {
            // SAFETY: blocks 0..full are whole, the last one holds c − full·W channels.
            unsafe {
                for b in 0..full {
                    row::<L, K, TAPS, S, false>(g, p, img, oy, b, L::W, finish);
                }
                if full * L::W < c {
                    row::<L, K, TAPS, S, true>(g, p, img, oy, full, c - full * L::W, finish);
                }
            }
        }
    }
}

/// One output row of block `b` (`width` channels): its weights and output constants in
/// registers, the row swept with the matching store.
///
/// # Safety
/// As [`rows`]; block `b` holds `width` channels (`W` unless `TAIL`).
#[inline(always)]
unsafe fn row<L: Lanes, const K: usize, const TAPS: usize, const S: usize, const TAIL: bool>(
    g: &Geometry,
    p: &Packed,
    img: usize,
    oy: usize,
    b: usize,
    width: usize,
    finish: &mut Finish,
) {
    let h = L::W / 2;
    let c0 = b * L::W;
    let lane = |i: usize| (b * 2 + i) * h;
    // SAFETY: the ISA is available; `p` holds these vectors for every block (`pack`).
    unsafe {
        let mut w = [[L::splat_words(0); 2]; TAPS];
        for (t, w) in w.iter_mut().enumerate() {
            for (i, w) in w.iter_mut().enumerate() {
                *w = L::load_i32(p.weights.as_ptr().add(((b * TAPS + t) * 2 + i) * h));
            }
        }
        let init_border = [
            L::load_i32(p.init_border.as_ptr().add(lane(0))),
            L::load_i32(p.init_border.as_ptr().add(lane(1))),
        ];
        let init_interior = [
            L::load_i32(p.init_interior.as_ptr().add(lane(0))),
            L::load_i32(p.init_interior.as_ptr().add(lane(1))),
        ];
        let scale = [
            L::load_f32(p.scale.as_ptr().add(lane(0))),
            L::load_f32(p.scale.as_ptr().add(lane(1))),
        ];
        let out_pixel = g.out_shape.index(img, oy, 0, c0);
        let out_c = g.out_shape.c;
        let inits = (init_border, init_interior);
        match finish {
            Finish::Requant {
                zero_point,
                qmin,
                qmax,
                out,
                ..
            } => {
                let r = Requant::new(*zero_point, *qmin, *qmax);
                debug_assert!(out.len() >= g.out_shape.len());
                let store = RequantStore::<L> {
                    dst: out.as_mut_ptr().add(out_pixel),
                    out_c,
                    width,
                    scale,
                    r,
                };
                sweep::<L, K, TAPS, S, TAIL, _>(g, img, oy, c0, width, &w, inits, &store);
            }
            Finish::Dequant { out, .. } => {
                let bias = [
                    L::load_f32(p.bias.as_ptr().add(lane(0))),
                    L::load_f32(p.bias.as_ptr().add(lane(1))),
                ];
                debug_assert!(out.len() >= g.out_shape.len());
                let store = DequantStore::<L> {
                    dst: out.as_mut_ptr().add(out_pixel),
                    out_c,
                    width,
                    scale,
                    bias,
                };
                sweep::<L, K, TAPS, S, TAIL, _>(g, img, oy, c0, width, &w, inits, &store);
            }
        }
    }
}

/// Sweeps output row `(img, oy)` for the block at channel `c0`: border columns over
/// their in-image taps with `x − za`, interior columns with the whole window (unrolled,
/// raw `x`, from `init_interior`) where it lies in the image in height too. Hands each
/// pixel's even/odd accumulators to `store` with its column.
///
/// # Safety
/// As [`row`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sweep<
    L: Lanes,
    const K: usize,
    const TAPS: usize,
    const S: usize,
    const TAIL: bool,
    St: Store<L>,
>(
    g: &Geometry,
    img: usize,
    oy: usize,
    c0: usize,
    width: usize,
    w: &[[L::V; 2]; TAPS],
    (init_border, init_interior): ([L::V; 2], [L::V; 2]),
    store: &St,
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
        ((img * shape.h) as isize + iy0) * row + ix0 * c + c0 as isize
    };
    let input = g.input.as_ptr();
    // SAFETY: the ISA is available (caller's contract).
    let za = unsafe { L::splat_words(g.za as i16) };
    // SAFETY (for the loads below, here and in `pixel`): every visited tap lies in the image, by tap_range for
    // border pixels and by `interior_columns` and `ys` for the others, so the block's
    // `width` channels of its pixel lie in `input` (`W` of them for a full block).
    let border = |ox: usize| tap_range(ox, sx, dx, pad_left, K, shape.w);
    // SAFETY: see above; `store` writes pixel ox of this row (caller's contract).
    unsafe {
        for ox in 0..lo {
            let acc = pixel::<L, K, TAPS, TAIL>(
                input,
                base(ox),
                ys,
                border(ox),
                &offset,
                width,
                za,
                w,
                init_border,
            );
            store.store(ox, acc);
        }
    }
    if ys == (0, K) && lo < hi {
        // The interior: no tap search, no zero-point subtraction, the window unrolled,
        // one pointer stepping by s·c.
        let step = sx as isize * c;
        let mut q = base(lo);
        for ox in lo..hi {
            let mut acc = init_interior;
            for t in 0..TAPS {
                // SAFETY: see above.
                unsafe {
                    let x = L::load_x::<TAIL>(input.offset(q + offset[t]), width);
                    acc[0] = L::mac(acc[0], x, w[t][0]);
                    acc[1] = L::mac(acc[1], x, w[t][1]);
                }
            }
            // SAFETY: pixel ox of this row (caller's contract).
            unsafe { store.store(ox, acc) };
            q += step;
        }
    } else {
        for ox in lo..hi {
            // SAFETY: as for the border columns.
            unsafe {
                let acc = pixel::<L, K, TAPS, TAIL>(
                    input,
                    base(ox),
                    ys,
                    (0, K),
                    &offset,
                    width,
                    za,
                    w,
                    init_border,
                );
                store.store(ox, acc);
            }
        }
    }
    for ox in hi..g.out_shape.w {
        // SAFETY: as for the left border columns.
        unsafe {
            let acc = pixel::<L, K, TAPS, TAIL>(
                input,
                base(ox),
                ys,
                border(ox),
                &offset,
                width,
                za,
                w,
                init_border,
            );
            store.store(ox, acc);
        }
    }
}

/// One pixel over its in-image taps `ys × xs`, with `x − za`, from `init` (a border
/// pixel, or an interior one in a row whose window leaves the image in height).
///
/// # Safety
/// The ISA is available; every tap of `ys × xs` at `origin + offset[t]` lies in the image
/// (`width` bytes readable, `W` unless `TAIL`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pixel<L: Lanes, const K: usize, const TAPS: usize, const TAIL: bool>(
    input: *const u8,
    origin: isize,
    ys: (usize, usize),
    xs: (usize, usize),
    offset: &[isize; TAPS],
    width: usize,
    za: L::V,
    w: &[[L::V; 2]; TAPS],
    init: [L::V; 2],
) -> [L::V; 2] {
    let mut acc = init;
    for ky in ys.0..ys.1 {
        for kx in xs.0..xs.1 {
            let t = ky * K + kx;
            // SAFETY: the caller's contract.
            unsafe {
                let x = L::sub_words(
                    L::load_x::<TAIL>(input.offset(origin + offset[t]), width),
                    za,
                );
                acc[0] = L::mac(acc[0], x, w[t][0]);
                acc[1] = L::mac(acc[1], x, w[t][1]);
            }
        }
    }
    acc
}

/// Where a pixel's accumulators go: a trait rather than a closure, so that everything
/// inlines into the `#[target_feature]` entry point (a closure would be a function
/// without the features, and the intrinsics in it calls).
trait Store<L: Lanes> {
    /// # Safety
    /// The ISA is available; pixel `ox` lies in the output row.
    unsafe fn store(&self, ox: usize, acc: [L::V; 2]);
}

struct RequantStore<L: Lanes> {
    dst: *mut u8,
    out_c: usize,
    width: usize,
    scale: [L::F; 2],
    r: Requant,
}

impl<L: Lanes> Store<L> for RequantStore<L> {
    #[inline(always)]
    unsafe fn store(&self, ox: usize, acc: [L::V; 2]) {
        // SAFETY: pixel ox of the output row has `width` channels from the block's first
        // (caller's contract).
        unsafe {
            if self.width == L::W {
                L::requant_store::<false>(
                    acc,
                    self.scale,
                    &self.r,
                    self.dst.add(ox * self.out_c),
                    L::W,
                )
            } else {
                L::requant_store::<true>(
                    acc,
                    self.scale,
                    &self.r,
                    self.dst.add(ox * self.out_c),
                    self.width,
                )
            }
        }
    }
}

struct DequantStore<L: Lanes> {
    dst: *mut f32,
    out_c: usize,
    width: usize,
    scale: [L::F; 2],
    bias: [L::F; 2],
}

impl<L: Lanes> Store<L> for DequantStore<L> {
    #[inline(always)]
    unsafe fn store(&self, ox: usize, acc: [L::V; 2]) {
        // SAFETY: as for the requantized store.
        unsafe {
            let dst = self.dst.add(ox * self.out_c);
            if self.width == L::W {
                L::dequant_store::<false>(acc, self.scale, self.bias, dst, L::W)
            } else {
                L::dequant_store::<true>(acc, self.scale, self.bias, dst, self.width)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Avx2, Avx512, Lanes, Requant};
    use crate::epilogue::requantize;

    /// Accumulators at every magnitude, the extremes, and small values around ties.
    fn accumulators() -> Vec<i32> {
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
            1 << 22,
            (1 << 24) + 1,
            i32::MAX - 1,
            i32::MAX,
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            accs.push((x as i32) >> (x >> 59));
        }
        while accs.len() % 32 != 0 {
            accs.push(0);
        }
        accs
    }

    /// Runs `L`'s requantized store on `acc` (even lanes, odd lanes) and returns the
    /// bytes in channel order.
    fn run<L: Lanes>(acc: &[i32], m: f32, r: &Requant) -> Vec<u8> {
        let h = L::W / 2;
        let (even, odd): (Vec<i32>, Vec<i32>) = (
            acc.iter().step_by(2).copied().collect(),
            acc.iter().skip(1).step_by(2).copied().collect(),
        );
        let ms = vec![m; h];
        let mut out = vec![0u8; L::W];
        // SAFETY: the caller checked the ISA; every vector holds h lanes, out W bytes.
        unsafe {
            let acc = [L::load_i32(even.as_ptr()), L::load_i32(odd.as_ptr())];
            let m = [L::load_f32(ms.as_ptr()), L::load_f32(ms.as_ptr())];
            L::requant_store::<false>(acc, m, r, out.as_mut_ptr(), L::W);
        }
        out
    }

    /// The output stage of both ISAs against the scalar epilogue, value for value, on
    /// accumulator, multiplier, zero-point and clamp extremes and on ties.
    #[test]
    fn output_stage_is_the_epilogue() {
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
        let accs = accumulators();
        let has512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        let has2 = std::arch::is_x86_feature_detected!("avx2");
        for zero_point in [0, 1, 127, 128, 254, 255] {
            for (qmin, qmax) in [(0, 255), (0, 0), (255, 255), (17, 17), (0, 6), (3, 200)] {
                let r = Requant::new(zero_point, qmin, qmax);
                for &m in &multipliers {
                    for chunk in accs.chunks(32) {
                        let want: Vec<u8> = chunk
                            .iter()
                            .map(|&a| requantize(a, 0, m, zero_point, qmin, qmax))
                            .collect();
                        if has512 {
                            // SAFETY: checked above (the store runs inside `run`).
                            let got = unsafe { run_avx512(chunk, m, &r) };
                            assert_eq!(got, want, "avx512 m {m:e} z {zero_point} [{qmin}, {qmax}]");
                        }
                        if has2 {
                            for half in chunk.chunks(16) {
                                // SAFETY: checked above.
                                let got = unsafe { run_avx2(half, m, &r) };
                                let want: Vec<u8> = half
                                    .iter()
                                    .map(|&a| requantize(a, 0, m, zero_point, qmin, qmax))
                                    .collect();
                                assert_eq!(got, want, "avx2 m {m:e} z {zero_point}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX-512 F, BW and VNNI are available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run_avx512(acc: &[i32], m: f32, r: &Requant) -> Vec<u8> {
        run::<Avx512>(acc, m, r)
    }

    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(acc: &[i32], m: f32, r: &Requant) -> Vec<u8> {
        run::<Avx2>(acc, m, r)
    }
}
