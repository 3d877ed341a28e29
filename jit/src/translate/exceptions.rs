//! Exception handling: `try_table`, `throw`, `throw_ref`, and the legacy `try`/`catch`/`catch_all`/
//! `delegate`/`rethrow`.
//!
//! Exceptions travel like traps, as the pending trap of the mutator with status 1 (`mod.rs`), so nothing
//! new unwinds the native stack. `throw` asks the VM to allocate the exception and make it pending; inside a
//! `try_table` or a legacy `try`'s body, a non-zero status goes to the block's *landing block* (one `i32`
//! parameter: the offset of the failing operator, for the backtrace) instead of out of the function.
//! The landing block tries the clauses in order: each asks the VM to take the pending exception if it
//! matches (`Libcalls::exn_catch`: the tag, or any exception for `catch_all`; a trap never matches), loads
//! the payload from the object and goes on in the clause's code; if none matches, the landing block goes
//! on to the next handler out (the innermost enclosing block's landing block, or the unwind block, which
//! records this frame at the offset and returns 1). The interpreter's frames catch what compiled frames
//! let through (`interp/mod.rs`, `take_exception`).
//!
//! The two forms differ in where a clause goes and when its test is emitted:
//!
//! - **`try_table`**: the clauses are known at the start; at `end` the landing block tests them in order,
//!   each branching to its label with the payload (and the `exnref` for the `_ref` clauses).
//! - **legacy `try`**: each `catch $t`/`catch_all` ends the previous arm and emits its own test where the
//!   previous one failed (the landing block for the first clause), so the arm's code follows its test as
//!   the interpreter's catch arm follows the body. The arm starts with the caught exception as a hidden
//!   value at the `try`'s height, under the payload, as in the interpreter's frame (`vm/src/translate/
//!   exceptions.rs`; on-stack replacement loads the stack by position, so both must agree): `rethrow $l`
//!   throws it again, and it is declared a reference, so stack maps hold it while it is live. At `end`
//!   the last test's failure goes to the next handler out. The body's handler is dropped at the first
//!   clause: an exception inside an arm is not the `try`'s to catch.
//! - **`delegate $l`** ends a `try` whose landing block sends everything to the innermost handler of a
//!   block at or outside label `$l` (the handlers of blocks between are skipped, as the interpreter's
//!   `HandlerAction::Delegate` narrows its search), or out of the function for the body's label.

use cranelift_codegen::ir::{Block, InstBuilder, Value, types};
use vm::tier::{TrapCode, Unsupported, alloc_site};
use wasmparser::{BlockType, Catch};

use super::{Frame, FrameKind, FuncTranslator};

/// A `try_table` or a legacy `try`'s body being translated.
pub(super) struct Handler {
    /// Where a non-zero status inside the block goes (one `i32` parameter: the failing offset).
    landing: Block,
    /// A `try_table`'s clauses (a legacy `try` has none here: its landing block gets them one by one).
    catches: Vec<Catch>,
    /// The index of the block's frame on the control stack.
    pub depth: usize,
    /// Set by `delegate`: where the landing block sends everything.
    delegate: Option<Block>,
}

impl FuncTranslator<'_, '_> {
    /// Where a failing status goes now: the innermost handler's landing block, or the unwind block.
    pub(super) fn unwind_target(&self) -> Block {
        self.handlers.last().map_or(self.unwind_block, |h| h.landing)
    }

    /// `try_table` (with its clauses) or legacy `try` (none): a block whose failures go to a new
    /// landing block.
    pub(super) fn open_handler(&mut self, ty: BlockType, catches: Vec<Catch>) -> Result<(), Unsupported> {
        let (params, results) = self.block_type(ty)?;
        let end_block = self.block_with_params(&results)?;
        let height = self.stack.len() - params.len();
        let landing = self.b.create_block();
        self.b.append_block_param(landing, types::I32);
        self.handlers.push(Handler { landing, catches, depth: self.control.len(), delegate: None });
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

    /// The landing block of a handler whose frame was just popped (a `try_table`'s labels resolve from
    /// here; a legacy `try` that ends without a clause lets everything through, a `delegate` sends it on).
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
            let (exn, next) = self.catch_test(tag);
            let mut values = self.payload(tag, exn);
            if with_ref {
                values.push(exn);
            }
            let target = self.control[self.control.len() - 1 - label as usize].branch_target;
            self.mark_end_reachable(label);
            self.jump(target, &values);
            self.b.switch_to_block(next);
        }
        let outer = h.delegate.unwrap_or_else(|| self.unwind_target());
        self.b.ins().jump(outer, &[offset.into()]);
    }

    /// In the current (landing or test) block: take the pending exception if clause `tag` (`None`:
    /// `catch_all`) accepts it. Returns the exception, valid in the block the builder is left in (where
    /// it was taken), and the block where it was not.
    fn catch_test(&mut self, tag: Option<u32>) -> (Value, Block) {
        let tag_arg = self.b.ins().iconst(types::I32, tag.unwrap_or(u32::MAX) as i64);
        let exn = self.call_vm(self.libcalls.exn_catch, &[tag_arg], Some(types::I64)).expect("a result");
        if !self.bugs.no_caught_exn_maps {
            self.declare_ref(exn);
        }
        let (caught, next) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(exn, caught, &[], next, &[]);
        self.b.switch_to_block(caught);
        (exn, next)
    }

    /// The payload of exception `exn` of tag `tag` (nothing for `catch_all`), loaded from the object.
    fn payload(&mut self, tag: Option<u32>, exn: Value) -> Vec<Value> {
        let Some(tag) = tag else { return Vec::new() };
        let (_, layout) = self.input.tag_payload(tag);
        layout.iter().map(|f| self.load_field(f.kind, f.float, exn, f.offset as i32)).collect()
    }

    /// Legacy `catch $tag` (`Some`) or `catch_all` (`None`): the previous arm (the body or a catch arm)
    /// ends, and this clause's test runs where the previous clause's failed (the landing block for the
    /// first). Its arm starts with the exception (hidden, for `rethrow`) and the payload on the stack.
    pub(super) fn legacy_catch(&mut self, tag: Option<u32>) {
        let idx = self.control.len() - 1;
        if self.reachable {
            let (end_block, n) = (self.control[idx].end_block, self.control[idx].results.len());
            self.control[idx].end_reachable = true;
            let vals = self.pop_n(n);
            self.jump(end_block, &vals);
        }
        let (test, offset) = match self.control[idx].kind {
            FrameKind::Catch { next, offset } => (next, offset),
            _ => {
                let h = self.handlers.pop().expect("validated: catch ends a try's body");
                debug_assert_eq!(h.depth, idx, "the innermost handler is the try's");
                (h.landing, self.b.block_params(h.landing)[0])
            }
        };
        self.b.switch_to_block(test);
        let (exn, next) = self.catch_test(tag);
        let payload = self.payload(tag, exn);
        self.stack.truncate(self.control[idx].height);
        self.push(exn);
        self.stack.extend(payload);
        self.control[idx].kind = FrameKind::Catch { next, offset };
        self.reachable = true;
        self.dead_depth = 0;
    }

    /// Called by `end` for a legacy catch arm's frame (just popped): an exception no clause took goes on
    /// to the next handler out, with the offset it failed at.
    pub(super) fn end_catch(&mut self, next: Block, offset: Value) {
        self.b.switch_to_block(next);
        let outer = self.unwind_target();
        self.b.ins().jump(outer, &[offset.into()]);
    }

    /// `delegate $label`: ends the innermost `try`, whose failures go to the innermost handler of a
    /// block at or outside the label (counted from the block around the `try`); past every one, out of
    /// the function.
    pub(super) fn delegate(&mut self, relative_depth: u32) {
        let idx = self.control.len() - 1;
        let mut to_depth = idx - 1 - relative_depth as usize;
        if self.bugs.delegate_skips_a_level {
            to_depth = to_depth.saturating_sub(1);
        }
        let n = self.handlers.len();
        debug_assert_eq!(self.handlers[n - 1].depth, idx, "validated: delegate ends a try's body");
        let outer = self.handlers[..n - 1].iter().rev().find(|h| h.depth <= to_depth);
        let target = outer.map_or(self.unwind_block, |h| h.landing);
        self.handlers[n - 1].delegate = Some(target);
        self.end();
    }

    /// `rethrow $label`: throw again the exception of the catch arm `label` names.
    pub(super) fn rethrow(&mut self, relative_depth: u32, offset: u32) {
        let frame = &self.control[self.control.len() - 1 - relative_depth as usize];
        debug_assert!(matches!(frame.kind, FrameKind::Catch { .. }), "validated: rethrow names a catch");
        let exn = self.stack[frame.height];
        self.throw_exn(exn, offset);
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
        self.throw_exn(exn, offset);
    }

    /// Throw `exn` (a trap if null).
    fn throw_exn(&mut self, exn: Value, offset: u32) {
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
