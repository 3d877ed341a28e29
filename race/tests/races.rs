//! What is and is not a race, on real OS threads in a fixed order (see `common`). Every racy case runs in
//! both orders (A then B, B then A) and with the thread roles swapped. Negative controls: run with
//! `VMRACE_DEBUG=ignore-acquire|ignore-spawn|keep-on-free|no-dedupe|whole-granule` and the tests of that
//! behaviour fail.

mod common;

use common::*;
use vmrace::AccessKind::{self, AtomicRead, AtomicWrite, Read, Write};
use vmrace::{Detector, Site};

const SIZES: [u8; 4] = [1, 2, 4, 8];

/// Both orders of a conflicting pair, each with both thread roles: the later access reports the earlier.
fn assert_races_both_ways(x: (AccessKind, u64, u8), y: (AccessKind, u64, u8)) {
    for swap in [false, true] {
        for (p, q) in [(x, y), (y, x)] {
            let det = Detector::new();
            let out = two_threads(&det, &[access(p.0, p.1, p.2, 10)], &[access(q.0, q.1, q.2, 20)], swap);
            expect_one_race(&out, (q.0, q.1, q.2, 20), (p.0, p.1, p.2, 10));
            assert_eq!(det.stats().races, 1);
        }
    }
}

fn assert_no_race_both_ways(x: (AccessKind, u64, u8), y: (AccessKind, u64, u8)) {
    for swap in [false, true] {
        for (p, q) in [(x, y), (y, x)] {
            let det = Detector::new();
            expect_no_race(&two_threads(&det, &[access(p.0, p.1, p.2, 10)], &[access(q.0, q.1, q.2, 20)], swap));
        }
    }
}

#[test]
fn write_write_read_write_write_read_on_every_size() {
    for size in SIZES {
        let addr = 64 + 8 - u64::from(size); // aligned to `size`, at the end of a granule
        assert_races_both_ways((Write, addr, size), (Write, addr, size));
        assert_races_both_ways((Read, addr, size), (Write, addr, size));
    }
}

#[test]
fn reads_never_race_with_reads() {
    for size in SIZES {
        assert_no_race_both_ways((Read, 128, size), (Read, 128, size));
    }
}

#[test]
fn partial_overlap_reports_the_real_ranges() {
    assert_races_both_ways((Write, 2, 4), (Read, 0, 8));
    assert_races_both_ways((Write, 3, 1), (Write, 0, 4));
    assert_races_both_ways((Read, 6, 2), (Write, 7, 1));
}

#[test]
fn unaligned_access_spanning_two_granules() {
    // 4 bytes at 6 cover 6..10: bytes of granules 0 and 8.
    assert_races_both_ways((Write, 6, 4), (Read, 9, 1));
    assert_races_both_ways((Write, 6, 4), (Write, 4, 4));
    assert_races_both_ways((Write, 7, 8), (Read, 14, 2));
    // Two spanning accesses overlapping in both granules are still one race.
    assert_races_both_ways((Write, 6, 4), (Write, 5, 8));
    assert_no_race_both_ways((Write, 6, 4), (Write, 10, 4));
    assert_no_race_both_ways((Write, 6, 4), (Read, 2, 4));
}

#[test]
fn adjacent_bytes_never_race() {
    for size in SIZES {
        let s = u64::from(size);
        for addr in [0, 16 - s, 13] {
            assert_no_race_both_ways((Write, addr, size), (Write, addr + s, size));
            assert_no_race_both_ways((Write, addr + s, size), (Write, addr, size));
        }
    }
    // Byte neighbours within one granule, every one of the 8 positions.
    for byte in 0..7 {
        assert_no_race_both_ways((Write, 32 + byte, 1), (Write, 33 + byte, 1));
    }
}

#[test]
fn atomics_race_only_with_plain_accesses() {
    for size in SIZES {
        assert_no_race_both_ways((AtomicWrite, 8, size), (AtomicWrite, 8, size));
        assert_no_race_both_ways((AtomicRead, 8, size), (AtomicWrite, 8, size));
        assert_no_race_both_ways((AtomicRead, 8, size), (Read, 8, size));
        assert_races_both_ways((AtomicWrite, 8, size), (Write, 8, size));
        assert_races_both_ways((AtomicWrite, 8, size), (Read, 8, size));
        assert_races_both_ways((AtomicRead, 8, size), (Write, 8, size));
    }
}

#[test]
fn spawn_orders_the_parents_past_before_the_child() {
    let det = Detector::new();
    let mut main = det.main_thread();
    assert!(det.access(&mut main, 0, 8, Write, Site(1)).is_none());
    let mut child = det.spawn(&mut main);
    let joined = std::thread::scope(|s| s.spawn(|| det.access(&mut child, 0, 8, Write, Site(2))).join());
    assert!(joined.expect("child").is_none(), "the spawn edge orders main's write before the child's");
    // But main's accesses after the spawn are not ordered with the child's.
    let race = det.access(&mut main, 0, 8, Read, Site(3)).expect("main's later read races with the child");
    assert_eq!((race.previous.thread, race.previous.site), (child.id(), Site(2)));
}

#[test]
fn exit_and_join_order_the_childs_work_before_the_joiner() {
    for join in [true, false] {
        let det = Detector::new();
        let mut main = det.main_thread();
        let mut child = det.spawn(&mut main);
        let id = child.id();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(det.access(&mut child, 40, 4, Write, Site(1)).is_none());
                det.exit(child);
            });
        });
        if join {
            det.join(&mut main, id);
        }
        let race = det.access(&mut main, 40, 4, Write, Site(2));
        assert_eq!(race.is_some(), !join, "join={join}: {race:?}");
    }
}

#[test]
fn release_acquire_through_a_sync_address_orders_accesses() {
    let sync = 0x1000;
    for (a_sync, b_sync) in [
        (Step::Release(sync), Step::Acquire(sync)),
        (Step::AcqRel(sync), Step::AcqRel(sync)),
        (Step::Release(sync), Step::AcqRel(sync)),
        (Step::AcqRel(sync), Step::Acquire(sync)),
    ] {
        for swap in [false, true] {
            let det = Detector::new();
            let out = two_threads(&det, &[write(0, 8, 1), a_sync], &[b_sync, write(0, 8, 2), read(4, 1, 3)], swap);
            expect_no_race(&out);
        }
    }
}

#[test]
fn sync_on_another_address_or_before_the_access_does_not_order() {
    let det = Detector::new();
    let out =
        two_threads(&det, &[write(0, 8, 1), Step::Release(0x1000)], &[Step::Acquire(0x2000), write(0, 8, 2)], false);
    expect_one_race(&out, (Write, 0, 8, 2), (Write, 0, 8, 1));
    // A write after the release is in a new epoch: the acquirer is not ordered after it.
    let det = Detector::new();
    let first = [write(0, 8, 1), Step::Release(0x1000), write(0, 8, 3)];
    let out = two_threads(&det, &first, &[Step::Acquire(0x1000), write(0, 8, 2)], false);
    expect_one_race(&out, (Write, 0, 8, 2), (Write, 0, 8, 3));
}

#[test]
fn read_shared_then_write_races_with_each_unordered_reader() {
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut readers: Vec<_> = (0..3).map(|_| det.spawn(&mut main)).collect();
    let mut writer = det.spawn(&mut main);
    let det = &det;
    std::thread::scope(|s| {
        for (i, r) in readers.iter_mut().enumerate() {
            s.spawn(move || assert!(det.access(r, 16, 4, Read, Site(10 + i as u64)).is_none()));
        }
    });
    // The writer is ordered after readers 0 and 1 only: it must report reader 2.
    for r in &mut readers[..2] {
        det.release(r, 0x500);
    }
    det.acquire(&mut writer, 0x500);
    let race = det.access(&mut writer, 16, 4, Write, Site(20)).expect("races with reader 2");
    assert_eq!(race.previous.site, Site(12));
    assert!(det.access(&mut writer, 16, 4, Write, Site(20)).is_none(), "reported once");
}

#[test]
fn each_site_pair_is_reported_once_in_either_order() {
    let det = Detector::new();
    // Same two sites on five different addresses, then the same pair with the roles reversed.
    let first: Vec<_> = (0..5).map(|i| write(i * 64, 4, 1)).chain((0..5).map(|i| write(1000 + i * 64, 4, 2))).collect();
    let second: Vec<_> =
        (0..5).map(|i| write(i * 64, 4, 2)).chain((0..5).map(|i| write(1000 + i * 64, 4, 1))).collect();
    let out = two_threads(&det, &first, &second, false);
    assert_eq!(out.second.len(), 1, "{:?}", out.second);
    // A different site on the same addresses is a new pair.
    let mut main2 = det.main_thread();
    let mut other = det.spawn(&mut main2);
    assert!(det.access(&mut other, 0, 4, Write, Site(3)).is_some());
    assert_eq!(det.stats().races, 2);
}

#[test]
fn reset_range_makes_reuse_race_free() {
    for reset in [true, false] {
        let det = Detector::new();
        let mut main = det.main_thread();
        let mut a = det.spawn(&mut main);
        let mut b = det.spawn(&mut main);
        // An object at 0x100..0x120 written by A, dead; the slot is handed to B as a new object.
        for field in 0..4 {
            det.access(&mut a, 0x100 + field * 8, 8, Write, Site(1));
        }
        if reset {
            det.reset_range(0x100, 0x20);
        }
        let race = det.access(&mut b, 0x110, 8, Write, Site(2));
        assert_eq!(race.is_some(), !reset, "reset={reset}");
    }
}

#[test]
fn free_range_drops_sync_objects_and_shadow() {
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut t = det.spawn(&mut main);
    for obj in 0..100u64 {
        let base = 0x10_0000 + obj * 48;
        det.access(&mut t, base + 8, 8, AtomicWrite, Site(1));
        det.acq_rel(&mut t, base + 8);
        det.release(&mut t, base + 16);
        det.access(&mut t, base + 44, 4, Write, Site(2));
    }
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules), (200, 200));
    assert!(stats.shadow_bytes > 0 && stats.sync_bytes > 0);
    // Something just outside the range stays.
    det.access(&mut t, 0x10_0000 - 1, 1, Write, Site(3));
    det.release(&mut t, 0x10_0000 + 100 * 48);
    det.free_range(&main, 0x10_0000, 100 * 48);
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules), (1, 1));
    det.free_range(&main, 0, u64::MAX);
    let stats = det.stats();
    assert_eq!((stats.live_sync_objects, stats.shadow_granules, stats.sync_bytes), (0, 0, 0));
}

#[test]
fn bulk_ranges_are_checked_granule_by_granule() {
    let det = Detector::new();
    let mut main = det.main_thread();
    let mut a = det.spawn(&mut main);
    let mut b = det.spawn(&mut main);
    assert!(det.access_range(&mut a, 3, 100, Write, Site(1)).is_none());
    let race = det.access(&mut b, 50, 1, Read, Site(2)).expect("inside the fill");
    assert_eq!((race.previous.addr, race.previous.size), (48, 8));
    assert!(det.access(&mut b, 103, 8, Write, Site(3)).is_none(), "just past the fill");
    assert!(det.access(&mut b, 0, 3, Write, Site(4)).is_none(), "just before the fill");
}

#[test]
fn odd_inputs_do_not_panic() {
    let det = Detector::new();
    let mut main = det.main_thread();
    assert!(det.access(&mut main, 0, 0, Write, Site(0)).is_none());
    assert!(det.access(&mut main, u64::MAX - 2, 8, Write, Site(0)).is_none());
    assert!(det.access(&mut main, 12, 200, Read, Site(0)).is_none());
    det.join(&mut main, 12345);
    det.acquire(&mut main, 77);
    det.reset_range(u64::MAX - 10, 100);
    det.free_range(&main, u64::MAX - 600, u64::MAX);
    det.free_range(&main, 5, 0);
    assert_eq!(det.stats().threads, 1);
}

#[test]
fn thread_ids_are_dense_and_counted() {
    let det = Detector::new();
    let mut main = det.main_thread();
    assert_eq!(main.id(), 0);
    let kids: Vec<_> = (0..3).map(|_| det.spawn(&mut main)).collect();
    assert_eq!(kids.iter().map(|k| k.id()).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(det.stats().threads, 4);
    kids.into_iter().for_each(|k| det.exit(k));
    assert_eq!(det.stats().threads, 1);
}
