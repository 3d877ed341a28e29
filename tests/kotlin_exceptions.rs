//! A compiler-produced WasmGC program that throws and catches at run time: `Exceptions.kt` compiled by the
//! Kotlin 2.4.20 compiler (`wasm-wasi` target) in both exception-handling encodings — the Wasm 3.0 one
//! (`try_table`, `throw_ref`, `exnref`) and the legacy one (`try`, `catch`, `catch_all`) — see
//! `tests/fixtures/kotlin_exceptions/README.md`. Its expected output is the same source run on the JVM.
//!
//! Each run is checked against that output: natively, with every function compiled first (none of either
//! encoding stays interpreted), under a collection at every allocation with heap verification (interpreted
//! and compiled), traced (the exception objects are allocated and
//! freed under their tag's name, and the trace pairs), and under Memcheck with the collector stressed.
//! Negative control: `VMRUN_VM_DEBUG=exn-untraced-payload` (exception objects lose the reference map of
//! their payload, the Kotlin `Throwable`) must fail the stressed run and the Memcheck run.

use std::path::Path;
use std::process::{Command, Output};

use vmtrace::{Applied, EventKind, Trace, replay_all};

const DIR: &str = "tests/fixtures/kotlin_exceptions";
/// Wasm 3.0 exception handling (`try_table`, `throw_ref`).
const NEW: &str = "tests/fixtures/kotlin_exceptions/exceptions.wasm";
/// Legacy exception handling (`try`, `catch`, `catch_all`).
const LEGACY: &str = "tests/fixtures/kotlin_exceptions/exceptions_legacy.wasm";
/// The throws the source makes (parser 4, bank 3, pipeline 4, unwinding 2, the loop 1400, nesting 2);
/// each allocates at least one exception object.
const THROWS: u64 = 1415;

fn expected() -> String {
    std::fs::read_to_string(Path::new(DIR).join("expected.out")).expect("expected.out")
}

fn vmrun(args: &[&str], program: &str, bug: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(args).arg(program).env_remove("VMRUN_GC_DEBUG").env_remove("VMRUN_VM_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_VM_DEBUG", bug);
    }
    cmd.output().expect("vmrun starts")
}

fn assert_expected(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected(), "{what}: {stderr}");
}

/// Natively, and with every function compiled: no function of either encoding stays interpreted.
#[test]
fn both_encodings_print_what_the_jvm_prints() {
    for program in [NEW, LEGACY] {
        assert_expected(&vmrun(&[], program, None), program);
        let compiled = vmrun(&["--jit=eager", "--jit-stats"], program, None);
        assert_expected(&compiled, &format!("{program} --jit=eager"));
        let stats = String::from_utf8_lossy(&compiled.stderr);
        assert!(stats.contains(" 0 left interpreted"), "{program} --jit=eager: {stats}");
    }
}

#[test]
fn both_encodings_survive_a_collection_at_every_allocation() {
    for program in [NEW, LEGACY] {
        assert_expected(&vmrun(&["--gc-stress", "--gc-verify"], program, None), &format!("{program} stressed"));
        let compiled = vmrun(&["--jit=eager", "--gc-stress", "--gc-verify"], program, None);
        assert_expected(&compiled, &format!("{program} compiled and stressed"));
    }
    // The Wasm 3.0 encoding keeps caught exceptions (`catch_all_ref`) across the allocations of `finally`
    // blocks before `throw_ref`: only their reference maps keep the payload alive there.
    let planted = vmrun(&["--gc-stress", "--gc-verify"], NEW, Some("exn-untraced-payload"));
    assert!(
        planted.status.code() != Some(0) || String::from_utf8_lossy(&planted.stdout) != expected(),
        "the planted untraced exception payload went unnoticed"
    );
}

/// `(collections, objects allocated, objects freed)` from the `--gc-stats` line.
fn gc_stats(stderr: &str) -> (u64, u64, u64) {
    let line = stderr.lines().find(|l| l.starts_with("gc: ")).unwrap_or_else(|| panic!("no --gc-stats: {stderr}"));
    let number_before = |end: usize| -> u64 {
        let start = line[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
        line[start..end].parse().unwrap()
    };
    let collections = number_before(line.find(" collections").expect("collections"));
    let objects: Vec<u64> = line.match_indices(" objects)").map(|(end, _)| number_before(end)).collect();
    assert_eq!(objects.len(), 2, "{line}");
    (collections, objects[0], objects[1])
}

#[test]
fn exception_objects_are_traced_under_their_tag_and_the_trace_pairs() {
    let dir = std::env::temp_dir().join(format!("vmrun-kotlin-exn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (program, name) in [(NEW, "new"), (LEGACY, "legacy")] {
        let path = dir.join(format!("{name}.trace"));
        let trace_arg = path.to_str().unwrap();
        let args = ["--trace", "allocfree", "--trace-out", trace_arg, "--gc-stats", "--gc-stress=50"];
        let out = vmrun(&args, program, None);
        assert_expected(&out, &format!("{program} traced"));
        let (collections, allocated, freed) = gc_stats(&String::from_utf8_lossy(&out.stderr));

        // Pairing: the replay fails on a free of an object that is not live; each collection's live figures
        // must match the replay; the counts must match what the collector said.
        let trace = Trace::open(&path).unwrap();
        assert!(trace.error.is_none(), "{:?}", trace.error);
        let (mut allocs, mut frees, mut gc_ends) = (0u64, 0u64, 0u64);
        let (mut tag_allocs, mut tag_frees) = (0u64, 0u64);
        let (_, disagreements) = replay_all(&trace, |generation, ev, applied, _| match (ev.kind, applied) {
            (EventKind::ObjAlloc { type_id, .. }, _) => {
                allocs += 1;
                tag_allocs += u64::from(generation.type_name(type_id) == "tag 0");
            }
            (EventKind::ObjFree { .. }, Applied::Freed(obj)) => {
                frees += 1;
                tag_frees += u64::from(generation.type_name(obj.type_id) == "tag 0");
            }
            (EventKind::GcEnd(_), _) => gc_ends += 1,
            _ => {}
        })
        .unwrap_or_else(|e| panic!("{program}: replay failed: {e}"));
        assert!(disagreements.is_empty(), "{program}: collector and replay disagree: {disagreements:?}");
        assert_eq!((gc_ends, allocs, frees), (collections, allocated, freed), "{program}: trace vs --gc-stats");
        // The module's one tag has no name in the name section, so its objects are `tag 0`. Each throw makes
        // one; the legacy encoding's `finally` blocks catch and throw anew, so it makes more.
        assert!(tag_allocs >= THROWS, "{program}: {tag_allocs} exception objects for {THROWS} throws");
        assert!(tag_frees > tag_allocs / 2, "{program}: only {tag_frees} of {tag_allocs} exception objects freed");

        let summary = Command::new(env!("CARGO_BIN_EXE_vmrun")).args(["trace", "summary", trace_arg]).output().unwrap();
        let summary = String::from_utf8_lossy(&summary.stdout);
        assert!(summary.lines().any(|l| l.trim_start().starts_with("tag 0 ")), "{program}:\n{summary}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn memcheck(program: &str, bug: Option<&str>) -> Output {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite"])
        .arg(env!("CARGO_BIN_EXE_vmrun"))
        .args(["--gc-stress=50", program])
        .env_remove("VMRUN_GC_DEBUG")
        .env_remove("VMRUN_VM_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_VM_DEBUG", bug);
    }
    cmd.output().expect("run valgrind")
}

#[test]
fn both_encodings_are_memcheck_clean_with_the_collector_stressed() {
    if !Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `valgrind` is not installed; the Memcheck run did not happen");
        return;
    }
    for program in [NEW, LEGACY] {
        let out = memcheck(program, None);
        assert_expected(&out, &format!("{program} under Memcheck"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
        assert!(stderr.contains("definitely lost: 0 bytes") || stderr.contains("All heap blocks were freed"));
    }
    let planted = memcheck(NEW, Some("exn-untraced-payload"));
    assert_eq!(planted.status.code(), Some(99), "Memcheck missed the untraced exception payload");
}
