//! Wasm linear memory that never moves: one reserved mapping per memory, committed as it grows.
//!
//! # Why not a `Vec<u8>`
//!
//! A vector moves when it grows, so nothing may keep its address across a `memory.grow`: not the
//! interpreter's cached base, not compiled code, not another thread of a shared memory (threads
//! proposal). Growing also copies every byte. A [`LinearMemory`] is instead one anonymous private
//! mapping whose address is fixed at creation:
//!
//! ```text
//!  base                       base + len                   base + limit      + GUARD_BYTES
//!   │ committed: read/write     │ reserved: PROT_NONE        │ guard: PROT_NONE │
//!   │ (zero until written)      │ (no memory, no swap)       │                  │
//!   └──────── len() ────────────┴── grow commits from here ──┘                  │
//! ```
//!
//! - **Reservation.** [`LinearMemory::new`] maps `limit + GUARD_BYTES` bytes `PROT_NONE` with
//!   `MAP_NORESERVE`: address space only, no memory and no commit charge. `limit` is the declared
//!   maximum, capped at 65536 pages (4 GiB, every 32-bit memory) and at the caller's `reserve_bytes`.
//!   The VM passes [`default_reserve_bytes`]: 4 GiB natively, 4095 pages under Valgrind (see below).
//!   A `memory.grow` past the reservation fails with -1, which the spec allows for any grow.
//! - **Commit.** The first `min` pages, then every grow, are `mprotect`ed read/write: one system call
//!   per grow, whatever its size. Fresh anonymous pages read as zero, so new pages need no clearing.
//!   The kernel merges the committed range into one VMA, so a memory is two VMAs however often it
//!   grows.
//! - **Never moves, never shrinks.** `base` is fixed until drop and `len` only grows, so a
//!   `(base, len)` pair read at any time stays valid: at worst `len` is stale-small (an access the
//!   fresh length would allow traps), never too large. Drop unmaps the whole range.
//! - **Guard.** `GUARD_BYTES` of `PROT_NONE` after the reservation, so that a wrong bounds check at a
//!   full memory faults instead of touching a neighbouring mapping, and so that a zero-page
//!   reservation still has a real, unique base.
//! - **Guarded memories.** With a reservation of 4 GiB (natively), a memory maps 4 GiB plus
//!   [`guard_bytes`] (32 MiB) whatever its maximum, and registers the mapping with `fault.rs`: no 32-bit
//!   index plus an offset within the guard leaves it, so compiled code leaves such accesses' bounds to
//!   the hardware. `limit_pages` (the maximum) still bounds `grow`.
//!
//! # Threads
//!
//! The length is an `AtomicUsize` in every memory (one type). [`LinearMemory::grow`] runs under a
//! mutex, commits the new pages first and then stores the new length with `Release`; a shared
//! memory's length is loaded with `Acquire`, so a thread that sees the new length also sees the pages
//! committed and the grower's earlier writes. A non-shared memory is used by one thread at a time and
//! loads its length `Relaxed` (on x86_64 both orderings are the same plain `mov`). Plain byte
//! accesses racing on a shared memory are what Wasm programs may do (results may tear); see the
//! `Sync` impl for how that maps onto Rust.
//!
//! # Under Memcheck
//!
//! Memcheck follows this layout by itself, without client requests (checked with Valgrind 3.19 by
//! the `memcheck_*` tests): `mmap(PROT_NONE)` makes the range no-access, `mprotect` to read/write
//! turns no-access bytes into *defined* ones (true: fresh pages are zero), and `munmap` makes the
//! range no-access again. So a read at or past `len()` gives "Invalid read ... Address 0x... is in
//! a --- anonymous segment" (and then the native SIGSEGV), and grown bytes are clean to use. Note
//! the asymmetry that decides the mapping call: `mprotect` to `PROT_NONE` does **not** make bytes
//! no-access to Memcheck, so a mapping made read/write and protected afterwards (memmap2's only
//! way, used by `stack.rs`) needs `MAKE_MEM_NOACCESS`; mapping `PROT_NONE` from the start does not.
//!
//! Valgrind changes the address-space budget, which is why [`default_reserve_bytes`] is smaller
//! there. Natively the 47-bit address space holds 32768 reservations of 4 GiB, and the kernel's
//! `vm.max_map_count` (65530, two VMAs per memory) allows about as many. Valgrind 3.19 gives the
//! client about 128 GiB: a 31st live 4 GiB reservation fails with `EINVAL`, and the GC heap's arenas
//! share that space. Memcheck also prints "Warning: set address range perms: large range" for every
//! range over 256 MiB it marks (at each such mmap and munmap). Under Valgrind the reservation is
//! therefore 4095 pages, so reservation plus guard is exactly 256 MiB: no warnings, room for
//! hundreds of live memories, and a memory that grows past 256 MiB gets -1 there (not natively).
//!
//! # Cost (release build, measured on the 2-core virtualised x86_64 development machine)
//!
//! - Create + drop a one-page memory: 5-11 µs (mmap, mprotect, munmap) against 0.5 µs for
//!   `vec![0; 65536]` from malloc's cache; 16 pages: 5-11 µs against 7-9 µs. Touching the pages
//!   then costs a page fault per 4 KiB (about 2.7 µs here), where a recycled heap block is already
//!   faulted in. For the spec suite's thousands of small instances that is milliseconds in total.
//! - `grow(1)`: 0.65 µs (one mprotect; the memory stays two VMAs after 1000 grows), 3 µs with the
//!   first touch of the new page, against 35 µs per page for today's `Vec` resize (realloc + fill).
//! - Under Memcheck: create + drop of a one-page memory 160 µs (+115 µs per further page), `grow(1)`
//!   124 µs, because Memcheck's `mprotect` hook walks the range byte by byte (the `Vec` grow costs 43 ms per page there:
//!   Memcheck's realloc copies the whole block every time).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::memory_atomic::WaitQueues;

/// Bytes in a Wasm page.
pub(crate) const WASM_PAGE_SIZE: u64 = 65536;
/// The most pages a 32-bit memory can have (4 GiB).
pub(crate) const MAX_WASM_PAGES: u64 = 65536;
/// Reservation per memory natively: every 32-bit memory can reach its maximum.
pub(crate) const NATIVE_RESERVE_BYTES: u64 = MAX_WASM_PAGES * WASM_PAGE_SIZE;
/// Reservation per memory under Valgrind: reservation plus guard is 256 MiB, the largest range
/// Memcheck marks without a "large range" warning (see the top of this file).
pub(crate) const VALGRIND_RESERVE_BYTES: u64 = (256 << 20) - GUARD_BYTES;
/// No-access bytes after the reservation. One Wasm page: a multiple of every host page size.
const GUARD_BYTES: u64 = WASM_PAGE_SIZE;
/// No-access bytes after a 4 GiB reservation: compiled accesses whose static offset plus size fit here
/// need no explicit bounds check (`fault.rs`). 32 MiB covers the offsets compilers fold static data
/// addresses into (clang puts a C global's address in the offset) at little address space.
const GUARDED_GUARD_BYTES: u64 = 32 << 20;

/// The guard every memory created with reservation `reserve_bytes` has past 4 GiB: all of its mapping
/// from the committed length to `4 GiB + guard` is no-access, so no 32-bit index plus an offset up to
/// the guard leaves it. Zero when the reservation is smaller (under Valgrind).
pub(crate) fn guard_bytes(reserve_bytes: u64) -> u64 {
    if reserve_bytes >= NATIVE_RESERVE_BYTES { GUARDED_GUARD_BYTES } else { 0 }
}

/// The reservation the VM should pass to [`LinearMemory::new`]: [`NATIVE_RESERVE_BYTES`], or
/// [`VALGRIND_RESERVE_BYTES`] when running under Valgrind (one client request; call it once).
pub(crate) fn default_reserve_bytes() -> u64 {
    if valgrind_bridge::running_on_valgrind() != 0 { VALGRIND_RESERVE_BYTES } else { NATIVE_RESERVE_BYTES }
}

/// Why a memory could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryError {
    #[error("memory size must be at most 65536 pages (4 GiB), got a minimum of {min_pages}")]
    MinTooLarge { min_pages: u64 },
    #[error("memory minimum of {min_pages} pages exceeds its maximum of {max_pages}")]
    MinOverMax { min_pages: u64, max_pages: u64 },
    #[error("shared memory must have a maximum")]
    SharedWithoutMax,
    #[error("memory minimum of {min_pages} pages does not fit the {reserve_bytes}-byte address-space reservation")]
    OverReservation { min_pages: u64, reserve_bytes: u64 },
    #[error("cannot reserve {bytes} bytes of address space for a memory: {source}")]
    Reserve { bytes: u64, source: io::Error },
    #[error("cannot commit {bytes} bytes for a memory: {source}")]
    Commit { bytes: u64, source: io::Error },
}

/// An access or bulk operation outside the memory (or, for [`LinearMemory::init`], outside the
/// data); the VM turns it into `TrapKind::MemoryOutOfBounds`. Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("out of bounds memory access")]
pub(crate) struct OutOfBounds;

/// One Wasm linear memory: a fixed reserved mapping with a growing committed prefix (see the top of
/// this file).
pub(crate) struct LinearMemory {
    /// First byte of the mapping. Never changes while the memory lives.
    base: NonNull<u8>,
    /// Bytes mapped: `limit_pages` pages plus `GUARD_BYTES`, or 4 GiB plus the guard when guarded.
    map_len: usize,
    /// Pages `grow` can reach: the declared maximum, capped at `MAX_WASM_PAGES` and the reservation.
    limit_pages: u64,
    /// Committed bytes, a multiple of `WASM_PAGE_SIZE`; only grows. Stored only under `grow_lock`,
    /// with `Release`, after the bytes are committed.
    len: AtomicUsize,
    /// The declared maximum, as the module (or host) gave it.
    max_pages: Option<u64>,
    shared: bool,
    /// Serializes growers; guards no data (the length is the atomic above).
    grow_lock: Mutex<()>,
    /// Threads blocked in `memory.atomic.wait` on this memory (`memory_atomic.rs`).
    wait_queues: WaitQueues,
    /// Mapped for every 32-bit index plus [`guard_bytes`] and registered with `fault.rs`.
    guarded: bool,
}

// SAFETY: the memory owns its mapping alone (created in `new`, unmapped only by `Drop`), and nothing
// about the mapping or the lock is tied to the thread that created it.
unsafe impl Send for LinearMemory {}

// SAFETY: every `&self` method is safe to call from several threads at once. The length is an
// atomic; `grow` is serialized by `grow_lock` and publishes a length only after its pages are
// committed, and the mapping neither moves nor shrinks while `self` lives, so every access a bounds
// check admits is to committed memory, whichever thread grew it. The accessors touch the bytes only
// through raw pointers and never hand out references (except the `unsafe` slice views, whose callers
// promise exclusivity). What remains is Wasm's own semantics: threads of a *shared* memory may
// access the same bytes without synchronisation, which Rust's model calls a data race and Wasm
// defines (each byte is some value written to it). Like every engine that runs Wasm loads and stores
// as plain machine loads and stores (wasmtime, V8), we rely on the hardware there; the VM's atomic
// instructions must use real atomics on these bytes (`AtomicU32::from_ptr` and friends). A
// non-shared memory is only ever accessed by the one thread that owns its store.
unsafe impl Sync for LinearMemory {}

impl LinearMemory {
    /// A memory of `min_pages` zero pages that can grow to `max_pages` (65536 if `None`), within a
    /// reservation of `reserve_bytes` (rounded down to whole pages; pass [`default_reserve_bytes`]).
    /// A shared memory must have a maximum. Fails, with a message for the VM's error, if `min_pages`
    /// is over 65536, over `max_pages` or over the reservation, or if the system refuses the mapping.
    pub fn new(
        min_pages: u64,
        max_pages: Option<u64>,
        shared: bool,
        reserve_bytes: u64,
    ) -> Result<LinearMemory, MemoryError> {
        if min_pages > MAX_WASM_PAGES {
            return Err(MemoryError::MinTooLarge { min_pages });
        }
        if let Some(max_pages) = max_pages
            && min_pages > max_pages
        {
            return Err(MemoryError::MinOverMax { min_pages, max_pages });
        }
        if shared && max_pages.is_none() {
            return Err(MemoryError::SharedWithoutMax);
        }
        let limit_pages = max_pages.unwrap_or(MAX_WASM_PAGES).min(MAX_WASM_PAGES).min(reserve_bytes / WASM_PAGE_SIZE);
        if min_pages > limit_pages {
            return Err(MemoryError::OverReservation { min_pages, reserve_bytes });
        }
        // A guarded memory maps every 32-bit index and its guard whatever its maximum, so that compiled
        // code can leave the bounds check to the hardware (`fault.rs`).
        let guard = guard_bytes(reserve_bytes);
        let map_bytes =
            if guard > 0 { NATIVE_RESERVE_BYTES + guard } else { limit_pages * WASM_PAGE_SIZE + GUARD_BYTES };
        let map_len = usize::try_from(map_bytes).map_err(|_| MemoryError::Reserve {
            bytes: map_bytes,
            source: io::Error::other("larger than the address space"),
        })?;
        // SAFETY: a new private anonymous mapping at an address of the kernel's choosing; it
        // overlaps nothing else, and `LinearMemory`'s `Drop` unmaps exactly `map_len` bytes at it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(MemoryError::Reserve { bytes: map_bytes, source: io::Error::last_os_error() });
        }
        // mmap without MAP_FIXED never returns null (the kernel keeps page 0 out of its choices).
        let base = NonNull::new(addr.cast::<u8>()).expect("mmap returned a null mapping");
        let memory = LinearMemory {
            base,
            map_len,
            limit_pages,
            len: AtomicUsize::new(0),
            max_pages,
            shared,
            grow_lock: Mutex::new(()),
            wait_queues: WaitQueues::default(),
            guarded: guard > 0,
        };
        if memory.guarded {
            crate::fault::register_memory(addr as usize, map_len);
        }
        // From here on, a failure unmaps through `memory`'s drop.
        let min_len = (min_pages * WASM_PAGE_SIZE) as usize;
        memory
            .commit(0, min_len)
            .map_err(|source| MemoryError::Commit { bytes: min_pages * WASM_PAGE_SIZE, source })?;
        memory.len.store(min_len, Ordering::Release);
        Ok(memory)
    }

    /// The first byte. Never changes while the memory lives; `base()..base() + len()` is readable and
    /// writable. Whoever keeps it (compiled code, another thread) must not outlive the memory.
    #[inline(always)]
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The current length in bytes (a multiple of [`WASM_PAGE_SIZE`]). Only grows, so a length read
    /// earlier is never larger than the current one.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len.load(if self.shared { Ordering::Acquire } else { Ordering::Relaxed })
    }

    /// Address of the byte length, for compiled code's bounds checks (a plain load is a `Relaxed` one
    /// on the targets compiled code runs on; compiled code is used only with non-shared memories).
    pub fn len_address(&self) -> usize {
        self.len.as_ptr() as usize
    }

    /// The current size in Wasm pages (`memory.size`).
    #[inline]
    pub fn pages(&self) -> u64 {
        self.len() as u64 / WASM_PAGE_SIZE
    }

    /// The declared maximum in pages (for import matching), not the reservation.
    pub fn max_pages(&self) -> Option<u64> {
        self.max_pages
    }

    /// Whether the memory was declared `shared`.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The threads waiting on this memory's addresses (`memory_atomic.rs`).
    pub(crate) fn wait_queues(&self) -> &WaitQueues {
        &self.wait_queues
    }

    /// `memory.grow`: adds `delta_pages` zero pages and returns the old size in pages, or `None`
    /// (Wasm's -1) if the new size would pass the declared maximum, 65536 pages or the reservation,
    /// or the system refuses to commit the pages. The base does not move. Any thread may grow a
    /// shared memory; growers are serialized and each sees the size the previous one left.
    pub fn grow(&self, delta_pages: u64) -> Option<u64> {
        let _serialized = self.grow_lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Only growers store the length, and they hold the lock: the last store is visible.
        let old_len = self.len.load(Ordering::Relaxed);
        let old_pages = old_len as u64 / WASM_PAGE_SIZE;
        let new_pages = old_pages.checked_add(delta_pages).filter(|&p| p <= self.limit_pages)?;
        if new_pages > old_pages {
            let new_len = (new_pages * WASM_PAGE_SIZE) as usize;
            self.commit(old_len, new_len).ok()?;
            self.len.store(new_len, Ordering::Release);
        }
        Some(old_pages)
    }

    /// Makes `[from, to)` (page-aligned offsets within the reservation) readable and writable.
    fn commit(&self, from: usize, to: usize) -> io::Result<()> {
        debug_assert!(from <= to && to <= self.map_len - GUARD_BYTES as usize);
        if from == to {
            return Ok(());
        }
        // SAFETY: the range lies inside our own mapping (callers stay within `limit_pages`) and is
        // page-aligned (the base is, and offsets are whole Wasm pages). Nothing refers to the bytes
        // yet: they are past the published length.
        let rc = unsafe { libc::mprotect(self.base().add(from).cast(), to - from, libc::PROT_READ | libc::PROT_WRITE) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// The offset `at` as an index if `[at, at + n)` lies inside the current length.
    #[inline(always)]
    fn check(&self, at: u64, n: u64) -> Result<usize, OutOfBounds> {
        match at.checked_add(n) {
            Some(end) if end <= self.len() as u64 => Ok(at as usize),
            _ => Err(OutOfBounds),
        }
    }

    /// Reads `N` bytes at byte offset `at` (any alignment), or `None` if any of them is past the
    /// length. One bounds check.
    /// (Tests check the mapping through it; the VM reads and writes through its own views.)
    #[cfg(test)]
    #[inline(always)]
    pub fn read<const N: usize>(&self, at: u64) -> Option<[u8; N]> {
        let at = self.check(at, N as u64).ok()?;
        // SAFETY: `check` put `[at, at + N)` inside the committed length, which stays mapped while
        // `self` lives; `[u8; N]` has alignment 1.
        Some(unsafe { self.base().add(at).cast::<[u8; N]>().read() })
    }

    /// Writes `bytes` at byte offset `at` (any alignment), or fails without writing if any of them
    /// would be past the length. One bounds check.
    /// (Tests check the mapping through it; the VM reads and writes through its own views.)
    #[cfg(test)]
    #[inline(always)]
    pub fn write<const N: usize>(&self, at: u64, bytes: [u8; N]) -> Result<(), OutOfBounds> {
        let at = self.check(at, N as u64)?;
        // SAFETY: as in `read`.
        unsafe { self.base().add(at).cast::<[u8; N]>().write(bytes) };
        Ok(())
    }

    /// `memory.fill`: sets `n` bytes at `at` to `value`, or fails without writing if the range
    /// passes the length (`n == 0` at `at == len()` is in bounds).
    pub fn fill(&self, at: u64, value: u8, n: u64) -> Result<(), OutOfBounds> {
        let at = self.check(at, n)?;
        // SAFETY: `check` put `[at, at + n)` inside the committed length.
        unsafe { self.base().add(at).write_bytes(value, n as usize) };
        Ok(())
    }

    /// `memory.copy` from `src_memory` (which may be `self`; overlapping ranges copy as if through a
    /// temporary buffer) into this memory: `n` bytes from `src` to `dst`. Fails without writing if
    /// either range passes its memory's length.
    pub fn copy_from(&self, dst: u64, src_memory: &LinearMemory, src: u64, n: u64) -> Result<(), OutOfBounds> {
        let dst = self.check(dst, n)?;
        let src = src_memory.check(src, n)?;
        // SAFETY: both ranges are inside their memories' committed lengths; `copy` is a memmove, so
        // overlap (same memory) is fine.
        unsafe { std::ptr::copy(src_memory.base().add(src), self.base().add(dst), n as usize) };
        Ok(())
    }

    /// `memory.init`, and active data segments (`init(offset, &segment, 0, segment.len())`): copies
    /// `n` bytes of `data` from `src` to `dst`. Fails without writing if `[src, src + n)` passes the
    /// end of `data` or `[dst, dst + n)` the length.
    pub fn init(&self, dst: u64, data: &[u8], src: u64, n: u64) -> Result<(), OutOfBounds> {
        let dst = self.check(dst, n)?;
        let src = usize::try_from(src).map_err(|_| OutOfBounds)?;
        let bytes = data.get(src..).and_then(|d| d.get(..n as usize)).ok_or(OutOfBounds)?;
        // SAFETY: `[dst, dst + n)` is inside the committed length and `bytes` is a live slice. `copy`
        // is a memmove, so even a `data` that is a view of this memory (`as_slice`) copies right.
        unsafe { std::ptr::copy(bytes.as_ptr(), self.base().add(dst), bytes.len()) };
        Ok(())
    }

    /// The committed bytes as a slice, for host functions.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one may write these bytes (through this memory's accessors, a
    /// `&mut` view, compiled code or another thread), and the memory must outlive it. For a
    /// non-shared memory that means: the owning thread holds no other view and runs no Wasm. A
    /// concurrent `grow` is harmless (the slice keeps the old length).
    /// (Tests check the mapping through it, `Store::memory_bytes` copies from it; the VM reads and writes
    /// through its own views.)
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `[base, base + len)` is committed and mapped while `self` lives; exclusivity of
        // writes is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.base(), self.len()) }
    }

    /// The committed bytes as a mutable slice, for host functions (WASI reads and writes guest
    /// buffers through it).
    ///
    /// # Safety
    ///
    /// While the slice lives, no one else may read or write these bytes (through this memory's
    /// accessors, another slice view, compiled code or another thread), and the memory must outlive
    /// it. For a non-shared memory that means: the owning thread holds no other view and runs no
    /// Wasm. Taking one on a shared memory other threads can use breaks this; copy in and out with
    /// the accessors instead.
    #[allow(clippy::mut_from_ref)] // The bytes are not in `self`: they are the mapping it owns.
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; exclusivity of all access is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.base(), self.len()) }
    }
}

impl Drop for LinearMemory {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `new` made; `&mut self` means no accessor is running, and the
        // contracts of `base` and the slice views say no pointer into it outlives the memory.
        // Memcheck marks the range no-access on munmap by itself.
        if self.guarded {
            crate::fault::unregister_memory(self.base() as usize);
        }
        let rc = unsafe { libc::munmap(self.base().cast(), self.map_len) };
        debug_assert_eq!(rc, 0, "munmap of a memory failed: {}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicBool, AtomicU8};

    const PAGE: u64 = WASM_PAGE_SIZE;

    /// Tests that create memories hold it shared; `drop_unmaps_the_reservation` holds it exclusively,
    /// so no other memory of these tests is created or dropped in the range it watches.
    static MAPS: RwLock<()> = RwLock::new(());

    fn mem(min: u64, max: Option<u64>, shared: bool, reserve: u64) -> LinearMemory {
        LinearMemory::new(min, max, shared, reserve).expect("memory")
    }

    #[test]
    fn base_stays_put_across_grows_and_new_pages_are_zero() {
        let _maps = MAPS.read();
        let m = mem(1, None, false, default_reserve_bytes());
        let base = m.base();
        m.write(PAGE - 4, [1, 2, 3, 4]).unwrap();
        for (i, delta) in [1, 3, 0, 16].into_iter().enumerate() {
            let before = m.pages();
            assert_eq!(m.grow(delta), Some(before), "grow #{i}");
            assert_eq!(m.pages(), before + delta);
            assert_eq!(m.base(), base, "grow #{i} moved the base");
        }
        assert_eq!(m.len() as u64, 21 * PAGE);
        assert_eq!(m.read(PAGE - 4), Some([1, 2, 3, 4]), "old bytes survive");
        // SAFETY: this thread is the only user of `m`.
        let bytes = unsafe { m.as_slice() };
        assert!(bytes[PAGE as usize..].iter().all(|&b| b == 0), "grown pages are zero");
    }

    #[test]
    fn grow_stops_at_the_declared_maximum() {
        let _maps = MAPS.read();
        let m = mem(1, Some(3), false, default_reserve_bytes());
        assert_eq!((m.max_pages(), m.is_shared()), (Some(3), false));
        assert_eq!(m.grow(3), None);
        assert_eq!(m.grow(2), Some(1));
        assert_eq!(m.grow(1), None);
        assert_eq!(m.grow(0), Some(3), "growing by 0 at the maximum succeeds");
        assert_eq!(m.grow(u64::MAX), None, "no overflow");
        assert_eq!(m.pages(), 3);
    }

    #[test]
    fn grow_stops_at_65536_pages() {
        let _maps = MAPS.read();
        // A reservation larger than 4 GiB is capped at 4 GiB.
        let m = mem(0, None, false, 2 * NATIVE_RESERVE_BYTES);
        assert_eq!(m.limit_pages, MAX_WASM_PAGES);
        assert_eq!(m.grow(MAX_WASM_PAGES + 1), None);
        assert_eq!(m.grow(MAX_WASM_PAGES), Some(0), "4 GiB commits without touching memory");
        assert_eq!(m.grow(1), None);
        let last = NATIVE_RESERVE_BYTES - 1;
        assert_eq!(m.read::<1>(last), Some([0]));
        assert_eq!(m.write(last, [9]), Ok(()));
        assert_eq!(m.read::<1>(last + 1), None);
    }

    #[test]
    fn grow_stops_at_the_reservation() {
        let _maps = MAPS.read();
        // Not a whole number of pages: rounded down to 3.
        let m = mem(1, None, false, 3 * PAGE + 100);
        assert_eq!(m.limit_pages, 3);
        assert_eq!(m.grow(2), Some(1));
        assert_eq!(m.grow(1), None);
        // A maximum above the reservation: still the reservation, shared or not.
        let s = mem(1, Some(1000), true, 2 * PAGE);
        assert_eq!(s.max_pages(), Some(1000), "the declared maximum is reported, not the reservation");
        assert_eq!(s.grow(1), Some(1));
        assert_eq!(s.grow(1), None);
        // An empty memory with an empty reservation still has a real base (the guard).
        let z = mem(0, Some(0), false, 0);
        assert_eq!((z.len(), z.grow(0), z.grow(1), z.read::<1>(0)), (0, Some(0), None, None));
    }

    #[test]
    fn creation_errors() {
        let _maps = MAPS.read();
        let err = |min, max, shared, reserve| LinearMemory::new(min, max, shared, reserve).err().unwrap().to_string();
        assert_eq!(
            err(65537, None, false, NATIVE_RESERVE_BYTES),
            "memory size must be at most 65536 pages (4 GiB), got a minimum of 65537"
        );
        assert_eq!(err(3, Some(2), false, NATIVE_RESERVE_BYTES), "memory minimum of 3 pages exceeds its maximum of 2");
        assert_eq!(err(1, None, true, NATIVE_RESERVE_BYTES), "shared memory must have a maximum");
        assert_eq!(
            err(3, Some(10), false, 2 * PAGE),
            "memory minimum of 3 pages does not fit the 131072-byte address-space reservation"
        );
        assert!(LinearMemory::new(2, Some(10), false, 2 * PAGE).is_ok(), "a minimum filling the reservation fits");
    }

    #[test]
    fn accesses_at_the_last_byte_and_one_past_it() {
        let _maps = MAPS.read();
        let m = mem(2, None, false, default_reserve_bytes());
        let len = m.len() as u64;
        assert_eq!(m.write(len - 1, [0xab]), Ok(()));
        assert_eq!(m.read::<1>(len - 1), Some([0xab]));
        assert_eq!(m.write(len - 8, 0x0102_0304_0506_0708u64.to_le_bytes()), Ok(()));
        assert_eq!(m.read::<8>(len - 8).map(u64::from_le_bytes), Some(0x0102_0304_0506_0708));
        assert_eq!(m.read::<4>(3).map(u32::from_le_bytes), Some(0), "unaligned");
        assert_eq!(m.read::<1>(len), None);
        assert_eq!(m.read::<8>(len - 7), None, "straddles the end");
        assert_eq!(m.write(len, [1]), Err(OutOfBounds));
        assert_eq!(m.write(len - 3, [1, 2, 3, 4]), Err(OutOfBounds));
        assert_eq!(m.read::<3>(len - 3), Some([3, 2, 1]), "a failed write writes nothing");
        assert_eq!(m.read::<4>(u64::MAX - 1), None, "no overflow");
        // Effective addresses of wasm32 can reach 2^33: still just out of bounds.
        assert_eq!(m.read::<8>((u32::MAX as u64) * 2), None);
    }

    #[test]
    fn bulk_operations_are_bounds_checked_first() {
        let _maps = MAPS.read();
        let m = mem(1, Some(4), false, default_reserve_bytes());
        let len = m.len() as u64;
        assert_eq!(m.fill(10, 7, 5), Ok(()));
        assert_eq!(m.read::<7>(9), Some([0, 7, 7, 7, 7, 7, 0]));
        assert_eq!(m.fill(len, 1, 0), Ok(()), "empty at the end is in bounds");
        assert_eq!(m.fill(len + 1, 1, 0), Err(OutOfBounds), "empty past the end is not");
        assert_eq!(m.fill(len - 2, 1, 3), Err(OutOfBounds));
        assert_eq!(m.read::<2>(len - 2), Some([0, 0]), "nothing written");

        // Overlapping copies within one memory, both directions.
        m.write(100, [1, 2, 3, 4, 5]).unwrap();
        assert_eq!(m.copy_from(102, &m, 100, 5), Ok(()));
        assert_eq!(m.read::<7>(100), Some([1, 2, 1, 2, 3, 4, 5]));
        assert_eq!(m.copy_from(100, &m, 102, 5), Ok(()));
        assert_eq!(m.read::<7>(100), Some([1, 2, 3, 4, 5, 4, 5]));
        assert_eq!(m.copy_from(len - 1, &m, 0, 2), Err(OutOfBounds));
        assert_eq!(m.copy_from(0, &m, len - 1, 2), Err(OutOfBounds));
        assert_eq!(m.copy_from(len, &m, len, 0), Ok(()));

        // Between two memories.
        let other = mem(1, None, false, default_reserve_bytes());
        assert_eq!(other.copy_from(0, &m, 100, 5), Ok(()));
        assert_eq!(other.read::<5>(0), Some([1, 2, 3, 4, 5]));
        assert_eq!(other.copy_from(0, &m, len, 1), Err(OutOfBounds));

        // memory.init and data segments.
        let data = [9u8, 8, 7, 6];
        assert_eq!(m.init(200, &data, 1, 3), Ok(()));
        assert_eq!(m.read::<4>(200), Some([8, 7, 6, 0]));
        assert_eq!(m.init(0, &data, 2, 3), Err(OutOfBounds), "past the end of the data");
        assert_eq!(m.init(0, &data, 4, 0), Ok(()), "empty at the end of the data");
        assert_eq!(m.init(0, &data, 5, 0), Err(OutOfBounds), "empty past the end of the data");
        assert_eq!(m.init(len - 3, &data, 0, 4), Err(OutOfBounds));
        assert_eq!(m.init(len - 4, &data, 0, 4), Ok(()));
        assert_eq!(m.init(0, &data, u64::MAX, 1), Err(OutOfBounds));
    }

    /// One thread grows a shared memory page by page and marks each new page; another reads the
    /// length all the while. The reader must never see a length whose last byte is not committed
    /// (that would fault), nor a length that shrinks.
    #[test]
    fn shared_memory_grows_while_another_thread_reads_the_length() {
        let _maps = MAPS.read();
        const PAGES: u64 = 200;
        let m = mem(1, Some(PAGES), true, default_reserve_bytes());
        let done = AtomicBool::new(false);
        let marker = |len: usize| {
            // SAFETY: `len - 1` is inside the committed length; the byte is only ever accessed
            // through atomics, by both threads.
            unsafe { AtomicU8::from_ptr(m.base().add(len - 1)) }
        };
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut last, mut reads) = (0, 0u64);
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let len = m.len();
                    assert!(len >= last && len.is_multiple_of(PAGE as usize), "length {len} after {last}");
                    let mark = marker(len).load(Ordering::Relaxed);
                    let pages = (len as u64 / PAGE) as u8;
                    assert!(mark == 0 || mark == pages, "page {pages} marked {mark}");
                    (last, reads) = (len, reads + 1);
                    if finished {
                        return (last, reads);
                    }
                }
            });
            for _ in 1..PAGES {
                let old = m.grow(1).expect("grow");
                marker(m.len()).store((old + 1) as u8, Ordering::Relaxed);
            }
            assert_eq!(m.grow(1), None);
            done.store(true, Ordering::Release);
            let (last, reads) = reader.join().unwrap();
            assert_eq!(last as u64, PAGES * PAGE, "the reader saw the final length ({reads} reads)");
        });
    }

    /// The lines of `/proc/self/maps` that overlap `[start, end)`.
    fn maps_overlapping(start: usize, end: usize) -> Vec<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        maps.lines()
            .filter(|line| {
                let range = line.split(' ').next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
                lo < end && start < hi
            })
            .map(str::to_owned)
            .collect()
    }

    /// After drop, none of the memory's VMAs is left. (Not "nothing overlaps the range": other test
    /// threads starting up map their signal stacks into the fresh hole within microseconds.)
    #[cfg(target_os = "linux")]
    #[test]
    fn drop_unmaps_the_reservation() {
        let _maps = MAPS.write().unwrap_or_else(PoisonError::into_inner);
        let m = mem(2, Some(10), false, default_reserve_bytes());
        let (start, end) = (m.base() as usize, m.base() as usize + m.map_len);
        let guard = guard_bytes(default_reserve_bytes());
        let mapped = if guard > 0 { NATIVE_RESERVE_BYTES + guard } else { 10 * PAGE + GUARD_BYTES };
        assert_eq!(m.map_len as u64, mapped);
        let before = maps_overlapping(start, end);
        assert!(before.iter().any(|l| l.contains(" rw-p ")), "committed part: {before:?}");
        assert!(before.iter().any(|l| l.contains(" ---p ")), "reserved part: {before:?}");
        drop(m);
        let after = maps_overlapping(start, end);
        let left: Vec<_> = before.iter().filter(|l| after.contains(l)).collect();
        assert!(left.is_empty(), "still mapped after drop: {left:?} (now {after:?})");
    }

    /// Under Valgrind only (run the test binary under `valgrind`): Memcheck's view follows the length
    /// with no client requests from this file. Natively it returns at once.
    #[test]
    fn memcheck_view_follows_the_length() {
        if valgrind_bridge::running_on_valgrind() == 0 {
            return;
        }
        let _maps = MAPS.read();
        let m = mem(1, Some(3), false, default_reserve_bytes());
        let base = m.base().cast_const();
        // The checks report an error when they find a bad byte: keep those out of the error count.
        valgrind_bridge::disable_error_reporting();
        let past = valgrind_bridge::check_mem_is_addressable(base.wrapping_add(m.len()), 1);
        let committed = valgrind_bridge::check_mem_is_defined(base, m.len());
        m.grow(1).unwrap();
        let grown = valgrind_bridge::check_mem_is_defined(base, m.len());
        let past_grown = valgrind_bridge::check_mem_is_addressable(base.wrapping_add(m.len()), 1);
        let guard = valgrind_bridge::check_mem_is_addressable(base.wrapping_add(m.map_len - 1), 1);
        valgrind_bridge::enable_error_reporting();
        assert_eq!(past, base as usize + PAGE as usize, "past the length: no-access");
        assert_eq!((committed, grown), (0, 0), "committed and grown bytes: defined");
        assert_eq!(past_grown, base as usize + 2 * PAGE as usize, "past the grown length: no-access");
        assert_ne!(guard, 0, "guard: no-access");
    }

    /// The child of `memcheck_reports_a_read_past_the_length`: does its work only when that test
    /// runs it under Valgrind (`VMRUN_MEMORY_CHILD` names the scenario). Works in builds without
    /// client requests too, as this file needs none.
    #[test]
    #[ignore = "run under valgrind by memcheck_reports_a_read_past_the_length"]
    fn memcheck_child() {
        let Ok(scenario) = std::env::var("VMRUN_MEMORY_CHILD") else { return };
        let m = mem(1, Some(8), false, VALGRIND_RESERVE_BYTES);
        assert_eq!(m.grow(2), Some(1));
        m.write(m.len() as u64 - 8, [1; 8]).unwrap();
        let sum: u32 = m.read::<8>(m.len() as u64 - 8).unwrap().iter().map(|&b| b as u32).sum();
        assert_eq!(sum + m.read::<4>(PAGE).unwrap()[0] as u32, 8, "written bytes and a zero grown byte");
        m.fill(0, 3, 100).unwrap();
        m.copy_from(PAGE, &m, 0, 100).unwrap();
        // SAFETY: this thread is the only user of `m`.
        let total: u64 = unsafe { m.as_slice() }.iter().map(|&b| b as u64).sum();
        assert_eq!(total, 600 + 8);
        if scenario == "past" {
            // A VM bug: an access one byte past the length, without the bounds check.
            // SAFETY: none; Memcheck must report it, then the native fault ends the process.
            let byte = unsafe { m.base().add(m.len()).read_volatile() };
            println!("read {byte} past the length");
        }
    }

    /// With real Valgrind (skipped if it is missing): the child's normal grow/write/read run is clean
    /// under `--error-exitcode=99`, and a read one byte past the length is an "Invalid read".
    #[test]
    fn memcheck_reports_a_read_past_the_length() {
        let valgrind = std::process::Command::new("valgrind").arg("--version").output();
        if !valgrind.is_ok_and(|o| o.status.success()) || valgrind_bridge::running_on_valgrind() != 0 {
            eprintln!("skipped: valgrind not installed (or already running under it)");
            return;
        }
        if !valgrind_bridge::ENABLED {
            eprintln!("checked without client requests: this file issues none");
        }
        let name = concat!(module_path!(), "::memcheck_child");
        let test = name.split_once("::").map_or(name, |(_krate, path)| path);
        let run = |scenario: &str| {
            let out = std::process::Command::new("valgrind")
                .args(["--error-exitcode=99", "--num-callers=12"])
                .arg(std::env::current_exe().unwrap())
                .args(["--exact", test, "--ignored", "--test-threads=1", "--nocapture"])
                .env("VMRUN_MEMORY_CHILD", scenario)
                .output()
                .expect("valgrind runs");
            (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (status, stderr) = run("clean");
        assert!(status.success(), "clean run: {status}\n{stderr}");
        assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
        assert!(!stderr.contains("Warning: set address range perms"), "large-range warnings:\n{stderr}");
        let (status, stderr) = run("past");
        assert!(!status.success(), "the read past the length must fault natively too");
        assert!(stderr.contains("Invalid read of size 1"), "{stderr}");
        assert!(stderr.contains("memcheck_child"), "the report names the reading function: {stderr}");
        assert!(stderr.contains("anonymous segment"), "{stderr}");
    }
}
