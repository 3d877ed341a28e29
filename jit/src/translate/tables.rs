//! Table instructions: library calls (`Libcalls::table_op`) with the operands in a stack buffer; the
//! VM runs the interpreter's own helpers, so bounds checks and traps are the same in both tiers.

use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value, types};
use vm::tier::{TableOp, Unsupported};
use wasmparser::Operator;

use super::FuncTranslator;
use crate::abi::{load_slot, store_slot};

impl FuncTranslator<'_, '_> {
    /// Table operators; false if `op` is not one.
    pub(super) fn table_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        let (op, table, imm, operands, result) = match *op {
            O::TableGet { table } => (TableOp::Get, table, 0, 1, Some(types::I64)),
            O::TableSet { table } => (TableOp::Set, table, 0, 2, None),
            O::TableSize { table } => (TableOp::Size, table, 0, 0, Some(types::I32)),
            O::TableGrow { table } => (TableOp::Grow, table, 0, 2, Some(types::I32)),
            O::TableFill { table } => (TableOp::Fill, table, 0, 3, None),
            O::TableCopy { dst_table, src_table } => (TableOp::Copy, dst_table, src_table, 3, None),
            O::TableInit { elem_index, table } => (TableOp::Init, table, elem_index, 3, None),
            O::ElemDrop { elem_index } => (TableOp::ElemDrop, 0, elem_index, 0, None),
            _ => return Ok(false),
        };
        let values = self.pop_n(operands);
        let buf = self.table_call(op, table, imm, &values, offset);
        if let Some(ty) = result {
            let v = load_slot(&mut self.b, ty, buf, 0);
            if op == TableOp::Get {
                self.declare_ref(v);
            }
            self.push(v);
        }
        Ok(true)
    }

    fn table_call(&mut self, op: TableOp, table: u32, imm: u32, operands: &[Value], offset: u32) -> Value {
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, 6 * 8, 3);
        let buffer = self.b.create_sized_stack_slot(slot);
        let buf = self.b.ins().stack_addr(types::I64, buffer, 0);
        for (i, imm) in [table, imm].into_iter().enumerate() {
            let v = self.b.ins().iconst(types::I64, imm as i64);
            store_slot(&mut self.b, v, buf, i);
        }
        for (i, &v) in operands.iter().enumerate() {
            store_slot(&mut self.b, v, buf, 2 + i);
        }
        let op = self.b.ins().iconst(types::I32, op as i64);
        let status = self.call_vm(self.libcalls.table_op, &[op, buf], Some(types::I32)).expect("a status");
        self.check_status(status, offset);
        buf
    }
}
