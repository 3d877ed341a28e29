//! The `vmrun` binary's behaviour at its edges: error messages, exit codes, traps and their
//! backtraces, `--invoke` argument handling, WASI flags and the file-system sandbox.
//! Fixtures live in `tests/fixtures/`.

use std::process::{Command, Output};

const TRAP_EXIT: i32 = 134;

/// Run `vmrun` with `args` from the package root in both tiers (`--jit=off` and `--jit=eager`); check
/// that neither panicked and that both printed and exited the same (up to how deep the call stack got
/// before it was exhausted, a limit of each tier); returns the interpreter's output.
fn vmrun(args: &[&str]) -> Output {
    let off = vmrun_tier(args, "off");
    let eager = vmrun_tier(args, "eager");
    let seen = |o: &Output| (o.status.code(), stdout(o), normalize_depth(&stderr(o)));
    assert_eq!(seen(&off), seen(&eager), "the tiers differ on vmrun {args:?}");
    off
}

/// Run `vmrun` with `--jit=MODE` added to `args`.
fn vmrun_tier(args: &[&str], mode: &str) -> Output {
    let flag = format!("--jit={mode}");
    let mut full: Vec<&str> = args.to_vec();
    let at = if args.first() == Some(&"wast") { 1 } else { 0 };
    if !matches!(args.first(), Some(&"trace") | Some(&"--help") | Some(&"--version")) {
        full.insert(at, &flag);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun")).args(&full).output().expect("vmrun starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "vmrun {full:?} crashed:\n{stderr}");
    out
}

/// A backtrace with the frame numbers and repeat counts of a folded recursion replaced by `N`: the
/// tiers run out of call stack at different depths (frame count against native stack bytes).
fn normalize_depth(stderr: &str) -> String {
    let mut out = Vec::new();
    let mut after_repeat = false;
    for line in stderr.lines() {
        if line.contains("... the frame above repeated") {
            out.push("       ... the frame above repeated N more times".to_string());
            after_repeat = true;
        } else if after_repeat && line.trim_start().split(':').next().is_some_and(|n| n.parse::<u64>().is_ok()) {
            out.push(format!("  N:{}", line.split_once(':').map_or("", |(_, rest)| rest)));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 1 and exactly one stderr line, `error: <message>`; returns the message.
fn expect_error(args: &[&str]) -> String {
    let out = vmrun(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "vmrun {args:?}: stderr {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert_eq!(stdout(&out), "", "nothing on stdout");
    err.trim_end().strip_prefix("error: ").unwrap_or_else(|| panic!("no `error: ` prefix: {err}")).to_string()
}

// ---- load, validation and link errors

#[test]
fn syntax_error_names_file_line_and_column() {
    let msg = expect_error(&["tests/fixtures/syntax_error.wat"]);
    assert!(msg.starts_with("tests/fixtures/syntax_error.wat:4:28: "), "{msg}");
}

#[test]
fn type_error_names_the_source_line_of_text_input() {
    let msg = expect_error(&["tests/fixtures/type_mismatch.wat"]);
    assert!(msg.starts_with("tests/fixtures/type_mismatch.wat:5:"), "{msg}");
    assert!(msg.contains("type mismatch"), "{msg}");
}

#[test]
fn missing_file() {
    let msg = expect_error(&["tests/fixtures/does_not_exist.wat"]);
    assert!(msg.starts_with("tests/fixtures/does_not_exist.wat: "), "{msg}");
}

#[test]
fn unknown_import_names_module_and_field() {
    let msg = expect_error(&["tests/fixtures/unknown_import.wat"]);
    assert!(msg.contains("`env`.`missing_function`"), "{msg}");
    assert!(msg.contains("vmrun provides `wasi_snapshot_preview1`"), "{msg}");
}

#[test]
fn a_preview2_import_is_named_with_what_vmrun_supports() {
    let msg = expect_error(&["tests/fixtures/preview2_import.wat"]);
    assert!(msg.contains("`wasi:cli/stdout@0.2.0`.`get-stdout`"), "{msg}");
    assert!(msg.contains("WASI preview2 component import; vmrun runs core modules with WASI preview1"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

// ---- running and invoking

#[test]
fn no_start_lists_the_exported_functions() {
    let msg = expect_error(&["tests/fixtures/no_start.wat"]);
    assert!(msg.contains("no `_start`"), "{msg}");
    assert!(msg.ends_with("exported functions: `add`, `scale`, `pair`, `maybe_null`"), "{msg}");
}

#[test]
fn missing_export_lists_the_exported_functions() {
    let msg = expect_error(&["--invoke", "sub", "tests/fixtures/no_start.wat"]);
    assert_eq!(msg, "no export named `sub`; exported functions: `add`, `scale`, `pair`, `maybe_null`");
    let msg = expect_error(&["--invoke", "memory", "tests/fixtures/no_start.wat"]);
    assert!(msg.starts_with("export `memory` is not a function"), "{msg}");
}

#[test]
fn wrong_argument_count_shows_the_signature() {
    let msg = expect_error(&["--invoke", "add", "tests/fixtures/no_start.wat", "1"]);
    assert_eq!(msg, "`add` takes 2 argument(s) but 1 were given; its type is (func (param i32 i32) (result i32))");
    let msg = expect_error(&["--invoke", "add", "tests/fixtures/no_start.wat", "1", "2", "3"]);
    assert!(msg.starts_with("`add` takes 2 argument(s) but 3 were given"), "{msg}");
}

/// Found by `vmrun-fuzz crash --target invoke`: an argument with a line break or a carriage return was
/// printed raw, so the error took two lines (or overwrote itself on a terminal).
#[test]
fn an_argument_with_a_line_break_is_shown_escaped_on_one_line() {
    let msg = expect_error(&["--invoke", "add", "tests/fixtures/no_start.wat", "1\n2", "3\r"]);
    assert!(msg.starts_with("argument 1 of `add`: `1\\n2` is not a valid i32"), "{msg}");
}

#[test]
fn wrong_argument_type_shows_the_signature() {
    let msg = expect_error(&["--invoke", "add", "tests/fixtures/no_start.wat", "1", "2.5"]);
    assert_eq!(msg, "argument 2 of `add`: `2.5` is not a valid i32; its type is (func (param i32 i32) (result i32))");
    let msg = expect_error(&["--invoke", "add", "tests/fixtures/no_start.wat", "4294967296", "0"]);
    assert!(msg.starts_with("argument 1 of `add`: `4294967296` is not a valid i32"), "{msg}");
    let msg = expect_error(&["--invoke", "maybe_null", "tests/fixtures/no_start.wat", "0"]);
    assert!(msg.starts_with("argument 1 of `maybe_null`: `0` is not a valid "), "{msg}");
}

#[test]
fn invoke_parses_arguments_by_type_and_prints_each_result() {
    let cases: &[(&[&str], &str)] = &[
        (&["add", "0x10", "-3"], "13\n"),
        (&["add", "4294967295", "0"], "-1\n"),
        (&["scale", "1.5", "0.1"], "0.15000000223517418\n"),
        (&["scale", "-0", "1"], "-0\n"),
        (&["scale", "inf", "-1"], "-inf\n"),
        (&["scale", "nan", "1"], "nan\n"),
        (&["pair", "-4294967297"], "-4294967297\n-1\n"),
        (&["maybe_null", "null"], "1\n"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["--invoke", args[0], "tests/fixtures/no_start.wat"];
        full.extend(&args[1..]);
        let out = vmrun(&full);
        assert_eq!(
            (out.status.code(), stdout(&out).as_str(), stderr(&out).as_str()),
            (Some(0), *expected, ""),
            "{full:?}"
        );
    }
}

#[test]
fn preload_links_another_module_under_a_name() {
    let out = vmrun(&[
        "--preload",
        "math=tests/fixtures/math_lib.wat",
        "--invoke",
        "quadruple",
        "tests/fixtures/uses_math_lib.wat",
        "5",
    ]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "20\n"));
    // Without it the import is unknown.
    let msg = expect_error(&["--invoke", "quadruple", "tests/fixtures/uses_math_lib.wat", "5"]);
    assert!(msg.contains("`math`.`double`"), "{msg}");
    let msg = expect_error(&["--preload", "math", "tests/fixtures/uses_math_lib.wat"]);
    assert!(msg.contains("NAME=FILE"), "{msg}");
}

#[test]
fn exceptions_cross_preloaded_modules() {
    let run = |export: &str| {
        vmrun(&[
            "--preload",
            "errors=tests/fixtures/exn_lib.wat",
            "--invoke",
            export,
            "tests/fixtures/uses_exn_lib.wat",
            "21",
        ])
    };
    let out = run("checked");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "121\n"), "{}", stderr(&out));
    let out = run("bounce");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "42\n"), "{}", stderr(&out));
    // Uncaught: named by the tag's name in the module whose code threw it, with the backtrace of the throw
    // through both modules.
    let out = run("escape");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(TRAP_EXIT), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "error: uncaught wasm exception: tag $failure", "{err}");
    assert_eq!(lines[1], "wasm backtrace:", "{err}");
    assert!(lines[2].starts_with("    0: user!thrower at tests/fixtures/uses_exn_lib.wat:"), "{err}");
    assert!(lines[3].starts_with("    1: errors!<unknown> (func 1) at tests/fixtures/exn_lib.wat:"), "{err}");
    assert!(lines[4].starts_with("    2: user!escape at tests/fixtures/uses_exn_lib.wat:"), "{err}");
}

// ---- traps

/// Invoke a trapping export of `traps.wat`; check exit code, message and the named frames.
fn expect_trap(export: &str, message: &str, innermost: &str) {
    let out = vmrun(&["--invoke", export, "tests/fixtures/traps.wat"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(TRAP_EXIT), "{export}: {err}");
    let mut lines = err.lines();
    assert_eq!(lines.next(), Some(format!("error: wasm trap: {message}").as_str()), "{export}: {err}");
    assert_eq!(lines.next(), Some("wasm backtrace:"), "{export}: {err}");
    let frame0 = lines.next().unwrap_or_default();
    assert!(
        frame0.starts_with(&format!("    0: traps!{innermost} at tests/fixtures/traps.wat:")),
        "{export}: innermost frame {frame0:?}"
    );
    assert!(err.lines().filter(|l| l.contains(": traps!")).count() >= 2, "{export}: the caller is listed too: {err}");
}

#[test]
fn every_trap_kind_has_its_message_and_a_backtrace() {
    expect_trap("unreachable", "unreachable", "do_unreachable");
    expect_trap("divide_by_zero", "integer divide by zero", "do_div");
    expect_trap("integer_overflow", "integer overflow", "do_overflow");
    expect_trap("invalid_conversion", "invalid conversion to integer", "do_convert");
    expect_trap("memory_out_of_bounds", "out of bounds memory access", "do_load");
    expect_trap("table_out_of_bounds", "out of bounds table access", "do_table_get");
    expect_trap("indirect_call_type_mismatch", "indirect call type mismatch", "do_call_indirect");
    expect_trap("call_ref_null", "null function reference", "do_call_ref");
    expect_trap("as_non_null_null", "null reference", "do_as_non_null");
}

#[test]
fn unbounded_recursion_exhausts_the_call_stack_not_the_host() {
    expect_trap("stack_overflow", "call stack exhausted", "recurse");
    let out = vmrun(&["--invoke", "stack_overflow", "tests/fixtures/traps.wat"]);
    // Tens of thousands of identical frames are folded into one line.
    assert!(stderr(&out).lines().count() < 10, "{}", stderr(&out));
    assert!(stderr(&out).contains("... the frame above repeated"));
}

#[test]
fn a_trap_in_the_start_function_is_a_trap() {
    let out = vmrun(&["tests/fixtures/start_traps.wat"]);
    assert_eq!(out.status.code(), Some(TRAP_EXIT));
    assert!(
        stderr(&out).starts_with("error: wasm trap: unreachable\nwasm backtrace:\n    0: boom at "),
        "{}",
        stderr(&out)
    );
}

// ---- WASI

#[test]
fn proc_exit_sets_the_exit_code_silently() {
    let out = vmrun(&["tests/fixtures/exit_code.wat"]);
    assert_eq!((out.status.code(), stdout(&out).as_str(), stderr(&out).as_str()), (Some(42), "bye\n", ""));
}

#[test]
fn arguments_and_environment_reach_the_program() {
    let out = vmrun(&["--env", "K=V", "--env", "EMPTY=", "tests/fixtures/args_env.wat", "a", "--b"]);
    assert_eq!(stdout(&out), "tests/fixtures/args_env.wat\na\n--b\nK=V\nEMPTY=\n");
    // `--env NAME` passes the host's value, and is an error when the host has none.
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .env("VMRUN_TEST_INHERITED", "from host")
        .args(["--env", "VMRUN_TEST_INHERITED", "tests/fixtures/args_env.wat"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "tests/fixtures/args_env.wat\nVMRUN_TEST_INHERITED=from host\n");
    let msg = expect_error(&["--env", "VMRUN_TEST_SURELY_UNSET", "tests/fixtures/args_env.wat"]);
    assert_eq!(msg, "--env VMRUN_TEST_SURELY_UNSET: not set in the host environment");
    let msg = expect_error(&["--env", "=x", "tests/fixtures/args_env.wat"]);
    assert!(msg.contains("NAME=VALUE"), "{msg}");
}

#[test]
fn a_preopened_directory_is_readable() {
    let out = vmrun(&["--dir", "tests/fixtures/sandbox", "tests/fixtures/cat.wat", "inside.txt"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "inside the sandbox\n"));
    // HOST::GUEST renames the directory for the guest; paths below it are unchanged.
    let out = vmrun(&["--dir", "tests/fixtures/sandbox::/data", "tests/fixtures/cat.wat", "./sub/../inside.txt"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "inside the sandbox\n"));
    let out = vmrun(&["--dir", "tests/fixtures/sandbox", "tests/fixtures/cat.wat", "sub/nested.txt"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "nested\n"));
}

#[test]
fn the_sandbox_refuses_escapes_with_an_errno() {
    // errno 76 is `notcapable`; cat.wat exits 2 after printing it.
    for path in ["../cat.wat", "/etc/passwd", "sub/../../cat.wat", ".."] {
        let out = vmrun(&["--dir", "tests/fixtures/sandbox", "tests/fixtures/cat.wat", path]);
        assert_eq!(
            (out.status.code(), stderr(&out).as_str(), stdout(&out).as_str()),
            (Some(2), "errno 76\n", ""),
            "{path}"
        );
    }
    // Nothing pre-opened: fd 3 does not exist (`badf`).
    let out = vmrun(&["tests/fixtures/cat.wat", "inside.txt"]);
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(2), "errno 8\n"));
    // A missing file inside the sandbox is `noent`, not an escape.
    let out = vmrun(&["--dir", "tests/fixtures/sandbox", "tests/fixtures/cat.wat", "missing.txt"]);
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(2), "errno 44\n"));
}

#[test]
fn a_missing_preopen_directory_is_a_usage_error() {
    let msg = expect_error(&["--dir", "tests/fixtures/no_such_dir", "tests/fixtures/cat.wat", "x"]);
    assert!(msg.starts_with("--dir tests/fixtures/no_such_dir: cannot open"), "{msg}");
}

// ---- the command line itself

#[test]
fn help_and_version() {
    let out = vmrun(&["--help"]);
    let help = stdout(&out);
    assert_eq!(out.status.code(), Some(0));
    for flag in ["--invoke", "--dir", "--env", "--preload", "wast", "Exit codes"] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
    let out = vmrun(&["--version"]);
    assert_eq!(stdout(&out), format!("vmrun {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn no_program_is_a_usage_error() {
    let out = vmrun(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: ") && stderr(&out).contains("Usage"), "{}", stderr(&out));
    let out = vmrun(&["--no-such-flag", "programs/hello.wat"]);
    assert_eq!(out.status.code(), Some(1));
}

// ---- the wast subcommand (its runner is src/wast.rs; here only the CLI wiring)

#[test]
fn wast_subcommand_counts_and_fails_with_code_1() {
    let out = vmrun(&["wast", "tests/fixtures/small.wast"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "4 passed, 0 failed, 0 skipped\n"),
        "{}",
        stderr(&out)
    );
    let out = vmrun(&["wast", "tests/fixtures/failing.wast"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(1), "2 passed, 1 failed, 0 skipped\n"));
    assert!(stderr(&out).starts_with("tests/fixtures/failing.wast:4:2: "), "{}", stderr(&out));
}

#[test]
fn wast_reports_skips_and_a_script_that_checks_nothing_fails() {
    // Every directive needs SIMD: counted, shown with --verbose, and the script fails.
    let out = vmrun(&["wast", "--verbose", "tests/fixtures/all_skipped.wast"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(1), "0 passed, 0 failed, 2 skipped (SIMD: 2)\n"),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("tests/fixtures/all_skipped.wast:2:2: module skipped: SIMD\n"), "{err}");
    assert!(err.contains("tests/fixtures/all_skipped.wast:3:2: assert_return skipped: SIMD\n"), "{err}");
    assert!(err.contains("error: tests/fixtures/all_skipped.wast: every directive was skipped"), "{err}");
    // Without --verbose the reasons are only counted.
    let out = vmrun(&["wast", "tests/fixtures/all_skipped.wast", "tests/fixtures/small.wast"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "4 passed, 0 failed, 2 skipped (SIMD: 2)\n");
    assert!(!stderr(&out).contains("skipped: SIMD"), "{}", stderr(&out));
}

#[test]
fn wast_runs_exception_scripts_legacy_syntax_included() {
    let out = vmrun(&[
        "wast",
        "tests/testsuite/exceptions/legacy/try_delegate.wast",
        "tests/testsuite/exceptions/legacy/rethrow.wast",
    ]);
    let summary = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{summary}{}", stderr(&out));
    assert!(summary.ends_with(" passed, 0 failed, 0 skipped\n") && !summary.starts_with("0 "), "{summary}");
}

#[test]
fn a_wasi_libc_program_runs_through_startup_files_and_exit() {
    // tests/fixtures/wasi_tour.wasm is tests/fixtures/wasi_tour.rs built for wasm32-wasip1.
    let scratch = std::env::temp_dir().join(format!("vmrun-cli-scratch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch_dir = format!("{}::/scratch", scratch.display());
    let out = vmrun(&[
        "--env",
        "GREETING=hi",
        "--dir",
        "tests/fixtures/sandbox::/sandbox",
        "--dir",
        &scratch_dir,
        "tests/fixtures/wasi_tour.wasm",
        "/sandbox",
        "/scratch",
    ]);
    let leftovers = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    std::fs::remove_dir_all(&scratch).unwrap();
    assert_eq!(
        stdout(&out),
        "GREETING=hi\nread: inside the sandbox\nlist: inside.txt sub\nrefused: /sandbox/../cat.wat\n\
         refused: /etc/passwd\nwrote and read back:\none\ntwo\nremoved: true\nclock after 2020: true\nslept at least 10 ms: true\n\
         random seeded map: 1\n"
    );
    assert_eq!((stderr(&out).as_str(), out.status.code(), leftovers), ("to stderr\n", Some(3), 0));
}

#[test]
fn a_binary_module_is_detected_by_content_and_traps_with_byte_offsets() {
    // (module (func (export "f") unreachable)) without a name section, hand-assembled; the
    // `unreachable` opcode is at byte 0x1e. The `.bin` name proves detection is by content.
    let wasm: &[u8] = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x07\x05\x01\x01f\0\0\x0a\x05\x01\x03\0\0\x0b";
    let path = std::env::temp_dir().join(format!("vmrun-cli-trap-{}.bin", std::process::id()));
    std::fs::write(&path, wasm).unwrap();
    let out = vmrun(&["--invoke", "f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(TRAP_EXIT));
    assert_eq!(
        stderr(&out),
        "error: wasm trap: unreachable\nwasm backtrace:\n    0: <unknown> (func 0) at offset 0x1e\n"
    );
}

#[test]
fn stdin_is_read_until_end_of_input() {
    use std::io::Write;
    // 100 KB in, so the program's 4 KiB reads loop many times.
    let input: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .arg("tests/fixtures/copy_stdin.wat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn({
        let input = input.clone();
        move || stdin.write_all(&input)
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
    assert!(out.stdout == input, "stdout differs from stdin ({} bytes out)", out.stdout.len());
}
