//! Numeric instructions: i32/i64/f32/f64 arithmetic, bit operations, comparisons and conversions.
//!
//! One handler per instruction, named after it (`I32Add` → [`i32_add`]), taking the frame and the
//! instruction's slots (and immediate). Each table below states the operand types, the result type and the
//! operation; the macro above the table writes the handler around it: read the operands with
//! [`get`], compute, write the result with [`set`]. Handlers are `#[inline(always)]`, so a dispatch arm
//! compiles to the operation itself. Handlers whose operation can trap (integer division, trapping
//! truncation) return `Result<(), TrapKind>` and leave `dst` unwritten on a trap.
//!
//! Float operations whose wasm semantics differ from Rust's operators are in `float.rs`.

use super::float;
use super::operands::{get, set};
use crate::TrapKind;
use crate::bytecode::Slot;

/// `dst = op(src)`.
macro_rules! unary {
    ($($name:ident($x:ident: $t:ty) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], dst: Slot, src: Slot) {
            let $x: $t = get(frame, src);
            set::<$r>(frame, dst, $body);
        }
    )*};
}

/// `dst = op(src)` or a trap.
macro_rules! try_unary {
    ($($name:ident($x:ident: $t:ty) -> Result<$r:ty> $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], dst: Slot, src: Slot) -> Result<(), TrapKind> {
            let $x: $t = get(frame, src);
            let r: Result<$r, TrapKind> = $body;
            set(frame, dst, r?);
            Ok(())
        }
    )*};
}

/// `dst = op(a, b)`.
macro_rules! binary {
    ($($name:ident($x:ident: $t:ty, $y:ident: $u:ty) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], dst: Slot, a: Slot, b: Slot) {
            let ($x, $y): ($t, $u) = (get(frame, a), get(frame, b));
            set::<$r>(frame, dst, $body);
        }
    )*};
}

/// `dst = op(a, b)` or a trap.
macro_rules! try_binary {
    ($($name:ident($x:ident: $t:ty, $y:ident: $u:ty) -> Result<$r:ty> $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], dst: Slot, a: Slot, b: Slot) -> Result<(), TrapKind> {
            let ($x, $y): ($t, $u) = (get(frame, a), get(frame, b));
            let r: Result<$r, TrapKind> = $body;
            set(frame, dst, r?);
            Ok(())
        }
    )*};
}

/// `dst = op(a, imm)` with the immediate the translator fused in.
macro_rules! binary_imm {
    ($($name:ident($x:ident: $t:ty, $imm:ident) -> $r:ty $body:block)*) => {$(
        #[inline(always)]
        #[track_caller]
        pub(super) fn $name(frame: &mut [u64], dst: Slot, a: Slot, $imm: i16) {
            let $x: $t = get(frame, a);
            set::<$r>(frame, dst, $body);
        }
    )*};
}

// ---------------- i32

binary! {
    i32_add(x: u32, y: u32) -> u32 { x.wrapping_add(y) }
    i32_sub(x: u32, y: u32) -> u32 { x.wrapping_sub(y) }
    i32_mul(x: u32, y: u32) -> u32 { x.wrapping_mul(y) }
    i32_and(x: u32, y: u32) -> u32 { x & y }
    i32_or(x: u32, y: u32) -> u32 { x | y }
    i32_xor(x: u32, y: u32) -> u32 { x ^ y }
    i32_shl(x: u32, y: u32) -> u32 { x.wrapping_shl(y) }
    i32_shr_s(x: i32, y: u32) -> i32 { x.wrapping_shr(y) }
    i32_shr_u(x: u32, y: u32) -> u32 { x.wrapping_shr(y) }
    i32_rotl(x: u32, y: u32) -> u32 { x.rotate_left(y & 31) }
    i32_rotr(x: u32, y: u32) -> u32 { x.rotate_right(y & 31) }
    i32_eq(x: u32, y: u32) -> bool { x == y }
    i32_ne(x: u32, y: u32) -> bool { x != y }
    i32_lt_s(x: i32, y: i32) -> bool { x < y }
    i32_lt_u(x: u32, y: u32) -> bool { x < y }
    i32_gt_s(x: i32, y: i32) -> bool { x > y }
    i32_gt_u(x: u32, y: u32) -> bool { x > y }
    i32_le_s(x: i32, y: i32) -> bool { x <= y }
    i32_le_u(x: u32, y: u32) -> bool { x <= y }
    i32_ge_s(x: i32, y: i32) -> bool { x >= y }
    i32_ge_u(x: u32, y: u32) -> bool { x >= y }
}

try_binary! {
    i32_div_s(x: i32, y: i32) -> Result<i32> {
        match (x, y) {
            (_, 0) => Err(TrapKind::IntegerDivideByZero),
            (i32::MIN, -1) => Err(TrapKind::IntegerOverflow),
            _ => Ok(x / y),
        }
    }
    i32_div_u(x: u32, y: u32) -> Result<u32> { x.checked_div(y).ok_or(TrapKind::IntegerDivideByZero) }
    i32_rem_s(x: i32, y: i32) -> Result<i32> {
        if y == 0 { Err(TrapKind::IntegerDivideByZero) } else { Ok(x.wrapping_rem(y)) }
    }
    i32_rem_u(x: u32, y: u32) -> Result<u32> { x.checked_rem(y).ok_or(TrapKind::IntegerDivideByZero) }
}

unary! {
    i32_eqz(x: u32) -> bool { x == 0 }
    i32_clz(x: u32) -> u32 { x.leading_zeros() }
    i32_ctz(x: u32) -> u32 { x.trailing_zeros() }
    i32_popcnt(x: u32) -> u32 { x.count_ones() }
    i32_extend8_s(x: u32) -> i32 { x as i8 as i32 }
    i32_extend16_s(x: u32) -> i32 { x as i16 as i32 }
}

binary_imm! {
    i32_add_imm(x: u32, imm) -> u32 { x.wrapping_add(imm as i32 as u32) }
    i32_sub_imm(x: u32, imm) -> u32 { x.wrapping_sub(imm as i32 as u32) }
    i32_and_imm(x: u32, imm) -> u32 { x & imm as i32 as u32 }
    i32_shl_imm(x: u32, imm) -> u32 { x.wrapping_shl(imm as u32) }
    i32_shr_s_imm(x: i32, imm) -> i32 { x.wrapping_shr(imm as u32) }
    i32_shr_u_imm(x: u32, imm) -> u32 { x.wrapping_shr(imm as u32) }
    i32_eq_imm(x: i32, imm) -> bool { x == imm as i32 }
    i32_ne_imm(x: i32, imm) -> bool { x != imm as i32 }
    i32_lt_s_imm(x: i32, imm) -> bool { x < imm as i32 }
    i32_lt_u_imm(x: u32, imm) -> bool { x < imm as i32 as u32 }
    i32_gt_s_imm(x: i32, imm) -> bool { x > imm as i32 }
    i32_gt_u_imm(x: u32, imm) -> bool { x > imm as i32 as u32 }
    i32_le_s_imm(x: i32, imm) -> bool { x <= imm as i32 }
    i32_ge_s_imm(x: i32, imm) -> bool { x >= imm as i32 }
}

// ---------------- i64

binary! {
    i64_add(x: u64, y: u64) -> u64 { x.wrapping_add(y) }
    i64_sub(x: u64, y: u64) -> u64 { x.wrapping_sub(y) }
    i64_mul(x: u64, y: u64) -> u64 { x.wrapping_mul(y) }
    i64_and(x: u64, y: u64) -> u64 { x & y }
    i64_or(x: u64, y: u64) -> u64 { x | y }
    i64_xor(x: u64, y: u64) -> u64 { x ^ y }
    i64_shl(x: u64, y: u64) -> u64 { x.wrapping_shl(y as u32) }
    i64_shr_s(x: i64, y: u64) -> i64 { x.wrapping_shr(y as u32) }
    i64_shr_u(x: u64, y: u64) -> u64 { x.wrapping_shr(y as u32) }
    i64_rotl(x: u64, y: u64) -> u64 { x.rotate_left((y & 63) as u32) }
    i64_rotr(x: u64, y: u64) -> u64 { x.rotate_right((y & 63) as u32) }
    i64_eq(x: u64, y: u64) -> bool { x == y }
    i64_ne(x: u64, y: u64) -> bool { x != y }
    i64_lt_s(x: i64, y: i64) -> bool { x < y }
    i64_lt_u(x: u64, y: u64) -> bool { x < y }
    i64_gt_s(x: i64, y: i64) -> bool { x > y }
    i64_gt_u(x: u64, y: u64) -> bool { x > y }
    i64_le_s(x: i64, y: i64) -> bool { x <= y }
    i64_le_u(x: u64, y: u64) -> bool { x <= y }
    i64_ge_s(x: i64, y: i64) -> bool { x >= y }
    i64_ge_u(x: u64, y: u64) -> bool { x >= y }
}

try_binary! {
    i64_div_s(x: i64, y: i64) -> Result<i64> {
        match (x, y) {
            (_, 0) => Err(TrapKind::IntegerDivideByZero),
            (i64::MIN, -1) => Err(TrapKind::IntegerOverflow),
            _ => Ok(x / y),
        }
    }
    i64_div_u(x: u64, y: u64) -> Result<u64> { x.checked_div(y).ok_or(TrapKind::IntegerDivideByZero) }
    i64_rem_s(x: i64, y: i64) -> Result<i64> {
        if y == 0 { Err(TrapKind::IntegerDivideByZero) } else { Ok(x.wrapping_rem(y)) }
    }
    i64_rem_u(x: u64, y: u64) -> Result<u64> { x.checked_rem(y).ok_or(TrapKind::IntegerDivideByZero) }
}

unary! {
    i64_eqz(x: u64) -> bool { x == 0 }
    i64_clz(x: u64) -> u64 { x.leading_zeros() as u64 }
    i64_ctz(x: u64) -> u64 { x.trailing_zeros() as u64 }
    i64_popcnt(x: u64) -> u64 { x.count_ones() as u64 }
    i64_extend8_s(x: u64) -> i64 { x as i8 as i64 }
    i64_extend16_s(x: u64) -> i64 { x as i16 as i64 }
    i64_extend32_s(x: u64) -> i64 { x as i32 as i64 }
}

binary_imm! {
    i64_add_imm(x: u64, imm) -> u64 { x.wrapping_add(imm as i64 as u64) }
    i64_sub_imm(x: u64, imm) -> u64 { x.wrapping_sub(imm as i64 as u64) }
}

// ---------------- f32 and f64 (sign operations work on the bits, so they keep NaN payloads)

binary! {
    f32_add(x: f32, y: f32) -> f32 { x + y }
    f32_sub(x: f32, y: f32) -> f32 { x - y }
    f32_mul(x: f32, y: f32) -> f32 { x * y }
    f32_div(x: f32, y: f32) -> f32 { x / y }
    f32_min(x: f32, y: f32) -> f32 { float::f32_min(x, y) }
    f32_max(x: f32, y: f32) -> f32 { float::f32_max(x, y) }
    f32_copysign(x: u32, y: u32) -> u32 { (x & 0x7FFF_FFFF) | (y & 0x8000_0000) }
    f32_eq(x: f32, y: f32) -> bool { x == y }
    f32_ne(x: f32, y: f32) -> bool { x != y }
    f32_lt(x: f32, y: f32) -> bool { x < y }
    f32_gt(x: f32, y: f32) -> bool { x > y }
    f32_le(x: f32, y: f32) -> bool { x <= y }
    f32_ge(x: f32, y: f32) -> bool { x >= y }
    f64_add(x: f64, y: f64) -> f64 { x + y }
    f64_sub(x: f64, y: f64) -> f64 { x - y }
    f64_mul(x: f64, y: f64) -> f64 { x * y }
    f64_div(x: f64, y: f64) -> f64 { x / y }
    f64_min(x: f64, y: f64) -> f64 { float::f64_min(x, y) }
    f64_max(x: f64, y: f64) -> f64 { float::f64_max(x, y) }
    f64_copysign(x: u64, y: u64) -> u64 { (x & 0x7FFF_FFFF_FFFF_FFFF) | (y & 0x8000_0000_0000_0000) }
    f64_eq(x: f64, y: f64) -> bool { x == y }
    f64_ne(x: f64, y: f64) -> bool { x != y }
    f64_lt(x: f64, y: f64) -> bool { x < y }
    f64_gt(x: f64, y: f64) -> bool { x > y }
    f64_le(x: f64, y: f64) -> bool { x <= y }
    f64_ge(x: f64, y: f64) -> bool { x >= y }
}

unary! {
    f32_abs(x: u32) -> u32 { x & 0x7FFF_FFFF }
    f32_neg(x: u32) -> u32 { x ^ 0x8000_0000 }
    f32_ceil(x: f32) -> f32 { float::quiet_f32(x.ceil()) }
    f32_floor(x: f32) -> f32 { float::quiet_f32(x.floor()) }
    f32_trunc(x: f32) -> f32 { float::quiet_f32(x.trunc()) }
    f32_nearest(x: f32) -> f32 { float::quiet_f32(float::f32_nearest(x)) }
    f32_sqrt(x: f32) -> f32 { x.sqrt() }
    f64_abs(x: u64) -> u64 { x & 0x7FFF_FFFF_FFFF_FFFF }
    f64_neg(x: u64) -> u64 { x ^ 0x8000_0000_0000_0000 }
    f64_ceil(x: f64) -> f64 { float::quiet_f64(x.ceil()) }
    f64_floor(x: f64) -> f64 { float::quiet_f64(x.floor()) }
    f64_trunc(x: f64) -> f64 { float::quiet_f64(x.trunc()) }
    f64_nearest(x: f64) -> f64 { float::quiet_f64(float::f64_nearest(x)) }
    f64_sqrt(x: f64) -> f64 { x.sqrt() }
}

// ---------------- conversions (`as` from float to int saturates and maps NaN to 0: exactly `trunc_sat`)

unary! {
    i32_wrap_i64(x: u64) -> u32 { x as u32 }
    i64_extend_i32_s(x: i32) -> i64 { x as i64 }
    i64_extend_i32_u(x: u32) -> u64 { x as u64 }
    i32_trunc_sat_f32_s(x: f32) -> i32 { x as i32 }
    i32_trunc_sat_f32_u(x: f32) -> u32 { x as u32 }
    i32_trunc_sat_f64_s(x: f64) -> i32 { x as i32 }
    i32_trunc_sat_f64_u(x: f64) -> u32 { x as u32 }
    i64_trunc_sat_f32_s(x: f32) -> i64 { x as i64 }
    i64_trunc_sat_f32_u(x: f32) -> u64 { x as u64 }
    i64_trunc_sat_f64_s(x: f64) -> i64 { x as i64 }
    i64_trunc_sat_f64_u(x: f64) -> u64 { x as u64 }
    f32_convert_i32_s(x: i32) -> f32 { x as f32 }
    f32_convert_i32_u(x: u32) -> f32 { x as f32 }
    f32_convert_i64_s(x: i64) -> f32 { x as f32 }
    f32_convert_i64_u(x: u64) -> f32 { float::f32_from_u64(x) }
    f32_demote_f64(x: f64) -> f32 { x as f32 }
    f64_convert_i32_s(x: i32) -> f64 { x as f64 }
    f64_convert_i32_u(x: u32) -> f64 { x as f64 }
    f64_convert_i64_s(x: i64) -> f64 { x as f64 }
    f64_convert_i64_u(x: u64) -> f64 { float::f64_from_u64(x) }
    f64_promote_f32(x: f32) -> f64 { x as f64 }
}

try_unary! {
    i32_trunc_f32_s(x: f32) -> Result<i32> { float::i32_trunc_s(float::f32_as_f64(x)) }
    i32_trunc_f32_u(x: f32) -> Result<u32> { float::i32_trunc_u(float::f32_as_f64(x)) }
    i32_trunc_f64_s(x: f64) -> Result<i32> { float::i32_trunc_s(x) }
    i32_trunc_f64_u(x: f64) -> Result<u32> { float::i32_trunc_u(x) }
    i64_trunc_f32_s(x: f32) -> Result<i64> { float::i64_trunc_s(float::f32_as_f64(x)) }
    i64_trunc_f32_u(x: f32) -> Result<u64> { float::i64_trunc_u(float::f32_as_f64(x)) }
    i64_trunc_f64_s(x: f64) -> Result<i64> { float::i64_trunc_s(x) }
    i64_trunc_f64_u(x: f64) -> Result<u64> { float::i64_trunc_u(x) }
}
