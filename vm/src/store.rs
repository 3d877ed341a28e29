//! The store: owner of every runtime entity, and instantiation.
//!
//! Entities (functions, memories, tables, globals, instances) live in vectors owned by the
//! [`Store`]; handles are indices. An instance maps its module's index spaces (imports first,
//! then definitions) to store indices, so a module's code is shared by all its instances and
//! imported entities are the exporter's own objects, not copies.

use crate::interp::ExecState;
use crate::module::{self, ConstOp, ExportKind, GlobalDesc, ImportDesc, ModuleData, SegmentMode, TableDesc};
use crate::types::{RtHeapType, RtValType, TypeKind, TypeRegistry, heap_subtype, val_subtype};
use crate::values::{ref_from_raw, ref_to_raw};
use crate::{Error, Func, FuncType, Global, Memory, Ref, Source, Table, Trap, TrapKind, Val, ValType};
use std::rc::Rc;

/// Wasm page size.
pub const PAGE_SIZE: u64 = 65536;

/// Runtime limits and GC policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Maximum number of nested wasm calls before `call stack exhausted`.
    pub max_call_depth: usize,
    /// Size of the value stack in 8-byte slots.
    pub value_stack_slots: usize,
    /// Heap policy and debug modes.
    pub gc: gc::HeapConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_call_depth: 50_000, value_stack_slots: 4 << 20, gc: gc::HeapConfig::default() }
    }
}

/// A loaded module: an index into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleId(pub(crate) u32);
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

/// A host function. It reads `params` and writes exactly `results.len()` results.
pub type HostFn = Box<dyn Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), Trap>>;

/// What a host function sees of the store: the calling instance's memory.
pub struct Caller<'a> {
    pub(crate) store: &'a mut Store,
    pub(crate) instance: Option<InstanceId>,
}

impl Caller<'_> {
    /// The calling instance's exported `memory` (or its memory 0), as bytes.
    pub fn memory(&mut self) -> Option<&mut [u8]> {
        let inst = &self.store.instances[self.instance?.0 as usize];
        let mem = match inst.exports.iter().find(|(n, _)| n == "memory") {
            Some((_, Extern::Memory(m))) => m.0,
            _ => *inst.memories.first()?,
        };
        Some(&mut self.store.memories[mem as usize].data[..])
    }
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

pub(crate) enum FuncKind {
    /// Defined function `index` of instance `instance`.
    Wasm {
        instance: u32,
        index: u32,
    },
    Host(Rc<HostFn>),
}

pub(crate) struct FuncEntity {
    /// Canonical type id.
    pub ty: u32,
    pub kind: FuncKind,
}

pub(crate) struct MemoryEntity {
    pub data: Vec<u8>,
    pub max_pages: u64,
}

pub(crate) struct TableEntity {
    pub elems: Vec<u64>,
    pub desc: TableDesc,
}

pub(crate) struct GlobalEntity {
    pub value: u64,
    pub desc: GlobalDesc,
}

pub(crate) struct Instance {
    pub module: Rc<ModuleData>,
    pub funcs: Vec<u32>,
    pub tables: Vec<u32>,
    pub memories: Vec<u32>,
    pub globals: Vec<u32>,
    /// Element segments (emptied by `elem.drop` and after active initialization).
    pub elems: Vec<Rc<[u64]>>,
    /// Data segments (emptied by `data.drop` and after active initialization).
    pub datas: Vec<Rc<[u8]>>,
    pub exports: Vec<(String, Extern)>,
}

/// Owner of all runtime state.
pub struct Store {
    pub(crate) config: Config,
    validator: wasmparser::Validator,
    pub(crate) registry: TypeRegistry,
    pub(crate) modules: Vec<Rc<ModuleData>>,
    pub(crate) instances: Vec<Instance>,
    pub(crate) funcs: Vec<FuncEntity>,
    pub(crate) memories: Vec<MemoryEntity>,
    pub(crate) tables: Vec<TableEntity>,
    pub(crate) globals: Vec<GlobalEntity>,
    /// The value stack (8-byte slots) and the frames of wasm calls in progress.
    pub(crate) exec: ExecState,
    /// The garbage-collected heap and this (only) mutator thread's allocation cache.
    pub(crate) heap: gc::Heap,
    pub(crate) cache: gc::ThreadCache,
    /// What allocating instructions need besides the heap.
    pub(crate) alloc: AllocState,
    /// References the host holds while it allocates (constant-expression operands).
    pub(crate) host_roots: Vec<u64>,
}

/// The interpreter's per-store allocation state, in one place so its cold path takes one pointer to it
/// (each extra pointer the dispatch loop hands to `cold_op` is one more value it keeps alive).
#[derive(Default)]
pub(crate) struct AllocState {
    /// Set after a collection so the re-executed allocation does not ask for another.
    pub gc_retry: bool,
    /// Set by [`Store::trace_allocations`].
    pub tracing: Option<crate::tracing::AllocTracing>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // An embedder that never called `finish_trace` still gets a complete file (errors have nowhere to go).
        if let Some(tracing) = self.alloc.tracing.take() {
            let _ = tracing.finish(&self.heap);
        }
        let (base, bytes) = self.exec.stack.extent();
        self.heap.notify_stack_free(&mut self.cache, base, bytes);
    }
}

impl Store {
    pub fn new(config: Config) -> Store {
        // The reservation is address space only (no swap reserved, pages appear when touched); failing to
        // map it means the process has no address space left, which no program could survive.
        let exec = ExecState::new(config.value_stack_slots)
            .unwrap_or_else(|e| panic!("cannot map the value stack ({} slots): {e}", config.value_stack_slots));
        let heap = gc::Heap::new(config.gc.clone());
        let mut cache = heap.new_thread_cache();
        let (stack_base, stack_bytes) = exec.stack.extent();
        heap.notify_stack_alloc(&mut cache, stack_base, stack_bytes);
        Store {
            config,
            validator: wasmparser::Validator::new_with_features(module::features()),
            registry: TypeRegistry::default(),
            modules: Vec::new(),
            instances: Vec::new(),
            funcs: Vec::new(),
            memories: Vec::new(),
            tables: Vec::new(),
            globals: Vec::new(),
            exec,
            heap,
            cache,
            alloc: AllocState::default(),
            host_roots: Vec::new(),
        }
    }

    /// Sends every allocation and free, with sites, type names and heap snapshots, to `tracer` until
    /// [`Store::finish_trace`]. Attach it before loading modules (types of modules loaded earlier are
    /// defined too, but their earlier allocations are only in the tracer's snapshots).
    pub fn trace_allocations(&mut self, tracer: std::sync::Arc<vmtrace::Tracer>) {
        let tracing = crate::tracing::AllocTracing::attach(tracer, &self.heap, &self.cache, self.exec.stack.extent());
        for m in &self.modules {
            tracing.define_types(m, &self.registry);
        }
        self.alloc.tracing = Some(tracing);
    }

    /// Closes the trace started by [`Store::trace_allocations`] (a final heap snapshot, then flush); `None`
    /// if none was started. Later heap events are not traced.
    pub fn finish_trace(&mut self) -> Option<std::io::Result<vmtrace::TraceStats>> {
        let tracing = self.alloc.tracing.take()?;
        Some(tracing.finish(&self.heap))
    }

    /// Heap statistics so far.
    pub fn gc_stats(&mut self) -> gc::GcStats {
        self.heap.stats_for(&mut self.cache)
    }

    /// Run a full collection now (for tests and host tools).
    pub fn collect_garbage(&mut self) {
        crate::gcglue::collect(self);
    }

    /// Decode, validate and translate a module.
    pub fn load_module(&mut self, source: Source) -> Result<ModuleId, Error> {
        let heap = &self.heap;
        let data = module::load(&mut self.validator, &mut self.registry, source, |id, info| {
            if let Some(layout) = crate::gcglue::layout_of(info) {
                heap.register_type(id, layout);
            }
        })?;
        if let Some(t) = &self.alloc.tracing {
            t.define_types(&data, &self.registry);
        }
        self.modules.push(Rc::new(data));
        Ok(ModuleId(self.modules.len() as u32 - 1))
    }

    /// The imports a module needs, as (module, name).
    pub fn module_imports(&self, module: ModuleId) -> Vec<(String, String)> {
        self.modules[module.0 as usize].imports.iter().map(|i| (i.module.clone(), i.name.clone())).collect()
    }

    /// The source a module was loaded from.
    pub fn module_source(&self, module: ModuleId) -> &Source {
        &self.modules[module.0 as usize].source
    }

    /// Link and instantiate; runs active segments and the start function.
    pub fn instantiate(&mut self, module: ModuleId, linker: &Linker) -> Result<InstanceId, Error> {
        let m = self.modules[module.0 as usize].clone();
        let mut inst = Instance {
            module: m.clone(),
            funcs: Vec::new(),
            tables: Vec::new(),
            memories: Vec::new(),
            globals: Vec::new(),
            elems: Vec::new(),
            datas: Vec::new(),
            exports: Vec::new(),
        };
        // ---- resolve imports
        for imp in &m.imports {
            let found = linker.get(&imp.module, &imp.name).ok_or_else(|| {
                Error::Link(format!("unknown import: `{}`.`{}` is not defined", imp.module, imp.name))
            })?;
            let incompatible = || Error::Link(format!("incompatible import type for `{}`.`{}`", imp.module, imp.name));
            match (&imp.desc, found) {
                (ImportDesc::Func(ty), Extern::Func(f)) => {
                    if !self.registry.is_subtype(self.funcs[f.0 as usize].ty, *ty) {
                        return Err(incompatible());
                    }
                    inst.funcs.push(f.0);
                }
                (ImportDesc::Table(want), Extern::Table(t)) => {
                    let have = &self.tables[t.0 as usize];
                    let size = have.elems.len() as u64;
                    let ok = size >= want.min
                        && match want.max {
                            None => true,
                            Some(wmax) => have.desc.max.is_some_and(|hmax| hmax <= wmax),
                        }
                        && have.desc.nullable == want.nullable
                        && heap_subtype(&self.registry, have.desc.heap, want.heap)
                        && heap_subtype(&self.registry, want.heap, have.desc.heap);
                    if !ok {
                        return Err(incompatible());
                    }
                    inst.tables.push(t.0);
                }
                (ImportDesc::Memory(want), Extern::Memory(mem)) => {
                    let have = &self.memories[mem.0 as usize];
                    let pages = have.data.len() as u64 / PAGE_SIZE;
                    let have_max = if have.max_pages == u32::MAX as u64 + 1 { None } else { Some(have.max_pages) };
                    let ok = pages >= want.min
                        && match want.max {
                            None => true,
                            Some(wmax) => have_max.is_some_and(|hmax| hmax <= wmax),
                        };
                    if !ok {
                        return Err(incompatible());
                    }
                    inst.memories.push(mem.0);
                }
                (ImportDesc::Global(want), Extern::Global(g)) => {
                    let have = &self.globals[g.0 as usize].desc;
                    let ok = have.mutable == want.mutable
                        && if want.mutable {
                            val_subtype(&self.registry, have.ty, want.ty)
                                && val_subtype(&self.registry, want.ty, have.ty)
                        } else {
                            val_subtype(&self.registry, have.ty, want.ty)
                        };
                    if !ok {
                        return Err(incompatible());
                    }
                    inst.globals.push(g.0);
                }
                _ => return Err(incompatible()),
            }
        }
        // ---- define functions (before globals: `ref.func` in initializers needs them)
        let inst_id = self.instances.len() as u32;
        for (i, _) in m.code.iter().enumerate() {
            let ty = m.func_types[m.num_imported_funcs as usize + i];
            self.funcs.push(FuncEntity { ty, kind: FuncKind::Wasm { instance: inst_id, index: i as u32 } });
            inst.funcs.push(self.funcs.len() as u32 - 1);
        }
        // The instance must exist for constant expressions (global.get) to resolve.
        self.instances.push(inst);
        let result = self.initialize(inst_id, &m);
        result?;
        Ok(InstanceId(inst_id))
    }

    fn initialize(&mut self, inst_id: u32, m: &Rc<ModuleData>) -> Result<(), Error> {
        let trap = |k: TrapKind| Error::Trap(Trap::new(k));
        // globals
        for (desc, init) in &m.globals {
            let value = self.eval_const(inst_id, init).map_err(Error::Trap)?;
            self.globals.push(GlobalEntity { value, desc: desc.clone() });
            let g = self.globals.len() as u32 - 1;
            self.instances[inst_id as usize].globals.push(g);
        }
        // memories
        for desc in &m.memories {
            let bytes = desc.min.checked_mul(PAGE_SIZE).filter(|&b| b <= isize::MAX as u64);
            let Some(bytes) = bytes else { return Err(trap(TrapKind::Host("memory too large".into()))) };
            let max_pages = desc.max.unwrap_or(u32::MAX as u64 + 1).min(u32::MAX as u64 + 1);
            self.memories.push(MemoryEntity { data: vec![0; bytes as usize], max_pages });
            let id = self.memories.len() as u32 - 1;
            self.instances[inst_id as usize].memories.push(id);
        }
        // tables
        for (desc, init) in &m.tables {
            let value = match init {
                Some(e) => self.eval_const(inst_id, e).map_err(Error::Trap)?,
                None => 0,
            };
            self.tables.push(TableEntity { elems: vec![value; desc.min as usize], desc: desc.clone() });
            let id = self.tables.len() as u32 - 1;
            self.instances[inst_id as usize].tables.push(id);
        }
        // exports
        let mut exports = Vec::new();
        {
            let inst = &self.instances[inst_id as usize];
            for (name, kind, index) in &m.exports {
                let i = *index as usize;
                let item = match kind {
                    ExportKind::Func => Extern::Func(Func(inst.funcs[i])),
                    ExportKind::Table => Extern::Table(Table(inst.tables[i])),
                    ExportKind::Memory => Extern::Memory(Memory(inst.memories[i])),
                    ExportKind::Global => Extern::Global(Global(inst.globals[i])),
                    ExportKind::Tag => continue,
                };
                exports.push((name.clone(), item));
            }
        }
        self.instances[inst_id as usize].exports = exports;
        // segments: evaluate element items, keep data bytes
        let mut elems = Vec::new();
        for seg in &m.elems {
            let mut items = Vec::with_capacity(seg.items.len());
            for e in &seg.items {
                items.push(self.eval_const(inst_id, e).map_err(Error::Trap)?);
            }
            elems.push(Rc::<[u64]>::from(items));
        }
        self.instances[inst_id as usize].elems = elems;
        self.instances[inst_id as usize].datas = m.datas.iter().map(|d| d.bytes.clone()).collect();
        // active element segments, in order; then active data segments
        for (i, seg) in m.elems.iter().enumerate() {
            match &seg.mode {
                SegmentMode::Active { index, offset } => {
                    let offset = self.eval_const(inst_id, offset).map_err(Error::Trap)? as u32 as u64;
                    let table = self.instances[inst_id as usize].tables[*index as usize] as usize;
                    let items = self.instances[inst_id as usize].elems[i].clone();
                    let t = &mut self.tables[table].elems;
                    if offset + items.len() as u64 > t.len() as u64 {
                        return Err(trap(TrapKind::TableOutOfBounds));
                    }
                    t[offset as usize..offset as usize + items.len()].copy_from_slice(&items);
                    self.instances[inst_id as usize].elems[i] = Rc::from([]);
                }
                SegmentMode::Declared => self.instances[inst_id as usize].elems[i] = Rc::from([]),
                SegmentMode::Passive => {}
            }
        }
        for (i, seg) in m.datas.iter().enumerate() {
            if let SegmentMode::Active { index, offset } = &seg.mode {
                let offset = self.eval_const(inst_id, offset).map_err(Error::Trap)? as u32 as u64;
                let mem = self.instances[inst_id as usize].memories[*index as usize] as usize;
                let data = &mut self.memories[mem].data;
                let len = seg.bytes.len() as u64;
                if offset + len > data.len() as u64 {
                    return Err(trap(TrapKind::MemoryOutOfBounds));
                }
                data[offset as usize..(offset + len) as usize].copy_from_slice(&seg.bytes);
                self.instances[inst_id as usize].datas[i] = Rc::from([]);
            }
        }
        // start function
        if let Some(start) = m.start {
            let f = self.instances[inst_id as usize].funcs[start as usize];
            self.invoke_raw(f, &[]).map_err(Error::Trap)?;
        }
        Ok(())
    }

    /// Evaluate a constant expression in the context of an instance.
    fn eval_const(&mut self, inst_id: u32, expr: &[ConstOp]) -> Result<u64, Trap> {
        let mut stack: Vec<u64> = Vec::with_capacity(4);
        for op in expr {
            match *op {
                ConstOp::I32(v) => stack.push(v as u32 as u64),
                ConstOp::I64(v) => stack.push(v as u64),
                ConstOp::F32(v) => stack.push(v as u64),
                ConstOp::F64(v) => stack.push(v),
                ConstOp::RefNull => stack.push(0),
                ConstOp::RefFunc(f) => {
                    let f = self.instances[inst_id as usize].funcs[f as usize];
                    stack.push(ref_to_raw(Ref::Func(Func(f))));
                }
                ConstOp::GlobalGet(g) => {
                    let g = self.instances[inst_id as usize].globals[g as usize];
                    stack.push(self.globals[g as usize].value);
                }
                ConstOp::I32Add | ConstOp::I32Sub | ConstOp::I32Mul => {
                    let b = stack.pop().unwrap_or(0) as u32;
                    let a = stack.pop().unwrap_or(0) as u32;
                    let r = match op {
                        ConstOp::I32Add => a.wrapping_add(b),
                        ConstOp::I32Sub => a.wrapping_sub(b),
                        _ => a.wrapping_mul(b),
                    };
                    stack.push(r as u64);
                }
                ConstOp::I64Add | ConstOp::I64Sub | ConstOp::I64Mul => {
                    let b = stack.pop().unwrap_or(0);
                    let a = stack.pop().unwrap_or(0);
                    let r = match op {
                        ConstOp::I64Add => a.wrapping_add(b),
                        ConstOp::I64Sub => a.wrapping_sub(b),
                        _ => a.wrapping_mul(b),
                    };
                    stack.push(r);
                }
                ConstOp::RefI31 => {
                    let v = stack.pop().unwrap_or(0) as u32 as i32;
                    stack.push(ref_to_raw(Ref::I31(v)));
                }
                ConstOp::ConvertRef => {}
                ConstOp::StructNew(ty) => {
                    let n = match &self.registry.get(ty).kind {
                        TypeKind::Struct { fields } => fields.len(),
                        _ => 0,
                    };
                    let fields = stack.split_off(stack.len() - n);
                    let obj = self.alloc_struct_with(ty, Some(&fields))?;
                    stack.push(obj);
                }
                ConstOp::StructNewDefault(ty) => {
                    let obj = self.alloc_struct_with(ty, None)?;
                    stack.push(obj);
                }
                ConstOp::ArrayNew(ty) => {
                    let len = stack.pop().unwrap_or(0) as u32;
                    let value = stack.pop().unwrap_or(0);
                    let obj = self.alloc_array_filled(ty, len, value)?;
                    stack.push(obj);
                }
                ConstOp::ArrayNewDefault(ty) => {
                    let len = stack.pop().unwrap_or(0) as u32;
                    let obj = self.alloc_array_filled(ty, len, 0)?;
                    stack.push(obj);
                }
                ConstOp::ArrayNewFixed(ty, n) => {
                    let values = stack.split_off(stack.len() - n as usize);
                    let obj = self.alloc_array_from(ty, &values)?;
                    stack.push(obj);
                }
            }
        }
        Ok(stack.pop().unwrap_or(0))
    }

    pub fn get_export(&self, instance: InstanceId, name: &str) -> Option<Extern> {
        self.instances[instance.0 as usize].exports.iter().find(|(n, _)| n == name).map(|(_, e)| *e)
    }

    /// All exports in definition order.
    pub fn exports(&self, instance: InstanceId) -> Vec<(String, Extern)> {
        self.instances[instance.0 as usize].exports.clone()
    }

    pub fn func_type(&self, func: Func) -> FuncType {
        let ty = self.funcs[func.0 as usize].ty;
        match &self.registry.get(ty).kind {
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
                    RtHeapType::Concrete(_) => match heap.top(&self.registry) {
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
        let ty = self.funcs[func.0 as usize].ty;
        let (params, results) = match &self.registry.get(ty).kind {
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
        let out = self.invoke_raw(func.0, &raw)?;
        Ok(out.iter().zip(results.iter()).map(|(&r, &t)| raw_to_val(&self.registry, r, t)).collect())
    }

    pub fn new_host_func(&mut self, ty: FuncType, f: HostFn) -> Func {
        let type_id = self.intern_func_type(&ty);
        self.funcs.push(FuncEntity { ty: type_id, kind: FuncKind::Host(Rc::new(f)) });
        Func(self.funcs.len() as u32 - 1)
    }

    /// The canonical id of a function type made of abstract value types, found by validating a
    /// one-type module with the shared validator.
    fn intern_func_type(&mut self, ty: &FuncType) -> u32 {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        let mut body = vec![1u8, 0x60];
        for list in [&ty.params, &ty.results] {
            body.push(list.len() as u8);
            for t in list.iter() {
                encode_val_type(*t, &mut body);
            }
        }
        bytes.push(1);
        bytes.push(body.len() as u8);
        bytes.extend_from_slice(&body);
        let m = module::load(&mut self.validator, &mut self.registry, Source::from_binary("<host>", bytes), |_, _| {})
            .expect("host function types use abstract value types only");
        m.type_ids[0]
    }

    pub fn new_global(&mut self, ty: wasmparser::GlobalType, init: Val) -> Global {
        let desc = GlobalDesc { ty: self.rt_val_type(ty.content_type), mutable: ty.mutable };
        self.globals.push(GlobalEntity { value: val_to_raw(init), desc });
        Global(self.globals.len() as u32 - 1)
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
        let e = &self.globals[g.0 as usize];
        raw_to_val(&self.registry, e.value, e.desc.ty)
    }

    /// A table of `ty.initial` null elements.
    pub fn new_table(&mut self, ty: wasmparser::TableType) -> Table {
        let RtValType::Ref { nullable, heap } = self.rt_val_type(ValType::Ref(ty.element_type)) else {
            unreachable!("table element types are reference types")
        };
        let desc = TableDesc { nullable, heap, min: ty.initial, max: ty.maximum };
        self.tables.push(TableEntity { elems: vec![0; ty.initial as usize], desc });
        Table(self.tables.len() as u32 - 1)
    }

    pub fn new_memory(&mut self, ty: wasmparser::MemoryType) -> Memory {
        let max_pages = ty.maximum.unwrap_or(u32::MAX as u64 + 1);
        self.memories.push(MemoryEntity { data: vec![0; (ty.initial * PAGE_SIZE) as usize], max_pages });
        Memory(self.memories.len() as u32 - 1)
    }

    /// Run `func` with raw arguments and return raw results.
    pub(crate) fn invoke_raw(&mut self, func: u32, args: &[u64]) -> Result<Vec<u64>, Trap> {
        crate::interp::invoke(self, func, args)
    }

    // ---- GC allocation for constant expressions (filled in by the GC integration)

    fn alloc_struct_with(&mut self, ty: u32, fields: Option<&[u64]>) -> Result<u64, Trap> {
        crate::interp::alloc_struct_host(self, ty, fields)
    }

    fn alloc_array_filled(&mut self, ty: u32, len: u32, value: u64) -> Result<u64, Trap> {
        crate::interp::alloc_array_host(self, ty, len, Some(value), None)
    }

    fn alloc_array_from(&mut self, ty: u32, values: &[u64]) -> Result<u64, Trap> {
        crate::interp::alloc_array_host(self, ty, values.len() as u32, None, Some(values))
    }
}

fn encode_val_type(t: ValType, out: &mut Vec<u8>) {
    use wasmparser::AbstractHeapType as A;
    match t {
        ValType::I32 => out.push(0x7F),
        ValType::I64 => out.push(0x7E),
        ValType::F32 => out.push(0x7D),
        ValType::F64 => out.push(0x7C),
        ValType::V128 => out.push(0x7B),
        ValType::Ref(r) => {
            let code = match r.heap_type() {
                wasmparser::HeapType::Abstract { ty, .. } => match ty {
                    A::Func => 0x70,
                    A::Extern => 0x6F,
                    A::Any => 0x6E,
                    A::Eq => 0x6D,
                    A::I31 => 0x6C,
                    A::Struct => 0x6B,
                    A::Array => 0x6A,
                    A::Exn => 0x69,
                    A::NoFunc => 0x73,
                    A::NoExtern => 0x72,
                    A::None => 0x71,
                    A::NoExn => 0x74,
                    A::Cont | A::NoCont => 0x71,
                },
                _ => 0x6E,
            };
            out.push(if r.is_nullable() { 0x63 } else { 0x64 });
            out.push(code);
        }
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
