//! Many threads at once: the detector's state stays bounded by live memory under the seed's leak pattern,
//! race-free programs report nothing, and a real race is found whatever the interleaving.
//! Negative controls: `VMRACE_DEBUG=keep-on-free` fails the bound; `ignore-acquire` fails the mutex test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use vmrace::AccessKind::{AtomicRead, AtomicWrite, Read, Write};
use vmrace::{Detector, Site, ThreadCtx};

const THREADS: usize = 8;

fn spawn_all(det: &Detector, main: &mut ThreadCtx) -> Vec<ThreadCtx> {
    (0..THREADS).map(|_| det.spawn(main)).collect()
}

/// Go's BenchmarkSyncLeak in miniature: each thread allocates a fresh object, does atomics on it (each
/// creating a sync object), and the sweep frees it. Live state must stay at one object per thread.
#[test]
fn atomics_on_fresh_objects_then_freed_stay_bounded() {
    const ITERS: u64 = 3_000;
    const OBJ: u64 = 64;
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut ctxs = spawn_all(&det, &mut main);
    let peak_sync = AtomicU64::new(0);
    let peak_granules = AtomicU64::new(0);
    thread::scope(|s| {
        for (t, ctx) in ctxs.iter_mut().enumerate() {
            let (det, peak_sync, peak_granules) = (&det, &peak_sync, &peak_granules);
            s.spawn(move || {
                for i in 0..ITERS {
                    let base = 0x1_0000_0000 + (t as u64 * ITERS + i) * OBJ;
                    det.reset_range(base, OBJ);
                    for word in 0..OBJ / 8 {
                        let addr = base + word * 8;
                        det.access(ctx, addr, 8, AtomicWrite, Site(1));
                        det.acq_rel(ctx, addr);
                        det.access(ctx, addr, 8, AtomicRead, Site(2));
                        det.acquire(ctx, addr);
                    }
                    if i % 500 == 0 {
                        let stats = det.stats();
                        peak_sync.fetch_max(stats.live_sync_objects as u64, Ordering::Relaxed);
                        peak_granules.fetch_max(stats.shadow_granules as u64, Ordering::Relaxed);
                    }
                    det.free_range(ctx, base, OBJ);
                }
            });
        }
    });
    let live_bound = (THREADS as u64) * OBJ / 8;
    let (sync, granules) = (peak_sync.into_inner(), peak_granules.into_inner());
    assert!(sync <= live_bound && granules <= live_bound, "peak sync {sync}, granules {granules} > {live_bound}");
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules, stats.races), (0, 0, 0), "{stats:?}");
}

/// A counter behind a real mutex, with the lock word's release/acquire reported: never a race, though
/// every thread writes the same bytes.
#[test]
fn mutex_protected_counter_is_race_free() {
    const LOCK: u64 = 0x9000;
    const COUNTER: u64 = 0x9008;
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut ctxs = spawn_all(&det, &mut main);
    let mutex = Mutex::new(0u64);
    thread::scope(|s| {
        for ctx in ctxs.iter_mut() {
            let (det, mutex) = (&det, &mutex);
            s.spawn(move || {
                for _ in 0..2_000 {
                    let mut guard = mutex.lock().expect("no panics under the lock");
                    det.acq_rel(ctx, LOCK); // the compare-and-swap that took the lock
                    assert!(det.access(ctx, COUNTER, 8, Read, Site(1)).is_none());
                    *guard += 1;
                    assert!(det.access(ctx, COUNTER, 8, Write, Site(2)).is_none());
                    det.release(ctx, LOCK); // the store that frees it
                }
            });
        }
    });
    assert_eq!(*mutex.lock().expect("lock"), THREADS as u64 * 2_000);
    assert_eq!(det.stats().races, 0);
}

/// Smoke test: private data, data written before the spawn and only read after, and one racy word, all
/// at once on eight threads. Only the racy word may be reported, and it must be.
#[test]
fn concurrent_mix_reports_exactly_the_racy_word() {
    const SHARED: u64 = 0x2_0000;
    const RACY: u64 = 0x3_0000;
    let det = Detector::new();
    let mut main = det.main_thread();
    for i in 0..64 {
        det.access(&mut main, SHARED + i * 8, 8, Write, Site(100));
    }
    let mut ctxs = spawn_all(&det, &mut main);
    let barrier = Barrier::new(THREADS);
    let racy_reports = thread::scope(|s| {
        let handles: Vec<_> = ctxs
            .iter_mut()
            .enumerate()
            .map(|(t, ctx)| {
                let (det, barrier) = (&det, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let private = 0x10_0000 * (t as u64 + 1);
                    let mut races = Vec::new();
                    for round in 0..500u64 {
                        races.extend(det.access(ctx, private + (round % 32) * 4, 4, Write, Site(200)));
                        races.extend(det.access(ctx, SHARED + (round % 64) * 8, 8, Read, Site(300)));
                        if round % 50 == 0 {
                            races.extend(det.access(ctx, RACY + 3, 2, Write, Site(400 + t as u64)));
                        }
                    }
                    races
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("worker")).collect::<Vec<_>>()
    });
    assert!(!racy_reports.is_empty(), "eight unordered writers to one word must race");
    for race in &racy_reports {
        assert_eq!((race.current.addr, race.previous.addr), (RACY + 3, RACY + 3), "{race:?}");
        assert_ne!(race.current.thread, race.previous.thread);
    }
}

/// Stats read concurrently with accesses, frees and sync never deadlock or see negative counts.
#[test]
fn stats_frees_and_accesses_interleave_freely() {
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut ctxs = spawn_all(&det, &mut main);
    thread::scope(|s| {
        for (t, ctx) in ctxs.iter_mut().enumerate() {
            let det = &det;
            s.spawn(move || {
                for i in 0..2_000u64 {
                    // Overlapping windows, so frees hit pages other threads are using.
                    let addr = (i * 24 + t as u64 * 8) % 8192;
                    det.access(ctx, addr, 8, AtomicWrite, Site(1));
                    det.release(ctx, addr);
                    if i % 64 == 0 {
                        det.free_range(ctx, addr.saturating_sub(512), 1024);
                        det.stats();
                    }
                }
            });
        }
    });
    det.free_range(&main, 0, 8192);
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules), (0, 0));
}
