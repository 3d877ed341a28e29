//! WASI preview1 (`wasi_snapshot_preview1`) host functions, enough for programs built with
//! wasi-libc: standard streams, arguments and environment, clocks, randomness, `proc_exit`, and
//! files below directories pre-opened by the embedder (`vmrun --dir`).
//!
//! Structure:
//! - [`WasiCtx`] is what the embedder configures: arguments, environment, pre-opened directories
//!   and the three standard streams.
//! - [`add_to_linker`] turns it into the shared state of all calls (`Arc<Mutex<WasiState>>`,
//!   captured by every host closure) and defines **every** preview1 function in the linker, so
//!   no program fails to link just because it imports a call it never makes.
//!   Implemented: `args_*`, `environ_*`, `clock_res_get`, `clock_time_get` (realtime, monotonic),
//!   `random_get`, `proc_exit`, `sched_yield`, `poll_oneoff` (clocks; descriptors report ready),
//!   `fd_read`, `fd_write`, `fd_seek`, `fd_tell`, `fd_close`, `fd_fdstat_get`,
//!   `fd_filestat_get`, `fd_prestat_get`, `fd_prestat_dir_name`, `fd_readdir`, `path_open`,
//!   `path_filestat_get`, `path_create_directory`, `path_remove_directory`, `path_unlink_file`.
//!   Everything else (sockets, links, renames, timestamps, `fd_pread`/`fd_pwrite`, …) returns
//!   `nosys`; `fd_fdstat_set_flags` returns `notsup`.
//! - `wasi/syscalls.rs` holds the call bodies as plain functions over the state and a
//!   bounds-checked view of linear memory (`wasi/abi.rs`), so they are unit-tested on byte
//!   buffers without the interpreter.
//! - `wasi/sandbox.rs` resolves guest paths; its module comment states the sandbox policy.
//!
//! Invariants: a call never panics and never traps on bad guest input (a bad pointer is
//! `fault`, a bad descriptor `badf`); the only trap is `proc_exit`, which ends the program with
//! [`TrapKind::Exit`]. The host file system is reachable only through pre-opened directories.

mod abi;
mod sandbox;
mod syscalls;

pub use abi::Errno;

use crate::{Caller, Extern, FuncType, Linker, Store, Trap, TrapKind, Val, ValType};
use abi::GuestMemory;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use syscalls::{DirFd, FdEntry, Params, WasiState};

/// The import module name of preview1.
pub const MODULE: &str = "wasi_snapshot_preview1";

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

    fn into_state(self) -> WasiState {
        let mut fds = vec![
            Some(FdEntry::Input(self.stdin)),
            Some(FdEntry::Output(self.stdout)),
            Some(FdEntry::Output(self.stderr)),
        ];
        for p in self.preopens {
            let dir = DirFd { root: Arc::new(p.host), components: Vec::new(), preopen_name: Some(p.guest) };
            fds.push(Some(FdEntry::Dir(dir)));
        }
        WasiState {
            args: self.args,
            env: self.env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            fds,
            clock_origin: std::time::Instant::now(),
        }
    }
}

type Body = fn(&mut WasiState, &mut GuestMemory, &Params) -> Result<(), Errno>;

const I32: ValType = ValType::I32;
const I64: ValType = ValType::I64;

/// Every preview1 function returning an errno: name, parameter types, body.
const CALLS: &[(&str, &[ValType], Body)] = &[
    ("args_get", &[I32, I32], |s, m, p| s.args_get(m, p.u32(0)?, p.u32(1)?)),
    ("args_sizes_get", &[I32, I32], |s, m, p| s.args_sizes_get(m, p.u32(0)?, p.u32(1)?)),
    ("environ_get", &[I32, I32], |s, m, p| s.environ_get(m, p.u32(0)?, p.u32(1)?)),
    ("environ_sizes_get", &[I32, I32], |s, m, p| s.environ_sizes_get(m, p.u32(0)?, p.u32(1)?)),
    ("clock_res_get", &[I32, I32], |s, m, p| s.clock_res_get(m, p.u32(0)?, p.u32(1)?)),
    // (id, precision, time_ptr): the precision hint is ignored.
    ("clock_time_get", &[I32, I64, I32], |s, m, p| s.clock_time_get(m, p.u32(0)?, p.u32(2)?)),
    ("fd_advise", &[I32, I64, I64, I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_allocate", &[I32, I64, I64], |_, _, _| Err(Errno::Nosys)),
    ("fd_close", &[I32], |s, _, p| s.fd_close(p.u32(0)?)),
    ("fd_datasync", &[I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_fdstat_get", &[I32, I32], |s, m, p| s.fd_fdstat_get(m, p.u32(0)?, p.u32(1)?)),
    ("fd_fdstat_set_flags", &[I32, I32], |s, _, p| s.fd_fdstat_set_flags(p.u32(0)?)),
    ("fd_fdstat_set_rights", &[I32, I64, I64], |_, _, _| Err(Errno::Nosys)),
    ("fd_filestat_get", &[I32, I32], |s, m, p| s.fd_filestat_get(m, p.u32(0)?, p.u32(1)?)),
    ("fd_filestat_set_size", &[I32, I64], |_, _, _| Err(Errno::Nosys)),
    ("fd_filestat_set_times", &[I32, I64, I64, I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_pread", &[I32, I32, I32, I64, I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_prestat_get", &[I32, I32], |s, m, p| s.fd_prestat_get(m, p.u32(0)?, p.u32(1)?)),
    ("fd_prestat_dir_name", &[I32, I32, I32], |s, m, p| s.fd_prestat_dir_name(m, p.u32(0)?, p.u32(1)?, p.u32(2)?)),
    ("fd_pwrite", &[I32, I32, I32, I64, I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_read", &[I32, I32, I32, I32], |s, m, p| s.fd_read(m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?)),
    ("fd_readdir", &[I32, I32, I32, I64, I32], |s, m, p| {
        s.fd_readdir(m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u64(3)?, p.u32(4)?)
    }),
    ("fd_renumber", &[I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_seek", &[I32, I64, I32, I32], |s, m, p| s.fd_seek(m, p.u32(0)?, p.u64(1)? as i64, p.u32(2)?, p.u32(3)?)),
    ("fd_sync", &[I32], |_, _, _| Err(Errno::Nosys)),
    ("fd_tell", &[I32, I32], |s, m, p| s.fd_tell(m, p.u32(0)?, p.u32(1)?)),
    ("fd_write", &[I32, I32, I32, I32], |s, m, p| s.fd_write(m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?)),
    ("path_create_directory", &[I32, I32, I32], |s, m, p| {
        s.path_create_directory(m, p.u32(0)?, (p.u32(1)?, p.u32(2)?))
    }),
    ("path_filestat_get", &[I32, I32, I32, I32, I32], |s, m, p| {
        s.path_filestat_get(m, p.u32(0)?, p.u32(1)?, (p.u32(2)?, p.u32(3)?), p.u32(4)?)
    }),
    ("path_filestat_set_times", &[I32, I32, I32, I32, I64, I64, I32], |_, _, _| Err(Errno::Nosys)),
    ("path_link", &[I32, I32, I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    // (dirfd, dirflags, path, path_len, oflags, rights_base, rights_inheriting, fdflags, fd_ptr)
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32], |s, m, p| {
        let (oflags, fdflags) = (p.u32(4)? as u16, p.u32(7)? as u16);
        s.path_open(m, p.u32(0)?, p.u32(1)?, (p.u32(2)?, p.u32(3)?), oflags, p.u64(5)?, fdflags, p.u32(8)?)
    }),
    ("path_readlink", &[I32, I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("path_remove_directory", &[I32, I32, I32], |s, m, p| {
        s.path_remove_directory(m, p.u32(0)?, (p.u32(1)?, p.u32(2)?))
    }),
    ("path_rename", &[I32, I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    // Not provided on purpose: a guest-made link is the easiest way around a path sandbox.
    ("path_symlink", &[I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("path_unlink_file", &[I32, I32, I32], |s, m, p| s.path_unlink_file(m, p.u32(0)?, (p.u32(1)?, p.u32(2)?))),
    ("poll_oneoff", &[I32, I32, I32, I32], |s, m, p| s.poll_oneoff(m, p.u32(0)?, p.u32(1)?, p.u32(2)?, p.u32(3)?)),
    ("proc_raise", &[I32], |_, _, _| Err(Errno::Nosys)),
    ("random_get", &[I32, I32], |s, m, p| s.random_get(m, p.u32(0)?, p.u32(1)?)),
    ("sched_yield", &[], |_, _, _| Ok(())),
    ("sock_accept", &[I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("sock_recv", &[I32, I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("sock_send", &[I32, I32, I32, I32, I32], |_, _, _| Err(Errno::Nosys)),
    ("sock_shutdown", &[I32, I32], |_, _, _| Err(Errno::Nosys)),
];

/// Define all of `wasi_snapshot_preview1` in `linker`, with `ctx` as the state they share.
pub fn add_to_linker(store: &mut Store, linker: &mut Linker, ctx: WasiCtx) {
    let state = Arc::new(Mutex::new(ctx.into_state()));
    for &(name, params, body) in CALLS {
        let state = state.clone();
        let ty = FuncType { params: params.to_vec(), results: vec![I32] };
        let func = store.new_host_func(
            ty,
            Box::new(move |caller: &mut Caller<'_>, args: &[Val], results: &mut [Val]| {
                // A module without memory still gets an answer: every pointer is out of bounds.
                let mut no_memory: [u8; 0] = [];
                let mut mem = GuestMemory::new(caller.memory().unwrap_or(&mut no_memory));
                let errno = match body(
                    &mut state.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                    &mut mem,
                    &Params(args),
                ) {
                    Ok(()) => 0,
                    Err(e) => e as i32,
                };
                if let Some(r) = results.first_mut() {
                    *r = Val::I32(errno);
                }
                Ok(())
            }),
        );
        linker.define(MODULE, name, Extern::Func(func));
    }
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
    linker.define(MODULE, "proc_exit", Extern::Func(proc_exit));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preview1_function_is_defined_once() {
        let mut store = Store::new(crate::Config::default());
        let mut linker = Linker::new();
        add_to_linker(&mut store, &mut linker, WasiCtx::new(vec![]));
        let mut names: Vec<&str> = CALLS.iter().map(|c| c.0).chain(["proc_exit"]).collect();
        assert_eq!(names.len(), 46, "preview1 has 46 functions");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 46);
        for n in names {
            assert!(matches!(linker.get(MODULE, n), Some(Extern::Func(_))), "{n}");
        }
    }
}
