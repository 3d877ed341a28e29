//! Heap-level tests: allocation, collection, limits, debug modes, observers, threads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use crate::observer::{ArenaInfo, GcBeginInfo, GcEndInfo, ObjectInfo, ObserverCtx, SpanInfo};
use crate::value::{from_func, from_host, from_i31, is_object};
use crate::*;

/// Tests that allocate hundreds of MiB run one at a time, so the RSS test measures its own memory.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// `struct Pair { left: ref, right: ref, value: u64 }`: refs at 8 and 16, value at 24.
const PAIR: u32 = 1;
/// `struct Node { next: ref, value: u64 }`: ref at 8, value at 16.
const NODE: u32 = 2;
/// `array (mut i8)`.
const BYTES: u32 = 3;
/// `array (mut ref)`.
const REFS: u32 = 4;
/// `array (mut i64)`.
const LONGS: u32 = 5;
/// A struct with no references and a 40-byte payload.
const PLAIN: u32 = 6;
/// A large struct (payload 40000 bytes) with a reference at 8 and at 40000.
const BIG: u32 = 7;
/// An array with 1 MiB elements (for size overflow).
const HUGE_ELEMS: u32 = 8;

fn heap(config: HeapConfig) -> Heap {
    let heap = Heap::new(config);
    heap.register_type(PAIR, Layout::Struct { size: 24, ref_offsets: Box::new([8, 16]) });
    heap.register_type(NODE, Layout::Struct { size: 16, ref_offsets: Box::new([8]) });
    heap.register_type(BYTES, Layout::Array { elem_size: 1, elem_is_ref: false });
    heap.register_type(REFS, Layout::Array { elem_size: 8, elem_is_ref: true });
    heap.register_type(LONGS, Layout::Array { elem_size: 8, elem_is_ref: false });
    heap.register_type(PLAIN, Layout::Struct { size: 40, ref_offsets: Box::new([]) });
    heap.register_type(BIG, Layout::Struct { size: 40000, ref_offsets: Box::new([8, 40000]) });
    heap.register_type(HUGE_ELEMS, Layout::Array { elem_size: 1 << 20, elem_is_ref: false });
    heap
}

fn verify_config() -> HeapConfig {
    HeapConfig { verify: true, ..HeapConfig::default() }
}

/// A collection from a single-threaded test: the thread is a registered mutator for the collection only (no
/// other mutator exists, so the world stops at once).
fn collect(heap: &Heap, cache: &mut ThreadCache, roots: &mut dyn RootSet) {
    let me = heap.register_mutator();
    let world = heap.stop_the_world(&me, roots).expect("nobody else stops the world");
    heap.collect(&world, cache, roots);
}

/// A collection whose sweep is then finished (not left to allocation), for exact statistics.
fn collect_and_sweep(heap: &Heap, cache: &mut ThreadCache, roots: &mut dyn RootSet) {
    let me = heap.register_mutator();
    let world = heap.stop_the_world(&me, roots).expect("nobody else stops the world");
    heap.collect(&world, cache, roots);
    heap.finish_sweep(&world, cache);
}

/// Runs `f` with the world stopped (single-threaded tests).
fn stopped<R>(heap: &Heap, f: impl FnOnce(&StoppedWorld<'_>) -> R) -> R {
    let me = heap.register_mutator();
    let world = heap.stop_the_world(&me, &mut Vec::new()).expect("nobody else stops the world");
    f(&world)
}

/// The VM's allocation protocol: try, collect if asked, retry without collecting.
fn alloc_struct(heap: &Heap, cache: &mut ThreadCache, ty: u32, roots: &mut [u64]) -> ObjRef {
    match heap.alloc_struct(cache, ty, true) {
        Ok(o) => o,
        Err(AllocError::CollectionNeeded) => {
            collect(heap, cache, &mut &*roots);
            heap.alloc_struct(cache, ty, false).expect("allocation after collection")
        }
        Err(e) => panic!("{e}"),
    }
}

fn alloc_array(heap: &Heap, cache: &mut ThreadCache, ty: u32, len: u32, roots: &mut [u64]) -> ObjRef {
    match heap.alloc_array(cache, ty, len, true) {
        Ok(o) => o,
        Err(AllocError::CollectionNeeded) => {
            collect(heap, cache, &mut &*roots);
            heap.alloc_array(cache, ty, len, false).expect("allocation after collection")
        }
        Err(e) => panic!("{e}"),
    }
}

fn obj(raw: u64) -> ObjRef {
    // SAFETY: tests only pass references they keep rooted.
    unsafe { ObjRef::from_raw(raw) }
}

/// Builds a complete binary tree of `depth` (1 = a leaf) with values numbered in preorder from `*next`.
/// Everything under construction is rooted in `roots`.
fn tree(heap: &Heap, cache: &mut ThreadCache, depth: u32, next: &mut u64, roots: &mut Vec<u64>) -> u64 {
    let node = alloc_struct(heap, cache, PAIR, roots);
    node.store_u64(24, *next);
    *next += 1;
    roots.push(node.raw());
    if depth > 1 {
        let l = tree(heap, cache, depth - 1, next, roots);
        obj(*roots.last().unwrap()).store_u64(8, l);
        let r = tree(heap, cache, depth - 1, next, roots);
        obj(*roots.last().unwrap()).store_u64(16, r);
    }
    roots.pop().unwrap()
}

/// Sum of values and node count of a tree.
fn check_tree(raw: u64) -> (u64, u64) {
    let mut stack = vec![raw];
    let (mut sum, mut count) = (0, 0);
    while let Some(r) = stack.pop() {
        let o = obj(r);
        assert_eq!(o.type_id(), PAIR);
        sum += o.load_u64(24);
        count += 1;
        assert!(count <= 1 << 24, "the tree has a cycle: its nodes were freed and reused");
        for off in [8, 16] {
            let c = o.load_u64(off);
            if c != 0 {
                stack.push(c);
            }
        }
    }
    (sum, count)
}

#[test]
fn objects_are_zeroed_with_header() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    // Dirty a span, free it, and allocate again: recycled slots must come back zeroed.
    for round in 0..3 {
        for _ in 0..2000 {
            let p = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
            assert_eq!(p.type_id(), PAIR);
            assert_eq!(p.array_len(), 0);
            for off in [8, 16, 24] {
                assert_eq!(p.load_u64(off), 0, "round {round}");
            }
            p.store_u64(24, u64::MAX);
            p.store_u64(8, 0xdead_bee8);
            let a = alloc_array(&heap, &mut cache, BYTES, 100, &mut roots);
            assert_eq!((a.type_id(), a.array_len()), (BYTES, 100));
            assert!((8..108).all(|i| a.load_u8(i) == 0));
            a.fill(8, 1, 100, 0xAB);
        }
        collect(&heap, &mut cache, &mut roots);
    }
    assert!(heap.stats().objects_freed >= 8000);
}

/// Lazy sweeping (`sweep.rs`): garbage a collection left unswept is swept by allocation, and before the
/// page heap grows for another size class its spans are reclaimed, so switching classes does not grow the
/// heap; finishing the sweep counts every dead object.
#[test]
fn lazily_swept_garbage_is_reclaimed_before_the_heap_grows() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    for _ in 0..50_000 {
        alloc_struct(&heap, &mut cache, NODE, &mut roots);
    }
    let heap_bytes = heap.stats().heap_bytes;
    collect(&heap, &mut cache, &mut roots);
    // Only the cache's own span was swept in the pause.
    assert!(heap.stats().objects_freed < 1_000, "{:?}", heap.stats());
    // 0.96 MB of 64-byte arrays (another class): carved from the pages of the unswept garbage.
    for _ in 0..15_000 {
        heap.alloc_array(&mut cache, BYTES, 56, false).unwrap();
    }
    let s = heap.stats();
    assert!(s.heap_bytes <= heap_bytes + 64 * 1024, "the heap grew from {heap_bytes} to {}", s.heap_bytes);
    collect_and_sweep(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!((s.objects_allocated, s.objects_freed), (65_000, 65_000));
}

#[test]
fn freed_slots_are_reused() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    let mut first = HashSet::new();
    for _ in 0..10_000 {
        first.insert(alloc_struct(&heap, &mut cache, NODE, &mut roots).raw());
    }
    let heap_bytes = heap.stats().heap_bytes;
    // The sweep is left to allocation (lazy): the slots come back as the cache sweeps their spans.
    collect(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!(s.live_objects_after_last_gc, 0);
    let mut reused = 0;
    for _ in 0..10_000 {
        if first.contains(&alloc_struct(&heap, &mut cache, NODE, &mut roots).raw()) {
            reused += 1;
        }
    }
    assert!(reused >= 9_000, "only {reused} slots reused");
    assert!(heap.stats().heap_bytes <= heap_bytes);
    collect_and_sweep(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!((s.objects_allocated, s.objects_freed), (20_000, 20_000));
    assert_eq!(s.bytes_allocated, s.bytes_freed);
    assert_eq!(s.bytes_allocated, 20_000 * 24);
}

#[test]
fn children_survive_through_ref_fields() {
    let heap = heap(verify_config());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    let mut next = 0;
    let t = tree(&heap, &mut cache, 12, &mut next, &mut roots);
    roots.push(t);
    // Garbage in between.
    for _ in 0..5000 {
        alloc_struct(&heap, &mut cache, PAIR, &mut roots);
    }
    collect(&heap, &mut cache, &mut roots);
    let n = (1u64 << 12) - 1;
    assert_eq!(check_tree(t), (n * (n - 1) / 2, n));
    assert_eq!(heap.stats().live_objects_after_last_gc, n as usize);
    // Reference arrays keep their elements alive too; non-object values in ref slots are ignored.
    let arr = alloc_array(&heap, &mut cache, REFS, 6, &mut roots);
    roots.push(arr.raw());
    let leaf = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
    leaf.store_u64(24, 77);
    arr.store_u64(8, leaf.raw());
    arr.store_u64(16, from_i31(-5));
    arr.store_u64(24, from_host(9));
    arr.store_u64(32, from_func(3));
    arr.store_u64(40, t);
    roots.retain(|&r| r != t);
    collect(&heap, &mut cache, &mut roots);
    assert_eq!(obj(arr.load_u64(8)).load_u64(24), 77);
    assert_eq!(check_tree(arr.load_u64(40)).1, n);
    assert_eq!(heap.stats().live_objects_after_last_gc, n as usize + 2);
    roots.clear();
    collect(&heap, &mut cache, &mut roots);
    assert_eq!(heap.stats().live_objects_after_last_gc, 0);
}

#[test]
fn unreachable_cycles_are_freed() {
    let heap = heap(verify_config());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    for _ in 0..20_000 {
        let a = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
        roots.push(a.raw());
        let b = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
        a.store_u64(8, b.raw());
        b.store_u64(8, a.raw());
        b.store_u64(16, b.raw());
        roots.pop();
    }
    collect_and_sweep(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!(s.live_objects_after_last_gc, 0);
    assert_eq!(s.objects_freed, 40_000);
    // Every span went back to the page heap, except the one the cache is allocating from.
    assert_eq!(s.heap_bytes, PAGE_SIZE);
}

/// A 10-million-node list (smaller in debug builds, still far deeper than any native stack could recurse).
#[test]
fn deep_linked_list_marks_without_recursion() {
    let _g = heavy();
    let n: u64 = 10_000_000;
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut head = 0u64;
    for i in 0..n {
        let node = heap.alloc_struct(&mut cache, NODE, false).unwrap();
        node.store_u64(8, head);
        if i >= n - 1000 {
            node.store_u64(16, i);
        }
        head = node.raw();
    }
    let mut roots = vec![head];
    collect(&heap, &mut cache, &mut roots);
    assert_eq!(heap.stats().live_objects_after_last_gc, n as usize);
    // Walk a prefix to check contents.
    let mut cur = head;
    for i in (n - 1000..n).rev() {
        assert_eq!(obj(cur).load_u64(16), i);
        cur = obj(cur).load_u64(8);
    }
    roots.clear();
    collect_and_sweep(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!(s.live_objects_after_last_gc, 0);
    assert_eq!(s.objects_freed, n);
}

#[test]
fn large_objects_get_their_own_spans() {
    let heap = heap(verify_config());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    let small_max = size_class::MAX_SMALL_SIZE as u32;
    let a = alloc_array(&heap, &mut cache, BYTES, small_max - 8, &mut roots);
    assert_eq!(a.slot_size(), size_class::MAX_SMALL_SIZE);
    roots.push(a.raw());
    let b = alloc_array(&heap, &mut cache, BYTES, small_max - 7, &mut roots);
    assert_eq!(b.slot_size(), size_class::MAX_SMALL_SIZE + 8);
    assert_eq!(b.addr() % PAGE_SIZE, 0);
    roots.push(b.raw());
    let big = alloc_struct(&heap, &mut cache, BIG, &mut roots);
    roots.push(big.raw());
    let child = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
    child.store_u64(24, 5);
    big.store_u64(40000, child.raw());
    let refs = alloc_array(&heap, &mut cache, REFS, 100_000, &mut roots);
    refs.store_u64(8 + 8 * 99_999, big.raw());
    roots.clear();
    roots.push(refs.raw());
    // 10 MiB of garbage arrays: large spans come and go.
    for i in 0..20 {
        let g = alloc_array(&heap, &mut cache, LONGS, 64 * 1024, &mut roots);
        g.store_u64(8 + 8 * 65535, i);
    }
    collect(&heap, &mut cache, &mut roots);
    assert_eq!(obj(obj(refs.load_u64(8 + 8 * 99_999)).load_u64(40000)).load_u64(24), 5);
    assert_eq!(heap.stats().live_objects_after_last_gc, 3);
    let mut large_spans = 0;
    stopped(&heap, |world| {
        heap.for_each_span(world, &mut |s| {
            if s.size_class == 0 {
                large_spans += 1;
            }
        })
    });
    assert_eq!(large_spans, 2, "the refs array and the big struct");
    // A reused large span is zeroed.
    roots.clear();
    collect(&heap, &mut cache, &mut roots);
    let g = alloc_array(&heap, &mut cache, LONGS, 64 * 1024, &mut roots);
    assert!((0..64 * 1024).all(|i| g.load_u64(8 + 8 * i) == 0));
}

#[test]
fn rss_shrinks_after_a_spike() {
    let _g = heavy();
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let before = resident_bytes().expect("VmRSS");
    // 1 GiB of 1 KiB arrays, all live.
    let count = 1 << 20;
    let mut roots = Vec::with_capacity(count);
    for i in 0..count {
        let a = heap.alloc_array(&mut cache, BYTES, 1016, false).unwrap();
        a.store_u8(8, i as u8);
        roots.push(a.raw());
    }
    let peak = resident_bytes().unwrap();
    assert!(peak >= before + (900 << 20), "before {before}, peak {peak}");
    // Drop all but the first 10 MiB, collect.
    roots.truncate(10 << 10);
    collect(&heap, &mut cache, &mut roots);
    let after = resident_bytes().unwrap();
    let s = heap.stats();
    assert_eq!(s.live_bytes_after_last_gc, 10 << 20);
    assert!(
        after < before + (100 << 20),
        "before {} MiB, peak {} MiB, after {} MiB",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(s.peak_resident_bytes.unwrap() >= before + (900 << 20));
    assert!(s.peak_heap_bytes >= 1 << 30);
    // The survivors are intact and the released memory is usable again (and zero).
    for (i, &r) in roots.iter().enumerate() {
        assert_eq!(obj(r).load_u8(8), i as u8);
    }
    for _ in 0..1000 {
        let a = heap.alloc_array(&mut cache, BYTES, 1016, false).unwrap();
        assert_eq!(a.load_u64(16), 0);
    }
}

#[test]
fn heap_limit_gives_out_of_memory() {
    let limit = 8 << 20;
    let heap = heap(HeapConfig { max_heap_bytes: Some(limit), ..verify_config() });
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    let err = loop {
        match heap.alloc_array(&mut cache, BYTES, 1016, true) {
            Ok(a) => roots.push(a.raw()),
            Err(AllocError::CollectionNeeded) => {
                collect(&heap, &mut cache, &mut roots);
                match heap.alloc_array(&mut cache, BYTES, 1016, false) {
                    Ok(a) => roots.push(a.raw()),
                    Err(e) => break e,
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, AllocError::OutOfMemory { limit });
    assert_eq!(err.to_string(), "out of memory: heap limit 8 MiB reached");
    assert!(roots.len() >= 7000, "{}", roots.len());
    assert!(heap.stats().heap_bytes <= limit);
    // A single object over the limit fails at once, even when collecting is allowed.
    assert_eq!(heap.alloc_array(&mut cache, LONGS, 2 << 20, true).unwrap_err(), AllocError::OutOfMemory { limit });
    // Sizes that overflow are out of memory too.
    assert!(matches!(heap.alloc_array(&mut cache, HUGE_ELEMS, u32::MAX, false), Err(AllocError::OutOfMemory { .. })));
    // After dropping the roots the heap is usable again.
    roots.clear();
    collect(&heap, &mut cache, &mut roots);
    for _ in 0..7000 {
        alloc_array(&heap, &mut cache, BYTES, 1016, &mut roots);
    }
}

#[test]
fn oversized_array_without_limit_is_out_of_memory() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let e = heap.alloc_array(&mut cache, HUGE_ELEMS, 2 << 20, true).unwrap_err();
    assert!(matches!(e, AllocError::OutOfMemory { .. }));
}

#[test]
fn pacer_follows_gc_percent_with_a_floor() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    // 16 MiB live.
    for _ in 0..16 * 1024 {
        let a = alloc_array(&heap, &mut cache, BYTES, 1016, &mut roots);
        roots.push(a.raw());
    }
    collect(&heap, &mut cache, &mut roots);
    let s = heap.stats();
    assert_eq!(s.live_bytes_after_last_gc, 16 << 20);
    assert_eq!(s.next_gc_bytes, 32 << 20);
    // Garbage until the pacer asks: about 16 MiB more.
    let mut allocated = 0usize;
    while heap.alloc_array(&mut cache, BYTES, 1016, true).is_ok() {
        allocated += 1024;
    }
    assert!((15 << 20..=17 << 20).contains(&allocated), "{allocated}");
    // A small live set keeps the 4 MiB floor.
    roots.clear();
    collect(&heap, &mut cache, &mut roots);
    assert_eq!(heap.stats().next_gc_bytes, 4 << 20);
    // gc_percent = None: never asks.
    let lazy = Heap::new(HeapConfig { gc_percent: None, ..HeapConfig::default() });
    lazy.register_type(BYTES, Layout::Array { elem_size: 1, elem_is_ref: false });
    let mut c = lazy.new_thread_cache();
    for _ in 0..20 * 1024 {
        lazy.alloc_array(&mut c, BYTES, 1016, true).unwrap();
    }
}

#[test]
fn stress_mode_with_verify_keeps_a_mutating_graph_intact() {
    let heap = heap(HeapConfig { stress_every: Some(1), verify: true, ..HeapConfig::default() });
    let mut cache = heap.new_thread_cache();
    // roots[0] is a ref array of 64 slots; the graph hangs off it and is mutated at random.
    let table = alloc_array(&heap, &mut cache, REFS, 64, &mut Vec::new());
    let mut roots = vec![table.raw()];
    let mut model: Vec<Option<u64>> = vec![None; 64]; // value stored in the PAIR at each slot
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for step in 0..600u64 {
        let slot = (next() % 64) as usize;
        match next() % 4 {
            0 => {
                table.store_u64(8 + 8 * slot, 0);
                model[slot] = None;
            }
            1 if model[slot].is_some() => {
                // Give the existing node a fresh child (allocation may collect: the node is reachable).
                let child = alloc_array(&heap, &mut cache, LONGS, (step % 50) as u32, &mut roots);
                child.fill(8, 8, (step % 50) as usize, step);
                obj(table.load_u64(8 + 8 * slot)).store_u64(16, child.raw());
            }
            _ => {
                let p = alloc_struct(&heap, &mut cache, PAIR, &mut roots);
                p.store_u64(24, step);
                // Point at another live node (maybe forming cycles) and at itself.
                let other = table.load_u64(8 + 8 * ((slot + 1) % 64));
                p.store_u64(8, other);
                table.store_u64(8 + 8 * slot, p.raw());
                model[slot] = Some(step);
            }
        }
    }
    collect(&heap, &mut cache, &mut roots);
    for (slot, v) in model.iter().enumerate() {
        let r = table.load_u64(8 + 8 * slot);
        match v {
            None => assert_eq!(r, 0),
            Some(v) => assert_eq!(obj(r).load_u64(24), *v),
        }
    }
    let s = heap.stats();
    assert!(s.collections >= 300, "{}", s.collections);
    assert!(s.objects_freed > 0);
}

#[test]
fn stress_every_n_counts_allocations() {
    let heap = heap(HeapConfig { stress_every: Some(10), ..HeapConfig::default() });
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    for _ in 0..1000 {
        alloc_struct(&heap, &mut cache, PLAIN, &mut roots);
    }
    assert_eq!(heap.stats().collections, 100);
    // Every allocation collects first with N = 1.
    let heap = self::heap(HeapConfig { stress_every: Some(1), ..HeapConfig::default() });
    let mut cache = heap.new_thread_cache();
    for _ in 0..50 {
        alloc_struct(&heap, &mut cache, PLAIN, &mut roots);
    }
    assert_eq!(heap.stats().collections, 50);
}

#[test]
#[should_panic(expected = "gc")]
fn verify_catches_a_reference_to_a_freed_object() {
    let heap = heap(verify_config());
    let mut cache = heap.new_thread_cache();
    let keep = heap.alloc_struct(&mut cache, PAIR, false).unwrap();
    let lost = heap.alloc_struct(&mut cache, PAIR, false).unwrap();
    let mut roots = vec![keep.raw()];
    collect(&heap, &mut cache, &mut roots); // `lost` is freed
    keep.store_u64(8, lost.raw()); // a VM bug: a dangling reference
    collect(&heap, &mut cache, &mut roots);
}

#[test]
fn register_type_is_idempotent_and_supports_large_ids() {
    let heap = heap(HeapConfig::default());
    heap.register_type(PAIR, Layout::Struct { size: 24, ref_offsets: Box::new([8, 16]) });
    let id = 1_000_000;
    heap.register_type(id, Layout::Struct { size: 8, ref_offsets: Box::new([8]) });
    let mut cache = heap.new_thread_cache();
    let o = heap.alloc_struct(&mut cache, id, false).unwrap();
    assert_eq!(o.type_id(), id);
    // Registration from another thread while this one allocates.
    std::thread::scope(|s| {
        s.spawn(|| {
            for t in 100..200 {
                heap.register_type(t, Layout::Array { elem_size: 4, elem_is_ref: false });
            }
        });
        for _ in 0..1000 {
            heap.alloc_struct(&mut cache, PAIR, false).unwrap();
        }
    });
    assert_eq!(heap.alloc_array(&mut cache, 150, 3, false).unwrap().array_len(), 3);
}

#[test]
#[should_panic(expected = "different layouts")]
fn conflicting_registration_panics() {
    let heap = heap(HeapConfig::default());
    heap.register_type(PAIR, Layout::Struct { size: 16, ref_offsets: Box::new([8]) });
}

#[test]
fn array_copy_and_fill_helpers() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let a = heap.alloc_array(&mut cache, LONGS, 10, false).unwrap();
    for i in 0..10 {
        a.store_u64(8 + 8 * i, i as u64);
    }
    // Overlapping move within one array (memmove semantics), both directions.
    a.copy_from(8 + 8 * 2, a, 8, 8 * 5);
    let got: Vec<u64> = (0..10).map(|i| a.load_u64(8 + 8 * i)).collect();
    assert_eq!(got, [0, 1, 0, 1, 2, 3, 4, 7, 8, 9]);
    a.copy_from(8, a, 8 + 8 * 3, 8 * 4);
    let got: Vec<u64> = (0..4).map(|i| a.load_u64(8 + 8 * i)).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    let b = heap.alloc_array(&mut cache, BYTES, 7, false).unwrap();
    b.write_bytes(8, b"abcdefg");
    b.fill(9, 1, 3, b'z' as u64);
    let mut out = [0u8; 7];
    b.read_bytes(8, &mut out);
    assert_eq!(&out, b"azzzefg");
    let c = heap.alloc_array(&mut cache, BYTES, 4, false).unwrap();
    c.copy_from(8, b, 11, 4);
    assert_eq!(c.load_u32(8), u32::from_le_bytes(*b"zefg"));
    a.fill(8, 4, 3, 0x1122_3344);
    assert_eq!(a.load_u32(8 + 8), 0x1122_3344);
    a.store_u16(8, 0xBEEF);
    assert_eq!(a.load_u16(8), 0xBEEF);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "outside")]
fn out_of_bounds_access_is_caught_in_debug_builds() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let a = heap.alloc_struct(&mut cache, PAIR, false).unwrap();
    a.load_u64(32);
}

/// Records every event and checks the invariants observers rely on as they arrive.
#[derive(Default)]
struct Recorder {
    state: Mutex<RecState>,
    in_gc: AtomicBool,
}

#[derive(Default)]
struct RecState {
    live: HashMap<usize, (usize, u32)>,
    spans: HashMap<usize, SpanInfo>,
    arenas: Vec<ArenaInfo>,
    allocs: usize,
    frees: usize,
    span_frees: usize,
    cycles: Vec<GcEndInfo>,
    stacks: Vec<(u32, usize, usize, bool)>,
    threads: HashSet<u32>,
    /// Every address an object was ever freed at.
    freed: HashSet<usize>,
}

impl HeapObserver for Recorder {
    fn arena_map(&self, _ctx: &ObserverCtx, arena: &ArenaInfo) {
        self.state.lock().unwrap().arenas.push(*arena);
    }
    fn span_alloc(&self, _ctx: &ObserverCtx, span: &SpanInfo) {
        let mut st = self.state.lock().unwrap();
        assert!(st.arenas.iter().any(|a| span.base >= a.base && span.base < a.base + a.size), "span outside arenas");
        assert!(st.spans.insert(span.base, *span).is_none(), "span allocated twice");
    }
    fn span_free(&self, _ctx: &ObserverCtx, span: &SpanInfo) {
        assert!(self.in_gc.load(Ordering::SeqCst), "span freed outside a collection");
        let mut st = self.state.lock().unwrap();
        assert_eq!(st.spans.remove(&span.base), Some(*span));
        let end = span.base + span.npages * PAGE_SIZE;
        assert!(!st.live.keys().any(|&a| a >= span.base && a < end), "span freed with live objects");
        st.span_frees += 1;
    }
    fn object_alloc(&self, ctx: &ObserverCtx, o: &ObjectInfo) {
        let mut st = self.state.lock().unwrap();
        st.threads.insert(ctx.thread_id);
        let span = st.spans.values().find(|s| o.addr >= s.base && o.addr < s.base + s.npages * PAGE_SIZE);
        let span = span.expect("object outside every reported span");
        assert_eq!(o.size, span.elem_size);
        assert!(st.live.insert(o.addr, (o.size, o.type_id)).is_none(), "object {:#x} allocated twice", o.addr);
        st.allocs += 1;
    }
    fn object_free(&self, _ctx: &ObserverCtx, o: &ObjectInfo) {
        assert!(self.in_gc.load(Ordering::SeqCst), "object freed outside a collection");
        let mut st = self.state.lock().unwrap();
        assert_eq!(st.live.remove(&o.addr), Some((o.size, o.type_id)), "freed {:#x} was not allocated", o.addr);
        st.frees += 1;
        st.freed.insert(o.addr);
    }
    fn gc_begin(&self, _ctx: &ObserverCtx, _info: &GcBeginInfo) {
        assert!(!self.in_gc.swap(true, Ordering::SeqCst));
    }
    fn gc_end(&self, _ctx: &ObserverCtx, info: &GcEndInfo) {
        assert!(self.in_gc.swap(false, Ordering::SeqCst));
        let mut st = self.state.lock().unwrap();
        assert_eq!(info.live_objects, st.live.len());
        assert_eq!(info.live_bytes, st.live.values().map(|v| v.0).sum::<usize>());
        st.cycles.push(*info);
    }
    fn stack_alloc(&self, ctx: &ObserverCtx, base: usize, size: usize) {
        self.state.lock().unwrap().stacks.push((ctx.thread_id, base, size, true));
    }
    fn stack_free(&self, ctx: &ObserverCtx, base: usize, size: usize) {
        self.state.lock().unwrap().stacks.push((ctx.thread_id, base, size, false));
    }
}

#[test]
fn observer_sees_matching_events() {
    let heap = heap(HeapConfig::default());
    let rec = Arc::new(Recorder::default());
    heap.add_observer(rec.clone());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    let mut next = 0;
    for round in 0..6 {
        let t = tree(&heap, &mut cache, 10, &mut next, &mut roots);
        if round % 2 == 0 {
            roots.push(t);
        }
        let big = alloc_array(&heap, &mut cache, LONGS, 10_000 + round, &mut roots);
        if round == 1 {
            roots.push(big.raw());
        }
        collect(&heap, &mut cache, &mut roots);
        if round == 3 {
            roots.clear();
        }
    }
    heap.notify_stack_alloc(&mut cache, 0x1000, 4096);
    heap.notify_stack_free(&mut cache, 0x1000, 4096);
    let st = rec.state.lock().unwrap();
    let stats = heap.stats();
    assert_eq!(st.allocs as u64, stats.objects_allocated);
    assert_eq!(st.frees as u64, stats.objects_freed);
    assert_eq!(st.cycles.len() as u64, stats.collections);
    assert!(st.span_frees > 0);
    let total_freed: usize = st.cycles.iter().map(|c| c.freed_objects).sum();
    assert_eq!(total_freed, st.frees);
    assert_eq!(st.threads, HashSet::from([cache.thread_id()]));
    assert_eq!(st.stacks, [(cache.thread_id(), 0x1000, 4096, true), (cache.thread_id(), 0x1000, 4096, false)]);
    // A snapshot walk agrees with the event stream.
    drop(st);
    let (mut snapshot, mut spans, mut arenas) = (HashMap::new(), HashMap::new(), Vec::new());
    stopped(&heap, |world| {
        heap.for_each_object(world, &mut |o| {
            snapshot.insert(o.addr, (o.size, o.type_id));
        });
        heap.for_each_span(world, &mut |s| {
            spans.insert(s.base, *s);
        });
        heap.for_each_arena(world, &mut |a| arenas.push(*a));
    });
    assert_eq!(snapshot, rec.state.lock().unwrap().live);
    assert_eq!(spans, rec.state.lock().unwrap().spans);
    assert_eq!(arenas, rec.state.lock().unwrap().arenas);
}

/// Which context each kind of event came with.
#[derive(Default)]
struct ContextLog(Mutex<Vec<(&'static str, ObserverCtx)>>);

impl ContextLog {
    fn log(&self, event: &'static str, ctx: &ObserverCtx) {
        self.0.lock().unwrap().push((event, *ctx));
    }

    /// The distinct contexts `event` came with.
    fn contexts(&self, event: &str) -> HashSet<ObserverCtx> {
        self.0.lock().unwrap().iter().filter(|(e, _)| *e == event).map(|(_, c)| *c).collect()
    }
}

impl HeapObserver for ContextLog {
    fn span_alloc(&self, ctx: &ObserverCtx, _span: &SpanInfo) {
        self.log("span_alloc", ctx);
    }
    fn span_free(&self, ctx: &ObserverCtx, _span: &SpanInfo) {
        self.log("span_free", ctx);
    }
    fn object_alloc(&self, ctx: &ObserverCtx, _obj: &ObjectInfo) {
        self.log("object_alloc", ctx);
    }
    fn object_free(&self, ctx: &ObserverCtx, _obj: &ObjectInfo) {
        self.log("object_free", ctx);
    }
    fn gc_begin(&self, ctx: &ObserverCtx, _info: &GcBeginInfo) {
        self.log("gc_begin", ctx);
    }
    fn gc_end(&self, ctx: &ObserverCtx, _info: &GcEndInfo) {
        self.log("gc_end", ctx);
    }
    fn stack_alloc(&self, ctx: &ObserverCtx, _base: usize, _size: usize) {
        self.log("stack_alloc", ctx);
    }
}

/// A cache's race context goes with every event made through it; the sweep's events carry the collector's.
#[test]
fn race_ctx_goes_with_the_events_of_its_cache() {
    let heap = heap(HeapConfig::default());
    let log = Arc::new(ContextLog::default());
    heap.add_observer(log.clone());
    let mut mutator = heap.new_thread_cache();
    mutator.set_race_ctx(0xA11C);
    let mut collector = heap.new_thread_cache();
    collector.set_race_ctx(0xC011);
    assert_eq!((mutator.race_ctx(), collector.race_ctx()), (0xA11C, 0xC011));
    for _ in 0..2000 {
        heap.alloc_struct(&mut mutator, PAIR, false).unwrap();
    }
    heap.alloc_array(&mut mutator, LONGS, 10_000, false).unwrap();
    heap.notify_stack_alloc(&mut mutator, 0x1000, 4096);
    collect(&heap, &mut collector, &mut Vec::new());
    let mutator_ctx = ObserverCtx { thread_id: mutator.thread_id(), race_ctx: 0xA11C };
    let collector_ctx = ObserverCtx { thread_id: collector.thread_id(), race_ctx: 0xC011 };
    for event in ["object_alloc", "span_alloc", "stack_alloc"] {
        assert_eq!(log.contexts(event), HashSet::from([mutator_ctx]), "{event}");
    }
    for event in ["object_free", "span_free", "gc_begin", "gc_end"] {
        assert_eq!(log.contexts(event), HashSet::from([collector_ctx]), "{event}");
    }
    assert_eq!(ObserverCtx::new(7), ObserverCtx { thread_id: 7, race_ctx: 0 });
}

/// Threads allocate concurrently through their own caches. Each round, the others go native with their
/// trees published and thread 0 stops the world and collects with only its own roots: the world adds theirs.
#[test]
fn threads_allocate_concurrently_with_their_own_caches() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 4;
    let heap = Arc::new(heap(verify_config()));
    let rec = Arc::new(Recorder::default());
    heap.add_observer(rec.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (heap, barrier) = (heap.clone(), barrier.clone());
            std::thread::spawn(move || {
                let link = heap.register_mutator();
                let mut cache = heap.new_thread_cache();
                let mut mine: Vec<(u64, u64)> = Vec::new(); // (tree, expected sum)
                let mut damaged = 0;
                for round in 0..ROUNDS {
                    let mut local = Vec::new();
                    for k in 0..20 {
                        // No collection while others run: may_collect = false throughout this phase.
                        let t0 = build_tree_nocollect(&heap, &mut cache, 8, (t * 1000 + round * 100 + k) as u64);
                        if k % 3 == 0 {
                            local.push((t0, check_tree(t0).0));
                        }
                        let _garbage = heap.alloc_array(&mut cache, LONGS, 100, false).unwrap();
                    }
                    mine.extend(local);
                    if round % 2 == 1 {
                        mine.drain(..mine.len() / 2);
                    }
                    let mut roots: Vec<u64> = mine.iter().map(|m| m.0).collect();
                    if t == 0 {
                        barrier.wait();
                        let world = heap.stop_the_world(&link, &mut roots).expect("only thread 0 collects");
                        heap.collect(&world, &mut cache, &mut roots);
                        drop(world);
                        barrier.wait();
                    } else {
                        // SAFETY: `roots` lives until after `leave_native` and is not touched meanwhile.
                        unsafe { link.enter_native(&mut roots) };
                        barrier.wait();
                        barrier.wait();
                        link.leave_native();
                    }
                    // A failed check must not leave the other threads waiting at the barrier: count it.
                    let intact = |&(tree, sum): &(u64, u64)| std::panic::catch_unwind(|| check_tree(tree).0 == sum);
                    damaged += mine.iter().filter(|t| !matches!(intact(t), Ok(true))).count();
                }
                assert_eq!(damaged, 0, "thread {t}: trees damaged by the collections");
                drop(cache);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = rec.state.lock().unwrap();
    assert_eq!(st.threads.len(), THREADS);
    assert_eq!(heap.stats().collections, ROUNDS as u64);
}

/// Like `tree`, without ever collecting; every node has value `v`.
fn build_tree_nocollect(heap: &Heap, cache: &mut ThreadCache, depth: u32, v: u64) -> u64 {
    let node = heap.alloc_struct(cache, PAIR, false).unwrap();
    node.store_u64(24, v);
    if depth > 1 {
        node.store_u64(8, build_tree_nocollect(heap, cache, depth - 1, v));
        node.store_u64(16, build_tree_nocollect(heap, cache, depth - 1, v));
    }
    node.raw()
}

#[test]
fn stats_track_pauses_and_peaks() {
    let heap = heap(HeapConfig::default());
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    for _ in 0..3 {
        for _ in 0..10_000 {
            alloc_struct(&heap, &mut cache, PLAIN, &mut roots);
        }
        collect(&heap, &mut cache, &mut roots);
    }
    let s = heap.stats();
    assert_eq!(s.collections, 3);
    assert!(s.max_pause > std::time::Duration::ZERO && s.total_pause >= s.max_pause);
    assert_eq!(s.objects_allocated, 30_000);
    assert_eq!(s.bytes_allocated, 30_000 * 48);
    assert!(s.peak_heap_bytes >= 10_000 * 48);
    assert!(s.peak_resident_bytes.is_some());
    assert!(is_object(roots.first().copied().unwrap_or(8)));
}

#[test]
fn dropped_cache_returns_its_spans() {
    let heap = heap(HeapConfig::default());
    let mut roots = Vec::new();
    let mut keep = Vec::new();
    {
        let mut c = heap.new_thread_cache();
        for _ in 0..100 {
            keep.push(heap.alloc_struct(&mut c, PAIR, false).unwrap().raw());
        }
    }
    let mut c2 = heap.new_thread_cache();
    // The second cache continues in the first one's partially used span.
    let o = heap.alloc_struct(&mut c2, PAIR, false).unwrap();
    assert_eq!(o.addr(), obj(keep[99]).addr() + 32);
    roots.extend(keep);
    collect(&heap, &mut c2, &mut roots);
    assert_eq!(heap.stats().live_objects_after_last_gc, 100);
}

mod world;
