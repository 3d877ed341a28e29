//! Fuzz-style: whatever the bytes (random, truncated, flipped), the reader and the tools never panic; a
//! truncated file keeps every generation completed before the cut and names an offset at or before it.

mod common;

use common::{Op, run, sample_ops};
use proptest::prelude::*;
use vmtrace::tools::{Profile, dump, summary};
use vmtrace::{Trace, TraceConfig, replay_all};

/// Everything a user can do with a parsed trace, to prove none of it panics.
fn exercise(trace: &Trace) {
    for g in &trace.generations {
        for ev in g.events() {
            std::hint::black_box(ev);
        }
    }
    let _ = replay_all(trace, |_, _, _, _| {});
    let p = Profile::build(trace);
    let _ = summary::render(&p, "fuzz");
    let mut out = Vec::new();
    let _ = dump::write(trace, "fuzz", &mut out);
}

fn small_trace() -> Vec<u8> {
    let ops = vec![
        Op::DefineType { id: 1 },
        Op::DefineSite { id: 2 },
        Op::SetSite { thread: 0, site: 2 },
        Op::Alloc { thread: 0, words: 2, ty: 1, run: 5, at: 3 },
        Op::StackAlloc { thread: 1, size: 100 },
        Op::SpanAlloc { thread: 1, pages: 1 },
        Op::Gc { thread: 0, seed: 7 },
        Op::Advance,
        Op::Alloc { thread: 1, words: 3, ty: 2, run: 4, at: 90 },
        Op::Gc { thread: 1, seed: 8 },
        Op::Advance,
        Op::ThreadEnd { thread: 0 },
    ];
    run(&ops, TraceConfig::default()).bytes
}

/// File offsets just past each `GenEnd` record.
fn gen_ends(bytes: &[u8]) -> Vec<usize> {
    let trace = Trace::parse(bytes.to_vec()).unwrap();
    assert!(trace.error.is_none());
    trace.generations.iter().map(|g| g.end_offset as usize).collect()
}

#[test]
fn every_truncation_keeps_the_complete_generations() {
    let bytes = small_trace();
    let ends = gen_ends(&bytes);
    assert_eq!(ends.len(), 3);
    for cut in 0..bytes.len() {
        match Trace::parse(bytes[..cut].to_vec()) {
            Err(e) => assert!(cut < 12, "cut {cut}: header error {e}"),
            Ok(trace) => {
                let complete = ends.iter().filter(|&&end| end <= cut).count();
                assert_eq!(trace.generations.len(), complete, "cut at {cut}");
                match &trace.error {
                    Some(e) => assert!(e.offset as usize <= cut, "cut {cut}: error at {}", e.offset),
                    // A cut exactly between generations leaves a shorter but well-formed trace.
                    None => assert!(cut == 12 || ends.contains(&cut), "cut {cut} reported no error"),
                }
                exercise(&trace);
            }
        }
    }
}

#[test]
fn truncation_error_names_the_offset() {
    let bytes = small_trace();
    let ends = gen_ends(&bytes);
    let cut = ends[1] + 7;
    let trace = Trace::parse(bytes[..cut].to_vec()).unwrap();
    assert_eq!(trace.generations.len(), 2);
    let msg = trace.error.unwrap().to_string();
    assert!(msg.starts_with(&format!("byte offset {}: truncated record", ends[1])), "{msg}");
}

#[test]
fn the_tools_report_damage_and_still_summarise() {
    let dir = std::env::temp_dir().join(format!("vmtrace-damage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = small_trace();
    let ends = gen_ends(&bytes);
    let path = dir.join("cut.trace");
    std::fs::write(&path, &bytes[..ends[0] + 20]).unwrap();
    let text = summary(&path).unwrap();
    assert!(text.contains("warning: byte offset"), "{text}");
    assert!(text.contains("showing the 1 complete generations"), "{text}");
    let d = dump(&path).unwrap();
    assert!(d.lines().last().unwrap().starts_with("error: byte offset"), "{d}");
    // Nothing readable at all: an error naming the file and the offset.
    std::fs::write(&path, &bytes[..30]).unwrap();
    let err = summary(&path).unwrap_err().to_string();
    assert!(err.contains("cut.trace") && err.contains("byte offset"), "{err}");
    std::fs::write(&path, b"not a trace at all").unwrap();
    let err = summary(&path).unwrap_err().to_string();
    assert!(err.contains("bad magic"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
        let mut bytes = if header { b"VMTRACE\0\x01\x00\x00\x00".to_vec() } else { Vec::new() };
        bytes.extend(tail);
        if let Ok(trace) = Trace::parse(bytes) {
            exercise(&trace);
        }
    }

    #[test]
    fn flipped_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = small_trace();
        for (i, x) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= x.max(1);
        }
        if let Ok(trace) = Trace::parse(bytes) {
            exercise(&trace);
        }
    }
}

#[test]
fn sample_trace_survives_random_cuts() {
    let bytes = run(&sample_ops(), TraceConfig::default()).bytes;
    let ends = gen_ends(&bytes);
    let mut x = 0x9e3779b97f4a7c15u64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cut = (x % bytes.len() as u64) as usize;
        if cut < vmtrace::format::HEADER_LEN {
            // Not even a header: an error, not a trace with no generations.
            assert!(Trace::parse(bytes[..cut].to_vec()).is_err());
            continue;
        }
        let trace = Trace::parse(bytes[..cut].to_vec()).unwrap();
        assert_eq!(trace.generations.len(), ends.iter().filter(|&&e| e <= cut).count());
        exercise(&trace);
    }
}
