//! Object handles: how the embedding API hands out heap objects without handing out addresses.
//!
//! A [`crate::Val`] that holds a struct or an array carries an [`ObjHandle`]: an index into the store's
//! handle table and the generation of that entry. The table's entries are roots, so an object the host
//! holds stays alive for as long as its handle is in the table (until [`crate::Store::unroot`], or the end
//! of the host call whose argument it was). Every use of a handle goes through [`HandleTable::get`], which
//! checks the index and the generation: a stale handle (unrooted, or from an earlier host call), a handle
//! of another store, or one made up by the host is an error, never a dereference. Types are checked where
//! the value is used (a call's parameter type, a global's type), like any other value the host passes in.

/// A host-held reference to a heap object of one store; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjHandle {
    index: u32,
    generation: u32,
}

impl ObjHandle {
    /// A handle from its parts (for hosts that serialize handles; a wrong one is refused when used).
    pub fn from_parts(index: u32, generation: u32) -> ObjHandle {
        ObjHandle { index, generation }
    }
}

struct Entry {
    raw: u64,
    /// Odd while the entry is in use; bumped on insert and on remove, so a handle's generation matches
    /// only the one use of the entry it was made for.
    generation: u32,
}

/// The objects the host holds, as roots; see the module comment.
#[derive(Default)]
pub(crate) struct HandleTable {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

impl HandleTable {
    /// Root `raw` (an object reference) and return its handle.
    pub fn insert(&mut self, raw: u64) -> ObjHandle {
        match self.free.pop() {
            Some(index) => {
                let e = &mut self.entries[index as usize];
                e.raw = raw;
                e.generation = e.generation.wrapping_add(1);
                ObjHandle { index, generation: e.generation }
            }
            None => {
                self.entries.push(Entry { raw, generation: 1 });
                ObjHandle { index: self.entries.len() as u32 - 1, generation: 1 }
            }
        }
    }

    /// The object behind `h`, if `h` is a live handle of this table.
    pub fn get(&self, h: ObjHandle) -> Option<u64> {
        let e = self.entries.get(h.index as usize)?;
        (e.generation == h.generation && e.generation % 2 == 1).then_some(e.raw)
    }

    /// Stop rooting `h`'s object; false if `h` was not live.
    pub fn remove(&mut self, h: ObjHandle) -> bool {
        if self.get(h).is_none() {
            return false;
        }
        let e = &mut self.entries[h.index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.raw = 0;
        self.free.push(h.index);
        true
    }

    /// Every rooted object.
    pub fn visit(&self, visit: &mut dyn FnMut(u64)) {
        for e in &self.entries {
            if e.generation % 2 == 1 {
                visit(e.raw);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_checked_by_index_and_generation() {
        let mut t = HandleTable::default();
        let a = t.insert(0x1000);
        assert_eq!(t.get(a), Some(0x1000));
        assert!(t.remove(a));
        assert_eq!(t.get(a), None, "a removed handle is stale");
        let b = t.insert(0x2000);
        assert_eq!(t.get(a), None, "the reused entry does not answer the old handle");
        assert_eq!(t.get(b), Some(0x2000));
        assert_eq!(t.get(ObjHandle::from_parts(7, 1)), None, "a made-up handle is refused");
        let mut seen = Vec::new();
        t.visit(&mut |v| seen.push(v));
        assert_eq!(seen, vec![0x2000]);
    }
}
