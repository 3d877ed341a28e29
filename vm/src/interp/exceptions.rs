//! Exceptions: `throw` (allocating the exception object), `throw_ref`, and unwinding to a handler.
//!
//! An exception is an object of the GC heap whose type is its throwing module's layout for the tag
//! (`TypeKind::Exn`): the store tag's index at offset 8, then the payload laid out like struct fields, with the
//! reference fields in the layout's reference map. So it is traced, swept, seen by the tracer under the tag's
//! name and by Memcheck as a block, like every object; an `exnref` is its address.
//!
//! Throwing leaves the dispatch loop (`Exit::Throw`, with the exception) and [`unwind`] runs in the driver:
//! it walks the frames from the throwing one outwards, each at its pc (the throw, or the call it is
//! suspended in), and asks the function's handler table ([`crate::bytecode::CompiledFunc::find_handler`])
//! for a clause that takes the exception. The first that does gets the payload and the exception written
//! into its slots, the frames above it are dropped, and execution goes on at the handler's target. Nothing
//! allocates or collects while the frames are walked, so the exception (held in a local) needs no root
//! there. When no frame of this invocation takes it, it leaves as the `UncaughtException` trap, rooted as a
//! handle: through a host function (which may catch or return it; returned, it is thrown again in the wasm
//! that called the host, see `mod.rs`), or to the embedder.

use super::gc_objects::{Allocator, OpExit};
use super::operands::get;
use crate::TrapKind;
use crate::bytecode::{HandlerAction, Slot};
use crate::gcglue;
use crate::module::TagDesc;
use crate::mutator::Position;
use crate::state::StoreState;
use crate::types::{StorageKind, TypeKind, TypeRegistry};

/// Byte offset of the store tag's index in an exception object.
const TAG_OFFSET: usize = gc::HEADER_SIZE;

/// `throw`: a new exception of the module's tag `desc` (store tag `store_tag`) with the payload in `args..`.
pub(super) fn throw_new(
    frame: &[u64],
    alloc: &mut Allocator<'_>,
    desc: &TagDesc,
    store_tag: u32,
    args: Slot,
) -> Result<u64, OpExit> {
    let obj = alloc.new_struct(desc.exn_type)?;
    gcglue::write(obj, TAG_OFFSET, StorageKind::B64, store_tag as u64);
    for (i, f) in desc.payload.iter().enumerate() {
        gcglue::write(obj, f.offset as usize, f.kind, get(frame, args + i as Slot));
    }
    Ok(obj.raw())
}

/// `throw_ref`: the exception in `exn`.
pub(super) fn throw_ref(frame: &[u64], exn: Slot) -> Result<u64, TrapKind> {
    match get::<u64>(frame, exn) {
        0 => Err(TrapKind::NullExceptionReference),
        raw => Ok(raw),
    }
}

/// The store tag an exception was thrown with.
pub(super) fn exception_tag(exn: u64) -> u32 {
    gcglue::read(gcglue::obj(exn), TAG_OFFSET, StorageKind::B64) as u32
}

/// How an exception's tag is named in messages (`tag $e`).
pub(super) fn exception_tag_name(registry: &TypeRegistry, exn: u64) -> String {
    match &registry.get(gcglue::object_type(exn)).kind {
        TypeKind::Exn { name, .. } => name.to_string(),
        _ => unreachable!("an exnref holds an exception"),
    }
}

/// Find the handler for `exn` thrown at `pos` (or, with `skip_current`, at the call that `pos`'s frame was
/// replaced by: a `return_call` to the host leaves the frame's handlers) among the frames above `depth0`.
/// Found: the handler's slots are filled, the frames above it dropped, `pos` is at the handler's target, and
/// the result is true. Not found: nothing changes.
pub(super) fn unwind(store: &mut StoreState, pos: &mut Position, depth0: usize, exn: u64, skip_current: bool) -> bool {
    let tag = exception_tag(exn);
    let frames = &store.mutator.exec.frames;
    // `kept` frames stay when the handler is in `at`: `at` is the running function, or `frames[kept]`.
    let (mut at, mut kept) = (*pos, frames.len());
    let mut skip = skip_current;
    loop {
        if !skip && let Some(target) = take(store, at, exn, tag) {
            store.mutator.exec.frames.truncate(kept);
            *pos = Position { pc: target, ..at };
            return true;
        }
        skip = false;
        if kept == depth0 {
            return false;
        }
        kept -= 1;
        let f = store.mutator.exec.frames[kept];
        at = Position { inst: f.inst, func: f.func, pc: f.pc as usize, fp: f.fp as usize };
    }
}

/// If the function at `at` has a handler for `exn` (of store tag `tag`) at its pc: fill the handler's slots
/// and return its target.
fn take(store: &mut StoreState, at: Position, exn: u64, tag: u32) -> Option<usize> {
    let inst = &store.instances[at.inst as usize];
    let module = &inst.module;
    let code = &module.code[at.func as usize];
    let h = code.find_handler(at.pc as u32, |t| inst.tags[t as usize] == tag)?;
    let HandlerAction::Catch { tag: clause_tag, payload, exn: exn_slot, target } = h.action else {
        unreachable!("find_handler returns catch clauses")
    };
    let frame = &mut store.mutator.exec.stack[at.fp..];
    if let Some(t) = clause_tag {
        let obj = gcglue::obj(exn);
        for (i, f) in module.tags[t as usize].payload.iter().enumerate() {
            frame[payload as usize + i] = gcglue::read(obj, f.offset as usize, f.kind);
        }
    }
    if let Some(e) = exn_slot {
        frame[e as usize] = exn;
    }
    Some(target as usize)
}
