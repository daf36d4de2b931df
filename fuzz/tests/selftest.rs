//! The driver's machinery on inputs that fail on purpose (`--format selftest`): each kind
//! of failure (panic, abort, SIGSEGV, budget abort, handled budget refusal, hang) is caught, recorded with its reason and saved, the run goes on after a
//! death, and a listed finding does not fail the run while an unlisted one does.

use std::path::Path;
use std::process::Command;

fn fuzz(out: &Path, known: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_qbench-fuzz"))
        .args([
            "--format",
            "selftest",
            "--cases",
            "7",
            "--seed",
            "3",
            "--timeout",
            "2",
        ])
        .arg("--out")
        .arg(out)
        .arg("--known")
        .arg(known)
        .output()
        .expect("the driver runs");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.success(), text)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qbench-fuzz-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_failure_kind_is_caught_saved_and_fails_the_run_unless_listed() {
    let dir = scratch("selftest");
    let out = dir.join("corpus");
    let (ok, text) = fuzz(&out, &dir.join("none.txt"));
    assert!(!ok, "unlisted findings must fail the run:\n{text}");
    for expected in [
        "7 cases",
        "6 findings (6 new, 0 listed)",
        "hang: no result after # s",
        "panic: selftest panic",
        "SIGABRT (#)",
        "SIGSEGV (#)",
        "over the budget of # (aborted)",
        "over the budget (refused, handled)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let saved: Vec<_> = std::fs::read_dir(out.join("selftest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let inputs: Vec<_> = saved.iter().filter(|p| p.extension().is_none()).collect();
    assert_eq!(inputs.len(), 6, "{saved:?}");
    for p in &inputs {
        let why = std::fs::read_to_string(p.with_extension("txt")).unwrap();
        assert!(why.contains("| seed 3 case "), "{why}");
    }

    // Every finding listed: the run passes, and the replay of the corpus reports them as
    // known; with an empty list the replay fails.
    let list: String = inputs
        .iter()
        .map(|p| format!("selftest/{}\n", p.file_name().unwrap().to_string_lossy()))
        .collect();
    let known = dir.join("known.txt");
    std::fs::write(&known, list).unwrap();
    let (ok, text) = fuzz(&out, &known);
    assert!(ok, "listed findings must not fail the run:\n{text}");
    assert!(text.contains("6 findings (0 new, 6 listed)"), "{text}");

    let replay = |known: &Path| {
        Command::new(env!("CARGO_BIN_EXE_qbench-fuzz"))
            .args(["--timeout", "2"])
            .arg("--replay")
            .arg(&out)
            .arg("--known")
            .arg(known)
            .output()
            .unwrap()
    };
    let o = replay(&known);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = replay(&dir.join("none.txt"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 failing and not listed"));
    let _ = std::fs::remove_dir_all(&dir);
}
