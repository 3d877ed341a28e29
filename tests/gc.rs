//! The garbage collector through the real binary: every GC program under a collection at every
//! allocation with heap verification, the heap limit trap, `--gc-stats`, and bounded memory for a
//! program that makes and drops cyclic garbage.

use std::process::{Command, Output};

fn vmrun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmrun")).args(args).output().expect("vmrun starts")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = vmrun(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "vmrun {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (program, argument, expected result) — small sizes, so stress mode stays fast.
const GC_PROGRAMS: &[(&str, &str, &str)] = &[
    ("programs/binary_trees.wat", "6", "4398"),
    ("programs/gc_cycles.wat", "2000", "2001000"),
    ("programs/gc_arrays.wat", "1000", "249967000"),
    ("programs/gc_casts.wat", "30", "27830"),
    ("programs/gc_exceptions.wat", "300", "168000"),
    ("programs/shared_gc.wat", "50", "52600"),
];

/// The interpreter, every function compiled, and tier-up after one call (compiled and interpreted
/// frames mixed on the stack while collections run).
const TIERS: [&str; 3] = ["--jit=off", "--jit=eager", "--jit-threshold=1"];

#[test]
fn gc_programs_agree_with_and_without_stress_and_verification() {
    for tier in TIERS {
        for (program, arg, expected) in GC_PROGRAMS {
            let normal = ok_stdout(&[tier, "--invoke", "run", program, arg]);
            assert_eq!(normal.trim(), *expected, "{tier} {program} {arg}");
            // A collection before every allocation, and the heap checked after each mark and sweep.
            let stressed = ok_stdout(&[tier, "--gc-stress", "--gc-verify", "--invoke", "run", program, arg]);
            assert_eq!(stressed.trim(), *expected, "{tier} {program} {arg} under --gc-stress --gc-verify");
            let every_7th = ok_stdout(&[tier, "--gc-stress=7", "--gc-verify", "--invoke", "run", program, arg]);
            assert_eq!(every_7th.trim(), *expected, "{tier} {program} {arg} under --gc-stress=7");
        }
    }
}

/// The negative control of the compiled tier's stack maps: with references returned by calls left out
/// of them (`VMRUN_JIT_DEBUG=no-call-result-maps`), a subtree only a compiled frame holds across the
/// next call is freed by the stressed collector and reused, and binary-trees goes wrong.
#[test]
fn a_reference_missing_from_a_stack_map_is_caught() {
    let args = ["--jit=eager", "--gc-stress", "--gc-verify", "--invoke", "run", "programs/binary_trees.wat", "6"];
    let run = |bug: Option<&str>| run_with_jit_bug(&args, bug);
    assert_eq!(run(None), (Some(0), "4398".to_string()));
    let planted = run(Some("no-call-result-maps"));
    assert_ne!(planted, (Some(0), "4398".to_string()), "the planted bug went unnoticed");
}

/// (exit code, trimmed stdout) of vmrun with `args` and the compiler's planted bug `bug`, if any.
fn run_with_jit_bug(args: &[&str], bug: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(args).env_remove("VMRUN_JIT_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_JIT_DEBUG", bug);
    }
    let out = cmd.output().expect("vmrun starts");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Compiled code allocates small objects inline from the thread cache (`jit/src/translate/alloc.rs`) when no
/// observer watches allocations: with the heap verifier (which does not turn the fast path off) every GC
/// program gives its result, and the fixture's fresh objects, in slots swept and reused, are all zero with
/// the right header, in every tier.
#[test]
fn inline_allocation_gives_zeroed_objects_with_their_headers() {
    for tier in TIERS {
        for (program, arg, expected) in GC_PROGRAMS {
            let verified = ok_stdout(&[tier, "--gc-verify", "--invoke", "run", program, arg]);
            assert_eq!(verified.trim(), *expected, "{tier} {program} {arg} under --gc-verify");
        }
        let out = ok_stdout(&[tier, "--invoke", "run", "tests/fixtures/inline_alloc.wat", "3000"]);
        assert_eq!(out.trim(), "0", "{tier}: failed checks of fresh objects");
    }
}

/// The negative controls of inline allocation: a fast path that skips zeroing a reused slot, or writing
/// the header (`VMRUN_JIT_DEBUG=alloc-no-zero`, `alloc-no-header`), makes the fixture fail.
#[test]
fn inline_allocation_without_zeroing_or_header_is_caught() {
    let args = ["--jit=eager", "--invoke", "run", "tests/fixtures/inline_alloc.wat", "3000"];
    let run = |bug: Option<&str>| run_with_jit_bug(&args, bug);
    assert_eq!(run(None), (Some(0), "0".to_string()));
    for bug in ["alloc-no-zero", "alloc-no-header"] {
        assert_ne!(run(Some(bug)), (Some(0), "0".to_string()), "the planted bug {bug} went unnoticed");
    }
}

/// The negative control of the exception programs' check: with the reference payload left out of exception
/// objects' reference maps (`VMRUN_VM_DEBUG=exn-untraced-payload`), a struct only a kept exception holds is
/// swept and reused under stress, and the result is wrong. Without stress nothing is collected in time.
#[test]
fn an_untraced_exception_payload_is_caught() {
    let args = ["--gc-stress", "--gc-verify", "--invoke", "run", "programs/gc_exceptions.wat", "300"];
    let run = |bug: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
        cmd.args(args).env_remove("VMRUN_VM_DEBUG");
        if let Some(bug) = bug {
            cmd.env("VMRUN_VM_DEBUG", bug);
        }
        let out = cmd.output().expect("vmrun starts");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(run(None), (Some(0), "168000".to_string()));
    let planted = run(Some("exn-untraced-payload"));
    assert_ne!(planted, (Some(0), "168000".to_string()), "the planted bug went unnoticed");
}

/// Parse `name X MiB` out of the `--gc-stats` line.
fn stat_mib(stats: &str, name: &str) -> f64 {
    let at = stats.find(name).unwrap_or_else(|| panic!("`{name}` in {stats}")) + name.len();
    stats[at..].split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {stats}"))
}

#[test]
fn cyclic_garbage_runs_in_bounded_memory() {
    // 300,000 two-node cycles with 64-byte payloads: about 60 MiB allocated, two nodes live.
    let out = vmrun(&["--gc-stats", "--invoke", "run", "programs/gc_cycles.wat", "300000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let allocated = stat_mib(&stderr, "allocated");
    let peak_heap = stat_mib(&stderr, "peak heap");
    let peak_rss = stat_mib(&stderr, "peak resident");
    assert!(allocated > 40.0, "the program allocates a lot: {stderr}");
    assert!(peak_heap < 8.0, "the heap stays near the 4 MiB pacing floor: {stderr}");
    assert!(peak_rss < allocated / 2.0, "resident memory stays well under what was allocated: {stderr}");
}

#[test]
fn gc_stats_reports_collections_and_pauses() {
    let out = vmrun(&["--gc-stats", "--invoke", "run", "programs/binary_trees.wat", "12"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.starts_with("gc: "), "{stderr}");
    for field in ["collections", "pause total", "max", "allocated", "freed", "peak heap", "peak resident"] {
        assert!(stderr.contains(field), "`{field}` in {stderr}");
    }
}

#[test]
fn heap_limit_is_a_clean_trap() {
    let out = vmrun(&["--max-heap", "8MiB", "--invoke", "run", "programs/binary_trees.wat", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(134), "{stderr}");
    assert!(stderr.starts_with("error: wasm trap: out of memory: heap limit 8 MiB reached\n"), "{stderr}");
    assert!(stderr.contains("wasm backtrace:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn gc_flags_are_checked() {
    for args in [
        &["--max-heap", "lots", "--invoke", "run", "programs/gc_casts.wat", "1"][..],
        &["--gc-percent", "fast", "--invoke", "run", "programs/gc_casts.wat", "1"],
        &["--gc-stress=0", "--invoke", "run", "programs/gc_casts.wat", "1"],
    ] {
        let out = vmrun(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

/// The negative control of the shared-GC program's check: with the arguments of `vmrun`.`thread_spawn` not
/// rooted between the spawn and the thread taking them (`VMRUN_VM_DEBUG=spawn-arg-unrooted`), the main
/// thread's next allocation collects the first job before its thread holds it; the slot is reused (the
/// second job has the same type) or freed, and the result is wrong or the run fails. Thread start-up is
/// far slower than the next allocation, so this happens nearly always; a few tries make it certain.
#[test]
fn an_unrooted_spawn_argument_is_caught() {
    let args = ["--gc-stress", "--gc-verify", "--invoke", "run", "programs/shared_gc.wat", "50"];
    let caught = (0..5).any(|_| {
        let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .env("VMRUN_VM_DEBUG", "spawn-arg-unrooted")
            .args(args)
            .output()
            .expect("vmrun starts");
        !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() != "52600"
    });
    assert!(caught, "the planted bug went unnoticed");
}
