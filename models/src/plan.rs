//! The one graph interpreter: an execution plan over numbered value slots, generic over
//! the step type and the value type, as tract-core's `SimplePlan`. The fp32 executor
//! runs it with its NCHW/NHWC tensors, the int8 runtime with its f32/u8 values.
//!
//! A plan knows, for each slot, how many steps (and plan outputs) read it. Running it, a
//! step is handed each input by value when it is that value's last reader (so
//! element-wise ops work in place and sub-graphs take activations they can keep), and by
//! reference otherwise; a value is dropped as soon as its last reader has run.

use std::borrow::Cow;

/// Steps over slots; `S` is what a step does (the caller's type).
pub struct Plan<S> {
    steps: Vec<PlanStep<S>>,
    nslots: usize,
    /// How many steps and plan outputs read each slot.
    uses: Vec<usize>,
}

/// One step: what it does, the slots it reads (`None`: an omitted optional input) and
/// the slots it writes (`None`: an output nobody reads).
pub struct PlanStep<S> {
    pub op: S,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<Option<usize>>,
}

impl<S> Plan<S> {
    /// A plan of `steps` over `nslots` slots whose `outputs` are read after the last step.
    pub fn new(nslots: usize, steps: Vec<PlanStep<S>>, outputs: &[usize]) -> Plan<S> {
        let mut uses = vec![0usize; nslots];
        for st in &steps {
            for s in st.inputs.iter().flatten() {
                uses[*s] += 1;
            }
        }
        for &s in outputs {
            uses[s] += 1;
        }
        Plan {
            steps,
            nslots,
            uses,
        }
    }

    pub fn steps(&self) -> &[PlanStep<S>] {
        &self.steps
    }

    pub fn num_slots(&self) -> usize {
        self.nslots
    }

    /// The most bytes alive at once while the plan runs, and the step where that
    /// happens. `bytes[s]` is slot `s`'s size (0 for a constant or an unknown size);
    /// `filled` are the slots holding a value before the first step (the inputs). A
    /// step's outputs are counted beside its inputs, as if nothing ran in place, and a
    /// value is dropped after its last reader, as [`Plan::run`] drops it.
    pub fn peak(&self, bytes: &[u64], filled: &[usize]) -> (u64, Option<usize>) {
        let size = |s: usize| bytes.get(s).copied().unwrap_or(0);
        let mut remaining = self.uses.clone();
        let mut live: u64 = filled.iter().map(|&s| size(s)).sum();
        let (mut peak, mut at) = (live, None);
        for (k, st) in self.steps.iter().enumerate() {
            let made: u64 = st.outputs.iter().flatten().map(|&s| size(s)).sum();
            if live.saturating_add(made) > peak {
                (peak, at) = (live.saturating_add(made), Some(k));
            }
            live = live.saturating_add(made);
            for &s in st.inputs.iter().flatten() {
                remaining[s] = remaining[s].saturating_sub(1);
                if remaining[s] == 0 {
                    live = live.saturating_sub(size(s));
                }
            }
            // An output nobody reads is dropped at once.
            for &s in st.outputs.iter().flatten() {
                if remaining[s] == 0 {
                    live = live.saturating_sub(size(s));
                }
            }
        }
        (peak, at)
    }

    /// An empty slot table to put the inputs in before [`Plan::run`].
    pub fn slots<V>(&self) -> Vec<Option<V>> {
        (0..self.nslots).map(|_| None).collect()
    }

    /// Runs every step on `vals` (the inputs already in their slots); `consts[s]`, when
    /// present, is read where slot `s` holds no value. `eval` runs one step on its
    /// arguments; `missing(step, slot)` is the error for a read of an empty slot. With
    /// `keep_all`, no value is moved or dropped (tracing reads every slot afterwards).
    /// Returns the slot table after the last step.
    pub fn run<V: Clone, E>(
        &self,
        mut vals: Vec<Option<V>>,
        consts: &[Option<V>],
        keep_all: bool,
        mut eval: impl FnMut(&S, Vec<Option<Cow<V>>>) -> Result<Vec<V>, E>,
        missing: impl Fn(&S, usize) -> E,
    ) -> Result<Vec<Option<V>>, E> {
        let mut remaining = self.uses.clone();
        for st in &self.steps {
            let ins = &st.inputs[..];
            // Take a value this step is the last reader of (and reads once); borrow the
            // rest.
            let mut owned: Vec<Option<V>> = ins
                .iter()
                .map(|s| match s {
                    Some(s)
                        if !keep_all
                            && remaining[*s] == 1
                            && vals[*s].is_some()
                            && ins.iter().filter(|x| **x == Some(*s)).count() == 1 =>
                    {
                        vals[*s].take()
                    }
                    _ => None,
                })
                .collect();
            let mut args: Vec<Option<Cow<V>>> = Vec::with_capacity(ins.len());
            for (k, s) in ins.iter().enumerate() {
                args.push(match (owned[k].take(), s) {
                    (Some(v), _) => Some(Cow::Owned(v)),
                    (None, None) => None,
                    (None, Some(s)) => {
                        let v = vals[*s]
                            .as_ref()
                            .or_else(|| consts.get(*s).and_then(Option::as_ref))
                            .ok_or_else(|| missing(&st.op, *s))?;
                        Some(Cow::Borrowed(v))
                    }
                });
            }
            let outs = eval(&st.op, args)?;
            if !keep_all {
                for s in ins.iter().flatten() {
                    remaining[*s] = remaining[*s].saturating_sub(1);
                    if remaining[*s] == 0 {
                        vals[*s] = None;
                    }
                }
            }
            for (s, v) in st.outputs.iter().zip(outs) {
                if let Some(s) = s {
                    vals[*s] = Some(v);
                }
            }
        }
        Ok(vals)
    }
}
