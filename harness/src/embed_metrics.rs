//! Fidelity metrics of a sentence encoder against its fp32 self: cosine similarity of
//! embeddings (mean and worst over a set of sentences), and a downstream probe, a binary
//! L2-regularised logistic regression trained on fp32 embeddings and scored on the
//! embeddings each method produces.
//!
//! The probe is fitted by Newton's method (iteratively reweighted least squares with a
//! Cholesky solve, in f64) to convergence, so its weights depend on the data alone, not
//! on a learning rate or an epoch count: the same seed and split give the same probe.

/// Cosine similarity of two vectors (f64 accumulation); 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Mean and worst cosine similarity between matching rows of two `n × d` arrays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineStats {
    pub mean: f64,
    pub worst: f64,
    pub samples: usize,
}

/// Row-by-row cosine of `a` against `reference` (both `n × d`, row-major).
pub fn cosine_stats(a: &[f32], reference: &[f32], d: usize) -> CosineStats {
    assert!(d > 0 && a.len() == reference.len() && a.len().is_multiple_of(d));
    let cos: Vec<f64> = a
        .chunks(d)
        .zip(reference.chunks(d))
        .map(|(x, y)| cosine(x, y))
        .collect();
    CosineStats {
        mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        worst: cos.iter().copied().fold(f64::INFINITY, f64::min),
        samples: cos.len(),
    }
}

/// A fitted binary logistic regression: `p(y = 1 | x) = σ(w·x + b)`.
#[derive(Clone, Debug)]
pub struct Probe {
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Probe {
    /// Fits on `n × d` features with labels, minimising
    /// `Σ log-loss + (l2 / 2)·‖w‖²` (the bias is not penalised), by Newton steps until the
    /// largest step is below 1e-9 or 100 steps. `l2 = 1` is scikit-learn's default `C = 1`.
    pub fn fit(x: &[f32], d: usize, labels: &[bool], l2: f64) -> Probe {
        assert!(d > 0 && x.len() == labels.len() * d);
        let p = d + 1; // weights then bias
        let mut theta = vec![0f64; p];
        let row = |i: usize| &x[i * d..(i + 1) * d];
        for _ in 0..100 {
            // Gradient g and Hessian h of the penalised loss.
            let mut g = vec![0f64; p];
            let mut h = vec![0f64; p * p];
            for (i, &y) in labels.iter().enumerate() {
                let xi = row(i);
                let z = theta[d]
                    + xi.iter()
                        .zip(&theta)
                        .map(|(&a, &w)| f64::from(a) * w)
                        .sum::<f64>();
                let mu = sigmoid(z);
                let r = mu - f64::from(u8::from(y));
                let wgt = mu * (1.0 - mu);
                let xf: Vec<f64> = xi.iter().map(|&v| f64::from(v)).chain([1.0]).collect();
                for a in 0..p {
                    g[a] += r * xf[a];
                    let wa = wgt * xf[a];
                    for b in 0..=a {
                        h[a * p + b] += wa * xf[b];
                    }
                }
            }
            for a in 0..d {
                g[a] += l2 * theta[a];
                h[a * p + a] += l2;
            }
            // A tiny ridge on the bias keeps the system positive definite even for
            // separable data.
            h[d * p + d] += 1e-9;
            for a in 0..p {
                for b in 0..a {
                    h[b * p + a] = h[a * p + b];
                }
            }
            let step = cholesky_solve(&mut h, &g, p);
            let mut biggest = 0f64;
            for (t, s) in theta.iter_mut().zip(&step) {
                *t -= s;
                biggest = biggest.max(s.abs());
            }
            if biggest < 1e-9 {
                break;
            }
        }
        Probe {
            bias: theta[d],
            weights: theta[..d].to_vec(),
        }
    }

    /// The predicted label of each row of `x` (`n × d`).
    pub fn predict(&self, x: &[f32]) -> Vec<bool> {
        let d = self.weights.len();
        x.chunks(d)
            .map(|r| {
                self.bias
                    + r.iter()
                        .zip(&self.weights)
                        .map(|(&a, &w)| f64::from(a) * w)
                        .sum::<f64>()
                    > 0.0
            })
            .collect()
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Solves `h · s = g` for a symmetric positive definite `h` (`p × p`, overwritten by its
/// Cholesky factor).
fn cholesky_solve(h: &mut [f64], g: &[f64], p: usize) -> Vec<f64> {
    for j in 0..p {
        let mut s = h[j * p + j];
        for k in 0..j {
            s -= h[j * p + k] * h[j * p + k];
        }
        let l = s.max(1e-300).sqrt();
        h[j * p + j] = l;
        for i in j + 1..p {
            let mut s = h[i * p + j];
            for k in 0..j {
                s -= h[i * p + k] * h[j * p + k];
            }
            h[i * p + j] = s / l;
        }
    }
    let mut y = g.to_vec();
    for i in 0..p {
        for k in 0..i {
            y[i] -= h[i * p + k] * y[k];
        }
        y[i] /= h[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            y[i] -= h[k * p + i] * y[k];
        }
        y[i] /= h[i * p + i];
    }
    y
}

/// Share of positions where `a` and `b` agree.
pub fn agreement(a: &[bool], b: &[bool]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        let s = cosine_stats(&[1.0, 0.0, 1.0, 0.0], &[1.0, 0.0, 0.0, 1.0], 2);
        assert_eq!((s.mean, s.worst, s.samples), (0.5, 0.0, 2));
    }

    /// Synthetic data whose labels come from a known direction with noise: the probe must
    /// recover the direction and beat 90 % held-out accuracy, and its gradient at the
    /// optimum must vanish (checked independently of the solver).
    #[test]
    fn probe_recovers_a_planted_direction_and_sits_at_the_optimum() {
        let d = 8;
        let mut rng = qbench_models::rng::Rng::new(1);
        let mut rnd = || rng.uniform() * 2.0 - 1.0;
        let truth: Vec<f64> = (0..d)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        let mut make = |n: usize| {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for _ in 0..n {
                let row: Vec<f32> = (0..d).map(|_| rnd() as f32).collect();
                let z: f64 = row
                    .iter()
                    .zip(&truth)
                    .map(|(&a, &w)| f64::from(a) * w)
                    .sum();
                y.push(z + 0.1 * rnd() > 0.2);
                x.extend(row);
            }
            (x, y)
        };
        let (xt, yt) = make(800);
        let (xv, yv) = make(400);
        let l2 = 1.0;
        let probe = Probe::fit(&xt, d, &yt, l2);
        let acc = agreement(&probe.predict(&xv), &yv);
        assert!(acc > 0.9, "held-out accuracy {acc}");
        let c = cosine(
            &probe.weights.iter().map(|&w| w as f32).collect::<Vec<_>>(),
            &truth.iter().map(|&w| w as f32).collect::<Vec<_>>(),
        );
        assert!(c > 0.98, "direction cosine {c}");
        // Stationarity: Σ (σ(z) − y)·x + l2·w = 0 and Σ (σ(z) − y) = 0.
        let mut g = vec![0f64; d + 1];
        for (i, &y) in yt.iter().enumerate() {
            let r = &xt[i * d..(i + 1) * d];
            let z = probe.bias
                + r.iter()
                    .zip(&probe.weights)
                    .map(|(&a, &w)| f64::from(a) * w)
                    .sum::<f64>();
            let e = sigmoid(z) - f64::from(u8::from(y));
            for (gk, &v) in g.iter_mut().zip(r) {
                *gk += e * f64::from(v);
            }
            g[d] += e;
        }
        for (gk, w) in g.iter_mut().zip(&probe.weights) {
            *gk += l2 * w;
        }
        assert!(g.iter().all(|v| v.abs() < 1e-6), "gradient {g:?}");
    }
}
