//! Path resolution inside a pre-opened directory: the whole of vmrun's file-system sandbox.
//!
//! Policy: a guest reaches the host file system only below the directories pre-opened with
//! `--dir`. A guest path is resolved here, component by component, against a *component stack*
//! relative to the preopen's root (a directory fd opened with `path_open` carries its own stack,
//! so it starts deeper but has the same root):
//! - an absolute path is refused (`notcapable`);
//! - `.` is skipped; `..` pops one component, and popping past the root is refused (`notcapable`);
//! - every symbolic link met on the way (every intermediate component, and the last one when the
//!   guest asked to follow links) is read and its target spliced into the remaining path, so `..`
//!   inside a link target obeys the same rule; an absolute link target is refused (`notcapable`);
//!   more than [`MAX_SYMLINK_HOPS`] links give `loop`;
//! - an intermediate component that is not a directory gives `notdir` (or `noent`).
//!
//! The result is a host path `root/c1/c2/...` with no `..` and no links except possibly the last
//! component (when the guest asked not to follow it). Known limit: resolution and the later
//! `open` are separate system calls, so a *host* process that swaps a checked directory for a
//! symlink in between could redirect the open (a time-of-check/time-of-use race). Closing it needs
//! `openat2(RESOLVE_BENEATH)`, which std does not expose; the guest itself cannot trigger it because
//! it has no way to create symlinks (`path_symlink` is not provided).

use super::abi::Errno;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Symbolic links followed in one resolution before giving up with `loop` (Linux uses 40).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// A resolved guest path.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Components below the preopen's root (no `.`, `..` or empty ones).
    pub components: Vec<String>,
    /// `root` joined with `components`.
    pub host: PathBuf,
}

/// Resolve guest `path` starting at `start` (components below `root`).
pub fn resolve(root: &Path, start: &[String], path: &str, follow_last: bool) -> Result<Resolved, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.starts_with('/') {
        return Err(Errno::Notcapable);
    }
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    let mut pending: VecDeque<String> = split(path).collect();
    let mut stack: Vec<String> = start.to_vec();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        if component == ".." {
            stack.pop().ok_or(Errno::Notcapable)?;
            continue;
        }
        stack.push(component);
        let is_last = pending.is_empty();
        if is_last && !follow_last {
            break;
        }
        let host = join(root, &stack);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            // A missing last component is fine (`path_open` may create it); a missing directory
            // on the way is not.
            Err(e) if is_last && e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Errno::from_io(&e)),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(Errno::Loop);
            }
            let target = std::fs::read_link(&host).map_err(|e| Errno::from_io(&e))?;
            let target = target.to_str().ok_or(Errno::Inval)?;
            if target.starts_with('/') {
                return Err(Errno::Notcapable);
            }
            // The link is replaced by its target, which is relative to the link's directory.
            stack.pop();
            for c in split(target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(c);
            }
        } else if !is_last && !meta.is_dir() {
            return Err(Errno::Notdir);
        }
    }
    let host = join(root, &stack);
    Ok(Resolved { components: stack, host })
}

fn split(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string)
}

fn join(root: &Path, components: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(components);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("vmrun-sandbox-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("sub/deeper")).unwrap();
            std::fs::write(p.join("sub/file.txt"), b"x").unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn comps(r: Result<Resolved, Errno>) -> Result<Vec<String>, Errno> {
        r.map(|r| r.components)
    }

    #[test]
    fn plain_dot_and_dotdot_inside_the_root() {
        let d = TempDir::new("plain");
        assert_eq!(comps(resolve(&d.0, &[], "sub/file.txt", true)), Ok(vec!["sub".into(), "file.txt".into()]));
        assert_eq!(
            comps(resolve(&d.0, &[], "./sub//deeper/../file.txt", true)),
            Ok(vec!["sub".into(), "file.txt".into()])
        );
        assert_eq!(comps(resolve(&d.0, &[], ".", true)), Ok(vec![]));
        assert_eq!(comps(resolve(&d.0, &[], "sub/..", true)), Ok(vec![]));
        let r = resolve(&d.0, &[], "sub/new.txt", true).unwrap();
        assert_eq!(r.host, d.0.join("sub").join("new.txt"));
    }

    #[test]
    fn escapes_and_absolute_paths_are_refused() {
        let d = TempDir::new("escape");
        assert_eq!(comps(resolve(&d.0, &[], "..", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "../x", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "sub/../../x", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "/etc/passwd", true)), Err(Errno::Notcapable));
        // Starting one level down (a directory fd) allows exactly one `..` more.
        let start = vec!["sub".to_string()];
        assert_eq!(comps(resolve(&d.0, &start, "../sub/file.txt", true)), Ok(vec!["sub".into(), "file.txt".into()]));
        assert_eq!(comps(resolve(&d.0, &start, "../../x", true)), Err(Errno::Notcapable));
    }

    #[test]
    fn intermediate_components_must_be_directories() {
        let d = TempDir::new("notdir");
        assert_eq!(comps(resolve(&d.0, &[], "sub/file.txt/x", true)), Err(Errno::Notdir));
        assert_eq!(comps(resolve(&d.0, &[], "missing/x", true)), Err(Errno::Noent));
        // `missing/..` must not resolve to the root just because the text cancels out.
        assert_eq!(comps(resolve(&d.0, &[], "missing/../sub", true)), Err(Errno::Noent));
        assert_eq!(comps(resolve(&d.0, &[], "", true)), Err(Errno::Noent));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_inside_and_refused_outside() {
        use std::os::unix::fs::symlink;
        let d = TempDir::new("links");
        symlink("sub/deeper", d.0.join("inside")).unwrap();
        symlink("..", d.0.join("sub/up")).unwrap();
        symlink("../..", d.0.join("sub/upup")).unwrap();
        symlink("/etc", d.0.join("abs")).unwrap();
        symlink("loop2", d.0.join("loop1")).unwrap();
        symlink("loop1", d.0.join("loop2")).unwrap();
        assert_eq!(comps(resolve(&d.0, &[], "inside/..", true)), Ok(vec!["sub".into()]));
        assert_eq!(comps(resolve(&d.0, &[], "sub/up/sub/file.txt", true)), Ok(vec!["sub".into(), "file.txt".into()]));
        assert_eq!(comps(resolve(&d.0, &[], "sub/upup/x", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "abs/passwd", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "abs", true)), Err(Errno::Notcapable));
        assert_eq!(comps(resolve(&d.0, &[], "loop1", true)), Err(Errno::Loop));
        // Not following the last link leaves it in place for the caller to refuse or inspect.
        assert_eq!(comps(resolve(&d.0, &[], "abs", false)), Ok(vec!["abs".into()]));
    }
}
