//! `vmrun --race` on real threads (wasi-threads): every scenario of `tests/fixtures/race/races.wat` in both
//! orders (the thread's access first, then the main thread's, and the reverse; the order is fixed by a wait
//! that times out, which orders nothing). Racy scenarios report exactly one race, Go-style, with exit code
//! 66; race-free ones (atomics, a wait/notify hand-off, the spawn edge, a compare-and-swap lock, adjacent
//! bytes) report nothing. Every scenario runs in both tiers (`--jit=off` and `--jit=eager`: compiled code
//! calls the same hooks, and its reports' backtraces walk compiled frames). Negative controls: the
//! detector's planted bug `VMRACE_DEBUG=ignore-acquire` turns the synchronized scenarios into false
//! reports, the compiler's `VMRUN_JIT_DEBUG=race-skip-store-hook` hides the write races of compiled code,
//! and without `--race` nothing is reported.
//!
//! The second half runs `tests/fixtures/race/shared_gc.wat` (shared structs, arrays and globals, threads
//! started with `vmrun`.`thread_spawn`) the same way: races on fields, elements, bulk array operations
//! and shared globals, reported once in both orders and identically by both tiers (heap addresses aside),
//! and race-free hand-offs. Negative controls: `VMRUN_JIT_DEBUG=race-skip-object-hook` (compiled code
//! skips the object and global hooks), `VMRUN_RACE_DEBUG=skip-range-hook|skip-global-hook` (both tiers),
//! `VMRACE_DEBUG=ignore-acquire`, and the sweep's free / allocation's reset pair.
//!
//! The last part runs `tests/fixtures/race/stacks.wat`: both accesses of a report show their whole wasm
//! backtraces (the previous one from the stack depot), in the interpreter, compiled, and with compiled and
//! interpreted frames mixed, for memory, fields, elements and globals. Negative control:
//! `VMRUN_RACE_DEBUG=one-frame-depot` (the depot keeps one frame per stack).
//!
//! Finally `tests/fixtures/race/tables.wat`: elements of a shared table read and written by `table.get`,
//! `set`, `fill`, `copy`, `init` and `grow`, racy in both orders and tiers, and race-free hand-offs.
//! Negative controls: `VMRUN_RACE_DEBUG=skip-table-hook` and `VMRACE_DEBUG=ignore-acquire`.

use std::process::{Command, Output};

const RACES: &str = "tests/fixtures/race/races.wat";

/// The tiers every scenario runs in.
const TIERS: [&str; 2] = ["--jit=off", "--jit=eager"];

fn vmrun(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env_remove("VMRACE_DEBUG").env_remove("VMRUN_RACE_DEBUG").env_remove("VMRUN_JIT_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("vmrun starts")
}

/// Runs scenario `s` in `order` with `--race` in `tier`: (exit code, stdout, stderr).
fn scenario(tier: &str, s: u32, order: u32, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    in_order(order, || {
        let (s, order) = (s.to_string(), order.to_string());
        let out = vmrun(&["--race", tier, "--invoke", "run", RACES, &s, &order], env);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// Runs `run` until a race it reports has the access of `order` second (order 0: the main thread's,
/// thread 1; order 1: the spawned thread's, thread 2), at most four times. The fixtures order the two
/// accesses with a wait that times out (anything that synchronizes would hide the race), so on a loaded
/// machine the delayed side can still come first; a run without a report is returned as it is.
fn in_order(order: u32, run: impl Fn() -> (Option<i32>, String, String)) -> (Option<i32>, String, String) {
    let second = format!(" by thread {}:", order + 1);
    let mut last = run();
    for _ in 0..3 {
        let report = last.2.split("WARNING: DATA RACE").nth(1);
        let first_line = report.and_then(|r| r.lines().find(|l| l.contains(" by thread ")));
        if first_line.is_none_or(|l| l.ends_with(&second)) {
            break;
        }
        last = run();
    }
    last
}

/// (scenario, the main thread's access, the thread's access) as the report names them.
const RACY: &[(u32, &str, &str)] = &[
    (1, "Write at 0x40 (4 bytes)", "write at 0x40 (4 bytes)"),
    (2, "Write at 0x40 (4 bytes)", "read at 0x40 (4 bytes)"),
    (3, "Read at 0x40 (4 bytes)", "write at 0x40 (4 bytes)"),
    (4, "Write at 0x40 (1 bytes)", "write at 0x40 (1 bytes)"),
    (5, "Write at 0x40 (2 bytes)", "write at 0x40 (2 bytes)"),
    (6, "Write at 0x40 (8 bytes)", "write at 0x40 (8 bytes)"),
    (7, "Read at 0x40 (8 bytes)", "write at 0x42 (4 bytes)"),
    (9, "Read at 0x40 (4 bytes)", "atomic write at 0x40 (4 bytes)"),
    (14, "Write at 0x40 (4 bytes)", "write at 0x40 (4 bytes)"),
];

const RACE_FREE: &[u32] = &[8, 10, 11, 12, 13];

#[test]
fn each_racy_scenario_is_reported_once_in_both_orders() {
    for (tier, &(s, main_access, thread_access)) in TIERS.iter().flat_map(|t| RACY.iter().map(move |r| (t, r))) {
        for order in [0, 1] {
            let (code, _, err) = scenario(tier, s, order, &[]);
            let what = format!("{tier} scenario {s} order {order}:\n{err}");
            assert_eq!(code, Some(66), "{what}");
            assert_eq!(err.matches("WARNING: DATA RACE").count(), 1, "{what}");
            assert!(err.trim_end().ends_with("Found 1 data race(s)"), "{what}");
            // The second access is the one reported; the first is the previous one.
            let (now, before) = if order == 0 {
                (format!("{main_access} by thread 1:"), thread_access.to_string())
            } else {
                let cap = |a: &str| a[..1].to_uppercase() + &a[1..];
                let low = |a: &str| a[..1].to_lowercase() + &a[1..];
                (format!("{} by thread 2:", cap(thread_access)), low(main_access))
            };
            assert!(err.contains(&now), "{what}\nwant `{now}`");
            assert!(err.contains(&format!("Previous {before} by thread")), "{what}\nwant `Previous {before}`");
            // Backtraces name functions and source positions; the spawned thread's creation is shown.
            assert!(err.contains(&format!("at {RACES}:")), "{what}");
            assert!(err.contains("Thread 2 created at:"), "{what}");
            assert!(err.contains("child at "), "{what}");
            assert!(err.contains("    1: "), "{what}\nwant the caller in the backtrace");
            if *tier != TIERS[0] {
                // Compiled code's report (backtraces walked through compiled frames) is the interpreter's.
                assert_eq!(err, scenario(TIERS[0], s, order, &[]).2, "{what}");
            }
        }
    }
}

#[test]
fn race_free_scenarios_report_nothing() {
    for tier in TIERS {
        for &s in RACE_FREE {
            for order in [0, 1] {
                let (code, _, err) = scenario(tier, s, order, &[]);
                assert_eq!((code, err.as_str()), (Some(0), ""), "{tier} scenario {s} order {order}");
            }
        }
        // The compare-and-swap lock really serialized 200 increments.
        assert_eq!(scenario(tier, 13, 0, &[]).1.trim(), "200", "{tier}");
    }
}

#[test]
fn compiled_code_that_skips_the_store_hook_misses_the_write_races() {
    // Negative control of the compiled tier: the same check fails when compiled stores skip their hook.
    let bug = [("VMRUN_JIT_DEBUG", "race-skip-store-hook")];
    let (code, _, err) = scenario("--jit=eager", 1, 0, &bug);
    assert_eq!((code, err.contains("DATA RACE")), (Some(0), false), "{err}");
    let (code, _, _) = scenario("--jit=off", 1, 0, &bug);
    assert_eq!(code, Some(66), "the interpreter does not read the compiler's planted bugs");
}

#[test]
fn a_detector_that_ignores_acquires_reports_the_synchronized_scenarios() {
    // Negative control: the same checks fail when the detector drops acquire edges.
    for (tier, s) in TIERS.iter().flat_map(|t| [10, 11, 13].map(|s| (t, s))) {
        let (code, _, err) = scenario(tier, s, 0, &[("VMRACE_DEBUG", "ignore-acquire")]);
        assert_eq!(code, Some(66), "{tier} scenario {s} with the planted bug:\n{err}");
        assert!(err.contains("WARNING: DATA RACE"), "{tier} scenario {s}");
    }
}

#[test]
fn without_race_nothing_is_instrumented_or_reported() {
    let out = vmrun(&["--invoke", "run", RACES, "1", "0"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn threaded_programs_without_races_run_clean_under_race() {
    for (tier, args) in TIERS.iter().flat_map(|t| {
        [
            &["--invoke", "count", "programs/threads.wat", "4", "1000"][..],
            &["--invoke", "grown", "programs/threads.wat"],
        ]
        .map(|a| (t, a))
    }) {
        let mut full = vec!["--race", "--race-stats", tier];
        full.extend_from_slice(args);
        let out = vmrun(&full, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{tier} {args:?}: {err}");
        assert!(!err.contains("DATA RACE") && err.contains("race: "), "{tier} {args:?}: {err}");
    }
}

// ---------------- shared GC objects (shared-everything threads, `vmrun`.`thread_spawn`)

const SHARED: &str = "tests/fixtures/race/shared_gc.wat";

/// Runs scenario `s` of the shared-object fixture in `order` with `--race` in `tier`: (exit code, stdout,
/// stderr).
fn shared_scenario_in(tier: &str, s: u32, order: u32, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    in_order(order, || {
        let (s, order) = (s.to_string(), order.to_string());
        let out = vmrun(&["--race", tier, "--invoke", "run", SHARED, &s, &order], env);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// [`shared_scenario_in`] in the interpreter.
fn shared_scenario(s: u32, order: u32, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    shared_scenario_in(TIERS[0], s, order, env)
}

/// A report with heap addresses (which differ from run to run) replaced by `0xADDR`.
fn without_heap_addresses(report: &str) -> String {
    let mut out = String::new();
    let mut rest = report;
    while let Some(at) = rest.find("0x") {
        out += &rest[..at];
        let digits = rest[at + 2..].chars().take_while(char::is_ascii_hexdigit).count();
        // Memory offsets are short; heap addresses are not.
        out += if digits > 6 { "0xADDR" } else { &rest[at..at + 2 + digits] };
        rest = &rest[at + 2 + digits..];
    }
    out + rest
}

/// The `line:col` of the first occurrence of `what` in the fixture (where an object is allocated).
fn fixture_position(what: &str) -> String {
    let text = std::fs::read_to_string(SHARED).expect("fixture");
    let at = text.find(what).expect("in the fixture");
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{SHARED}:{line}:{col}")
}

/// A racy scenario of the shared-object fixture: the main thread's access and the thread's as the report
/// names them (up to the address or the global), and where: a field or element (its allocation's text)
/// or a shared global.
struct SharedRace {
    scenario: u32,
    main: &'static str,
    thread: &'static str,
    location: SharedLocation,
}

enum SharedLocation {
    Object { location: &'static str, alloc: &'static str },
    Global(&'static str),
}

const SHARED_RACY: &[SharedRace] = &[
    SharedRace {
        scenario: 1,
        main: "Write",
        thread: "write",
        location: SharedLocation::Object { location: "field $x (0) of shared struct $obj", alloc: "struct.new $obj" },
    },
    SharedRace {
        scenario: 2,
        main: "Read",
        thread: "write",
        location: SharedLocation::Object { location: "element 2 of shared array $arr", alloc: "array.new $arr" },
    },
    SharedRace {
        scenario: 6,
        main: "Read",
        thread: "atomic write",
        location: SharedLocation::Object { location: "field $x (0) of shared struct $obj", alloc: "struct.new $obj" },
    },
    // array.fill's ranged write against a read of one element in it.
    SharedRace {
        scenario: 8,
        main: "Read",
        thread: "write",
        location: SharedLocation::Object { location: "element 2 of shared array $arr", alloc: "array.new $arr" },
    },
    // array.copy's ranged read of its source against a write.
    SharedRace {
        scenario: 9,
        main: "Write",
        thread: "read",
        location: SharedLocation::Object { location: "element 2 of shared array $arr", alloc: "array.new $arr" },
    },
    SharedRace { scenario: 10, main: "Read", thread: "write", location: SharedLocation::Global("$g (1)") },
    SharedRace { scenario: 13, main: "Read", thread: "atomic write", location: SharedLocation::Global("$g (1)") },
];

/// The checks of one report of racy scenario `r` in `order` (see [`SHARED_RACY`]).
fn check_shared_report(r: &SharedRace, order: u32, code: Option<i32>, err: &str, what: &str) {
    assert_eq!(code, Some(66), "{what}");
    assert_eq!(err.matches("WARNING: DATA RACE").count(), 1, "{what}");
    assert!(err.trim_end().ends_with("Found 1 data race(s)"), "{what}");
    let cap = |a: &str| a[..1].to_uppercase() + &a[1..];
    let at = match r.location {
        SharedLocation::Object { .. } => " at 0x".to_string(),
        SharedLocation::Global(g) => format!(" of shared global {g} (4 bytes)"),
    };
    let (now, before) = if order == 0 {
        (format!("{}{at}", r.main), format!("Previous {}{at}", r.thread))
    } else {
        (format!("{}{at}", cap(r.thread)), format!("Previous {}{at}", r.main.to_lowercase()))
    };
    let by = if order == 0 { "by thread 1:" } else { "by thread 2:" };
    assert!(err.lines().any(|l| l.starts_with(&now) && l.ends_with(by)), "{what}\nwant `{now}... {by}`");
    assert!(err.contains(&before), "{what}\nwant `{before}`");
    match r.location {
        SharedLocation::Object { location, alloc } => {
            // The object: its type and field by name, and the instruction that allocated it.
            let site = fixture_position(alloc);
            assert!(err.contains(&format!("Location is {location} at 0x")), "{what}\nwant `{location}`");
            let alloc_line = err.split("allocated at:\n").nth(1).and_then(|r| r.lines().next()).unwrap_or("");
            assert!(alloc_line.starts_with("    0: ") && alloc_line.ends_with(&site), "{what}\nwant {site}");
        }
        SharedLocation::Global(_) => assert!(!err.contains("Location is"), "{what}"),
    }
    assert!(err.contains("Thread 2 created at:"), "{what}");
    assert!(err.contains("    1: "), "{what}\nwant the caller in the backtrace");
}

#[test]
fn races_on_shared_objects_and_globals_are_reported_once_in_both_orders_and_tiers() {
    for r in SHARED_RACY {
        for order in [0, 1] {
            let (code, _, err) = shared_scenario(r.scenario, order, &[]);
            check_shared_report(r, order, code, &err, &format!("shared scenario {} order {order}:\n{err}", r.scenario));
            // Compiled code calls the same hooks: its report is the interpreter's (heap addresses aside).
            let (jcode, _, jerr) = shared_scenario_in(TIERS[1], r.scenario, order, &[]);
            let what = format!("compiled shared scenario {} order {order}:\n{jerr}", r.scenario);
            check_shared_report(r, order, jcode, &jerr, &what);
            assert_eq!(without_heap_addresses(&jerr), without_heap_addresses(&err), "{what}");
        }
    }
}

#[test]
fn race_free_uses_of_shared_objects_and_globals_report_nothing() {
    // 3: a plain write published by struct.atomic.set and read after struct.atomic.get; 4, 5: atomics
    // only; 7: the slots of one thread's dead objects reused by another thread's new ones; 11: a plain
    // write published by global.atomic.set; 12: bulk operations ordered by a struct atomic.
    let expected = [(3, "3"), (4, "0"), (5, "0"), (7, "0"), (11, "11"), (12, "7")];
    for tier in TIERS {
        for (s, out_want) in expected {
            for order in [0, 1] {
                let (code, out, err) = shared_scenario_in(tier, s, order, &[]);
                assert_eq!((code, err.as_str()), (Some(0), ""), "{tier} shared scenario {s} order {order}");
                assert_eq!(out.trim(), out_want, "{tier} shared scenario {s} order {order}");
            }
        }
    }
}

#[test]
fn compiled_code_of_shared_objects_is_not_left_interpreted_under_race() {
    // Every function of the fixture (struct, array and global atomics, plain accesses with their hooks,
    // bulk operations) is compiled with --race.
    let out = vmrun(&["--race", "--jit=eager", "--jit-stats", "--invoke", "run", SHARED, "12", "0"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(" 0 left interpreted"), "{err}");
}

#[test]
fn compiled_code_that_skips_the_object_hook_misses_field_element_and_global_races() {
    // Negative control of the compiled tier's object and global hooks.
    let bug = [("VMRUN_JIT_DEBUG", "race-skip-object-hook")];
    for s in [1, 2, 10] {
        let (code, _, err) = shared_scenario_in(TIERS[1], s, 0, &bug);
        assert_eq!((code, err.contains("DATA RACE")), (Some(0), false), "scenario {s}: {err}");
        let (code, _, _) = shared_scenario_in(TIERS[0], s, 0, &bug);
        assert_eq!(code, Some(66), "the interpreter does not read the compiler's planted bugs");
    }
}

#[test]
fn without_the_range_and_global_hooks_the_bulk_and_global_races_are_missed() {
    // Negative controls of both tiers: bulk operations unchecked, shared globals unchecked.
    for (bug, scenarios) in [("skip-range-hook", &[8, 9][..]), ("skip-global-hook", &[10, 13])] {
        for (tier, &s) in TIERS.iter().flat_map(|t| scenarios.iter().map(move |s| (t, s))) {
            let (code, _, err) = shared_scenario_in(tier, s, 0, &[("VMRUN_RACE_DEBUG", bug)]);
            assert_eq!((code, err.as_str()), (Some(0), ""), "{tier} scenario {s} with {bug}");
        }
    }
}

#[test]
fn a_detector_that_ignores_acquires_reports_the_atomic_hand_offs_of_shared_objects() {
    for (tier, s) in TIERS.iter().flat_map(|t| [3, 11, 12].map(|s| (t, s))) {
        let (code, _, err) = shared_scenario_in(tier, s, 0, &[("VMRACE_DEBUG", "ignore-acquire")]);
        assert_eq!(code, Some(66), "{tier} scenario {s}: {err}");
    }
    let (_, _, err) = shared_scenario(3, 0, &[("VMRACE_DEBUG", "ignore-acquire")]);
    assert!(err.contains("Location is field $x (0) of shared struct $obj"), "{err}");
}

#[test]
fn reused_slots_need_the_sweeps_free_or_the_allocations_reset() {
    // Either hook alone clears a dead object's shadow state before its slot is used again; with neither
    // (both planted bugs), the new object's first write races with what the dead one saw: a false report.
    // The `$phase` hand-off is an edge, so every run here drops acquires (the detector's planted bug).
    let no_edge = ("VMRACE_DEBUG", "ignore-acquire");
    for bugs in ["skip-racefree", "skip-reset-on-alloc"] {
        let (code, _, err) = shared_scenario(7, 0, &[("VMRUN_RACE_DEBUG", bugs), no_edge]);
        assert_eq!((code, err.as_str()), (Some(0), ""), "with {bugs}");
    }
    let (code, _, err) = shared_scenario(7, 0, &[("VMRUN_RACE_DEBUG", "skip-racefree,skip-reset-on-alloc"), no_edge]);
    assert_eq!(code, Some(66), "{err}");
    assert!(err.contains("of shared struct $cell"), "{err}");
}

#[test]
fn without_race_shared_objects_are_not_instrumented() {
    for s in ["1", "10"] {
        let out = vmrun(&["--invoke", "run", SHARED, s, "0"], &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// What `--race-stats` says at the end of `leak(2, iterations)` of `programs/shared_gc.wat`.
struct LeakRun {
    sync_objects: u64,
    shadow_bytes: u64,
    peak_rss: u64,
}

fn leak_run(iterations: u32, env: &[(&str, &str)]) -> LeakRun {
    // One malloc arena: glibc's per-thread arenas keep freed chunks of the detector's maps apart by
    // thread and grow RSS by themselves (BENCHMARKS.md); the check is about the detector's state.
    let mut env = env.to_vec();
    env.push(("MALLOC_ARENA_MAX", "1"));
    let iters = iterations.to_string();
    let out = vmrun(&["--race", "--race-stats", "--invoke", "leak", "programs/shared_gc.wat", "2", &iters], &env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (2 * iterations).to_string());
    let number_before = |suffix: &str| -> u64 {
        let at = err.find(suffix).unwrap_or_else(|| panic!("no `{suffix}` in {err}"));
        let digits: String = err[..at]
            .trim_end()
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().unwrap_or_else(|_| panic!("no number before `{suffix}` in {err}"))
    };
    LeakRun {
        sync_objects: number_before(" synchronization objects"),
        shadow_bytes: err
            .split(" shadow granules (")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("shadow bytes"),
        peak_rss: number_before(" bytes\n"),
    }
}

/// The leak check: 10x the iterations keeps no more synchronization objects than the small run made in
/// all (2 threads × 16 atomics per iteration), about as many shadow bytes, and a peak RSS within 10%.
fn race_state_is_bounded(env: &[(&str, &str)]) -> Result<(), String> {
    const SMALL: u32 = 2000;
    let (small, large) = (leak_run(SMALL, env), leak_run(10 * SMALL, env));
    let made_by_small = 2 * 16 * SMALL as u64;
    if large.sync_objects > made_by_small {
        return Err(format!("{} live sync objects after 10x (the small run made {made_by_small})", large.sync_objects));
    }
    if large.shadow_bytes > 2 * small.shadow_bytes.max(1 << 20) {
        return Err(format!("shadow bytes {} after 10x, {} before", large.shadow_bytes, small.shadow_bytes));
    }
    if large.peak_rss * 10 > small.peak_rss * 11 {
        return Err(format!("peak RSS {} after 10x, {} before", large.peak_rss, small.peak_rss));
    }
    Ok(())
}

#[test]
fn the_sync_leak_benchmark_stays_bounded() {
    race_state_is_bounded(&[]).unwrap();
}

#[test]
fn without_the_sweeps_free_the_detector_state_grows() {
    // Negative control: the sweep's frees do not reach the detector.
    let result = race_state_is_bounded(&[("VMRUN_RACE_DEBUG", "skip-racefree")]);
    assert!(result.is_err(), "the leak check passed with the planted leak");
}

// ---------------- both backtraces of a report (the stack depot)

const STACKS: &str = "tests/fixtures/race/stacks.wat";

/// The tiers of the backtrace checks: interpreted, compiled, and compiled with the `$interp_*` functions
/// interpreted (compiled → interpreted → compiled frames on both threads).
const STACK_TIERS: [(&str, &[(&str, &str)]); 3] =
    [("--jit=off", &[]), ("--jit=eager", &[]), ("--jit=eager", &[("VMRUN_JIT_INTERPRET", "interp_")])];

/// `file:line:col` of the instruction the folded expression `text` (unique in the fixture) starts with.
fn instr_position(text: &str) -> String {
    let fixture = std::fs::read_to_string(STACKS).expect("fixture");
    let at = fixture.find(text).unwrap_or_else(|| panic!("`{text}` in the fixture"));
    let line = fixture[..at].matches('\n').count() + 1;
    // The keyword after the parenthesis.
    let col = at - fixture[..at].rfind('\n').map_or(0, |n| n + 1) + 2;
    format!("{STACKS}:{line}:{col}")
}

/// The backtrace of the write of `kind` by the spawned thread (or the main thread), innermost first.
fn write_backtrace(kind: u32, spawned: bool) -> Vec<String> {
    let (write, middle, outer, base) = if spawned {
        ("thread_write", "interp_thread", "child", 100)
    } else {
        ("main_write", "interp_main", "run", 200)
    };
    let value = base + kind;
    let access = match kind {
        0 => format!("(i32.store (i32.const 64) (i32.const {value}))"),
        1 => format!("(struct.set $obj $x (local.get $o) (i32.const {value}))"),
        2 => format!("(array.set $arr (local.get $a) (i32.const 1) (i32.const {value}))"),
        _ => format!("(global.set $g (i32.const {value}))"),
    };
    vec![
        format!("{write} at {}", instr_position(&access)),
        format!("{middle} at {}", instr_position(&format!("(call ${write}"))),
        format!("{outer} at {}", instr_position(&format!("(call ${middle}"))),
    ]
}

/// The frames printed after the line of the report that starts with `header`.
fn frames_after(report: &str, header: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = report.lines().skip_while(|l| !header(l));
    lines.next();
    lines
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim_start().split_once(": ").map_or(l.to_string(), |(_, frame)| frame.to_string()))
        .collect()
}

/// Runs `kind` of the stacks fixture in `order` and checks that both accesses of the one report show
/// their whole backtraces (function names and `file:line:col` of the access and of each call).
fn check_both_backtraces(tier: &str, env: &[(&str, &str)], kind: u32, order: u32) -> Result<(), String> {
    let (code, _, err) = in_order(order, || {
        let (k, o) = (kind.to_string(), order.to_string());
        let out = vmrun(&["--race", tier, "--invoke", "run", STACKS, &k, &o], env);
        (out.status.code(), String::new(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let what = format!("{tier} {env:?} kind {kind} order {order}:\n{err}");
    if code != Some(66) || err.matches("WARNING: DATA RACE").count() != 1 {
        return Err(format!("want one report, exit 66: {what}"));
    }
    // Order 0: the thread wrote first, so its write is the previous access.
    let (current, previous) = (write_backtrace(kind, order == 1), write_backtrace(kind, order == 0));
    let now = frames_after(&err, |l| l.starts_with("Write") && l.contains(" by thread "));
    let before = frames_after(&err, |l| l.starts_with("Previous write"));
    if now != current {
        return Err(format!("current access: got {now:?}, want {current:?}\n{what}"));
    }
    if before != previous {
        return Err(format!("previous access: got {before:?}, want {previous:?}\n{what}"));
    }
    Ok(())
}

#[test]
fn both_accesses_of_a_report_show_their_whole_backtraces_in_every_tier() {
    // Linear memory, a shared struct field, a shared array element and a shared global; both orders.
    for (tier, env) in STACK_TIERS {
        for kind in 0..4 {
            for order in [0, 1] {
                check_both_backtraces(tier, env, kind, order).unwrap();
            }
        }
    }
}

#[test]
fn a_depot_that_keeps_one_frame_fails_the_backtrace_check() {
    // Negative control: the depot stores only each stack's innermost frame (the detector's cell site).
    for (tier, env) in STACK_TIERS {
        let mut env = env.to_vec();
        env.push(("VMRUN_RACE_DEBUG", "one-frame-depot"));
        for kind in [0, 1] {
            let result = check_both_backtraces(tier, &env, kind, 0);
            assert!(result.as_ref().is_err_and(|e| e.contains("got [\"")), "{tier} kind {kind}: {result:?}");
        }
    }
}

// ---------------- shared tables

const TABLES: &str = "tests/fixtures/race/tables.wat";

/// Runs scenario `s` of the shared-table fixture in `order` with `--race` in `tier`.
fn table_scenario(tier: &str, s: u32, order: u32, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    in_order(order, || {
        let (s, order) = (s.to_string(), order.to_string());
        let out = vmrun(&["--race", tier, "--invoke", "run", TABLES, &s, &order], env);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// (scenario, the main thread's access, the thread's access) of the racy table scenarios, on element 2.
const TABLE_RACY: &[(u32, &str, &str)] = &[
    (1, "Read", "write"),  // table.get against table.set
    (2, "Read", "write"),  // table.get against table.fill's range
    (3, "Write", "read"),  // table.set against table.copy's source range
    (4, "Write", "write"), // table.set against table.init's range
];

#[test]
fn races_on_shared_table_elements_are_reported_once_in_both_orders_and_tiers() {
    let cap = |a: &str| a[..1].to_uppercase() + &a[1..];
    for &(s, main, thread) in TABLE_RACY {
        for order in [0, 1] {
            let (code, _, err) = table_scenario(TIERS[0], s, order, &[]);
            let what = format!("table scenario {s} order {order}:\n{err}");
            assert_eq!(code, Some(66), "{what}");
            assert_eq!(err.matches("WARNING: DATA RACE").count(), 1, "{what}");
            assert!(err.trim_end().ends_with("Found 1 data race(s)"), "{what}");
            let at = " of element 2 of shared table $t (0)";
            let (now, before) = if order == 0 {
                (format!("{main}{at} by thread 1:"), format!("Previous {thread}{at} by thread 2:"))
            } else {
                (
                    format!("{}{at} by thread 2:", cap(thread)),
                    format!("Previous {}{at} by thread 1:", main.to_lowercase()),
                )
            };
            assert!(err.lines().any(|l| l == now), "{what}\nwant `{now}`");
            assert!(err.lines().any(|l| l == before), "{what}\nwant `{before}`");
            assert!(err.contains("thread_access at ") && err.contains("main_access at "), "{what}");
            // Compiled code checks the same elements in its table library call: the same report.
            let (jcode, _, jerr) = table_scenario(TIERS[1], s, order, &[]);
            assert_eq!((jcode, jerr.as_str()), (code, err.as_str()), "compiled {what}");
        }
    }
}

#[test]
fn race_free_uses_of_shared_tables_report_nothing() {
    // 5: a table.set published by global.atomic.set; 6: a grow and a set published the same way, then
    // the new elements used by the main thread; 7: different elements.
    for tier in TIERS {
        for (s, out_want) in [(5, "5"), (6, "6"), (7, "0")] {
            for order in [0, 1] {
                let (code, out, err) = table_scenario(tier, s, order, &[]);
                assert_eq!((code, err.as_str()), (Some(0), ""), "{tier} table scenario {s} order {order}");
                assert_eq!(out.trim(), out_want, "{tier} table scenario {s} order {order}");
            }
        }
    }
}

#[test]
fn without_the_table_hook_or_with_acquires_ignored_the_table_checks_fail() {
    // Negative controls: unchecked table elements miss the races (both tiers); a detector that drops
    // acquires reports the atomic hand-offs.
    for tier in TIERS {
        for &(s, _, _) in TABLE_RACY {
            let (code, _, err) = table_scenario(tier, s, 0, &[("VMRUN_RACE_DEBUG", "skip-table-hook")]);
            assert_eq!((code, err.as_str()), (Some(0), ""), "{tier} table scenario {s} with skip-table-hook");
        }
        for s in [5, 6] {
            let (code, _, err) = table_scenario(tier, s, 0, &[("VMRACE_DEBUG", "ignore-acquire")]);
            assert_eq!(code, Some(66), "{tier} table scenario {s} with ignore-acquire: {err}");
            assert!(err.contains("of shared table $t (0)"), "{tier} table scenario {s}: {err}");
        }
    }
}
