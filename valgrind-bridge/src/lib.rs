//! `valgrind-bridge`: Valgrind client requests from Rust inline assembly.
//!
//! # What a client request is
//!
//! A *client request* is how a program talks to the Valgrind tool it runs under: "this range is a heap
//! block", "this memory is now unaddressable", "this is a stack", "how many errors so far?". The program
//! writes a block of six machine words `[request, a1, a2, a3, a4, a5]` to memory, loads its address and a
//! *default* result into two fixed registers, and executes a magic instruction sequence. On real hardware
//! the sequence does nothing, so the result register still holds the default. Under Valgrind the JIT (VEX)
//! recognises the exact bytes, ends the translated block there, and the core hands the request to the tool
//! (Memcheck), which writes its answer into the result register.
//!
//! # The ABI per architecture (Valgrind 3.19, `valgrind.h`; see `shared/notes/valgrind.md` §1)
//!
//! | | x86_64 | aarch64 |
//! |---|---|---|
//! | address of the 6-word block | `rax` | `x4` |
//! | default in / result out | `rdx` | `x3` |
//! | preamble | `rol rdi,3; rol rdi,13; rol rdi,61; rol rdi,51` | `ror x12,x12,#3; #13; #51; #61` |
//! | marker "do request" | `xchg rbx,rbx` | `orr x10,x10,x10` |
//! | bytes | `48c1c703 48c1c70d 48c1c73d 48c1c733 4887db` | words `93cc0d8c 93cc358c 93cccd8c 93ccf58c aa0a014a` |
//!
//! The four rotations add up to 128 bits, so `rdi`/`x12` end unchanged and need no clobber. The `asm!`
//! block uses `options(nostack)` only: no `nomem`/`readonly`/`pure` (Valgrind reads the argument block, and
//! [`count_leaks`] has it write through pointers in the block), no `preserves_flags` (the rotates change
//! flags). Everything goes through one private function, `do_client_request`.
//!
//! Real requests are emitted on x86_64 (Linux, FreeBSD, macOS, Solaris/illumos: Valgrind uses one sequence
//! for all of them) and aarch64 Linux, when the cargo feature `enabled` (default) is on. Anywhere else, or
//! with the feature off, every wrapper compiles to nothing and returns the request's default; [`ENABLED`]
//! says which build this is.
//!
//! # Pitfall: the aarch64 rotate order
//!
//! On aarch64 the third and fourth rotations are **51 then 61**; x86_64 uses 61 then 51. Copying the x86_64
//! order to aarch64 produces different 3rd/4th instruction words, VEX never recognises them, and every
//! request silently does nothing (no error, the default comes back). corosensei 0.3.4 has exactly this bug in
//! its aarch64 `valgrind_request`, so its stack registration is a no-op on arm64. A unit test reads back the
//! emitted machine code and compares it byte for byte with the table above, on whichever of the two
//! architectures it runs. From an x86_64 host the aarch64 words can be checked by cross-compiling:
//! `cargo rustc --release --example vg_probe --target aarch64-unknown-linux-gnu -- --emit=obj` (the link step
//! fails without an aarch64 linker; the object is written before it), then `llvm-objdump -d` on
//! `vg_probe-*.vg_probe.*.o`: every request site must read `8c0dcc93 8c35cc93 8ccdcc93 8cf5cc93 4a010aaa`.
//!
//! # Why `#[inline(always)]`
//!
//! Memcheck records a stack trace at the request (where a block was "allocated" or "freed"). Every wrapper
//! and `do_client_request` are inlined, so the request's instruction address lies in the caller's own code
//! and the trace is the caller's real stack. Valgrind reads DWARF inline info and still names the two inlined
//! bridge functions, at the same address, above the caller's line, e.g. (from `tests/under_valgrind.rs`):
//!
//! ```text
//!  Address 0x177210 is 16 bytes inside a block of size 32 free'd
//!     at 0x12AA80: do_client_request (lib.rs:…)
//!     by 0x12AA80: freelike_block (lib.rs:…)
//!     by 0x12AA80: vg_probe::freelike (vg_probe.rs:…)
//! ```
//!
//! An out-of-line helper would add real frames with their own addresses (and, through C, a frame without
//! line info). Inlining also keeps the native cost to the instructions themselves.
//!
//! # Why no C (and no `valgrind.h`, no build script)
//!
//! The sequence and the request codes are ABI-frozen ("DO NOT CHANGE THE NUMERIC VALUES" in `valgrind.h`),
//! so they are hard-coded here and checked against the notes by a unit test. Going through C (like
//! crabgrind) would need a C compiler, bindgen/libclang and installed headers at build time, and every request
//! would be an out-of-line FFI call, which defeats `inline(always)` and puts a C frame at the top of every
//! Memcheck stack. The crate has no dependencies and is `#![no_std]`.
//!
//! # Cost natively
//!
//! Five register-only instructions (four rotates, one exchange of a register with itself), two register
//! set-ups (block address, default), and the stores of the argument words that are not constants (when all
//! six are, as for [`running_on_valgrind`], rustc puts the block in read-only data and there are no stores).
//! Measured with `cargo run --release -p valgrind-bridge --example vg_probe -- bench 200000000`, and the same
//! with `--no-default-features`, on the development machine (AMD EPYC, virtualised, 2 cores): a loop of
//! `running_on_valgrind()` takes **1.7 ns per iteration, against 0.9 ns for the same loop with the feature
//! off: about 0.8 ns per request**. Code that issues requests per object can still skip building argument
//! blocks natively by testing a cached `running_on_valgrind()` once; with the feature off there is no cost.
//!
//! # Safety model and argument style
//!
//! The wrappers are safe functions. A request never reads or writes the program's memory natively (it is a
//! no-op), and under Valgrind it changes only the tool's *shadow* state (addressability, definedness, block
//! records), never the bytes the program sees. Wrong arguments give wrong Memcheck reports or make Valgrind
//! abort with a message, which is not undefined behaviour in the program. (Requests that *do* write through
//! caller pointers, `GET_VBITS` and `MAP_IP_TO_SRCLOC`, are not exposed; [`count_leaks`] only writes to its
//! own locals.)
//!
//! Addresses in the program's memory are `*const u8` (a `*mut u8` coerces); byte counts, redzone sizes and
//! ids are `usize`; flags are typed. Pool anchors are addresses too: Memcheck never reads them, it only needs
//! one unique address per pool.
//!
//! # Which tools act on what
//!
//! - Core requests, handled by Valgrind itself for every tool: [`running_on_valgrind`], [`count_errors`],
//!   [`discard_translations`], [`stack_register`]/[`stack_deregister`]/[`stack_change`],
//!   [`disable_error_reporting`]/[`enable_error_reporting`].
//! - Heap-block requests (core codes passed to the tool; Memcheck implements all of them, other heap tools
//!   such as Massif follow the malloc-like ones): the `mempool_*` family, [`malloclike_block`],
//!   [`freelike_block`], [`resizeinplace_block`]. Tools that do not track heap blocks ignore them.
//! - Memcheck-only (codes `0x4d43_0000 + n`; other tools ignore them and the default comes back): the
//!   `make_mem_*` and `check_mem_*` requests, the leak checks and [`count_leaks`]/[`count_leak_blocks`].

#![cfg_attr(not(test), no_std)]

/// True when this build emits real client requests: the `enabled` feature is on and the target is one the
/// sequence exists for (x86_64 Linux/FreeBSD/macOS/Solaris/illumos, aarch64 Linux). When false, every
/// wrapper is an empty inline function returning the request's default.
pub const ENABLED: bool = cfg!(all(
    feature = "enabled",
    any(
        all(
            target_arch = "x86_64",
            any(
                target_os = "linux",
                target_os = "freebsd",
                target_os = "macos",
                target_os = "solaris",
                target_os = "illumos"
            )
        ),
        all(target_arch = "aarch64", target_os = "linux")
    )
));

/// Request codes and flag bits, with the numeric values of `valgrind.h`/`memcheck.h` 3.19 (frozen ABI).
/// Names are the header's minus the `VG_USERREQ__`/`VALGRIND_` prefix.
pub mod request {
    /// `VG_USERREQ_TOOL_BASE(a, b)`: the first code of a tool's private range, `a << 24 | b << 16`.
    pub const fn tool_base(a: u8, b: u8) -> usize {
        ((a as usize) << 24) | ((b as usize) << 16)
    }

    /// Number of Valgrind layers the program runs under (0 natively).
    pub const RUNNING_ON_VALGRIND: usize = 0x1001;
    /// Discard cached translations of a code range.
    pub const DISCARD_TRANSLATIONS: usize = 0x1002;
    /// Number of errors recorded so far.
    pub const COUNT_ERRORS: usize = 0x1201;
    /// Register a heap block allocated by a custom allocator.
    pub const MALLOCLIKE_BLOCK: usize = 0x1301;
    /// Release a block registered with `MALLOCLIKE_BLOCK`.
    pub const FREELIKE_BLOCK: usize = 0x1302;
    /// Create a memory pool (also `CREATE_MEMPOOL_EXT`: same code, flags in a4).
    pub const CREATE_MEMPOOL: usize = 0x1303;
    /// Destroy a memory pool and forget its chunks.
    pub const DESTROY_MEMPOOL: usize = 0x1304;
    /// Record a chunk allocated from a pool.
    pub const MEMPOOL_ALLOC: usize = 0x1305;
    /// Release a chunk of a pool.
    pub const MEMPOOL_FREE: usize = 0x1306;
    /// Free every chunk of a pool outside a range, clip the ones straddling it.
    pub const MEMPOOL_TRIM: usize = 0x1307;
    /// Move a pool's records to a new anchor.
    pub const MOVE_MEMPOOL: usize = 0x1308;
    /// Move/resize a chunk's record.
    pub const MEMPOOL_CHANGE: usize = 0x1309;
    /// Whether an anchor names a pool.
    pub const MEMPOOL_EXISTS: usize = 0x130a;
    /// Resize a `MALLOCLIKE_BLOCK` block in place.
    pub const RESIZEINPLACE_BLOCK: usize = 0x130b;
    /// Register a stack, returns its id.
    pub const STACK_REGISTER: usize = 0x1501;
    /// Forget a registered stack.
    pub const STACK_DEREGISTER: usize = 0x1502;
    /// Change a registered stack's bounds.
    pub const STACK_CHANGE: usize = 0x1503;
    /// Disable (+1) or re-enable (-1) error reporting for the calling thread.
    pub const CHANGE_ERR_DISABLEMENT: usize = 0x1801;

    /// `VG_USERREQ_TOOL_BASE('M','C')`: the first Memcheck code.
    pub const MEMCHECK_BASE: usize = tool_base(b'M', b'C');
    /// Memcheck: mark a range unaddressable.
    pub const MAKE_MEM_NOACCESS: usize = MEMCHECK_BASE;
    /// Memcheck: mark a range addressable and undefined.
    pub const MAKE_MEM_UNDEFINED: usize = MEMCHECK_BASE + 1;
    /// Memcheck: mark a range addressable and defined.
    pub const MAKE_MEM_DEFINED: usize = MEMCHECK_BASE + 2;
    /// Memcheck: the first unaddressable byte of a range (0 if none), reporting an error if any.
    pub const CHECK_MEM_IS_ADDRESSABLE: usize = MEMCHECK_BASE + 4;
    /// Memcheck: the first unaddressable or undefined byte of a range (0 if none), reporting an error if any.
    pub const CHECK_MEM_IS_DEFINED: usize = MEMCHECK_BASE + 5;
    /// Memcheck: run a leak check now (a1: 0 full / 1 quick; a2: 0 all / 1 added / 2 changed).
    pub const DO_LEAK_CHECK: usize = MEMCHECK_BASE + 6;
    /// Memcheck: bytes leaked/dubious/reachable/suppressed by all previous leak checks.
    pub const COUNT_LEAKS: usize = MEMCHECK_BASE + 7;
    /// Memcheck: mark the addressable bytes of a range defined, leave unaddressable ones alone.
    pub const MAKE_MEM_DEFINED_IF_ADDRESSABLE: usize = MEMCHECK_BASE + 0xb;
    /// Memcheck: like `COUNT_LEAKS`, in blocks instead of bytes.
    pub const COUNT_LEAK_BLOCKS: usize = MEMCHECK_BASE + 0xc;

    /// `VALGRIND_MEMPOOL_AUTO_FREE`: freeing a superblock frees the malloc-like blocks inside it
    /// (only valid together with `MEMPOOL_METAPOOL`).
    pub const MEMPOOL_AUTO_FREE: usize = 1;
    /// `VALGRIND_MEMPOOL_METAPOOL`: the pool's chunks are superblocks carved into malloc-like blocks.
    pub const MEMPOOL_METAPOOL: usize = 2;
}

/// Issues one client request: `args` is `[request, a1, a2, a3, a4, a5]`. Returns Valgrind's answer, or
/// `default` natively (and on every target/feature combination where [`ENABLED`] is false). Requests whose
/// answer is meaningless pass default 0 and ignore the result (valgrind.h's `DO_CLIENT_REQUEST_STMT`).
#[cfg(all(
    feature = "enabled",
    target_arch = "x86_64",
    any(target_os = "linux", target_os = "freebsd", target_os = "macos", target_os = "solaris", target_os = "illumos")
))]
#[inline(always)]
fn do_client_request(default: usize, args: &[usize; 6]) -> usize {
    let result;
    // SAFETY: the sequence is a no-op on real hardware (four rotates of rdi by a total of 128 bits, and
    // `xchg rbx, rbx`), so natively only flags change (no `preserves_flags`) and rdx keeps the default.
    // Under Valgrind the core reads the six words at `args` (a live borrow, hence no `nomem`), may write
    // through pointers the caller put in it (only `count_leaks`, to its own exposed locals), and writes the
    // result into rdx, the declared output. No stack is touched (`nostack`).
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") default => result,
            options(nostack),
        );
    }
    result
}

/// Issues one client request: `args` is `[request, a1, a2, a3, a4, a5]`. Returns Valgrind's answer, or
/// `default` natively (and on every target/feature combination where [`ENABLED`] is false).
#[cfg(all(feature = "enabled", target_arch = "aarch64", target_os = "linux"))]
#[inline(always)]
fn do_client_request(default: usize, args: &[usize; 6]) -> usize {
    let result;
    // SAFETY: the sequence is a no-op on real hardware (four rotates of x12 by a total of 128 bits, in
    // Valgrind's aarch64 order 3, 13, 51, 61, and `orr x10, x10, x10`), so x3 keeps the default. Under
    // Valgrind the core reads the six words at `args` (a live borrow, hence no `nomem`), may write through
    // pointers the caller put in it (only `count_leaks`, to its own exposed locals), and writes the result
    // into x3, the declared output; x4 is left unchanged. No stack is touched (`nostack`).
    unsafe {
        core::arch::asm!(
            "ror x12, x12, #3",
            "ror x12, x12, #13",
            "ror x12, x12, #51",
            "ror x12, x12, #61",
            "orr x10, x10, x10",
            in("x4") args.as_ptr(),
            inout("x3") default => result,
            options(nostack),
        );
    }
    result
}

/// Issues one client request: here a no-op, because [`ENABLED`] is false for this build.
#[cfg(not(any(
    all(
        feature = "enabled",
        target_arch = "x86_64",
        any(
            target_os = "linux",
            target_os = "freebsd",
            target_os = "macos",
            target_os = "solaris",
            target_os = "illumos"
        )
    ),
    all(feature = "enabled", target_arch = "aarch64", target_os = "linux")
)))]
#[inline(always)]
fn do_client_request(default: usize, args: &[usize; 6]) -> usize {
    let _ = args;
    default
}

/// An address as an argument word. Exposes the provenance: to Rust, Valgrind is foreign code that gets the
/// address.
#[inline(always)]
fn word(p: *const u8) -> usize {
    p.expose_provenance()
}

// ---------------------------------------------------------------------------------------------------------
// Core requests

/// How many Valgrind layers the program runs under: 0 natively, 1 under Valgrind (2 under Valgrind running
/// on Valgrind). Handled by the core for every tool.
#[inline(always)]
pub fn running_on_valgrind() -> usize {
    do_client_request(0, &[request::RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0])
}

/// The number of errors the tool has recorded so far (every occurrence, not distinct contexts; leak errors
/// only once a leak check has run). 0 natively. Errors suppressed by [`disable_error_reporting`] are not
/// counted.
#[inline(always)]
pub fn count_errors() -> usize {
    do_client_request(0, &[request::COUNT_ERRORS, 0, 0, 0, 0, 0])
}

/// Tells Valgrind the machine code in `[addr, addr + len)` may have changed: cached translations of it are
/// thrown away and it is re-translated when next executed. Needed after overwriting code that may already
/// have run, when Valgrind cannot see the change itself (`--smc-check=none|stack`, file-backed code mappings,
/// aarch64 without cache maintenance). Expensive under Valgrind: batch it. Core request, every tool.
#[inline(always)]
pub fn discard_translations(addr: *const u8, len: usize) {
    do_client_request(0, &[request::DISCARD_TRANSLATIONS, word(addr), len, 0, 0, 0]);
}

/// Registers `[start, end]` as a stack (`start` = lowest addressable byte, `end` = **highest** addressable
/// byte, inclusive) and returns its id (user ids start at 1; 0 natively). With the stack registered, a jump
/// of the stack pointer into it is a stack switch rather than a huge push/pop, so Memcheck does not mark the
/// memory in between undefined or warn "client switching stacks?". Core request, every tool.
#[inline(always)]
pub fn stack_register(start: *const u8, end: *const u8) -> usize {
    do_client_request(0, &[request::STACK_REGISTER, word(start), word(end), 0, 0, 0])
}

/// Forgets the stack `id` returned by [`stack_register`]; call it before the memory is freed or reused.
/// Core request, every tool.
#[inline(always)]
pub fn stack_deregister(id: usize) {
    do_client_request(0, &[request::STACK_DEREGISTER, id, 0, 0, 0, 0]);
}

/// Gives the registered stack `id` new bounds (`start` lowest, `end` highest addressable byte, inclusive;
/// unlike registration, reversed bounds are not swapped). Core request, every tool.
#[inline(always)]
pub fn stack_change(id: usize, start: *const u8, end: *const u8) {
    do_client_request(0, &[request::STACK_CHANGE, id, word(start), word(end), 0, 0]);
}

/// Stops the tool from reporting errors in the calling thread until a matching [`enable_error_reporting`]
/// (calls nest). Errors in between are neither printed nor counted. Core request, every tool.
#[inline(always)]
pub fn disable_error_reporting() {
    do_client_request(0, &[request::CHANGE_ERR_DISABLEMENT, 1, 0, 0, 0, 0]);
}

/// Undoes one [`disable_error_reporting`] for the calling thread. Core request, every tool.
#[inline(always)]
pub fn enable_error_reporting() {
    do_client_request(0, &[request::CHANGE_ERR_DISABLEMENT, usize::MAX /* -1 */, 0, 0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------------------
// Heap blocks and memory pools (core codes; acted on by heap-tracking tools, Memcheck above all)

/// Which kind of pool [`create_mempool`] creates. Only the combinations Memcheck accepts can be expressed:
/// auto-free without metapool makes Valgrind abort ("an auto free pool must be a meta pool").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolFlags(usize);

impl MempoolFlags {
    /// A plain pool: its chunks are the blocks the program uses. Chunks must not overlap malloc-like blocks
    /// (the leak checker aborts on overlapping blocks).
    pub const PLAIN: Self = Self(0);
    /// A metapool: chunks are superblocks that the program carves into [`malloclike_block`]s, which are
    /// associated with the superblock they lie in.
    pub const METAPOOL: Self = Self(request::MEMPOOL_METAPOOL);
    /// A metapool with auto-free: [`mempool_free`] of a superblock also frees every malloc-like block that
    /// lies entirely inside it. (Costs Valgrind time proportional to *all* live blocks per free: batch.)
    pub const METAPOOL_AUTO_FREE: Self = Self(request::MEMPOOL_METAPOOL | request::MEMPOOL_AUTO_FREE);

    /// The raw flag bits passed to `CREATE_MEMPOOL`.
    pub const fn bits(self) -> usize {
        self.0
    }
}

/// Creates a pool named by the anchor address `pool` (any address unique to the pool; never read). Chunks
/// get `redzone` unaddressable bytes on each side and are marked defined on [`mempool_alloc`] if `is_zeroed`,
/// else undefined. Memcheck never learns the pool's own memory: mark it with [`make_mem_noaccess`] first.
/// Creating a second pool on the same anchor makes Valgrind abort. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn create_mempool(pool: *const u8, redzone: usize, is_zeroed: bool, flags: MempoolFlags) {
    do_client_request(0, &[request::CREATE_MEMPOOL, word(pool), redzone, is_zeroed as usize, flags.bits(), 0]);
}

/// Destroys the pool: its chunk records are dropped and their redzones made unaddressable. Malloc-like
/// blocks inside its superblocks are **not** freed (even with auto-free; they then show as "definitely
/// lost"): [`mempool_free`] every superblock first. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn destroy_mempool(pool: *const u8) {
    do_client_request(0, &[request::DESTROY_MEMPOOL, word(pool), 0, 0, 0, 0]);
}

/// Records a chunk `[addr, addr + size)` of `pool` and makes it addressable (defined if the pool is
/// zeroed, else undefined). For a metapool this is a superblock; mark it [`make_mem_noaccess`] right after
/// if only the objects placed in it should be accessible. Memcheck stores `size` as 32 bits, so chunks must
/// stay below 4 GiB (debug builds assert this, with or without the feature). Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn mempool_alloc(pool: *const u8, addr: *const u8, size: usize) {
    debug_assert!(size <= u32::MAX as usize, "Memcheck truncates mempool chunk sizes to 32 bits");
    do_client_request(0, &[request::MEMPOOL_ALLOC, word(pool), word(addr), size, 0, 0]);
}

/// Releases the chunk of `pool` starting at `addr`: it becomes unaddressable, and later accesses report
/// "inside a block of size N free'd". In an auto-free metapool this also frees the malloc-like blocks inside
/// it. An unknown chunk is reported as an invalid free. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn mempool_free(pool: *const u8, addr: *const u8) {
    do_client_request(0, &[request::MEMPOOL_FREE, word(pool), word(addr), 0, 0, 0]);
}

/// Keeps only the parts of `pool`'s chunks inside `[addr, addr + size)`: chunks entirely outside are freed,
/// chunks straddling the range are clipped. Sorts all the pool's chunks: keep off hot paths.
/// Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn mempool_trim(pool: *const u8, addr: *const u8, size: usize) {
    do_client_request(0, &[request::MEMPOOL_TRIM, word(pool), word(addr), size, 0, 0]);
}

/// Renames the pool anchored at `pool_a` to `pool_b` (the pool's header moved). Records only, no change to
/// addressability. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn move_mempool(pool_a: *const u8, pool_b: *const u8) {
    do_client_request(0, &[request::MOVE_MEMPOOL, word(pool_a), word(pool_b), 0, 0, 0]);
}

/// Changes the record of `pool`'s chunk at `old_addr` to `[new_addr, new_addr + size)` (the chunk moved or was
/// resized). Records only, no change to addressability. Sorts all the pool's chunks: keep off hot paths.
/// Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn mempool_change(pool: *const u8, old_addr: *const u8, new_addr: *const u8, size: usize) {
    do_client_request(0, &[request::MEMPOOL_CHANGE, word(pool), word(old_addr), word(new_addr), size, 0]);
}

/// Whether `pool` is the anchor of an existing pool (false natively). Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn mempool_exists(pool: *const u8) -> bool {
    do_client_request(0, &[request::MEMPOOL_EXISTS, word(pool), 0, 0, 0, 0]) != 0
}

/// Registers `[addr, addr + size)` as a heap block allocated by a custom allocator, as if by `malloc`:
/// errors then name the block and its allocation stack, and the leak checker tracks it. The block becomes
/// addressable, defined if `is_zeroed` (nothing is zeroed: say so only if the bytes are) else undefined;
/// `redzone` bytes on each side become unaddressable. Ignored if `addr` is null. Issue it before the
/// allocator writes into the block. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn malloclike_block(addr: *const u8, size: usize, redzone: usize, is_zeroed: bool) {
    do_client_request(0, &[request::MALLOCLIKE_BLOCK, word(addr), size, redzone, is_zeroed as usize, 0]);
}

/// Releases a block registered with [`malloclike_block`] (same `redzone`), as if by `free`: the block
/// becomes unaddressable and is queued as freed, so later accesses report "N bytes inside a block of size M
/// free'd" with both stacks. Freeing an unknown block is an invalid free. An allocator that writes into freed
/// blocks must [`make_mem_undefined`] them first. Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn freelike_block(addr: *const u8, redzone: usize) {
    do_client_request(0, &[request::FREELIKE_BLOCK, word(addr), redzone, 0, 0, 0]);
}

/// Resizes a [`malloclike_block`] block in place from `old_size` to `new_size`: shrinking makes the tail
/// unaddressable, growing makes the new tail addressable and undefined; the redzone moves with the end.
/// Heap-tracking tools (Memcheck).
#[inline(always)]
pub fn resizeinplace_block(addr: *const u8, old_size: usize, new_size: usize, redzone: usize) {
    do_client_request(0, &[request::RESIZEINPLACE_BLOCK, word(addr), old_size, new_size, redzone, 0]);
}

// ---------------------------------------------------------------------------------------------------------
// Memcheck-only requests (other tools ignore them)

/// Memcheck: marks `[addr, addr + len)` unaddressable; any access is then an "Invalid read/write".
/// Contents are untouched.
#[inline(always)]
pub fn make_mem_noaccess(addr: *const u8, len: usize) {
    do_client_request(0, &[request::MAKE_MEM_NOACCESS, word(addr), len, 0, 0, 0]);
}

/// Memcheck: marks `[addr, addr + len)` addressable but undefined; using the values (branching on them,
/// passing them to a syscall) is then reported. Contents are untouched.
#[inline(always)]
pub fn make_mem_undefined(addr: *const u8, len: usize) {
    do_client_request(0, &[request::MAKE_MEM_UNDEFINED, word(addr), len, 0, 0, 0]);
}

/// Memcheck: marks `[addr, addr + len)` addressable and defined. Contents are untouched.
#[inline(always)]
pub fn make_mem_defined(addr: *const u8, len: usize) {
    do_client_request(0, &[request::MAKE_MEM_DEFINED, word(addr), len, 0, 0, 0]);
}

/// Memcheck: marks the addressable bytes of `[addr, addr + len)` defined and leaves unaddressable bytes
/// unaddressable.
#[inline(always)]
pub fn make_mem_defined_if_addressable(addr: *const u8, len: usize) {
    do_client_request(0, &[request::MAKE_MEM_DEFINED_IF_ADDRESSABLE, word(addr), len, 0, 0, 0]);
}

/// Memcheck: checks that every byte of `[addr, addr + len)` is addressable. Returns 0 if so, else the
/// address of the first unaddressable byte, and Memcheck reports "Unaddressable byte(s) found during client
/// check request". 0 natively.
#[inline(always)]
pub fn check_mem_is_addressable(addr: *const u8, len: usize) -> usize {
    do_client_request(0, &[request::CHECK_MEM_IS_ADDRESSABLE, word(addr), len, 0, 0, 0])
}

/// Memcheck: checks that every byte of `[addr, addr + len)` is addressable and defined. Returns 0 if so,
/// else the address of the first bad byte, and Memcheck reports "Uninitialised byte(s) found during client
/// check request" (or "Unaddressable ..."). 0 natively.
#[inline(always)]
pub fn check_mem_is_defined(addr: *const u8, len: usize) -> usize {
    do_client_request(0, &[request::CHECK_MEM_IS_DEFINED, word(addr), len, 0, 0, 0])
}

/// Memcheck: runs a full leak check now, like `--leak-check=full` at exit; lost blocks are reported (and
/// counted as errors).
#[inline(always)]
pub fn do_leak_check() {
    do_client_request(0, &[request::DO_LEAK_CHECK, 0, 0, 0, 0, 0]);
}

/// Memcheck: runs a leak check now that prints only the summary, like `--leak-check=summary`.
#[inline(always)]
pub fn do_quick_leak_check() {
    do_client_request(0, &[request::DO_LEAK_CHECK, 1, 0, 0, 0, 0]);
}

/// Memcheck: runs a full leak check now but reports only loss records that grew since the previous check.
#[inline(always)]
pub fn do_added_leak_check() {
    do_client_request(0, &[request::DO_LEAK_CHECK, 0, 1, 0, 0, 0]);
}

/// Memcheck: runs a full leak check now but reports only loss records that changed since the previous check.
#[inline(always)]
pub fn do_changed_leak_check() {
    do_client_request(0, &[request::DO_LEAK_CHECK, 0, 2, 0, 0, 0]);
}

/// Results of the last leak check (see [`count_leaks`], [`count_leak_blocks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakCounts {
    /// Definitely plus indirectly lost (no pointer to the block, or only from lost blocks).
    pub leaked: usize,
    /// Possibly lost (only interior pointers).
    pub dubious: usize,
    /// Still reachable (a start pointer exists).
    pub reachable: usize,
    /// Matched by a suppression.
    pub suppressed: usize,
}

#[inline(always)]
fn leak_counts(request: usize) -> LeakCounts {
    // Initialised, as in memcheck.h: Memcheck writes the four words but does not mark them defined.
    let mut c = LeakCounts::default();
    let ptrs = [&mut c.leaked as *mut usize, &mut c.dubious, &mut c.reachable, &mut c.suppressed]
        .map(|p| p.expose_provenance());
    do_client_request(0, &[request, ptrs[0], ptrs[1], ptrs[2], ptrs[3], 0]);
    c
}

/// Memcheck: **bytes** found leaked, dubious, reachable and suppressed by the most recent leak check (run
/// [`do_leak_check`] or a variant first). All zero natively.
#[inline(always)]
pub fn count_leaks() -> LeakCounts {
    leak_counts(request::COUNT_LEAKS)
}

/// Memcheck: like [`count_leaks`], in **blocks** instead of bytes. All zero natively.
#[inline(always)]
pub fn count_leak_blocks() -> LeakCounts {
    leak_counts(request::COUNT_LEAK_BLOCKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code against the tables in `shared/notes/valgrind.md` §2 and its appendix, typed in literally.
    #[test]
    fn request_codes_match_the_notes() {
        let expected: &[(usize, usize)] = &[
            (request::RUNNING_ON_VALGRIND, 0x1001),
            (request::DISCARD_TRANSLATIONS, 0x1002),
            (request::COUNT_ERRORS, 0x1201),
            (request::MALLOCLIKE_BLOCK, 0x1301),
            (request::FREELIKE_BLOCK, 0x1302),
            (request::CREATE_MEMPOOL, 0x1303),
            (request::DESTROY_MEMPOOL, 0x1304),
            (request::MEMPOOL_ALLOC, 0x1305),
            (request::MEMPOOL_FREE, 0x1306),
            (request::MEMPOOL_TRIM, 0x1307),
            (request::MOVE_MEMPOOL, 0x1308),
            (request::MEMPOOL_CHANGE, 0x1309),
            (request::MEMPOOL_EXISTS, 0x130a),
            (request::RESIZEINPLACE_BLOCK, 0x130b),
            (request::STACK_REGISTER, 0x1501),
            (request::STACK_DEREGISTER, 0x1502),
            (request::STACK_CHANGE, 0x1503),
            (request::CHANGE_ERR_DISABLEMENT, 0x1801),
            (request::MEMCHECK_BASE, 0x4d43_0000),
            (request::MAKE_MEM_NOACCESS, 0x4d43_0000),
            (request::MAKE_MEM_UNDEFINED, 0x4d43_0001),
            (request::MAKE_MEM_DEFINED, 0x4d43_0002),
            (request::CHECK_MEM_IS_ADDRESSABLE, 0x4d43_0004),
            (request::CHECK_MEM_IS_DEFINED, 0x4d43_0005),
            (request::DO_LEAK_CHECK, 0x4d43_0006),
            (request::COUNT_LEAKS, 0x4d43_0007),
            (request::MAKE_MEM_DEFINED_IF_ADDRESSABLE, 0x4d43_000b),
            (request::COUNT_LEAK_BLOCKS, 0x4d43_000c),
            (request::MEMPOOL_AUTO_FREE, 1),
            (request::MEMPOOL_METAPOOL, 2),
        ];
        for (i, &(got, want)) in expected.iter().enumerate() {
            assert_eq!(got, want, "entry {i}: {got:#x} != {want:#x}");
        }
        assert_eq!(MempoolFlags::PLAIN.bits(), 0);
        assert_eq!(MempoolFlags::METAPOOL.bits(), 2);
        assert_eq!(MempoolFlags::METAPOOL_AUTO_FREE.bits(), 3);
    }

    /// Natively (this test does not run under Valgrind unless someone runs the test binary under it) every
    /// request returns its default and changes nothing.
    #[test]
    fn natively_every_request_returns_its_default() {
        if running_on_valgrind() != 0 {
            std::eprintln!("skipped: the unit tests are running under Valgrind");
            return;
        }
        let mut buf = [7u8; 64];
        let p = buf.as_mut_ptr() as *const u8;
        assert_eq!(count_errors(), 0);
        make_mem_noaccess(p, 64);
        make_mem_undefined(p, 64);
        make_mem_defined(p, 64);
        make_mem_defined_if_addressable(p, 64);
        assert_eq!(check_mem_is_addressable(p, 64), 0);
        assert_eq!(check_mem_is_defined(p, 64), 0);
        create_mempool(p, 0, false, MempoolFlags::METAPOOL_AUTO_FREE);
        assert!(!mempool_exists(p));
        mempool_alloc(p, p, 32);
        malloclike_block(p, 16, 0, true);
        resizeinplace_block(p, 16, 8, 0);
        freelike_block(p, 0);
        mempool_change(p, p, p.wrapping_add(32), 32);
        mempool_trim(p, p, 64);
        mempool_free(p, p.wrapping_add(32));
        move_mempool(p, p.wrapping_add(1));
        destroy_mempool(p.wrapping_add(1));
        assert_eq!(stack_register(p, p.wrapping_add(63)), 0);
        stack_change(0, p, p.wrapping_add(31));
        stack_deregister(0);
        discard_translations(p, 64);
        disable_error_reporting();
        enable_error_reporting();
        do_leak_check();
        do_quick_leak_check();
        do_added_leak_check();
        do_changed_leak_check();
        assert_eq!(count_leaks(), LeakCounts::default());
        assert_eq!(count_leak_blocks(), LeakCounts::default());
        assert_eq!(buf, [7u8; 64], "requests must not touch memory");
    }

    /// The exact instruction bytes of `shared/notes/valgrind.md` §1, for the architecture under test.
    #[cfg(target_arch = "x86_64")]
    const SEQUENCE: &[u8] = &[
        0x48, 0xc1, 0xc7, 0x03, // rol rdi, 3
        0x48, 0xc1, 0xc7, 0x0d, // rol rdi, 13
        0x48, 0xc1, 0xc7, 0x3d, // rol rdi, 61
        0x48, 0xc1, 0xc7, 0x33, // rol rdi, 51
        0x48, 0x87, 0xdb, // xchg rbx, rbx
    ];
    #[cfg(target_arch = "aarch64")]
    const SEQUENCE: &[u8] = &{
        // Little-endian instruction words: ror x12,x12,#3/#13/#51/#61; orr x10,x10,x10.
        let words: [u32; 5] = [0x93cc0d8c, 0x93cc358c, 0x93cccd8c, 0x93ccf58c, 0xaa0a014a];
        let mut bytes = [0u8; 20];
        let mut i = 0;
        while i < 20 {
            bytes[i] = words[i / 4].to_le_bytes()[i % 4];
            i += 1;
        }
        bytes
    };

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[inline(never)]
    fn one_request() -> usize {
        running_on_valgrind()
    }

    /// Reads back the machine code of a function that issues one request and looks for the exact sequence.
    /// Catches a corosensei-style reordering or a typo in the asm.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn emitted_bytes_are_the_magic_sequence() {
        assert_eq!(one_request(), running_on_valgrind());
        if !ENABLED {
            std::eprintln!("skipped: this build emits no requests (feature `enabled` off)");
            return;
        }
        const WINDOW: usize = 512;
        let code = one_request as fn() -> usize as *const u8;
        let mut seen = std::vec::Vec::with_capacity(WINDOW);
        let mut found = false;
        for i in 0..WINDOW {
            // SAFETY: reads the function's own code, which is mapped readable (r-x); the loop stops at the
            // first match, which lies within the function, so it does not run past the text segment.
            seen.push(unsafe { code.add(i).read_volatile() });
            if seen.ends_with(SEQUENCE) {
                found = true;
                break;
            }
        }
        assert!(found, "sequence not found in the first {WINDOW} bytes of the code: {seen:02x?}");
    }
}
