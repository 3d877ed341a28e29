//! The trace clock: nanoseconds since the tracer started, read once per event.
//!
//! Reading `Instant::now()` costs about 40 ns on the machines we measured (a VM), more than the rest of an
//! event. Where the CPU has an invariant time-stamp counter (x86_64 with `constant_tsc` and `nonstop_tsc`,
//! as Linux reports them), the clock reads the TSC instead (about 14 ns) and scales ticks to nanoseconds
//! with a factor measured against `Instant`: first over ~1 ms when the tracer starts, then again over the
//! whole run at every generation switch. A recalibration rebases the mapping at the current time, so the
//! clock stays continuous and never goes back. Elsewhere it falls back to `Instant`. Tests use a manual
//! clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) enum Clock {
    Manual(Arc<AtomicU64>),
    Monotonic(Instant),
    #[cfg(target_arch = "x86_64")]
    Tsc(Tsc),
}

impl Clock {
    pub(crate) fn new(manual: Option<Arc<AtomicU64>>) -> Clock {
        if let Some(m) = manual {
            return Clock::Manual(m);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(tsc) = Tsc::calibrate() {
            return Clock::Tsc(tsc);
        }
        Clock::Monotonic(Instant::now())
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::Manual(m) => m.load(Ordering::Relaxed),
            Clock::Monotonic(start) => start.elapsed().as_nanos() as u64,
            #[cfg(target_arch = "x86_64")]
            Clock::Tsc(tsc) => tsc.now(),
        }
    }

    /// Refines the tick rate over the whole run. Call only while no other thread reads the clock (the
    /// tracer calls it with every slot held).
    pub(crate) fn recalibrate(&self) {
        #[cfg(target_arch = "x86_64")]
        if let Clock::Tsc(tsc) = self {
            tsc.recalibrate();
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Clock::Manual(_) => "manual",
            Clock::Monotonic(_) => "monotonic",
            #[cfg(target_arch = "x86_64")]
            Clock::Tsc(_) => "tsc",
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads the time-stamp counter; it has no operands and no preconditions on x86_64
    // (every x86_64 CPU has it), it only reads a register.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// `ns = anchor_ns + (tsc − anchor_tsc) × mult / 2^32`.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tsc {
    start: Instant,
    start_tsc: u64,
    anchor_tsc: AtomicU64,
    anchor_ns: AtomicU64,
    /// Nanoseconds per tick, in 32.32 fixed point.
    mult: AtomicU64,
}

#[cfg(target_arch = "x86_64")]
impl Tsc {
    fn invariant() -> bool {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines().find(|l| l.starts_with("flags")).is_some_and(|flags| {
                let words: Vec<&str> = flags.split_whitespace().collect();
                words.contains(&"constant_tsc") && words.contains(&"nonstop_tsc")
            })
        })
    }

    fn mult(ticks: u64, ns: u64) -> Option<u64> {
        // Between 0.1 and 10 ticks per ns, or the counter is not what we think it is.
        if ticks == 0 || ns == 0 || ticks < ns / 10 || ticks > ns.saturating_mul(10) {
            return None;
        }
        Some(((u128::from(ns) << 32) / u128::from(ticks)) as u64)
    }

    fn calibrate() -> Option<Tsc> {
        if !Self::invariant() {
            return None;
        }
        let (start, start_tsc) = (Instant::now(), rdtsc());
        let mut el;
        loop {
            el = start.elapsed();
            if el >= Duration::from_millis(1) {
                break;
            }
            std::hint::spin_loop();
        }
        let ticks = rdtsc().wrapping_sub(start_tsc);
        let mult = Self::mult(ticks, el.as_nanos() as u64)?;
        Some(Tsc {
            start,
            start_tsc,
            anchor_tsc: AtomicU64::new(start_tsc),
            anchor_ns: AtomicU64::new(0),
            mult: AtomicU64::new(mult),
        })
    }

    #[inline]
    fn now(&self) -> u64 {
        let anchor_tsc = self.anchor_tsc.load(Ordering::Relaxed);
        let ticks = rdtsc().saturating_sub(anchor_tsc);
        let ns = (u128::from(ticks) * u128::from(self.mult.load(Ordering::Relaxed))) >> 32;
        self.anchor_ns.load(Ordering::Relaxed) + ns as u64
    }

    fn recalibrate(&self) {
        let (now_tsc, elapsed) = (rdtsc(), self.start.elapsed().as_nanos() as u64);
        let Some(mult) = Self::mult(now_tsc.wrapping_sub(self.start_tsc), elapsed) else { return };
        // Rebase at the current reading so the clock neither jumps nor goes back.
        let now_ns = self.now();
        self.anchor_tsc.store(now_tsc, Ordering::Relaxed);
        self.anchor_ns.store(now_ns, Ordering::Relaxed);
        self.mult.store(mult, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_follows_instant_and_never_goes_back() {
        let clock = Clock::new(None);
        let start = Instant::now();
        let t0 = clock.now();
        let mut last = t0;
        while start.elapsed() < Duration::from_millis(20) {
            let t = clock.now();
            assert!(t >= last);
            last = t;
        }
        clock.recalibrate();
        assert!(clock.now() >= last);
        let measured = clock.now() - t0;
        let real = start.elapsed().as_nanos() as u64;
        // Within 20 % over 20 ms (generous: the machine is shared).
        assert!(measured > real * 8 / 10 && measured < real * 12 / 10, "{} clock: {measured} vs {real}", clock.name());
    }
}
