//! The compiler's code memory is freed with it (`impl Drop for CraneliftCompiler`), and Valgrind is told
//! to drop its translations of that memory first. Rounds of compiler, runtime and module, each compiling a
//! function that returns a different constant, run one after the other: the code of each round is likely
//! at the addresses the round before freed, so a stale translation would return the old constant, and
//! code run from freed memory would fault or be reported. The same rounds run natively and under Memcheck
//! (the test runs itself under `valgrind`). No planted bug here: skipping the request is not caught,
//! because Valgrind drops the translations of unmapped memory by itself (cranelift-jit unmaps).

use std::sync::Arc;

use vm::tier::JitMode;
use vm::{Config, Extern, JitConfig, Linker, Runtime, Source, Store, Val};

/// What round `k`'s compiled function returns.
fn expected(k: i32) -> i32 {
    1000 + k
}

fn run_rounds(rounds: i32) -> Vec<i32> {
    (0..rounds)
        .map(|k| {
            let compiler = Arc::new(jit::CraneliftCompiler::new().expect("a compiler for this machine"));
            let jit =
                JitConfig { mode: JitMode::Eager, threshold: 1, compiler: Some(compiler), ..JitConfig::default() };
            let rt = Runtime::new(Config { jit, ..Config::default() });
            let wat = format!("(module (func (export \"f\") (result i32) (i32.add (i32.const {k}) (i32.const 1000))))");
            let m = rt.load_module(Source::from_text("round.wat", &wat).expect("valid text")).expect("valid module");
            let mut store = Store::with_runtime(rt);
            let i = store.instantiate(m, &Linker::new()).expect("instantiates");
            let Some(Extern::Func(f)) = store.get_export(i, "f") else { panic!("no export f") };
            match store.call(f, &[]).expect("no trap").as_slice() {
                [Val::I32(v)] => *v,
                other => panic!("unexpected results {other:?}"),
            }
        })
        .collect()
}

#[test]
fn code_memory_is_freed_and_reused_with_fresh_code() {
    let got = run_rounds(12);
    assert_eq!(got, (0..12).map(expected).collect::<Vec<_>>());
}

/// The test above under Memcheck: no error, and every round's own result.
#[test]
fn code_memory_reuse_is_memcheck_clean() {
    if std::env::var_os("VMRUN_UNDER_VALGRIND").is_some() {
        return; // the inner run only runs the test above
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("valgrind")
        .args(["--error-exitcode=99", "--leak-check=no"])
        .arg(exe)
        .args(["--exact", "code_memory_is_freed_and_reused_with_fresh_code", "--test-threads=1"])
        .env("VMRUN_UNDER_VALGRIND", "1")
        .output()
        .expect("valgrind runs (CI installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "under Memcheck: {}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test result: ok. 1 passed"), "the rounds did not run under Memcheck:\n{stdout}");
}
