//! The CI smoke run of `vmrun-fuzz`: a fixed seed, bounded iterations, the real binary. Each run must end
//! with exit code 0 (no divergence, panic or hang); the negative controls show that a planted difference
//! and a planted panic are reported with exit code 1.

use std::process::{Command, Output};

fn fuzz(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir().join(format!("vmrun-fuzz-smoke-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun-fuzz"));
    // A module under Memcheck on a loaded 2-core machine can take well over 20 s; not a hang.
    let timeout = if args.contains(&"--memcheck") { "600" } else { "20" };
    cmd.args(args).arg("--out-dir").arg(&dir).arg("--timeout").arg(timeout);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("vmrun-fuzz starts")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn diff_smoke_run_agrees() {
    let out = fuzz(&["diff", "--seed", "15", "--iterations", "2000"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("diff: 2000 modules executed") && t.contains(": 0 divergences"), "{t}");
}

/// Negative control: the interpreter's i32 results perturbed (low bit flipped) must be a divergence.
#[test]
fn diff_smoke_run_catches_a_perturbed_i32_result() {
    let out = fuzz(&["diff", "--seed", "15", "--iterations", "300"], &[("VMRUN_FUZZ_PERTURB", "i32")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("DIVERGENCE seed 15 iteration") && t.contains("I32("), "{t}");
}

#[test]
fn crash_smoke_runs_find_nothing() {
    for target in ["loader", "wat", "trace"] {
        let out = fuzz(&["crash", "--target", target, "--seed", "15", "--iterations", "3000"], &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{target}: {t}");
        assert!(t.contains("3000 inputs") && t.contains(": 0 failures"), "{target}: {t}");
    }
}

/// Negative control: a panic planted in the reader's path must be caught and reported.
#[test]
fn crash_run_reports_a_planted_panic() {
    let out =
        fuzz(&["crash", "--target", "loader", "--seed", "15", "--iterations", "10"], &[("VMRUN_FUZZ_PANIC", "1")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("PANIC seed 15 iteration 0") && t.contains(": 1 failures"), "{t}");
}

#[test]
fn invoke_argument_smoke_run_finds_nothing() {
    // Every 16th input also runs the real `vmrun` (built next to vmrun-fuzz by the workspace build).
    let out = fuzz(&["crash", "--target", "invoke", "--seed", "15", "--iterations", "2000"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("2000 inputs") && t.contains(": 0 failures"), "{t}");
}

#[test]
fn gc_smoke_run_agrees() {
    let out = fuzz(&["gc", "--seed", "15", "--iterations", "600"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("gc: 600 modules executed") && t.contains(": 0 failures"), "{t}");
}

/// Negative control: a collector that skips marking an object reached through a field (`skip-mark`) must
/// be caught by the stressed, verified store or by the comparison.
#[test]
fn gc_smoke_run_catches_a_planted_collector_bug() {
    let out = fuzz(&["gc", "--seed", "15", "--iterations", "20"], &[("VMRUN_GC_DEBUG", "skip-mark")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("GC FAILURE seed 15 iteration"), "{t}");
}

fn valgrind_missing() -> bool {
    !Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The Memcheck sample of CI: a few generated GC modules under `valgrind vmrun --gc-stress=N`.
#[test]
fn gc_modules_are_memcheck_clean() {
    if valgrind_missing() {
        eprintln!("skipped: `valgrind` is not installed; the Memcheck run did not happen");
        return;
    }
    let vmrun = std::path::Path::new(env!("CARGO_BIN_EXE_vmrun-fuzz")).with_file_name("vmrun");
    if !vmrun.is_file() {
        eprintln!(
            "skipped: {} is not built (a workspace build makes it); the Memcheck run did not happen",
            vmrun.display()
        );
        return;
    }
    let out = fuzz(&["gc", "--seed", "15", "--iterations", "6", "--memcheck"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("gc: 6 modules executed") && t.contains(": 0 failures"), "{t}");
    // Negative control: the collector bug planted in the Memcheck child only; Memcheck must report it.
    let out =
        fuzz(&["gc", "--seed", "15", "--iterations", "2", "--memcheck"], &[("VMRUN_FUZZ_MEMCHECK_BUG", "skip-mark")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("MEMCHECK: exit"), "{t}");
}
