//! The public embedding API: a [`Store`] (one thread's mutator and entities on a shared [`Runtime`]), the
//! [`Linker`] imports resolve against, and the host/slot value conversions.
//!
//! A store is the single-thread facade: `Store::new(config)` makes a runtime of its own, and
//! [`Store::with_runtime`] makes another store on an existing runtime (another thread's mutator on the same
//! heap, types and modules). The state lives in a boxed `StoreState` (`state.rs`) that never moves.

use std::sync::Arc;

use crate::module::{GlobalDesc, TableDesc};
use crate::runtime::{Config, ModuleId, Runtime};
use crate::state::{FuncEntity, FuncKind, GlobalEntity, HostFn, MemoryEntity, StoreState, TableEntity, WASM_PAGE_SIZE};
use crate::types::{RtHeapType, RtValType, TypeKind, TypeRegistry};
use crate::values::{ref_from_raw, ref_to_raw};
use crate::{Error, Func, FuncType, Global, Memory, Ref, Source, Table, Trap, TrapKind, Val, ValType};

/// An instance: an index into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId(pub(crate) u32);

/// An exported or importable entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extern {
    Func(Func),
    Global(Global),
    Table(Table),
    Memory(Memory),
}

/// Name → entity definitions that imports resolve against.
#[derive(Default)]
pub struct Linker {
    defs: std::collections::HashMap<(String, String), Extern>,
}

impl Linker {
    pub fn new() -> Linker {
        Linker::default()
    }
    /// Define `module`.`name`.
    pub fn define(&mut self, module: &str, name: &str, item: Extern) {
        self.defs.insert((module.to_string(), name.to_string()), item);
    }
    /// Define every export of `instance` under module name `module` (spec `register`, `--preload`).
    pub fn define_instance(&mut self, store: &Store, module: &str, instance: InstanceId) {
        for (name, item) in store.exports(instance) {
            self.define(module, &name, item);
        }
    }
    pub fn get(&self, module: &str, name: &str) -> Option<Extern> {
        self.defs.get(&(module.to_string(), name.to_string())).copied()
    }
}

/// One thread's view of a runtime: its mutator and the entities its instances created. See the module comment.
pub struct Store {
    pub(crate) s: Box<StoreState>,
}

impl Store {
    /// A store on a runtime of its own.
    pub fn new(config: Config) -> Store {
        Store::with_runtime(Runtime::new(config))
    }

    /// Another store (a mutator of its own) on `rt`: it shares the heap, the types and the loaded modules.
    pub fn with_runtime(rt: Arc<Runtime>) -> Store {
        Store { s: Box::new(StoreState::new(rt)) }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.s.rt
    }

    /// Sends every allocation and free, with sites, type names and heap snapshots, to `tracer` until
    /// [`Store::finish_trace`]. Types of the modules loaded so far are defined to it at once.
    pub fn trace_allocations(&mut self, tracer: Arc<vmtrace::Tracer>) {
        let s = &mut *self.s;
        let m = &s.mutator;
        let tracing = crate::tracing::AllocTracing::attach(tracer, &s.rt.heap, &m.cache, m.exec.stack.extent());
        for module in s.rt.modules() {
            tracing.define_types(&module, &s.rt.types);
        }
        s.mutator.alloc.tracing = Some(tracing);
    }

    /// Closes the trace started by [`Store::trace_allocations`] (a final heap snapshot, then flush); `None`
    /// if none was started. Later heap events are not traced.
    pub fn finish_trace(&mut self) -> Option<std::io::Result<vmtrace::TraceStats>> {
        let tracing = self.s.mutator.alloc.tracing.take()?;
        Some(tracing.finish(&self.s.rt.heap))
    }

    /// Heap statistics so far.
    pub fn gc_stats(&mut self) -> gc::GcStats {
        self.s.rt.heap.stats_for(&mut self.s.mutator.cache)
    }

    /// Run a full collection now (for tests and host tools).
    pub fn collect_garbage(&mut self) {
        crate::gcglue::collect(&mut self.s);
    }

    /// Decode, validate and translate a module (into the runtime: every store of it can instantiate it).
    pub fn load_module(&mut self, source: Source) -> Result<ModuleId, Error> {
        let id = self.s.rt.load_module(source)?;
        if let Some(t) = &self.s.mutator.alloc.tracing {
            t.define_types(&self.s.rt.module(id), &self.s.rt.types);
        }
        Ok(id)
    }

    /// The imports a module needs, as (module, name).
    pub fn module_imports(&self, module: ModuleId) -> Vec<(String, String)> {
        self.s.rt.module(module).imports.iter().map(|i| (i.module.clone(), i.name.clone())).collect()
    }

    /// Link and instantiate; runs active segments and the start function.
    pub fn instantiate(&mut self, module: ModuleId, linker: &Linker) -> Result<InstanceId, Error> {
        self.s.instantiate(module, linker)
    }

    pub fn get_export(&self, instance: InstanceId, name: &str) -> Option<Extern> {
        self.s.instances[instance.0 as usize].exports.iter().find(|(n, _)| n == name).map(|(_, e)| *e)
    }

    /// All exports in definition order.
    pub fn exports(&self, instance: InstanceId) -> Vec<(String, Extern)> {
        self.s.instances[instance.0 as usize].exports.clone()
    }

    pub fn func_type(&self, func: Func) -> FuncType {
        let ty = self.s.funcs[func.0 as usize].ty;
        match &self.s.rt.types.get(ty).kind {
            TypeKind::Func { params, results } => FuncType {
                params: params.iter().map(|t| self.to_val_type(*t)).collect(),
                results: results.iter().map(|t| self.to_val_type(*t)).collect(),
            },
            _ => unreachable!("functions have function types"),
        }
    }

    fn to_val_type(&self, t: RtValType) -> ValType {
        use wasmparser::{AbstractHeapType as A, HeapType, RefType};
        match t {
            RtValType::I32 => ValType::I32,
            RtValType::I64 => ValType::I64,
            RtValType::F32 => ValType::F32,
            RtValType::F64 => ValType::F64,
            RtValType::V128 => ValType::V128,
            RtValType::Ref { nullable, heap } => {
                let abs = |ty| HeapType::Abstract { shared: false, ty };
                let ht = match heap {
                    RtHeapType::Any => abs(A::Any),
                    RtHeapType::Eq => abs(A::Eq),
                    RtHeapType::I31 => abs(A::I31),
                    RtHeapType::Struct => abs(A::Struct),
                    RtHeapType::Array => abs(A::Array),
                    RtHeapType::None => abs(A::None),
                    RtHeapType::Func => abs(A::Func),
                    RtHeapType::NoFunc => abs(A::NoFunc),
                    RtHeapType::Extern => abs(A::Extern),
                    RtHeapType::NoExtern => abs(A::NoExtern),
                    RtHeapType::Exn => abs(A::Exn),
                    RtHeapType::NoExn => abs(A::NoExn),
                    // Concrete types are shown by their hierarchy's top to the host.
                    RtHeapType::Concrete(_) => match heap.top(&self.s.rt.types) {
                        RtHeapType::Func => abs(A::Func),
                        _ => abs(A::Any),
                    },
                };
                ValType::Ref(RefType::new(nullable, ht).expect("abstract reference types always encode"))
            }
        }
    }

    /// Call a function. Arguments must match its type (checked: a mismatch is a `Host` trap).
    pub fn call(&mut self, func: Func, args: &[Val]) -> Result<Vec<Val>, Trap> {
        let ty = self.s.funcs[func.0 as usize].ty;
        let (params, results) = match &self.s.rt.types.get(ty).kind {
            TypeKind::Func { params, results } => (params.clone(), results.clone()),
            _ => unreachable!("functions have function types"),
        };
        if args.len() != params.len() {
            return Err(Trap::new(TrapKind::Host(format!("expected {} arguments, got {}", params.len(), args.len()))));
        }
        let mut raw = Vec::with_capacity(args.len());
        for (a, p) in args.iter().zip(params.iter()) {
            let ok = matches!(
                (a, p),
                (Val::I32(_), RtValType::I32)
                    | (Val::I64(_), RtValType::I64)
                    | (Val::F32(_), RtValType::F32)
                    | (Val::F64(_), RtValType::F64)
                    | (Val::Ref(_), RtValType::Ref { .. })
            );
            if !ok {
                return Err(Trap::new(TrapKind::Host(format!("argument {a:?} does not match parameter type {p:?}"))));
            }
            if let (Val::Ref(Ref::Null), RtValType::Ref { nullable: false, .. }) = (a, p) {
                return Err(Trap::new(TrapKind::Host("null passed for a non-nullable reference".into())));
            }
            raw.push(val_to_raw(*a));
        }
        let out = crate::interp::invoke(&mut self.s, func.0, &raw)?;
        Ok(out.iter().zip(results.iter()).map(|(&r, &t)| raw_to_val(&self.s.rt.types, r, t)).collect())
    }

    pub fn new_host_func(&mut self, ty: FuncType, f: HostFn) -> Func {
        let type_id = self.s.rt.intern_func_type(&ty);
        self.s.funcs.push(FuncEntity { ty: type_id, kind: FuncKind::Host(Arc::new(f)) });
        Func(self.s.funcs.len() as u32 - 1)
    }

    pub fn new_global(&mut self, ty: wasmparser::GlobalType, init: Val) -> Global {
        let desc = GlobalDesc { ty: self.rt_val_type(ty.content_type), mutable: ty.mutable };
        self.s.globals.push(GlobalEntity { value: val_to_raw(init), desc });
        Global(self.s.globals.len() as u32 - 1)
    }

    fn rt_val_type(&self, t: ValType) -> RtValType {
        match t {
            ValType::I32 => RtValType::I32,
            ValType::I64 => RtValType::I64,
            ValType::F32 => RtValType::F32,
            ValType::F64 => RtValType::F64,
            ValType::V128 => RtValType::V128,
            ValType::Ref(r) => {
                let heap = match r.heap_type() {
                    wasmparser::HeapType::Abstract { ty, .. } => {
                        use wasmparser::AbstractHeapType as A;
                        match ty {
                            A::Any => RtHeapType::Any,
                            A::Eq => RtHeapType::Eq,
                            A::I31 => RtHeapType::I31,
                            A::Struct => RtHeapType::Struct,
                            A::Array => RtHeapType::Array,
                            A::None => RtHeapType::None,
                            A::Func => RtHeapType::Func,
                            A::NoFunc => RtHeapType::NoFunc,
                            A::Extern => RtHeapType::Extern,
                            A::NoExtern => RtHeapType::NoExtern,
                            A::Exn => RtHeapType::Exn,
                            A::NoExn => RtHeapType::NoExn,
                            A::Cont | A::NoCont => RtHeapType::None,
                        }
                    }
                    _ => RtHeapType::Any,
                };
                RtValType::Ref { nullable: r.is_nullable(), heap }
            }
        }
    }

    pub fn global_get(&self, g: Global) -> Val {
        let e = &self.s.globals[g.0 as usize];
        raw_to_val(&self.s.rt.types, e.value, e.desc.ty)
    }

    /// A table of `ty.initial` null elements.
    pub fn new_table(&mut self, ty: wasmparser::TableType) -> Table {
        let RtValType::Ref { nullable, heap } = self.rt_val_type(ValType::Ref(ty.element_type)) else {
            unreachable!("table element types are reference types")
        };
        let desc = TableDesc { nullable, heap, min: ty.initial, max: ty.maximum };
        self.s.tables.push(TableEntity { elems: vec![0; ty.initial as usize], desc });
        Table(self.s.tables.len() as u32 - 1)
    }

    pub fn new_memory(&mut self, ty: wasmparser::MemoryType) -> Memory {
        let max_pages = ty.maximum.unwrap_or(u32::MAX as u64 + 1);
        self.s.memories.push(MemoryEntity { data: vec![0; (ty.initial * WASM_PAGE_SIZE) as usize], max_pages });
        Memory(self.s.memories.len() as u32 - 1)
    }
}

/// Host value → slot bits.
pub(crate) fn val_to_raw(v: Val) -> u64 {
    match v {
        Val::I32(x) => x as u32 as u64,
        Val::I64(x) => x as u64,
        Val::F32(x) => x as u64,
        Val::F64(x) => x,
        Val::Ref(r) => ref_to_raw(r),
    }
}

/// Slot bits → host value, given the static type.
pub(crate) fn raw_to_val(registry: &TypeRegistry, raw: u64, t: RtValType) -> Val {
    match t {
        RtValType::I32 => Val::I32(raw as u32 as i32),
        RtValType::I64 => Val::I64(raw as i64),
        RtValType::F32 => Val::F32(raw as u32),
        RtValType::F64 | RtValType::V128 => Val::F64(raw),
        RtValType::Ref { .. } => Val::Ref(match ref_from_raw(raw) {
            Ref::Struct(a) => match registry.get(crate::gcglue::object_type(a)).kind {
                TypeKind::Array { .. } => Ref::Array(a),
                _ => Ref::Struct(a),
            },
            r => r,
        }),
    }
}
