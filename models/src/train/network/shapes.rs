//! Shapes and parameters of a step, checked at run time with the step named in errors.

use super::*;

/// The parameter index of input `i` (compile guarantees it is a parameter).
pub(super) fn pidx(step: &Step, i: usize) -> usize {
    match step.inputs[i] {
        Some(Src::Param(p)) => p,
        _ => unreachable!("compile checked parameter inputs"),
    }
}

pub(super) fn gemm_dims(step: &Step, w: &Param, trans_b: bool, x: &Buf) -> Result<(usize, usize)> {
    if w.shape.len() != 2 || x.shape.len() != 2 {
        return Err(exec_err(
            step,
            format!(
                "needs 2-D input and weight, got {:?} and {:?}",
                x.shape, w.shape
            ),
        ));
    }
    let (fout, fin) = if trans_b {
        (w.shape[0], w.shape[1])
    } else {
        (w.shape[1], w.shape[0])
    };
    if x.shape[1] != fin {
        return Err(exec_err(
            step,
            format!(
                "input has {} features, the weight {:?} takes {fin}",
                x.shape[1], w.shape
            ),
        ));
    }
    Ok((fout, fin))
}

pub(super) fn bias<'a>(step: &Step, b: Option<&'a [f32]>, n: usize) -> Result<Option<&'a [f32]>> {
    match b {
        Some(b) if b.len() != n => Err(exec_err(
            step,
            format!("bias holds {} values, the output has {n} channels", b.len()),
        )),
        b => Ok(b),
    }
}

pub(super) fn conv_shape(
    step: &Step,
    sp: &Spatial,
    group: usize,
    w: &Param,
    x: &Buf,
) -> Result<ConvShape> {
    if w.shape.len() != 4 || x.shape.len() != 4 {
        return Err(exec_err(
            step,
            format!(
                "2-D conv needs 4-D input and weight, got {:?} and {:?}",
                x.shape, w.shape
            ),
        ));
    }
    let (cout, cin_g, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let c = x.shape[1];
    if group == 0 || c != cin_g * group || cout % group != 0 {
        return Err(exec_err(
            step,
            format!(
                "input has {c} channels; weight {:?} with {group} groups",
                w.shape
            ),
        ));
    }
    if sp.kernel.is_some_and(|k| k != [kh, kw]) {
        return Err(exec_err(step, "kernel_shape disagrees with the weight"));
    }
    let pads = sp.resolve_pads([kh, kw], x.shape[2], x.shape[3]);
    let g = Geom::new(
        c,
        x.shape[2],
        x.shape[3],
        [kh, kw],
        sp.strides,
        sp.dilations,
        pads,
    )
    .ok_or_else(|| {
        exec_err(
            step,
            format!("kernel larger than the padded input {:?}", x.shape),
        )
    })?;
    Ok(ConvShape {
        g,
        cout,
        groups: group,
    })
}

pub(super) fn pool_geom(step: &Step, sp: &Spatial, x: &Buf) -> Result<Geom> {
    let k = sp
        .kernel
        .ok_or_else(|| exec_err(step, "kernel_shape is required"))?;
    if x.shape.len() != 4 {
        return Err(exec_err(
            step,
            format!("needs a 4-D input, got {:?}", x.shape),
        ));
    }
    let pads = sp.resolve_pads(k, x.shape[2], x.shape[3]);
    Geom::new(
        x.shape[1],
        x.shape[2],
        x.shape[3],
        k,
        sp.strides,
        sp.dilations,
        pads,
    )
    .ok_or_else(|| {
        exec_err(
            step,
            format!("window larger than the padded input {:?}", x.shape),
        )
    })
}
