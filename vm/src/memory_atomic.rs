//! Atomic accesses to linear memory, and `memory.atomic.wait`/`notify` (threads proposal).
//!
//! # Accesses
//!
//! Every atomic access is sequentially consistent (the threads proposal has one ordering) and goes
//! through Rust's atomic types on the mapping's bytes (`AtomicU32::from_ptr` and friends), so it is a
//! real `lock`-prefixed or naturally atomic machine access whichever thread runs it. An access is
//! checked in the reference interpreter's order: the effective address must be a multiple of the width
//! (`unaligned atomic`), then the bytes must be inside the memory (`out of bounds memory access`).
//! Atomics on a non-shared memory are valid Wasm and behave the same (only one thread can see them).
//!
//! # Wait and notify
//!
//! Each memory has its own [`WaitQueues`]: a map from byte address to the FIFO queue of the threads
//! waiting there, behind one mutex. The mutex is what makes `wait` and `notify` race-free against each
//! other: `wait` compares the expected value and enqueues itself under it, and `notify` dequeues under
//! it, so a notify that follows the store a waiter is waiting for always finds the waiter (no lost
//! wake-up). A waiter then blocks on its own condition variable, outside the queues' lock, so a notify
//! of one address never waits for threads parked at others. A timed-out waiter removes itself; if a
//! notify dequeued it first, the notify counted it, so it reports "woken" (0), as the spec asks.
//!
//! Waiting is blocking in the host: the VM marks the mutator native before it calls [`wait`] (a thread
//! blocked in `wait` must never hold up another thread's collection), see `interp::atomics`.

// `with_atomic!` instantiates each body at u8, u16, u32 and u64: the u64 instance's widening casts are
// identities, which is what the lint flags.
#![allow(clippy::unnecessary_cast)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::TrapKind;
use crate::bytecode::RmwOp;
use crate::memory::LinearMemory;

/// What `memory.atomic.wait` returned: Wasm's 0, 1 and 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    Woken = 0,
    NotEqual = 1,
    TimedOut = 2,
}

/// The index of an atomic access of `width` bytes at `at`, checked (alignment first, then bounds).
fn check(mem: &LinearMemory, at: u64, width: u64) -> Result<usize, TrapKind> {
    if !at.is_multiple_of(width) {
        return Err(TrapKind::UnalignedAtomic);
    }
    match at.checked_add(width) {
        Some(end) if end <= mem.len() as u64 => Ok(at as usize),
        _ => Err(TrapKind::MemoryOutOfBounds),
    }
}

/// Runs `$body` with `$a` bound to the atomic of `$width` bytes at byte index `$at` of `$mem`, and
/// `$v`'s type's conversions (`$to` from u64, results zero-extended back to u64).
macro_rules! with_atomic {
    ($mem:expr, $at:expr, $width:expr, |$a:ident, $t:ident| $body:expr) => {{
        let ptr = $mem.base().wrapping_add($at);
        match $width {
            1 => {
                // SAFETY: `check` put the byte inside the committed length, which stays mapped while the
                // memory lives; a 1-byte atomic has alignment 1. The bytes are only ever accessed through
                // raw pointers or atomics (see `LinearMemory`'s `Sync`).
                let $a = unsafe { AtomicU8::from_ptr(ptr) };
                #[allow(dead_code)] // Not every body converts.
                type $t = u8;
                $body
            }
            2 => {
                // SAFETY: as above; `check` verified 2-byte alignment of the offset and the base is
                // page-aligned.
                let $a = unsafe { AtomicU16::from_ptr(ptr.cast()) };
                #[allow(dead_code)] // Not every body converts.
                type $t = u16;
                $body
            }
            4 => {
                // SAFETY: as above, 4-byte alignment.
                let $a = unsafe { AtomicU32::from_ptr(ptr.cast()) };
                #[allow(dead_code)] // Not every body converts.
                type $t = u32;
                $body
            }
            _ => {
                // SAFETY: as above, 8-byte alignment (widths are 1, 2, 4 or 8).
                let $a = unsafe { AtomicU64::from_ptr(ptr.cast()) };
                #[allow(dead_code)] // Not every body converts.
                type $t = u64;
                $body
            }
        }
    }};
}

/// `*.atomic.load*`: the `width`-byte value at `at`, zero-extended.
pub fn load(mem: &LinearMemory, at: u64, width: u64) -> Result<u64, TrapKind> {
    let i = check(mem, at, width)?;
    Ok(with_atomic!(mem, i, width, |a, T| a.load(Ordering::SeqCst) as u64))
}

/// `*.atomic.store*`: writes the low `width` bytes of `value` at `at`.
pub fn store(mem: &LinearMemory, at: u64, width: u64, value: u64) -> Result<(), TrapKind> {
    let i = check(mem, at, width)?;
    with_atomic!(mem, i, width, |a, T| a.store(value as T, Ordering::SeqCst));
    Ok(())
}

/// `*.atomic.rmw*.<op>`: applies `op` with the low `width` bytes of `value`; returns the old value,
/// zero-extended.
pub fn rmw(mem: &LinearMemory, at: u64, width: u64, op: RmwOp, value: u64) -> Result<u64, TrapKind> {
    let i = check(mem, at, width)?;
    let old = with_atomic!(mem, i, width, |a, T| {
        let v = value as T;
        (match op {
            RmwOp::Add => a.fetch_add(v, Ordering::SeqCst),
            RmwOp::Sub => a.fetch_sub(v, Ordering::SeqCst),
            RmwOp::And => a.fetch_and(v, Ordering::SeqCst),
            RmwOp::Or => a.fetch_or(v, Ordering::SeqCst),
            RmwOp::Xor => a.fetch_xor(v, Ordering::SeqCst),
            RmwOp::Xchg => a.swap(v, Ordering::SeqCst),
        }) as u64
    });
    Ok(old)
}

/// `*.atomic.rmw*.cmpxchg*`: replaces the value with `replacement` if it equals `expected` (both
/// truncated to `width` bytes, as the spec wraps the expected operand); returns the old value.
pub fn cmpxchg(mem: &LinearMemory, at: u64, width: u64, expected: u64, replacement: u64) -> Result<u64, TrapKind> {
    let i = check(mem, at, width)?;
    let old = with_atomic!(mem, i, width, |a, T| {
        match a.compare_exchange(expected as T, replacement as T, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(v) | Err(v) => v as u64,
        }
    });
    Ok(old)
}

/// One blocked waiter.
#[derive(Default)]
struct Waiter {
    /// Set by `notify` (under the queues' lock, then signalled).
    woken: Mutex<bool>,
    cond: Condvar,
}

/// The threads waiting in one memory, by address; see the module comment.
#[derive(Default)]
pub struct WaitQueues {
    queues: Mutex<HashMap<u64, Vec<Arc<Waiter>>>>,
}

/// `memory.atomic.wait32/64`: if the `width`-byte value at `at` equals `expected`, blocks until
/// notified or until `timeout_ns` passes (negative: no timeout). Traps on a non-shared memory (no other
/// thread could ever notify) and on a bad address.
pub fn wait(mem: &LinearMemory, at: u64, width: u64, expected: u64, timeout_ns: i64) -> Result<WaitResult, TrapKind> {
    if !mem.is_shared() {
        return Err(TrapKind::WaitOnUnsharedMemory);
    }
    let i = check(mem, at, width)?;
    let waiter = {
        let mut queues = mem.wait_queues().queues.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, expected) =
            with_atomic!(mem, i, width, |a, T| (a.load(Ordering::SeqCst) as u64, expected as T as u64));
        if now != expected {
            return Ok(WaitResult::NotEqual);
        }
        let w = Arc::new(Waiter::default());
        queues.entry(at).or_default().push(w.clone());
        w
    };
    let deadline = u64::try_from(timeout_ns).ok().map(|ns| Instant::now() + Duration::from_nanos(ns));
    let mut woken = waiter.woken.lock().unwrap_or_else(PoisonError::into_inner);
    while !*woken {
        match deadline {
            None => woken = waiter.cond.wait(woken).unwrap_or_else(PoisonError::into_inner),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                woken = waiter.cond.wait_timeout(woken, left).unwrap_or_else(PoisonError::into_inner).0;
            }
        }
    }
    if *woken {
        return Ok(WaitResult::Woken);
    }
    drop(woken);
    // Timed out: leave the queue, unless a notify took us out (and counted us) in the meantime.
    let mut queues = mem.wait_queues().queues.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(q) = queues.get_mut(&at)
        && let Some(pos) = q.iter().position(|w| Arc::ptr_eq(w, &waiter))
    {
        q.remove(pos);
        if q.is_empty() {
            queues.remove(&at);
        }
        return Ok(WaitResult::TimedOut);
    }
    Ok(WaitResult::Woken)
}

/// `memory.atomic.notify`: wakes up to `count` threads waiting at `at`, oldest first; returns how many.
/// The address is checked as a 4-byte atomic access. On a non-shared memory nobody can wait: 0.
pub fn notify(mem: &LinearMemory, at: u64, count: u32) -> Result<u32, TrapKind> {
    check(mem, at, 4)?;
    if !mem.is_shared() || count == 0 {
        return Ok(0);
    }
    let mut queues = mem.wait_queues().queues.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(q) = queues.get_mut(&at) else { return Ok(0) };
    let n = q.len().min(count as usize);
    for w in q.drain(..n) {
        *w.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        w.cond.notify_one();
    }
    if q.is_empty() {
        queues.remove(&at);
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{WASM_PAGE_SIZE, default_reserve_bytes};

    fn shared() -> Arc<LinearMemory> {
        Arc::new(LinearMemory::new(1, Some(1), true, default_reserve_bytes()).unwrap())
    }

    #[test]
    fn accesses_check_alignment_before_bounds() {
        let m = shared();
        let end = WASM_PAGE_SIZE;
        assert_eq!(load(&m, 1, 4), Err(TrapKind::UnalignedAtomic));
        assert_eq!(load(&m, end + 1, 4), Err(TrapKind::UnalignedAtomic));
        assert_eq!(load(&m, end, 4), Err(TrapKind::MemoryOutOfBounds));
        assert_eq!(load(&m, end - 4, 8), Err(TrapKind::UnalignedAtomic));
        assert_eq!(load(&m, end - 8, 8), Ok(0));
        assert_eq!(load(&m, u64::MAX - 7, 8), Err(TrapKind::MemoryOutOfBounds));
    }

    #[test]
    fn rmw_and_cmpxchg_act_on_the_access_width_only() {
        let m = shared();
        store(&m, 8, 8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(rmw(&m, 8, 1, RmwOp::Add, 0x1_0000_0001).unwrap(), 0x88);
        assert_eq!(load(&m, 8, 8).unwrap(), 0x1122_3344_5566_7789);
        assert_eq!(rmw(&m, 12, 4, RmwOp::Xchg, 0xffff_ffff_0000_0001).unwrap(), 0x1122_3344);
        assert_eq!(load(&m, 8, 8).unwrap(), 0x0000_0001_5566_7789);
        // The expected operand is wrapped to the width: 0x1_7789 compares as 0x7789.
        assert_eq!(cmpxchg(&m, 8, 2, 0x1_7789, 0xabcd).unwrap(), 0x7789);
        assert_eq!(load(&m, 8, 2).unwrap(), 0xabcd);
        assert_eq!(cmpxchg(&m, 8, 2, 0x7789, 0).unwrap(), 0xabcd, "a failed exchange leaves the value");
        assert_eq!(rmw(&m, 16, 8, RmwOp::Sub, 1).unwrap(), 0);
        assert_eq!(load(&m, 16, 8).unwrap(), u64::MAX);
    }

    #[test]
    fn wait_compares_times_out_and_traps_on_unshared_memory() {
        let m = shared();
        store(&m, 0, 4, 7).unwrap();
        assert_eq!(wait(&m, 0, 4, 8, -1), Ok(WaitResult::NotEqual));
        assert_eq!(wait(&m, 0, 4, 7, 0), Ok(WaitResult::TimedOut));
        assert_eq!(wait(&m, 0, 4, 7, 1_000_000), Ok(WaitResult::TimedOut));
        assert_eq!(wait(&m, 2, 4, 7, 0), Err(TrapKind::UnalignedAtomic));
        let private = LinearMemory::new(1, Some(1), false, default_reserve_bytes()).unwrap();
        assert_eq!(wait(&private, 0, 4, 0, 0), Err(TrapKind::WaitOnUnsharedMemory));
        assert_eq!(notify(&private, 0, 1), Ok(0));
        assert!(m.wait_queues().queues.lock().unwrap().is_empty(), "timed-out waiters leave their queue");
    }

    #[test]
    fn notify_wakes_waiters_in_order_and_counts_them() {
        let m = shared();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || wait(&m, 64, 8, 0, -1))
            })
            .collect();
        // Wait until all three are queued (they enqueue under the lock notify takes).
        while m.wait_queues().queues.lock().unwrap().get(&64).map_or(0, Vec::len) < 3 {
            std::thread::yield_now();
        }
        assert_eq!(notify(&m, 64, 2), Ok(2));
        assert_eq!(notify(&m, 60, 5), Ok(0), "another address wakes nobody");
        assert_eq!(notify(&m, 64, u32::MAX), Ok(1));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(WaitResult::Woken));
        }
        assert_eq!(notify(&m, 64, 1), Ok(0));
    }
}
