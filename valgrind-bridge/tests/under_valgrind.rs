//! Runs `examples/vg_probe.rs` under real Valgrind (Memcheck), one scenario per run, and asserts on what
//! Memcheck reports: the requests must take effect. Each "bad" scenario is also run with a probe built with
//! the `enabled` feature off, which must then report nothing: that proves the annotations, not the memory
//! itself, caused the report. The probe also runs natively, where every request must be a no-op.
//!
//! The probe is built by running cargo (`env!("CARGO")`) into its own target directories under this test's
//! profile directory (`<target>/<profile>/vg-probe/{on,off}`), so this works under `cargo test` with any
//! `CARGO_TARGET_DIR` and never contends for the outer build's lock.
//!
//! Without `valgrind` on PATH the Valgrind tests print why they skipped and pass (CI installs valgrind).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Exit code Valgrind is told to use when Memcheck found errors.
const ERROR_EXIT: i32 = 99;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Default features: requests are emitted.
    On,
    /// `--no-default-features`: every request is a no-op.
    Off,
}

fn probe(build: Build) -> &'static Path {
    static ON: OnceLock<PathBuf> = OnceLock::new();
    static OFF: OnceLock<PathBuf> = OnceLock::new();
    let cell = if build == Build::On { &ON } else { &OFF };
    cell.get_or_init(|| build_probe(build))
}

fn build_probe(build: Build) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <profile dir>/deps/under_valgrind-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("test exe lives in <profile>/deps");
    let name = if build == Build::On { "on" } else { "off" };
    let target_dir = profile_dir.join("vg-probe").join(name);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", "vg_probe", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if build == Build::Off {
        cmd.arg("--no-default-features");
    }
    let out = cmd.output().expect("run cargo");
    assert!(out.status.success(), "building vg_probe ({name}) failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = target_dir.join("debug").join("examples").join(format!("vg_probe{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

fn valgrind_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// One run's result, with both streams kept for assertion messages.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn context(&self) -> String {
        format!("exit code {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }

    fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(self.code, Some(want), "{}", self.context());
        self
    }

    fn assert_stdout(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}\n{}", self.context());
        self
    }

    fn assert_stderr(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.context());
        self
    }

    fn assert_stderr_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stderr.contains(needle), "stderr has {needle:?}\n{}", self.context());
        self
    }

    fn assert_clean(&self) -> &Self {
        self.assert_code(0).assert_stderr("ERROR SUMMARY: 0 errors from 0 contexts").assert_stderr_lacks("Warning:")
    }

    /// Asserts the `Address ... is <where>` line of a report, and that the report's block stack (alloc'd or
    /// free'd) starts at the probe's call site: the first frame outside the bridge is in `vg_probe::<func>`.
    fn assert_block_report(&self, address_is: &str, func: &str) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let at = lines.iter().position(|l| l.contains(address_is));
        let at = at.unwrap_or_else(|| panic!("stderr lacks {address_is:?}\n{}", self.context()));
        let first_caller = lines[at + 1..]
            .iter()
            .take_while(|l| l.contains(" at 0x") || l.contains(" by 0x"))
            .find(|l| !l.contains("do_client_request") && !l.contains("(lib.rs:"));
        let want = format!("vg_probe::{func} (vg_probe.rs:");
        assert!(
            first_caller.is_some_and(|l| l.contains(&want)),
            "first frame outside the bridge should be {want:?}, got {first_caller:?}\n{}",
            self.context()
        );
        self
    }
}

/// Runs the probe under `valgrind --error-exitcode=99 --leak-check=full [extra] vg_probe <scenario>`.
fn memcheck(build: Build, scenario: &str, extra: &[&str]) -> Run {
    let out = Command::new("valgrind")
        .arg(format!("--error-exitcode={ERROR_EXIT}"))
        .arg("--leak-check=full")
        .args(extra)
        .arg(probe(build))
        .arg(scenario)
        .output()
        .expect("run valgrind");
    let run = Run::from(out);
    // Valgrind really ran the probe to the end; the probe saw it unless its requests are compiled out.
    let seen = if build == Build::On { "running_on_valgrind=1" } else { "running_on_valgrind=0" };
    run.assert_stderr("Memcheck, a memory error detector")
        .assert_stdout(seen)
        .assert_stdout(&format!("done={scenario}"));
    run
}

/// Skips the calling test (returning early) when valgrind is missing.
macro_rules! require_valgrind {
    () => {
        if !valgrind_available() {
            eprintln!(
                "skipped: `valgrind` is not on PATH (install it, e.g. `apt-get install valgrind`, to run this test)"
            );
            return;
        }
    };
}

#[test]
fn native_run_is_a_no_op() {
    // Needs no valgrind: every scenario completes natively, every request returns its default.
    let scenarios = [
        "running",
        "clean",
        "noaccess",
        "mempool",
        "metapool",
        "freelike",
        "resize",
        "trim",
        "check",
        "count-errors",
        "leak",
        "stack",
        "stack-unregistered",
        "discard",
        "discard-skipped",
    ];
    for scenario in scenarios {
        let run = Run::from(Command::new(probe(Build::On)).arg(scenario).output().expect("run vg_probe"));
        run.assert_code(0)
            .assert_stdout("enabled=true")
            .assert_stdout("running_on_valgrind=0")
            .assert_stdout(&format!("done={scenario}"));
        assert!(run.stderr.is_empty(), "{}", run.context());
    }
    let run = Run::from(Command::new(probe(Build::On)).args(["bench", "1000"]).output().expect("run vg_probe"));
    run.assert_code(0).assert_stdout("ns_per_request=");
    let run = Run::from(Command::new(probe(Build::Off)).arg("running").output().expect("run vg_probe"));
    run.assert_code(0).assert_stdout("enabled=false").assert_stdout("running_on_valgrind=0");
}

#[test]
fn running_on_valgrind_is_one_and_clean_run_has_no_errors() {
    require_valgrind!();
    memcheck(Build::On, "running", &[]).assert_clean();
    // The feature-off build cannot see Valgrind at all.
    memcheck(Build::Off, "running", &[]).assert_clean().assert_stdout("enabled=false");
}

#[test]
fn every_request_used_correctly_reports_nothing() {
    require_valgrind!();
    // Pools with trim/move/change/exists, malloc-like blocks, resize, checks, leak checks, error toggles,
    // stack registration, discard: the probe asserts each return value, Memcheck must stay silent.
    memcheck(Build::On, "clean", &[]).assert_clean().assert_stdout("leaks=LeakCounts { leaked: 0,");
}

#[test]
fn make_mem_noaccess_makes_reads_invalid() {
    require_valgrind!();
    memcheck(Build::On, "noaccess", &[])
        .assert_code(ERROR_EXIT)
        .assert_stderr("Invalid read of size 8")
        .assert_stderr("is 40 bytes inside a block of size 64 alloc'd")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
    // Control: without the request the same read is fine.
    memcheck(Build::Off, "noaccess", &[]).assert_clean();
}

#[test]
fn mempool_free_makes_the_chunk_a_freed_block() {
    require_valgrind!();
    memcheck(Build::On, "mempool", &[])
        .assert_code(ERROR_EXIT)
        .assert_stderr("Invalid read of size 8")
        .assert_block_report("is 8 bytes inside a block of size 48 free'd", "mempool")
        .assert_stderr("Block was alloc'd at")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
    memcheck(Build::Off, "mempool", &[]).assert_clean();
}

#[test]
fn auto_free_metapool_frees_objects_with_their_superblock() {
    require_valgrind!();
    memcheck(Build::On, "metapool", &[])
        .assert_code(ERROR_EXIT)
        .assert_stderr("Invalid read of size 8")
        .assert_block_report("is 0 bytes inside a block of size 32 free'd", "metapool")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts")
        .assert_stderr("definitely lost: 0 bytes in 0 blocks");
    memcheck(Build::Off, "metapool", &[]).assert_clean();
}

#[test]
fn freelike_block_is_reported_with_its_stacks() {
    require_valgrind!();
    memcheck(Build::On, "freelike", &[])
        .assert_code(ERROR_EXIT)
        .assert_stderr("Invalid read of size 8")
        .assert_block_report("is 16 bytes inside a block of size 32 free'd", "freelike")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
    memcheck(Build::Off, "freelike", &[]).assert_clean();
}

#[test]
fn resizeinplace_block_shrinks_the_block() {
    require_valgrind!();
    memcheck(Build::On, "resize", &[])
        .assert_code(ERROR_EXIT)
        .assert_stderr("Invalid read of size 8")
        .assert_block_report("is 0 bytes after a block of size 16 alloc'd", "resize")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
}

#[test]
fn mempool_trim_frees_chunks_outside_the_range() {
    require_valgrind!();
    memcheck(Build::On, "trim", &[])
        .assert_code(ERROR_EXIT)
        .assert_block_report("is 0 bytes inside a block of size 32 free'd", "trim")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
}

#[test]
fn check_requests_return_the_first_bad_byte() {
    require_valgrind!();
    memcheck(Build::On, "check", &[])
        .assert_code(ERROR_EXIT)
        .assert_stdout("first_undefined_offset=Some(16)")
        .assert_stdout("first_unaddressable_offset=Some(48)")
        .assert_stderr("Uninitialised byte(s) found during client check request")
        .assert_stderr("Unaddressable byte(s) found during client check request")
        .assert_stderr("ERROR SUMMARY: 2 errors from 2 contexts");
}

#[test]
fn count_errors_counts_and_disabled_reporting_hides() {
    require_valgrind!();
    memcheck(Build::On, "count-errors", &[])
        .assert_code(ERROR_EXIT)
        .assert_stdout("errors_before=0 errors_after=1 errors_after_disabled_read=1")
        .assert_stderr("ERROR SUMMARY: 1 errors from 1 contexts");
}

#[test]
fn unfreed_malloclike_block_is_definitely_lost() {
    require_valgrind!();
    memcheck(Build::On, "leak", &[])
        .assert_code(ERROR_EXIT)
        .assert_stdout("leaked_bytes=100 leaked_blocks=1")
        .assert_stderr("100 bytes in 1 blocks are definitely lost")
        .assert_stderr("vg_probe::register_unreferenced_block (vg_probe.rs:");
    memcheck(Build::Off, "leak", &[]).assert_clean().assert_stderr("definitely lost: 0 bytes in 0 blocks");
}

#[test]
fn stack_register_makes_a_stack_switch_silent() {
    require_valgrind!();
    let registered = memcheck(Build::On, "stack", &[]);
    registered.assert_clean().assert_stdout("stack_id=1");
    if cfg!(target_arch = "x86_64") {
        // The probe only switches stacks on x86_64; elsewhere it registers without switching.
        registered.assert_stderr_lacks("client switching stacks?");
        memcheck(Build::On, "stack-unregistered", &[]).assert_stderr("Warning: client switching stacks?");
        memcheck(Build::Off, "stack", &[]).assert_stderr("Warning: client switching stacks?");
    }
}

#[test]
fn discard_translations_makes_patched_code_run() {
    require_valgrind!();
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the code-patching probe is x86_64 only");
        return;
    }
    // With --smc-check=none Valgrind does not notice the patch by itself: only the discard makes it run.
    let smc = ["--smc-check=none"];
    memcheck(Build::On, "discard", &smc).assert_clean().assert_stdout("before=1 after=2");
    memcheck(Build::On, "discard-skipped", &smc).assert_clean().assert_stdout("before=1 after=1");
    memcheck(Build::Off, "discard", &smc).assert_clean().assert_stdout("before=1 after=1");
}
