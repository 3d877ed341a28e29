//! The translation of an on-stack-replacement variant (`crate::osr` explains what it is for).
//!
//! The function is translated as usual, operator by operator, with one change at each end:
//!
//! - **Entry.** After the prologue (the stack check and the `VmCtx` loads, which every block may use), the
//!   entry jumps to the *OSR block*, which stays empty until the translator reaches the target `loop`.
//!   The body is then translated from a block nothing jumps to: everything before the loop is dead code
//!   that Cranelift drops, but translating it keeps the translator's control and value stacks exactly as
//!   in the normal code when the loop is reached.
//! - **At the target `loop`** ([`FuncTranslator::osr_entry_at`], called by the `loop` operator after the
//!   jump into its header): the OSR block loads every local (`def_var`) and every operand-stack value from
//!   the interpreter's slots, replaces the stack's (dead) values with the loaded ones, and jumps to the
//!   header with the loop's parameters. Every live block is reached through the OSR block, so the loaded
//!   values dominate every live use; the SSA builder merges the locals at the header as for any edge.
//!
//! Slot layout (`vm::tier::OsrEntry`): local `i` in slot `i`, operand-stack position `p` in slot
//! `stack_slot + p`, each in the interpreter's 8-byte form, which `abi::load_slot` reads.

use cranelift_codegen::ir::{self, Block, InstBuilder, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use vm::tier::{FuncInput, OsrEntry, Unsupported};
use vm::types::RtValType;

use super::FuncTranslator;
use crate::InjectedBugs;
use crate::abi::{Target, clif_type, load_slot};

/// The loop an OSR variant enters at, and the entry's state while translating.
pub(crate) struct OsrTarget {
    entry: OsrEntry,
    /// The block the entry jumps to, filled at the target loop.
    block: Block,
    /// The address of the interpreter's slots (`callee_ctx`).
    slots: Value,
    /// Whether the target loop was reached (a variant without it has an empty block: declined).
    reached: bool,
}

/// Translate the OSR variant of `input`'s function for the loop `entry` names into `func`.
pub fn translate_osr(
    input: &FuncInput<'_>,
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    vm: &super::VmCalls<'_>,
    target: &Target,
    bugs: InjectedBugs,
    entry: OsrEntry,
) -> Result<(), Unsupported> {
    let (mut t, body) = FuncTranslator::start(input, func, fctx, vm, target, bugs)?;
    let entry_block = t.b.func.layout.entry_block().expect("the prologue's block");
    let slots = t.b.block_params(entry_block)[0];
    let block = t.b.create_block();
    t.b.ins().jump(block, &[]);
    let dead = t.b.create_block();
    t.b.switch_to_block(dead);
    t.osr = Some(OsrTarget { entry, block, slots, reached: false });
    t.operators(&body)?;
    if !t.osr.as_ref().is_some_and(|o| o.reached) {
        return Err(Unsupported::new(format!("no reachable loop at byte {}", entry.loop_offset)));
    }
    t.finish();
    Ok(())
}

impl FuncTranslator<'_, '_> {
    /// At the `loop` at `offset`, whose header block `header` (parameters `params`) was just jumped to:
    /// if it is the OSR target, fill the OSR block (load the frame, jump to the header).
    pub(super) fn osr_entry_at(&mut self, offset: u32, header: Block, params: &[RtValType]) {
        let Some(osr) = self.osr.as_mut().filter(|o| !o.reached && o.entry.loop_offset == offset) else {
            return;
        };
        osr.reached = true;
        let (block, slots, stack_slot) = (osr.block, osr.slots, osr.entry.stack_slot as usize);
        self.b.switch_to_block(block);
        for i in 0..self.locals.len() {
            let local = self.locals[i];
            let (var, ty) = (local.var, local.ty);
            let mut v = load_slot(&mut self.b, ty, slots, i);
            if local.is_ref {
                self.declare_ref(v);
            }
            if i == 0 && self.bugs.osr_wrong_local {
                v = off_by_one(&mut self.b, v, ty);
            }
            self.b.def_var(var, v);
        }
        for p in 0..self.stack.len() {
            let old = self.stack[p];
            let ty = self.b.func.dfg.value_type(old);
            self.stack[p] = load_slot(&mut self.b, ty, slots, stack_slot + p);
            if self.refs.contains(&old) {
                self.declare_ref(self.stack[p]);
            }
        }
        let below = self.stack.len();
        let mut args: Vec<Value> = Vec::with_capacity(params.len());
        for (j, &rt) in params.iter().enumerate() {
            // The header's parameters are declared references already; the loads only flow into them.
            let ty = clif_type(rt).expect("the header was made with this type");
            args.push(load_slot(&mut self.b, ty, slots, stack_slot + below + j));
        }
        self.jump(header, &args);
    }
}

/// `v + 1` (the planted bug `osr-wrong-local`).
fn off_by_one(b: &mut FunctionBuilder, v: Value, ty: Type) -> Value {
    match ty {
        types::F32 => {
            let one = b.ins().f32const(1.0);
            b.ins().fadd(v, one)
        }
        types::F64 => {
            let one = b.ins().f64const(1.0);
            b.ins().fadd(v, one)
        }
        _ => b.ins().iadd_imm_s(v, 1),
    }
}
