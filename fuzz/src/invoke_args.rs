//! `crash --target invoke`: random command-line words for `vmrun --invoke` against functions of every
//! parameter type.
//!
//! Each input is a signature (0 to 4 parameters drawn from the numeric types, `v128`, and nullable and
//! non-nullable references) and a list of words: values that are valid for their type, mutations of them
//! (signs, hex prefixes, separators, exponents, digits of other scripts, line breaks, control and
//! bidirectional characters, very long digit runs), random text, and sometimes one word too many or too
//! few. The words go to the CLI's own parser (`src/invoke.rs`, compiled into this crate) in-process; every
//! 16th input also runs the real `vmrun` binary on a module exporting a function of that signature.
//!
//! What must hold: the parser never panics; an accepted list has one value per parameter, each of the
//! parameter's type; a refused list gives a one-line message naming the argument or the count. The binary
//! exits 0 and prints one line per result when the parser accepted, and otherwise exits with code 1 with
//! exactly one line on stderr, `error: ...`, and nothing on stdout. A violated property panics, which the
//! crash loop reports as a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use vm::{FuncType, Ref, Val, ValType};
use wasmparser::{AbstractHeapType, HeapType, RefType};

use crate::rng::SplitMix64;

// The CLI's parser itself, not a copy (the `vmrun` package has no library).
#[allow(dead_code)]
#[path = "../../src/invoke.rs"]
mod invoke;

/// One input: a signature and the words given for it.
pub struct Case {
    pub params: Vec<ValType>,
    pub args: Vec<String>,
}

impl Case {
    /// The input as text, for the failure file and the watchdog.
    pub fn describe(&self) -> Vec<u8> {
        let mut out = invoke::signature(&FuncType { params: self.params.clone(), results: vec![] });
        for a in &self.args {
            out.push_str(&format!("\n{a:?}"));
        }
        out.into_bytes()
    }
}

fn reference(nullable: bool, ty: AbstractHeapType) -> ValType {
    let heap = HeapType::Abstract { shared: false, ty };
    ValType::Ref(RefType::new(nullable, heap).expect("abstract heap types fit a RefType"))
}

fn param_type(rng: &mut SplitMix64) -> ValType {
    use AbstractHeapType::{Any, Eq, Exn, Extern, Func, I31, Struct};
    match rng.below(12) {
        0..=1 => ValType::I32,
        2..=3 => ValType::I64,
        4..=5 => ValType::F32,
        6..=7 => ValType::F64,
        8 => ValType::V128,
        _ => {
            let ty = [Func, Extern, Any, Eq, I31, Struct, Exn][rng.below(7) as usize];
            reference(rng.chance(3), ty)
        }
    }
}

/// A word that is valid for `t` (when `t` has valid words at all).
fn valid_word(rng: &mut SplitMix64, t: ValType) -> String {
    const INTS: &[&str] = &["0", "-0", "1", "-1", "+7", "2147483647", "-2147483648", "4294967295", "0x7fffffff"];
    const LONGS: &[&str] = &["9223372036854775807", "-9223372036854775808", "18446744073709551615", "0xFFFF_FFFF"];
    const FLOATS: &[&str] = &["0", "-0", "1.5", "-2.25e-3", "nan", "-nan", "inf", "-inf", "infinity", "NaN", "1e39"];
    let pick = |rng: &mut SplitMix64, list: &[&str]| list[rng.below(list.len() as u64) as usize].to_string();
    match t {
        ValType::I32 if rng.chance(2) => pick(rng, INTS),
        ValType::I32 => (rng.next_u64() as i32).to_string(),
        ValType::I64 if rng.chance(2) => pick(rng, LONGS),
        ValType::I64 => (rng.next_u64() as i64).to_string(),
        ValType::F32 | ValType::F64 if rng.chance(2) => pick(rng, FLOATS),
        ValType::F32 => f32::from_bits(rng.next_u64() as u32).to_string(),
        ValType::F64 => f64::from_bits(rng.next_u64()).to_string(),
        ValType::V128 => "0".into(),
        ValType::Ref(_) => "null".into(),
    }
}

/// Characters that parsers trip over.
const TRICKY: &[char] = &[
    '-', '+', '_', 'x', 'X', '0', '9', 'e', 'E', '.', ' ', '\n', '\r', '\t', '\0', 'é', '٣', '\u{202e}', '\u{2028}',
    '\u{feff}', '"', '`', '\\', 'n', 'i', 'f', ':', '\u{7f}', '\u{1b}',
];

fn mutate(rng: &mut SplitMix64, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(chars.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 | 1 => chars.insert(at, TRICKY[rng.below(TRICKY.len() as u64) as usize]),
            2 if at < chars.len() => {
                chars.remove(at);
            }
            3 => chars.splice(at..at, std::iter::repeat_n('9', 1 + rng.below(400) as usize)).for_each(drop),
            4 => chars.splice(0..0, ["--", "0x", "-0x", "+-", "nan:0x"][rng.below(5) as usize].chars()).for_each(drop),
            _ => chars.truncate(at),
        }
    }
    chars.into_iter().collect()
}

fn random_text(rng: &mut SplitMix64) -> String {
    let n = rng.below(24) as usize;
    if rng.chance(2) {
        String::from_utf8_lossy(&rng.bytes(n)).into_owned()
    } else {
        (0..n).map(|_| TRICKY[rng.below(TRICKY.len() as u64) as usize]).collect()
    }
}

pub fn case(rng: &mut SplitMix64) -> Case {
    let params: Vec<ValType> = (0..rng.below(5)).map(|_| param_type(rng)).collect();
    let mut args: Vec<String> = params
        .iter()
        .map(|&t| match rng.below(10) {
            0..=3 => valid_word(rng, t),
            4..=7 => {
                let w = valid_word(rng, t);
                mutate(rng, &w)
            }
            _ => random_text(rng),
        })
        .collect();
    if rng.chance(10) {
        if args.is_empty() || rng.chance(2) {
            args.push(random_text(rng));
        } else {
            args.pop();
        }
    }
    Case { params, args }
}

fn has_type(v: &Val, t: ValType) -> bool {
    match (v, t) {
        (Val::I32(_), ValType::I32) | (Val::I64(_), ValType::I64) => true,
        (Val::F32(_), ValType::F32) | (Val::F64(_), ValType::F64) => true,
        (Val::Ref(Ref::Null), ValType::Ref(r)) => r.is_nullable(),
        _ => false,
    }
}

/// The parser on `case`: true if it accepted. Panics when a property does not hold.
pub fn check_parser(case: &Case) -> bool {
    let ty = FuncType { params: case.params.clone(), results: vec![] };
    match invoke::parse_args("f", &ty, &case.args) {
        Ok(vals) => {
            assert_eq!(vals.len(), case.params.len(), "accepted a wrong number of values");
            for (v, &t) in vals.iter().zip(&case.params) {
                assert!(has_type(v, t), "accepted {v:?} for a {t}");
            }
            true
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains(['\n', '\r']), "the error is not one line: {msg:?}");
            assert!(msg.starts_with("argument ") || msg.starts_with("`f` takes "), "unclear error: {msg:?}");
            false
        }
    }
}

/// The `vmrun` binary to run every 16th input with: `VMRUN_FUZZ_VMRUN`, or `vmrun` next to this program
/// (both are in `target/release/` after a workspace build). `None`: the parser is checked in-process only.
pub fn find_vmrun() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMRUN_FUZZ_VMRUN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("vmrun");
    candidate.is_file().then_some(candidate)
}

/// A module exporting `f` of `case`'s signature, returning its parameters (so an accepted call prints one
/// line per argument). `v128` parameters are left out: vmrun refuses such a module before parsing words.
fn module_for(case: &Case) -> Option<String> {
    if case.params.contains(&ValType::V128) {
        return None;
    }
    let types: Vec<String> = case.params.iter().map(|t| wat_type(*t)).collect();
    let types = types.join(" ");
    let gets: String = (0..case.params.len()).map(|i| format!(" local.get {i}")).collect();
    Some(format!("(module (func (export \"f\") (param {types}) (result {types}){gets}))"))
}

fn wat_type(t: ValType) -> String {
    match t {
        ValType::Ref(r) => {
            let HeapType::Abstract { ty, .. } = r.heap_type() else { unreachable!("only abstract heap types") };
            let name = format!("{ty:?}").to_lowercase();
            format!("(ref {}{name})", if r.is_nullable() { "null " } else { "" })
        }
        other => other.to_string(),
    }
}

/// The real binary on `case` (words with a NUL byte cannot be process arguments; they are cut there).
/// Panics when its behaviour does not match the parser's verdict `accepted`.
pub fn check_binary(vmrun: &Path, scratch: &Path, case: &Case, accepted: bool) {
    let Some(module) = module_for(case) else { return };
    if case.args.iter().any(|a| a.contains('\0')) {
        return;
    }
    std::fs::write(scratch, module).expect("write the scratch module");
    let out = Command::new(vmrun).arg("--invoke").arg("f").arg(scratch).args(&case.args).output();
    let out = out.expect("vmrun starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if accepted {
        assert_eq!(out.status.code(), Some(0), "vmrun refused what the parser accepted: {stderr}");
        assert_eq!(stdout.lines().count(), case.params.len(), "one line per result expected: {stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1), "vmrun's exit code for refused arguments: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line of error expected: {stderr:?}");
        assert!(stderr.starts_with("error: argument ") || stderr.starts_with("error: `f` takes "), "{stderr:?}");
        assert!(stdout.is_empty(), "stdout of a refused call: {stdout}");
    }
}
