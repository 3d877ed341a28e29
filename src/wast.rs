//! The spec-script runner behind `vmrun wast FILE`.
//!
//! A `.wast` script is a list of directives: define and instantiate modules, `register` them for
//! importing, `invoke` exports, and assert outcomes (`assert_return`, `assert_trap`,
//! `assert_exhaustion`, `assert_invalid`, `assert_malformed`, `assert_unlinkable`). The `wast`
//! crate parses the script; this module runs it against one [`vm::Store`] per script (so
//! registered modules link, and types canonicalize across modules, as the script semantics
//! require) and one [`vm::Linker`] that holds the `spectest` host module and every registration.
//!
//! ## Outcomes
//! Every directive ends in exactly one of three counts:
//! - **passed**;
//! - **failed**, with one line `file:line:col: <directive> failed: <why>` naming the directive's
//!   position in the script;
//! - **skipped**, when it needs something vmrun deliberately does not implement: SIMD (`v128`
//!   values), threads, memory64, stack switching and other disabled proposals
//!   (recognised by the validator's "... not enabled" wording), custom-section annotations, the
//!   component model. A module skipped this way makes every directive that uses it a skip too,
//!   including modules that import from its `register`ed name. Skips are never counted as passes.
//!
//! A failure, a trap or even a panic inside one directive does not stop the script: each
//! directive runs under `catch_unwind`, and a panic is a failure with the panic's message (the
//! interpreter is young; one bad instruction should not hide the rest of the report).
//!
//! ## Matching
//! - Values: integers exactly, floats bit-for-bit (so NaN payloads are checked), `nan:canonical`
//!   and `nan:arithmetic` by their bit patterns. References by kind: the VM's [`vm::Ref`] does not
//!   carry the static type, so `ref.null` matches any null, `ref.func` any function reference
//!   (the function index in the pattern is not checked), `ref.extern N`/`ref.host N` a host
//!   reference `N`.
//! - Trap messages: the trap's text contains the expected text, or the expected text starts
//!   with ours (scripts append detail such as "uninitialized element 2"), or
//!   [`TRAP_MESSAGE_ALIASES`] pairs them.
//! - `assert_invalid`/`assert_malformed`/`assert_unlinkable` pass on any rejection of the right
//!   kind: wording differs between validators (wasmparser says "array is immutable" where the
//!   spec says "immutable array"). With [`WastOptions::strict_messages`], a rejection whose text
//!   does not contain the expected text is a failure, to measure how far the wording is off.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use vm::{Extern, InstanceId, Linker, ModuleId, Ref, Source, Store, Trap, TrapKind, Val};
use wast::core::{NanPattern, WastArgCore, WastRetCore};
use wast::{QuoteWat, WastArg, WastDirective, WastExecute, WastInvoke, WastRet, Wat};

/// How to judge a script.
#[derive(Clone, Debug, Default)]
pub struct WastOptions {
    /// Fail `assert_invalid`/`assert_malformed`/`assert_unlinkable` (and `assert_trap` beyond
    /// the alias table) when the rejection's wording does not contain the expected message.
    pub strict_messages: bool,
    /// The features modules may use; `None` for everything vmrun runs (`vm::Config::default`).
    pub features: Option<vm::wasmparser::WasmFeatures>,
    /// The tiers every store of the script runs with (`vmrun wast --jit=...`).
    pub jit: vm::JitConfig,
    /// The heap's policy and debug modes (`--gc-stress`, `--gc-verify`); `None` for the default.
    pub gc: Option<gc::HeapConfig>,
}

/// The outcome of one script.
///
/// For the CLI (`vmrun wast FILE...`): print each entry of `failures` on stderr (and of `skips` with
/// `--verbose`), then the report's `Display` (`N passed, N failed, N skipped`, plus ` (why: count, ...)`
/// when something was skipped) on stdout, and exit with code 0 iff no file had a failure and every file
/// ran something ([`WastReport::ran_nothing`]). `--strict-messages` maps to [`WastOptions::strict_messages`].
#[derive(Debug, Default)]
pub struct WastReport {
    pub passed: usize,
    /// One line per failed directive: `file:line:col: <directive> failed: <why>`.
    pub failures: Vec<String>,
    /// Directives not run because they need an unsupported feature.
    pub skipped: usize,
    /// One line per skipped directive: `file:line:col: <directive> skipped: <why>`.
    pub skips: Vec<String>,
    /// Why directives were skipped, with counts.
    pub skip_reasons: BTreeMap<String, usize>,
    /// Functions the compiled tier compiled, and those it left interpreted with the construct that kept
    /// each (`vmrun wast --jit-stats`).
    pub jit_compiled: u64,
    pub jit_interpreted: Vec<(String, String)>,
}

impl fmt::Display for WastReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failures.len(), self.skipped)?;
        if self.skipped > 0 {
            let reasons: Vec<String> = self.skip_reasons.iter().map(|(why, n)| format!("{why}: {n}")).collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        Ok(())
    }
}

impl WastReport {
    /// No directive passed or failed: every one was skipped, or the script had none. Such a script
    /// checked nothing, which is an error rather than a success.
    pub fn ran_nothing(&self) -> bool {
        self.passed == 0 && self.failures.is_empty()
    }
}

/// Run every directive of a `.wast` file. An `Err` means the script itself could not be read or
/// parsed; failing directives are in the report.
pub fn run_wast_file(path: &Path, opts: &WastOptions) -> Result<WastReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    run_wast_text(&path.display().to_string(), &text, opts)
}

/// Run a script given as text; `name` is used in messages.
pub fn run_wast_text(name: &str, text: &str, opts: &WastOptions) -> Result<WastReport> {
    let text = &*vm::loader::unfold_legacy_try(text);
    let mut lexer = wast::lexer::Lexer::new(text);
    // The spec's names.wast deliberately uses bidirectional-override characters in names.
    lexer.allow_confusing_unicode(true);
    let buf = wast::parser::ParseBuffer::new_with_lexer(lexer).map_err(|e| located(name, text, e))?;
    let script: wast::Wast = wast::parser::parse(&buf).map_err(|e| located(name, text, e))?;
    let mut runner = ScriptRunner::new(opts.clone());
    let mut report = WastReport::default();
    for directive in script.directives {
        let (line, col) = directive.span().linecol_in(text);
        let kind = directive_name(&directive);
        match catch_panic(|| runner.run(directive)) {
            Ok(()) => report.passed += 1,
            Err(Problem::Skipped(why)) => {
                report.skipped += 1;
                report.skips.push(format!("{name}:{}:{}: {kind} skipped: {why}", line + 1, col + 1));
                *report.skip_reasons.entry(why).or_default() += 1;
            }
            Err(Problem::Failed(why)) => {
                report.failures.push(format!("{name}:{}:{}: {kind} failed: {why}", line + 1, col + 1));
            }
        }
    }
    let stats = runner.store.runtime().jit_stats();
    report.jit_compiled = stats.compiled.load(std::sync::atomic::Ordering::Relaxed);
    report.jit_interpreted = stats.unsupported();
    Ok(report)
}

/// Why a directive did not pass.
#[derive(Debug, PartialEq)]
enum Problem {
    Failed(String),
    /// Needs an unsupported feature; the string names it.
    Skipped(String),
}

type Check<T = ()> = std::result::Result<T, Problem>;

fn fail<T>(why: impl Into<String>) -> Check<T> {
    Err(Problem::Failed(why.into()))
}

fn skip<T>(why: impl Into<String>) -> Check<T> {
    Err(Problem::Skipped(why.into()))
}

/// Run `f`, turning a panic into a failure that carries the panic message.
fn catch_panic(f: impl FnOnce() -> Check) -> Check {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|m| m.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        fail(format!("panicked: {msg}"))
    })
}

fn located(name: &str, text: &str, mut e: wast::Error) -> anyhow::Error {
    e.set_text(text);
    let (line, col) = e.span().linecol_in(text);
    anyhow::anyhow!("{name}:{}:{}: {}", line + 1, col + 1, e.message())
}

/// Trap messages that mean the same thing in the spec's wording and ours: (expected, ours).
/// Empty today: every spec trap message is also vmrun's. Add a pair only with the case that
/// needs it.
const TRAP_MESSAGE_ALIASES: &[(&str, &str)] = &[];

/// Whether a trap message satisfies the script's expectation (see the module comment).
fn trap_message_matches(expected: &str, got: &str) -> bool {
    got.contains(expected)
        || (!got.is_empty() && expected.starts_with(got))
        || TRAP_MESSAGE_ALIASES.iter().any(|&(e, g)| e == expected && got.contains(g))
}

/// A module slot in the script: an instance, or why there is none.
#[derive(Clone, Debug)]
enum Slot {
    Ready(InstanceId),
    /// Skipped for an unsupported feature: directives using it are skipped for the same reason.
    Skipped(String),
    /// Failed to load or instantiate: directives using it fail.
    Broken(String),
}

struct ScriptRunner {
    opts: WastOptions,
    store: Store,
    linker: Linker,
    current: Option<Slot>,
    /// Named instances (`(module $m ...)`, `(module instance $i ...)`).
    instances: HashMap<String, Slot>,
    /// Named module definitions (`(module definition $m ...)`), or why they are unavailable.
    definitions: HashMap<String, std::result::Result<ModuleId, Problem>>,
    /// `register`ed names whose module was skipped, with the reason.
    skipped_registrations: HashMap<String, String>,
}

impl ScriptRunner {
    fn new(opts: WastOptions) -> ScriptRunner {
        let mut config = vm::Config { jit: opts.jit.clone(), ..vm::Config::default() };
        if let Some(gc) = &opts.gc {
            config.gc = gc.clone();
        }
        match opts.features {
            Some(features) => config.features = features,
            // Spec scripts test the standard encodings, some of which shared-everything threads gives a
            // meaning (a global's mutability byte 2 or 3 is `shared`): they run without that proposal,
            // which only programs get (`vm::module::features`).
            None => config.features -= vm::wasmparser::WasmFeatures::SHARED_EVERYTHING_THREADS,
        }
        let mut store = Store::new(config);
        let mut linker = Linker::new();
        define_spectest(&mut store, &mut linker);
        ScriptRunner {
            opts,
            store,
            linker,
            current: None,
            instances: HashMap::new(),
            definitions: HashMap::new(),
            skipped_registrations: HashMap::new(),
        }
    }

    fn run(&mut self, directive: WastDirective<'_>) -> Check {
        match directive {
            WastDirective::Module(module) => self.module(module),
            WastDirective::ModuleDefinition(mut module) => {
                let name = module_id(&module);
                let loaded = self.encode_and_load(&mut module);
                let outcome = loaded.as_ref().map(drop).map_err(clone_problem);
                if let Some(name) = name {
                    self.definitions.insert(name, loaded);
                }
                outcome
            }
            WastDirective::ModuleInstance { instance, module, .. } => {
                let Some(definition) = module else { return fail("`module instance` names no definition") };
                let slot = match self.definitions.get(definition.name()) {
                    Some(Ok(m)) => self.instantiate(*m),
                    Some(Err(Problem::Skipped(why))) => Slot::Skipped(why.clone()),
                    Some(Err(Problem::Failed(_))) => Slot::Broken(format!("definition ${} failed", definition.name())),
                    None => return fail(format!("no module definition ${}", definition.name())),
                };
                // Record the instance even when unavailable, so later uses skip or fail the same way.
                self.set_current(instance.map(|i| i.name().to_string()), slot)
            }
            WastDirective::Register { name, module, .. } => match self.slot(module)? {
                Slot::Ready(instance) => {
                    self.linker.define_instance(&self.store, name, instance);
                    self.skipped_registrations.remove(name);
                    Ok(())
                }
                Slot::Skipped(why) => {
                    self.skipped_registrations.insert(name.to_string(), why.clone());
                    skip(why)
                }
                Slot::Broken(why) => fail(why),
            },
            // A bare `invoke` must complete: a trap or an exception out of it is a failure.
            WastDirective::Invoke(call) => match self.invoke(call)? {
                Ok(_) => Ok(()),
                Err(trap) => fail(format!("trapped: {trap}")),
            },
            WastDirective::AssertReturn { exec, results, .. } => {
                let expected = results.iter().map(core_ret).collect::<Check<Vec<_>>>()?;
                if expected.iter().any(|r| needs_simd(r)) {
                    return skip("SIMD");
                }
                let got = match self.execute(exec)? {
                    Ok(values) => values,
                    Err(trap) => return fail(format!("trapped: {trap}")),
                };
                let ok = got.len() == expected.len() && got.iter().zip(&expected).all(|(v, r)| value_matches(v, r));
                if ok {
                    Ok(())
                } else {
                    fail(format!("got {}, expected {}", show_values(&got), show_patterns(&expected)))
                }
            }
            WastDirective::AssertTrap { exec, message, .. } => match self.execute(exec)? {
                Ok(values) => fail(format!("returned {}, expected trap `{message}`", show_values(&values))),
                Err(trap) if trap_message_matches(message, &trap.kind.to_string()) => Ok(()),
                Err(trap) => fail(format!("trapped with `{trap}`, expected `{message}`")),
            },
            WastDirective::AssertExhaustion { call, message, .. } => match self.invoke(call)? {
                Err(trap) if trap.kind == TrapKind::CallStackExhausted => Ok(()),
                Err(trap) => fail(format!("trapped with `{trap}`, expected `{message}`")),
                Ok(values) => fail(format!("returned {}, expected `{message}`", show_values(&values))),
            },
            WastDirective::AssertInvalid { mut module, message, .. } => {
                let wasm = match module.encode() {
                    Ok(wasm) => wasm,
                    // Rejected by the text parser (e.g. an unresolvable name): invalid indeed.
                    Err(_) => return Ok(()),
                };
                self.expect_rejection(wasm, message)
            }
            WastDirective::AssertMalformed { mut module, message, .. } => {
                let wasm = match module.encode() {
                    Ok(wasm) => wasm,
                    Err(_) => return Ok(()),
                };
                self.expect_rejection(wasm, message)
            }
            WastDirective::AssertUnlinkable { module, message, .. } => {
                let mut module = QuoteWat::Wat(module);
                let module = self.encode_and_load(&mut module)?;
                match self.store.instantiate(module, &self.linker) {
                    Ok(_) => fail(format!("module linked, expected `{message}`")),
                    Err(vm::Error::Link(got)) => {
                        self.skip_if_imports_skipped(module)?;
                        self.check_wording(&got, message)
                    }
                    Err(other) => fail(format!("expected a link error `{message}`, got: {other}")),
                }
            }
            WastDirective::AssertInvalidCustom { .. } | WastDirective::AssertMalformedCustom { .. } => {
                skip("custom-section annotations")
            }
            WastDirective::AssertException { exec, .. } => match self.execute(exec)? {
                Err(Trap { kind: TrapKind::UncaughtException { exn, .. }, .. }) => {
                    self.store.unroot(Ref::Exn(exn));
                    Ok(())
                }
                Err(trap) => fail(format!("trapped with `{trap}`, expected an uncaught exception")),
                Ok(values) => fail(format!("returned {}, expected an uncaught exception", show_values(&values))),
            },
            WastDirective::AssertSuspension { .. } => skip("stack switching"),
            WastDirective::Thread(_) | WastDirective::Wait { .. } => skip("threads"),
        }
    }

    /// `(module ...)`: load, instantiate, make it current (and named, if it has a name).
    fn module(&mut self, mut module: QuoteWat<'_>) -> Check {
        let name = module_id(&module);
        let slot = match self.encode_and_load(&mut module) {
            Ok(m) => self.instantiate(m),
            Err(Problem::Skipped(why)) => Slot::Skipped(why),
            Err(Problem::Failed(why)) => Slot::Broken(why),
        };
        self.set_current(name, slot)
    }

    fn set_current(&mut self, name: Option<String>, slot: Slot) -> Check {
        self.current = Some(slot.clone());
        if let Some(name) = name {
            self.instances.insert(name, slot.clone());
        }
        match slot {
            Slot::Ready(_) => Ok(()),
            Slot::Skipped(why) => skip(why),
            Slot::Broken(why) => fail(why),
        }
    }

    /// The module a directive refers to: a named one, or the most recent.
    fn slot(&self, name: Option<wast::token::Id<'_>>) -> Check<Slot> {
        match name {
            Some(id) => self
                .instances
                .get(id.name())
                .cloned()
                .ok_or_else(|| Problem::Failed(format!("no module named ${}", id.name()))),
            None => self.current.clone().ok_or_else(|| Problem::Failed("no module defined yet".into())),
        }
    }

    fn instance(&self, name: Option<wast::token::Id<'_>>) -> Check<InstanceId> {
        match self.slot(name)? {
            Slot::Ready(instance) => Ok(instance),
            Slot::Skipped(why) => skip(why),
            Slot::Broken(why) => fail(format!("its module failed earlier: {why}")),
        }
    }

    fn encode_and_load(&mut self, module: &mut QuoteWat<'_>) -> Check<ModuleId> {
        if is_component(module) {
            return skip("component model");
        }
        let wasm = module.encode().map_err(|e| Problem::Failed(format!("text did not encode: {}", e.message())))?;
        self.load(wasm)
    }

    fn load(&mut self, wasm: Vec<u8>) -> Check<ModuleId> {
        self.store.load_module(Source::from_binary("module", wasm)).map_err(|e| {
            let msg = e.to_string();
            match unsupported_feature(&msg) {
                Some(feature) => Problem::Skipped(feature.to_string()),
                None => Problem::Failed(format!("module did not load: {msg}")),
            }
        })
    }

    fn instantiate(&mut self, module: ModuleId) -> Slot {
        match self.store.instantiate(module, &self.linker) {
            Ok(instance) => Slot::Ready(instance),
            Err(e) => match self.skip_if_imports_skipped(module) {
                Err(Problem::Skipped(why)) => Slot::Skipped(why),
                _ => Slot::Broken(match e {
                    vm::Error::Trap(trap) => format!("instantiation trapped: {trap}"),
                    other => format!("instantiation failed: {other}"),
                }),
            },
        }
    }

    /// A link failure of a module that imports from a skipped module is a skip, not a failure.
    fn skip_if_imports_skipped(&self, module: ModuleId) -> Check {
        for (import_module, _) in self.store.module_imports(module) {
            if let Some(why) = self.skipped_registrations.get(&import_module) {
                return skip(why.clone());
            }
        }
        Ok(())
    }

    /// For `assert_invalid`/`assert_malformed` of a module that encoded: loading must fail.
    fn expect_rejection(&mut self, wasm: Vec<u8>, message: &str) -> Check {
        match self.load(wasm) {
            Ok(_) => fail(format!("module was accepted, expected rejection `{message}`")),
            Err(Problem::Skipped(why)) => skip(why),
            Err(Problem::Failed(got)) => self.check_wording(&got, message),
        }
    }

    fn check_wording(&self, got: &str, expected: &str) -> Check {
        if !self.opts.strict_messages || got.contains(expected) {
            Ok(())
        } else {
            fail(format!("rejected with `{got}`, expected `{expected}`"))
        }
    }

    /// Run an `invoke`, a `get`, or a module instantiation (`assert_trap (module ...)`).
    /// The outer `Err` is a problem with the directive; the inner one a trap.
    fn execute(&mut self, exec: WastExecute<'_>) -> Check<std::result::Result<Vec<Val>, Trap>> {
        match exec {
            WastExecute::Invoke(call) => self.invoke(call),
            WastExecute::Get { module, global, .. } => {
                let instance = self.instance(module)?;
                match self.store.get_export(instance, global) {
                    Some(Extern::Global(g)) => Ok(Ok(vec![self.store.global_get(g)])),
                    _ => fail(format!("no exported global `{global}`")),
                }
            }
            WastExecute::Wat(module) => {
                let mut module = QuoteWat::Wat(module);
                let module = self.encode_and_load(&mut module)?;
                match self.store.instantiate(module, &self.linker) {
                    Ok(_) => Ok(Ok(Vec::new())),
                    Err(vm::Error::Trap(trap)) => Ok(Err(trap)),
                    Err(other) => {
                        self.skip_if_imports_skipped(module)?;
                        fail(format!("instantiation failed: {other}"))
                    }
                }
            }
        }
    }

    fn invoke(&mut self, call: WastInvoke<'_>) -> Check<std::result::Result<Vec<Val>, Trap>> {
        let args = call.args.iter().map(argument).collect::<Check<Vec<_>>>()?;
        let instance = self.instance(call.module)?;
        let Some(Extern::Func(func)) = self.store.get_export(instance, call.name) else {
            return fail(format!("no exported function `{}`", call.name));
        };
        match self.store.call(func, &args) {
            // A host-side argument mismatch is the script's or the runner's fault, not a trap.
            Err(trap) if matches!(trap.kind, TrapKind::Host(_)) => fail(format!("host error, not a wasm trap: {trap}")),
            result => Ok(result),
        }
    }
}

fn clone_problem(p: &Problem) -> Problem {
    match p {
        Problem::Failed(why) => Problem::Failed(why.clone()),
        Problem::Skipped(why) => Problem::Skipped(why.clone()),
    }
}

/// The proposal a load error says is disabled, if it is one vmrun deliberately leaves out.
/// wasmparser words these as "... proposal not enabled", "... support is not enabled",
/// "... must be enabled ...", "... not supported without the ... feature", "... feature
/// required ...". A disabled proposal that vmrun *should* support (GC, tail calls, ...) is not
/// in the list, so it stays a failure.
fn unsupported_feature(message: &str) -> Option<&'static str> {
    const DISABLED: &[&str] = &["not enabled", "must be enabled", "not supported without", "feature required"];
    const LEFT_OUT: &[(&str, &str)] = &[
        ("memory64", "memory64"),
        ("simd", "SIMD"),
        ("thread", "threads"),
        ("shared", "threads"),
        ("atomic", "threads"),
        ("stack switching", "stack switching"),
        ("continuation", "stack switching"),
        ("custom page size", "custom page sizes"),
        ("wide arithmetic", "wide arithmetic"),
        ("custom descriptors", "custom descriptors"),
    ];
    let lower = message.to_lowercase();
    if !DISABLED.iter().any(|d| lower.contains(d)) {
        return None;
    }
    LEFT_OUT.iter().find(|(keyword, _)| lower.contains(keyword)).map(|&(_, feature)| feature)
}

fn directive_name(d: &WastDirective<'_>) -> &'static str {
    match d {
        WastDirective::Module(_) => "module",
        WastDirective::ModuleDefinition(_) => "module definition",
        WastDirective::ModuleInstance { .. } => "module instance",
        WastDirective::Register { .. } => "register",
        WastDirective::Invoke(_) => "invoke",
        WastDirective::AssertReturn { .. } => "assert_return",
        WastDirective::AssertTrap { exec: WastExecute::Wat(_), .. } => "assert_trap (module)",
        WastDirective::AssertTrap { .. } => "assert_trap",
        WastDirective::AssertExhaustion { .. } => "assert_exhaustion",
        WastDirective::AssertInvalid { .. } => "assert_invalid",
        WastDirective::AssertMalformed { .. } => "assert_malformed",
        WastDirective::AssertUnlinkable { .. } => "assert_unlinkable",
        WastDirective::AssertInvalidCustom { .. } => "assert_invalid_custom",
        WastDirective::AssertMalformedCustom { .. } => "assert_malformed_custom",
        WastDirective::AssertException { .. } => "assert_exception",
        WastDirective::AssertSuspension { .. } => "assert_suspension",
        WastDirective::Thread(_) => "thread",
        WastDirective::Wait { .. } => "wait",
    }
}

fn module_id(m: &QuoteWat<'_>) -> Option<String> {
    match m {
        QuoteWat::Wat(Wat::Module(m)) => m.id.map(|i| i.name().to_string()),
        QuoteWat::Wat(Wat::Component(c)) => c.id.map(|i| i.name().to_string()),
        QuoteWat::QuoteModule(..) | QuoteWat::QuoteComponent(..) => None,
    }
}

fn is_component(m: &QuoteWat<'_>) -> bool {
    matches!(m, QuoteWat::Wat(Wat::Component(_)) | QuoteWat::QuoteComponent(..))
}

fn argument(a: &WastArg<'_>) -> Check<Val> {
    let WastArg::Core(core) = a else { return skip("component model") };
    Ok(match core {
        WastArgCore::I32(x) => Val::I32(*x),
        WastArgCore::I64(x) => Val::I64(*x),
        WastArgCore::F32(x) => Val::F32(x.bits),
        WastArgCore::F64(x) => Val::F64(x.bits),
        WastArgCore::RefNull(_) => Val::Ref(Ref::Null),
        WastArgCore::RefExtern(n) | WastArgCore::RefHost(n) => Val::Ref(Ref::Host(*n)),
        WastArgCore::V128(_) => return skip("SIMD"),
    })
}

fn core_ret<'a, 'b>(r: &'b WastRet<'a>) -> Check<&'b WastRetCore<'a>> {
    match r {
        WastRet::Core(core) => Ok(core),
        _ => skip("component model"),
    }
}

fn needs_simd(r: &WastRetCore<'_>) -> bool {
    match r {
        WastRetCore::V128(_) => true,
        WastRetCore::Either(alternatives) => alternatives.iter().any(needs_simd),
        _ => false,
    }
}

const F32_SIGN: u32 = 0x8000_0000;
const F32_CANONICAL_NAN: u32 = 0x7fc0_0000;
const F64_SIGN: u64 = 0x8000_0000_0000_0000;
const F64_CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Whether a value satisfies a result pattern (see the module comment).
fn value_matches(v: &Val, pattern: &WastRetCore<'_>) -> bool {
    match (v, pattern) {
        (Val::I32(a), WastRetCore::I32(b)) => a == b,
        (Val::I64(a), WastRetCore::I64(b)) => a == b,
        (Val::F32(bits), WastRetCore::F32(p)) => match p {
            // Canonical: quiet bit only, either sign. Arithmetic: quiet bit set, any payload.
            NanPattern::CanonicalNan => bits & !F32_SIGN == F32_CANONICAL_NAN,
            NanPattern::ArithmeticNan => bits & F32_CANONICAL_NAN == F32_CANONICAL_NAN,
            NanPattern::Value(x) => *bits == x.bits,
        },
        (Val::F64(bits), WastRetCore::F64(p)) => match p {
            NanPattern::CanonicalNan => bits & !F64_SIGN == F64_CANONICAL_NAN,
            NanPattern::ArithmeticNan => bits & F64_CANONICAL_NAN == F64_CANONICAL_NAN,
            NanPattern::Value(x) => *bits == x.bits,
        },
        (Val::Ref(r), WastRetCore::RefNull(_)) => *r == Ref::Null,
        (Val::Ref(Ref::Host(a)), WastRetCore::RefExtern(Some(b)) | WastRetCore::RefHost(b)) => a == b,
        // `ref.extern` without a number: any non-null external reference, which after
        // `extern.convert_any` may be any reference.
        (Val::Ref(r), WastRetCore::RefExtern(None)) => *r != Ref::Null,
        (Val::Ref(Ref::Func(_)), WastRetCore::RefFunc(_)) => true,
        (Val::Ref(r), WastRetCore::RefAny) => !matches!(r, Ref::Null | Ref::Func(_)),
        (Val::Ref(Ref::I31(_) | Ref::Struct(_) | Ref::Array(_)), WastRetCore::RefEq) => true,
        (Val::Ref(Ref::I31(_)), WastRetCore::RefI31 | WastRetCore::RefI31Shared) => true,
        (Val::Ref(Ref::Struct(_)), WastRetCore::RefStruct) => true,
        (Val::Ref(Ref::Array(_)), WastRetCore::RefArray) => true,
        (v, WastRetCore::Either(alternatives)) => alternatives.iter().any(|a| value_matches(v, a)),
        _ => false,
    }
}

fn show_values(values: &[Val]) -> String {
    let shown: Vec<String> = values.iter().map(show_value).collect();
    format!("[{}]", shown.join(", "))
}

fn show_value(v: &Val) -> String {
    match v {
        Val::I32(x) => format!("i32:{x}"),
        Val::I64(x) => format!("i64:{x}"),
        Val::F32(bits) => format!("f32:{} ({bits:#010x})", f32::from_bits(*bits)),
        Val::F64(bits) => format!("f64:{} ({bits:#018x})", f64::from_bits(*bits)),
        Val::Ref(Ref::Null) => "ref.null".into(),
        Val::Ref(Ref::Func(f)) => format!("ref.func {f:?}"),
        Val::Ref(Ref::Host(n)) => format!("ref.extern {n}"),
        Val::Ref(Ref::I31(x)) => format!("ref.i31 {x}"),
        Val::Ref(Ref::Struct(_)) => "ref.struct".into(),
        Val::Ref(Ref::Array(_)) => "ref.array".into(),
        Val::Ref(Ref::Exn(_)) => "ref.exn".into(),
    }
}

fn show_patterns(patterns: &[&WastRetCore<'_>]) -> String {
    let shown: Vec<String> = patterns.iter().map(|p| show_pattern(p)).collect();
    format!("[{}]", shown.join(", "))
}

fn show_pattern(p: &WastRetCore<'_>) -> String {
    fn nan<T>(p: &NanPattern<T>, ty: &str, value: impl Fn(&T) -> String) -> String {
        match p {
            NanPattern::CanonicalNan => format!("{ty}:nan:canonical"),
            NanPattern::ArithmeticNan => format!("{ty}:nan:arithmetic"),
            NanPattern::Value(x) => format!("{ty}:{}", value(x)),
        }
    }
    match p {
        WastRetCore::I32(x) => format!("i32:{x}"),
        WastRetCore::I64(x) => format!("i64:{x}"),
        WastRetCore::F32(p) => nan(p, "f32", |x| format!("{} ({:#010x})", f32::from_bits(x.bits), x.bits)),
        WastRetCore::F64(p) => nan(p, "f64", |x| format!("{} ({:#018x})", f64::from_bits(x.bits), x.bits)),
        WastRetCore::V128(_) => "v128".into(),
        WastRetCore::RefNull(_) => "ref.null".into(),
        WastRetCore::RefExtern(Some(n)) => format!("ref.extern {n}"),
        WastRetCore::RefExtern(None) => "ref.extern".into(),
        WastRetCore::RefHost(n) => format!("ref.host {n}"),
        WastRetCore::RefFunc(_) => "ref.func".into(),
        WastRetCore::RefAny => "ref.any".into(),
        WastRetCore::RefEq => "ref.eq".into(),
        WastRetCore::RefArray => "ref.array".into(),
        WastRetCore::RefStruct => "ref.struct".into(),
        WastRetCore::RefI31 => "ref.i31".into(),
        WastRetCore::RefI31Shared => "ref.i31_shared".into(),
        WastRetCore::Either(alternatives) => {
            let shown: Vec<String> = alternatives.iter().map(show_pattern).collect();
            format!("either({})", shown.join(" | "))
        }
    }
}

/// The `spectest` module every script may import from (the reference interpreter's
/// `spectest.ml`): `print*` functions that do nothing, globals holding 666 / 666.6, a
/// 10..20 funcref table, a 1..2 page memory and a 1..2 page shared memory (threads proposal).
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
        let f = store.new_host_func(vm::FuncType { params, results: vec![] }, Box::new(|_, _, _| Ok(())));
        linker.define("spectest", name, Extern::Func(f));
    }
    let globals = [
        ("global_i32", ValType::I32, Val::I32(666)),
        ("global_i64", ValType::I64, Val::I64(666)),
        ("global_f32", ValType::F32, Val::F32(666.6f32.to_bits())),
        ("global_f64", ValType::F64, Val::F64(666.6f64.to_bits())),
    ];
    for (name, ty, value) in globals {
        let g = store
            .new_global(GlobalType { content_type: ty, mutable: false, shared: false }, value)
            .expect("spectest globals hold numbers");
        linker.define("spectest", name, Extern::Global(g));
    }
    let table =
        TableType { element_type: RefType::FUNCREF, table64: false, initial: 10, maximum: Some(20), shared: false };
    let t = store.new_table(table);
    linker.define("spectest", "table", Extern::Table(t));
    let memory = MemoryType { memory64: false, shared: false, initial: 1, maximum: Some(2), page_size_log2: None };
    let m = store.new_memory(memory).expect("the spectest memory fits");
    linker.define("spectest", "memory", Extern::Memory(m));
    let shared = MemoryType { shared: true, ..memory };
    let m = store.new_memory(shared).expect("the spectest memory fits");
    linker.define("spectest", "shared_memory", Extern::Memory(m));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> WastReport {
        run_wast_text("t.wast", script, &WastOptions::default()).expect("script parses")
    }

    fn f32_pattern(p: NanPattern<u32>) -> WastRetCore<'static> {
        WastRetCore::F32(match p {
            NanPattern::Value(bits) => NanPattern::Value(wast::token::F32 { bits }),
            NanPattern::CanonicalNan => NanPattern::CanonicalNan,
            NanPattern::ArithmeticNan => NanPattern::ArithmeticNan,
        })
    }

    #[test]
    fn nan_patterns_follow_the_spec() {
        let canonical = f32_pattern(NanPattern::CanonicalNan);
        let arithmetic = f32_pattern(NanPattern::ArithmeticNan);
        // Canonical NaN, either sign: both patterns.
        for bits in [0x7fc0_0000, 0xffc0_0000] {
            assert!(value_matches(&Val::F32(bits), &canonical), "{bits:#x}");
            assert!(value_matches(&Val::F32(bits), &arithmetic), "{bits:#x}");
        }
        // Quiet NaN with payload: arithmetic only.
        assert!(!value_matches(&Val::F32(0x7fc0_0001), &canonical));
        assert!(value_matches(&Val::F32(0x7fc0_0001), &arithmetic));
        // Signalling NaN and infinity: neither.
        for bits in [0x7fa0_0000, 0x7f80_0000] {
            assert!(!value_matches(&Val::F32(bits), &canonical), "{bits:#x}");
            assert!(!value_matches(&Val::F32(bits), &arithmetic), "{bits:#x}");
        }
        // Exact values compare bits: -0 is not +0, and NaN payloads must agree.
        assert!(!value_matches(&Val::F32(0x8000_0000), &f32_pattern(NanPattern::Value(0))));
        assert!(value_matches(&Val::F32(0x7fa0_0000), &f32_pattern(NanPattern::Value(0x7fa0_0000))));
        let f64_canonical = WastRetCore::F64(NanPattern::CanonicalNan);
        assert!(value_matches(&Val::F64(0xfff8_0000_0000_0000), &f64_canonical));
        assert!(!value_matches(&Val::F64(0x7ff8_0000_0000_0001), &f64_canonical));
        assert!(value_matches(&Val::F64(0x7ff8_0000_0000_0001), &WastRetCore::F64(NanPattern::ArithmeticNan)));
        // Type matters.
        assert!(!value_matches(&Val::I64(1), &WastRetCore::I32(1)));
    }

    #[test]
    fn reference_patterns_match_by_kind() {
        let null = Val::Ref(Ref::Null);
        let host = Val::Ref(Ref::Host(7));
        let i31 = Val::Ref(Ref::I31(-1));
        assert!(value_matches(&null, &WastRetCore::RefNull(None)));
        assert!(!value_matches(&host, &WastRetCore::RefNull(None)));
        assert!(value_matches(&host, &WastRetCore::RefExtern(Some(7))));
        assert!(!value_matches(&host, &WastRetCore::RefExtern(Some(8))));
        assert!(value_matches(&host, &WastRetCore::RefExtern(None)));
        assert!(!value_matches(&null, &WastRetCore::RefExtern(None)));
        assert!(value_matches(&host, &WastRetCore::RefHost(7)));
        assert!(value_matches(&i31, &WastRetCore::RefI31));
        assert!(value_matches(&i31, &WastRetCore::RefEq));
        assert!(value_matches(&i31, &WastRetCore::RefAny));
        assert!(!value_matches(&null, &WastRetCore::RefAny));
        assert!(!value_matches(&i31, &WastRetCore::RefStruct));
        assert!(value_matches(&Val::Ref(Ref::Array(vm::ObjHandle::from_parts(0, 1))), &WastRetCore::RefArray));
        let either = WastRetCore::Either(vec![WastRetCore::I32(1), WastRetCore::I32(2)]);
        assert!(value_matches(&Val::I32(2), &either));
        assert!(!value_matches(&Val::I32(3), &either));
    }

    #[test]
    fn trap_messages_match_leniently() {
        assert!(trap_message_matches("uninitialized element", "uninitialized element"));
        // Scripts append detail to the message.
        assert!(trap_message_matches("uninitialized element 2", "uninitialized element"));
        assert!(!trap_message_matches("integer overflow", "integer divide by zero"));
        assert!(!trap_message_matches("unreachable", ""));
    }

    #[test]
    fn disabled_proposals_are_recognised() {
        assert_eq!(unsupported_feature("SIMD support is not enabled"), Some("SIMD"));
        assert_eq!(unsupported_feature("memory64 must be enabled for 64-bit tables"), Some("memory64"));
        assert_eq!(unsupported_feature("threads must be enabled for shared memories"), Some("threads"));
        // Proposals vmrun supports are failures, and so is everything else.
        assert_eq!(unsupported_feature("gc proposal must be enabled to use subtypes"), None);
        assert_eq!(unsupported_feature("type mismatch: expected i32, found i64"), None);
    }

    #[test]
    fn panics_become_failures_with_the_message() {
        let outcome = catch_panic(|| panic!("bad opcode {}", 7));
        assert_eq!(outcome, Err(Problem::Failed("panicked: bad opcode 7".into())));
        assert_eq!(catch_panic(|| Ok(())), Ok(()));
    }

    #[test]
    fn a_passing_script() {
        let report = run(r#"
            (module $m
              (import "spectest" "global_i32" (global $g i32))
              (import "spectest" "print_i32" (func $print (param i32)))
              (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
              (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
              (func (export "nan") (result f32) (f32.div (f32.const 0) (f32.const 0)))
              (func (export "g") (result i32) (call $print (global.get $g)) (global.get $g))
              (func $deep (export "deep") (call $deep))
              (global (export "answer") i64 (i64.const 42)))
            (assert_return (invoke "add" (i32.const 2) (i32.const 3)) (i32.const 5))
            (assert_return (invoke $m "nan") (f32.const nan:canonical))
            (assert_return (invoke "g") (i32.const 666))
            (assert_return (get "answer") (i64.const 42))
            (assert_trap (invoke "div" (i32.const 1) (i32.const 0)) "integer divide by zero")
            (assert_exhaustion (invoke "deep") "call stack exhausted")
            (invoke "add" (i32.const 0) (i32.const 0))
            (register "lib" $m)
            (module (import "lib" "add" (func (param i32 i32) (result i32))) (export "add2" (func 0)))
            (assert_return (invoke "add2" (i32.const 40) (i32.const 2)) (i32.const 42))
            (assert_invalid (module (func (result i32) (i64.const 0))) "type mismatch")
            (assert_malformed (module quote "(func (i32.const))") "unexpected token")
            (assert_malformed (module binary "\00asm\02\00\00\00") "unknown binary version")
            (assert_unlinkable (module (import "lib" "nope" (func))) "unknown import")
            (assert_trap (module (func $start unreachable) (start $start)) "unreachable")
        "#);
        assert_eq!(report.failures, Vec::<String>::new());
        assert_eq!((report.passed, report.skipped), (16, 0));
        assert_eq!(report.to_string(), "16 passed, 0 failed, 0 skipped");
    }

    #[test]
    fn failures_name_the_directive_and_position_and_the_script_goes_on() {
        let report = run("(module (func (export \"one\") (result i32) (i32.const 1)))\n\
                          (assert_return (invoke \"one\") (i32.const 2))\n\
                          (assert_trap (invoke \"one\") \"unreachable\")\n\
                          (assert_return (invoke \"missing\"))\n\
                          (assert_invalid (module (func)) \"type mismatch\")\n\
                          (assert_return (invoke \"one\") (i32.const 1))");
        assert_eq!(report.passed, 2, "{:?}", report.failures);
        assert_eq!(
            report.failures,
            [
                "t.wast:2:2: assert_return failed: got [i32:1], expected [i32:2]",
                "t.wast:3:2: assert_trap failed: returned [i32:1], expected trap `unreachable`",
                "t.wast:4:2: assert_return failed: no exported function `missing`",
                "t.wast:5:2: assert_invalid failed: module was accepted, expected rejection `type mismatch`",
            ]
        );
    }

    #[test]
    fn unsupported_features_are_skipped_not_passed() {
        let report = run(r#"
            (module $simd (func (export "v") (result v128) (v128.const i64x2 0 0)))
            (assert_return (invoke "v") (v128.const i64x2 0 0))
            (register "simd" $simd)
            (module (import "simd" "v" (func (result v128))))
            (module (func (export "f") (param i32)))
            (assert_return (invoke "f" (v128.const i32x4 0 0 0 0)))
            (assert_invalid (module (memory i64 1) (func (drop (i32.load (i32.const 0))))) "type mismatch")
        "#);
        assert_eq!(report.failures, Vec::<String>::new());
        assert_eq!((report.passed, report.skipped), (1, 6));
        assert_eq!(report.skip_reasons.get("SIMD"), Some(&5));
        assert_eq!(report.skip_reasons.get("memory64"), Some(&1));
        assert_eq!(report.to_string(), "1 passed, 0 failed, 6 skipped (SIMD: 5, memory64: 1)");
        assert_eq!(report.skips.len(), 6);
        assert_eq!(report.skips[0], "t.wast:2:14: module skipped: SIMD");
        assert!(!report.ran_nothing());
        assert!(run("(module (func (result v128) (v128.const i64x2 0 0)))").ran_nothing());
        assert!(WastReport::default().ran_nothing());
    }

    #[test]
    fn a_failed_module_fails_the_directives_that_use_it() {
        let report = run("(module (func (export \"f\") (unreachable)) (start 0))\n(invoke \"f\")");
        assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
        assert!(report.failures[0].starts_with("t.wast:1:2: module failed: instantiation trapped: unreachable"));
        assert!(report.failures[1].contains("its module failed earlier"), "{}", report.failures[1]);
    }

    #[test]
    fn module_definitions_and_instances() {
        let report = run(r#"
            (module definition $D (global (export "g") (mut i32) (i32.const 1))
              (func (export "inc") (global.set 0 (i32.add (global.get 0) (i32.const 1)))))
            (module instance $a $D)
            (module instance $b $D)
            (invoke $a "inc")
            (assert_return (get $a "g") (i32.const 2))
            (assert_return (get $b "g") (i32.const 1))
        "#);
        assert_eq!(report.failures, Vec::<String>::new());
        assert_eq!(report.passed, 6);
    }

    #[test]
    fn strict_messages_check_rejection_wording() {
        let script = "(assert_invalid (module (func (result i32) (i64.const 0))) \"wrong words\")";
        assert_eq!(run(script).passed, 1);
        let strict = WastOptions { strict_messages: true, ..Default::default() };
        let report = run_wast_text("s.wast", script, &strict).expect("parses");
        assert_eq!(report.failures.len(), 1);
        assert!(report.failures[0].contains("expected `wrong words`"), "{}", report.failures[0]);
    }

    #[test]
    fn script_syntax_errors_are_errors_with_a_position() {
        let err = run_wast_text("bad.wast", "(module)\n(assert_return (invoke \"f\"", &WastOptions::default())
            .expect_err("does not parse");
        assert!(err.to_string().starts_with("bad.wast:2:"), "{err}");
    }
}
