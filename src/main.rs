//! `vmrun`: run a WebAssembly program (`.wat` or `.wasm`), call one of its exports, or run a spec
//! script.
//!
//! Exit codes: 0 success; 1 load, validation, link or usage error; 134 trap (like wasmtime);
//! `N` when the program calls WASI `proc_exit(N)`; 101 an internal error (a bug in vmrun).

mod wast;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vm::{Extern, Func, Linker, Ref, Source, Store, Trap, TrapKind, Val, ValType};

#[derive(Parser, Debug)]
#[command(name = "vmrun", version, about = "A WebAssembly VM whose heap is built to be seen")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Call this export with ARGS (parsed by parameter type) and print its results.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,

    /// Pre-open a host directory for WASI: `HOST` or `HOST::GUEST`.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,

    /// Set a WASI environment variable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    envs: Vec<String>,

    /// Link another module under an import name before running: `NAME=FILE`.
    #[arg(long = "preload", value_name = "NAME=FILE")]
    preloads: Vec<String>,

    /// The program: WebAssembly text or binary (told apart by content).
    #[arg(required = true)]
    file: Option<PathBuf>,

    /// Arguments: for `--invoke`, the function's parameters; otherwise WASI program arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run WebAssembly spec scripts (`.wast`) and print `N passed, N failed`.
    Wast {
        /// Script files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// How a run ended, mapped to an exit code by `main`.
enum Outcome {
    Ok,
    Exit(i32),
}

fn main() -> ExitCode {
    // A panic is a bug in vmrun, never a user error: say so in one line, no Rust backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error: {msg}{at}");
    }));
    let cli = Cli::parse();
    // The interpreter never recurses on the host stack for guest calls, but give the VM thread
    // a generous stack anyway (deeply nested modules are translated recursively by parsers).
    let worker = std::thread::Builder::new().stack_size(64 << 20).spawn(move || run(cli));
    let result = match worker {
        Ok(handle) => handle.join().unwrap_or_else(|_| Err(Failure::Internal)),
        Err(e) => Err(Failure::Error(anyhow!("cannot start the VM thread: {e}"))),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Exit(code)) => ExitCode::from(code as u8),
        Err(Failure::Error(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
        Err(Failure::Trap(t)) => {
            print_trap(&t);
            ExitCode::from(134)
        }
        Err(Failure::Internal) => ExitCode::from(101),
    }
}

enum Failure {
    Error(anyhow::Error),
    Trap(Trap),
    Internal,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").to_string()
}

fn print_trap(t: &Trap) {
    eprintln!("error: wasm trap: {}", t.kind);
    if t.backtrace.is_empty() {
        return;
    }
    eprintln!("wasm backtrace:");
    for (i, f) in t.backtrace.iter().enumerate() {
        let name = match &f.func_name {
            Some(n) => format!("${n}"),
            None => format!("<func {}>", f.func_index),
        };
        let module = f.module.as_deref().map(|m| format!("{m}!")).unwrap_or_default();
        match &f.source {
            Some(loc) => eprintln!("  {i:>3}: {module}{name} at {loc}"),
            None => eprintln!("  {i:>3}: {module}{name} at offset {:#x}", f.offset),
        }
    }
}

fn run(cli: Cli) -> Result<Outcome, Failure> {
    if let Some(Command::Wast { files }) = &cli.command {
        return run_wast(files);
    }
    let file = cli.file.as_deref().ok_or_else(|| anyhow!("no program given (see --help)"))?;
    let mut store = Store::new(vm::Config::default());
    let mut linker = Linker::new();
    let wasi_args: Vec<String> =
        std::iter::once(file.display().to_string()).chain(cli.args.iter().cloned()).collect();
    let mut ctx = vm::wasi::WasiCtx::new(wasi_args);
    for e in &cli.envs {
        let (k, v) = e.split_once('=').ok_or_else(|| anyhow!("--env expects NAME=VALUE, got `{e}`"))?;
        ctx.env.push((k.to_string(), v.to_string()));
    }
    for d in &cli.dirs {
        let (host, guest) = match d.split_once("::") {
            Some((h, g)) => (h, g),
            None => (d.as_str(), d.as_str()),
        };
        ctx.preopen(Path::new(host), guest).with_context(|| format!("--dir {d}"))?;
    }
    vm::wasi::add_to_linker(&mut store, &mut linker, ctx);
    for p in &cli.preloads {
        let (name, path) = p.split_once('=').ok_or_else(|| anyhow!("--preload expects NAME=FILE, got `{p}`"))?;
        let inst = load_and_instantiate(&mut store, &linker, Path::new(path))?;
        linker.define_instance(&store, name, inst);
    }
    let inst = load_and_instantiate(&mut store, &linker, file)?;
    match &cli.invoke {
        Some(name) => {
            let func = match store.get_export(inst, name) {
                Some(Extern::Func(f)) => f,
                Some(_) => return Err(anyhow!("export `{name}` is not a function").into()),
                None => return Err(anyhow!("no export named `{name}`; {}", list_exports(&store, inst)).into()),
            };
            let args = parse_args(&store, func, name, &cli.args)?;
            let results = store.call(func, &args).map_err(trap_or_exit)?;
            for v in results {
                println!("{}", format_val(v));
            }
            Ok(Outcome::Ok)
        }
        None => {
            let Some(Extern::Func(start)) = store.get_export(inst, "_start") else {
                return Err(anyhow!("no `_start` export to run; use --invoke; {}", list_exports(&store, inst)).into());
            };
            match store.call(start, &[]) {
                Ok(_) => Ok(Outcome::Ok),
                Err(Trap { kind: TrapKind::Exit(code), .. }) => Ok(Outcome::Exit(code)),
                Err(t) => Err(Failure::Trap(t)),
            }
        }
    }
}

fn trap_or_exit(t: Trap) -> Failure {
    Failure::Trap(t)
}

fn load_and_instantiate(store: &mut Store, linker: &Linker, path: &Path) -> Result<vm::InstanceId, Failure> {
    let source = Source::from_file(path).map_err(anyhow::Error::from)?;
    let module = store.load_module(source).map_err(anyhow::Error::from)?;
    match store.instantiate(module, linker) {
        Ok(i) => Ok(i),
        Err(vm::Error::Trap(t)) => Err(Failure::Trap(t)),
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

fn list_exports(store: &Store, inst: vm::InstanceId) -> String {
    let funcs: Vec<String> = store
        .exports(inst)
        .into_iter()
        .filter(|(_, e)| matches!(e, Extern::Func(_)))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if funcs.is_empty() { "the module exports no functions".into() } else { format!("exported functions: {}", funcs.join(", ")) }
}

fn signature(store: &Store, func: Func) -> String {
    let ty = store.func_type(func);
    let list = |ts: &[ValType]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ");
    format!("(param {}) (result {})", list(&ty.params), list(&ty.results))
}

fn parse_args(store: &Store, func: Func, name: &str, args: &[String]) -> Result<Vec<Val>> {
    let ty = store.func_type(func);
    if args.len() != ty.params.len() {
        bail!(
            "`{name}` takes {} argument(s), {} given; its type is {}",
            ty.params.len(),
            args.len(),
            signature(store, func)
        );
    }
    ty.params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(i, (t, a))| {
            parse_val(*t, a).ok_or_else(|| {
                anyhow!("argument {} of `{name}`: `{a}` is not a valid {t}; its type is {}", i + 1, signature(store, func))
            })
        })
        .collect()
}

fn parse_int(s: &str) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits = digits.replace('_', "");
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<i128>().ok()?,
    };
    Some(if neg { -v } else { v })
}

fn parse_val(t: ValType, s: &str) -> Option<Val> {
    match t {
        // Accept the signed and the unsigned range, like wasmtime.
        ValType::I32 => {
            let v = parse_int(s)?;
            (i32::MIN as i128..=u32::MAX as i128).contains(&v).then_some(Val::I32(v as i64 as i32))
        }
        ValType::I64 => {
            let v = parse_int(s)?;
            (i64::MIN as i128..=u64::MAX as i128).contains(&v).then_some(Val::I64(v as i64))
        }
        ValType::F32 => s.parse::<f32>().ok().map(|f| Val::F32(f.to_bits())),
        ValType::F64 => s.parse::<f64>().ok().map(|f| Val::F64(f.to_bits())),
        ValType::Ref(r) => (s == "null" && r.is_nullable()).then_some(Val::Ref(Ref::Null)),
        ValType::V128 => None,
    }
}

fn format_val(v: Val) -> String {
    match v {
        Val::I32(x) => x.to_string(),
        Val::I64(x) => x.to_string(),
        Val::F32(b) => format_float(f32::from_bits(b) as f64, f32::from_bits(b).to_string()),
        Val::F64(b) => format_float(f64::from_bits(b), f64::from_bits(b).to_string()),
        Val::Ref(r) => match r {
            Ref::Null => "null".into(),
            Ref::Func(_) => "ref.func".into(),
            Ref::Host(n) => format!("ref.extern {n}"),
            Ref::I31(n) => format!("ref.i31 {n}"),
            Ref::Struct(_) => "ref.struct".into(),
            Ref::Array(_) => "ref.array".into(),
        },
    }
}

/// Rust's `Display` for floats is the shortest string that round-trips; spell NaN and the
/// infinities as wasm text does.
fn format_float(v: f64, shortest: String) -> String {
    if v.is_nan() {
        if v.is_sign_negative() { "-nan".into() } else { "nan".into() }
    } else if v.is_infinite() {
        if v < 0.0 { "-inf".into() } else { "inf".into() }
    } else {
        shortest
    }
}

fn run_wast(files: &[PathBuf]) -> Result<Outcome, Failure> {
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let report = wast::run_file(f)?;
        for failure in &report.failures {
            eprintln!("{failure}");
        }
        passed += report.passed;
        failed += report.failures.len();
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Exit(1) })
}
