//! Per-type layouts registered by the VM, and the lock-free table the allocator and the marker read them from.
//!
//! A type id is a small dense integer chosen by the VM (below [`MAX_TYPE_ID`]). The table is two-level:
//! a fixed array of chunk pointers, each chunk holding [`CHUNK_LEN`] entries, allocated on first use. An
//! entry is written once (registration publishes it with a release store) and never changes afterwards, so
//! readers need no lock, and registration may happen at any time, also while other types are being allocated.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::object::HEADER_SIZE;
use crate::size_class::{MAX_SMALL_SIZE, SIZE_CLASSES, class_for_size};

/// Type ids must be below this (4 Mi).
pub const MAX_TYPE_ID: u32 = 1 << 22;
const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const NUM_CHUNKS: usize = (MAX_TYPE_ID as usize) >> CHUNK_BITS;

/// The shape of the objects of one type, as far as the collector cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A struct: `size` payload bytes after the 8-byte header; the 8-byte reference fields sit at
    /// `ref_offsets` (offsets from the object start, so each is ≥ 8 and 8-byte aligned).
    Struct { size: u32, ref_offsets: Box<[u32]> },
    /// An array of `len` (from the header) elements of `elem_size` bytes starting at offset 8. If
    /// `elem_is_ref`, every element is a reference and `elem_size` must be 8.
    Array { elem_size: u32, elem_is_ref: bool },
}

impl Layout {
    /// Bytes an object of this layout occupies: the header plus the payload (for an array, `len` elements),
    /// rounded up to 8. This is what Memcheck sees as the block; the rest of the slot is slack.
    pub fn object_bytes(&self, len: u32) -> u64 {
        let payload = match *self {
            Layout::Struct { size, .. } => size as u64,
            Layout::Array { elem_size, .. } => elem_size as u64 * len as u64,
        };
        (HEADER_SIZE as u64 + payload).next_multiple_of(8)
    }
}

/// What the marker needs per type.
#[derive(Debug)]
pub(crate) struct TypeInfo {
    pub layout: Layout,
}

/// The packed fast-path entry. 0 = unregistered.
///
/// bits 0..8: size class of a struct (0 = large or array), bit 8: is struct, bit 9: is array,
/// bit 10: array elements are references, bits 32..64: struct slot size (large struct: object size rounded
/// to 8) or array element size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AllocInfo(pub u64);

impl AllocInfo {
    const STRUCT: u64 = 1 << 8;
    const ARRAY: u64 = 1 << 9;
    const REF_ELEMS: u64 = 1 << 10;

    fn for_layout(layout: &Layout) -> AllocInfo {
        match *layout {
            Layout::Struct { size, .. } => {
                let bytes = (HEADER_SIZE + size as usize).next_multiple_of(8);
                // Small structs record their slot size (what the allocator zeroes), large ones their size.
                let (class, bytes) = if bytes <= MAX_SMALL_SIZE {
                    let class = class_for_size(bytes);
                    (class as u64, SIZE_CLASSES[class].size as u64)
                } else {
                    (0, bytes as u64)
                };
                AllocInfo(class | Self::STRUCT | bytes << 32)
            }
            Layout::Array { elem_size, elem_is_ref } => {
                AllocInfo(Self::ARRAY | if elem_is_ref { Self::REF_ELEMS } else { 0 } | (elem_size as u64) << 32)
            }
        }
    }
    #[inline(always)]
    pub fn is_struct(self) -> bool {
        self.0 & Self::STRUCT != 0
    }
    #[inline(always)]
    pub fn is_array(self) -> bool {
        self.0 & Self::ARRAY != 0
    }
    /// Struct size class (0: large).
    #[inline(always)]
    pub fn class(self) -> usize {
        (self.0 & 0xFF) as usize
    }
    /// Struct object size, or array element size.
    #[inline(always)]
    pub fn size(self) -> usize {
        (self.0 >> 32) as usize
    }
}

struct Entry {
    alloc: AtomicU64,
    info: AtomicPtr<TypeInfo>,
}

type Chunk = [Entry; CHUNK_LEN];

pub(crate) struct TypeTable {
    chunks: Box<[AtomicPtr<Chunk>]>,
    /// Serialises registrations (readers never take it).
    register_lock: std::sync::Mutex<()>,
}

impl TypeTable {
    pub fn new() -> TypeTable {
        TypeTable {
            chunks: (0..NUM_CHUNKS).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
            register_lock: std::sync::Mutex::new(()),
        }
    }

    /// Registers `layout` for `type_id`. Registering the same layout again is a no-op.
    ///
    /// # Panics
    /// If `type_id >= MAX_TYPE_ID`, if the id already has a different layout, or if the layout is malformed
    /// (reference offsets outside the payload or unaligned, reference array elements not 8 bytes). These are
    /// VM bugs, not user errors.
    pub fn register(&self, type_id: u32, layout: Layout) {
        assert!(type_id < MAX_TYPE_ID, "gc: type id {type_id} is not below MAX_TYPE_ID ({MAX_TYPE_ID})");
        match &layout {
            Layout::Struct { size, ref_offsets } => {
                assert!(*size <= 1 << 30, "gc: type {type_id}: struct payload of {size} bytes is too large");
                for &off in ref_offsets.iter() {
                    assert!(
                        off as usize >= HEADER_SIZE
                            && off % 8 == 0
                            && off as u64 + 8 <= HEADER_SIZE as u64 + *size as u64,
                        "gc: type {type_id}: reference offset {off} is not an aligned field inside a {size}-byte payload"
                    );
                }
            }
            Layout::Array { elem_size, elem_is_ref } => {
                assert!(!*elem_is_ref || *elem_size == 8, "gc: type {type_id}: reference elements must be 8 bytes");
            }
        }
        let _guard = self.register_lock.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &self.chunks[(type_id >> CHUNK_BITS) as usize];
        let mut chunk = slot.load(Ordering::Acquire);
        if chunk.is_null() {
            let fresh: Box<Chunk> = Box::new(std::array::from_fn(|_| Entry {
                alloc: AtomicU64::new(0),
                info: AtomicPtr::new(std::ptr::null_mut()),
            }));
            chunk = Box::into_raw(fresh);
            slot.store(chunk, Ordering::Release);
        }
        // SAFETY: `chunk` is non-null and points to a chunk owned by this table until it is dropped.
        let entry = unsafe { &(*chunk)[type_id as usize & (CHUNK_LEN - 1)] };
        let existing = entry.info.load(Ordering::Acquire);
        if !existing.is_null() {
            // SAFETY: published entries stay valid until the table is dropped.
            let old = unsafe { &(*existing).layout };
            assert!(
                *old == layout,
                "gc: type {type_id} registered twice with different layouts: {old:?} vs {layout:?}"
            );
            return;
        }
        let alloc = AllocInfo::for_layout(&layout);
        entry.info.store(Box::into_raw(Box::new(TypeInfo { layout })), Ordering::Release);
        entry.alloc.store(alloc.0, Ordering::Release);
    }

    #[inline(always)]
    fn entry(&self, type_id: u32) -> Option<&Entry> {
        let chunk = self.chunks.get((type_id >> CHUNK_BITS) as usize)?.load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: non-null chunk pointers are valid until the table is dropped, which needs `&mut self`.
        Some(unsafe { &(*chunk)[type_id as usize & (CHUNK_LEN - 1)] })
    }

    /// The allocation entry of `type_id`, or `None` if it is not registered.
    #[inline(always)]
    pub fn alloc_info(&self, type_id: u32) -> Option<AllocInfo> {
        let bits = self.entry(type_id)?.alloc.load(Ordering::Acquire);
        if bits == 0 { None } else { Some(AllocInfo(bits)) }
    }

    /// [`Layout::object_bytes`] of a registered type (0 if it is not registered).
    pub fn object_bytes(&self, type_id: u32, len: u32) -> usize {
        self.info(type_id).map_or(0, |i| i.layout.object_bytes(len) as usize)
    }

    /// The layout of `type_id`, or `None` if it is not registered.
    #[inline(always)]
    pub fn info(&self, type_id: u32) -> Option<&TypeInfo> {
        let p = self.entry(type_id)?.info.load(Ordering::Acquire);
        // SAFETY: published entries stay valid until the table is dropped (needs `&mut self`).
        if p.is_null() { None } else { Some(unsafe { &*p }) }
    }
}

impl Drop for TypeTable {
    fn drop(&mut self) {
        for slot in self.chunks.iter() {
            let chunk = slot.load(Ordering::Acquire);
            if chunk.is_null() {
                continue;
            }
            // SAFETY: the chunk was created by `Box::into_raw` in `register` and is dropped exactly once here.
            let chunk = unsafe { Box::from_raw(chunk) };
            for entry in chunk.iter() {
                let info = entry.info.load(Ordering::Acquire);
                if !info.is_null() {
                    // SAFETY: created by `Box::into_raw` in `register`, dropped exactly once here.
                    drop(unsafe { Box::from_raw(info) });
                }
            }
        }
    }
}
