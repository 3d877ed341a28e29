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

/// Seed 2028, iteration 335512 of the million-module run (FUZZING.md): export `2` on `(-0.0, -1)` takes an
/// `if` with parameters and seven results, grows a second memory and returns its `i64` parameter, -1.
/// vmrun's tiers and wasmtime 48 give -1; wasmi 2.0 returns a different, run-dependent value.
#[test]
fn if_with_params_and_multi_value_results_returns_the_parameter() {
    for mode in ["off", "eager"] {
        let file = "tests/fixtures/fuzz/if_params_multivalue_2028_335512.wasm";
        let got = run(mode, &["--invoke", "2", file, "--", "-0", "-1"]);
        assert_eq!((got.0, got.1.as_str()), (Some(0), "-1\n"), "--jit={mode}: {}", got.2);
    }
}
