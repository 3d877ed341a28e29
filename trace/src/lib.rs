//! `vmtrace`: vmrun's alloc/free tracer (`vmrun --trace allocfree`), its binary format, a reader, and the
//! tools behind `vmrun trace summary|dump|perfetto|plot`. Modelled on the Go runtime's execution tracer
//! with the AllocFree experiment (`runtime/trace*.go`, `internal/trace`), with two changes Go does not make:
//! every generation carries a live-heap snapshot, and object sizes, sites and the collector's own figures
//! are in the events, so a generation replays alone and the tools can check the collector.
//!
//! # What is traced
//!
//! [`Tracer`] is a [`gc::HeapObserver`]. The heap reports spans (alloc/free), objects (alloc with size,
//! type and the allocation site the VM set with [`Tracer::set_current_site`]; free from the sweep), stacks,
//! and collections (begin; end with the collector's live bytes and objects). The VM adds thread start/end,
//! the type table ([`Tracer::define_type`], names from the name section) and the site table
//! ([`Tracer::define_site`], function + wasm offset + `file:line:col`).
//!
//! # Data structures
//!
//! - **Format** ([`format`](mod@format)): file header (magic, version), then length-prefixed records: `GenStart`,
//!   string/type/site tables, per-thread `Batch`es of events, `GenEnd`. An event is a type byte, a varint
//!   time delta and varint arguments whose count comes from the one spec table [`format::SPECS`].
//!   Addresses become ids against a heap base (object id = (addr − base)/8, span id = (base − base)/page) and
//!   are written as deltas from a per-batch [`format::Predictor`], so the common events (next slot, same
//!   shape; next dead slot in the sweep) are two bytes.
//! - **Codec** ([`event`]): logical [`Event`]s with absolute addresses; [`event::BatchEncoder`] writes one
//!   batch record, [`event::BatchCursor`] reads one back. Writer and reader share both.
//! - **Slots** ([`writer`]): one per heap thread id, each with its open 64 KiB batch (system allocator,
//!   never the VM heap), the current allocation site, and a state byte (idle / writing / held / closed).
//! - **Output queue**: finished records, drained into the `Write` by whoever finds the sink free.
//! - **Tables** (`Meta`, behind a mutex never taken on the event path): strings, types, sites; repeated in
//!   every generation.
//!
//! # The write path (one event)
//!
//! 1. The heap calls e.g. `object_alloc` (only when an observer is attached: with tracing off, the heap's
//!    existing "no observer" branch is the whole cost).
//! 2. Find the thread's slot (two loads) and compare-and-swap its state idle → writing. Any other state is
//!    the slow path: *writing* means re-entry (dropped and counted, or a panic with
//!    [`TraceConfig::check_reentrancy`]); *held* means a generation switch is flushing (wait); *closed*
//!    means finished (drop).
//! 3. Read the clock (the TSC where it is invariant, see `clock.rs`; sweep frees reuse the thread's last
//!    time instead); if the batch has no room for a worst-case event, take it out; encode the event.
//! 4. Store idle. Then, outside the window, push the full batch (if any) to the output queue.
//!
//! Nothing between 2 and 4 calls into the heap, the VM, a lock or the sink, so the tracer can be called
//! from inside allocation, sweep and stack growth, and a nested call cannot corrupt a batch.
//!
//! # Generations
//!
//! [`Tracer::maybe_advance_generation`] (called by the VM at safe points, e.g. after each collection)
//! starts a new generation about every second or every 16 MiB: hold every slot, flush their batches, write
//! `GenEnd` (with batch and event counts), then `GenStart`, the full tables, and a snapshot batch with a
//! `*Exists` event for every live thread, stack, span and object (from a [`HeapWalk`]: for the real heap a
//! [`StoppedHeap`], the heap with the [`gc::StoppedWorld`] token of the stop it runs in). Any generation can
//! therefore be read and replayed alone, which also means a truncated file loses at most its last one.
//!
//! # Invariants
//!
//! - A slot's batch is touched only by whoever moved its state out of idle (the one `unsafe` in the crate,
//!   `writer::SlotGuard::buf`, relies on this).
//! - Within a batch, times never decrease; a batch decodes with a fresh predictor; writer and reader run
//!   the same predictor updates.
//! - All batches of generation *g* lie between `GenStart(g)` and `GenEnd(g)`, and `GenEnd` counts them.
//! - Replay (checked by tests): every free names an allocated or existing object and no object is freed
//!   twice; at every `GcEnd` the replayed live bytes and objects equal the collector's; each snapshot
//!   equals the replay of the generations before it.
//!
//! # Why
//!
//! - Per-thread batches and a CAS on a thread-owned cache line keep the fast path free of shared writes.
//!   Go uses a per-M seqlock for the same reason; our state byte also detects re-entry.
//! - Predicted deltas instead of raw ids: the allocator hands out slots in address order and the sweep
//!   frees them in address order. Predicting both gets events to about 2–3 bytes, below the 4-byte target.
//! - Snapshots in every generation (Go takes one only at trace start): flight-recorder windows and
//!   truncated files stay usable.
//! - One shared spec table and codec: the format is defined once, so writer and reader cannot drift apart.

mod clock;
pub mod event;
pub mod format;
pub mod reader;
pub mod tools;
pub mod writer;

pub use event::{Event, EventKind, GcEnd, Span};
pub use reader::{
    Applied, FormatError, GcDisagreement, Generation, LiveObject, LiveSet, ReplayError, SiteDef, Trace, TraceError,
    TypeDef, replay_all, replay_generation,
};
pub use tools::{dump, dump_to, perfetto, plot, summary};
pub use writer::{EmptyHeap, HeapWalk, MAX_THREADS, SiteDesc, StoppedHeap, TraceConfig, TraceStats, Tracer};
