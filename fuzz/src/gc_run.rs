//! `vmrun-fuzz gc`: the GC-focused generator's modules (`gc_gen.rs`) run with and without a stressed
//! collector, compared.
//!
//! Each iteration generates a module and draws a stress period N in 1..=16, then runs it in two fresh
//! stores: the interpreter with the default heap policy (a small program never collects), and the
//! interpreter with a collection every N allocations (`--gc-stress=N`) and heap verification after every
//! mark and sweep (`--gc-verify`). In each store `run` builds the graph and returns its hash; then the host
//! forces a full collection and calls `walk`, which must give the same hash (the graph survived a
//! collection at an arbitrary point, with nothing on the wasm stack). The two stores must agree on `run`'s
//! result or trap. A panic (a failed heap verification, an internal error) is a failure too. The compiled
//! tier joins the comparison as a third store once it compiles the GC instructions (`Store` construction is
//! in [`execute`]).
//!
//! `VMRUN_GC_DEBUG=<bug>` plants a collector bug (`gc::InjectedBug`) in the stressed store only: the
//! negative control of the smoke test. A failure writes the module to `<out-dir>/gc-<seed>-<iter>.wat` and
//! prints how to replay it with the CLI.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::rng::SplitMix64;
use crate::{Watchdog, gc_gen, panic_message};

#[derive(Debug, Default)]
pub struct Stats {
    pub modules: u64,
    /// Runs of `run` that trapped (in both stores alike).
    pub traps: u64,
    /// Collections in the stressed stores.
    pub collections: u64,
    pub failures: u64,
}

pub struct GcOptions<'a> {
    pub seed: u64,
    pub skip: u64,
    pub iterations: u64,
    pub out_dir: &'a Path,
    pub verbose: bool,
    /// A fixed module (text) to run instead of generated ones.
    pub module: Option<String>,
    /// Also run each module under Memcheck (see [`memcheck`]).
    pub memcheck: bool,
}

/// What one store did with a module.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// `run`'s hash, or its trap's kind.
    run: Result<i64, String>,
    /// `walk` after a full collection, when `run` returned.
    walk: Option<Result<i64, String>>,
    collections: u64,
}

fn call_i64(store: &mut vm::Store, inst: vm::InstanceId, name: &str) -> Result<i64, String> {
    let Some(vm::Extern::Func(f)) = store.get_export(inst, name) else { panic!("generated module lacks `{name}`") };
    match store.call(f, &[]) {
        Ok(v) => match v.as_slice() {
            [vm::Val::I64(x)] => Ok(*x),
            other => panic!("`{name}` returned {other:?}"),
        },
        Err(t) => Err(t.kind.to_string()),
    }
}

/// Runs `text` in a store with heap policy `gc`. A module that does not load is the generator's bug: it
/// panics, which the caller reports.
fn execute(text: &str, gc: gc::HeapConfig, jit: vm::JitConfig) -> Outcome {
    let mut store = vm::Store::new(vm::Config { gc, jit, ..vm::Config::default() });
    let source = vm::Source::from_text("gc-fuzz.wat", text).unwrap_or_else(|e| panic!("generated text: {e}"));
    let module = store.load_module(source).unwrap_or_else(|e| panic!("generated module: {e}"));
    let inst = store.instantiate(module, &vm::Linker::new()).unwrap_or_else(|e| panic!("instantiate: {e}"));
    let run = call_i64(&mut store, inst, "run");
    let walk = run.is_ok().then(|| {
        store.collect_garbage();
        call_i64(&mut store, inst, "walk")
    });
    Outcome { run, walk, collections: store.gc_stats().collections }
}

/// One iteration: `run`'s result (agreed on by both stores), or what failed.
fn iteration(text: &str, stress: u64, stats: &mut Stats) -> Result<Result<i64, String>, String> {
    let guarded = |what: &str, gc: gc::HeapConfig, jit: vm::JitConfig| {
        catch_unwind(AssertUnwindSafe(|| execute(text, gc, jit))).map_err(|p| format!("{what}: {}", panic_message(&*p)))
    };
    let interpreted = || vm::JitConfig { mode: vm::tier::JitMode::Off, ..vm::JitConfig::default() };
    let plain = guarded("plain store", gc::HeapConfig::default(), interpreted())?;
    let inject = gc::InjectedBug::from_env().map_err(|e| e.to_string())?;
    let stressed_config =
        gc::HeapConfig { stress_every: Some(stress), verify: true, inject, ..gc::HeapConfig::default() };
    let stressed = guarded("stressed store", stressed_config.clone(), interpreted())?;
    // The compiled tier under the same stress: references in compiled frames come from stack maps.
    let compiler = jit::CraneliftCompiler::new().map_err(|e| format!("cranelift: {e}"))?;
    let eager = vm::JitConfig {
        mode: vm::tier::JitMode::Eager,
        compiler: Some(std::sync::Arc::new(compiler)),
        ..vm::JitConfig::default()
    };
    let compiled = guarded("compiled stressed store", stressed_config, eager)?;
    stats.collections += compiled.collections;
    stats.modules += 1;
    stats.collections += stressed.collections;
    stats.traps += u64::from(plain.run.is_err());
    for (name, o) in [("plain", &plain), ("stressed", &stressed), ("compiled stressed", &compiled)] {
        if let (Ok(h), Some(w)) = (&o.run, &o.walk)
            && w.as_ref() != Ok(h)
        {
            return Err(format!("{name} store: `run` hashed the graph to {h}, `walk` after a collection {w:?}"));
        }
    }
    if plain.run != stressed.run || plain.run != compiled.run {
        return Err(format!(
            "`run`: plain {:?}, stressed {:?}, compiled stressed {:?}",
            plain.run, stressed.run, compiled.run
        ));
    }
    Ok(plain.run)
}

/// The Memcheck sample: the real `vmrun` (built with the Valgrind bridge, so every object is a Memcheck
/// block) runs the module under `valgrind --leak-check=full` with a collection every `stress` allocations.
/// It must print `run`'s agreed result (or trap alike, exit 134) with zero Memcheck errors. Heap verification
/// is left to the in-process stores, so that what this catches is Memcheck's: the negative control
/// `VMRUN_FUZZ_MEMCHECK_BUG=<bug>` plants a collector bug (`VMRUN_GC_DEBUG`) in this child only.
fn memcheck(
    vmrun: &Path,
    scratch: &Path,
    text: &str,
    stress: u64,
    expected: &Result<i64, String>,
) -> Result<(), String> {
    std::fs::write(scratch, text).map_err(|e| format!("cannot write {}: {e}", scratch.display()))?;
    let mut cmd = std::process::Command::new("valgrind");
    cmd.args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite"])
        .arg(vmrun)
        .arg(format!("--gc-stress={stress}"))
        .args(["--invoke", "run"])
        .arg(scratch)
        .env_remove("VMRUN_GC_DEBUG");
    if let Some(bug) = std::env::var_os("VMRUN_FUZZ_MEMCHECK_BUG") {
        cmd.env("VMRUN_GC_DEBUG", bug);
    }
    let out = cmd.output().map_err(|e| format!("cannot run valgrind: {e}"))?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = stderr.lines().find(|l| l.contains("ERROR SUMMARY")).unwrap_or("no ERROR SUMMARY");
    let as_expected = match expected {
        Ok(hash) => out.status.code() == Some(0) && stdout.trim() == hash.to_string(),
        Err(_) => out.status.code() == Some(134),
    };
    if !as_expected || !stderr.contains("ERROR SUMMARY: 0 errors") {
        let first_error = stderr.lines().find(|l| l.contains("Invalid") || l.contains("uninitialised"));
        return Err(format!(
            "MEMCHECK: exit {:?}, stdout {:?} (expected {expected:?}); {summary}; first report: {}",
            out.status.code(),
            stdout.trim(),
            first_error.unwrap_or("-")
        ));
    }
    Ok(())
}

pub fn run(opts: &GcOptions<'_>, wd: &Watchdog) -> anyhow::Result<Stats> {
    let vmrun = match opts.memcheck {
        true => Some(crate::invoke_args::find_vmrun().ok_or_else(|| {
            anyhow::anyhow!("--memcheck needs the vmrun binary next to vmrun-fuzz (or VMRUN_FUZZ_VMRUN)")
        })?),
        false => None,
    };
    let scratch = std::env::temp_dir().join(format!("vmrun-fuzz-gc-{}.wat", std::process::id()));
    let mut stats = Stats::default();
    for i in opts.skip..opts.skip + opts.iterations {
        let mut rng = SplitMix64::for_iteration(opts.seed, i);
        let text = opts.module.clone().unwrap_or_else(|| gc_gen::module(&mut rng));
        let stress = 1 + rng.below(16);
        wd.arm(opts.seed, i, text.as_bytes());
        let result = iteration(&text, stress, &mut stats).and_then(|expected| match &vmrun {
            Some(vmrun) => memcheck(vmrun, &scratch, &text, stress, &expected),
            None => Ok(()),
        });
        wd.disarm();
        match result {
            Ok(()) if opts.verbose => println!("iteration {i}: ok (--gc-stress={stress})"),
            Ok(()) => {}
            Err(why) => {
                stats.failures += 1;
                let file = opts.out_dir.join(format!("gc-{}-{i}.wat", opts.seed));
                std::fs::create_dir_all(opts.out_dir)?;
                std::fs::write(&file, &text)?;
                println!(
                    "GC FAILURE seed {} iteration {i}: {why}\n  module written to {}; replay: vmrun --gc-stress={stress} --gc-verify --invoke run {}",
                    opts.seed,
                    file.display(),
                    file.display()
                );
            }
        }
    }
    let _ = std::fs::remove_file(&scratch);
    Ok(stats)
}
