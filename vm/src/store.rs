//! The public embedding API: a [`Store`] (one thread's mutator and entities on a shared [`Runtime`]), the
//! [`Linker`] imports resolve against, and the host/slot value conversions.
//!
//! A store is the single-thread facade: `Store::new(config)` makes a runtime of its own, and
//! [`Store::with_runtime`] makes another store on an existing runtime (another thread's mutator on the same
//! heap, types and modules). The state lives in a boxed `StoreState` (`state.rs`) that never moves.

use std::sync::Arc;

use crate::convert::{host_value_fits, raw_to_val, val_to_raw};
use crate::linker::Linker;
use crate::memory::LinearMemory;
use crate::module::{GlobalDesc, TableDesc};
use crate::runtime::{Config, ModuleId, Runtime};
use crate::state::{Caller, FuncEntity, FuncKind, GlobalEntity, HostFn, StoreState, TableEntity};
use crate::types::{RtHeapType, RtValType, TypeKind};
use crate::{
    Error, Extern, Func, FuncType, Global, InstanceId, Memory, Ref, Source, Table, Trap, TrapKind, Val, ValType,
};

impl Linker {
    /// Define every export of `instance` under module name `module` (spec `register`, `--preload`).
    pub fn define_instance(&mut self, store: &Store, module: &str, instance: InstanceId) {
        for (name, item) in store.exports(instance) {
            self.define(module, &name, item);
        }
    }
}

/// One thread's view of a runtime: its mutator and the entities its instances created. See the module comment.
pub struct Store {
    pub(crate) s: Box<StoreState>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Idle stores are native (`Store::with_runtime`); running again to release the heap's resources.
        self.s.mutator.link.leave_native();
        // An embedder that never called `finish_trace` still gets a complete file (errors have nowhere to go).
        let _ = crate::safepoint::finish_trace(&mut self.s);
        self.s.mutator.retire(&self.s.rt.heap);
        if let (Some(race), Some(ctx)) = (&self.s.rt.race, self.s.mutator.race.take()) {
            race.detector.exit(*ctx);
        }
    }
}

impl Store {
    /// A store on a runtime of its own.
    pub fn new(config: Config) -> Store {
        Store::with_runtime(Runtime::new(config))
    }

    /// Another store (a mutator of its own) on `rt`: it shares the heap, the types and the loaded modules.
    pub fn with_runtime(rt: Arc<Runtime>) -> Store {
        Store::on_thread(rt, None)
    }

    /// [`Store::with_runtime`] for a thread spawned by another, with the race context the spawn made.
    pub(crate) fn on_thread(rt: Arc<Runtime>, race: Option<Box<vmrace::ThreadCtx>>) -> Store {
        let mut s = Box::new(StoreState::new(rt, race));
        // A trace in progress on the runtime (another store's): this thread joins it.
        let active = s.rt.active_trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(tracer) = active {
            let m = &s.mutator;
            s.mutator.alloc.tracing = Some(crate::tracing::AllocTracing::join(tracer, &m.cache, &m.stacks()));
        }
        // Idle until a method needs the heap: a collection on another thread does not wait for this store.
        crate::safepoint::enter_native(&mut s);
        Store { s }
    }

    /// The store's state with its mutator running (see `safepoint::Running`).
    fn running(&mut self) -> crate::safepoint::Running<'_> {
        crate::safepoint::Running::new(&mut self.s)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.s.rt
    }

    /// `--race`: data races reported so far (0 without the detector).
    pub fn races_found(&self) -> usize {
        self.s.rt.race.as_ref().map_or(0, |r| r.races())
    }

    /// `--race-stats`: the detector's live state (`None` without it).
    pub fn race_stats(&self) -> Option<vmrace::Stats> {
        self.s.rt.race.as_ref().map(|r| r.detector.stats())
    }

    /// `--race`: allocation sites the detector keeps for reports (one per live object of a shared type).
    pub fn race_alloc_sites(&self) -> usize {
        self.s.rt.race.as_ref().map_or(0, |r| r.alloc_sites_kept())
    }

    /// `--race`: distinct access backtraces in the detector's stack depot.
    pub fn race_depot_stacks(&self) -> usize {
        self.s.rt.race.as_ref().map_or(0, |r| r.depot.len())
    }

    /// Sends every allocation and free, with sites, type names and heap snapshots, to `tracer` until
    /// [`Store::finish_trace`]. Types of the modules loaded so far are defined to it at once.
    pub fn trace_allocations(&mut self, tracer: Arc<vmtrace::Tracer>) {
        let mut s = self.running();
        let s = &mut *s;
        let m = &s.mutator;
        let tracing = crate::tracing::AllocTracing::attach(tracer.clone(), &s.rt.heap, &m.cache, &m.stacks());
        for module in s.rt.modules() {
            tracing.define_types(&module, &s.rt.types);
        }
        s.mutator.alloc.tracing = Some(tracing);
        *s.rt.active_trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tracer);
    }

    /// Closes the trace started by [`Store::trace_allocations`] (a final heap snapshot, then flush); `None`
    /// if none was started. Later heap events are not traced.
    pub fn finish_trace(&mut self) -> Option<std::io::Result<vmtrace::TraceStats>> {
        crate::safepoint::finish_trace(&mut self.running())
    }

    /// Heap statistics so far.
    pub fn gc_stats(&mut self) -> gc::GcStats {
        let mut s = self.running();
        let StoreState { rt, mutator, .. } = &mut *s;
        rt.heap.stats_for(&mut mutator.cache)
    }

    /// Run a full collection now (for tests and host tools).
    pub fn collect_garbage(&mut self) {
        let mut s = self.running();
        crate::safepoint::collect(&mut s);
    }

    /// Decode, validate and translate a module (into the runtime: every store of it can instantiate it).
    pub fn load_module(&mut self, source: Source) -> Result<ModuleId, Error> {
        let s = self.running();
        let id = s.rt.load_module(source)?;
        if let Some(t) = &s.mutator.alloc.tracing {
            t.define_types(&s.rt.module(id), &s.rt.types);
        }
        Ok(id)
    }

    /// The imports a module needs, as (module, name).
    pub fn module_imports(&self, module: ModuleId) -> Vec<(String, String)> {
        self.s.rt.module(module).imports.iter().map(|i| (i.module.clone(), i.name.clone())).collect()
    }

    /// Link and instantiate; runs active segments and the start function.
    pub fn instantiate(&mut self, module: ModuleId, linker: &Linker) -> Result<InstanceId, Error> {
        let mut s = self.running();
        s.instantiate(module, linker)
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
        call_checked(&mut self.running(), func, args)
    }

    pub fn new_host_func(&mut self, ty: FuncType, f: HostFn) -> Func {
        let mut s = self.running();
        let type_id = s.rt.intern_func_type(&ty);
        s.funcs.push(FuncEntity { ty: type_id, kind: FuncKind::Host(Arc::new(f)) });
        Func(s.funcs.len() as u32 - 1)
    }

    /// A global of type `ty` holding `init` (checked against the type: a mismatch is a `Host` trap).
    pub fn new_global(&mut self, ty: wasmparser::GlobalType, init: Val) -> Result<Global, Trap> {
        let desc = GlobalDesc { ty: self.rt_val_type(ty.content_type), mutable: ty.mutable, shared: ty.shared };
        let mut s = self.running();
        let value = val_to_raw(&s, init)?;
        if !host_value_fits(&s, &init, value, desc.ty) {
            return Err(Trap::new(TrapKind::Host(format!("{init:?} does not match the global's type"))));
        }
        s.push_global(GlobalEntity::new(value, desc));
        Ok(Global(s.globals.len() as u32 - 1))
    }

    /// Stop rooting the object behind a handle this store handed out (from [`Store::call`] or
    /// [`Store::global_get`]); later uses of the handle are errors. False if it was not a live handle.
    pub fn unroot(&mut self, r: Ref) -> bool {
        match r {
            Ref::Struct(h) | Ref::Array(h) | Ref::Exn(h) => self.running().mutator.handles.remove(h),
            _ => false,
        }
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

    /// The global's value; an object comes back as a handle rooted until [`Store::unroot`].
    pub fn global_get(&mut self, g: Global) -> Val {
        let mut s = self.running();
        let StoreState { rt, mutator, globals, .. } = &mut *s;
        let e = &globals[g.0 as usize];
        raw_to_val(&rt.types, &mut mutator.handles, e.load(), e.desc.ty)
    }

    /// A copy of a linear memory's committed bytes, for embedders that compare final states (the
    /// differential fuzzer in `fuzz/`). Shared memories are copied too; other threads may be writing them.
    pub fn memory_bytes(&self, mem: Memory) -> Vec<u8> {
        let m = &self.s.memories[mem.0 as usize];
        // SAFETY: `&self` means no call of this store is running, so nothing of this store writes the memory
        // while the slice lives; the bytes are copied out before the borrow ends.
        unsafe { m.as_slice() }.to_vec()
    }

    /// A table of `ty.initial` null elements.
    pub fn new_table(&mut self, ty: wasmparser::TableType) -> Table {
        let RtValType::Ref { nullable, heap } = self.rt_val_type(ValType::Ref(ty.element_type)) else {
            unreachable!("table element types are reference types")
        };
        let desc = TableDesc { nullable, heap, min: ty.initial, max: ty.maximum, shared: ty.shared };
        let mut s = self.running();
        s.tables.push(TableEntity::new(desc, ty.initial as usize, 0));
        Table(s.tables.len() as u32 - 1)
    }

    /// A memory of type `ty` (zeroed); fails if its size is invalid or its address space cannot be reserved.
    pub fn new_memory(&mut self, ty: wasmparser::MemoryType) -> Result<Memory, Error> {
        let mut s = self.running();
        let reserve = s.rt.config.memory_reservation_bytes;
        let mem = LinearMemory::new(ty.initial, ty.maximum, ty.shared, reserve)
            .map_err(|e| Error::Link(format!("cannot create memory: {e}")))?;
        s.memories.push(Arc::new(mem));
        Ok(Memory(s.memories.len() as u32 - 1))
    }
}

impl Caller<'_> {
    /// Call `func` from a host function (host → wasm nesting): the mutator runs again for the call, on the
    /// same native stack, and is native again when it returns.
    pub fn call(&mut self, func: crate::Func, args: &[Val]) -> Result<Vec<Val>, Trap> {
        self.state.mutator.link.leave_native();
        let result = call_checked(self.state, func, args);
        crate::safepoint::enter_native(self.state);
        result
    }
}

/// Call `func` with host values, checked against its type (a mismatch is a `Host` trap).
pub(crate) fn call_checked(s: &mut StoreState, func: Func, args: &[Val]) -> Result<Vec<Val>, Trap> {
    let ty = s.funcs[func.0 as usize].ty;
    let (params, results) = match &s.rt.types.get(ty).kind {
        TypeKind::Func { params, results } => (params.clone(), results.clone()),
        _ => unreachable!("functions have function types"),
    };
    if args.len() != params.len() {
        return Err(Trap::new(TrapKind::Host(format!("expected {} arguments, got {}", params.len(), args.len()))));
    }
    let mut raw = Vec::with_capacity(args.len());
    for (i, (a, &p)) in args.iter().zip(params.iter()).enumerate() {
        let r = val_to_raw(s, *a)?;
        if !host_value_fits(s, a, r, p) {
            return Err(Trap::new(TrapKind::Host(format!(
                "argument {} ({a:?}) does not match parameter type {p:?}",
                i + 1
            ))));
        }
        raw.push(r);
    }
    let out = crate::interp::invoke(s, func.0, &raw)?;
    let StoreState { rt, mutator, .. } = s;
    Ok(out.iter().zip(results.iter()).map(|(&r, &t)| raw_to_val(&rt.types, &mut mutator.handles, r, t)).collect())
}
