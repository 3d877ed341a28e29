//! The encoding of a reference value, shared by the heap and the VM.
//!
//! A reference (any Wasm reference type: `anyref`, `eqref`, `i31ref`, `structref`, `externref`, `funcref`, …)
//! is one `u64`. The low bits say what kind it is; heap objects are 8-byte aligned, so an object address has
//! its low 3 bits clear and needs no tag:
//!
//! | low bits | meaning                         | payload                           |
//! |----------|---------------------------------|-----------------------------------|
//! | all 0    | null                            | the value is exactly `0`          |
//! | `…1`     | unboxed `i31ref`                | `(v as u64) << 1 \| 1`, v: 31-bit |
//! | `…010`   | host reference (`externref`)    | `n << 3 \| 2`                     |
//! | `…100`   | function reference              | `index << 3 \| 4`                 |
//! | `…000`   | heap object (non-zero)          | address of the object header      |
//! | `…110`   | reserved (never produced)       |                                   |
//!
//! The collector traces exactly the values for which [`is_object`] is true and ignores everything else, so
//! the VM may hand it any reference-typed slot. The encoding never changes between collections (the heap
//! does not move objects), so a reference's bits are also a stable identity for `ref.eq`.

/// The null reference.
pub const NULL: u64 = 0;

const TAG_MASK: u64 = 0b111;
const TAG_HOST: u64 = 0b010;
const TAG_FUNC: u64 = 0b100;

/// True if `raw` is the address of a heap object (low 3 bits clear, not null): the only values the
/// collector follows.
#[inline(always)]
pub const fn is_object(raw: u64) -> bool {
    raw & TAG_MASK == 0 && raw != 0
}

/// True for the null reference.
#[inline(always)]
pub const fn is_null(raw: u64) -> bool {
    raw == NULL
}

/// Box an `i31` (the low 31 bits of `v` are kept, as `ref.i31` does).
#[inline(always)]
pub const fn from_i31(v: i32) -> u64 {
    ((v as u32 as u64) << 1 | 1) & 0xFFFF_FFFF
}

/// True if `raw` is an unboxed `i31ref`.
#[inline(always)]
pub const fn is_i31(raw: u64) -> bool {
    raw & 1 == 1
}

/// The sign-extended value of an `i31ref` (`i31.get_s`). Meaningful only if [`is_i31`].
#[inline(always)]
pub const fn i31_get_s(raw: u64) -> i32 {
    (raw as u32 as i32) >> 1
}

/// The zero-extended value of an `i31ref` (`i31.get_u`). Meaningful only if [`is_i31`].
#[inline(always)]
pub const fn i31_get_u(raw: u64) -> u32 {
    (raw as u32) >> 1
}

/// A host reference with host-chosen number `n` (must be below 2^61).
#[inline(always)]
pub const fn from_host(n: u64) -> u64 {
    debug_assert!(n < 1 << 61);
    n << 3 | TAG_HOST
}

/// True if `raw` is a host reference.
#[inline(always)]
pub const fn is_host(raw: u64) -> bool {
    raw & TAG_MASK == TAG_HOST
}

/// The host number of a host reference. Meaningful only if [`is_host`].
#[inline(always)]
pub const fn host_index(raw: u64) -> u64 {
    raw >> 3
}

/// A function reference to function `index` (the VM's numbering).
#[inline(always)]
pub const fn from_func(index: u32) -> u64 {
    (index as u64) << 3 | TAG_FUNC
}

/// True if `raw` is a function reference.
#[inline(always)]
pub const fn is_func(raw: u64) -> bool {
    raw & TAG_MASK == TAG_FUNC
}

/// The function index of a function reference. Meaningful only if [`is_func`].
#[inline(always)]
pub const fn func_index(raw: u64) -> u32 {
    (raw >> 3) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_disjoint() {
        let values = [NULL, from_i31(0), from_i31(-1), from_i31(0x3FFF_FFFF), from_host(7), from_func(3), 0x1000];
        let kinds = |v: u64| [is_null(v), is_i31(v), is_host(v), is_func(v), is_object(v)];
        for v in values {
            assert_eq!(kinds(v).iter().filter(|k| **k).count(), 1, "{v:#x}");
        }
        assert!(is_object(0x7f00_0000_1008));
        assert!(!is_object(0x7f00_0000_1004));
    }

    #[test]
    fn round_trips() {
        for v in [0, 1, -1, 0x3FFF_FFFF, -0x4000_0000, i32::MAX, i32::MIN] {
            let r = from_i31(v);
            assert!(is_i31(r));
            // ref.i31 keeps the low 31 bits; get_s sign-extends bit 30.
            assert_eq!(i31_get_s(r), (v << 1) >> 1);
            assert_eq!(i31_get_u(r), (v as u32) & 0x7FFF_FFFF);
        }
        assert_eq!(host_index(from_host(12345)), 12345);
        assert_eq!(func_index(from_func(u32::MAX)), u32::MAX);
    }
}
