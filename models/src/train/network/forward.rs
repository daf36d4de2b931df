//! The forward pass: every step in order, in train or eval mode, recorded on a tape.

use super::*;

impl Network {
    fn check_input(&self, x: &Buf) -> Result<()> {
        let bad = x.shape.len() != self.input_dims.len()
            || x.shape
                .iter()
                .zip(&self.input_dims)
                .skip(1)
                .any(|(&s, d)| match d {
                    Dim::Fixed(f) => *f != s,
                    Dim::Symbolic(_) => false,
                });
        if bad || x.shape.iter().product::<usize>() != x.data.len() {
            return Err(ModelError::Graph {
                file: self.template.name.clone(),
                msg: format!(
                    "input of shape {:?} ({} values) does not fit the graph input {:?}",
                    x.shape,
                    x.data.len(),
                    self.input_dims
                ),
            });
        }
        Ok(())
    }

    /// Runs the graph on the batch `x`; `Train` mode also updates BatchNorm running
    /// statistics.
    pub fn forward(&mut self, x: &Buf, mode: Mode) -> Result<Tape> {
        self.check_input(x)?;
        let mut acts: Vec<Option<Buf>> = vec![None; self.n_acts];
        acts[0] = Some(x.clone());
        let mut caches = Vec::with_capacity(self.steps.len());
        let momentum = self.bn_momentum;
        for step in &self.steps {
            let get = |i: usize| -> &Buf {
                match step.inputs[i] {
                    Some(Src::Act(a)) => acts[a].as_ref().expect("topological order"),
                    _ => unreachable!("compile checked activation inputs"),
                }
            };
            let par = |i: usize| -> Option<&[f32]> {
                match step.inputs[i] {
                    Some(Src::Param(p)) => Some(&self.params[p].value),
                    _ => None,
                }
            };
            let fq_on = self.fake_quant_enabled;
            let (y, cache, stats) = match &step.kind {
                Kind::Gemm { trans_b, wq } => {
                    let x = get(0);
                    let w = &self.params[pidx(step, 1)];
                    let (fout, _) = gemm_dims(step, w, *trans_b, x)?;
                    let b = bias(step, par(2), fout)?;
                    match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let wfq = &mut self.weight_fq[q];
                            let (wv, mask) = wfq
                                .fake_quantize(&w.shape, &w.value, true)
                                .map_err(|e| exec_err(step, e))?;
                            let bq = match b.filter(|_| mode == Mode::Eval) {
                                Some(b) => {
                                    Some(wfq.fake_quantize_bias(b).map_err(|e| exec_err(step, e))?)
                                }
                                None => b.map(<[f32]>::to_vec),
                            };
                            let y = linear::forward(x, &wv, *trans_b, fout, bq.as_deref());
                            let cache = Cache::QWeight {
                                shape: None,
                                w: wv,
                                mask,
                            };
                            (y, cache, None)
                        }
                        None => (
                            linear::forward(x, &w.value, *trans_b, fout, b),
                            Cache::None,
                            None,
                        ),
                    }
                }
                Kind::Conv { spatial, group, wq } => {
                    let x = get(0);
                    let wp = &self.params[pidx(step, 1)];
                    let s = conv_shape(step, spatial, *group, wp, x)?;
                    let b = bias(step, par(2), s.cout)?;
                    match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let wfq = &mut self.weight_fq[q];
                            let (wv, mask) = wfq
                                .fake_quantize(&wp.shape, &wp.value, true)
                                .map_err(|e| exec_err(step, e))?;
                            let bq = match b.filter(|_| mode == Mode::Eval) {
                                Some(b) => {
                                    Some(wfq.fake_quantize_bias(b).map_err(|e| exec_err(step, e))?)
                                }
                                None => b.map(<[f32]>::to_vec),
                            };
                            let y = conv::forward(&s, x, &wv, bq.as_deref());
                            let cache = Cache::QWeight {
                                shape: Some(s),
                                w: wv,
                                mask,
                            };
                            (y, cache, None)
                        }
                        None => (conv::forward(&s, x, &wp.value, b), Cache::Conv(s), None),
                    }
                }
                Kind::ConvBn {
                    spatial,
                    group,
                    eps,
                    wq,
                } => {
                    let x = get(0);
                    let wp = &self.params[pidx(step, 1)];
                    let s = conv_shape(step, spatial, *group, wp, x)?;
                    let b = bias(step, par(2), s.cout)?;
                    for i in 3..7 {
                        if par(i).map(<[f32]>::len) != Some(s.cout) {
                            return Err(exec_err(
                                step,
                                format!(
                                    "BatchNorm input {} must hold one value per channel ({})",
                                    i - 2,
                                    s.cout
                                ),
                            ));
                        }
                    }
                    let (gamma, beta) = (par(3).unwrap(), par(4).unwrap());
                    let (mean, var) = (par(5).unwrap(), par(6).unwrap());
                    // s = γ/√(σ²+ε) and the folded weights by the shared BatchNorm fold,
                    // so they (and their qparams) are the ones the static pipeline converts.
                    let fold = BnFold::factors(gamma, var, *eps);
                    let inv_std: Vec<f32> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
                    let wf = fold.scale_weights(&wp.value);
                    let (w, mask) = match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let (wv, mask) = self.weight_fq[q]
                                .fake_quantize(&wp.shape, &wf, true)
                                .map_err(|e| exec_err(step, e))?;
                            (wv, Some(mask))
                        }
                        None => (wf, None),
                    };
                    if let (Mode::Eval, Some(q)) = (mode, wq.filter(|_| fq_on)) {
                        // Inference as the int8 model runs it: the conv of the folded
                        // weights plus the folded bias `(b − μ)·s + β` on the int32 grid.
                        let folded = fold.bias(b, mean, beta);
                        let bq = self.weight_fq[q]
                            .fake_quantize_bias(&folded)
                            .map_err(|e| exec_err(step, e))?;
                        let y = conv::forward(&s, x, &w, Some(&bq));
                        let why = "an eval-mode pass through a fake-quantized Conv + BatchNorm (it runs the folded int8 form; backpropagate through train-mode passes)";
                        (y, Cache::NoGrad(why), None)
                    } else {
                        let u = conv::forward(&s, x, &w, None);
                        // z = u / s + b: the conv of the unfolded weights, up to quantization.
                        let hw = s.g.oh * s.g.ow;
                        let mut z = u.clone();
                        z.data
                            .par_chunks_mut(hw)
                            .enumerate()
                            .for_each(|(plane, zs)| {
                                let c = plane % s.cout;
                                let add = b.map_or(0.0, |b| b[c]);
                                zs.iter_mut().for_each(|v| *v = *v / fold.factors[c] + add);
                            });
                        let train = mode == Mode::Train && !self.bn_frozen;
                        let (y, bn, mu, var) =
                            batchnorm::forward(&z, gamma, beta, mean, var, *eps, train);
                        let stats = train.then(|| {
                            let m = z.data.len() / s.cout;
                            let unbias = if m > 1 {
                                m as f32 / (m - 1) as f32
                            } else {
                                1.0
                            };
                            (pidx(step, 5), pidx(step, 6), mu, var, unbias)
                        });
                        let cache = Cache::ConvBn(Box::new(ConvBnCache {
                            shape: s,
                            w,
                            mask,
                            scale: fold.factors,
                            inv_std,
                            u,
                            bn,
                        }));
                        (y, cache, stats)
                    }
                }
                Kind::FakeQuant { q, observe } => {
                    let x = get(0);
                    let observe = *observe && mode == Mode::Train && self.observers_enabled;
                    if !fq_on && !observe {
                        (x.clone(), Cache::None, None)
                    } else {
                        let (v, mask) = self.act_fq[*q]
                            .fake_quantize(&x.shape, &x.data, observe)
                            .map_err(|e| exec_err(step, e))?;
                        if fq_on {
                            (Buf::new(x.shape.clone(), v), Cache::Mask(mask), None)
                        } else {
                            (x.clone(), Cache::None, None)
                        }
                    }
                }
                Kind::BatchNorm { eps } => {
                    let x = get(0);
                    let c = *x.shape.get(1).unwrap_or(&0);
                    for i in 1..5 {
                        if par(i).map(<[f32]>::len) != Some(c) || x.shape.len() < 2 {
                            return Err(exec_err(
                                step,
                                format!("input {i} must hold one value per channel ({c})"),
                            ));
                        }
                    }
                    let train = mode == Mode::Train && !self.bn_frozen;
                    let (y, cache, mu, var) = batchnorm::forward(
                        x,
                        par(1).unwrap(),
                        par(2).unwrap(),
                        par(3).unwrap(),
                        par(4).unwrap(),
                        *eps,
                        train,
                    );
                    let m = x.data.len() / c;
                    let stats = train.then(|| {
                        // The running variance is the unbiased estimate (PyTorch's rule).
                        let unbias = if m > 1 {
                            m as f32 / (m - 1) as f32
                        } else {
                            1.0
                        };
                        (pidx(step, 3), pidx(step, 4), mu, var, unbias)
                    });
                    (y, Cache::Bn(cache), stats)
                }
                Kind::Relu => (simple::relu(get(0)), Cache::None, None),
                Kind::MaxPool { spatial } => {
                    let g = pool_geom(step, spatial, get(0))?;
                    let (y, arg) = pool::max_forward(&g, get(0));
                    (y, Cache::Max(g, arg), None)
                }
                Kind::AvgPool {
                    spatial,
                    include_pad,
                } => {
                    let g = pool_geom(step, spatial, get(0))?;
                    (
                        pool::avg_forward(&g, get(0), *include_pad),
                        Cache::Pool(g),
                        None,
                    )
                }
                Kind::Gap => {
                    if get(0).shape.len() < 3 {
                        return Err(exec_err(step, "needs an input of rank ≥ 3"));
                    }
                    (pool::gap_forward(get(0)), Cache::None, None)
                }
                Kind::Flatten { axis } => {
                    let x = get(0);
                    let r = x.shape.len() as i64;
                    let a = if *axis < 0 { axis + r } else { *axis };
                    if !(0..=r).contains(&a) {
                        return Err(exec_err(step, format!("axis {axis} for rank {r}")));
                    }
                    let shape = simple::flatten_shape(&x.shape, a as usize);
                    (Buf::new(shape, x.data.clone()), Cache::None, None)
                }
                Kind::Add => {
                    let (a, b) = (get(0), get(1));
                    if a.shape != b.shape {
                        return Err(exec_err(
                            step,
                            format!(
                                "the trainer adds tensors of one shape, got {:?} and {:?}",
                                a.shape, b.shape
                            ),
                        ));
                    }
                    (simple::add(a, b), Cache::None, None)
                }
                Kind::Identity => (get(0).clone(), Cache::None, None),
            };
            if let Some((im, iv, mu, var, unbias)) = stats {
                let run = &mut self.params;
                for (r, b) in run[im].value.iter_mut().zip(&mu) {
                    *r = momentum * *r + (1.0 - momentum) * b;
                }
                for (r, b) in run[iv].value.iter_mut().zip(&var) {
                    *r = momentum * *r + (1.0 - momentum) * b * unbias;
                }
            }
            acts[step.output] = Some(y);
            caches.push(cache);
        }
        Ok(Tape {
            acts,
            caches,
            output: self.output,
        })
    }

    /// Every step's output in `tape`, named by its node (an activation's fake
    /// quantization as `<tensor>:fake_quant`, a folded Conv + BatchNorm by the conv), in
    /// execution order: for comparing a QAT network with the int8 model layer by layer.
    pub fn step_outputs<'t>(&'t self, tape: &'t Tape) -> Vec<(&'t str, &'t Buf)> {
        self.steps
            .iter()
            .filter_map(|s| Some((s.node.as_str(), tape.acts[s.output].as_ref()?)))
            .collect()
    }
}
