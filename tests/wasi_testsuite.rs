//! The official WASI preview1 testsuite (`tests/wasi-testsuite/`, vendored) through the real `vmrun`.
//!
//! Each program runs as the testsuite's rules say (see `tests/wasi-testsuite/README.md`): arguments,
//! environment and pre-opened folders from its `.json`, in a fresh temporary copy of those folders,
//! and passes when its exit code and (when given) its standard output match. The aim is all of them;
//! [`EXCEPTIONS`] lists any that may fail, each with its reason, and a listed test that passes is an
//! error too (the list must stay true).
//!
//! Negative control: `VMRUN_VM_DEBUG=wasi-dotdot-escape` plants a sandbox bug (`..` at a directory
//! descriptor's root walks out), and the programs that check escapes must then fail.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Tests allowed to fail, with the reason. Empty: vmrun passes the whole suite.
const EXCEPTIONS: &[(&str, &str)] = &[];

struct Case {
    suite: PathBuf,
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dirs: Vec<String>,
    exit_code: i32,
    stdout: Option<String>,
}

fn cases(suite: &str) -> Vec<Case> {
    let dir = Path::new("tests/wasi-testsuite").join(suite);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/wasi-testsuite")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".wasm").map(str::to_string))
        .collect();
    names.sort();
    names.into_iter().map(|name| case(&dir, name)).collect()
}

fn case(suite: &Path, name: String) -> Case {
    let json: Value = match std::fs::read_to_string(suite.join(format!("{name}.json"))) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}")),
        Err(_) => Value::Null,
    };
    let strings = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let env = json["env"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    Case {
        suite: suite.to_path_buf(),
        args: strings("args"),
        env,
        dirs: strings("dirs"),
        exit_code: json["exit_code"].as_i64().unwrap_or(0) as i32,
        stdout: json["stdout"].as_str().map(str::to_string),
        name,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)] // a scratch copy the test owns
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// Run one case; `Err` says how it failed.
fn run(case: &Case, planted_bug: Option<&str>) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("vmrun-wasi-testsuite-{}-{}", std::process::id(), case.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    for d in &case.dirs {
        copy_tree(&case.suite.join(d), &work.join(d));
    }
    let program = std::fs::canonicalize(case.suite.join(format!("{}.wasm", case.name))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.current_dir(&work).stdin(Stdio::null()).env_remove("VMRUN_VM_DEBUG");
    if let Some(bug) = planted_bug {
        cmd.env("VMRUN_VM_DEBUG", bug);
    }
    for d in &case.dirs {
        cmd.arg("--dir").arg(format!("{d}::{d}"));
    }
    for (k, v) in &case.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    let out = cmd.arg(&program).args(&case.args).output().expect("vmrun starts");
    let _ = std::fs::remove_dir_all(&work);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code_ok = out.status.code() == Some(case.exit_code);
    let stdout_ok = case.stdout.as_deref().is_none_or(|s| s == stdout);
    if code_ok && stdout_ok {
        return Ok(());
    }
    Err(format!(
        "{}: exit {:?} (want {}), stdout {:?}{}\n  stderr: {}",
        case.name,
        out.status.code(),
        case.exit_code,
        stdout,
        case.stdout.as_ref().map(|s| format!(" (want {s:?})")).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).lines().take(6).collect::<Vec<_>>().join("\n  ")
    ))
}

fn run_suite(suite: &str, expected_count: usize) {
    let cases = cases(suite);
    assert_eq!(cases.len(), expected_count, "programs in tests/wasi-testsuite/{suite}");
    let mut failures = Vec::new();
    for case in &cases {
        let allowed = EXCEPTIONS.iter().find(|(n, _)| *n == case.name);
        match (run(case, None), allowed) {
            (Ok(()), None) | (Err(_), Some(_)) => {}
            (Ok(()), Some((_, why))) => {
                failures.push(format!("{}: passes but is listed as an exception ({why})", case.name))
            }
            (Err(e), None) => failures.push(e),
        }
    }
    let passed = cases.len() - failures.len();
    eprintln!("wasi-testsuite/{suite}: {passed} of {} as expected", cases.len());
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_rust_program_of_the_testsuite_passes() {
    run_suite("rust", 46);
}

#[test]
fn every_assemblyscript_program_of_the_testsuite_passes() {
    run_suite("assemblyscript", 12);
}

#[test]
fn a_planted_sandbox_escape_fails_the_programs_that_check_escapes() {
    let cases = cases("rust");
    let interesting = cases.iter().find(|c| c.name == "interesting_paths").expect("interesting_paths");
    assert_eq!(run(interesting, None), Ok(()));
    let err = run(interesting, Some("wasi-dotdot-escape")).expect_err("the planted escape must be caught");
    assert!(err.contains("expected errno PERM or NOTCAPABLE"), "{err}");
}
