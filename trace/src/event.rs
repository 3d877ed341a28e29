//! Logical events and the batch codec: [`BatchEncoder`] turns events into one batch record, choosing the
//! cheapest wire type the [`Predictor`] allows; [`BatchCursor`] turns a batch payload back into events. Both
//! sides run the same predictor updates in the same order, which is what makes the deltas decodable.
//!
//! Logical events carry absolute addresses; ids exist only on the wire.

use crate::format::{
    ALLOC_NEXT, ALLOC_SAME, AllocShape, BATCH_CAP, EventType, MAX_ARGS, MAX_EVENT_LEN, Predictor, RECORD_HEADER_LEN,
    RecordKind, get_uvarint, obj_addr, obj_id, put_uvarint, span_addr, span_id, stack_addr, stack_id, unzigzag, zigzag,
};

/// A span as events describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub base: u64,
    pub npages: u64,
    /// Size class; 0 for a large-object span.
    pub class: u8,
    /// Slot size (for a large span, the object's rounded size).
    pub elem_size: u64,
}

/// The collector's own figures at the end of a cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GcEnd {
    pub cycle: u64,
    pub live_bytes: u64,
    pub live_objects: u64,
    pub freed_bytes: u64,
    pub freed_objects: u64,
    pub heap_bytes: u64,
    pub next_gc_bytes: u64,
    pub pause_ns: u64,
}

/// What happened. `*Exists` events come from the live-heap snapshot at the start of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The batch's thread started (first event of a heap thread).
    ThreadStart,
    ThreadEnd,
    /// Snapshot: `thread` had started and not ended when the generation began.
    ThreadExists {
        thread: u32,
    },
    SpanAlloc(Span),
    SpanFree {
        base: u64,
    },
    SpanExists(Span),
    ObjAlloc {
        addr: u64,
        size: u64,
        type_id: u32,
        site: u32,
    },
    ObjFree {
        addr: u64,
    },
    ObjExists {
        addr: u64,
        size: u64,
        type_id: u32,
    },
    StackAlloc {
        base: u64,
        size: u64,
    },
    StackFree {
        base: u64,
    },
    StackExists {
        base: u64,
        size: u64,
    },
    GcBegin {
        cycle: u64,
        heap_bytes: u64,
    },
    GcEnd(GcEnd),
}

/// An event with its time (ns since the trace started) and heap thread id (0: the tracer itself, e.g. the
/// snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub ts: u64,
    pub thread: u32,
    pub kind: EventKind,
}

impl EventKind {
    /// The name `dump` prints.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ThreadStart => "thread_start",
            Self::ThreadEnd => "thread_end",
            Self::ThreadExists { .. } => "thread_exists",
            Self::SpanAlloc(_) => "span_alloc",
            Self::SpanFree { .. } => "span_free",
            Self::SpanExists(_) => "span_exists",
            Self::ObjAlloc { .. } => "obj_alloc",
            Self::ObjFree { .. } => "obj_free",
            Self::ObjExists { .. } => "obj_exists",
            Self::StackAlloc { .. } => "stack_alloc",
            Self::StackFree { .. } => "stack_free",
            Self::StackExists { .. } => "stack_exists",
            Self::GcBegin { .. } => "gc_begin",
            Self::GcEnd(_) => "gc_end",
        }
    }

    /// Whether this is part of a generation's snapshot.
    pub fn is_snapshot(&self) -> bool {
        matches!(
            self,
            Self::ThreadExists { .. } | Self::SpanExists(_) | Self::ObjExists { .. } | Self::StackExists { .. }
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Records.

/// Starts a record of `kind` at the end of `out`; returns its start for [`end_record`].
pub fn begin_record(out: &mut Vec<u8>, kind: RecordKind) -> usize {
    let start = out.len();
    out.push(kind as u8);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Back-patches the length of the record begun at `start`.
pub fn end_record(out: &mut [u8], start: usize) {
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    out[start + 1..start + RECORD_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------------------
// Encoding.

/// Builds one batch record. The caller checks [`BatchEncoder::has_room`] before each event, so the buffer
/// never grows past [`BATCH_CAP`] and never reallocates.
#[derive(Debug)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    pred: Predictor,
    last_ts: u64,
    heap_base: u64,
    page_size: u64,
    events: u64,
}

impl BatchEncoder {
    /// A batch of generation `gen` for `thread`, whose first event is at or after `base_ns`.
    pub fn new(gen_: u64, thread: u32, base_ns: u64, heap_base: u64, page_size: u64) -> Self {
        let mut buf = Vec::with_capacity(BATCH_CAP);
        begin_record(&mut buf, RecordKind::Batch);
        put_uvarint(&mut buf, gen_);
        put_uvarint(&mut buf, u64::from(thread));
        put_uvarint(&mut buf, base_ns);
        put_uvarint(&mut buf, heap_base);
        BatchEncoder { buf, pred: Predictor::default(), last_ts: base_ns, heap_base, page_size, events: 0 }
    }

    #[inline]
    pub fn has_room(&self) -> bool {
        self.buf.len() + MAX_EVENT_LEN <= BATCH_CAP
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn heap_base(&self) -> u64 {
        self.heap_base
    }

    /// Finishes the record and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        end_record(&mut self.buf, 0);
        self.buf
    }

    /// Writes the type byte and time delta. A clock that went backwards (it cannot, for one thread; a
    /// manual test clock can) is clamped, so times in a batch never decrease.
    #[inline]
    fn head(&mut self, ty: EventType, ts: u64) {
        debug_assert!(self.has_room());
        let dt = ts.saturating_sub(self.last_ts);
        self.last_ts = self.last_ts.max(ts);
        self.buf.push(ty as u8);
        put_uvarint(&mut self.buf, dt);
        self.events += 1;
    }

    #[inline]
    fn args(&mut self, ty: EventType, args: &[u64]) {
        debug_assert_eq!(args.len(), ty.nargs(), "{ty}: argument count differs from the spec table");
        for &a in args {
            put_uvarint(&mut self.buf, a);
        }
    }

    #[inline]
    fn event(&mut self, ty: EventType, ts: u64, args: &[u64]) {
        self.head(ty, ts);
        self.args(ty, args);
    }

    #[inline]
    pub fn obj_alloc(&mut self, ts: u64, addr: u64, size: u64, type_id: u32, site: u32) {
        let id = obj_id(addr, self.heap_base);
        let shape = AllocShape { size, type_id, site };
        match self.pred.find_shape(&shape) {
            Some(k) => {
                let next = self.pred.alloc_slots[k].next;
                if id == next {
                    self.event(ALLOC_NEXT[k], ts, &[]);
                } else {
                    self.event(ALLOC_SAME[k], ts, &[zigzag(id.wrapping_sub(next))]);
                }
                self.pred.alloc_in_slot(k, id);
            }
            None => {
                let delta = zigzag(id.wrapping_sub(self.pred.alloc_next));
                self.event(EventType::ObjAlloc, ts, &[delta, size, u64::from(type_id), u64::from(site)]);
                self.pred.alloc_new_shape(id, shape);
            }
        }
    }

    #[inline]
    pub fn obj_free(&mut self, ts: u64, addr: u64) {
        let id = obj_id(addr, self.heap_base);
        let predicted = self.pred.free_predicted();
        if id == predicted {
            self.event(EventType::ObjFreeNext, ts, &[]);
        } else {
            self.event(EventType::ObjFree, ts, &[zigzag(id.wrapping_sub(predicted))]);
        }
        self.pred.free(id);
    }

    pub fn obj_exists(&mut self, ts: u64, addr: u64, size: u64, type_id: u32) {
        let id = obj_id(addr, self.heap_base);
        let delta = zigzag(id.wrapping_sub(self.pred.exists_next));
        if size == self.pred.exists_size && type_id == self.pred.exists_type {
            self.event(EventType::ObjExistsSame, ts, &[delta]);
        } else {
            self.event(EventType::ObjExists, ts, &[delta, size, u64::from(type_id)]);
        }
        self.pred.exists(id, size, type_id);
    }

    fn span_args(&mut self, span: &Span) -> [u64; 4] {
        let id = span_id(span.base, self.heap_base, self.page_size);
        let delta = zigzag(id.wrapping_sub(self.pred.span_next));
        self.pred.span(id, span.npages);
        [delta, span.npages, u64::from(span.class), span.elem_size]
    }

    pub fn span_alloc(&mut self, ts: u64, span: &Span) {
        let args = self.span_args(span);
        self.event(EventType::SpanAlloc, ts, &args);
    }

    pub fn span_exists(&mut self, ts: u64, span: &Span) {
        let args = self.span_args(span);
        self.event(EventType::SpanExists, ts, &args);
    }

    pub fn span_free(&mut self, ts: u64, base: u64) {
        let id = span_id(base, self.heap_base, self.page_size);
        let delta = zigzag(id.wrapping_sub(self.pred.span_next));
        self.pred.span(id, 0);
        self.event(EventType::SpanFree, ts, &[delta]);
    }

    fn stack_delta(&mut self, base: u64) -> u64 {
        let id = stack_id(base, self.heap_base);
        let delta = zigzag(id.wrapping_sub(self.pred.stack_last));
        self.pred.stack_last = id;
        delta
    }

    pub fn stack_alloc(&mut self, ts: u64, base: u64, size: u64) {
        let d = self.stack_delta(base);
        self.event(EventType::StackAlloc, ts, &[d, size]);
    }

    pub fn stack_exists(&mut self, ts: u64, base: u64, size: u64) {
        let d = self.stack_delta(base);
        self.event(EventType::StackExists, ts, &[d, size]);
    }

    pub fn stack_free(&mut self, ts: u64, base: u64) {
        let d = self.stack_delta(base);
        self.event(EventType::StackFree, ts, &[d]);
    }

    pub fn gc_begin(&mut self, ts: u64, cycle: u64, heap_bytes: u64) {
        self.event(EventType::GcBegin, ts, &[cycle, heap_bytes]);
    }

    pub fn gc_end(&mut self, ts: u64, e: &GcEnd) {
        let args = [
            e.cycle,
            e.live_bytes,
            e.live_objects,
            e.freed_bytes,
            e.freed_objects,
            e.heap_bytes,
            e.next_gc_bytes,
            e.pause_ns,
        ];
        self.event(EventType::GcEnd, ts, &args);
    }

    /// Writes any logical event (the tracer calls the specific methods; tests and tools use this).
    pub fn push(&mut self, ts: u64, kind: &EventKind) {
        match *kind {
            EventKind::ThreadStart => self.event(EventType::ThreadStart, ts, &[]),
            EventKind::ThreadEnd => self.event(EventType::ThreadEnd, ts, &[]),
            EventKind::ThreadExists { thread } => self.event(EventType::ThreadExists, ts, &[u64::from(thread)]),
            EventKind::SpanAlloc(s) => self.span_alloc(ts, &s),
            EventKind::SpanFree { base } => self.span_free(ts, base),
            EventKind::SpanExists(s) => self.span_exists(ts, &s),
            EventKind::ObjAlloc { addr, size, type_id, site } => self.obj_alloc(ts, addr, size, type_id, site),
            EventKind::ObjFree { addr } => self.obj_free(ts, addr),
            EventKind::ObjExists { addr, size, type_id } => self.obj_exists(ts, addr, size, type_id),
            EventKind::StackAlloc { base, size } => self.stack_alloc(ts, base, size),
            EventKind::StackFree { base } => self.stack_free(ts, base),
            EventKind::StackExists { base, size } => self.stack_exists(ts, base, size),
            EventKind::GcBegin { cycle, heap_bytes } => self.gc_begin(ts, cycle, heap_bytes),
            EventKind::GcEnd(e) => self.gc_end(ts, &e),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Decoding.

/// Why a batch payload did not decode; `at` is the offset inside the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub at: usize,
    pub what: String,
}

/// The header of a batch payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub gen_: u64,
    pub thread: u32,
    pub base_ns: u64,
    pub heap_base: u64,
    /// Offset of the first event inside the payload.
    pub events_at: usize,
}

/// Parses a batch payload's header.
pub fn batch_header(payload: &[u8]) -> Result<BatchHeader, DecodeError> {
    let mut pos = 0;
    let mut field = |name: &str| {
        let at = pos;
        get_uvarint(payload, &mut pos).ok_or_else(|| DecodeError { at, what: format!("batch header: bad {name}") })
    };
    let gen_ = field("generation")?;
    let thread = field("thread")?;
    let base_ns = field("base time")?;
    let heap_base = field("heap base")?;
    let thread =
        u32::try_from(thread).map_err(|_| DecodeError { at: 0, what: format!("thread id {thread} too large") })?;
    Ok(BatchHeader { gen_, thread, base_ns, heap_base, events_at: pos })
}

/// Decodes the events of one batch payload, in order.
#[derive(Clone, Debug)]
pub struct BatchCursor<'a> {
    payload: &'a [u8],
    pos: usize,
    pred: Predictor,
    ts: u64,
    thread: u32,
    heap_base: u64,
    page_size: u64,
}

impl<'a> BatchCursor<'a> {
    pub fn new(payload: &'a [u8], header: &BatchHeader, page_size: u64) -> Self {
        BatchCursor {
            payload,
            pos: header.events_at,
            pred: Predictor::default(),
            ts: header.base_ns,
            thread: header.thread,
            heap_base: header.heap_base,
            page_size,
        }
    }

    /// Offset of the next event inside the payload.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn err(&self, at: usize, what: impl Into<String>) -> DecodeError {
        DecodeError { at, what: what.into() }
    }

    /// The next event, `Ok(None)` at the end of the payload.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        loop {
            let start = self.pos;
            let Some(&byte) = self.payload.get(start) else { return Ok(None) };
            self.pos += 1;
            let spec = EventType::spec_of(byte).ok_or_else(|| self.err(start, format!("unknown event type {byte}")))?;
            let dt_at = self.pos;
            let dt = get_uvarint(self.payload, &mut self.pos).ok_or_else(|| self.err(dt_at, "bad time delta"))?;
            let mut args = [0u64; MAX_ARGS];
            for (i, name) in spec.args.iter().enumerate() {
                let at = self.pos;
                args[i] = get_uvarint(self.payload, &mut self.pos)
                    .ok_or_else(|| self.err(at, format!("{}: bad argument {name}", spec.name)))?;
            }
            self.ts = self.ts.checked_add(dt).ok_or_else(|| self.err(dt_at, "time overflows"))?;
            if spec.ty == EventType::Ext {
                // Skip the opaque payload.
                let len = usize::try_from(args[0]).unwrap_or(usize::MAX);
                if len > self.payload.len() - self.pos {
                    return Err(self.err(start, "extension payload runs past the batch"));
                }
                self.pos += len;
                continue;
            }
            let kind = self.interpret(spec.ty, &args).map_err(|what| self.err(start, what))?;
            return Ok(Some(Event { ts: self.ts, thread: self.thread, kind }));
        }
    }

    fn interpret(&mut self, ty: EventType, a: &[u64; MAX_ARGS]) -> Result<EventKind, String> {
        let hb = self.heap_base;
        let u32_of = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{ty}: {what} {v} too large"));
        let span = |me: &mut Self, a: &[u64; MAX_ARGS]| -> Result<Span, String> {
            let id = me.pred.span_next.wrapping_add(unzigzag(a[0]));
            me.pred.span(id, a[1]);
            let class = u8::try_from(a[2]).map_err(|_| format!("{ty}: size class {} too large", a[2]))?;
            Ok(Span { base: span_addr(id, hb, me.page_size), npages: a[1], class, elem_size: a[3] })
        };
        Ok(match ty {
            EventType::ThreadStart => EventKind::ThreadStart,
            EventType::ThreadEnd => EventKind::ThreadEnd,
            EventType::ThreadExists => EventKind::ThreadExists { thread: u32_of(a[0], "thread")? },
            EventType::SpanAlloc => EventKind::SpanAlloc(span(self, a)?),
            EventType::SpanExists => EventKind::SpanExists(span(self, a)?),
            EventType::SpanFree => {
                let id = self.pred.span_next.wrapping_add(unzigzag(a[0]));
                self.pred.span(id, 0);
                EventKind::SpanFree { base: span_addr(id, hb, self.page_size) }
            }
            EventType::ObjAlloc => {
                let id = self.pred.alloc_next.wrapping_add(unzigzag(a[0]));
                let shape = AllocShape { size: a[1], type_id: u32_of(a[2], "type")?, site: u32_of(a[3], "site")? };
                self.pred.alloc_new_shape(id, shape);
                EventKind::ObjAlloc {
                    addr: obj_addr(id, hb),
                    size: shape.size,
                    type_id: shape.type_id,
                    site: shape.site,
                }
            }
            EventType::ObjAllocNext0
            | EventType::ObjAllocNext1
            | EventType::ObjAllocNext2
            | EventType::ObjAllocNext3
            | EventType::ObjAllocNext4
            | EventType::ObjAllocNext5
            | EventType::ObjAllocNext6
            | EventType::ObjAllocNext7
            | EventType::ObjAllocSame0
            | EventType::ObjAllocSame1
            | EventType::ObjAllocSame2
            | EventType::ObjAllocSame3
            | EventType::ObjAllocSame4
            | EventType::ObjAllocSame5
            | EventType::ObjAllocSame6
            | EventType::ObjAllocSame7 => {
                let (k, next_form) = ty.alloc_slot().ok_or("not an allocation slot")?;
                let slot = self.pred.alloc_slots[k];
                if slot.shape.size == 0 {
                    return Err(format!("{ty}: shape slot {k} is empty"));
                }
                let id = if next_form { slot.next } else { slot.next.wrapping_add(unzigzag(a[0])) };
                self.pred.alloc_in_slot(k, id);
                let shape = slot.shape;
                EventKind::ObjAlloc {
                    addr: obj_addr(id, hb),
                    size: shape.size,
                    type_id: shape.type_id,
                    site: shape.site,
                }
            }
            EventType::ObjFree | EventType::ObjFreeNext => {
                let delta = if ty == EventType::ObjFreeNext { 0 } else { unzigzag(a[0]) };
                let id = self.pred.free_predicted().wrapping_add(delta);
                self.pred.free(id);
                EventKind::ObjFree { addr: obj_addr(id, hb) }
            }
            EventType::ObjExists | EventType::ObjExistsSame => {
                let id = self.pred.exists_next.wrapping_add(unzigzag(a[0]));
                let (size, type_id) = if ty == EventType::ObjExists {
                    (a[1], u32_of(a[2], "type")?)
                } else {
                    (self.pred.exists_size, self.pred.exists_type)
                };
                self.pred.exists(id, size, type_id);
                EventKind::ObjExists { addr: obj_addr(id, hb), size, type_id }
            }
            EventType::StackAlloc | EventType::StackFree | EventType::StackExists => {
                let id = self.pred.stack_last.wrapping_add(unzigzag(a[0]));
                self.pred.stack_last = id;
                let base = stack_addr(id, hb);
                match ty {
                    EventType::StackAlloc => EventKind::StackAlloc { base, size: a[1] },
                    EventType::StackExists => EventKind::StackExists { base, size: a[1] },
                    _ => EventKind::StackFree { base },
                }
            }
            EventType::GcBegin => EventKind::GcBegin { cycle: a[0], heap_bytes: a[1] },
            EventType::GcEnd => EventKind::GcEnd(GcEnd {
                cycle: a[0],
                live_bytes: a[1],
                live_objects: a[2],
                freed_bytes: a[3],
                freed_objects: a[4],
                heap_bytes: a[5],
                next_gc_bytes: a[6],
                pause_ns: a[7],
            }),
            EventType::Ext => return Err("extension event in the wrong place".into()),
        })
    }
}

impl Iterator for BatchCursor<'_> {
    type Item = Result<Event, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(record: &[u8], page_size: u64) -> Vec<Event> {
        assert_eq!(record[0], RecordKind::Batch as u8);
        let len = u32::from_le_bytes(record[1..5].try_into().unwrap()) as usize;
        let payload = &record[RECORD_HEADER_LEN..];
        assert_eq!(payload.len(), len);
        let header = batch_header(payload).unwrap();
        BatchCursor::new(payload, &header, page_size).collect::<Result<Vec<_>, _>>().unwrap()
    }

    #[test]
    fn sequential_allocations_and_sweeps_cost_two_bytes() {
        let base = 0x7000_0000_0000;
        let mut enc = BatchEncoder::new(1, 3, 1000, base, 8192);
        let header_len = enc.buf.len();
        let mut kinds = Vec::new();
        for i in 0..100u64 {
            kinds.push(EventKind::ObjAlloc { addr: base + 4096 + i * 32, size: 32, type_id: 7, site: 2 });
        }
        for i in 0..100u64 {
            kinds.push(EventKind::ObjFree { addr: base + 4096 + i * 32 });
        }
        let ts = |i: usize| 1000 + i as u64 * 10;
        for (i, k) in kinds.iter().enumerate() {
            enc.push(ts(i), k);
        }
        let rec = enc.finish();
        // 200 events; all but the first alloc and the first two frees are 2 bytes.
        let body = rec.len() - header_len;
        assert!(body <= 200 * 2 + 16, "{body} bytes");
        let events = decode(&rec, 8192);
        assert_eq!(events.len(), 200);
        for (i, (ev, k)) in events.iter().zip(&kinds).enumerate() {
            assert_eq!(ev.kind, *k);
            assert_eq!(ev.ts, ts(i));
            assert_eq!(ev.thread, 3);
        }
    }

    /// Encodes `kinds` 64 ns apart and checks they decode unchanged; returns the event bytes.
    fn round_trip(kinds: &[EventKind]) -> usize {
        let mut enc = BatchEncoder::new(1, 1, 0, 0x7000_0000_0000, 8192);
        let header_len = enc.buf.len();
        for (i, k) in kinds.iter().enumerate() {
            enc.push(i as u64 * 64, k);
        }
        let rec = enc.finish();
        let got: Vec<EventKind> = decode(&rec, 8192).into_iter().map(|e| e.kind).collect();
        assert_eq!(got, kinds);
        rec.len() - header_len
    }

    #[test]
    fn interleaved_allocation_sites_keep_their_predictions() {
        // Four shapes (two types, four sites) allocated in turn, as `gc_cycles.wat` does; the two shapes of
        // each size share that size class's span, filling it in address order. After each shape's first
        // allocation, every event is two bytes.
        let base = 0x7000_0000_0000u64;
        let mut kinds = Vec::new();
        for i in 0..100u64 {
            for (s, size) in [(0u64, 72u64), (1, 24), (2, 72), (3, 24)] {
                let span = base + (s % 2) * 65536;
                let addr = span + (2 * i + s / 2) * size;
                kinds.push(EventKind::ObjAlloc { addr, size, type_id: 10 + s as u32 % 2, site: s as u32 });
            }
        }
        let bytes = round_trip(&kinds);
        assert!(bytes <= 400 * 2 + 4 * 16, "{bytes} bytes");
    }

    #[test]
    fn more_shapes_than_slots_still_round_trip() {
        // Twenty shapes in turn evict each other from the eight slots; some repeat within reach.
        let base = 0x7000_0000_0000u64;
        let mut kinds = Vec::new();
        for i in 0..200u64 {
            let s = (i * 7) % 20;
            let size = 16 + 8 * s;
            kinds.push(EventKind::ObjAlloc { addr: base + i * 1024, size, type_id: s as u32, site: (i % 3) as u32 });
        }
        // A zero-sized shape never takes a slot's place for good.
        kinds.push(EventKind::ObjAlloc { addr: base, size: 0, type_id: 0, site: 0 });
        kinds.push(EventKind::ObjAlloc { addr: base + 8, size: 0, type_id: 0, site: 0 });
        round_trip(&kinds);
    }

    #[test]
    fn every_kind_round_trips() {
        let base = 0x10_0000;
        let kinds = [
            EventKind::ThreadStart,
            EventKind::ThreadExists { thread: 9 },
            EventKind::SpanAlloc(Span { base: base + 8192 * 4, npages: 2, class: 5, elem_size: 48 }),
            EventKind::SpanExists(Span { base: base - 8192 * 4, npages: 1, class: 0, elem_size: 40000 }),
            EventKind::SpanFree { base: base + 8192 * 4 },
            EventKind::ObjAlloc { addr: base - 64, size: 48, type_id: 1, site: 0 },
            EventKind::ObjAlloc { addr: base + 800, size: 48, type_id: 1, site: 0 },
            EventKind::ObjAlloc { addr: base + 848, size: 48, type_id: 1, site: 0 },
            EventKind::ObjExists { addr: base, size: 16, type_id: 3 },
            EventKind::ObjExists { addr: base + 16, size: 16, type_id: 3 },
            EventKind::ObjExists { addr: base + 64, size: 16, type_id: 3 },
            EventKind::ObjFree { addr: base + 848 },
            EventKind::ObjFree { addr: base - 64 },
            EventKind::StackAlloc { base: 0x5555_0003, size: 1 << 20 },
            EventKind::StackExists { base: 0x5556_0001, size: 4096 },
            EventKind::StackFree { base: 0x5555_0003 },
            EventKind::GcBegin { cycle: 1, heap_bytes: 65536 },
            EventKind::GcEnd(GcEnd { cycle: 1, live_bytes: 96, live_objects: 2, pause_ns: 12345, ..GcEnd::default() }),
            EventKind::ThreadEnd,
        ];
        let mut enc = BatchEncoder::new(4, 1, 50, base, 8192);
        for (i, k) in kinds.iter().enumerate() {
            enc.push(60 + i as u64, k);
        }
        let got: Vec<EventKind> = decode(&enc.finish(), 8192).into_iter().map(|e| e.kind).collect();
        assert_eq!(got, kinds);
    }

    #[test]
    fn extension_events_are_skipped() {
        let mut enc = BatchEncoder::new(1, 1, 0, 0, 8192);
        enc.push(5, &EventKind::ThreadStart);
        enc.buf.extend_from_slice(&[EventType::Ext as u8, 0, 3, 0xaa, 0xbb, 0xcc]);
        enc.push(9, &EventKind::ThreadEnd);
        let events = decode(&enc.finish(), 8192);
        assert_eq!(
            events.iter().map(|e| (e.ts, e.kind)).collect::<Vec<_>>(),
            [(5, EventKind::ThreadStart), (9, EventKind::ThreadEnd)]
        );
    }
}
