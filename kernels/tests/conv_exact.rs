//! int8 convolution on every rung against the naive reference conv, bit for bit, on
//! random and edge geometries (odd sizes, padding larger than half the kernel, stride 2,
//! dilation 2, groups, depthwise, 1x1, batch > 1, channels that fit no tile), through
//! both output stages; and the fp32 conv against an f64 direct convolution within the
//! classic dot-product rounding bound.

mod common;

use common::{rungs_under_test, Rng};
use proptest::prelude::*;
use qbench_kernels::conv::fp32::PackedConvF32;
use qbench_kernels::{
    conv_dequant, conv_requant, reference, ConvWeights, Dequant, Nhwc, PackedConv, Requant, Rung,
    Scales, Window,
};

#[derive(Clone, Debug)]
struct ConvCase {
    shape: Nhwc,
    out_channels: usize,
    groups: usize,
    window: Window,
    input: Vec<u8>,
    za: i32,
    weights: Vec<i8>,
    w_zero: Vec<i32>,
    bias_i32: Vec<i32>,
    bias_f32: Vec<f32>,
    multiplier: Vec<f32>,
    w_scale: Vec<f32>,
    out_zero: i32,
    qmin: u8,
    qmax: u8,
}

impl ConvCase {
    #[allow(clippy::too_many_arguments)]
    fn random(
        rng: &mut Rng,
        shape: Nhwc,
        out_channels: usize,
        groups: usize,
        window: Window,
        max_a: u8,
    ) -> ConvCase {
        let [kh, kw] = window.kernel;
        let cig = shape.c / groups;
        let k = (kh * kw * cig) as f32;
        let per_channel = rng.below(2) == 0;
        let nw = if per_channel { out_channels } else { 1 };
        ConvCase {
            shape,
            out_channels,
            groups,
            window,
            input: (0..shape.len()).map(|_| rng.u8_up_to(max_a)).collect(),
            za: i32::from(rng.u8_up_to(max_a)),
            weights: (0..out_channels * cig * kh * kw)
                .map(|_| rng.i8())
                .collect(),
            w_zero: if rng.below(3) == 0 {
                (0..nw).map(|_| i32::from(rng.i8())).collect()
            } else {
                vec![0]
            },
            bias_i32: (0..out_channels)
                .map(|_| rng.below(4001) as i32 - 2000)
                .collect(),
            bias_f32: (0..out_channels).map(|_| rng.f32_in(-2.0, 2.0)).collect(),
            multiplier: (0..nw).map(|_| rng.f32_in(1e-4, 5e-3) / k.sqrt()).collect(),
            w_scale: (0..nw).map(|_| rng.f32_in(1e-3, 1e-2)).collect(),
            out_zero: i32::from(rng.u8_up_to(255)),
            qmin: rng.u8_up_to(60),
            qmax: 200 + rng.u8_up_to(55),
        }
    }

    fn weights(&self) -> ConvWeights<'_> {
        ConvWeights {
            data: &self.weights,
            out_channels: self.out_channels,
            in_channels_per_group: self.shape.c / self.groups,
            kernel: self.window.kernel,
            zero_points: &self.w_zero,
        }
    }

    fn requant(&self) -> Requant<'_> {
        Requant {
            bias: Some(&self.bias_i32),
            multiplier: &self.multiplier,
            out_zero_point: self.out_zero,
            qmin: self.qmin,
            qmax: self.qmax,
        }
    }

    fn dequant(&self) -> Dequant<'_> {
        Dequant {
            a_scale: Scales::PerTensor(0.02),
            b_scale: &self.w_scale,
            bias: Some(&self.bias_f32),
        }
    }
}

/// Runs the case on `rung` through both output stages, on 1, 2 and 3 threads (splits
/// forced even on small shapes), and compares with the reference. Returns the path the
/// convolution took.
fn check(rung: Rung, case: &ConvCase) -> &'static str {
    qbench_kernels::gemm::split_every_call();
    let mut path = "";
    for threads in [1, 2, 3] {
        path = check_on(rung, case, threads);
    }
    path
}

fn check_on(rung: Rung, case: &ConvCase, threads: usize) -> &'static str {
    let conv = PackedConv::for_rung(&case.weights(), case.groups, case.window, rung).expect("pack");
    let os = conv.output_shape(case.shape).expect("fits");
    let label = format!(
        "{rung} {threads} threads {} {:?} groups={} window={:?}",
        conv.path(),
        case.shape,
        case.groups,
        case.window
    );

    let mut want = vec![0u8; os.len()];
    let mut got = vec![0xA5u8; os.len()];
    reference::conv::conv_requant(
        &case.input,
        case.shape,
        case.za,
        &case.weights(),
        case.groups,
        &case.window,
        &case.requant(),
        &mut want,
    )
    .unwrap();
    let (shape, _) = conv_requant(
        &case.input,
        case.shape,
        case.za,
        &conv,
        &case.requant(),
        &mut got,
        threads,
    )
    .unwrap();
    assert_eq!(shape, os);
    assert!(got == want, "requantized conv differs: {label}");

    let mut want = vec![0f32; os.len()];
    let mut got = vec![f32::NAN; os.len()];
    reference::conv::conv_dequant(
        &case.input,
        case.shape,
        case.za,
        &case.weights(),
        case.groups,
        &case.window,
        &case.dequant(),
        &mut want,
    )
    .unwrap();
    conv_dequant(
        &case.input,
        case.shape,
        case.za,
        &conv,
        &case.dequant(),
        &mut got,
        threads,
    )
    .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&got) == bits(&want),
        "dequantized conv differs: {label}"
    );
    conv.path()
}

/// The geometry the random test draws from its parameters.
#[allow(clippy::too_many_arguments)]
fn geometry(
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    g: usize,
    k: usize,
    s: usize,
    d: usize,
    pads: [usize; 4],
) -> Option<(Nhwc, usize, usize, Window)> {
    let window = Window::new(k, k).stride(s, s).dilation(d, d).pads(pads);
    let shape = Nhwc::new(n, h, w, cin * g);
    window.output_hw(h, w).ok()?;
    Some((shape, cout * g, g, window))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_geometries(seed in any::<u64>(), n in 1usize..3, h in 1usize..11, w in 1usize..11, cin in 1usize..9, cout in 1usize..21,
                         g in prop::sample::select(vec![1usize, 1, 2, 3]), k in prop::sample::select(vec![1usize, 2, 3, 5]),
                         s in 1usize..3, d in 1usize..3, pads in prop::array::uniform4(0usize..4), full in any::<bool>()) {
        if let Some((shape, cout, groups, window)) = geometry(n, h, w, cin, cout, g, k, s, d, pads) {
            for rung in rungs_under_test() {
                let case = ConvCase::random(&mut Rng::new(seed), shape, cout, groups, window, if full { 255 } else { 127 });
                check(rung, &case);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Depthwise on every rung: channel counts across every partial channel block (2..=40
    /// covers 8- and 16-lane blocks plus every remainder), 3x3 and 5x5 at stride 1 and 2,
    /// dilation 1 and 2, uneven padding up to the kernel size, one or two images.
    #[test]
    fn depthwise_random(seed in any::<u64>(), n in 1usize..3, h in 1usize..12, w in 1usize..12, c in 2usize..41,
                        k in prop::sample::select(vec![3usize, 5]), s in 1usize..3, d in 1usize..3,
                        pads in prop::array::uniform4(0usize..4), full in any::<bool>()) {
        if let Some((shape, cout, groups, window)) = geometry(n, h, w, 1, 1, c, k, s, d, pads) {
            for rung in rungs_under_test() {
                let case = ConvCase::random(&mut Rng::new(seed), shape, cout, groups, window, if full { 255 } else { 127 });
                prop_assert_eq!(check(rung, &case), "depthwise", "{:?}", case.window);
            }
        }
    }
}

#[test]
fn every_path_on_named_edge_cases() {
    let cases = [
        // (shape, c_out, groups, window, expected path)
        (
            Nhwc::new(2, 5, 7, 19),
            33,
            1,
            Window::new(1, 1),
            "pointwise",
        ),
        (
            Nhwc::new(1, 9, 9, 17),
            17,
            17,
            Window::new(3, 3).pads([1; 4]),
            "depthwise",
        ),
        (
            Nhwc::new(2, 9, 8, 70),
            70,
            70,
            Window::new(3, 3).stride(2, 2).pads([1, 0, 2, 1]),
            "depthwise",
        ),
        (
            Nhwc::new(1, 7, 7, 5),
            5,
            5,
            Window::new(3, 3).dilation(2, 2).pads([2; 4]),
            "depthwise",
        ),
        (
            Nhwc::new(1, 11, 13, 3),
            16,
            1,
            Window::new(7, 7).stride(2, 2).pads([3; 4]),
            "im2col",
        ),
        (
            Nhwc::new(1, 6, 6, 8),
            12,
            4,
            Window::new(3, 3).pads([2, 2, 2, 2]),
            "im2col",
        ),
        (
            Nhwc::new(3, 4, 4, 6),
            9,
            1,
            Window::new(1, 1).stride(2, 2),
            "im2col",
        ),
        (
            Nhwc::new(1, 5, 5, 4),
            4,
            2,
            Window::new(3, 3).dilation(2, 2).pads([0, 3, 1, 0]),
            "im2col",
        ),
        (
            Nhwc::new(1, 40, 40, 24),
            40,
            1,
            Window::new(3, 3).pads([1; 4]),
            "im2col",
        ),
        // More tiles than threads: whole tiles (fill and multiply) go to threads.
        (
            Nhwc::new(1, 90, 70, 32),
            24,
            1,
            Window::new(3, 3).pads([1; 4]),
            "im2col",
        ),
        (
            Nhwc::new(3, 40, 40, 16),
            8,
            2,
            Window::new(3, 3).stride(2, 1).pads([1; 4]),
            "im2col",
        ),
    ];
    for rung in rungs_under_test() {
        let mut rng = Rng::new(5);
        for (shape, cout, groups, window, path) in cases {
            for max_a in [127, 255] {
                let case = ConvCase::random(&mut rng, shape, cout, groups, window, max_a);
                assert_eq!(check(rung, &case), path, "{shape:?} {window:?}");
            }
        }
    }
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let w = [0i8; 4 * 3 * 3 * 3];
    let weights = ConvWeights {
        data: &w,
        out_channels: 4,
        in_channels_per_group: 3,
        kernel: [3, 3],
        zero_points: &[0],
    };
    assert!(PackedConv::new(&weights, 1, Window::new(2, 2))
        .unwrap_err()
        .to_string()
        .contains("window kernel"));
    assert!(PackedConv::new(&weights, 3, Window::new(3, 3))
        .unwrap_err()
        .to_string()
        .contains("groups"));
    let conv = PackedConv::new(&weights, 1, Window::new(3, 3)).unwrap();
    let p = Requant {
        bias: None,
        multiplier: &[0.1],
        out_zero_point: 0,
        qmin: 0,
        qmax: 255,
    };
    let input = vec![0u8; 2 * 2 * 3];
    let err = conv_requant(&input, Nhwc::new(1, 2, 2, 3), 0, &conv, &p, &mut [], 1).unwrap_err();
    assert!(
        err.to_string().contains("does not fit a 2x2 input"),
        "{err}"
    );
    let err = conv_requant(&input, Nhwc::new(1, 2, 2, 4), 0, &conv, &p, &mut [], 1).unwrap_err();
    assert!(err.to_string().contains("conv input"), "{err}");
}

/// Direct convolution in f64: the oracle for the fp32 conv. Returns (value, Σ|x·w| + |b|).
fn f64_conv(
    input: &[f32],
    shape: Nhwc,
    w: &[f32],
    cout: usize,
    groups: usize,
    window: &Window,
    bias: &[f32],
) -> (Nhwc, Vec<(f64, f64)>) {
    let (oh, ow) = window.output_hw(shape.h, shape.w).unwrap();
    let os = Nhwc::new(shape.n, oh, ow, cout);
    let (cig, cog, [kh, kw]) = (shape.c / groups, cout / groups, window.kernel);
    let mut out = vec![(0.0, 0.0); os.len()];
    for n in 0..shape.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let (mut sum, mut mag) = (f64::from(bias[co]), f64::from(bias[co].abs()));
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * window.stride[0] + ky * window.dilation[0]) as i64
                                - window.pads[0] as i64;
                            let ix = (ox * window.stride[1] + kx * window.dilation[1]) as i64
                                - window.pads[1] as i64;
                            if iy < 0 || ix < 0 || iy >= shape.h as i64 || ix >= shape.w as i64 {
                                continue;
                            }
                            for ci in 0..cig {
                                let x = f64::from(
                                    input[shape.index(
                                        n,
                                        iy as usize,
                                        ix as usize,
                                        (co / cog) * cig + ci,
                                    )],
                                );
                                let wv = f64::from(w[((co * cig + ci) * kh + ky) * kw + kx]);
                                sum += x * wv;
                                mag += (x * wv).abs();
                            }
                        }
                    }
                    out[os.index(n, oy, ox, co)] = (sum, mag);
                }
            }
        }
    }
    (os, out)
}

#[test]
fn fp32_conv_matches_f64_within_the_dot_product_bound() {
    // Tolerance: a sum of K+1 f32 products and a bias, in any order and with or without
    // FMA, errs by at most γ(K+1)·Σ|x·w| with γ(n) = n·ε/(1 − n·ε) (Higham, Thm 3.1).
    let cases = [
        (
            Nhwc::new(2, 9, 11, 5),
            7,
            1,
            Window::new(3, 3).stride(2, 2).pads([1, 2, 0, 1]),
        ),
        (
            Nhwc::new(1, 8, 8, 16),
            16,
            16,
            Window::new(3, 3).pads([1; 4]),
        ),
        // Several images: on more than one thread, depthwise shares them out.
        (
            Nhwc::new(3, 8, 8, 16),
            16,
            16,
            Window::new(3, 3).pads([1; 4]),
        ),
        (
            Nhwc::new(1, 8, 8, 12),
            12,
            12,
            Window::new(3, 3).stride(2, 2).dilation(2, 2).pads([2; 4]),
        ),
        (Nhwc::new(1, 6, 6, 32), 24, 1, Window::new(1, 1)),
        (Nhwc::new(1, 7, 5, 8), 6, 2, Window::new(5, 5).pads([2; 4])),
        (
            Nhwc::new(1, 20, 20, 3),
            16,
            1,
            Window::new(7, 7).stride(2, 2).pads([3; 4]),
        ),
    ];
    let mut rng = Rng::new(3);
    for (shape, cout, groups, window) in cases {
        let [kh, kw] = window.kernel;
        let cig = shape.c / groups;
        let input: Vec<f32> = (0..shape.len()).map(|_| rng.f32_in(-2.0, 2.0)).collect();
        let w: Vec<f32> = (0..cout * cig * kh * kw)
            .map(|_| rng.f32_in(-1.0, 1.0))
            .collect();
        let bias: Vec<f32> = (0..cout).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let conv = PackedConvF32::new(&w, cout, cig, groups, window, Some(&bias)).unwrap();
        let (os, want) = f64_conv(&input, shape, &w, cout, groups, &window, &bias);
        for threads in [1, 2] {
            let mut got = vec![f32::NAN; os.len()];
            assert_eq!(conv.run(&input, shape, &mut got, threads).unwrap(), os);
            let n = (kh * kw * cig + 1) as f64;
            let gamma = n * f64::from(f32::EPSILON) / (1.0 - n * f64::from(f32::EPSILON));
            for (i, (&g, &(value, mag))) in got.iter().zip(&want).enumerate() {
                let err = (f64::from(g) - value).abs();
                assert!(
                    err <= gamma * mag,
                    "{shape:?} {window:?} {threads} threads [{i}]: {g} vs {value} (error {err:e} > bound {:e})",
                    gamma * mag
                );
            }
        }
    }
}

/// A rung without depthwise kernels of its own (amx) runs the ones of the rung it borrows
/// from (`Rung::borrowed`), not the portable body.
#[test]
fn a_borrowing_rung_runs_the_lenders_depthwise_kernel() {
    let window = Window::new(3, 3).pads([1; 4]);
    let case = ConvCase::random(
        &mut Rng::new(5),
        Nhwc::new(1, 6, 6, 32),
        32,
        32,
        window,
        255,
    );
    let kernel_on = |rung: Rung| {
        let conv =
            PackedConv::for_rung(&case.weights(), case.groups, case.window, rung).expect("pack");
        let os = conv.output_shape(case.shape).expect("fits");
        let mut out = vec![0u8; os.len()];
        let requant = case.requant();
        conv_requant(
            &case.input,
            case.shape,
            case.za,
            &conv,
            &requant,
            &mut out,
            1,
        )
        .expect("runs")
        .1
    };
    for rung in rungs_under_test() {
        assert_eq!(kernel_on(rung), kernel_on(rung.borrowed()), "{rung}");
    }
}

/// Depthwise at the edges of the SIMD kernels' paths, on every rung: channel counts on
/// both sides of the 8- and 16-lane blocks (and below 8, all tail), 1x1 and one-row or
/// one-column images, windows larger than the image, symmetric and asymmetric padding,
/// strides 1, 2 (specialised), 3 (any stride) and unequal per axis, dilation 2; and the
/// arithmetic at its extremes: activations and zero points at 0 and 255, weights and
/// weight zero points at -128 and 127 (`|w − zw| = 255`), biases at `i32::MIN`/`MAX`
/// (the accumulator wraps), multipliers from 1e-9 to 1e6 (the ±2^22 clamp), output zero
/// points at 0 and 255 and clamps from full range to a single value.
#[test]
fn depthwise_edges() {
    let images = [(1, 1), (1, 6), (6, 1), (2, 2), (3, 3), (4, 9), (9, 13)];
    let channels = [2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33];
    let mut rng = Rng::new(22);
    let mut i = 0usize;
    for k in [3usize, 5] {
        for stride in [[1, 1], [2, 2], [3, 3], [2, 1], [1, 2]] {
            for d in [1usize, 2] {
                for pads in [[0; 4], [1; 4], [k - 1; 4], [2, 0, 1, 3]] {
                    for (h, w) in images {
                        let window = Window::new(k, k)
                            .stride(stride[0], stride[1])
                            .dilation(d, d)
                            .pads(pads);
                        if window.output_hw(h, w).is_err() {
                            continue;
                        }
                        let c = channels[i % channels.len()];
                        let shape = Nhwc::new(1 + i % 3 / 2, h, w, c);
                        let mut case = ConvCase::random(&mut rng, shape, c, c, window, 255);
                        if i % 2 == 1 {
                            extremes(&mut rng, &mut case, i);
                        }
                        i += 1;
                        for rung in rungs_under_test() {
                            assert_eq!(check(rung, &case), "depthwise", "{shape:?} {window:?}");
                        }
                    }
                }
            }
        }
    }
    assert!(i >= 300, "only {i} cases");
}

/// Pushes a depthwise case's values to the limits of the arithmetic (see
/// [`depthwise_edges`]); `i` picks among the variants.
fn extremes(rng: &mut Rng, case: &mut ConvCase, i: usize) {
    let c = case.out_channels;
    let heads = |rng: &mut Rng| rng.below(2) == 0;
    for x in &mut case.input {
        *x = if heads(rng) { 0 } else { 255 };
    }
    case.za = if i % 4 == 1 { 0 } else { 255 };
    for w in &mut case.weights {
        *w = if heads(rng) { -128 } else { 127 };
    }
    case.w_zero = (0..c)
        .map(|_| if heads(rng) { -128 } else { 127 })
        .collect();
    case.bias_i32 = (0..c)
        .map(|ch| match ch % 3 {
            0 => i32::MAX - rng.below(1000) as i32,
            1 => i32::MIN + rng.below(1000) as i32,
            _ => rng.below(2001) as i32 - 1000,
        })
        .collect();
    case.multiplier = (0..c)
        .map(|ch| [1e-9, 1e-6, 3e-5, 1.0, 1e6][(ch + i) % 5])
        .collect();
    case.out_zero = if i % 8 < 4 { 0 } else { 255 };
    (case.qmin, case.qmax) = match i % 3 {
        0 => (0, 255),
        1 => (17, 17),
        _ => (0, 6),
    };
}

/// On the aarch64 rungs, 3x3 and 5x5 depthwise runs the NEON kernel (other kernel sizes
/// the portable body), whatever the stride, padding and channel count.
#[test]
fn neon_rungs_run_the_neon_depthwise_kernel() {
    for rung in rungs_under_test() {
        if !matches!(rung, Rung::Neon | Rung::NeonDotprod) {
            continue;
        }
        for (k, c, stride, want) in [
            (3, 32, 1, "neon_dwconv_u8s8_c16"),
            (3, 7, 2, "neon_dwconv_u8s8_c16"),
            (5, 19, 3, "neon_dwconv_u8s8_c16"),
            (7, 16, 1, "neon_dwconv_u8s8_portable"),
        ] {
            let window = Window::new(k, k).stride(stride, stride).pads([k / 2; 4]);
            let case = ConvCase::random(&mut Rng::new(7), Nhwc::new(1, 9, 9, c), c, c, window, 255);
            let conv = PackedConv::for_rung(&case.weights(), c, window, rung).expect("pack");
            let os = conv.output_shape(case.shape).expect("fits");
            let mut out = vec![0u8; os.len()];
            let (_, kernel) = conv_requant(
                &case.input,
                case.shape,
                case.za,
                &conv,
                &case.requant(),
                &mut out,
                1,
            )
            .expect("runs");
            assert_eq!(kernel, want, "{rung} {window:?}");
        }
    }
}

/// On the x86 rungs, 3x3 and 5x5 depthwise runs the rung's SIMD kernel (amx borrows the
/// avx512vnni one), other kernel sizes the portable body, whatever the stride, padding
/// and channel count.
#[test]
fn x86_rungs_run_the_x86_depthwise_kernels() {
    for rung in rungs_under_test() {
        let (simd, portable) = match rung.borrowed() {
            Rung::Avx512Vnni => (
                "avx512vnni_dwconv_u8s8_c32",
                "avx512vnni_dwconv_u8s8_portable",
            ),
            Rung::Avx2 => ("avx2_dwconv_u8s8_c16", "avx2_dwconv_u8s8_portable"),
            _ => continue,
        };
        for (k, c, stride, want) in [
            (3, 32, 1, simd),
            (3, 7, 2, simd),
            (3, 48, 2, simd),
            (5, 19, 3, simd),
            (5, 64, 1, simd),
            (7, 16, 1, portable),
        ] {
            let window = Window::new(k, k).stride(stride, stride).pads([k / 2; 4]);
            let case = ConvCase::random(&mut Rng::new(7), Nhwc::new(1, 9, 9, c), c, c, window, 255);
            let conv = PackedConv::for_rung(&case.weights(), c, window, rung).expect("pack");
            let os = conv.output_shape(case.shape).expect("fits");
            let mut out = vec![0u8; os.len()];
            let (_, kernel) = conv_requant(
                &case.input,
                case.shape,
                case.za,
                &conv,
                &case.requant(),
                &mut out,
                1,
            )
            .expect("runs");
            assert_eq!(kernel, want, "{rung} {window:?}");
        }
    }
}
