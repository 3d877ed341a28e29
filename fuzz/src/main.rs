//! `vmrun-fuzz`: fuzzing and differential testing of vmrun on stable Rust.
//!
//! Two commands, both driven by a seed and an iteration count so that any failure replays exactly
//! (`--seed S --skip I --iterations 1`):
//! - `diff` (`diff.rs`): wasm-smith modules (`generate.rs`) run in vmrun's interpreter, vmrun's compiled
//!   tier and wasmi 2.0 (`engines.rs`); results, traps and final memories/globals must agree.
//! - `gc` (`gc_run.rs`): the GC-focused generator's allocation graphs (`gc_gen.rs`) with and without a
//!   stressed, verified collector, optionally each also under Memcheck.
//! - `crash --target loader|wat|trace|invoke` (`crash.rs`): malformed inputs into the loader/validator, the
//!   text parser, the trace reader and the CLI's `--invoke` argument parser, which must answer with an error,
//!   never a panic or a hang.
//!
//! A [`Watchdog`] thread turns a hang into a failure: if one iteration runs longer than `--timeout`
//! seconds it prints the seed and iteration, writes the input, and exits with code 1. Every failure
//! (divergence, panic, hang) makes the exit code 1; `FUZZING.md` says how to run and what was found.

mod crash;
mod diff;
mod engines;
mod gc_gen;
mod gc_run;
mod generate;
mod invoke_args;
mod rng;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vmrun-fuzz", about = "Differential and crash fuzzing for vmrun")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The run's seed; iteration I of seed S is always the same input.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Iterations to run.
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    /// The first iteration (to replay one failure: `--skip I --iterations 1`).
    #[arg(long, default_value_t = 0)]
    skip: u64,
    /// Seconds one iteration may take before it counts as a hang.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Where failing inputs are written.
    #[arg(long, default_value = "fuzz-failures")]
    out_dir: PathBuf,
    /// Print every iteration.
    #[arg(long)]
    verbose: bool,
    /// `diff` and `gc`: run this module instead of generated ones (a regression check or a minimized
    /// failure); `diff` takes `.wasm` or `.wat` and still draws arguments from the seed, `gc` takes the
    /// `.wat` it wrote and still draws the stress period from the seed.
    #[arg(long)]
    module: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Generated modules in the interpreter, the compiled tier and wasmi: all must agree.
    Diff(RunArgs),
    /// Malformed inputs into one reader: errors are fine, panics and hangs are failures.
    Crash {
        #[arg(long, value_enum)]
        target: crash::Target,
        #[command(flatten)]
        run: RunArgs,
    },
    /// GC-focused modules (random allocation graphs) with and without a stressed, verified collector.
    Gc {
        /// Also run every module with the real `vmrun` under Memcheck (`valgrind` must be installed).
        #[arg(long)]
        memcheck: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print a (failing) module as text, to read or minimize it.
    Print { file: PathBuf },
}

/// Turns an iteration that runs too long into a reported failure (see the module comment).
pub struct Watchdog {
    started: Instant,
    /// Milliseconds since `started` when the current iteration began, plus one; 0 when disarmed.
    armed_at: AtomicU64,
    seed: AtomicU64,
    iteration: AtomicU64,
    input: Mutex<Vec<u8>>,
}

impl Watchdog {
    fn start(timeout: Duration, out_dir: PathBuf, label: &'static str) -> Arc<Watchdog> {
        let wd = Arc::new(Watchdog {
            started: Instant::now(),
            armed_at: AtomicU64::new(0),
            seed: AtomicU64::new(0),
            iteration: AtomicU64::new(0),
            input: Mutex::new(Vec::new()),
        });
        let w = wd.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let armed = w.armed_at.load(Ordering::Acquire);
                let now = w.started.elapsed().as_millis() as u64 + 1;
                if armed != 0 && now - armed > timeout.as_millis() as u64 {
                    w.report_hang(&out_dir, label, timeout);
                }
            }
        });
        wd
    }

    fn report_hang(&self, out_dir: &std::path::Path, label: &str, timeout: Duration) -> ! {
        let (seed, i) = (self.seed.load(Ordering::Acquire), self.iteration.load(Ordering::Acquire));
        let file = out_dir.join(format!("hang-{label}-{seed}-{i}.bin"));
        let _ = std::fs::create_dir_all(out_dir);
        let _ = std::fs::write(&file, self.current_module());
        println!("HANG seed {seed} iteration {i}: over {}s; input written to {}", timeout.as_secs(), file.display());
        std::process::exit(1);
    }

    /// The current iteration starts now, on `input`.
    pub fn arm(&self, seed: u64, iteration: u64, input: &[u8]) {
        *self.input.lock().unwrap_or_else(PoisonError::into_inner) = input.to_vec();
        self.seed.store(seed, Ordering::Release);
        self.iteration.store(iteration, Ordering::Release);
        self.armed_at.store(self.started.elapsed().as_millis() as u64 + 1, Ordering::Release);
    }

    pub fn disarm(&self) {
        self.armed_at.store(0, Ordering::Release);
    }

    pub fn current_module(&self) -> Vec<u8> {
        self.input.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let start = Instant::now();
    let result = match &cli.command {
        Command::Print { file } => {
            std::fs::read(file).map_err(anyhow::Error::from).and_then(wasmprinter::print_bytes).map(|text| {
                println!("{text}");
                0
            })
        }
        Command::Diff(run) => {
            let wd = Watchdog::start(Duration::from_secs(run.timeout), run.out_dir.clone(), "diff");
            let opts = diff::DiffOptions {
                seed: run.seed,
                skip: run.skip,
                iterations: run.iterations,
                out_dir: &run.out_dir,
                verbose: run.verbose,
                module: match &run.module {
                    Some(path) => match wat::parse_file(path) {
                        Ok(wasm) => Some(wasm),
                        Err(e) => {
                            eprintln!("vmrun-fuzz: {e}");
                            return std::process::ExitCode::from(2);
                        }
                    },
                    None => None,
                },
            };
            diff::run(&opts, &wd).map(|s| {
                println!(
                    "diff: {} modules executed ({} calls, {} traps, {} instantiation traps, {} stopped at stack exhaustion, {} not generated) in {:.1}s: {} divergences, {} reference-engine failures (vmrun's tiers agreed)",
                    s.modules,
                    s.calls,
                    s.traps,
                    s.instantiation_traps,
                    s.exhausted,
                    s.not_generated,
                    start.elapsed().as_secs_f64(),
                    s.divergences,
                    s.reference_failures
                );
                s.divergences
            })
        }
        Command::Gc { memcheck, run } => {
            let wd = Watchdog::start(Duration::from_secs(run.timeout), run.out_dir.clone(), "gc");
            let module = match &run.module {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => Some(text),
                    Err(e) => {
                        eprintln!("vmrun-fuzz: {}: {e}", path.display());
                        return std::process::ExitCode::from(2);
                    }
                },
                None => None,
            };
            let opts = gc_run::GcOptions {
                seed: run.seed,
                skip: run.skip,
                iterations: run.iterations,
                out_dir: &run.out_dir,
                verbose: run.verbose,
                module,
                memcheck: *memcheck,
            };
            gc_run::run(&opts, &wd).map(|s| {
                println!(
                    "gc: {} modules executed ({} trapped alike, {} collections in the stressed stores{}) in {:.1}s: {} failures",
                    s.modules,
                    s.traps,
                    s.collections,
                    if *memcheck { ", each also under Memcheck" } else { "" },
                    start.elapsed().as_secs_f64(),
                    s.failures
                );
                s.failures
            })
        }
        Command::Crash { target, run } => {
            let wd = Watchdog::start(Duration::from_secs(run.timeout), run.out_dir.clone(), target.label());
            crash::run(*target, run.seed, run.skip, run.iterations, &run.out_dir, &wd).map(|s| {
                println!(
                    "crash --target {}: {} inputs ({} accepted, {} rejected with an error) in {:.1}s: {} failures",
                    target.label(),
                    s.inputs,
                    s.accepted,
                    s.rejected,
                    start.elapsed().as_secs_f64(),
                    s.failures
                );
                s.failures
            })
        }
    };
    match result {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("vmrun-fuzz: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

impl crash::Target {
    fn label(&self) -> &'static str {
        match self {
            crash::Target::Loader => "loader",
            crash::Target::Wat => "wat",
            crash::Target::Trace => "trace",
            crash::Target::Invoke => "invoke",
        }
    }
}
