//! The spec-script runner behind `vmrun wast FILE`.
//!
//! One [`Store`] per script, so `register`ed modules link and types canonicalize across modules
//! exactly as the spec's script semantics require. Each directive is checked on its own; a
//! failure is reported as `file:line:col: <directive>: <why>` and the script goes on. Trap
//! messages match when ours contains the expected text or the expected text starts with ours
//! (scripts sometimes append detail, e.g. "uninitialized element 2"); `assert_invalid` and
//! `assert_malformed` pass on any error (wording differs between validators).

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use vm::{Extern, FuncType, InstanceId, Linker, ModuleId, Ref, Source, Store, Val};
use wast::core::{NanPattern, WastArgCore, WastRetCore};
use wast::{QuoteWat, WastArg, WastDirective, WastExecute, WastRet, Wat};

/// The outcome of one script.
#[derive(Debug, Default)]
pub struct WastReport {
    pub passed: usize,
    /// One line per failed directive.
    pub failures: Vec<String>,
}

struct Script {
    store: Store,
    linker: Linker,
    current: Option<InstanceId>,
    instances: HashMap<String, InstanceId>,
    definitions: HashMap<String, ModuleId>,
}

/// Run every directive of a `.wast` file.
pub fn run_file(path: &Path) -> Result<WastReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let name = path.display().to_string();
    let buf = wast::parser::ParseBuffer::new(&text).map_err(|e| located(&name, &text, e))?;
    let script: wast::Wast = wast::parser::parse(&buf).map_err(|e| located(&name, &text, e))?;
    let mut s = Script::new();
    let mut report = WastReport::default();
    for directive in script.directives {
        let (line, col) = directive.span().linecol_in(&text);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run(directive)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|m| m.to_string()))
                    .unwrap_or_default();
                Err(format!("panicked: {msg}"))
            });
        match outcome {
            Ok(()) => report.passed += 1,
            Err(why) => report.failures.push(format!("{name}:{}:{}: {why}", line + 1, col + 1)),
        }
    }
    Ok(report)
}

fn located(name: &str, text: &str, mut e: wast::Error) -> anyhow::Error {
    e.set_text(text);
    let (line, col) = e.span().linecol_in(text);
    anyhow::anyhow!("{name}:{}:{}: {}", line + 1, col + 1, e.message())
}

impl Script {
    fn new() -> Script {
        let mut store = Store::new(vm::Config::default());
        let mut linker = Linker::new();
        define_spectest(&mut store, &mut linker);
        Script { store, linker, current: None, instances: HashMap::new(), definitions: HashMap::new() }
    }

    fn instance(&self, id: Option<wast::token::Id<'_>>) -> Result<InstanceId, String> {
        match id {
            Some(id) => self.instances.get(id.name()).copied().ok_or_else(|| format!("no instance ${}", id.name())),
            None => self.current.ok_or_else(|| "no module instantiated yet".to_string()),
        }
    }

    fn load(&mut self, wasm: Vec<u8>) -> Result<ModuleId, String> {
        self.store.load_module(Source::from_binary("module", wasm)).map_err(|e| e.to_string())
    }

    fn instantiate(&mut self, module: ModuleId) -> Result<InstanceId, String> {
        self.store.instantiate(module, &self.linker).map_err(|e| match e {
            vm::Error::Trap(t) => format!("trap: {}", t.kind),
            e => e.to_string(),
        })
    }

    fn module(&mut self, mut m: QuoteWat<'_>) -> Result<(), String> {
        let name = module_name(&m);
        let wasm = m.encode().map_err(|e| e.to_string())?;
        let module = self.load(wasm)?;
        let inst = self.instantiate(module)?;
        self.current = Some(inst);
        if let Some(n) = name {
            self.instances.insert(n, inst);
        }
        Ok(())
    }

    fn execute(&mut self, exec: WastExecute<'_>) -> Result<Vec<Val>, String> {
        match exec {
            WastExecute::Invoke(call) => {
                let inst = self.instance(call.module)?;
                let Some(Extern::Func(f)) = self.store.get_export(inst, call.name) else {
                    return Err(format!("no exported function `{}`", call.name));
                };
                let args = call.args.iter().map(arg).collect::<Result<Vec<_>, _>>()?;
                self.store.call(f, &args).map_err(|t| format!("trap: {}", t.kind))
            }
            WastExecute::Get { module, global, .. } => {
                let inst = self.instance(module)?;
                let Some(Extern::Global(g)) = self.store.get_export(inst, global) else {
                    return Err(format!("no exported global `{global}`"));
                };
                Ok(vec![self.store.global_get(g)])
            }
            WastExecute::Wat(mut w) => {
                let wasm = w.encode().map_err(|e| e.to_string())?;
                let module = self.load(wasm)?;
                self.instantiate(module).map(|_| Vec::new())
            }
        }
    }

    fn run(&mut self, d: WastDirective<'_>) -> Result<(), String> {
        match d {
            WastDirective::Module(m) => self.module(m),
            WastDirective::ModuleDefinition(mut m) => {
                let name = module_name(&m);
                let wasm = m.encode().map_err(|e| e.to_string())?;
                let module = self.load(wasm)?;
                if let Some(n) = name {
                    self.definitions.insert(n, module);
                }
                Ok(())
            }
            WastDirective::ModuleInstance { instance, module, .. } => {
                let def = module.ok_or("module instance without a definition")?;
                let m = *self.definitions.get(def.name()).ok_or_else(|| format!("no definition ${}", def.name()))?;
                let inst = self.instantiate(m)?;
                self.current = Some(inst);
                if let Some(i) = instance {
                    self.instances.insert(i.name().to_string(), inst);
                }
                Ok(())
            }
            WastDirective::Register { name, module, .. } => {
                let inst = self.instance(module)?;
                self.linker.define_instance(&self.store, name, inst);
                Ok(())
            }
            WastDirective::Invoke(call) => self.execute(WastExecute::Invoke(call)).map(drop),
            WastDirective::AssertReturn { exec, results, .. } => {
                let got = self.execute(exec)?;
                let ok = got.len() == results.len() && got.iter().zip(&results).all(|(v, r)| matches(v, r));
                if ok { Ok(()) } else { Err(format!("assert_return: got {got:?}, expected {results:?}")) }
            }
            WastDirective::AssertTrap { exec, message, .. } => match self.execute(exec) {
                Ok(v) => Err(format!("assert_trap: returned {v:?}, expected trap `{message}`")),
                Err(e) => match e.strip_prefix("trap: ") {
                    Some(got) if got.contains(message) || message.starts_with(got) => Ok(()),
                    _ => Err(format!("assert_trap: `{e}`, expected trap `{message}`")),
                },
            },
            WastDirective::AssertExhaustion { call, message, .. } => match self.execute(WastExecute::Invoke(call)) {
                Err(e) if e.contains("call stack exhausted") => Ok(()),
                other => Err(format!("assert_exhaustion: {other:?}, expected `{message}`")),
            },
            WastDirective::AssertInvalid { mut module, message, .. }
            | WastDirective::AssertMalformed { mut module, message, .. } => {
                let Ok(wasm) = module.encode() else { return Ok(()) };
                match self.load(wasm) {
                    Err(_) => Ok(()),
                    Ok(_) => Err(format!("module accepted, expected rejection `{message}`")),
                }
            }
            WastDirective::AssertUnlinkable { mut module, message, .. } => {
                let wasm = module.encode().map_err(|e| e.to_string())?;
                let m = self.load(wasm)?;
                match self.instantiate(m) {
                    Err(_) => Ok(()),
                    Ok(_) => Err(format!("module linked, expected `{message}`")),
                }
            }
            other => Err(format!("unsupported directive {:?}", directive_kind(&other))),
        }
    }
}

fn directive_kind(d: &WastDirective<'_>) -> String {
    let s = format!("{d:?}");
    s.split([' ', '{', '(']).next().unwrap_or("?").to_string()
}

fn module_name(m: &QuoteWat<'_>) -> Option<String> {
    match m {
        QuoteWat::Wat(Wat::Module(m)) => m.id.map(|i| i.name().to_string()),
        QuoteWat::QuoteModule(..) | QuoteWat::QuoteComponent(..) | QuoteWat::Wat(Wat::Component(_)) => None,
    }
}

fn arg(a: &WastArg<'_>) -> Result<Val, String> {
    let WastArg::Core(c) = a else { return Err("component arguments are not supported".into()) };
    Ok(match c {
        WastArgCore::I32(x) => Val::I32(*x),
        WastArgCore::I64(x) => Val::I64(*x),
        WastArgCore::F32(x) => Val::F32(x.bits),
        WastArgCore::F64(x) => Val::F64(x.bits),
        WastArgCore::RefNull(_) => Val::Ref(Ref::Null),
        WastArgCore::RefExtern(n) | WastArgCore::RefHost(n) => Val::Ref(Ref::Host(*n)),
        other => return Err(format!("unsupported argument {other:?}")),
    })
}

fn matches(v: &Val, r: &WastRet<'_>) -> bool {
    match r {
        WastRet::Core(r) => matches_core(v, r),
        _ => false,
    }
}

fn matches_core(v: &Val, r: &WastRetCore<'_>) -> bool {
    match (v, r) {
        (Val::I32(a), WastRetCore::I32(b)) => a == b,
        (Val::I64(a), WastRetCore::I64(b)) => a == b,
        (Val::F32(a), WastRetCore::F32(p)) => match p {
            NanPattern::CanonicalNan => a & 0x7fff_ffff == 0x7fc0_0000,
            NanPattern::ArithmeticNan => a & 0x7fc0_0000 == 0x7fc0_0000,
            NanPattern::Value(x) => *a == x.bits,
        },
        (Val::F64(a), WastRetCore::F64(p)) => match p {
            NanPattern::CanonicalNan => a & 0x7fff_ffff_ffff_ffff == 0x7ff8_0000_0000_0000,
            NanPattern::ArithmeticNan => a & 0x7ff8_0000_0000_0000 == 0x7ff8_0000_0000_0000,
            NanPattern::Value(x) => *a == x.bits,
        },
        (Val::Ref(r), WastRetCore::RefNull(_)) => *r == Ref::Null,
        (Val::Ref(Ref::Host(a)), WastRetCore::RefExtern(Some(b)) | WastRetCore::RefHost(b)) => a == b,
        (Val::Ref(r), WastRetCore::RefExtern(None)) => *r != Ref::Null,
        (Val::Ref(Ref::Func(_)), WastRetCore::RefFunc(_)) => true,
        (Val::Ref(r), WastRetCore::RefAny) => *r != Ref::Null,
        (Val::Ref(Ref::I31(_) | Ref::Struct(_) | Ref::Array(_)), WastRetCore::RefEq) => true,
        (Val::Ref(Ref::I31(_)), WastRetCore::RefI31) => true,
        (Val::Ref(Ref::Struct(_)), WastRetCore::RefStruct) => true,
        (Val::Ref(Ref::Array(_)), WastRetCore::RefArray) => true,
        (v, WastRetCore::Either(alternatives)) => alternatives.iter().any(|a| matches_core(v, a)),
        _ => false,
    }
}

/// The `spectest` module every script may import from.
fn define_spectest(store: &mut Store, linker: &mut Linker) {
    use vm::wasmparser::{GlobalType, MemoryType, RefType, TableType, ValType};
    let prints: [(&str, Vec<ValType>); 7] = [
        ("print", vec![]),
        ("print_i32", vec![ValType::I32]),
        ("print_i64", vec![ValType::I64]),
        ("print_f32", vec![ValType::F32]),
        ("print_f64", vec![ValType::F64]),
        ("print_i32_f32", vec![ValType::I32, ValType::F32]),
        ("print_f64_f64", vec![ValType::F64, ValType::F64]),
    ];
    for (name, params) in prints {
        let f = store.new_host_func(FuncType { params, results: vec![] }, Box::new(|_, _, _| Ok(())));
        linker.define("spectest", name, Extern::Func(f));
    }
    let globals = [
        ("global_i32", ValType::I32, Val::I32(666)),
        ("global_i64", ValType::I64, Val::I64(666)),
        ("global_f32", ValType::F32, Val::F32(666.6f32.to_bits())),
        ("global_f64", ValType::F64, Val::F64(666.6f64.to_bits())),
    ];
    for (name, ty, value) in globals {
        let g = store.new_global(GlobalType { content_type: ty, mutable: false, shared: false }, value);
        linker.define("spectest", name, Extern::Global(g));
    }
    let table = TableType { element_type: RefType::FUNCREF, table64: false, initial: 10, maximum: Some(20), shared: false };
    let t = store.new_table(table);
    linker.define("spectest", "table", Extern::Table(t));
    let memory = MemoryType { memory64: false, shared: false, initial: 1, maximum: Some(2), page_size_log2: None };
    let m = store.new_memory(memory);
    linker.define("spectest", "memory", Extern::Memory(m));
}
