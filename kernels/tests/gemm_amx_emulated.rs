//! The AMX rung's tile program on the tile emulator, on every x86-64 machine and in every
//! run of the suite (whatever rung `QBENCH_KERNEL` forces): the shapes that reach each
//! branch of the program (one or two A tiles, every short tile, k around the 64-value
//! step and past it, several panels and row blocks), all three outputs, 1–3 threads,
//! bit for bit against the reference. CI also runs the whole kernel suite with
//! `QBENCH_AMX_EMULATE=1 QBENCH_KERNEL=amx`.
#![cfg(target_arch = "x86_64")]

mod common;

use common::{check_case, Case, Rng};
use qbench_kernels::{isa, Rung};

/// One test, so the variable is set before anything in this process reads it.
#[test]
fn amx_tile_program_on_the_emulator_matches_the_reference() {
    std::env::set_var(isa::AMX_EMULATE_ENV, "1");
    assert!(
        Rung::Amx.is_available(),
        "{:?}",
        Rung::Amx.unavailable_reason()
    );
    let mut rng = Rng::new(41);
    for m in (1..=33).chain([48, 64, 65, 100]) {
        for k in [0, 1, 4, 63, 64, 65, 128, 200] {
            let n = [1, 17, 64, 65, 130][(m + k) % 5];
            let names = check_case(Rung::Amx, &Case::random(&mut rng, m, n, k, 255));
            assert!(names.iter().all(|n| n.ends_with("_emulated")), "{names:?}");
        }
    }
    // Zero points over 0..=255 and a k whose sums wrap i32.
    for za in (0..=255).step_by(51) {
        let mut case = Case::random(&mut rng, 20, 70, 300, 255);
        case.a_zero = vec![za];
        check_case(Rung::Amx, &case);
    }
    let mut case = Case::random(&mut rng, 17, 3, 70_001, 255);
    case.a.iter_mut().for_each(|x| *x = 255);
    case.w.iter_mut().for_each(|x| *x = -128);
    case.a_zero = vec![0];
    case.w_zero = vec![0];
    check_case(Rung::Amx, &case);
}
