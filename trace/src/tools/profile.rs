//! One replay pass over a whole trace, gathering what the summary and the plot show: totals, the peak, the
//! live set at the end, per-type and per-site counts, GC cycles checked against the replay, object lifetimes,
//! temporary allocations, and a bucketed timeline of live bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{EventKind, GcEnd};
use crate::reader::{Applied, IdMap, LiveSet, ReplayError, SiteDef, Trace};

/// Buckets of the live-bytes timeline.
pub const TIMELINE_BUCKETS: usize = 1000;

/// Upper bounds (ns, exclusive) of the lifetime histogram buckets; the last bucket is open.
pub const LIFETIME_BOUNDS: [u64; 7] = [1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];
pub const LIFETIME_LABELS: [&str; 8] =
    ["< 1 µs", "1-10 µs", "10-100 µs", "0.1-1 ms", "1-10 ms", "10-100 ms", "0.1-1 s", ">= 1 s"];

/// Per-type (or per-site) counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub live_objects: u64,
    pub live_bytes: u64,
    pub temporaries: u64,
    pub temporary_bytes: u64,
}

/// One collection as the trace shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcCycle {
    pub cycle: u64,
    pub begin_ns: u64,
    pub end_ns: u64,
    /// Replayed live set when the cycle began.
    pub live_bytes_before: u64,
    pub live_objects_before: u64,
    /// Replayed frees between begin and end.
    pub reclaimed_bytes: u64,
    pub reclaimed_objects: u64,
    /// The collector's own figures.
    pub reported: GcEnd,
    /// Replayed live set at the end.
    pub replayed_bytes: u64,
    pub replayed_objects: u64,
}

impl GcCycle {
    pub fn agrees(&self) -> bool {
        self.replayed_bytes == self.reported.live_bytes && self.replayed_objects == self.reported.live_objects
    }
}

/// One timeline bucket: live bytes seen while it lasted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub seen: bool,
    pub min_bytes: u64,
    pub max_bytes: u64,
    pub last_bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub generations: usize,
    pub events: u64,
    pub file_len: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub threads: BTreeSet<u32>,
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    pub free_bytes: u64,
    /// Objects the first generation's snapshot listed (live before tracing began).
    pub initial_objects: u64,
    pub initial_bytes: u64,
    pub peak_bytes: u64,
    pub peak_objects: u64,
    pub peak_ns: u64,
    pub end_bytes: u64,
    pub end_objects: u64,
    pub by_type: IdMap<u32, Counts>,
    pub by_site: IdMap<u32, Counts>,
    pub type_names: BTreeMap<u32, String>,
    pub sites: BTreeMap<u32, SiteDef>,
    pub gcs: Vec<GcCycle>,
    /// Lifetimes of freed objects whose allocation the trace saw: counts and bytes per bucket.
    pub lifetime_counts: [u64; 8],
    pub lifetime_bytes: [u64; 8],
    /// Freed objects that came from a snapshot (allocation time unknown).
    pub freed_unknown_age: u64,
    pub temporaries: u64,
    pub temporary_bytes: u64,
    pub timeline: Vec<Bucket>,
    /// `(ns, heap_bytes, next_gc_bytes)` at each GC begin (next goal unknown: 0) and end.
    pub heap_points: Vec<(u64, u64, u64)>,
    /// Problems: the reader's, and replay invariants broken (the offending events are skipped).
    pub format_error: Option<String>,
    pub replay_errors: u64,
    pub first_replay_error: Option<ReplayError>,
    /// The live set at the end.
    pub live: LiveSet,
}

impl Profile {
    pub fn build(trace: &Trace) -> Profile {
        let mut p = Profile {
            generations: trace.generations.len(),
            events: trace.events(),
            file_len: trace.file_len,
            format_error: trace.error.as_ref().map(ToString::to_string),
            timeline: vec![Bucket::default(); TIMELINE_BUCKETS],
            ..Profile::default()
        };
        let Some(first) = trace.generations.first() else { return p };
        p.start_ns = first.start_ns;
        p.end_ns = trace.generations.iter().map(|g| g.end_ns).max().unwrap_or(p.start_ns);
        let bucket_scale = TIMELINE_BUCKETS as f64 / (p.end_ns - p.start_ns).max(1) as f64;
        let mut live = LiveSet::new();
        // (begin time, live bytes, live objects) of the collection in progress.
        let mut open_gc: Option<(u64, u64, u64)> = None;
        let mut reclaimed = (0u64, 0u64);
        // End of the collection before the current one: objects allocated after it and freed by the current
        // one are temporaries.
        let mut prev_gc_end = 0u64;
        let mut last_gc_end = 0u64;
        for (gi, g) in trace.generations.iter().enumerate() {
            for (id, t) in &g.types {
                p.type_names.insert(*id, t.name.clone());
            }
            for (id, s) in &g.sites {
                p.sites.insert(*id, s.clone());
            }
            for ev in g.events() {
                if ev.thread != 0 {
                    p.threads.insert(ev.thread);
                }
                let applied = match live.apply(&ev) {
                    Ok(a) => a,
                    Err(e) => {
                        p.replay_errors += 1;
                        p.first_replay_error.get_or_insert(e);
                        continue;
                    }
                };
                match (ev.kind, applied) {
                    (EventKind::ObjAlloc { size, type_id, site, .. }, Applied::Allocated) => {
                        p.allocs += 1;
                        p.alloc_bytes += size;
                        for c in [p.by_type.entry(type_id).or_default(), p.by_site.entry(site).or_default()] {
                            c.allocs += 1;
                            c.alloc_bytes += size;
                        }
                    }
                    (EventKind::ObjExists { size, .. }, Applied::Allocated) if gi == 0 => {
                        p.initial_objects += 1;
                        p.initial_bytes += size;
                    }
                    (EventKind::ObjFree { .. }, Applied::Freed(obj)) => {
                        p.frees += 1;
                        p.free_bytes += obj.size;
                        reclaimed.0 += obj.size;
                        reclaimed.1 += 1;
                        if obj.from_snapshot {
                            p.freed_unknown_age += 1;
                        } else {
                            let age = ev.ts.saturating_sub(obj.alloc_ns);
                            let b = LIFETIME_BOUNDS.iter().position(|&bound| age < bound).unwrap_or(7);
                            p.lifetime_counts[b] += 1;
                            p.lifetime_bytes[b] += obj.size;
                            if open_gc.is_some() && obj.alloc_ns >= prev_gc_end {
                                p.temporaries += 1;
                                p.temporary_bytes += obj.size;
                                for c in
                                    [p.by_type.entry(obj.type_id).or_default(), p.by_site.entry(obj.site).or_default()]
                                {
                                    c.temporaries += 1;
                                    c.temporary_bytes += obj.size;
                                }
                            }
                        }
                    }
                    (EventKind::GcBegin { heap_bytes, .. }, _) => {
                        open_gc = Some((ev.ts, live.bytes(), live.objects() as u64));
                        reclaimed = (0, 0);
                        prev_gc_end = last_gc_end;
                        p.heap_points.push((ev.ts, heap_bytes, 0));
                    }
                    (EventKind::GcEnd(e), _) => {
                        let (begin, bytes_before, objects_before) = match open_gc.take() {
                            Some(before) => before,
                            // A generation may start between begin and end; fall back to what is known.
                            None => (ev.ts, live.bytes() + reclaimed.0, live.objects() as u64 + reclaimed.1),
                        };
                        p.gcs.push(GcCycle {
                            cycle: e.cycle,
                            begin_ns: begin,
                            end_ns: ev.ts,
                            live_bytes_before: bytes_before,
                            live_objects_before: objects_before,
                            reclaimed_bytes: reclaimed.0,
                            reclaimed_objects: reclaimed.1,
                            reported: e,
                            replayed_bytes: live.bytes(),
                            replayed_objects: live.objects() as u64,
                        });
                        reclaimed = (0, 0);
                        last_gc_end = ev.ts;
                        p.heap_points.push((ev.ts, e.heap_bytes, e.next_gc_bytes));
                    }
                    _ => {}
                }
                if live.bytes() > p.peak_bytes {
                    p.peak_bytes = live.bytes();
                    p.peak_objects = live.objects() as u64;
                    p.peak_ns = ev.ts;
                }
                let bi = ((ev.ts.saturating_sub(p.start_ns) as f64 * bucket_scale) as usize).min(TIMELINE_BUCKETS - 1);
                let b = &mut p.timeline[bi];
                if !b.seen {
                    *b = Bucket {
                        seen: true,
                        min_bytes: live.bytes(),
                        max_bytes: live.bytes(),
                        last_bytes: live.bytes(),
                    };
                } else {
                    b.min_bytes = b.min_bytes.min(live.bytes());
                    b.max_bytes = b.max_bytes.max(live.bytes());
                    b.last_bytes = live.bytes();
                }
            }
        }
        p.end_bytes = live.bytes();
        p.end_objects = live.objects() as u64;
        for (_, obj) in live.iter() {
            let c = p.by_type.entry(obj.type_id).or_default();
            c.live_objects += 1;
            c.live_bytes += obj.size;
            let c = p.by_site.entry(obj.site).or_default();
            c.live_objects += 1;
            c.live_bytes += obj.size;
        }
        p.live = live;
        p
    }

    /// `$name` of a type id, or `type#N`.
    pub fn type_name(&self, type_id: u32) -> String {
        match self.type_names.get(&type_id) {
            Some(n) if !n.is_empty() => n.clone(),
            _ => format!("type#{type_id}"),
        }
    }

    pub fn site_name(&self, site: u32) -> String {
        match self.sites.get(&site) {
            Some(s) => s.to_string(),
            None if site == 0 => "(unknown site)".to_string(),
            None => format!("site#{site}"),
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// Type ids ordered by `key` descending, then id; at most `n`.
    pub fn top_types(&self, n: usize, key: impl Fn(&Counts) -> u64) -> Vec<(u32, Counts)> {
        let mut v: Vec<(u32, Counts)> =
            self.by_type.iter().map(|(&k, &c)| (k, c)).filter(|(_, c)| key(c) > 0).collect();
        v.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn top_sites(&self, n: usize, key: impl Fn(&Counts) -> u64) -> Vec<(u32, Counts)> {
        let mut v: Vec<(u32, Counts)> =
            self.by_site.iter().map(|(&k, &c)| (k, c)).filter(|(_, c)| key(c) > 0).collect();
        v.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// `1.5 KiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `12.3 ms`-style durations.
pub fn human_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// Trace time as seconds with microsecond precision.
pub fn seconds(ns: u64) -> String {
    format!("{:.6}", ns as f64 / 1e9)
}
