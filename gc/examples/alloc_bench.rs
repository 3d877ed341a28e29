//! Allocation micro-benchmark: binary-trees-like allocation with and without observers attached, so the
//! claim "no observer = unmeasurable cost" can be checked.
//!
//! Run: `cargo run -p gc --release --example alloc_bench [max_depth] [only]` (default 18; `only` runs just
//! the configurations whose name contains it, e.g. `none`, `no-op`, `counting`).
//!
//! Each configuration runs the binary-trees shape (a long-lived tree of `max_depth`, then
//! `2^(max_depth - d + 4)` short-lived trees of depth d for d = 4, 6, …, max_depth) through the same
//! allocation protocol the VM uses (`may_collect = true`, stop the world, collect with the roots, retry),
//! with the tree under construction rooted in a shadow stack, and a plain churn loop of 20 M unreachable
//! structs (with the default 4 MiB heap floor, and with a 256 KiB floor that keeps the churn inside the CPU
//! caches). Last, the cost of stopping and releasing the world with a single mutator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gc::observer::{ObjectInfo, ObserverCtx};
use gc::{AllocError, Heap, HeapConfig, HeapObserver, Layout, MutatorLink, ObjRef, ThreadCache};

/// `struct Node { left: ref, right: ref }`
const NODE: u32 = 1;

/// Does nothing: measures the cost of the instrumented path itself.
struct NoopObserver;
impl HeapObserver for NoopObserver {}

/// Counts allocations and frees with relaxed atomics: a cheap but real observer.
#[derive(Default)]
struct CountingObserver {
    allocs: AtomicU64,
    frees: AtomicU64,
}
impl HeapObserver for CountingObserver {
    fn object_alloc(&self, _ctx: &ObserverCtx, _obj: &ObjectInfo) {
        self.allocs.fetch_add(1, Ordering::Relaxed);
    }
    fn object_free(&self, _ctx: &ObserverCtx, _obj: &ObjectInfo) {
        self.frees.fetch_add(1, Ordering::Relaxed);
    }
}

struct Mutator<'h> {
    heap: &'h Heap,
    cache: ThreadCache,
    link: MutatorLink,
    /// Shadow stack: every reference the "program" holds.
    roots: Vec<u64>,
}

impl<'h> Mutator<'h> {
    fn new(heap: &'h Heap) -> Self {
        Mutator { heap, cache: heap.new_thread_cache(), link: heap.register_mutator(), roots: Vec::new() }
    }

    #[inline]
    fn alloc(&mut self) -> ObjRef {
        match self.heap.alloc_struct(&mut self.cache, NODE, true) {
            Ok(o) => o,
            Err(AllocError::CollectionNeeded) => {
                let world = self.heap.stop_the_world(&self.link, &mut self.roots).expect("the only mutator");
                self.heap.collect(&world, &mut self.cache, &mut self.roots);
                drop(world);
                self.heap.alloc_struct(&mut self.cache, NODE, false).expect("heap exhausted")
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn tree(&mut self, depth: u32) -> u64 {
        let node = self.alloc();
        if depth > 0 {
            self.roots.push(node.raw());
            let l = self.tree(depth - 1);
            // SAFETY: `node` is rooted on the shadow stack, so it survived any collection.
            let n = unsafe { ObjRef::from_raw(*self.roots.last().unwrap()) };
            n.store_u64(8, l);
            let r = self.tree(depth - 1);
            n.store_u64(16, r);
            self.roots.pop();
            n.raw()
        } else {
            node.raw()
        }
    }
}

fn check(raw: u64) -> u64 {
    // SAFETY: called only on rooted trees (or right after building, before any allocation).
    let o = unsafe { ObjRef::from_raw(raw) };
    let l = o.load_u64(8);
    if l == 0 { 1 } else { 1 + check(l) + check(o.load_u64(16)) }
}

/// Returns (allocations, seconds, stats).
fn binary_trees(heap: &Heap, max_depth: u32) -> (u64, f64, gc::GcStats) {
    let mut m = Mutator::new(heap);
    let start = Instant::now();
    let mut nodes = 0;
    let long_lived = m.tree(max_depth);
    m.roots.push(long_lived);
    nodes += (1u64 << (max_depth + 1)) - 1;
    let mut depth = 4;
    while depth <= max_depth {
        let iterations = 1u64 << (max_depth - depth + 4);
        let mut sum = 0;
        for _ in 0..iterations {
            let t = m.tree(depth);
            sum += check(t);
        }
        nodes += iterations * ((1u64 << (depth + 1)) - 1);
        assert_eq!(sum, iterations * ((1u64 << (depth + 1)) - 1));
        depth += 2;
    }
    assert_eq!(check(long_lived), (1u64 << (max_depth + 1)) - 1);
    (nodes, start.elapsed().as_secs_f64(), heap.stats())
}

/// Allocates `n` structs that die at once. Returns seconds.
fn churn(heap: &Heap, n: u64) -> f64 {
    let mut m = Mutator::new(heap);
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(m.alloc());
    }
    start.elapsed().as_secs_f64()
}

/// Stops and releases the world `n` times with one mutator: what a single-threaded program pays per
/// collection for the hand-off. Returns ns per stop.
fn stop_and_release(n: u64) -> f64 {
    let heap = new_heap();
    let link = heap.register_mutator();
    let mut roots = Vec::new();
    let start = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(heap.stop_the_world(&link, &mut roots)));
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// Attaches a configuration's observers to a fresh heap.
type AttachObservers = fn(&Heap);

fn new_heap() -> Heap {
    new_heap_with(HeapConfig::default())
}

fn new_heap_with(config: HeapConfig) -> Heap {
    let heap = Heap::new(config);
    heap.register_type(NODE, Layout::Struct { size: 16, ref_offsets: Box::new([8, 16]) });
    heap
}

fn main() {
    let max_depth: u32 = std::env::args().nth(1).map(|a| a.parse().expect("max_depth")).unwrap_or(18);
    const CHURN: u64 = 20_000_000;
    println!("binary-trees max_depth={max_depth}; churn {CHURN} structs; 24-byte objects; best of 3 runs");
    let configs: [(&str, AttachObservers); 3] = [
        ("none (no observer)", |_| {}),
        ("no-op observer", |h| h.add_observer(Arc::new(NoopObserver))),
        ("counting observer", |h| h.add_observer(Arc::new(CountingObserver::default()))),
    ];
    let only = std::env::args().nth(2).unwrap_or_default();
    for (name, attach) in configs.into_iter().filter(|(name, _)| name.contains(&only)) {
        let mut best_bt = f64::MAX;
        let mut best_churn = f64::MAX;
        let mut best_small = f64::MAX;
        let mut last = None;
        for _ in 0..3 {
            let heap = new_heap();
            attach(&heap);
            let (n, secs, stats) = binary_trees(&heap, max_depth);
            best_bt = best_bt.min(secs * 1e9 / n as f64);
            last = Some((n, stats));
            let heap = new_heap();
            attach(&heap);
            best_churn = best_churn.min(churn(&heap, CHURN) * 1e9 / CHURN as f64);
            // The same churn in a 256 KiB heap, which stays in the CPU caches: closer to the pure
            // instruction cost of the fast path (plus a collection every ~11k allocations).
            let heap = new_heap_with(HeapConfig { min_heap_bytes: 256 << 10, ..HeapConfig::default() });
            attach(&heap);
            best_small = best_small.min(churn(&heap, CHURN) * 1e9 / CHURN as f64);
        }
        let (n, s) = last.unwrap();
        println!(
            "{name:>18}: binary-trees {best_bt:5.1} ns/alloc ({n} allocs, {} GCs, max pause {:.2} ms, total pause {:.0} ms, peak heap {} MiB) | churn {best_churn:5.1} ns/alloc | churn in 256 KiB heap {best_small:5.1} ns/alloc",
            s.collections,
            s.max_pause.as_secs_f64() * 1e3,
            s.total_pause.as_secs_f64() * 1e3,
            s.peak_heap_bytes >> 20
        );
    }
    println!("stop the world + release, one mutator: {:.1} ns", stop_and_release(1_000_000));
    if let Some(hwm) = gc::peak_resident_bytes() {
        println!("peak resident memory of the process: {} MiB", hwm >> 20);
    }
}
