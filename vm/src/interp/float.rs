//! Float operations whose WebAssembly semantics Rust's operators do not give directly: min/max with NaN
//! propagation and signed zeros, quiet NaNs from rounding, trapping float→int truncation, unsigned
//! int→float conversion, `nearest`. The numeric handlers (`numeric.rs`) are their only users.

use crate::TrapKind;

macro_rules! float_ops {
    ($t:ty, $bits:ty, $min:ident, $max:ident, $nearest:ident, $canon:expr) => {
        pub fn $min(a: $t, b: $t) -> $t {
            if a.is_nan() || b.is_nan() {
                return <$t>::from_bits($canon);
            }
            if a == b {
                // -0 < +0
                return <$t>::from_bits(a.to_bits() | b.to_bits());
            }
            if a < b { a } else { b }
        }

        pub fn $max(a: $t, b: $t) -> $t {
            if a.is_nan() || b.is_nan() {
                return <$t>::from_bits($canon);
            }
            if a == b {
                return <$t>::from_bits(a.to_bits() & b.to_bits());
            }
            if a > b { a } else { b }
        }

        pub fn $nearest(a: $t) -> $t {
            a.round_ties_even()
        }
    };
}

float_ops!(f32, u32, f32_min, f32_max, f32_nearest, 0x7FC0_0000);
float_ops!(f64, u64, f64_min, f64_max, f64_nearest, 0x7FF8_0000_0000_0000);

/// Rounding functions may return a signalling NaN operand unchanged; Wasm requires a quiet
/// (arithmetic) NaN result, so set the quiet bit on any NaN result.
#[inline]
pub fn quiet_f32(x: f32) -> f32 {
    if x.is_nan() { f32::from_bits(x.to_bits() | 0x0040_0000) } else { x }
}

#[inline]
pub fn quiet_f64(x: f64) -> f64 {
    if x.is_nan() { f64::from_bits(x.to_bits() | 0x0008_0000_0000_0000) } else { x }
}

/// Trapping truncation: `lo < x < hi` (exclusive bounds, exact in f64) or a trap.
#[inline]
fn trunc_check(x: f64, lo: f64, hi: f64) -> Result<f64, TrapKind> {
    if x.is_nan() {
        return Err(TrapKind::InvalidConversionToInteger);
    }
    if x <= lo || x >= hi {
        return Err(TrapKind::IntegerOverflow);
    }
    Ok(x.trunc())
}

pub fn i32_trunc_s(x: f64) -> Result<i32, TrapKind> {
    trunc_check(x, -2147483649.0, 2147483648.0).map(|v| v as i32)
}

pub fn i32_trunc_u(x: f64) -> Result<u32, TrapKind> {
    trunc_check(x, -1.0, 4294967296.0).map(|v| v as u32)
}

pub fn i64_trunc_s(x: f64) -> Result<i64, TrapKind> {
    // -2^63 is representable; -2^63 - 1 is not, so the lower bound is inclusive of -2^63.
    if x.is_nan() {
        return Err(TrapKind::InvalidConversionToInteger);
    }
    if !(-9223372036854775808.0..9223372036854775808.0).contains(&x) {
        return Err(TrapKind::IntegerOverflow);
    }
    Ok(x as i64)
}

pub fn i64_trunc_u(x: f64) -> Result<u64, TrapKind> {
    trunc_check(x, -1.0, 18446744073709551616.0).map(|v| v as u64)
}

/// f32 → i64 must not go through f64 rounding problems: f32 values are exact in f64.
pub fn f32_as_f64(x: f32) -> f64 {
    x as f64
}

/// u64 → f32 with a single rounding (Rust's `as` rounds correctly).
pub fn f32_from_u64(x: u64) -> f32 {
    x as f32
}

pub fn f64_from_u64(x: u64) -> f64 {
    x as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_signed_zero_and_nan() {
        assert!(f32_min(0.0, -0.0).is_sign_negative());
        assert!(f32_max(-0.0, 0.0).is_sign_positive());
        assert!(f64_min(f64::NAN, 1.0).is_nan());
        assert_eq!(f64_max(1.0, 2.0), 2.0);
    }

    #[test]
    fn trapping_truncations() {
        assert_eq!(i32_trunc_s(-2147483648.9), Ok(-2147483648));
        assert_eq!(i32_trunc_s(2147483648.0), Err(TrapKind::IntegerOverflow));
        assert_eq!(i32_trunc_u(-0.9), Ok(0));
        assert_eq!(i32_trunc_u(f64::NAN), Err(TrapKind::InvalidConversionToInteger));
        assert_eq!(i64_trunc_s(-9223372036854775808.0), Ok(i64::MIN));
        assert_eq!(i64_trunc_u(18446744073709549568.0), Ok(18446744073709549568));
    }

    #[test]
    fn nearest_ties_to_even() {
        assert_eq!(f32_nearest(2.5), 2.0);
        assert_eq!(f64_nearest(-3.5), -4.0);
    }
}
