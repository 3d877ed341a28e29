//! Alloc/free tracing (`vmrun --trace allocfree`): what the VM adds to the heap's own events.
//!
//! The tracer (`vmtrace::Tracer`) is a heap observer: spans, objects, frees found by the sweep and
//! collections reach it from the heap directly. Only the VM knows the rest, and this module supplies it:
//!
//! - **Allocation sites.** Before an allocating instruction asks the heap, the interpreter (only when a
//!   tracer is attached: one predictable branch in the cold path) names the site: the instruction's module,
//!   function and wasm offset. Each distinct site gets a small id, defined once to the tracer with the
//!   function's name and the `file:line:col` the DWARF line table gives the offset.
//! - **Types**: every struct and array type of every module, under its name from the name section
//!   (`$tree`), with a size hint (a struct's object bytes; an array's element size); and the exception
//!   objects of each tag, under the tag's name (`tag $e`).
//! - **The thread and its value stack**, and **safe points**: after each collection the tracer may start a
//!   new generation with a snapshot of the heap; at the end a last snapshot (so the trace can be checked
//!   against a heap walk at exit) before the trace is closed.

use std::collections::HashMap;
use std::sync::Arc;

use gc::HeapObserver;
use vmtrace::{SiteDesc, TraceStats, Tracer};

use crate::module::ModuleData;
use crate::types::{TypeKind, TypeRegistry};

pub(crate) struct AllocTracing {
    pub tracer: Arc<Tracer>,
    /// The heap thread id of the store's mutator.
    thread: u32,
    /// Whether this store started the trace (and closes it); other stores are threads that joined it.
    owner: bool,
    /// (module address, wasm offset of the allocating instruction) → site id (from 1; 0 is "unknown").
    /// Consulted only when `recent` misses.
    sites: HashMap<(usize, u32), u32>,
    /// A direct-mapped cache in front of `sites`, indexed by the offset's low bits: a program allocates
    /// from a handful of hot sites, and one compare is cheaper than hashing on every allocation.
    recent: Box<[SiteCacheEntry; SITE_CACHE]>,
}

const SITE_CACHE: usize = 256;

/// (module address, wasm offset) → site id; module 0 marks an empty entry.
#[derive(Clone, Copy, Default)]
struct SiteCacheEntry {
    module: usize,
    offset: u32,
    site: u32,
}

impl AllocTracing {
    /// Attaches `tracer` to `heap` for the mutator owning `cache`, whose stacks (made before the tracer
    /// could see them) are `stacks`. This store owns the trace: [`AllocTracing::finish`] closes it.
    pub fn attach(tracer: Arc<Tracer>, heap: &gc::Heap, cache: &gc::ThreadCache, stacks: &[(usize, usize)]) -> Self {
        heap.add_observer(tracer.clone());
        AllocTracing { owner: true, ..Self::join(tracer, cache, stacks) }
    }

    /// Another thread's mutator joins the trace `tracer` (already a heap observer): its thread starts, with
    /// its stacks, in a per-thread buffer of its own.
    pub fn join(tracer: Arc<Tracer>, cache: &gc::ThreadCache, stacks: &[(usize, usize)]) -> Self {
        let thread = cache.thread_id();
        tracer.thread_start(thread);
        for &(base, bytes) in stacks {
            tracer.stack_alloc(&gc::ObserverCtx { thread_id: thread, race_ctx: 0 }, base, bytes);
        }
        AllocTracing {
            tracer,
            thread,
            owner: false,
            sites: HashMap::new(),
            recent: Box::new([SiteCacheEntry::default(); SITE_CACHE]),
        }
    }

    /// Names the site of the allocation `module`'s function `func` is about to make at `pc`.
    #[inline(never)]
    pub fn set_site(&mut self, module: &ModuleData, func: u32, pc: usize) {
        let offset = module.code[func as usize].wasm_offsets.get(pc).copied().unwrap_or(0);
        self.set_site_at(module, func, offset);
    }

    /// Names the site of an allocation at wasm `offset` of `module`'s defined function `func` (compiled
    /// code knows offsets, not bytecode pcs).
    #[inline(never)]
    pub fn set_site_at(&mut self, module: &ModuleData, func: u32, offset: u32) {
        let module_addr = module as *const ModuleData as usize;
        let entry = &mut self.recent[offset as usize % SITE_CACHE];
        let site = if entry.module == module_addr && entry.offset == offset {
            entry.site
        } else {
            let site = self.site_id(module, func, module_addr, offset);
            self.recent[offset as usize % SITE_CACHE] = SiteCacheEntry { module: module_addr, offset, site };
            site
        };
        self.tracer.set_current_site(self.thread, site);
    }

    /// The id of the site at `offset` in `module`, defining it to the tracer the first time.
    #[cold]
    fn site_id(&mut self, module: &ModuleData, func: u32, module_addr: usize, offset: u32) -> u32 {
        let key = (module_addr, offset);
        let next = self.sites.len() as u32 + 1;
        let tracer = &self.tracer;
        *self.sites.entry(key).or_insert_with(|| {
            let func_index = module.num_imported_funcs + func;
            let function = match module.source.func_name(func_index) {
                Some(name) => format!("${name}"),
                None => format!("func {func_index}"),
            };
            let loc = module.source.location(offset as usize);
            let location = loc.as_ref().map(|l| (l.file.as_str(), l.line, l.column));
            tracer.define_site(next, &SiteDesc { function: &function, wasm_offset: offset as u64, location });
            next
        })
    }

    /// Allocations the host makes (constant expressions) have no instruction: site 0.
    pub fn clear_site(&self) {
        self.tracer.set_current_site(self.thread, 0);
    }

    /// Defines every GC type of `module` to the tracer.
    pub fn define_types(&self, module: &ModuleData, registry: &TypeRegistry) {
        for (index, &id) in module.type_ids.iter().enumerate() {
            let info = registry.get(id);
            let size_hint = match crate::gcglue::layout_of(info) {
                Some(layout @ gc::Layout::Struct { .. }) => layout.object_bytes(0),
                Some(gc::Layout::Array { elem_size, .. }) => elem_size as u64,
                None => continue,
            };
            let what = if matches!(info.kind, TypeKind::Array { .. }) { "array" } else { "struct" };
            let name = match module.source.type_name(index as u32) {
                Some(name) => format!("${name}"),
                None => format!("{what} type {index}"),
            };
            self.tracer.define_type(id, &name, size_hint);
        }
        // Exceptions: one type per tag of the module, named after the tag (`tag $e`).
        for tag in &module.tags {
            let info = registry.get(tag.exn_type);
            if let (TypeKind::Exn { name, .. }, Some(layout)) = (&info.kind, crate::gcglue::layout_of(info)) {
                self.tracer.define_type(tag.exn_type, name, layout.object_bytes(0));
            }
        }
    }

    /// Whether this store started the trace (see [`AllocTracing::attach`]).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Closes the trace: a last generation whose snapshot is the heap at exit (`heap`: the world stopped),
    /// the thread's end, flush.
    pub fn finish(&self, heap: &dyn vmtrace::HeapWalk) -> std::io::Result<TraceStats> {
        self.tracer.advance_generation(heap);
        self.tracer.thread_end(self.thread);
        self.tracer.finish()
    }

    /// A thread that joined the trace leaves it (its store is dropped): the thread's end.
    pub fn leave(&self) {
        self.tracer.thread_end(self.thread);
    }
}
