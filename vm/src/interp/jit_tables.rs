//! Table instructions for compiled code: one library call ([`TableOp`]) over the interpreter's own
//! helpers (`tables.rs`), so both tiers share every bounds check and trap.

use super::jit::with_store;
use super::tables;
use crate::state::StoreState;
use crate::tier::{TableOp, VmCtx};
use crate::{Trap, TrapKind};

/// Where the helpers find the operands (slot 0 on) and put a result, in the scratch frame.
const RESULT_SLOT: u16 = 7;

pub(super) extern "C" fn lib_table_op(vmctx: *mut VmCtx, op: u32, args: *mut u64) -> u32 {
    with_store(vmctx, |store, inst| {
        // SAFETY: compiled code passes a buffer of 2 immediates and up to 4 operands (`TableOp`).
        let buf = unsafe { std::slice::from_raw_parts_mut(args, 6) };
        let (table, imm) = (buf[0] as usize, buf[1] as usize);
        let mut frame = [0u64; 8];
        frame[..4].copy_from_slice(&buf[2..6]);
        let op = TableOp::from_u32(op).ok_or_else(|| Trap::new(TrapKind::Unreachable))?;
        let StoreState { instances, tables: store_tables, .. } = store;
        let instance = &mut instances[inst as usize];
        let t = instance.tables.get(table).map_or(0, |&t| t as usize);
        let trap = Trap::new;
        match op {
            TableOp::Get => tables::table_get(&mut frame, &store_tables[t], RESULT_SLOT, 0).map_err(trap)?,
            TableOp::Set => tables::table_set(&frame, &mut store_tables[t], 0, 1).map_err(trap)?,
            TableOp::Size => tables::table_size(&mut frame, &store_tables[t], RESULT_SLOT),
            TableOp::Grow => {
                frame[RESULT_SLOT as usize] = frame[0];
                tables::table_grow(&mut frame, &mut store_tables[t], RESULT_SLOT, 1);
            }
            TableOp::Fill => tables::table_fill(&frame, &mut store_tables[t], 0).map_err(trap)?,
            TableOp::Copy => {
                let src = instance.tables[imm] as usize;
                tables::table_copy(&frame, store_tables, t, src, 0).map_err(trap)?
            }
            TableOp::Init => tables::table_init(&frame, &mut store_tables[t], &instance.elems[imm], 0).map_err(trap)?,
            TableOp::ElemDrop => tables::elem_drop(&mut instance.elems, imm as u32),
        }
        buf[0] = frame[RESULT_SLOT as usize];
        if store.rt.race.is_some() {
            race_table_op(store, inst, op, (table as u32, imm as u32), &frame);
        }
        Ok(())
    })
}

/// `--race`: the elements of shared tables table operation `op` read and wrote (the interpreter's checks in
/// `cold.rs`, after the same operation), reported at the site the exit record names: compiled code called
/// the table library call through the exit trampoline, which recorded its frame and return address.
fn race_table_op(store: &mut StoreState, inst: u32, op: TableOp, (table, imm): (u32, u32), frame: &[u64; 8]) {
    let u = |i: usize| frame[i] as u32 as u64;
    // (instance table, first element, count, write) of each range.
    let ranges = match op {
        TableOp::Get => vec![(table, u(0), 1, false)],
        TableOp::Set => vec![(table, u(0), 1, true)],
        TableOp::Grow => match u32::try_from(frame[RESULT_SLOT as usize] as i32) {
            Ok(old) => vec![(table, u64::from(old), u(1), true)],
            Err(_) => vec![],
        },
        TableOp::Fill => vec![(table, u(0), u(2), true)],
        TableOp::Copy => vec![(imm, u(1), u(2), false), (table, u(0), u(2), true)],
        TableOp::Init => vec![(table, u(0), u(2), true)],
        TableOp::Size | TableOp::ElemDrop => vec![],
    };
    for (t, first, count, write) in ranges {
        let entity = store.instances[inst as usize].tables[t as usize] as usize;
        if store.tables[entity].shared().is_none() {
            continue;
        }
        let site = super::race_stack::exit_site(store, inst);
        let StoreState { rt, mutator, tables, instances, .. } = &mut *store;
        let (Some(race), Some(ctx)) = (rt.race.as_deref(), mutator.race.as_deref_mut()) else { return };
        let id = (instances[inst as usize].module.index, t);
        if let Some(found) =
            super::race_hooks::table_access((race, ctx), &tables[entity], id, (first, count), write, site)
        {
            super::jit_memory::report_compiled(store, found);
        }
    }
}
