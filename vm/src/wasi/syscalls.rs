//! The bodies of the WASI preview1 calls, as plain functions over [`WasiState`] and a
//! [`GuestMemory`] (so they are unit-tested on a byte buffer, without the interpreter).
//!
//! Each returns `Ok(())` for `errno::success` or the `Errno` to hand back to the guest. The
//! descriptor table is a vector indexed by fd: 0–2 are the standard streams, then one entry per
//! pre-opened directory (in `--dir` order), then whatever `path_open` creates (lowest free slot).

use super::abi::{Errno, GuestMemory, clockid, fdflags, filetype, lookupflags, oflags, rights, whence};
use super::sandbox;
use crate::Val;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One open descriptor.
pub(crate) enum FdEntry {
    /// A host input stream (stdin).
    Input(Box<dyn Read + Send>),
    /// A host output stream (stdout, stderr).
    Output(Box<dyn Write + Send>),
    Dir(DirFd),
    File(FileFd),
}

/// A directory inside a preopen: the preopen's root plus the components below it.
pub(crate) struct DirFd {
    pub root: Arc<PathBuf>,
    pub components: Vec<String>,
    /// The guest-visible name if this fd is a preopen (what `fd_prestat_dir_name` reports).
    pub preopen_name: Option<String>,
}

impl DirFd {
    fn host_path(&self) -> PathBuf {
        let mut p = self.root.as_ref().clone();
        p.extend(&self.components);
        p
    }
}

pub(crate) struct FileFd {
    pub file: File,
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
}

/// Everything the WASI calls of one program share.
pub(crate) struct WasiState {
    pub args: Vec<String>,
    /// `NAME=VALUE` strings.
    pub env: Vec<String>,
    pub fds: Vec<Option<FdEntry>>,
    /// Base of the monotonic clock.
    pub clock_origin: Instant,
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
}

/// `ptr + by` in guest address space.
fn offset(ptr: u32, by: usize) -> Result<u32, Errno> {
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

fn filetype_of(meta: &Metadata) -> u8 {
    let t = meta.file_type();
    if t.is_dir() {
        filetype::DIRECTORY
    } else if t.is_file() {
        filetype::REGULAR_FILE
    } else if t.is_symlink() {
        filetype::SYMBOLIC_LINK
    } else {
        filetype::UNKNOWN
    }
}

#[cfg(unix)]
fn inode(meta: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &Metadata) -> u64 {
    0
}

/// Write a 64-byte `filestat`.
fn write_filestat(mem: &mut GuestMemory, ptr: u32, kind: u8, meta: Option<&Metadata>) -> Result<(), Errno> {
    let mut stat = [0u8; 64];
    if let Some(m) = meta {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let nanos = |s: i64, ns: i64| (s as u64).wrapping_mul(1_000_000_000).wrapping_add(ns as u64);
            stat[0..8].copy_from_slice(&m.dev().to_le_bytes());
            stat[8..16].copy_from_slice(&inode(m).to_le_bytes());
            stat[24..32].copy_from_slice(&m.nlink().to_le_bytes());
            stat[40..48].copy_from_slice(&nanos(m.atime(), m.atime_nsec()).to_le_bytes());
            stat[48..56].copy_from_slice(&nanos(m.mtime(), m.mtime_nsec()).to_le_bytes());
            stat[56..64].copy_from_slice(&nanos(m.ctime(), m.ctime_nsec()).to_le_bytes());
        }
        stat[32..40].copy_from_slice(&m.len().to_le_bytes());
    }
    stat[16] = kind;
    mem.write_bytes(ptr, &stat)
}

impl WasiState {
    fn entry(&mut self, fd: u32) -> Result<&mut FdEntry, Errno> {
        self.fds.get_mut(fd as usize).and_then(Option::as_mut).ok_or(Errno::Badf)
    }

    fn dir(&mut self, fd: u32) -> Result<&DirFd, Errno> {
        match self.entry(fd)? {
            FdEntry::Dir(d) => Ok(d),
            _ => Err(Errno::Notdir),
        }
    }

    /// Put `entry` in the lowest free slot.
    fn insert(&mut self, entry: FdEntry) -> Result<u32, Errno> {
        let slot = match self.fds.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.fds.push(None);
                self.fds.len() - 1
            }
        };
        self.fds[slot] = Some(entry);
        u32::try_from(slot).map_err(|_| Errno::Overflow)
    }

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

    pub fn clock_res_get(&mut self, mem: &mut GuestMemory, id: u32, res: u32) -> Result<(), Errno> {
        match id {
            clockid::REALTIME | clockid::MONOTONIC => mem.write_u64(res, 1),
            clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => Err(Errno::Notsup),
            _ => Err(Errno::Inval),
        }
    }

    pub fn clock_time_get(&mut self, mem: &mut GuestMemory, id: u32, time: u32) -> Result<(), Errno> {
        let nanos = match id {
            clockid::REALTIME => {
                let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_err(|_| Errno::Io)?;
                since_epoch.as_nanos()
            }
            clockid::MONOTONIC => self.clock_origin.elapsed().as_nanos(),
            // CPU-time clocks would need a platform call; say so rather than return wall time.
            clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => return Err(Errno::Notsup),
            _ => return Err(Errno::Inval),
        };
        mem.write_u64(time, u64::try_from(nanos).map_err(|_| Errno::Overflow)?)
    }

    pub fn random_get(&mut self, mem: &mut GuestMemory, buf: u32, len: u32) -> Result<(), Errno> {
        let out = mem.slice_mut(buf, len)?;
        let mut urandom = File::open("/dev/urandom").map_err(|e| Errno::from_io(&e))?;
        urandom.read_exact(out).map_err(|e| Errno::from_io(&e))
    }

    pub fn fd_write(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        nwritten: u32,
    ) -> Result<(), Errno> {
        let iovs = mem.iovecs(iovs, iovs_len)?;
        let mut total: u32 = 0;
        match self.entry(fd)? {
            FdEntry::Output(w) => {
                for &(buf, len) in &iovs {
                    w.write_all(mem.slice(buf, len)?).map_err(|e| Errno::from_io(&e))?;
                    total = total.saturating_add(len);
                }
                // Keep stdout and stderr in program order for a reader of both.
                w.flush().map_err(|e| Errno::from_io(&e))?;
            }
            FdEntry::File(f) if f.writable => {
                if f.append {
                    f.file.seek(SeekFrom::End(0)).map_err(|e| Errno::from_io(&e))?;
                }
                for &(buf, len) in &iovs {
                    f.file.write_all(mem.slice(buf, len)?).map_err(|e| Errno::from_io(&e))?;
                    total = total.saturating_add(len);
                }
            }
            FdEntry::Dir(_) => return Err(Errno::Isdir),
            FdEntry::File(_) | FdEntry::Input(_) => return Err(Errno::Badf),
        }
        mem.write_u32(nwritten, total)
    }

    pub fn fd_read(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        nread: u32,
    ) -> Result<(), Errno> {
        let iovs = mem.iovecs(iovs, iovs_len)?;
        let reader: &mut dyn Read = match self.entry(fd)? {
            FdEntry::Input(r) => r.as_mut(),
            FdEntry::File(f) if f.readable => &mut f.file,
            FdEntry::Dir(_) => return Err(Errno::Isdir),
            FdEntry::File(_) | FdEntry::Output(_) => return Err(Errno::Badf),
        };
        let mut total: u32 = 0;
        for &(buf, len) in &iovs {
            let n = reader.read(mem.slice_mut(buf, len)?).map_err(|e| Errno::from_io(&e))?;
            total = total.saturating_add(n as u32);
            // A short read (end of file, or an interactive stream) ends the call, as readv does.
            if (n as u32) < len {
                break;
            }
        }
        mem.write_u32(nread, total)
    }

    pub fn fd_seek(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        delta: i64,
        whence: u32,
        newoffset: u32,
    ) -> Result<(), Errno> {
        let to = match whence {
            whence::SET => SeekFrom::Start(u64::try_from(delta).map_err(|_| Errno::Inval)?),
            whence::CUR => SeekFrom::Current(delta),
            whence::END => SeekFrom::End(delta),
            _ => return Err(Errno::Inval),
        };
        let pos = match self.entry(fd)? {
            FdEntry::File(f) => f.file.seek(to).map_err(|e| Errno::from_io(&e))?,
            FdEntry::Input(_) | FdEntry::Output(_) => return Err(Errno::Spipe),
            FdEntry::Dir(_) => return Err(Errno::Isdir),
        };
        mem.write_u64(newoffset, pos)
    }

    pub fn fd_tell(&mut self, mem: &mut GuestMemory, fd: u32, offset: u32) -> Result<(), Errno> {
        self.fd_seek(mem, fd, 0, whence::CUR, offset)
    }

    pub fn fd_close(&mut self, fd: u32) -> Result<(), Errno> {
        let slot = self.fds.get_mut(fd as usize).ok_or(Errno::Badf)?;
        slot.take().map(drop).ok_or(Errno::Badf)
    }

    pub fn fd_fdstat_get(&mut self, mem: &mut GuestMemory, fd: u32, stat: u32) -> Result<(), Errno> {
        let (kind, flags, base, inheriting) = match self.entry(fd)? {
            // Streams have no seek/tell rights, which is what wasi-libc's `isatty` looks for.
            FdEntry::Input(_) => (filetype::CHARACTER_DEVICE, 0, rights::FD_READ | rights::POLL_FD_READWRITE, 0),
            FdEntry::Output(_) => (filetype::CHARACTER_DEVICE, 0, rights::FD_WRITE | rights::POLL_FD_READWRITE, 0),
            FdEntry::Dir(_) => (filetype::DIRECTORY, 0, rights::ALL, rights::ALL),
            FdEntry::File(f) => {
                let mut base = rights::ALL;
                if !f.readable {
                    base &= !rights::FD_READ;
                }
                if !f.writable {
                    base &= !rights::FD_WRITE;
                }
                (filetype::REGULAR_FILE, if f.append { fdflags::APPEND } else { 0 }, base, 0)
            }
        };
        let mut out = [0u8; 24];
        out[0] = kind;
        out[2..4].copy_from_slice(&flags.to_le_bytes());
        out[8..16].copy_from_slice(&base.to_le_bytes());
        out[16..24].copy_from_slice(&inheriting.to_le_bytes());
        mem.write_bytes(stat, &out)
    }

    pub fn fd_fdstat_set_flags(&mut self, fd: u32) -> Result<(), Errno> {
        self.entry(fd)?;
        Err(Errno::Notsup)
    }

    pub fn fd_filestat_get(&mut self, mem: &mut GuestMemory, fd: u32, buf: u32) -> Result<(), Errno> {
        match self.entry(fd)? {
            FdEntry::Input(_) | FdEntry::Output(_) => write_filestat(mem, buf, filetype::CHARACTER_DEVICE, None),
            FdEntry::File(f) => {
                let meta = f.file.metadata().map_err(|e| Errno::from_io(&e))?;
                write_filestat(mem, buf, filetype_of(&meta), Some(&meta))
            }
            FdEntry::Dir(d) => {
                let meta = std::fs::metadata(d.host_path()).map_err(|e| Errno::from_io(&e))?;
                write_filestat(mem, buf, filetype::DIRECTORY, Some(&meta))
            }
        }
    }

    pub fn fd_prestat_get(&mut self, mem: &mut GuestMemory, fd: u32, buf: u32) -> Result<(), Errno> {
        let name_len = match self.entry(fd)? {
            FdEntry::Dir(DirFd { preopen_name: Some(name), .. }) => name.len(),
            _ => return Err(Errno::Badf),
        };
        mem.write_u8(buf, 0)?; // tag: preopentype::dir
        mem.write_u32(offset(buf, 4)?, u32::try_from(name_len).map_err(|_| Errno::Nametoolong)?)
    }

    pub fn fd_prestat_dir_name(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        path: u32,
        path_len: u32,
    ) -> Result<(), Errno> {
        let name = match self.entry(fd)? {
            FdEntry::Dir(DirFd { preopen_name: Some(name), .. }) => name.clone(),
            _ => return Err(Errno::Badf),
        };
        if (path_len as usize) < name.len() {
            return Err(Errno::Nametoolong);
        }
        mem.write_bytes(path, name.as_bytes())
    }

    #[allow(clippy::too_many_arguments)] // the preview1 signature
    pub fn path_open(
        &mut self,
        mem: &mut GuestMemory,
        dirfd: u32,
        lookup: u32,
        path: (u32, u32),
        open_flags: u16,
        rights_base: u64,
        fd_flags: u16,
        opened: u32,
    ) -> Result<(), Errno> {
        let path = mem.str(path.0, path.1)?.to_string();
        let dir = self.dir(dirfd)?;
        let root = dir.root.clone();
        let follow = lookup & lookupflags::SYMLINK_FOLLOW != 0;
        let resolved = sandbox::resolve(&root, &dir.components, &path, follow)?;
        let meta = std::fs::symlink_metadata(&resolved.host).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            // Only reachable when the guest asked not to follow the last link (O_NOFOLLOW).
            return Err(Errno::Loop);
        }
        let want_dir = open_flags & oflags::DIRECTORY != 0;
        let readable = rights_base & rights::FD_READ != 0;
        let writable = rights_base & rights::FD_WRITE != 0;
        let create = open_flags & oflags::CREAT != 0;
        let exclusive = open_flags & oflags::EXCL != 0;
        let truncate = open_flags & oflags::TRUNC != 0;
        let append = fd_flags & fdflags::APPEND != 0;
        let entry = match &meta {
            Some(m) if m.is_dir() => {
                if create && exclusive {
                    return Err(Errno::Exist);
                }
                if writable || truncate {
                    return Err(Errno::Isdir);
                }
                FdEntry::Dir(DirFd { root, components: resolved.components, preopen_name: None })
            }
            Some(_) if want_dir => return Err(Errno::Notdir),
            None if want_dir => return Err(Errno::Noent),
            _ => {
                if create && !writable {
                    // std cannot create without write access; create first, then open as asked.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .create_new(exclusive)
                        .truncate(false)
                        .open(&resolved.host)
                        .map_err(|e| Errno::from_io(&e))?;
                }
                let file = std::fs::OpenOptions::new()
                    .read(readable || !writable)
                    .write(writable)
                    .create(create && writable)
                    .create_new(create && exclusive && writable)
                    .truncate(truncate && writable)
                    .open(&resolved.host)
                    .map_err(|e| Errno::from_io(&e))?;
                FdEntry::File(FileFd { file, readable, writable, append })
            }
        };
        let fd = self.insert(entry)?;
        mem.write_u32(opened, fd)
    }

    /// Directory entries from `cookie` on, as `dirent` headers (24 bytes) each followed by the
    /// name, until `buf` is full; the last entry may be cut short, which tells the caller
    /// (wasi-libc) to retry with a larger buffer. Entries are `.`, `..`, then the names in byte
    /// order, so a cookie (the index of the next entry) stays valid between calls.
    pub fn fd_readdir(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        buf: u32,
        buf_len: u32,
        cookie: u64,
        bufused: u32,
    ) -> Result<(), Errno> {
        let host = self.dir(fd)?.host_path();
        let mut entries: Vec<(Vec<u8>, u8, u64)> = Vec::new();
        for name in [".", ".."] {
            let ino = std::fs::metadata(host.join(name)).map(|m| inode(&m)).unwrap_or(0);
            entries.push((name.as_bytes().to_vec(), filetype::DIRECTORY, ino));
        }
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(&host).map_err(|e| Errno::from_io(&e))? {
            let entry = entry.map_err(|e| Errno::from_io(&e))?;
            let meta = entry.metadata().map_err(|e| Errno::from_io(&e))?;
            listed.push((entry.file_name().as_encoded_bytes().to_vec(), filetype_of(&meta), inode(&meta)));
        }
        listed.sort();
        entries.extend(listed);
        let mut out = Vec::new();
        let start = usize::try_from(cookie).unwrap_or(usize::MAX);
        for (i, (name, kind, ino)) in entries.iter().enumerate().skip(start) {
            if out.len() >= buf_len as usize {
                break;
            }
            out.extend_from_slice(&(i as u64 + 1).to_le_bytes()); // d_next
            out.extend_from_slice(&ino.to_le_bytes());
            out.extend_from_slice(&u32::try_from(name.len()).map_err(|_| Errno::Nametoolong)?.to_le_bytes());
            out.extend_from_slice(&[*kind, 0, 0, 0]);
            out.extend_from_slice(name);
        }
        out.truncate(buf_len as usize);
        mem.write_bytes(buf, &out)?;
        mem.write_u32(bufused, out.len() as u32)
    }

    /// Wait for the subscriptions at `subs` (48 bytes each) and write one 32-byte event per
    /// subscription that is ready to `events`. Clocks are honoured by sleeping until the
    /// earliest deadline; descriptor subscriptions are reported ready at once (the following
    /// read or write then blocks, as it would have anyway), so a program that mixes both never
    /// oversleeps.
    pub fn poll_oneoff(
        &mut self,
        mem: &mut GuestMemory,
        subs: u32,
        events: u32,
        count: u32,
        nevents: u32,
    ) -> Result<(), Errno> {
        const CLOCK: u8 = 0;
        const ABSTIME: u16 = 1;
        if count == 0 {
            return Err(Errno::Inval);
        }
        let raw = mem.slice(subs, count.checked_mul(48).ok_or(Errno::Fault)?)?.to_vec();
        let field_u64 = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
        let now_for = |state: &WasiState, clock: u32| -> Result<u64, Errno> {
            match clock {
                clockid::REALTIME => SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .map_err(|_| Errno::Io),
                clockid::MONOTONIC => Ok(state.clock_origin.elapsed().as_nanos() as u64),
                _ => Err(Errno::Inval),
            }
        };
        // (userdata, tag, error, wait in ns for clocks)
        let mut pending = Vec::new();
        for sub in raw.chunks_exact(48) {
            let (userdata, tag) = (field_u64(sub, 0), sub[8]);
            if tag != CLOCK {
                pending.push((userdata, tag, 0u16, 0u64));
                continue;
            }
            let clock = u32::from_le_bytes(sub[16..20].try_into().unwrap_or([0; 4]));
            let timeout = field_u64(sub, 24);
            let flags = u16::from_le_bytes([sub[40], sub[41]]);
            match now_for(self, clock) {
                Ok(now) if flags & ABSTIME != 0 => pending.push((userdata, tag, 0, timeout.saturating_sub(now))),
                Ok(_) => pending.push((userdata, tag, 0, timeout)),
                Err(e) => pending.push((userdata, tag, e as u16, 0)),
            }
        }
        // Ready now: every descriptor, every failed clock. Otherwise sleep to the first deadline.
        let ready_now = pending.iter().any(|p| p.1 != CLOCK || p.2 != 0);
        let wait = if ready_now { 0 } else { pending.iter().map(|p| p.3).min().unwrap_or(0) };
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_nanos(wait));
        }
        let mut written: u32 = 0;
        for (userdata, tag, error, until) in pending {
            if tag == CLOCK && error == 0 && until > wait {
                continue;
            }
            let mut event = [0u8; 32];
            event[0..8].copy_from_slice(&userdata.to_le_bytes());
            event[8..10].copy_from_slice(&error.to_le_bytes());
            event[10] = tag;
            mem.write_bytes(offset(events, written as usize * 32)?, &event)?;
            written += 1;
        }
        mem.write_u32(nevents, written)
    }

    pub fn path_filestat_get(
        &mut self,
        mem: &mut GuestMemory,
        dirfd: u32,
        lookup: u32,
        path: (u32, u32),
        buf: u32,
    ) -> Result<(), Errno> {
        let path = mem.str(path.0, path.1)?.to_string();
        let dir = self.dir(dirfd)?;
        let follow = lookup & lookupflags::SYMLINK_FOLLOW != 0;
        let resolved = sandbox::resolve(&dir.root, &dir.components, &path, follow)?;
        let meta = std::fs::symlink_metadata(&resolved.host).map_err(|e| Errno::from_io(&e))?;
        write_filestat(mem, buf, filetype_of(&meta), Some(&meta))
    }

    pub fn path_create_directory(&mut self, mem: &mut GuestMemory, dirfd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let host = self.resolve_no_follow(mem, dirfd, path)?;
        std::fs::create_dir(host).map_err(|e| Errno::from_io(&e))
    }

    pub fn path_remove_directory(&mut self, mem: &mut GuestMemory, dirfd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let host = self.resolve_no_follow(mem, dirfd, path)?;
        std::fs::remove_dir(host).map_err(|e| Errno::from_io(&e))
    }

    pub fn path_unlink_file(&mut self, mem: &mut GuestMemory, dirfd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let host = self.resolve_no_follow(mem, dirfd, path)?;
        std::fs::remove_file(host).map_err(|e| Errno::from_io(&e))
    }

    /// The host path of `path` below `dirfd`, refusing to operate on the preopen root itself.
    fn resolve_no_follow(&mut self, mem: &GuestMemory, dirfd: u32, path: (u32, u32)) -> Result<PathBuf, Errno> {
        let path = mem.str(path.0, path.1)?.to_string();
        let dir = self.dir(dirfd)?;
        let resolved = sandbox::resolve(&dir.root, &dir.components, &path, false)?;
        if resolved.components.is_empty() {
            return Err(Errno::Acces);
        }
        Ok(resolved.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output stream the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn state(stdin: &'static [u8], stdout: Captured) -> WasiState {
        WasiState {
            args: vec!["prog.wasm".into(), "a1".into()],
            env: vec!["K=V".into()],
            fds: vec![
                Some(FdEntry::Input(Box::new(stdin))),
                Some(FdEntry::Output(Box::new(stdout))),
                Some(FdEntry::Output(Box::new(std::io::sink()))),
            ],
            clock_origin: Instant::now(),
        }
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

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
        // Bad fd, reading stdin as output, and an iovec out of bounds.
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
        assert_eq!(b[0], filetype::CHARACTER_DEVICE);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()) & rights::FD_WRITE, rights::FD_WRITE);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()) & rights::FD_SEEK, 0);
        assert_eq!(s.fd_prestat_get(&mut mem, 3, 0), Err(Errno::Badf), "wasi-libc stops scanning preopens here");
        assert_eq!(s.fd_seek(&mut mem, 1, 0, whence::CUR, 0), Err(Errno::Spipe));
        assert_eq!(s.fd_fdstat_set_flags(1), Err(Errno::Notsup));
        assert_eq!(s.fd_fdstat_set_flags(7), Err(Errno::Badf));
        assert_eq!(s.fd_close(2), Ok(()));
        assert_eq!(s.fd_close(2), Err(Errno::Badf));
    }

    #[test]
    fn clocks_and_random() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMemory::new(&mut bytes);
        s.clock_time_get(&mut mem, clockid::REALTIME, 0).unwrap();
        let t = u64::from_le_bytes(mem.slice(0, 8).unwrap().try_into().unwrap());
        assert!(t > 1_600_000_000 * 1_000_000_000, "realtime is nanoseconds since 1970: {t}");
        assert_eq!(s.clock_time_get(&mut mem, 99, 0), Err(Errno::Inval));
        assert_eq!(s.clock_time_get(&mut mem, clockid::MONOTONIC, 60), Err(Errno::Fault));
        s.random_get(&mut mem, 16, 48).unwrap();
        assert!(mem.slice(16, 48).unwrap().iter().any(|&b| b != 0));
        assert_eq!(s.random_get(&mut mem, 16, 49), Err(Errno::Fault));
    }

    /// A temp directory preopened as fd 3 under the guest name `/sandbox`.
    fn with_preopen(tag: &str) -> (WasiState, PathBuf) {
        let dir = std::env::temp_dir().join(format!("vmrun-wasi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/data.txt"), b"0123456789").unwrap();
        let mut s = state(b"", Captured::default());
        let root = Arc::new(dir.canonicalize().unwrap());
        s.fds.push(Some(FdEntry::Dir(DirFd { root, components: vec![], preopen_name: Some("/sandbox".into()) })));
        (s, dir)
    }

    /// Put `path` at offset 256 of `mem` and return its (ptr, len).
    fn put_path(mem: &mut GuestMemory, path: &str) -> (u32, u32) {
        mem.write_bytes(256, path.as_bytes()).unwrap();
        (256, path.len() as u32)
    }

    #[test]
    fn prestat_names_the_preopen() {
        let (mut s, dir) = with_preopen("prestat");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        s.fd_prestat_get(&mut mem, 3, 0).unwrap();
        assert_eq!((mem.slice(0, 1), mem.read_u32(4)), (Ok(&[0u8][..]), Ok(8)));
        assert_eq!(s.fd_prestat_dir_name(&mut mem, 3, 16, 7), Err(Errno::Nametoolong));
        s.fd_prestat_dir_name(&mut mem, 3, 16, 8).unwrap();
        assert_eq!(mem.slice(16, 8), Ok(&b"/sandbox"[..]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn path_open_read_seek_and_sandbox() {
        let (mut s, dir) = with_preopen("open");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let p = put_path(&mut mem, "sub/data.txt");
        s.path_open(&mut mem, 3, 1, p, 0, rights::FD_READ | rights::FD_SEEK, 0, 0).unwrap();
        let fd = mem.read_u32(0).unwrap();
        assert_eq!(fd, 4);
        // Read 4 bytes at offset 3.
        s.fd_seek(&mut mem, fd, 3, whence::SET, 8).unwrap();
        assert_eq!(u32_at(mem.slice(8, 4).unwrap(), 0), 3);
        mem.write_u32(16, 64).unwrap();
        mem.write_u32(20, 4).unwrap();
        s.fd_read(&mut mem, fd, 16, 1, 24).unwrap();
        assert_eq!((mem.read_u32(24), mem.slice(64, 4)), (Ok(4), Ok(&b"3456"[..])));
        // Opened read-only: writing is refused.
        assert_eq!(s.fd_write(&mut mem, fd, 16, 1, 24), Err(Errno::Badf));
        s.fd_filestat_get(&mut mem, fd, 128).unwrap();
        assert_eq!(mem.slice(128 + 16, 1), Ok(&[filetype::REGULAR_FILE][..]));
        assert_eq!(u64::from_le_bytes(mem.slice(128 + 32, 8).unwrap().try_into().unwrap()), 10);
        s.fd_close(fd).unwrap();
        // Escapes.
        for bad in ["../x", "/etc/passwd", "sub/../../x"] {
            let p = put_path(&mut mem, bad);
            assert_eq!(s.path_open(&mut mem, 3, 1, p, 0, rights::FD_READ, 0, 0), Err(Errno::Notcapable), "{bad}");
        }
        let p = put_path(&mut mem, "missing.txt");
        assert_eq!(s.path_open(&mut mem, 3, 1, p, 0, rights::FD_READ, 0, 0), Err(Errno::Noent));
        // Opening relative to a non-directory fd.
        let p = put_path(&mut mem, "x");
        assert_eq!(s.path_open(&mut mem, 1, 1, p, 0, rights::FD_READ, 0, 0), Err(Errno::Notdir));
        // The path pointer itself out of bounds.
        assert_eq!(s.path_open(&mut mem, 3, 1, (510, 5), 0, rights::FD_READ, 0, 0), Err(Errno::Fault));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directories_are_created_and_removed_only_inside() {
        let (mut s, dir) = with_preopen("mkdir");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let p = put_path(&mut mem, "sub/new");
        s.path_create_directory(&mut mem, 3, p).unwrap();
        assert!(dir.join("sub/new").is_dir());
        assert_eq!(s.path_create_directory(&mut mem, 3, p), Err(Errno::Exist));
        s.path_filestat_get(&mut mem, 3, 1, p, 0).unwrap();
        assert_eq!(mem.slice(16, 1), Ok(&[filetype::DIRECTORY][..]));
        s.path_remove_directory(&mut mem, 3, p).unwrap();
        assert!(!dir.join("sub/new").exists());
        let p = put_path(&mut mem, "sub/data.txt");
        s.path_unlink_file(&mut mem, 3, p).unwrap();
        assert!(!dir.join("sub/data.txt").exists());
        for bad in ["../escape", "/tmp/escape", "."] {
            let p = put_path(&mut mem, bad);
            let expected = if bad == "." { Errno::Acces } else { Errno::Notcapable };
            assert_eq!(s.path_create_directory(&mut mem, 3, p), Err(expected), "{bad}");
            assert_eq!(s.path_remove_directory(&mut mem, 3, p), Err(expected), "{bad}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn poll_oneoff_sleeps_for_a_relative_clock() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 256];
        let mut mem = GuestMemory::new(&mut bytes);
        // One subscription: userdata 7, clock (tag 0), monotonic, 20 ms, relative.
        mem.write_u64(0, 7).unwrap();
        mem.write_u32(16, clockid::MONOTONIC).unwrap();
        mem.write_u64(24, 20_000_000).unwrap();
        let started = Instant::now();
        s.poll_oneoff(&mut mem, 0, 100, 1, 200).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));
        assert_eq!(mem.read_u32(200), Ok(1));
        assert_eq!(mem.slice(100, 11), Ok(&[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]), "userdata 7, no error, clock");
        // An unknown clock is reported as an event with an error, without sleeping.
        mem.write_u32(16, 99).unwrap();
        s.poll_oneoff(&mut mem, 0, 100, 1, 200).unwrap();
        assert_eq!((mem.read_u32(200), mem.slice(108, 2)), (Ok(1), Ok(&[Errno::Inval as u8, 0][..])));
        assert_eq!(s.poll_oneoff(&mut mem, 0, 100, 0, 200), Err(Errno::Inval));
        assert_eq!(s.poll_oneoff(&mut mem, 0, 100, 6, 200), Err(Errno::Fault));
    }

    /// Decode `dirent`s from `bytes`: (d_next, name, type); stops at a cut-short entry.
    fn dirents(bytes: &[u8]) -> Vec<(u64, String, u8)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 24 <= bytes.len() {
            let next = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            let len = u32_at(bytes, at + 16) as usize;
            if at + 24 + len > bytes.len() {
                break;
            }
            out.push((next, String::from_utf8_lossy(&bytes[at + 24..at + 24 + len]).into_owned(), bytes[at + 20]));
            at += 24 + len;
        }
        out
    }

    #[test]
    fn fd_readdir_lists_entries_and_resumes_at_a_cookie() {
        let (mut s, dir) = with_preopen("readdir");
        std::fs::write(dir.join("a.txt"), b"").unwrap();
        let mut bytes = vec![0u8; 1024];
        let mut mem = GuestMemory::new(&mut bytes);
        s.fd_readdir(&mut mem, 3, 0, 512, 0, 600).unwrap();
        let used = mem.read_u32(600).unwrap();
        let all = dirents(mem.slice(0, used).unwrap());
        let names: Vec<(u64, &str, u8)> = all.iter().map(|(n, s, t)| (*n, s.as_str(), *t)).collect();
        assert_eq!(
            names,
            [
                (1, ".", filetype::DIRECTORY),
                (2, "..", filetype::DIRECTORY),
                (3, "a.txt", filetype::REGULAR_FILE),
                (4, "sub", filetype::DIRECTORY)
            ]
        );
        assert_eq!(used, 4 * 24 + 1 + 2 + 5 + 3, "the whole listing fits");
        // Resume after "a.txt"; then past the end.
        s.fd_readdir(&mut mem, 3, 0, 512, 3, 600).unwrap();
        let used = mem.read_u32(600).unwrap();
        assert_eq!(dirents(mem.slice(0, used).unwrap()), [(4, "sub".to_string(), filetype::DIRECTORY)]);
        s.fd_readdir(&mut mem, 3, 0, 512, 4, 600).unwrap();
        assert_eq!(mem.read_u32(600), Ok(0));
        // A small buffer is filled completely: bufused == buf_len signals "retry bigger".
        s.fd_readdir(&mut mem, 3, 0, 30, 0, 600).unwrap();
        assert_eq!(mem.read_u32(600), Ok(30));
        assert_eq!(s.fd_readdir(&mut mem, 1, 0, 30, 0, 600), Err(Errno::Notdir));
        assert_eq!(s.fd_readdir(&mut mem, 3, 1000, 30, 0, 600), Err(Errno::Fault));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn path_open_creates_writes_and_opens_directories() {
        let (mut s, dir) = with_preopen("create");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let p = put_path(&mut mem, "sub");
        s.path_open(&mut mem, 3, 1, p, oflags::DIRECTORY, rights::FD_READ, 0, 0).unwrap();
        let subfd = mem.read_u32(0).unwrap();
        // From `sub`, `../sub/out.txt` stays inside; one more `..` would not.
        let p = put_path(&mut mem, "../sub/out.txt");
        s.path_open(&mut mem, subfd, 1, p, oflags::CREAT | oflags::TRUNC, rights::FD_WRITE, 0, 0).unwrap();
        let fd = mem.read_u32(0).unwrap();
        mem.write_bytes(64, b"written").unwrap();
        mem.write_u32(16, 64).unwrap();
        mem.write_u32(20, 7).unwrap();
        s.fd_write(&mut mem, fd, 16, 1, 24).unwrap();
        s.fd_close(fd).unwrap();
        assert_eq!(std::fs::read(dir.join("sub/out.txt")).unwrap(), b"written");
        let p = put_path(&mut mem, "../../out.txt");
        assert_eq!(s.path_open(&mut mem, subfd, 1, p, oflags::CREAT, rights::FD_WRITE, 0, 0), Err(Errno::Notcapable));
        // Exclusive create of an existing file, and O_DIRECTORY on a file.
        let p = put_path(&mut mem, "out.txt");
        let excl = oflags::CREAT | oflags::EXCL;
        assert_eq!(s.path_open(&mut mem, subfd, 1, p, excl, rights::FD_WRITE, 0, 0), Err(Errno::Exist));
        assert_eq!(s.path_open(&mut mem, subfd, 1, p, oflags::DIRECTORY, 0, 0, 0), Err(Errno::Notdir));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
