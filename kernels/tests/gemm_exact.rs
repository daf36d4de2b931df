//! Every GEMM rung against the reference, bit for bit: random shapes around each rung's
//! tiles (proptest), then the fixed edge cases (partial tiles, k = 0 and around the k
//! group and the 64-byte row padding, sizes 2^j ± 1, large k near the i32 limit and past
//! it, zero points over 0..=255, clamp extremes, 7-bit versus full-range activations).

mod common;

use common::{check_case, rungs_under_test, Case, Rng};
use proptest::prelude::*;
use qbench_kernels::gemm::kernels_of;
use qbench_kernels::{isa, Rung};

/// CI runs this suite once per rung with `QBENCH_KERNEL`; a rung this machine silently
/// lacks must fail the run, not quietly test a lower rung.
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

#[test]
fn every_rung_of_this_ladder_has_a_full_range_kernel() {
    for &rung in isa::ladder() {
        let kernels = kernels_of(rung);
        assert!(!kernels.is_empty(), "{rung} has no kernels");
        assert_eq!(
            kernels.last().unwrap().max_activation,
            255,
            "{rung} cannot take full-range u8"
        );
        // A rung may also list the kernel of the rung it borrows from (AMX runs VNNI's
        // below 16 rows); every name says which ISA it is.
        for k in &kernels {
            assert!(
                [rung, rung.borrowed()]
                    .iter()
                    .any(|r| k.name.starts_with(&r.name().replace("-dotprod", "dot"))),
                "{} is misnamed for {rung}",
                k.name
            );
        }
    }
}

fn tile(rung: Rung) -> (usize, usize, usize) {
    let k = &kernels_of(rung)[0];
    (k.mr, k.nr, k.kr)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_around_the_tiles(seed in any::<u64>(), mf in 0.0f64..1.0, nf in 0.0f64..1.0, kf in 0.0f64..1.0, full_range in any::<bool>()) {
        for rung in rungs_under_test() {
            let (mr, nr, kr) = tile(rung);
            let m = 1 + (mf * (3 * mr) as f64) as usize;
            let n = 1 + (nf * (3 * nr) as f64) as usize;
            let k = (kf * (3 * 64 + 3 * kr + 1) as f64) as usize;
            let mut rng = Rng::new(seed);
            check_case(rung, &Case::random(&mut rng, m, n, k, if full_range { 255 } else { 127 }));
        }
    }
}

#[test]
fn small_and_power_of_two_sizes() {
    let sizes = [
        1usize, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65,
    ];
    for rung in rungs_under_test() {
        let mut rng = Rng::new(7);
        for &s in &sizes {
            for max_a in [127, 255] {
                check_case(rung, &Case::random(&mut rng, s, s, s, max_a));
                check_case(
                    rung,
                    &Case::random(&mut rng, s, 2 * s + 1, 3 * s + 2, max_a),
                );
            }
        }
    }
}

#[test]
fn k_around_the_group_and_the_row_padding() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(11);
        let (mr, nr, _) = tile(rung);
        for k in [
            0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257,
            768,
        ] {
            check_case(rung, &Case::random(&mut rng, mr + 1, nr + 1, k, 255));
            check_case(
                rung,
                &Case::random(&mut rng, 2 * mr - 1, 2 * nr - 1, k, 127),
            );
        }
    }
}

#[test]
fn every_partial_tile() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(13);
        let (mr, nr, _) = tile(rung);
        for m in 1..=mr {
            check_case(rung, &Case::random(&mut rng, m, nr + m, 37, 255));
        }
        for n in 1..=nr {
            check_case(rung, &Case::random(&mut rng, mr + n % 3, n, 41, 127));
        }
    }
}

#[test]
fn zero_points_swept_over_the_whole_range() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(17);
        for za in (0..=255).step_by(15).chain([255]) {
            let mut case = Case::random(&mut rng, 5, 19, 70, 255);
            case.a_zero = vec![za];
            case.w_zero = vec![(za - 128).clamp(-128, 127)];
            check_case(rung, &case);
        }
    }
}

#[test]
fn extreme_values_and_large_k() {
    for rung in rungs_under_test() {
        // The largest k whose exact accumulators fit i32 (|a − za|·|w − zw| ≤ 255·128 here),
        // with every product at its extreme.
        for (k, a, w, za) in [
            (33_025usize, 255u8, -128i8, 0),
            (33_025, 0, 127, 255),
            (70_001, 255, -128, 0),
        ] {
            let mut case = Case::random(&mut Rng::new(k as u64), 2, 3, k, 255);
            case.a.iter_mut().for_each(|x| *x = a);
            case.w.iter_mut().for_each(|x| *x = w);
            case.a_zero = vec![za];
            case.w_zero = vec![0];
            // k = 70_001 overflows i32: the contract is wrapping, and every rung must wrap alike.
            check_case(rung, &case);
        }
    }
}

#[test]
fn clamp_extremes_and_extreme_multipliers() {
    for rung in rungs_under_test() {
        let mut rng = Rng::new(19);
        for (qmin, qmax, mul) in [
            (0u8, 255u8, 1e-9f32),
            (0, 255, 1e3),
            (255, 255, 1.0),
            (0, 0, 1.0),
            (7, 8, 0.01),
            (0, 255, f32::MAX),
        ] {
            let mut case = Case::random(&mut rng, 9, 21, 50, 255);
            case.qmin = qmin;
            case.qmax = qmax;
            case.multiplier = vec![mul];
            check_case(rung, &case);
            check_case(rung, &with_full_panels(&case, rung, &mut rng));
        }
    }
}

#[test]
fn seven_bit_data_takes_the_fastest_kernel() {
    for rung in rungs_under_test() {
        // 16 rows: AMX's tile kernel, the first of its rung, needs that many.
        let names = check_case(rung, &Case::random(&mut Rng::new(23), 16, 40, 96, 127));
        assert!(
            names.iter().all(|n| *n == kernels_of(rung)[0].name),
            "{rung}: {names:?}"
        );
    }
}

#[test]
fn dispatch_through_the_active_rung() {
    let case = Case::random(&mut Rng::new(29), 33, 70, 129, 255);
    let packed = qbench_kernels::PackedB::new(&case.mat_b()).unwrap();
    assert_eq!(packed.rung(), isa::active());
    check_case(isa::active(), &case);
}

/// `case` (its activations, their zero points and scales, its first multiplier and its
/// clamp) over one more full panel of the rung's columns, with fresh random weights and no
/// weight zero points: the tiles a rung may send through a fused output stage.
fn with_full_panels(case: &Case, rung: Rung, rng: &mut Rng) -> Case {
    let (_, nr, _) = tile(rung);
    let n = case.n + nr;
    let mut wide = Case::random(rng, case.m, n, case.k, 255);
    wide.a.clone_from(&case.a);
    wide.a_stride = case.a_stride;
    wide.a_zero.clone_from(&case.a_zero);
    wide.a_scale.clone_from(&case.a_scale);
    wide.w_zero = vec![0];
    wide.multiplier = vec![case.multiplier[0]];
    wide.out_zero = case.out_zero;
    wide.qmin = case.qmin;
    wide.qmax = case.qmax;
    if case.bias_i32.is_none() {
        wide.bias_i32 = None;
    }
    wide
}

/// Multipliers of 0.5 and 0.25 put many results exactly on .5: they must round to even
/// on every rung, as the reference does (2.5 → 2, 3.5 → 4, −2.5 → −2).
#[test]
fn exact_ties_round_half_to_even() {
    for rung in rungs_under_test() {
        for mul in [0.5f32, 0.25, 1.5] {
            let mut case = Case::random(&mut Rng::new(31), 7, 23, 9, 255);
            case.multiplier = vec![mul];
            case.bias_i32 = None;
            case.out_zero = 128;
            case.qmin = 0;
            case.qmax = 255;
            check_case(rung, &case);
            check_case(rung, &with_full_panels(&case, rung, &mut Rng::new(37)));
        }
    }
}

/// Zero zero points, the usual dynamic-quantization case in which the driver's i32 path
/// has no correction to apply, alone and mixed per row with non-zero ones; on several
/// full panels and, with k = 4096 (a driver row block of at most 64 rows), on m spanning
/// several row blocks.
#[test]
fn zero_zero_points_on_full_panels_and_across_row_blocks() {
    for rung in rungs_under_test() {
        let (mr, nr, _) = tile(rung);
        let mut rng = Rng::new(37);
        for (m, k) in [(3 * mr + 1, 64), (130, 4096)] {
            let mut case = Case::random(&mut rng, m, 2 * nr + 5, k, 255);
            case.w_zero = vec![0];
            case.a_zero = vec![0];
            check_case(rung, &case);
            case.a_zero = (0..m as i32)
                .map(|r| if r % 3 == 0 { 0 } else { r })
                .collect();
            case.a_scale = vec![0.01; m];
            check_case(rung, &case);
        }
    }
}
