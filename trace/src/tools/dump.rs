//! `vmrun trace dump`: one line per event, for humans and grep.

use std::io::{self, Write};

use crate::event::{Event, EventKind};
use crate::reader::{Generation, Trace};

/// Seconds with nanosecond precision.
fn t(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// Writes one event's line (no newline).
pub fn event_line(g: &Generation, ev: &Event, w: &mut dyn Write) -> io::Result<()> {
    write!(w, "{} th={} {}", t(ev.ts), ev.thread, ev.kind.name())?;
    match ev.kind {
        EventKind::ThreadStart | EventKind::ThreadEnd => Ok(()),
        EventKind::ThreadExists { thread } => write!(w, " thread={thread}"),
        EventKind::SpanAlloc(s) | EventKind::SpanExists(s) => {
            write!(w, " base={:#x} pages={} class={} elem_size={}", s.base, s.npages, s.class, s.elem_size)
        }
        EventKind::SpanFree { base } => write!(w, " base={base:#x}"),
        EventKind::ObjAlloc { addr, size, type_id, site } => write!(
            w,
            " addr={addr:#x} size={size} type={type_id}:{} site={site}:{}",
            g.type_name(type_id),
            g.site_name(site)
        ),
        EventKind::ObjFree { addr } => write!(w, " addr={addr:#x}"),
        EventKind::ObjExists { addr, size, type_id } => {
            write!(w, " addr={addr:#x} size={size} type={type_id}:{}", g.type_name(type_id))
        }
        EventKind::StackAlloc { base, size } | EventKind::StackExists { base, size } => {
            write!(w, " base={base:#x} size={size}")
        }
        EventKind::StackFree { base } => write!(w, " base={base:#x}"),
        EventKind::GcBegin { cycle, heap_bytes } => write!(w, " cycle={cycle} heap_bytes={heap_bytes}"),
        EventKind::GcEnd(e) => write!(
            w,
            " cycle={} live_bytes={} live_objects={} freed_bytes={} freed_objects={} heap_bytes={} next_gc_bytes={} \
             pause_ns={}",
            e.cycle,
            e.live_bytes,
            e.live_objects,
            e.freed_bytes,
            e.freed_objects,
            e.heap_bytes,
            e.next_gc_bytes,
            e.pause_ns
        ),
    }
}

/// Writes the whole dump: per generation its header, tables and events in time order; a format error last.
pub fn write(trace: &Trace, name: &str, w: &mut dyn Write) -> io::Result<()> {
    writeln!(
        w,
        "# vmtrace v{}: {name}, {} generations, {} events, {} bytes",
        trace.version,
        trace.generations.len(),
        trace.events(),
        trace.file_len
    )?;
    for g in &trace.generations {
        writeln!(
            w,
            "{} gen_start gen={} wall_unix_ns={} heap_base={:#x} page_size={} offset={}",
            t(g.start_ns),
            g.number,
            g.wall_unix_ns,
            g.heap_base,
            g.page_size,
            g.offset
        )?;
        for (id, ty) in &g.types {
            writeln!(w, "  type {id} {} size_hint={}", ty.name, ty.size_hint)?;
        }
        for (id, site) in &g.sites {
            writeln!(w, "  site {id} {site}")?;
        }
        for ev in g.events() {
            event_line(g, &ev, w)?;
            writeln!(w)?;
        }
        writeln!(
            w,
            "{} gen_end gen={} batches={} events={} bytes={}",
            t(g.end_ns),
            g.number,
            g.batches.len(),
            g.events,
            g.byte_len()
        )?;
    }
    if let Some(e) = &trace.error {
        writeln!(w, "error: {e}")?;
    }
    Ok(())
}
