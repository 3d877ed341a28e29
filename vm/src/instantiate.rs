//! Instantiation: imports resolved through a [`Linker`], entities created, constant expressions evaluated,
//! active segments copied, the start function run.
//!
//! **Roots while the host allocates.** A constant expression may allocate several objects deep
//! (`struct.new` of `array.new_fixed` of `struct.new`...), element segments hold many such items, and any
//! allocation may collect. Every reference the evaluation holds (operands on its stack, items of the
//! segment evaluated so far) is in the mutator's host roots while an allocation may collect, so nothing
//! the host holds can be swept under it (checked by the tests under `--gc-stress --gc-verify`).

use std::sync::Arc;

use crate::linker::Linker;
use crate::memory::LinearMemory;
use crate::module::{ConstOp, ExportKind, ImportDesc, ModuleData, SegmentMode};
use crate::runtime::ModuleId;
use crate::state::{FuncEntity, FuncKind, GlobalEntity, Instance, StoreState, TableEntity};
use crate::types::{TypeKind, heap_subtype, val_subtype};
use crate::values::{func_raw, i31_raw};
use crate::{Error, Extern, Func, Global, InstanceId, Memory, Table, Tag, Trap, TrapKind};

/// What a thread's instance takes from the instance that spawned it (see
/// [`StoreState::instantiate_with`]), by defined index.
pub(crate) struct Inherited {
    pub globals: Vec<Option<Arc<std::sync::atomic::AtomicU64>>>,
    pub memories: Vec<Option<Arc<LinearMemory>>>,
    pub tables: Vec<Option<Arc<crate::state::SharedTable>>>,
}

impl Inherited {
    /// The shared globals, memories and tables `inst` defines.
    pub fn of(state: &StoreState, inst: u32) -> Inherited {
        let i = &state.instances[inst as usize];
        let m = &i.module;
        let first_global = i.globals.len() - m.globals.len();
        let first_memory = i.memories.len() - m.memories.len();
        let first_table = i.tables.len() - m.tables.len();
        Inherited {
            tables: i.tables[first_table..].iter().map(|&t| state.tables[t as usize].shared().cloned()).collect(),
            globals: i.globals[first_global..].iter().map(|&g| state.globals[g as usize].shared.clone()).collect(),
            memories: i.memories[first_memory..]
                .iter()
                .map(|&mm| Some(state.memories[mm as usize].clone()).filter(|mem| mem.is_shared()))
                .collect(),
        }
    }
}

impl StoreState {
    /// Link and instantiate; runs active segments and the start function.
    pub fn instantiate(&mut self, module: ModuleId, linker: &Linker) -> Result<InstanceId, Error> {
        self.instantiate_with(module, linker, None)
    }

    /// [`Self::instantiate`], or with `inherited`, a thread's instance of a module another thread
    /// instantiated (`vmrun`.`thread_spawn`): its shared memories and globals are the spawning
    /// instance's (their initializers and active data segments are not run again) and the start function
    /// does not run; everything else is the thread's own.
    pub(crate) fn instantiate_with(
        &mut self,
        module: ModuleId,
        linker: &Linker,
        inherited: Option<&Inherited>,
    ) -> Result<InstanceId, Error> {
        let m = self.rt.module(module);
        let mut inst = Instance {
            module: m.clone(),
            funcs: Vec::new(),
            tables: Vec::new(),
            memories: Vec::new(),
            globals: Vec::new(),
            tags: Vec::new(),
            elems: Vec::new(),
            datas: Vec::new(),
            exports: Vec::new(),
            tier_slots: {
                let jit = &self.rt.config.jit;
                let slot = crate::interp::initial_slot(jit.effective_mode(), jit.threshold);
                m.code.iter().map(|_| std::sync::atomic::AtomicU64::new(slot)).collect()
            },
            tier: None,
        };
        // ---- resolve imports
        for imp in &m.imports {
            let found = linker.get(&imp.module, &imp.name).ok_or_else(|| {
                let hint = crate::wasi::missing_import_hint(&imp.module);
                Error::Link(format!("unknown import: `{}`.`{}` is not defined{hint}", imp.module, imp.name))
            })?;
            let incompatible = || Error::Link(format!("incompatible import type for `{}`.`{}`", imp.module, imp.name));
            match (&imp.desc, found) {
                (ImportDesc::Func(ty), Extern::Func(f)) => {
                    if !self.rt.types.is_subtype(self.funcs[f.0 as usize].ty, *ty) {
                        return Err(incompatible());
                    }
                    inst.funcs.push(f.0);
                }
                (ImportDesc::Table(want), Extern::Table(t)) => {
                    let have = &self.tables[t.0 as usize];
                    let size = have.elems().len() as u64;
                    let ok = size >= want.min
                        && have.desc.shared == want.shared
                        && match want.max {
                            None => true,
                            Some(wmax) => have.desc.max.is_some_and(|hmax| hmax <= wmax),
                        }
                        && have.desc.nullable == want.nullable
                        && heap_subtype(&self.rt.types, have.desc.heap, want.heap)
                        && heap_subtype(&self.rt.types, want.heap, have.desc.heap);
                    if !ok {
                        return Err(incompatible());
                    }
                    inst.tables.push(t.0);
                }
                (ImportDesc::Memory(want), Extern::Memory(mem)) => {
                    let have = &self.memories[mem.0 as usize];
                    let (pages, have_max) = (have.pages(), have.max_pages());
                    let ok = pages >= want.min
                        && have.is_shared() == want.shared
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
                            val_subtype(&self.rt.types, have.ty, want.ty)
                                && val_subtype(&self.rt.types, want.ty, have.ty)
                        } else {
                            val_subtype(&self.rt.types, have.ty, want.ty)
                        };
                    if !ok {
                        return Err(incompatible());
                    }
                    inst.globals.push(g.0);
                }
                // Tag types match when they are the same (equivalent types share a canonical id).
                (ImportDesc::Tag(want), Extern::Tag(t)) => {
                    if self.tags[t.0 as usize].ty != *want {
                        return Err(incompatible());
                    }
                    inst.tags.push(t.0);
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
        // Every instantiation makes new tags: exceptions of one are not caught by another's clauses.
        for desc in &m.tags[m.num_imported_tags as usize..] {
            self.tags.push(crate::state::TagEntity { ty: desc.ty });
            inst.tags.push(self.tags.len() as u32 - 1);
        }
        // The instance must exist for constant expressions (global.get) to resolve.
        self.instances.push(inst);
        let roots_base = self.mutator.host_roots.len();
        let result = self.initialize(inst_id, &m, inherited);
        self.mutator.host_roots.truncate(roots_base);
        result.map(|()| InstanceId(inst_id))
    }

    /// Add a global; compiled instances learn the new addresses if the vector moved.
    pub(crate) fn push_global(&mut self, g: GlobalEntity) {
        let before = self.globals.as_ptr();
        self.globals.push(g);
        if self.globals.as_ptr() != before {
            crate::interp::refresh_global_addresses(self);
        }
    }

    fn initialize(&mut self, inst_id: u32, m: &ModuleData, inherited: Option<&Inherited>) -> Result<(), Error> {
        let trap = |k: TrapKind| Error::Trap(Trap::new(k));
        // globals
        for (i, (desc, init)) in m.globals.iter().enumerate() {
            if let Some(cell) = inherited.and_then(|h| h.globals.get(i).cloned().flatten()) {
                self.push_global(GlobalEntity::inherited(cell, desc.clone()));
            } else {
                let value = self.eval_const(inst_id, init).map_err(Error::Trap)?;
                self.push_global(GlobalEntity::new(value, desc.clone()));
            }
            let g = self.globals.len() as u32 - 1;
            self.instances[inst_id as usize].globals.push(g);
        }
        // memories
        for (i, desc) in m.memories.iter().enumerate() {
            if let Some(mem) = inherited.and_then(|h| h.memories.get(i).cloned().flatten()) {
                self.memories.push(mem);
                let id = self.memories.len() as u32 - 1;
                self.instances[inst_id as usize].memories.push(id);
                continue;
            }
            let reserve = self.rt.config.memory_reservation_bytes;
            let mem = LinearMemory::new(desc.min, desc.max, desc.shared, reserve)
                .map_err(|e| Error::Trap(Trap::new(TrapKind::Host(e.to_string()))))?;
            self.memories.push(Arc::new(mem));
            let id = self.memories.len() as u32 - 1;
            self.instances[inst_id as usize].memories.push(id);
        }
        // tables
        for (i, (desc, init)) in m.tables.iter().enumerate() {
            if let Some(elems) = inherited.and_then(|h| h.tables.get(i).cloned().flatten()) {
                self.tables.push(TableEntity::inherited(elems, desc.clone()));
                let id = self.tables.len() as u32 - 1;
                self.instances[inst_id as usize].tables.push(id);
                continue;
            }
            let value = match init {
                Some(e) => self.eval_const(inst_id, e).map_err(Error::Trap)?,
                None => 0,
            };
            self.tables.push(TableEntity::new(desc.clone(), desc.min as usize, value));
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
                    ExportKind::Tag => Extern::Tag(Tag(inst.tags[i])),
                };
                exports.push((name.clone(), item));
            }
        }
        self.instances[inst_id as usize].exports = exports;
        // segments: evaluate element items, keep data bytes
        // Items evaluated so far are roots while later ones allocate (host roots, then the instance's segments;
        // `instantiate` drops what an error leaves behind).
        for seg in &m.elems {
            let first = self.mutator.host_roots.len();
            for e in &seg.items {
                let item = self.eval_const(inst_id, e).map_err(Error::Trap)?;
                self.mutator.host_roots.push(item);
            }
            let items = Arc::<[u64]>::from(&self.mutator.host_roots[first..]);
            self.instances[inst_id as usize].elems.push(items);
            self.mutator.host_roots.truncate(first);
        }
        self.instances[inst_id as usize].datas = m.datas.iter().map(|d| d.bytes.clone()).collect();
        // active element segments, in order; then active data segments
        for (i, seg) in m.elems.iter().enumerate() {
            match &seg.mode {
                // A table inherited from the spawning instance was initialized when that one was made.
                SegmentMode::Active { index, .. }
                    if inherited.is_some_and(|h| {
                        let defined = (*index as usize).checked_sub(m.num_imported_tables());
                        defined.is_some_and(|d| h.tables.get(d).is_some_and(Option::is_some))
                    }) =>
                {
                    self.instances[inst_id as usize].elems[i] = Arc::from([]);
                }
                SegmentMode::Active { index, offset } => {
                    let offset = self.eval_const(inst_id, offset).map_err(Error::Trap)? as u32 as u64;
                    let table = self.instances[inst_id as usize].tables[*index as usize] as usize;
                    let items = self.instances[inst_id as usize].elems[i].clone();
                    let mut t = self.tables[table].elems_mut();
                    if offset + items.len() as u64 > t.len() as u64 {
                        return Err(trap(TrapKind::TableOutOfBounds));
                    }
                    t[offset as usize..offset as usize + items.len()].copy_from_slice(&items);
                    self.instances[inst_id as usize].elems[i] = Arc::from([]);
                }
                SegmentMode::Declared => self.instances[inst_id as usize].elems[i] = Arc::from([]),
                SegmentMode::Passive => {}
            }
        }
        for (i, seg) in m.datas.iter().enumerate() {
            if let SegmentMode::Active { index, offset } = &seg.mode {
                // A memory inherited from the spawning instance was initialized when that one was made.
                let defined = (*index as usize).checked_sub(m.num_imported_memories());
                if inherited.is_some_and(|h| defined.is_some_and(|d| h.memories.get(d).is_some_and(Option::is_some))) {
                    self.instances[inst_id as usize].datas[i] = Arc::from([]);
                    continue;
                }
                let offset = self.eval_const(inst_id, offset).map_err(Error::Trap)? as u32 as u64;
                let mem = self.instances[inst_id as usize].memories[*index as usize] as usize;
                if self.memories[mem].init(offset, &seg.bytes, 0, seg.bytes.len() as u64).is_err() {
                    return Err(trap(TrapKind::MemoryOutOfBounds));
                }
                self.instances[inst_id as usize].datas[i] = Arc::from([]);
            }
        }
        if self.rt.config.jit.effective_mode() == crate::tier::JitMode::Eager {
            crate::interp::link_eager(self, inst_id);
        }
        // start function
        if let Some(start) = m.start.filter(|_| inherited.is_none()) {
            let f = self.instances[inst_id as usize].funcs[start as usize];
            crate::interp::invoke(self, f, &[]).map_err(Error::Trap)?;
        }
        Ok(())
    }

    /// Evaluate a constant expression in the context of an instance.
    fn eval_const(&mut self, inst_id: u32, expr: &[ConstOp]) -> Result<u64, Trap> {
        // (value, is a reference): only references may be shown to the collector as roots.
        let mut stack: Vec<(u64, bool)> = Vec::with_capacity(4);
        let pop = |stack: &mut Vec<(u64, bool)>| stack.pop().map_or(0, |(v, _)| v);
        for op in expr {
            match *op {
                ConstOp::I32(v) => stack.push((v as u32 as u64, false)),
                ConstOp::I64(v) => stack.push((v as u64, false)),
                ConstOp::F32(v) => stack.push((v as u64, false)),
                ConstOp::F64(v) => stack.push((v, false)),
                ConstOp::RefNull => stack.push((0, true)),
                ConstOp::RefFunc(f) => {
                    let f = self.instances[inst_id as usize].funcs[f as usize];
                    stack.push((func_raw(f), true));
                }
                ConstOp::GlobalGet(g) => {
                    let g = &self.globals[self.instances[inst_id as usize].globals[g as usize] as usize];
                    stack.push((g.load(), matches!(g.desc.ty, crate::types::RtValType::Ref { .. })));
                }
                ConstOp::I32Add | ConstOp::I32Sub | ConstOp::I32Mul => {
                    let b = pop(&mut stack) as u32;
                    let a = pop(&mut stack) as u32;
                    let r = match op {
                        ConstOp::I32Add => a.wrapping_add(b),
                        ConstOp::I32Sub => a.wrapping_sub(b),
                        _ => a.wrapping_mul(b),
                    };
                    stack.push((r as u64, false));
                }
                ConstOp::I64Add | ConstOp::I64Sub | ConstOp::I64Mul => {
                    let b = pop(&mut stack);
                    let a = pop(&mut stack);
                    let r = match op {
                        ConstOp::I64Add => a.wrapping_add(b),
                        ConstOp::I64Sub => a.wrapping_sub(b),
                        _ => a.wrapping_mul(b),
                    };
                    stack.push((r, false));
                }
                ConstOp::RefI31 => {
                    let v = pop(&mut stack) as u32 as i32;
                    stack.push((i31_raw(v), true));
                }
                ConstOp::ConvertRef => {}
                ConstOp::StructNew(ty) | ConstOp::StructNewDefault(ty) => {
                    let rt = self.rt.clone();
                    let TypeKind::Struct { fields } = &rt.types.get(ty).kind else { unreachable!("struct type") };
                    let n = if matches!(op, ConstOp::StructNew(_)) { fields.len() } else { 0 };
                    let obj = self.alloc_rooted(&stack, ty, None)?;
                    let values = stack.split_off(stack.len() - n);
                    for (f, &(v, _)) in fields.iter().zip(&values) {
                        crate::gcglue::write(obj, f.offset as usize, f.kind, v);
                    }
                    stack.push((obj.raw(), true));
                }
                ConstOp::ArrayNew(ty) | ConstOp::ArrayNewDefault(ty) => {
                    let len = pop(&mut stack) as u32;
                    let fill =
                        if matches!(op, ConstOp::ArrayNew(_)) { stack.pop().unwrap_or((0, false)) } else { (0, false) };
                    // The fill value stays on the stack (rooted if a reference) while the array is allocated.
                    stack.push(fill);
                    let obj = self.alloc_rooted(&stack, ty, Some(len))?;
                    let (fill, _) = stack.pop().unwrap_or((0, false));
                    let kind = self.rt.types.array_elem(ty);
                    for i in 0..len {
                        crate::gcglue::write(obj, crate::gcglue::elem_offset(i, kind), kind, fill);
                    }
                    stack.push((obj.raw(), true));
                }
                ConstOp::ArrayNewFixed(ty, n) => {
                    let obj = self.alloc_rooted(&stack, ty, Some(n))?;
                    let values = stack.split_off(stack.len() - n as usize);
                    let kind = self.rt.types.array_elem(ty);
                    for (i, &(v, _)) in values.iter().enumerate() {
                        crate::gcglue::write(obj, crate::gcglue::elem_offset(i as u32, kind), kind, v);
                    }
                    stack.push((obj.raw(), true));
                }
            }
        }
        Ok(pop(&mut stack))
    }

    /// Allocate a struct (`array_len` None) or an array for a constant expression, with every reference on
    /// the evaluation `stack` rooted while the allocation may collect.
    fn alloc_rooted(&mut self, stack: &[(u64, bool)], ty: u32, array_len: Option<u32>) -> Result<gc::ObjRef, Trap> {
        let base = self.mutator.host_roots.len();
        self.mutator.host_roots.extend(stack.iter().filter(|&&(_, is_ref)| is_ref).map(|&(v, _)| v));
        let r = alloc_host(self, ty, array_len);
        self.mutator.host_roots.truncate(base);
        r
    }
}

/// Allocate from the host side (constant expressions): collect when the heap asks. The caller has put
/// every reference it holds in the mutator's host roots.
fn alloc_host(store: &mut StoreState, type_id: u32, array_len: Option<u32>) -> Result<gc::ObjRef, Trap> {
    let mut may_collect = true;
    if let Some(t) = &store.mutator.alloc.tracing {
        t.clear_site();
    }
    loop {
        let (heap, cache) = (&store.rt.heap, &mut store.mutator.cache);
        let r = match array_len {
            None => heap.alloc_struct(cache, type_id, may_collect),
            Some(len) => heap.alloc_array(cache, type_id, len, may_collect),
        };
        match r {
            Ok(o) => return Ok(o),
            Err(gc::AllocError::CollectionNeeded) => {
                crate::safepoint::collect(store);
                may_collect = false;
            }
            Err(gc::AllocError::OutOfMemory { limit }) => {
                return Err(Trap::new(TrapKind::OutOfMemory { limit_bytes: limit as u64 }));
            }
        }
    }
}
