//! `ObjRef`: a handle to a live heap object, and the object layout.
//!
//! Every object starts with an 8-byte header: `type_id: u32` at offset 0, then `len: u32` at offset 4 (the
//! array length; 0 for structs). Fields and elements follow at offset 8. Offsets passed to the accessors
//! are from the object start, header included. Accessors use unaligned loads and stores, so the VM may pack
//! fields as it likes (reference fields must still be 8-aligned, see [`crate::Layout`]).
//!
//! An `ObjRef` is a plain pointer: it does not keep the object alive. The VM must keep every reference it
//! will use again visible to the collector through its [`crate::RootSet`] (or reachable from a rooted
//! object); using an `ObjRef` to an object a collection freed is a VM bug (Memcheck will say so once the
//! Valgrind observer is attached). In debug builds every access is bounds-checked against the object's slot.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::value::is_object;

/// Bytes of the object header (`type_id: u32`, then `len: u32`).
pub const HEADER_SIZE: usize = 8;

/// The header word of an object of `type_id` with array length `len` (0 for structs), as stored.
#[inline(always)]
pub(crate) fn header_word(type_id: u32, len: u32) -> u64 {
    (type_id as u64 | (len as u64) << 32).to_le()
}

/// Reads the header (type id, array length) of the object at `addr`.
///
/// # Safety
/// `addr` is the start of an allocated object slot (its header was written at allocation).
#[inline(always)]
pub(crate) unsafe fn read_header(addr: usize) -> (u32, u32) {
    // SAFETY: guaranteed by the caller; headers are 8-aligned.
    let h = u64::from_le(unsafe { (addr as *const u64).read() });
    (h as u32, (h >> 32) as u32)
}

/// A reference to a heap object (the address of its header).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ObjRef(NonNull<u8>);

impl ObjRef {
    /// # Safety
    /// `addr` is the start of a freshly allocated object slot.
    #[inline(always)]
    pub(crate) unsafe fn from_addr(addr: usize) -> ObjRef {
        debug_assert!(addr != 0 && addr.is_multiple_of(8));
        // SAFETY: allocated slots are never at address 0.
        ObjRef(unsafe { NonNull::new_unchecked(addr as *mut u8) })
    }

    /// The reference's encoding (see [`crate::value`]): the header address.
    #[inline(always)]
    pub fn raw(self) -> u64 {
        self.0.as_ptr() as usize as u64
    }

    /// The header address.
    #[inline(always)]
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// # Safety
    /// `is_object(raw)` holds and `raw` is the address of a live object of a heap that is still alive.
    #[inline(always)]
    pub unsafe fn from_raw(raw: u64) -> ObjRef {
        debug_assert!(is_object(raw), "ObjRef::from_raw({raw:#x}): not an object reference");
        // SAFETY: `is_object` implies non-zero (caller's obligation).
        ObjRef(unsafe { NonNull::new_unchecked(raw as usize as *mut u8) })
    }

    #[inline(always)]
    pub fn type_id(self) -> u32 {
        self.load_u32(0)
    }

    /// The array length from the header (0 for structs).
    #[inline(always)]
    pub fn array_len(self) -> u32 {
        self.load_u32(4)
    }

    /// Size of the slot holding this object (≥ the object size), found through the span tables.
    pub fn slot_size(self) -> usize {
        match crate::arena::span_of(self.addr()) {
            // SAFETY: the span table only holds live spans.
            Some(span) => unsafe { span.as_ref().elem_size },
            None => panic!("gc: {:#x} is not inside the heap", self.addr()),
        }
    }

    #[inline(always)]
    fn check(self, offset: usize, len: usize) {
        debug_assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.slot_size()),
            "gc: access of {len} bytes at offset {offset} is outside the {}-byte slot of object {:#x}",
            self.slot_size(),
            self.addr()
        );
    }

    #[inline(always)]
    fn check_store(self, offset: usize, len: usize) {
        debug_assert!(offset >= HEADER_SIZE, "gc: store at offset {offset} would overwrite the object header");
        self.check(offset, len);
    }

    #[inline(always)]
    fn ptr(self, offset: usize) -> *mut u8 {
        self.0.as_ptr().wrapping_add(offset)
    }
}

macro_rules! accessors {
    ($($load:ident $store:ident $t:ty;)*) => {
        impl ObjRef {
            $(
                #[doc = concat!("Loads a `", stringify!($t), "` at byte `offset` from the object start.")]
                #[inline(always)]
                pub fn $load(self, offset: usize) -> $t {
                    self.check(offset, size_of::<$t>());
                    // SAFETY: the object is live (from_raw contract) and the access lies inside its slot
                    // (checked in debug builds; the VM's types and bounds checks guarantee it).
                    unsafe { (self.ptr(offset) as *const $t).read_unaligned() }
                }
                #[doc = concat!("Stores a `", stringify!($t), "` at byte `offset` from the object start.")]
                #[inline(always)]
                pub fn $store(self, offset: usize, v: $t) {
                    self.check_store(offset, size_of::<$t>());
                    // SAFETY: as for the load; stores never touch the header (checked in debug builds).
                    unsafe { (self.ptr(offset) as *mut $t).write_unaligned(v) }
                }
            )*
        }
    };
}

accessors! {
    load_u8 store_u8 u8;
    load_u16 store_u16 u16;
    load_u32 store_u32 u32;
    load_u64 store_u64 u64;
}

impl ObjRef {
    /// Copies `len` bytes from `src` at `src_offset` to this object at `dst_offset` (memmove: the ranges
    /// may overlap, also when `src == self`). Used for `array.copy`.
    #[inline]
    pub fn copy_from(self, dst_offset: usize, src: ObjRef, src_offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        src.check(src_offset, len);
        self.check_store(dst_offset, len);
        // SAFETY: both ranges lie inside live objects (checked in debug builds); `copy` allows overlap.
        unsafe { std::ptr::copy(src.ptr(src_offset), self.ptr(dst_offset), len) }
    }

    /// Copies `count` 8-byte words from `src` at `src_offset` to this object at `dst_offset` (memmove
    /// semantics), each with one whole load and store, never split: for reference elements, which another
    /// thread may read meanwhile in a shared array and must never see torn. Offsets are multiples of 8.
    #[inline]
    pub fn copy_words_from(self, dst_offset: usize, src: ObjRef, src_offset: usize, count: usize) {
        if count == 0 {
            return;
        }
        src.check(src_offset, count * 8);
        self.check_store(dst_offset, count * 8);
        debug_assert!(dst_offset.is_multiple_of(8) && src_offset.is_multiple_of(8), "gc: unaligned word copy");
        let word = |o: ObjRef, offset: usize, i: usize| {
            // SAFETY: the word lies inside a live object (checked in debug builds) and is 8-aligned (objects
            // are, and so are the offsets); concurrent accesses to it are atomic or the guest's own race.
            // Relaxed atomics are plain moves that the compiler may not merge into a byte-wise memmove.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(o.ptr(offset + i * 8) as *mut u64) }
        };
        let copy = |i: usize| {
            word(self, dst_offset, i).store(word(src, src_offset, i).load(Ordering::Relaxed), Ordering::Relaxed)
        };
        if self == src && dst_offset > src_offset {
            (0..count).rev().for_each(copy);
        } else {
            (0..count).for_each(copy);
        }
    }

    /// Writes `count` copies of the low `elem_size` bytes of `value` (little-endian) starting at `offset`.
    /// `elem_size` is 1, 2, 4 or 8. Used for `array.fill` and `array.new`.
    #[inline]
    pub fn fill(self, offset: usize, elem_size: usize, count: usize, value: u64) {
        if count == 0 {
            return;
        }
        self.check_store(offset, elem_size * count);
        let p = self.ptr(offset);
        // SAFETY: the range lies inside the live object (checked in debug builds).
        unsafe {
            match elem_size {
                1 => std::ptr::write_bytes(p, value as u8, count),
                2 => (0..count).for_each(|i| (p.add(i * 2) as *mut u16).write_unaligned(value as u16)),
                4 => (0..count).for_each(|i| (p.add(i * 4) as *mut u32).write_unaligned(value as u32)),
                8 => (0..count).for_each(|i| (p.add(i * 8) as *mut u64).write_unaligned(value)),
                _ => panic!("gc: fill with element size {elem_size}"),
            }
        }
    }

    /// Copies `bytes` into the object at `offset` (`array.new_data`, `array.init_data`).
    #[inline]
    pub fn write_bytes(self, offset: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.check_store(offset, bytes.len());
        // SAFETY: the destination lies inside the live object (checked in debug builds) and cannot overlap
        // a Rust slice (objects live in heap arenas, which no `&[u8]` borrows).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr(offset), bytes.len()) }
    }

    /// Copies object bytes at `offset` into `out`.
    #[inline]
    pub fn read_bytes(self, offset: usize, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        self.check(offset, out.len());
        // SAFETY: the source lies inside the live object (checked in debug builds); `out` is a distinct
        // Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(offset), out.as_mut_ptr(), out.len()) }
    }
}

/// The read-modify-write operations of [`ObjRef::atomic_rmw`] (shared-everything threads:
/// `struct.atomic.rmw.*`, `array.atomic.rmw.*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtomicRmw {
    Add,
    Sub,
    And,
    Or,
    Xor,
    Xchg,
}

/// Runs `$body` with `$a` the atomic of `$width` bytes at `$p` and `$t` its integer type.
macro_rules! with_atomic {
    ($p:expr, $width:expr, |$a:ident, $t:ident| $body:expr) => {{
        let p = $p;
        debug_assert!((p as usize).is_multiple_of($width), "gc: unaligned atomic of {} bytes", $width);
        // SAFETY (each arm): the caller checked that the `$width` bytes at `p` lie inside a live object and
        // are aligned to `$width` (fields are laid out at multiples of their size, elements follow the
        // 8-byte header); every concurrent access to those bytes is either atomic or a race the guest
        // program has (the interpreter never holds a Rust reference over object memory).
        match $width {
            1 => {
                #[allow(dead_code)]
                type $t = u8;
                let $a = unsafe { std::sync::atomic::AtomicU8::from_ptr(p) };
                $body
            }
            2 => {
                #[allow(dead_code)]
                type $t = u16;
                let $a = unsafe { std::sync::atomic::AtomicU16::from_ptr(p as *mut u16) };
                $body
            }
            4 => {
                #[allow(dead_code)]
                type $t = u32;
                let $a = unsafe { std::sync::atomic::AtomicU32::from_ptr(p as *mut u32) };
                $body
            }
            8 => {
                #[allow(dead_code)]
                type $t = u64;
                let $a = unsafe { std::sync::atomic::AtomicU64::from_ptr(p as *mut u64) };
                $body
            }
            w => panic!("gc: atomic access of {w} bytes"),
        }
    }};
}

/// Sequentially consistent accesses to fields and elements shared between threads. `width` is 1, 2, 4
/// or 8 and `offset` a multiple of it; values are zero-extended (loads, the old value of a
/// read-modify-write) or truncated to `width` (operands).
#[allow(clippy::unnecessary_cast)] // `as u64` is needed by every arm of `with_atomic!` but the 8-byte one
impl ObjRef {
    pub fn atomic_load(self, offset: usize, width: usize) -> u64 {
        self.check(offset, width);
        with_atomic!(self.ptr(offset), width, |a, T| a.load(Ordering::SeqCst) as u64)
    }

    pub fn atomic_store(self, offset: usize, width: usize, v: u64) {
        self.check_store(offset, width);
        with_atomic!(self.ptr(offset), width, |a, T| a.store(v as T, Ordering::SeqCst))
    }

    /// Applies `op` with `v`; returns the old value.
    pub fn atomic_rmw(self, offset: usize, width: usize, op: AtomicRmw, v: u64) -> u64 {
        self.check_store(offset, width);
        with_atomic!(self.ptr(offset), width, |a, T| {
            let v = v as T;
            (match op {
                AtomicRmw::Add => a.fetch_add(v, Ordering::SeqCst),
                AtomicRmw::Sub => a.fetch_sub(v, Ordering::SeqCst),
                AtomicRmw::And => a.fetch_and(v, Ordering::SeqCst),
                AtomicRmw::Or => a.fetch_or(v, Ordering::SeqCst),
                AtomicRmw::Xor => a.fetch_xor(v, Ordering::SeqCst),
                AtomicRmw::Xchg => a.swap(v, Ordering::SeqCst),
            }) as u64
        })
    }

    /// Replaces the value with `new` if it equals `expected` (both truncated to `width`); returns the old
    /// value.
    pub fn atomic_cmpxchg(self, offset: usize, width: usize, expected: u64, new: u64) -> u64 {
        self.check_store(offset, width);
        with_atomic!(self.ptr(offset), width, |a, T| {
            match a.compare_exchange(expected as T, new as T, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v as u64,
            }
        })
    }
}
