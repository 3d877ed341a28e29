//! `vmrun --trace allocfree` and `vmrun trace ...` through the real binary, on the GC programs: the trace
//! a real run writes is checked against what the collector itself said (`--gc-stats`, the `GcEnd` figures)
//! and against the heap walk the tracer makes at exit; every generation replays alone; the four tools run
//! on it; damaged files give one error naming the offset; and golden summaries pin down what the tools show
//! for small deterministic programs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmtrace::{EventKind, LiveSet, Trace, replay_all, replay_generation};

fn vmrun(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun")).args(args).output().expect("vmrun starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "vmrun {args:?} crashed:\n{stderr}");
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmrun-trace-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one traced run printed.
struct TracedRun {
    stdout: String,
    /// `(collections, objects allocated, objects freed)` from `--gc-stats`.
    gc_stats: (u64, u64, u64),
}

/// Runs `program export arg` with tracing into `out` (small generations, so a short run has several) and
/// `--gc-stats`.
fn traced_run(out: &Path, extra: &[&str], program: &str, arg: &str) -> TracedRun {
    traced_invoke(out, extra, program, "run", &[arg])
}

/// [`traced_run`] of any export with any arguments.
fn traced_invoke(out: &Path, extra: &[&str], program: &str, export: &str, invoke_args: &[&str]) -> TracedRun {
    let mut args = vec!["--trace", "allocfree", "--trace-out", out.to_str().unwrap(), "--gc-stats"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--invoke", export, program]);
    args.extend_from_slice(invoke_args);
    let run = vmrun(&args);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "vmrun {args:?}: {stderr}");
    assert!(stderr.contains(&format!("vmrun: trace written to {}", out.display())), "{stderr}");
    TracedRun { stdout: text(&run.stdout), gc_stats: parse_gc_stats(&stderr) }
}

/// `gc: N collections, ... allocated X MiB (A objects), freed Y MiB (F objects), ...` → (N, A, F).
fn parse_gc_stats(stderr: &str) -> (u64, u64, u64) {
    let line = stderr.lines().find(|l| l.starts_with("gc: ")).unwrap_or_else(|| panic!("no --gc-stats line: {stderr}"));
    let num_before = |marker: &str| -> u64 {
        let end = line.find(marker).unwrap_or_else(|| panic!("`{marker}` not in {line}"));
        let start = line[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
        line[start..end].parse().unwrap()
    };
    let collections = num_before(" collections");
    let objects: Vec<u64> = line
        .match_indices(" objects)")
        .map(|(end, _)| line[line[..end].rfind('(').unwrap() + 1..end].parse().unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{line}");
    (collections, objects[0], objects[1])
}

/// Objects of a live set (or a snapshot) by address: (size, type).
type Objects = BTreeMap<u64, (u64, u32)>;

fn objects_of(live: &LiveSet) -> Objects {
    live.iter().map(|(a, o)| (a, (o.size, o.type_id))).collect()
}

/// Every check that needs no knowledge of the program: pairing, GC agreement, conservation against the
/// exit-time heap walk, generations replaying alone, and the counts the collector printed.
fn check_trace(path: &Path, run: &TracedRun) -> Trace {
    check_trace_of(path, run, true)
}

/// [`check_trace`]; `all_threads_flushed` is false for a threaded program whose other threads may still be
/// tearing down when the main thread prints `--gc-stats`: the heap counts a thread's allocations lazily
/// (when its spans leave its cache), so the printed allocation count may lag the trace there.
fn check_trace_of(path: &Path, run: &TracedRun, all_threads_flushed: bool) -> Trace {
    let trace = Trace::open(path).unwrap();
    assert!(trace.error.is_none(), "{:?}", trace.error);
    let (collections, allocated, freed) = run.gc_stats;

    // Pairing (replay_all fails on a free of an object that is not live, so also on double frees) and GC
    // agreement (each GcEnd's live figures against the replay at that point).
    let mut allocs = 0u64;
    let mut frees = 0u64;
    let mut gc_ends = 0u64;
    let (live_at_end, disagreements) = replay_all(&trace, |_, ev, _, _| match ev.kind {
        EventKind::ObjAlloc { .. } => allocs += 1,
        EventKind::ObjFree { .. } => frees += 1,
        EventKind::GcEnd(_) => gc_ends += 1,
        _ => {}
    })
    .unwrap_or_else(|e| panic!("{}: replay failed: {e}", path.display()));
    assert!(disagreements.is_empty(), "collector and replay disagree: {disagreements:?}");
    if all_threads_flushed {
        assert_eq!((gc_ends, allocs, frees), (collections, allocated, freed), "trace vs --gc-stats");
    } else {
        assert_eq!((gc_ends, frees), (collections, freed), "trace vs --gc-stats");
        assert!(allocated <= allocs, "--gc-stats counts {allocated} allocations, more than the {allocs} traced");
    }

    // Conservation: the last generation is written at exit, and its snapshot is a walk of the heap as it
    // was then. Replaying every earlier generation's events must give exactly that heap, object by object.
    let n = trace.generations.len();
    assert!(n >= 2, "a run has at least its first generation and the exit snapshot");
    let mut replayed = LiveSet::new();
    for g in &trace.generations[..n - 1] {
        for ev in g.events() {
            replayed.apply(&ev).unwrap();
        }
    }
    let mut walked = Objects::new();
    for ev in trace.generations[n - 1].events().take_while(|e| e.kind.is_snapshot()) {
        if let EventKind::ObjExists { addr, size, type_id } = ev.kind {
            walked.insert(addr, (size, type_id));
        }
    }
    assert_eq!(objects_of(&replayed), walked, "replayed live set vs heap walk at exit");
    assert_eq!(objects_of(&live_at_end), walked);

    // Any single generation replays alone and ends where the replay from the start does.
    let mut from_start = LiveSet::new();
    for g in &trace.generations {
        for ev in g.events() {
            from_start.apply(&ev).unwrap();
        }
        let alone = replay_generation(g).unwrap_or_else(|e| panic!("generation {} alone: {e}", g.number));
        assert_eq!(objects_of(&alone), objects_of(&from_start), "generation {} alone", g.number);
    }
    trace
}

const PROGRAMS: &[(&str, &str, &str)] = &[
    ("programs/binary_trees.wat", "12", "674478"),
    ("programs/gc_cycles.wat", "100000", "5000050000"),
    ("programs/gc_arrays.wat", "5000", "6254835000"),
    ("programs/gc_casts.wat", "3000", "8990003000"),
    ("programs/gc_exceptions.wat", "60000", "4332000000"),
];

#[test]
fn traces_of_the_gc_programs_agree_with_the_collector_and_the_heap() {
    let dir = scratch("programs");
    for (program, arg, expected) in PROGRAMS {
        let path = dir.join("run.trace");
        let run = traced_run(&path, &["--trace-generation", "64KiB"], program, arg);
        assert_eq!(run.stdout.trim(), *expected, "{program} {arg}");
        let trace = check_trace(&path, &run);
        if *program != "programs/gc_casts.wat" {
            assert!(run.gc_stats.0 >= 3, "{program}: want several collections, got {}", run.gc_stats.0);
            assert!(trace.generations.len() >= 3, "{program}: want generations mid-run");
        }
        // Types carry their names from the name section, sites their function and source line.
        let last = trace.generations.last().unwrap();
        let file = Path::new(program).file_name().unwrap().to_str().unwrap();
        assert!(last.types.values().any(|t| t.name.starts_with('$')), "{program}: {:?}", last.types);
        if *program == "programs/gc_exceptions.wat" {
            // Exceptions are objects of the heap, traced under their tag's name.
            for tag in ["tag $found", "tag $empty"] {
                assert!(last.types.values().any(|t| t.name == tag), "{tag} in {:?}", last.types);
            }
        }
        for site in last.sites.values() {
            assert!(site.function.starts_with('$'), "{site}");
            let (f, line, col) = site.location.clone().unwrap_or_else(|| panic!("{program}: no line for {site}"));
            assert!(f.ends_with(file) && line > 0 && col > 0, "{site}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tracing_under_gc_stress_still_agrees() {
    // A collection at every 5th allocation: many cycles, each checked against the replay.
    let dir = scratch("stress");
    let path = dir.join("stress.trace");
    let run = traced_run(&path, &["--gc-stress=5", "--gc-verify"], "programs/binary_trees.wat", "6");
    assert_eq!(run.stdout.trim(), "4398");
    assert!(run.gc_stats.0 > 100, "{:?}", run.gc_stats);
    check_trace(&path, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_threaded_program_traces_each_thread_and_still_pairs_and_conserves() {
    // 4 wasi-threads threads build GC lists while collections (every 300th allocation) stop all of them.
    let dir = scratch("threads");
    let path = dir.join("threads.trace");
    let run = traced_invoke(
        &path,
        &["--trace-generation", "64KiB", "--gc-stress=300", "--gc-verify"],
        "programs/threads.wat",
        "lists",
        &["4", "100"],
    );
    assert_eq!(run.stdout.trim(), "1980000");
    assert!(run.gc_stats.0 >= 10, "want collections while threads run: {:?}", run.gc_stats);
    let trace = check_trace_of(&path, &run, false);
    // Every spawned thread allocated in batches of its own, between its start and its end.
    let mut allocating: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut started, mut ended) = (Vec::new(), Vec::new());
    for g in &trace.generations {
        for ev in g.events() {
            match ev.kind {
                EventKind::ThreadStart => started.push(ev.thread),
                EventKind::ThreadEnd => ended.push(ev.thread),
                EventKind::ObjAlloc { .. } => *allocating.entry(ev.thread).or_default() += 1,
                _ => {}
            }
        }
    }
    assert_eq!(allocating.len(), 4, "allocations by thread: {allocating:?}");
    for (thread, n) in &allocating {
        assert_eq!(*n, 100 * 100, "thread {thread}");
        assert!(started.contains(thread), "thread {thread} has no start event: {started:?}");
    }
    assert!(started.len() >= 5, "the main thread and 4 spawned: {started:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_four_tools_read_a_real_trace() {
    let dir = scratch("tools");
    let path = dir.join("bt.trace");
    let run = traced_run(&path, &[], "programs/binary_trees.wat", "12");
    let p = path.to_str().unwrap();

    let summary = vmrun(&["trace", "summary", p]);
    assert_eq!(summary.status.code(), Some(0), "{}", text(&summary.stderr));
    let s = text(&summary.stdout);
    for needle in [
        "Totals",
        "Live at end by type",
        "$tree",
        "Top allocation sites by bytes",
        "$make+0x",
        "binary_trees.wat:",
        "total reclaimed",
        " 0 disagree with the replay",
        "Object lifetimes",
        "Temporary allocations",
    ] {
        assert!(s.contains(needle), "summary lacks `{needle}`:\n{s}");
    }

    let dump = vmrun(&["trace", "dump", p]);
    assert_eq!(dump.status.code(), Some(0));
    let d = text(&dump.stdout);
    let allocs = d.lines().filter(|l| l.contains(" obj_alloc ")).count() as u64;
    let frees = d.lines().filter(|l| l.contains(" obj_free ")).count() as u64;
    assert_eq!((allocs, frees), (run.gc_stats.1, run.gc_stats.2));
    assert!(d.lines().any(|l| l.contains(" gc_end ") && l.contains("live_bytes=")));
    // The mutator's two stacks (value stack, native stack) are in the trace with their sizes.
    let stack_sizes: Vec<&str> =
        d.lines().filter(|l| l.contains(" stack_alloc ")).filter_map(|l| l.split("size=").nth(1)).collect();
    assert_eq!(stack_sizes.len(), 2, "value stack and native stack:\n{d:.2000}");
    assert!(stack_sizes.contains(&"2097152"), "the 2 MiB native stack: {stack_sizes:?}");

    let json_path = dir.join("bt.json");
    let perfetto = vmrun(&["trace", "perfetto", p, "-o", json_path.to_str().unwrap()]);
    assert_eq!(perfetto.status.code(), Some(0), "{}", text(&perfetto.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let gc_slices = events.iter().filter(|e| e["ph"] == "X").count() as u64;
    assert_eq!(gc_slices, run.gc_stats.0, "one slice per collection");
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "heap"));

    let svg_path = dir.join("heap.svg");
    let plot = vmrun(&["trace", "plot", p, "-o", svg_path.to_str().unwrap()]);
    assert_eq!(plot.status.code(), Some(0), "{}", text(&plot.stderr));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("live bytes"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_traces_give_one_error_naming_the_offset() {
    let dir = scratch("damage");
    let path = dir.join("full.trace");
    traced_run(&path, &["--trace-generation", "64KiB"], "programs/gc_cycles.wat", "100000");
    let bytes = std::fs::read(&path).unwrap();
    let trace = Trace::parse(bytes.clone()).unwrap();
    assert!(trace.generations.len() >= 3);

    // Cut in the middle of the third generation: the first two are still read, then the error.
    let g3 = &trace.generations[2];
    let cut = ((g3.offset + g3.end_offset) / 2) as usize;
    let cut_path = dir.join("cut.trace");
    std::fs::write(&cut_path, &bytes[..cut]).unwrap();
    for tool in [&["summary"][..], &["dump"], &["plot", "-o", dir.join("cut.svg").to_str().unwrap()]] {
        let mut args = vec!["trace", tool[0], cut_path.to_str().unwrap()];
        args.extend_from_slice(&tool[1..]);
        let out = vmrun(&args);
        let err = text(&out.stderr);
        let err_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err_lines.len(), 1, "{err}");
        assert!(
            err_lines[0].contains("cut.trace: byte offset ") && err_lines[0].contains("2 complete generations"),
            "{err}"
        );
        let offset: u64 =
            err_lines[0].split("byte offset ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
        assert!(offset >= g3.offset && offset <= cut as u64, "offset {offset} outside the damaged generation");
    }
    let summary = vmrun(&["trace", "summary", cut_path.to_str().unwrap()]);
    assert!(text(&summary.stdout).contains("2 generations"), "{}", text(&summary.stdout));

    // Nothing readable at all: an error and no output.
    for (name, content) in
        [("garbage.trace", &b"this is not a trace"[..]), ("empty.trace", b""), ("header.trace", &bytes[..40])]
    {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let out = vmrun(&["trace", "summary", p.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.starts_with("error: ") && err.contains(name), "{name}: {err}");
        assert!(out.stdout.is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_out_needs_trace() {
    let out = vmrun(&["--trace-out", "x.trace", "--invoke", "run", "programs/binary_trees.wat", "3"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("--trace <KIND>"), "{}", text(&out.stderr));
    assert!(!Path::new("x.trace").exists());
}

/// The parts of a summary that do not depend on timing: totals without pause and time, live at end by
/// type, the top types and sites, and each collection's byte and object figures.
fn deterministic_part(summary: &str) -> String {
    let mut out = String::new();
    for section in summary.split("\n\n") {
        let title = section.lines().next().unwrap_or("");
        let keep_whole =
            ["Live at end by type", "Top types by", "Top allocation sites"].iter().any(|t| title.starts_with(t));
        if keep_whole {
            out.push_str(section);
            out.push_str("\n\n");
        } else if title.starts_with("Collections") {
            // Without the time and pause columns: cycle, then the byte and object figures and the check.
            out.push_str(title);
            out.push('\n');
            for line in section.lines().skip(2) {
                let tokens: Vec<&str> = line.split_whitespace().collect();
                if tokens.first().is_some_and(|t| t.chars().all(|c| c.is_ascii_digit())) && tokens.len() > 4 {
                    out.push_str(&format!("  {} {}\n", tokens[0], tokens[4..].join(" ")));
                } else {
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
            out.push('\n');
        } else if title == "Totals" {
            for line in section.lines() {
                let line = line.split("  total pause").next().unwrap().split("  at t=").next().unwrap();
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out.push('\n');
        }
    }
    out
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("VMRUN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (bless with VMRUN_BLESS=1)", path.display()));
    assert!(expected == actual, "{name} differs from {}:\n--- actual ---\n{actual}", path.display());
}

#[test]
fn golden_summaries_of_small_programs() {
    let dir = scratch("golden");
    for (program, arg, name) in [
        ("programs/binary_trees.wat", "12", "binary_trees_12.summary.txt"),
        ("programs/gc_arrays.wat", "2000", "gc_arrays_2000.summary.txt"),
        ("programs/gc_casts.wat", "30", "gc_casts_30.summary.txt"),
    ] {
        let path = dir.join("golden.trace");
        // The interpreter: a compiled frame keeps only the references still live at a collection, and when
        // code is compiled depends on tier-up, so the numbers are pinned down in one tier.
        traced_run(&path, &["--jit=off"], program, arg);
        let out = vmrun(&["trace", "summary", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let s = deterministic_part(&text(&out.stdout));
        assert!(s.contains("Live at end by type") && s.contains("allocated"), "{s}");
        golden(name, &s);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_that_traps_still_leaves_a_complete_trace() {
    // Out of memory half-way through: the trap is reported as usual and the trace is closed with the heap
    // as the trap left it.
    let dir = scratch("trap");
    let path = dir.join("oom.trace");
    let out = vmrun(&[
        "--trace",
        "allocfree",
        "--trace-out",
        path.to_str().unwrap(),
        "--max-heap",
        "2MiB",
        "--invoke",
        "run",
        "programs/binary_trees.wat",
        "16",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(134), "{err}");
    assert!(err.contains("error: wasm trap: out of memory: heap limit 2 MiB reached"), "{err}");
    assert!(err.contains("vmrun: trace written to"), "{err}");
    let trace = Trace::open(&path).unwrap();
    assert!(trace.error.is_none(), "{:?}", trace.error);
    let (live, disagreements) = replay_all(&trace, |_, _, _, _| {}).unwrap();
    assert!(disagreements.is_empty(), "{disagreements:?}");
    assert!(live.bytes() > 1 << 20 && live.bytes() <= 2 << 20, "live at the trap: {} bytes", live.bytes());
    let _ = std::fs::remove_dir_all(&dir);
}
