//! The [`Linker`]: name → entity definitions that imports resolve against (`Linker::define_instance`,
//! which needs a store, lives with the store).

use crate::Extern;

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
    pub fn get(&self, module: &str, name: &str) -> Option<Extern> {
        self.defs.get(&(module.to_string(), name.to_string())).copied()
    }
}
