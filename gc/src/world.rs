//! Stopping the world: how a mutator that wants to collect gets every other mutator of the heap out of the
//! way, and how the collector finds their roots. Modelled on the Go runtime's `stopTheWorldWithSema`
//! (`proc.go`: `sched.gcwaiting`, `preemptall`, `sched.stopwait`/`stopnote`, Ps in `_Psyscall` taken as
//! stopped, `exitsyscall` waiting while the world is stopped), with threads instead of Ps and one mutex
//! instead of a lock-free status word.
//!
//! # Data structures
//!
//! - **World** (`World`, one per heap): under one mutex, the list of registered mutators with their status,
//!   the number of running ones, and the stopper (the mutator stopping the world, if any). Two condition
//!   variables: `all_stopped` (the stopper waits there for the last running mutator) and `released` (stopped
//!   mutators, and threads that want to run, wait there for the end of the stop).
//! - **Mutator record** (`MutatorRecord`, shared by the world and the thread's [`MutatorLink`]): the id and
//!   the **stop flag**, the one word the thread reads without the lock. The interpreter (and JIT code later)
//!   loads it with `Relaxed` at every safepoint; that load is the whole cost of all this while nobody
//!   collects.
//! - **Status** of a mutator (`MutatorStatus`), changed only under the mutex:
//!   - *running*: executing; may allocate and read or write objects; its roots are private.
//!   - *parked*: stopped at a safepoint inside [`MutatorLink::park`] (or inside [`crate::Heap::stop_the_world`]
//!     after losing the race to stop the world); its root set is published until the world is released.
//!   - *native*: between [`MutatorLink::enter_native`] and [`MutatorLink::leave_native`] (a host call, or
//!     idle between calls): it does not touch the heap, counts as stopped at any time, and its root set is
//!     published the whole time. A link being dropped is native with no roots for as long as its drop waits.
//! - **Stopped world** ([`StoppedWorld`]): the token the stopper gets. Only `World::stop` makes one; the
//!   collection and the heap walks demand it; dropping it releases the world.
//!
//! # Stopping the world ([`crate::Heap::stop_the_world`])
//!
//! 1. Lock the world. If another mutator is already stopping it, park (publish our roots, count as stopped,
//!    wait for the release) and return `None`: the caller retries its allocation, which may no longer need a
//!    collection.
//! 2. Become the stopper; set the stop flag of every other running mutator.
//! 3. While another mutator is running, wait on `all_stopped`. Each running mutator sees its flag at its
//!    next safepoint and parks, enters native, or drops its link; each of these decrements the running count
//!    under the mutex and signals the stopper when it was the last.
//! 4. Return the token. With one mutator, steps 1–4 are an uncontended lock and unlock: no wait, no syscall.
//! 5. Dropping the token: clear the stopper and every stop flag; wake the waiters (only if there are any,
//!    so a single mutator pays no wake-up syscall).
//!
//! # Invariants
//!
//! - A mutator becomes running only under the mutex while no stop is in progress (`stopper` is `None`):
//!   registering, leaving native, and the end of a park all wait for the release first. So from the moment
//!   the stopper sees the running count at one (itself) until it drops the token, no other thread touches
//!   the heap.
//! - `running` is the number of mutators in *running*; the stopper is one of them for the whole stop.
//! - A published root set is valid from the moment it is published until its owner, after the release,
//!   takes the mutex again to return from `park`, `leave_native` or the link's drop, and the owner does not
//!   touch it meanwhile. The collector reads published root sets only while it holds the token, that is
//!   before the release; the mutex hand-offs (publish → stop completes; release → owner resumes) order the
//!   owner's accesses before and after the collector's.
//! - Stop flags are hints: set only for running mutators during a stop, cleared at the release. A park that
//!   finds no stop in progress (the flag was stale) returns at once; one that finds a stop whose stopper is
//!   the caller itself also returns at once.
//! - Lock order: the world mutex is never held while calling out or taking a heap lock, and no heap lock is
//!   held while waiting in here (a mutator parks from a safepoint, outside any heap call).
//!
//! # Rules for the VM
//!
//! - Every thread that allocates or touches objects has a [`MutatorLink`] and uses the heap only while
//!   running. Poll [`MutatorLink::stop_flag`] at safepoints often enough that a stop does not wait long
//!   (function entries and loop back-edges); park with the frames' roots when it is set.
//! - Go native around anything that may block or last (host calls, waiting for work).
//! - Register a mutator from a thread that is not a running mutator of the same heap (typically the new
//!   thread itself, or the parent while it is native), and never while holding a [`StoppedWorld`]: a
//!   registration waits for a stop in progress to end, and a running registrar would be waited for in turn.
//! - A stopper gets no priority over the next one: a mutator that keeps stopping the world can keep another
//!   one parked (fine for collections, which are short and paced).

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::roots::RootSet;

/// A root set its owner lent to the world while it is parked or native.
#[derive(Clone, Copy)]
struct PublishedRoots(NonNull<dyn RootSet>);

// SAFETY: the pointer is published by its owner for exactly the time it is parked or native, and the owner
// does not touch the root set meanwhile; only the stopper (holding the `StoppedWorld` token, so before the
// release) dereferences it, and the world mutex hand-offs give happens-before in both directions (see the
// module comment). Moving the pointer value between threads is therefore lending the object, as a scoped
// thread borrowing it would.
unsafe impl Send for PublishedRoots {}

impl PublishedRoots {
    /// # Safety
    /// `roots` must stay valid, and must not be used by anyone but the collector, until its owner returns
    /// from the park, `leave_native` or drop that publishes it (the lifetime is erased here).
    unsafe fn new<'r>(roots: *mut (dyn RootSet + 'r)) -> PublishedRoots {
        let roots = NonNull::new(roots).expect("gc: a null root set was published");
        // SAFETY: only the trait object's lifetime bound changes (same fat-pointer layout); the caller keeps
        // the object alive for as long as the world can reach the pointer.
        PublishedRoots(unsafe { std::mem::transmute::<NonNull<dyn RootSet + 'r>, NonNull<dyn RootSet>>(roots) })
    }
}

/// What a registered mutator is doing; see the module comment.
enum MutatorStatus {
    Running,
    Parked(PublishedRoots),
    /// `None`: a link being dropped (it has no roots any more).
    Native(Option<PublishedRoots>),
}

/// The part of a mutator that its own thread reads without the world's lock.
struct MutatorRecord {
    id: u32,
    /// Set while a stop wants this (running) mutator to stop; see [`MutatorLink::stop_flag`].
    stop_requested: AtomicBool,
}

struct MutatorEntry {
    record: Arc<MutatorRecord>,
    status: MutatorStatus,
}

struct WorldState {
    mutators: Vec<MutatorEntry>,
    /// Mutators whose status is `Running`.
    running: usize,
    /// The mutator stopping the world (waiting for the others, or holding the token); `None` while it runs.
    stopper: Option<u32>,
    /// The stopper is blocked on `all_stopped`.
    stopper_waiting: bool,
    /// Threads blocked on `released`.
    release_waiters: usize,
    next_id: u32,
}

impl WorldState {
    fn entry(&mut self, id: u32) -> &mut MutatorEntry {
        match self.mutators.iter_mut().find(|m| m.record.id == id) {
            Some(m) => m,
            None => panic!("gc: mutator {id} is not registered with this heap"),
        }
    }

    fn expect_running(&mut self, id: u32, what: &str) {
        if !matches!(self.entry(id).status, MutatorStatus::Running) {
            panic!("gc: mutator {id} tried to {what} while not running (parked or native)");
        }
    }
}

/// The mutators of one heap and the stop-the-world hand-off between them; see the module comment.
pub(crate) struct World {
    state: Mutex<WorldState>,
    all_stopped: Condvar,
    released: Condvar,
}

impl World {
    pub fn new() -> World {
        World {
            state: Mutex::new(WorldState {
                mutators: Vec::new(),
                running: 0,
                stopper: None,
                stopper_waiting: false,
                release_waiters: 0,
                next_id: 1,
            }),
            all_stopped: Condvar::new(),
            released: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks while a stop is in progress.
    fn wait_for_release<'a>(&self, mut st: MutexGuard<'a, WorldState>) -> MutexGuard<'a, WorldState> {
        while st.stopper.is_some() {
            st.release_waiters += 1;
            st = self.released.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.release_waiters -= 1;
        }
        st
    }

    /// Mutator `id` leaves `Running` for `status`; signals the stopper if it was the last one it waited for.
    fn stop_running(&self, st: &mut WorldState, id: u32, status: MutatorStatus) {
        st.entry(id).status = status;
        st.running -= 1;
        if st.stopper_waiting && st.running == 1 {
            self.all_stopped.notify_one();
        }
    }

    /// Mutator `id` (parked or native) runs again once no stop is in progress.
    fn resume<'a>(&self, st: MutexGuard<'a, WorldState>, id: u32) -> MutexGuard<'a, WorldState> {
        let mut st = self.wait_for_release(st);
        st.entry(id).status = MutatorStatus::Running;
        st.running += 1;
        st
    }

    /// Parks running mutator `id` with `roots` published until the stop in progress ends.
    fn park_locked(&self, mut st: MutexGuard<'_, WorldState>, id: u32, roots: &mut dyn RootSet) {
        // SAFETY: `roots` is borrowed for this whole call, which returns only after `resume` has taken the
        // status back to `Running` (the pointer is unreachable from then on); the caller does not touch it
        // meanwhile because it is blocked in here.
        let published = unsafe { PublishedRoots::new(roots) };
        self.stop_running(&mut st, id, MutatorStatus::Parked(published));
        drop(self.resume(st, id));
    }

    /// Registers a new running mutator (after any stop in progress).
    pub fn register(self: &Arc<World>) -> MutatorLink {
        let mut st = self.wait_for_release(self.state());
        let id = st.next_id;
        st.next_id += 1;
        let record = Arc::new(MutatorRecord { id, stop_requested: AtomicBool::new(false) });
        st.mutators.push(MutatorEntry { record: record.clone(), status: MutatorStatus::Running });
        st.running += 1;
        MutatorLink { world: self.clone(), record, _one_thread: PhantomData }
    }

    /// Steps 1–4 of the module comment.
    pub fn stop<'h>(&'h self, me: &'h MutatorLink, my_roots: &mut dyn RootSet) -> Option<StoppedWorld<'h>> {
        assert!(std::ptr::eq(&*me.world, self), "gc: stop_the_world with a MutatorLink of another heap");
        let id = me.id();
        let mut st = self.state();
        st.expect_running(id, "stop the world");
        assert!(st.stopper != Some(id), "gc: mutator {id} stopped the world twice");
        if st.stopper.is_some() {
            self.park_locked(st, id, my_roots);
            return None;
        }
        st.stopper = Some(id);
        for m in &st.mutators {
            if m.record.id != id && matches!(m.status, MutatorStatus::Running) {
                m.record.stop_requested.store(true, Ordering::Relaxed);
            }
        }
        while st.running > 1 {
            st.stopper_waiting = true;
            st = self.all_stopped.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.stopper_waiting = false;
        Some(StoppedWorld { world: self, stopper: me, _not_send: PhantomData })
    }

    /// Step 5 of the module comment.
    fn release(&self) {
        let mut st = self.state();
        st.stopper = None;
        for m in &st.mutators {
            m.record.stop_requested.store(false, Ordering::Relaxed);
        }
        if st.release_waiters > 0 {
            self.released.notify_all();
        }
    }
}

/// One mutator thread's membership in its heap's world: made by [`crate::Heap::register_mutator`], used by
/// that thread only (`Send`, not `Sync`). Dropping it deregisters the mutator (after any stop in progress).
pub struct MutatorLink {
    world: Arc<World>,
    record: Arc<MutatorRecord>,
    _one_thread: PhantomData<Cell<()>>,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<MutatorLink>();
};

impl MutatorLink {
    /// The heap-wide id of this mutator (1, 2, …; not the observers' thread id).
    pub fn id(&self) -> u32 {
        self.record.id
    }

    /// The flag to poll at safepoints with one `Relaxed` load: `true` means a collection wants this thread
    /// stopped, so call [`MutatorLink::park`].
    #[inline(always)]
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.record.stop_requested
    }

    /// Called at a safepoint when the stop flag is set: publishes `roots` (this thread's root set, valid
    /// until this call returns), counts as stopped, blocks until the collector releases the world, then
    /// returns (running again). If no stop is in progress any more, returns at once.
    pub fn park(&self, roots: &mut dyn RootSet) {
        let world = &*self.world;
        let id = self.id();
        let mut st = world.state();
        st.expect_running(id, "park");
        if st.stopper.is_none_or(|s| s == id) {
            return;
        }
        world.park_locked(st, id, roots);
    }

    /// The thread leaves the heap (a host call, or idle between calls): until [`MutatorLink::leave_native`]
    /// it counts as stopped, and a collector may read `roots` at any time meanwhile.
    ///
    /// Panics if the mutator is not running, or holds the [`StoppedWorld`] (it would wait for itself when
    /// leaving).
    ///
    /// # Safety
    /// `roots` must stay valid, and must not be used by anyone else (its owner included), until
    /// `leave_native` (or the link's drop) returns.
    pub unsafe fn enter_native<'r>(&self, roots: *mut (dyn RootSet + 'r)) {
        let world = &*self.world;
        let id = self.id();
        let mut st = world.state();
        assert!(st.stopper != Some(id), "gc: mutator {id} went native while holding the stopped world");
        st.expect_running(id, "enter native");
        // SAFETY: the caller's contract is exactly `PublishedRoots::new`'s, up to `leave_native` or the drop,
        // both of which take the status away from `Native` (under the mutex) before they return.
        let published = unsafe { PublishedRoots::new(roots) };
        world.stop_running(&mut st, id, MutatorStatus::Native(Some(published)));
    }

    /// Back to running: blocks while a collection is in progress, then the thread may use the heap again.
    /// Panics if the mutator is not native.
    pub fn leave_native(&self) {
        let world = &*self.world;
        let id = self.id();
        let mut st = world.state();
        if !matches!(st.entry(id).status, MutatorStatus::Native(_)) {
            panic!("gc: mutator {id} left native without entering it");
        }
        drop(world.resume(st, id));
    }
}

impl Drop for MutatorLink {
    /// Stops counting as running at once (a stop in progress need not wait for us), waits for that stop to
    /// end (a collector may be reading our published roots), then leaves the world.
    fn drop(&mut self) {
        let world = &*self.world;
        let id = self.id();
        let mut st = world.state();
        if matches!(st.entry(id).status, MutatorStatus::Running) {
            world.stop_running(&mut st, id, MutatorStatus::Native(None));
        }
        let mut st = world.wait_for_release(st);
        st.mutators.retain(|m| m.record.id != id);
    }
}

/// The proof that the world is stopped: every registered mutator but the stopper is parked or native until
/// this is dropped. Only [`crate::Heap::stop_the_world`] makes one; collections and heap walks demand it.
/// Not `Send` (the stopper's thread releases the world) and not `Sync`.
pub struct StoppedWorld<'h> {
    world: &'h World,
    stopper: &'h MutatorLink,
    _not_send: PhantomData<*const ()>,
}

impl<'h> StoppedWorld<'h> {
    /// The id of the mutator that stopped the world.
    pub fn stopper(&self) -> u32 {
        self.stopper.id()
    }

    /// Whether this token stops `world`.
    pub(crate) fn stops(&self, world: &World) -> bool {
        std::ptr::eq(self.world, world)
    }

    /// The roots of the stopped world: `own` (the stopper's), then every root set other mutators published.
    pub(crate) fn roots<'a>(&'a self, own: &'a mut dyn RootSet) -> WorldRoots<'a> {
        let st = self.world.state();
        let published = st
            .mutators
            .iter()
            .filter_map(|m| match m.status {
                MutatorStatus::Parked(r) | MutatorStatus::Native(Some(r)) => Some(r),
                MutatorStatus::Running | MutatorStatus::Native(None) => None,
            })
            .collect();
        WorldRoots { own, published, _stopped: PhantomData }
    }
}

impl Drop for StoppedWorld<'_> {
    fn drop(&mut self) {
        self.world.release();
    }
}

/// Every root of a stopped world, as one [`RootSet`]; lives no longer than the [`StoppedWorld`] it came from.
pub(crate) struct WorldRoots<'a> {
    own: &'a mut dyn RootSet,
    published: Vec<PublishedRoots>,
    _stopped: PhantomData<&'a StoppedWorld<'a>>,
}

impl WorldRoots<'_> {
    /// Test only (`InjectedBug::SkipStoppedRoots`): forget the other mutators' roots.
    pub fn forget_published(&mut self) {
        self.published.clear();
    }
}

impl RootSet for WorldRoots<'_> {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        self.own.visit_roots(visit);
        for roots in &self.published {
            // SAFETY: `self` borrows the `StoppedWorld`, so the world is not released yet: every published
            // root set is still valid and its owner is still parked or native, not touching it (the
            // `PublishedRoots` contract). Only the stopper's thread (the token is neither `Send` nor `Sync`)
            // reaches here, one visit at a time, so this is the only reference to the root set.
            unsafe { (*roots.0.as_ptr()).visit_roots(visit) };
        }
    }
}
