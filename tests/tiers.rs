//! The compiled tier against the interpreter: the same calls in `--jit=off`, `--jit=eager` and
//! `--jit=auto` (threshold 1) must print the same results, or trap with the same message, backtrace
//! and exit code. Memory accesses at every edge (last byte, one past, huge offsets, after
//! `memory.grow`), bulk memory, and traps through mixed interpreter and compiled frames. Negative
//! control: `VMRUN_JIT_DEBUG=i32-add-is-sub` or `no-bounds-check` (planted in the compiler) make these
//! tests fail.

use std::process::{Command, Output};

/// The interpreter, then compiled code (natively with guard regions, and with explicit bounds checks).
const TIERS: [&[&str]; 4] = [
    &["--jit=off"],
    &["--jit=eager"],
    &["--jit=auto", "--jit-threshold", "1"],
    &["--jit=eager", "--bounds-checks=explicit"],
];

/// Runs vmrun; functions named `$interp_*` stay interpreted (`VMRUN_JIT_INTERPRET`), for mixed frames.
fn run(tier: &[&str], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .env("VMRUN_JIT_INTERPRET", "interp_")
        .args(tier)
        .args(args)
        .output()
        .expect("vmrun starts")
}

/// What a run showed: exit code, stdout, stderr.
fn seen(o: &Output) -> (Option<i32>, String, String) {
    let err = String::from_utf8_lossy(&o.stderr);
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), err.into_owned())
}

/// Run `--invoke export file args` in every tier; all must agree. Returns the interpreter's output.
fn same_in_every_tier(file: &str, export: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut full = vec!["--invoke", export, file];
    full.extend_from_slice(args);
    let reference = seen(&run(TIERS[0], &full));
    for tier in &TIERS[1..] {
        assert_eq!(seen(&run(tier, &full)), reference, "{tier:?} vs --jit=off on {full:?}");
    }
    assert!(!reference.2.contains("panicked") && !reference.2.contains("internal error"), "{reference:?}");
    reference
}

fn ok(file: &str, export: &str, args: &[&str], want: &str) {
    let (code, out, err) = same_in_every_tier(file, export, args);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), want, ""), "{export} {args:?}");
}

fn traps(file: &str, export: &str, args: &[&str], message: &str) -> String {
    let (code, _, err) = same_in_every_tier(file, export, args);
    assert_eq!(code, Some(134), "{export} {args:?}: {err}");
    assert!(err.starts_with(&format!("error: wasm trap: {message}\nwasm backtrace:\n")), "{export} {args:?}: {err}");
    err
}

const EDGES: &str = "tests/fixtures/memory_edges.wat";
const OOB: &str = "out of bounds memory access";

#[test]
fn loads_at_the_edges_of_memory() {
    ok(EDGES, "load8", &["65535"], "0\n");
    traps(EDGES, "load8", &["65536"], OOB);
    ok(EDGES, "load32", &["65532"], "0\n");
    traps(EDGES, "load32", &["65533"], OOB);
    ok(EDGES, "load64", &["65528"], "0\n");
    traps(EDGES, "load64", &["65529"], OOB);
    traps(EDGES, "load32", &["-1"], OOB);
    traps(EDGES, "load8", &["-1"], OOB);
    traps(EDGES, "load8_huge_offset", &["0"], OOB);
    traps(EDGES, "load8_huge_offset", &["1"], OOB);
    traps(EDGES, "load8_huge_offset", &["-1"], OOB);
    ok(EDGES, "load32_offset", &["0"], "0\n");
    traps(EDGES, "load32_offset", &["1"], OOB);
}

/// Natively the compiled tier leaves accesses whose offset fits the guard region to the hardware
/// (`vm/src/fault.rs`): the edges of that choice, and a fault's backtrace through compiled and
/// interpreted callers, must look exactly like the interpreter's explicit checks.
#[test]
fn accesses_checked_by_the_guard_region_trap_like_explicit_checks() {
    // The memory is one page: with these offsets every address is past it, checked either way.
    for a in ["0", "1", "65536", "-1"] {
        traps(EDGES, "load32_guard_edge", &[a], OOB);
        traps(EDGES, "load32_past_guard", &[a], OOB);
    }
    for a in ["0", "1073741824", "-1"] {
        traps(EDGES, "store64_far", &[a], OOB);
    }
    ok(EDGES, "load_three_deep", &["65532"], "1\n");
    let err = traps(EDGES, "load_three_deep", &["65533"], OOB);
    for (i, f) in ["leaf_load", "mid_load", "interp_mid_load", "load_three_deep"].iter().enumerate() {
        assert!(err.contains(&format!("{i}: edges!{f} at {EDGES}:")), "frame {i} is {f}: {err}");
    }
}

/// A store that straddles the end of memory traps and writes none of its bytes, in every tier.
#[test]
fn straddling_stores_write_nothing() {
    for tier in TIERS {
        let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .arg("wast")
            .args(tier)
            .arg("tests/fixtures/straddling_stores.wast")
            .output()
            .expect("vmrun starts");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{tier:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("8 passed, 0 failed"), "{tier:?}: {text}");
    }
}

/// Negative controls of the guard-region tests: with the guard trusted for any offset
/// (`VMRUN_JIT_DEBUG=guard-any-offset`) an access far past the memory is not refused, and with a
/// fault's trap naming only the faulting frame (`VMRUN_VM_DEBUG=fault-drops-callers`) the backtrace
/// differs from the interpreter's.
#[test]
fn planted_guard_region_bugs_are_caught() {
    let eager = |env: (&str, &str), args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .env("VMRUN_JIT_INTERPRET", "interp_")
            .env(env.0, env.1)
            .arg("--jit=eager")
            .args(["--invoke"])
            .args(args)
            .output()
            .expect("vmrun starts");
        seen(&o)
    };
    let reference = seen(&run(TIERS[0], &["--invoke", "store64_far", EDGES, "-1"]));
    let planted = eager(("VMRUN_JIT_DEBUG", "guard-any-offset"), &["store64_far", EDGES, "-1"]);
    assert_ne!(planted, reference, "guard-any-offset went unnoticed");
    let reference = seen(&run(TIERS[0], &["--invoke", "load_three_deep", EDGES, "65533"]));
    let planted = eager(("VMRUN_VM_DEBUG", "fault-drops-callers"), &["load_three_deep", EDGES, "65533"]);
    assert_ne!(planted, reference, "fault-drops-callers went unnoticed");
}

#[test]
fn stores_at_the_edges_of_memory() {
    ok(EDGES, "store32", &["65532", "-7"], "-7\n");
    traps(EDGES, "store32", &["65534", "1"], OOB);
    ok(EDGES, "store16_offset", &["65532"], "4660\n");
    traps(EDGES, "store16_offset", &["65533"], OOB);
}

#[test]
fn accesses_after_memory_grow() {
    ok(EDGES, "grow_then_store", &["65536"], "2007\n");
    ok(EDGES, "grow_then_store", &["131071"], "2007\n");
    traps(EDGES, "grow_then_store", &["131072"], OOB);
    ok(EDGES, "grow_past_max", &[], "-1\n1\n");
}

#[test]
fn bulk_memory_at_the_edges() {
    ok(EDGES, "fill", &["65535", "1"], "171\n");
    traps(EDGES, "fill", &["65535", "2"], OOB);
    ok(EDGES, "copy", &["0", "65535", "1"], "0\n");
    traps(EDGES, "copy", &["0", "65535", "2"], OOB);
}

#[test]
fn a_memory_grown_behind_a_call_is_seen_by_the_caller() {
    // Compiled callee, compiled callee through the table, interpreted callee through the table.
    for which in ["0", "1", "2"] {
        ok(EDGES, "grow_in_callee_then_store", &["65536", which], "9\n");
        ok(EDGES, "grow_in_callee_then_store", &["131071", which], "9\n");
        traps(EDGES, "grow_in_callee_then_store", &["131072", which], OOB);
    }
    // Grows at iterations 0, 4 and 8 (three pages past the first; the fourth fails at the maximum).
    ok(EDGES, "grow_in_loop", &["10"], "4045\n");
    ok(EDGES, "grow_in_loop", &["16"], "4120\n");
}

#[test]
fn every_access_to_an_empty_memory_is_out_of_bounds() {
    const EMPTY: &str = "tests/fixtures/memory_empty.wat";
    for export in ["load8", "load64"] {
        traps(EMPTY, export, &["0"], OOB);
        traps(EMPTY, export, &["-1"], OOB);
    }
    ok(EMPTY, "grow_then_load64", &["65528"], "0\n");
    traps(EMPTY, "grow_then_load64", &["65529"], OOB);
}

/// Negative control of the two tests above: with the length not reloaded after calls (the planted
/// `stale-memory-length`), the compiled caller traps on an access the grown memory allows.
#[test]
fn a_stale_memory_length_is_caught() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .env("VMRUN_JIT_DEBUG", "stale-memory-length")
        .args(["--jit=eager", "--bounds-checks=explicit", "--invoke", "grow_in_callee_then_store", EDGES, "65536", "0"])
        .output()
        .expect("vmrun starts");
    assert_eq!(out.status.code(), Some(134), "the planted bug went unnoticed: {out:?}");
}

const MIXED: &str = "tests/fixtures/mixed_tiers.wat";

#[test]
fn traps_unwind_through_mixed_frames_with_the_same_backtrace() {
    ok(MIXED, "compiled_calls_interp", &["7", "2"], "4\n");
    let err = traps(MIXED, "compiled_calls_interp", &["1", "0"], "integer divide by zero");
    for (i, f) in ["compiled_div", "interp_calls_compiled", "compiled_calls_interp"].iter().enumerate() {
        assert!(err.contains(&format!("{i}: mixed!{f} at {MIXED}:")), "frame {i} is {f}: {err}");
    }
    traps(MIXED, "compiled_calls_trapping_interp", &["1"], "unreachable");
    ok(MIXED, "compiled_calls_trapping_interp", &["0"], "15\n");
    traps(MIXED, "interp_outer", &["-2147483648", "-1"], "integer overflow");
    traps(MIXED, "indirect", &["0", "1", "0"], "integer divide by zero");
    traps(MIXED, "indirect", &["1", "1", "0"], "indirect call type mismatch");
    traps(MIXED, "indirect", &["2", "1", "0"], "undefined element");
    ok(MIXED, "indirect", &["0", "9", "3"], "3\n");
}

/// Recursion alternating between an interpreted and a compiled function ends in `call stack
/// exhausted` in every tier (at a depth that is each tier's own: frames against native stack bytes).
#[test]
fn recursion_through_both_tiers_exhausts_the_stack_cleanly() {
    for tier in TIERS {
        for (export, frame) in [("ping_pong", "mixed!interp_pong at"), ("deep", "mixed!deep at")] {
            let out = run(tier, &["--invoke", export, MIXED, "0"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(134), "{tier:?} {export}: {err}");
            assert!(err.starts_with("error: wasm trap: call stack exhausted\nwasm backtrace:\n"), "{tier:?}: {err}");
            assert!(err.contains(frame), "{tier:?} {export}: {err}");
        }
    }
}

/// The functions `VMRUN_JIT_INTERPRET` names are the ones left interpreted, and `--jit-stats` says why.
#[test]
fn jit_stats_name_the_functions_left_interpreted() {
    let out = run(&["--jit=eager", "--jit-stats"], &["--invoke", "compiled_calls_interp", MIXED, "7", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left interpreted"), "{err}");
    for f in ["interp_calls_compiled", "interp_traps", "interp_outer", "interp_pong"] {
        assert!(err.contains(&format!("jit: interpreted ${f}: kept interpreted by VMRUN_JIT_INTERPRET")), "{f}: {err}");
    }
    assert!(!err.contains("interpreted $compiled_div"), "{err}");
}

#[test]
fn an_exception_crosses_compiled_frames_to_an_interpreted_handler() {
    let file = "tests/fixtures/exn_through_compiled.wat";
    ok(file, "run", &["3"], "4\n");
    ok(file, "run", &["7"], "1007\n");
}
