//! `vmrun trace perfetto`: Chrome trace-event JSON that ui.perfetto.dev (and chrome://tracing) opens.
//!
//! Tracks (all in process 1): counters `heap live_bytes` / `heap live_objects` (the replayed live set),
//! `live bytes by type <name>` for the top types by allocated bytes (the rest as `other`), `spans
//! in_use_bytes` / `spans gc_goal_bytes` at each collection, GC cycles as `X` slices on the `GC` thread, and
//! generation starts as global instants. Counters are decimated to about [`COUNTER_POINTS`] points, plus
//! exact values at every GC begin and end and at the end of the trace.

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use super::profile::Profile;
use crate::event::EventKind;
use crate::reader::{Applied, IdMap, LiveSet, Trace};

/// Target number of counter samples over the trace.
pub const COUNTER_POINTS: u64 = 20_000;
/// Types with their own counter track.
pub const TOP_TYPES: usize = 8;

const PID: u32 = 1;
const GC_TID: u32 = 0;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

struct Out<'a> {
    w: &'a mut dyn Write,
    first: bool,
}

impl Out<'_> {
    fn put(&mut self, v: &Value) -> io::Result<()> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *self.w, v).map_err(io::Error::other)
    }
}

/// Writes the JSON for `trace` (whose profile is `p`) to `w`.
pub fn write(trace: &Trace, p: &Profile, name: &str, w: &mut dyn Write) -> io::Result<()> {
    w.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    let mut out = Out { w, first: true };
    out.put(&json!({"ph": "M", "name": "process_name", "pid": PID, "args": {"name": format!("vmrun heap: {name}")}}))?;
    out.put(&json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": GC_TID, "args": {"name": "GC"}}))?;
    for &t in &p.threads {
        out.put(&json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": t, "args": {"name": format!("heap thread {t}")}}))?;
    }

    let top: Vec<(u32, String)> =
        p.top_types(TOP_TYPES, |c| c.alloc_bytes).into_iter().map(|(id, _)| (id, p.type_name(id))).collect();
    let is_top: IdMap<u32, usize> = top.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut type_bytes = vec![0u64; top.len() + 1]; // last: other
    let interval = (p.duration_ns() / COUNTER_POINTS).max(1_000);
    let mut last_emit: Option<u64> = None;

    let counters = |out: &mut Out<'_>, ts: u64, live: &LiveSet, type_bytes: &[u64]| -> io::Result<()> {
        out.put(&json!({"ph": "C", "name": "heap", "pid": PID, "ts": us(ts),
            "args": {"live_bytes": live.bytes(), "live_objects": live.objects()}}))?;
        let mut args = Map::new();
        for (i, (_, n)) in top.iter().enumerate() {
            args.insert(n.clone(), json!(type_bytes[i]));
        }
        if p.by_type.len() > top.len() {
            args.insert("other".into(), json!(type_bytes[top.len()]));
        }
        out.put(&json!({"ph": "C", "name": "live bytes by type", "pid": PID, "ts": us(ts), "args": args}))
    };

    let mut live = LiveSet::new();
    let mut gc_begin: Option<(u64, u64)> = None;
    let mut last_ts = p.start_ns;
    for g in &trace.generations {
        out.put(&json!({"ph": "i", "s": "g", "name": format!("generation {}", g.number), "pid": PID,
            "tid": GC_TID, "ts": us(g.start_ns)}))?;
        for ev in g.events() {
            let before = (live.bytes(), live.objects());
            let Ok(applied) = live.apply(&ev) else { continue };
            last_ts = ev.ts;
            let slot = |type_id: u32| is_top.get(&type_id).copied().unwrap_or(top.len());
            match (ev.kind, applied) {
                (
                    EventKind::ObjAlloc { size, type_id, .. } | EventKind::ObjExists { size, type_id, .. },
                    Applied::Allocated,
                ) => {
                    type_bytes[slot(type_id)] += size;
                }
                (_, Applied::Freed(obj)) => type_bytes[slot(obj.type_id)] -= obj.size,
                _ => {}
            }
            let mut force = false;
            match ev.kind {
                EventKind::GcBegin { heap_bytes, .. } => {
                    gc_begin = Some((ev.ts, before.0));
                    out.put(&json!({"ph": "C", "name": "spans", "pid": PID, "ts": us(ev.ts),
                        "args": {"in_use_bytes": heap_bytes}}))?;
                    force = true;
                }
                EventKind::GcEnd(e) => {
                    let (begin, live_before) = gc_begin.take().unwrap_or((ev.ts, e.live_bytes + e.freed_bytes));
                    out.put(&json!({"ph": "X", "name": format!("GC {}", e.cycle), "cat": "gc", "pid": PID,
                        "tid": GC_TID, "ts": us(begin), "dur": us(ev.ts.saturating_sub(begin)),
                        "args": {"live_bytes_before": live_before, "live_bytes_after": e.live_bytes,
                            "live_objects_after": e.live_objects, "freed_bytes": e.freed_bytes,
                            "freed_objects": e.freed_objects, "pause_ns": e.pause_ns}}))?;
                    out.put(&json!({"ph": "C", "name": "spans", "pid": PID, "ts": us(ev.ts),
                        "args": {"in_use_bytes": e.heap_bytes, "gc_goal_bytes": e.next_gc_bytes}}))?;
                    force = true;
                }
                _ => {}
            }
            if force || last_emit.is_none_or(|t| ev.ts >= t + interval) {
                counters(&mut out, ev.ts, &live, &type_bytes)?;
                last_emit = Some(ev.ts);
            }
        }
    }
    counters(&mut out, last_ts, &live, &type_bytes)?;
    out.w.write_all(b"\n]}\n")?;
    Ok(())
}
