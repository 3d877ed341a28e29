//! Translation of the exception-handling instructions: `throw`, `throw_ref`, `try_table` (Wasm 3.0) and the
//! legacy `try`/`catch`/`catch_all`/`delegate`/`rethrow`.
//!
//! Nothing is emitted for a protected body: its range of instructions gets entries in the function's handler
//! table ([`Handler`]), so code that does not throw runs exactly as it would without the block. An entry
//! says where the exception's payload (and the exception itself) go and where execution continues:
//!
//! - A `try_table` catch clause lands on its label like a branch: the payload goes to the label's slots
//!   (`slot(height + i)` of the target block, as `br` would put it there), followed by the `exnref` for the
//!   `_ref` clauses, and the target is the label's pc (a loop's head, or a block's end, patched when the block
//!   ends, like a forward branch).
//! - A legacy `catch` arm starts right after the body: the caught exception goes to the slot at the `try`
//!   block's height, which the translator keeps as a hidden stack entry under the arm's values for `rethrow`
//!   (and for the collector: it is a reference temp like any other), and the payload above it. The arm's
//!   results are copied down to the block's slots when it ends.
//! - `delegate` is an entry that narrows the search to handlers of outer blocks (see
//!   [`CompiledFunc::find_handler`]).
//!
//! Entries are added when a protected range ends (`try_table`'s `end`, a `try`'s first `catch`/`catch_all`/
//! `delegate`), so inner ranges come first in the table. `throw` allocates (a GC point with a stack map, its
//! payload operands live); the landing is no GC point: the next one has its own map, where the label's
//! values are typed like any block result.

use super::{CtrlKind, Operand, Translator};
use crate::bytecode::{Handler, HandlerAction, Instr, Slot};
use wasmparser::{BlockType, Catch};

impl Translator<'_> {
    /// Number of payload values of tag `tag` and whether each is a reference.
    fn tag_payload_refs(&self, tag: u32) -> Vec<bool> {
        let desc = &self.env.tags[tag as usize];
        desc.payload.iter().map(|f| f.kind == crate::types::StorageKind::Ref).collect()
    }

    pub(super) fn throw(&mut self, tag: u32) {
        let n = self.tag_payload_refs(tag).len();
        let args = if n == 0 {
            self.record_stack_map(self.stack.len());
            self.next_slot()
        } else {
            self.alloc_operands(n)
        };
        self.emit(Instr::Throw { tag, args });
        self.set_unreachable();
    }

    pub(super) fn throw_ref(&mut self) {
        let exn = self.pop_slot();
        self.emit(Instr::ThrowRef { exn });
        self.set_unreachable();
    }

    pub(super) fn try_table(&mut self, ty: BlockType, catches: Vec<Catch>) {
        self.materialize_all();
        self.push_ctrl(CtrlKind::TryTable, ty);
        self.ctrls.last_mut().expect("just pushed").catches = catches;
    }

    pub(super) fn legacy_try(&mut self, ty: BlockType) {
        self.materialize_all();
        self.push_ctrl(CtrlKind::Try, ty);
    }

    /// `catch $tag` (`Some`) or `catch_all` (`None`) of the innermost (legacy) `try`.
    pub(super) fn legacy_catch(&mut self, tag: Option<u32>) {
        let idx = self.ctrls.len() - 1;
        if !self.ctrls[idx].live {
            return; // the whole `try` is dead code
        }
        if self.reachable {
            // The previous arm (body or catch) ends: its results go to the block's slots, then to its end.
            self.emit_branch_copies(0, 0);
            let at = self.emit(Instr::Br { offset: 0 });
            self.ctrls[idx].fixups.push(at);
        }
        let ctrl = &mut self.ctrls[idx];
        let body_end = *ctrl.body_end.get_or_insert(self.code.len());
        let (start, height) = (ctrl.try_start, ctrl.height);
        ctrl.kind = CtrlKind::LegacyCatch;
        let payload_refs = tag.map(|t| self.tag_payload_refs(t)).unwrap_or_default();
        let action = HandlerAction::Catch {
            tag,
            payload: self.slot(height + 1),
            exn: Some(self.slot(height)),
            target: self.code.len() as u32,
        };
        self.push_handler(start, body_end, idx, action);
        self.stack.truncate(height);
        self.push(Operand::Temp, true);
        for r in payload_refs {
            self.push(Operand::Temp, r);
        }
        self.reachable = true;
        self.fusable = None;
    }

    /// `delegate $label`: ends the innermost (legacy) `try`.
    pub(super) fn delegate(&mut self, relative_depth: u32) {
        let idx = self.ctrls.len() - 1;
        if self.ctrls[idx].live {
            // The label is counted from the block around the `try`.
            let to_depth = (idx - 1 - relative_depth as usize) as u16;
            let (start, end) = (self.ctrls[idx].try_start, self.code.len());
            self.push_handler(start, end, idx, HandlerAction::Delegate { to_depth });
        }
        self.end();
    }

    /// `rethrow $label`: the exception caught by the `catch` arm `label` names.
    pub(super) fn rethrow(&mut self, relative_depth: u32) {
        let idx = self.ctrls.len() - 1 - relative_depth as usize;
        debug_assert_eq!(self.ctrls[idx].kind, CtrlKind::LegacyCatch, "validated: rethrow names a catch");
        let exn = self.slot(self.ctrls[idx].height);
        self.emit(Instr::ThrowRef { exn });
        self.set_unreachable();
    }

    /// Called by `end` while the ending block is still on the control stack (and live): a `try_table`'s
    /// clauses become handlers; a legacy catch arm's results move down over the hidden exception slot.
    pub(super) fn end_exception_block(&mut self) {
        let idx = self.ctrls.len() - 1;
        match self.ctrls[idx].kind {
            CtrlKind::TryTable => {
                let (start, end) = (self.ctrls[idx].try_start, self.code.len());
                for c in std::mem::take(&mut self.ctrls[idx].catches) {
                    self.catch_clause(idx, start, end, c);
                }
            }
            CtrlKind::LegacyCatch if self.reachable => {
                self.emit_branch_copies(0, 0);
                let (height, results) = (self.ctrls[idx].height, self.ctrls[idx].result_refs.clone());
                self.reset_stack_to(height, &results);
            }
            _ => {}
        }
    }

    /// One catch clause of the `try_table` at control index `idx`, protecting `start..end`.
    fn catch_clause(&mut self, idx: usize, start: usize, end: usize, clause: Catch) {
        let (tag, with_exn, label) = match clause {
            Catch::One { tag, label } => (Some(tag), false, label),
            Catch::OneRef { tag, label } => (Some(tag), true, label),
            Catch::All { label } => (None, false, label),
            Catch::AllRef { label } => (None, true, label),
        };
        // Labels are counted from the block around the `try_table`.
        let target_idx = idx - 1 - label as usize;
        let height = self.ctrls[target_idx].height;
        let n = tag.map_or(0, |t| self.tag_payload_refs(t).len());
        self.max_height = self.max_height.max(height + n + with_exn as usize);
        let is_loop = self.ctrls[target_idx].kind == CtrlKind::Loop;
        let target = if is_loop { self.ctrls[target_idx].loop_pc as u32 } else { u32::MAX };
        let exn: Option<Slot> = with_exn.then(|| self.slot(height + n));
        let action = HandlerAction::Catch { tag, payload: self.slot(height), exn, target };
        let h = self.push_handler(start, end, idx, action);
        if !is_loop {
            self.ctrls[target_idx].handler_fixups.push(h);
        }
    }

    fn push_handler(&mut self, start: usize, end: usize, depth: usize, action: HandlerAction) -> usize {
        self.handlers.push(Handler { start: start as u32, end: end as u32, depth: depth as u16, action });
        self.handlers.len() - 1
    }

    /// A block's end is known: entry `h` lands there.
    pub(super) fn set_handler_target(&mut self, h: usize, pc: usize) {
        if let HandlerAction::Catch { target, .. } = &mut self.handlers[h].action {
            *target = pc as u32;
        }
    }
}
