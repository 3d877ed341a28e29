//! `vmrun`: run a WebAssembly program (`.wat` or `.wasm`), call one of its exports, or run a spec
//! script.
//!
//! The CLI is a thin layer over `vm`: parse the command line (clap), build a WASI context and a
//! linker (`--dir`, `--env`, `--preload`), load and instantiate the program, then either run its
//! `_start` or call the `--invoke` export with arguments parsed by parameter type (`invoke.rs`).
//!
//! Every way a run can end maps to one exit code, and every failure is reported as exactly one
//! `error: ...` line on stderr (a trap adds its wasm backtrace):
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | usage, load, validation or link error; a failing `wast` script |
//! | 134  | a wasm trap (like wasmtime: 128 + SIGABRT) |
//! | N    | the program called WASI `proc_exit(N)` (the OS keeps the low 8 bits) |
//! | 101  | an internal error: a bug in vmrun, reported as `error: internal error: ...` |
//!
//! The VM runs on its own thread with a large stack. Guest recursion does not use the host
//! stack (the interpreter keeps its own frames and traps with `call stack exhausted`), but
//! parsing and validating deeply nested modules does.

mod invoke;
mod trace_cmd;
mod wast;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use vm::threads::{ThreadExit, WasiThreads};
use vm::{Extern, InstanceId, Linker, Source, Store, Trap, TrapKind, WasmFrame};

#[derive(Parser, Debug)]
#[command(name = "vmrun", version, about = "Run WebAssembly programs (.wat or .wasm) with WASI preview1")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(after_help = "Exit codes: 0 success; 1 usage, load, validation or link error; \
    134 wasm trap; N the program's proc_exit(N); 101 internal error.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Call this export with ARGS (parsed by parameter type) and print each result on a line.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,

    /// Pre-open a host directory for WASI, seen by the guest as GUEST (default: HOST).
    /// Repeatable. Nothing else of the host file system is reachable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,

    /// Set a WASI environment variable; `NAME` alone passes the host's value. Repeatable.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    envs: Vec<String>,

    /// Instantiate module FILE first and link its exports under import module NAME. Repeatable.
    #[arg(long = "preload", value_name = "NAME=FILE")]
    preloads: Vec<String>,

    #[command(flatten)]
    gc: GcOptions,

    #[command(flatten)]
    jit: JitOptions,

    /// Detect data races between threads (happens-before, like Go's -race): each race is reported on
    /// stderr as it is found, and a run that found any ends with `Found N data race(s)` and exit code 66.
    /// Runs every function in the interpreter.
    #[arg(long)]
    race: bool,

    /// With --race, print the detector's state at exit: threads, synchronization objects, shadow memory.
    #[arg(long, requires = "race")]
    race_stats: bool,

    #[command(flatten)]
    trace: trace_cmd::TraceOptions,

    /// The program: WebAssembly text or binary (told apart by content, not extension).
    #[arg(required = true)]
    file: Option<PathBuf>,

    /// With --invoke, the function's arguments; otherwise the WASI program's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Heap policy and debug modes.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Garbage collector")]
struct GcOptions {
    /// Collect when the heap reaches live × (1 + PERCENT/100), like GOGC; `off` collects only at --max-heap.
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    gc_percent: String,

    /// Hard heap limit (e.g. `64MiB`, `1G`, `65536`): exceeding it is an out-of-memory trap.
    #[arg(long, value_name = "SIZE")]
    max_heap: Option<String>,

    /// Debug: collect before every allocation (`--gc-stress`) or every N (`--gc-stress=N`).
    #[arg(long, value_name = "N", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    gc_stress: Option<u64>,

    /// Debug: verify the heap after marking and after sweeping in every collection.
    #[arg(long)]
    gc_verify: bool,

    /// Print collector statistics to stderr at exit.
    #[arg(long)]
    gc_stats: bool,

    /// Under Valgrind, do not describe the heap to Memcheck (for profiling with callgrind or cachegrind:
    /// the heap then runs exactly as it does natively).
    #[arg(long)]
    no_valgrind_annotations: bool,
}

impl GcOptions {
    fn heap_config(&self) -> Result<gc::HeapConfig> {
        let gc_percent = match self.gc_percent.as_str() {
            "off" => None,
            p => Some(p.parse().map_err(|_| anyhow!("--gc-percent expects a number or `off`, got `{p}`"))?),
        };
        if self.gc_stress == Some(0) {
            bail!("--gc-stress=N needs N >= 1");
        }
        Ok(gc::HeapConfig {
            gc_percent,
            max_heap_bytes: self.max_heap.as_deref().map(|s| parse_size("--max-heap", s)).transpose()?,
            stress_every: self.gc_stress,
            verify: self.gc_verify,
            valgrind: !self.no_valgrind_annotations,
            // Negative controls for the Memcheck suite (tests/valgrind.rs); unset in real runs.
            inject: gc::InjectedBug::from_env().map_err(|e| anyhow!(e))?,
            ..gc::HeapConfig::default()
        })
    }
}

/// Execution tiers.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Compiled tier")]
struct JitOptions {
    /// `off`: interpret only; `auto`: compile a function once it is hot; `eager`: compile every
    /// function when its module loads. Functions the compiler cannot handle stay interpreted.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["off", "auto", "eager"])]
    jit: String,

    /// With --jit=auto, calls plus loop back-edges of a function before it is compiled (a hot loop in a
    /// function entered once continues compiled by on-stack replacement).
    #[arg(long, value_name = "N", default_value_t = vm::DEFAULT_JIT_THRESHOLD)]
    jit_threshold: u32,

    /// How compiled code keeps memory accesses in bounds. `guard` (natively): an access whose static
    /// offset fits the 32 MiB guard region past 4 GiB makes no check, and its fault is the trap;
    /// `explicit`: a compare and branch before every access (always the case under Valgrind).
    #[arg(long, value_name = "HOW", default_value = "guard", value_parser = ["guard", "explicit"])]
    bounds_checks: String,

    /// Print what the compiled tier did to stderr at exit (compiled and interpreted functions, with the
    /// construct that kept each interpreted; OSR entries; compile time; code bytes).
    #[arg(long)]
    jit_stats: bool,
}

impl JitOptions {
    fn jit_config(&self) -> Result<vm::JitConfig> {
        use vm::tier::JitMode;
        let mode = match self.jit.as_str() {
            "off" => JitMode::Off,
            "eager" => JitMode::Eager,
            _ => JitMode::Auto,
        };
        let compiler: Option<std::sync::Arc<dyn vm::tier::Compiler>> = match mode {
            JitMode::Off => None,
            _ => Some(std::sync::Arc::new(jit::CraneliftCompiler::new().map_err(|e| anyhow!(e))?)),
        };
        let explicit_bounds_checks = self.bounds_checks == "explicit";
        Ok(vm::JitConfig { mode, threshold: self.jit_threshold.max(1), compiler, explicit_bounds_checks })
    }
}

fn print_jit_stats(stats: &vm::tier::JitStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let unsupported = stats.unsupported();
    eprintln!(
        "jit: {} functions compiled ({} bytes of code, compile time {:.3} ms), {} left interpreted, {} OSR entries",
        stats.compiled.load(Relaxed),
        stats.code_bytes.load(Relaxed),
        stats.compile_nanos.load(Relaxed) as f64 / 1e6,
        stats.unsupported_count.load(Relaxed),
        stats.osr_entries.load(Relaxed),
    );
    for (func, reason) in unsupported {
        eprintln!("jit: interpreted {func}: {reason}");
    }
}

/// `64MiB`, `64M`, `1G`, `512k`, `65536` (bytes), the value of option `flag`. Units are powers of 1024.
fn parse_size(flag: &str, s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| anyhow!("{flag}: `{s}` is not a size like 64MiB"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => bail!("{flag}: unknown unit in `{s}` (use B, KiB, MiB or GiB)"),
    };
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| anyhow!("{flag}: `{s}` is out of range"))
}

fn print_gc_stats(stats: &gc::GcStats) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let rss = stats.peak_resident_bytes.map(|b| format!("{:.1} MiB", mib(b as u64))).unwrap_or_else(|| "n/a".into());
    eprintln!(
        "gc: {} collections, pause total {:.3} ms max {:.3} ms, allocated {:.1} MiB ({} objects), freed {:.1} MiB ({} objects), peak heap {:.1} MiB, peak resident {rss}",
        stats.collections,
        stats.total_pause.as_secs_f64() * 1e3,
        stats.max_pause.as_secs_f64() * 1e3,
        mib(stats.bytes_allocated),
        stats.objects_allocated,
        mib(stats.bytes_freed),
        stats.objects_freed,
        mib(stats.peak_heap_bytes as u64),
    );
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run WebAssembly spec scripts (.wast) and print `N passed, N failed`.
    Wast {
        /// Script files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print every skipped directive with the reason (`file:line:col: <directive> skipped: <why>`).
        #[arg(long, short)]
        verbose: bool,
        /// Fail rejections (`assert_invalid`, `assert_malformed`, `assert_unlinkable`) whose wording does not
        /// contain the expected message.
        #[arg(long)]
        strict_messages: bool,

        #[command(flatten)]
        jit: JitOptions,
    },
    /// Read a trace written by `--trace allocfree`.
    Trace {
        #[command(subcommand)]
        action: trace_cmd::TraceCommand,
    },
}

/// How a run ended, short of an error.
enum Outcome {
    Success,
    /// `proc_exit(code)`, or a failing `wast` run.
    Exit(i32),
}

/// How a run failed.
enum Failure {
    /// Usage, load, validation or link error: printed as one `error:` line, exit 1.
    Error(anyhow::Error),
    /// A trap: message plus wasm backtrace, exit 134.
    Trap(Trap),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

/// Exit code of a trap, as in wasmtime (128 + SIGABRT).
const TRAP_EXIT: u8 = 134;
/// Exit code of an internal error (what Rust uses for a panic).
const INTERNAL_ERROR_EXIT: u8 = 101;
/// Name of the thread the VM runs on (the panic hook looks at it).
const VM_THREAD: &str = "vm";
/// Host stack for the VM thread.
const VM_THREAD_STACK: usize = 64 << 20;

/// The last panic message on the VM thread, printed by `main` if the thread dies of it. Panics
/// caught inside the VM thread (the spec runner reports them as failed directives) stay silent.
static VM_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let line = format!("error: internal error: {msg}{at}");
        if std::thread::current().name() == Some(VM_THREAD) {
            if let Ok(mut slot) = VM_PANIC.lock() {
                *slot = Some(line);
            }
        } else {
            eprintln!("{line}");
        }
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` go to stdout with 0; a usage error keeps clap's usage hint
        // (it starts with `error: `) but exits 1 like every other error.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    let worker = std::thread::Builder::new().name(VM_THREAD.into()).stack_size(VM_THREAD_STACK).spawn(move || run(cli));
    let result = match worker {
        Ok(handle) => match handle.join() {
            Ok(result) => result,
            Err(_) => {
                let line = VM_PANIC.lock().ok().and_then(|mut s| s.take());
                eprintln!("{}", line.unwrap_or_else(|| "error: internal error: the VM thread died".into()));
                return ExitCode::from(INTERNAL_ERROR_EXIT);
            }
        },
        Err(e) => Err(Failure::Error(anyhow!("cannot start the VM thread: {e}"))),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Exit(code)) => ExitCode::from(code as u8),
        Err(Failure::Error(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
        Err(Failure::Trap(t)) => {
            eprint!("{}", describe_trap(&t));
            ExitCode::from(TRAP_EXIT)
        }
    }
}

/// An error chain (`context: cause`) on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Backtrace lines kept from the innermost and outermost ends of a very deep backtrace.
const BACKTRACE_HEAD: usize = 20;
const BACKTRACE_TAIL: usize = 5;

/// `error: wasm trap: <kind>` (or `error: uncaught wasm exception: tag $e`), then the backtrace, innermost
/// frame first (for an exception, from its throw). A run of identical frames (plain recursion) is shown once
/// with a repeat count, and a backtrace that is still long (say, mutual recursion that exhausted the stack)
/// keeps only its two ends.
fn describe_trap(t: &Trap) -> String {
    let mut out = match t.kind {
        TrapKind::UncaughtException { .. } => format!("error: {}\n", t.kind),
        _ => format!("error: wasm trap: {}\n", t.kind),
    };
    if t.backtrace.is_empty() {
        return out;
    }
    out.push_str("wasm backtrace:\n");
    // (index of the first frame, frame, how many identical frames follow it)
    let mut runs: Vec<(usize, &WasmFrame, usize)> = Vec::new();
    for (i, f) in t.backtrace.iter().enumerate() {
        match runs.last_mut() {
            Some((_, prev, repeats)) if same_place(prev, f) => *repeats += 1,
            _ => runs.push((i, f, 0)),
        }
    }
    let shown = |(i, f, repeats): &(usize, &WasmFrame, usize), out: &mut String| {
        out.push_str(&format!("  {i:>3}: {}\n", f));
        if *repeats > 0 {
            out.push_str(&format!("       ... the frame above repeated {repeats} more times\n"));
        }
    };
    if runs.len() <= BACKTRACE_HEAD + BACKTRACE_TAIL {
        runs.iter().for_each(|r| shown(r, &mut out));
    } else {
        runs[..BACKTRACE_HEAD].iter().for_each(|r| shown(r, &mut out));
        let first_tail = runs.len() - BACKTRACE_TAIL;
        let omitted = runs[first_tail].0 - runs[BACKTRACE_HEAD].0;
        out.push_str(&format!("       ... {omitted} frames omitted\n"));
        runs[first_tail..].iter().for_each(|r| shown(r, &mut out));
    }
    out
}

fn same_place(a: &WasmFrame, b: &WasmFrame) -> bool {
    a.module == b.module && a.func_index == b.func_index && a.offset == b.offset
}

/// A spawned wasm thread ended by `proc_exit`, a trap or a failure: as wasi-threads says, that ends the
/// whole program, with the status the main thread would have given (threads blocked in `wait` or in a
/// host call end with it).
fn end_process_for_thread(tid: u32, exit: ThreadExit) {
    let code = match exit {
        ThreadExit::Exit(code) => code,
        ThreadExit::Trap(t) => {
            eprint!(
                "{}",
                describe_trap(&t).replacen("error: wasm trap:", &format!("error: wasm trap in thread {tid}:"), 1)
            );
            TRAP_EXIT as i32
        }
        ThreadExit::Failed(why) => {
            eprintln!("error: wasm thread {tid} could not start: {why}");
            1
        }
        // The panic hook has printed the message.
        ThreadExit::Panicked(_) => INTERNAL_ERROR_EXIT as i32,
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// A trap that is really `proc_exit(n)` ends the run with code n.
fn trap_outcome(t: Trap) -> Result<Outcome, Failure> {
    match t.kind {
        TrapKind::Exit(code) => Ok(Outcome::Exit(code)),
        _ => Err(Failure::Trap(t)),
    }
}

fn run(cli: Cli) -> Result<Outcome, Failure> {
    match &cli.command {
        Some(Command::Wast { files, verbose, strict_messages, jit }) => {
            let opts =
                wast::WastOptions { strict_messages: *strict_messages, jit: jit.jit_config()?, ..Default::default() };
            return run_wast(files, *verbose, jit.jit_stats, &opts);
        }
        Some(Command::Trace { action }) => return action.run().map(|()| Outcome::Success).map_err(Failure::Error),
        None => {}
    }
    let file = cli.file.as_deref().ok_or_else(|| anyhow!("no program given (see --help)"))?;
    let config =
        vm::Config { gc: cli.gc.heap_config()?, jit: cli.jit.jit_config()?, race: cli.race, ..vm::Config::default() };
    let mut store = Store::new(config);
    cli.trace.start(&mut store)?;
    let outcome = run_program(&cli, file, &mut store);
    cli.trace.finish(&mut store)?;
    if cli.gc.gc_stats {
        print_gc_stats(&store.gc_stats());
    }
    if cli.jit.jit_stats {
        print_jit_stats(store.runtime().jit_stats());
    }
    if let Some(stats) = store.race_stats().filter(|_| cli.race_stats) {
        eprintln!(
            "race: {} threads live, {} synchronization objects ({} bytes), {} shadow granules ({} bytes), {} races",
            stats.threads,
            stats.live_sync_objects,
            stats.sync_bytes,
            stats.shadow_granules,
            stats.shadow_bytes,
            stats.races
        );
        // What the leak benchmark compares (`BENCHMARKS.md`): the process's peak resident memory.
        let peak = gc::peak_resident_bytes().map_or("unknown".to_string(), |b| b.to_string());
        eprintln!(
            "race: {} allocation sites kept, {} stacks in the depot, peak RSS {peak} bytes",
            store.race_alloc_sites(),
            store.race_depot_stacks()
        );
    }
    match store.races_found() {
        0 => outcome,
        n => {
            eprintln!("Found {n} data race(s)");
            // A run that trapped or failed keeps its own status; a clean run with races exits 66, as Go's.
            match outcome {
                Ok(_) => Ok(Outcome::Exit(RACE_EXIT)),
                failed => failed,
            }
        }
    }
}

/// The exit code of a run that found data races (as Go's race detector).
const RACE_EXIT: i32 = 66;

fn run_program(cli: &Cli, file: &Path, store: &mut Store) -> Result<Outcome, Failure> {
    let mut linker = Linker::new();
    // WASI sees the program's arguments only when they are not the invoked function's.
    let mut wasi_args = vec![file.display().to_string()];
    if cli.invoke.is_none() {
        wasi_args.extend(cli.args.iter().cloned());
    }
    let mut ctx = vm::wasi::WasiCtx::new(wasi_args);
    for e in &cli.envs {
        let (name, value) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), std::env::var(e).map_err(|_| anyhow!("--env {e}: not set in the host environment"))?),
        };
        if name.is_empty() {
            return Err(anyhow!("--env expects NAME=VALUE, got `{e}`").into());
        }
        ctx.env.push((name, value));
    }
    for d in &cli.dirs {
        let (host, guest) = d.split_once("::").unwrap_or((d, d));
        ctx.preopen(Path::new(host), guest).with_context(|| format!("--dir {d}: cannot open `{host}`"))?;
    }
    vm::wasi::add_to_linker(store, &mut linker, ctx).context("cannot open the pre-opened directories")?;
    let threads = WasiThreads::new(store.runtime().clone(), Box::new(end_process_for_thread));
    threads.add_to_linker(store, &mut linker);
    for p in &cli.preloads {
        let (name, path) = p.split_once('=').ok_or_else(|| anyhow!("--preload expects NAME=FILE, got `{p}`"))?;
        let instance = match load_and_instantiate(store, &mut linker, Path::new(path), None)? {
            Loaded::Instance(i) => i,
            Loaded::Exited(code) => return Ok(Outcome::Exit(code)),
        };
        linker.define_instance(store, name, instance);
    }
    let instance = match load_and_instantiate(store, &mut linker, file, Some(&threads))? {
        Loaded::Instance(i) => i,
        Loaded::Exited(code) => return Ok(Outcome::Exit(code)),
    };
    let outcome = match &cli.invoke {
        Some(name) => {
            // A WASI reactor (no `_start`, an `_initialize` export) is initialized before any other export
            // is called, as WASI specifies and wasmtime does: compilers put their runtime set-up there.
            if name != "_initialize"
                && store.get_export(instance, "_start").is_none()
                && let Some(Extern::Func(init)) = store.get_export(instance, "_initialize")
                && let Err(t) = store.call(init, &[])
            {
                return trap_outcome(t);
            }
            invoke_export(store, instance, name, &cli.args)
        }
        None => {
            let Some(Extern::Func(start)) = store.get_export(instance, "_start") else {
                return Err(anyhow!(
                    "`{}` has no `_start` export to run; {}",
                    file.display(),
                    list_exports(store, instance)
                )
                .into());
            };
            match store.call(start, &[]) {
                Ok(_) => Ok(Outcome::Success),
                Err(t) => trap_outcome(t),
            }
        }
    };
    if matches!(outcome, Ok(Outcome::Success)) {
        // The program returned, which ends its threads; those finishing anyway may (`wait_for_threads`).
        threads.wait_for_threads(THREAD_GRACE);
    }
    outcome
}

/// How long a program that returned waits for its threads to finish before the process exits anyway.
const THREAD_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn invoke_export(store: &mut Store, instance: InstanceId, name: &str, args: &[String]) -> Result<Outcome, Failure> {
    let func = match store.get_export(instance, name) {
        Some(Extern::Func(f)) => f,
        Some(_) => return Err(anyhow!("export `{name}` is not a function; {}", list_exports(store, instance)).into()),
        None => return Err(anyhow!("no export named `{name}`; {}", list_exports(store, instance)).into()),
    };
    let ty = store.func_type(func);
    let vals = invoke::parse_args(name, &ty, args)?;
    let results = match store.call(func, &vals) {
        Ok(r) => r,
        Err(t) => return trap_outcome(t),
    };
    // `println!` would panic on a closed pipe (`vmrun ... | head -0`); that is an error, not a bug.
    let mut stdout = std::io::stdout().lock();
    for v in results {
        writeln!(stdout, "{}", invoke::format_val(v)).context("cannot write the results")?;
    }
    stdout.flush().context("cannot write the results")?;
    Ok(Outcome::Success)
}

/// An instance, or the `proc_exit` code its start function ended the program with.
enum Loaded {
    Instance(InstanceId),
    Exited(i32),
}

/// Loads and instantiates `path`. The program itself (`threads` given) may use wasi-threads: a shared
/// memory it imports is created here, and spawned threads instantiate it against the same imports.
fn load_and_instantiate(
    store: &mut Store,
    linker: &mut Linker,
    path: &Path,
    threads: Option<&WasiThreads>,
) -> Result<Loaded, Failure> {
    let source = Source::from_file(path).map_err(anyhow::Error::from)?;
    let module = store.load_module(source).map_err(anyhow::Error::from)?;
    if let Some(threads) = threads {
        vm::threads::define_shared_memories(store, linker, module).map_err(anyhow::Error::from)?;
        // A module whose imports threads cannot share still runs; its `thread-spawn` returns -1.
        let _ = threads.set_program(store, module, linker);
    }
    match store.instantiate(module, linker) {
        Ok(i) => Ok(Loaded::Instance(i)),
        Err(vm::Error::Trap(t)) => match trap_outcome(t)? {
            Outcome::Exit(code) => Ok(Loaded::Exited(code)),
            Outcome::Success => unreachable!("trap_outcome never reports success"),
        },
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

/// "exported functions: `a`, `b`", or why there are none.
fn list_exports(store: &Store, instance: InstanceId) -> String {
    let funcs: Vec<String> = store
        .exports(instance)
        .into_iter()
        .filter(|(_, e)| matches!(e, Extern::Func(_)))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if funcs.is_empty() {
        "the module exports no functions".into()
    } else {
        format!("exported functions: {}", funcs.join(", "))
    }
}

/// Runs every script; fails (exit 1) if a directive failed or a script checked nothing (every directive
/// skipped, or none at all), which is reported as `error: FILE: ...`.
fn run_wast(files: &[PathBuf], verbose: bool, jit_stats: bool, opts: &wast::WastOptions) -> Result<Outcome, Failure> {
    let mut total = wast::WastReport::default();
    let mut empty = false;
    for f in files {
        let report = wast::run_wast_file(f, opts)?;
        for failure in &report.failures {
            eprintln!("{failure}");
        }
        if verbose {
            report.skips.iter().for_each(|s| eprintln!("{s}"));
        }
        if report.ran_nothing() {
            let what = if report.skipped > 0 { "every directive was skipped" } else { "no directives" };
            eprintln!("error: {}: {what}", f.display());
            empty = true;
        }
        total.passed += report.passed;
        total.failures.extend(report.failures);
        total.skipped += report.skipped;
        for (why, n) in report.skip_reasons {
            *total.skip_reasons.entry(why).or_default() += n;
        }
        total.jit_compiled += report.jit_compiled;
        total
            .jit_interpreted
            .extend(report.jit_interpreted.into_iter().map(|(func, why)| (format!("{}: {func}", f.display()), why)));
    }
    println!("{total}");
    if jit_stats {
        eprintln!("jit: {} functions compiled, {} left interpreted", total.jit_compiled, total.jit_interpreted.len());
        for (func, why) in &total.jit_interpreted {
            eprintln!("jit: interpreted {func}: {why}");
        }
    }
    Ok(if total.failures.is_empty() && !empty { Outcome::Success } else { Outcome::Exit(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_report_names_frames_and_falls_back_to_offsets() {
        let frame = |name: Option<&str>, source| WasmFrame {
            module: Some("m".into()),
            func_index: if name.is_some() { 4 } else { 3 },
            func_name: name.map(String::from),
            offset: 0x2f,
            source,
        };
        let loc = vm::SourceLoc { file: "p.wat".into(), line: 4, column: 7 };
        let trap =
            Trap { kind: TrapKind::Unreachable, backtrace: vec![frame(None, None), frame(Some("main"), Some(loc))] };
        assert_eq!(
            describe_trap(&trap),
            "error: wasm trap: unreachable\nwasm backtrace:\n    0: m!<unknown> (func 3) at offset 0x2f\n    1: m!main at p.wat:4:7\n"
        );
        assert_eq!(describe_trap(&Trap::new(TrapKind::IntegerOverflow)), "error: wasm trap: integer overflow\n");
    }

    #[test]
    fn deep_backtraces_are_compressed() {
        let frame = |func_index| WasmFrame { module: None, func_index, func_name: None, offset: 7, source: None };
        // Plain recursion: 1000 identical frames under one caller.
        let mut backtrace = vec![frame(1); 1000];
        backtrace.push(frame(2));
        let text = describe_trap(&Trap { kind: TrapKind::CallStackExhausted, backtrace });
        assert_eq!(
            text,
            "error: wasm trap: call stack exhausted\nwasm backtrace:\n    0: <unknown> (func 1) at offset 0x7\n       \
             ... the frame above repeated 999 more times\n  1000: <unknown> (func 2) at offset 0x7\n"
        );
        // Mutual recursion: alternating frames keep 20 + 5 lines.
        let backtrace: Vec<WasmFrame> = (0..1000).map(|i| frame(i % 2)).collect();
        let text = describe_trap(&Trap { kind: TrapKind::CallStackExhausted, backtrace });
        assert_eq!(text.lines().count(), 2 + 20 + 1 + 5);
        assert!(text.contains("       ... 975 frames omitted\n  995: "), "{text}");
    }

    #[test]
    fn error_chains_fit_on_one_line() {
        let e = anyhow!("no such file").context("--dir x: cannot open `x`");
        assert_eq!(one_line(&e), "--dir x: cannot open `x`: no such file");
    }

    #[test]
    fn a_subcommand_and_a_program_named_on_the_command_line_are_told_apart() {
        let cli = Cli::try_parse_from(["vmrun", "wast", "a.wast"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Wast { .. })));
        let cli = Cli::try_parse_from(["vmrun", "--invoke", "f", "p.wat", "-1", "--dir"]).unwrap();
        assert_eq!(
            (cli.file.as_deref(), cli.args.as_slice()),
            (Some(Path::new("p.wat")), &["-1".to_string(), "--dir".into()][..])
        );
        assert!(Cli::try_parse_from(["vmrun"]).is_err());
    }
}
