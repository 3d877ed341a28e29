//! The heap alone under real Memcheck (`examples/gc_memcheck.rs`, a small mutator), built twice: with the
//! Valgrind bridge (default features) and without it (`--no-default-features`).
//!
//! With the bridge, a clean run has zero errors and nothing lost, and each planted bug
//! (`VMRUN_GC_DEBUG`) is reported. Without it, `skip-mark` goes unreported: the heap is one big mapping
//! Memcheck believes is defined, so it is the annotations, not luck, that catch the bug. The whole VM's
//! suite is `tests/valgrind.rs` at the workspace root.
//!
//! Without `valgrind` on the PATH the tests say they skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    Annotated,
    BridgeOff,
}

fn example(build: Build) -> &'static Path {
    static ON: OnceLock<PathBuf> = OnceLock::new();
    static OFF: OnceLock<PathBuf> = OnceLock::new();
    let cell = if build == Build::Annotated { &ON } else { &OFF };
    cell.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // <profile dir>/deps/memcheck-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("test exe lives in <profile>/deps");
        let name = if build == Build::Annotated { "on" } else { "off" };
        let target_dir = profile_dir.join("gc-memcheck").join(name);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--example", "gc_memcheck", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir);
        if build == Build::BridgeOff {
            cmd.arg("--no-default-features");
        }
        let out = cmd.output().expect("run cargo");
        assert!(out.status.success(), "building gc_memcheck ({name}): {}", String::from_utf8_lossy(&out.stderr));
        let bin =
            target_dir.join("debug").join("examples").join(format!("gc_memcheck{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

fn valgrind_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: `valgrind` is not installed (apt-get install valgrind)");
        }
        ok
    })
}

/// (exit code, stdout, stderr) of `valgrind --error-exitcode=99 --leak-check=full gc_memcheck`.
fn memcheck(build: Build, bug: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full"]).arg(example(build));
    cmd.env_remove("VMRUN_GC_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_GC_DEBUG", bug);
    }
    let out = cmd.output().expect("run valgrind");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The checksum a correct heap gives (20 rounds × the 100-node list's 5050, plus the kept array's length).
const CHECKSUM: &str = "checksum 111000";

#[test]
fn a_correct_heap_is_clean_with_and_without_the_bridge() {
    if !valgrind_available() {
        return;
    }
    for build in [Build::Annotated, Build::BridgeOff] {
        let (code, stdout, stderr) = memcheck(build, None);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout.trim(), CHECKSUM);
        assert!(stderr.contains("ERROR SUMMARY: 0 errors from 0 contexts"), "{stderr}");
        assert!(stderr.contains("definitely lost: 0 bytes") || stderr.contains("no leaks are possible"), "{stderr}");
    }
}

#[test]
fn planted_bugs_are_reported_with_the_bridge() {
    if !valgrind_available() {
        return;
    }
    for (bug, kind, place) in [
        ("skip-mark", "Invalid read", "free'd"),
        ("read-past-end", "Invalid read", "after a block of size"),
        ("use-freed-span", "Invalid write", "free'd"),
    ] {
        let (code, _, stderr) = memcheck(Build::Annotated, Some(bug));
        assert_eq!(code, Some(99), "{bug}: {stderr}");
        let at = stderr.find(kind).unwrap_or_else(|| panic!("{bug}: no `{kind}`: {stderr}"));
        let address = stderr[at..].lines().find(|l| l.contains("Address ")).unwrap_or_default();
        assert!(address.contains(place), "{bug}: expected the address to be `{place}`: {stderr}");
    }
}

#[test]
fn skip_mark_goes_unreported_without_the_bridge() {
    if !valgrind_available() {
        return;
    }
    let (code, _, stderr) = memcheck(Build::BridgeOff, Some("skip-mark"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors from 0 contexts"), "{stderr}");
}
