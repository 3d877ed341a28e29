//! Running accesses on real OS threads in a fixed order that the detector does not know about: thread A
//! runs its accesses, then sends on a channel, then thread B runs its own. The channel orders them in
//! real time only; no happens-before edge reaches the detector unless a test adds one.

use std::sync::mpsc;
use std::thread;

use vmrace::{AccessKind, Detector, Race, Site, ThreadCtx};

/// One step a test thread takes.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Access { addr: u64, size: u8, kind: AccessKind, site: u64 },
    Release(u64),
    Acquire(u64),
    AcqRel(u64),
}

pub fn write(addr: u64, size: u8, site: u64) -> Step {
    Step::Access { addr, size, kind: AccessKind::Write, site }
}

pub fn read(addr: u64, size: u8, site: u64) -> Step {
    Step::Access { addr, size, kind: AccessKind::Read, site }
}

pub fn access(kind: AccessKind, addr: u64, size: u8, site: u64) -> Step {
    Step::Access { addr, size, kind, site }
}

/// Runs `steps` as `ctx`'s thread; returns the races its accesses reported.
pub fn run(det: &Detector, ctx: &mut ThreadCtx, steps: &[Step]) -> Vec<Race> {
    let mut races = Vec::new();
    for step in steps {
        match *step {
            Step::Access { addr, size, kind, site } => races.extend(det.access(ctx, addr, size, kind, Site(site))),
            Step::Release(s) => det.release(ctx, s),
            Step::Acquire(s) => det.acquire(ctx, s),
            Step::AcqRel(s) => det.acq_rel(ctx, s),
        }
    }
    races
}

/// The races reported by each of two threads spawned from a fresh main thread, where the first runs all
/// of `first` before the second starts `second`.
pub struct Outcome {
    pub first: Vec<Race>,
    pub second: Vec<Race>,
    pub first_id: u32,
    pub second_id: u32,
}

/// Spawns two children of main (ids 1 and 2). With `swap`, child 2 goes first, so every case is also
/// run with the thread roles reversed.
pub fn two_threads(det: &Detector, first: &[Step], second: &[Step], swap: bool) -> Outcome {
    let mut main = det.main_thread();
    let one = det.spawn(&mut main);
    let two = det.spawn(&mut main);
    let (mut a, mut b) = if swap { (two, one) } else { (one, two) };
    let (first_id, second_id) = (a.id(), b.id());
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        let first_thread = s.spawn(move || {
            let races = run(det, &mut a, first);
            tx.send(()).expect("the second thread waits");
            races
        });
        let second_thread = s.spawn(move || {
            rx.recv().expect("the first thread finishes");
            run(det, &mut b, second)
        });
        let first = first_thread.join().expect("first thread");
        let second = second_thread.join().expect("second thread");
        Outcome { first, second, first_id, second_id }
    })
}

/// The one race the second thread must report in `outcome`, checked against the given ends.
pub fn expect_one_race(outcome: &Outcome, current: (AccessKind, u64, u8, u64), previous: (AccessKind, u64, u8, u64)) {
    assert!(outcome.first.is_empty(), "first thread reported {:?}", outcome.first);
    assert_eq!(outcome.second.len(), 1, "second thread must report exactly one race: {:?}", outcome.second);
    let race = &outcome.second[0];
    let ends = |a: &vmrace::Access| (a.kind, a.addr, a.size, a.site.0);
    assert_eq!(ends(&race.current), current, "current access of {race:?}");
    assert_eq!(ends(&race.previous), previous, "previous access of {race:?}");
    assert_eq!((race.current.thread, race.previous.thread), (outcome.second_id, outcome.first_id));
}

pub fn expect_no_race(outcome: &Outcome) {
    assert!(
        outcome.first.is_empty() && outcome.second.is_empty(),
        "false race: {:?} {:?}",
        outcome.first,
        outcome.second
    );
}
