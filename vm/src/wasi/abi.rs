//! The WASI preview1 ABI: errno values, the numeric constants of the `wasi_snapshot_preview1`
//! witx definitions, and bounds-checked access to guest memory.
//!
//! Preview 0 (`wasi_unstable`, the snapshot older toolchains target) shares every constant here
//! except `whence` (its order is cur, end, set) and two layouts: `filestat` (its `nlink` is a u32,
//! so the record is 56 bytes, not 64) and the clock `subscription` (an extra `identifier` field;
//! that one lives in `poll.rs`). [`Filestat`] writes either layout and [`whence::from_preview0`]
//! maps the seek origin; everything else (errno, rights, fdstat, dirent, event, prestat, the
//! function signatures) is the same in both witx files.
//!
//! Every guest pointer and length goes through [`GuestMemory`], whose accessors return
//! [`Errno::Fault`] for any range outside linear memory (including `ptr + len` overflowing u32),
//! so a malicious or buggy guest gets an errno, never a host panic.

/// WASI preview1 `errno`: every value the witx defines, in its order (the discriminant is the wire
/// value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    TooBig = 1,
    Acces,
    Addrinuse,
    Addrnotavail,
    Afnosupport,
    Again,
    Already,
    Badf,
    Badmsg,
    Busy,
    Canceled,
    Child,
    Connaborted,
    Connrefused,
    Connreset,
    Deadlk,
    Destaddrreq,
    Dom,
    Dquot,
    Exist,
    Fault,
    Fbig,
    Hostunreach,
    Idrm,
    Ilseq,
    Inprogress,
    Intr,
    Inval,
    Io,
    Isconn,
    Isdir,
    Loop,
    Mfile,
    Mlink,
    Msgsize,
    Multihop,
    Nametoolong,
    Netdown,
    Netreset,
    Netunreach,
    Nfile,
    Nobufs,
    Nodev,
    Noent,
    Noexec,
    Nolck,
    Nolink,
    Nomem,
    Nomsg,
    Noprotoopt,
    Nospc,
    Nosys,
    Notconn,
    Notdir,
    Notempty,
    Notrecoverable,
    Notsock,
    Notsup,
    Notty,
    Nxio,
    Overflow,
    Ownerdead,
    Perm,
    Pipe,
    Proto,
    Protonosupport,
    Prototype,
    Range,
    Rofs,
    Spipe,
    Srch,
    Stale,
    Timedout,
    Txtbsy,
    Xdev,
    /// The capability model forbids this: an absolute path, a `..` or a symbolic link that leaves
    /// the directory, or a right the descriptor does not have.
    Notcapable,
}

impl Errno {
    /// The WASI errno for a host (Linux) errno; WASI's numbering is its own.
    pub fn from_host(e: rustix::io::Errno) -> Errno {
        use rustix::io::Errno as H;
        const TABLE: &[(H, Errno)] = &[
            (H::TOOBIG, Errno::TooBig),
            (H::ACCESS, Errno::Acces),
            (H::AGAIN, Errno::Again),
            (H::BADF, Errno::Badf),
            (H::BUSY, Errno::Busy),
            (H::DQUOT, Errno::Dquot),
            (H::EXIST, Errno::Exist),
            (H::FAULT, Errno::Fault),
            (H::FBIG, Errno::Fbig),
            (H::ILSEQ, Errno::Ilseq),
            (H::INTR, Errno::Intr),
            (H::INVAL, Errno::Inval),
            (H::IO, Errno::Io),
            (H::ISDIR, Errno::Isdir),
            (H::LOOP, Errno::Loop),
            (H::MFILE, Errno::Mfile),
            (H::MLINK, Errno::Mlink),
            (H::NAMETOOLONG, Errno::Nametoolong),
            (H::NFILE, Errno::Nfile),
            (H::NODEV, Errno::Nodev),
            (H::NOENT, Errno::Noent),
            (H::NOMEM, Errno::Nomem),
            (H::NOSPC, Errno::Nospc),
            (H::NOSYS, Errno::Nosys),
            (H::NOTDIR, Errno::Notdir),
            (H::NOTEMPTY, Errno::Notempty),
            (H::NOTSOCK, Errno::Notsock),
            (H::NOTSUP, Errno::Notsup),
            (H::NOTTY, Errno::Notty),
            (H::NXIO, Errno::Nxio),
            (H::OVERFLOW, Errno::Overflow),
            (H::PERM, Errno::Perm),
            (H::PIPE, Errno::Pipe),
            (H::RANGE, Errno::Range),
            (H::ROFS, Errno::Rofs),
            (H::SPIPE, Errno::Spipe),
            (H::TXTBSY, Errno::Txtbsy),
            (H::XDEV, Errno::Xdev),
        ];
        TABLE.iter().find(|(h, _)| *h == e).map_or(Errno::Io, |&(_, w)| w)
    }

    /// The WASI errno for a host I/O error (its OS error when it has one).
    pub fn from_io(e: &std::io::Error) -> Errno {
        match e.raw_os_error() {
            Some(raw) => Errno::from_host(rustix::io::Errno::from_raw_os_error(raw)),
            None if e.kind() == std::io::ErrorKind::BrokenPipe => Errno::Pipe,
            None => Errno::Io,
        }
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Errno {
        Errno::from_host(e)
    }
}

/// `filetype`.
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SOCKET_STREAM: u8 = 6;
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// `oflags` of `path_open`.
pub mod oflags {
    pub const CREAT: u16 = 1;
    pub const DIRECTORY: u16 = 2;
    pub const EXCL: u16 = 4;
    pub const TRUNC: u16 = 8;
}

/// `fdflags`.
pub mod fdflags {
    pub const APPEND: u16 = 1;
    pub const DSYNC: u16 = 2;
    pub const NONBLOCK: u16 = 4;
    pub const RSYNC: u16 = 8;
    pub const SYNC: u16 = 16;
}

/// `fstflags` of the `*_set_times` calls.
pub mod fstflags {
    pub const ATIM: u16 = 1;
    pub const ATIM_NOW: u16 = 2;
    pub const MTIM: u16 = 4;
    pub const MTIM_NOW: u16 = 8;
}

/// `lookupflags`.
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = 1;
}

/// `rights`: one bit per operation a descriptor may allow.
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;

    /// What a regular file can allow: the `fd_*` operations on data and metadata.
    pub const FILE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
    /// What a directory can allow: every `path_*` operation below it, listing, its own metadata
    /// and sync; never reading, writing or seeking (the testsuite checks `FD_SEEK` is absent).
    pub const DIRECTORY: u64 = FD_DATASYNC
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE;
    /// What a standard stream can allow (no seek or tell: wasi-libc's `isatty` relies on that).
    pub const STREAM: u64 = FD_READ | FD_WRITE | FD_FDSTAT_SET_FLAGS | FD_FILESTAT_GET | POLL_FD_READWRITE;
}

/// `clockid`.
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME: u32 = 2;
    pub const THREAD_CPUTIME: u32 = 3;
}

/// `whence` of `fd_seek`.
pub mod whence {
    pub const SET: u32 = 0;
    pub const CUR: u32 = 1;
    pub const END: u32 = 2;

    /// The preview1 `whence` for preview 0's (whose enum is `cur`, `end`, `set`); an unknown value
    /// stays unknown, so `fd_seek` answers `inval` for it as for a bad preview1 value.
    pub fn from_preview0(how: u32) -> u32 {
        if planted_bug_preview0_whence() {
            return how;
        }
        match how {
            0 => CUR,
            1 => END,
            2 => SET,
            other => other.max(3),
        }
    }

    /// `VMRUN_VM_DEBUG=wasi0-whence-as-preview1`: the planted bug `tests/wasi_programs.rs` shows the
    /// preview 0 seek test catches (preview 0 `whence` values taken as preview1's).
    fn planted_bug_preview0_whence() -> bool {
        static PLANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PLANTED.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "wasi0-whence-as-preview1"))
    }
}

/// A `filestat` record, written in the layout of either snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Filestat {
    /// Preview1: dev @0, ino @8, filetype @16, nlink u64 @24, size @32, atim @40, mtim @48,
    /// ctim @56; 64 bytes.
    pub fn preview1(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..8].copy_from_slice(&self.dev.to_le_bytes());
        out[8..16].copy_from_slice(&self.ino.to_le_bytes());
        out[16] = self.filetype;
        out[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        out[32..40].copy_from_slice(&self.size.to_le_bytes());
        out[40..48].copy_from_slice(&self.atim.to_le_bytes());
        out[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        out[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        out
    }

    /// Preview 0 (`linkcount` is u32): dev @0, ino @8, filetype @16, nlink u32 @20, size @24,
    /// atim @32, mtim @40, ctim @48; 56 bytes. A link count beyond u32 saturates.
    pub fn preview0(&self) -> [u8; 56] {
        let mut out = [0u8; 56];
        out[0..8].copy_from_slice(&self.dev.to_le_bytes());
        out[8..16].copy_from_slice(&self.ino.to_le_bytes());
        out[16] = self.filetype;
        out[20..24].copy_from_slice(&u32::try_from(self.nlink).unwrap_or(u32::MAX).to_le_bytes());
        out[24..32].copy_from_slice(&self.size.to_le_bytes());
        out[32..40].copy_from_slice(&self.atim.to_le_bytes());
        out[40..48].copy_from_slice(&self.mtim.to_le_bytes());
        out[48..56].copy_from_slice(&self.ctim.to_le_bytes());
        out
    }
}

/// `advice` of `fd_advise`.
pub mod advice {
    pub const NORMAL: u32 = 0;
    pub const SEQUENTIAL: u32 = 1;
    pub const RANDOM: u32 = 2;
    pub const WILLNEED: u32 = 3;
    pub const DONTNEED: u32 = 4;
    pub const NOREUSE: u32 = 5;
}

/// `eventtype` of `poll_oneoff` subscriptions and events.
pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

/// Linear memory as WASI sees it: every access is bounds-checked.
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

impl<'a> GuestMemory<'a> {
    pub fn new(bytes: &'a mut [u8]) -> GuestMemory<'a> {
        GuestMemory { bytes }
    }

    fn range(&self, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
        if end > self.bytes.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    pub fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&self.bytes[r])
    }

    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.bytes[r])
    }

    #[cfg(test)]
    pub fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        let b = self.slice(ptr, 8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| Errno::Fault)?))
    }

    pub fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        let b = self.slice(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn write_bytes(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::Fault)?;
        self.slice_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    pub fn write_u8(&mut self, ptr: u32, v: u8) -> Result<(), Errno> {
        self.write_bytes(ptr, &[v])
    }

    pub fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    pub fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// An `iovec`/`ciovec` array: `count` pairs of (buf ptr, buf len), each checked to lie in memory.
    pub fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
        let bytes_len = count.checked_mul(8).ok_or(Errno::Fault)?;
        self.slice(ptr, bytes_len)?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = ptr + i * 8;
            let (buf, len) = (self.read_u32(at)?, self.read_u32(at + 4)?);
            self.range(buf, len)?;
            out.push((buf, len));
        }
        Ok(out)
    }

    /// A guest string (UTF-8 is required: WASI paths are strings).
    pub fn str(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        std::str::from_utf8(self.slice(ptr, len)?).map_err(|_| Errno::Inval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filestat_layouts_of_both_snapshots() {
        let st = Filestat { dev: 1, ino: 2, filetype: 4, nlink: 3, size: 5, atim: 6, mtim: 7, ctim: 8 };
        let (p1, p0) = (st.preview1(), st.preview0());
        let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let fields1: Vec<u64> = [0, 8, 24, 32, 40, 48, 56].iter().map(|&at| u64_at(&p1, at)).collect();
        assert_eq!((fields1, p1[16]), (vec![1, 2, 3, 5, 6, 7, 8], 4));
        let fields0: Vec<u64> = [0, 8, 24, 32, 40, 48].iter().map(|&at| u64_at(&p0, at)).collect();
        assert_eq!((fields0, p0[16]), (vec![1, 2, 5, 6, 7, 8], 4));
        assert_eq!(u32::from_le_bytes(p0[20..24].try_into().unwrap()), 3, "preview 0 nlink is a u32 at 20");
        assert_eq!(&p0[17..20], &[0, 0, 0], "padding stays zero");
        let many = Filestat { nlink: u64::MAX, ..st }.preview0();
        assert_eq!(u32::from_le_bytes(many[20..24].try_into().unwrap()), u32::MAX);
    }

    #[test]
    fn preview0_whence_maps_to_preview1() {
        assert_eq!(
            [0, 1, 2].map(whence::from_preview0),
            [whence::CUR, whence::END, whence::SET],
            "preview 0 is cur, end, set"
        );
        assert!(whence::from_preview0(3) > whence::END && whence::from_preview0(u32::MAX) > whence::END);
    }

    #[test]
    fn accesses_at_the_end_of_memory_are_checked() {
        let mut bytes = [0u8; 16];
        let mut mem = GuestMemory::new(&mut bytes);
        assert!(mem.write_u32(12, 7).is_ok());
        assert_eq!(mem.read_u32(12), Ok(7));
        assert_eq!(mem.write_u32(13, 7), Err(Errno::Fault));
        assert_eq!(mem.slice(16, 0).map(<[u8]>::len), Ok(0));
        assert_eq!(mem.slice(17, 0).map(<[u8]>::len), Err(Errno::Fault));
        assert_eq!(mem.slice(u32::MAX, 2).map(<[u8]>::len), Err(Errno::Fault));
    }

    #[test]
    fn iovecs_pointing_outside_memory_fault() {
        let mut bytes = [0u8; 32];
        let mut mem = GuestMemory::new(&mut bytes);
        mem.write_u32(0, 16).unwrap();
        mem.write_u32(4, 16).unwrap();
        assert_eq!(mem.iovecs(0, 1), Ok(vec![(16, 16)]));
        mem.write_u32(4, 17).unwrap();
        assert_eq!(mem.iovecs(0, 1), Err(Errno::Fault));
        // A count whose byte size overflows u32 must not wrap around.
        assert_eq!(mem.iovecs(0, u32::MAX), Err(Errno::Fault));
    }
}
