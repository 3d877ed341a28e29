//! `--race`: the site of an access is the depot id of its whole wasm backtrace (`stack_depot.rs`). This
//! file walks a thread's frames, interpreted and compiled in the order they called each other, into a raw
//! key, and turns a key the thread has not seen into depot frames.
//!
//! # The walk
//!
//! A thread's stack is interpreted runs and compiled runs nested in each other. The interpreter's frames
//! are all in `exec.frames` (a nested invocation pushes its suspended caller there); each compiled run the
//! interpreter entered has a [`RaceSeg`] (`call_compiled`) that says how many interpreted frames were below
//! it and which interpreted caller (`top`) was not among them, and, while it calls out to the VM, the frame
//! pointer its call passed. From the innermost frame outwards:
//!
//! 1. The access's own frame: an interpreted one (instance, function, pc) with the frames of its run above
//!    `depth0`, or a compiled one (instance, function, offset) with its compiled callers, walked up the
//!    frame-pointer chain until a return address is not in compiled wasm code (the array entry).
//! 2. For each run of compiled frames below, innermost first: the interpreted frames between it and what
//!    was walked, its compiled frames from the frame pointer of its call out, then its interpreted caller.
//! 3. The interpreted frames below the outermost compiled run.
//!
//! # The key
//!
//! Words, so that it is cheap to build and to hash: an interpreted frame is two words (bit 63 set, the
//! instance and the defined function; then the pc), the innermost compiled frame two words (bit 62 set,
//! the instance and the function index; then the offset), a compiled caller one word, its return address
//! (user-space addresses leave bits 62 and 63 clear). The key is meaningful only to its thread (instance
//! indices are per store), which is why the cache that maps it to a depot id is per thread. A return
//! address is looked up in the compiler once per thread (`StackCache::return_frame`), so a walk over
//! compiled frames takes no lock either.

use vmrace::Site;

use crate::mutator::{Frame, RaceSeg};
use crate::stack_depot::{DepotFrame, MAX_FRAMES, StackCache, StackDepot};
use crate::state::{Instance, StoreState};
use crate::tier::Compiler;

const INTERPRETED: u64 = 1 << 63;
const COMPILED_TOP: u64 = 1 << 62;

/// The frame an access was made in.
#[derive(Clone, Copy)]
pub(crate) enum Innermost {
    /// Interpreted: defined function `func` of instance `inst` at `pc`, in the run whose frames start at
    /// `depth0`.
    Interpreted { inst: u32, func: u32, pc: usize, depth0: usize },
    /// Compiled: function `func_index` (index space) of instance `inst` at wasm `offset`; `fp` is its frame
    /// pointer.
    Compiled { inst: u32, func_index: u32, offset: u32, fp: usize },
}

/// What a walk reads of the thread (borrowed from its store).
pub(crate) struct StackWalk<'a> {
    pub frames: &'a [Frame],
    pub segs: &'a [RaceSeg],
    pub instances: &'a [Instance],
    pub compiler: Option<&'a dyn Compiler>,
}

impl StackWalk<'_> {
    /// The site of an access made in `innermost`: the depot id of the thread's whole backtrace.
    pub fn site(&self, innermost: Innermost, cache: &mut StackCache, depot: &StackDepot) -> Site {
        let mut key = std::mem::take(&mut cache.key);
        key.clear();
        self.walk(innermost, cache, &mut key);
        cache.key = key;
        if let Some(id) = cache.cached() {
            return Site(id.into());
        }
        let key = std::mem::take(&mut cache.key);
        let frames = self.symbolize(&key, cache);
        cache.key = key;
        let id = depot.intern(&frames);
        cache.remember(id);
        Site(id.into())
    }

    fn walk(&self, innermost: Innermost, cache: &mut StackCache, key: &mut Vec<u64>) {
        let mut segs = self.segs;
        let mut cursor = self.frames.len();
        match innermost {
            Innermost::Interpreted { inst, func, pc, depth0 } => {
                push_interpreted(key, inst, func, pc);
                cursor = depth0.min(cursor);
                self.push_frames(key, depth0.min(self.frames.len()), self.frames.len());
            }
            Innermost::Compiled { inst, func_index, offset, fp } => {
                key.extend([COMPILED_TOP | u64::from(inst) << 32 | u64::from(func_index), offset.into()]);
                self.push_compiled_callers(key, fp, cache);
                // The run it is in: its interpreted caller, then what is below the run.
                if let Some((seg, rest)) = segs.split_last() {
                    if let Some(top) = seg.top {
                        push_interpreted(key, top.inst, top.func, top.pc);
                    }
                    cursor = seg.frames_len.min(cursor);
                    segs = rest;
                }
            }
        }
        while let Some((seg, rest)) = segs.split_last() {
            // Interpreted frames above the run (its pushed caller, `frames[seg.frames_len]`, excluded).
            let above = (seg.frames_len + usize::from(seg.top.is_some())).min(cursor);
            self.push_frames(key, above, cursor);
            self.push_compiled_callers(key, seg.out_fp, cache);
            if let Some(top) = seg.top {
                push_interpreted(key, top.inst, top.func, top.pc);
            }
            cursor = seg.frames_len.min(cursor);
            segs = rest;
        }
        self.push_frames(key, 0, cursor);
    }

    /// `frames[lo..hi]`, innermost (last) first.
    fn push_frames(&self, key: &mut Vec<u64>, lo: usize, hi: usize) {
        for f in self.frames[lo..hi].iter().rev() {
            if full(key) {
                return;
            }
            push_interpreted(key, f.inst, f.func, f.pc as usize);
        }
    }

    /// The compiled callers of the frame whose frame pointer is `fp` (0: none), by their return addresses.
    fn push_compiled_callers(&self, key: &mut Vec<u64>, mut fp: usize, cache: &mut StackCache) {
        let Some(compiler) = self.compiler else { return };
        while fp != 0 && !full(key) {
            // SAFETY: `fp` is the frame pointer of a live compiled frame (or interpreter stub) of this thread,
            // suspended in the call that led here: the one a race hook or `Libcalls::call` was given, or, on
            // later steps, the saved frame pointer of a frame whose return address showed it is compiled wasm
            // code, which keeps frame pointers (`preserve_frame_pointers`). Both words are on this thread's
            // stack, above the current frame, and nothing writes them while the walk runs.
            let (next, ra) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            let symbolize = |ra| {
                compiler.frame_of_return(ra).map(|(module, func_index, offset)| DepotFrame {
                    module,
                    func_index,
                    offset,
                })
            };
            if cache.return_frame(ra, symbolize).is_none() {
                return;
            }
            key.push(ra as u64);
            if next <= fp {
                return;
            }
            fp = next;
        }
    }

    /// The depot frames of `key` (every return address in it is in `cache` already: the walk put it there).
    fn symbolize(&self, key: &[u64], cache: &mut StackCache) -> Vec<DepotFrame> {
        let mut out = Vec::with_capacity(key.len() / 2);
        let mut words = key.iter().copied();
        while let Some(w) = words.next() {
            let (inst, low) = (((w & !(INTERPRETED | COMPILED_TOP)) >> 32) as usize, w as u32);
            let frame = if w & INTERPRETED != 0 {
                let pc = words.next().unwrap_or(0) as usize;
                let m = &self.instances[inst].module;
                let offset = m.code[low as usize].wasm_offsets.get(pc).copied().unwrap_or(0);
                Some(DepotFrame { module: m.index, func_index: m.num_imported_funcs + low, offset })
            } else if w & COMPILED_TOP != 0 {
                let offset = words.next().unwrap_or(0) as u32;
                Some(DepotFrame { module: self.instances[inst].module.index, func_index: low, offset })
            } else {
                cache.return_frame(w as usize, |_| None)
            };
            out.extend(frame);
        }
        out.truncate(MAX_FRAMES);
        out
    }
}

fn push_interpreted(key: &mut Vec<u64>, inst: u32, func: u32, pc: usize) {
    key.extend([INTERPRETED | u64::from(inst) << 32 | u64::from(func), pc as u64]);
}

/// Whether the key holds [`MAX_FRAMES`] frames (counted as two words each; `symbolize` cuts the compiled
/// callers, one word each, that fit beyond).
fn full(key: &[u64]) -> bool {
    key.len() >= 2 * MAX_FRAMES
}

/// The site of an access by compiled code of instance `inst` at wasm `offset` of function `func_index`
/// (index space), whose frame pointer is `fp` (a race hook's arguments); `Site(0)` without `--race`.
pub(crate) fn compiled_site(store: &mut StoreState, inst: u32, func_index: u32, offset: u32, fp: usize) -> Site {
    let StoreState { rt, mutator, instances, .. } = store;
    let Some(race) = rt.race.as_deref() else { return Site(0) };
    let walk = StackWalk {
        frames: &mutator.exec.frames,
        segs: &mutator.exec.race_segs,
        instances,
        compiler: rt.config.jit.compiler.as_deref(),
    };
    walk.site(Innermost::Compiled { inst, func_index, offset, fp }, &mut mutator.race_stacks, &race.depot)
}

/// The site of an access by the library call compiled code of instance `inst` is in, from the exit record
/// its call through the exit trampoline wrote (the calling frame's frame pointer and the return address
/// into it, whose call is at the operator's offset); `Site(0)` when the return address is not in a compiled
/// function the compiler knows (an on-stack-replacement variant) or without `--race`.
pub(crate) fn exit_site(store: &mut StoreState, inst: u32) -> Site {
    let exit = store.mutator.exec.jit_exit;
    let Some(compiler) = store.rt.config.jit.compiler.as_deref() else { return Site(0) };
    let symbolize =
        |ra| compiler.frame_of_return(ra).map(|(module, func_index, offset)| DepotFrame { module, func_index, offset });
    match store.mutator.race_stacks.return_frame(exit.pc, symbolize) {
        Some(f) => compiled_site(store, inst, f.func_index, f.offset, exit.fp),
        None => Site(0),
    }
}
