//! Every rung's int8 add against the reference, bit for bit: every (a, b) pair of u8
//! values under several quantizations (ties included), random lengths around the vector
//! widths, zero points over 0..=255, scale ratios tiny and above 1, clamp extremes,
//! outputs poisoned twice; then the error cases, which must name what is wrong and leave
//! the output untouched.

mod common;

use common::{rungs_under_test, Rng};
use qbench_kernels::eltwise::{add, add_on, AddQuant};
use qbench_kernels::{isa, reference, Affine, Rung};

const POISONS: [u8; 2] = [0xA5, 0x5A];

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

fn name_of(rung: Rung) -> &'static str {
    match rung {
        Rung::Generic => "generic_add_u8",
        Rung::Avx2 | Rung::Avx512Vnni | Rung::Amx => "avx2_add_u8",
        Rung::Neon | Rung::NeonDotprod => "neon_add_u8",
    }
}

fn check(rung: Rung, a: &[u8], b: &[u8], q: &AddQuant) {
    for poison in POISONS {
        let mut want = vec![poison; a.len()];
        let mut got = want.clone();
        reference::eltwise::add(a, b, q, &mut want).unwrap();
        let name = add_on(rung, a, b, q, &mut got).unwrap();
        assert_eq!(name, name_of(rung));
        if let Some(i) = (0..a.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "add on {rung}, len {}: at {i} a={} b={} got {} want {} ({q:?})",
                a.len(),
                a[i],
                b[i],
                got[i],
                want[i]
            );
        }
    }
}

fn random_quant(rng: &mut Rng) -> AddQuant {
    let out_scale = rng.f32_in(1e-3, 0.5);
    let scale = |rng: &mut Rng| match rng.below(5) {
        0 => out_scale,                          // ratio 1
        1 => out_scale * 0.5,                    // ratio 1/2: exact ties
        2 => out_scale * rng.f32_in(1e-4, 1e-2), // tiny ratio
        3 => out_scale * rng.f32_in(1.5, 300.0), // ratio > 1
        _ => out_scale * rng.f32_in(0.1, 2.0),
    };
    let a_scale = scale(rng);
    let b_scale = scale(rng);
    let zo = rng.u8_up_to(255);
    let (qmin, qmax) = match rng.below(5) {
        0 => (0, 255),
        1 => (zo, 255), // fused ReLU
        2 => {
            let q = rng.u8_up_to(255);
            (q, q)
        }
        _ => {
            let x = rng.u8_up_to(255);
            let y = rng.u8_up_to(255);
            (x.min(y), x.max(y))
        }
    };
    AddQuant {
        a_q: Affine::new(a_scale, i32::from(rng.u8_up_to(255))),
        b_q: Affine::new(b_scale, i32::from(rng.u8_up_to(255))),
        out_q: Affine::new(out_scale, i32::from(zo)),
        qmin,
        qmax,
    }
}

#[test]
fn every_pair_of_values() {
    // a runs over 0..=255 for each b: 65536 elements, through every vector path.
    let a: Vec<u8> = (0..=u16::MAX).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..=u16::MAX).map(|i| (i >> 8) as u8).collect();
    let quants = [
        // Equal scales: plain integer add around the zero points.
        (1.0, 1.0, 1.0, 128, 128, 128),
        // Halves: every odd difference is a tie, rounded to even.
        (0.5, 0.5, 1.0, 0, 255, 0),
        (0.5, 1.5, 1.0, 17, 200, 99),
        // Typical residual scales, and an output scale far finer than the inputs.
        (0.031, 0.047, 0.052, 121, 133, 127),
        (0.9, 0.7, 0.001, 0, 0, 255),
    ];
    for rung in rungs_under_test() {
        for (sa, sb, so, za, zb, zo) in quants {
            for (qmin, qmax) in [(0, 255), (zo as u8, 255), (100, 101)] {
                let q = AddQuant {
                    a_q: Affine::new(sa, za),
                    b_q: Affine::new(sb, zb),
                    out_q: Affine::new(so, zo),
                    qmin,
                    qmax,
                };
                check(rung, &a, &b, &q);
            }
        }
    }
}

#[test]
fn random_lengths_and_quantizations() {
    let lengths = [
        0usize, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70, 1000,
    ];
    for rung in rungs_under_test() {
        let mut rng = Rng::new(21);
        for i in 0..600 {
            let len = if i < lengths.len() * 4 {
                lengths[i % lengths.len()]
            } else {
                rng.below(300) as usize
            };
            let a: Vec<u8> = (0..len).map(|_| rng.u8_up_to(255)).collect();
            let b: Vec<u8> = (0..len).map(|_| rng.u8_up_to(255)).collect();
            check(rung, &a, &b, &random_quant(&mut rng));
        }
    }
}

#[test]
fn extreme_ratios_and_zero_points() {
    let mut rng = Rng::new(22);
    let a: Vec<u8> = (0..77).map(|_| rng.u8_up_to(255)).collect();
    let b: Vec<u8> = (0..77).map(|_| rng.u8_up_to(255)).collect();
    let max_ratio = 1.0 / 18_446_744_073_709_551_616.0; // out scale for a ratio of 2^64
    for rung in rungs_under_test() {
        for (sa, sb, so) in [
            (1.0, 1.0, max_ratio),
            (1.0, 1e-30, max_ratio),
            (1e-30, 1e-30, 1.0),
            (1.0, 1e-3, 1.0),
        ] {
            for (za, zb, zo) in [(0, 0, 0), (255, 255, 255), (0, 255, 128), (255, 0, 0)] {
                for (qmin, qmax) in [(0, 255), (0, 0), (255, 255), (3, 250)] {
                    let q = AddQuant {
                        a_q: Affine::new(sa, za),
                        b_q: Affine::new(sb, zb),
                        out_q: Affine::new(so, zo),
                        qmin,
                        qmax,
                    };
                    check(rung, &a, &b, &q);
                }
            }
        }
    }
}

#[test]
fn errors_name_the_problem_and_write_nothing() {
    let ok = AddQuant {
        a_q: Affine::new(0.1, 3),
        b_q: Affine::new(0.2, 4),
        out_q: Affine::new(0.3, 5),
        qmin: 0,
        qmax: 255,
    };
    let a = [1u8; 20];
    let b = [2u8; 20];
    let cases: Vec<(usize, usize, usize, AddQuant, &str)> = vec![
        (20, 19, 20, ok, "input b has 19 values"),
        (20, 20, 21, ok, "add output"),
        (19, 20, 19, ok, "input a has 19"),
        (
            20,
            20,
            20,
            AddQuant {
                a_q: Affine::new(0.0, 3),
                ..ok
            },
            "input a quantization: scale",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                b_q: Affine::new(f32::INFINITY, 3),
                ..ok
            },
            "input b quantization: scale",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                b_q: Affine::new(0.1, 300),
                ..ok
            },
            "input b quantization: zero point",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                out_q: Affine::new(0.1, -2),
                ..ok
            },
            "output quantization: zero point",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                out_q: Affine::new(f32::NAN, 2),
                ..ok
            },
            "output quantization: scale",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                qmin: 200,
                qmax: 100,
                ..ok
            },
            "clamp range is empty",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                out_q: Affine::new(1e-30, 2),
                ..ok
            },
            "input a scale",
        ),
        (
            20,
            20,
            20,
            AddQuant {
                b_q: Affine::new(1e30, 2),
                ..ok
            },
            "input b scale",
        ),
    ];
    for rung in rungs_under_test() {
        for (la, lb, lo, q, needle) in &cases {
            let mut out = vec![0xA5u8; *lo];
            let err = add_on(rung, &a[..*la], &b[..*lb], q, &mut out).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
            assert!(
                out.iter().all(|&v| v == 0xA5),
                "output written on error: {err}"
            );
            let mut out_ref = vec![0xA5u8; *lo];
            let ref_err =
                reference::eltwise::add(&a[..*la], &b[..*lb], q, &mut out_ref).unwrap_err();
            assert_eq!(ref_err, err);
        }
    }
}

#[test]
fn public_entry_point_uses_the_active_rung() {
    let q = AddQuant {
        a_q: Affine::new(0.1, 3),
        b_q: Affine::new(0.2, 4),
        out_q: Affine::new(0.3, 5),
        qmin: 0,
        qmax: 255,
    };
    let mut out = [0u8; 40];
    let name = add(&[9; 40], &[7; 40], &q, &mut out).unwrap();
    assert_eq!(name, name_of(isa::active()));
}
