//! `--format selftest`: cases that fail on purpose, one of each kind the driver must
//! catch, so the tests can check the machinery without depending on a qbench bug.
//!
//! Case `i` does kind `i % 7`: 0 returns normally, 1 panics, 2 aborts, 3 dies by SIGSEGV,
//! 4 asks for 1 TiB (refused by the budget; `Vec` then aborts), 5 asks for 1 TiB through
//! `try_reserve` (refused and handled: the case survives, the request is still a
//! finding), 6 hangs (until the parent's `--timeout` kills it).

use std::hint::black_box;

pub fn run(bytes: &[u8]) -> bool {
    match bytes.first().copied().unwrap_or(0) % 7 {
        0 => true,
        1 => panic!("selftest panic"),
        2 => std::process::abort(),
        3 => {
            // A real SIGSEGV, sent by kill(1): writing through a null pointer would be
            // undefined behaviour the optimiser may remove. Twice: std's handler (there
            // for stack overflows) ignores the first one, which is not a fault, after
            // restoring the default action, which the second one then takes.
            let pid = std::process::id().to_string();
            for _ in 0..2 {
                let _ = std::process::Command::new("kill")
                    .args(["-SEGV", &pid])
                    .status();
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
            unreachable!("SIGSEGV was not delivered");
        }
        4 => {
            let v: Vec<u8> = Vec::with_capacity(black_box(1 << 40));
            black_box(&v);
            true
        }
        5 => {
            let mut v: Vec<u8> = Vec::new();
            black_box(v.try_reserve(black_box(1 << 40)).is_ok())
        }
        _ => {
            std::thread::sleep(std::time::Duration::from_secs(600));
            true
        }
    }
}
