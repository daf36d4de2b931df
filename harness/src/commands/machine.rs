//! `qbench machine`: the CPU, its ISA features, and which int8 kernel rung runs here.

use anyhow::Result;
use tabled::{builder::Builder, settings::Style};

use crate::machine;

/// `qbench machine`.
pub fn cmd_machine(json: bool) -> Result<()> {
    let fingerprint = machine::Fingerprint::detect();
    let kernels = machine::KernelReport::detect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "machine": fingerprint, "kernels": kernels })
            )?
        );
        return Ok(());
    }
    println!("cpu       {}", fingerprint.cpu_model);
    println!(
        "arch      {} ({} cores)",
        fingerprint.arch, fingerprint.cores
    );
    println!("features  {}", fingerprint.features.join(" "));
    println!(
        "active    {} (detected {}{})",
        kernels.active,
        kernels.detected,
        kernels
            .knob
            .as_deref()
            .map(|k| format!(", {}={k}", qbench_kernels::isa::KERNEL_ENV))
            .unwrap_or_default()
    );
    if let Some(w) = &kernels.warning {
        println!("warning   {w}");
    }
    let mut table = Builder::default();
    table.push_record(["rung", "runs here", "kernels"]);
    for rung in &kernels.ladder {
        let runs = if rung.available {
            "yes".to_owned()
        } else {
            format!("no: {}", rung.reason.as_deref().unwrap_or(""))
        };
        table.push_record([rung.rung.clone(), runs, rung.kernels.join(", ")]);
    }
    println!("{}", table.build().with(Style::rounded()));
    Ok(())
}
