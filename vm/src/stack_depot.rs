//! The race detector's stack depot: every distinct wasm backtrace an access was made at, interned once,
//! named by a small id. The VM hands the detector that id as the access's [`vmrace::Site`], so a shadow
//! cell (which keeps one site) names the previous access's whole backtrace, and a report prints it
//! (ThreadSanitizer's and Go's race runtime keep their stack depots for the same reason). The detector is
//! unchanged: it only compares sites, so de-duplication becomes per pair of stacks.
//!
//! # Data structures
//!
//! - [`StackDepot`] (one per runtime, in [`crate::race::RaceRuntime`]): the interned stacks, innermost
//!   frame first, as `(module index, function index, wasm offset)` ([`DepotFrame`]), behind one mutex: a
//!   map from stack to id and the stacks by id. Ids start at 1 (0 is "no stack"). Never shrinks: it is
//!   bounded by the program's code (call sites × depth), not by time, like the detector's reported pairs.
//! - [`StackCache`] (one per thread, in its mutator, never locked): the *raw* keys of the stacks this
//!   thread has interned (the words the walk reads: interpreter frames as instance, function and pc,
//!   compiled frames as return addresses; see `interp/race_stack.rs`) mapped to their ids, and what each
//!   return address of compiled code means. An access whose stack the thread has seen before costs a walk
//!   and a hash probe, no lock and no symbolization; only a new stack is symbolized and locks the depot.
//!
//! # Bounds
//!
//! A stack keeps at most [`MAX_FRAMES`] frames (the innermost ones; deeper stacks that differ only
//! further out share an id). A thread's cache is cleared when it holds more than [`CACHE_LIMIT`] entries
//! (deep recursion makes one stack per depth), so it stays bounded; the depot keeps its ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;

/// One frame of an interned stack: the module's runtime index, the function (index space) and the wasm
/// offset of the access or of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DepotFrame {
    pub module: u32,
    pub func_index: u32,
    pub offset: u32,
}

/// Frames kept per stack (the innermost).
pub(crate) const MAX_FRAMES: usize = 64;

/// Entries a thread's [`StackCache`] holds before it starts over.
const CACHE_LIMIT: usize = 1 << 14;

/// The runtime's interned stacks (see the module comment).
#[derive(Default)]
pub(crate) struct StackDepot {
    inner: Mutex<DepotInner>,
}

#[derive(Default)]
struct DepotInner {
    ids: HashMap<Arc<[DepotFrame]>, u32>,
    /// Stack `id` is `stacks[id - 1]`.
    stacks: Vec<Arc<[DepotFrame]>>,
}

impl StackDepot {
    /// The id of `frames` (innermost first), interning it if it is new.
    pub fn intern(&self, frames: &[DepotFrame]) -> u32 {
        // `one-frame-depot` (a planted bug): keep only the innermost frame, as a depot-less detector did.
        let frames = if crate::race::planted_bug_one_frame_depot() { &frames[..frames.len().min(1)] } else { frames };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = inner.ids.get(frames) {
            return id;
        }
        let stack: Arc<[DepotFrame]> = frames.into();
        inner.stacks.push(stack.clone());
        let id = inner.stacks.len() as u32;
        inner.ids.insert(stack, id);
        id
    }

    /// The stack named `id` (`None` for 0 or an id the depot never gave out).
    pub fn get(&self, id: u32) -> Option<Arc<[DepotFrame]>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.stacks.get((id as usize).checked_sub(1)?).cloned()
    }

    /// Stacks interned so far (`--race-stats`).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).stacks.len()
    }
}

/// One thread's cache in front of the depot (see the module comment).
#[derive(Default)]
pub(crate) struct StackCache {
    /// The raw key of the access being made (reused, so a walk allocates nothing).
    pub key: Vec<u64>,
    /// Raw keys of stacks seen by this thread → depot ids.
    stacks: FxHashMap<Box<[u64]>, u32>,
    /// Return addresses seen in compiled frames → the wasm frame of their call, or `None` when the address
    /// is not in compiled wasm code (where a frame-pointer walk stops).
    returns: FxHashMap<usize, Option<DepotFrame>>,
}

impl StackCache {
    /// The depot id of the stack whose raw key is in [`StackCache::key`], if this thread has seen it.
    pub fn cached(&self) -> Option<u32> {
        self.stacks.get(&self.key[..]).copied()
    }

    /// Remembers that the stack whose raw key is in [`StackCache::key`] is depot stack `id`.
    pub fn remember(&mut self, id: u32) {
        if self.stacks.len() >= CACHE_LIMIT {
            self.stacks.clear();
        }
        self.stacks.insert(self.key.as_slice().into(), id);
    }

    /// What return address `ra` means, looked up with `symbolize` the first time.
    pub fn return_frame(
        &mut self,
        ra: usize,
        symbolize: impl FnOnce(usize) -> Option<DepotFrame>,
    ) -> Option<DepotFrame> {
        if let Some(&frame) = self.returns.get(&ra) {
            return frame;
        }
        if self.returns.len() >= CACHE_LIMIT {
            self.returns.clear();
        }
        let frame = symbolize(ra);
        self.returns.insert(ra, frame);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u32) -> DepotFrame {
        DepotFrame { module: 0, func_index: 1, offset }
    }

    #[test]
    fn equal_stacks_share_an_id_and_ids_give_the_stacks_back() {
        let depot = StackDepot::default();
        let a = depot.intern(&[frame(1), frame(2)]);
        let b = depot.intern(&[frame(1), frame(3)]);
        assert_ne!(a, b);
        assert_eq!(depot.intern(&[frame(1), frame(2)]), a);
        assert_eq!(depot.get(a).as_deref(), Some(&[frame(1), frame(2)][..]));
        assert_eq!(depot.get(0), None);
        assert_eq!(depot.len(), 2);
    }

    #[test]
    fn a_thread_cache_maps_raw_keys_to_ids() {
        let mut cache = StackCache::default();
        cache.key.extend([1, 2, 3]);
        assert_eq!(cache.cached(), None);
        cache.remember(7);
        assert_eq!(cache.cached(), Some(7));
        cache.key.push(4);
        assert_eq!(cache.cached(), None);
        assert_eq!(cache.return_frame(10, |_| Some(frame(5))), Some(frame(5)));
        assert_eq!(cache.return_frame(10, |_| None), Some(frame(5)), "looked up once");
    }
}
