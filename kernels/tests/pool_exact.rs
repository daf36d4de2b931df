//! Every pooling rung against the reference, bit for bit: random NHWC shapes (odd sizes,
//! batch > 1, channel counts around every vector width), windows (kernel 1..3 and 7,
//! stride 1 and 2, dilation for max pool, asymmetric pads down to edge windows with a
//! single tap), count_include_pad both ways, zero points over 0..=255, multipliers tiny
//! and above 1, clamp extremes, outputs poisoned twice; then the error cases, which must
//! name what is wrong and leave the output untouched.

mod common;

use common::{rungs_under_test, Rng};
use qbench_kernels::pool::{avg_pool_on, global_avg_pool_on, max_pool_on, PoolQuant};
use qbench_kernels::{isa, reference, Affine, KernelError, Nhwc, Rung, Window};

const POISONS: [u8; 2] = [0xA5, 0x5A];

/// Channel counts around the vector widths (8, 16, 32 bytes; 8 i32) and off all of them.
const CHANNELS: [usize; 14] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 70];

#[test]
fn forced_rung_is_the_one_running() {
    let selection = isa::selection();
    assert!(
        selection.honoured(),
        "{}={:?} was requested but {} is active: {}",
        isa::KERNEL_ENV,
        selection.requested,
        selection.active,
        selection.warning.as_deref().unwrap_or("")
    );
}

/// The implementation name a rung must report.
fn prefix(rung: Rung) -> &'static str {
    match rung {
        Rung::Generic => "generic_",
        Rung::Avx2 | Rung::Avx512Vnni | Rung::Amx => "avx2_",
        Rung::Neon | Rung::NeonDotprod => "neon_",
    }
}

fn random_input(rng: &mut Rng, shape: Nhwc) -> Vec<u8> {
    // Sometimes a narrow range, so maxima tie and averages sit near the zero point.
    let max = if rng.below(4) == 0 { 3 } else { 255 };
    (0..shape.len()).map(|_| rng.u8_up_to(max)).collect()
}

fn random_window(rng: &mut Rng, h: usize, w: usize, dilated: bool) -> Window {
    let pick_k = |rng: &mut Rng, dim: usize| {
        let k = [1, 2, 3, 3, 7][rng.below(5) as usize];
        if k > dim + 2 {
            1 + rng.below(3) as usize
        } else {
            k
        }
    };
    let kh = pick_k(rng, h);
    let kw = pick_k(rng, w);
    let mut window =
        Window::new(kh, kw).stride(1 + rng.below(2) as usize, 1 + rng.below(2) as usize);
    if dilated && rng.below(3) == 0 {
        window = window.dilation(1 + rng.below(2) as usize, 1 + rng.below(2) as usize);
    }
    // Pads up to kernel − 1: at kernel − 1 the corner windows keep a single tap.
    let mut pad = |k: usize| match rng.below(4) {
        0 => 0,
        1 => k - 1,
        _ => rng.below(k as u64) as usize,
    };
    window.pads([pad(kh), pad(kw), pad(kh), pad(kw)])
}

fn random_quant(rng: &mut Rng) -> PoolQuant {
    let in_scale = rng.f32_in(1e-3, 0.5);
    let out_scale = match rng.below(4) {
        0 => in_scale,                            // multiplier 1/count: exact ties
        1 => in_scale * rng.f32_in(1e-3, 0.2),    // multiplier > 1
        2 => in_scale * rng.f32_in(50.0, 2000.0), // tiny multiplier
        _ => in_scale * rng.f32_in(0.2, 5.0),
    };
    let zero_in = i32::from(rng.u8_up_to(255));
    let zero_out = i32::from(rng.u8_up_to(255));
    let (qmin, qmax) = match rng.below(5) {
        0 => (0, 255),
        1 => (zero_out as u8, 255), // fused ReLU
        2 => {
            let q = rng.u8_up_to(255);
            (q, q) // a single value
        }
        _ => {
            let a = rng.u8_up_to(255);
            let b = rng.u8_up_to(255);
            (a.min(b), a.max(b))
        }
    };
    PoolQuant {
        in_q: Affine::new(in_scale, zero_in),
        out_q: Affine::new(out_scale, zero_out),
        qmin,
        qmax,
    }
}

fn random_shape(rng: &mut Rng) -> Nhwc {
    let c = if rng.below(4) == 0 {
        1 + rng.below(100) as usize
    } else {
        CHANNELS[rng.below(CHANNELS.len() as u64) as usize]
    };
    Nhwc::new(
        1 + rng.below(3) as usize,
        1 + rng.below(11) as usize,
        1 + rng.below(11) as usize,
        c,
    )
}

/// Output length of a pooling window, or 0 when the window is refused (both sides must
/// then refuse it the same way).
fn out_len(shape: Nhwc, window: &Window) -> usize {
    window
        .output_hw(shape.h, shape.w)
        .map_or(0, |(oh, ow)| shape.n * oh * ow * shape.c)
}

fn check_max(rung: Rung, input: &[u8], shape: Nhwc, window: &Window) {
    for poison in POISONS {
        let mut want = vec![poison; out_len(shape, window)];
        let mut got = want.clone();
        let expected = reference::pool::max_pool(input, shape, window, &mut want);
        let result = max_pool_on(rung, input, shape, window, &mut got);
        match expected {
            Ok(ref_shape) => {
                let (got_shape, name) = result.unwrap();
                assert_eq!(got_shape, ref_shape);
                assert_eq!(name, format!("{}maxpool_u8", prefix(rung)));
            }
            Err(err) => assert_eq!(result.unwrap_err(), err),
        }
        assert_eq!(got, want, "max_pool on {rung}: {shape:?} {window:?}");
    }
}

fn check_avg(rung: Rung, input: &[u8], shape: Nhwc, window: &Window, include: bool, q: &PoolQuant) {
    for poison in POISONS {
        let mut want = vec![poison; out_len(shape, window)];
        let mut got = want.clone();
        let expected = reference::pool::avg_pool(input, shape, window, include, q, &mut want);
        let result = avg_pool_on(rung, input, shape, window, include, q, &mut got);
        match expected {
            Ok(ref_shape) => {
                let (got_shape, name) = result.unwrap();
                assert_eq!(got_shape, ref_shape);
                assert_eq!(name, format!("{}avgpool_u8", prefix(rung)));
            }
            Err(err) => assert_eq!(result.unwrap_err(), err),
        }
        assert_eq!(
            got, want,
            "avg_pool on {rung}: {shape:?} {window:?} include_pad={include} {q:?}"
        );
    }
}

fn check_global(rung: Rung, input: &[u8], shape: Nhwc, q: &PoolQuant) {
    let out_shape = Nhwc::new(shape.n, 1, 1, shape.c);
    for poison in POISONS {
        let mut want = vec![poison; out_shape.len()];
        let mut got = vec![poison; out_shape.len()];
        let ref_shape = reference::pool::global_avg_pool(input, shape, q, &mut want).unwrap();
        let (got_shape, name) = global_avg_pool_on(rung, input, shape, q, &mut got).unwrap();
        assert_eq!(got_shape, ref_shape);
        assert_eq!(got_shape, out_shape);
        assert_eq!(name, format!("{}global_avgpool_u8", prefix(rung)));
        assert_eq!(got, want, "global_avg_pool on {rung}: {shape:?} {q:?}");
    }
}

#[test]
fn max_pool_random_shapes() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(11);
        for _ in 0..400 {
            let shape = random_shape(&mut rng);
            let window = random_window(&mut rng, shape.h, shape.w, true);
            let input = random_input(&mut rng, shape);
            check_max(rung, &input, shape, &window);
        }
    }
}

#[test]
fn avg_pool_random_shapes() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(12);
        for _ in 0..400 {
            let shape = random_shape(&mut rng);
            let window = random_window(&mut rng, shape.h, shape.w, false);
            let input = random_input(&mut rng, shape);
            let q = random_quant(&mut rng);
            check_avg(rung, &input, shape, &window, rng.below(2) == 0, &q);
        }
    }
}

#[test]
fn global_avg_pool_random_shapes() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(13);
        for _ in 0..300 {
            let shape = random_shape(&mut rng);
            let input = random_input(&mut rng, shape);
            check_global(rung, &input, shape, &random_quant(&mut rng));
        }
    }
}

#[test]
fn network_shapes() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(14);
        // ResNet stem max pool, k3 s2 p1, and a VGG-style k2 s2.
        let shape = Nhwc::new(1, 56, 56, 64);
        let input = random_input(&mut rng, shape);
        check_max(
            rung,
            &input,
            shape,
            &Window::new(3, 3).stride(2, 2).pads([1; 4]),
        );
        check_max(rung, &input, shape, &Window::new(2, 2).stride(2, 2));
        // Inception-style 3x3 s1 p1 average, both count modes; a 7x7 average.
        let q = random_quant(&mut rng);
        let window = Window::new(3, 3).pads([1; 4]);
        check_avg(rung, &input, shape, &window, false, &q);
        check_avg(rung, &input, shape, &window, true, &q);
        let shape7 = Nhwc::new(2, 7, 7, 2048 + 5);
        let input7 = random_input(&mut rng, shape7);
        check_avg(rung, &input7, shape7, &Window::new(7, 7), false, &q);
        // Global pools: ResNet head (7x7x2048) and a large image with many pixels.
        check_global(rung, &input7, shape7, &q);
        let big = Nhwc::new(1, 300, 301, 3);
        let all_max = vec![255u8; big.len()];
        for zero in [0, 255] {
            let q = PoolQuant {
                in_q: Affine::new(0.02, zero),
                out_q: Affine::new(0.01, 3),
                qmin: 0,
                qmax: 255,
            };
            check_global(rung, &all_max, big, &q);
        }
    }
}

#[test]
fn single_tap_edge_windows_and_dilation() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(15);
        for &c in &CHANNELS {
            let shape = Nhwc::new(2, 5, 6, c);
            let input = random_input(&mut rng, shape);
            // Pads of kernel − 1 on one side only: the first row/column sees one tap.
            for window in [
                Window::new(3, 3).pads([2, 2, 0, 0]),
                Window::new(3, 2).pads([0, 1, 2, 0]).stride(2, 1),
                Window::new(7, 7).pads([6, 0, 6, 6]),
                Window::new(1, 1).stride(2, 2),
                Window::new(2, 3).pads([1, 2, 1, 2]).stride(2, 2),
            ] {
                check_max(rung, &input, shape, &window);
                check_max(rung, &input, shape, &window.dilation(2, 1));
                let q = random_quant(&mut rng);
                check_avg(rung, &input, shape, &window, false, &q);
                check_avg(rung, &input, shape, &window, true, &q);
            }
        }
    }
}

#[test]
fn extreme_multipliers_and_clamps() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(16);
        let shape = Nhwc::new(1, 4, 5, 37);
        let input = random_input(&mut rng, shape);
        let window = Window::new(3, 3).pads([1, 2, 1, 0]);
        for (in_scale, out_scale) in [
            (1.0, 1e-19),
            (1.0, 1.0 / 18_446_744_073_709_551_616.0), // the largest ratio allowed, 2^64
            (1e-30, 1.0),
            (0.5, 0.5),
            (3.0, 1.0),
            (1.0, 3.0),
        ] {
            for (qmin, qmax) in [(0, 255), (0, 0), (255, 255), (128, 128), (7, 9)] {
                for (zin, zout) in [(0, 0), (255, 255), (0, 255), (255, 0), (128, 127)] {
                    let q = PoolQuant {
                        in_q: Affine::new(in_scale, zin),
                        out_q: Affine::new(out_scale, zout),
                        qmin,
                        qmax,
                    };
                    check_avg(rung, &input, shape, &window, false, &q);
                    check_avg(rung, &input, shape, &window, true, &q);
                    check_global(rung, &input, shape, &q);
                }
            }
        }
    }
}

/// Runs a refused call on every entry point that takes it and checks the error and that
/// the output is untouched.
fn assert_refused(err: Result<(Nhwc, &'static str), KernelError>, out: &[u8], needle: &str) {
    let err = err.unwrap_err();
    assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    assert!(
        out.iter().all(|&v| v == 0xA5),
        "output written on error: {err}"
    );
}

#[test]
fn errors_name_the_problem_and_write_nothing() {
    let shape = Nhwc::new(1, 4, 4, 3);
    let input = vec![1u8; shape.len()];
    let ok_q = PoolQuant {
        in_q: Affine::new(0.1, 3),
        out_q: Affine::new(0.1, 3),
        qmin: 0,
        qmax: 255,
    };
    let window = Window::new(2, 2);
    for rung in rungs_under_test() {
        let mut out = vec![0xA5u8; 27];
        let mut out_g = vec![0xA5u8; 3];
        assert_refused(
            max_pool_on(rung, &input[1..], shape, &window, &mut out),
            &out,
            "max_pool input",
        );
        assert_refused(
            max_pool_on(rung, &input, shape, &window, &mut out[1..]),
            &out,
            "max_pool output",
        );
        assert_refused(
            avg_pool_on(rung, &input, shape, &window, false, &ok_q, &mut out[..26]),
            &out,
            "avg_pool output",
        );
        assert_refused(
            global_avg_pool_on(rung, &input, shape, &ok_q, &mut out_g[..2]),
            &out_g,
            "global_avg_pool output",
        );
        assert_refused(
            global_avg_pool_on(rung, &input[..5], shape, &ok_q, &mut out_g),
            &out_g,
            "global_avg_pool input",
        );
        // Windows: padding-only edge windows, zero stride, a window larger than the input.
        let mut out9 = vec![0xA5u8; 100];
        for (window, needle) in [
            (Window::new(2, 2).pads([2, 0, 0, 0]), "only padding"),
            (Window::new(2, 2).pads([0, 0, 0, 3]), "only padding"),
            (
                Window::new(2, 2).dilation(5, 1).pads([1, 0, 1, 0]),
                "only padding",
            ),
            (Window::new(2, 2).stride(0, 1), "positive"),
            (Window::new(6, 1), "does not fit"),
        ] {
            assert_refused(
                max_pool_on(rung, &input, shape, &window, &mut out9),
                &out9,
                needle,
            );
            if window.dilation == [1, 1] {
                assert_refused(
                    avg_pool_on(rung, &input, shape, &window, true, &ok_q, &mut out9),
                    &out9,
                    needle,
                );
            }
        }
        let dilated = Window::new(2, 2).dilation(1, 2);
        assert_refused(
            avg_pool_on(rung, &input, shape, &dilated, false, &ok_q, &mut out),
            &out,
            "dilation",
        );
        // Quantization parameters.
        let bad = [
            (
                PoolQuant {
                    in_q: Affine::new(0.0, 3),
                    ..ok_q
                },
                "input quantization: scale",
            ),
            (
                PoolQuant {
                    in_q: Affine::new(f32::NAN, 3),
                    ..ok_q
                },
                "input quantization: scale",
            ),
            (
                PoolQuant {
                    out_q: Affine::new(-1.0, 3),
                    ..ok_q
                },
                "output quantization: scale",
            ),
            (
                PoolQuant {
                    out_q: Affine::new(0.1, 256),
                    ..ok_q
                },
                "output quantization: zero point",
            ),
            (
                PoolQuant {
                    in_q: Affine::new(0.1, -1),
                    ..ok_q
                },
                "input quantization: zero point",
            ),
            (
                PoolQuant {
                    qmin: 10,
                    qmax: 9,
                    ..ok_q
                },
                "clamp range is empty",
            ),
            (
                PoolQuant {
                    out_q: Affine::new(1e-30, 3),
                    ..ok_q
                },
                "exceeds 2^64",
            ),
        ];
        for (q, needle) in bad {
            assert_refused(
                avg_pool_on(rung, &input, shape, &window, false, &q, &mut out),
                &out,
                needle,
            );
            assert_refused(
                global_avg_pool_on(rung, &input, shape, &q, &mut out_g),
                &out_g,
                needle,
            );
        }
        // No pixels to average.
        assert_refused(
            global_avg_pool_on(rung, &[], Nhwc::new(1, 0, 4, 3), &ok_q, &mut out_g),
            &out_g,
            "no pixels",
        );
    }
}

#[test]
fn empty_batches_and_channels_are_fine() {
    let q = PoolQuant {
        in_q: Affine::new(0.1, 3),
        out_q: Affine::new(0.1, 3),
        qmin: 0,
        qmax: 255,
    };
    for rung in rungs_under_test() {
        for shape in [Nhwc::new(0, 4, 4, 3), Nhwc::new(2, 4, 4, 0)] {
            let window = Window::new(2, 2);
            assert_eq!(
                max_pool_on(rung, &[], shape, &window, &mut [])
                    .unwrap()
                    .0
                    .len(),
                0
            );
            assert_eq!(
                avg_pool_on(rung, &[], shape, &window, true, &q, &mut [])
                    .unwrap()
                    .0
                    .len(),
                0
            );
            assert_eq!(
                global_avg_pool_on(rung, &[], shape, &q, &mut [])
                    .unwrap()
                    .0
                    .len(),
                0
            );
        }
    }
}

#[test]
fn unavailable_rung_is_refused() {
    let foreign = if cfg!(target_arch = "x86_64") {
        Rung::Neon
    } else {
        Rung::Avx2
    };
    let shape = Nhwc::new(1, 2, 2, 1);
    let err = max_pool_on(foreign, &[0; 4], shape, &Window::new(1, 1), &mut [0; 4]).unwrap_err();
    assert!(err.to_string().contains(foreign.name()), "{err}");
}

#[test]
fn public_entry_points_use_the_active_rung() {
    let shape = Nhwc::new(1, 3, 3, 20);
    let input: Vec<u8> = (0..shape.len()).map(|i| (i * 37 % 256) as u8).collect();
    let q = PoolQuant {
        in_q: Affine::new(0.1, 3),
        out_q: Affine::new(0.05, 7),
        qmin: 0,
        qmax: 255,
    };
    let prefix = prefix(isa::active());
    let window = Window::new(2, 2);
    let mut out = vec![0u8; 4 * 20];
    let (_, name) = qbench_kernels::pool::max_pool(&input, shape, &window, &mut out).unwrap();
    assert!(name.starts_with(prefix), "{name}");
    let (_, name) =
        qbench_kernels::pool::avg_pool(&input, shape, &window, false, &q, &mut out).unwrap();
    assert!(name.starts_with(prefix), "{name}");
    let (_, name) =
        qbench_kernels::pool::global_avg_pool(&input, shape, &q, &mut out[..20]).unwrap();
    assert!(name.starts_with(prefix), "{name}");
}
