//! Softmax cross-entropy on logits `[n][classes]`, averaged over the batch, with its
//! gradient. Computed through log-sum-exp with the row maximum subtracted, so large
//! logits neither overflow nor lose the gradient.

use super::Buf;

/// Mean cross-entropy and `d loss / d logits = (softmax − onehot) / n`.
///
/// # Errors
/// A message naming the problem when the shapes disagree or a label is out of range.
pub fn softmax_cross_entropy(logits: &Buf, labels: &[u8]) -> Result<(f32, Buf), String> {
    if logits.shape.len() != 2 || logits.shape[0] != labels.len() {
        return Err(format!(
            "logits of shape {:?} for {} labels",
            logits.shape,
            labels.len()
        ));
    }
    let (n, k) = (logits.shape[0], logits.shape[1]);
    let mut grad = Buf::zeros(logits.shape.clone());
    let mut total = 0.0f64;
    for (i, (row, g)) in logits
        .data
        .chunks(k)
        .zip(grad.data.chunks_mut(k))
        .enumerate()
    {
        let label = usize::from(labels[i]);
        if label >= k {
            return Err(format!("label {label} of sample {i} for {k} classes"));
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        total += f64::from(lse - row[label]);
        for (j, (gv, &v)) in g.iter_mut().zip(row).enumerate() {
            let p = (v - lse).exp();
            *gv = (p - if j == label { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    Ok(((total / n as f64) as f32, grad))
}
