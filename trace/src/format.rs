//! The wire format, in one place: file header, record kinds, the event spec table, varints, and the
//! per-batch predictors that turn addresses into small deltas. The writer ([`crate::writer`]) and the
//! reader ([`crate::reader`]) both encode and decode through this module, so they cannot disagree about how
//! many arguments an event has or how an id is predicted. The prose version is `docs/trace-format.md` at the
//! repository root.
//!
//! # Layout
//!
//! ```text
//! file    = header record*
//! header  = "VMTRACE\0" version:u16le flags:u16le                      (12 bytes)
//! record  = kind:u8 len:u32le payload[len]
//! ```
//!
//! Records of one generation sit between its `GenStart` and `GenEnd`; see [`RecordKind`]. A batch record's
//! payload is `gen thread base_ns heap_base` (uvarints) followed by events:
//!
//! ```text
//! event   = type:u8 dt:uvarint arg:uvarint × SPECS[type].args.len()
//! ```
//!
//! `dt` is nanoseconds since the previous event of the batch (the first event counts from `base_ns`).
//!
//! # Ids and predictors
//!
//! An object id is `(addr − heap_base) / 8`, a span id `(base − heap_base) / PAGE_SIZE`, a stack id
//! `base − heap_base` (stacks need not be aligned), all signed. Ids are not written as such: each is written
//! as the zigzag-encoded difference from a *prediction* kept in a [`Predictor`] that starts at zero with
//! every batch, so a batch decodes alone. Predictions: the next allocation of a *shape* (size, type, site)
//! goes to the slot right after that shape's previous one (`id + size/8`; the last [`ALLOC_SLOTS`] shapes
//! are remembered, so interleaved sites keep their own predictions); the next free continues the stride of the last two frees (the sweep walks a
//! span in address order); the next span follows the previous one; the next stack sits where the last one
//! was. The common cases then cost no argument bytes at all: [`EventType::ObjAllocNext0`]..`7` (a remembered
//! shape, in its next slot) and [`EventType::ObjFreeNext`] are a type byte and a time delta.

use std::fmt;

/// The file magic.
pub const MAGIC: [u8; 8] = *b"VMTRACE\0";
/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 12;
/// Bytes of a record header (`kind:u8 len:u32le`).
pub const RECORD_HEADER_LEN: usize = 5;
/// Capacity of one batch record, header included (as Go's `MaxBatchSize`).
pub const BATCH_CAP: usize = 64 * 1024;
/// Largest encoded event: type byte, time delta, and at most [`MAX_ARGS`] ten-byte varints.
pub const MAX_EVENT_LEN: usize = 1 + 10 + MAX_ARGS * 10;
/// Most arguments any event has ([`EventType::GcEnd`]).
pub const MAX_ARGS: usize = 8;
/// log2 of the object-id granularity: objects are 8-byte aligned.
pub const OBJ_SHIFT: u32 = 3;
/// Largest record payload a reader accepts (a sanity bound against corrupt lengths).
pub const MAX_RECORD_LEN: usize = 1 << 30;

/// The kinds of records. Kinds ≥ 128 are reserved; a reader skips unknown kinds by their length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// `gen start_ns wall_unix_ns heap_base page_size obj_shift`: opens generation `gen`.
    GenStart = 1,
    /// `gen thread base_ns heap_base` then events.
    Batch = 2,
    /// `(id len bytes)*`: strings referenced by the type and site tables (id 0 is the empty string).
    Strings = 3,
    /// `(type_id name_string size_hint)*`.
    Types = 4,
    /// `(site_id function_string wasm_offset file_string line col)*`; `file_string` 0 means no source line.
    Sites = 5,
    /// `gen batches events`: closes generation `gen`; the counts let a reader notice lost batches.
    GenEnd = 6,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::GenStart,
            2 => Self::Batch,
            3 => Self::Strings,
            4 => Self::Types,
            5 => Self::Sites,
            6 => Self::GenEnd,
            _ => return None,
        })
    }
}

/// The event types on the wire. Several wire types decode to the same logical event
/// ([`crate::event::EventKind`]): they differ only in how much the predictor already knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    ThreadStart = 1,
    ThreadEnd = 2,
    ThreadExists = 3,
    SpanAlloc = 4,
    SpanFree = 5,
    SpanExists = 6,
    ObjAlloc = 7,
    ObjFree = 10,
    ObjFreeNext = 11,
    ObjExists = 12,
    ObjExistsSame = 13,
    StackAlloc = 14,
    StackFree = 15,
    StackExists = 16,
    GcBegin = 17,
    GcEnd = 18,
    /// An allocation whose shape is in slot k of the predictor's [`ALLOC_SLOTS`] shape slots, in the slot
    /// right after that shape's previous allocation: no arguments.
    ObjAllocNext0 = 32,
    ObjAllocNext1 = 33,
    ObjAllocNext2 = 34,
    ObjAllocNext3 = 35,
    ObjAllocNext4 = 36,
    ObjAllocNext5 = 37,
    ObjAllocNext6 = 38,
    ObjAllocNext7 = 39,
    /// An allocation whose shape is in slot k, elsewhere: `objΔ` from that shape's predicted next slot.
    ObjAllocSame0 = 40,
    ObjAllocSame1 = 41,
    ObjAllocSame2 = 42,
    ObjAllocSame3 = 43,
    ObjAllocSame4 = 44,
    ObjAllocSame5 = 45,
    ObjAllocSame6 = 46,
    ObjAllocSame7 = 47,
    /// `len` then `len` opaque bytes: lets a later writer add payloads an older reader skips.
    Ext = 127,
}

/// One row of the spec table: the event's name (as `dump` prints it) and its argument names, whose count is
/// the number of uvarints that follow the time delta.
#[derive(Clone, Copy, Debug)]
pub struct EventSpec {
    pub ty: EventType,
    pub name: &'static str,
    pub args: &'static [&'static str],
}

/// The spec table shared by writer and reader. Argument names ending in `Δ` are zigzag deltas from the
/// batch's [`Predictor`].
pub const SPECS: &[EventSpec] = &[
    EventSpec { ty: EventType::ThreadStart, name: "ThreadStart", args: &[] },
    EventSpec { ty: EventType::ThreadEnd, name: "ThreadEnd", args: &[] },
    EventSpec { ty: EventType::ThreadExists, name: "ThreadExists", args: &["thread"] },
    EventSpec { ty: EventType::SpanAlloc, name: "SpanAlloc", args: &["spanΔ", "npages", "class", "elem_size"] },
    EventSpec { ty: EventType::SpanFree, name: "SpanFree", args: &["spanΔ"] },
    EventSpec { ty: EventType::SpanExists, name: "SpanExists", args: &["spanΔ", "npages", "class", "elem_size"] },
    EventSpec { ty: EventType::ObjAlloc, name: "ObjAlloc", args: &["objΔ", "size", "type", "site"] },
    EventSpec { ty: EventType::ObjFree, name: "ObjFree", args: &["freeΔ"] },
    EventSpec { ty: EventType::ObjFreeNext, name: "ObjFreeNext", args: &[] },
    EventSpec { ty: EventType::ObjExists, name: "ObjExists", args: &["existsΔ", "size", "type"] },
    EventSpec { ty: EventType::ObjExistsSame, name: "ObjExistsSame", args: &["existsΔ"] },
    EventSpec { ty: EventType::StackAlloc, name: "StackAlloc", args: &["stackΔ", "size"] },
    EventSpec { ty: EventType::StackFree, name: "StackFree", args: &["stackΔ"] },
    EventSpec { ty: EventType::StackExists, name: "StackExists", args: &["stackΔ", "size"] },
    EventSpec { ty: EventType::GcBegin, name: "GcBegin", args: &["cycle", "heap_bytes"] },
    EventSpec {
        ty: EventType::GcEnd,
        name: "GcEnd",
        args: &[
            "cycle",
            "live_bytes",
            "live_objects",
            "freed_bytes",
            "freed_objects",
            "heap_bytes",
            "next_gc_bytes",
            "pause_ns",
        ],
    },
    EventSpec { ty: EventType::ObjAllocNext0, name: "ObjAllocNext0", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext1, name: "ObjAllocNext1", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext2, name: "ObjAllocNext2", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext3, name: "ObjAllocNext3", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext4, name: "ObjAllocNext4", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext5, name: "ObjAllocNext5", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext6, name: "ObjAllocNext6", args: &[] },
    EventSpec { ty: EventType::ObjAllocNext7, name: "ObjAllocNext7", args: &[] },
    EventSpec { ty: EventType::ObjAllocSame0, name: "ObjAllocSame0", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame1, name: "ObjAllocSame1", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame2, name: "ObjAllocSame2", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame3, name: "ObjAllocSame3", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame4, name: "ObjAllocSame4", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame5, name: "ObjAllocSame5", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame6, name: "ObjAllocSame6", args: &["objΔ"] },
    EventSpec { ty: EventType::ObjAllocSame7, name: "ObjAllocSame7", args: &["objΔ"] },
    EventSpec { ty: EventType::Ext, name: "Ext", args: &["len"] },
];

/// Number of allocation shapes the predictor remembers per batch.
pub const ALLOC_SLOTS: usize = 8;

/// `ObjAllocNext{k}` by slot.
pub const ALLOC_NEXT: [EventType; ALLOC_SLOTS] = [
    EventType::ObjAllocNext0,
    EventType::ObjAllocNext1,
    EventType::ObjAllocNext2,
    EventType::ObjAllocNext3,
    EventType::ObjAllocNext4,
    EventType::ObjAllocNext5,
    EventType::ObjAllocNext6,
    EventType::ObjAllocNext7,
];

/// `ObjAllocSame{k}` by slot.
pub const ALLOC_SAME: [EventType; ALLOC_SLOTS] = [
    EventType::ObjAllocSame0,
    EventType::ObjAllocSame1,
    EventType::ObjAllocSame2,
    EventType::ObjAllocSame3,
    EventType::ObjAllocSame4,
    EventType::ObjAllocSame5,
    EventType::ObjAllocSame6,
    EventType::ObjAllocSame7,
];

/// Spec lookup by wire byte: a 256-entry table built at compile time from [`SPECS`].
const SPEC_INDEX: [u8; 256] = {
    let mut index = [u8::MAX; 256];
    let mut i = 0;
    while i < SPECS.len() {
        index[SPECS[i].ty as usize] = i as u8;
        i += 1;
    }
    index
};

impl EventType {
    /// The spec of a wire byte, or `None` for a byte no event has.
    pub fn spec_of(byte: u8) -> Option<&'static EventSpec> {
        match SPEC_INDEX[byte as usize] {
            u8::MAX => None,
            i => Some(&SPECS[i as usize]),
        }
    }

    pub fn spec(self) -> &'static EventSpec {
        // Every variant is in SPECS (checked by a test), so the lookup cannot fail.
        Self::spec_of(self as u8).unwrap_or(&SPECS[0])
    }

    /// For `ObjAllocNext{k}` and `ObjAllocSame{k}`: (k, whether it is the `Next` form).
    pub fn alloc_slot(self) -> Option<(usize, bool)> {
        let b = self as u8;
        match b {
            32..=39 => Some(((b - 32) as usize, true)),
            40..=47 => Some(((b - 40) as usize, false)),
            _ => None,
        }
    }

    /// Number of argument varints after the time delta.
    pub fn nargs(self) -> usize {
        self.spec().args.len()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().name)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Varints.

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes `v` as an unsigned LEB128 varint at `buf[*pos..]`; `buf` must have room for 10 bytes.
#[inline]
pub fn put_uvarint_at(buf: &mut [u8], pos: &mut usize, mut v: u64) {
    while v >= 0x80 {
        buf[*pos] = v as u8 | 0x80;
        *pos += 1;
        v >>= 7;
    }
    buf[*pos] = v as u8;
    *pos += 1;
}

/// Reads an unsigned LEB128 varint from `buf[*pos..]`. `None` if the buffer ends first or the value does not
/// fit in 64 bits.
#[inline]
pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes of `v` as a uvarint.
pub fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

// ---------------------------------------------------------------------------------------------------------
// Ids.

/// Object id of `addr` relative to `heap_base` (signed: an arena may sit below the base).
#[inline]
pub fn obj_id(addr: u64, heap_base: u64) -> i64 {
    (addr.wrapping_sub(heap_base) as i64) >> OBJ_SHIFT
}

#[inline]
pub fn obj_addr(id: i64, heap_base: u64) -> u64 {
    heap_base.wrapping_add((id << OBJ_SHIFT) as u64)
}

#[inline]
pub fn span_id(base: u64, heap_base: u64, page_size: u64) -> i64 {
    (base.wrapping_sub(heap_base) as i64) / page_size as i64
}

#[inline]
pub fn span_addr(id: i64, heap_base: u64, page_size: u64) -> u64 {
    heap_base.wrapping_add(id.wrapping_mul(page_size as i64) as u64)
}

#[inline]
pub fn stack_id(base: u64, heap_base: u64) -> i64 {
    base.wrapping_sub(heap_base) as i64
}

#[inline]
pub fn stack_addr(id: i64, heap_base: u64) -> u64 {
    heap_base.wrapping_add(id as u64)
}

/// The shape of an allocation: what a predictor slot remembers, so `ObjAllocSame{k}` and `ObjAllocNext{k}`
/// need not repeat it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocShape {
    pub size: u64,
    pub type_id: u32,
    pub site: u32,
}

/// Per-batch prediction state. Writer and reader run the same updates, so an event's delta arguments mean
/// the same thing on both sides. Reset to `Default` at every batch start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Predictor {
    /// Where the next allocation of a new shape is expected (the slot after the previous allocation).
    pub alloc_next: i64,
    /// The last [`ALLOC_SLOTS`] allocation shapes, each with where its next allocation is expected. A new
    /// shape replaces the slots round-robin, starting at slot 0.
    pub alloc_slots: [AllocSlot; ALLOC_SLOTS],
    /// The slot the next new shape goes to.
    pub alloc_victim: u8,
    /// The previous free and the stride between the last two frees.
    pub free_last: i64,
    pub free_stride: i64,
    /// Where the next snapshot object is expected, and the previous one's size and type.
    pub exists_next: i64,
    pub exists_size: u64,
    pub exists_type: u32,
    /// The span after the previous span event.
    pub span_next: i64,
    /// The previous stack id.
    pub stack_last: i64,
}

/// One remembered allocation shape and the id its next allocation is predicted at. A slot that was
/// never filled has size 0, which no object has.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocSlot {
    pub shape: AllocShape,
    pub next: i64,
}

impl Predictor {
    /// The slot remembering `shape`, if any.
    #[inline]
    pub fn find_shape(&self, shape: &AllocShape) -> Option<usize> {
        if shape.size == 0 {
            return None; // never remembered: size 0 marks an empty slot
        }
        self.alloc_slots.iter().position(|s| s.shape == *shape)
    }

    /// Records an allocation at `id` of the shape in slot `k`. Every remembered shape of the same size
    /// predicts the slot after it: objects of one size come from one size class, whose current span a
    /// thread fills in address order whichever type or site asks.
    #[inline]
    pub fn alloc_in_slot(&mut self, k: usize, id: i64) {
        let size = self.alloc_slots[k].shape.size;
        let next = id.wrapping_add((size >> OBJ_SHIFT) as i64);
        for slot in self.alloc_slots.iter_mut() {
            if slot.shape.size == size {
                slot.next = next;
            }
        }
        self.alloc_next = next;
    }

    /// Records an allocation at `id` of a shape no slot remembers: it takes the next slot round-robin.
    #[inline]
    pub fn alloc_new_shape(&mut self, id: i64, shape: AllocShape) {
        let k = self.alloc_victim as usize;
        self.alloc_victim = ((k + 1) % ALLOC_SLOTS) as u8;
        self.alloc_slots[k].shape = shape;
        self.alloc_in_slot(k, id);
    }

    #[inline]
    pub fn free_predicted(&self) -> i64 {
        self.free_last.wrapping_add(self.free_stride)
    }

    #[inline]
    pub fn free(&mut self, id: i64) {
        self.free_stride = id.wrapping_sub(self.free_last);
        self.free_last = id;
    }

    #[inline]
    pub fn exists(&mut self, id: i64, size: u64, type_id: u32) {
        self.exists_next = id.wrapping_add((size >> OBJ_SHIFT) as i64);
        self.exists_size = size;
        self.exists_type = type_id;
    }

    #[inline]
    pub fn span(&mut self, id: i64, npages: u64) {
        self.span_next = id.wrapping_add(npages as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table_covers_every_type_once() {
        let all = [
            EventType::ThreadStart,
            EventType::ThreadEnd,
            EventType::ThreadExists,
            EventType::SpanAlloc,
            EventType::SpanFree,
            EventType::SpanExists,
            EventType::ObjAlloc,
            EventType::ObjFree,
            EventType::ObjFreeNext,
            EventType::ObjExists,
            EventType::ObjExistsSame,
            EventType::StackAlloc,
            EventType::StackFree,
            EventType::StackExists,
            EventType::GcBegin,
            EventType::GcEnd,
            EventType::Ext,
        ];
        let all: Vec<EventType> = all.into_iter().chain(ALLOC_NEXT).chain(ALLOC_SAME).collect();
        assert_eq!(all.len(), SPECS.len());
        for ty in all {
            let spec = EventType::spec_of(ty as u8).expect("in table");
            assert_eq!(spec.ty, ty);
            assert!(spec.args.len() <= MAX_ARGS);
        }
        for k in 0..ALLOC_SLOTS {
            assert_eq!(ALLOC_NEXT[k].alloc_slot(), Some((k, true)));
            assert_eq!(ALLOC_SAME[k].alloc_slot(), Some((k, false)));
            assert_eq!(ALLOC_SAME[k].nargs(), 1);
        }
        assert_eq!(EventType::ObjAlloc.alloc_slot(), None);
        assert!(EventType::spec_of(0).is_none());
        assert!(EventType::spec_of(200).is_none());
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(out.len(), uvarint_len(v), "{v}");
            let mut buf = [0u8; 10];
            let mut p = 0;
            put_uvarint_at(&mut buf, &mut p, v);
            assert_eq!(&buf[..p], &out[..]);
            let mut pos = 0;
            assert_eq!(get_uvarint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
            // Every proper prefix is truncated.
            for cut in 0..out.len() {
                let mut pos = 0;
                assert_eq!(get_uvarint(&out[..cut], &mut pos), None);
            }
        }
        // Eleven continuation bytes overflow.
        let mut pos = 0;
        assert_eq!(get_uvarint(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &mut pos), None);
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn ids_map_back_to_addresses_below_and_above_the_base() {
        let base = 0x7f00_0000_0000u64;
        for addr in [base, base + 8, base + 4096 * 8, base - 64 * 1024 * 1024, base - 8] {
            assert_eq!(obj_addr(obj_id(addr, base), base), addr);
            assert_eq!(stack_addr(stack_id(addr + 3, base), base), addr + 3);
        }
        for page in [-5i64, 0, 7] {
            let addr = span_addr(page, base, 8192);
            assert_eq!(span_id(addr, base, 8192), page);
        }
    }
}
