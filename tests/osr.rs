//! On-stack replacement against the interpreter: a function entered once whose loop runs long must
//! give the same results (or the same trap message, backtrace and exit code) in `--jit=off`,
//! `--jit=auto` (the default threshold and a tiny one) and `--jit=eager`, and `--jit-stats` must show
//! that `auto` really entered compiled code through a loop header. The fixture is
//! `tests/fixtures/osr.wat`. Negative control: `VMRUN_JIT_DEBUG=osr-wrong-local` (an OSR entry that
//! loads local 0 plus one) makes these tests fail; `the_planted_bug_is_caught` checks that it does.

use std::process::{Command, Output};

const OSR: &str = "tests/fixtures/osr.wat";
const OFF: &[&str] = &["--jit=off"];
const AUTO: &[&str] = &["--jit=auto", "--jit-stats"];
const AUTO_EARLY: &[&str] = &["--jit=auto", "--jit-stats", "--jit-threshold", "3"];
const EAGER: &[&str] = &["--jit=eager"];

fn run(tier: &[&str], export: &str, args: &[&str], bug: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(tier).args(["--invoke", export, OSR]).args(args);
    if let Some(b) = bug {
        cmd.env("VMRUN_JIT_DEBUG", b);
    }
    cmd.output().expect("vmrun starts")
}

/// Exit code, stdout, stderr without `--jit-stats`' lines, and the OSR entries those lines report.
fn seen(o: &Output) -> ((Option<i32>, String, String), Option<u64>) {
    let err = String::from_utf8_lossy(&o.stderr);
    let mut osr = None;
    let mut rest = String::new();
    for line in err.lines() {
        if let Some(stats) = line.strip_prefix("jit: ") {
            if let Some(n) = stats.strip_suffix(" OSR entries").and_then(|s| s.rsplit(' ').next()) {
                osr = n.parse().ok();
            }
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    ((o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), rest), osr)
}

/// Run `export args` in every tier; all must agree with the interpreter. Returns the interpreter's output
/// and the OSR entries of `auto` with the default threshold.
fn same_in_every_tier(export: &str, args: &[&str]) -> ((Option<i32>, String, String), u64) {
    let (reference, _) = seen(&run(OFF, export, args, None));
    assert!(!reference.2.contains("panicked"), "{reference:?}");
    let (auto, entries) = seen(&run(AUTO, export, args, None));
    assert_eq!(auto, reference, "--jit=auto vs --jit=off on {export} {args:?}");
    for tier in [AUTO_EARLY, EAGER] {
        assert_eq!(seen(&run(tier, export, args, None)).0, reference, "{tier:?} vs --jit=off on {export} {args:?}");
    }
    (reference, entries.expect("--jit-stats prints the OSR entries"))
}

/// Same results everywhere, exit 0, and at least `min_osr` OSR entries in `auto`; returns stdout.
fn ok(export: &str, args: &[&str], min_osr: u64) -> String {
    let ((code, out, err), entries) = same_in_every_tier(export, args);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{export} {args:?}");
    assert!(entries >= min_osr, "{export} {args:?}: {entries} OSR entries, want at least {min_osr}");
    out
}

/// Same trap everywhere (exit 134, message, backtrace); returns stderr.
fn traps(export: &str, args: &[&str], message: &str) -> String {
    let ((code, _, err), entries) = same_in_every_tier(export, args);
    assert_eq!(code, Some(134), "{export} {args:?}: {err}");
    assert!(err.starts_with(&format!("error: wasm trap: {message}\nwasm backtrace:\n")), "{export}: {err}");
    assert!(entries >= 1, "{export} {args:?}: the trapping loop was not replaced");
    err
}

#[test]
fn locals_of_every_numeric_type_cross_the_entry() {
    ok("all_types", &["100000"], 1);
    ok("all_types", &["0"], 0);
    ok("typed_params", &["-5", "1.5", "0.25", "50000"], 1);
}

#[test]
fn nested_loops() {
    let out = ok("nested", &["1000"], 1);
    assert_eq!(out, "249500250000\n");
}

#[test]
fn loops_sharing_a_header() {
    ok("same_header", &["200000"], 1);
}

#[test]
fn operand_stack_values_and_loop_parameters_cross_the_entry() {
    ok("stack_values", &["100000"], 1);
}

#[test]
fn a_trap_in_replaced_code_has_the_interpreters_backtrace() {
    let err = traps("trap_in_loop", &["50000"], "integer divide by zero");
    assert_eq!(err.matches("\n  ").count(), 2, "two frames: {err}");
    assert!(err.contains("divide_until_zero"), "{err}");
    traps("oob_in_loop", &[], "out of bounds memory access");
}

#[test]
fn a_function_replaced_once_then_called_compiled() {
    ok("again", &["200000"], 1);
}

#[test]
fn older_activations_of_a_compiled_function_replace_themselves() {
    // Six activations of $rec each run a 100000-iteration loop: the innermost tiers it up, each of the
    // five older ones finds it compiled at its next back-edge.
    let out = ok("rec", &["5", "100000"], 6);
    assert!(!out.is_empty());
}

#[test]
fn exceptions_pass_replaced_frames() {
    ok("catch_from_loop", &["20000"], 1);
    let ((code, _, err), _) = same_in_every_tier("loop_calling_thrower", &["20000"]);
    assert_eq!(code, Some(134), "{err}");
}

#[test]
fn the_planted_bug_is_caught() {
    // The negative control of this file: with `osr-wrong-local` the replaced frames compute something
    // else, which the comparisons above would report.
    let (reference, _) = seen(&run(OFF, "nested", &["1000"], None));
    let (buggy, entries) = seen(&run(AUTO, "nested", &["1000"], Some("osr-wrong-local")));
    assert!(entries.unwrap_or(0) >= 1);
    assert_ne!(buggy, reference, "osr-wrong-local went unnoticed");
}
