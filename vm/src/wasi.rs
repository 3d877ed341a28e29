//! WASI preview1 (`wasi_snapshot_preview1`) host functions: every function of the snapshot,
//! with the behaviour and errno values of its specification and of wasmtime, so programs built
//! with wasi-libc or Rust's `std` run unchanged; files are reachable only below directories the
//! embedder pre-opened (`vmrun --dir`). The older preview 0 (`wasi_unstable`) is defined too,
//! over the same bodies and the same state (see [`PREVIEW0_CALLS`] for its differences).
//!
//! Structure (files depend one way: `abi` ← `sandbox`, `fdtable` ← `syscalls` ← `files`, `poll` ←
//! `paths` ← this file):
//! - [`WasiCtx`] is what the embedder configures: arguments, environment, pre-opened directories
//!   and the three standard streams.
//! - [`add_to_linker`] turns it into the shared state of all calls (`Arc<Mutex<WasiState>>`,
//!   captured by every host closure, so guest threads can share it) and defines all 46 preview1
//!   functions in the linker from one table, [`CALLS`], and the 45 of preview 0 from the same
//!   table with [`PREVIEW0_CALLS`] in place of the four whose ABI differs (`whence` order,
//!   the 56-byte `filestat`, the clock `subscription` with an `identifier`).
//! - Most calls run with the state locked; the ones that can wait indefinitely (`fd_read`,
//!   `fd_write` on a stream, `poll_oneoff`) are [`Body::Unlocked`]: they lock only to look up
//!   the descriptor (cloning a stream's handle or duplicating its host fd) and wait without the
//!   lock, so a thread blocked on stdin does not stop the other threads' WASI calls.
//! - `wasi/abi.rs`: errno, the witx constants, and the bounds-checked view of linear memory every
//!   pointer goes through.
//! - `wasi/sandbox.rs`: resolves a guest path below a directory descriptor, one `openat` per
//!   component, never following a link out; its module comment states the sandbox policy.
//! - `wasi/fdtable.rs`: the descriptor table, entries (stream, file, directory) and their rights.
//! - `wasi/syscalls.rs` (state, args, environment, clocks, random, sockets), `wasi/files.rs`
//!   (`fd_*`), `wasi/paths.rs` (`path_*`), `wasi/poll.rs` (`poll_oneoff`): the call bodies, plain
//!   functions over the state and a `GuestMemory`, unit-tested on byte buffers.
//!
//! Invariants: a call never panics and never traps on bad guest input (a bad pointer is
//! `fault`, a bad descriptor `badf`); the only traps are `proc_exit`, which ends the program with
//! [`TrapKind::Exit`], and `proc_raise`, which vmrun does not support (as wasmtime). The host
//! file system is reachable only through the directory descriptors of the table, by `*at` calls
//! on what `sandbox::resolve` returns.

mod abi;
mod fdtable;
mod files;
mod paths;
mod poll;
mod sandbox;
mod syscalls;

pub use abi::Errno;

use crate::{Caller, Extern, FuncType, Linker, Store, Trap, TrapKind, Val, ValType};
use abi::{GuestMemory, rights};
use fdtable::{Entry, FdTable, Kind, Stream, StreamIo};
use rustix::fs::{Mode, OFlags};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use syscalls::{Params, WasiState};

/// The import module name of preview1.
pub const MODULE: &str = "wasi_snapshot_preview1";
/// The import module name of preview 0, which older toolchains target.
pub const MODULE_PREVIEW0: &str = "wasi_unstable";

/// A directory the guest may use: `host` is canonical, `guest` is the name the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
}

/// What a WASI program gets from its embedder.
pub struct WasiCtx {
    /// `argv`, program name first.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Become fds 3, 4, … in this order.
    pub preopens: Vec<Preopen>,
    pub stdin: Box<dyn Read + Send>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
    /// The streams are the process's own (fds 0, 1, 2): `poll_oneoff` waits on them and
    /// `fd_fdstat_get` reports a terminal as one (how `isatty` answers).
    pub host_stdio: bool,
}

impl WasiCtx {
    /// The process's own standard streams, no environment, no directories.
    pub fn new(args: Vec<String>) -> WasiCtx {
        WasiCtx {
            args,
            env: Vec::new(),
            preopens: Vec::new(),
            stdin: Box::new(std::io::stdin()),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
            host_stdio: true,
        }
    }

    /// Pre-open host directory `host` under the guest name `guest`.
    pub fn preopen(&mut self, host: &Path, guest: &str) -> std::io::Result<()> {
        let canonical = host.canonicalize()?;
        if !canonical.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"));
        }
        self.preopens.push(Preopen { host: canonical, guest: guest.to_string() });
        Ok(())
    }

    fn into_state(self) -> std::io::Result<WasiState> {
        let host = |fd: std::os::fd::BorrowedFd<'_>| if self.host_stdio { fd.try_clone_to_owned().ok() } else { None };
        let streams = [
            (StreamIo::Input(self.stdin), host(std::io::stdin().as_fd())),
            (StreamIo::Output(self.stdout), host(std::io::stdout().as_fd())),
            (StreamIo::Output(self.stderr), host(std::io::stderr().as_fd())),
        ];
        let mut fds = FdTable::default();
        for (io, host) in streams {
            fds.push(Entry::new(Kind::Stream(Stream::new(io, host)), rights::STREAM, 0));
        }
        for p in &self.preopens {
            fds.push(preopen_entry(p)?);
        }
        Ok(WasiState { args: self.args, env: self.env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(), fds })
    }
}

/// The descriptor of a pre-opened directory: all directory rights, and every right inheritable.
pub(crate) fn preopen_entry(p: &Preopen) -> std::io::Result<Entry> {
    let fd = rustix::fs::open(&p.host, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut entry = Entry::new(Kind::Dir(fd), rights::DIRECTORY, rights::DIRECTORY | rights::FILE);
    entry.preopen = Some(p.guest.clone());
    Ok(entry)
}

/// What to tell a person whose program imports something from `module` that is not defined.
pub fn missing_import_hint(module: &str) -> String {
    if module == MODULE {
        format!(" (vmrun implements all 46 functions of `{MODULE}`; this name is not one of them)")
    } else if module == MODULE_PREVIEW0 {
        format!(" (vmrun implements all 45 functions of `{MODULE_PREVIEW0}`; this name is not one of them)")
    } else if module.starts_with("wasi:") {
        format!(" (a WASI preview2 component import; vmrun runs core modules with WASI preview1, `{MODULE}`)")
    } else if module.starts_with("wasi") {
        format!(" (vmrun provides WASI preview1 as `{MODULE}` and preview 0 as `{MODULE_PREVIEW0}`, not `{module}`)")
    } else {
        format!(" (vmrun provides `{MODULE}` and the modules given with --preload NAME=FILE)")
    }
}

/// How a call runs against the shared state.
enum Body {
    /// With the state locked for the whole call (it does not wait for anything outside).
    Locked(fn(&mut WasiState, &mut GuestMemory, &Params) -> Result<(), Errno>),
    /// Takes the lock itself, and never while it waits.
    Unlocked(fn(&Mutex<WasiState>, &mut GuestMemory, &Params) -> Result<(), Errno>),
}
use Body::{Locked, Unlocked};

type Call = (&'static str, &'static [ValType], Body);

const I32: ValType = ValType::I32;
const I64: ValType = ValType::I64;

/// Every preview1 function returning an errno: name, parameter types, body.
#[rustfmt::skip]
const CALLS: &[Call] = &[
    ("args_get", &[I32, I32], Locked(|s, m, p| s.args_get(m, p.u32(0)?, p.u32(1)?))),
    ("args_sizes_get", &[I32, I32], Locked(|s, m, p| s.args_sizes_get(m, p.u32(0)?, p.u32(1)?))),
    ("environ_get", &[I32, I32], Locked(|s, m, p| s.environ_get(m, p.u32(0)?, p.u32(1)?))),
    ("environ_sizes_get", &[I32, I32], Locked(|s, m, p| s.environ_sizes_get(m, p.u32(0)?, p.u32(1)?))),
    ("clock_res_get", &[I32, I32], Locked(|s, m, p| s.clock_res_get(m, p.u32(0)?, p.u32(1)?))),
    // (id, precision, time_ptr)
    ("clock_time_get", &[I32, I64, I32], Locked(|s, m, p| s.clock_time_get(m, p.u32(0)?, p.u32(2)?))),
    ("fd_advise", &[I32, I64, I64, I32], Locked(|s, _, p| s.fd_advise(p.u32(0)?, p.u64(1)?, p.u64(2)?, p.u32(3)?))),
    ("fd_allocate", &[I32, I64, I64], Locked(|s, _, p| s.fd_allocate(p.u32(0)?, p.u64(1)?, p.u64(2)?))),
    ("fd_close", &[I32], Locked(|s, _, p| s.fd_close(p.u32(0)?))),
    ("fd_datasync", &[I32], Locked(|s, _, p| s.fd_datasync(p.u32(0)?))),
    ("fd_fdstat_get", &[I32, I32], Locked(|s, m, p| s.fd_fdstat_get(m, p.u32(0)?, p.u32(1)?))),
    ("fd_fdstat_set_flags", &[I32, I32], Locked(|s, _, p| s.fd_fdstat_set_flags(p.u32(0)?, p.u32(1)? as u16))),
    ("fd_fdstat_set_rights", &[I32, I64, I64], Locked(|s, _, p| s.fd_fdstat_set_rights(p.u32(0)?, p.u64(1)?, p.u64(2)?))),
    ("fd_filestat_get", &[I32, I32], Locked(|s, m, p| s.fd_filestat_get(m, p.u32(0)?, p.u32(1)?))),
    ("fd_filestat_set_size", &[I32, I64], Locked(|s, _, p| s.fd_filestat_set_size(p.u32(0)?, p.u64(1)?))),
    ("fd_filestat_set_times", &[I32, I64, I64, I32], Locked(|s, _, p| {
        s.fd_filestat_set_times(p.u32(0)?, p.u64(1)?, p.u64(2)?, p.u32(3)? as u16)
    })),
    // (fd, iovs, iovs_len, offset, nread)
    ("fd_pread", &[I32, I32, I32, I64, I32], Locked(|s, m, p| s.fd_pread(m, p.u32(0)?, p.buf(1)?, p.u64(3)?, p.u32(4)?))),
    ("fd_prestat_get", &[I32, I32], Locked(|s, m, p| s.fd_prestat_get(m, p.u32(0)?, p.u32(1)?))),
    ("fd_prestat_dir_name", &[I32, I32, I32], Locked(|s, m, p| s.fd_prestat_dir_name(m, p.u32(0)?, p.u32(1)?, p.u32(2)?))),
    ("fd_pwrite", &[I32, I32, I32, I64, I32], Locked(|s, m, p| s.fd_pwrite(m, p.u32(0)?, p.buf(1)?, p.u64(3)?, p.u32(4)?))),
    ("fd_read", &[I32, I32, I32, I32], Unlocked(|s, m, p| {
        files::fd_read_unlocked(s, m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?)
    })),
    // (fd, buf, buf_len, cookie, bufused)
    ("fd_readdir", &[I32, I32, I32, I64, I32], Locked(|s, m, p| {
        s.fd_readdir(m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u64(3)?, p.u32(4)?)
    })),
    ("fd_renumber", &[I32, I32], Locked(|s, _, p| s.fd_renumber(p.u32(0)?, p.u32(1)?))),
    ("fd_seek", &[I32, I64, I32, I32], Locked(|s, m, p| s.fd_seek(m, p.u32(0)?, p.u64(1)? as i64, p.u32(2)?, p.u32(3)?))),
    ("fd_sync", &[I32], Locked(|s, _, p| s.fd_sync(p.u32(0)?))),
    ("fd_tell", &[I32, I32], Locked(|s, m, p| s.fd_tell(m, p.u32(0)?, p.u32(1)?))),
    ("fd_write", &[I32, I32, I32, I32], Unlocked(|s, m, p| {
        files::fd_write_unlocked(s, m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?)
    })),
    ("path_create_directory", &[I32, I32, I32], Locked(|s, m, p| s.path_create_directory(m, p.u32(0)?, p.buf(1)?))),
    // (fd, lookupflags, path, path_len, buf)
    ("path_filestat_get", &[I32, I32, I32, I32, I32], Locked(|s, m, p| {
        s.path_filestat_get(m, p.u32(0)?, p.u32(1)?, p.buf(2)?, p.u32(4)?)
    })),
    // (fd, lookupflags, path, path_len, atim, mtim, fstflags)
    ("path_filestat_set_times", &[I32, I32, I32, I32, I64, I64, I32], Locked(|s, m, p| {
        s.path_filestat_set_times(m, p.u32(0)?, p.u32(1)?, p.buf(2)?, p.u64(4)?, p.u64(5)?, p.u32(6)? as u16)
    })),
    // (old_fd, old_lookupflags, old_path, old_len, new_fd, new_path, new_len)
    ("path_link", &[I32, I32, I32, I32, I32, I32, I32], Locked(|s, m, p| {
        s.path_link(m, p.u32(0)?, p.u32(1)?, p.buf(2)?, p.u32(4)?, p.buf(5)?)
    })),
    // (dirfd, lookupflags, path, path_len, oflags, rights_base, rights_inheriting, fdflags, fd_ptr)
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32], Locked(|s, m, p| {
        let (oflags, fdflags) = (p.u32(4)? as u16, p.u32(7)? as u16);
        s.path_open(m, p.u32(0)?, p.u32(1)?, p.buf(2)?, oflags, (p.u64(5)?, p.u64(6)?), fdflags, p.u32(8)?)
    })),
    // (fd, path, path_len, buf, buf_len, bufused)
    ("path_readlink", &[I32, I32, I32, I32, I32, I32], Locked(|s, m, p| {
        s.path_readlink(m, p.u32(0)?, p.buf(1)?, p.u32(3)?, p.u32(4)?, p.u32(5)?)
    })),
    ("path_remove_directory", &[I32, I32, I32], Locked(|s, m, p| s.path_remove_directory(m, p.u32(0)?, p.buf(1)?))),
    // (fd, old_path, old_len, new_fd, new_path, new_len)
    ("path_rename", &[I32, I32, I32, I32, I32, I32], Locked(|s, m, p| {
        s.path_rename(m, p.u32(0)?, p.buf(1)?, p.u32(3)?, p.buf(4)?)
    })),
    // (old_path, old_len, fd, new_path, new_len)
    ("path_symlink", &[I32, I32, I32, I32, I32], Locked(|s, m, p| s.path_symlink(m, p.buf(0)?, p.u32(2)?, p.buf(3)?))),
    ("path_unlink_file", &[I32, I32, I32], Locked(|s, m, p| s.path_unlink_file(m, p.u32(0)?, p.buf(1)?))),
    ("poll_oneoff", &[I32, I32, I32, I32], Unlocked(|s, m, p| {
        poll::poll_oneoff(s, m, poll::PREVIEW1, (p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?))
    })),
    ("random_get", &[I32, I32], Locked(|s, m, p| s.random_get(m, p.u32(0)?, p.u32(1)?))),
    ("sched_yield", &[], Locked(|s, _, _| s.sched_yield())),
    // vmrun hands out no sockets: `notsock` for an open descriptor, `badf` otherwise.
    ("sock_accept", &[I32, I32, I32], Locked(|s, _, p| s.sock_call(p.u32(0)?))),
    ("sock_recv", &[I32, I32, I32, I32, I32, I32], Locked(|s, _, p| s.sock_call(p.u32(0)?))),
    ("sock_send", &[I32, I32, I32, I32, I32], Locked(|s, _, p| s.sock_call(p.u32(0)?))),
    ("sock_shutdown", &[I32, I32], Locked(|s, _, p| s.sock_call(p.u32(0)?))),
];

/// The preview 0 (`wasi_unstable`) calls whose ABI differs from preview1's (checked against the
/// snapshot-0 witx, `typenames.witx` and `wasi_unstable.witx`); every other preview 0 function
/// is its preview1 namesake, and preview 0 has no `sock_accept`. Hand-written `.wat` programs
/// test them (`tests/fixtures/wasi0_*.wat`), as no toolchain here still emits `wasi_unstable`.
#[rustfmt::skip]
const PREVIEW0_CALLS: &[Call] = &[
    // `whence` is cur=0, end=1, set=2.
    ("fd_seek", &[I32, I64, I32, I32], Locked(|s, m, p| {
        s.fd_seek(m, p.u32(0)?, p.u64(1)? as i64, abi::whence::from_preview0(p.u32(2)?), p.u32(3)?)
    })),
    // `filestat` is 56 bytes: `nlink` is a u32.
    ("fd_filestat_get", &[I32, I32], Locked(|s, m, p| m.write_bytes(p.u32(1)?, &s.fd_filestat(p.u32(0)?)?.preview0()))),
    ("path_filestat_get", &[I32, I32, I32, I32, I32], Locked(|s, m, p| {
        let st = s.path_filestat(m, p.u32(0)?, p.u32(1)?, p.buf(2)?)?;
        m.write_bytes(p.u32(4)?, &st.preview0())
    })),
    // A clock `subscription` starts with a u64 `identifier`: 56-byte subscriptions.
    ("poll_oneoff", &[I32, I32, I32, I32], Unlocked(|s, m, p| {
        poll::poll_oneoff(s, m, poll::PREVIEW0, (p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?))
    })),
];

/// The calls of `module`: preview1's table, or preview 0's (the same with its overrides).
fn calls_of(module: &str) -> impl Iterator<Item = &'static Call> + '_ {
    CALLS.iter().filter_map(move |call| {
        if module != MODULE_PREVIEW0 {
            return Some(call);
        }
        if call.0 == "sock_accept" {
            return None;
        }
        Some(PREVIEW0_CALLS.iter().find(|c| c.0 == call.0).unwrap_or(call))
    })
}

/// Define all of `wasi_snapshot_preview1` and `wasi_unstable` in `linker`, with `ctx` as the
/// state they share. Fails only if a pre-opened directory cannot be opened.
pub fn add_to_linker(store: &mut Store, linker: &mut Linker, ctx: WasiCtx) -> std::io::Result<()> {
    let state = Arc::new(Mutex::new(ctx.into_state()?));
    for module in [MODULE, MODULE_PREVIEW0] {
        for (name, params, body) in calls_of(module) {
            let func = host_call(store, state.clone(), params, body);
            linker.define(module, name, Extern::Func(func));
        }
        define_proc_calls(store, linker, module);
    }
    Ok(())
}

/// The host function of one errno-returning call over the shared `state`.
fn host_call(store: &mut Store, state: Arc<Mutex<WasiState>>, params: &[ValType], body: &'static Body) -> crate::Func {
    let ty = FuncType { params: params.to_vec(), results: vec![I32] };
    store.new_host_func(
        ty,
        Box::new(move |caller: &mut Caller<'_>, args: &[Val], results: &mut [Val]| {
            // A module without memory still gets an answer: every pointer is out of bounds.
            let mut no_memory: [u8; 0] = [];
            let mut mem = GuestMemory::new(caller.memory().unwrap_or(&mut no_memory));
            let outcome = match body {
                Locked(f) => f(&mut syscalls::lock(&state), &mut mem, &Params(args)),
                Unlocked(f) => f(&state, &mut mem, &Params(args)),
            };
            if let Some(r) = results.first_mut() {
                *r = Val::I32(match outcome {
                    Ok(()) => 0,
                    Err(e) => e as i32,
                });
            }
            Ok(())
        }),
    )
}

/// `proc_exit` and `proc_raise`, the calls that do not return an errno.
fn define_proc_calls(store: &mut Store, linker: &mut Linker, module: &str) {
    let proc_exit = store.new_host_func(
        FuncType { params: vec![I32], results: vec![] },
        Box::new(|_: &mut Caller<'_>, args: &[Val], _: &mut [Val]| {
            let code = match args.first() {
                Some(Val::I32(c)) => *c,
                _ => 1,
            };
            Err(Trap::new(TrapKind::Exit(code)))
        }),
    );
    linker.define(module, "proc_exit", Extern::Func(proc_exit));
    // Raising a signal in the host process would hand the guest the host's signal handling;
    // wasmtime traps here too.
    let proc_raise = store.new_host_func(
        FuncType { params: vec![I32], results: vec![I32] },
        Box::new(|_: &mut Caller<'_>, args: &[Val], _: &mut [Val]| {
            let sig = match args.first() {
                Some(Val::I32(c)) => *c,
                _ => 0,
            };
            Err(Trap::new(TrapKind::Host(format!(
                "proc_raise({sig}) is not supported: vmrun does not deliver signals"
            ))))
        }),
    );
    linker.define(module, "proc_raise", Extern::Func(proc_raise));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preview1_function_is_defined_once() {
        let mut store = Store::new(crate::Config::default());
        let mut linker = Linker::new();
        add_to_linker(&mut store, &mut linker, WasiCtx::new(vec![])).unwrap();
        let mut names: Vec<&str> = CALLS.iter().map(|c| c.0).chain(["proc_exit", "proc_raise"]).collect();
        assert_eq!(names.len(), 46, "preview1 has 46 functions");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 46);
        for n in &names {
            assert!(matches!(linker.get(MODULE, n), Some(Extern::Func(_))), "{n}");
            let in_preview0 = *n != "sock_accept";
            assert_eq!(matches!(linker.get(MODULE_PREVIEW0, n), Some(Extern::Func(_))), in_preview0, "{n}");
        }
    }

    #[test]
    fn preview0_overrides_keep_the_preview1_signatures() {
        for call in PREVIEW0_CALLS {
            let preview1 = CALLS.iter().find(|c| c.0 == call.0).expect("an override of a preview1 call");
            assert_eq!(preview1.1, call.1, "{}", call.0);
            let chosen = calls_of(MODULE_PREVIEW0).find(|c| c.0 == call.0).unwrap();
            assert!(std::ptr::eq(chosen, call), "preview 0 uses its own {}", call.0);
        }
        assert_eq!(calls_of(MODULE_PREVIEW0).count() + 2, 45, "preview 0 has 45 functions");
    }
}
