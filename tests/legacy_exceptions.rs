//! The legacy exception instructions (`try`, `catch`, `catch_all`, `delegate`, `rethrow`) compiled, against
//! the interpreter: `tests/fixtures/legacy_exn_tiers.wat` in `--jit=off`, `--jit=eager` and `--jit=auto`
//! (threshold 1) must print the same results, or end with the same uncaught exception and backtrace. With
//! `VMRUN_JIT_INTERPRET=interp_` the `$interp_*` functions stay interpreted, so every handler meets a throw,
//! a `delegate` or a `rethrow` of the other tier, exceptions of another instance (`--preload`) and a
//! caught exception kept across allocations under `--gc-stress --gc-verify`. `legacy_exn_edges.wat` holds
//! corner cases within one function (parameters, branches out of arms, every payload type, nesting with
//! `try_table`, traps, dead code, a loop replaced on the stack), compared the same way.
//!
//! Negative controls (planted in the compiler, `VMRUN_JIT_DEBUG`): `delegate-skips-a-level` (a compiled
//! `delegate` also skips its label's handlers) and `no-caught-exn-maps` (a caught exception is left out of
//! the stack maps) must make these checks fail; `the_planted_bugs_are_caught` checks that they do.

use std::process::{Command, Output};

const FILE: &str = "tests/fixtures/legacy_exn_tiers.wat";
const EDGES: &str = "tests/fixtures/legacy_exn_edges.wat";
const LIB: &str = "errors=tests/fixtures/exn_lib.wat";
const OFF: &[&str] = &["--jit=off"];
const EAGER: &[&str] = &["--jit=eager"];
const TIERS: [&[&str]; 3] = [OFF, EAGER, &["--jit=auto", "--jit-threshold", "1"]];
const STRESS: &[&str] = &["--gc-stress", "--gc-verify"];

/// `vmrun <tier> <extra> --preload errors=... --invoke export FILE args`, with `bug` planted.
fn run(tier: &[&str], extra: &[&str], export: &str, args: &[&str], bug: Option<&str>) -> Output {
    run_file(FILE, tier, extra, export, args, bug)
}

fn run_file(file: &str, tier: &[&str], extra: &[&str], export: &str, args: &[&str], bug: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env("VMRUN_JIT_INTERPRET", "interp_").env_remove("VMRUN_JIT_DEBUG").env_remove("VMRUN_VM_DEBUG");
    if let Some(b) = bug {
        cmd.env("VMRUN_JIT_DEBUG", b);
    }
    cmd.args(tier).args(extra).args(["--preload", LIB, "--invoke", export, file]).args(args);
    cmd.output().expect("vmrun starts")
}

/// Exit code, stdout, stderr.
fn seen(o: &Output) -> (Option<i32>, String, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// Run `export args` of `FILE` in every tier (with `extra` options); all must agree with the interpreter,
/// whose outcome is returned.
fn same_in_every_tier(extra: &[&str], export: &str, args: &[&str]) -> (Option<i32>, String, String) {
    same_in_every_tier_of(FILE, extra, export, args)
}

fn same_in_every_tier_of(file: &str, extra: &[&str], export: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let reference = seen(&run_file(file, OFF, extra, export, args, None));
    assert!(!reference.2.contains("panicked") && !reference.2.contains("internal error"), "{reference:?}");
    for tier in &TIERS[1..] {
        let other = seen(&run_file(file, tier, extra, export, args, None));
        assert_eq!(other, reference, "{tier:?} vs --jit=off: {export} {args:?}");
    }
    reference
}

fn ok(export: &str, args: &[&str], want: &str) {
    let (code, out, err) = same_in_every_tier(&[], export, args);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), want, ""), "{export} {args:?}");
}

/// The run ends with uncaught exception `tag` whose backtrace's frames are `frames` (innermost first).
fn escapes(export: &str, args: &[&str], tag: &str, frames: &[&str]) {
    let (code, _, err) = same_in_every_tier(&[], export, args);
    assert_eq!(code, Some(134), "{export} {args:?}: {err}");
    assert!(err.starts_with(&format!("error: uncaught wasm exception: tag {tag}\nwasm backtrace:\n")), "{err}");
    for (i, f) in frames.iter().enumerate() {
        assert!(err.contains(&format!("    {i}: legacy!{f} at {FILE}:")), "frame {i} is {f}: {err}");
    }
    assert!(!err.contains(&format!("    {}: ", frames.len())), "more frames than {frames:?}: {err}");
}

#[test]
fn a_try_catches_what_the_other_tier_throws() {
    for export in ["compiled_catches", "interp_catches"] {
        ok(export, &["5"], "105\n");
        ok(export, &["0"], "0\n");
        ok(export, &["-3"], "-1\n");
    }
}

#[test]
fn delegate_goes_to_the_try_its_label_names() {
    for export in ["compiled_delegate", "interp_delegate"] {
        ok(export, &["5", "1"], "1005\n");
        ok(export, &["5", "0"], "2005\n");
        ok(export, &["0", "1"], "0\n");
    }
    // No clause takes `$other`: it leaves through both delegating tries with the thrower's backtrace.
    escapes("compiled_delegate", &["-1", "0"], "$other", &["interp_throw", "compiled_delegate"]);
    escapes("interp_delegate", &["-1", "1"], "$other", &["compiled_throw", "interp_delegate"]);
}

#[test]
fn delegate_to_the_caller_skips_the_catch_all_around_it() {
    for export in ["interp_catches_delegated", "compiled_catches_delegated"] {
        ok(export, &["4"], "504\n");
        ok(export, &["-1"], "9\n");
        ok(export, &["0"], "0\n");
    }
}

#[test]
fn rethrow_of_an_outer_arm_reaches_the_other_tier() {
    for export in ["interp_catches_rethrown", "compiled_catches_rethrown"] {
        ok(export, &["3"], "703\n");
        ok(export, &["0"], "0\n");
    }
    // Uncaught, the backtrace starts at the `rethrow`, as the interpreter's does.
    escapes("compiled_escapes", &["3"], "$e", &["interp_rethrow", "compiled_escapes"]);
    escapes("interp_escapes", &["3"], "$e", &["compiled_rethrow", "interp_escapes"]);
}

#[test]
fn another_instance_exception_through_a_delegate() {
    ok("compiled_lib", &["6"], "306\n");
}

#[test]
fn a_caught_exception_stays_a_root_while_its_arm_allocates() {
    let (code, out, err) = same_in_every_tier(STRESS, "compiled_boxed", &["42"]);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "42\n", ""));
}

/// A loop inside a catch arm is entered by on-stack replacement (the hidden exception is loaded with the
/// operand stack) and the arm's `rethrow` after it throws the right exception.
#[test]
fn a_loop_in_a_catch_arm_is_entered_by_osr() {
    ok("loop_in_arm", &["3"], "5003\n");
    let out = run(&["--jit=auto", "--jit-stats"], &[], "loop_in_arm", &["3"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5003\n", "{err}");
    assert!(err.contains(" 1 OSR entries"), "{err}");
}

#[test]
fn corner_cases_match_the_interpreter() {
    for (export, arg, want) in [
        ("params", "0", "5"),
        ("params", "4", "14"),
        ("br_out", "0", "1001"),
        ("br_out", "5", "1015"),
        ("br_table_arm", "0", "111"),
        ("br_table_arm", "4", "4"),
        ("br_table_arm", "5", "15"),
        ("br_table_arm", "6", "6"),
        ("self_throw", "3", "4"),
        ("multi2", "3", "14.75"),
        ("delegate_in_arm", "0", "0"),
        ("delegate_in_arm", "2", "59"),
        ("legacy_in_try_table", "0", "0"),
        ("legacy_in_try_table", "3", "7003"),
        ("try_table_in_legacy", "0", "3"),
        ("try_table_in_legacy", "4", "604"),
        ("no_catch", "0", "2"),
        ("no_catch", "3", "44"),
        ("rethrow_deep", "0", "0"),
        ("rethrow_deep", "6", "76"),
        ("trap_not_caught", "1", "1"),
        ("dead", "1", "8"),
        ("dead_delegate", "0", "3"),
        ("dead_delegate", "5", "5"),
        ("loop_body", "7", "107"),
        ("nested_catch_arms", "4", "8"),
        ("nested_catch_arms", "0", "0"),
    ] {
        let (code, out, err) = same_in_every_tier_of(EDGES, &[], export, &[arg]);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(0), format!("{want}\n").as_str(), ""), "{export} {arg}");
    }
    for export in ["trap_not_caught", "trap_here"] {
        let (code, _, err) = same_in_every_tier_of(EDGES, &[], export, &["0"]);
        assert_eq!(code, Some(134), "{export}: {err}");
        assert!(err.starts_with("error: wasm trap: integer divide by zero\nwasm backtrace:\n"), "{export}: {err}");
        assert!(err.contains(&format!(": edges!{export} at {EDGES}:")), "{export}: {err}");
    }
}

/// With `--jit=eager`, only the functions `VMRUN_JIT_INTERPRET` names stay interpreted.
#[test]
fn every_legacy_instruction_is_compiled() {
    let out = run(&["--jit=eager", "--jit-stats"], &[], "compiled_delegate", &["5", "1"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    let interpreted: Vec<&str> = err.lines().filter(|l| l.starts_with("jit: interpreted ")).collect();
    assert!(!interpreted.is_empty(), "{err}");
    for line in interpreted {
        assert!(
            line.starts_with("jit: interpreted $interp_") && line.ends_with("kept interpreted by VMRUN_JIT_INTERPRET"),
            "{line}"
        );
    }
}

#[test]
fn the_planted_bugs_are_caught() {
    let skipping = |args: &[&str]| seen(&run(EAGER, &[], "compiled_delegate", args, Some("delegate-skips-a-level")));
    // To the middle try: the outer one takes it. To the outer try: nothing does.
    assert_eq!(skipping(&["5", "0"]).1, "1005\n");
    let (code, _, err) = skipping(&["5", "1"]);
    assert_eq!(code, Some(134), "{err}");
    let unmapped = run(EAGER, STRESS, "compiled_boxed", &["42"], Some("no-caught-exn-maps"));
    assert_ne!(seen(&unmapped), (Some(0), "42\n".to_string(), String::new()), "no-caught-exn-maps went unnoticed");
}
