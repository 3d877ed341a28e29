//! Running one generated module in one engine and recording what an observer can see.
//!
//! An [`Outcome`] is engine-neutral: the instantiation result, then for each exported function (in export
//! order, each called once with the same arguments in every engine) its results or its trap, then the final
//! bytes of every exported memory and the value of every exported global. Values are kept as bits; the
//! comparison (`diff.rs`) decides what counts as equal. Traps are reduced to a [`TrapClass`], the kinds both
//! engines name, with the spec's freedom folded in (an out-of-range `call_indirect` index is "undefined
//! element" in vmrun and "table out of bounds" in wasmi; both are the spec's one trap).

use std::sync::Arc;

use crate::generate;
use crate::rng::SplitMix64;

/// A value as both engines can report it. References compare only as null or not (function identities
/// are engine-private indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    Null,
    NonNull,
}

/// The trap kinds the oracle compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapClass {
    Unreachable,
    MemoryOutOfBounds,
    /// A table access out of range, or `call_indirect` past the table's end.
    TableOutOfBounds,
    /// `call_indirect`/`call_ref` of a null entry.
    NullFunction,
    IndirectCallTypeMismatch,
    IntegerDivideByZero,
    IntegerOverflow,
    InvalidConversionToInteger,
    /// Call depth or stack space ran out: engine limits differ, so the rest of the module is not compared.
    Exhausted,
    /// Anything else, with the engine's message (always a divergence: generated modules cannot cause it).
    Other(String),
}

/// What happened to one call.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    Returned(Vec<Value>),
    Trapped(TrapClass),
}

/// Everything observable of one module run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `Err` if loading or instantiation failed (the message; a trap in the start function or a segment).
    pub instantiated: Option<Result<(), TrapClass>>,
    pub calls: Vec<(String, Vec<Value>, CallOutcome)>,
    pub memories: Vec<(String, Vec<u8>)>,
    pub globals: Vec<(String, Value)>,
}

/// The arguments of one module's calls, drawn once per module so every engine gets the same ones.
pub struct Plan {
    pub args: Vec<(String, Vec<vm::Val>)>,
}

/// vmrun's tiers: the interpreter alone, or every function compiled before it runs.
#[derive(Clone)]
pub enum Tier {
    Interpreter,
    Eager(Arc<jit::CraneliftCompiler>),
}

impl Tier {
    fn config(&self) -> vm::Config {
        use vm::tier::JitMode;
        let jit = match self {
            Tier::Interpreter => vm::JitConfig { mode: JitMode::Off, threshold: 1, ..vm::JitConfig::default() },
            Tier::Eager(c) => vm::JitConfig {
                mode: JitMode::Eager,
                threshold: 1,
                compiler: Some(c.clone() as Arc<dyn vm::tier::Compiler>),
                ..vm::JitConfig::default()
            },
        };
        // The default 4 GiB reservation per memory is needless here: generated memories are small.
        vm::Config { jit, memory_reservation_bytes: 64 << 20, ..vm::Config::default() }
    }
}

fn vm_trap_class(kind: &vm::TrapKind) -> TrapClass {
    use vm::TrapKind as K;
    match kind {
        K::Unreachable => TrapClass::Unreachable,
        K::MemoryOutOfBounds => TrapClass::MemoryOutOfBounds,
        K::TableOutOfBounds | K::UndefinedElement => TrapClass::TableOutOfBounds,
        K::UninitializedElement | K::NullFunctionReference | K::NullReference => TrapClass::NullFunction,
        K::IndirectCallTypeMismatch => TrapClass::IndirectCallTypeMismatch,
        K::IntegerDivideByZero => TrapClass::IntegerDivideByZero,
        K::IntegerOverflow => TrapClass::IntegerOverflow,
        K::InvalidConversionToInteger => TrapClass::InvalidConversionToInteger,
        K::CallStackExhausted => TrapClass::Exhausted,
        other => TrapClass::Other(other.to_string()),
    }
}

fn vm_value(v: &vm::Val) -> Value {
    match *v {
        vm::Val::I32(x) => Value::I32(x),
        vm::Val::I64(x) => Value::I64(x),
        vm::Val::F32(x) => Value::F32(x),
        vm::Val::F64(x) => Value::F64(x),
        vm::Val::Ref(vm::Ref::Null) => Value::Null,
        vm::Val::Ref(_) => Value::NonNull,
    }
}

/// The plan for `wasm`: its exported functions (as vmrun's interpreter lists them) with drawn arguments.
/// `None` if vmrun cannot load the module (reported by the caller as a divergence: it is valid).
pub fn plan(wasm: &[u8], rng: &mut SplitMix64) -> Result<Plan, String> {
    let mut store = vm::Store::new(Tier::Interpreter.config());
    let src = vm::Source::from_binary("generated.wasm", wasm.to_vec());
    let module = store.load_module(src).map_err(|e| format!("vmrun rejects a valid module: {e}"))?;
    let linker = vm::Linker::new();
    let mut args = Vec::new();
    // Instantiation may trap (that is compared later); the export list needs an instance.
    let Ok(inst) = store.instantiate(module, &linker) else { return Ok(Plan { args }) };
    for (name, ext) in store.exports(inst) {
        if let vm::Extern::Func(f) = ext {
            let ty = store.func_type(f);
            args.push((name, ty.params.iter().map(|&t| generate::arg(rng, t)).collect()));
        }
    }
    Ok(Plan { args })
}

/// Test hook for the negative control: `VMRUN_FUZZ_PERTURB=i32` flips the low bit of every i32 result
/// the interpreter returns, as a miscompiled i32 operator would. The oracle must report it.
fn perturbed(mut vals: Vec<Value>, tier: &Tier) -> Vec<Value> {
    if matches!(tier, Tier::Interpreter) && std::env::var("VMRUN_FUZZ_PERTURB").as_deref() == Ok("i32") {
        for v in &mut vals {
            if let Value::I32(x) = v {
                *x ^= 1;
            }
        }
    }
    vals
}

/// Runs `wasm` in vmrun's `tier` following `plan`.
pub fn run_vmrun(wasm: &[u8], plan: &Plan, tier: &Tier) -> Outcome {
    let mut out = Outcome::default();
    let mut store = vm::Store::new(tier.config());
    let src = vm::Source::from_binary("generated.wasm", wasm.to_vec());
    let module = match store.load_module(src) {
        Ok(m) => m,
        Err(e) => {
            out.instantiated = Some(Err(TrapClass::Other(format!("load: {e}"))));
            return out;
        }
    };
    let inst = match store.instantiate(module, &vm::Linker::new()) {
        Ok(i) => i,
        Err(vm::Error::Trap(t)) => {
            out.instantiated = Some(Err(vm_trap_class(&t.kind)));
            return out;
        }
        Err(e) => {
            out.instantiated = Some(Err(TrapClass::Other(format!("instantiate: {e}"))));
            return out;
        }
    };
    out.instantiated = Some(Ok(()));
    for (name, args) in &plan.args {
        let Some(vm::Extern::Func(f)) = store.get_export(inst, name) else { continue };
        let call = match store.call(f, args) {
            Ok(vals) => CallOutcome::Returned(perturbed(vals.iter().map(vm_value).collect(), tier)),
            Err(t) => CallOutcome::Trapped(vm_trap_class(&t.kind)),
        };
        let exhausted = call == CallOutcome::Trapped(TrapClass::Exhausted);
        out.calls.push((name.clone(), args.iter().map(vm_value).collect(), call));
        if exhausted {
            return out;
        }
    }
    for (name, ext) in store.exports(inst) {
        match ext {
            vm::Extern::Memory(m) => out.memories.push((name, store.memory_bytes(m))),
            vm::Extern::Global(g) => {
                let v = vm_value(&store.global_get(g));
                out.globals.push((name, v));
            }
            _ => {}
        }
    }
    out
}

fn wasmi_trap_class(e: &wasmi::Error) -> TrapClass {
    use wasmi::TrapCode as C;
    match e.as_trap_code() {
        Some(C::UnreachableCodeReached) => TrapClass::Unreachable,
        Some(C::MemoryOutOfBounds) => TrapClass::MemoryOutOfBounds,
        Some(C::TableOutOfBounds) => TrapClass::TableOutOfBounds,
        Some(C::IndirectCallToNull) => TrapClass::NullFunction,
        Some(C::BadSignature) => TrapClass::IndirectCallTypeMismatch,
        Some(C::IntegerDivisionByZero) => TrapClass::IntegerDivideByZero,
        Some(C::IntegerOverflow) => TrapClass::IntegerOverflow,
        Some(C::BadConversionToInteger) => TrapClass::InvalidConversionToInteger,
        Some(C::StackOverflow) => TrapClass::Exhausted,
        // Active segments out of range at instantiation are table/memory errors in wasmi, not trap codes.
        _ => {
            let msg = e.to_string();
            if msg.starts_with("out of bounds table access") {
                TrapClass::TableOutOfBounds
            } else if msg.starts_with("out of bounds memory access") {
                TrapClass::MemoryOutOfBounds
            } else {
                TrapClass::Other(msg)
            }
        }
    }
}

fn wasmi_value(v: &wasmi::Val) -> Value {
    match v {
        wasmi::Val::I32(x) => Value::I32(*x),
        wasmi::Val::I64(x) => Value::I64(*x),
        wasmi::Val::F32(x) => Value::F32(x.to_bits()),
        wasmi::Val::F64(x) => Value::F64(x.to_bits()),
        wasmi::Val::FuncRef(r) if r.is_null() => Value::Null,
        wasmi::Val::ExternRef(r) if r.is_null() => Value::Null,
        _ => Value::NonNull,
    }
}

fn to_wasmi(v: &vm::Val, ty: &wasmi::ValType) -> wasmi::Val {
    match *v {
        vm::Val::I32(x) => wasmi::Val::I32(x),
        vm::Val::I64(x) => wasmi::Val::I64(x),
        vm::Val::F32(x) => wasmi::Val::F32(wasmi::F32::from_bits(x)),
        vm::Val::F64(x) => wasmi::Val::F64(wasmi::F64::from_bits(x)),
        vm::Val::Ref(_) => wasmi::Val::default_for_ty(*ty),
    }
}

/// The reference engine's configuration: the same features, and a call depth no fuel-bounded module
/// reaches (wasmi keeps its frames on the heap).
pub fn wasmi_engine() -> wasmi::Engine {
    let mut c = wasmi::Config::default();
    c.wasm_multi_memory(true).wasm_tail_call(true).wasm_extended_const(true).set_max_recursion_depth(100_000);
    wasmi::Engine::new(&c)
}

/// Runs `wasm` in wasmi following `plan`.
pub fn run_wasmi(engine: &wasmi::Engine, wasm: &[u8], plan: &Plan) -> Outcome {
    let mut out = Outcome::default();
    let mut store = wasmi::Store::new(engine, ());
    let module = match wasmi::Module::new(engine, wasm) {
        Ok(m) => m,
        Err(e) => {
            out.instantiated = Some(Err(TrapClass::Other(format!("wasmi load: {e}"))));
            return out;
        }
    };
    let linker = wasmi::Linker::<()>::new(engine);
    let inst = match linker.instantiate_and_start(&mut store, &module) {
        Ok(i) => i,
        Err(e) => {
            out.instantiated = Some(Err(wasmi_trap_class(&e)));
            return out;
        }
    };
    out.instantiated = Some(Ok(()));
    for (name, args) in &plan.args {
        let Some(f) = inst.get_func(&store, name) else { continue };
        let ty = f.ty(&store);
        let params: Vec<wasmi::Val> = args.iter().zip(ty.params()).map(|(a, t)| to_wasmi(a, t)).collect();
        let mut results: Vec<wasmi::Val> = ty.results().iter().map(|t| wasmi::Val::default_for_ty(*t)).collect();
        let call = match f.call(&mut store, &params, &mut results) {
            Ok(()) => CallOutcome::Returned(results.iter().map(wasmi_value).collect()),
            Err(e) => CallOutcome::Trapped(wasmi_trap_class(&e)),
        };
        let exhausted = call == CallOutcome::Trapped(TrapClass::Exhausted);
        out.calls.push((name.clone(), args.iter().map(vm_value).collect(), call));
        if exhausted {
            return out;
        }
    }
    for export in module.exports() {
        let name = export.name();
        if let Some(m) = inst.get_memory(&store, name) {
            out.memories.push((name.to_string(), m.data(&store).to_vec()));
        } else if let Some(g) = inst.get_global(&store, name) {
            out.globals.push((name.to_string(), wasmi_value(&g.get(&store))));
        }
    }
    out
}
