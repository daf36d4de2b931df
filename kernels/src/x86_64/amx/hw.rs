//! The hardware side of the AMX rung: detection (CPUID, XCR0, Linux's tile-data
//! permission) and the tile instructions through `asm!`, since the AMX intrinsics are
//! not stable in Rust.

use core::arch::asm;

use super::tiles::{TileConfig, TileOps};

/// `arch_prctl` option asking Linux for permission to use an extended state component.
#[cfg(target_os = "linux")]
const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
/// The XSAVE state component of AMX tile data.
#[cfg(target_os = "linux")]
const XFEATURE_XTILEDATA: u64 = 18;
/// XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves and restores tile state.
const XCR0_TILE: u64 = (1 << 17) | (1 << 18);

/// Checks that this CPU and OS run AMX int8, asking Linux for the tile-data permission
/// (process-wide) on the way. Call once per process; the caller caches the answer.
pub(crate) fn detect() -> Result<(), String> {
    // The rung's kernel for fewer than 16 rows, and its epilogue, are AVX-512 VNNI code.
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni"))
    {
        return Err("amx needs AVX-512 VNNI too, which this CPU lacks".into());
    }
    // CPUID leaf 7 exists where AVX-512 does (checked above).
    let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
    if leaf7.edx & (1 << 24) == 0 || leaf7.edx & (1 << 25) == 0 {
        return Err("this CPU lacks AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24, 25)".into());
    }
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 27) == 0 {
        return Err("the OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE)".into());
    }
    // SAFETY: OSXSAVE is set (checked above), so XGETBV with ECX = 0 is valid.
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 & XCR0_TILE != XCR0_TILE {
        return Err(format!(
            "the OS does not manage AMX tile state (XCR0 = {xcr0:#x} lacks bits 17, 18)"
        ));
    }
    request_permission()
}

/// # Safety
/// CPUID.1:ECX.OSXSAVE is set.
unsafe fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV reads XCR0 into EDX:EAX; valid with OSXSAVE (caller's contract).
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: without it Linux kills the
/// process on its first tile instruction. A raw system call, since the crate has no libc
/// dependency and this is its only system call.
#[cfg(target_os = "linux")]
fn request_permission() -> Result<(), String> {
    const SYS_ARCH_PRCTL: u64 = 158;
    let ret: i64;
    // SAFETY: arch_prctl with this option only reads its two integer arguments and
    // changes the process's permitted XSAVE features; the syscall clobbers rcx and r11.
    unsafe {
        asm!("syscall",
             inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
             in("rdi") ARCH_REQ_XCOMP_PERM,
             in("rsi") XFEATURE_XTILEDATA,
             lateout("rcx") _, lateout("r11") _,
             options(nostack))
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(format!(
            "Linux refused the AMX tile-data permission \
             (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) = errno {})",
            -ret
        ))
    }
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> Result<(), String> {
    Err("amx is only enabled on Linux (arch_prctl tile-data permission)".into())
}

/// The tile instructions themselves.
pub(crate) struct Hardware;

impl TileOps for Hardware {
    #[inline(always)]
    unsafe fn configure(cfg: &TileConfig) {
        // SAFETY: AMX is available (trait contract); `cfg` is 64 readable bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg, options(nostack, readonly)) };
    }

    #[inline(always)]
    unsafe fn release() {
        // SAFETY: AMX is available (trait contract).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    #[inline(always)]
    unsafe fn zero<const T: u8>() {
        // SAFETY: AMX is available and configured (trait contract).
        unsafe { asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }

    #[inline(always)]
    unsafe fn load<const T: u8>(src: *const u8, stride: usize) {
        // SAFETY: AMX is configured; `src` holds the tile's rows at `stride` (contract).
        unsafe {
            asm!("tileloadd tmm{t}, [{p} + {s} * 1]", t = const T, p = in(reg) src,
                 s = in(reg) stride, options(nostack, readonly))
        };
    }

    #[inline(always)]
    unsafe fn store<const T: u8>(dst: *mut u8, stride: usize) {
        // SAFETY: AMX is configured; `dst` has the tile's rows at `stride` (contract).
        unsafe {
            asm!("tilestored [{p} + {s} * 1], tmm{t}", t = const T, p = in(reg) dst,
                 s = in(reg) stride, options(nostack))
        };
    }

    #[inline(always)]
    unsafe fn dpbusd<const C: u8, const A: u8, const B: u8>() {
        // SAFETY: AMX-INT8 is available and the tiles' shapes agree (contract).
        unsafe {
            asm!("tdpbusd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                 options(nostack, nomem))
        };
    }
}
