//! The counting global allocator: current and peak bytes of a case, and the budget.
//!
//! The binary installs [`Counting`] as `#[global_allocator]`. Between [`arm`] and
//! [`disarm`] (one fuzz case) every request is checked against the budget *before* it
//! reaches the system allocator: a request that would take the case's live bytes over the
//! budget is recorded and refused (null). Refusing is the only option, since an
//! allocator may not unwind; Rust's `handle_alloc_error` then aborts the child process
//! unless the caller used `try_reserve`. Either way the finding is already recorded: the
//! refusal is reported on the protocol channel (fd 1, see [`crate::protocol`]) from
//! inside the allocator, so the parent knows why the child died.
//! Refusing also keeps a 64 TB request from taking the machine's memory with it. The
//! refusal names the first qbench frame of the stack (see [`crate::frames`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Live bytes (all threads).
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Highest `CURRENT` since the last [`arm`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// `CURRENT` when the case started: the seeds and the driver's own state are not the
/// case's usage.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Bytes a case may hold live at once.
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static ARMED: AtomicBool = AtomicBool::new(false);
/// Largest refused request of the current case (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// The case whose refusal is reported (the protocol line names it).
static CASE: AtomicU64 = AtomicU64::new(0);

/// The allocator: `System`, counted.
pub struct Counting;

impl Counting {
    /// Whether `size` more bytes fit the budget; records and reports a refusal.
    fn admit(&self, size: usize) -> bool {
        if !ARMED.load(Relaxed) {
            return true;
        }
        let used = CURRENT.load(Relaxed).saturating_sub(BASE.load(Relaxed));
        if used.saturating_add(size) <= BUDGET.load(Relaxed) {
            return true;
        }
        REFUSED.fetch_max(size, Relaxed);
        // Where the request came from, for the finding: capturing a backtrace allocates,
        // so the check is off meanwhile (this allocator may be re-entered; `System` may).
        ARMED.store(false, Relaxed);
        let frame = crate::frames::here();
        crate::protocol::emit_budget(CASE.load(Relaxed), size, frame.as_deref());
        ARMED.store(true, Relaxed);
        false
    }

    fn grew(&self, size: usize) {
        let now = CURRENT.fetch_add(size, Relaxed) + size;
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's layout (whose contract the
// caller upholds) or returns null, which `GlobalAlloc` allows for any failed request.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !self.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= old {
                self.grew(new_size - old);
            } else {
                CURRENT.fetch_sub(old - new_size, Relaxed);
            }
        }
        p
    }
}

/// Sets the per-case budget in bytes.
pub fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Relaxed);
}

/// Starts counting case `case`: its peak is measured from here, and its requests are
/// checked against the budget.
pub fn arm(case: u64) {
    CASE.store(case, Relaxed);
    let now = CURRENT.load(Relaxed);
    BASE.store(now, Relaxed);
    PEAK.store(now, Relaxed);
    REFUSED.store(0, Relaxed);
    ARMED.store(true, Relaxed);
}

/// What one case used.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Highest live bytes above what was live at [`arm`].
    pub peak: usize,
    /// The largest request refused for the budget, if any.
    pub refused: Option<usize>,
}

/// Stops checking and returns the case's usage.
pub fn disarm() -> Usage {
    ARMED.store(false, Relaxed);
    let refused = REFUSED.load(Relaxed);
    Usage {
        peak: PEAK.load(Relaxed).saturating_sub(BASE.load(Relaxed)),
        refused: (refused > 0).then_some(refused),
    }
}
