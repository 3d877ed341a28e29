//! The heap's policy ([`HeapConfig`]) and what an allocation can fail with ([`AllocError`]).

use std::fmt;

use crate::inject::InjectedBug;

/// Objects larger than this are refused with `OutOfMemory` without asking the OS (1 TiB).
pub const MAX_OBJECT_BYTES: usize = 1 << 40;

/// Heap policy and debug switches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapConfig {
    /// GOGC: the next collection is due when the heap reaches `live_after_last_gc × (1 + gc_percent/100)`.
    /// `None` turns pacing off (collections happen only when `max_heap_bytes` is reached or the VM calls
    /// `collect` on its own). Default `Some(100)`.
    pub gc_percent: Option<u32>,
    /// The pacing goal never drops below this, so a small live set does not collect constantly.
    /// Default 4 MiB.
    pub min_heap_bytes: usize,
    /// Hard limit on the bytes held by in-use spans. An allocation that would exceed it asks for a
    /// collection first and then fails with [`AllocError::OutOfMemory`]. Default `None`.
    pub max_heap_bytes: Option<usize>,
    /// Debug: ask for a collection every N allocations that may collect (1 = before every one of them).
    pub stress_every: Option<u64>,
    /// Debug: check the heap after marking and after sweeping (see `collect.rs`); panics on a violation.
    pub verify: bool,
    /// Describe the heap to Memcheck when the process runs under Valgrind (see `memcheck.rs`): checked once,
    /// in [`crate::Heap::new`]; natively it costs nothing. Also turns on the sweep's quarantine. Default `true`.
    pub valgrind: bool,
    /// Test only: plant a collector bug (negative controls; see [`InjectedBug`]).
    pub inject: Option<InjectedBug>,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            gc_percent: Some(100),
            min_heap_bytes: 4 << 20,
            max_heap_bytes: None,
            stress_every: None,
            verify: false,
            valgrind: true,
            inject: None,
        }
    }
}

/// Why an allocation did not return an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The pacer (or stress mode, or the heap limit) wants a collection first. Only returned when the caller
    /// passed `may_collect = true`: collect, then retry with `may_collect = false`.
    CollectionNeeded,
    /// The allocation cannot be satisfied even after a collection. `limit` is the configured maximum heap
    /// size, or, when the OS refused memory (or the object is absurdly large) and no limit is set, the heap
    /// size reached at that point.
    OutOfMemory { limit: usize },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::CollectionNeeded => write!(f, "a garbage collection is needed before this allocation"),
            AllocError::OutOfMemory { limit } => write!(f, "out of memory: heap limit {} reached", human_bytes(*limit)),
        }
    }
}

impl std::error::Error for AllocError {}

/// `64 MiB`, `1.5 GiB`, `12345 bytes`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if n >= unit {
            return if n.is_multiple_of(unit) {
                format!("{} {name}", n / unit)
            } else {
                format!("{:.1} {name}", n as f64 / unit as f64)
            };
        }
    }
    format!("{n} bytes")
}
