//! Programs built from C with wasi-libc, through the real `vmrun`: `programs/wasi_walk.c` (a
//! directory walker), `programs/wasi_copy.c` (a file copy) and `tests/fixtures/wasi_fsops.c` (every
//! file-system operation, used to attack the sandbox). Each runs in a fresh temporary tree, and the
//! host file system is checked afterwards. Preview 0 (`wasi_unstable`) has two programs of its own,
//! hand-written `.wat` (`tests/fixtures/wasi0_read.wat`, `wasi0_write.wat`: no toolchain here still
//! emits preview 0), checked for their output and the file they write.
//!
//! Negative controls: `VMRUN_VM_DEBUG=wasi-dotdot-escape` plants a sandbox escape, and
//! `a_planted_escape_is_caught` shows the sandbox test then fails (files outside change);
//! `VMRUN_VM_DEBUG=wasi0-whence-as-preview1` takes preview 0 `whence` values as preview1's, and
//! `a_preview0_whence_bug_is_caught` shows both preview 0 programs then fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh scratch tree, removed on drop: `outer/` holds `secret.txt` and the pre-opened `root/`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vmrun-wasi-programs-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::write(dir.join("secret.txt"), "secret\n").unwrap();
        Scratch(dir)
    }
    fn root(&self) -> PathBuf {
        self.0.join("root")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vmrun(cwd: &Path, args: &[&str], bug: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.current_dir(cwd).stdin(Stdio::null()).env_remove("VMRUN_VM_DEBUG").args(args);
    if let Some(bug) = bug {
        cmd.env("VMRUN_VM_DEBUG", bug);
    }
    cmd.output().expect("vmrun starts")
}

fn program(path: &str) -> String {
    std::fs::canonicalize(path).unwrap().to_str().unwrap().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything under `dir` except `skip`: path → (kind, contents or link target, mtime).
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (char, Vec<u8>, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p == skip {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let entry = if m.file_type().is_symlink() {
            ('l', std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(), 0)
        } else if m.is_dir() {
            out.extend(snapshot(&p, skip));
            ('d', Vec::new(), m.mtime())
        } else {
            ('f', std::fs::read(&p).unwrap(), m.mtime())
        };
        out.insert(p, entry);
    }
    out
}

#[test]
fn the_walker_lists_a_tree_as_find_does() {
    use std::os::unix::fs::symlink;
    let s = Scratch::new("walk");
    let r = s.root();
    std::fs::create_dir_all(r.join("b/nested/empty")).unwrap();
    std::fs::write(r.join("a.txt"), "12345").unwrap();
    std::fs::write(r.join(".hidden"), "").unwrap();
    std::fs::write(r.join("b/nested/data.bin"), vec![7u8; 100_000]).unwrap();
    symlink("../a.txt", r.join("b/to_a")).unwrap();
    symlink("../secret.txt", r.join("out")).unwrap();
    let out = vmrun(&s.0, &["--dir", "root::/data", &program("programs/wasi_walk.wasm"), "/data"], None);
    let expected = "f /data/.hidden 0\n\
                    f /data/a.txt 5\n\
                    d /data/b/\n\
                    d /data/b/nested/\n\
                    f /data/b/nested/data.bin 100000\n\
                    d /data/b/nested/empty/\n\
                    l /data/b/to_a -> ../a.txt\n\
                    l /data/out -> ../secret.txt\n\
                    /data: 3 directories, 3 files, 2 links, 100005 bytes\n";
    assert_eq!((out.status.code(), text(&out.stdout).as_str(), text(&out.stderr).as_str()), (Some(0), expected, ""));
    // A directory that is not there: the walker reports wasi-libc's message and fails.
    let out = vmrun(&s.0, &["--dir", "root::/data", &program("programs/wasi_walk.wasm"), "/data/missing"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "wasi_walk: /data/missing: No such file or directory\n");
}

#[test]
fn the_copier_copies_files_byte_for_byte() {
    let s = Scratch::new("copy");
    let r = s.root();
    // 1 MiB + 3 bytes of a simple generator: more than one 64 KiB block and a short tail.
    let mut x: u32 = 12345;
    let data: Vec<u8> = (0..(1 << 20) + 3)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(r.join("big.bin"), &data).unwrap();
    std::fs::write(r.join("old.bin"), vec![1u8; 3 << 20]).unwrap();
    let copy = program("programs/wasi_copy.wasm");
    for dst in ["new.bin", "old.bin"] {
        let out = vmrun(&s.0, &["--dir", "root::/data", &copy, "/data/big.bin", &format!("/data/{dst}")], None);
        assert_eq!(
            text(&out.stdout),
            format!("/data/big.bin -> /data/{dst}: 1048579 bytes\n"),
            "{}",
            text(&out.stderr)
        );
        assert!(std::fs::read(r.join(dst)).unwrap() == data, "{dst} differs from big.bin");
    }
    let out = vmrun(&s.0, &["--dir", "root::/data", &copy, "/data/nothing", "/data/x"], None);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(1), "wasi_copy: /data/nothing: No such file or directory\n".into())
    );
    // Out of the sandbox: refused, and nothing appears beside the pre-opened directory.
    let out = vmrun(&s.0, &["--dir", "root::/data", &copy, "/data/big.bin", "/data/../stolen.bin"], None);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(1), "wasi_copy: /data/../stolen.bin: Capabilities insufficient\n".into())
    );
    assert!(!s.0.join("stolen.bin").exists());
}

/// Every way out of `root/` that wasi-libc lets a program try, each expected to fail, then the same
/// operations inside, expected to work. Returns the output and whether anything outside changed.
fn attack_the_sandbox(test: &str, bug: Option<&str>) -> (String, bool) {
    use std::os::unix::fs::symlink;
    let s = Scratch::new(test);
    let r = s.root();
    std::fs::create_dir(r.join("sub")).unwrap();
    std::fs::write(r.join("file.txt"), "inside\n").unwrap();
    symlink("../", r.join("link_out")).unwrap();
    symlink(&s.0, r.join("abs_link")).unwrap();
    let before = snapshot(&s.0, &r);
    let ops = [
        "read:/data/file.txt",
        "read:/data/../secret.txt",
        "read:/data/link_out/secret.txt",
        "read:/data/abs_link/secret.txt",
        "stat:/data/sub/../../secret.txt",
        "create:/data/../new.txt",
        "create:/data/link_out/new.txt",
        "mkdir:/data/../d",
        "mkdir:/data/link_out/d",
        "unlink:/data/link_out/secret.txt",
        "unlink:/data/sub/../../secret.txt",
        "rename:/data/file.txt:/data/../moved.txt",
        "rename:/data/link_out/secret.txt:/data/stolen.txt",
        "link:/data/link_out/secret.txt:/data/hard.txt",
        "symlink:../secret.txt:/data/sneaky",
        "read:/data/sneaky",
        "truncate:/data/link_out/secret.txt",
        "touch:/data/link_out/secret.txt",
        "rmdir:/data/../root",
        "mkdir:/data/ok",
        "rename:/data/ok:/data/sub/ok2",
        "symlink:sub/ok2:/data/to_ok2",
        "create:/data/to_ok2/made.txt",
        "read:/data/sub/ok2/made.txt",
    ];
    let mut args = vec!["--dir", "root::/data"];
    let fsops = program("tests/fixtures/wasi_fsops.wasm");
    args.push(&fsops);
    args.extend(ops);
    let out = vmrun(&s.0, &args, bug);
    let after = snapshot(&s.0, &r);
    (text(&out.stdout), before != after)
}

const REFUSED_AND_ALLOWED: &str = "\
read /data/file.txt: ok inside
read /data/../secret.txt: Capabilities insufficient
read /data/link_out/secret.txt: Capabilities insufficient
read /data/abs_link/secret.txt: Capabilities insufficient
stat /data/sub/../../secret.txt: Capabilities insufficient
create /data/../new.txt: Capabilities insufficient
create /data/link_out/new.txt: Capabilities insufficient
mkdir /data/../d: Capabilities insufficient
mkdir /data/link_out/d: Capabilities insufficient
unlink /data/link_out/secret.txt: Capabilities insufficient
unlink /data/sub/../../secret.txt: Capabilities insufficient
rename /data/file.txt: Capabilities insufficient
rename /data/link_out/secret.txt: Capabilities insufficient
link /data/link_out/secret.txt: Capabilities insufficient
symlink ../secret.txt: ok
read /data/sneaky: Capabilities insufficient
truncate /data/link_out/secret.txt: Capabilities insufficient
touch /data/link_out/secret.txt: Capabilities insufficient
rmdir /data/../root: Capabilities insufficient
mkdir /data/ok: ok
rename /data/ok: ok
symlink sub/ok2: ok
create /data/to_ok2/made.txt: ok
read /data/sub/ok2/made.txt: ok planted
";

#[test]
fn no_operation_reaches_outside_the_preopen() {
    let (out, changed_outside) = attack_the_sandbox("attack", None);
    assert_eq!(out, REFUSED_AND_ALLOWED);
    assert!(!changed_outside, "a file outside the pre-opened directory changed");
}

#[test]
fn a_planted_escape_is_caught() {
    let (out, changed_outside) = attack_the_sandbox("planted", Some("wasi-dotdot-escape"));
    assert_ne!(out, REFUSED_AND_ALLOWED, "the planted escape went unnoticed");
    assert!(changed_outside, "the planted escape should have changed a file outside");
}

#[test]
fn c_programs_run_traced() {
    let s = Scratch::new("traced");
    std::fs::write(s.root().join("a.txt"), "abc").unwrap();
    let trace = s.0.join("walk.trace");
    let walk = program("programs/wasi_walk.wasm");
    let args = ["--trace", "allocfree", "--trace-out", trace.to_str().unwrap(), "--dir", "root::/data", &walk, "/data"];
    let out = vmrun(&s.0, &args, None);
    assert_eq!(
        text(&out.stdout),
        "f /data/a.txt 3\n/data: 0 directories, 1 files, 0 links, 3 bytes\n",
        "{}",
        text(&out.stderr)
    );
    let summary = vmrun(&s.0, &["trace", "summary", trace.to_str().unwrap()], None);
    assert_eq!(summary.status.code(), Some(0), "{}", text(&summary.stderr));
}

/// Run a preview 0 fixture (`tests/fixtures/wasi0_*.wat`, hand-written `wasi_unstable` programs) with
/// `root/` pre-opened as `.`.
fn run_preview0(s: &Scratch, fixture: &str, bug: Option<&str>) -> Output {
    vmrun(&s.root(), &["--dir", ".", &program(&format!("tests/fixtures/{fixture}"))], bug)
}

#[test]
fn a_preview0_program_reads_a_file() {
    let s = Scratch::new("wasi0-read");
    std::fs::write(s.root().join("input.txt"), "hello, preview zero\n").unwrap();
    let out = run_preview0(&s, "wasi0_read.wat", None);
    assert_eq!((out.status.code(), text(&out.stderr)), (Some(0), String::new()));
    assert_eq!(text(&out.stdout), " preview zero\nero\n", "from offset 6 (set=2), then the last 4 bytes (end=1)");
}

#[test]
fn a_preview0_program_writes_a_file() {
    let s = Scratch::new("wasi0-write");
    std::fs::write(s.root().join("out.txt"), "old contents, longer than the new ones\n").unwrap();
    let out = run_preview0(&s, "wasi0_write.wat", None);
    assert_eq!((out.status.code(), text(&out.stderr), text(&out.stdout)), (Some(0), String::new(), "wrote\n".into()));
    assert_eq!(std::fs::read_to_string(s.root().join("out.txt")).unwrap(), "01ab4567yZ\n");
}

/// Negative control: taking preview 0 `whence` values as preview1's (`VMRUN_VM_DEBUG=wasi0-whence-as-preview1`)
/// makes both programs fail their seek checks.
#[test]
fn a_preview0_whence_bug_is_caught() {
    let s = Scratch::new("wasi0-bug");
    std::fs::write(s.root().join("input.txt"), "hello, preview zero\n").unwrap();
    let read = run_preview0(&s, "wasi0_read.wat", Some("wasi0-whence-as-preview1"));
    assert_ne!((read.status.code(), text(&read.stdout)), (Some(0), " preview zero\nero\n".into()));
    let write = run_preview0(&s, "wasi0_write.wat", Some("wasi0-whence-as-preview1"));
    assert_ne!(write.status.code(), Some(0));
    assert_ne!(std::fs::read_to_string(s.root().join("out.txt")).unwrap_or_default(), "01ab4567yZ\n");
}
