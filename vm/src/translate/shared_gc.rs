//! Translation of the shared-everything-threads instructions vmrun runs: `struct.atomic.*`,
//! `array.atomic.*`, `global.atomic.*` and plain accesses to `shared` globals, plus the `--race` hooks
//! for plain field and element accesses of `shared` struct and array types.
//!
//! Like the threads proposal's atomics (`atomics.rs`), each atomic becomes one generic cold-path
//! instruction over consecutive slots (the object, the index of an array, then the operands). Every
//! ordering is executed sequentially consistent (a valid, stronger implementation of `acqrel`).
//!
//! **Race hooks are chosen here.** With `--race` (`ModuleEnv::race`) a `struct.get`/`struct.set`/
//! `array.get`/`array.set` of a `shared` type is preceded by `RaceField`/`RaceElem`, which names the
//! same object and field (the operands are made contiguous temps first, so the access that follows
//! reads the same slots); the access itself is translated as always by `mod.rs`. A bulk operation on a
//! shared array (`array.fill`/`copy`/`init_data`/`init_elem`) is followed by `RaceRange` for each range
//! it read or wrote (its operands are still in their slots). A mutable shared global is a location: a
//! plain `global.get`/`set` is followed by `RaceGlobal` (a read or write), `global.atomic.get/set` are
//! atomic accesses with their acquire or release, `global.atomic.rmw.*` both (`GlobalAtomic`). Without
//! `--race`, or for types that are not shared (no other thread can reach their objects), nothing is
//! emitted.

use wasmparser::{FuncValidator, Operator, ValType, ValidatorResources};

use super::Translator;
use crate::bytecode::{Instr, ObjAtomicOp, RmwOp, Slot};
use crate::tier::RaceHook;

impl Translator<'_> {
    /// Translate `op` if it is one of this file's instructions (true); emit the race hook of a plain
    /// shared-object access and return false so that `mod.rs` translates the access itself.
    pub(super) fn shared_gc(&mut self, op: &Operator<'_>, v: &FuncValidator<ValidatorResources>) -> bool {
        use Operator as O;
        match *op {
            O::StructAtomicGet { struct_type_index: t, field_index: f, .. }
            | O::StructAtomicGetU { struct_type_index: t, field_index: f, .. } => {
                let field = self.struct_field(t, f, false);
                self.struct_atomic(ObjAtomicOp::Get, 1, field, Self::result_is_ref(v, 0))
            }
            O::StructAtomicGetS { struct_type_index: t, field_index: f, .. } => {
                let field = self.struct_field(t, f, true);
                self.struct_atomic(ObjAtomicOp::Get, 1, field, false)
            }
            O::StructAtomicSet { struct_type_index: t, field_index: f, .. } => {
                let field = self.struct_field(t, f, false);
                let args = self.atomic_args(2);
                self.emit(Instr::StructAtomic { op: ObjAtomicOp::Set, dst: 0, args, field });
            }
            O::StructAtomicRmwAdd { struct_type_index: t, field_index: f, .. } => self.struct_rmw(t, f, RmwOp::Add, v),
            O::StructAtomicRmwSub { struct_type_index: t, field_index: f, .. } => self.struct_rmw(t, f, RmwOp::Sub, v),
            O::StructAtomicRmwAnd { struct_type_index: t, field_index: f, .. } => self.struct_rmw(t, f, RmwOp::And, v),
            O::StructAtomicRmwOr { struct_type_index: t, field_index: f, .. } => self.struct_rmw(t, f, RmwOp::Or, v),
            O::StructAtomicRmwXor { struct_type_index: t, field_index: f, .. } => self.struct_rmw(t, f, RmwOp::Xor, v),
            O::StructAtomicRmwXchg { struct_type_index: t, field_index: f, .. } => {
                self.struct_rmw(t, f, RmwOp::Xchg, v)
            }
            O::StructAtomicRmwCmpxchg { struct_type_index: t, field_index: f, .. } => {
                let field = self.struct_field(t, f, false);
                self.struct_atomic(ObjAtomicOp::Cmpxchg, 3, field, Self::result_is_ref(v, 0))
            }
            O::ArrayAtomicGet { array_type_index: t, .. } | O::ArrayAtomicGetU { array_type_index: t, .. } => {
                let access = self.array_access(t, false);
                self.array_atomic(ObjAtomicOp::Get, 2, access, Self::result_is_ref(v, 0))
            }
            O::ArrayAtomicGetS { array_type_index: t, .. } => {
                let access = self.array_access(t, true);
                self.array_atomic(ObjAtomicOp::Get, 2, access, false)
            }
            O::ArrayAtomicSet { array_type_index: t, .. } => {
                let access = self.array_access(t, false);
                let args = self.atomic_args(3);
                self.emit(Instr::ArrayAtomic { op: ObjAtomicOp::Set, dst: 0, args, access });
            }
            O::ArrayAtomicRmwAdd { array_type_index: t, .. } => self.array_rmw(t, RmwOp::Add, v),
            O::ArrayAtomicRmwSub { array_type_index: t, .. } => self.array_rmw(t, RmwOp::Sub, v),
            O::ArrayAtomicRmwAnd { array_type_index: t, .. } => self.array_rmw(t, RmwOp::And, v),
            O::ArrayAtomicRmwOr { array_type_index: t, .. } => self.array_rmw(t, RmwOp::Or, v),
            O::ArrayAtomicRmwXor { array_type_index: t, .. } => self.array_rmw(t, RmwOp::Xor, v),
            O::ArrayAtomicRmwXchg { array_type_index: t, .. } => self.array_rmw(t, RmwOp::Xchg, v),
            O::ArrayAtomicRmwCmpxchg { array_type_index: t, .. } => {
                let access = self.array_access(t, false);
                self.array_atomic(ObjAtomicOp::Cmpxchg, 4, access, Self::result_is_ref(v, 0))
            }
            O::GlobalGet { global_index: g } if self.is_shared(g) => {
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit(Instr::GlobalGetShared { dst, global: g });
                self.race_global(g, RaceHook::READ);
            }
            O::GlobalAtomicGet { global_index: g, .. } if self.is_shared(g) => {
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit(Instr::GlobalGetShared { dst, global: g });
                self.race_global(g, RaceHook::ACQUIRE | RaceHook::READ | RaceHook::ATOMIC);
            }
            O::GlobalSet { global_index: g } if self.is_shared(g) => {
                let src = self.pop_slot();
                self.emit(Instr::GlobalSetShared { global: g, src });
                self.race_global(g, RaceHook::WRITE);
            }
            O::GlobalAtomicSet { global_index: g, .. } if self.is_shared(g) => {
                let src = self.pop_slot();
                self.race_global(g, RaceHook::RELEASE);
                self.emit(Instr::GlobalSetShared { global: g, src });
                self.race_global(g, RaceHook::WRITE | RaceHook::ATOMIC);
            }
            // Atomics on a global that is not shared: no other thread sees it, so plain accesses do.
            O::GlobalAtomicGet { global_index: g, .. } => {
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit(Instr::GlobalGet { dst, global: g });
            }
            O::GlobalAtomicSet { global_index: g, .. } => {
                let src = self.pop_slot();
                self.emit(Instr::GlobalSet { global: g, src });
            }
            O::GlobalAtomicRmwAdd { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::Add), 1, v),
            O::GlobalAtomicRmwSub { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::Sub), 1, v),
            O::GlobalAtomicRmwAnd { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::And), 1, v),
            O::GlobalAtomicRmwOr { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::Or), 1, v),
            O::GlobalAtomicRmwXor { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::Xor), 1, v),
            O::GlobalAtomicRmwXchg { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Rmw(RmwOp::Xchg), 1, v),
            O::GlobalAtomicRmwCmpxchg { global_index: g, .. } => self.global_rmw(g, ObjAtomicOp::Cmpxchg, 2, v),
            // `ref.i31_shared`: the same unboxed representation as `ref.i31`.
            O::RefI31Shared => {
                let src = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit(Instr::RefI31 { dst, src });
            }
            // ---- `--race` hooks before plain accesses of shared objects; the access is `mod.rs`'s
            O::StructGet { struct_type_index: t, field_index: f }
            | O::StructGetS { struct_type_index: t, field_index: f }
            | O::StructGetU { struct_type_index: t, field_index: f }
                if self.race_hooked_type(t) =>
            {
                let field = self.struct_field(t, f, false);
                let obj = self.materialize_top(1);
                self.emit(Instr::RaceField { write: false, obj, field });
                return false;
            }
            O::StructSet { struct_type_index: t, field_index: f } if self.race_hooked_type(t) => {
                let field = self.struct_field(t, f, false);
                let obj = self.materialize_top(2);
                self.emit(Instr::RaceField { write: true, obj, field });
                return false;
            }
            O::ArrayGet { array_type_index: t }
            | O::ArrayGetS { array_type_index: t }
            | O::ArrayGetU { array_type_index: t }
                if self.race_hooked_type(t) =>
            {
                let access = self.array_access(t, false);
                let args = self.materialize_top(2);
                self.emit(Instr::RaceElem { write: false, args, access });
                return false;
            }
            O::ArraySet { array_type_index: t } if self.race_hooked_type(t) => {
                let access = self.array_access(t, false);
                let args = self.materialize_top(3);
                self.emit(Instr::RaceElem { write: true, args, access });
                return false;
            }
            // ---- bulk operations on shared arrays under `--race`: the operation, then its ranges
            O::ArrayFill { array_type_index: t } if self.race_hooked_type(t) => {
                let access = self.array_access(t, false);
                let args = self.atomic_args(4);
                self.emit(Instr::ArrayFill { args, access });
                self.emit(Instr::RaceRange { write: true, args, len: args + 3, access });
            }
            O::ArrayCopy { array_type_index_dst: d, array_type_index_src: s }
                if self.race_hooked_type(d) || self.race_hooked_type(s) =>
            {
                let (dst_access, src_access) = (self.array_access(d, false), self.array_access(s, false));
                let args = self.atomic_args(5);
                self.emit(Instr::ArrayCopy { args, dst_access, src_access });
                if self.race_hooked_type(s) {
                    self.emit(Instr::RaceRange { write: false, args: args + 2, len: args + 4, access: src_access });
                }
                if self.race_hooked_type(d) {
                    self.emit(Instr::RaceRange { write: true, args, len: args + 4, access: dst_access });
                }
            }
            O::ArrayInitData { array_type_index: t, array_data_index: data } if self.race_hooked_type(t) => {
                let access = self.array_access(t, false);
                let args = self.atomic_args(4);
                self.emit(Instr::ArrayInitData { args, access, data });
                self.emit(Instr::RaceRange { write: true, args, len: args + 3, access });
            }
            O::ArrayInitElem { array_type_index: t, array_elem_index: elem } if self.race_hooked_type(t) => {
                let access = self.array_access(t, false);
                let args = self.atomic_args(4);
                self.emit(Instr::ArrayInitElem { args, access, elem });
                self.emit(Instr::RaceRange { write: true, args, len: args + 3, access });
            }
            _ => return false,
        }
        true
    }

    /// Is global `g` declared `shared`?
    fn is_shared(&self, g: u32) -> bool {
        self.env.shared_globals.get(g as usize).copied().unwrap_or(false)
    }

    /// `--race` and `g` is a mutable shared global: emit the hook with [`RaceHook`] bits `what`.
    fn race_global(&mut self, g: u32, what: u32) {
        if self.env.race_globals.get(g as usize).copied().unwrap_or(false) {
            self.emit(Instr::RaceGlobal { what: what as u8, global: g });
        }
    }

    /// `--race` and module type `t` is a shared struct or array type.
    fn race_hooked_type(&self, t: u32) -> bool {
        self.env.race && self.env.registry.get(self.env.type_ids[t as usize]).shared
    }

    /// The top `n` operands made contiguous and popped; returns the first slot.
    fn atomic_args(&mut self, n: usize) -> Slot {
        let args = self.materialize_top(n);
        self.stack.truncate(self.stack.len() - n);
        args
    }

    fn struct_atomic(&mut self, op: ObjAtomicOp, n: usize, field: u32, is_ref: bool) {
        let args = self.atomic_args(n);
        let dst = self.push_temp(is_ref);
        self.emit(Instr::StructAtomic { op, dst, args, field });
    }

    fn struct_rmw(&mut self, t: u32, f: u32, op: RmwOp, v: &FuncValidator<ValidatorResources>) {
        let field = self.struct_field(t, f, false);
        self.struct_atomic(ObjAtomicOp::Rmw(op), 2, field, Self::result_is_ref(v, 0));
    }

    fn array_atomic(&mut self, op: ObjAtomicOp, n: usize, access: u32, is_ref: bool) {
        let args = self.atomic_args(n);
        let dst = self.push_temp(is_ref);
        self.emit(Instr::ArrayAtomic { op, dst, args, access });
    }

    fn array_rmw(&mut self, t: u32, op: RmwOp, v: &FuncValidator<ValidatorResources>) {
        let access = self.array_access(t, false);
        self.array_atomic(ObjAtomicOp::Rmw(op), 3, access, Self::result_is_ref(v, 0));
    }

    /// `global.atomic.rmw.*` with `n` operands; the width is the global's (the result's) type's.
    fn global_rmw(&mut self, g: u32, op: ObjAtomicOp, n: usize, v: &FuncValidator<ValidatorResources>) {
        let width = match v.get_operand_type(0) {
            Some(Some(ValType::I32)) => 4,
            _ => 8,
        };
        let args = self.atomic_args(n);
        let dst = self.push_temp(Self::result_is_ref(v, 0));
        self.emit(Instr::GlobalAtomic { op, width, dst, args, global: g });
    }
}
