//! The Memcheck-verified suite: the real `vmrun` binary under the real `valgrind`.
//!
//! - Every program in `programs/` (at a small size) runs under
//!   `valgrind --error-exitcode=99 --leak-check=full` with zero errors, nothing lost, and the right output.
//! - Every GC program also runs under `--gc-stress --gc-verify` (a collection at every allocation).
//! - Negative controls: `VMRUN_GC_DEBUG` plants a real collector bug (`gc::InjectedBug`) and Memcheck must
//!   report the matching error and fail the run. The control with the bridge compiled out (which must go
//!   unreported) is in `gc/tests/memcheck.rs`, on the heap alone, so this suite needs one build of vmrun.
//!
//! Without `valgrind` on the PATH every test says it skipped and why (CI installs it, so there it runs).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

fn valgrind_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "skipped: `valgrind` is not installed (apt-get install valgrind); the Memcheck suite did not run"
            );
        }
        ok
    })
}

/// What one run under Memcheck did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }

    /// Zero Memcheck errors, no leak of ours, exit 0, the expected output.
    fn assert_clean(&self, expected: &str, what: &str) {
        assert_eq!(self.code, Some(0), "{what}: {}", self.describe());
        assert!(self.stderr.contains("ERROR SUMMARY: 0 errors from 0 contexts"), "{what}: {}", self.describe());
        assert!(
            self.stderr.contains("definitely lost: 0 bytes") || self.stderr.contains("no leaks are possible"),
            "{what}: {}",
            self.describe()
        );
        assert!(!self.stderr.contains("switching stacks"), "{what}: {}", self.describe());
        assert_eq!(self.stdout.trim(), expected, "{what}: {}", self.describe());
    }

    /// Memcheck reported `kind` (e.g. `Invalid read`) at an address described with `place`, and the run
    /// failed with Valgrind's error exit code.
    fn assert_caught(&self, kind: &str, place: &[&str], what: &str) {
        assert_eq!(self.code, Some(99), "{what}: expected Memcheck to fail the run: {}", self.describe());
        let hit = self.stderr.lines().enumerate().any(|(i, line)| {
            line.contains(kind)
                && self
                    .stderr
                    .lines()
                    .skip(i)
                    .take(60)
                    .any(|l| l.contains("Address ") && place.iter().all(|p| l.contains(p)))
        });
        assert!(hit, "{what}: expected `{kind}` at an address `{}`: {}", place.join(" … "), self.describe());
    }
}

/// `valgrind --error-exitcode=99 --leak-check=full vmrun <args>`, with `VMRUN_GC_DEBUG=<bug>` if given.
fn memcheck(args: &[&str], bug: Option<&str>) -> Run {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full", "--num-callers=30"])
        .arg(env!("CARGO_BIN_EXE_vmrun"))
        .args(args);
    cmd.env_remove("VMRUN_GC_DEBUG").env_remove("VMRUN_VM_DEBUG").env_remove("VMRUN_JIT_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_GC_DEBUG", bug);
    }
    let out = cmd.output().expect("run valgrind");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (program, the command after `vmrun`, expected output): every program in `programs/`, at a size that
/// keeps Memcheck's slowdown to seconds. Outputs not in `programs/README.md` (whose larger sizes are
/// checked against independent models) are the native run's.
const PROGRAMS: &[(&str, &[&str], &str)] = &[
    ("programs/hello.wat", &["programs/hello.wat"], "Hello, world!"),
    ("programs/fib.wat", &["--invoke", "fib", "programs/fib.wat", "20"], "6765"),
    ("programs/sieve.wat", &["--invoke", "sieve", "programs/sieve.wat", "100000"], "9592"),
    ("programs/mandelbrot.wat", &["--invoke", "mandelbrot", "programs/mandelbrot.wat", "60"], "1424"),
    ("programs/binary_trees.wat", &["--invoke", "run", "programs/binary_trees.wat", "10"], "135854"),
    ("programs/gc_cycles.wat", &["--invoke", "run", "programs/gc_cycles.wat", "20000"], "200010000"),
    ("programs/gc_arrays.wat", &["--invoke", "run", "programs/gc_arrays.wat", "1000"], "249967000"),
    ("programs/gc_casts.wat", &["--invoke", "run", "programs/gc_casts.wat", "30"], "27830"),
    // Threads: every thread's native and value stacks registered, stores joined before exit.
    ("programs/threads.wat", &["--invoke", "count", "programs/threads.wat", "4", "1000"], "4000"),
    ("programs/threads.wat", &["--invoke", "grown", "programs/threads.wat"], "42"),
    ("programs/threads.wat", &["--invoke", "lists", "programs/threads.wat", "4", "50"], "990000"),
    (
        "programs/wasi_walk.wasm",
        &["--dir", "tests/fixtures/sandbox::/data", "programs/wasi_walk.wasm", "/data"],
        "f /data/inside.txt 19\nd /data/sub/\nf /data/sub/nested.txt 7\n/data: 1 directories, 2 files, 0 links, 26 bytes",
    ),
    (
        "programs/wasi_copy.wasm",
        &["--dir", "tests/fixtures/sandbox::/data", "programs/wasi_copy.wasm", "/data/inside.txt", "-"],
        "inside the sandbox",
    ),
    ("programs/gc_exceptions.wat", &["--invoke", "run", "programs/gc_exceptions.wat", "200"], "88000"),
    // Shared GC objects made and used by two threads started with `vmrun`.`thread_spawn`.
    ("programs/shared_gc.wat", &["--invoke", "run", "programs/shared_gc.wat", "50"], "52600"),
];

/// GC programs under a collection at every allocation and the heap verifier: (program, argument, output).
const STRESSED: &[(&str, &str, &str)] = &[
    ("programs/binary_trees.wat", "6", "4398"),
    ("programs/gc_cycles.wat", "300", "45150"),
    ("programs/gc_arrays.wat", "200", "9859400"),
    ("programs/gc_casts.wat", "30", "27830"),
    ("programs/gc_exceptions.wat", "50", "13000"),
    ("programs/shared_gc.wat", "20", "20440"),
];

#[test]
fn the_table_covers_every_program() {
    let mut on_disk: Vec<String> = std::fs::read_dir("programs")
        .expect("programs/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wat") || n.ends_with(".wasm"))
        .map(|n| format!("programs/{n}"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = PROGRAMS.iter().map(|(p, _, _)| p.to_string()).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed, on_disk, "add new programs to PROGRAMS in tests/valgrind.rs");
    for (p, _, _) in STRESSED {
        assert!(Path::new(p).exists(), "{p}");
    }
}

#[test]
fn every_program_is_memcheck_clean() {
    if !valgrind_available() {
        return;
    }
    for (_, argv, expected) in PROGRAMS {
        memcheck(argv, None).assert_clean(expected, &format!("vmrun {}", argv.join(" ")));
    }
}

#[test]
fn gc_programs_are_memcheck_clean_under_stress_and_verification() {
    if !valgrind_available() {
        return;
    }
    for (program, arg, expected) in STRESSED {
        let argv = ["--gc-stress", "--gc-verify", "--invoke", "run", program, arg];
        memcheck(&argv, None).assert_clean(expected, &format!("vmrun {}", argv.join(" ")));
    }
}

/// The compiled tier under Memcheck: every program again with every function compiled up front (those the
/// compiler declines stay interpreted), on the registered native stacks, with no "client switching stacks?"
/// warning and nothing lost.
#[test]
fn every_program_is_memcheck_clean_with_the_jit() {
    if !valgrind_available() {
        return;
    }
    for (_, argv, expected) in PROGRAMS {
        let mut args = vec!["--jit=eager"];
        args.extend_from_slice(argv);
        let run = memcheck(&args, None);
        run.assert_clean(expected, &format!("vmrun {}", args.join(" ")));
        assert!(!run.stderr.contains("switching stacks"), "{}", run.describe());
    }
}

/// Negative control for the compiled tier: with its bounds check planted away (`VMRUN_JIT_DEBUG`), a load
/// one past the end of memory reads the reservation's no-access bytes, and Memcheck says so.
#[test]
fn a_compiled_access_without_its_bounds_check_is_caught() {
    if !valgrind_available() {
        return;
    }
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99"]).arg(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(["--jit=eager", "--invoke", "load32", "tests/fixtures/memory_edges.wat", "65536"]);
    let out = cmd.env("VMRUN_JIT_DEBUG", "no-bounds-check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Invalid read of size 4") && stderr.contains("anonymous segment"), "{stderr}");
    // Without the planted bug the same call is the clean trap.
    let clean = memcheck(&["--jit=eager", "--invoke", "load32", "tests/fixtures/memory_edges.wat", "65536"], None);
    assert_eq!(clean.code, Some(134), "{}", clean.describe());
    assert!(clean.stderr.contains("out of bounds memory access") && !clean.stderr.contains("Invalid read"));
}

/// Under Valgrind the Memcheck annotations observe every allocation, so compiled code must not allocate
/// inline (the annotations would miss those objects): with the inline path's zeroing planted away
/// (`VMRUN_JIT_DEBUG=alloc-no-zero`, which natively makes this fixture fail, `tests/gc.rs`), the run is
/// still correct and clean, because every allocation took the library call.
#[test]
fn compiled_code_does_not_allocate_inline_under_memcheck() {
    if !valgrind_available() {
        return;
    }
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full"]).arg(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(["--jit=eager", "--invoke", "run", "tests/fixtures/inline_alloc.wat", "1000"]);
    let out = cmd.env_remove("VMRUN_GC_DEBUG").env("VMRUN_JIT_DEBUG", "alloc-no-zero").output().expect("run valgrind");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.assert_clean("0", "vmrun --jit=eager inline_alloc.wat under Memcheck with alloc-no-zero planted");
}

#[test]
fn a_threaded_gc_program_is_memcheck_clean_under_stress_and_verification() {
    if !valgrind_available() {
        return;
    }
    // 4 threads allocate while collections (every 7th allocation) stop them all.
    let argv = ["--gc-stress=7", "--gc-verify", "--invoke", "lists", "programs/threads.wat", "4", "10"];
    memcheck(&argv, None).assert_clean("198000", &format!("vmrun {}", argv.join(" ")));
}

/// The program the negative controls run: a long-lived tree read at the end, temporary trees read right
/// after they are built, collections throughout.
const VICTIM: [&str; 4] = ["--invoke", "run", "programs/binary_trees.wat", "10"];

#[test]
fn skip_mark_is_caught_as_a_read_of_a_freed_block() {
    if !valgrind_available() {
        return;
    }
    // The skipped object is swept while the program still holds it; its next read is inside a freed block.
    memcheck(&VICTIM, Some("skip-mark")).assert_caught(
        "Invalid read",
        &["inside a block of size", "free'd"],
        "skip-mark",
    );
}

#[test]
fn read_past_end_is_caught_as_a_read_after_a_block() {
    if !valgrind_available() {
        return;
    }
    memcheck(&VICTIM, Some("read-past-end")).assert_caught(
        "Invalid read",
        &["0 bytes after a block of size", "alloc'd"],
        "read-past-end",
    );
}

#[test]
fn without_annotations_the_same_bug_goes_unreported() {
    if !valgrind_available() {
        return;
    }
    // `--no-valgrind-annotations` leaves the heap as Memcheck sees it natively: one big mapping, all of it
    // addressable, so the read past an object's end lands in defined memory and nothing is reported. This is
    // the flag's test, and one more proof that the annotations are what catch the planted bugs.
    let mut args = vec!["--no-valgrind-annotations"];
    args.extend_from_slice(&VICTIM);
    memcheck(&args, Some("read-past-end")).assert_clean("135854", "read-past-end without annotations");
}

#[test]
fn use_freed_span_is_caught_as_a_write_to_a_freed_block() {
    if !valgrind_available() {
        return;
    }
    // A span must empty out for the bug to exist: binary-trees 12 frees spans, 10 does not.
    let victim = ["--invoke", "run", "programs/binary_trees.wat", "12"];
    memcheck(&victim, Some("use-freed-span")).assert_caught(
        "Invalid write",
        &["inside a block of size", "free'd"],
        "use-freed-span",
    );
}

#[test]
fn an_unregistered_native_stack_is_caught() {
    if !valgrind_available() {
        return;
    }
    // Every `assert_clean` above also demands no "client switching stacks?" warning; this shows the check
    // can fail: without `STACK_REGISTER` for the native stack wasm runs on, Memcheck sees the switch to it.
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full"]).arg(env!("CARGO_BIN_EXE_vmrun")).args(VICTIM);
    let out = cmd.env_remove("VMRUN_GC_DEBUG").env("VMRUN_VM_DEBUG", "unregistered-native-stack").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("switching stacks"), "expected Memcheck's stack-switch warning:\n{stderr}");
}

#[test]
fn negative_controls_do_not_fire_on_their_own() {
    // The same program, natively and with no bug planted, prints the right answer: the controls above fail
    // because of the planted bug, not because the program is wrong.
    let out =
        Command::new(env!("CARGO_BIN_EXE_vmrun")).args(VICTIM).env_remove("VMRUN_GC_DEBUG").output().expect("vmrun");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "135854");
    let bad =
        Command::new(env!("CARGO_BIN_EXE_vmrun")).args(VICTIM).env("VMRUN_GC_DEBUG", "bogus").output().expect("vmrun");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("VMRUN_GC_DEBUG=\"bogus\" is not one of skip-mark"),
        "{bad:?}"
    );
}
