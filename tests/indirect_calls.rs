//! `call_indirect` in compiled code against the interpreter, after every kind of table change: compiled
//! code reads a table's elements itself (`vm::tier::VmTable`, rewritten by every change of the table)
//! and calls a function of its own instance of the expected type without the VM. The scripts
//! `tests/fixtures/indirect_calls.wast` (table.set/grow/fill/copy/init, elem.drop, an imported table
//! changed by another instance, a later instance's active segment, callees that tier up mid-loop,
//! subtypes, the three traps) and `indirect_calls_moved.wast` (elements that move between the reads)
//! must pass completely in `--jit=off`, `eager` and `auto` with thresholds that make callers and
//! callees change tier while they run. Negative controls: the planted
//! `VMRUN_JIT_DEBUG=indirect-no-signature-check` (the inline lookup skips the type comparison) and
//! `VMRUN_VM_DEBUG=stale-table-base` (a table's view keeps the old element address after a growth)
//! each make a script fail.

use std::process::{Command, Output};

const SCRIPTS: [&str; 2] = ["tests/fixtures/indirect_calls.wast", "tests/fixtures/indirect_calls_moved.wast"];

const TIERS: [&[&str]; 5] = [
    &["--jit=off"],
    &["--jit=eager"],
    &["--jit=auto", "--jit-threshold", "1"],
    &["--jit=auto", "--jit-threshold", "3"],
    &["--jit=auto"],
];

fn wast(tier: &[&str], script: &str, env: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.arg("wast").args(tier).arg(script);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.output().expect("vmrun starts")
}

/// The runner's summary line, after checking the run passed every directive.
fn passed(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let summary = out.lines().chain(err.lines()).find(|l| l.contains(" passed, ")).unwrap_or_default().to_string();
    assert!(o.status.success() && summary.contains(" 0 failed, 0 skipped"), "{what}: {summary}\n{out}{err}");
    summary
}

#[test]
fn every_tier_sees_every_table_change() {
    for script in SCRIPTS {
        let reference = passed(&wast(TIERS[0], script, None), script);
        for tier in &TIERS[1..] {
            let summary = passed(&wast(tier, script, None), &format!("{script} {tier:?}"));
            assert_eq!(summary, reference, "{script} {tier:?}");
        }
    }
}

/// The inline lookup without its type comparison calls a function of another type: the script's
/// `indirect call type mismatch` assertions fail.
#[test]
fn a_skipped_signature_check_is_caught() {
    let o = wast(&["--jit=eager"], SCRIPTS[0], Some(("VMRUN_JIT_DEBUG", "indirect-no-signature-check")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the planted bug went unnoticed");
    assert!(err.contains("expected trap `indirect call type mismatch`"), "{err}");
}

/// A view left pointing at the elements' old place after a growth reads the old element.
#[test]
fn a_stale_table_view_is_caught() {
    let o = wast(&["--jit=eager"], SCRIPTS[1], Some(("VMRUN_VM_DEBUG", "stale-table-base")));
    assert!(!o.status.success(), "the planted bug went unnoticed: {o:?}");
    // The interpreter reads the table itself, so the bug is the compiled tier's only.
    passed(&wast(&["--jit=off"], SCRIPTS[1], Some(("VMRUN_VM_DEBUG", "stale-table-base"))), "--jit=off");
}
