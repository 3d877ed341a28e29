//! The value stack: where every wasm frame's slots (parameters, locals, constants, temporaries) live.
//!
//! It is memory the VM maps itself rather than a `Vec`, for three reasons:
//!
//! - **A guard page** after the reserved range (`PROT_NONE`): the interpreter bounds-checks every frame
//!   it pushes, so the guard is never touched by a correct VM; if a bug ever wrote past the end, the
//!   process would fault at once instead of corrupting the host heap.
//! - **Memcheck sees it as a stack** (`STACK_REGISTER`, deregistered on drop), like every stack the VM
//!   allocates, and sees the part above the high-water mark as no-access.
//! - **It grows without moving**: slot addresses stay valid, and the mapping's untouched pages cost no
//!   memory.
//!
//! The stack *reserves* `reserved` slots (`Config::value_stack_slots`) and *commits* a prefix of them:
//! only committed slots are visible as the slice the interpreter indexes, and only they are addressable
//! under Memcheck. When a call needs more, the interpreter leaves its dispatch loop
//! (`Exit::GrowStack`), [`ValueStack::grow`] commits at least twice as much (up to the reservation), and
//! the call runs again; beyond the reservation it is `call stack exhausted`. Committed memory is never
//! decommitted: per-call no-access marking of dead frames would cost two client requests per call under
//! Valgrind, which is not practical, so the no-access boundary is the high-water mark.

use std::ops::{Deref, DerefMut};

use memmap2::{MmapMut, MmapOptions};

/// Slots committed when a stack is created (512 KiB).
const INITIAL_COMMIT: usize = 64 << 10;
const GUARD_BYTES: usize = 4096;

pub(crate) struct ValueStack {
    /// The reservation plus the guard page. Never moved or resized, so `base` stays valid.
    _map: MmapMut,
    base: *mut u64,
    reserved: usize,
    committed: usize,
    /// Valgrind's id for the registered stack (0 natively).
    valgrind_id: usize,
}

// SAFETY: `base` points into `map`, which the stack owns; moving the stack to another thread moves
// the mapping's ownership with it.
unsafe impl Send for ValueStack {}

impl ValueStack {
    /// A stack that can grow to `reserved` slots. Fails if the OS refuses the mapping.
    pub fn new(reserved: usize) -> std::io::Result<ValueStack> {
        let reserved = reserved.max(1);
        let bytes = reserved
            .checked_mul(8)
            .and_then(|b| b.checked_next_multiple_of(GUARD_BYTES))
            .ok_or_else(|| std::io::Error::other("value stack size overflows"))?;
        let mut map = MmapOptions::new().len(bytes + GUARD_BYTES).no_reserve_swap().map_anon()?;
        let base = map.as_mut_ptr().cast::<u64>();
        // SAFETY: the guard page is the last page of our own mapping (page-aligned: mmap returns page-aligned
        // memory and `bytes` is a multiple of the page size); nothing refers to it.
        let rc = unsafe { libc::mprotect(map.as_mut_ptr().add(bytes).cast(), GUARD_BYTES, libc::PROT_NONE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let start = base.cast_const().cast::<u8>();
        // Valgrind's stack bounds are inclusive: the highest addressable byte.
        let valgrind_id = valgrind_bridge::stack_register(start, start.wrapping_add(bytes - 1));
        let committed = INITIAL_COMMIT.min(reserved);
        valgrind_bridge::make_mem_noaccess(start.wrapping_add(committed * 8), bytes - committed * 8);
        Ok(ValueStack { _map: map, base, reserved, committed, valgrind_id })
    }

    /// Commits at least `slots` slots (doubling, up to the reservation). False if `slots` exceeds the
    /// reservation.
    pub fn grow(&mut self, slots: usize) -> bool {
        if slots <= self.committed {
            return true;
        }
        if slots > self.reserved {
            return false;
        }
        let new = slots.max(self.committed * 2).min(self.reserved);
        let start = self.base.cast_const().cast::<u8>();
        // Fresh anonymous pages are zero, so they are defined.
        valgrind_bridge::make_mem_defined(start.wrapping_add(self.committed * 8), (new - self.committed) * 8);
        self.committed = new;
        true
    }

    /// Address and size in bytes of the whole reservation (for heap observers).
    pub fn extent(&self) -> (usize, usize) {
        (self.base as usize, self.reserved * 8)
    }
}

impl Deref for ValueStack {
    type Target = [u64];
    #[inline(always)]
    fn deref(&self) -> &[u64] {
        // SAFETY: `base` is 8-aligned (page-aligned), and the first `committed` ≤ `reserved` slots lie in the
        // mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base, self.committed) }
    }
}

impl DerefMut for ValueStack {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.committed) }
    }
}

impl Drop for ValueStack {
    fn drop(&mut self) {
        // Before the memory goes: Valgrind must not treat a later mapping at these addresses as this stack.
        // (Unmapping, by `map`'s drop, resets Memcheck's view of the addresses.)
        if self.valgrind_id != 0 {
            valgrind_bridge::stack_deregister(self.valgrind_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_doubling_up_to_the_reservation_without_moving() {
        let mut s = ValueStack::new(INITIAL_COMMIT * 3).unwrap();
        assert_eq!(s.len(), INITIAL_COMMIT);
        s[INITIAL_COMMIT - 1] = 7;
        let p = s.as_ptr();
        assert!(s.grow(INITIAL_COMMIT + 1));
        assert_eq!(s.len(), INITIAL_COMMIT * 2);
        assert!(s.grow(INITIAL_COMMIT * 2 + 5));
        assert_eq!(s.len(), INITIAL_COMMIT * 3, "capped at the reservation");
        assert!(!s.grow(INITIAL_COMMIT * 3 + 1));
        assert_eq!((s.as_ptr(), s[INITIAL_COMMIT - 1], s[INITIAL_COMMIT * 3 - 1]), (p, 7, 0));
    }

    #[test]
    fn small_reservations_commit_everything() {
        let s = ValueStack::new(10).unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(s.extent().1, 80);
    }
}
