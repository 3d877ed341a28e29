//! A store's state: the runtime it runs on, its mutator, and the entities its instances created.
//!
//! Entities (functions, memories, tables, globals, instances) live in vectors owned by the store; handles
//! such as [`crate::Func`] are indices into them. An instance maps its module's index spaces (imports first,
//! then definitions) to store indices, so a module's code is shared by all its instances (and all stores of
//! the runtime: it lives in the runtime) and imported entities are the exporter's own objects, not copies.
//!
//! This module defines the data only. Instantiation (`instantiate.rs`), execution (`interp/`) and the
//! public facade (`store.rs`) are built on it, so no file below the facade needs the facade.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::memory::LinearMemory;
use crate::module::{GlobalDesc, ModuleData, TableDesc};
use crate::mutator::Mutator;
use crate::runtime::Runtime;
use crate::tier::{FuncEntry, VmCtx, VmTable};
use crate::{Extern, Trap, Val};

/// A host function. It reads `params` and writes exactly `results.len()` results. Host functions may
/// run on any thread of the runtime, hence `Send + Sync`.
pub type HostFn = Box<dyn Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), Trap> + Send + Sync>;

/// What a host function sees: the calling store and instance. Its methods live next to what they use
/// (`memory` below; `call`, which re-enters wasm, in `store.rs`).
pub struct Caller<'a> {
    pub(crate) state: &'a mut StoreState,
    pub(crate) instance: Option<u32>,
}

impl Caller<'_> {
    /// The calling instance's exported `memory` (or its memory 0), as bytes.
    pub fn memory(&mut self) -> Option<&mut [u8]> {
        let inst = &self.state.instances[self.instance? as usize];
        let mem = match inst.exports.iter().find(|(n, _)| n == "memory") {
            Some((_, Extern::Memory(m))) => m.0,
            _ => *inst.memories.first()?,
        };
        // SAFETY: a host call runs with the dispatch loop exited (it holds no view of the memory), and the
        // returned slice borrows the caller, so no other view of this store's memory can be made while it
        // lives. Shared memories (other threads) are not handed out this way by the threads issue's code.
        Some(unsafe { self.state.memories[mem as usize].as_mut_slice() })
    }
}

pub(crate) enum FuncKind {
    /// Defined function `index` of instance `instance`.
    Wasm {
        instance: u32,
        index: u32,
    },
    Host(Arc<HostFn>),
}

pub(crate) struct FuncEntity {
    /// Canonical type id.
    pub ty: u32,
    pub kind: FuncKind,
}

/// A tag: exceptions thrown with it carry its index in the store (`TagEntity`s are never removed).
pub(crate) struct TagEntity {
    /// Canonical id of its function type.
    pub ty: u32,
}

pub(crate) struct TableEntity {
    elems: TableElems,
    pub desc: TableDesc,
    /// Where the elements are, for compiled code (`tier::VmTable`): boxed, so its address, which the
    /// `VmCtx` of every instance holding the table keeps, never changes. Rewritten whenever an
    /// [`ElemsMut`] of an own table is dropped; `len` stays 0 for a shared table.
    view: Box<VmTable>,
}

/// A table's elements: the store's own, or (a `shared` table, shared-everything threads) one vector every
/// thread's instance holds, behind a lock taken for each table instruction (never across a safepoint,
/// so a collection, which stops every thread first, always finds it free).
enum TableElems {
    Own(Vec<u64>),
    Shared(Arc<SharedTable>),
}

/// The elements of a shared table.
pub(crate) type SharedTable = Mutex<Vec<u64>>;

impl TableEntity {
    /// A table of `desc` with `len` elements of `value`; a shared one gets its runtime-wide vector.
    pub fn new(desc: TableDesc, len: usize, value: u64) -> TableEntity {
        let elems = vec![value; len];
        let elems = if desc.shared { TableElems::Shared(Arc::new(Mutex::new(elems))) } else { TableElems::Own(elems) };
        let mut table = TableEntity { elems, desc, view: Box::default() };
        drop(table.elems_mut());
        table
    }

    /// A thread's instance of a shared table: the spawning instance's elements.
    pub fn inherited(elems: Arc<SharedTable>, desc: TableDesc) -> TableEntity {
        TableEntity { elems: TableElems::Shared(elems), desc, view: Box::default() }
    }

    /// The address of the table's [`VmTable`] (fixed for the table's life).
    pub fn view_address(&self) -> usize {
        &*self.view as *const VmTable as usize
    }

    /// The shared elements, if the table is shared.
    pub fn shared(&self) -> Option<&Arc<SharedTable>> {
        match &self.elems {
            TableElems::Shared(t) => Some(t),
            TableElems::Own(_) => None,
        }
    }

    /// The elements, to read.
    pub fn elems(&self) -> ElemsRef<'_> {
        match &self.elems {
            TableElems::Own(v) => ElemsRef::Own(v),
            TableElems::Shared(t) => ElemsRef::Shared(t.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// The elements, to change.
    pub fn elems_mut(&mut self) -> ElemsMut<'_> {
        match &mut self.elems {
            TableElems::Own(elems) => ElemsMut::Own { elems, view: &mut self.view },
            TableElems::Shared(t) => ElemsMut::Shared(t.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }
}

/// `VMRUN_VM_DEBUG=stale-table-base`: the planted bug `tests/indirect_calls.rs` shows the tests catch:
/// a table's [`VmTable`] keeps its first element address when the elements move (a growth), so compiled
/// code reads the freed vector.
fn stale_table_base_planted() -> bool {
    static BUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BUG.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "stale-table-base"))
}

/// A table's elements while they are read (a shared table's lock is held).
pub(crate) enum ElemsRef<'a> {
    Own(&'a Vec<u64>),
    Shared(MutexGuard<'a, Vec<u64>>),
}

impl std::ops::Deref for ElemsRef<'_> {
    type Target = Vec<u64>;
    fn deref(&self) -> &Vec<u64> {
        match self {
            ElemsRef::Own(v) => v,
            ElemsRef::Shared(g) => g,
        }
    }
}

/// A table's elements while they are changed (a shared table's lock is held). Dropping it publishes
/// an own table's elements to compiled code (its [`VmTable`]): every change of a table goes through
/// here, so the view is never stale once the change is done.
pub(crate) enum ElemsMut<'a> {
    Own { elems: &'a mut Vec<u64>, view: &'a mut VmTable },
    Shared(MutexGuard<'a, Vec<u64>>),
}

impl std::ops::Deref for ElemsMut<'_> {
    type Target = Vec<u64>;
    fn deref(&self) -> &Vec<u64> {
        match self {
            ElemsMut::Own { elems, .. } => elems,
            ElemsMut::Shared(g) => g,
        }
    }
}

impl std::ops::DerefMut for ElemsMut<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u64> {
        match self {
            ElemsMut::Own { elems, .. } => elems,
            ElemsMut::Shared(g) => g,
        }
    }
}

impl Drop for ElemsMut<'_> {
    fn drop(&mut self) {
        if let ElemsMut::Own { elems, view } = self {
            let base = if view.base != 0 && stale_table_base_planted() { view.base } else { elems.as_ptr() as usize };
            **view = VmTable { base, len: elems.len() };
        }
    }
}

pub(crate) struct GlobalEntity {
    /// The value of a global that is not shared (read and written in place by the dispatch loop).
    pub value: u64,
    pub desc: GlobalDesc,
    /// A `shared` global's value (shared-everything threads): one cell for the instances of every thread,
    /// so `value` is unused. The translator sends accesses to shared globals through it (`shared_gc.rs`).
    pub shared: Option<Arc<AtomicU64>>,
}

impl GlobalEntity {
    /// A global holding `value`; a shared one gets its cell.
    pub fn new(value: u64, desc: GlobalDesc) -> GlobalEntity {
        let shared = desc.shared.then(|| Arc::new(AtomicU64::new(value)));
        GlobalEntity { value, desc, shared }
    }

    /// A thread's instance of a shared global: the spawning instance's cell.
    pub fn inherited(cell: Arc<AtomicU64>, desc: GlobalDesc) -> GlobalEntity {
        GlobalEntity { value: 0, desc, shared: Some(cell) }
    }

    pub fn load(&self) -> u64 {
        match &self.shared {
            Some(cell) => cell.load(std::sync::atomic::Ordering::SeqCst),
            None => self.value,
        }
    }

    pub fn store(&mut self, v: u64) {
        match &self.shared {
            Some(cell) => cell.store(v, std::sync::atomic::Ordering::SeqCst),
            None => self.value = v,
        }
    }

    /// Where the value lives (compiled code reads and writes globals through this address).
    pub fn value_ptr(&mut self) -> *mut u64 {
        match &self.shared {
            Some(cell) => cell.as_ptr(),
            None => &mut self.value,
        }
    }
}

pub(crate) struct Instance {
    pub module: Arc<ModuleData>,
    pub funcs: Vec<u32>,
    pub tables: Vec<u32>,
    pub memories: Vec<u32>,
    pub globals: Vec<u32>,
    pub tags: Vec<u32>,
    /// Element segments (emptied by `elem.drop` and after active initialization).
    pub elems: Vec<Arc<[u64]>>,
    /// Data segments (emptied by `data.drop` and after active initialization).
    pub datas: Vec<Arc<[u8]>>,
    pub exports: Vec<(String, Extern)>,
    /// The interpreter's per-defined-function tier word (`tier.rs`: 0 interpreted, odd a countdown to
    /// tier-up, even the address of the compiled code). Shared with the dispatch loop, which holds a clone.
    pub tier_slots: Arc<[AtomicU64]>,
    /// What compiled code of this instance reads, built when the first compiled function of it runs.
    pub tier: Option<Box<InstanceTier>>,
}

/// An instance's tables for compiled code (`tier.rs`). Boxed pieces: compiled code holds their addresses.
pub(crate) struct InstanceTier {
    pub vmctx: Box<VmCtx>,
    /// One per function of the index space; `vmctx.entries` points here.
    pub entries: Box<[FuncEntry]>,
    /// The address of each global's value (index space); `vmctx.globals` points here. Rebuilt when the
    /// store's global vector moves (`interp::jit::refresh_global_addresses`).
    pub global_ptrs: Box<[usize]>,
    /// One per memory of the index space; `vmctx.memories` points here.
    #[allow(dead_code)] // Owned here for `vmctx.memories`; only compiled code reads it.
    pub memories: Box<[crate::tier::VmMemory]>,
    /// The address of each table's [`VmTable`] (index space; the tables own them); `vmctx.tables` points
    /// here.
    #[allow(dead_code)] // Owned here for `vmctx.tables`; only compiled code reads it.
    pub tables: Box<[usize]>,
}

/// Everything one store owns; the public [`crate::Store`] holds it boxed (the collector reaches it through
/// a pointer while the store's thread is stopped, so it must not move).
pub(crate) struct StoreState {
    pub rt: Arc<Runtime>,
    pub mutator: Mutator,
    pub instances: Vec<Instance>,
    pub funcs: Vec<FuncEntity>,
    /// Linear memories never move (`memory.rs`); an `Arc` so a shared one can be another store's too.
    pub memories: Vec<Arc<LinearMemory>>,
    pub tables: Vec<TableEntity>,
    pub globals: Vec<GlobalEntity>,
    pub tags: Vec<TagEntity>,
}

impl StoreState {
    /// The state of a new store on `rt`; `race` is its thread's race context if a spawning thread made one
    /// (`--race`), else the store gets a context of its own.
    pub fn new(rt: Arc<Runtime>, race: Option<Box<vmrace::ThreadCtx>>) -> StoreState {
        let race = race.or_else(|| rt.race.as_ref().map(|r| r.new_thread()));
        let mutator = Mutator::new(&rt.heap, rt.config.value_stack_slots, rt.config.native_stack_bytes, race);
        StoreState {
            rt,
            mutator,
            instances: Vec::new(),
            funcs: Vec::new(),
            memories: Vec::new(),
            tables: Vec::new(),
            globals: Vec::new(),
            tags: Vec::new(),
        }
    }
}
