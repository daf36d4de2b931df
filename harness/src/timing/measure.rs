//! Interleaved timing: several candidates measured in one run, one sample of each in
//! turn, so that drifts of a shared machine (clock, neighbours, thermal) hit all of them
//! alike and their ratios stay honest. Statistics live in [`crate::timing::stats`].

use crate::timing::stats::{summarize, Summary};
use std::time::{Duration, Instant};

/// Something to time: one call of `run` is one operation.
pub struct Candidate<'a> {
    pub name: String,
    pub run: Box<dyn FnMut() + 'a>,
}

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Warm-up per candidate (also sizes a sample).
    pub warmup: Duration,
    /// Measuring time per candidate, after warm-up.
    pub measure: Duration,
    /// A sample runs the operation enough times to last at least this long.
    pub min_sample: Duration,
    pub min_samples: usize,
    pub max_samples: usize,
}

impl Budget {
    pub const DEFAULT: Budget = Budget {
        warmup: Duration::from_millis(150),
        measure: Duration::from_millis(1200),
        min_sample: Duration::from_millis(2),
        min_samples: 11,
        max_samples: 400,
    };

    pub const QUICK: Budget = Budget {
        warmup: Duration::from_millis(20),
        measure: Duration::from_millis(120),
        min_sample: Duration::from_micros(500),
        // Three is the fewest samples with a median that is not an extreme; MiniLM at
        // batch 32 × 128 tokens takes ~1.3 s a call, so each extra round costs seconds.
        min_samples: 3,
        max_samples: 60,
    };

    /// [`Budget::QUICK`] for `--quick` runs, else [`Budget::DEFAULT`].
    pub fn quick_or_default(quick: bool) -> Budget {
        if quick {
            Budget::QUICK
        } else {
            Budget::DEFAULT
        }
    }
}

/// Times every candidate, interleaved; returns nanoseconds per operation for each.
pub fn interleaved(candidates: &mut [Candidate], budget: Budget) -> Vec<Summary> {
    let iters: Vec<u64> = candidates.iter_mut().map(|c| warm_up(c, budget)).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
    let deadline = Instant::now() + budget.measure * candidates.len() as u32;
    let mut round = 0usize;
    loop {
        // Rotate who goes first so no candidate always follows the same neighbour.
        for offset in 0..candidates.len() {
            let i = (round + offset) % candidates.len();
            let start = Instant::now();
            for _ in 0..iters[i] {
                (candidates[i].run)();
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / iters[i] as f64);
        }
        round += 1;
        let enough = round >= budget.min_samples && Instant::now() >= deadline;
        if enough || round >= budget.max_samples {
            break;
        }
    }
    samples
        .iter()
        .map(|s| summarize(s).expect("at least one finite sample"))
        .collect()
}

/// Runs the candidate for the warm-up time and returns how many calls make one sample.
fn warm_up(candidate: &mut Candidate, budget: Budget) -> u64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while calls == 0 || start.elapsed() < budget.warmup {
        (candidate.run)();
        calls += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / calls as f64;
    ((budget.min_sample.as_secs_f64() / per_call).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_gets_the_same_number_of_samples() {
        let mut counts = [0u32; 2];
        let (first, second) = counts.split_at_mut(1);
        let mut candidates = vec![
            Candidate {
                name: "a".into(),
                run: Box::new(|| first[0] += 1),
            },
            Candidate {
                name: "b".into(),
                run: Box::new(|| second[0] += 1),
            },
        ];
        let budget = Budget {
            min_samples: 7,
            max_samples: 7,
            ..Budget::QUICK
        };
        let summaries = interleaved(&mut candidates, budget);
        assert_eq!(summaries.len(), 2);
        assert!(summaries.iter().all(|s| s.samples == 7));
        drop(candidates);
        assert!(counts.iter().all(|&c| c >= 7));
    }
}
