//! A fake heap driven by a list of operations: it calls the tracer exactly as `gc::Heap` would (spans,
//! objects allocated and swept, stacks, collections with the collector's live figures), keeps a model of
//! what is allocated (its [`HeapWalk`]), and logs the events a reader must give back.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gc::observer::{ArenaInfo, GcBeginInfo, GcEndInfo, HeapObserver, ObjectInfo, ObserverCtx, SpanInfo};
use vmtrace::{EventKind, GcEnd, HeapWalk, SiteDesc, Span, TraceConfig, Tracer};

/// A `Write` into shared memory.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// One thing the fake heap does.
#[derive(Clone, Debug)]
pub enum Op {
    Tick(u32),
    /// `run` objects of `words`×8 bytes from slot `at` on (skipping live slots), on `thread`.
    Alloc {
        thread: u8,
        words: u8,
        ty: u8,
        run: u8,
        at: u16,
    },
    SetSite {
        thread: u8,
        site: u8,
    },
    /// A collection on `thread` that frees the objects whose address hashes (with `seed`) to 0 mod 3.
    Gc {
        thread: u8,
        seed: u64,
    },
    /// A collection on `thread` that frees every object of type `ty`.
    GcType {
        thread: u8,
        ty: u8,
    },
    SpanAlloc {
        thread: u8,
        pages: u8,
    },
    SpanFree {
        thread: u8,
        pick: u16,
    },
    StackAlloc {
        thread: u8,
        size: u32,
    },
    StackFree {
        thread: u8,
        pick: u16,
    },
    Advance,
    DefineType {
        id: u8,
    },
    DefineSite {
        id: u8,
    },
    ThreadEnd {
        thread: u8,
    },
}

/// Where the fake arena sits; objects go on both sides of it (negative ids).
pub const ARENA: u64 = 0x7f12_0000_0000;
const OBJ_BASE: u64 = ARENA - (1 << 20);

#[derive(Default)]
pub struct Model {
    pub objects: BTreeMap<u64, (u64, u32)>,
    pub spans: BTreeMap<u64, SpanInfo>,
    pub stacks: BTreeMap<u64, u64>,
    pub started: BTreeSet<u32>,
    pub types: BTreeMap<u32, String>,
    pub sites: BTreeMap<u32, String>,
    next_span: u64,
    next_stack: u64,
    cycle: u64,
}

impl HeapWalk for Model {
    fn for_each_span(&self, f: &mut dyn FnMut(&SpanInfo)) {
        self.spans.values().for_each(f);
    }
    fn for_each_object(&self, f: &mut dyn FnMut(&ObjectInfo)) {
        for (&addr, &(size, type_id)) in &self.objects {
            f(&ObjectInfo { addr: addr as usize, size: size as usize, bytes: 0, type_id, len: 0 });
        }
    }
}

/// Objects by address: (size, type).
pub type Objects = BTreeMap<u64, (u64, u32)>;

/// What one run produced.
pub struct Run {
    pub bytes: Vec<u8>,
    /// Per thread, the non-snapshot events the reader must return, in order.
    pub expected: BTreeMap<u32, Vec<(u64, EventKind)>>,
    /// At each generation switch: the alive threads and the model's objects.
    pub snapshots: Vec<(BTreeSet<u32>, Objects)>,
    pub model: Model,
    pub lost: u64,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

pub fn run(ops: &[Op], config: TraceConfig) -> Run {
    let clock = Arc::new(AtomicU64::new(0));
    let buf = SharedBuf::default();
    let tracer = Tracer::new(Box::new(buf.clone()), TraceConfig { manual_clock: Some(clock.clone()), ..config });
    let mut m = Model::default();
    let mut expected: BTreeMap<u32, Vec<(u64, EventKind)>> = BTreeMap::new();
    let mut snapshots = Vec::new();
    let ctx = |t: u8| ObserverCtx::new(u32::from(t % 4) + 1);
    tracer.arena_map(&ctx(0), &ArenaInfo { base: ARENA as usize, size: 64 << 20 });
    let mut sites = [0u32; 5];

    // Time of each thread's last event: what the tracer stamps sweep frees with.
    let mut last_ts: BTreeMap<u32, u64> = BTreeMap::new();
    macro_rules! log {
        ($t:expr, $kind:expr) => {{
            let th: u32 = $t;
            let now = clock.load(Ordering::Relaxed);
            if m.started.insert(th) {
                expected.entry(th).or_default().push((now, EventKind::ThreadStart));
            }
            let kind = $kind;
            let now = if matches!(kind, EventKind::ObjFree { .. }) { last_ts[&th] } else { now };
            last_ts.insert(th, now);
            expected.entry(th).or_default().push((now, kind));
            // A real clock moves between calls; equal times on different threads would leave the merge
            // order between them open.
            clock.fetch_add(1, Ordering::Relaxed);
        }};
    }

    for op in ops {
        match *op {
            Op::Tick(n) => {
                clock.fetch_add(u64::from(n), Ordering::Relaxed);
            }
            Op::Alloc { thread, words, ty, run, at } => {
                let c = ctx(thread);
                let size = u64::from(words.max(1)) * 8;
                let type_id = u32::from(ty % 6);
                let mut addr = OBJ_BASE + u64::from(at) * 64;
                for _ in 0..run.max(1) {
                    while m.objects.contains_key(&addr) {
                        addr += 8;
                    }
                    tracer.object_alloc(
                        &c,
                        &ObjectInfo { addr: addr as usize, size: size as usize, bytes: 0, type_id, len: 0 },
                    );
                    let site = sites[c.thread_id as usize];
                    log!(c.thread_id, EventKind::ObjAlloc { addr, size, type_id, site });
                    m.objects.insert(addr, (size, type_id));
                    addr += size;
                    clock.fetch_add(u64::from(at % 7), Ordering::Relaxed);
                }
            }
            Op::SetSite { thread, site } => {
                let c = ctx(thread);
                tracer.set_current_site(c.thread_id, u32::from(site % 8));
                sites[c.thread_id as usize] = u32::from(site % 8);
            }
            Op::Gc { thread, .. } | Op::GcType { thread, .. } => {
                let c = ctx(thread);
                let dead: Vec<u64> = match *op {
                    Op::Gc { seed, .. } => {
                        m.objects.keys().copied().filter(|a| mix(a ^ seed).is_multiple_of(3)).collect()
                    }
                    _ => {
                        let Op::GcType { ty, .. } = *op else { unreachable!() };
                        m.objects.iter().filter(|(_, o)| o.1 == u32::from(ty % 6)).map(|(&a, _)| a).collect()
                    }
                };
                m.cycle += 1;
                let heap_bytes: u64 = m.objects.values().map(|o| o.0).sum();
                tracer.gc_begin(&c, &GcBeginInfo { cycle: m.cycle, heap_bytes: heap_bytes as usize });
                log!(c.thread_id, EventKind::GcBegin { cycle: m.cycle, heap_bytes });
                let (mut fb, mut fo) = (0, 0);
                for addr in dead {
                    let (size, type_id) = m.objects.remove(&addr).unwrap();
                    tracer.object_free(
                        &c,
                        &ObjectInfo { addr: addr as usize, size: size as usize, bytes: 0, type_id, len: 0 },
                    );
                    log!(c.thread_id, EventKind::ObjFree { addr });
                    fb += size;
                    fo += 1;
                }
                clock.fetch_add(1000, Ordering::Relaxed);
                let live_bytes: u64 = m.objects.values().map(|o| o.0).sum();
                let end = GcEnd {
                    cycle: m.cycle,
                    live_bytes,
                    live_objects: m.objects.len() as u64,
                    freed_bytes: fb,
                    freed_objects: fo,
                    heap_bytes: live_bytes * 2,
                    next_gc_bytes: live_bytes * 3 + 4096,
                    pause_ns: 1000,
                };
                tracer.gc_end(
                    &c,
                    &GcEndInfo {
                        cycle: end.cycle,
                        live_bytes: end.live_bytes as usize,
                        live_objects: end.live_objects as usize,
                        freed_bytes: fb as usize,
                        freed_objects: fo as usize,
                        heap_bytes: end.heap_bytes as usize,
                        next_gc_bytes: end.next_gc_bytes as usize,
                        pause: Duration::from_nanos(1000),
                    },
                );
                log!(c.thread_id, EventKind::GcEnd(end));
            }
            Op::SpanAlloc { thread, pages } => {
                let c = ctx(thread);
                let npages = usize::from(pages % 4) + 1;
                let info = SpanInfo {
                    base: (ARENA + m.next_span * 8192) as usize,
                    npages,
                    size_class: pages % 3,
                    elem_size: 64,
                    nelems: npages * 128,
                };
                m.next_span += npages as u64;
                tracer.span_alloc(&c, &info);
                log!(
                    c.thread_id,
                    EventKind::SpanAlloc(Span {
                        base: info.base as u64,
                        npages: npages as u64,
                        class: info.size_class,
                        elem_size: 64
                    })
                );
                m.spans.insert(info.base as u64, info);
            }
            Op::SpanFree { thread, pick } => {
                let c = ctx(thread);
                if let Some((&base, &info)) = m.spans.iter().nth(usize::from(pick) % m.spans.len().max(1)) {
                    tracer.span_free(&c, &info);
                    log!(c.thread_id, EventKind::SpanFree { base });
                    m.spans.remove(&base);
                }
            }
            Op::StackAlloc { thread, size } => {
                let c = ctx(thread);
                m.next_stack += 1;
                let base = 0x5555_0000_0000 + m.next_stack * 0x10_0000 + u64::from(size % 16);
                let size = u64::from(size);
                tracer.stack_alloc(&c, base as usize, size as usize);
                log!(c.thread_id, EventKind::StackAlloc { base, size });
                m.stacks.insert(base, size);
            }
            Op::StackFree { thread, pick } => {
                let c = ctx(thread);
                if let Some((&base, &size)) = m.stacks.iter().nth(usize::from(pick) % m.stacks.len().max(1)) {
                    tracer.stack_free(&c, base as usize, size as usize);
                    log!(c.thread_id, EventKind::StackFree { base });
                    m.stacks.remove(&base);
                }
            }
            Op::Advance => {
                snapshots.push((m.started.clone(), m.objects.clone()));
                tracer.advance_generation(&m);
            }
            Op::DefineType { id } => {
                let name = format!("$t{id}");
                tracer.define_type(u32::from(id % 6), &name, u64::from(id) * 8);
                m.types.insert(u32::from(id % 6), name);
            }
            Op::DefineSite { id } => {
                let func = format!("$f{}", id % 3);
                let loc = (id % 2 == 0).then_some(("prog.wat", u32::from(id), 5));
                tracer.define_site(
                    u32::from(id % 8),
                    &SiteDesc { function: &func, wasm_offset: u64::from(id) * 3, location: loc },
                );
                m.sites.insert(u32::from(id % 8), func);
            }
            Op::ThreadEnd { thread } => {
                let c = ctx(thread);
                if m.started.remove(&c.thread_id) {
                    tracer.thread_end(c.thread_id);
                    let now = clock.load(Ordering::Relaxed);
                    expected.entry(c.thread_id).or_default().push((now, EventKind::ThreadEnd));
                }
            }
        }
    }
    let stats = tracer.finish().expect("in-memory sink cannot fail");
    Run { bytes: buf.bytes(), expected, snapshots, model: m, lost: stats.lost }
}

/// A fixed, varied workload for tests that need one valid trace.
pub fn sample_ops() -> Vec<Op> {
    let mut ops = vec![Op::DefineType { id: 1 }, Op::DefineType { id: 2 }, Op::DefineSite { id: 2 }];
    for i in 0..40u16 {
        let t = (i % 3) as u8;
        ops.push(Op::SetSite { thread: t, site: (i % 3) as u8 + 1 });
        ops.push(Op::Alloc { thread: t, words: (i % 5) as u8 + 1, ty: (i % 3) as u8, run: 30, at: i * 17 });
        ops.push(Op::Tick(500));
        if i % 4 == 3 {
            ops.push(Op::SpanAlloc { thread: t, pages: i as u8 });
            ops.push(Op::StackAlloc { thread: t, size: 4096 });
            ops.push(Op::Gc { thread: t, seed: u64::from(i) });
        }
        if i % 10 == 9 {
            ops.push(Op::SpanFree { thread: t, pick: i });
            ops.push(Op::StackFree { thread: t, pick: i });
            ops.push(Op::Advance);
        }
    }
    ops.push(Op::ThreadEnd { thread: 1 });
    ops
}
