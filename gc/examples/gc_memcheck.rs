//! A small mutator for the Memcheck tests of the heap itself (`gc/tests/memcheck.rs`): it builds linked
//! lists and arrays, collects many times, and walks what it kept. Run it under
//! `valgrind --error-exitcode=99 --leak-check=full`; with `VMRUN_GC_DEBUG` set it plants a collector bug
//! (see `gc::InjectedBug`) that Memcheck must report. Prints the checksum of the surviving list.
//!
//! Usage: `gc_memcheck [rounds]` (default 20).

use gc::{AllocError, Heap, HeapConfig, InjectedBug, Layout, MutatorLink, ObjRef, ThreadCache};

const NODE: u32 = 1; // struct { next: ref, value: i64 }
const REFS: u32 = 2; // array of ref
const BYTES: u32 = 3; // array of i8

struct Mutator {
    heap: Heap,
    cache: ThreadCache,
    link: MutatorLink,
    /// The mutator's roots (a shadow stack).
    roots: Vec<u64>,
}

impl Mutator {
    fn collect(&mut self) {
        let world = self.heap.stop_the_world(&self.link, &mut self.roots).expect("the only mutator");
        self.heap.collect(&world, &mut self.cache, &mut self.roots);
    }

    fn alloc(&mut self, f: impl Fn(&Heap, &mut ThreadCache, bool) -> Result<ObjRef, AllocError>) -> ObjRef {
        match f(&self.heap, &mut self.cache, true) {
            Ok(o) => o,
            Err(AllocError::CollectionNeeded) => {
                self.collect();
                f(&self.heap, &mut self.cache, false).unwrap_or_else(|e| panic!("{e}"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A list of `n` nodes with values 1..=n; the head is pushed on the root stack.
    fn list(&mut self, n: i64) {
        self.roots.push(0);
        let top = self.roots.len() - 1;
        for v in (1..=n).rev() {
            let node = self.alloc(|h, c, m| h.alloc_struct(c, NODE, m));
            node.store_u64(8, self.roots[top]);
            node.store_u64(16, v as u64);
            self.roots[top] = node.raw();
        }
    }
}

/// Sum of the values of the list starting at `raw`.
fn sum(mut raw: u64) -> i64 {
    let mut total = 0;
    while raw != 0 {
        // SAFETY: the list is reachable from the roots, so every node is live (unless a planted bug freed it,
        // which is what Memcheck is there to report).
        let node = unsafe { ObjRef::from_raw(raw) };
        total += node.load_u64(16) as i64;
        raw = node.load_u64(8);
    }
    total
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let inject = InjectedBug::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let config = HeapConfig { min_heap_bytes: 64 << 10, inject, verify: inject.is_none(), ..HeapConfig::default() };
    let heap = Heap::new(config);
    heap.register_type(NODE, Layout::Struct { size: 16, ref_offsets: vec![8].into() });
    heap.register_type(REFS, Layout::Array { elem_size: 8, elem_is_ref: true });
    heap.register_type(BYTES, Layout::Array { elem_size: 1, elem_is_ref: false });
    let cache = heap.new_thread_cache();
    let link = heap.register_mutator();
    let mut m = Mutator { heap, cache, link, roots: Vec::new() };

    // A long-lived list, then garbage of many shapes, collecting as we go; the kept list is walked after
    // every collection (a freed node would be read here).
    m.list(100);
    let mut check = 0;
    for round in 0..rounds {
        m.list(500); // garbage once popped
        let len = (round * 37 % 300) as u32;
        let arr = m.alloc(|h, c, mc| h.alloc_array(c, REFS, len, mc));
        if len > 0 {
            arr.store_u64(8, m.roots[1]);
        }
        m.roots.push(arr.raw());
        let bytes = m.alloc(|h, c, mc| h.alloc_array(c, BYTES, 1 + round as u32 * 13, mc));
        bytes.store_u8(8, 7);
        m.roots.truncate(1);
        m.collect();
        check += sum(m.roots[0]);
    }
    // Large objects: one dies, one survives a collection.
    let big = m.alloc(|h, c, mc| h.alloc_array(c, BYTES, 100_000, mc));
    big.store_u8(8 + 99_999, 1);
    let kept = m.alloc(|h, c, mc| h.alloc_array(c, REFS, 10_000, mc));
    m.roots.push(kept.raw());
    m.collect();
    // SAFETY: the array is a root.
    let kept = unsafe { ObjRef::from_raw(m.roots[1]) };
    check += kept.array_len() as i64;
    println!("checksum {check}");
}
