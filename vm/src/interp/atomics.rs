//! Atomic instructions (threads proposal): the handlers the cold path calls, and `memory.atomic.wait`,
//! which blocks and therefore runs outside the dispatch loop ([`wait`], called by `run` on
//! `Exit::Wait`).
//!
//! The memory operations themselves (checks, real atomics, the wait queues) are `memory_atomic.rs`;
//! these functions only read the operands from the frame and write the result.

use super::operands::{get, set};
use crate::bytecode::{Instr, RmwOp, Slot};
use crate::memory::LinearMemory;
use crate::memory_atomic;
use crate::mutator::Position;
use crate::safepoint;
use crate::state::StoreState;
use crate::{Trap, TrapKind};

/// The address of an atomic access: the i32 in `args` plus the static offset, without wrapping.
#[inline]
pub(super) fn address(frame: &[u64], args: Slot, offset: u32) -> u64 {
    get::<u32>(frame, args) as u64 + offset as u64
}

pub(super) fn load(
    frame: &mut [u64],
    mem: &LinearMemory,
    width: u8,
    dst: Slot,
    args: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let v = memory_atomic::load(mem, address(frame, args, offset), width as u64)?;
    set(frame, dst, v);
    Ok(())
}

pub(super) fn store(frame: &[u64], mem: &LinearMemory, width: u8, args: Slot, offset: u32) -> Result<(), TrapKind> {
    memory_atomic::store(mem, address(frame, args, offset), width as u64, get(frame, args + 1))
}

pub(super) fn rmw(
    frame: &mut [u64],
    mem: &LinearMemory,
    op: RmwOp,
    width: u8,
    dst: Slot,
    args: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let old = memory_atomic::rmw(mem, address(frame, args, offset), width as u64, op, get(frame, args + 1))?;
    set(frame, dst, old);
    Ok(())
}

pub(super) fn cmpxchg(
    frame: &mut [u64],
    mem: &LinearMemory,
    width: u8,
    dst: Slot,
    args: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let at = address(frame, args, offset);
    let old = memory_atomic::cmpxchg(mem, at, width as u64, get(frame, args + 1), get(frame, args + 2))?;
    set(frame, dst, old);
    Ok(())
}

pub(super) fn notify(
    frame: &mut [u64],
    mem: &LinearMemory,
    dst: Slot,
    args: Slot,
    offset: u32,
) -> Result<(), TrapKind> {
    let woken = memory_atomic::notify(mem, address(frame, args, offset), get(frame, args + 1))?;
    set(frame, dst, woken);
    Ok(())
}

/// Runs the `memory.atomic.wait` at `pos` (the dispatch loop has exited with `Exit::Wait`): reads its
/// operands, blocks with the mutator native (a thread waiting for another must not hold up that thread's
/// collection; the translator recorded a stack map here), and writes the result.
pub(super) fn wait(store: &mut StoreState, pos: Position) -> Result<(), Trap> {
    let module = store.instances[pos.inst as usize].module.clone();
    let Instr::AtomicWait { mem, width, dst, args, offset } = module.code[pos.func as usize].code[pos.pc] else {
        unreachable!("Exit::Wait leaves at a wait instruction")
    };
    let memory = store.memories[store.instances[pos.inst as usize].memories[mem as usize] as usize].clone();
    let frame = &store.mutator.exec.stack[pos.fp..];
    let at = address(frame, args, offset);
    let (expected, timeout) = (get::<u64>(frame, args + 1), get::<i64>(frame, args + 2));
    store.mutator.exec.top = Some(pos);
    safepoint::enter_blocking_call(store);
    let result = memory_atomic::wait(&memory, at, width as u64, expected, timeout);
    safepoint::leave_blocking_call(store);
    let result = result.map_err(Trap::new)?;
    // `--race`: woken by a notify, this thread now sees what the notifier did before it (`race.rs`).
    if result == memory_atomic::WaitResult::Woken
        && let (Some(race), Some(ctx)) = (&store.rt.race, store.mutator.race.as_deref_mut())
    {
        race.detector.acquire(ctx, memory.base() as u64 + at);
    }
    set(&mut store.mutator.exec.stack[pos.fp..], dst, result as u32);
    Ok(())
}
