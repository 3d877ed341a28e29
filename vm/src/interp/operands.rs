//! Operands, as every instruction family's handlers read and write them.
//!
//! A frame is a window of 8-byte slots (`bytecode.rs`); what a slot means depends on the wasm type the
//! translator gave it. [`SlotValue`] is that encoding in one place: an i32 is zero-extended, an f32 is its
//! bits, a condition is an i32 that is non-zero. Handlers say which type they read ([`get`]) and write
//! ([`set`]), so their bodies are the operation and nothing else. [`in_bounds`] is the range check of the
//! bulk instructions (`table.copy`, `array.fill`, segment reads).
//!
//! The accessors and the handlers built on them are `#[track_caller]`, so an out-of-range slot (a translator
//! bug) panics naming the dispatch arm, as it did when these were macros inside the loop.

use crate::bytecode::Slot;

/// A wasm value as it sits in a slot.
pub(super) trait SlotValue: Copy {
    fn from_slot(raw: u64) -> Self;
    fn into_slot(self) -> u64;
}

impl SlotValue for u32 {
    #[inline(always)]
    fn from_slot(raw: u64) -> u32 {
        raw as u32
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self as u64
    }
}

impl SlotValue for i32 {
    #[inline(always)]
    fn from_slot(raw: u64) -> i32 {
        raw as i32
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self as u32 as u64
    }
}

impl SlotValue for u64 {
    #[inline(always)]
    fn from_slot(raw: u64) -> u64 {
        raw
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self
    }
}

impl SlotValue for i64 {
    #[inline(always)]
    fn from_slot(raw: u64) -> i64 {
        raw as i64
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self as u64
    }
}

impl SlotValue for f32 {
    #[inline(always)]
    fn from_slot(raw: u64) -> f32 {
        f32::from_bits(raw as u32)
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self.to_bits() as u64
    }
}

impl SlotValue for f64 {
    #[inline(always)]
    fn from_slot(raw: u64) -> f64 {
        f64::from_bits(raw)
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self.to_bits()
    }
}

/// A condition: an i32, true when non-zero; written as the i32 1 or 0.
impl SlotValue for bool {
    #[inline(always)]
    fn from_slot(raw: u64) -> bool {
        raw as u32 != 0
    }
    #[inline(always)]
    fn into_slot(self) -> u64 {
        self as u64
    }
}

/// The value in `slot`, read as a `T`.
#[inline(always)]
#[track_caller]
pub(super) fn get<T: SlotValue>(frame: &[u64], slot: Slot) -> T {
    T::from_slot(frame[slot as usize])
}

/// Write `v` to `slot`.
#[inline(always)]
#[track_caller]
pub(super) fn set<T: SlotValue>(frame: &mut [u64], slot: Slot, v: T) {
    frame[slot as usize] = v.into_slot();
}

/// `N` i32 operands in consecutive slots from `first`, zero-extended: the (start, start, length) triples
/// of the bulk instructions.
#[inline(always)]
#[track_caller]
pub(super) fn get_u32s<const N: usize>(frame: &[u64], first: Slot) -> [u64; N] {
    std::array::from_fn(|i| frame[first as usize + i] as u32 as u64)
}

/// Bounds check for bulk operations: `start + len <= size`.
#[inline]
pub(super) fn in_bounds(start: u64, len: u64, size: usize) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size as u64)
}
