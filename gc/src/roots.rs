//! `RootSet`: how a mutator shows the collector the references it holds outside the heap.

/// A mutator's roots: it calls `visit(raw)` for every reference-typed slot it holds (value stacks, locals,
/// globals, tables, host handles). Non-object values (null, i31, host, func) are ignored by the heap.
///
/// The collector calls `visit_roots` on its own thread, also for the root sets other mutators published
/// while parked or native ([`crate::MutatorLink`]); their owners are blocked meanwhile. An implementation
/// must therefore not depend on which thread calls it (no thread-locals, no thread-bound handles).
pub trait RootSet {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64));
}

impl RootSet for Vec<u64> {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        self.iter().for_each(|&r| visit(r));
    }
}

impl RootSet for &[u64] {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        self.iter().for_each(|&r| visit(r));
    }
}
