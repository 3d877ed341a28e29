//! Exception handling: `try_table`, `throw`, `throw_ref`.
//!
//! Exceptions travel like traps, as the pending trap of the mutator with status 1 (`mod.rs`), so nothing
//! new unwinds the native stack. `throw` asks the VM to allocate the exception and make it pending; inside a
//! `try_table`, a non-zero status goes to the table's *landing block* instead of out of the function. The
//! landing block tries the clauses in order: each asks the VM to take the pending exception if it matches
//! (`Libcalls::exn_catch`: the tag, or any exception for `catch_all`; a trap never matches), loads the
//! payload from the object and branches to the clause's label; if none matches, the landing block goes on
//! to the next `try_table` out, or out of the function. The interpreter's frames catch what compiled
//! frames let through (`interp/mod.rs`, `take_exception`).

use cranelift_codegen::ir::{Block, InstBuilder, Value, types};
use vm::tier::{TrapCode, Unsupported, alloc_site};
use wasmparser::{Catch, TryTable};

use super::{Frame, FrameKind, FuncTranslator};

/// A `try_table` being translated.
pub(super) struct Handler {
    /// Where a non-zero status inside the table goes (one `i32` parameter: the failing offset).
    landing: Block,
    catches: Vec<Catch>,
    /// The index of the table's frame on the control stack.
    pub depth: usize,
}

impl FuncTranslator<'_, '_> {
    /// Where a failing status goes now: the innermost `try_table`'s landing block, or the unwind block.
    pub(super) fn unwind_target(&self) -> Block {
        self.handlers.last().map_or(self.unwind_block, |h| h.landing)
    }

    pub(super) fn try_table(&mut self, t: TryTable) -> Result<(), Unsupported> {
        let (params, results) = self.block_type(t.ty)?;
        let end_block = self.block_with_params(&results)?;
        let height = self.stack.len() - params.len();
        let landing = self.b.create_block();
        self.b.append_block_param(landing, types::I32);
        self.handlers.push(Handler { landing, catches: t.catches, depth: self.control.len() });
        self.control.push(Frame {
            kind: FrameKind::Block,
            branch_target: end_block,
            end_block,
            params,
            results,
            height,
            end_reachable: false,
        });
        Ok(())
    }

    /// The landing block of a `try_table` whose frame was just popped (its labels resolve from here).
    pub(super) fn landing(&mut self, h: Handler) {
        self.b.switch_to_block(h.landing);
        let offset = self.b.block_params(h.landing)[0];
        for c in h.catches {
            let (tag, label, with_ref) = match c {
                Catch::One { tag, label } => (Some(tag), label, false),
                Catch::OneRef { tag, label } => (Some(tag), label, true),
                Catch::All { label } => (None, label, false),
                Catch::AllRef { label } => (None, label, true),
            };
            let tag_arg = self.b.ins().iconst(types::I32, tag.unwrap_or(u32::MAX) as i64);
            let exn = self.call_vm(self.libcalls.exn_catch, &[tag_arg], Some(types::I64)).expect("a result");
            self.declare_ref(exn);
            let (caught, next) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(exn, caught, &[], next, &[]);
            self.b.switch_to_block(caught);
            let mut values: Vec<Value> = Vec::new();
            if let Some(tag) = tag {
                let (_, layout) = self.input.tag_payload(tag);
                for f in layout {
                    values.push(self.load_field(f.kind, f.float, exn, f.offset as i32));
                }
            }
            if with_ref {
                values.push(exn);
            }
            let target = self.control[self.control.len() - 1 - label as usize].branch_target;
            self.mark_end_reachable(label);
            self.jump(target, &values);
            self.b.switch_to_block(next);
        }
        let outer = self.unwind_target();
        self.b.ins().jump(outer, &[offset.into()]);
    }

    pub(super) fn throw(&mut self, tag: u32, offset: u32) {
        let (params, _) = self.input.tag_payload(tag);
        let args = self.pop_n(params.len());
        let buf = self.slot_buffer(&args, 0);
        let tag_arg = self.b.ins().iconst(types::I32, tag as i64);
        let defined = self.input.func_index - self.input.num_imported_funcs();
        let site = self.b.ins().iconst(types::I64, alloc_site(defined, offset) as i64);
        let status = self.call_vm(self.libcalls.throw, &[tag_arg, buf, site], Some(types::I32)).expect("a status");
        self.after_throw(status, offset);
    }

    pub(super) fn throw_ref(&mut self, offset: u32) {
        let exn = self.pop();
        let status = self.call_vm(self.libcalls.throw_ref, &[exn], Some(types::I32)).expect("a status");
        self.after_throw(status, offset);
    }

    /// A throw's status is always 1; the fall-through is never taken.
    fn after_throw(&mut self, status: Value, offset: u32) {
        self.check_status(status, offset);
        self.trap(TrapCode::Unreachable, offset);
        self.reachable = false;
    }
}
