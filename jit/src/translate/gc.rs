//! Struct and array instructions.
//!
//! Field and element accesses are inline: a null check, for arrays a bounds check against the length in
//! the object header (`gc/src/object.rs`: type id at 0, length at 4, payload from 8), then one load or
//! store at the offset the VM's layout gives (`vm::types::FieldLayout`). The heap does not move objects
//! and the collector stops the world, so there is no barrier. Allocation takes a slot from the thread
//! cache inline when it can (`alloc.rs`), else it is a library call (`struct_new`, `array_new`; it may
//! collect, which is why every reference live across it is in its stack map); the initial values are
//! stored inline after it. The bulk and segment instructions are library calls
//! (`array_op`) with their operands in a stack buffer.
//!
//! **`--race`**: a plain access to a field or element of a `shared` type calls the object race hook
//! after it is made (`shared_gc.rs`), as the interpreter's `RaceField`/`RaceElem` report it; the bulk
//! operations' ranges are checked inside `array_op`, with the frame pointer it is given.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types};
use vm::tier::{ArrayOp, TrapCode, Unsupported, alloc_site};
use vm::types::StorageKind;
use wasmparser::Operator;

use super::FuncTranslator;
use crate::abi::{load_slot, store_slot};

/// Object memory after the null check: never traps, may alias anything else on the heap.
pub(super) fn heap_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Offset of an array's length in its header.
const LEN_OFFSET: i32 = 4;
/// Offset of the first field or element.
const PAYLOAD: i64 = vm::tier::OBJECT_HEADER as i64;

impl FuncTranslator<'_, '_> {
    /// GC object operators; false if `op` is not one.
    pub(super) fn gc_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        match *op {
            O::StructNew { struct_type_index } => {
                let fields = self.input.struct_fields(struct_type_index);
                let values = self.pop_n(fields.len());
                let obj = self.new_struct(struct_type_index, offset);
                for (f, v) in fields.iter().zip(values) {
                    self.store_field(f.kind, obj, f.offset as i32, v);
                }
                self.push(obj);
            }
            O::StructNewDefault { struct_type_index } => {
                let obj = self.new_struct(struct_type_index, offset);
                self.push(obj);
            }
            O::StructGet { struct_type_index, field_index }
            | O::StructGetS { struct_type_index, field_index }
            | O::StructGetU { struct_type_index, field_index } => {
                let f = self.input.struct_fields(struct_type_index)[field_index as usize];
                let kind = signed_kind(f.kind, matches!(op, O::StructGetS { .. }));
                let obj = self.pop();
                self.null_check(obj, TrapCode::NullStructReference, offset);
                let v = self.load_field(kind, f.float, obj, f.offset as i32);
                self.push(v);
                self.field_race_hook(struct_type_index, obj, f.offset as i64, kind.size(), false, offset);
            }
            O::StructSet { struct_type_index, field_index } => {
                let f = self.input.struct_fields(struct_type_index)[field_index as usize];
                let v = self.pop();
                let obj = self.pop();
                self.null_check(obj, TrapCode::NullStructReference, offset);
                self.store_field(f.kind, obj, f.offset as i32, v);
                self.field_race_hook(struct_type_index, obj, f.offset as i64, f.kind.size(), true, offset);
            }
            O::ArrayNew { array_type_index } => {
                let len = self.pop();
                let value = self.pop();
                let obj = self.new_array(array_type_index, len, offset);
                self.fill_elements(array_type_index, obj, len, value);
                self.push(obj);
            }
            O::ArrayNewDefault { array_type_index } => {
                let len = self.pop();
                let obj = self.new_array(array_type_index, len, offset);
                self.push(obj);
            }
            O::ArrayNewFixed { array_type_index, array_size } => {
                let values = self.pop_n(array_size as usize);
                let len = self.b.ins().iconst(types::I32, array_size as i64);
                let obj = self.new_array(array_type_index, len, offset);
                let (kind, _) = self.input.array_elem(array_type_index);
                for (i, v) in values.into_iter().enumerate() {
                    let at = PAYLOAD as i32 + (i as u32 * kind.size()) as i32;
                    self.store_field(kind, obj, at, v);
                }
                self.push(obj);
            }
            O::ArrayGet { array_type_index }
            | O::ArrayGetS { array_type_index }
            | O::ArrayGetU { array_type_index } => {
                let (kind, float) = self.input.array_elem(array_type_index);
                let kind = signed_kind(kind, matches!(op, O::ArrayGetS { .. }));
                let index = self.pop();
                let obj = self.pop();
                let addr = self.element_address(obj, index, kind, offset);
                let v = self.load_field(kind, float, addr, 0);
                self.push(v);
                self.element_race_hook(array_type_index, obj, addr, kind.size(), false, offset);
            }
            O::ArraySet { array_type_index } => {
                let (kind, _) = self.input.array_elem(array_type_index);
                let v = self.pop();
                let index = self.pop();
                let obj = self.pop();
                let addr = self.element_address(obj, index, kind, offset);
                self.store_field(kind, addr, 0, v);
                self.element_race_hook(array_type_index, obj, addr, kind.size(), true, offset);
            }
            O::ArrayLen => {
                let obj = self.pop();
                self.null_check(obj, TrapCode::NullArrayReference, offset);
                let len = self.b.ins().load(types::I32, heap_flags(), obj, LEN_OFFSET);
                self.push(len);
            }
            O::ArrayNewData { array_type_index, array_data_index } => {
                self.array_new_segment(ArrayOp::NewData, array_type_index, array_data_index, offset)
            }
            O::ArrayNewElem { array_type_index, array_elem_index } => {
                self.array_new_segment(ArrayOp::NewElem, array_type_index, array_elem_index, offset)
            }
            O::ArrayFill { array_type_index } => {
                let id = self.input.canonical_type(array_type_index);
                self.array_bulk(ArrayOp::Fill, id, 0, 4, offset);
            }
            O::ArrayCopy { array_type_index_dst, array_type_index_src } => {
                let (dst, src) =
                    (self.input.canonical_type(array_type_index_dst), self.input.canonical_type(array_type_index_src));
                self.array_bulk(ArrayOp::Copy, dst, src, 5, offset);
            }
            O::ArrayInitData { array_type_index, array_data_index } => {
                let id = self.input.canonical_type(array_type_index);
                self.array_bulk(ArrayOp::InitData, id, array_data_index, 4, offset);
            }
            O::ArrayInitElem { array_type_index, array_elem_index } => {
                let id = self.input.canonical_type(array_type_index);
                self.array_bulk(ArrayOp::InitElem, id, array_elem_index, 4, offset);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn null_check(&mut self, obj: Value, code: TrapCode, offset: u32) {
        let is_null = self.b.ins().icmp_imm_s(IntCC::Equal, obj, 0);
        self.trap_if(is_null, code, offset);
    }

    /// The allocation site word of the instruction at `offset` (for the tracer).
    fn site(&mut self, offset: u32) -> Value {
        let defined = self.input.func_index - self.input.num_imported_funcs();
        self.b.ins().iconst(types::I64, alloc_site(defined, offset) as i64)
    }

    /// After an allocation call: unwind if it returned 0 (a trap is pending), declare the reference.
    fn allocated(&mut self, obj: Value, offset: u32) -> Value {
        let failed = self.b.ins().icmp_imm_s(IntCC::Equal, obj, 0);
        self.check_status(failed, offset);
        self.declare_ref(obj);
        obj
    }

    /// A new struct, zeroed: inline from the thread cache when possible (`alloc.rs`), else a library call.
    fn new_struct(&mut self, type_index: u32, offset: u32) -> Value {
        let slot = self.struct_slot(type_index);
        self.allocate(slot, |t| {
            let id = t.b.ins().iconst(types::I32, t.input.canonical_type(type_index) as i64);
            let site = t.site(offset);
            let obj = t.call_vm(t.libcalls.struct_new, &[id, site], Some(types::I64)).expect("a result");
            t.allocated(obj, offset)
        })
    }

    /// A new array of `len` elements, zeroed: inline when possible (`alloc.rs`), else a library call.
    fn new_array(&mut self, type_index: u32, len: Value, offset: u32) -> Value {
        let slot = self.array_slot(type_index, len);
        self.allocate(slot, |t| {
            let id = t.b.ins().iconst(types::I32, t.input.canonical_type(type_index) as i64);
            let site = t.site(offset);
            let obj = t.call_vm(t.libcalls.array_new, &[id, len, site], Some(types::I64)).expect("a result");
            t.allocated(obj, offset)
        })
    }

    /// `array.new`'s initial value in every element (a fresh array is zeroed: skip a zero value).
    fn fill_elements(&mut self, type_index: u32, obj: Value, len: Value, value: Value) {
        let (kind, _) = self.input.array_elem(type_index);
        let ty = self.b.func.dfg.value_type(value);
        let bits = if ty.is_float() { self.b.ins().bitcast(ty.as_int(), MemFlagsData::new(), value) } else { value };
        let header = self.b.create_block();
        let body = self.b.create_block();
        let done = self.b.create_block();
        let index = self.b.append_block_param(header, types::I32);
        let zero = self.b.ins().iconst(types::I32, 0);
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, bits, 0);
        self.b.ins().brif(is_zero, done, &[], header, &[BlockArg::Value(zero)]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, index, len);
        self.b.ins().brif(more, body, &[], done, &[]);
        self.b.switch_to_block(body);
        let addr = self.element_addr_unchecked(obj, index, kind);
        self.store_field(kind, addr, 0, value);
        let next = self.b.ins().iadd_imm_s(index, 1);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(done);
    }

    /// The address of element `index` of array `obj`, after the null and bounds checks.
    pub(super) fn element_address(&mut self, obj: Value, index: Value, kind: StorageKind, offset: u32) -> Value {
        self.null_check(obj, TrapCode::NullArrayReference, offset);
        let len = self.b.ins().load(types::I32, heap_flags(), obj, LEN_OFFSET);
        let out = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, index, len);
        self.trap_if(out, TrapCode::ArrayOutOfBounds, offset);
        self.element_addr_unchecked(obj, index, kind)
    }

    fn element_addr_unchecked(&mut self, obj: Value, index: Value, kind: StorageKind) -> Value {
        let i = self.b.ins().uextend(types::I64, index);
        let scaled = self.b.ins().imul_imm_s(i, kind.size() as i64);
        let at = self.b.ins().iadd(obj, scaled);
        self.b.ins().iadd_imm_s(at, PAYLOAD)
    }

    /// Load a field or element at `addr + offset` as its wasm value (packed kinds extended to i32).
    pub(super) fn load_field(&mut self, kind: StorageKind, float: bool, addr: Value, offset: i32) -> Value {
        let f = heap_flags();
        let ins = self.b.ins();
        let v = match kind {
            StorageKind::I8S => ins.sload8(types::I32, f, addr, offset),
            StorageKind::I8U => ins.uload8(types::I32, f, addr, offset),
            StorageKind::I16S => ins.sload16(types::I32, f, addr, offset),
            StorageKind::I16U => ins.uload16(types::I32, f, addr, offset),
            StorageKind::B32 => ins.load(if float { types::F32 } else { types::I32 }, f, addr, offset),
            StorageKind::B64 => ins.load(if float { types::F64 } else { types::I64 }, f, addr, offset),
            StorageKind::Ref => ins.load(types::I64, f, addr, offset),
        };
        if kind == StorageKind::Ref {
            self.declare_ref(v);
        }
        v
    }

    /// Store wasm value `v` into a field or element at `addr + offset` (packed kinds truncated).
    fn store_field(&mut self, kind: StorageKind, addr: Value, offset: i32, v: Value) {
        let f = heap_flags();
        match kind {
            StorageKind::I8S | StorageKind::I8U => self.b.ins().istore8(f, v, addr, offset),
            StorageKind::I16S | StorageKind::I16U => self.b.ins().istore16(f, v, addr, offset),
            _ => self.b.ins().store(f, v, addr, offset),
        };
    }

    /// `array.new_data` / `array.new_elem`: the VM allocates and copies; the array comes back in the
    /// buffer.
    fn array_new_segment(&mut self, op: ArrayOp, type_index: u32, segment: u32, offset: u32) {
        let id = self.input.canonical_type(type_index);
        let operands = self.pop_n(2);
        let buf = self.array_op_call(op, id, segment, &operands, offset);
        let obj = load_slot(&mut self.b, types::I64, buf, 0);
        self.declare_ref(obj);
        self.push(obj);
    }

    /// `array.fill`/`copy`/`init_*`: `n` operands to the VM.
    fn array_bulk(&mut self, op: ArrayOp, imm0: u32, imm1: u32, n: usize, offset: u32) {
        let operands = self.pop_n(n);
        self.array_op_call(op, imm0, imm1, &operands, offset);
    }

    /// Call `Libcalls::array_op` with the immediates and operands in a stack buffer; unwind on a trap.
    fn array_op_call(&mut self, op: ArrayOp, imm0: u32, imm1: u32, operands: &[Value], offset: u32) -> Value {
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, 7 * 8, 3);
        let buffer = self.b.create_sized_stack_slot(slot);
        let buf = self.b.ins().stack_addr(types::I64, buffer, 0);
        for (i, imm) in [imm0, imm1].into_iter().enumerate() {
            let v = self.b.ins().iconst(types::I64, imm as i64);
            store_slot(&mut self.b, v, buf, i);
        }
        for (i, &v) in operands.iter().enumerate() {
            store_slot(&mut self.b, v, buf, 2 + i);
        }
        let op = self.b.ins().iconst(types::I32, op as i64);
        let site = self.site(offset);
        // The frame pointer: with `--race`, a report from the VM walks the compiled frames from there.
        let fp = self.b.ins().get_frame_pointer(types::I64);
        let status = self.call_vm(self.libcalls.array_op, &[op, site, buf, fp], Some(types::I32)).expect("a status");
        self.check_status(status, offset);
        buf
    }
}

/// The kind a `*.get_s` reads: packed fields are stored unsigned and sign-extended on request.
fn signed_kind(kind: StorageKind, signed: bool) -> StorageKind {
    match (kind, signed) {
        (StorageKind::I8U, true) => StorageKind::I8S,
        (StorageKind::I16U, true) => StorageKind::I16S,
        (k, _) => k,
    }
}
