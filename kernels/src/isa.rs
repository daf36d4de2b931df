//! The ISA ladder: which rungs exist on this architecture, which the CPU supports, and
//! which one this process uses.
//!
//! Detection runs once per process and is cached. The environment variable
//! [`KERNEL_ENV`] (`QBENCH_KERNEL=avx2`, say) caps the ladder at a rung: the process then
//! uses the highest rung at or below it that the CPU supports. Tests and CI use it to
//! run the same suite once per rung; [`Selection::honoured`] tells whether the request
//! was met, so a test can fail when CI asked for a rung this machine silently lacks.
//!
//! A rung without its own kernel for some family of operations borrows the one of the
//! rung below it ([`Rung::borrowed`]): the `amx` rung has tile kernels for GEMM only, and
//! its pooling, element-wise, depthwise and fp32 row code is the `avx512vnni` rung's.

use std::sync::OnceLock;

/// Environment variable that caps (forces) the kernel rung.
pub const KERNEL_ENV: &str = "QBENCH_KERNEL";

/// Environment variable that, set to `1`, runs the `amx` rung's tile program on a tile
/// emulator in plain Rust (slow, bit-identical), on any x86-64 CPU: how machines without
/// AMX test it.
pub const AMX_EMULATE_ENV: &str = "QBENCH_AMX_EMULATE";

/// One rung of an ISA ladder. Order within an architecture is from slowest to fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rung {
    /// Portable Rust; every architecture has it.
    Generic,
    /// x86-64 AVX2 (`vpmaddubsw`/`vpmaddwd`).
    Avx2,
    /// x86-64 AVX-512 VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// x86-64 Advanced Matrix Extensions (`tdpbusd` on 16×64-byte tiles), GEMM only.
    Amx,
    /// aarch64 Advanced SIMD without the dot-product extension.
    Neon,
    /// aarch64 with the dot-product extension (`sdot`).
    NeonDotprod,
}

impl Rung {
    /// Every rung of every architecture.
    pub const ALL: [Rung; 6] = [
        Rung::Generic,
        Rung::Avx2,
        Rung::Avx512Vnni,
        Rung::Amx,
        Rung::Neon,
        Rung::NeonDotprod,
    ];

    /// The stable name used in reports, bench ids and the knob.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Generic => "generic",
            Rung::Avx2 => "avx2",
            Rung::Avx512Vnni => "avx512vnni",
            Rung::Amx => "amx",
            Rung::Neon => "neon",
            Rung::NeonDotprod => "neon-dotprod",
        }
    }

    /// Parses a rung name as printed by [`Rung::name`].
    pub fn parse(name: &str) -> Option<Rung> {
        Rung::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The architecture the rung belongs to (`None` for the portable rung).
    pub fn arch(self) -> Option<&'static str> {
        match self {
            Rung::Generic => None,
            Rung::Avx2 | Rung::Avx512Vnni | Rung::Amx => Some("x86_64"),
            Rung::Neon | Rung::NeonDotprod => Some("aarch64"),
        }
    }

    /// Whether this CPU runs the rung natively (checked at run time).
    pub fn is_available(self) -> bool {
        match self {
            Rung::Generic => true,
            #[cfg(target_arch = "x86_64")]
            Rung::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Rung::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Rung::Amx => crate::x86_64::amx::availability().is_ok(),
            #[cfg(target_arch = "aarch64")]
            Rung::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Rung::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Why the rung does not run here, or `None` when it does.
    pub fn unavailable_reason(self) -> Option<String> {
        if self.is_available() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if self == Rung::Amx {
            if let Err(why) = crate::x86_64::amx::availability() {
                return Some(why.clone());
            }
        }
        Some(match self.arch() {
            Some(arch) if arch != std::env::consts::ARCH => {
                format!(
                    "{} needs {arch}; this machine is {}",
                    self.name(),
                    std::env::consts::ARCH
                )
            }
            _ => format!("this CPU lacks the {} instructions", self.name()),
        })
    }

    /// The rung whose kernels this one uses for the operations it has no kernel of its
    /// own for (everything but GEMM, for `amx`): the highest available rung below it, so
    /// the ladder's rule "a rung without a specialisation borrows the one below" holds
    /// in one place. Every other rung is its own.
    pub fn borrowed(self) -> Rung {
        match self {
            Rung::Amx => ladder()
                .iter()
                .copied()
                .skip_while(|&r| r != Rung::Amx)
                .skip(1)
                .find(|r| r.is_available())
                .unwrap_or(Rung::Generic),
            other => other,
        }
    }
}

impl std::fmt::Display for Rung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The rungs of this architecture's ladder, fastest first, ending with `generic`.
pub fn ladder() -> &'static [Rung] {
    if cfg!(target_arch = "x86_64") {
        &[Rung::Amx, Rung::Avx512Vnni, Rung::Avx2, Rung::Generic]
    } else if cfg!(target_arch = "aarch64") {
        &[Rung::NeonDotprod, Rung::Neon, Rung::Generic]
    } else {
        &[Rung::Generic]
    }
}

/// The outcome of detection and of the knob, computed once per process.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The best rung the CPU supports.
    pub detected: Rung,
    /// What `QBENCH_KERNEL` asked for, verbatim, if set.
    pub requested: Option<String>,
    /// The rung this process uses.
    pub active: Rung,
    /// Set when the request could not be met exactly (unknown name, foreign or missing ISA).
    pub warning: Option<String>,
}

impl Selection {
    /// True unless a rung was requested and a different one is active.
    pub fn honoured(&self) -> bool {
        self.requested
            .as_deref()
            .is_none_or(|req| Rung::parse(req) == Some(self.active))
    }
}

/// Resolves a knob value against this CPU. Separate from [`selection`] so it can be tested.
pub fn resolve(requested: Option<&str>) -> Selection {
    let ladder = ladder();
    let detected = *ladder
        .iter()
        .find(|r| r.is_available())
        .unwrap_or(&Rung::Generic);
    let mut selection = Selection {
        detected,
        requested: requested.map(str::to_owned),
        active: detected,
        warning: None,
    };
    let Some(req) = requested else {
        return selection;
    };
    let valid: Vec<&str> = ladder.iter().map(|r| r.name()).collect();
    match Rung::parse(req).and_then(|r| ladder.iter().position(|&l| l == r)) {
        None => {
            selection.warning = Some(format!(
                "{KERNEL_ENV}={req:?} is not a rung of this machine's ladder ({}); using {detected}",
                valid.join(", ")
            ));
        }
        Some(pos) => {
            let capped = ladder[pos..].iter().copied().find(|r| r.is_available());
            selection.active = capped.unwrap_or(Rung::Generic);
            if selection.active.name() != req {
                selection.warning = Some(format!(
                    "{KERNEL_ENV}={req}: this CPU lacks it; fell back to {}",
                    selection.active
                ));
            }
        }
    }
    selection
}

/// Detection and knob, resolved once per process; a warning is printed once to stderr.
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let requested = std::env::var(KERNEL_ENV).ok().filter(|s| !s.is_empty());
        let selection = resolve(requested.as_deref());
        if let Some(warning) = &selection.warning {
            eprintln!("qbench-kernels: {warning}");
        }
        selection
    })
}

/// The rung this process uses for new packed weights.
pub fn active() -> Rung {
    selection().active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for rung in Rung::ALL {
            assert_eq!(Rung::parse(rung.name()), Some(rung));
        }
        assert_eq!(Rung::parse("sse9"), None);
    }

    #[test]
    fn ladder_ends_in_generic_and_generic_always_runs() {
        assert_eq!(ladder().last(), Some(&Rung::Generic));
        assert!(Rung::Generic.is_available());
    }

    #[test]
    fn knob_caps_the_ladder() {
        let generic = resolve(Some("generic"));
        assert_eq!(generic.active, Rung::Generic);
        assert!(generic.honoured());
        let unknown = resolve(Some("sse9"));
        assert_eq!(unknown.active, unknown.detected);
        assert!(unknown.warning.is_some());
        assert!(!unknown.honoured());
        for &rung in ladder() {
            let s = resolve(Some(rung.name()));
            assert_eq!(s.honoured(), rung.is_available(), "{rung}");
        }
    }

    #[test]
    fn a_rung_borrows_from_below_only_what_it_lacks() {
        for &rung in ladder() {
            let lent = rung.borrowed();
            assert!(lent <= rung, "{rung} borrows {lent}");
            assert!(lent == Rung::Generic || lent.is_available() || lent == rung);
        }
        if cfg!(target_arch = "x86_64") {
            assert_ne!(Rung::Amx.borrowed(), Rung::Amx);
            if Rung::Avx512Vnni.is_available() {
                assert_eq!(Rung::Amx.borrowed(), Rung::Avx512Vnni);
            }
        }
    }

    #[test]
    fn foreign_rung_is_reported_unavailable() {
        let foreign = if cfg!(target_arch = "x86_64") {
            Rung::NeonDotprod
        } else {
            Rung::Avx2
        };
        assert!(!foreign.is_available());
        assert!(foreign.unavailable_reason().unwrap().contains("needs"));
    }
}
