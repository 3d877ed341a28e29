//! `vmrun --invoke`: command-line words to Wasm values by parameter type, and results back to
//! text.
//!
//! Accepted arguments: integers in decimal or `0x` hex, optionally negative, in the signed or
//! the unsigned range of the type (`-1` and `4294967295` are the same i32); floats as Rust parses
//! them, including `nan`, `inf`, `-inf` and `-0`; `null` for a nullable reference. Results print
//! one per line: integers as signed decimal, floats as the shortest decimal that round-trips
//! (Rust's `Display`), with NaN and the infinities spelled as in the text format.

use anyhow::{Result, anyhow, bail};
use vm::{FuncType, Ref, Val, ValType};

/// `(func (param i32 i64) (result f64))`: how a signature is shown in errors, as in the text format.
pub fn signature(ty: &FuncType) -> String {
    let mut out = String::from("(func");
    for (keyword, types) in [("param", &ty.params), ("result", &ty.results)] {
        if !types.is_empty() {
            let list = types.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
            out.push_str(&format!(" ({keyword} {list})"));
        }
    }
    out.push(')');
    out
}

/// Parse `args` as the parameters of export `name` of type `ty`.
pub fn parse_args(name: &str, ty: &FuncType, args: &[String]) -> Result<Vec<Val>> {
    if args.len() != ty.params.len() {
        bail!(
            "`{name}` takes {} argument(s) but {} were given; its type is {}",
            ty.params.len(),
            args.len(),
            signature(ty)
        );
    }
    ty.params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(i, (t, a))| {
            parse_val(*t, a).ok_or_else(|| {
                // Escaped, so that an argument with a line break or a control character still gives one line.
                let a = a.escape_debug();
                anyhow!("argument {} of `{name}`: `{a}` is not a valid {t}; its type is {}", i + 1, signature(ty))
            })
        })
        .collect()
}

/// A decimal or `0x` hex integer with an optional sign; `_` separators are allowed as in the
/// text format.
fn parse_int(s: &str) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits = digits.replace('_', "");
    // `i128::from_str_radix` would accept a second sign; the digits must be digits.
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            i128::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse::<i128>().ok()?,
        None => return None,
    };
    Some(if negative { -v } else { v })
}

fn parse_val(t: ValType, s: &str) -> Option<Val> {
    match t {
        ValType::I32 => {
            let v = parse_int(s)?;
            (i32::MIN as i128..=u32::MAX as i128).contains(&v).then_some(Val::I32(v as u32 as i32))
        }
        ValType::I64 => {
            let v = parse_int(s)?;
            (i64::MIN as i128..=u64::MAX as i128).contains(&v).then_some(Val::I64(v as u64 as i64))
        }
        ValType::F32 => s.parse::<f32>().ok().map(|f| Val::F32(f.to_bits())),
        ValType::F64 => s.parse::<f64>().ok().map(|f| Val::F64(f.to_bits())),
        ValType::Ref(r) => (s == "null" && r.is_nullable()).then_some(Val::Ref(Ref::Null)),
        ValType::V128 => None,
    }
}

/// One result as printed by `--invoke`.
pub fn format_val(v: Val) -> String {
    match v {
        Val::I32(x) => x.to_string(),
        Val::I64(x) => x.to_string(),
        Val::F32(bits) => {
            let f = f32::from_bits(bits);
            format_float(f.is_nan(), f.is_sign_negative(), f.is_infinite(), || f.to_string())
        }
        Val::F64(bits) => {
            let f = f64::from_bits(bits);
            format_float(f.is_nan(), f.is_sign_negative(), f.is_infinite(), || f.to_string())
        }
        Val::Ref(r) => match r {
            Ref::Null => "null".into(),
            Ref::Func(_) => "ref.func".into(),
            Ref::Host(n) => format!("ref.extern {n}"),
            Ref::I31(n) => format!("ref.i31 {n}"),
            Ref::Struct(_) => "ref.struct".into(),
            Ref::Array(_) => "ref.array".into(),
            Ref::Exn(_) => "ref.exn".into(),
        },
    }
}

/// Rust prints `NaN`; the text format (and a reader who wants to paste it back) says `nan`.
fn format_float(nan: bool, negative: bool, infinite: bool, shortest: impl Fn() -> String) -> String {
    let sign = if negative { "-" } else { "" };
    if nan {
        format!("{sign}nan")
    } else if infinite {
        format!("{sign}inf")
    } else {
        shortest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm::ValType::{F32, F64, I32, I64};

    fn ty(params: &[ValType]) -> FuncType {
        FuncType { params: params.to_vec(), results: vec![] }
    }

    #[test]
    fn integers_in_both_ranges_and_hex() {
        assert_eq!(parse_val(I32, "-1"), Some(Val::I32(-1)));
        assert_eq!(parse_val(I32, "4294967295"), Some(Val::I32(-1)));
        assert_eq!(parse_val(I32, "0x7fffffff"), Some(Val::I32(i32::MAX)));
        assert_eq!(parse_val(I32, "-0x80000000"), Some(Val::I32(i32::MIN)));
        assert_eq!(parse_val(I32, "4294967296"), None);
        assert_eq!(parse_val(I32, "-2147483649"), None);
        assert_eq!(parse_val(I64, "18446744073709551615"), Some(Val::I64(-1)));
        assert_eq!(parse_val(I64, "1_000"), Some(Val::I64(1000)));
        for bad in ["", "-", "0x", "1.5", "abc", "--1", "0x-1", "+-1", "1e3"] {
            assert_eq!(parse_val(I32, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats_including_specials() {
        assert_eq!(parse_val(F32, "0.1"), Some(Val::F32(0.1f32.to_bits())));
        assert_eq!(parse_val(F64, "-0"), Some(Val::F64((-0.0f64).to_bits())));
        assert_eq!(parse_val(F64, "-inf"), Some(Val::F64(f64::NEG_INFINITY.to_bits())));
        assert!(matches!(parse_val(F64, "nan"), Some(Val::F64(b)) if f64::from_bits(b).is_nan()));
        assert_eq!(parse_val(F64, "one"), None);
    }

    #[test]
    fn null_only_for_nullable_references() {
        let nullable = ValType::Ref(vm::wasmparser::RefType::FUNCREF);
        let non_null = ValType::Ref(vm::wasmparser::RefType::FUNCREF.as_non_null());
        assert_eq!(parse_val(nullable, "null"), Some(Val::Ref(Ref::Null)));
        assert_eq!(parse_val(non_null, "null"), None);
        assert_eq!(parse_val(nullable, "0"), None);
    }

    #[test]
    fn argument_errors_name_the_signature() {
        let e = parse_args("f", &ty(&[I32, F64]), &["1".into()]).unwrap_err().to_string();
        assert_eq!(e, "`f` takes 2 argument(s) but 1 were given; its type is (func (param i32 f64))");
        let e = parse_args("f", &ty(&[I32]), &["x".into()]).unwrap_err().to_string();
        assert_eq!(e, "argument 1 of `f`: `x` is not a valid i32; its type is (func (param i32))");
    }

    #[test]
    fn results_print_as_wasm_text_would() {
        assert_eq!(format_val(Val::I32(-5)), "-5");
        assert_eq!(format_val(Val::I64(i64::MIN)), "-9223372036854775808");
        assert_eq!(format_val(Val::F32(0.1f32.to_bits())), "0.1");
        assert_eq!(format_val(Val::F64(0.1f64.to_bits())), "0.1");
        assert_eq!(format_val(Val::F64((-0.0f64).to_bits())), "-0");
        assert_eq!(format_val(Val::F32(f32::NAN.to_bits())), "nan");
        assert_eq!(format_val(Val::F64((-f64::NAN).to_bits())), "-nan");
        assert_eq!(format_val(Val::F64(f64::NEG_INFINITY.to_bits())), "-inf");
        assert_eq!(format_val(Val::Ref(Ref::I31(-3))), "ref.i31 -3");
        assert_eq!(format_val(Val::Ref(Ref::Null)), "null");
    }
}
