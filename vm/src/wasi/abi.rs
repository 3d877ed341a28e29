//! The WASI preview1 ABI: errno values, the numeric constants of the `wasi_snapshot_preview1`
//! witx definitions, and bounds-checked access to guest memory.
//!
//! Every guest pointer and length goes through [`GuestMemory`], whose accessors return
//! [`Errno::Fault`] for any range outside linear memory (including `ptr + len` overflowing u32),
//! so a malicious or buggy guest gets an errno, never a host panic.

/// WASI preview1 `errno` (only the values vmrun produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    TooBig = 1,
    Acces = 2,
    Badf = 8,
    Exist = 20,
    Fault = 21,
    Inval = 28,
    Io = 29,
    Isdir = 31,
    Loop = 32,
    Nametoolong = 37,
    Noent = 44,
    Nosys = 52,
    Notdir = 54,
    Notempty = 55,
    Notsup = 58,
    Overflow = 61,
    Perm = 63,
    Pipe = 64,
    Spipe = 70,
    /// The capability model forbids this: an absolute path or a `..` that escapes a preopen.
    Notcapable = 76,
}

impl Errno {
    /// The closest WASI errno for a host I/O error.
    pub fn from_io(e: &std::io::Error) -> Errno {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => Errno::Noent,
            K::PermissionDenied => Errno::Acces,
            K::AlreadyExists => Errno::Exist,
            K::NotADirectory => Errno::Notdir,
            K::IsADirectory => Errno::Isdir,
            K::DirectoryNotEmpty => Errno::Notempty,
            K::InvalidInput | K::InvalidFilename => Errno::Inval,
            K::Unsupported => Errno::Notsup,
            K::NotSeekable => Errno::Spipe,
            K::BrokenPipe => Errno::Pipe,
            _ => Errno::Io,
        }
    }
}

/// `filetype`.
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
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
}

/// `lookupflags`.
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = 1;
}

/// `rights` bits that vmrun looks at, and the full set.
pub mod rights {
    pub const FD_READ: u64 = 1 << 1;
    /// Streams must not have it (tests check that).
    #[cfg(test)]
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    /// Every right defined by preview1 (bits 0..=29).
    pub const ALL: u64 = (1 << 30) - 1;
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
