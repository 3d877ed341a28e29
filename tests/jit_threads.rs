//! The compiled tier on memories other than 0, shared memory, the threads proposal's atomics and
//! `return_call_indirect` (`tests/fixtures/multi_memory.wat`): the same calls with `--jit=off` and
//! `--jit=eager` print the same results, or trap with the same message and backtrace, at every edge of a
//! second memory (last byte, one past, huge offsets, after its own `memory.grow`), across memories (bulk
//! copies, segments), and for atomics (alignment checked before bounds). Every function of the fixture
//! compiles (`--jit-stats`), and so does every function of `programs/threads.wat` that holds no GC
//! reference.
//!
//! Negative controls (the compiler's planted bugs, `VMRUN_JIT_DEBUG`): `no-bounds-check-memory-n` and
//! `memory-n-is-memory-0` make the edge checks fail, and `rmw-not-atomic` loses increments of the
//! threaded atomic counter.

use std::process::{Command, Output};

const FIXTURE: &str = "tests/fixtures/multi_memory.wat";
const OOB: &str = "out of bounds memory access";
const UNALIGNED: &str = "unaligned atomic";

fn run(tier: &str, args: &[&str], bug: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.env_remove("VMRUN_JIT_DEBUG");
    if let Some(bug) = bug {
        cmd.env("VMRUN_JIT_DEBUG", bug);
    }
    cmd.arg(tier).args(args).output().expect("vmrun starts")
}

/// (exit code, stdout, stderr) of `--invoke export FIXTURE args` in `tier`.
fn invoke(tier: &str, export: &str, args: &[&str], bug: Option<&str>) -> (Option<i32>, String, String) {
    let mut full = vec!["--invoke", export, FIXTURE];
    full.extend_from_slice(args);
    let o = run(tier, &full, bug);
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// What a call must do: print `Ok(stdout)` or trap with `Err(message)`.
type Want = Result<&'static str, &'static str>;

/// Every call of the fixture the tests make, with what it must do.
const CALLS: &[(&str, &[&str], Want)] = &[
    ("load8", &["65535"], Ok("0\n")),
    ("load8", &["65536"], Err(OOB)),
    ("load8", &["-1"], Err(OOB)),
    ("load32", &["65532"], Ok("0\n")),
    ("load32", &["65533"], Err(OOB)),
    ("load64", &["65528"], Ok("0\n")),
    ("load64", &["65529"], Err(OOB)),
    ("load8_huge_offset", &["0"], Err(OOB)),
    ("load8_huge_offset", &["-1"], Err(OOB)),
    ("store32", &["65532", "-7"], Ok("-7\n")),
    ("store32", &["65534", "1"], Err(OOB)),
    ("store16_offset", &["65532"], Ok("4660\n")),
    ("store16_offset", &["65533"], Err(OOB)),
    // Memory 1 grows to 2 pages (memory 0 stays at 2): the byte at 65536 is now inside.
    ("grow_then_store", &["65536"], Ok("2207\n")),
    ("grow_then_store", &["131072"], Err(OOB)),
    ("grow_past_max", &[], Ok("-1\n1\n")),
    ("fill", &["65535", "1"], Ok("171\n")),
    ("fill", &["65535", "2"], Err(OOB)),
    ("copy_between", &["65532", "4"], Ok("67305985\n")),
    ("copy_between", &["65533", "4"], Err(OOB)),
    ("init", &["65531", "0", "5"], Ok("104\n")),
    ("init", &["0", "1", "5"], Err(OOB)),
    ("drop_then_init", &["0"], Ok("1\n")),
    ("drop_then_init", &["1"], Err(OOB)),
    ("atomic_load32", &["65532"], Ok("0\n")),
    // Alignment is checked before bounds: 65533 is both unaligned and out of bounds.
    ("atomic_load32", &["65533"], Err(UNALIGNED)),
    ("atomic_load32", &["65536"], Err(OOB)),
    ("atomic_load64_m1", &["65528"], Ok("0\n")),
    ("atomic_load64_m1", &["65532"], Err(UNALIGNED)),
    ("atomic_load64_m1", &["65536"], Err(OOB)),
    ("atomic_store16_offset", &["65532"], Ok("48879\n")),
    ("atomic_store16_offset", &["65533"], Err(UNALIGNED)),
    ("atomic_store16_offset", &["65534"], Err(OOB)),
    ("rmw_all", &[], Ok("1449609063568533\n")),
    ("wait_shared", &["1", "-1"], Ok("1\n")),
    ("wait_shared", &["0", "1000"], Ok("2\n")),
    ("wait64_unaligned", &[], Err(UNALIGNED)),
    ("wait_unshared", &[], Err("atomic wait on non-shared memory")),
    ("notify", &["8"], Ok("0\n")),
    ("notify", &["2"], Err(UNALIGNED)),
    ("notify", &["65536"], Err(OOB)),
    ("fence", &[], Ok("1\n")),
    // A million tail calls through a table: constant stack in both tiers.
    ("countdown", &["1000000"], Ok("2000000\n")),
    ("call_t1", &["1"], Ok("42\n")),
    ("call_t1", &["2"], Err("undefined element")),
    ("tail_call_t1", &["1"], Ok("42\n")),
    ("tail_call_t1", &["5"], Err("undefined element")),
];

/// The calls whose outcome in `--jit=eager` (with `bug`) differs from what they must do.
fn wrong_in_eager(bug: Option<&str>) -> Vec<String> {
    let mut wrong = Vec::new();
    for &(export, args, want) in CALLS {
        let got = invoke("--jit=eager", export, args, bug);
        let ok = match want {
            Ok(out) => got == (Some(0), out.to_string(), String::new()),
            Err(msg) => got.0 == Some(134) && got.2.starts_with(&format!("error: wasm trap: {msg}\nwasm backtrace:\n")),
        };
        if !ok {
            wrong.push(format!("{export} {args:?}: want {want:?}, got {got:?}"));
        }
    }
    wrong
}

#[test]
fn both_tiers_agree_at_the_edges_of_a_second_memory_and_on_atomics() {
    for &(export, args, _) in CALLS {
        let reference = invoke("--jit=off", export, args, None);
        assert_eq!(invoke("--jit=eager", export, args, None), reference, "{export} {args:?}");
    }
    let wrong = wrong_in_eager(None);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn planted_bounds_bugs_of_a_second_memory_are_caught() {
    for bug in ["no-bounds-check-memory-n", "memory-n-is-memory-0"] {
        let wrong = wrong_in_eager(Some(bug));
        assert!(!wrong.is_empty(), "{bug} went unnoticed");
        println!("{bug}: {} calls wrong, first: {}", wrong.len(), wrong[0]);
    }
}

#[test]
fn the_fixture_and_threads_wat_compile_completely() {
    let o = run("--jit=eager", &["--jit-stats", "--invoke", "fence", FIXTURE], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(" compiled (") && err.contains(", 0 left interpreted"), "{err}");
    let o = run("--jit=eager", &["--jit-stats", "--invoke", "count", "programs/threads.wat", "2", "10"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "20\n");
    let interpreted: Vec<&str> = err.lines().filter(|l| l.starts_with("jit: interpreted ")).collect();
    assert!(interpreted.is_empty(), "{err}");
}

/// `programs/threads.wat`'s atomic counter: 4 threads × `n` increments.
fn count(bug: Option<&str>, n: u32) -> String {
    let o = run("--jit=eager", &["--invoke", "count", "programs/threads.wat", "4", &n.to_string()], bug);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn compiled_atomic_increments_are_atomic() {
    const N: u32 = 20_000_000;
    assert_eq!(count(None, N), (4 * N).to_string());
    // Negative control: a read-modify-write that is a plain load and store loses increments when two
    // threads overlap. Each run takes about 0.2 s; on a loaded machine the threads may happen not to run
    // at once, so it tries up to 20 times and stops at the first lost increment.
    let lost = (0..20).any(|_| count(Some("rmw-not-atomic"), N) != (4 * N).to_string());
    assert!(lost, "rmw-not-atomic lost no increment in 20 runs");
}
