//! Writer → reader round trips through the real `Tracer`, checked against a model heap: every event comes
//! back (per thread, in order, with its time), frees pair with allocations, the collector's live figures
//! agree with the replay, each snapshot equals the replay before it, each generation replays alone, and the
//! live set at the end equals the model heap object by object.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Op, Run, run, sample_ops};
use proptest::prelude::*;
use vmtrace::{EventKind, LiveSet, Trace, TraceConfig, replay_all, replay_generation};

fn check(r: &Run) -> Result<(), TestCaseError> {
    let trace = Trace::parse(r.bytes.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(trace.error.is_none(), "{:?}", trace.error);
    prop_assert_eq!(r.lost, 0);
    prop_assert_eq!(trace.generations.len(), r.snapshots.len() + 1);

    // 1. Every event back, per thread, in order.
    let mut got: BTreeMap<u32, Vec<(u64, EventKind)>> = BTreeMap::new();
    for g in &trace.generations {
        let mut last_ts = 0;
        for ev in g.events() {
            prop_assert!(ev.ts >= last_ts, "events out of time order");
            last_ts = ev.ts;
            if !ev.kind.is_snapshot() {
                got.entry(ev.thread).or_default().push((ev.ts, ev.kind));
            }
        }
    }
    prop_assert_eq!(&got, &r.expected);

    // 2. Snapshots: threads and objects as the model had them at each switch.
    for (g, (threads, objects)) in trace.generations[1..].iter().zip(&r.snapshots) {
        let mut snap_threads = BTreeSet::new();
        let mut snap_objects = BTreeMap::new();
        for ev in g.events().take_while(|e| e.kind.is_snapshot()) {
            match ev.kind {
                EventKind::ThreadExists { thread } => {
                    snap_threads.insert(thread);
                }
                EventKind::ObjExists { addr, size, type_id } => {
                    snap_objects.insert(addr, (size, type_id));
                }
                _ => {}
            }
        }
        prop_assert_eq!(&snap_threads, threads);
        prop_assert_eq!(&snap_objects, objects);
    }

    // 3. Pairing, GC agreement and snapshot coherence over the whole trace.
    let (live, disagreements) = replay_all(&trace, |_, _, _, _| {}).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(disagreements.is_empty(), "{disagreements:?}");

    // 4. Conservation: the replayed live set is the model heap, object by object.
    let replayed: BTreeMap<u64, (u64, u32)> = live.iter().map(|(a, o)| (a, (o.size, o.type_id))).collect();
    prop_assert_eq!(&replayed, &r.model.objects);

    // 5. Each generation alone ends with the same live set as the replay of everything up to it.
    let mut running = LiveSet::new();
    for g in &trace.generations {
        for ev in g.events() {
            running.apply(&ev).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let alone = replay_generation(g).map_err(|e| TestCaseError::fail(format!("gen {}: {e}", g.number)))?;
        let a: BTreeMap<u64, (u64, u32)> = alone.iter().map(|(a, o)| (a, (o.size, o.type_id))).collect();
        let b: BTreeMap<u64, (u64, u32)> = running.iter().map(|(a, o)| (a, (o.size, o.type_id))).collect();
        prop_assert_eq!(a, b, "generation {} alone", g.number);
        // Every GC in it agrees with the replay of it alone, too.
        let mut lone = LiveSet::new();
        for ev in g.events() {
            lone.apply(&ev).unwrap();
            if let EventKind::GcEnd(e) = ev.kind {
                prop_assert_eq!((e.live_bytes, e.live_objects), (lone.bytes(), lone.objects() as u64));
            }
        }
    }

    // 6. Tables: the last generation names every type and site defined.
    let last = trace.generations.last().unwrap();
    for (id, name) in &r.model.types {
        prop_assert_eq!(&last.types[id].name, name);
    }
    for (id, func) in &r.model.sites {
        prop_assert_eq!(&last.sites[id].function, func);
    }
    Ok(())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u32>().prop_map(|n| Op::Tick(n % 100_000)),
        6 => (any::<u8>(), 1u8..64, any::<u8>(), 1u8..40, any::<u16>())
            .prop_map(|(thread, words, ty, run, at)| Op::Alloc { thread, words, ty, run, at }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(thread, site)| Op::SetSite { thread, site }),
        2 => (any::<u8>(), any::<u64>()).prop_map(|(thread, seed)| Op::Gc { thread, seed }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(thread, pages)| Op::SpanAlloc { thread, pages }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(thread, pick)| Op::SpanFree { thread, pick }),
        1 => (any::<u8>(), any::<u32>()).prop_map(|(thread, size)| Op::StackAlloc { thread, size }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(thread, pick)| Op::StackFree { thread, pick }),
        1 => Just(Op::Advance),
        1 => any::<u8>().prop_map(|id| Op::DefineType { id }),
        1 => any::<u8>().prop_map(|id| Op::DefineSite { id }),
        1 => any::<u8>().prop_map(|thread| Op::ThreadEnd { thread }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_heaps_round_trip(ops in prop::collection::vec(op(), 0..120)) {
        check(&run(&ops, TraceConfig::default()))?;
    }
}

#[test]
fn sample_workload_round_trips() {
    let r = run(&sample_ops(), TraceConfig::default());
    check(&r).unwrap();
}

#[test]
fn many_full_batches_round_trip() {
    // Enough events to fill several 64 KiB batches per thread, with a generation switch in the middle.
    let mut ops = Vec::new();
    for i in 0..400u16 {
        ops.push(Op::Alloc { thread: (i % 2) as u8, words: 4, ty: 1, run: 250, at: i * 150 });
        if i % 50 == 49 {
            ops.push(Op::Gc { thread: 0, seed: u64::from(i) });
        }
        if i == 200 {
            ops.push(Op::Advance);
        }
    }
    let r = run(&ops, TraceConfig::default());
    check(&r).unwrap();
    let trace = Trace::parse(r.bytes.clone()).unwrap();
    assert!(trace.generations.iter().map(|g| g.batches.len()).sum::<usize>() > 6);
    let per_event = r.bytes.len() as f64 / trace.events() as f64;
    assert!(per_event <= 4.0, "{per_event:.2} bytes/event");
}
