//! Prints, for every activation observer, the range it picks and the mean squared
//! fake-quantization error on three synthetic distributions (the observer table of docs/quantization.md):
//!
//!     cargo run -p qbench-quantizers --example observer_ranges
//!
//! Data: splitmix64-driven Irwin–Hall "Gaussians" (sum of 12 uniforms − 6), as in
//! tests/observers.rs, so the numbers are the same on every machine.

use qbench_models::rng::Rng;
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::qparams::QSpec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut r = Rng::new(7);
    let mut outliers: Vec<f32> = (0..1_000_000).map(|_| r.irwin_hall() as f32).collect();
    outliers.extend([40.0, -50.0, 60.0]);
    let mut r = Rng::new(8);
    let relu: Vec<f32> = (0..1_000_000)
        .map(|_| (r.irwin_hall() as f32).max(0.0))
        .collect();
    let mut r = Rng::new(9);
    let uniform: Vec<f32> = (0..1_000_000)
        .map(|_| (r.uniform() * 4.0 - 1.0) as f32)
        .collect();
    let spec = QSpec::activation_quint8(true); // fbgemm's 7-bit activations
    println!("spec: quint8 affine, qmin 0, qmax 127 (reduce_range)");
    for (name, data) in [
        ("N(0,1) x 1M + {40, -50, 60}", &outliers),
        ("ReLU(N(0,1)) x 1M", &relu),
        ("U(-1, 3) x 1M", &uniform),
    ] {
        println!("\n{name}");
        println!("| observer | range | scale | MSE | MSE / MinMax |");
        println!("|---|---|---|---|---|");
        let mut base = None;
        for kind in ObserverKind::all() {
            let mut obs = kind.build(spec, "demo")?;
            // Batches of 100,000, as a calibration loop would feed them (the first set's
            // three outliers come last, in a batch of their own).
            for batch in data.chunks(data.len() / 10) {
                obs.observe(&[batch.len()], batch)?;
            }
            let qp = obs.qparams()?;
            let fq = qp.fake_quantize_tensor(&[data.len()], data);
            let mse = data
                .iter()
                .zip(&fq)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum::<f64>()
                / data.len() as f64;
            let base_mse = *base.get_or_insert(mse);
            let (lo, hi) = (
                qp.dequantize_one(spec.qmin, 0),
                qp.dequantize_one(spec.qmax, 0),
            );
            println!(
                "| {} | [{lo:.3}, {hi:.3}] | {:.5} | {mse:.3e} | {:.3} |",
                kind.name(),
                qp.scales[0],
                mse / base_mse
            );
        }
    }
    Ok(())
}
