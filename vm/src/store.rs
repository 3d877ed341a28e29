//! The store: owner of every runtime entity. (Stub surface; implementation in progress.)

use crate::{Error, Func, FuncType, Global, Memory, Source, Table, Trap, Val};

/// Runtime limits and GC policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Maximum number of nested wasm calls before `call stack exhausted`.
    pub max_call_depth: usize,
    /// Size of the value stack in 8-byte slots.
    pub value_stack_slots: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_call_depth: 100_000, value_stack_slots: 8 << 20 }
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
        let _ = (&self.store, self.instance);
        todo!()
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

/// Owner of all runtime state.
pub struct Store {
    _private: (),
}

impl Store {
    pub fn new(config: Config) -> Store {
        let _ = config;
        todo!()
    }
    /// Decode, validate and translate a module.
    pub fn load_module(&mut self, source: Source) -> Result<ModuleId, Error> {
        let _ = source;
        todo!()
    }
    /// The imports a module needs, as (module, name).
    pub fn module_imports(&self, module: ModuleId) -> Vec<(String, String)> {
        let _ = module;
        todo!()
    }
    /// Link and instantiate; runs active segments and the start function.
    pub fn instantiate(&mut self, module: ModuleId, linker: &Linker) -> Result<InstanceId, Error> {
        let _ = (module, linker);
        todo!()
    }
    pub fn get_export(&self, instance: InstanceId, name: &str) -> Option<Extern> {
        let _ = (instance, name);
        todo!()
    }
    /// All exports in definition order.
    pub fn exports(&self, instance: InstanceId) -> Vec<(String, Extern)> {
        let _ = instance;
        todo!()
    }
    pub fn func_type(&self, func: Func) -> FuncType {
        let _ = func;
        todo!()
    }
    /// Call a function. Arguments must match its type (checked: a mismatch is a `Host` trap).
    pub fn call(&mut self, func: Func, args: &[Val]) -> Result<Vec<Val>, Trap> {
        let _ = (func, args);
        todo!()
    }
    pub fn new_host_func(&mut self, ty: FuncType, f: HostFn) -> Func {
        let _ = (ty, f);
        todo!()
    }
    pub fn new_global(&mut self, ty: wasmparser::GlobalType, init: Val) -> Global {
        let _ = (ty, init);
        todo!()
    }
    pub fn global_get(&self, g: Global) -> Val {
        let _ = g;
        todo!()
    }
    /// A funcref/externref table of `ty.initial` null elements.
    pub fn new_table(&mut self, ty: wasmparser::TableType) -> Table {
        let _ = ty;
        todo!()
    }
    pub fn new_memory(&mut self, ty: wasmparser::MemoryType) -> Memory {
        let _ = ty;
        todo!()
    }
}
