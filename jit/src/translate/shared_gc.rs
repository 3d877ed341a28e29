//! Shared-everything threads in compiled code: `struct.atomic.*`, `array.atomic.*` and `global.atomic.*`
//! inline, and the `--race` hooks of fields and elements of shared objects and of shared globals.
//!
//! **Atomics are Cranelift's atomic instructions on the field's address** (sequentially consistent, as
//! the interpreter's `gc::ObjRef::atomic_*` and the global's `AtomicU64` are): fields are naturally
//! aligned (multiples of their size; elements after the 8-byte header), so no alignment check exists.
//! The checks come in the interpreter's order: null, then for arrays the bounds. Packed fields act on
//! their low bytes; what a read returns is zero-extended, or sign-extended for `get_s`. A shared global's
//! address is its runtime-wide cell (`VmCtx::globals`); an unshared global's atomics are plain, as no
//! other thread sees it (the interpreter does the same).
//!
//! **`--race`** calls [`vm::tier::MemLibcalls::race_object`] with the interpreter's bits and order: an
//! atomic that writes releases its address before the operation; after it, the access (atomic read or
//! write) and, for one that read, the acquire. A plain access of a shared struct field or array element
//! is a read or write after the access (`gc.rs` calls [`FuncTranslator::field_race_hook`]); a mutable
//! shared global's hook passes the global's index ([`RaceHook::GLOBAL`]) so the report names it. Without
//! `--race` nothing is emitted.

use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, MemFlagsData, Type, Value, types};
use vm::tier::{RaceHook, TrapCode, Unsupported};
use vm::types::{RtValType, StorageKind};
use wasmparser::Operator;

use super::FuncTranslator;
use super::atomics::{Atomic, access_type, rmw_value};
use crate::abi::{self, clif_type, trusted};

use types::{I32, I64};

/// Where an atomic acts: a field or element of `obj` at `addr`, or a shared global.
#[derive(Clone, Copy)]
enum Target {
    Object { obj: Value, addr: Value },
    Global { index: u32, addr: Value },
}

impl FuncTranslator<'_, '_> {
    /// The shared-everything atomics; false if `op` is none of them.
    pub(super) fn shared_gc_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use AtomicRmwOp::{Add, And, Or, Sub, Xchg, Xor};
        use Operator as O;
        match *op {
            O::StructAtomicGet { struct_type_index: t, field_index: f, .. }
            | O::StructAtomicGetU { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Load, false, offset)
            }
            O::StructAtomicGetS { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Load, true, offset)
            }
            O::StructAtomicSet { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Store, false, offset)
            }
            O::StructAtomicRmwAdd { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(Add), false, offset)
            }
            O::StructAtomicRmwSub { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(Sub), false, offset)
            }
            O::StructAtomicRmwAnd { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(And), false, offset)
            }
            O::StructAtomicRmwOr { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(Or), false, offset)
            }
            O::StructAtomicRmwXor { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(Xor), false, offset)
            }
            O::StructAtomicRmwXchg { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Rmw(Xchg), false, offset)
            }
            O::StructAtomicRmwCmpxchg { struct_type_index: t, field_index: f, .. } => {
                self.struct_atomic(t, f, Atomic::Cmpxchg, false, offset)
            }
            O::ArrayAtomicGet { array_type_index: t, .. } | O::ArrayAtomicGetU { array_type_index: t, .. } => {
                self.array_atomic(t, Atomic::Load, false, offset)
            }
            O::ArrayAtomicGetS { array_type_index: t, .. } => self.array_atomic(t, Atomic::Load, true, offset),
            O::ArrayAtomicSet { array_type_index: t, .. } => self.array_atomic(t, Atomic::Store, false, offset),
            O::ArrayAtomicRmwAdd { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(Add), false, offset),
            O::ArrayAtomicRmwSub { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(Sub), false, offset),
            O::ArrayAtomicRmwAnd { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(And), false, offset),
            O::ArrayAtomicRmwOr { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(Or), false, offset),
            O::ArrayAtomicRmwXor { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(Xor), false, offset),
            O::ArrayAtomicRmwXchg { array_type_index: t, .. } => self.array_atomic(t, Atomic::Rmw(Xchg), false, offset),
            O::ArrayAtomicRmwCmpxchg { array_type_index: t, .. } => {
                self.array_atomic(t, Atomic::Cmpxchg, false, offset)
            }
            O::GlobalAtomicGet { global_index: g, .. } => self.global_atomic(g, Atomic::Load, offset)?,
            O::GlobalAtomicSet { global_index: g, .. } => self.global_atomic(g, Atomic::Store, offset)?,
            O::GlobalAtomicRmwAdd { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(Add), offset)?,
            O::GlobalAtomicRmwSub { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(Sub), offset)?,
            O::GlobalAtomicRmwAnd { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(And), offset)?,
            O::GlobalAtomicRmwOr { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(Or), offset)?,
            O::GlobalAtomicRmwXor { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(Xor), offset)?,
            O::GlobalAtomicRmwXchg { global_index: g, .. } => self.global_atomic(g, Atomic::Rmw(Xchg), offset)?,
            O::GlobalAtomicRmwCmpxchg { global_index: g, .. } => self.global_atomic(g, Atomic::Cmpxchg, offset)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `struct.atomic.*` on field `f` of the module's struct type `t`.
    fn struct_atomic(&mut self, t: u32, f: u32, kind: Atomic, signed: bool, offset: u32) {
        let field = self.input.struct_fields(t)[f as usize];
        let ops = self.pop_n(operand_count(kind));
        let obj = self.pop();
        self.null_check(obj, TrapCode::NullStructReference, offset);
        let addr = self.b.ins().iadd_imm_s(obj, field.offset as i64);
        self.atomic_at(Target::Object { obj, addr }, kind, field.kind, signed, &ops, offset);
    }

    /// `array.atomic.*` on an element of the module's array type `t`.
    fn array_atomic(&mut self, t: u32, kind: Atomic, signed: bool, offset: u32) {
        let (storage, _) = self.input.array_elem(t);
        let ops = self.pop_n(operand_count(kind));
        let index = self.pop();
        let obj = self.pop();
        let addr = self.element_address(obj, index, storage, offset);
        self.atomic_at(Target::Object { obj, addr }, kind, storage, signed, &ops, offset);
    }

    /// `global.atomic.*` on global `g`: atomic on a shared global's cell, plain on an unshared one.
    fn global_atomic(&mut self, g: u32, kind: Atomic, offset: u32) -> Result<(), Unsupported> {
        let (rt, _) = self.input.global(g);
        let ty = clif_type(rt)?;
        let storage = if ty == I32 { StorageKind::B32 } else { StorageKind::B64 };
        if ty.is_float() {
            return Err(Unsupported::new("an atomic on a float global"));
        }
        let addr = self.global_address(g);
        if self.input.global_shared(g) {
            let ops = self.pop_n(operand_count(kind));
            self.atomic_at(Target::Global { index: g, addr }, kind, storage, false, &ops, offset);
            if abi::is_ref(rt) && matches!(kind, Atomic::Load | Atomic::Rmw(_) | Atomic::Cmpxchg) {
                let v = *self.stack.last().expect("just pushed");
                self.declare_ref(v);
            }
            return Ok(());
        }
        match kind {
            Atomic::Load => {
                let v = self.b.ins().load(ty, trusted(), addr, 0);
                self.push_maybe_ref(v, rt);
            }
            Atomic::Store => {
                let v = self.pop();
                self.b.ins().store(trusted(), v, addr, 0);
            }
            Atomic::Rmw(op) => {
                let v = self.pop();
                let old = self.b.ins().load(ty, trusted(), addr, 0);
                let new = rmw_value(self, op, old, v);
                self.b.ins().store(trusted(), new, addr, 0);
                self.push_maybe_ref(old, rt);
            }
            Atomic::Cmpxchg => {
                let ops = self.pop_n(2);
                let old = self.b.ins().load(ty, trusted(), addr, 0);
                let same = self.b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::Equal, old, ops[0]);
                let new = self.b.ins().select(same, ops[1], old);
                self.b.ins().store(trusted(), new, addr, 0);
                self.push_maybe_ref(old, rt);
            }
        }
        Ok(())
    }

    fn push_maybe_ref(&mut self, v: Value, rt: RtValType) {
        if abi::is_ref(rt) {
            self.declare_ref(v);
        }
        self.push(v);
    }

    /// The atomic `kind` on a `storage` field, element or global at `target`, with its `--race` hooks;
    /// pushes what it read (extended to the wasm type).
    fn atomic_at(
        &mut self,
        target: Target,
        kind: Atomic,
        storage: StorageKind,
        signed: bool,
        ops: &[Value],
        offset: u32,
    ) {
        let width = storage.size();
        let writes = !matches!(kind, Atomic::Load);
        if writes {
            self.race_target(target, width, RaceHook::RELEASE, offset);
        }
        let aty = access_type(width);
        let ty: Type = if width == 8 { I64 } else { I32 };
        let narrow = |t: &mut Self, v: Value| if aty == ty { v } else { t.b.ins().ireduce(aty, v) };
        let addr = match target {
            Target::Object { addr, .. } | Target::Global { addr, .. } => addr,
        };
        let flags = MemFlagsData::trusted();
        let read = match kind {
            Atomic::Load => Some(self.b.ins().atomic_load(aty, flags, addr)),
            Atomic::Store => {
                let v = narrow(self, ops[0]);
                self.b.ins().atomic_store(flags, v, addr);
                None
            }
            Atomic::Rmw(op) => {
                let v = narrow(self, ops[0]);
                Some(self.b.ins().atomic_rmw(aty, flags, op, addr, v))
            }
            Atomic::Cmpxchg => {
                let (e, r) = (narrow(self, ops[0]), narrow(self, ops[1]));
                Some(self.b.ins().atomic_cas(flags, addr, e, r))
            }
        };
        if let Some(old) = read {
            let v = match (aty == ty, signed) {
                (true, _) => old,
                (false, true) => self.b.ins().sextend(ty, old),
                (false, false) => self.b.ins().uextend(ty, old),
            };
            if storage == StorageKind::Ref {
                self.declare_ref(v);
            }
            self.push(v);
        }
        let what = match kind {
            Atomic::Load => RaceHook::ACQUIRE | RaceHook::READ,
            Atomic::Store => RaceHook::WRITE,
            Atomic::Rmw(_) | Atomic::Cmpxchg => RaceHook::ACQUIRE | RaceHook::WRITE,
        };
        self.race_target(target, width, what | RaceHook::ATOMIC, offset);
    }

    /// `--race`: the hook with bits `what` on `target` (nothing without `--race` or for an unshared global).
    fn race_target(&mut self, target: Target, width: u32, what: u32, offset: u32) {
        if !self.input.race {
            return;
        }
        match target {
            Target::Object { obj, addr } => self.race_object_call(obj, addr, width, what, offset),
            // An immutable global is written before any thread sees it (the interpreter does not hook it).
            Target::Global { index, .. } if !self.input.global(index).1 => {}
            Target::Global { index, .. } => {
                let (zero, g) = (self.b.ins().iconst(I64, 0), self.b.ins().iconst(I64, index as i64));
                self.race_object_call(zero, g, width, what | RaceHook::GLOBAL, offset);
            }
        }
    }

    fn race_object_call(&mut self, obj: Value, addr: Value, width: u32, what: u32, offset: u32) {
        let consts = [width, what, self.input.func_index, offset];
        let [width, what, func, off] = consts.map(|c| self.b.ins().iconst(I32, c as i64));
        let fp = self.b.ins().get_frame_pointer(I64);
        self.call_vm(self.libcalls.mem.race_object, &[obj, addr, width, what, func, off, fp], None);
    }

    /// `--race`, after a plain access of `width` bytes at byte `field_offset` of the struct `obj` of the
    /// module's type `t`: a read or write, if `t` is shared.
    pub(super) fn field_race_hook(
        &mut self,
        t: u32,
        obj: Value,
        field_offset: i64,
        width: u32,
        write: bool,
        offset: u32,
    ) {
        if self.object_hooked(t) {
            let addr = self.b.ins().iadd_imm_s(obj, field_offset);
            let what = if write { RaceHook::WRITE } else { RaceHook::READ };
            self.race_object_call(obj, addr, width, what, offset);
        }
    }

    /// `--race`, after a plain access of the element at `addr` of the array `obj` of the module's type `t`.
    pub(super) fn element_race_hook(&mut self, t: u32, obj: Value, addr: Value, width: u32, write: bool, offset: u32) {
        if self.object_hooked(t) {
            let what = if write { RaceHook::WRITE } else { RaceHook::READ };
            self.race_object_call(obj, addr, width, what, offset);
        }
    }

    fn object_hooked(&self, t: u32) -> bool {
        self.input.race && self.input.is_shared_type(t) && !self.bugs.race_skip_object_hook
    }

    /// `--race`: the hook of a plain `global.get` (`write` false) or `global.set` of global `g`, if it is a
    /// mutable shared global (an immutable one is written before any thread sees it).
    pub(super) fn global_race_hook(&mut self, g: u32, write: bool, offset: u32) {
        let hooked = self.input.race && self.input.global_shared(g) && self.input.global(g).1;
        if hooked && !self.bugs.race_skip_object_hook {
            let what = if write { RaceHook::WRITE } else { RaceHook::READ };
            let addr = self.b.ins().iconst(I64, 0);
            self.race_target(Target::Global { index: g, addr }, 0, what, offset);
        }
    }
}

/// Operands an atomic takes besides its target.
fn operand_count(kind: Atomic) -> usize {
    match kind {
        Atomic::Load => 0,
        Atomic::Store | Atomic::Rmw(_) => 1,
        Atomic::Cmpxchg => 2,
    }
}
