//! `vmrun trace summary`: the text report.

use std::fmt::Write as _;

use super::profile::{Counts, LIFETIME_LABELS, Profile, human_bytes, human_ns, seconds};

const TOP: usize = 10;
/// GC rows shown before eliding the middle of the table.
const GC_ROWS: usize = 20;

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 { "-".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

/// Renders the summary of a profile. `name` is the file name shown in the title.
pub fn render(p: &Profile, name: &str) -> String {
    let mut s = String::new();
    // `write!` to a String cannot fail.
    let w = &mut s;
    let _ = writeln!(w, "vmtrace summary: {name}");
    let per_event = if p.events == 0 { 0.0 } else { p.file_len as f64 / p.events as f64 };
    let threads: Vec<String> = p.threads.iter().map(u32::to_string).collect();
    let _ = writeln!(
        w,
        "  {} generations, {} events in {} ({per_event:.2} bytes/event), {} of trace time, threads: {}",
        p.generations,
        p.events,
        human_bytes(p.file_len),
        human_ns(p.duration_ns()),
        if threads.is_empty() { "-".into() } else { threads.join(", ") }
    );
    if let Some(e) = &p.format_error {
        let _ = writeln!(w, "  warning: {e}; showing the {} complete generations before it", p.generations);
    }
    if let Some(e) = &p.first_replay_error {
        let _ = writeln!(w, "  warning: {} events broke the replay (skipped); first: {e}", p.replay_errors);
    }

    let _ = writeln!(w, "\nTotals");
    let _ = writeln!(w, "  allocated      {:>10} objects  {:>10}", p.allocs, human_bytes(p.alloc_bytes));
    let _ = writeln!(w, "  freed          {:>10} objects  {:>10}", p.frees, human_bytes(p.free_bytes));
    if p.initial_objects > 0 {
        let _ = writeln!(
            w,
            "  already live   {:>10} objects  {:>10}  (in the first snapshot)",
            p.initial_objects,
            human_bytes(p.initial_bytes)
        );
    }
    let pause: u64 = p.gcs.iter().map(|g| g.reported.pause_ns).sum();
    let _ = writeln!(w, "  collections    {:>10}          total pause {}", p.gcs.len(), human_ns(pause));
    let _ = writeln!(
        w,
        "  peak live      {:>10} objects  {:>10}  at t={} s",
        p.peak_objects,
        human_bytes(p.peak_bytes),
        seconds(p.peak_ns)
    );
    let _ = writeln!(w, "  live at end    {:>10} objects  {:>10}", p.end_objects, human_bytes(p.end_bytes));

    let table = |w: &mut String, title: &str, rows: Vec<(u32, Counts)>, label: &dyn Fn(u32) -> String| {
        let _ = writeln!(w, "\n{title}");
        if rows.is_empty() {
            let _ = writeln!(w, "  (none)");
            return;
        }
        let _ = writeln!(w, "  {:<32} {:>10} {:>10} {:>10} {:>10}", "", "objects", "bytes", "live obj", "live bytes");
        for (id, c) in rows {
            let _ = writeln!(
                w,
                "  {:<32} {:>10} {:>10} {:>10} {:>10}",
                label(id),
                c.allocs,
                human_bytes(c.alloc_bytes),
                c.live_objects,
                human_bytes(c.live_bytes)
            );
        }
    };
    let type_label = |id: u32| p.type_name(id);
    let site_label = |id: u32| p.site_name(id);
    let _ = writeln!(w, "\nLive at end by type");
    let live_rows = p.top_types(TOP, |c| c.live_bytes);
    if live_rows.is_empty() {
        let _ = writeln!(w, "  (nothing)");
    }
    for (id, c) in live_rows {
        let _ = writeln!(
            w,
            "  {:<32} {:>10} objects {:>10}  {:>6}",
            p.type_name(id),
            c.live_objects,
            human_bytes(c.live_bytes),
            pct(c.live_bytes, p.end_bytes)
        );
    }
    table(w, "Top types by bytes allocated", p.top_types(TOP, |c| c.alloc_bytes), &type_label);
    table(w, "Top types by objects allocated", p.top_types(TOP, |c| c.allocs), &type_label);
    table(w, "Top allocation sites by bytes", p.top_sites(TOP, |c| c.alloc_bytes), &site_label);

    let _ = writeln!(
        w,
        "\nCollections (bytes reclaimed per GC; `check` compares the collector's live figures with the replay)"
    );
    if p.gcs.is_empty() {
        let _ = writeln!(w, "  (none)");
    } else {
        let _ = writeln!(
            w,
            "  {:>6} {:>12} {:>10} {:>12} {:>12} {:>10} {:>12} {:>12}  check",
            "cycle", "at (s)", "pause", "live before", "reclaimed", "objects", "live after", "heap"
        );
        let n = p.gcs.len();
        for (i, g) in p.gcs.iter().enumerate() {
            if n > GC_ROWS && i == GC_ROWS / 2 {
                let _ = writeln!(w, "  ... {} more ...", n - GC_ROWS);
            }
            if n > GC_ROWS && i >= GC_ROWS / 2 && i < n - GC_ROWS / 2 {
                continue;
            }
            let check = if g.agrees() {
                "ok".to_string()
            } else {
                format!("MISMATCH: replay has {} in {} objects", human_bytes(g.replayed_bytes), g.replayed_objects)
            };
            let _ = writeln!(
                w,
                "  {:>6} {:>12} {:>10} {:>12} {:>12} {:>10} {:>12} {:>12}  {check}",
                g.cycle,
                seconds(g.begin_ns),
                human_ns(g.reported.pause_ns),
                human_bytes(g.live_bytes_before),
                human_bytes(g.reclaimed_bytes),
                g.reclaimed_objects,
                human_bytes(g.reported.live_bytes),
                human_bytes(g.reported.heap_bytes),
            );
        }
        let reclaimed: u64 = p.gcs.iter().map(|g| g.reclaimed_bytes).sum();
        let disagree = p.gcs.iter().filter(|g| !g.agrees()).count();
        let _ = writeln!(
            w,
            "  total reclaimed {} in {} collections; {} disagree with the replay",
            human_bytes(reclaimed),
            n,
            disagree
        );
    }

    let _ = writeln!(w, "\nObject lifetimes (freed objects, allocation to free)");
    let max = p.lifetime_counts.iter().copied().max().unwrap_or(0).max(1);
    for (i, label) in LIFETIME_LABELS.iter().enumerate() {
        let c = p.lifetime_counts[i];
        let bar = "#".repeat(((c as u128 * 40).div_ceil(max as u128)) as usize);
        let _ = writeln!(w, "  {label:>10} {c:>10} {:>10}  {bar}", human_bytes(p.lifetime_bytes[i]));
    }
    if p.freed_unknown_age > 0 {
        let _ = writeln!(w, "  {:>10} {:>10}  (allocated before the trace)", "unknown", p.freed_unknown_age);
    }
    let _ = writeln!(w, "  {:>10} {:>10}  (still live at end)", "live", p.end_objects);

    let _ = writeln!(w, "\nTemporary allocations (freed by the first collection after they were allocated)");
    let _ = writeln!(
        w,
        "  {} of {} objects ({}), {} of {}",
        p.temporaries,
        p.allocs,
        pct(p.temporaries, p.allocs),
        human_bytes(p.temporary_bytes),
        human_bytes(p.alloc_bytes)
    );
    for (id, c) in p.top_types(5, |c| c.temporaries) {
        let _ = writeln!(
            w,
            "  {:<32} {:>10} objects {:>10}  ({} of its allocations)",
            p.type_name(id),
            c.temporaries,
            human_bytes(c.temporary_bytes),
            pct(c.temporaries, c.allocs)
        );
    }
    for (id, c) in p.top_sites(3, |c| c.temporaries) {
        let _ = writeln!(
            w,
            "  at {:<29} {:>10} objects {:>10}",
            p.site_name(id),
            c.temporaries,
            human_bytes(c.temporary_bytes)
        );
    }
    s.lines().map(str::trim_end).fold(String::with_capacity(s.len()), |mut out, line| {
        out.push_str(line);
        out.push('\n');
        out
    })
}
