//! `qbench-fuzz`: the command line (see the crate docs in lib.rs and fuzz/README.md).
//!
//! Installs the counting allocator, then either runs as a child (`--child`, internal:
//! cases in-process, events on stdout) or as the parent: fuzz runs per format, or a
//! corpus replay. Exits 1 when anything failed that the known-failing list does not name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use qbench_fuzz::driver::{self, RunOptions, Stats};
use qbench_fuzz::findings::{self, Known};
use qbench_fuzz::format::Format;
use qbench_fuzz::{alloc, child, replay, seeds};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(
    name = "qbench-fuzz",
    about = "Fuzz qbench's input formats in-process, crashes isolated in child processes"
)]
struct Args {
    /// Run seed: the same seed gives the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cases per format.
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// onnx, safetensors, idx, results, thresholds, all (or selftest).
    #[arg(long, default_value = "all")]
    format: String,
    /// Bytes a case may hold live at once (suffixes K, M, G: binary).
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    budget: usize,
    /// Seconds a case may run before it counts as a hang.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Cases per child process.
    #[arg(long, default_value_t = 2000)]
    batch: u64,
    /// Where findings are saved.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The known-failing list.
    #[arg(long)]
    known: Option<PathBuf>,
    /// Replay a corpus directory (`DIR/<format>/<input>`) instead of fuzzing.
    #[arg(long, value_name = "DIR")]
    replay: Option<PathBuf>,
    /// Internal: run cases in this process and report on stdout.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal (child): the first case.
    #[arg(long, hide = true, default_value_t = 0)]
    start: u64,
    /// Internal (child): run this one input file.
    #[arg(long, hide = true)]
    file: Option<PathBuf>,
}

/// `1073741824`, `1G`, `512M`, `64K`.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: usize = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} does not fit in usize"))
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn formats(name: &str) -> Option<Vec<Format>> {
    if name == "all" {
        return Some(Format::ALL.to_vec());
    }
    Format::from_name(name).map(|f| vec![f])
}

fn print_stats(s: &Stats) {
    let secs = s.elapsed.as_secs_f64();
    let new = s.findings.iter().filter(|f| !f.listed).count();
    println!(
        "{:<12} {} cases in {:.1} s ({:.0}/s), {} accepted by the parser, peak {}, {} findings ({} new, {} listed)",
        s.format.name(),
        s.cases,
        secs,
        s.cases as f64 / secs.max(1e-9),
        s.accepted,
        mib(s.peak),
        s.findings.len(),
        new,
        s.findings.len() - new
    );
    for (class, n, example) in findings::grouped(&s.findings) {
        let at = example
            .saved
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| example.key.clone());
        println!("    {n:>5} x {class}");
        println!(
            "            e.g. case {} -> {at}{}",
            example.case,
            if example.listed { " (listed)" } else { "" }
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(formats) = formats(&args.format) else {
        eprintln!("qbench-fuzz: unknown format {:?}", args.format);
        return ExitCode::from(2);
    };
    if args.child {
        let [format] = formats[..] else {
            eprintln!("qbench-fuzz: --child takes one format");
            return ExitCode::from(2);
        };
        return match &args.file {
            Some(path) => match child::run_file(format, path, args.budget) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qbench-fuzz: {}: {e}", path.display());
                    ExitCode::from(2)
                }
            },
            None => {
                child::run_cases(format, args.seed, args.start, args.cases, args.budget);
                ExitCode::SUCCESS
            }
        };
    }

    let fuzz_dir = seeds::workspace_root().join("fuzz");
    let known_path = args
        .known
        .clone()
        .unwrap_or_else(|| fuzz_dir.join("regressions/known-failing.txt"));
    let known = match Known::read(&known_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("qbench-fuzz: {}: {e}", known_path.display());
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs(args.timeout);

    if let Some(dir) = &args.replay {
        let results = match replay::replay(dir, &known, args.budget, timeout) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("qbench-fuzz: {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        };
        let mut regressions = 0;
        for r in &results {
            match (&r.failure, r.listed) {
                (None, false) => println!("pass      {}", r.key),
                (None, true) => println!(
                    "FIXED     {} (listed as failing: remove it from {})",
                    r.key,
                    known_path.display()
                ),
                (Some(why), true) => println!("known     {}: {why}", r.key),
                (Some(why), false) => {
                    regressions += 1;
                    println!("FAIL      {}: {why}", r.key);
                }
            }
        }
        println!(
            "{} inputs replayed, {regressions} failing and not listed",
            results.len()
        );
        return if regressions == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let opts = RunOptions {
        seed: args.seed,
        cases: args.cases,
        budget: args.budget,
        timeout,
        batch: args.batch.max(1),
        out: args.out.clone().unwrap_or_else(|| fuzz_dir.join("corpus")),
        known,
    };
    println!(
        "qbench-fuzz: seed {}, {} cases per format, budget {}, findings under {}",
        opts.seed,
        opts.cases,
        mib(opts.budget),
        opts.out.display()
    );
    let mut unlisted = 0;
    for f in formats {
        let stats = driver::fuzz(f, &opts);
        print_stats(&stats);
        if let Some(why) = &stats.stopped {
            eprintln!(
                "qbench-fuzz: {} stopped after {} cases: {why}",
                f.name(),
                stats.cases
            );
            return ExitCode::from(2);
        }
        unlisted += stats.findings.iter().filter(|x| !x.listed).count();
    }
    if unlisted > 0 {
        println!("{unlisted} findings not in {}", known_path.display());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
