//! Modules the differential fuzzer (`fuzz/`, FUZZING.md) found interesting, minimized, run through the
//! real `vmrun` binary in both tiers.

use std::process::Command;

fn run(mode: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .arg(format!("--jit={mode}"))
        .args(args)
        .output()
        .expect("vmrun starts");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A division guarded against a zero divisor through a copy of a local onto itself (`local.get 3;
/// local.set 3`) and a `local.tee` of the dividend: the result is the dividend (32), not a trap.
#[test]
fn div_guard_with_local_copies_returns_the_dividend() {
    for mode in ["off", "eager"] {
        for x in ["0.05", "0", "-0.5"] {
            let got = run(mode, &["--invoke", "f", "tests/fixtures/fuzz/div_guard_locals.wat", x]);
            assert_eq!((got.0, got.1.as_str()), (Some(0), "32\n"), "--jit={mode} f({x}): {}", got.2);
        }
    }
}
