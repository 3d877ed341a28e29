//! The CI smoke run of `vmrun-fuzz`: a fixed seed, bounded iterations, the real binary. Each run must end
//! with exit code 0 (no divergence, panic or hang); the negative controls show that a planted difference
//! and a planted panic are reported with exit code 1.

use std::process::{Command, Output};

fn fuzz(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir().join(format!("vmrun-fuzz-smoke-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun-fuzz"));
    cmd.args(args).arg("--out-dir").arg(&dir).arg("--timeout").arg("20");
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
