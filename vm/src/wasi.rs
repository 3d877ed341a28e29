//! WASI preview1 host functions: enough for programs built with wasi-libc.
//!
//! Each call is a function over guest memory (`&mut [u8]`) and the [`WasiCtx`], so the syscall
//! bodies can be unit-tested without running wasm. Every guest pointer and length is bounds-checked
//! (a bad one is `EFAULT`, never a host crash), unsupported calls return `ENOSYS`, and nothing
//! traps except `proc_exit`.
//!
//! # Sandbox
//!
//! The guest sees only the directories pre-opened with `--dir`. A path is resolved component by
//! component against its pre-open: absolute paths are refused, `..` may not climb above the
//! pre-open, and the resolved host path (after following symlinks, for paths that exist) must still
//! lie inside the pre-open's canonical directory. Anything else is `ENOTCAPABLE`.

use crate::{Caller, Extern, FuncType, Linker, Store, Trap, TrapKind, Val, ValType};
use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// WASI errno values used here.
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const ACCES: i32 = 2;
    pub const BADF: i32 = 8;
    pub const EXIST: i32 = 20;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const IO: i32 = 29;
    pub const ISDIR: i32 = 31;
    pub const NOENT: i32 = 44;
    pub const NOSYS: i32 = 52;
    pub const NOTDIR: i32 = 54;
    pub const SPIPE: i32 = 70;
    pub const NOTCAPABLE: i32 = 76;
}

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;

enum Fd {
    Stdin,
    Stdout,
    Stderr,
    /// A pre-opened directory: its canonical host path and the name the guest sees.
    Dir { host: PathBuf, guest: String },
    File(std::fs::File),
}

/// The state of one WASI program: arguments, environment, open descriptors.
pub struct WasiCtx {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    fds: Vec<Option<Fd>>,
}

impl WasiCtx {
    /// A context with stdin/stdout/stderr and the given `argv`.
    pub fn new(args: Vec<String>) -> WasiCtx {
        WasiCtx { args, env: Vec::new(), fds: vec![Some(Fd::Stdin), Some(Fd::Stdout), Some(Fd::Stderr)] }
    }

    /// Pre-open host directory `host` under the guest name `guest`.
    pub fn preopen(&mut self, host: &Path, guest: &str) -> std::io::Result<()> {
        let host = host.canonicalize()?;
        if !host.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"));
        }
        self.fds.push(Some(Fd::Dir { host, guest: guest.to_string() }));
        Ok(())
    }

    fn fd(&mut self, fd: i32) -> Result<&mut Fd, i32> {
        usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)).and_then(Option::as_mut).ok_or(errno::BADF)
    }
}

// ---- guest memory access, bounds-checked

fn slice(mem: &[u8], ptr: i32, len: u32) -> Result<&[u8], i32> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len as usize).ok_or(errno::FAULT)?).ok_or(errno::FAULT)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: u32) -> Result<&mut [u8], i32> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(len as usize).ok_or(errno::FAULT)?).ok_or(errno::FAULT)
}

fn read_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    Ok(u32::from_le_bytes(slice(mem, ptr, 4)?.try_into().map_err(|_| errno::FAULT)?))
}

fn write_bytes(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    slice_mut(mem, ptr, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

/// The (buf, len) pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<(i32, u32)>, i32> {
    (0..count as u32)
        .map(|i| {
            let at = (iovs as u32).checked_add(i * 8).ok_or(errno::FAULT)? as i32;
            Ok((read_u32(mem, at)? as i32, read_u32(mem, at + 4)?))
        })
        .collect()
}

fn io_errno(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => errno::NOENT,
        K::PermissionDenied => errno::ACCES,
        K::AlreadyExists => errno::EXIST,
        K::NotADirectory => errno::NOTDIR,
        K::IsADirectory => errno::ISDIR,
        K::InvalidInput => errno::INVAL,
        _ => errno::IO,
    }
}

// ---- the calls

pub fn fd_write(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, iovs: i32, count: i32, nwritten: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let mut data = Vec::new();
        for (buf, len) in iovecs(mem, iovs, count)? {
            data.extend_from_slice(slice(mem, buf, len)?);
        }
        let n = data.len() as u32;
        match ctx.fd(fd)? {
            Fd::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data).and_then(|_| out.flush()).map_err(|e| io_errno(&e))?
            }
            Fd::Stderr => std::io::stderr().write_all(&data).map_err(|e| io_errno(&e))?,
            Fd::File(f) => f.write_all(&data).map_err(|e| io_errno(&e))?,
            Fd::Stdin => return Err(errno::BADF),
            Fd::Dir { .. } => return Err(errno::ISDIR),
        }
        write_u32(mem, nwritten, n)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_read(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, iovs: i32, count: i32, nread: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let vecs = iovecs(mem, iovs, count)?;
        let mut total = 0u32;
        for (buf, len) in vecs {
            let dst = slice_mut(mem, buf, len)?;
            let n = match ctx.fd(fd)? {
                Fd::Stdin => std::io::stdin().read(dst),
                Fd::File(f) => f.read(dst),
                Fd::Stdout | Fd::Stderr => return Err(errno::BADF),
                Fd::Dir { .. } => return Err(errno::ISDIR),
            }
            .map_err(|e| io_errno(&e))?;
            total += n as u32;
            if n < len as usize {
                break;
            }
        }
        write_u32(mem, nread, total)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_close(ctx: &mut WasiCtx, fd: i32) -> i32 {
    match ctx.fd(fd) {
        Ok(Fd::File(_)) => {
            ctx.fds[fd as usize] = None;
            errno::SUCCESS
        }
        Ok(_) => errno::SUCCESS,
        Err(e) => e,
    }
}

pub fn fd_seek(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, offset: i64, whence: i32, newoffset: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let pos = match whence {
            0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| errno::INVAL)?),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            _ => return Err(errno::INVAL),
        };
        let n = match ctx.fd(fd)? {
            Fd::File(f) => f.seek(pos).map_err(|e| io_errno(&e))?,
            Fd::Dir { .. } => return Err(errno::ISDIR),
            _ => return Err(errno::SPIPE),
        };
        write_u64(mem, newoffset, n)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_fdstat_get(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, out: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let filetype = match ctx.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => FILETYPE_CHARACTER_DEVICE,
            Fd::Dir { .. } => FILETYPE_DIRECTORY,
            Fd::File(_) => FILETYPE_REGULAR_FILE,
        };
        let mut stat = [0u8; 24];
        stat[0] = filetype;
        stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        write_bytes(mem, out, &stat)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_filestat_get(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, out: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let (filetype, size) = match ctx.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => (FILETYPE_CHARACTER_DEVICE, 0),
            Fd::Dir { .. } => (FILETYPE_DIRECTORY, 0),
            Fd::File(f) => (FILETYPE_REGULAR_FILE, f.metadata().map_err(|e| io_errno(&e))?.len()),
        };
        let mut stat = [0u8; 64];
        stat[16] = filetype;
        stat[24..32].copy_from_slice(&1u64.to_le_bytes());
        stat[32..40].copy_from_slice(&size.to_le_bytes());
        write_bytes(mem, out, &stat)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_prestat_get(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, out: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        match ctx.fd(fd)? {
            Fd::Dir { guest, .. } => {
                let len = guest.len() as u32;
                write_u32(mem, out, 0)?;
                write_u32(mem, out + 4, len)
            }
            _ => Err(errno::BADF),
        }
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn fd_prestat_dir_name(mem: &mut [u8], ctx: &mut WasiCtx, fd: i32, path: i32, len: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        match ctx.fd(fd)? {
            Fd::Dir { guest, .. } => {
                let bytes = guest.as_bytes();
                let n = bytes.len().min(len as u32 as usize);
                write_bytes(mem, path, &bytes[..n])
            }
            _ => Err(errno::BADF),
        }
    };
    run().err().unwrap_or(errno::SUCCESS)
}

/// Resolve a guest path against a pre-opened directory, refusing escapes.
pub fn resolve_in(root: &Path, guest_path: &str) -> Result<PathBuf, i32> {
    let p = Path::new(guest_path);
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop().ok_or(errno::NOTCAPABLE)?;
            }
            Component::RootDir | Component::Prefix(_) => return Err(errno::NOTCAPABLE),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(parts);
    // Symlinks: whatever exists of the path must stay inside the root once resolved.
    let existing = if host.exists() { Some(host.clone()) } else { host.parent().map(Path::to_path_buf) };
    if let Some(e) = existing {
        if let Ok(real) = e.canonicalize() {
            if !real.starts_with(root) {
                return Err(errno::NOTCAPABLE);
            }
        }
    }
    Ok(host)
}

#[allow(clippy::too_many_arguments)]
pub fn path_open(
    mem: &mut [u8],
    ctx: &mut WasiCtx,
    dirfd: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    fdflags: i32,
    out_fd: i32,
) -> i32 {
    let mut run = || -> Result<(), i32> {
        let guest = std::str::from_utf8(slice(mem, path, path_len as u32)?).map_err(|_| errno::INVAL)?.to_string();
        let root = match ctx.fd(dirfd)? {
            Fd::Dir { host, .. } => host.clone(),
            _ => return Err(errno::NOTDIR),
        };
        let host = resolve_in(&root, &guest)?;
        const CREAT: i32 = 1;
        const DIRECTORY: i32 = 2;
        const EXCL: i32 = 4;
        const TRUNC: i32 = 8;
        const APPEND: i32 = 1;
        let fd = if oflags & DIRECTORY != 0 || host.is_dir() {
            if !host.is_dir() {
                return Err(errno::NOTDIR);
            }
            Fd::Dir { host, guest }
        } else {
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true);
            if oflags & (CREAT | TRUNC) != 0 || fdflags & APPEND != 0 {
                opts.write(true);
            }
            if oflags & CREAT != 0 {
                if oflags & EXCL != 0 {
                    opts.create_new(true);
                } else {
                    opts.create(true);
                }
            }
            opts.truncate(oflags & TRUNC != 0).append(fdflags & APPEND != 0);
            let f = opts.open(&host).or_else(|e| {
                // Write-only files: retry without read access.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    opts.read(false).write(true).open(&host)
                } else {
                    Err(e)
                }
            });
            Fd::File(f.map_err(|e| io_errno(&e))?)
        };
        ctx.fds.push(Some(fd));
        write_u32(mem, out_fd, (ctx.fds.len() - 1) as u32)
    };
    run().err().unwrap_or(errno::SUCCESS)
}

/// `args_*` and `environ_*` share one encoding: NUL-terminated strings and a pointer array.
fn strings_sizes(mem: &mut [u8], strings: &[String], count: i32, size: i32) -> i32 {
    let bytes: usize = strings.iter().map(|s| s.len() + 1).sum();
    let r = write_u32(mem, count, strings.len() as u32).and_then(|()| write_u32(mem, size, bytes as u32));
    r.err().unwrap_or(errno::SUCCESS)
}

fn strings_get(mem: &mut [u8], strings: &[String], ptrs: i32, buf: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let mut at = buf as u32;
        for (i, s) in strings.iter().enumerate() {
            write_u32(mem, (ptrs as u32 + 4 * i as u32) as i32, at)?;
            write_bytes(mem, at as i32, s.as_bytes())?;
            write_bytes(mem, (at + s.len() as u32) as i32, &[0])?;
            at += s.len() as u32 + 1;
        }
        Ok(())
    };
    run().err().unwrap_or(errno::SUCCESS)
}

pub fn clock_time_get(mem: &mut [u8], clock: i32, out: i32) -> i32 {
    let ns = match clock {
        0 => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        1..=3 => {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
        }
        _ => return errno::INVAL,
    };
    write_u64(mem, out, ns).err().unwrap_or(errno::SUCCESS)
}

pub fn random_get(mem: &mut [u8], buf: i32, len: i32) -> i32 {
    let mut run = || -> Result<(), i32> {
        let dst = slice_mut(mem, buf, len as u32)?;
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(dst)).map_err(|e| io_errno(&e))
    };
    run().err().unwrap_or(errno::SUCCESS)
}

// ---- linking

fn i32s(n: usize) -> Vec<ValType> {
    vec![ValType::I32; n]
}

fn arg_i32(params: &[Val], i: usize) -> i32 {
    match params.get(i) {
        Some(Val::I32(v)) => *v,
        _ => 0,
    }
}

fn arg_i64(params: &[Val], i: usize) -> i64 {
    match params.get(i) {
        Some(Val::I64(v)) => *v,
        _ => 0,
    }
}

/// Register the preview1 functions under `wasi_snapshot_preview1`.
pub fn add_to_linker(store: &mut Store, linker: &mut Linker, ctx: WasiCtx) {
    let ctx = Rc::new(RefCell::new(ctx));
    type Body = fn(&mut [u8], &mut WasiCtx, &[Val]) -> i32;
    let calls: Vec<(&str, Vec<ValType>, Body)> = vec![
        ("fd_write", i32s(4), |m, c, p| fd_write(m, c, arg_i32(p, 0), arg_i32(p, 1), arg_i32(p, 2), arg_i32(p, 3))),
        ("fd_read", i32s(4), |m, c, p| fd_read(m, c, arg_i32(p, 0), arg_i32(p, 1), arg_i32(p, 2), arg_i32(p, 3))),
        ("fd_close", i32s(1), |_, c, p| fd_close(c, arg_i32(p, 0))),
        ("fd_seek", vec![ValType::I32, ValType::I64, ValType::I32, ValType::I32], |m, c, p| {
            fd_seek(m, c, arg_i32(p, 0), arg_i64(p, 1), arg_i32(p, 2), arg_i32(p, 3))
        }),
        ("fd_fdstat_get", i32s(2), |m, c, p| fd_fdstat_get(m, c, arg_i32(p, 0), arg_i32(p, 1))),
        ("fd_filestat_get", i32s(2), |m, c, p| fd_filestat_get(m, c, arg_i32(p, 0), arg_i32(p, 1))),
        ("fd_fdstat_set_flags", i32s(2), |_, c, p| c.fd(arg_i32(p, 0)).err().unwrap_or(errno::NOSYS)),
        ("fd_prestat_get", i32s(2), |m, c, p| fd_prestat_get(m, c, arg_i32(p, 0), arg_i32(p, 1))),
        ("fd_prestat_dir_name", i32s(3), |m, c, p| {
            fd_prestat_dir_name(m, c, arg_i32(p, 0), arg_i32(p, 1), arg_i32(p, 2))
        }),
        (
            "path_open",
            vec![
                ValType::I32,
                ValType::I32,
                ValType::I32,
                ValType::I32,
                ValType::I32,
                ValType::I64,
                ValType::I64,
                ValType::I32,
                ValType::I32,
            ],
            |m, c, p| path_open(m, c, arg_i32(p, 0), arg_i32(p, 2), arg_i32(p, 3), arg_i32(p, 4), arg_i32(p, 7), arg_i32(p, 8)),
        ),
        ("args_sizes_get", i32s(2), |m, c, p| strings_sizes(m, &c.args.clone(), arg_i32(p, 0), arg_i32(p, 1))),
        ("args_get", i32s(2), |m, c, p| strings_get(m, &c.args.clone(), arg_i32(p, 0), arg_i32(p, 1))),
        ("environ_sizes_get", i32s(2), |m, c, p| {
            let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            strings_sizes(m, &env, arg_i32(p, 0), arg_i32(p, 1))
        }),
        ("environ_get", i32s(2), |m, c, p| {
            let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            strings_get(m, &env, arg_i32(p, 0), arg_i32(p, 1))
        }),
        ("clock_time_get", vec![ValType::I32, ValType::I64, ValType::I32], |m, _, p| {
            clock_time_get(m, arg_i32(p, 0), arg_i32(p, 2))
        }),
        ("random_get", i32s(2), |m, _, p| random_get(m, arg_i32(p, 0), arg_i32(p, 1))),
        ("sched_yield", vec![], |_, _, _| errno::SUCCESS),
        ("path_filestat_get", i32s(5), |_, _, _| errno::NOSYS),
        ("fd_readdir", vec![ValType::I32, ValType::I32, ValType::I32, ValType::I64, ValType::I32], |_, _, _| errno::NOSYS),
        ("poll_oneoff", i32s(4), |_, _, _| errno::NOSYS),
    ];
    for (name, params, body) in calls {
        let ctx = ctx.clone();
        let ty = FuncType { params, results: vec![ValType::I32] };
        let f = store.new_host_func(
            ty,
            Box::new(move |caller: &mut Caller<'_>, params: &[Val], results: &mut [Val]| {
                let mut c = ctx.borrow_mut();
                let mut empty: [u8; 0] = [];
                let mem = match caller.memory() {
                    Some(m) => m,
                    None => &mut empty[..],
                };
                results[0] = Val::I32(body(mem, &mut c, params));
                Ok(())
            }),
        );
        linker.define("wasi_snapshot_preview1", name, Extern::Func(f));
    }
    let exit = store.new_host_func(
        FuncType { params: vec![ValType::I32], results: vec![] },
        Box::new(|_: &mut Caller<'_>, params: &[Val], _: &mut [Val]| {
            Err(Trap::new(TrapKind::Exit(arg_i32(params, 0))))
        }),
    );
    linker.define("wasi_snapshot_preview1", "proc_exit", Extern::Func(exit));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_preopen() {
        let root = std::env::temp_dir().canonicalize().unwrap();
        assert_eq!(resolve_in(&root, "/etc/passwd"), Err(errno::NOTCAPABLE));
        assert_eq!(resolve_in(&root, "../x"), Err(errno::NOTCAPABLE));
        assert_eq!(resolve_in(&root, "a/../../x"), Err(errno::NOTCAPABLE));
        assert_eq!(resolve_in(&root, "a/./b/../c"), Ok(root.join("a/c")));
    }

    #[test]
    fn fd_write_checks_guest_pointers() {
        let mut mem = vec![0u8; 64];
        let mut ctx = WasiCtx::new(vec![]);
        // iovec at 0 pointing past the end of memory.
        mem[0..4].copy_from_slice(&60u32.to_le_bytes());
        mem[4..8].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(fd_write(&mut mem, &mut ctx, 1, 0, 1, 16), errno::FAULT);
        assert_eq!(fd_write(&mut mem, &mut ctx, 1, 0, 1, 1 << 30), errno::FAULT);
        assert_eq!(fd_write(&mut mem, &mut ctx, 9, 0, 0, 16), errno::BADF);
    }

    #[test]
    fn args_are_encoded_as_c_strings() {
        let mut mem = vec![0u8; 64];
        let args = vec!["prog".to_string(), "x".to_string()];
        assert_eq!(strings_sizes(&mut mem, &args, 0, 4), 0);
        assert_eq!(read_u32(&mem, 0), Ok(2));
        assert_eq!(read_u32(&mem, 4), Ok(7));
        assert_eq!(strings_get(&mut mem, &args, 8, 16), 0);
        assert_eq!(read_u32(&mem, 8), Ok(16));
        assert_eq!(read_u32(&mem, 12), Ok(21));
        assert_eq!(&mem[16..23], b"prog\0x\0");
    }

    #[test]
    fn prestat_reports_the_guest_name() {
        let mut mem = vec![0u8; 64];
        let mut ctx = WasiCtx::new(vec![]);
        ctx.preopen(&std::env::temp_dir(), "sandbox").unwrap();
        assert_eq!(fd_prestat_get(&mut mem, &mut ctx, 3, 0), 0);
        assert_eq!(read_u32(&mem, 4), Ok(7));
        assert_eq!(fd_prestat_dir_name(&mut mem, &mut ctx, 3, 8, 7), 0);
        assert_eq!(&mem[8..15], b"sandbox");
        assert_eq!(fd_prestat_get(&mut mem, &mut ctx, 1, 0), errno::BADF);
    }
}
