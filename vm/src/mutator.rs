//! The mutator: everything one thread needs to run wasm on a shared [`crate::Runtime`].
//!
//! The Go runtime splits a running goroutine's world into what is shared (the heap, `mheap`) and what a
//! thread owns while it runs (its `m`/`p`: stack, `mcache`, race context). vmrun does the same:
//!
//! - **Value stack and frames** ([`ExecState`]): every wasm frame's slots, the suspended callers and the
//!   running function's position, which is what the collector scans (`vm/src/roots.rs`).
//! - **Native stack** (`vm/src/native_stack.rs`): the machine stack the dispatch loop, the host calls it
//!   makes and (later) JIT code run on, registered with Valgrind and reported to observers.
//! - **Thread cache**: the heap's per-thread span cache (allocation takes no lock); it also carries the
//!   per-thread context every heap observer gets (thread id and the race detector's slot).
//! - **Allocation state** ([`AllocState`]): the collection-retry flag and the alloc/free tracer's sites.
//! - **Host roots**: references the host holds while it allocates (constant expressions, element items
//!   being evaluated) and the objects the embedding API has handed out ([`crate::Val`] handles).
//! - **Safepoint link**: the stop flag polled at function entries and loop back-edges, and the hand-off
//!   with a collector on another thread (`gc::MutatorLink`).
//!
//! A mutator is used by one thread at a time (it is `Send`, not `Sync`).

use crate::native_stack::{NativeStack, StackBounds};
use crate::stack::ValueStack;

/// A suspended caller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub inst: u32,
    /// Defined-function index within the instance's module.
    pub func: u32,
    /// The pc of the call instruction.
    pub pc: u32,
    pub fp: u32,
}

/// Where the running function is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    pub inst: u32,
    pub func: u32,
    pub pc: usize,
    pub fp: usize,
}

/// The value stack and the frames of the wasm calls in progress.
pub(crate) struct ExecState {
    pub stack: ValueStack,
    pub frames: Vec<Frame>,
    /// First free slot: a nested invocation (host → wasm) starts here.
    pub sp: usize,
    /// The running function, set whenever the dispatch loop leaves for something that may collect
    /// (allocation, host call, safepoint), for root scanning and backtraces.
    pub top: Option<Position>,
    /// Where compiled code last called out to the VM (written by compiled code through
    /// `VmCtx::jit_exit`): the innermost run of compiled frames, walked for roots.
    pub jit_exit: crate::tier::JitExit,
    /// The exits of the outer runs of compiled frames, suspended under a nested entry (compiled code
    /// called the VM, which entered compiled code again), innermost last.
    pub jit_segments: Vec<crate::tier::JitExit>,
    /// With `--race`: the runs of compiled frames in progress, outermost first, for the race detector's
    /// stack walks (`interp/race_stack.rs`).
    pub race_segs: Vec<RaceSeg>,
}

/// With `--race`, a run of compiled frames the interpreter entered (`interp::jit::call_compiled`), so that a
/// stack walk can put the interpreted and compiled frames of a thread in order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RaceSeg {
    /// `frames.len()` when it was entered: the interpreted frames below it.
    pub frames_len: usize,
    /// `top` when it was entered: its interpreted caller, not among those frames (a nested invocation the
    /// run calls out to pushes it as `frames[frames_len]`).
    pub top: Option<Position>,
    /// While the run calls out to the VM (`Libcalls::call`): the frame pointer the call passed (its
    /// interpreter stub's), from which its compiled frames are walked; 0 otherwise.
    pub out_fp: usize,
}

impl ExecState {
    pub fn new(slots: usize) -> std::io::Result<ExecState> {
        Ok(ExecState {
            stack: ValueStack::new(slots)?,
            frames: Vec::new(),
            sp: 0,
            top: None,
            jit_exit: Default::default(),
            jit_segments: Vec::new(),
            race_segs: Vec::new(),
        })
    }
}

/// The interpreter's allocation state, in one place so its cold path takes one pointer to it (each extra
/// pointer the dispatch loop hands to the cold path is one more value it keeps alive).
#[derive(Default)]
pub(crate) struct AllocState {
    /// Set after a collection so the re-executed allocation does not ask for another.
    pub gc_retry: bool,
    /// Set by [`crate::Store::trace_allocations`].
    pub tracing: Option<crate::tracing::AllocTracing>,
}

/// One thread's execution state; see the module comment.
pub(crate) struct Mutator {
    pub exec: ExecState,
    pub cache: gc::ThreadCache,
    pub alloc: AllocState,
    /// References the host holds while it allocates; roots.
    pub host_roots: Vec<u64>,
    /// Objects the embedding API has handed out as [`crate::Val`]s; roots (`handles.rs`).
    pub handles: crate::handles::HandleTable,
    /// The machine stack wasm runs on; taken out (`None`) while in use, see `interp::invoke`.
    pub native: Option<NativeStack>,
    /// Its range, for the margin checks while it is taken out.
    pub native_bounds: StackBounds,
    /// The stop flag and the hand-off with collectors on other threads (`vm/src/safepoint.rs`).
    pub link: gc::MutatorLink,
    /// The trap compiled code is unwinding with (`interp/jit.rs`), until its entry takes it.
    pub jit_trap: Option<crate::Trap>,
    /// A panic caught in a library call of compiled code, resumed at its entry.
    pub jit_panic: Option<Box<dyn std::any::Any + Send>>,
    /// With `--race`, during a host call from compiled code: the compiled frames above it (innermost
    /// first), which the interpreter's frames do not show (`interp::host_call_backtrace`).
    pub jit_host_frames: Option<Vec<crate::WasmFrame>>,
    /// The race detector's context for this thread (`--race`; `race.rs`). Boxed: the thread cache holds its
    /// address as the heap's per-thread `race_ctx`.
    pub race: Option<Box<vmrace::ThreadCtx>>,
    /// This thread's cache in front of the race detector's stack depot (`stack_depot.rs`; empty without
    /// `--race`).
    pub race_stacks: crate::stack_depot::StackCache,
}

impl Mutator {
    pub fn new(
        heap: &gc::Heap,
        value_stack_slots: usize,
        native_stack_bytes: usize,
        race: Option<Box<vmrace::ThreadCtx>>,
    ) -> Mutator {
        // The reservation is address space only (no swap reserved, pages appear when touched); failing to
        // map it means the process has no address space left, which no program could survive.
        let exec = ExecState::new(value_stack_slots)
            .unwrap_or_else(|e| panic!("cannot map the value stack ({value_stack_slots} slots): {e}"));
        let native = NativeStack::new(native_stack_bytes)
            .unwrap_or_else(|e| panic!("cannot map the native stack ({native_stack_bytes} bytes): {e}"));
        let link = heap.register_mutator();
        let mut cache = heap.new_thread_cache();
        if let Some(ctx) = &race {
            cache.set_race_ctx(&**ctx as *const vmrace::ThreadCtx as usize);
        }
        for (base, bytes) in [exec.stack.extent(), native.extent()] {
            heap.notify_stack_alloc(&mut cache, base, bytes);
        }
        let native_bounds = native.bounds();
        Mutator {
            exec,
            cache,
            alloc: AllocState::default(),
            host_roots: Vec::new(),
            handles: Default::default(),
            native: Some(native),
            native_bounds,
            link,
            jit_trap: None,
            jit_panic: None,
            jit_host_frames: None,
            race,
            race_stacks: Default::default(),
        }
    }

    /// The stacks this mutator made: (base, bytes) of the value stack and of the native stack.
    pub fn stacks(&self) -> [(usize, usize); 2] {
        let native = self.native.as_ref().expect("the native stack is in place between calls");
        [self.exec.stack.extent(), native.extent()]
    }

    /// Reports the stacks as freed (the trace, if any, is closed first: `safepoint::finish_trace`).
    pub fn retire(&mut self, heap: &gc::Heap) {
        for (base, bytes) in self.stacks() {
            heap.notify_stack_free(&mut self.cache, base, bytes);
        }
        // The heap forgets the context's address before the context goes.
        self.cache.set_race_ctx(0);
    }
}
