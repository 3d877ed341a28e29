//! The WASI state and the calls that are not about files: arguments, environment, clocks,
//! randomness, scheduling, pre-open names and sockets. The file calls are in `files.rs`
//! (descriptors), `paths.rs` (paths below a directory) and `poll.rs` (`poll_oneoff`).
//!
//! Every call body is a plain method on [`WasiState`] that takes a [`GuestMemory`], so it is
//! unit-tested on a byte buffer without the interpreter. Each returns `Ok(())` for
//! `errno::success` or the `Errno` to hand back to the guest.

use super::abi::{Errno, GuestMemory, clockid};
use super::fdtable::FdTable;
use crate::Val;
use rustix::time::ClockId;
use std::sync::{Mutex, MutexGuard};

/// Everything the WASI calls of one program share.
pub(crate) struct WasiState {
    pub args: Vec<String>,
    /// `NAME=VALUE` strings.
    pub env: Vec<String>,
    pub fds: FdTable,
}

/// The state, locked; a thread that panicked while holding the lock left no half-done table
/// change behind (every call checks before it mutates), so a poisoned lock is still usable.
pub(crate) fn lock(state: &Mutex<WasiState>) -> MutexGuard<'_, WasiState> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parameters of a host call, read by position. The interpreter has already checked them
/// against the function type, so a mismatch means a registration bug; it still yields an errno.
pub(crate) struct Params<'a>(pub &'a [Val]);

impl Params<'_> {
    pub fn u32(&self, i: usize) -> Result<u32, Errno> {
        match self.0.get(i) {
            Some(Val::I32(v)) => Ok(*v as u32),
            _ => Err(Errno::Inval),
        }
    }
    pub fn u64(&self, i: usize) -> Result<u64, Errno> {
        match self.0.get(i) {
            Some(Val::I64(v)) => Ok(*v as u64),
            _ => Err(Errno::Inval),
        }
    }
    /// A (pointer, length) pair starting at parameter `i`.
    pub fn buf(&self, i: usize) -> Result<(u32, u32), Errno> {
        Ok((self.u32(i)?, self.u32(i + 1)?))
    }
}

/// `ptr + by` in guest address space.
pub(crate) fn offset(ptr: u32, by: usize) -> Result<u32, Errno> {
    u32::try_from(by).ok().and_then(|b| ptr.checked_add(b)).ok_or(Errno::Fault)
}

/// Write NUL-terminated strings to `buf` and a pointer to each to `list` (`args_get`, `environ_get`).
fn write_string_list(mem: &mut GuestMemory, strings: &[String], list: u32, buf: u32) -> Result<(), Errno> {
    let mut cursor = buf;
    for (i, s) in strings.iter().enumerate() {
        mem.write_u32(offset(list, i * 4)?, cursor)?;
        mem.write_bytes(cursor, s.as_bytes())?;
        let end = offset(cursor, s.len())?;
        mem.write_u8(end, 0)?;
        cursor = offset(end, 1)?;
    }
    Ok(())
}

/// (count, total bytes including NULs) of a string list.
fn write_list_sizes(mem: &mut GuestMemory, strings: &[String], count_ptr: u32, size_ptr: u32) -> Result<(), Errno> {
    let count = u32::try_from(strings.len()).map_err(|_| Errno::Overflow)?;
    let size: usize = strings.iter().map(|s| s.len() + 1).sum();
    let size = u32::try_from(size).map_err(|_| Errno::Overflow)?;
    mem.write_u32(count_ptr, count)?;
    mem.write_u32(size_ptr, size)
}

/// The host clock behind a WASI clock id.
pub(crate) fn host_clock(id: u32) -> Result<ClockId, Errno> {
    match id {
        clockid::REALTIME => Ok(ClockId::Realtime),
        clockid::MONOTONIC => Ok(ClockId::Monotonic),
        clockid::PROCESS_CPUTIME => Ok(ClockId::ProcessCPUTime),
        clockid::THREAD_CPUTIME => Ok(ClockId::ThreadCPUTime),
        _ => Err(Errno::Inval),
    }
}

/// Nanoseconds of a host timespec (clocks never read negative).
pub(crate) fn nanos(t: rustix::time::Timespec) -> u64 {
    (t.tv_sec.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec.max(0) as u64)
}

/// The current time of WASI clock `id` in nanoseconds.
pub(crate) fn now(id: u32) -> Result<u64, Errno> {
    Ok(nanos(rustix::time::clock_gettime(host_clock(id)?)))
}

impl WasiState {
    pub fn args_sizes_get(&mut self, mem: &mut GuestMemory, argc: u32, buf_size: u32) -> Result<(), Errno> {
        write_list_sizes(mem, &self.args, argc, buf_size)
    }

    pub fn args_get(&mut self, mem: &mut GuestMemory, argv: u32, buf: u32) -> Result<(), Errno> {
        write_string_list(mem, &self.args, argv, buf)
    }

    pub fn environ_sizes_get(&mut self, mem: &mut GuestMemory, count: u32, buf_size: u32) -> Result<(), Errno> {
        write_list_sizes(mem, &self.env, count, buf_size)
    }

    pub fn environ_get(&mut self, mem: &mut GuestMemory, environ: u32, buf: u32) -> Result<(), Errno> {
        write_string_list(mem, &self.env, environ, buf)
    }

    /// The host's resolution of each clock (nanoseconds, at least 1).
    pub fn clock_res_get(&mut self, mem: &mut GuestMemory, id: u32, res: u32) -> Result<(), Errno> {
        let r = nanos(rustix::time::clock_getres(host_clock(id)?)).max(1);
        mem.write_u64(res, r)
    }

    /// The time of a clock; the precision hint is not needed (the host clocks are exact).
    pub fn clock_time_get(&mut self, mem: &mut GuestMemory, id: u32, time: u32) -> Result<(), Errno> {
        mem.write_u64(time, now(id)?)
    }

    pub fn random_get(&mut self, mem: &mut GuestMemory, buf: u32, len: u32) -> Result<(), Errno> {
        let mut out = mem.slice_mut(buf, len)?;
        while !out.is_empty() {
            let n = rustix::rand::getrandom(&mut *out, rustix::rand::GetRandomFlags::empty())?;
            out = &mut out[n..];
        }
        Ok(())
    }

    pub fn sched_yield(&mut self) -> Result<(), Errno> {
        std::thread::yield_now();
        Ok(())
    }

    pub fn fd_prestat_get(&mut self, mem: &mut GuestMemory, fd: u32, buf: u32) -> Result<(), Errno> {
        let name_len = self.fds.get(fd)?.preopen.as_ref().ok_or(Errno::Badf)?.len();
        mem.write_u32(buf, 0)?; // tag: preopentype::dir, then padding
        mem.write_u32(offset(buf, 4)?, u32::try_from(name_len).map_err(|_| Errno::Nametoolong)?)
    }

    pub fn fd_prestat_dir_name(&mut self, mem: &mut GuestMemory, fd: u32, path: u32, len: u32) -> Result<(), Errno> {
        let name = self.fds.get(fd)?.preopen.as_ref().ok_or(Errno::Badf)?;
        if (len as usize) < name.len() {
            return Err(Errno::Nametoolong);
        }
        mem.write_bytes(path, name.as_bytes())
    }

    /// No descriptor vmrun hands out is a socket: `badf` if it is not open, else `notsock`.
    pub fn sock_call(&mut self, fd: u32) -> Result<(), Errno> {
        self.fds.get(fd)?;
        Err(Errno::Notsock)
    }
}

/// What the unit tests of all WASI files share: a state with captured streams and a preopen.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::wasi::abi::rights;
    use crate::wasi::fdtable::{Entry, Kind, Stream, StreamIo};
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    /// An output stream the test can read back.
    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn stream(io: StreamIo) -> Entry {
        Entry::new(Kind::Stream(Stream::new(io, None)), rights::STREAM, 0)
    }

    pub fn state(stdin: &'static [u8], stdout: Captured) -> WasiState {
        let mut fds = FdTable::default();
        fds.push(stream(StreamIo::Input(Box::new(stdin))));
        fds.push(stream(StreamIo::Output(Box::new(stdout))));
        fds.push(stream(StreamIo::Output(Box::new(std::io::sink()))));
        WasiState { args: vec!["prog.wasm".into(), "a1".into()], env: vec!["K=V".into()], fds }
    }

    /// A host directory removed on drop: `root/` is pre-opened, `outside.txt` sits beside it.
    pub struct Sandbox {
        pub dir: PathBuf,
    }

    impl Sandbox {
        pub fn root(&self) -> PathBuf {
            self.dir.join("root")
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A state with `<tmp>/root` pre-opened as fd 3 under the guest name `/sandbox`; the root holds
    /// `sub/data.txt` ("0123456789").
    pub fn with_preopen(tag: &str) -> (WasiState, Sandbox) {
        let dir = std::env::temp_dir().join(format!("vmrun-wasi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/sub")).unwrap();
        std::fs::write(dir.join("root/sub/data.txt"), b"0123456789").unwrap();
        std::fs::write(dir.join("outside.txt"), b"secret").unwrap();
        let mut s = state(b"", Captured::default());
        let preopen = crate::wasi::Preopen { host: dir.join("root"), guest: "/sandbox".into() };
        s.fds.push(crate::wasi::preopen_entry(&preopen).unwrap());
        (s, Sandbox { dir })
    }

    /// Put `path` at offset 256 of `mem` and return its (ptr, len).
    pub fn put_path(mem: &mut GuestMemory, path: &str) -> (u32, u32) {
        mem.write_bytes(256, path.as_bytes()).unwrap();
        (256, path.len() as u32)
    }

    pub fn u64_at(mem: &GuestMemory, at: u32) -> u64 {
        mem.read_u64(at).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::wasi::abi::{filetype, rights, whence};

    #[test]
    fn fd_write_gathers_iovecs_and_reports_the_count() {
        let out = Captured::default();
        let mut s = state(b"", out.clone());
        let mut bytes = vec![0u8; 64];
        bytes[32..37].copy_from_slice(b"Hello");
        bytes[40..42].copy_from_slice(b"!\n");
        let mut mem = GuestMemory::new(&mut bytes);
        for (at, v) in [(0, 32), (4, 5), (8, 40), (12, 2)] {
            mem.write_u32(at, v).unwrap();
        }
        assert_eq!(s.fd_write(&mut mem, 1, 0, 2, 16), Ok(()));
        assert_eq!(out.0.lock().unwrap().as_slice(), b"Hello!\n");
        assert_eq!(mem.read_u32(16), Ok(7));
        // Bad fd, writing stdin, and an iovec out of bounds.
        assert_eq!(s.fd_write(&mut mem, 9, 0, 2, 16), Err(Errno::Badf));
        assert_eq!(s.fd_write(&mut mem, 0, 0, 2, 16), Err(Errno::Badf));
        mem.write_u32(4, 1000).unwrap();
        assert_eq!(s.fd_write(&mut mem, 1, 0, 2, 16), Err(Errno::Fault));
        assert_eq!(out.0.lock().unwrap().len(), 7, "a faulting call writes nothing");
    }

    #[test]
    fn fd_read_fills_iovecs_in_order_and_stops_at_end() {
        let mut s = state(b"abcdefg", Captured::default());
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMemory::new(&mut bytes);
        for (at, v) in [(0, 32), (4, 4), (8, 40), (12, 8)] {
            mem.write_u32(at, v).unwrap();
        }
        assert_eq!(s.fd_read(&mut mem, 0, 0, 2, 16), Ok(()));
        assert_eq!(mem.read_u32(16), Ok(7));
        assert_eq!(mem.slice(32, 4), Ok(&b"abcd"[..]));
        assert_eq!(mem.slice(40, 3), Ok(&b"efg"[..]));
        assert_eq!(s.fd_read(&mut mem, 0, 0, 2, 16), Ok(()));
        assert_eq!(mem.read_u32(16), Ok(0), "end of input reads 0 bytes");
        assert_eq!(s.fd_read(&mut mem, 1, 0, 2, 16), Err(Errno::Badf));
    }

    #[test]
    fn args_and_environ_encoding() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMemory::new(&mut bytes);
        s.args_sizes_get(&mut mem, 0, 4).unwrap();
        assert_eq!((mem.read_u32(0), mem.read_u32(4)), (Ok(2), Ok(13)));
        s.args_get(&mut mem, 8, 32).unwrap();
        assert_eq!((mem.read_u32(8), mem.read_u32(12)), (Ok(32), Ok(42)));
        assert_eq!(mem.slice(32, 13), Ok(&b"prog.wasm\0a1\0"[..]));
        s.environ_sizes_get(&mut mem, 0, 4).unwrap();
        assert_eq!((mem.read_u32(0), mem.read_u32(4)), (Ok(1), Ok(4)));
        s.environ_get(&mut mem, 16, 48).unwrap();
        assert_eq!(mem.read_u32(16), Ok(48));
        assert_eq!(mem.slice(48, 4), Ok(&b"K=V\0"[..]));
        // The buffer does not fit at the end of memory.
        assert_eq!(s.args_get(&mut mem, 8, 60), Err(Errno::Fault));
    }

    #[test]
    fn fdstat_of_streams_and_prestat_of_nothing() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMemory::new(&mut bytes);
        s.fd_fdstat_get(&mut mem, 1, 8).unwrap();
        let b = mem.slice(8, 24).unwrap();
        // Not a host terminal: wasi-libc's isatty must say no.
        assert_eq!(b[0], filetype::UNKNOWN);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()) & rights::FD_WRITE, rights::FD_WRITE);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()) & (rights::FD_SEEK | rights::FD_TELL), 0);
        assert_eq!(s.fd_prestat_get(&mut mem, 3, 0), Err(Errno::Badf), "wasi-libc stops scanning preopens here");
        assert_eq!(s.fd_seek(&mut mem, 1, 0, whence::CUR, 0), Err(Errno::Spipe));
        assert_eq!(s.fd_fdstat_set_flags(7, 0), Err(Errno::Badf));
        assert_eq!(s.sock_call(1), Err(Errno::Notsock));
        assert_eq!(s.sock_call(7), Err(Errno::Badf));
        assert_eq!(s.fd_close(2), Ok(()));
        assert_eq!(s.fd_close(2), Err(Errno::Badf));
    }

    #[test]
    fn clocks_and_random() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMemory::new(&mut bytes);
        s.clock_time_get(&mut mem, clockid::REALTIME, 0).unwrap();
        let t = u64_at(&mem, 0);
        assert!(t > 1_600_000_000 * 1_000_000_000, "realtime is nanoseconds since 1970: {t}");
        for id in [clockid::REALTIME, clockid::MONOTONIC, clockid::PROCESS_CPUTIME, clockid::THREAD_CPUTIME] {
            s.clock_res_get(&mut mem, id, 8).unwrap();
            assert!((1..=1_000_000).contains(&u64_at(&mem, 8)), "clock {id} resolution");
            s.clock_time_get(&mut mem, id, 0).unwrap();
            assert!(u64_at(&mem, 0) > 0, "clock {id}");
        }
        assert_eq!(s.clock_time_get(&mut mem, 99, 0), Err(Errno::Inval));
        assert_eq!(s.clock_res_get(&mut mem, 99, 0), Err(Errno::Inval));
        assert_eq!(s.clock_time_get(&mut mem, clockid::MONOTONIC, 60), Err(Errno::Fault));
        s.random_get(&mut mem, 16, 48).unwrap();
        assert!(mem.slice(16, 48).unwrap().iter().any(|&b| b != 0));
        assert_eq!(s.random_get(&mut mem, 16, 49), Err(Errno::Fault));
    }

    #[test]
    fn prestat_names_the_preopen() {
        let (mut s, _dir) = with_preopen("prestat");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        s.fd_prestat_get(&mut mem, 3, 0).unwrap();
        assert_eq!((mem.slice(0, 1), mem.read_u32(4)), (Ok(&[0u8][..]), Ok(8)));
        assert_eq!(s.fd_prestat_dir_name(&mut mem, 3, 16, 7), Err(Errno::Nametoolong));
        s.fd_prestat_dir_name(&mut mem, 3, 16, 8).unwrap();
        assert_eq!(mem.slice(16, 8), Ok(&b"/sandbox"[..]));
    }
}
