//! Linear memory instructions: loads and stores, `memory.size`/`grow`/`fill`/`copy`/`init`, `data.drop`.
//!
//! Two paths. Loads and stores of memory 0 are hot: the dispatch loop keeps memory 0 as a [`MemView`] (base
//! and length), and each typed load or store has a handler (generated from the tables below) that is one
//! bounds check away from the bytes, with the width and extension fixed at compile time. Everything else is cold and runs in
//! `cold.rs`, which resolves the instance's memory index to a [`LinearMemory`] (or to the bytes to access)
//! before calling the handlers here: loads and stores of other memories take the width from a [`MemOp`],
//! and the bulk operations go through the memory's own accessors, which check bounds once.
//!
//! Every access is bounds-checked against the memory's current byte length ([`load`], [`store_bytes`]), so
//! guest code cannot reach host memory.

use std::sync::Arc;

use super::operands::{get, get_u32s, set};
use crate::TrapKind;
use crate::bytecode::{MemOp, Slot};
use crate::memory::LinearMemory;

/// The address an access starts at: the i32 base plus the static offset, without wrapping.
#[inline(always)]
fn effective_address(base: u32, offset: u32) -> usize {
    (base as u64 + offset as u64) as usize
}

/// The interpreter's view of one linear memory: its base and a length read when the view was made.
///
/// Not a `&mut [u8]`: a shared memory's bytes are written by other threads at the same time, which a
/// Rust reference to them would claim cannot happen, so accesses go through raw pointers (as
/// `LinearMemory`'s `Sync` contract says). The base never moves and the length only grows, so a view
/// stays valid for as long as its memory lives; at worst its length is stale-small, and an access
/// past it traps unless the dispatch loop, seeing a shared memory, refreshes the view and retries
/// (`dispatch.rs`). Copying a view is free; handlers take it by value.
#[derive(Clone, Copy)]
pub(super) struct MemView {
    base: *mut u8,
    len: usize,
}

impl MemView {
    /// No memory: every access is out of bounds.
    pub const EMPTY: MemView = MemView { base: std::ptr::null_mut(), len: 0 };

    /// The current extent of `memory`. The caller keeps `memory` alive while the view is used.
    #[inline]
    pub fn of(memory: &LinearMemory) -> MemView {
        MemView { base: memory.base(), len: memory.len() }
    }

    /// The length this view allows.
    pub fn len(self) -> usize {
        self.len
    }

    /// The `N` bytes at `at`, or `None` when they are not all inside the view.
    #[inline(always)]
    fn load<const N: usize>(self, at: usize) -> Option<[u8; N]> {
        if at > self.len || self.len - at < N {
            return None;
        }
        // SAFETY: `[at, at + N)` lies inside the view's length, which is committed memory of a mapping
        // that outlives the view (`of`'s contract); `[u8; N]` has alignment 1.
        Some(unsafe { self.base.add(at).cast::<[u8; N]>().read() })
    }

    /// Write `bytes` at `at`; false (and nothing written) when they are not all inside the view.
    #[inline(always)]
    fn store<const N: usize>(self, at: usize, bytes: [u8; N]) -> bool {
        if at > self.len || self.len - at < N {
            return false;
        }
        // SAFETY: as in `load`.
        unsafe { self.base.add(at).cast::<[u8; N]>().write(bytes) };
        true
    }
}

/// Memory 0 loads: `dst = convert(mem[addr + offset ..][..N])`.
macro_rules! loads {
    ($($name:ident($b:ident: [u8; $n:literal]) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], mem: MemView, dst: Slot, addr: Slot, offset: u32) -> Result<(), TrapKind> {
            let at = effective_address(get(frame, addr), offset);
            let $b: [u8; $n] = mem.load(at).ok_or(TrapKind::MemoryOutOfBounds)?;
            set::<$r>(frame, dst, $body);
            Ok(())
        }
    )*};
}

/// Memory 0 stores: `mem[addr + offset ..][..N] = bytes(value)`.
macro_rules! stores {
    ($($name:ident($v:ident: $t:ty) -> [u8; $n:literal] $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &[u64], mem: MemView, addr: Slot, value: Slot, offset: u32) -> Result<(), TrapKind> {
            let $v: $t = get(frame, value);
            let at = effective_address(get(frame, addr), offset);
            if mem.store::<$n>(at, $body) { Ok(()) } else { Err(TrapKind::MemoryOutOfBounds) }
        }
    )*};
}

loads! {
    i32_load(b: [u8; 4]) -> u32 { u32::from_le_bytes(b) }
    i64_load(b: [u8; 8]) -> u64 { u64::from_le_bytes(b) }
    f32_load(b: [u8; 4]) -> u32 { u32::from_le_bytes(b) }
    f64_load(b: [u8; 8]) -> u64 { u64::from_le_bytes(b) }
    i32_load8_s(b: [u8; 1]) -> i32 { i8::from_le_bytes(b) as i32 }
    i32_load8_u(b: [u8; 1]) -> u32 { u8::from_le_bytes(b) as u32 }
    i32_load16_s(b: [u8; 2]) -> i32 { i16::from_le_bytes(b) as i32 }
    i32_load16_u(b: [u8; 2]) -> u32 { u16::from_le_bytes(b) as u32 }
    i64_load8_s(b: [u8; 1]) -> i64 { i8::from_le_bytes(b) as i64 }
    i64_load8_u(b: [u8; 1]) -> u64 { u8::from_le_bytes(b) as u64 }
    i64_load16_s(b: [u8; 2]) -> i64 { i16::from_le_bytes(b) as i64 }
    i64_load16_u(b: [u8; 2]) -> u64 { u16::from_le_bytes(b) as u64 }
    i64_load32_s(b: [u8; 4]) -> i64 { i32::from_le_bytes(b) as i64 }
    i64_load32_u(b: [u8; 4]) -> u64 { u32::from_le_bytes(b) as u64 }
}

stores! {
    i32_store(v: u32) -> [u8; 4] { v.to_le_bytes() }
    i64_store(v: u64) -> [u8; 8] { v.to_le_bytes() }
    f32_store(v: u32) -> [u8; 4] { v.to_le_bytes() }
    f64_store(v: u64) -> [u8; 8] { v.to_le_bytes() }
    i32_store8(v: u64) -> [u8; 1] { [v as u8] }
    i32_store16(v: u64) -> [u8; 2] { (v as u16).to_le_bytes() }
    i64_store8(v: u64) -> [u8; 1] { [v as u8] }
    i64_store16(v: u64) -> [u8; 2] { (v as u16).to_le_bytes() }
    i64_store32(v: u64) -> [u8; 4] { (v as u32).to_le_bytes() }
}

// ---------------- any memory (cold)

/// `Load` from any memory, the width and extension given by `kind`.
#[inline(always)]
#[track_caller]
pub(super) fn load_any(
    frame: &mut [u64],
    mem: MemView,
    kind: MemOp,
    dst: Slot,
    addr: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let at = effective_address(get(frame, addr), offset);
    let v = load_kind(mem, at, kind).ok_or(TrapKind::MemoryOutOfBounds)?;
    set(frame, dst, v);
    Ok(())
}

/// `Store` to any memory, the width given by `kind`.
#[inline(always)]
#[track_caller]
pub(super) fn store_any(
    frame: &[u64],
    mem: MemView,
    kind: MemOp,
    addr: Slot,
    value: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let at = effective_address(get(frame, addr), offset);
    let v: u64 = get(frame, value);
    if store_kind(mem, at, kind, v) { Ok(()) } else { Err(TrapKind::MemoryOutOfBounds) }
}

fn load_kind(mem: MemView, at: usize, kind: MemOp) -> Option<u64> {
    Some(match kind {
        MemOp::I32 | MemOp::F32 | MemOp::I64_32U | MemOp::Store32 => u32::from_le_bytes(mem.load(at)?) as u64,
        MemOp::I64 | MemOp::F64 => u64::from_le_bytes(mem.load(at)?),
        MemOp::I32_8S => i8::from_le_bytes(mem.load(at)?) as i32 as u32 as u64,
        MemOp::I32_8U | MemOp::I64_8U | MemOp::Store8 => u8::from_le_bytes(mem.load(at)?) as u64,
        MemOp::I32_16S => i16::from_le_bytes(mem.load(at)?) as i32 as u32 as u64,
        MemOp::I32_16U | MemOp::I64_16U | MemOp::Store16 => u16::from_le_bytes(mem.load(at)?) as u64,
        MemOp::I64_8S => i8::from_le_bytes(mem.load(at)?) as i64 as u64,
        MemOp::I64_16S => i16::from_le_bytes(mem.load(at)?) as i64 as u64,
        MemOp::I64_32S => i32::from_le_bytes(mem.load(at)?) as i64 as u64,
    })
}

fn store_kind(mem: MemView, at: usize, kind: MemOp, v: u64) -> bool {
    match kind.width() {
        1 => mem.store(at, [v as u8]),
        2 => mem.store(at, (v as u16).to_le_bytes()),
        4 => mem.store(at, (v as u32).to_le_bytes()),
        _ => mem.store(at, v.to_le_bytes()),
    }
}

/// `memory.size`: `dst` = the size in pages.
#[inline(always)]
#[track_caller]
pub(super) fn memory_size(frame: &mut [u64], memory: &LinearMemory, dst: Slot) {
    set(frame, dst, memory.pages() as u32);
}

/// `memory.grow`: `dst` = the old size in pages, or -1. (When this is memory 0, the caller then re-derives
/// the dispatch loop's view of it.)
#[inline(always)]
#[track_caller]
pub(super) fn memory_grow(frame: &mut [u64], memory: &LinearMemory, dst: Slot, delta: Slot) {
    let delta: u32 = get(frame, delta);
    let r = memory.grow(delta as u64).map_or(-1, |old| old as i32);
    set(frame, dst, r);
}

/// `memory.fill` with `dst`, `val`, `len` in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn memory_fill(frame: &[u64], memory: &LinearMemory, args: Slot) -> Result<(), TrapKind> {
    let (d, val, n) = (get::<u32>(frame, args) as u64, get::<u64>(frame, args + 1) as u8, get::<u32>(frame, args + 2));
    memory.fill(d, val, n as u64).map_err(|_| TrapKind::MemoryOutOfBounds)
}

/// `memory.copy` with `dst`, `src`, `len` in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn memory_copy(frame: &[u64], dst: &LinearMemory, src: &LinearMemory, args: Slot) -> Result<(), TrapKind> {
    let [d, s, n] = get_u32s(frame, args);
    dst.copy_from(d, src, s, n).map_err(|_| TrapKind::MemoryOutOfBounds)
}

/// `memory.init` from data segment `seg` with `dst`, `src`, `len` in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn memory_init(frame: &[u64], memory: &LinearMemory, seg: &[u8], args: Slot) -> Result<(), TrapKind> {
    let [d, s, n] = get_u32s(frame, args);
    memory.init(d, seg, s, n).map_err(|_| TrapKind::MemoryOutOfBounds)
}

/// `data.drop`: the segment becomes empty.
#[inline(always)]
#[track_caller]
pub(super) fn data_drop(datas: &mut [Arc<[u8]>], data: u32) {
    datas[data as usize] = Arc::from([]);
}
