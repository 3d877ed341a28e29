//! `vmrun-fuzz crash`: malformed inputs into vmrun's readers, which must answer with an error value.
//!
//! Targets:
//! - `loader`: random bytes (half of them behind a valid `\0asm` header) and mutated wasm-smith modules
//!   (all proposals wasm-smith knows, GC and exceptions included) into `vm::Source::from_bytes` and
//!   `Store::load_module` (decode, validate, translate), in the interpreter and with eager compilation.
//! - `wat`: wasm-smith modules printed as text (`wasmprinter`) and a few hand-written seeds, mutated at
//!   the text level (spans deleted, duplicated or swapped, tokens inserted, truncation), into
//!   `Source::from_text` and `Store::load_module`.
//! - `trace`: a real allocation trace (a GC program run with the tracer, small generations) truncated,
//!   bit-flipped and overwritten, plus random bytes behind a valid header, into `vmtrace::Trace::parse`,
//!   then every event of every generation is decoded, every generation replayed, and `vmtrace::dump_to`
//!   renders the file.
//! - `invoke`: random words for `vmrun --invoke` against random signatures, into the CLI's parser and,
//!   every 16th input, the real binary (`invoke_args.rs` says what must hold).
//!
//! A panic (caught with `catch_unwind`) is a failure: the input is written to
//! `<out-dir>/crash-<target>-<seed>-<iter>.bin`. A hang is the watchdog's (`main.rs`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use arbitrary::Unstructured;

use crate::invoke_args;
use crate::rng::SplitMix64;
use crate::{Watchdog, panic_message};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Target {
    Loader,
    Wat,
    Trace,
    Invoke,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failures: u64,
}

/// A valid module to mutate: half the time with the differential oracle's features, half the time with
/// whatever features the drawn configuration enables (GC, exceptions, SIMD: all fair game for a reader
/// that must accept or reject, never crash).
fn any_module(rng: &mut SplitMix64) -> Option<Vec<u8>> {
    let len = 256 + rng.below(4096) as usize;
    let data = rng.bytes(len);
    let mut u = Unstructured::new(&data);
    let cfg = if rng.chance(2) {
        crate::generate::config(&mut u).ok()?
    } else {
        let mut cfg: wasm_smith::Config = u.arbitrary().ok()?;
        cfg.max_funcs = cfg.max_funcs.min(20);
        cfg.max_instructions = cfg.max_instructions.min(300);
        cfg
    };
    Some(wasm_smith::Module::new(cfg, &mut u).ok()?.to_bytes())
}

/// Byte-level mutations: a few edits of one kind or another.
fn mutate_bytes(rng: &mut SplitMix64, mut b: Vec<u8>) -> Vec<u8> {
    let edits = if rng.chance(2) { 1 } else { 1 + rng.below(4) };
    for _ in 0..edits {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(b.len() as u64) as usize;
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next_u64() as u8,
            2 => b.insert(at, rng.next_u64() as u8),
            3 => {
                let end = (at + 1 + rng.below(16) as usize).min(b.len());
                b.drain(at..end);
            }
            4 => b.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(32) as usize).min(b.len());
                let span: Vec<u8> = b[at..end].to_vec();
                let to = rng.below(b.len() as u64) as usize;
                b.splice(to..to, span);
            }
            // LEB128 edges: lengths and counts that claim far more than the input has.
            _ => {
                let edge: &[u8] = [&[0xff, 0xff, 0xff, 0xff, 0x0f][..], &[0x80, 0x80, 0x80, 0x80, 0x80], &[0x00]]
                    [rng.below(3) as usize];
                b.splice(at..at, edge.iter().copied());
            }
        }
    }
    b
}

fn loader_input(rng: &mut SplitMix64) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let mut b = if rng.chance(2) { b"\0asm\x01\0\0\0".to_vec() } else { Vec::new() };
            let n = rng.below(256) as usize;
            b.extend(rng.bytes(n));
            b
        }
        _ => {
            let m = any_module(rng).unwrap_or_else(|| b"\0asm\x01\0\0\0".to_vec());
            mutate_bytes(rng, m)
        }
    }
}

/// Loads `bytes` in both tiers; true if the module was accepted.
fn load_binary(bytes: &[u8], tiers: &[vm::Config]) -> bool {
    let mut accepted = false;
    for config in tiers {
        let mut store = vm::Store::new(config.clone());
        let ok = vm::Source::from_bytes("fuzz.wasm", bytes.to_vec()).and_then(|src| store.load_module(src)).is_ok();
        accepted |= ok;
    }
    accepted
}

const WAT_SEEDS: &[&str] = &[
    "(module (func $f (export \"f\") (param i32) (result i32) local.get 0 i32.const 1 i32.add))",
    "(module (memory 1 2) (data (i32.const 8) \"a\\00\\ff\\u{1F600}\") (func (result f64) f64.const nan:0x1 f64.const -0x1.fp+3 f64.add))",
    "(module (type $s (struct (field (mut i32)) (field (ref null $s)))) (func (result anyref) (struct.new $s (i32.const 1) (ref.null $s))))",
    "(module (table 2 funcref) (elem (i32.const 0) func $a $a) (func $a (block $b (br_table $b $b (i32.const 0)))))",
    "(module (tag $e (param i32)) (func (try_table (catch $e 0) (throw $e (i32.const 1))) drop))",
];

const WAT_TOKENS: &[&str] = &[
    "(",
    ")",
    "(module",
    "(func",
    "$x",
    "i32.const",
    "0x",
    "-0",
    "nan:0x7fffff",
    "inf",
    "1_000",
    "\"\\u{}\"",
    "\"",
    ";;",
    "(;",
    ";)",
    "i64.const 18446744073709551616",
    "offset=4294967296",
    "align=3",
    "local.get 4294967295",
    "(param",
    "(result",
    "(ref null",
    "br 99",
    "@custom",
    "(@name",
    "end",
    "block",
    "unreachable",
];

fn wat_input(rng: &mut SplitMix64) -> String {
    let mut text = match rng.below(3) {
        0 => WAT_SEEDS[rng.below(WAT_SEEDS.len() as u64) as usize].to_string(),
        _ => any_module(rng).and_then(|m| wasmprinter::print_bytes(m).ok()).unwrap_or_default(),
    };
    for _ in 0..1 + rng.below(2) {
        let mut at = rng.below(text.len() as u64 + 1) as usize;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + rng.below(40) as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        match rng.below(5) {
            0 => text.replace_range(at..end, ""),
            1 => {
                let span = text[at..end].to_string();
                text.insert_str(at, &span);
            }
            2 => text.truncate(at),
            _ => text.insert_str(at, &format!(" {} ", WAT_TOKENS[rng.below(WAT_TOKENS.len() as u64) as usize])),
        }
    }
    text
}

fn load_text(text: &str) -> bool {
    let mut store = vm::Store::new(vm::Config::default());
    vm::Source::from_text("fuzz.wat", text).and_then(|src| store.load_module(src)).is_ok()
}

/// A real trace to mutate: a program that builds lists on the GC heap, traced with small generations.
fn seed_trace(dir: &Path) -> anyhow::Result<Vec<u8>> {
    const PROGRAM: &str = r#"(module
      (type $node (struct (field i32) (field (ref null $node))))
      (type $bytes (array (mut i8)))
      (func (export "build") (param $n i32) (result i32) (local $l (ref null $node)) (local $i i32)
        (loop $top
          (local.set $l (struct.new $node (local.get $i) (local.get $l)))
          (drop (array.new_default $bytes (i32.and (local.get $i) (i32.const 63))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $top (i32.lt_u (local.get $i) (local.get $n))))
        (local.get $i)))"#;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("seed-{}.vmtrace", std::process::id()));
    let mut store = vm::Store::new(vm::Config::default());
    let config = vmtrace::TraceConfig { generation_bytes: 2048, ..vmtrace::TraceConfig::default() };
    store.trace_allocations(vmtrace::Tracer::create(&path, config)?);
    let module = store.load_module(vm::Source::from_text("trace-seed.wat", PROGRAM)?)?;
    let inst = store.instantiate(module, &vm::Linker::new())?;
    let Some(vm::Extern::Func(build)) = store.get_export(inst, "build") else { anyhow::bail!("no export") };
    for n in [300, 2000, 50] {
        store.call(build, &[vm::Val::I32(n)]).map_err(|t| anyhow::anyhow!("{t}"))?;
        store.collect_garbage();
    }
    store.finish_trace().transpose()?;
    let bytes = std::fs::read(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(bytes)
}

fn trace_input(rng: &mut SplitMix64, seed: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => seed[..rng.below(seed.len() as u64 + 1) as usize].to_vec(),
        1 => {
            let mut b = seed[..16.min(seed.len())].to_vec();
            let n = rng.below(512) as usize;
            b.extend(rng.bytes(n));
            b
        }
        _ => mutate_bytes(rng, seed.to_vec()),
    }
}

/// Reads a trace every way the reader offers; true if it parsed without a format error.
fn read_trace(bytes: &[u8], scratch: &Path) -> bool {
    let Ok(trace) = vmtrace::Trace::parse(bytes.to_vec()) else { return false };
    for g in &trace.generations {
        let _ = g.events().count();
        let _ = vmtrace::replay_generation(g);
    }
    if std::fs::write(scratch, bytes).is_ok() {
        let _ = vmtrace::dump_to(scratch, &mut std::io::sink());
        let _ = vmtrace::summary(scratch);
    }
    trace.error.is_none()
}

/// Test hook for the negative control: `VMRUN_FUZZ_PANIC=1` panics inside the guarded reader call of the
/// first iteration, as a reader bug would. The run must report it and exit with code 1.
fn planted_panic(first: bool) {
    if first && std::env::var("VMRUN_FUZZ_PANIC").as_deref() == Ok("1") {
        panic!("planted panic (VMRUN_FUZZ_PANIC=1)");
    }
}

pub fn run(
    target: Target,
    seed: u64,
    skip: u64,
    iterations: u64,
    out_dir: &Path,
    wd: &Arc<Watchdog>,
) -> anyhow::Result<Stats> {
    let tiers = [
        vm::Config { memory_reservation_bytes: 64 << 20, ..vm::Config::default() },
        vm::Config {
            jit: vm::JitConfig {
                mode: vm::tier::JitMode::Eager,
                threshold: 1,
                compiler: Some(Arc::new(jit::CraneliftCompiler::new().map_err(|e| anyhow::anyhow!(e))?)),
                ..vm::JitConfig::default()
            },
            memory_reservation_bytes: 64 << 20,
            ..vm::Config::default()
        },
    ];
    let trace_seed = if matches!(target, Target::Trace) { seed_trace(&std::env::temp_dir())? } else { Vec::new() };
    let scratch = std::env::temp_dir().join(format!("vmrun-fuzz-{}.vmtrace", std::process::id()));
    let scratch_wat = std::env::temp_dir().join(format!("vmrun-fuzz-{}.wat", std::process::id()));
    let vmrun = if matches!(target, Target::Invoke) { invoke_args::find_vmrun() } else { None };
    if matches!(target, Target::Invoke) && vmrun.is_none() {
        println!("crash --target invoke: no vmrun binary next to vmrun-fuzz; the parser is checked in-process only");
    }
    let mut stats = Stats::default();
    for i in skip..skip + iterations {
        let mut rng = SplitMix64::for_iteration(seed, i);
        let mut case = None;
        let input: Vec<u8> = match target {
            Target::Loader => loader_input(&mut rng),
            Target::Wat => wat_input(&mut rng).into_bytes(),
            Target::Trace => trace_input(&mut rng, &trace_seed),
            Target::Invoke => case.insert(invoke_args::case(&mut rng)).describe(),
        };
        wd.arm(seed, i, &input);
        let result = catch_unwind(AssertUnwindSafe(|| {
            planted_panic(i == skip);
            match (target, &case) {
                (Target::Loader, _) => load_binary(&input, &tiers),
                (Target::Wat, _) => load_text(std::str::from_utf8(&input).unwrap_or_default()),
                (Target::Trace, _) => read_trace(&input, &scratch),
                (Target::Invoke, Some(case)) => {
                    let accepted = invoke_args::check_parser(case);
                    if let Some(vmrun) = vmrun.as_deref().filter(|_| i % 16 == 0) {
                        invoke_args::check_binary(vmrun, &scratch_wat, case, accepted);
                    }
                    accepted
                }
                (Target::Invoke, None) => unreachable!("an invoke input is a case"),
            }
        }));
        wd.disarm();
        stats.inputs += 1;
        match result {
            Ok(true) => stats.accepted += 1,
            Ok(false) => stats.rejected += 1,
            Err(p) => {
                stats.failures += 1;
                let label = format!("{target:?}").to_lowercase();
                let file = out_dir.join(format!("crash-{label}-{seed}-{i}.bin"));
                std::fs::create_dir_all(out_dir)?;
                std::fs::write(&file, &input)?;
                println!(
                    "PANIC seed {seed} iteration {i}: {}\n  input written to {}",
                    panic_message(&*p),
                    file.display()
                );
            }
        }
    }
    let _ = std::fs::remove_file(&scratch);
    let _ = std::fs::remove_file(&scratch_wat);
    Ok(stats)
}
