//! The native stack: the machine stack a mutator runs wasm on.
//!
//! Each mutator thread runs the interpreter's dispatch loop, the host functions it calls and (later) JIT code
//! on a stack the VM maps itself, not on the thread's own stack. That makes the stack's size a VM setting
//! (`Config::native_stack_bytes`) rather than whatever the embedder's thread happens to have, lets the VM
//! report it to heap observers like any memory it owns ([`NativeStack::extent`]), and gives the JIT one
//! known stack to walk for GC roots.
//!
//! # Layout
//!
//! ```text
//!  low addresses                                                       high addresses
//!  | guard: PROT_NONE, ≥ 64 KiB | usable stack, `size` bytes, grows down  ←  top (16-aligned) |
//!                               ^ extent().0                                ^ extent().0 + extent().1
//! ```
//!
//! One anonymous mapping (`MAP_STACK`, no swap reserved: pages cost memory only once touched). The guard is
//! larger than a page so that a frame of a function compiled without stack probes (C code in libc, say)
//! still lands in it rather than in the mapping below; Rust and Cranelift (with probestack) probe anyway.
//!
//! # Switching: [`NativeStack::run`]
//!
//! `run(f)` switches the stack pointer to the top of the stack, calls `f` there, switches back and returns
//! `f`'s result. A panic in `f` is caught at the root of the native stack and resumed on the caller's
//! stack (`resume_unwind`), so `catch_unwind` around `run` works and no unwinding crosses the switch. Code
//! already running on the stack (host → wasm → host → wasm) just calls `f` ([`NativeStack::is_current`]);
//! entering the stack from a *different* stack while it is in use further down this thread would overwrite
//! live frames, so that panics (the `busy` flag). `f` may borrow anything (no `'static` or `Send` bound): the
//! caller's frame outlives the call.
//!
//! **Why corosensei** (`corosensei::on_stack` over our own mapping, not a hand-written `asm!` switch):
//! `on_stack` is exactly this operation, a ten-instruction trampoline per architecture (x86_64, aarch64
//! and five more) that writes nothing to the new stack before switching. It carries DWARF CFI, so panic
//! backtraces, gdb and perf walk from frames on this stack into the embedder's, which our own switch would
//! have to get right per architecture too. It catches panics at the stack root and resumes them on the
//! caller's stack on stable Rust, and is maintained and used by Wasmer to run wasm on separate stacks.
//! What is left to us is the mapping, two addresses in an `unsafe impl Stack` and the Valgrind
//! registration (corosensei's `DefaultStack` registers a range including the guard and one past the end,
//! and its aarch64 request has the wrong rotate order: `shared/notes/valgrind.md` §1).
//!
//! # Memcheck
//!
//! The usable range is registered with `STACK_REGISTER` (lowest to highest addressable byte) when the stack
//! is made and deregistered on drop, so Memcheck treats the switches as moves between known stacks: no
//! `Warning: client switching stacks?`, and no false errors when stacks of two threads lie less than
//! `--max-stackframe` apart. The usable range starts no-access except its top page (undefined): every frame
//! is then addressable only once the stack pointer has moved over it, so a read below the stack pointer is
//! an `Invalid read` even on a part of the stack never used before. The top page stays addressable because
//! Memcheck paints below the stack pointer with a 128-byte offset on x86_64 (the red zone), so the first
//! pushes after the switch would otherwise land on no-access bytes.
//!
//! # Overflow is a trap, never a signal: the margin contract
//!
//! The guard page turns a runaway stack into `SIGSEGV`, which Rust's handler does not recognise as a stack
//! overflow (it is not the thread's own guard), so the process dies. The VM must never get there: before
//! each host → wasm re-entry and each host call it checks [`StackBounds::remaining`] against
//! [`REENTRY_MARGIN`] and traps `call stack exhausted` when less is left. Wasm → wasm calls in the
//! interpreter use the value stack, not this one. The contract for host functions (WASI, embedder
//! functions) is that one call uses less than [`REENTRY_MARGIN`] bytes of native stack *between* checks,
//! i.e. apart from the wasm it calls back into (which checks again); a host function that recurses deeply on
//! its own breaks the contract and can reach the guard (so does a signal handler, which runs on whatever
//! stack was current, within the same margin). JIT code will check its own frames against the same
//! limit in its prologues (`extent().0 + REENTRY_MARGIN` as Cranelift's stack limit).
//!
//! # Integration: where the stack lives while `f` runs
//!
//! `f` usually needs the whole store mutably (`interp::run(store, ..)`), and host functions get it back to
//! re-enter wasm, so the `NativeStack` cannot stay inside the state `f` borrows. The pattern (exercised by
//! the test `store_pattern_lends_the_stack_and_traps_at_the_margin`): the mutator keeps an
//! `Option<NativeStack>` and a copy of its [`StackBounds`]; the outermost call takes the stack out, runs on
//! it, and puts it back whether `f` returned or panicked; a nested call finds `None`, is on the stack
//! (`bounds.is_current()`), checks `bounds.remaining()` and calls directly:
//!
//! ```text
//! let Some(stack) = self.native.take() else {
//!     if self.native_bounds.remaining() < REENTRY_MARGIN { return Err(call stack exhausted) }
//!     return self.call_here(..);
//! };
//! let result = catch_unwind(AssertUnwindSafe(|| stack.run(|| self.call_here(..))));
//! self.native = Some(stack);
//! result.unwrap_or_else(|panic| resume_unwind(panic))
//! ```
//!
//! Report `extent()` to heap observers after `new` and before the drop (`Heap::notify_stack_alloc`/`_free`).

use std::cell::Cell;
use std::io;

use corosensei::stack::{Stack, StackPointer};
use memmap2::{MmapMut, MmapOptions};

/// Default usable size of a native stack (`Config::native_stack_bytes`). The interpreter alone needs far
/// less (it does not recurse on this stack for wasm → wasm calls); JIT code will put wasm frames here, so a
/// larger size is a configuration away. Untouched pages cost address space only.
pub(crate) const DEFAULT_BYTES: usize = 2 << 20;

/// Native stack the VM keeps free before entering wasm again or calling a host function: below it, the
/// entry traps `call stack exhausted`. See "the margin contract" in the module comment.
pub(crate) const REENTRY_MARGIN: usize = 128 << 10;

/// Smallest guard below the usable range (rounded up to the page size).
const MIN_GUARD_BYTES: usize = 64 << 10;

/// A mapped machine stack with a guard at its low end; see the module comment.
pub(crate) struct NativeStack {
    /// Guard plus usable range. Never moved or resized.
    map: MmapMut,
    /// Bytes of guard at the start of `map` (a multiple of the page size).
    guard: usize,
    /// Valgrind's id for the registered usable range (0 natively).
    valgrind_id: usize,
    /// Set while `run` has switched to this stack, so entering it again from another stack is refused.
    /// A `Cell` also makes the stack `!Sync`: only the thread that owns it can run on it.
    busy: Cell<bool>,
}

/// `VMRUN_VM_DEBUG=unregistered-native-stack`: the planted bug `tests/valgrind.rs` shows Memcheck catches
/// (it then warns "client switching stacks?"). Never set outside tests.
fn skip_registration_for_tests() -> bool {
    std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "unregistered-native-stack")
}

impl NativeStack {
    /// A stack with at least `size` usable bytes (rounded up to whole pages). Fails if the OS refuses the
    /// mapping or the guard's protection.
    pub fn new(size: usize) -> io::Result<NativeStack> {
        let page = page_size();
        let guard = MIN_GUARD_BYTES.next_multiple_of(page);
        let size = size
            .max(corosensei::stack::MIN_STACK_SIZE)
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::other("native stack size overflows"))?;
        let total = size.checked_add(guard).ok_or_else(|| io::Error::other("native stack size overflows"))?;
        let mut map = MmapOptions::new().len(total).stack().no_reserve_swap().map_anon()?;
        // SAFETY: the guard is the first `guard` bytes of our own fresh mapping (page-aligned: mmap returns
        // page-aligned memory and `guard` is a multiple of the page size); nothing refers to it yet.
        let rc = unsafe { libc::mprotect(map.as_mut_ptr().cast(), guard, libc::PROT_NONE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let low = map.as_ptr().wrapping_add(guard);
        // Valgrind's stack bounds are inclusive: lowest and highest addressable byte. The negative control of
        // the Memcheck tests (`VMRUN_VM_DEBUG=unregistered-native-stack`) leaves the stack unregistered.
        let valgrind_id = if skip_registration_for_tests() {
            0
        } else {
            valgrind_bridge::stack_register(low, low.wrapping_add(size - 1))
        };
        valgrind_bridge::make_mem_noaccess(low, size - page);
        valgrind_bridge::make_mem_undefined(low.wrapping_add(size - page), page);
        Ok(NativeStack { map, guard, valgrind_id, busy: Cell::new(false) })
    }

    /// Lowest address and size in bytes of the usable range, without the guard (for heap observers).
    pub fn extent(&self) -> (usize, usize) {
        (self.map.as_ptr().addr() + self.guard, self.map.len() - self.guard)
    }

    /// The usable range as a `Copy` value, for [`StackBounds::is_current`] and [`StackBounds::remaining`]
    /// where the `NativeStack` itself is out of reach (see "Integration" in the module comment).
    pub fn bounds(&self) -> StackBounds {
        let (low, size) = self.extent();
        StackBounds { low, size }
    }

    /// Whether the calling code runs on this stack; see [`StackBounds::is_current`].
    #[inline]
    pub fn is_current(&self) -> bool {
        self.bounds().is_current()
    }

    /// Bytes left below the caller on this stack; see [`StackBounds::remaining`]. (The VM keeps a copy of
    /// the bounds, since the stack itself is lent out while in use.)
    #[cfg(test)]
    pub fn remaining(&self) -> usize {
        self.bounds().remaining()
    }

    /// Runs `f` on this stack and returns its result; a panic in `f` continues on the caller's side. When
    /// already on this stack, calls `f` directly.
    ///
    /// # Panics
    ///
    /// If this thread is already running on this stack further down but the caller is on another stack
    /// (switching would overwrite the live frames); and with whatever `f` panics with.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.is_current() {
            return f();
        }
        assert!(!self.busy.replace(true), "native stack entered from another stack while in use");
        let _busy = ClearOnDrop(&self.busy);
        let (low, size) = self.extent();
        // The whole mapping is ours and stays mapped while `self` is borrowed, i.e. for the whole call.
        let bounds = Bounds { top: nonzero(low + size), limit: nonzero(self.map.as_ptr().addr()) };
        corosensei::on_stack(bounds, f)
    }
}

impl Drop for NativeStack {
    fn drop(&mut self) {
        // Before the memory goes: Valgrind must not treat a later mapping at these addresses as this stack.
        // (Unmapping, by `map`'s drop, resets Memcheck's view of the addresses.)
        if self.valgrind_id != 0 {
            valgrind_bridge::stack_deregister(self.valgrind_id);
        }
    }
}

/// The usable range of a [`NativeStack`], copied out so checks need no borrow of the stack. Stays meaningful
/// only while the stack lives (afterwards `is_current` is false and `remaining` the old size, unless a new
/// stack is mapped at the same addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackBounds {
    /// Lowest usable byte (just above the guard).
    low: usize,
    size: usize,
}

impl StackBounds {
    /// Lowest usable byte (compiled code's stack limit is this plus the re-entry margin).
    pub fn low(self) -> usize {
        self.low
    }

    /// Whether the calling code runs on the stack (its stack pointer lies in the usable range).
    #[inline]
    pub fn is_current(self) -> bool {
        stack_pointer().wrapping_sub(self.low) < self.size
    }

    /// Bytes between the stack pointer and the guard when called on the stack; the whole usable size (what
    /// `run` starts with) when called elsewhere. The stack pointer is approximated by the address of a
    /// local, so the answer can be high by the calling function's frame: one reason for the margin.
    #[inline]
    pub fn remaining(self) -> usize {
        let offset = stack_pointer().wrapping_sub(self.low);
        if offset < self.size { offset } else { self.size }
    }
}

/// The bounds corosensei switches to for one `run`.
struct Bounds {
    /// One past the highest usable byte: the initial stack pointer (page-aligned, so 16-aligned).
    top: StackPointer,
    /// Lowest byte of the mapping, guard included (page-aligned).
    limit: StackPointer,
}

// SAFETY: `Bounds` is only made by `NativeStack::run` from a live `NativeStack` it borrows for the whole
// `on_stack` call, so `[limit, top)` is mapped for as long as corosensei uses it: a PROT_NONE guard of at least
// 64 KiB at `limit`, then at least `MIN_STACK_SIZE` usable bytes (checked in `new`) that nothing else uses
// (the `busy` flag and the `is_current` shortcut keep a second `run` from switching onto live frames).
// Both addresses are page-aligned, hence `STACK_ALIGNMENT`-aligned.
unsafe impl Stack for Bounds {
    fn base(&self) -> StackPointer {
        self.top
    }

    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// Clears `NativeStack::busy` when `run` returns or unwinds.
struct ClearOnDrop<'a>(&'a Cell<bool>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn nonzero(addr: usize) -> StackPointer {
    StackPointer::new(addr).expect("a mapping is never at address 0")
}

/// An address in the caller's frame: the stack pointer, high by at most the frame's size.
#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    std::ptr::from_ref(std::hint::black_box(&marker)).addr()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; it reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    /// Recurses `depth` frames of 256 bytes each; returns the sum of the frames' bytes and the smallest
    /// `remaining()` seen.
    #[inline(never)]
    fn recurse(stack: &NativeStack, depth: u32) -> (u64, usize) {
        let frame = black_box([depth as u8; 256]);
        let here = stack.remaining();
        if depth == 0 {
            return (0, here);
        }
        let (sum, deepest) = recurse(stack, depth - 1);
        assert!(deepest < here, "remaining() must shrink with depth");
        (sum + frame.iter().map(|&b| u64::from(b)).sum::<u64>(), deepest)
    }

    fn expected_sum(depth: u32) -> u64 {
        (1..=depth).map(|d| u64::from(d as u8) * 256).sum()
    }

    #[test]
    fn deep_recursion_runs_on_the_native_stack() {
        let stack = NativeStack::new(DEFAULT_BYTES).unwrap();
        assert!(!stack.is_current());
        assert_eq!(stack.remaining(), stack.extent().1, "off the stack, remaining() is the whole size");
        let (sum, deepest) = stack.run(|| {
            assert!(stack.is_current());
            recurse(&stack, 1000)
        });
        assert_eq!(sum, expected_sum(1000));
        assert!(deepest < stack.extent().1 - 1000 * 256, "1000 frames of 256 bytes went below the top");
        assert!(!stack.is_current());
    }

    /// host → wasm → host → wasm …: nested `run`s on the same stack do not switch again, so the stack keeps
    /// going down instead of restarting at the top (which would overwrite the outer frames).
    #[test]
    fn nested_runs_stay_on_the_stack() {
        fn nest(stack: &NativeStack, level: u32, seen: &mut Vec<usize>) -> u32 {
            stack.run(|| {
                assert!(stack.is_current());
                seen.push(stack.remaining());
                if level == 0 { 0 } else { 1 + nest(stack, level - 1, seen) }
            })
        }
        let stack = NativeStack::new(DEFAULT_BYTES).unwrap();
        let mut seen = Vec::new();
        assert_eq!(nest(&stack, 49, &mut seen), 49);
        assert_eq!(seen.len(), 50);
        assert!(seen.windows(2).all(|w| w[1] < w[0]), "each level is deeper: {seen:?}");
        assert!(!stack.busy.get());
    }

    #[test]
    fn a_panic_propagates_to_the_caller_and_the_stack_stays_usable() {
        let stack = NativeStack::new(DEFAULT_BYTES).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            stack.run(|| {
                stack.run(|| {
                    let _ = recurse(&stack, 10);
                    std::panic::panic_any(42u32)
                })
            })
        }));
        assert_eq!(*caught.unwrap_err().downcast::<u32>().unwrap(), 42);
        assert!(!stack.busy.get() && !stack.is_current());
        assert_eq!(stack.run(|| recurse(&stack, 1000)).0, expected_sum(1000));
    }

    /// What the VM does before each re-entry: recurse only while more than the margin is left. Runs to
    /// within a few KiB of the guard of a small stack and stops there, without a signal.
    #[test]
    fn recursion_checked_against_a_margin_stops_cleanly() {
        #[inline(never)]
        fn until_margin(stack: &NativeStack, margin: usize, depth: u32) -> (u32, usize) {
            let frame = black_box([0u8; 1024]);
            let left = stack.remaining();
            if left < margin {
                return (depth, left);
            }
            let r = until_margin(stack, margin, depth + 1);
            black_box(&frame);
            r
        }
        let stack = NativeStack::new(256 << 10).unwrap();
        let margin = 16 << 10;
        let (depth, left) = stack.run(|| until_margin(&stack, margin, 0));
        assert!(depth > 100, "went deep: {depth} frames");
        assert!(left < margin && left > 0, "stopped {left} bytes above the guard");
    }

    #[test]
    fn two_threads_run_on_their_own_stacks_at_once() {
        let barrier = std::sync::Barrier::new(2);
        let extents: Vec<(usize, usize)> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let stack = NativeStack::new(DEFAULT_BYTES).unwrap();
                        stack.run(|| {
                            // Both threads are on their native stacks here.
                            barrier.wait();
                            assert_eq!(recurse(&stack, 500).0, expected_sum(500));
                            barrier.wait();
                        });
                        stack.extent()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let (a, b) = (extents[0], extents[1]);
        assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "disjoint stacks: {a:x?} {b:x?}");
    }

    /// Stack A → stack B → A again would switch onto A's live frames: refused with a panic, which unwinds
    /// back out through both stacks.
    #[test]
    fn entering_a_busy_stack_from_another_stack_panics() {
        let a = NativeStack::new(64 << 10).unwrap();
        let b = NativeStack::new(64 << 10).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| a.run(|| b.run(|| a.run(|| 1)))));
        let message = *caught.unwrap_err().downcast::<&str>().unwrap();
        assert_eq!(message, "native stack entered from another stack while in use");
        assert_eq!(a.run(|| b.run(|| 2)), 2, "both usable afterwards");
    }

    #[test]
    fn the_closure_may_borrow_and_return_borrows() {
        let stack = NativeStack::new(64 << 10).unwrap();
        let data = [1, 2, 3];
        let mut out = String::new();
        let second: &i32 = stack.run(|| {
            out.push_str("written on the native stack");
            &data[1]
        });
        assert_eq!((*second, out.as_str()), (2, "written on the native stack"));
    }

    /// The integration pattern of the module comment, with a store whose "wasm" calls a "host function"
    /// that re-enters "wasm" (4 KiB of frame per level) until the margin check traps.
    #[test]
    fn store_pattern_lends_the_stack_and_traps_at_the_margin() {
        struct Store {
            native: Option<NativeStack>,
            native_bounds: StackBounds,
            levels: u32,
            /// Panic at the innermost level.
            planted_panic: bool,
        }
        impl Store {
            fn call(&mut self, depth: u32) -> Result<u32, &'static str> {
                let Some(stack) = self.native.take() else {
                    assert!(self.native_bounds.is_current());
                    if self.native_bounds.remaining() < REENTRY_MARGIN {
                        return Err("call stack exhausted");
                    }
                    return self.call_here(depth);
                };
                let result = catch_unwind(AssertUnwindSafe(|| stack.run(|| self.call_here(depth))));
                self.native = Some(stack);
                result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            #[inline(never)]
            fn call_here(&mut self, depth: u32) -> Result<u32, &'static str> {
                let frame = black_box([0u8; 4096]);
                self.levels += 1;
                if depth == 1 && self.planted_panic {
                    panic!("planted");
                }
                let r = if depth == 1 { Ok(1) } else { self.call(depth - 1).map(|n| n + 1) };
                black_box(&frame);
                r
            }
        }
        let stack = NativeStack::new(1 << 20).unwrap();
        let native_bounds = stack.bounds();
        let mut store = Store { native: Some(stack), native_bounds, levels: 0, planted_panic: false };
        assert_eq!(store.call(10), Ok(10));
        assert_eq!(store.call(u32::MAX), Err("call stack exhausted"));
        assert!(store.levels > 100, "{} levels before the trap", store.levels);
        store.planted_panic = true;
        let panicked = catch_unwind(AssertUnwindSafe(|| store.call(5)));
        assert!(panicked.is_err() && store.native.is_some(), "the stack is back after a panic");
        store.planted_panic = false;
        assert_eq!(store.call(3), Ok(3));
        assert_eq!(store.native.as_ref().map(NativeStack::bounds), Some(native_bounds));
    }

    #[test]
    fn the_stack_moves_between_threads_but_is_not_shared() {
        fn send<T: Send>() {}
        send::<NativeStack>();
        send::<StackBounds>();
        // `!Sync` (the `Cell`) cannot be asserted on stable without a trick; `run` relies on it for `busy`.
        let stack = NativeStack::new(64 << 10).unwrap();
        let stack = std::thread::spawn(move || {
            assert_eq!(stack.run(|| recurse(&stack, 10)).0, expected_sum(10));
            stack
        })
        .join()
        .unwrap();
        assert_eq!(stack.run(|| recurse(&stack, 10)).0, expected_sum(10));
    }

    #[test]
    fn sizes_round_up_to_pages_and_the_guard_is_protected() {
        let stack = NativeStack::new(1).unwrap();
        let (low, size) = stack.extent();
        assert_eq!(size % page_size(), 0);
        assert!(size >= corosensei::stack::MIN_STACK_SIZE);
        assert_eq!(low % page_size(), 0);
        if cfg!(target_os = "linux") {
            // The guard's line in /proc/self/maps: it ends where the usable range starts, and has no access.
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let ends_at_low = |line: &&str| {
                let range = line.split_once(' ').unwrap().0;
                usize::from_str_radix(range.split_once('-').unwrap().1, 16) == Ok(low)
            };
            let guard = maps.lines().find(ends_at_low).unwrap_or_else(|| panic!("no mapping ends at {low:x}"));
            assert!(guard.contains(" ---p "), "guard not PROT_NONE: {guard}");
        }
    }
}
