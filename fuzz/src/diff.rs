//! `vmrun-fuzz diff`: the differential oracle.
//!
//! For each iteration: generate a module (`generate.rs`), draw its call plan once, run it in vmrun's
//! interpreter, vmrun's eagerly compiled tier and wasmi (`engines.rs`), and compare the outcomes pairwise
//! (interpreter against wasmi, compiled tier against the interpreter). Equal means: the same instantiation
//! result; for each call the same trap class or the same results, where any NaN equals any NaN of its type
//! (the spec leaves NaN payloads of arithmetic free; wasm-smith's NaN canonicalization makes them
//! deterministic anyway, so this is a second line); the same bytes in every exported memory and the same
//! value in every exported global. A call that exhausts the stack in either engine ends the comparison of
//! that module (engine limits differ; the module is counted as `exhausted`, not as a divergence). A panic in
//! any engine is a divergence too.
//!
//! A divergence prints the seed and iteration, writes the module to `<out-dir>/diff-<seed>-<iter>.wasm`,
//! and makes the run exit with code 1.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use crate::engines::{self, CallOutcome, Outcome, Tier, TrapClass, Value};
use crate::rng::SplitMix64;
use crate::{Watchdog, generate, panic_message};

/// Counts of one run, printed at the end.
#[derive(Debug, Default)]
pub struct Stats {
    pub modules: u64,
    pub calls: u64,
    pub traps: u64,
    pub exhausted: u64,
    pub instantiation_traps: u64,
    pub not_generated: u64,
    pub divergences: u64,
    /// Modules on which the reference engine failed (panicked) while vmrun's two tiers agreed: wasmi's
    /// bugs, kept for triage but not divergences of vmrun.
    pub reference_failures: u64,
}

/// How an iteration ended when nothing diverged.
enum Verdict {
    Agree,
    /// The reference engine failed (the message); vmrun's tiers were compared and agree.
    ReferenceFailed(String),
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x == y || (f32::from_bits(*x).is_nan() && f32::from_bits(*y).is_nan()),
        (Value::F64(x), Value::F64(y)) => x == y || (f64::from_bits(*x).is_nan() && f64::from_bits(*y).is_nan()),
        _ => a == b,
    }
}

fn same_call(a: &CallOutcome, b: &CallOutcome) -> bool {
    match (a, b) {
        (CallOutcome::Returned(x), CallOutcome::Returned(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        (CallOutcome::Trapped(x), CallOutcome::Trapped(y)) => x == y && !matches!(x, TrapClass::Other(_)),
        _ => false,
    }
}

fn exhausted(o: &Outcome) -> bool {
    o.calls.iter().any(|(_, _, c)| *c == CallOutcome::Trapped(TrapClass::Exhausted))
}

/// The first difference between two outcomes, described; `None` if they agree.
pub fn compare(a_name: &str, a: &Outcome, b_name: &str, b: &Outcome) -> Option<String> {
    match (&a.instantiated, &b.instantiated) {
        (Some(Ok(())), Some(Ok(()))) => {}
        // Deep recursion in the start function: engine limits differ, nothing to compare.
        (Some(Err(TrapClass::Exhausted)), _) | (_, Some(Err(TrapClass::Exhausted))) => return None,
        (Some(Err(x)), Some(Err(y))) if x == y && !matches!(x, TrapClass::Other(_)) => return None,
        (x, y) => return Some(format!("instantiation: {a_name} {x:?}, {b_name} {y:?}")),
    }
    for ((name, args, x), (_, _, y)) in a.calls.iter().zip(&b.calls) {
        if matches!(x, CallOutcome::Trapped(TrapClass::Exhausted))
            || matches!(y, CallOutcome::Trapped(TrapClass::Exhausted))
        {
            return None;
        }
        if !same_call(x, y) {
            return Some(format!("call `{name}` with {args:?}: {a_name} {x:?}, {b_name} {y:?}"));
        }
    }
    if a.calls.len() != b.calls.len() {
        return Some(format!("{a_name} made {} calls, {b_name} {}", a.calls.len(), b.calls.len()));
    }
    let sorted = |o: &Outcome| {
        let mut m = o.memories.clone();
        m.sort_by(|p, q| p.0.cmp(&q.0));
        let mut g = o.globals.clone();
        g.sort_by(|p, q| p.0.cmp(&q.0));
        (m, g)
    };
    let ((ma, ga), (mb, gb)) = (sorted(a), sorted(b));
    if ma.len() != mb.len() || ga.len() != gb.len() {
        return Some(format!(
            "exports differ: {a_name} {} memories {} globals, {b_name} {} and {}",
            ma.len(),
            ga.len(),
            mb.len(),
            gb.len()
        ));
    }
    for ((name, x), (_, y)) in ma.iter().zip(&mb) {
        if x != y {
            let at = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
            return Some(format!(
                "memory `{name}`: {a_name} {} bytes, {b_name} {} bytes, first difference at {at:#x}",
                x.len(),
                y.len()
            ));
        }
    }
    for ((name, x), (_, y)) in ga.iter().zip(&gb) {
        if !same_value(x, y) {
            return Some(format!("global `{name}`: {a_name} {x:?}, {b_name} {y:?}"));
        }
    }
    None
}

/// Options of `vmrun-fuzz diff`.
pub struct DiffOptions<'a> {
    pub seed: u64,
    pub skip: u64,
    pub iterations: u64,
    pub out_dir: &'a Path,
    pub verbose: bool,
    /// A fixed module to run instead of generated ones.
    pub module: Option<Vec<u8>>,
}

/// One iteration: `Err` describes a divergence.
fn iteration(
    seed: u64,
    i: u64,
    fixed: Option<&[u8]>,
    compiler: &Arc<jit::CraneliftCompiler>,
    wasmi: &wasmi::Engine,
    stats: &mut Stats,
    wd: &Watchdog,
) -> Result<Verdict, String> {
    let mut rng = SplitMix64::for_iteration(seed, i);
    let generated = match fixed {
        Some(wasm) => Some(generate::Generated { wasm: wasm.to_vec() }),
        None => generate::module(&mut rng),
    };
    let Some(g) = generated else {
        stats.not_generated += 1;
        return Ok(Verdict::Agree);
    };
    wd.arm(seed, i, &g.wasm);
    let guarded = |what: &str, f: &mut dyn FnMut() -> Outcome| -> Result<Outcome, String> {
        catch_unwind(AssertUnwindSafe(f)).map_err(|p| format!("{what} panicked: {}", panic_message(&*p)))
    };
    let plan = catch_unwind(AssertUnwindSafe(|| engines::plan(&g.wasm, &mut rng)))
        .map_err(|p| format!("vmrun panicked while loading: {}", panic_message(&*p)))??;
    let interp = guarded("vmrun interpreter", &mut || engines::run_vmrun(&g.wasm, &plan, &Tier::Interpreter))?;
    let jit_tier = Tier::Eager(compiler.clone());
    let jit = guarded("vmrun jit", &mut || engines::run_vmrun(&g.wasm, &plan, &jit_tier))?;
    let reference = match guarded("wasmi", &mut || engines::run_wasmi(wasmi, &g.wasm, &plan)) {
        Ok(r) => r,
        Err(failure) => {
            // Without a reference, the tiers still check each other.
            stats.modules += 1;
            return match compare("interpreter", &interp, "jit", &jit) {
                Some(d) => Err(format!("{d} ({failure})")),
                None => Ok(Verdict::ReferenceFailed(failure)),
            };
        }
    };
    stats.modules += 1;
    stats.calls += reference.calls.len() as u64;
    stats.traps += reference.calls.iter().filter(|c| matches!(c.2, CallOutcome::Trapped(_))).count() as u64;
    if matches!(reference.instantiated, Some(Err(_))) {
        stats.instantiation_traps += 1;
    }
    if exhausted(&interp) || exhausted(&reference) || exhausted(&jit) {
        stats.exhausted += 1;
    }
    if let Some(d) = compare("interpreter", &interp, "wasmi", &reference) {
        if verbose_plan() {
            println!("plan (exports called in order, one instance): {:?}", plan.args);
        }
        // Triage: when both vmrun tiers agree, the reference engine is the first suspect.
        let tiers = match compare("interpreter", &interp, "jit", &jit) {
            None => "vmrun's tiers agree".to_string(),
            Some(t) => format!("vmrun's tiers differ too: {t}"),
        };
        return Err(format!("{d} ({tiers})"));
    }
    if let Some(d) = compare("interpreter", &interp, "jit", &jit) {
        return Err(d);
    }
    Ok(Verdict::Agree)
}

/// `VMRUN_FUZZ_PLAN=1`: a divergence from the reference also prints the calls made (to rebuild them in
/// another engine when triaging).
fn verbose_plan() -> bool {
    std::env::var_os("VMRUN_FUZZ_PLAN").is_some()
}

/// Writes the module of iteration `i` to the output folder as `{kind}-{seed}-{i}.wasm`.
fn keep_module(opts: &DiffOptions<'_>, wd: &Watchdog, kind: &str, i: u64) -> std::io::Result<std::path::PathBuf> {
    let file = opts.out_dir.join(format!("{kind}-{}-{i}.wasm", opts.seed));
    std::fs::create_dir_all(opts.out_dir)?;
    std::fs::write(&file, wd.current_module())?;
    Ok(file)
}

/// Runs the oracle; the stats say how many divergences were found.
pub fn run(opts: &DiffOptions<'_>, wd: &Watchdog) -> anyhow::Result<Stats> {
    let compiler = Arc::new(jit::CraneliftCompiler::new().map_err(|e| anyhow::anyhow!(e))?);
    let wasmi = engines::wasmi_engine();
    let mut stats = Stats::default();
    for i in opts.skip..opts.skip + opts.iterations {
        match iteration(opts.seed, i, opts.module.as_deref(), &compiler, &wasmi, &mut stats, wd) {
            Err(d) => {
                stats.divergences += 1;
                let file = keep_module(opts, wd, "diff", i)?;
                println!("DIVERGENCE seed {} iteration {i}: {d}\n  module written to {}", opts.seed, file.display());
            }
            Ok(Verdict::ReferenceFailed(why)) => {
                stats.reference_failures += 1;
                let file = keep_module(opts, wd, "reference", i)?;
                println!(
                    "REFERENCE FAILED seed {} iteration {i}: {why} (vmrun's tiers agree)\n  module written to {}",
                    opts.seed,
                    file.display()
                );
            }
            Ok(Verdict::Agree) if opts.verbose => println!("iteration {i}: ok"),
            Ok(Verdict::Agree) => {}
        }
        wd.disarm();
    }
    Ok(stats)
}
