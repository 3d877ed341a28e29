//! Cost of the tracer.
//!
//! 1. Synthetic: N million heap events (allocations in address order across a few shapes, then sweeps that
//!    free about two thirds of them in address order) fed straight into `Tracer`'s observer methods, to an
//!    in-memory sink and to a buffered file: ns per event and bytes per event.
//! 2. Real heap: binary trees on `gc::Heap` (depth 16, collections between iterations), without an observer
//!    and with the tracer attached (writing a file): the time ratio.
//!
//! `cargo run --release -p vmtrace --example bench -- [millions of events, default 10]`

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use gc::observer::{GcBeginInfo, GcEndInfo, HeapObserver, ObjectInfo, ObserverCtx};
use gc::{Heap, HeapConfig, Layout, ObjRef, ThreadCache};
use vmtrace::{EmptyHeap, StoppedHeap, TraceConfig, Tracer};

/// Counts bytes, keeps none.
struct Count(Arc<std::sync::atomic::AtomicU64>);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `n` events; returns how many it fed.
fn feed(tracer: &Tracer, n: u64) -> u64 {
    let ctx = ObserverCtx::new(1);
    let base = 0x7f00_0000_0000usize;
    let mut events = 0u64;
    let mut cycle = 0;
    let mut live: Vec<ObjectInfo> = Vec::with_capacity(1 << 20);
    let mut next = base;
    while events < n {
        // A burst of allocations: runs of one shape, as an interpreter allocating in a loop does.
        for run in 0..64 {
            let (size, type_id) = [(32, 1), (48, 2), (16, 3)][run % 3];
            tracer.set_current_site(1, (run % 5) as u32 + 1);
            for _ in 0..256 {
                let obj = ObjectInfo { addr: next, size, bytes: 0, type_id, len: 0 };
                tracer.object_alloc(&ctx, &obj);
                live.push(obj);
                next += size;
                events += 1;
            }
        }
        // A collection: two thirds die, swept in address order.
        cycle += 1;
        tracer.gc_begin(&ctx, &GcBeginInfo { cycle, heap_bytes: 0 });
        let mut kept = Vec::with_capacity(live.len());
        for (i, obj) in live.drain(..).enumerate() {
            if i % 3 != 0 {
                tracer.object_free(&ctx, &obj);
                events += 1;
            } else {
                kept.push(obj);
            }
        }
        live = kept;
        let live_bytes = live.iter().map(|o| o.size).sum();
        tracer.gc_end(
            &ctx,
            &GcEndInfo {
                cycle,
                live_bytes,
                live_objects: live.len(),
                freed_bytes: 0,
                freed_objects: 0,
                heap_bytes: 0,
                next_gc_bytes: 0,
                pause: std::time::Duration::ZERO,
            },
        );
        events += 2;
        if live.len() > 1 << 19 {
            // Keep the working set bounded: everything dies.
            cycle += 1;
            tracer.gc_begin(&ctx, &GcBeginInfo { cycle, heap_bytes: 0 });
            for obj in live.drain(..) {
                tracer.object_free(&ctx, &obj);
                events += 1;
            }
            events += 1;
        }
        tracer.maybe_advance_generation(&EmptyHeap);
    }
    events
}

fn synthetic(millions: u64) {
    let n = millions * 1_000_000;
    let config = TraceConfig { check_reentrancy: false, ..TraceConfig::default() };
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tracer = Tracer::new(Box::new(Count(bytes.clone())), config.clone());
    let t = Instant::now();
    let events = feed(&tracer, n);
    let stats = tracer.finish().unwrap();
    let el = t.elapsed();
    println!(
        "synthetic, memory sink: {events} events in {:.3} s = {:.1} ns/event, {:.2} bytes/event ({} bytes, {} generations)",
        el.as_secs_f64(),
        el.as_nanos() as f64 / events as f64,
        stats.bytes as f64 / stats.events as f64,
        stats.bytes,
        stats.generations
    );
    // Same feed without tracing work: the loop's own cost.
    let null = NullObserver;
    let t = Instant::now();
    let ctx = ObserverCtx::new(1);
    let mut x = 0usize;
    for i in 0..events as usize {
        null.object_alloc(
            &ctx,
            &std::hint::black_box(ObjectInfo { addr: i * 8, size: 32, bytes: 0, type_id: 1, len: 0 }),
        );
        x = x.wrapping_add(i);
    }
    std::hint::black_box(x);
    println!("  (an empty observer call: {:.1} ns/event)", t.elapsed().as_nanos() as f64 / events as f64);

    let path = std::env::temp_dir().join("vmtrace-bench.trace");
    let tracer = Tracer::create(&path, config).unwrap();
    let t = Instant::now();
    let events = feed(&tracer, n);
    let stats = tracer.finish().unwrap();
    let el = t.elapsed();
    println!(
        "synthetic, file sink:   {events} events in {:.3} s = {:.1} ns/event, {:.2} bytes/event, file {}",
        el.as_secs_f64(),
        el.as_nanos() as f64 / events as f64,
        stats.bytes as f64 / stats.events as f64,
        path.display()
    );
    let t = Instant::now();
    let summary = vmtrace::summary(&path).unwrap();
    println!("  summary of it: {:.3} s ({} lines)", t.elapsed().as_secs_f64(), summary.lines().count());
}

struct NullObserver;
impl HeapObserver for NullObserver {}

const PAIR: u32 = 1;

fn tree(heap: &Heap, cache: &mut ThreadCache, depth: u32) -> ObjRef {
    let node = heap.alloc_struct(cache, PAIR, false).unwrap();
    if depth > 1 {
        let l = tree(heap, cache, depth - 1);
        let r = tree(heap, cache, depth - 1);
        node.store_u64(8, l.raw());
        node.store_u64(16, r.raw());
    }
    node
}

/// Binary trees on the real heap; returns (seconds, objects allocated).
fn binary_trees(tracer: Option<&Arc<Tracer>>, null: bool) -> (f64, u64) {
    let heap = Heap::new(HeapConfig::default());
    heap.register_type(PAIR, Layout::Struct { size: 24, ref_offsets: Box::new([8, 16]) });
    if null {
        heap.add_observer(Arc::new(NullObserver));
    }
    if let Some(t) = tracer {
        heap.add_observer(t.clone());
        t.define_type(PAIR, "$tree", 32);
    }
    let mut cache = heap.new_thread_cache();
    let link = heap.register_mutator();
    let long_lived = tree(&heap, &mut cache, 16);
    let mut roots = vec![long_lived.raw()];
    let t = Instant::now();
    let mut objects = 0u64;
    for i in 0..40 {
        let depth = 4 + (i % 7) * 2;
        for _ in 0..(1 << (16 - depth + 4)) {
            std::hint::black_box(tree(&heap, &mut cache, depth as u32));
            objects += (1 << depth) - 1;
        }
        let world = heap.stop_the_world(&link, &mut roots).expect("the only mutator");
        heap.collect(&world, &mut cache, &mut roots);
        if let Some(t) = tracer {
            t.maybe_advance_generation(&StoppedHeap { heap: &heap, world: &world });
        }
    }
    roots.clear();
    (t.elapsed().as_secs_f64(), objects)
}

fn main() {
    let millions = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    synthetic(millions);
    let (off, objects) = binary_trees(None, false);
    let (null, _) = binary_trees(None, true);
    let path = std::env::temp_dir().join("vmtrace-bench-bt.trace");
    let tracer = Tracer::create(&path, TraceConfig { check_reentrancy: false, ..TraceConfig::default() }).unwrap();
    let (on, _) = binary_trees(Some(&tracer), false);
    let stats = tracer.finish().unwrap();
    println!(
        "gc::Heap binary trees ({objects} objects): off {off:.3} s, empty observer {null:.3} s ({:.2}x), tracing {on:.3} s \
         ({:.2}x; {:.1} ns per event over the empty observer); {} events, {:.2} bytes/event, {} generations, {} clock",
        null / off,
        on / off,
        (on - null) * 1e9 / stats.events as f64,
        stats.events,
        stats.bytes as f64 / stats.events as f64,
        stats.generations,
        stats.clock
    );
}
