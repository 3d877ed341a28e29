//! A compiler-produced WasmGC program with exception handling: the Kotlin/Wasm program in
//! `tests/fixtures/kotlin/` (origin in its README), run as a WASI reactor (`_initialize`, then `render`)
//! natively, under a collection at every allocation with heap verification, traced, and under Memcheck.

use std::process::{Command, Output};

const ARGS: [&str; 5] = [
    "--preload",
    "graphics=tests/fixtures/kotlin/graphics.wat",
    "--invoke",
    "render",
    "tests/fixtures/kotlin/firefly_hello.wasm",
];

/// What its source prints (`_initialize` runs `main`), then the triangle `render` draws.
const EXPECTED: &str = "Main()\nHello World from Kotlin WASM / WASI\nRender\n60 10 40 40 80 60\n";

fn vmrun(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmrun")).args(extra).args(ARGS).output().expect("vmrun starts")
}

fn assert_expected(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), EXPECTED, "{what}: {stderr}");
}

#[test]
fn the_kotlin_program_runs_natively_and_under_gc_stress() {
    assert_expected(&vmrun(&[]), "native");
    assert_expected(&vmrun(&["--gc-stress", "--gc-verify"]), "--gc-stress --gc-verify");
}

#[test]
fn the_kotlin_program_runs_traced() {
    let dir = std::env::temp_dir().join(format!("vmrun-kotlin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("kotlin.trace");
    let trace_arg = trace.to_str().unwrap();
    assert_expected(&vmrun(&["--trace", "allocfree", "--trace-out", trace_arg]), "traced");
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun")).args(["trace", "summary", trace_arg]).output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{summary}");
    // The Kotlin runtime and the triangle allocate structs and arrays.
    let allocated = summary.lines().find(|l| l.trim_start().starts_with("allocated")).unwrap_or_default();
    let objects: u64 = allocated.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(objects > 50, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kotlin_program_is_memcheck_clean() {
    if !Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `valgrind` is not installed; the Memcheck run did not happen");
        return;
    }
    let out = Command::new("valgrind")
        .args(["--error-exitcode=99", "--leak-check=full"])
        .arg(env!("CARGO_BIN_EXE_vmrun"))
        .args(ARGS)
        .env_remove("VMRUN_GC_DEBUG")
        .env_remove("VMRUN_VM_DEBUG")
        .output()
        .expect("run valgrind");
    assert_expected(&out, "under Memcheck");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERROR SUMMARY: 0 errors"));
}
