//! The cold path: instructions that are rare in hot code (memories other than 0, bulk memory, tables, the
//! reference instructions, GC objects), executed out of line so the dispatch loop keeps its registers for
//! the hot ones.
//!
//! The loop hands over a [`Cold`] context (the store's parts, borrowed) and the frame. [`cold_op`] resolves
//! the instance's index spaces (memory, table and segment indices to the store's entities, the function's
//! field, array-access and cast tables) and calls the handler of the instruction's family in `memory.rs`,
//! `tables.rs` or `gc_objects.rs`, one line per instruction. The only way out besides completing is
//! [`OpExit`]: a trap, an allocation that needs a collection first, or a thrown exception.

use std::sync::Arc;

use super::gc_objects::{self, Allocator, OpExit};
use super::memory::MemView;
use super::operands::{get, get_u32s};
use super::race_hooks::RaceHooks;
use super::{atomics, exceptions, memory, shared_gc, tables};
use crate::bytecode::Instr;
use crate::memory::LinearMemory;
use crate::module::ModuleData;
use crate::mutator::AllocState;
use crate::state::{FuncEntity, GlobalEntity, Instance, TableEntity};
use crate::types::TypeRegistry;
use vmrace::AccessKind;

/// What the cold instructions need besides the frame.
pub(super) struct Cold<'a> {
    pub module: &'a ModuleData,
    pub func: u32,
    pub inst_id: u32,
    pub instances: &'a mut Vec<Instance>,
    pub funcs: &'a Vec<FuncEntity>,
    pub memories: &'a [Arc<LinearMemory>],
    pub tables: &'a mut Vec<TableEntity>,
    pub globals: &'a mut [GlobalEntity],
    pub registry: &'a TypeRegistry,
    /// The dispatch loop's view of memory 0 (`memory.grow` updates it).
    pub mem: &'a mut MemView,
    pub mem0_index: Option<u32>,
    pub heap: &'a gc::Heap,
    pub cache: &'a mut gc::ThreadCache,
    pub alloc: &'a mut AllocState,
    /// Where the instruction is (for allocation sites).
    pub pc: usize,
    /// `--race`: the detector and this thread's context.
    pub race: Option<RaceHooks<'a>>,
}

/// Execute an instruction that is not on the hot path.
#[inline(never)]
pub(super) fn cold_op(ctx: &mut Cold<'_>, instr: Instr, frame: &mut [u64]) -> Result<(), OpExit> {
    let Cold {
        module,
        func,
        inst_id,
        instances,
        funcs,
        memories,
        tables,
        globals,
        registry,
        mem,
        mem0_index,
        heap,
        cache,
        alloc,
        pc,
        race,
    } = ctx;
    let (module, func, mem0_index) = (*module, *func, *mem0_index);
    let inst_id = *inst_id as usize;
    // The running instance (looked up in the arms that need it, not on every cold instruction).
    macro_rules! instance {
        () => {
            instances[inst_id]
        };
    }
    // The store memory behind the instance's memory `m`.
    macro_rules! memory_of {
        ($m:expr) => {
            &memories[instance!().memories[$m as usize] as usize]
        };
    }
    // A view of the instance's memory `m`, for one access.
    macro_rules! bytes_of {
        ($m:expr) => {
            MemView::of(memory_of!($m))
        };
    }
    // The store table behind the instance's table `t`.
    macro_rules! table_of {
        ($t:expr) => {
            tables[instance!().tables[$t as usize] as usize]
        };
    }
    // The running function's compiled code (its field, array-access and cast tables).
    macro_rules! code {
        () => {
            module.code[func as usize]
        };
    }
    macro_rules! allocator {
        () => {
            &mut Allocator {
                heap: *heap,
                cache: &mut **cache,
                state: &mut **alloc,
                module,
                func,
                site: super::gc_objects::Pc(*pc),
                race: race.as_ref().map(|r| r.rt),
                registry: *registry,
            }
        };
    }
    // `--race`: an atomic's synchronization and access. A release is recorded before the operation makes its
    // value visible and an acquire after it has read, so another thread that sees the value also sees the
    // release (the other order lets an acquirer run first and miss the edge: a false report).
    macro_rules! race_release {
        ($m:expr, $at:expr) => {
            if let Some(r) = race.as_mut() {
                r.sync(memory_of!($m), $at, false, true);
            }
        };
    }
    // `--race`: the site of this instruction's access (its backtrace in the stack depot).
    macro_rules! race_site {
        () => {
            match race.as_mut() {
                Some(r) => r.site(instances, inst_id as u32, func, *pc),
                None => vmrace::Site(0),
            }
        };
    }
    // `--race`: the elements `$range` (first, count) of the instance's table `$t` were read or written.
    macro_rules! race_table {
        ($t:expr, $range:expr, $write:expr) => {
            if let Some(r) = race.as_mut() {
                let t = &tables[instance!().tables[$t as usize] as usize];
                if t.shared().is_some() {
                    let site = r.site(instances, inst_id as u32, func, *pc);
                    r.table(t, (module.index, $t), $range, $write, site)?;
                }
            }
        };
    }
    macro_rules! race_atomic_at {
        ($m:expr, $at:expr, $width:expr, $kind:expr, $acquire:expr, $release:expr) => {
            if let Some(r) = race.as_mut() {
                r.sync(memory_of!($m), $at, $acquire, false);
                let site = r.site(instances, inst_id as u32, func, *pc);
                r.access(memory_of!($m), $at, $width as u32, $kind, site)?;
            }
        };
    }
    use Instr as I;
    match instr {
        // ---------------- memories (`memory.rs`; memory 0's loads and stores are hot)
        I::Load { kind, mem: m, dst, addr, offset } => memory::load_any(frame, bytes_of!(m), kind, dst, addr, offset)?,
        I::Store { kind, mem: m, addr, value, offset } => {
            memory::store_any(frame, bytes_of!(m), kind, addr, value, offset)?
        }
        I::MemorySize { mem: m, dst } => memory::memory_size(frame, memory_of!(m), dst),
        I::MemoryGrow { mem: m, dst, delta } => {
            let sm = instance!().memories[m as usize];
            let memory = &memories[sm as usize];
            memory::memory_grow(frame, memory, dst, delta);
            if Some(sm) == mem0_index {
                // The base never moves; the loop's view of memory 0 just gets the new length. The memory
                // outlives the view: `execute` holds an `Arc` of it for the whole loop.
                **mem = MemView::of(memory);
            }
        }
        I::MemoryFill { mem: m, args } => memory::memory_fill(frame, memory_of!(m), args)?,
        I::MemoryCopy { dst_mem, src_mem, args } => {
            memory::memory_copy(frame, memory_of!(dst_mem), memory_of!(src_mem), args)?
        }
        I::MemoryInit { mem: m, data, args } => {
            memory::memory_init(frame, memory_of!(m), &instance!().datas[data as usize], args)?
        }
        I::DataDrop { data } => memory::data_drop(&mut instance!().datas, data),

        // ---------------- atomics (`atomics.rs`; `memory.atomic.wait` leaves the loop instead)
        I::AtomicLoad { mem: m, width, dst, args, offset } => {
            // The address first: the result goes to the slot it was in.
            let at = atomics::address(frame, args, offset);
            atomics::load(frame, memory_of!(m), width, dst, args, offset)?;
            race_atomic_at!(m, at, width, AccessKind::AtomicRead, true, false);
        }
        I::AtomicStore { mem: m, width, args, offset } => {
            let at = atomics::address(frame, args, offset);
            race_release!(m, at);
            atomics::store(frame, memory_of!(m), width, args, offset)?;
            race_atomic_at!(m, at, width, AccessKind::AtomicWrite, false, true);
        }
        I::AtomicRmw { op, mem: m, width, dst, args, offset } => {
            let at = atomics::address(frame, args, offset);
            race_release!(m, at);
            atomics::rmw(frame, memory_of!(m), op, width, dst, args, offset)?;
            race_atomic_at!(m, at, width, AccessKind::AtomicWrite, true, true);
        }
        I::AtomicCmpxchg { mem: m, width, dst, args, offset } => {
            let at = atomics::address(frame, args, offset);
            race_release!(m, at);
            atomics::cmpxchg(frame, memory_of!(m), width, dst, args, offset)?;
            race_atomic_at!(m, at, width, AccessKind::AtomicWrite, true, true);
        }
        I::AtomicNotify { mem: m, dst, args, offset } => {
            // Whatever the notifier did before happens before what the woken threads do after.
            let at = atomics::address(frame, args, offset);
            if let Some(r) = race.as_mut() {
                r.sync(memory_of!(m), at, false, true);
            }
            atomics::notify(frame, memory_of!(m), dst, args, offset)?
        }
        I::RaceLoad { kind, mem: m, dst, addr, offset } => {
            // The address first: `dst` may be the slot it was in.
            let at = get::<u32>(frame, addr) as u64 + offset as u64;
            memory::load_any(frame, MemView::of(memory_of!(m)), kind, dst, addr, offset)?;
            if let Some(r) = race.as_mut() {
                let site = r.site(instances, inst_id as u32, func, *pc);
                r.access(memory_of!(m), at, kind.width(), AccessKind::Read, site)?;
            }
        }
        I::RaceStore { kind, mem: m, addr, value, offset } => {
            let at = get::<u32>(frame, addr) as u64 + offset as u64;
            memory::store_any(frame, MemView::of(memory_of!(m)), kind, addr, value, offset)?;
            if let Some(r) = race.as_mut() {
                let site = r.site(instances, inst_id as u32, func, *pc);
                r.access(memory_of!(m), at, kind.width(), AccessKind::Write, site)?;
            }
        }
        I::AtomicFence => std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst),

        // ---------------- shared-everything threads (`shared_gc.rs`)
        I::StructAtomic { op, dst, args, field } => {
            let site = race_site!();
            shared_gc::struct_atomic(frame, code!().fields[field as usize], op, dst, args, race.as_mut(), site)?
        }
        I::ArrayAtomic { op, dst, args, access } => {
            let (kind, site) = (code!().arrays[access as usize].kind, race_site!());
            shared_gc::array_atomic(frame, kind, op, dst, args, race.as_mut(), site)?
        }
        I::GlobalGetShared { dst, global } => {
            shared_gc::global_get_shared(frame, &globals[instance!().globals[global as usize] as usize], dst)
        }
        I::GlobalSetShared { global, src } => {
            shared_gc::global_set_shared(frame, &mut globals[instance!().globals[global as usize] as usize], src)
        }
        I::GlobalAtomic { op, width, dst, args, global } => {
            let g = &mut globals[instance!().globals[global as usize] as usize];
            let (id, site) = ((module.index, global), race_site!());
            shared_gc::global_atomic(frame, g, op, (width, dst, args), race.as_mut(), id, site)?
        }
        I::RaceGlobal { what, global } => {
            let g = &globals[instance!().globals[global as usize] as usize];
            let (id, site) = ((module.index, global), race_site!());
            shared_gc::race_global(g, what, race.as_mut(), id, site)?
        }
        I::RaceRange { write, args, len, access } => {
            let (kind, site) = (code!().arrays[access as usize].kind, race_site!());
            shared_gc::race_range(frame, kind, write, (args, len), race.as_mut(), site)?
        }
        I::RaceField { write, obj, field } => {
            let site = race_site!();
            shared_gc::race_field(frame, code!().fields[field as usize], write, obj, race.as_mut(), site)?
        }
        I::RaceElem { write, args, access } => {
            let (kind, site) = (code!().arrays[access as usize].kind, race_site!());
            shared_gc::race_elem(frame, kind, write, args, race.as_mut(), site)?
        }

        // ---------------- tables and references (`tables.rs`; `race_table!` checks a shared table's
        // elements after the instruction succeeded)
        I::TableGet { table, dst, index } => {
            let i = get::<u32>(frame, index) as u64;
            tables::table_get(frame, &table_of!(table), dst, index)?;
            race_table!(table, (i, 1), false);
        }
        I::TableSet { table, index, value } => {
            tables::table_set(frame, &mut table_of!(table), index, value)?;
            race_table!(table, (get::<u32>(frame, index) as u64, 1), true);
        }
        I::TableSize { table, dst } => tables::table_size(frame, &table_of!(table), dst),
        I::TableGrow { table, dst, delta } => {
            let n = get::<u32>(frame, delta) as u64;
            tables::table_grow(frame, &mut table_of!(table), dst, delta);
            // The new elements are written (with the initial value) unless the table could not grow.
            if let Ok(old) = u32::try_from(get::<i32>(frame, dst)) {
                race_table!(table, (old as u64, n), true);
            }
        }
        I::TableFill { table, args } => {
            tables::table_fill(frame, &mut table_of!(table), args)?;
            let [i, _, n] = get_u32s(frame, args);
            race_table!(table, (i, n), true);
        }
        I::TableCopy { dst_table, src_table, args } => {
            let (d, s) = (instance!().tables[dst_table as usize], instance!().tables[src_table as usize]);
            tables::table_copy(frame, tables, d as usize, s as usize, args)?;
            let [di, si, n] = get_u32s(frame, args);
            race_table!(src_table, (si, n), false);
            race_table!(dst_table, (di, n), true);
        }
        I::TableInit { table, elem, args } => {
            tables::table_init(frame, &mut table_of!(table), &instance!().elems[elem as usize], args)?;
            let [d, _, n] = get_u32s(frame, args);
            race_table!(table, (d, n), true);
        }
        I::ElemDrop { elem } => tables::elem_drop(&mut instance!().elems, elem),
        I::RefFunc { dst, func: f } => tables::ref_func(frame, dst, instance!().funcs[f as usize]),
        I::RefIsNull { dst, src } => tables::ref_is_null(frame, dst, src),
        I::RefAsNonNull { dst, src } => tables::ref_as_non_null(frame, dst, src)?,

        // ---------------- GC references and objects (`gc_objects.rs`)
        I::RefEq { dst, a, b } => gc_objects::ref_eq(frame, dst, a, b),
        I::RefI31 { dst, src } => gc_objects::ref_i31(frame, dst, src),
        I::I31GetS { dst, src } => gc_objects::i31_get_s(frame, dst, src)?,
        I::I31GetU { dst, src } => gc_objects::i31_get_u(frame, dst, src)?,
        I::ConvertRef { dst, src } => gc_objects::convert_ref(frame, dst, src),
        I::RefTest { dst, src, target } => {
            gc_objects::ref_test(frame, registry, funcs, code!().casts[target as usize], dst, src)
        }
        I::RefCast { dst, src, target } => {
            gc_objects::ref_cast(frame, registry, funcs, code!().casts[target as usize], dst, src)?
        }
        I::StructNew { type_id, dst, args } => {
            gc_objects::struct_new(frame, allocator!(), registry, type_id, dst, args)?
        }
        I::StructNewDefault { type_id, dst } => gc_objects::struct_new_default(frame, allocator!(), type_id, dst)?,
        I::StructGet { dst, obj, field } => gc_objects::struct_get(frame, code!().fields[field as usize], dst, obj)?,
        I::StructSet { obj, value, field } => {
            gc_objects::struct_set(frame, code!().fields[field as usize], obj, value)?
        }
        I::ArrayNew { type_id, dst, args } => gc_objects::array_new(frame, allocator!(), registry, type_id, dst, args)?,
        I::ArrayNewDefault { type_id, dst, len } => {
            gc_objects::array_new_default(frame, allocator!(), type_id, dst, len)?
        }
        I::ArrayNewFixed { type_id, dst, args, len } => {
            gc_objects::array_new_fixed(frame, allocator!(), registry, type_id, dst, args, len)?
        }
        I::ArrayNewData { type_id, data, dst, args } => {
            let seg = &instance!().datas[data as usize];
            gc_objects::array_new_data(frame, allocator!(), registry, type_id, seg, dst, args)?
        }
        I::ArrayNewElem { type_id, elem, dst, args } => {
            let seg = &instance!().elems[elem as usize];
            gc_objects::array_new_elem(frame, allocator!(), type_id, seg, dst, args)?
        }
        I::ArrayGet { dst, args, access } => {
            gc_objects::array_get(frame, code!().arrays[access as usize].kind, dst, args)?
        }
        I::ArraySet { args, access } => gc_objects::array_set(frame, code!().arrays[access as usize].kind, args)?,
        I::ArrayLen { dst, src } => gc_objects::array_len(frame, dst, src)?,
        I::ArrayFill { args, access } => gc_objects::array_fill(frame, code!().arrays[access as usize].kind, args)?,
        I::ArrayCopy { args, dst_access, src_access } => {
            let (dk, sk) = (code!().arrays[dst_access as usize].kind, code!().arrays[src_access as usize].kind);
            gc_objects::array_copy(frame, dk, sk, args)?
        }
        I::ArrayInitData { args, access, data } => {
            let (kind, seg) = (code!().arrays[access as usize].kind, &instance!().datas[data as usize]);
            gc_objects::array_init_data(frame, kind, seg, args)?
        }
        I::ArrayInitElem { args, access, elem } => {
            let (kind, seg) = (code!().arrays[access as usize].kind, &instance!().elems[elem as usize]);
            gc_objects::array_init_elem(frame, kind, seg, args)?
        }

        // ---------------- exceptions (`exceptions.rs`)
        I::Throw { tag, args } => {
            let store_tag = instance!().tags[tag as usize];
            let exn = exceptions::throw_new(frame, allocator!(), &module.tags[tag as usize], store_tag, args)?;
            return Err(OpExit::Throw(exn));
        }
        I::ThrowRef { exn } => return Err(OpExit::Throw(exceptions::throw_ref(frame, exn)?)),
        other => unreachable!("hot instruction {other:?} reached the cold path"),
    }
    Ok(())
}
