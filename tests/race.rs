//! `vmrun --race` on real threads (wasi-threads): every scenario of `tests/fixtures/race/races.wat` in both
//! orders (the thread's access first, then the main thread's, and the reverse; the order is fixed by a wait
//! that times out, which orders nothing). Racy scenarios report exactly one race, Go-style, with exit code
//! 66; race-free ones (atomics, a wait/notify hand-off, the spawn edge, a compare-and-swap lock, adjacent
//! bytes) report nothing. Every scenario runs in both tiers (`--jit=off` and `--jit=eager`: compiled code
//! calls the same hooks, and its reports' backtraces walk compiled frames). Negative controls: the
//! detector's planted bug `VMRACE_DEBUG=ignore-acquire` turns the synchronized scenarios into false
//! reports, the compiler's `VMRUN_JIT_DEBUG=race-skip-store-hook` hides the write races of compiled code,
//! and without `--race` nothing is reported.

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
    let (s, order) = (s.to_string(), order.to_string());
    let out = vmrun(&["--race", tier, "--invoke", "run", RACES, &s, &order], env);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
