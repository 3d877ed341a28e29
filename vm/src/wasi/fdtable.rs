//! The descriptor table: what each guest file descriptor is, and the rights it carries.
//!
//! A guest fd indexes [`FdTable`]: 0–2 are the standard streams, then one entry per pre-opened
//! directory (in `--dir` order), then what `path_open` creates (lowest free number, as POSIX
//! does). Files and directories hold a real host descriptor, so every operation on them is an
//! `f*`/`*at` system call on that descriptor and never a host path (see `sandbox.rs`).
//!
//! Rights (preview1's capability bits) are kept per entry as the specification describes:
//! `path_open` grants the requested base rights narrowed to the directory's inheriting rights and
//! to what the file type can do; `fd_fdstat_set_rights` can only drop rights; each call checks the
//! right it needs with [`Entry::require`] and fails with `notcapable` without it.

use super::abi::{Errno, filetype, rights};
use rustix::fd::{AsFd, OwnedFd};
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// A standard stream: a reader or writer the embedder gave, and the host descriptor behind it
/// when it is the process's own (then `poll_oneoff` can wait on it and `isatty` asks the host).
///
/// The reader or writer has its own lock: `fd_read` and `fd_write` clone the `Arc` under the
/// state lock and use it after releasing that, so a thread waiting for input blocks only the
/// threads that want the same stream (see `files::fd_read_unlocked`).
pub(crate) struct Stream {
    pub io: Arc<Mutex<StreamIo>>,
    pub host: Option<OwnedFd>,
}

pub(crate) enum StreamIo {
    Input(Box<dyn Read + Send>),
    Output(Box<dyn Write + Send>),
}

impl Stream {
    pub fn new(io: StreamIo, host: Option<OwnedFd>) -> Stream {
        Stream { io: Arc::new(Mutex::new(io)), host }
    }

    /// `filetype` as the guest sees it: a character device only if the host stream is a terminal.
    pub fn filetype(&self) -> u8 {
        match &self.host {
            Some(fd) if rustix::termios::isatty(fd) => filetype::CHARACTER_DEVICE,
            Some(fd) => match rustix::fs::fstat(fd) {
                Ok(st) => filetype_of(rustix::fs::FileType::from_raw_mode(st.st_mode)),
                Err(_) => filetype::UNKNOWN,
            },
            None => filetype::UNKNOWN,
        }
    }
}

/// What a descriptor refers to.
pub(crate) enum Kind {
    Stream(Stream),
    File(File),
    Dir(OwnedFd),
}

/// One open descriptor.
pub(crate) struct Entry {
    pub kind: Kind,
    pub base: u64,
    pub inheriting: u64,
    /// The guest-visible name if this is a pre-opened directory (what `fd_prestat_*` report).
    pub preopen: Option<String>,
}

impl Entry {
    pub fn new(kind: Kind, base: u64, inheriting: u64) -> Entry {
        Entry { kind, base, inheriting, preopen: None }
    }

    /// Fail with `notcapable` unless every bit of `needed` is among the base rights.
    pub fn require(&self, needed: u64) -> Result<(), Errno> {
        if self.base & needed == needed { Ok(()) } else { Err(Errno::Notcapable) }
    }

    /// The host descriptor of a file or directory (streams have none the guest may use).
    pub fn host_fd(&self) -> Result<rustix::fd::BorrowedFd<'_>, Errno> {
        match &self.kind {
            Kind::File(f) => Ok(f.as_fd()),
            Kind::Dir(d) => Ok(d.as_fd()),
            Kind::Stream(_) => Err(Errno::Badf),
        }
    }

    pub fn file(&self) -> Result<&File, Errno> {
        match &self.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(Errno::Isdir),
            Kind::Stream(_) => Err(Errno::Spipe),
        }
    }

    pub fn dir(&self) -> Result<&OwnedFd, Errno> {
        match &self.kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Errno::Notdir),
        }
    }

    pub fn filetype(&self) -> u8 {
        match &self.kind {
            Kind::Stream(s) => s.filetype(),
            Kind::File(f) => match rustix::fs::fstat(f) {
                Ok(st) => filetype_of(rustix::fs::FileType::from_raw_mode(st.st_mode)),
                Err(_) => filetype::UNKNOWN,
            },
            Kind::Dir(_) => filetype::DIRECTORY,
        }
    }
}

/// The rights a descriptor of this file type can have at most.
pub(crate) fn rights_for(filetype: u8) -> u64 {
    match filetype {
        filetype::DIRECTORY => rights::DIRECTORY,
        filetype::REGULAR_FILE => rights::FILE,
        _ => rights::FILE & !(rights::FD_SEEK | rights::FD_TELL),
    }
}

pub(crate) fn filetype_of(t: rustix::fs::FileType) -> u8 {
    use rustix::fs::FileType as T;
    match t {
        T::RegularFile => filetype::REGULAR_FILE,
        T::Directory => filetype::DIRECTORY,
        T::Symlink => filetype::SYMBOLIC_LINK,
        T::CharacterDevice => filetype::CHARACTER_DEVICE,
        T::BlockDevice => filetype::BLOCK_DEVICE,
        T::Socket => filetype::SOCKET_STREAM,
        _ => filetype::UNKNOWN,
    }
}

/// Guest fd → entry.
#[derive(Default)]
pub(crate) struct FdTable {
    slots: Vec<Option<Entry>>,
}

impl FdTable {
    pub fn get(&self, fd: u32) -> Result<&Entry, Errno> {
        self.slots.get(fd as usize).and_then(Option::as_ref).ok_or(Errno::Badf)
    }

    pub fn get_mut(&mut self, fd: u32) -> Result<&mut Entry, Errno> {
        self.slots.get_mut(fd as usize).and_then(Option::as_mut).ok_or(Errno::Badf)
    }

    /// Append at the end (the standard streams and preopens, in order).
    pub fn push(&mut self, entry: Entry) {
        self.slots.push(Some(entry));
    }

    /// Put `entry` in the lowest free slot and return its number.
    pub fn insert(&mut self, entry: Entry) -> Result<u32, Errno> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let fd = u32::try_from(slot).map_err(|_| Errno::Mfile)?;
        self.slots[slot] = Some(entry);
        Ok(fd)
    }

    /// Remove `fd`, closing its host descriptor.
    pub fn close(&mut self, fd: u32) -> Result<(), Errno> {
        let slot = self.slots.get_mut(fd as usize).ok_or(Errno::Badf)?;
        slot.take().map(drop).ok_or(Errno::Badf)
    }

    /// `fd_renumber`: `from` takes `to`'s number (closing what `to` was); both must be open.
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        self.get(from)?;
        self.get(to)?;
        if from != to {
            let entry = self.slots[from as usize].take();
            self.slots[to as usize] = entry;
        }
        Ok(())
    }
}
