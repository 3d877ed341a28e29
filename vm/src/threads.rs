//! wasi-threads: `wasi`.`thread-spawn`, which runs the program's `wasi_thread_start` export on a new OS
//! thread, in a new instance of the same module that shares the program's memory.
//!
//! # Model (the wasi-threads proposal, as wasmtime runs it)
//!
//! - The program imports a **shared memory** (any module and name); the embedder creates it from the
//!   import's own limits ([`define_shared_memories`]) and every thread's instance imports the same one.
//! - `thread-spawn(start_arg)` picks a thread id (1 to 2^29 - 1), starts an OS thread and returns the id,
//!   or a negative number if the thread could not be started. The new thread makes a **store of its own
//!   on the program's runtime** (a mutator with its own registered native stack, thread cache, trace
//!   buffer and race context, on the one shared heap), instantiates the module against the program's
//!   imports and calls `wasi_thread_start(tid, start_arg)`.
//! - The imports a thread gets are the program's linker in store-independent form ([`ThreadImports`]):
//!   host functions (the closures are `Send + Sync`, their canonical types belong to the shared runtime),
//!   shared memories, shared globals and shared tables of references that are not functions. Anything
//!   else (an unshared table or global, a table of function references, a function of another instance)
//!   cannot be shared between stores, and a module that imports one cannot spawn threads: the spawn fails.
//! - **How a thread ends decides the process's fate** (the proposal: a trap or `proc_exit` in any thread
//!   ends every thread). The library does not kill processes: it reports a [`ThreadExit`] to the
//!   embedder's handler, and the CLI's handler prints the trap (or takes the `proc_exit` status) and
//!   exits the process, which also ends threads blocked in `memory.atomic.wait` or a host call. A thread
//!   whose start function returns just ends.
//!
//! # `vmrun`.`thread_spawn` (shared-everything threads)
//!
//! `thread_spawn(f, arg)` starts a thread on a shared function reference (the end of this file): the new
//! thread's store instantiates `f`'s module again against the spawning *instance's* imports
//! ([`ThreadImports::of_instance`]: host functions, shared memories, shared globals, shared tables),
//! inheriting the instance's own shared memories, globals and tables (`instantiate::Inherited`: the same
//! `Arc`s, not initialized again, no start function), and calls `f(arg)`. A shared table is one vector
//! behind a lock (`state::TableEntity`); its elements are roots of every store that holds it. Function
//! references are store function indices, so a shared table of them cannot be shared, nor can a shared
//! global or a shared struct or array type that holds them: such a spawn fails. The argument is a root of every collection
//! from the spawn until the new thread holds it in its store (`Runtime::handoffs`). Thread ids, the
//! OS threads' handles and the end-of-thread handling are the wasi-threads ones.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::instantiate::Inherited;
use crate::memory::LinearMemory;
use crate::module::ImportDesc;
use crate::runtime::{ModuleId, Runtime};
use crate::state::{FuncEntity, FuncKind, GlobalEntity, HostFn, StoreState, TableEntity};
use crate::{Caller, Error, Extern, Func, FuncType, Linker, Memory, Ref, Store, Trap, TrapKind, Val, ValType};

/// How a spawned thread ended, for the embedder's handler (see the module comment).
#[derive(Debug)]
pub enum ThreadExit {
    /// `proc_exit(code)` was called on the thread.
    Exit(i32),
    /// The thread trapped.
    Trap(Trap),
    /// The thread could not start: its instance failed to link or instantiate, or the module has no
    /// `wasi_thread_start(i32, i32)` export.
    Failed(String),
    /// The VM panicked on the thread (a bug): the panic's message.
    Panicked(String),
}

/// The embedder's handler for threads that end abnormally; see [`ThreadExit`].
pub type ThreadExitHandler = Box<dyn Fn(u32, ThreadExit) + Send + Sync>;

/// A definition that any store of the runtime can import.
#[derive(Clone)]
enum PortableExtern {
    HostFunc {
        ty: u32,
        f: Arc<HostFn>,
    },
    Memory(Arc<LinearMemory>),
    /// A shared global's cell (shared-everything threads).
    Global(Arc<std::sync::atomic::AtomicU64>, crate::module::GlobalDesc),
    /// A shared table's elements (shared-everything threads).
    Table(Arc<crate::state::SharedTable>, crate::module::TableDesc),
}

/// A program's imports in store-independent form; see the module comment.
#[derive(Clone, Default)]
pub struct ThreadImports {
    defs: Vec<(String, String, PortableExtern)>,
}

impl ThreadImports {
    /// The imports `module` needs, taken from `linker` (whose entities belong to `store`). Fails, naming
    /// the import, if one of them cannot be shared between threads.
    pub fn capture(store: &Store, module: ModuleId, linker: &Linker) -> Result<ThreadImports, Error> {
        let data = store.s.rt.module(module);
        let mut defs = Vec::new();
        for imp in &data.imports {
            let Some(item) = linker.get(&imp.module, &imp.name) else { continue };
            let portable = match item {
                Extern::Func(f) => match &store.s.funcs[f.0 as usize] {
                    FuncEntity { ty, kind: FuncKind::Host(h) } => PortableExtern::HostFunc { ty: *ty, f: h.clone() },
                    _ => return Err(unshareable(&imp.module, &imp.name, "a function of another instance")),
                },
                Extern::Memory(m) if store.s.memories[m.0 as usize].is_shared() => {
                    PortableExtern::Memory(store.s.memories[m.0 as usize].clone())
                }
                Extern::Memory(_) => return Err(unshareable(&imp.module, &imp.name, "a memory that is not shared")),
                Extern::Table(t) => portable_table(&store.s, t.0, &imp.module, &imp.name)?,
                Extern::Global(g) => match &store.s.globals[g.0 as usize] {
                    GlobalEntity { shared: Some(cell), desc, .. } => PortableExtern::Global(cell.clone(), desc.clone()),
                    _ => return Err(unshareable(&imp.module, &imp.name, "a global that is not shared")),
                },
                Extern::Tag(_) => return Err(unshareable(&imp.module, &imp.name, "a tag")),
            };
            defs.push((imp.module.clone(), imp.name.clone(), portable));
        }
        // wasi-threads: the threads share the program's memory, which must be an imported shared one (a
        // memory the module defines would be a new, private memory in each thread's instance).
        if !defs.iter().any(|(_, _, d)| matches!(d, PortableExtern::Memory(_))) {
            return Err(Error::Link("threads need the module to import a shared memory".into()));
        }
        Ok(ThreadImports { defs })
    }

    /// A linker for `store` with these definitions (the functions and memories become `store`'s entities).
    pub fn materialize(&self, store: &mut Store) -> Linker {
        let mut linker = Linker::new();
        for (module, name, def) in &self.defs {
            let item = match def {
                PortableExtern::HostFunc { ty, f } => {
                    store.s.funcs.push(FuncEntity { ty: *ty, kind: FuncKind::Host(f.clone()) });
                    Extern::Func(Func(store.s.funcs.len() as u32 - 1))
                }
                PortableExtern::Memory(m) => {
                    store.s.memories.push(m.clone());
                    Extern::Memory(Memory(store.s.memories.len() as u32 - 1))
                }
                PortableExtern::Global(cell, desc) => {
                    store.s.push_global(GlobalEntity::inherited(cell.clone(), desc.clone()));
                    Extern::Global(crate::Global(store.s.globals.len() as u32 - 1))
                }
                PortableExtern::Table(elems, desc) => {
                    store.s.tables.push(TableEntity::inherited(elems.clone(), desc.clone()));
                    Extern::Table(crate::Table(store.s.tables.len() as u32 - 1))
                }
            };
            linker.define(module, name, item);
        }
        linker
    }
}

impl ThreadImports {
    /// The imports instance `inst` of `state` was linked with, for a thread's instance of the same module
    /// (`vmrun`.`thread_spawn`): host functions, shared memories and shared globals. Fails, naming the
    /// import, if one cannot be shared between threads.
    fn of_instance(state: &StoreState, inst: u32) -> Result<ThreadImports, Error> {
        let i = &state.instances[inst as usize];
        let (mut funcs, mut memories, mut globals) = (i.funcs.iter(), i.memories.iter(), i.globals.iter());
        let mut tables = i.tables.iter();
        let mut defs = Vec::new();
        for imp in &i.module.imports {
            let portable = match &imp.desc {
                ImportDesc::Func(_) => match &state.funcs[*funcs.next().expect("linked") as usize] {
                    FuncEntity { ty, kind: FuncKind::Host(h) } => PortableExtern::HostFunc { ty: *ty, f: h.clone() },
                    _ => return Err(unshareable(&imp.module, &imp.name, "a function of another instance")),
                },
                ImportDesc::Memory(_) => match &state.memories[*memories.next().expect("linked") as usize] {
                    m if m.is_shared() => PortableExtern::Memory(m.clone()),
                    _ => return Err(unshareable(&imp.module, &imp.name, "a memory that is not shared")),
                },
                ImportDesc::Global(_) => match &state.globals[*globals.next().expect("linked") as usize] {
                    GlobalEntity { shared: Some(cell), desc, .. } => PortableExtern::Global(cell.clone(), desc.clone()),
                    _ => return Err(unshareable(&imp.module, &imp.name, "a global that is not shared")),
                },
                ImportDesc::Table(_) => portable_table(state, *tables.next().expect("linked"), &imp.module, &imp.name)?,
                ImportDesc::Tag(_) => return Err(unshareable(&imp.module, &imp.name, "a tag")),
            };
            defs.push((imp.module.clone(), imp.name.clone(), portable));
        }
        // Function references in shared globals, fields and elements would reach the thread too.
        if let Some(what) = shared_func_refs(state, i).filter(|_| !planted_bug_allow_shared_func_refs()) {
            return Err(Error::Link(format!(
                "{what} holds function references (a function reference names a function of one thread's store), which threads cannot share"
            )));
        }
        // The tables the instance defines: a shared one is inherited, so it must be one a thread can use.
        for &t in tables {
            let table = &state.tables[t as usize];
            if table.shared().is_some() && holds_functions(state, table) {
                return Err(Error::Link(format!("{FUNC_TABLE}, which threads cannot share")));
            }
        }
        Ok(ThreadImports { defs })
    }
}

/// Why a shared table of function references stays with its thread.
const FUNC_TABLE: &str =
    "a shared table of function references (a function reference names a function of one thread's store)";

/// Store table `t`, imported as `module`.`name`, for another thread's store: a shared table of
/// references that are not functions (objects, `i31`s and host references mean the same in every store).
fn portable_table(state: &StoreState, t: u32, module: &str, name: &str) -> Result<PortableExtern, Error> {
    let table = &state.tables[t as usize];
    match table.shared() {
        None => Err(unshareable(module, name, "a table that is not shared")),
        Some(_) if holds_functions(state, table) => Err(unshareable(module, name, FUNC_TABLE)),
        Some(elems) => Ok(PortableExtern::Table(elems.clone(), table.desc.clone())),
    }
}

/// A shared global of a function reference type, or a shared struct or array type whose fields or
/// elements are function references, of instance `inst` (named for the error), if it has one.
fn shared_func_refs(state: &StoreState, inst: &crate::state::Instance) -> Option<String> {
    let names = inst.module.source.names();
    for (index, &g) in inst.globals.iter().enumerate() {
        let desc = &state.globals[g as usize].desc;
        if let (true, crate::types::RtValType::Ref { heap, .. }) = (desc.shared, desc.ty)
            && heap.top(&state.rt.types) == crate::types::RtHeapType::Func
        {
            let name = names.global_name(index as u32).map_or(String::new(), |n| format!(" ${n}"));
            return Some(format!("shared global{name} ({index})"));
        }
    }
    inst.module.type_ids.iter().enumerate().find_map(|(index, &id)| {
        let t = state.rt.types.get(id);
        (t.shared && t.func_refs).then(|| {
            let name = inst.module.source.type_name(index as u32).map_or(String::new(), |n| format!(" ${n}"));
            format!("shared type{name} ({index})")
        })
    })
}

/// `VMRUN_VM_DEBUG=allow-shared-func-refs`: the planted bug `tests/shared_gc.rs` shows the refusal is
/// needed (function references then reach another thread's store).
fn planted_bug_allow_shared_func_refs() -> bool {
    std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "allow-shared-func-refs")
}

fn holds_functions(state: &StoreState, table: &TableEntity) -> bool {
    table.desc.heap.top(&state.rt.types) == crate::types::RtHeapType::Func
}

fn unshareable(module: &str, name: &str, what: &str) -> Error {
    Error::Link(format!("import `{module}`.`{name}` is {what}, which threads cannot share"))
}

/// For every memory import of `module` that `linker` does not define and that is declared `shared`,
/// create the memory (its declared limits) in `store` and define it: a wasi-threads program imports its
/// memory from the host.
pub fn define_shared_memories(store: &mut Store, linker: &mut Linker, module: ModuleId) -> Result<(), Error> {
    let data = store.s.rt.module(module);
    for imp in &data.imports {
        if let ImportDesc::Memory(desc) = &imp.desc
            && desc.shared
            && linker.get(&imp.module, &imp.name).is_none()
        {
            let ty = wasmparser::MemoryType {
                memory64: false,
                shared: true,
                initial: desc.min,
                maximum: desc.max,
                page_size_log2: None,
            };
            let m = store.new_memory(ty)?;
            linker.define(&imp.module, &imp.name, Extern::Memory(m));
        }
    }
    Ok(())
}

/// What every `thread-spawn` of a program shares.
struct Spawner {
    rt: Arc<Runtime>,
    /// The module and imports threads instantiate; set once the program is loaded and linked.
    program: OnceLock<(ModuleId, ThreadImports)>,
    /// Ids handed out so far (the next id is one more).
    last_tid: AtomicU32,
    on_exit: ThreadExitHandler,
    /// Set when the main thread's return ended the program: a thread's end no longer reaches `on_exit`.
    program_ended: AtomicBool,
    /// Threads started and not yet finished completely (counted down after `finished` lists them), with a
    /// signal when one finishes.
    unfinished: Mutex<usize>,
    one_finished: Condvar,
    /// The OS threads by id, for joining those that finished (`wait_for_threads`).
    handles: Mutex<Vec<(u32, std::thread::JoinHandle<()>)>>,
    /// Ids of threads that finished completely.
    finished: Mutex<Vec<u32>>,
}

impl Spawner {
    /// The next thread id, or `None` when wasi-threads' id space is used up.
    fn next_tid(&self) -> Option<u32> {
        let prev = self.last_tid.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t < MAX_TID).then_some(t + 1));
        prev.ok().map(|p| p + 1)
    }

    /// Starts OS thread `tid` running `body`, then its finish (`finish`); whether it started. The handle
    /// list is held while the thread starts, so the thread is listed before it can finish.
    fn start(self: &Arc<Self>, tid: u32, body: impl FnOnce(&Spawner) + Send + 'static) -> bool {
        let s = self.clone();
        let mut handles = lock(&self.handles);
        self.begin();
        let started = std::thread::Builder::new().name(format!("wasm thread {tid}")).spawn(move || {
            body(&s);
            s.finish(tid);
        });
        match started {
            Ok(handle) => {
                handles.push((tid, handle));
                true
            }
            Err(_) => {
                self.finish(0);
                false
            }
        }
    }

    /// Runs thread `tid`'s `body`, turning a panic into its exit: the outcome the embedder should hear of.
    fn outcome(body: impl FnOnce() -> Result<(), ThreadExit>) -> Result<(), ThreadExit> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(ThreadExit::Panicked(msg.to_string()))
        })
    }

    /// Thread `tid` ended by `exit`: the embedder hears of it, unless the program has ended already.
    fn report_exit(&self, tid: u32, exit: ThreadExit) {
        if !self.program_ended.load(Ordering::SeqCst) {
            (self.on_exit)(tid, exit);
        }
    }

    /// Counts a thread about to start as unfinished.
    fn begin(&self) {
        *lock(&self.unfinished) += 1;
    }

    /// The last step of thread `tid` (or of one that could not start, `tid` 0): listed as finished, then
    /// no longer counted as unfinished, so a `wait_for_threads` that sees the count drop finds it listed.
    fn finish(&self, tid: u32) {
        if tid != 0 {
            lock(&self.finished).push(tid);
        }
        *lock(&self.unfinished) -= 1;
        self.one_finished.notify_all();
    }
}

/// Threads a program left running when it ended: the process's exit ends them (wasi-threads). Their
/// handles stay reachable from here until then.
static ABANDONED: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Lock poisoning only says another thread panicked while holding the lock; the counts and lists stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The largest thread id wasi-threads allows (ids are positive i32s below 2^29).
const MAX_TID: u32 = (1 << 29) - 1;

/// wasi-threads for one program; see the module comment.
pub struct WasiThreads {
    spawner: Arc<Spawner>,
}

impl WasiThreads {
    /// Threads of programs run on `rt`; `on_exit` hears of every thread that ends by `proc_exit`, a trap
    /// or a failure to start.
    pub fn new(rt: Arc<Runtime>, on_exit: ThreadExitHandler) -> WasiThreads {
        let spawner = Spawner {
            rt,
            program: OnceLock::new(),
            last_tid: AtomicU32::new(0),
            on_exit,
            program_ended: AtomicBool::new(false),
            unfinished: Mutex::new(0),
            one_finished: Condvar::new(),
            handles: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
        };
        WasiThreads { spawner: Arc::new(spawner) }
    }

    /// Define `wasi`.`thread-spawn` in `linker` (for `store`).
    pub fn add_to_linker(&self, store: &mut Store, linker: &mut Linker) {
        // Weak: the spawner's program holds this function (a strong reference would be a cycle, never freed).
        // Spawning after the `WasiThreads` (and every thread) is gone fails with -1.
        let spawner = Arc::downgrade(&self.spawner);
        let ty = FuncType { params: vec![ValType::I32], results: vec![ValType::I32] };
        let f = store.new_host_func(
            ty,
            Box::new(move |caller: &mut Caller<'_>, args, results| {
                let start_arg = match args.first() {
                    Some(Val::I32(a)) => *a,
                    _ => 0,
                };
                results[0] = Val::I32(spawner.upgrade().map_or(-1, |s| spawn(&s, caller, start_arg)));
                Ok(())
            }),
        );
        linker.define("wasi", "thread-spawn", Extern::Func(f));
        self.add_spawn_ref(store, linker);
    }

    /// Define `vmrun`.`thread_spawn(f: (ref null (shared func)), arg: (ref null (shared any))) -> i32`
    /// (shared-everything threads; see [`spawn_ref`]).
    fn add_spawn_ref(&self, store: &mut Store, linker: &mut Linker) {
        let spawner = Arc::downgrade(&self.spawner);
        let shared_ref = |ty| {
            ValType::Ref(
                wasmparser::RefType::new(true, wasmparser::HeapType::Abstract { shared: true, ty })
                    .expect("abstract reference types are encodable"),
            )
        };
        let params =
            vec![shared_ref(wasmparser::AbstractHeapType::Func), shared_ref(wasmparser::AbstractHeapType::Any)];
        let ty = FuncType { params, results: vec![ValType::I32] };
        let f = store.new_host_func(
            ty,
            Box::new(move |caller: &mut Caller<'_>, args, results| {
                results[0] = Val::I32(spawner.upgrade().map_or(-1, |s| spawn_ref(&s, caller, args)));
                Ok(())
            }),
        );
        linker.define("vmrun", "thread_spawn", Extern::Func(f));
    }

    /// For the end of a program whose main thread returned (wasi-threads: that ends every thread): waits, at
    /// most `grace`, for the threads still running to finish, and joins every thread that finished. A
    /// thread blocked in `memory.atomic.wait` or a host call may not finish by itself, so once every
    /// unfinished thread may be one of those, the wait stops early. How those threads end no longer
    /// matters: the program's fate is decided (`on_exit` hears of none after this). Threads not finished are not joined; their handles are
    /// kept where the process's exit finds them ([`ABANDONED`]). So a program's exit cuts off no thread
    /// that was about to finish (one that just woke the main thread and is returning) half-way through its
    /// bookkeeping, which Memcheck's leak check would report as lost memory.
    pub fn wait_for_threads(&self, grace: Duration) {
        // How often the wait looks at the blocked-waiter count, which signals nothing when it changes.
        const RECHECK: Duration = Duration::from_millis(2);
        let s = &self.spawner;
        let deadline = Instant::now() + grace;
        let mut unfinished = lock(&s.unfinished);
        s.program_ended.store(true, Ordering::SeqCst);
        while *unfinished > crate::safepoint::mutators_in_blocking_calls() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            unfinished =
                s.one_finished.wait_timeout(unfinished, left.min(RECHECK)).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(unfinished);
        let finished = std::mem::take(&mut *lock(&s.finished));
        let handles = std::mem::take(&mut *lock(&s.handles));
        for (tid, handle) in handles {
            if finished.contains(&tid) {
                // It signalled that it finished; `join` waits for its last instructions only.
                let _ = handle.join();
            } else {
                lock(&ABANDONED).push(handle);
            }
        }
    }

    /// Record the program spawned threads instantiate: `module` with its imports from `linker`. Until this
    /// is called (or when it failed), `thread-spawn` returns -1.
    pub fn set_program(&self, store: &Store, module: ModuleId, linker: &Linker) -> Result<(), Error> {
        let imports = ThreadImports::capture(store, module, linker)?;
        let _ = self.spawner.program.set((module, imports));
        Ok(())
    }
}

/// `--race`: the race context of a thread the caller of `state` spawns (the spawn is an edge from
/// everything the parent did so far to the child), created where the host call was made.
fn spawned_race_ctx(state: &mut StoreState) -> Option<Box<vmrace::ThreadCtx>> {
    let race = state.rt.race.clone()?;
    let created_at = crate::interp::host_call_backtrace(state);
    state.mutator.race.as_deref_mut().map(|ctx| race.spawn(ctx, created_at))
}

/// `thread-spawn`: the new thread's id, or -1 if it could not be started.
fn spawn(spawner: &Arc<Spawner>, caller: &mut Caller<'_>, start_arg: i32) -> i32 {
    if spawner.program.get().is_none() {
        return -1;
    }
    let Some(tid) = spawner.next_tid() else { return -1 };
    let race_ctx = spawned_race_ctx(caller.state);
    if spawner.start(tid, move |s| run_thread(s, tid, start_arg, race_ctx)) { tid as i32 } else { -1 }
}

/// The body of a spawned thread.
fn run_thread(spawner: &Spawner, tid: u32, start_arg: i32, race: Option<Box<vmrace::ThreadCtx>>) {
    match Spawner::outcome(|| start_thread(spawner, tid, start_arg, race)) {
        // The planted bug of `tests/wasi_threads.rs`'s negative control: `proc_exit` on a thread ends the
        // thread only, so the program runs on with the wrong fate.
        Err(ThreadExit::Exit(_)) if planted_bug_thread_exit_ignored() => {}
        Err(exit) => spawner.report_exit(tid, exit),
        Ok(()) => {}
    }
}

/// `VMRUN_VM_DEBUG=thread-exit-ignored`; see `run_thread`.
fn planted_bug_thread_exit_ignored() -> bool {
    std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "thread-exit-ignored")
}

/// Instantiates the program on a new store and runs `wasi_thread_start(tid, start_arg)`.
fn start_thread(
    spawner: &Spawner,
    tid: u32,
    start_arg: i32,
    race: Option<Box<vmrace::ThreadCtx>>,
) -> Result<(), ThreadExit> {
    let (module, imports) = spawner.program.get().expect("spawn checks the program is set");
    let mut store = Store::on_thread(spawner.rt.clone(), race);
    let linker = imports.materialize(&mut store);
    let outcome = (|| {
        let instance = store.instantiate(*module, &linker).map_err(|e| ThreadExit::Failed(e.to_string()))?;
        let Some(Extern::Func(start)) = store.get_export(instance, "wasi_thread_start") else {
            return Err(ThreadExit::Failed("the module exports no `wasi_thread_start` function".into()));
        };
        match store.call(start, &[Val::I32(tid as i32), Val::I32(start_arg)]) {
            Ok(_) => Ok(()),
            Err(Trap { kind: TrapKind::Exit(code), .. }) => Err(ThreadExit::Exit(code)),
            Err(trap) => Err(ThreadExit::Trap(trap)),
        }
    })();
    // Past its last wasm instruction: dropping the store (its mutator and stacks) is teardown, which
    // `wait_for_threads` waits for (the thread counts as unfinished until `Spawner::finish`).
    drop(store);
    drop(linker);
    outcome
}

// ---------------- `vmrun`.`thread_spawn`: a thread on a shared function reference

/// What a thread started by `vmrun`.`thread_spawn` runs: defined function `func` of a new instance of
/// `module` (imports and shared entities from the spawning instance), called with the argument the
/// runtime holds for the thread (`Runtime::handoffs`).
struct RefThread {
    module: ModuleId,
    imports: ThreadImports,
    inherited: Inherited,
    func: u32,
}

/// `vmrun`.`thread_spawn(f, arg)`: starts a thread that calls `f(arg)` and returns its id, or -1 if `f`
/// is null, not a wasm function taking one reference `arg` fits, or its instance cannot be made again on
/// another thread (an import that cannot be shared: see [`ThreadImports::of_instance`]).
///
/// The thread runs in a store of its own on the same runtime, in a new instance of `f`'s module that
/// shares the spawning instance's shared memories and globals (defined or imported; the instance's start
/// function and the data segments of shared memories do not run again). `arg` is a root of every
/// collection from the call until the thread holds it (`Runtime::handoffs`), so an object only the
/// argument reaches survives a collection before the thread starts.
fn spawn_ref(spawner: &Arc<Spawner>, caller: &mut Caller<'_>, args: &[Val]) -> i32 {
    let state = &mut *caller.state;
    let (Some(Val::Ref(Ref::Func(f))), Some(arg @ Val::Ref(_))) = (args.first(), args.get(1)) else { return -1 };
    let FuncKind::Wasm { instance, index } = state.funcs[f.0 as usize].kind else { return -1 };
    let Ok(raw) = crate::convert::val_to_raw(state, *arg) else { return -1 };
    let fits = match &state.rt.types.get(state.funcs[f.0 as usize].ty).kind {
        crate::types::TypeKind::Func { params, .. } => {
            params.len() == 1 && crate::convert::host_value_fits(state, arg, raw, params[0])
        }
        _ => false,
    };
    if !fits {
        return -1;
    }
    let Ok(imports) = ThreadImports::of_instance(state, instance) else { return -1 };
    let module = ModuleId(state.instances[instance as usize].module.index);
    let inherited = Inherited::of(state, instance);
    let Some(tid) = spawner.next_tid() else { return -1 };
    lock(&state.rt.handoffs).push((tid, raw));
    let race_ctx = spawned_race_ctx(state);
    let job = RefThread { module, imports, inherited, func: index };
    if spawner.start(tid, move |s| run_ref_thread(s, tid, job, race_ctx)) {
        tid as i32
    } else {
        take_handoff(&spawner.rt, tid);
        -1
    }
}

/// The argument the runtime holds for thread `tid` (removed).
fn take_handoff(rt: &Runtime, tid: u32) -> u64 {
    let mut handoffs = lock(&rt.handoffs);
    match handoffs.iter().position(|&(t, _)| t == tid) {
        Some(i) => handoffs.swap_remove(i).1,
        None => 0,
    }
}

/// The body of a thread started by `vmrun`.`thread_spawn`; how it ends goes to the embedder's handler.
fn run_ref_thread(spawner: &Spawner, tid: u32, job: RefThread, race: Option<Box<vmrace::ThreadCtx>>) {
    if let Err(exit) = Spawner::outcome(|| start_ref_thread(spawner, tid, &job, race)) {
        spawner.report_exit(tid, exit);
    }
}

fn start_ref_thread(
    spawner: &Spawner,
    tid: u32,
    job: &RefThread,
    race: Option<Box<vmrace::ThreadCtx>>,
) -> Result<(), ThreadExit> {
    let mut store = Store::on_thread(spawner.rt.clone(), race);
    // The argument moves from the runtime's hand-off list into this store's host roots while the mutator
    // runs (no collection can happen in between), and stays there until the thread ends.
    {
        let mut s = crate::safepoint::Running::new(&mut store.s);
        let arg = take_handoff(&s.rt, tid);
        s.mutator.host_roots.push(arg);
    }
    let linker = job.imports.materialize(&mut store);
    let outcome = (|| {
        let instance = {
            let mut s = crate::safepoint::Running::new(&mut store.s);
            s.instantiate_with(job.module, &linker, Some(&job.inherited))
        }
        .map_err(|e| ThreadExit::Failed(e.to_string()))?;
        let mut s = crate::safepoint::Running::new(&mut store.s);
        let m = s.instances[instance.0 as usize].module.clone();
        let f = s.instances[instance.0 as usize].funcs[(m.num_imported_funcs + job.func) as usize];
        let arg = s.mutator.host_roots[0];
        match crate::interp::invoke(&mut s, f, &[arg]) {
            Ok(_) => Ok(()),
            Err(Trap { kind: TrapKind::Exit(code), .. }) => Err(ThreadExit::Exit(code)),
            Err(trap) => Err(ThreadExit::Trap(trap)),
        }
    })();
    drop(store);
    drop(linker);
    outcome
}
