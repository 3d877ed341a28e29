//! The tools on small deterministic traces: golden summaries and dumps (`tests/golden/`; regenerate with
//! `VMTRACE_BLESS=1 cargo test -p vmtrace --test tools`), and structural checks of the Perfetto JSON and the
//! SVG plot.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::{Op, run, sample_ops};
use vmtrace::tools::{Profile, dump, perfetto, plot, summary};
use vmtrace::{Trace, TraceConfig};

/// A program whose shape is known: each round allocates 2 long-lived `$tree`s (type 1, site 1) and 12
/// temporary `$tmp`s (type 2, site 2), then collects (the temporaries die), 4 rounds, one generation
/// switch after round 2.
fn temporaries_ops() -> Vec<Op> {
    let mut ops =
        vec![Op::DefineType { id: 1 }, Op::DefineType { id: 2 }, Op::DefineSite { id: 1 }, Op::DefineSite { id: 2 }];
    for round in 0..4u16 {
        ops.push(Op::SetSite { thread: 0, site: 1 });
        ops.push(Op::Alloc { thread: 0, words: 4, ty: 1, run: 2, at: round * 4 });
        ops.push(Op::Tick(10_000));
        ops.push(Op::SetSite { thread: 0, site: 2 });
        ops.push(Op::Alloc { thread: 0, words: 2, ty: 2, run: 12, at: 1000 + round * 40 });
        ops.push(Op::Tick(50_000));
        ops.push(Op::GcType { thread: 0, ty: 2 });
        ops.push(Op::Tick(1_000_000));
        if round == 1 {
            ops.push(Op::Advance);
        }
    }
    ops
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmtrace-tools-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_trace(name: &str, ops: &[Op]) -> PathBuf {
    let path = dir().join(name);
    std::fs::write(&path, run(ops, TraceConfig::default()).bytes).unwrap();
    path
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("VMTRACE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with VMTRACE_BLESS=1)", path.display()));
    if expected != actual {
        panic!("{name} differs from the golden file {}:\n--- actual ---\n{actual}", path.display());
    }
}

#[test]
fn golden_summary_of_temporaries() {
    let path = write_trace("temporaries.trace", &temporaries_ops());
    let text = summary(&path).unwrap();
    golden("temporaries.summary.txt", &text);
    // The facts the golden file shows, stated once more so a careless bless cannot hide a regression.
    let p = Profile::build(&Trace::open(&path).unwrap());
    assert_eq!(p.gcs.len(), 4);
    assert!(p.gcs.iter().all(|g| g.agrees()));
    assert_eq!(p.allocs, 4 * 14);
    assert_eq!((p.frees, p.temporaries), (4 * 12, 4 * 12));
    assert_eq!(p.end_objects, 4 * 2);
}

#[test]
fn golden_dump_of_temporaries() {
    let path = write_trace("temporaries-dump.trace", &temporaries_ops());
    let text = dump(&path).unwrap();
    golden("temporaries.dump.txt", &text);
    assert!(text.lines().any(|l| l.contains("obj_alloc") && l.contains("type=1:$t1")));
}

#[test]
fn golden_summary_of_the_sample_workload() {
    let path = write_trace("sample.trace", &sample_ops());
    golden("sample.summary.txt", &summary(&path).unwrap());
}

#[test]
fn perfetto_json_is_well_formed_and_ends_at_the_live_bytes() {
    let path = write_trace("perfetto.trace", &sample_ops());
    let out = dir().join("perfetto.json");
    perfetto(&path, &out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let mut last_ts: HashMap<String, f64> = HashMap::new();
    let mut last_live = None;
    let mut slices = 0;
    for e in events {
        let ph = e["ph"].as_str().unwrap();
        assert!(e["pid"].is_number(), "{e}");
        match ph {
            "C" => {
                let name = e["name"].as_str().unwrap().to_string();
                let ts = e["ts"].as_f64().unwrap();
                let args = e["args"].as_object().unwrap();
                assert!(!args.is_empty() && args.values().all(|v| v.is_number()), "{e}");
                let prev = last_ts.insert(name.clone(), ts).unwrap_or(0.0);
                assert!(ts >= prev, "{name}: time went back");
                if name == "heap" {
                    last_live = args["live_bytes"].as_u64();
                }
            }
            "X" => {
                assert!(e["dur"].as_f64().unwrap() >= 0.0 && e["tid"].is_number());
                slices += 1;
            }
            "M" | "i" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    let p = Profile::build(&Trace::open(&path).unwrap());
    assert_eq!(slices, p.gcs.len());
    assert_eq!(last_live, Some(p.end_bytes));
    assert!(last_ts.contains_key("live bytes by type"));
}

#[test]
fn plot_svg_has_axes_legend_and_a_marker_per_gc() {
    let path = write_trace("plot.trace", &sample_ops());
    let out = dir().join("heap.svg");
    plot(&path, &out).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    for label in [
        "Heap over time: plot.trace",
        "live bytes (replayed)",
        "GC goal",
        "collection",
        "time since the trace started",
        "peak ",
    ] {
        assert!(svg.contains(label), "missing {label}");
    }
    let p = Profile::build(&Trace::open(&path).unwrap());
    assert_eq!(svg.matches("<title>GC ").count(), p.gcs.len());
    // Balanced tags (a cheap well-formedness check): every element is self-closed or closed.
    let opens = svg.matches('<').count();
    let closes = svg.matches("/>").count() + svg.matches("</").count() * 2;
    assert_eq!(opens, closes, "unbalanced SVG");
}
