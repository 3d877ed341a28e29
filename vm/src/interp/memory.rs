//! Linear memory instructions: loads and stores, `memory.size`/`grow`/`fill`/`copy`/`init`, `data.drop`.
//!
//! Two paths. Loads and stores of memory 0 are hot: the dispatch loop keeps memory 0 as a byte slice, and
//! each typed load or store has a handler (generated from the tables below) that is one bounds check away
//! from the bytes, with the width and extension fixed at compile time. Everything else is cold and runs in
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

/// The `N` bytes at `at`, or `None` when they are not all inside `mem`.
#[inline(always)]
fn load<const N: usize>(mem: &[u8], at: usize) -> Option<[u8; N]> {
    mem.get(at..at + N)?.try_into().ok()
}

/// Write `bytes` at `at`; false (and nothing written) when they are not all inside `mem`.
#[inline(always)]
fn store_bytes<const N: usize>(mem: &mut [u8], at: usize, bytes: [u8; N]) -> bool {
    match mem.get_mut(at..at + N) {
        Some(dst) => {
            dst.copy_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// Memory 0 loads: `dst = convert(mem[addr + offset ..][..N])`.
macro_rules! loads {
    ($($name:ident($b:ident: [u8; $n:literal]) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], mem: &[u8], dst: Slot, addr: Slot, offset: u32) -> Result<(), TrapKind> {
            let at = effective_address(get(frame, addr), offset);
            let $b: [u8; $n] = load(mem, at).ok_or(TrapKind::MemoryOutOfBounds)?;
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
        pub(super) fn $name(frame: &[u64], mem: &mut [u8], addr: Slot, value: Slot, offset: u32) -> Result<(), TrapKind> {
            let $v: $t = get(frame, value);
            let at = effective_address(get(frame, addr), offset);
            if store_bytes::<$n>(mem, at, $body) { Ok(()) } else { Err(TrapKind::MemoryOutOfBounds) }
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
    mem: &[u8],
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
    mem: &mut [u8],
    kind: MemOp,
    addr: Slot,
    value: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let at = effective_address(get(frame, addr), offset);
    let v: u64 = get(frame, value);
    if store_kind(mem, at, kind, v) { Ok(()) } else { Err(TrapKind::MemoryOutOfBounds) }
}

fn load_kind(mem: &[u8], at: usize, kind: MemOp) -> Option<u64> {
    Some(match kind {
        MemOp::I32 | MemOp::F32 | MemOp::I64_32U | MemOp::Store32 => u32::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I64 | MemOp::F64 => u64::from_le_bytes(load(mem, at)?),
        MemOp::I32_8S => i8::from_le_bytes(load(mem, at)?) as i32 as u32 as u64,
        MemOp::I32_8U | MemOp::I64_8U | MemOp::Store8 => u8::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I32_16S => i16::from_le_bytes(load(mem, at)?) as i32 as u32 as u64,
        MemOp::I32_16U | MemOp::I64_16U | MemOp::Store16 => u16::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I64_8S => i8::from_le_bytes(load(mem, at)?) as i64 as u64,
        MemOp::I64_16S => i16::from_le_bytes(load(mem, at)?) as i64 as u64,
        MemOp::I64_32S => i32::from_le_bytes(load(mem, at)?) as i64 as u64,
    })
}

fn store_kind(mem: &mut [u8], at: usize, kind: MemOp, v: u64) -> bool {
    match kind.width() {
        1 => store_bytes(mem, at, [v as u8]),
        2 => store_bytes(mem, at, (v as u16).to_le_bytes()),
        4 => store_bytes(mem, at, (v as u32).to_le_bytes()),
        _ => store_bytes(mem, at, v.to_le_bytes()),
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
