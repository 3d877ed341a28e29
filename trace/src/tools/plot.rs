//! `vmrun trace plot`: an SVG of the heap over time, written by hand (no plotting crate): live bytes from the
//! replay (the maximum in each of [`TIMELINE_BUCKETS`] time buckets, so peaks stay visible), bytes in in-use
//! spans and the collector's goal at each collection, a marker per collection, the peak, axes with
//! human-readable ticks and a legend.

use std::fmt::Write as _;

use super::profile::{Profile, TIMELINE_BUCKETS, human_bytes, human_ns};

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = W - 30.0;
const TOP: f64 = 84.0;
const BOTTOM: f64 = H - 64.0;

const LIVE: &str = "#3b78c4";
const SPANS: &str = "#6b6b6b";
const GOAL: &str = "#e08a1e";
const GC: &str = "#cc2b2b";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A 1-2-5 step for about `target` ticks over `0..=max` (`max` > 0).
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = max / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick positions and labels for a byte axis up to `max`, in the largest binary unit that fits.
fn byte_ticks(max: u64) -> (Vec<(f64, String)>, f64) {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B")];
    let (unit, uname) = units.into_iter().find(|(u, _)| max >= *u).unwrap_or((1, "B"));
    let v = (max as f64 / unit as f64).max(1.0);
    let mut step = nice_step(v, 5.0);
    if unit == 1 {
        step = step.max(1.0);
    }
    let top = (v / step).ceil() * step;
    let ticks = (0..=((top / step).round() as usize))
        .map(|i| {
            let val = i as f64 * step;
            let label = if step.fract() == 0.0 { format!("{val:.0} {uname}") } else { format!("{val:.1} {uname}") };
            (val * unit as f64, label)
        })
        .collect();
    (ticks, top * unit as f64)
}

/// Tick positions (ns) and labels for a time axis of `span` ns.
fn time_ticks(span: u64) -> Vec<(f64, String)> {
    let span = span.max(1) as f64;
    let (unit, uname) = if span >= 2e9 {
        (1e9, "s")
    } else if span >= 2e6 {
        (1e6, "ms")
    } else if span >= 2e3 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    };
    let step = nice_step(span / unit, 8.0);
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    let n = (span / unit / step).floor() as usize;
    (0..=n).map(|i| (i as f64 * step * unit, format!("{:.*} {uname}", decimals, i as f64 * step))).collect()
}

/// Renders the SVG for `p`; `name` is shown in the title.
pub fn render(p: &Profile, name: &str) -> String {
    let span = p.duration_ns().max(1);
    let heap_max = p.heap_points.iter().map(|&(_, h, g)| h.max(g)).max().unwrap_or(0);
    let (yticks, ymax) = byte_ticks(p.peak_bytes.max(heap_max).max(1));
    let x = |ns: u64| LEFT + (ns.saturating_sub(p.start_ns)) as f64 / span as f64 * (RIGHT - LEFT);
    let y = |b: f64| BOTTOM - b / ymax * (BOTTOM - TOP);

    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(w, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        w,
        r#"<text x="{LEFT}" y="26" font-size="17" font-weight="bold">Heap over time: {}</text>"#,
        esc(name)
    );
    let _ = writeln!(
        w,
        r##"<text x="{LEFT}" y="46" fill="#444">peak {} live at {} · {} collections · {} allocations ({}) · {} live at end</text>"##,
        human_bytes(p.peak_bytes),
        human_ns(p.peak_ns.saturating_sub(p.start_ns)),
        p.gcs.len(),
        p.allocs,
        human_bytes(p.alloc_bytes),
        human_bytes(p.end_bytes)
    );

    // Grid and axes.
    for (v, label) in &yticks {
        let yy = y(*v);
        let _ = writeln!(w, r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{RIGHT}" y2="{yy:.1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(w, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, LEFT - 8.0, yy + 4.0);
    }
    for (v, label) in time_ticks(span) {
        let xx = LEFT + v / span as f64 * (RIGHT - LEFT);
        let _ =
            writeln!(w, r##"<line x1="{xx:.1}" y1="{BOTTOM}" x2="{xx:.1}" y2="{:.1}" stroke="#444"/>"##, BOTTOM + 5.0);
        let _ = writeln!(w, r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, BOTTOM + 19.0);
    }
    let _ = writeln!(w, r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}" stroke="#444"/>"##);
    let _ = writeln!(w, r##"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="#444"/>"##);
    let _ = writeln!(
        w,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the trace started</text>"#,
        (LEFT + RIGHT) / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        w,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">bytes</text>"#,
        (TOP + BOTTOM) / 2.0
    );

    // GC markers: faint lines when they are few enough to tell apart, a tick under the axis always.
    let faint = p.gcs.len() <= 300;
    for g in &p.gcs {
        let xx = x(g.begin_ns);
        if faint {
            let _ = writeln!(
                w,
                r#"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{BOTTOM}" stroke="{GC}" stroke-opacity="0.18"/>"#
            );
        }
        let _ = writeln!(
            w,
            r#"<path d="M{xx:.1} {:.1} l-4 7 h8 z" fill="{GC}"><title>GC {} at {}: reclaimed {}</title></path>"#,
            BOTTOM + 1.0,
            g.cycle,
            human_ns(g.begin_ns.saturating_sub(p.start_ns)),
            human_bytes(g.reclaimed_bytes)
        );
    }

    // Live bytes: area under the per-bucket maximum, carrying the last value across empty buckets.
    let bucket_w = (RIGHT - LEFT) / TIMELINE_BUCKETS as f64;
    let mut pts = Vec::new();
    let mut carry: Option<u64> = None;
    for (i, b) in p.timeline.iter().enumerate() {
        let v = if b.seen { Some(b.max_bytes) } else { carry };
        if let Some(v) = v {
            let x0 = LEFT + i as f64 * bucket_w;
            pts.push((x0, y(v as f64)));
            pts.push((x0 + bucket_w, y(v as f64)));
        }
        if b.seen {
            carry = Some(b.last_bytes);
        }
    }
    if let (Some(first), Some(last)) = (pts.first().copied(), pts.last().copied()) {
        let line: String = pts.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            w,
            r#"<polygon points="{:.1},{BOTTOM} {line} {:.1},{BOTTOM}" fill="{LIVE}" fill-opacity="0.25" stroke="none"/>"#,
            first.0, last.0
        );
        let _ = writeln!(w, r#"<polyline points="{line}" fill="none" stroke="{LIVE}" stroke-width="1.5"/>"#);
    }

    // Spans in use and the collector's goal, as steps between collections.
    let steps = |vals: Vec<(u64, u64)>| -> String {
        let mut out = Vec::new();
        let mut prev: Option<f64> = None;
        for (ns, v) in vals {
            let (xx, yy) = (x(ns), y(v as f64));
            if let Some(py) = prev {
                out.push(format!("{xx:.1},{py:.1}"));
            }
            out.push(format!("{xx:.1},{yy:.1}"));
            prev = Some(yy);
        }
        if let Some(py) = prev {
            out.push(format!("{RIGHT:.1},{py:.1}"));
        }
        out.join(" ")
    };
    let spans: Vec<(u64, u64)> = p.heap_points.iter().map(|&(t, h, _)| (t, h)).collect();
    let goals: Vec<(u64, u64)> = p.heap_points.iter().filter(|&&(_, _, g)| g > 0).map(|&(t, _, g)| (t, g)).collect();
    if !spans.is_empty() {
        let _ = writeln!(w, r#"<polyline points="{}" fill="none" stroke="{SPANS}" stroke-width="1.2"/>"#, steps(spans));
    }
    if !goals.is_empty() {
        let _ = writeln!(
            w,
            r#"<polyline points="{}" fill="none" stroke="{GOAL}" stroke-width="1.2" stroke-dasharray="6 4"/>"#,
            steps(goals)
        );
    }

    // The peak.
    if p.peak_bytes > 0 {
        let (px, py) = (x(p.peak_ns), y(p.peak_bytes as f64));
        let anchor = if px > (LEFT + RIGHT) / 2.0 { "end" } else { "start" };
        let dx = if anchor == "end" { -8.0 } else { 8.0 };
        let _ = writeln!(w, r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{LIVE}" stroke="white"/>"#);
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" font-weight="bold" fill="{LIVE}">peak {}</text>"#,
            px + dx,
            (py - 6.0).max(TOP + 10.0),
            human_bytes(p.peak_bytes)
        );
    }

    // Legend, above the plot.
    let ly = 66.0;
    let mut lx = LEFT;
    let items: [(&str, &str); 4] = [
        ("live bytes (replayed)", "live"),
        ("bytes in in-use spans", "spans"),
        ("GC goal", "goal"),
        ("collection", "gc"),
    ];
    for (label, kind) in items {
        let _ = match kind {
            "live" => writeln!(
                w,
                r#"<rect x="{lx}" y="{:.1}" width="16" height="10" fill="{LIVE}" fill-opacity="0.4" stroke="{LIVE}"/>"#,
                ly - 9.0
            ),
            "spans" => writeln!(
                w,
                r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{SPANS}" stroke-width="2"/>"#,
                ly - 4.0,
                lx + 16.0,
                ly - 4.0
            ),
            "goal" => writeln!(
                w,
                r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{GOAL}" stroke-width="2" stroke-dasharray="5 3"/>"#,
                ly - 4.0,
                lx + 16.0,
                ly - 4.0
            ),
            _ => writeln!(w, r#"<path d="M{:.1} {:.1} l-5 9 h10 z" fill="{GC}"/>"#, lx + 8.0, ly - 9.0),
        };
        let _ = writeln!(w, r#"<text x="{:.1}" y="{ly}">{label}</text>"#, lx + 22.0);
        lx += 44.0 + label.len() as f64 * 6.6;
    }
    let _ = writeln!(w, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ticks_cover_the_maximum_with_round_labels() {
        let (ticks, top) = byte_ticks(3 * 1024 * 1024 + 5);
        assert!(top >= (3 * 1024 * 1024 + 5) as f64);
        assert_eq!(ticks[0].1, "0 MiB");
        assert!(ticks.len() <= 9, "{ticks:?}");
        let (ticks, _) = byte_ticks(700);
        assert!(ticks.iter().all(|(_, l)| l.ends_with(" B")));
    }

    #[test]
    fn time_ticks_pick_a_unit() {
        let t = time_ticks(1_500_000_000);
        assert!(t.iter().any(|(_, l)| l.ends_with(" ms")));
        let t = time_ticks(5_000_000_000);
        assert_eq!(t[1].1, "1 s");
    }
}
