//! BatchNormalization over NCHW (or `[n, c]`): train mode normalises with the batch's
//! statistics (biased variance, as PyTorch and ONNX training mode do) and returns them so
//! the caller can update the running statistics; eval mode uses the running statistics.
//! Backward for both modes.

use rayon::prelude::*;

use super::Buf;

/// What backward needs: the normalised input and 1/σ per channel.
pub(crate) struct BnCache {
    pub xhat: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// Train mode: the statistics are functions of the batch (adds two terms to dx).
    pub batch_stats: bool,
}

fn dims(x: &Buf) -> (usize, usize, usize) {
    let (n, c) = (x.shape[0], x.shape[1]);
    (n, c, x.shape[2..].iter().product())
}

/// Per-channel sums of `f(sample, index within plane)` over the batch, channels in
/// parallel, each channel's sum in a fixed order (f64: a batch·plane long sum in f32
/// would lose the small variance of large activations).
fn per_channel(x: &Buf, f: impl Fn(usize, f32) -> f64 + Sync) -> Vec<f64> {
    let (n, c, hw) = dims(x);
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0.0f64;
            for i in 0..n {
                for &v in &x.data[(i * c + ch) * hw..][..hw] {
                    s += f(ch, v);
                }
            }
            s
        })
        .collect()
}

/// Returns `(y, cache, batch mean, batch biased variance)`; in eval mode the statistics
/// are `mean`/`var` as given.
pub(crate) fn forward(
    x: &Buf,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    train: bool,
) -> (Buf, BnCache, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = dims(x);
    let (mu, sigma2): (Vec<f32>, Vec<f32>) = if train {
        let m = (n * hw) as f64;
        let mu = per_channel(x, |_, v| f64::from(v));
        let mu: Vec<f64> = mu.into_iter().map(|s| s / m).collect();
        let var = per_channel(x, |ch, v| (f64::from(v) - mu[ch]).powi(2));
        (
            mu.iter().map(|&v| v as f32).collect(),
            var.into_iter().map(|s| (s / m) as f32).collect(),
        )
    } else {
        (mean.to_vec(), var.to_vec())
    };
    let inv_std: Vec<f32> = sigma2.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let mut xhat = vec![0.0f32; x.data.len()];
    let mut y = Buf::zeros(x.shape.clone());
    xhat.par_chunks_mut(hw)
        .zip(y.data.par_chunks_mut(hw))
        .zip(x.data.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, ((xh, ys), xs))| {
            let ch = plane % c;
            for ((h, o), &v) in xh.iter_mut().zip(ys.iter_mut()).zip(xs) {
                *h = (v - mu[ch]) * inv_std[ch];
                *o = *h * gamma[ch] + beta[ch];
            }
        });
    let cache = BnCache {
        xhat,
        inv_std,
        batch_stats: train,
    };
    (y, cache, mu, sigma2)
}

/// Gradients of x, gamma and beta.
pub(crate) fn backward(cache: &BnCache, gamma: &[f32], dy: &Buf) -> (Buf, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = dims(dy);
    let xhat = &cache.xhat;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let off = (i * c + ch) * hw;
                for (&g, &h) in dy.data[off..off + hw].iter().zip(&xhat[off..off + hw]) {
                    sd += f64::from(g);
                    sdx += f64::from(g) * f64::from(h);
                }
            }
            (sd, sdx)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let m = (n * hw) as f32;
    let mut dx = Buf::zeros(dy.shape.clone());
    dx.data
        .par_chunks_mut(hw)
        .zip(dy.data.par_chunks(hw))
        .zip(xhat.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, ((dxs, dys), hs))| {
            let ch = plane % c;
            let k = gamma[ch] * cache.inv_std[ch];
            if cache.batch_stats {
                // dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)).
                let (md, mdx) = (dbeta[ch] / m, dgamma[ch] / m);
                for ((d, &g), &h) in dxs.iter_mut().zip(dys).zip(hs) {
                    *d = k * (g - md - h * mdx);
                }
            } else {
                for (d, &g) in dxs.iter_mut().zip(dys) {
                    *d = k * g;
                }
            }
        });
    (dx, dgamma, dbeta)
}
