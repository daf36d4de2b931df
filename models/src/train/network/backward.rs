//! The backward pass: the tape walked in reverse, weight gradients summed per group of
//! samples in a fixed order.

use super::*;

impl Network {
    /// Back-propagates `dout` (the gradient of the loss with respect to the output of
    /// `tape`) to every trainable parameter and the input.
    pub fn backward(&self, tape: &Tape, dout: &Buf) -> Result<Grads> {
        if dout.shape != tape.output().shape {
            return Err(ModelError::Graph {
                file: self.template.name.clone(),
                msg: format!(
                    "output gradient of shape {:?} for an output of shape {:?}",
                    dout.shape,
                    tape.output().shape
                ),
            });
        }
        let mut d: Vec<Option<Buf>> = vec![None; self.n_acts];
        d[self.output] = Some(dout.clone());
        let mut grads: Vec<Vec<f32>> = vec![Vec::new(); self.params.len()];
        let mut add_param = |p: usize, g: Vec<f32>| {
            if grads[p].is_empty() {
                grads[p] = g;
            } else {
                add_into(&mut grads[p], &g);
            }
        };
        let add_act = |d: &mut Vec<Option<Buf>>, src: Option<Src>, g: Buf| {
            if let Some(Src::Act(a)) = src {
                match &mut d[a] {
                    Some(acc) => add_into(&mut acc.data, &g.data),
                    slot => *slot = Some(g),
                }
            }
        };
        for (step, cache) in self.steps.iter().zip(&tape.caches).rev() {
            let Some(dy) = d[step.output].take() else {
                continue;
            };
            let input = |i: usize| -> &Buf {
                match step.inputs[i] {
                    Some(Src::Act(a)) => tape.acts[a].as_ref().expect("forward ran"),
                    _ => unreachable!("compile checked activation inputs"),
                }
            };
            match (&step.kind, cache) {
                (_, Cache::NoGrad(why)) => {
                    return Err(exec_err(step, format!("no gradient for {why}")))
                }
                (Kind::Gemm { trans_b, .. }, Cache::QWeight { w, mask, .. }) => {
                    let fout = dy.shape[1];
                    let (dx, mut dw, db) = linear::backward(input(0), w, *trans_b, fout, &dy);
                    straight_through(&mut dw, mask);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Gemm { trans_b, .. }, _) => {
                    let w = &self.params[pidx(step, 1)];
                    let fout = dy.shape[1];
                    let (dx, dw, db) = linear::backward(input(0), &w.value, *trans_b, fout, &dy);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (
                    Kind::Conv { .. },
                    Cache::QWeight {
                        shape: Some(s),
                        w,
                        mask,
                    },
                ) => {
                    let (dx, mut dw, db) = conv::backward(s, input(0), w, &dy);
                    straight_through(&mut dw, mask);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Conv { .. }, Cache::Conv(s)) => {
                    let w = &self.params[pidx(step, 1)].value;
                    let (dx, dw, db) = conv::backward(s, input(0), w, &dy);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::ConvBn { .. }, Cache::ConvBn(c)) => {
                    let gamma = &self.params[pidx(step, 3)].value;
                    let w = &self.params[pidx(step, 1)].value;
                    let (dx, grads_w, dgamma, dbeta, db) =
                        conv_bn_backward(c, input(0), w, gamma, &dy);
                    add_param(pidx(step, 1), grads_w);
                    add_param(pidx(step, 3), dgamma);
                    add_param(pidx(step, 4), dbeta);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::FakeQuant { .. }, Cache::Mask(mask)) => {
                    let mut g = dy;
                    straight_through(&mut g.data, mask);
                    add_act(&mut d, step.inputs[0], g);
                }
                (Kind::FakeQuant { .. }, _) => add_act(&mut d, step.inputs[0], dy),
                (Kind::BatchNorm { .. }, Cache::Bn(c)) => {
                    let gamma = &self.params[pidx(step, 1)].value;
                    let (dx, dg, db) = batchnorm::backward(c, gamma, &dy);
                    add_param(pidx(step, 1), dg);
                    add_param(pidx(step, 2), db);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Relu, _) => {
                    let y = tape.acts[step.output].as_ref().expect("forward ran");
                    add_act(&mut d, step.inputs[0], simple::relu_backward(y, &dy));
                }
                (Kind::MaxPool { .. }, Cache::Max(g, arg)) => {
                    let dx = pool::max_backward(g, &input(0).shape, arg, &dy);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::AvgPool { include_pad, .. }, Cache::Pool(g)) => {
                    let dx = pool::avg_backward(g, &input(0).shape, &dy, *include_pad);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Gap, _) => {
                    add_act(
                        &mut d,
                        step.inputs[0],
                        pool::gap_backward(&input(0).shape, &dy),
                    );
                }
                (Kind::Flatten { .. }, _) => {
                    let shape = input(0).shape.clone();
                    add_act(&mut d, step.inputs[0], Buf::new(shape, dy.data));
                }
                (Kind::Add, _) => {
                    add_act(&mut d, step.inputs[0], dy.clone());
                    add_act(&mut d, step.inputs[1], dy);
                }
                (Kind::Identity, _) => add_act(&mut d, step.inputs[0], dy),
                _ => return Err(exec_err(step, "the tape does not match the network")),
            }
        }
        let input = d[0]
            .take()
            .unwrap_or_else(|| Buf::zeros(tape.acts[0].as_ref().expect("input").shape.clone()));
        Ok(Grads {
            params: grads,
            input,
        })
    }
}

/// The straight-through estimator: the gradient passes where the value was inside the
/// grid (`mask`) and is zero where fake quantization clamped it.
pub(super) fn straight_through(g: &mut [f32], mask: &[bool]) {
    for (v, &m) in g.iter_mut().zip(mask) {
        if !m {
            *v = 0.0;
        }
    }
}

/// Backward of a folded Conv + BatchNorm (PyTorch's `ConvBn2d`):
/// `y = BN(z)`, `z = u / s + b`, `u = conv(x, fq(W·s))`, `s = γ·r` with
/// `r = 1/√(σ²_running+ε)`. Returns dx, dW, dγ (BatchNorm's plus the path through `s`),
/// dβ and db.
pub(super) fn conv_bn_backward(
    c: &ConvBnCache,
    x: &Buf,
    w: &[f32],
    gamma: &[f32],
    dy: &Buf,
) -> (Buf, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let cout = c.shape.cout;
    let (dz, dgamma_bn, dbeta) = batchnorm::backward(&c.bn, gamma, dy);
    let hw = dz.data.len() / (dz.shape[0] * cout).max(1);
    let n = dz.shape[0];
    // Per channel: db = Σ dz; ds (through the division) = −Σ dz·u / s².
    let sums: Vec<(f64, f64)> = (0..cout)
        .into_par_iter()
        .map(|ch| {
            let (mut sd, mut sdu) = (0.0f64, 0.0f64);
            for i in 0..n {
                let off = (i * cout + ch) * hw;
                for (&g, &u) in dz.data[off..off + hw].iter().zip(&c.u.data[off..off + hw]) {
                    sd += f64::from(g);
                    sdu += f64::from(g) * f64::from(u);
                }
            }
            (sd, sdu)
        })
        .collect();
    let db: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let mut ds: Vec<f64> = sums
        .iter()
        .zip(&c.scale)
        .map(|(s, &k)| -s.1 / (f64::from(k) * f64::from(k)))
        .collect();
    let mut du = dz;
    du.data
        .par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, v)| {
            let k = c.scale[plane % cout];
            v.iter_mut().for_each(|g| *g /= k);
        });
    let (dx, mut dwq, _) = conv::backward(&c.shape, x, &c.w, &du);
    if let Some(mask) = &c.mask {
        straight_through(&mut dwq, mask);
    }
    // W·s → W: dW = dWs·s, and ds += Σ dWs·W over the channel's weights.
    let per_out = w.len() / cout;
    let mut dw = vec![0.0f32; w.len()];
    for (ch, ((dst, (g, wr)), d)) in dw
        .chunks_mut(per_out)
        .zip(dwq.chunks(per_out).zip(w.chunks(per_out)))
        .zip(ds.iter_mut())
        .enumerate()
    {
        let k = c.scale[ch];
        let mut acc = 0.0f64;
        for ((o, &gv), &wv) in dst.iter_mut().zip(g).zip(wr) {
            *o = gv * k;
            acc += f64::from(gv) * f64::from(wv);
        }
        *d += acc;
    }
    let dgamma = dgamma_bn
        .iter()
        .zip(&ds)
        .zip(&c.inv_std)
        .map(|((&g, &s), &r)| g + (s * f64::from(r)) as f32)
        .collect();
    (dx, dw, dgamma, dbeta, db)
}
