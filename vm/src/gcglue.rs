//! Glue between the interpreter and the `gc` crate's heap.

/// The canonical type id in the header of the object at `raw`.
pub(crate) fn object_type(_raw: u64) -> u32 {
    0
}
