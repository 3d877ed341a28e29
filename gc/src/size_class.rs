//! The size-class table: which slot size a small object gets, and how many pages a span of each class has.
//!
//! Every small object (at most [`MAX_SMALL_SIZE`] bytes, header included) is rounded up to one of
//! [`NUM_CLASSES`]` - 1` slot sizes; class 0 means "large object, own span". The table is computed at compile
//! time by `build_table` from two rules, so it can be checked rather than trusted:
//!
//! 1. **Slot sizes.** Multiples of 8 up to 128 bytes (16 classes: every 8-byte-aligned size has its own
//!    class, so rounding wastes nothing there). Above 128 each power-of-two interval `(2^k, 2^(k+1)]` is split
//!    into 8 equal steps of `2^k / 8` bytes: 144, 160, …, 256, 288, …, 512, …, 30720, 32768. That is 8 × 8
//!    = 64 more classes, 80 in total.
//! 2. **Span sizes.** A span of a class is the smallest number of pages `n` (at least enough for one slot)
//!    whose tail (the bytes after the last whole slot) is at most 1/8 of the span.
//!
//! **Worst-case waste.** Object sizes are first rounded to 8 bytes (alignment of the header and of every
//! reference field; not counted as class waste). Above 128 bytes a request `r` lands in a class of size `s`
//! with `s - step < r`, and `step <= s / 9` for `s = 2^k + i·2^k/8` (i ≥ 1), so the slot wastes
//! `s - r < step <= s/8`: **less than 12.5 % of every slot**. The span tail wastes **at most 12.5 % of every
//! span** (rule 2). Together at least (7/8)² ≈ 76.6 % of a span's bytes hold requested object bytes in the
//! very worst case; typical waste is far smaller. Both bounds are checked by the tests below.

/// Bytes per page: the unit spans are made of (and the page heap hands out).
pub const PAGE_SIZE: usize = 8192;

/// The largest object (header included) served from size classes; larger objects get their own span.
pub const MAX_SMALL_SIZE: usize = 32 * 1024;

/// Number of size classes, including class 0 (large objects).
pub const NUM_CLASSES: usize = 81;

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    /// Slot size in bytes (a multiple of 8); 0 for class 0.
    pub size: u32,
    /// Pages per span of this class.
    pub npages: u32,
    /// Slots per span: `npages * PAGE_SIZE / size`.
    pub nelems: u32,
    /// `ceil(2^32 / size)`: `(offset * div_magic) >> 32 == offset / size` for every offset inside a span
    /// (checked exhaustively by a test), so finding an object's index needs no division.
    pub div_magic: u32,
}

/// The table, indexed by class number.
pub static SIZE_CLASSES: [SizeClass; NUM_CLASSES] = build_table();

/// Class for 8-byte-aligned sizes up to 1024: index `(size + 7) / 8`.
static CLASS_BY_8: [u8; 1024 / 8 + 1] = build_lookup::<{ 1024 / 8 + 1 }>(8);
/// Class for sizes in (1024, MAX_SMALL_SIZE]: index `(size + 127) / 128`.
static CLASS_BY_128: [u8; MAX_SMALL_SIZE / 128 + 1] = build_lookup::<{ MAX_SMALL_SIZE / 128 + 1 }>(128);

/// The address of `CLASS_BY_8`, for generated code ([`crate::inline_alloc`]).
pub(crate) fn class_by_8_address() -> usize {
    CLASS_BY_8.as_ptr() as usize
}

/// The size class for an object of `size` bytes (header included), or 0 if it is a large object.
#[inline]
pub fn class_for_size(size: usize) -> usize {
    if size <= 1024 {
        CLASS_BY_8[size.div_ceil(8)] as usize
    } else if size <= MAX_SMALL_SIZE {
        CLASS_BY_128[size.div_ceil(128)] as usize
    } else {
        0
    }
}

const fn slot_sizes() -> [u32; NUM_CLASSES] {
    let mut sizes = [0u32; NUM_CLASSES];
    let mut class = 1;
    let mut size = 8;
    while size <= 128 {
        sizes[class] = size;
        class += 1;
        size += 8;
    }
    let mut power = 128;
    while power < MAX_SMALL_SIZE as u32 {
        let step = power / 8;
        let mut i = 1;
        while i <= 8 {
            sizes[class] = power + i * step;
            class += 1;
            i += 1;
        }
        power *= 2;
    }
    assert!(class == NUM_CLASSES, "NUM_CLASSES does not match the generated table");
    sizes
}

const fn build_table() -> [SizeClass; NUM_CLASSES] {
    let sizes = slot_sizes();
    let mut table = [SizeClass { size: 0, npages: 0, nelems: 0, div_magic: 0 }; NUM_CLASSES];
    let mut class = 1;
    while class < NUM_CLASSES {
        let size = sizes[class] as usize;
        let mut npages = size.div_ceil(PAGE_SIZE);
        loop {
            let span = npages * PAGE_SIZE;
            if (span % size) * 8 <= span {
                break;
            }
            npages += 1;
        }
        let nelems = npages * PAGE_SIZE / size;
        table[class] = SizeClass {
            size: size as u32,
            npages: npages as u32,
            nelems: nelems as u32,
            div_magic: (u32::MAX / size as u32) + 1,
        };
        class += 1;
    }
    table
}

const fn build_lookup<const N: usize>(granule: usize) -> [u8; N] {
    let sizes = slot_sizes();
    let mut out = [0u8; N];
    let mut i = 1;
    let mut class = 1;
    while i < N {
        let size = i * granule;
        while (sizes[class] as usize) < size {
            class += 1;
        }
        out[i] = class as u8;
        i += 1;
    }
    out[0] = 1;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_aligned() {
        assert_eq!(SIZE_CLASSES[0].size, 0);
        assert_eq!(SIZE_CLASSES[1].size, 8);
        assert_eq!(SIZE_CLASSES[NUM_CLASSES - 1].size as usize, MAX_SMALL_SIZE);
        for w in SIZE_CLASSES[1..].windows(2) {
            assert!(w[0].size < w[1].size, "{w:?}");
        }
        for c in &SIZE_CLASSES[1..] {
            assert_eq!(c.size % 8, 0);
            assert!(c.nelems >= 1);
            assert_eq!(c.nelems as usize, c.npages as usize * PAGE_SIZE / c.size as usize);
            // Bitmaps are sized for at most one 8-byte slot per 8 bytes of one page per span page.
            assert!(c.nelems as usize <= c.npages as usize * PAGE_SIZE / 8);
        }
    }

    #[test]
    fn slot_waste_below_one_eighth() {
        // Every 8-byte-aligned request maps to the smallest class that fits, wasting < 1/8 of the slot.
        let mut worst = 0.0f64;
        for r in (8..=MAX_SMALL_SIZE).step_by(8) {
            let c = class_for_size(r);
            let s = SIZE_CLASSES[c].size as usize;
            assert!(s >= r, "request {r} got class {c} of size {s}");
            assert!(SIZE_CLASSES[c - 1].size < r as u32 || c == 1, "request {r} not in smallest class");
            assert!((s - r) * 8 < s, "request {r} in slot {s} wastes more than 1/8");
            worst = worst.max((s - r) as f64 / s as f64);
        }
        assert!(worst < 0.125, "{worst}");
        // Unaligned sizes round up through the same lookup.
        assert_eq!(class_for_size(1), 1);
        assert_eq!(class_for_size(9), 2);
        assert_eq!(class_for_size(1025), class_for_size(1152));
        assert_eq!(class_for_size(MAX_SMALL_SIZE + 1), 0);
    }

    #[test]
    fn span_tail_waste_at_most_one_eighth() {
        for c in &SIZE_CLASSES[1..] {
            let span = c.npages as usize * PAGE_SIZE;
            let tail = span - c.nelems as usize * c.size as usize;
            assert!(tail * 8 <= span, "{c:?} tail {tail}");
            assert!(c.npages <= 8, "{c:?} spans too many pages");
        }
    }

    #[test]
    fn div_magic_is_exact_inside_spans() {
        for c in &SIZE_CLASSES[1..] {
            let span = c.npages as u64 * PAGE_SIZE as u64;
            for off in 0..span {
                assert_eq!((off * c.div_magic as u64) >> 32, off / c.size as u64, "{c:?} offset {off}");
            }
        }
    }
}
