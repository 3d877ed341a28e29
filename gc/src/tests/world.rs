//! Stopping the world with real OS threads (`world.rs`): a parked thread's roots and a native thread's
//! roots are scanned, concurrent stop requests neither deadlock nor lose a wake-up, and threads that
//! register, leave native or drop their link during a stop wait for it or stay out of its way. All run
//! with `verify` on. `skip-stopped-roots` (an [`InjectedBug`]) is the negative control: without the other
//! threads' roots, the same checks see their objects freed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::*;

/// Builds a list of `n` nodes (values 1..=n, head last allocated) without collecting; returns the head and
/// every node's address.
fn list(heap: &Heap, cache: &mut ThreadCache, n: u64) -> (u64, Vec<usize>) {
    let mut head = 0;
    let mut nodes = Vec::new();
    for v in 1..=n {
        let node = heap.alloc_struct(cache, NODE, false).unwrap();
        node.store_u64(8, head);
        node.store_u64(16, v);
        head = node.raw();
        nodes.push(node.addr());
    }
    (head, nodes)
}

/// Sum of the values of a list of at most `max_len` nodes (a longer one has freed nodes reused in it).
fn list_sum(mut raw: u64, max_len: u64) -> u64 {
    let (mut sum, mut len) = (0, 0);
    while raw != 0 {
        len += 1;
        assert!(len <= max_len, "the list is longer than {max_len} nodes: its nodes were freed and reused");
        sum += obj(raw).load_u64(16);
        raw = obj(raw).load_u64(8);
    }
    sum
}

fn garbage(heap: &Heap, cache: &mut ThreadCache, n: usize) {
    for _ in 0..n {
        heap.alloc_struct(cache, PLAIN, false).unwrap();
    }
}

/// What the collecting thread saw of the other thread's objects.
struct OtherThread {
    /// Objects rooted only by the other thread that the collection freed (0 when its roots were scanned).
    freed: usize,
    live_after_gc: usize,
    expected_live: usize,
    objects_freed: u64,
}

const B_NODES: u64 = 1000;
const A_DEPTH: u32 = 8;
const A_NODES: usize = (1 << A_DEPTH) - 1;

/// A heap where only the test's own stop collects (no pacing), so every free comes from that collection.
fn world_test_heap(inject: Option<InjectedBug>) -> Heap {
    heap(HeapConfig { inject, gc_percent: None, ..verify_config() })
}

/// Scenario (a): thread B builds a list rooted only in its own root set, makes garbage, then runs a
/// safepoint loop (some more garbage, poll the stop flag, park when set). This thread collects with only its
/// own tree as roots; B's list must survive through the roots B published when it parked.
fn collect_while_the_other_parks(inject: Option<InjectedBug>) -> OtherThread {
    let heap = Arc::new(world_test_heap(inject));
    let rec = Arc::new(Recorder::default());
    heap.add_observer(rec.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let b = {
        let (heap, done) = (heap.clone(), done.clone());
        thread::spawn(move || {
            let link = heap.register_mutator();
            let mut cache = heap.new_thread_cache();
            let (head, nodes) = list(&heap, &mut cache, B_NODES);
            let mut roots = vec![head];
            garbage(&heap, &mut cache, 2000);
            ready_tx.send(nodes).unwrap();
            let (mut parks, mut made) = (0, 0);
            while !done.load(Ordering::Acquire) {
                if link.stop_flag().load(Ordering::Relaxed) {
                    link.park(&mut roots);
                    parks += 1;
                } else if made < 100_000 {
                    garbage(&heap, &mut cache, 1);
                    made += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            assert!(parks >= 1, "B never parked");
            // Under the planted bug the list was freed: do not read it.
            if inject.is_none() {
                assert_eq!(list_sum(roots[0], B_NODES), B_NODES * (B_NODES + 1) / 2);
            }
        })
    };
    let link = heap.register_mutator();
    let mut cache = heap.new_thread_cache();
    let mut next = 0;
    let mut roots = vec![tree(&heap, &mut cache, A_DEPTH, &mut next, &mut Vec::new())];
    garbage(&heap, &mut cache, 1000);
    let b_nodes = ready_rx.recv().unwrap();
    let world = heap.stop_the_world(&link, &mut roots).expect("only this thread stops the world");
    heap.collect(&world, &mut cache, &mut roots);
    drop(world);
    done.store(true, Ordering::Release);
    b.join().unwrap();
    assert_eq!(check_tree(roots[0]).1, A_NODES as u64);
    let freed = &rec.state.lock().unwrap().freed;
    let stats = heap.stats();
    OtherThread {
        freed: b_nodes.iter().filter(|a| freed.contains(a)).count(),
        live_after_gc: stats.live_objects_after_last_gc,
        expected_live: A_NODES + B_NODES as usize,
        objects_freed: stats.objects_freed,
    }
}

#[test]
fn a_parked_threads_roots_are_scanned_and_its_garbage_freed() {
    let seen = collect_while_the_other_parks(None);
    assert_eq!(seen.freed, 0);
    assert_eq!(seen.live_after_gc, seen.expected_live);
    assert!(seen.objects_freed >= 3000, "garbage of both threads: {}", seen.objects_freed);
}

/// Scenario (b): B builds its list, goes native with it published and blocks (as in a host call). The
/// collection must not wait for B, must scan B's roots, and B's `leave_native` must wait for the release.
fn collect_while_the_other_is_native(inject: Option<InjectedBug>) -> OtherThread {
    let heap = Arc::new(world_test_heap(inject));
    let rec = Arc::new(Recorder::default());
    heap.add_observer(rec.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let left_native = Arc::new(AtomicBool::new(false));
    let b = {
        let (heap, left_native) = (heap.clone(), left_native.clone());
        thread::spawn(move || {
            let link = heap.register_mutator();
            let mut cache = heap.new_thread_cache();
            let (head, nodes) = list(&heap, &mut cache, B_NODES);
            let mut roots = vec![head];
            garbage(&heap, &mut cache, 2000);
            // SAFETY: `roots` is not touched until `leave_native` returns.
            unsafe { link.enter_native(&mut roots) };
            ready_tx.send(nodes).unwrap();
            go_rx.recv().unwrap(); // the "host call"
            link.leave_native();
            left_native.store(true, Ordering::SeqCst);
            if inject.is_none() {
                assert_eq!(list_sum(roots[0], B_NODES), B_NODES * (B_NODES + 1) / 2);
            }
        })
    };
    let link = heap.register_mutator();
    let mut cache = heap.new_thread_cache();
    let mut next = 0;
    let mut roots = vec![tree(&heap, &mut cache, A_DEPTH, &mut next, &mut Vec::new())];
    let b_nodes = ready_rx.recv().unwrap();
    // B stays blocked until after this collection: if the stop waited for B, this would hang.
    let world = heap.stop_the_world(&link, &mut roots).expect("only this thread stops the world");
    heap.collect(&world, &mut cache, &mut roots);
    go_tx.send(()).unwrap();
    thread::sleep(Duration::from_millis(30));
    assert!(!left_native.load(Ordering::SeqCst), "B left native while the world was stopped");
    drop(world);
    b.join().unwrap();
    assert!(left_native.load(Ordering::SeqCst));
    let freed = &rec.state.lock().unwrap().freed;
    let stats = heap.stats();
    OtherThread {
        freed: b_nodes.iter().filter(|a| freed.contains(a)).count(),
        live_after_gc: stats.live_objects_after_last_gc,
        expected_live: A_NODES + B_NODES as usize,
        objects_freed: stats.objects_freed,
    }
}

#[test]
fn a_native_thread_does_not_block_a_collection_and_its_roots_are_scanned() {
    let seen = collect_while_the_other_is_native(None);
    assert_eq!(seen.freed, 0);
    assert_eq!(seen.live_after_gc, seen.expected_live);
    assert!(seen.objects_freed >= 2000, "B's garbage: {}", seen.objects_freed);
}

/// The negative control: with the other thread's published roots left out, both scenarios see its list
/// freed, so the checks above would fail.
#[test]
fn without_the_published_roots_the_other_threads_objects_are_freed() {
    for seen in [
        collect_while_the_other_parks(Some(InjectedBug::SkipStoppedRoots)),
        collect_while_the_other_is_native(Some(InjectedBug::SkipStoppedRoots)),
    ] {
        assert_eq!(seen.freed, B_NODES as usize);
        assert_eq!(seen.live_after_gc, A_NODES);
    }
}

/// Scenario (c): every thread allocates into a list only it roots and asks for a collection every round;
/// the losers park inside `stop_the_world` (and get `None`), and between requests every thread polls its
/// stop flag. Hundreds of rounds must finish (no deadlock, no lost wake-up) with every list intact.
#[test]
fn concurrent_stop_requests_neither_deadlock_nor_lose_roots() {
    const THREADS: usize = 3;
    const ROUNDS: usize = 300;
    let heap = Arc::new(heap(verify_config()));
    let collections = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (heap, collections, start) = (heap.clone(), collections.clone(), start.clone());
            thread::spawn(move || {
                let link = heap.register_mutator();
                let mut cache = heap.new_thread_cache();
                let mut roots = vec![0u64];
                let mut len = 0u64;
                let (mut won, mut lost) = (0, 0);
                start.wait();
                for round in 0..ROUNDS {
                    // Push a node, drop the list's tail now and then; poll at every "safepoint".
                    for _ in 0..5 {
                        let node = heap.alloc_struct(&mut cache, NODE, false).unwrap();
                        node.store_u64(8, roots[0]);
                        node.store_u64(16, t as u64 * 1_000_000 + len + 1);
                        roots[0] = node.raw();
                        len += 1;
                        garbage(&heap, &mut cache, 3);
                        if link.stop_flag().load(Ordering::Relaxed) {
                            link.park(&mut roots);
                        }
                    }
                    if round % 50 == 49 {
                        roots[0] = 0;
                        len = 0;
                    }
                    match heap.stop_the_world(&link, &mut roots) {
                        Some(world) => {
                            heap.collect(&world, &mut cache, &mut roots);
                            won += 1;
                        }
                        None => lost += 1,
                    }
                    let base = t as u64 * 1_000_000;
                    assert_eq!(list_sum(roots[0], len), len * base + len * (len + 1) / 2, "thread {t} round {round}");
                }
                collections.fetch_add(won, Ordering::Relaxed);
                (won, lost)
            })
        })
        .collect();
    let mut lost_total = 0;
    for h in handles {
        let (won, lost) = h.join().unwrap();
        assert_eq!(won + lost, ROUNDS);
        lost_total += lost;
    }
    assert_eq!(heap.stats().collections, collections.load(Ordering::Relaxed) as u64);
    eprintln!("{} stop requests, {lost_total} found the world already stopping", THREADS * ROUNDS);
}

#[test]
fn park_without_a_stop_and_park_by_the_stopper_return_at_once() {
    let heap = heap(HeapConfig::default());
    let link = heap.register_mutator();
    let mut roots = Vec::new();
    assert!(!link.stop_flag().load(Ordering::Relaxed));
    link.park(&mut roots);
    let world = heap.stop_the_world(&link, &mut roots).unwrap();
    assert_eq!(world.stopper(), link.id());
    link.park(&mut roots);
    drop(world);
    // Stale flags are cleared at the release, and the world can be stopped again.
    assert!(!link.stop_flag().load(Ordering::Relaxed));
    assert!(heap.stop_the_world(&link, &mut roots).is_some());
}

/// A running mutator that drops its link (and cache) instead of parking lets a waiting stop complete.
#[test]
fn a_mutator_dropped_during_a_stop_does_not_block_it() {
    let heap = Arc::new(heap(verify_config()));
    let (flagged_tx, flagged_rx) = mpsc::channel();
    let b = {
        let heap = heap.clone();
        thread::spawn(move || {
            let link = heap.register_mutator();
            let mut cache = heap.new_thread_cache();
            garbage(&heap, &mut cache, 500);
            flagged_tx.send(()).unwrap();
            while !link.stop_flag().load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            drop(cache);
            drop(link);
        })
    };
    let link = heap.register_mutator();
    let mut cache = heap.new_thread_cache();
    let mut roots = Vec::new();
    flagged_rx.recv().unwrap();
    let world = heap.stop_the_world(&link, &mut roots).expect("only this thread stops the world");
    heap.collect(&world, &mut cache, &mut roots);
    heap.finish_sweep(&world, &cache);
    drop(world);
    b.join().unwrap();
    assert_eq!(heap.stats().objects_freed, 500);
    // The dropped mutator is gone: stopping again does not wait for it.
    assert!(heap.stop_the_world(&link, &mut roots).is_some());
}

/// A thread registering while the world is stopped starts running only after the release.
#[test]
fn registering_waits_for_the_release() {
    let heap = Arc::new(heap(HeapConfig::default()));
    let link = heap.register_mutator();
    let registered = Arc::new(AtomicBool::new(false));
    let world = heap.stop_the_world(&link, &mut Vec::new()).unwrap();
    let c = {
        let (heap, registered) = (heap.clone(), registered.clone());
        thread::spawn(move || {
            let link = heap.register_mutator();
            registered.store(true, Ordering::SeqCst);
            link.id()
        })
    };
    thread::sleep(Duration::from_millis(30));
    assert!(!registered.load(Ordering::SeqCst), "a mutator started running while the world was stopped");
    drop(world);
    assert_ne!(c.join().unwrap(), link.id());
    assert!(registered.load(Ordering::SeqCst));
}

#[test]
#[should_panic(expected = "not running")]
fn parking_while_native_panics() {
    let heap = heap(HeapConfig::default());
    let link = heap.register_mutator();
    let mut roots = Vec::new();
    // SAFETY: `roots` outlives the native section and is not touched in it.
    unsafe { link.enter_native(&mut roots) };
    link.park(&mut Vec::new());
}
