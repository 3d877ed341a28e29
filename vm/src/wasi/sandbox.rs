//! Path resolution below a directory descriptor: the whole of vmrun's file-system sandbox.
//!
//! Policy: a guest reaches the host file system only through directory descriptors (the ones
//! pre-opened with `--dir`, and those it opens below them). Every guest path is resolved here
//! **by the host kernel one component at a time, relative to a directory file descriptor**, never
//! as a host path string:
//! - an absolute path is refused (`notcapable`), and so is a path with a NUL (`inval`);
//! - each directory on the way is opened with `openat(dir, name, O_PATH | O_DIRECTORY |
//!   O_NOFOLLOW)`: the kernel looks up exactly one name and never follows a link there;
//! - `.` is skipped; `..` closes the last opened directory; a `..` with nothing left to close
//!   would leave the starting directory and is refused (`notcapable`), as wasmtime's cap-std does:
//!   every directory descriptor is a sandbox root of its own;
//! - a symbolic link met on the way (any component, and the last one when the caller follows
//!   links) is read with `readlinkat` and its target spliced into the remaining path, so the
//!   same `..` rule applies inside link targets; an absolute target is refused (`notcapable`);
//!   more than [`MAX_SYMLINK_HOPS`] links give `loop`.
//!
//! The result is a [`Target`]: a descriptor of the parent directory (inside the sandbox by
//! construction) and one last name without `/`. Callers finish with one `*at` system call on that
//! pair whose last component the kernel does not follow (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`,
//! or calls that never follow it: `mkdirat`, `unlinkat`, `renameat`, `symlinkat`, `linkat`).
//! So there is no time-of-check/time-of-use window: a link swapped in by another process between
//! the resolution and the call is not followed by the kernel.
//!
//! A trailing `/` is kept as [`Target::trailing_slash`]. The calls that never follow the last
//! component get it back (`Target::name_with_slash`), so the kernel applies POSIX's rules (a
//! trailing slash on a non-directory is `notdir`); the calls that could follow it (open, stat,
//! utimens) instead resolve the last link here and check for a directory themselves.

use super::abi::Errno;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::collections::VecDeque;

/// Symbolic links followed in one resolution before giving up with `loop` (Linux uses 40).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// `VMRUN_VM_DEBUG=wasi-dotdot-escape`: the planted bug the sandbox tests must catch (`..` at the
/// starting directory walks to its parent instead of failing).
fn planted_escape() -> bool {
    static PLANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "wasi-dotdot-escape"))
}

/// Whether the last component is followed when it is a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    Yes,
    No,
}

/// A resolved guest path: a directory inside the sandbox and one name in it.
#[derive(Debug)]
pub struct Target {
    /// The parent directory (an `O_PATH` descriptor).
    pub dir: OwnedFd,
    /// The last component: a plain name, or `.` when the path names the directory itself.
    pub name: Vec<u8>,
    /// The guest path ended with `/`.
    pub trailing_slash: bool,
}

impl Target {
    /// The last name with the guest's trailing slash, for calls that never follow it.
    pub fn name_with_slash(&self) -> Vec<u8> {
        let mut n = self.name.clone();
        if self.trailing_slash {
            n.push(b'/');
        }
        n
    }
}

/// Open `name` in `dir` as a directory to walk through, without following a link.
fn open_step(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// The target of `name` in `dir` if it is a symbolic link.
fn read_link(dir: BorrowedFd<'_>, name: &[u8]) -> Option<Vec<u8>> {
    rustix::fs::readlinkat(dir, name, Vec::new()).ok().map(|t| t.into_bytes())
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}

/// The directories opened so far below the starting one (`..` pops them).
struct Walk<'a> {
    start: BorrowedFd<'a>,
    opened: Vec<OwnedFd>,
}

impl Walk<'_> {
    fn current(&self) -> BorrowedFd<'_> {
        self.opened.last().map_or(self.start, AsFd::as_fd)
    }

    fn up(&mut self) -> Result<(), Errno> {
        if self.opened.is_empty() && planted_escape() {
            self.opened.push(open_step(self.current(), b"..")?);
            return Ok(());
        }
        self.opened.pop().map(drop).ok_or(Errno::Notcapable)
    }

    /// The current directory as a descriptor the caller owns.
    fn into_dir(mut self) -> Result<OwnedFd, Errno> {
        match self.opened.pop() {
            Some(fd) => Ok(fd),
            None => Ok(open_step(self.start, b".")?),
        }
    }
}

/// Queue a link's target in front of the rest of the path.
fn splice(pending: &mut VecDeque<Vec<u8>>, target: &[u8], hops: &mut u32) -> Result<(), Errno> {
    *hops += 1;
    if *hops > MAX_SYMLINK_HOPS {
        return Err(Errno::Loop);
    }
    if target.starts_with(b"/") {
        return Err(Errno::Notcapable);
    }
    // `..` must stay a component of its own; `split` drops only empty and `.` ones.
    let parts: Vec<Vec<u8>> = split(target).collect();
    for c in parts.into_iter().rev() {
        pending.push_front(c);
    }
    Ok(())
}

/// Resolve guest `path` relative to the directory `start`.
pub fn resolve(start: BorrowedFd<'_>, path: &str, follow: Follow) -> Result<Target, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.starts_with('/') {
        return Err(Errno::Notcapable);
    }
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    let trailing_slash = path.ends_with('/');
    let mut pending: VecDeque<Vec<u8>> = split(path.as_bytes()).collect();
    let mut walk = Walk { start, opened: Vec::new() };
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == b".." {
            walk.up()?;
            continue;
        }
        if pending.is_empty() {
            // The last component: follow it only if asked (a trailing `/` is handled by callers).
            if follow == Follow::Yes
                && let Some(target) = read_link(walk.current(), &name)
            {
                splice(&mut pending, &target, &mut hops)?;
                continue;
            }
            return Ok(Target { dir: walk.into_dir()?, name, trailing_slash });
        }
        match open_step(walk.current(), &name) {
            Ok(fd) => walk.opened.push(fd),
            Err(e) if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP => {
                let target = read_link(walk.current(), &name).ok_or(Errno::Notdir)?;
                splice(&mut pending, &target, &mut hops)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Only `.`/`..` components (or a link to one): the path names the current directory.
    Ok(Target { dir: walk.into_dir()?, name: b".".to_vec(), trailing_slash })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("vmrun-sandbox-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("root/sub/deeper")).unwrap();
            std::fs::write(p.join("root/sub/file.txt"), b"x").unwrap();
            std::fs::write(p.join("outside.txt"), b"secret").unwrap();
            TempDir(p)
        }

        fn root(&self) -> PathBuf {
            self.0.join("root")
        }

        fn open_root(&self) -> OwnedFd {
            rustix::fs::open(self.root(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The host path a target names, read back through /proc (for assertions only).
    fn host_path(t: &Result<Target, Errno>) -> Result<PathBuf, Errno> {
        let t = t.as_ref().map_err(|e| *e)?;
        let dir = std::fs::read_link(format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&t.dir))).unwrap();
        Ok(dir.join(std::str::from_utf8(&t.name).unwrap()))
    }

    fn canon(p: &Path) -> PathBuf {
        p.canonicalize().unwrap()
    }

    #[test]
    fn plain_dot_and_dotdot_inside_the_root() {
        let d = TempDir::new("plain");
        let root = d.open_root();
        let sub = canon(&d.root().join("sub"));
        let at = |p: &str| host_path(&resolve(root.as_fd(), p, Follow::Yes));
        assert_eq!(at("sub/file.txt"), Ok(sub.join("file.txt")));
        assert_eq!(at("./sub//deeper/../file.txt"), Ok(sub.join("file.txt")));
        assert_eq!(at("."), Ok(canon(&d.root()).join(".")));
        assert_eq!(at("sub/.."), Ok(canon(&d.root()).join(".")));
        assert_eq!(at("sub/new.txt"), Ok(sub.join("new.txt")), "a missing last name is fine");
        let t = resolve(root.as_fd(), "sub/", Follow::No).unwrap();
        assert_eq!((t.name.as_slice(), t.trailing_slash), (&b"sub"[..], true));
        assert_eq!(t.name_with_slash(), b"sub/");
    }

    #[test]
    fn escapes_and_absolute_paths_are_refused() {
        let d = TempDir::new("escape");
        let root = d.open_root();
        for bad in ["..", "../x", "sub/../../x", "/etc/passwd", "sub/deeper/../../../outside.txt"] {
            assert_eq!(resolve(root.as_fd(), bad, Follow::Yes).map(drop), Err(Errno::Notcapable), "{bad}");
        }
        assert_eq!(resolve(root.as_fd(), "a\0b", Follow::Yes).map(drop), Err(Errno::Inval));
        // A directory descriptor is a root of its own: one level down, `..` is already out.
        let sub = open_step(root.as_fd(), b"sub").unwrap();
        assert_eq!(resolve(sub.as_fd(), "../sub/file.txt", Follow::Yes).map(drop), Err(Errno::Notcapable));
    }

    #[test]
    fn intermediate_components_must_be_directories() {
        let d = TempDir::new("notdir");
        let root = d.open_root();
        let r = |p: &str| resolve(root.as_fd(), p, Follow::Yes).map(drop);
        assert_eq!(r("sub/file.txt/x"), Err(Errno::Notdir));
        assert_eq!(r("missing/x"), Err(Errno::Noent));
        // `missing/..` must not resolve to the root just because the text cancels out.
        assert_eq!(r("missing/../sub"), Err(Errno::Noent));
        assert_eq!(r(""), Err(Errno::Noent));
    }

    #[test]
    fn symlinks_are_followed_inside_and_refused_outside() {
        use std::os::unix::fs::symlink;
        let d = TempDir::new("links");
        let root = d.open_root();
        let r = d.root();
        symlink("sub/deeper", r.join("inside")).unwrap();
        symlink("..", r.join("sub/up")).unwrap();
        symlink("../..", r.join("sub/upup")).unwrap();
        symlink("../outside.txt", r.join("escape")).unwrap();
        symlink(d.0.join("outside.txt"), r.join("abs")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        let at = |p: &str, f| host_path(&resolve(root.as_fd(), p, f));
        let sub = canon(&r.join("sub"));
        assert_eq!(at("inside/..", Follow::Yes), Ok(sub.join(".")));
        assert_eq!(at("sub/up/sub/file.txt", Follow::Yes), Ok(sub.join("file.txt")));
        assert_eq!(at("sub/upup/x", Follow::Yes), Err(Errno::Notcapable));
        assert_eq!(at("escape", Follow::Yes), Err(Errno::Notcapable));
        assert_eq!(at("abs", Follow::Yes), Err(Errno::Notcapable));
        assert_eq!(at("abs/x", Follow::No), Err(Errno::Notcapable), "intermediate links are always followed");
        assert_eq!(at("loop1", Follow::Yes), Err(Errno::Loop));
        // Not following the last link leaves it for the caller's NOFOLLOW call.
        assert_eq!(at("escape", Follow::No), Ok(canon(&r).join("escape")));
    }
}
