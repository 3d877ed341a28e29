//! The interpreter's calls into the race detector (`--race`; the model is `vm/src/race.rs`).
//!
//! Only instructions the translator chose for race mode (`RaceLoad`/`RaceStore`) and the atomics reach
//! these functions, and only when the runtime has a detector: an access is reported after it was made
//! (so a trap comes first and is not a race), at the host address of the bytes, with the thread's
//! backtrace as its site (an id in the stack depot, [`RaceHooks::site`]). A race found leaves the dispatch
//! loop (`OpExit::Race`) to be reported (both backtraces come from the depot); execution then goes on after
//! the instruction, as Go's race detector goes on after a report.

use vmrace::{AccessKind, Race, Site, ThreadCtx};

use super::gc_objects::OpExit;
use super::race_stack::{Innermost, StackWalk};
use crate::memory::LinearMemory;
use crate::module::ModuleData;
use crate::mutator::{Frame, RaceSeg};
use crate::race::{RaceLocation, RaceRuntime, RacyObject, site};
use crate::stack_depot::StackCache;
use crate::state::{Instance, TableEntity};
use crate::tier::{Compiler, RaceHook};

/// What a race-mode instruction needs: the detector, the running thread's context, and what the site of an
/// access (its backtrace's id in the stack depot) is walked from.
pub(super) struct RaceHooks<'a> {
    pub rt: &'a RaceRuntime,
    pub ctx: &'a mut ThreadCtx,
    /// The thread's interpreted frames (the running run's start at `depth0`) and compiled runs.
    pub frames: &'a [Frame],
    pub depth0: usize,
    pub segs: &'a [RaceSeg],
    pub stacks: &'a mut StackCache,
    pub compiler: Option<&'a dyn Compiler>,
}

/// The site of the instruction at `pc` of `module`'s defined function `func` (an allocation's site).
pub(super) fn site_of(module: &ModuleData, func: u32, pc: usize) -> Site {
    site(module, module.code[func as usize].wasm_offsets.get(pc).copied().unwrap_or(0))
}

/// A race the detector found and where it is (a memory, a heap object or a shared global).
pub(crate) struct FoundRace {
    pub race: Race,
    pub location: RaceLocation,
}

impl RaceHooks<'_> {
    /// The site of an access by the instruction at `pc` of defined function `func` of instance `inst`: the
    /// depot id of the thread's backtrace there (`race_stack.rs`).
    pub fn site(&mut self, instances: &[Instance], inst: u32, func: u32, pc: usize) -> Site {
        let walk = StackWalk { frames: self.frames, segs: self.segs, instances, compiler: self.compiler };
        walk.site(Innermost::Interpreted { inst, func, pc, depth0: self.depth0 }, self.stacks, &self.rt.depot)
    }

    /// Reports an access of `width` bytes at offset `at` of `memory`, made by the instruction at `site`.
    pub fn access(
        &mut self,
        memory: &LinearMemory,
        at: u64,
        width: u32,
        kind: AccessKind,
        site: Site,
    ) -> Result<(), OpExit> {
        let base = memory.base() as u64;
        match self.rt.detector.access(self.ctx, base + at, width as u8, kind, site) {
            None => Ok(()),
            Some(race) => Err(found(race, RaceLocation::Memory { base })),
        }
    }

    /// Reports an access of `len` bytes (one field or element, or the range of a bulk operation) at byte
    /// `offset` of the heap object `obj` (of a shared type), made by the instruction at `site`.
    pub fn object_access(
        &mut self,
        obj: gc::ObjRef,
        offset: usize,
        len: u64,
        kind: AccessKind,
        site: Site,
    ) -> Result<(), OpExit> {
        let at = obj.raw() + offset as u64;
        let race = if len <= 8 {
            self.rt.detector.access(self.ctx, at, len as u8, kind, site)
        } else {
            self.rt.detector.access_range(self.ctx, at, len, kind, site)
        };
        match race {
            None => Ok(()),
            Some(race) => Err(found(race, object_location(obj))),
        }
    }

    /// The [`crate::tier::RaceHook`] bits `what` on shared global `index` of the module whose runtime index
    /// is `module`, whose cell is at host address `cell` and `width` bytes wide.
    pub fn global_hook(
        &mut self,
        (cell, width): (u64, u64),
        what: u32,
        (module, index): (u32, u32),
        site: Site,
    ) -> Result<(), OpExit> {
        let what =
            if crate::race::planted_bug_skip_global_hook() { what & !(RaceHook::READ | RaceHook::WRITE) } else { what };
        match self.rt.hook(self.ctx, cell, width, what, site) {
            None => Ok(()),
            Some(race) => Err(found(race, RaceLocation::Global { module, index })),
        }
    }

    /// The synchronization of an atomic on a field or element at host address `at` (see [`Self::sync`]).
    pub fn sync_at(&mut self, at: u64, acquire: bool, release: bool) {
        match (acquire, release) {
            (true, true) => self.rt.detector.acq_rel(self.ctx, at),
            (true, false) => self.rt.detector.acquire(self.ctx, at),
            (false, true) => self.rt.detector.release(self.ctx, at),
            (false, false) => {}
        }
    }

    /// The synchronization of an atomic at offset `at` of `memory`: a load acquires, a store releases,
    /// a read-modify-write does both (the threads proposal's atomics are sequentially consistent).
    pub fn sync(&mut self, memory: &LinearMemory, at: u64, acquire: bool, release: bool) {
        self.sync_at(memory.base() as u64 + at, acquire, release);
    }
}

/// `--race` on elements `[first, first + count)` of the table entity `table` if it is shared (table `index`
/// of the module whose runtime index is `module`): a ranged read or write of 8 bytes an element, at the
/// detector's addresses of the table ([`RaceRuntime::table_base`]). Both tiers call it after the table
/// instruction succeeded.
pub(crate) fn table_access(
    (rt, ctx): (&RaceRuntime, &mut ThreadCtx),
    table: &TableEntity,
    (module, index): (u32, u32),
    (first, count): (u64, u64),
    write: bool,
    site: Site,
) -> Option<FoundRace> {
    let elems = table.shared()?;
    if count == 0 || crate::race::planted_bug_skip_table_hook() {
        return None;
    }
    let base = rt.table_base(elems);
    let kind = if write { AccessKind::Write } else { AccessKind::Read };
    let race = rt.detector.access_range(ctx, base + first * 8, count * 8, kind, site)?;
    Some(FoundRace { race, location: RaceLocation::Table { module, index, base } })
}

impl RaceHooks<'_> {
    /// [`table_access`] by the interpreter: instance table `index` of `module`, store entity `table`.
    pub fn table(
        &mut self,
        table: &TableEntity,
        (module, index): (u32, u32),
        range: (u64, u64),
        write: bool,
        site: Site,
    ) -> Result<(), OpExit> {
        match table_access((self.rt, self.ctx), table, (module, index), range, write, site) {
            None => Ok(()),
            Some(found) => Err(OpExit::Race(Box::new(found))),
        }
    }
}

fn found(race: Race, location: RaceLocation) -> OpExit {
    OpExit::Race(Box::new(FoundRace { race, location }))
}

/// The location of a race in the live object `obj`.
pub(crate) fn object_location(obj: gc::ObjRef) -> RaceLocation {
    RaceLocation::Object(RacyObject { addr: obj.raw(), type_id: obj.type_id() })
}
