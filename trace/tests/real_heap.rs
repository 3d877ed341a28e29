//! The tracer on the real `gc::Heap`: binary trees built and collected by one and by several threads (the
//! others native, their roots published, while one stops the world and collects), with generation switches
//! at safe points (the world stopped). Checks conservation
//! (the replayed live set equals a heap walk at exit, object by object, and so do the spans), GC agreement,
//! pairing, and that every generation replays alone.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use common::SharedBuf;
use gc::{Heap, HeapConfig, Layout, ObjRef, StoppedWorld, ThreadCache};
use vmtrace::{EventKind, SiteDesc, StoppedHeap, Trace, TraceConfig, Tracer, replay_all, replay_generation};

const PAIR: u32 = 1;
const LONGS: u32 = 2;

fn heap() -> Heap {
    let heap = Heap::new(HeapConfig { gc_percent: None, ..HeapConfig::default() });
    heap.register_type(PAIR, Layout::Struct { size: 24, ref_offsets: Box::new([8, 16]) });
    heap.register_type(LONGS, Layout::Array { elem_size: 8, elem_is_ref: false });
    heap
}

/// A complete binary tree of `depth`, built bottom-up without collecting.
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

fn heap_objects(heap: &Heap, world: &StoppedWorld<'_>) -> BTreeMap<u64, (u64, u32)> {
    let mut m = BTreeMap::new();
    heap.for_each_object(world, &mut |o| {
        m.insert(o.addr as u64, (o.size as u64, o.type_id));
    });
    m
}

fn heap_spans(heap: &Heap, world: &StoppedWorld<'_>) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    heap.for_each_span(world, &mut |s| {
        m.insert(s.base as u64, s.npages as u64);
    });
    m
}

/// Checks the trace against the heap, walked in `world` (stopped by the test's last mutator).
fn check_trace(bytes: Vec<u8>, heap: &Heap, world: &StoppedWorld<'_>) -> Trace {
    let trace = Trace::parse(bytes).unwrap();
    assert!(trace.error.is_none(), "{:?}", trace.error);
    let (live, disagreements) = replay_all(&trace, |_, _, _, _| {}).unwrap();
    assert!(disagreements.is_empty(), "{disagreements:?}");
    let gcs =
        trace.generations.iter().flat_map(|g| g.events()).filter(|e| matches!(e.kind, EventKind::GcEnd(_))).count();
    assert_eq!(gcs as u64, heap.stats().collections);
    // Conservation, object by object, and span by span.
    let replayed: BTreeMap<u64, (u64, u32)> = live.iter().map(|(a, o)| (a, (o.size, o.type_id))).collect();
    assert_eq!(replayed, heap_objects(heap, world));
    let spans: BTreeMap<u64, u64> = live.spans().map(|s| (s.base, s.npages)).collect();
    assert_eq!(spans, heap_spans(heap, world));
    for g in &trace.generations {
        replay_generation(g).unwrap_or_else(|e| panic!("generation {} alone: {e}", g.number));
    }
    trace
}

#[test]
fn one_thread_binary_trees() {
    let heap = heap();
    let buf = SharedBuf::default();
    let tracer = Tracer::new(Box::new(buf.clone()), TraceConfig::default());
    heap.add_observer(tracer.clone());
    tracer.define_type(PAIR, "$tree", 32);
    tracer.define_type(LONGS, "$longs", 0);
    tracer.define_site(1, &SiteDesc { function: "$make", wasm_offset: 0x2a, location: Some(("bt.wat", 12, 5)) });
    let mut cache = heap.new_thread_cache();
    let link = heap.register_mutator();
    let thread = cache.thread_id();
    tracer.set_current_site(thread, 1);
    heap.notify_stack_alloc(&mut cache, 0x1000, 65536);
    let mut roots: Vec<u64> = Vec::new();
    for round in 0..8u32 {
        let t = tree(&heap, &mut cache, 12);
        if round % 3 == 0 {
            roots.push(t.raw());
        }
        let big = heap.alloc_array(&mut cache, LONGS, 5000 + round, false).unwrap();
        if round == 2 {
            roots.push(big.raw());
        }
        let world = heap.stop_the_world(&link, &mut roots).expect("the only mutator");
        heap.collect(&world, &mut cache, &mut roots);
        if round % 2 == 1 {
            tracer.advance_generation(&StoppedHeap { heap: &heap, world: &world });
        }
        drop(world);
        if round == 5 {
            roots.remove(0);
        }
    }
    // Unswept garbage at exit is still allocated: the heap walk lists it and so must the replay.
    let _ = tree(&heap, &mut cache, 6);
    let stats = tracer.finish().unwrap();
    assert_eq!(stats.lost, 0);
    let world = heap.stop_the_world(&link, &mut roots).expect("the only mutator");
    let trace = check_trace(buf.bytes(), &heap, &world);
    assert_eq!(trace.generations.len(), 5);
    let last = trace.generations.last().unwrap();
    assert_eq!(last.type_name(PAIR), "$tree");
    assert_eq!(last.site_name(1), "$make+0x2a bt.wat:12:5");
    // Every allocation carries the site, the stack is in every snapshot after its allocation.
    let allocs = trace
        .generations
        .iter()
        .flat_map(|g| g.events())
        .filter(|e| matches!(e.kind, EventKind::ObjAlloc { site: 1, .. }))
        .count();
    // 8 rounds of a 4095-node tree and an array, then a 63-node tree (the heap's own counter lags its caches).
    assert_eq!(allocs, 8 * (4095 + 1) + 63);
    assert!(last.events().any(|e| e.kind == EventKind::StackExists { base: 0x1000, size: 65536 }));
    let per_event = trace.file_len as f64 / trace.events() as f64;
    assert!(per_event < 4.0, "{per_event:.2} bytes/event");
}

#[test]
fn threads_with_stopped_world_collections() {
    const THREADS: usize = 3;
    const ROUNDS: usize = 4;
    let heap = Arc::new(heap());
    let buf = SharedBuf::default();
    let tracer = Tracer::new(Box::new(buf.clone()), TraceConfig::default());
    heap.add_observer(tracer.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (heap, barrier, tracer) = (heap.clone(), barrier.clone(), tracer.clone());
            std::thread::spawn(move || {
                let link = heap.register_mutator();
                let mut cache = heap.new_thread_cache();
                tracer.thread_start(cache.thread_id());
                let mut mine = Vec::new();
                for round in 0..ROUNDS {
                    for k in 0..10 {
                        let tr = tree(&heap, &mut cache, 8);
                        if k % 3 == 0 {
                            mine.push(tr.raw());
                        }
                    }
                    if round % 2 == 1 {
                        mine.drain(..mine.len() / 2);
                    }
                    if t == 0 {
                        // Thread 0 collects with its own roots; the world adds the others' (they are native).
                        barrier.wait();
                        let world = heap.stop_the_world(&link, &mut mine).expect("only thread 0 collects");
                        heap.collect(&world, &mut cache, &mut mine);
                        let stopped = StoppedHeap { heap: &heap, world: &world };
                        tracer.maybe_advance_generation(&stopped);
                        if round == 1 {
                            tracer.advance_generation(&stopped);
                        }
                        drop(world);
                        barrier.wait();
                    } else {
                        // SAFETY: `mine` is not touched until `leave_native` returns.
                        unsafe { link.enter_native(&mut mine) };
                        barrier.wait();
                        barrier.wait();
                        link.leave_native();
                    }
                }
                // Keep every cache (and its spans) until all threads are done allocating.
                barrier.wait();
                tracer.thread_end(cache.thread_id());
                barrier.wait();
                drop(cache);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = tracer.finish().unwrap();
    assert_eq!(stats.lost, 0);
    let link = heap.register_mutator();
    let world = heap.stop_the_world(&link, &mut Vec::new()).expect("the only mutator left");
    let trace = check_trace(buf.bytes(), &heap, &world);
    let threads: std::collections::BTreeSet<u32> =
        trace.generations.iter().flat_map(|g| g.events()).map(|e| e.thread).filter(|&t| t != 0).collect();
    assert_eq!(threads.len(), THREADS);
}
