//! The epoch loop: seeded shuffling, mini-batches, softmax cross-entropy, an optimizer
//! step per batch under a cosine learning-rate schedule, and eval-mode accuracy.

use std::time::Instant;

use crate::data::{permutation, Dataset, IMAGE_LEN};
use crate::error::{ModelError, Result};

use super::loss::softmax_cross_entropy;
use super::network::{Mode, Network};
use super::optim::{Adam, Optimizer, Sgd};
use super::Buf;

/// Which optimizer [`fit`] uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd { momentum: f32 },
    Adam,
}

/// A training run's settings. The learning rate follows a cosine from `lr` to 0 over
/// all steps (no restarts): one less knob than step decay, and it ends at a low rate.
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub optimizer: OptimizerKind,
    /// Seeds the per-epoch shuffles (epoch e uses `seed + e`).
    pub seed: u64,
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean training loss and accuracy over the epoch's batches (train mode).
    pub loss: f64,
    pub train_top1: f64,
    pub seconds: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
}

/// Images `idx` of `data` as one `[b, 1, 28, 28]` batch and their labels.
fn gather(data: &Dataset, idx: &[usize]) -> (Buf, Vec<u8>) {
    let mut x = Vec::with_capacity(idx.len() * IMAGE_LEN);
    for &i in idx {
        x.extend_from_slice(data.image(i));
    }
    let labels = idx.iter().map(|&i| data.labels()[i]).collect();
    (Buf::new(vec![idx.len(), 1, 28, 28], x), labels)
}

fn correct(logits: &Buf, labels: &[u8]) -> usize {
    let k = logits.shape[1];
    logits
        .data
        .chunks(k)
        .zip(labels)
        .filter(|(row, &l)| argmax(row) == usize::from(l))
        .count()
}

/// Where a run is, after each optimizer step (for progress lines).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProgress {
    pub epoch: usize,
    /// Steps done in this epoch, and the epoch's total.
    pub step: usize,
    pub steps: usize,
    /// Mean training loss over the epoch's steps so far.
    pub loss: f64,
}

/// Trains `net` on `data` (image datasets, `[N, 1, 28, 28]` input), calling `on_epoch`
/// after each epoch.
pub fn fit(
    net: &mut Network,
    data: &Dataset,
    cfg: &FitConfig,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    fit_with(net, data, cfg, |_, _| {}, |_| {}, on_epoch)
}

/// [`fit`] with two more hooks: `before_epoch(epoch, net)` (1-based; where QAT freezes
/// observers and BatchNorm statistics) and `on_step` after every optimizer step.
pub fn fit_with(
    net: &mut Network,
    data: &Dataset,
    cfg: &FitConfig,
    mut before_epoch: impl FnMut(usize, &mut Network),
    mut on_step: impl FnMut(&StepProgress),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    if cfg.batch == 0 || cfg.epochs == 0 || data.is_empty() || !cfg.lr.is_finite() || cfg.lr <= 0.0
    {
        return Err(ModelError::Tensor(format!(
            "training needs epochs, batch, images and lr > 0 (got {}, {}, {}, {})",
            cfg.epochs,
            cfg.batch,
            data.len(),
            cfg.lr
        )));
    }
    let mut opt: Box<dyn Optimizer> = match cfg.optimizer {
        OptimizerKind::Sgd { momentum } => Box::new(Sgd::new(momentum, cfg.weight_decay)),
        OptimizerKind::Adam => Box::new(Adam::new(cfg.weight_decay)),
    };
    let steps_per_epoch = data.len().div_ceil(cfg.batch);
    let total = (steps_per_epoch * cfg.epochs) as f64;
    let mut step = 0usize;
    let mut reports = Vec::new();
    for epoch in 1..=cfg.epochs {
        before_epoch(epoch, net);
        let start = Instant::now();
        let order = permutation(data.len(), cfg.seed.wrapping_add(epoch as u64));
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (i, idx) in order.chunks(cfg.batch).enumerate() {
            let (x, labels) = gather(data, idx);
            let tape = net.forward(&x, Mode::Train)?;
            let (loss, dlogits) =
                softmax_cross_entropy(tape.output(), &labels).map_err(ModelError::Tensor)?;
            if !loss.is_finite() {
                return Err(ModelError::Tensor(format!(
                    "the loss diverged ({loss}) in epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += f64::from(loss) * idx.len() as f64;
            hits += correct(tape.output(), &labels);
            let grads = net.backward(&tape, &dlogits)?;
            lr = (f64::from(cfg.lr)
                * 0.5
                * (1.0 + (std::f64::consts::PI * step as f64 / total).cos()))
                as f32;
            opt.step(net.params_mut(), &grads.params, lr);
            step += 1;
            seen += idx.len();
            on_step(&StepProgress {
                epoch,
                step: i + 1,
                steps: steps_per_epoch,
                loss: loss_sum / seen as f64,
            });
        }
        let r = EpochReport {
            epoch,
            loss: loss_sum / data.len() as f64,
            train_top1: hits as f64 / data.len() as f64,
            seconds: start.elapsed().as_secs_f64(),
            lr,
        };
        on_epoch(&r);
        reports.push(r);
    }
    Ok(reports)
}

/// Eval-mode top-1 accuracy of `net` on `data` (a fraction).
pub fn evaluate(net: &mut Network, data: &Dataset, batch: usize) -> Result<f64> {
    let pred = predict(net, data, batch)?;
    let hits = pred
        .iter()
        .zip(data.labels())
        .filter(|(&p, &l)| p == usize::from(l))
        .count();
    Ok(hits as f64 / data.len().max(1) as f64)
}

/// Eval-mode predicted class (argmax, first on ties) of every image of `data`.
pub fn predict(net: &mut Network, data: &Dataset, batch: usize) -> Result<Vec<usize>> {
    let mut pred = Vec::with_capacity(data.len());
    let all: Vec<usize> = (0..data.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let (x, _) = gather(data, idx);
        let tape = net.forward(&x, Mode::Eval)?;
        let out = tape.output();
        let k = out.shape[1];
        pred.extend(out.data.chunks(k).map(argmax));
    }
    Ok(pred)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}
