//! The shared-everything instructions through the real binary (`tests/fixtures/shared_gc_ops.wat`): struct,
//! array and global atomics (every read-modify-write, compare-exchange on numbers and references, packed
//! fields read signed and unsigned, an i32 global wrapping at 32 bits), their traps, and
//! `vmrun`.`thread_spawn` refusing what it cannot run. The expected values are worked out by hand from
//! the proposal's semantics in the fixture's comments, in both tiers (compiled code does them inline). Threads sharing objects are `programs/shared_gc.wat`
//! (tests/programs.rs, tests/gc.rs, tests/valgrind.rs) and `tests/race.rs`. A shared table used by two
//! threads is `tests/fixtures/shared_table.wat` (both tiers, under `--gc-stress --gc-verify`, with the
//! planted bug `VMRUN_VM_DEBUG=shared-table-unrooted` as the negative control). Function references in
//! shared fields and globals are refused at spawn (`tests/fixtures/shared_func_refs.wat`, planted bug
//! `VMRUN_VM_DEBUG=allow-shared-func-refs`).

use std::process::Command;

const OPS: &str = "tests/fixtures/shared_gc_ops.wat";

/// (case, expected stdout).
const CASES: &[(u32, &str)] = &[
    (1, "10015"),         // rmw.add: old 10, then 15
    (2, "6099"),          // ((20 - 4) & 12 | 1) ^ 7 = 6, xchg 99 returns it
    (3, "-2747"),         // i8 -3: get_s -3, get_u 253
    (4, "10011"),         // a failed then a successful cmpxchg
    (5, "1"),             // cmpxchg of a reference field
    (6, "7042"),          // array.new's 7, then set 40 and add 2
    (7, "42949672951"),   // 0xffffffff + 2 wraps to 1 in an i32 global
    (8, "6"),             // i64 global cmpxchg
    (11, "-11"),          // thread_spawn of null and of a function of the wrong type: -1 both
    (12, "-56"),          // 200 in an i8 array element, read signed
    (13, "581"),          // an unshared global's atomics: old 5, old 8, then 1
    (14, "79"),           // an array element's cmpxchg 7 -> 9
    (15, "577"),          // an i64 global's xchg: old 5, then 77
    (16, "-47852516357"), // ref.i31_shared of -5: get_s -5, get_u 2^31 - 5
];

fn case(n: u32, jit: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args([jit, "--invoke", "case", OPS, &n.to_string()])
        .output()
        .expect("vmrun starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shared_object_and_global_atomics_compute_what_the_proposal_says() {
    // The compiled tier compiles them (atomic instructions on the field's or the global's address).
    for jit in ["--jit=off", "--jit=eager"] {
        for &(n, want) in CASES {
            let (code, out, err) = case(n, jit);
            assert_eq!((code, out.as_str()), (Some(0), want), "case {n} {jit}: {err}");
        }
    }
}

#[test]
fn atomics_on_shared_objects_trap_like_plain_accesses() {
    for (n, trap) in [(9, "out of bounds array access"), (10, "null structure reference")] {
        let (code, _, err) = case(n, "--jit=off");
        assert_eq!(code, Some(134), "case {n}: {err}");
        assert!(err.contains(trap) && err.contains("wasm backtrace"), "case {n}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // Compiled code traps the same way, with the same message and backtrace.
        assert_eq!(case(n, "--jit=eager"), (code, String::new(), err), "case {n} compiled");
    }
}

#[test]
fn the_shared_everything_instructions_are_compiled() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(["--jit=eager", "--jit-stats", "--invoke", "case", OPS, "1"])
        .output()
        .expect("vmrun starts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" 0 left interpreted"), "{err}");
}

// ---------------- shared tables

const TABLE: &str = "tests/fixtures/shared_table.wat";

fn shared_table_run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env_remove("VMRUN_VM_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).args(["--invoke", "run", TABLE, "300"]).output().expect("vmrun starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_shared_table_is_one_table_for_every_thread_and_a_root_of_every_collection() {
    // The thread grows, fills, sets and copies the main instance's shared table; the main thread sees it
    // all, and the objects only the table holds survive collections at every allocation.
    for jit in ["--jit=off", "--jit=eager"] {
        for stress in [&[][..], &["--gc-stress", "--gc-verify"]] {
            let mut args = vec![jit];
            args.extend_from_slice(stress);
            let (code, out, err) = shared_table_run(&args, &[]);
            assert_eq!((code, out.as_str()), (Some(0), "642421"), "{args:?}: {err}");
        }
    }
}

#[test]
fn a_shared_table_left_out_of_the_roots_loses_its_objects() {
    // Negative control: the same run with shared tables left out of the root set reads freed boxes
    // (their slots reused by the boxes of 7 the main thread allocates), or the verifier objects.
    let bug = [("VMRUN_VM_DEBUG", "shared-table-unrooted")];
    let (code, out, err) = shared_table_run(&["--gc-stress", "--gc-verify"], &bug);
    assert_ne!((code, out.as_str()), (Some(0), "642421"), "the planted bug went unnoticed: {err}");
}

#[test]
fn a_shared_table_of_function_references_is_not_shared_with_threads() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(["--invoke", "run", "tests/fixtures/shared_table_funcs.wat"])
        .output()
        .expect("vmrun starts");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "-1", "{}", String::from_utf8_lossy(&out.stderr));
}

// ---------------- function references in shared places

const FUNC_REFS: &str = "tests/fixtures/shared_func_refs.wat";

fn func_refs_run(jit: &str, kind: u32, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env_remove("VMRUN_VM_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args([jit, "--invoke", "run", FUNC_REFS, &kind.to_string()]).output().expect("vmrun starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_spawn_with_function_references_in_shared_fields_or_globals_is_refused() {
    // A function reference is a store function index: in another thread's store it names another
    // function or none. `thread_spawn` refuses (-1) for a shared struct type with a function field and
    // for a shared global of a function type, in both tiers.
    for jit in ["--jit=off", "--jit=eager"] {
        for kind in [0, 1] {
            let (code, out, err) = func_refs_run(jit, kind, &[]);
            assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "-1", ""), "{jit} kind {kind}");
        }
    }
}

#[test]
fn without_the_refusal_a_function_reference_reaches_another_store() {
    // Negative control: with the refusal skipped the thread gets the index and the run no longer ends
    // with the refusal (it fails, or calls whatever that index is in the thread's store).
    let bug = [("VMRUN_VM_DEBUG", "allow-shared-func-refs")];
    for kind in [0, 1] {
        let (code, out, err) = func_refs_run("--jit=off", kind, &bug);
        assert_ne!((code, out.as_str()), (Some(0), "-1"), "kind {kind}: the planted bug went unnoticed: {err}");
    }
}
