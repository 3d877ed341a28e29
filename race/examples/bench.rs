//! Micro-benchmark of the detector's hot paths: `cargo run --release -p vmrace --example bench`.
//! Prints nanoseconds per call for each case (best of three runs, to damp noise from other processes).

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use vmrace::AccessKind::{AtomicWrite, Read, Write};
use vmrace::{Detector, Site};

const ARRAY: u64 = 64 * 1024;

/// A named benchmark returning nanoseconds per call.
type Case = (&'static str, fn() -> f64);

fn best_of_three(mut run: impl FnMut() -> f64) -> f64 {
    (0..3).map(|_| run()).fold(f64::INFINITY, f64::min)
}

fn per_call(start: Instant, calls: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// One thread writing the same word again and again: the same-epoch fast path.
fn same_word_rewrite() -> f64 {
    let det = Detector::new();
    let mut t = det.main_thread();
    let n = 5_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(det.access(&mut t, 0x1000, 8, Write, Site(1)));
    }
    per_call(start, n)
}

/// One thread sweeping its own 64 KiB array of 4-byte elements (thread-local data, already shadowed).
fn thread_local_array() -> f64 {
    let det = Detector::new();
    let mut t = det.main_thread();
    let touch = |t: &mut _| {
        (0..ARRAY).step_by(4).for_each(|a| {
            black_box(det.access(t, a, 4, Write, Site(1)));
        })
    };
    touch(&mut t);
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        touch(&mut t);
    }
    per_call(start, rounds * ARRAY / 4)
}

/// Two threads reading the same 64 KiB, written by main before the spawn: read-shared data, each granule
/// holding one cell per reader; both threads run at once (ns per access per thread).
fn read_shared() -> f64 {
    let det = Detector::new();
    let mut main = det.main_thread();
    (0..ARRAY).step_by(8).for_each(|a| {
        det.access(&mut main, a, 8, Write, Site(1));
    });
    let mut readers = [det.spawn(&mut main), det.spawn(&mut main)];
    let barrier = Barrier::new(2);
    let rounds = 50;
    let times: Vec<f64> = thread::scope(|s| {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|r| {
                let (det, barrier) = (&det, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..rounds {
                        (0..ARRAY).step_by(8).for_each(|a| {
                            black_box(det.access(r, a, 8, Read, Site(2)));
                        });
                    }
                    per_call(start, rounds * ARRAY / 8)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).collect()
    });
    times.iter().sum::<f64>() / times.len() as f64
}

/// First touch of fresh memory: each access creates a granule (and every 64th a page).
fn first_touch() -> f64 {
    let det = Detector::new();
    let mut t = det.main_thread();
    let n = 1_000_000;
    let start = Instant::now();
    for i in 0..n {
        black_box(det.access(&mut t, 0x100_0000 + i * 8, 8, Write, Site(1)));
    }
    per_call(start, n)
}

/// An atomic read-modify-write as the VM reports it: the shadow mark plus an acquire-release.
fn atomic_rmw() -> f64 {
    let det = Detector::new();
    let mut t = det.main_thread();
    let n = 2_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(det.access(&mut t, 0x2000, 4, AtomicWrite, Site(1)));
        det.acq_rel(&mut t, 0x2000);
    }
    per_call(start, n)
}

/// The seed's pattern for one 64-byte object: reset on allocation, one atomic (a sync object), freed.
fn object_lifecycle() -> f64 {
    let det = Detector::new();
    let mut t = det.main_thread();
    let n = 500_000;
    let start = Instant::now();
    for i in 0..n {
        let base = 0x1_0000_0000 + i * 64;
        det.reset_range(base, 64);
        black_box(det.access(&mut t, base + 8, 8, AtomicWrite, Site(1)));
        det.acq_rel(&mut t, base + 8);
        det.free_range(&t, base, 64);
    }
    let ns = per_call(start, n);
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules), (0, 0));
    ns
}

fn main() {
    let cases: [Case; 6] = [
        ("same word rewritten (same epoch)", same_word_rewrite),
        ("thread-local 64 KiB array, 4-byte writes", thread_local_array),
        ("read-shared 64 KiB, 2 reader threads at once", read_shared),
        ("first touch of fresh memory", first_touch),
        ("atomic rmw (access + acq_rel)", atomic_rmw),
        ("object reset + atomic + free (64 B)", object_lifecycle),
    ];
    for (name, case) in cases {
        println!("{name:<48} {:>7.1} ns/op", best_of_three(case));
    }
}
