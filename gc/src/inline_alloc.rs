//! What a compiler needs to emit the small-object fast path ([`crate::ThreadCache`]'s `take_fast` and
//! `init_object` in `alloc.rs`) inline in generated code, so that an allocation that finds a free slot in
//! its thread cache's current span makes no call (Go's compiler inlines nothing here, but HotSpot's and
//! V8's TLAB bump paths are the model: a few loads and stores on thread-owned state, a call only when the
//! fast path runs dry).
//!
//! **The steps generated code must take**, exactly those of the Rust fast path:
//! 1. If the byte at [`crate::Heap::hooks_address`] is non-zero (observers are attached or stress mode is
//!    on: every allocation must go through the instrumented path), take the slow path.
//! 2. `span = spans[class]`, with `spans` from [`crate::ThreadCache::spans_address`] and `class` from
//!    [`crate::size_class::class_for_size`] of the object's size (header included); class 0 (large)
//!    always takes the slow path. An empty class holds the cache's sentinel span, whose `alloc_cache` is 0.
//! 3. `c = span.alloc_cache` ([`SPAN_ALLOC_CACHE`], u64); if 0, take the slow path.
//! 4. `tz = trailing_zeros(c)`, `index = span.freeindex + tz` ([`SPAN_FREEINDEX`], u32); store
//!    `freeindex = index + 1`, `alloc_cache = (c >> tz) >> 1`, `alloc_count += 1` ([`SPAN_ALLOC_COUNT`],
//!    u32).
//! 5. `addr = span.base + index * slot` ([`SPAN_BASE`], u64; `slot` = the class's size, also at
//!    [`SPAN_ELEM_SIZE`]).
//! 6. If `span.needzero` ([`SPAN_NEEDZERO`], one byte, 0 or 1): zero the slot's words 1.. (all but the
//!    header word).
//! 7. Store [`header_word`]`(type_id, len)` at `addr`.
//!
//! **Why it is safe.** The spans array and every span in it belong to the calling thread's cache (the
//! ownership protocol in `span.rs`): no other thread touches this state, and a collection (which rewinds
//! cached spans) only runs while this thread is parked at a safepoint or in a call, never in the middle of
//! these steps, which contain neither. Nothing here can collect, so the generated code needs no stack map
//! for it. The steps leave the span exactly as `take_fast` would, so the Rust paths (refill, sweep,
//! statistics) cannot tell which one allocated.
//!
//! The offsets are computed from the Rust structs (`offset_of!`), never written by hand.

use std::mem::offset_of;

use crate::alloc::array_bytes;
use crate::object::HEADER_SIZE;
use crate::size_class::{MAX_SMALL_SIZE, SIZE_CLASSES, class_for_size};
use crate::span::{STATE_OFFSET, Span, SpanState};

const fn state_field(offset: usize) -> i32 {
    (STATE_OFFSET + offset) as i32
}

/// Offset in a span of the address of its first slot (u64).
pub const SPAN_BASE: i32 = offset_of!(Span, base) as i32;
/// Offset in a span of its slot size (u64).
pub const SPAN_ELEM_SIZE: i32 = offset_of!(Span, elem_size) as i32;
/// Offset in a span of `freeindex` (u32).
pub const SPAN_FREEINDEX: i32 = state_field(offset_of!(SpanState, freeindex));
/// Offset in a span of `alloc_cache` (u64).
pub const SPAN_ALLOC_CACHE: i32 = state_field(offset_of!(SpanState, alloc_cache));
/// Offset in a span of `alloc_count` (u32).
pub const SPAN_ALLOC_COUNT: i32 = state_field(offset_of!(SpanState, alloc_count));
/// Offset in a span of `needzero` (a `bool`: one byte, 0 or 1).
pub const SPAN_NEEDZERO: i32 = state_field(offset_of!(SpanState, needzero));

/// The header word (little-endian u64) of an object of `type_id` with array length `len` (0 for structs).
pub fn header_word(type_id: u32, len: u32) -> u64 {
    crate::object::header_word(type_id, len)
}

/// Size class and slot size of a struct whose fields take `payload` bytes after the header, as the heap
/// allocates it (`types.rs`), or `None` for a large object (no fast path).
pub fn struct_class(payload: u32) -> Option<(usize, usize)> {
    small_class((HEADER_SIZE + payload as usize).next_multiple_of(8))
}

/// Size class and slot size of an array of `len` elements of `elem_size` bytes, or `None` for a large or
/// impossible one.
pub fn array_class(elem_size: u32, len: u32) -> Option<(usize, usize)> {
    small_class(array_bytes(elem_size as usize, len)?)
}

fn small_class(bytes: usize) -> Option<(usize, usize)> {
    (bytes <= MAX_SMALL_SIZE).then(|| {
        let class = class_for_size(bytes);
        (class, SIZE_CLASSES[class].size as usize)
    })
}

/// The address of the table [`crate::size_class::class_for_size`] reads for sizes up to 1024 bytes: one
/// byte per 8 bytes of size, `table[size.div_ceil(8)]` is the class. Static: valid for the process's life.
pub fn class_table_address() -> usize {
    crate::size_class::class_by_8_address()
}

/// The largest size [`class_table_address`]'s table covers.
pub const CLASS_TABLE_MAX_SIZE: usize = 1024;

const _: () = {
    // The generated code reads these with the widths the module comment gives.
    assert!(size_of::<usize>() == 8);
    assert!(size_of::<bool>() == 1);
};

/// Fails to compile if a field the generated code reads changes its type.
#[allow(dead_code)]
fn field_widths(span: &Span, st: &SpanState) -> (usize, usize, u32, u64, u32, bool) {
    (span.base, span.elem_size, st.freeindex, st.alloc_cache, st.alloc_count, st.needzero)
}
