//! The `path_*` calls: opening, creating, removing, renaming, linking and inspecting names below a
//! directory descriptor.
//!
//! Each call checks the directory's right for the operation (`notcapable`), resolves the guest
//! path with `sandbox::resolve` into (parent directory descriptor, last name), then makes one
//! `*at` system call on that pair that does not follow the last name. The sandbox invariant
//! (nothing outside a pre-opened directory is opened, created, renamed or deleted) therefore
//! rests on `sandbox.rs` alone; see its comment for the rules.

use super::abi::{Errno, Filestat, GuestMemory, fdflags, lookupflags, oflags, rights};
use super::fdtable::{Entry, Kind, filetype_of, rights_for};
use super::files::{filestat_of, timestamps};
use super::sandbox::{self, Follow, Target};
use super::syscalls::WasiState;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The directory of `fd` and the guest path at `path`, after checking `right` on it.
fn dir_path<'a>(
    s: &'a WasiState,
    mem: &GuestMemory,
    fd: u32,
    path: (u32, u32),
    right: u64,
) -> Result<(&'a Entry, String), Errno> {
    let entry = s.fds.get(fd)?;
    entry.dir()?;
    entry.require(right)?;
    Ok((entry, mem.str(path.0, path.1)?.to_string()))
}

/// Resolve `path` below `entry`; a trailing `/` means the last link is followed (POSIX).
fn resolve(entry: &Entry, path: &str, follow: bool) -> Result<Target, Errno> {
    let follow = if follow || path.ends_with('/') { Follow::Yes } else { Follow::No };
    sandbox::resolve(rustix::fd::AsFd::as_fd(entry.dir()?), path, follow)
}

/// `lstat` of a target; a trailing slash requires a directory.
fn stat_target(t: &Target) -> Result<rustix::fs::Stat, Errno> {
    let st = rustix::fs::statat(&t.dir, t.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
    if t.trailing_slash && FileType::from_raw_mode(st.st_mode as _) != FileType::Directory {
        return Err(Errno::Notdir);
    }
    Ok(st)
}

/// Host open flags for `path_open`'s oflags, fdflags and the rights it grants.
fn open_flags(oflags_: u16, fdflags_: u16, base: u64, trailing_slash: bool) -> OFlags {
    let read = base & (rights::FD_READ | rights::FD_READDIR) != 0;
    let write = base & (rights::FD_WRITE | rights::FD_ALLOCATE | rights::FD_FILESTAT_SET_SIZE) != 0;
    let mut fl = match (read, write) {
        (_, false) => OFlags::RDONLY,
        (false, true) => OFlags::WRONLY,
        (true, true) => OFlags::RDWR,
    };
    // The sandbox resolved every link the guest asked to follow; the kernel follows none.
    fl |= OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for (wasi, host) in [
        (oflags::CREAT, OFlags::CREATE),
        (oflags::EXCL, OFlags::EXCL),
        (oflags::TRUNC, OFlags::TRUNC),
        (oflags::DIRECTORY, OFlags::DIRECTORY),
    ] {
        fl.set(host, oflags_ & wasi != 0);
    }
    for (wasi, host) in [
        (fdflags::APPEND, OFlags::APPEND),
        (fdflags::DSYNC, OFlags::DSYNC),
        (fdflags::NONBLOCK, OFlags::NONBLOCK),
        (fdflags::RSYNC, OFlags::RSYNC),
        (fdflags::SYNC, OFlags::SYNC),
    ] {
        if fdflags_ & wasi != 0 {
            fl |= host;
        }
    }
    if trailing_slash {
        fl |= OFlags::DIRECTORY;
    }
    fl
}

impl WasiState {
    #[allow(clippy::too_many_arguments)] // the preview1 signature
    pub fn path_open(
        &mut self,
        mem: &mut GuestMemory,
        dirfd: u32,
        lookup: u32,
        path: (u32, u32),
        oflags_: u16,
        (base, inheriting): (u64, u64),
        fdflags_: u16,
        opened: u32,
    ) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, dirfd, path, rights::PATH_OPEN)?;
        if oflags_ & oflags::CREAT != 0 {
            dir.require(rights::PATH_CREATE_FILE)?;
            if oflags_ & oflags::DIRECTORY != 0 {
                return Err(Errno::Inval);
            }
        }
        if oflags_ & oflags::TRUNC != 0 {
            dir.require(rights::PATH_FILESTAT_SET_SIZE)?;
        }
        // A new descriptor gets at most what its directory passes down.
        let (base, inheriting) = (base & dir.inheriting, inheriting & dir.inheriting);
        let t = resolve(dir, &path, lookup & lookupflags::SYMLINK_FOLLOW != 0)?;
        let flags = open_flags(oflags_, fdflags_, base, t.trailing_slash);
        let fd = rustix::fs::openat(&t.dir, t.name.as_slice(), flags, Mode::from_raw_mode(0o666))?;
        let ft = filetype_of(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode as _));
        let kind = match ft {
            super::abi::filetype::DIRECTORY => Kind::Dir(fd),
            _ => Kind::File(std::fs::File::from(fd)),
        };
        let new = self.fds.insert(Entry::new(kind, base & rights_for(ft), inheriting))?;
        mem.write_u32(opened, new)
    }

    pub fn path_create_directory(&mut self, mem: &mut GuestMemory, fd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_CREATE_DIRECTORY)?;
        let t = sandbox::resolve(rustix::fd::AsFd::as_fd(dir.dir()?), &path, Follow::No)?;
        Ok(rustix::fs::mkdirat(&t.dir, t.name_with_slash(), Mode::from_raw_mode(0o777))?)
    }

    pub fn path_remove_directory(&mut self, mem: &mut GuestMemory, fd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_REMOVE_DIRECTORY)?;
        let t = sandbox::resolve(rustix::fd::AsFd::as_fd(dir.dir()?), &path, Follow::No)?;
        Ok(rustix::fs::unlinkat(&t.dir, t.name_with_slash(), AtFlags::REMOVEDIR)?)
    }

    pub fn path_unlink_file(&mut self, mem: &mut GuestMemory, fd: u32, path: (u32, u32)) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_UNLINK_FILE)?;
        let t = sandbox::resolve(rustix::fd::AsFd::as_fd(dir.dir()?), &path, Follow::No)?;
        Ok(rustix::fs::unlinkat(&t.dir, t.name_with_slash(), AtFlags::empty())?)
    }

    pub fn path_filestat_get(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        lookup: u32,
        path: (u32, u32),
        buf: u32,
    ) -> Result<(), Errno> {
        let st = self.path_filestat(mem, fd, lookup, path)?;
        mem.write_bytes(buf, &st.preview1())
    }

    /// What `path_filestat_get` reports, in either snapshot's layout.
    pub fn path_filestat(&self, mem: &GuestMemory, fd: u32, lookup: u32, path: (u32, u32)) -> Result<Filestat, Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_FILESTAT_GET)?;
        let t = resolve(dir, &path, lookup & lookupflags::SYMLINK_FOLLOW != 0)?;
        Ok(filestat_of(&stat_target(&t)?))
    }

    #[allow(clippy::too_many_arguments)] // the preview1 signature
    pub fn path_filestat_set_times(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        lookup: u32,
        path: (u32, u32),
        atim: u64,
        mtim: u64,
        flags: u16,
    ) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_FILESTAT_SET_TIMES)?;
        let times = timestamps(atim, mtim, flags)?;
        let t = resolve(dir, &path, lookup & lookupflags::SYMLINK_FOLLOW != 0)?;
        stat_target(&t)?;
        Ok(rustix::fs::utimensat(&t.dir, t.name.as_slice(), &times, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// A hard link `new_path` (below `new_fd`) to `old_path` (below `old_fd`).
    #[allow(clippy::too_many_arguments)] // the preview1 signature
    pub fn path_link(
        &mut self,
        mem: &mut GuestMemory,
        old_fd: u32,
        lookup: u32,
        old_path: (u32, u32),
        new_fd: u32,
        new_path: (u32, u32),
    ) -> Result<(), Errno> {
        let (old_dir, old_path) = dir_path(self, mem, old_fd, old_path, rights::PATH_LINK_SOURCE)?;
        let (new_dir, new_path) = dir_path(self, mem, new_fd, new_path, rights::PATH_LINK_TARGET)?;
        let old = resolve(old_dir, &old_path, lookup & lookupflags::SYMLINK_FOLLOW != 0)?;
        if old.trailing_slash {
            // Only a directory may end with `/`, and directories cannot be hard-linked.
            stat_target(&old)?;
            return Err(Errno::Perm);
        }
        let new = sandbox::resolve(rustix::fd::AsFd::as_fd(new_dir.dir()?), &new_path, Follow::No)?;
        Ok(rustix::fs::linkat(&old.dir, old.name.as_slice(), &new.dir, new.name_with_slash(), AtFlags::empty())?)
    }

    pub fn path_rename(
        &mut self,
        mem: &mut GuestMemory,
        old_fd: u32,
        old_path: (u32, u32),
        new_fd: u32,
        new_path: (u32, u32),
    ) -> Result<(), Errno> {
        let (old_dir, old_path) = dir_path(self, mem, old_fd, old_path, rights::PATH_RENAME_SOURCE)?;
        let (new_dir, new_path) = dir_path(self, mem, new_fd, new_path, rights::PATH_RENAME_TARGET)?;
        let old = sandbox::resolve(rustix::fd::AsFd::as_fd(old_dir.dir()?), &old_path, Follow::No)?;
        let new = sandbox::resolve(rustix::fd::AsFd::as_fd(new_dir.dir()?), &new_path, Follow::No)?;
        Ok(rustix::fs::renameat(&old.dir, old.name_with_slash(), &new.dir, new.name_with_slash())?)
    }

    /// A symbolic link `new_path` (below `fd`) whose contents are `old_path`. An absolute target
    /// is refused: it could never be followed inside the sandbox. A relative one is stored as
    /// given; following it later obeys the sandbox's `..` rule.
    pub fn path_symlink(
        &mut self,
        mem: &mut GuestMemory,
        old_path: (u32, u32),
        fd: u32,
        new_path: (u32, u32),
    ) -> Result<(), Errno> {
        let target = mem.str(old_path.0, old_path.1)?.to_string();
        let (dir, new_path) = dir_path(self, mem, fd, new_path, rights::PATH_SYMLINK)?;
        if target.starts_with('/') {
            return Err(Errno::Notcapable);
        }
        if target.contains('\0') {
            return Err(Errno::Inval);
        }
        let t = sandbox::resolve(rustix::fd::AsFd::as_fd(dir.dir()?), &new_path, Follow::No)?;
        Ok(rustix::fs::symlinkat(target.as_str(), &t.dir, t.name_with_slash())?)
    }

    /// The contents of a symbolic link, cut to `len` bytes (no NUL is added).
    #[allow(clippy::too_many_arguments)] // the preview1 signature
    pub fn path_readlink(
        &mut self,
        mem: &mut GuestMemory,
        fd: u32,
        path: (u32, u32),
        buf: u32,
        len: u32,
        used: u32,
    ) -> Result<(), Errno> {
        let (dir, path) = dir_path(self, mem, fd, path, rights::PATH_READLINK)?;
        let t = resolve(dir, &path, false)?;
        let target = rustix::fs::readlinkat(&t.dir, t.name.as_slice(), Vec::new())?.into_bytes();
        let n = target.len().min(len as usize);
        mem.write_bytes(buf, &target[..n])?;
        mem.write_u32(used, n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::super::syscalls::testing::*;
    use super::*;
    use crate::wasi::abi::{filetype, whence};

    const RW: (u64, u64) = (rights::FD_READ | rights::FD_WRITE | rights::FD_SEEK, 0);

    fn open(
        s: &mut WasiState,
        mem: &mut GuestMemory,
        dir: u32,
        path: &str,
        of: u16,
        r: (u64, u64),
    ) -> Result<u32, Errno> {
        let p = put_path(mem, path);
        s.path_open(mem, dir, lookupflags::SYMLINK_FOLLOW, p, of, r, 0, 0)?;
        Ok(mem.read_u32(0).unwrap())
    }

    #[test]
    fn path_open_read_seek_and_escapes() {
        let (mut s, sb) = with_preopen("open");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let fd = open(&mut s, &mut mem, 3, "sub/data.txt", 0, RW).unwrap();
        assert_eq!(fd, 4);
        s.fd_seek(&mut mem, fd, 3, whence::SET, 8).unwrap();
        assert_eq!(u64_at(&mem, 8), 3);
        mem.write_u32(16, 64).unwrap();
        mem.write_u32(20, 4).unwrap();
        s.fd_read(&mut mem, fd, 16, 1, 24).unwrap();
        assert_eq!((mem.read_u32(24), mem.slice(64, 4)), (Ok(4), Ok(&b"3456"[..])));
        s.fd_pread(&mut mem, fd, (16, 1), 8, 24).unwrap();
        assert_eq!((mem.read_u32(24), mem.slice(64, 2)), (Ok(2), Ok(&b"89"[..])));
        s.fd_close(fd).unwrap();
        // Read-only: writing is refused by the rights, before the host would.
        let ro = open(&mut s, &mut mem, 3, "sub/data.txt", 0, (rights::FD_READ, 0)).unwrap();
        assert_eq!(s.fd_write(&mut mem, ro, 16, 1, 24), Err(Errno::Notcapable));
        for bad in ["../outside.txt", "/etc/passwd", "sub/../../outside.txt"] {
            assert_eq!(open(&mut s, &mut mem, 3, bad, 0, RW), Err(Errno::Notcapable), "{bad}");
        }
        assert_eq!(open(&mut s, &mut mem, 3, "missing.txt", 0, RW), Err(Errno::Noent));
        assert_eq!(open(&mut s, &mut mem, 1, "x", 0, RW), Err(Errno::Notdir));
        let p = (510, 5);
        assert_eq!(s.path_open(&mut mem, 3, 1, p, 0, RW, 0, 0), Err(Errno::Fault));
        assert_eq!(std::fs::read(sb.dir.join("outside.txt")).unwrap(), b"secret");
    }

    #[test]
    fn path_open_creates_writes_and_opens_directories() {
        let (mut s, sb) = with_preopen("create");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let sub = open(&mut s, &mut mem, 3, "sub", oflags::DIRECTORY, (rights::DIRECTORY, u64::MAX)).unwrap();
        s.fd_fdstat_get(&mut mem, sub, 32).unwrap();
        assert_eq!(mem.slice(32, 1), Ok(&[filetype::DIRECTORY][..]));
        assert_eq!(u64_at(&mem, 40) & rights::FD_SEEK, 0, "directories cannot seek");
        let fd = open(&mut s, &mut mem, sub, "out.txt", oflags::CREAT | oflags::TRUNC, RW).unwrap();
        mem.write_bytes(64, b"written").unwrap();
        mem.write_u32(16, 64).unwrap();
        mem.write_u32(20, 7).unwrap();
        s.fd_write(&mut mem, fd, 16, 1, 24).unwrap();
        s.fd_close(fd).unwrap();
        assert_eq!(std::fs::read(sb.root().join("sub/out.txt")).unwrap(), b"written");
        // A directory descriptor is a sandbox root: `..` leaves it.
        assert_eq!(open(&mut s, &mut mem, sub, "../sub/x", oflags::CREAT, RW), Err(Errno::Notcapable));
        let excl = oflags::CREAT | oflags::EXCL;
        assert_eq!(open(&mut s, &mut mem, sub, "out.txt", excl, RW), Err(Errno::Exist));
        assert_eq!(open(&mut s, &mut mem, sub, "out.txt", oflags::DIRECTORY, (0, 0)), Err(Errno::Notdir));
        assert_eq!(open(&mut s, &mut mem, sub, "out.txt/", 0, (0, 0)), Err(Errno::Notdir));
        assert_eq!(open(&mut s, &mut mem, 3, ".", oflags::DIRECTORY, RW), Err(Errno::Isdir));
        // Rights: a directory without PATH_CREATE_FILE cannot create.
        s.fd_fdstat_set_rights(sub, rights::PATH_OPEN, 0).unwrap();
        assert_eq!(open(&mut s, &mut mem, sub, "new.txt", oflags::CREAT, RW), Err(Errno::Notcapable));
        assert_eq!(s.fd_fdstat_set_rights(sub, rights::DIRECTORY, 0), Err(Errno::Notcapable), "rights only shrink");
        assert!(!sb.root().join("sub/new.txt").exists());
    }

    #[test]
    fn directories_links_and_renames_stay_inside() {
        let (mut s, sb) = with_preopen("mkdir");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let p = put_path(&mut mem, "sub/new");
        s.path_create_directory(&mut mem, 3, p).unwrap();
        assert!(sb.root().join("sub/new").is_dir());
        assert_eq!(s.path_create_directory(&mut mem, 3, p), Err(Errno::Exist));
        s.path_filestat_get(&mut mem, 3, 1, p, 0).unwrap();
        assert_eq!(mem.slice(16, 1), Ok(&[filetype::DIRECTORY][..]));
        s.path_remove_directory(&mut mem, 3, p).unwrap();
        assert!(!sb.root().join("sub/new").exists());
        // Links: a relative link may point anywhere, but it is only followed inside.
        let (target, link) = ((300, 17), put_path(&mut mem, "sub/esc"));
        mem.write_bytes(300, b"../../outside.txt").unwrap();
        s.path_symlink(&mut mem, target, 3, link).unwrap();
        assert_eq!(open(&mut s, &mut mem, 3, "sub/esc", 0, RW), Err(Errno::Notcapable));
        let p = put_path(&mut mem, "sub/esc");
        s.path_readlink(&mut mem, 3, p, 400, 64, 8).unwrap();
        assert_eq!((mem.read_u32(8), mem.slice(400, 17)), (Ok(17), Ok(&b"../../outside.txt"[..])));
        mem.write_bytes(300, b"/etc/passwd").unwrap();
        let link = put_path(&mut mem, "abs");
        assert_eq!(s.path_symlink(&mut mem, (300, 11), 3, link), Err(Errno::Notcapable));
        // Renames and hard links with `..` never reach outside.
        let (a, b) = (put_path(&mut mem, "sub/data.txt"), (300, 14));
        mem.write_bytes(300, b"../outside.txt").unwrap();
        assert_eq!(s.path_rename(&mut mem, 3, a, 3, b), Err(Errno::Notcapable));
        assert_eq!(s.path_link(&mut mem, 3, 0, a, 3, b), Err(Errno::Notcapable));
        assert_eq!(s.path_rename(&mut mem, 3, b, 3, a), Err(Errno::Notcapable));
        let c = put_path(&mut mem, "sub/esc/x");
        assert_eq!(s.path_unlink_file(&mut mem, 3, c), Err(Errno::Notcapable));
        let up = put_path(&mut mem, "..");
        assert_eq!(s.path_remove_directory(&mut mem, 3, up), Err(Errno::Notcapable));
        assert_eq!(std::fs::read(sb.dir.join("outside.txt")).unwrap(), b"secret");
        assert_eq!(std::fs::read(sb.root().join("sub/data.txt")).unwrap(), b"0123456789");
        let p = put_path(&mut mem, "sub/data.txt");
        s.path_unlink_file(&mut mem, 3, p).unwrap();
        assert!(!sb.root().join("sub/data.txt").exists());
    }

    #[test]
    fn trailing_slashes_follow_posix() {
        let (mut s, _sb) = with_preopen("slash");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let file = put_path(&mut mem, "sub/data.txt/");
        assert_eq!(s.path_unlink_file(&mut mem, 3, file), Err(Errno::Notdir));
        assert_eq!(s.path_remove_directory(&mut mem, 3, file), Err(Errno::Notdir));
        assert_eq!(s.path_filestat_get(&mut mem, 3, 0, file, 0), Err(Errno::Notdir));
        let dir = put_path(&mut mem, "sub/");
        assert_eq!(s.path_unlink_file(&mut mem, 3, dir), Err(Errno::Isdir));
        s.path_filestat_get(&mut mem, 3, 0, dir, 0).unwrap();
    }
}
