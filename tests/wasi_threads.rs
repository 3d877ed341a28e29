//! The official WASI testsuite's wasi-threads programs (`tests/wasi-testsuite/wasi-threads/`, vendored
//! with the testsuite's LICENSE): 13 small `.wat` programs (spawn, `proc_exit` and traps in the main
//! and in other threads while threads block in `memory.atomic.wait`, spin, or sit in a WASI call) and
//! `thread_spawn-simple.wasm`, a C program built with wasi-libc's pthreads.
//!
//! Each runs as the testsuite says (`X.json` gives the expected exit code, 0 without one), with a
//! standard input that stays open and empty, so a `fd_read` on it blocks (the `*_wasi_read` programs
//! rely on it). Thread scheduling differs from run to run, so each program runs many times, several at
//! once: `VMRUN_THREAD_TEST_RUNS` times each (default 5 here; 50 is the bar, see BENCHMARKS.md),
//! and a run that takes longer than [`HANG_AFTER`] is a hang, which fails the test. Each also runs
//! [`EAGER_RUNS`] times with `--jit=eager` (shared memory, atomics and waits in compiled code).
//!
//! `tests/fixtures/wasi_threads_blocked_input.wat` checks that threads waiting in `fd_read` and
//! `poll_oneoff` on stdin do not hold the WASI state lock (another thread writes and exits
//! promptly); the planted bugs `wasi-read-holds-lock` and `wasi-poll-holds-lock` make it hang.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A run slower than this is a hang (each program finishes in about 0.5 s).
const HANG_AFTER: Duration = Duration::from_secs(30);
/// Programs running at once (they mostly sleep in `wait` timeouts).
const CONCURRENT: usize = 8;
/// Runs of each program with `--jit=eager`.
const EAGER_RUNS: usize = 2;

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wasi-testsuite/wasi-threads")
}

/// (program, expected exit code) for every `.wasm` of the folder.
fn programs() -> Vec<(PathBuf, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(suite_dir()).expect("the vendored suite") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let json = path.with_extension("json");
            let code = std::fs::read_to_string(&json).map_or(0, |text| exit_code_of(&text));
            out.push((path, code));
        }
    }
    out.sort();
    out
}

/// The `exit_code` of a testsuite `.json` (0 if absent). The files are one-line objects such as
/// `{"exit_code": 99}`; anything else in them would be a field this test does not implement.
fn exit_code_of(json: &str) -> i32 {
    let body = json.trim().trim_start_matches('{').trim_end_matches('}');
    let mut code = 0;
    for field in body.split(',').filter(|f| !f.trim().is_empty()) {
        let (key, value) = field.split_once(':').expect("a key: value field");
        match key.trim().trim_matches('"') {
            "exit_code" => code = value.trim().parse().expect("an integer exit code"),
            other => panic!("unsupported testsuite field `{other}`"),
        }
    }
    code
}

/// A running program: which, in which tier, the expected code, when it started.
struct Run {
    child: Child,
    program: PathBuf,
    tier: &'static str,
    want: i32,
    started: Instant,
}

fn start(program: &Path, want: i32, tier: &'static str) -> Run {
    start_with(program, want, None, tier)
}

/// [`start`], with `VMRUN_VM_DEBUG` set to `planted_bug` if given.
fn start_with(program: &Path, want: i32, planted_bug: Option<&str>, tier: &'static str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env_remove("VMRUN_VM_DEBUG").env_remove("VMRUN_JIT_DEBUG").arg(tier);
    if let Some(bug) = planted_bug {
        cmd.env("VMRUN_VM_DEBUG", bug);
    }
    let child = cmd
        .arg(program)
        .current_dir(suite_dir())
        // Piped and never written: a read blocks until the child exits.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmrun starts");
    Run { child, program: program.to_path_buf(), tier, want, started: Instant::now() }
}

/// `None` while `run` is still going; else a failure description, or `Some(None)` if it passed.
fn poll(run: &mut Run) -> Option<Option<String>> {
    let name = format!("{} {}", run.program.file_name().unwrap().to_string_lossy(), run.tier);
    match run.child.try_wait().expect("wait for vmrun") {
        Some(status) => {
            let mut stderr = String::new();
            run.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            let got = status.code();
            if got == Some(run.want) {
                Some(None)
            } else {
                Some(Some(format!("{name}: exit {got:?}, want {}; stderr: {}", run.want, stderr.trim())))
            }
        }
        None if run.started.elapsed() > HANG_AFTER => {
            let _ = run.child.kill();
            let _ = run.child.wait();
            Some(Some(format!("{name}: still running after {HANG_AFTER:?} (a hang)")))
        }
        None => None,
    }
}

#[test]
fn wasi_threads_programs_give_their_exit_codes_every_time() {
    let runs: usize = std::env::var("VMRUN_THREAD_TEST_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let programs = programs();
    assert_eq!(programs.len(), 15, "the vendored suite has 14 programs (13 .wat, one C) plus wasi_threads_noop");
    // The default tier (`auto`) `runs` times, and every function compiled up front (`eager`: atomics,
    // waits and the shared memory in compiled code) twice, to keep CI short.
    let tiers = [("--jit=auto", runs), ("--jit=eager", EAGER_RUNS)];
    let mut queue: Vec<(PathBuf, i32, &'static str)> = Vec::new();
    for (tier, n) in tiers {
        for _ in 0..n {
            queue.extend(programs.iter().map(|(p, w)| (p.clone(), *w, tier)));
        }
    }
    queue.reverse();
    let (mut running, mut failures, mut passed) = (Vec::<Run>::new(), Vec::new(), 0);
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < CONCURRENT
            && let Some((program, want, tier)) = queue.pop()
        {
            running.push(start(&program, want, tier));
        }
        let mut i = 0;
        while i < running.len() {
            match poll(&mut running[i]) {
                None => i += 1,
                Some(outcome) => {
                    running.swap_remove(i);
                    match outcome {
                        None => passed += 1,
                        Some(failure) => failures.push(failure),
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = programs.len();
    println!("{passed} runs passed, {} failed ({runs} + {EAGER_RUNS} eager runs of {n} programs)", failures.len());
    assert!(failures.is_empty(), "{} failed runs:\n{}", failures.len(), failures.join("\n"));
}

/// Negative control: with `proc_exit` on a thread not ending the program (the planted bug
/// `VMRUN_VM_DEBUG=thread-exit-ignored`), the programs whose other thread exits fail the same check.
#[test]
fn a_thread_exit_that_does_not_end_the_program_is_caught() {
    let program = suite_dir().join("wasi_threads_exit_nonmain_wasi.wasm");
    assert_eq!(exit_code_of(&std::fs::read_to_string(program.with_extension("json")).unwrap()), 99);
    let mut run = start_with(&program, 99, None, "--jit=auto");
    let clean = loop {
        if let Some(outcome) = poll(&mut run) {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(clean, None, "without the bug the program passes");
    let mut run = start_with(&program, 99, Some("thread-exit-ignored"), "--jit=auto");
    let failure = loop {
        if let Some(outcome) = poll(&mut run) {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let failure = failure.expect("the planted bug makes the run fail");
    println!("caught: {failure}");
}

fn vmrun_fixture(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun")).args(args).output().expect("vmrun starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn threads_that_cannot_run_fail_cleanly() {
    // A trap on a spawned thread ends the program like one on the main thread, naming the thread.
    let (code, _, err) = vmrun_fixture(&["tests/fixtures/threads/trap_in_thread.wat"]);
    assert_eq!(code, Some(134), "{err}");
    assert!(err.starts_with("error: wasm trap in thread 1: integer divide by zero\nwasm backtrace:\n"), "{err}");
    assert!(err.contains("boom at tests/fixtures/threads/trap_in_thread.wat:"), "{err}");
    // The same for an out-of-bounds access, whether compiled code checks it or the guard region faults.
    for tier in [
        ["--jit=off", "--bounds-checks=guard"],
        ["--jit=eager", "--bounds-checks=guard"],
        ["--jit=eager", "--bounds-checks=explicit"],
    ] {
        let (code, _, err) = vmrun_fixture(&[tier[0], tier[1], "tests/fixtures/threads/oob_in_thread.wat"]);
        assert_eq!(code, Some(134), "{tier:?}: {err}");
        assert!(
            err.starts_with("error: wasm trap in thread 1: out of bounds memory access\nwasm backtrace:\n"),
            "{err}"
        );
        let frames: Vec<&str> = err.lines().skip(2).collect();
        assert!(frames[0].contains("load at ") && frames[1].contains("reader at "), "{tier:?}: {err}");
    }
    // No `wasi_thread_start`: one line, exit 1.
    let (code, _, err) = vmrun_fixture(&["tests/fixtures/threads/no_thread_start.wat"]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.contains("could not start: the module exports no `wasi_thread_start` function"), "{err}");
    // A module whose memory is its own (not an imported shared one) cannot spawn: -1.
    let (code, out, err) = vmrun_fixture(&["--invoke", "_start", "tests/fixtures/threads/private_memory.wat"]);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "-1\n", ""));
}

/// `tests/fixtures/wasi_threads_blocked_input.wat`: the main thread waits in `fd_read` and another in
/// `poll_oneoff` on a stdin that stays open, while a third writes a line and calls `proc_exit(7)`;
/// the (exit code, stdout) of the run, or `None` if it was still running after `limit`.
fn run_blocked_input(planted_bug: Option<&str>, limit: Duration) -> Option<(Option<i32>, String)> {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasi_threads_blocked_input.wat");
    let mut run = start_with(&program, 7, planted_bug, "--jit=auto");
    loop {
        if let Some(status) = run.child.try_wait().expect("wait for vmrun") {
            let mut out = String::new();
            run.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            return Some((status.code(), out));
        }
        if run.started.elapsed() > limit {
            let _ = run.child.kill();
            let _ = run.child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_thread_blocked_on_input_does_not_stop_the_others_wasi_calls() {
    let started = Instant::now();
    let outcome = run_blocked_input(None, Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(outcome, Some((Some(7), "written while the others wait for input\n".to_string())), "after {took:?}");
    assert!(took < Duration::from_secs(5), "the run should end promptly (300 ms of waiting), took {took:?}");
}

/// Negative controls: with `fd_read` or `poll_oneoff` waiting while holding the state lock (the
/// planted bugs), the writing thread never gets through and the same run hangs.
#[test]
fn a_blocked_call_holding_the_wasi_lock_is_caught() {
    for bug in ["wasi-read-holds-lock", "wasi-poll-holds-lock"] {
        let outcome = run_blocked_input(Some(bug), Duration::from_secs(3));
        assert_eq!(outcome, None, "with {bug} the run must hang behind the lock");
    }
}
