//! The read side: parse a trace into generations, iterate a generation's events in time order, and replay
//! them into a [`LiveSet`].
//!
//! Parsing validates everything once (record framing, generation nesting, every event of every batch, the
//! tables, the `GenEnd` counts) and keeps only an index: the file bytes stay in one shared buffer, and
//! [`Generation::events`] decodes again on demand, merging the per-thread batches by time (a k-way merge, as
//! Go's reader does). The first problem stops parsing; the generations completed before it are kept and the
//! problem is reported as a [`FormatError`] naming the byte offset.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::event::{BatchCursor, BatchHeader, Event, EventKind, Span, batch_header};
use crate::format::{
    HEADER_LEN, MAGIC, MAX_RECORD_LEN, OBJ_SHIFT, RECORD_HEADER_LEN, RecordKind, VERSION, get_uvarint,
};

/// A problem in the file, at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("byte offset {offset}: {message}")]
pub struct FormatError {
    pub offset: u64,
    pub message: String,
}

/// Why a trace could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Format { path: String, source: FormatError },
    #[error("{0}")]
    Other(String),
}

/// A type-table row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeDef {
    pub name: String,
    pub size_hint: u64,
}

/// A site-table row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDef {
    pub function: String,
    pub wasm_offset: u64,
    /// `(file, line, col)`.
    pub location: Option<(String, u32, u32)>,
}

impl fmt::Display for SiteDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let func = if self.function.is_empty() { "?" } else { &self.function };
        write!(f, "{func}+{:#x}", self.wasm_offset)?;
        if let Some((file, line, col)) = &self.location {
            write!(f, " {file}:{line}:{col}")?;
        }
        Ok(())
    }
}

/// One batch in the index.
#[derive(Clone, Debug)]
pub struct BatchRef {
    pub header: BatchHeader,
    /// File offset of the batch record.
    pub offset: u64,
    /// The payload's range in the file.
    payload: Range<usize>,
    pub events: u64,
}

/// One complete generation: its info, tables and batches. Can be replayed alone.
#[derive(Clone, Debug)]
pub struct Generation {
    pub number: u64,
    /// Trace time (ns since the trace started) and wall-clock time (ns since the Unix epoch) of its start.
    pub start_ns: u64,
    pub wall_unix_ns: u64,
    pub heap_base: u64,
    pub page_size: u64,
    /// File offsets of its `GenStart` and just past its `GenEnd`.
    pub offset: u64,
    pub end_offset: u64,
    pub types: BTreeMap<u32, TypeDef>,
    pub sites: BTreeMap<u32, SiteDef>,
    pub batches: Vec<BatchRef>,
    pub events: u64,
    /// Time of its last event (or its start).
    pub end_ns: u64,
    data: Arc<[u8]>,
}

impl Generation {
    /// The events of this generation in time order (ties: file order of their batches, so the snapshot
    /// comes first and each thread's events keep their order).
    pub fn events(&self) -> Events<'_> {
        let mut events = Events { cursors: Vec::new(), heads: Vec::new(), heap: BinaryHeap::new() };
        for (i, b) in self.batches.iter().enumerate() {
            let mut cursor = BatchCursor::new(&self.data[b.payload.clone()], &b.header, self.page_size);
            // Validated while parsing, so decoding cannot fail here; a failure would end the batch.
            let head = cursor.next_event().ok().flatten();
            if let Some(ev) = &head {
                events.heap.push(Reverse((ev.ts, i)));
            }
            events.cursors.push(cursor);
            events.heads.push(head);
        }
        events
    }

    /// `$name` of a type id, or `type#N`.
    pub fn type_name(&self, type_id: u32) -> String {
        match self.types.get(&type_id) {
            Some(t) if !t.name.is_empty() => t.name.clone(),
            _ => format!("type#{type_id}"),
        }
    }

    /// `function+offset file:line:col` of a site id, `-` for 0, or `site#N`.
    pub fn site_name(&self, site: u32) -> String {
        match self.sites.get(&site) {
            Some(s) => s.to_string(),
            None if site == 0 => "-".to_string(),
            None => format!("site#{site}"),
        }
    }

    /// Wire bytes of this generation.
    pub fn byte_len(&self) -> u64 {
        self.end_offset - self.offset
    }
}

/// Iterator over a generation's events in time order.
pub struct Events<'a> {
    cursors: Vec<BatchCursor<'a>>,
    heads: Vec<Option<Event>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let Reverse((_, i)) = self.heap.pop()?;
        let ev = self.heads[i].take();
        let next = self.cursors[i].next_event().ok().flatten();
        if let Some(n) = &next {
            self.heap.push(Reverse((n.ts, i)));
        }
        self.heads[i] = next;
        ev
    }
}

/// A parsed trace: the complete generations, and the problem that stopped parsing, if any.
#[derive(Clone, Debug)]
pub struct Trace {
    pub version: u16,
    pub generations: Vec<Generation>,
    pub error: Option<FormatError>,
    pub file_len: u64,
}

impl Trace {
    /// Reads and parses the file at `path`. Fails only if the file cannot be read or has no valid header;
    /// later problems are in [`Trace::error`].
    pub fn open(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| TraceError::Io { path: name.clone(), source })?;
        Trace::parse(data).map_err(|source| TraceError::Format { path: name, source })
    }

    /// Parses a whole trace. Never panics, whatever the bytes.
    pub fn parse(data: Vec<u8>) -> Result<Trace, FormatError> {
        let data: Arc<[u8]> = data.into();
        let file_len = data.len() as u64;
        if data.len() < HEADER_LEN {
            return Err(FormatError {
                offset: 0,
                message: format!("not a vmtrace file: {} bytes, shorter than the header", data.len()),
            });
        }
        if data[..8] != MAGIC {
            return Err(FormatError { offset: 0, message: "not a vmtrace file (bad magic)".into() });
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        if version != VERSION {
            return Err(FormatError {
                offset: 8,
                message: format!("format version {version} is not supported (this reader reads version {VERSION})"),
            });
        }
        let mut parser = Parser { data: data.clone(), generations: Vec::new(), open: None };
        let error = parser.run().err();
        Ok(Trace { version, generations: parser.generations, error, file_len })
    }

    /// Total events in the complete generations.
    pub fn events(&self) -> u64 {
        self.generations.iter().map(|g| g.events).sum()
    }
}

struct OpenGen {
    gen_: Generation,
    strings: HashMap<u32, String>,
    /// Rows whose strings may be defined later in the generation: (type id, name string, size).
    type_rows: Vec<(u32, u32, u64)>,
    site_rows: Vec<(u32, u32, u64, u32, u32, u32)>,
}

struct Parser {
    data: Arc<[u8]>,
    generations: Vec<Generation>,
    open: Option<OpenGen>,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError { offset: offset as u64, message: message.into() })
}

/// Reads the uvarints of a fixed-width row; `at` is the payload's file offset for messages.
fn fields<const N: usize>(payload: &[u8], pos: &mut usize, at: usize, what: &str) -> Result<[u64; N], FormatError> {
    let mut out = [0u64; N];
    for v in &mut out {
        let start = *pos;
        *v = match get_uvarint(payload, pos) {
            Some(v) => v,
            None => return err(at + start, format!("{what}: bad or truncated varint")),
        };
    }
    Ok(out)
}

fn narrow(v: u64, at: usize, what: &str) -> Result<u32, FormatError> {
    u32::try_from(v).or_else(|_| err(at, format!("{what} {v} does not fit in 32 bits")))
}

impl Parser {
    fn run(&mut self) -> Result<(), FormatError> {
        let data = self.data.clone();
        let mut off = HEADER_LEN;
        while off < data.len() {
            if data.len() - off < RECORD_HEADER_LEN {
                return err(
                    off,
                    format!("truncated record header ({} of {RECORD_HEADER_LEN} bytes)", data.len() - off),
                );
            }
            let kind = data[off];
            let len = u32::from_le_bytes([data[off + 1], data[off + 2], data[off + 3], data[off + 4]]) as usize;
            let body = off + RECORD_HEADER_LEN;
            if len > MAX_RECORD_LEN {
                return err(off, format!("record of kind {kind} declares {len} bytes, more than any record has"));
            }
            if len > data.len() - body {
                return err(
                    off,
                    format!("truncated record: kind {kind} declares {len} bytes, {} remain", data.len() - body),
                );
            }
            let payload = &data[body..body + len];
            match RecordKind::from_u8(kind) {
                Some(RecordKind::GenStart) => self.gen_start(off, body, payload)?,
                Some(RecordKind::GenEnd) => self.gen_end(off, body, payload, body + len)?,
                Some(k) => {
                    let Some(open) = self.open.as_mut() else {
                        return err(off, format!("{k:?} record outside a generation"));
                    };
                    match k {
                        RecordKind::Batch => Self::batch(open, off, body, payload)?,
                        RecordKind::Strings => Self::strings(open, body, payload)?,
                        RecordKind::Types => {
                            let mut pos = 0;
                            while pos < payload.len() {
                                let [id, name, size] = fields(payload, &mut pos, body, "type table")?;
                                open.type_rows.push((
                                    narrow(id, body, "type id")?,
                                    narrow(name, body, "string id")?,
                                    size,
                                ));
                            }
                        }
                        RecordKind::Sites => {
                            let mut pos = 0;
                            while pos < payload.len() {
                                let [id, func, offset, file, line, col] =
                                    fields(payload, &mut pos, body, "site table")?;
                                open.site_rows.push((
                                    narrow(id, body, "site id")?,
                                    narrow(func, body, "string id")?,
                                    offset,
                                    narrow(file, body, "string id")?,
                                    narrow(line, body, "line")?,
                                    narrow(col, body, "column")?,
                                ));
                            }
                        }
                        RecordKind::GenStart | RecordKind::GenEnd => unreachable!("handled above"),
                    }
                }
                // Reserved kinds are skipped; anything else is damage.
                None if kind >= 128 => {}
                None => return err(off, format!("unknown record kind {kind}")),
            }
            off = body + len;
        }
        if let Some(open) = &self.open {
            return err(
                data.len(),
                format!(
                    "file ends inside generation {} (started at byte offset {}; the trace was not finished)",
                    open.gen_.number, open.gen_.offset
                ),
            );
        }
        Ok(())
    }

    fn gen_start(&mut self, off: usize, body: usize, payload: &[u8]) -> Result<(), FormatError> {
        if let Some(open) = &self.open {
            return err(off, format!("generation starts before generation {} ended", open.gen_.number));
        }
        let mut pos = 0;
        let [number, start_ns, wall, heap_base, page_size, obj_shift] =
            fields(payload, &mut pos, body, "generation start")?;
        if obj_shift != u64::from(OBJ_SHIFT) {
            return err(body, format!("object granularity 2^{obj_shift} is not supported"));
        }
        if page_size == 0 || !page_size.is_power_of_two() || page_size > 1 << 30 {
            return err(body, format!("bad page size {page_size}"));
        }
        if let Some(prev) = self.generations.last()
            && number <= prev.number
        {
            return err(off, format!("generation {number} follows generation {}", prev.number));
        }
        self.open = Some(OpenGen {
            gen_: Generation {
                number,
                start_ns,
                wall_unix_ns: wall,
                heap_base,
                page_size,
                offset: off as u64,
                end_offset: 0,
                types: BTreeMap::new(),
                sites: BTreeMap::new(),
                batches: Vec::new(),
                events: 0,
                end_ns: start_ns,
                data: self.data.clone(),
            },
            strings: HashMap::new(),
            type_rows: Vec::new(),
            site_rows: Vec::new(),
        });
        Ok(())
    }

    fn batch(open: &mut OpenGen, off: usize, body: usize, payload: &[u8]) -> Result<(), FormatError> {
        let header = batch_header(payload).or_else(|e| err(body + e.at, e.what))?;
        if header.gen_ != open.gen_.number {
            return err(off, format!("batch of generation {} inside generation {}", header.gen_, open.gen_.number));
        }
        let mut cursor = BatchCursor::new(payload, &header, open.gen_.page_size);
        let mut events = 0;
        let mut last_ts = header.base_ns;
        loop {
            match cursor.next_event() {
                Ok(Some(ev)) => {
                    events += 1;
                    last_ts = ev.ts;
                }
                Ok(None) => break,
                Err(e) => return err(body + e.at, format!("thread {} batch: {}", header.thread, e.what)),
            }
        }
        open.gen_.end_ns = open.gen_.end_ns.max(last_ts);
        open.gen_.events += events;
        open.gen_.batches.push(BatchRef { header, offset: off as u64, payload: body..body + payload.len(), events });
        Ok(())
    }

    fn strings(open: &mut OpenGen, body: usize, payload: &[u8]) -> Result<(), FormatError> {
        let mut pos = 0;
        while pos < payload.len() {
            let at = body + pos;
            let [id, len] = fields(payload, &mut pos, body, "string table")?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > payload.len() - pos {
                return err(at, "string runs past its record");
            }
            let s =
                std::str::from_utf8(&payload[pos..pos + len]).or_else(|_| err(body + pos, "string is not UTF-8"))?;
            pos += len;
            open.strings.insert(narrow(id, at, "string id")?, s.to_owned());
        }
        Ok(())
    }

    fn gen_end(&mut self, off: usize, body: usize, payload: &[u8], end: usize) -> Result<(), FormatError> {
        let Some(mut open) = self.open.take() else {
            return err(off, "generation end without a start");
        };
        let mut pos = 0;
        let [number, batches, events] = fields(payload, &mut pos, body, "generation end")?;
        let g = &mut open.gen_;
        if number != g.number {
            return err(off, format!("end of generation {number} inside generation {}", g.number));
        }
        if batches != g.batches.len() as u64 || events != g.events {
            return err(
                off,
                format!(
                    "generation {} holds {} batches / {} events, but its end record counts {batches} / {events} \
                     (batches were lost)",
                    g.number,
                    g.batches.len(),
                    g.events
                ),
            );
        }
        let string = |id: u32| -> Result<String, FormatError> {
            if id == 0 {
                return Ok(String::new());
            }
            match open.strings.get(&id) {
                Some(s) => Ok(s.clone()),
                None => err(off, format!("generation {}: string {id} is used but not defined", number)),
            }
        };
        for &(id, name, size_hint) in &open.type_rows {
            g.types.insert(id, TypeDef { name: string(name)?, size_hint });
        }
        for &(id, func, wasm_offset, file, line, col) in &open.site_rows {
            let location = if file == 0 { None } else { Some((string(file)?, line, col)) };
            g.sites.insert(id, SiteDef { function: string(func)?, wasm_offset, location });
        }
        g.end_offset = end as u64;
        self.generations.push(open.gen_);
        Ok(())
    }
}

// -------------------------------------------------------------------------------------------------------------
// Replay.

/// A fast hasher for addresses and small ids (the replay does a map operation per event; SipHash made it
/// several times slower). Not DoS-resistant, which a trace reader does not need.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits of aligned addresses poor; fold the high half in (murmur3's
        // finaliser), since the table indexes buckets with the low bits.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

/// A `HashMap` keyed by addresses or ids.
pub type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// An object the replay believes is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveObject {
    pub size: u64,
    pub type_id: u32,
    /// 0 if unknown (the object came from a snapshot).
    pub site: u32,
    /// When it was allocated, or when the snapshot first listed it.
    pub alloc_ns: u64,
    /// True if the replay first saw it in a snapshot (its allocation time is unknown).
    pub from_snapshot: bool,
}

/// A replay invariant that an event broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("t={ts}: object {addr:#x} allocated while already allocated")]
    DoubleAlloc { ts: u64, addr: u64 },
    #[error("t={ts}: free of object {addr:#x}, which is not allocated (never allocated, or freed twice)")]
    FreeOfUnknown { ts: u64, addr: u64 },
    #[error(
        "t={ts}: snapshot lists object {addr:#x} as {size} bytes of type {type_id}, the replay has {was_size} bytes of type {was_type}"
    )]
    SnapshotMismatch { ts: u64, addr: u64, size: u64, type_id: u32, was_size: u64, was_type: u32 },
    #[error(
        "t={ts}: generation {gen_}'s snapshot lists object {addr:#x}, which the replay of earlier generations does not have"
    )]
    SnapshotExtra { ts: u64, gen_: u64, addr: u64 },
    #[error("t={ts}: generation {gen_}'s snapshot misses {count} objects the replay has, e.g. {addr:#x}")]
    SnapshotMissing { ts: u64, gen_: u64, addr: u64, count: usize },
    #[error("t={ts}: span {base:#x} {what}")]
    Span { ts: u64, base: u64, what: &'static str },
    #[error("t={ts}: stack {base:#x} {what}")]
    Stack { ts: u64, base: u64, what: &'static str },
}

/// What applying an event did to the live set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    Allocated,
    /// The freed object, as it was.
    Freed(LiveObject),
}

/// Objects by address, in pages of 512 eight-byte-aligned addresses (4 KiB of heap): allocation and the
/// sweep both walk addresses in order, so consecutive events touch the same page. A hash map of every
/// object was ten times slower on a heap of a million objects (a cache miss per event).
#[derive(Clone, Debug, Default)]
struct ObjectMap {
    pages: IdMap<u64, Box<[Option<LiveObject>]>>,
    /// Addresses that are not 8-byte aligned (only a damaged trace has them).
    odd: IdMap<u64, LiveObject>,
    len: usize,
}

const PAGE_SLOTS: u64 = 512;

impl ObjectMap {
    fn slot(&self, addr: u64) -> Option<&Option<LiveObject>> {
        let page = self.pages.get(&(addr / 8 / PAGE_SLOTS))?;
        Some(&page[(addr / 8 % PAGE_SLOTS) as usize])
    }

    fn slot_mut(&mut self, addr: u64) -> &mut Option<LiveObject> {
        let page = self.pages.entry(addr / 8 / PAGE_SLOTS).or_insert_with(|| vec![None; PAGE_SLOTS as usize].into());
        &mut page[(addr / 8 % PAGE_SLOTS) as usize]
    }

    fn get(&self, addr: u64) -> Option<&LiveObject> {
        if !addr.is_multiple_of(8) {
            return self.odd.get(&addr);
        }
        self.slot(addr)?.as_ref()
    }

    /// Inserts unless present; whether it inserted.
    fn insert(&mut self, addr: u64, obj: LiveObject) -> bool {
        let inserted = if !addr.is_multiple_of(8) {
            match self.odd.entry(addr) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(obj);
                    true
                }
            }
        } else {
            let slot = self.slot_mut(addr);
            slot.is_none() && slot.replace(obj).is_none()
        };
        self.len += usize::from(inserted);
        inserted
    }

    fn remove(&mut self, addr: u64) -> Option<LiveObject> {
        let removed = if !addr.is_multiple_of(8) {
            self.odd.remove(&addr)
        } else {
            let page = self.pages.get_mut(&(addr / 8 / PAGE_SLOTS))?;
            page[(addr / 8 % PAGE_SLOTS) as usize].take()
        };
        self.len -= usize::from(removed.is_some());
        removed
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &LiveObject)> {
        let paged = self.pages.iter().flat_map(|(&page, slots)| {
            slots
                .iter()
                .enumerate()
                .filter_map(move |(i, o)| o.as_ref().map(|o| ((page * PAGE_SLOTS + i as u64) * 8, o)))
        });
        paged.chain(self.odd.iter().map(|(&a, o)| (a, o)))
    }
}

/// The live heap as replayed from events: objects by address (`id → (size, type, alloc time)`), spans and
/// stacks.
#[derive(Clone, Debug, Default)]
pub struct LiveSet {
    objects: ObjectMap,
    bytes: u64,
    spans: IdMap<u64, Span>,
    stacks: IdMap<u64, u64>,
}

impl LiveSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn objects(&self) -> usize {
        self.objects.len
    }

    pub fn get(&self, addr: u64) -> Option<&LiveObject> {
        self.objects.get(addr)
    }

    /// The live objects, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &LiveObject)> {
        self.objects.iter()
    }

    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.spans.values()
    }

    pub fn stacks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.stacks.iter().map(|(&b, &s)| (b, s))
    }

    /// Applies one event. On error the set is left unchanged.
    pub fn apply(&mut self, ev: &Event) -> Result<Applied, ReplayError> {
        let ts = ev.ts;
        match ev.kind {
            EventKind::ObjAlloc { addr, size, type_id, site } => {
                if !self.objects.insert(addr, LiveObject { size, type_id, site, alloc_ns: ts, from_snapshot: false }) {
                    return Err(ReplayError::DoubleAlloc { ts, addr });
                }
                self.bytes += size;
                Ok(Applied::Allocated)
            }
            EventKind::ObjFree { addr } => match self.objects.remove(addr) {
                Some(obj) => {
                    self.bytes -= obj.size;
                    Ok(Applied::Freed(obj))
                }
                None => Err(ReplayError::FreeOfUnknown { ts, addr }),
            },
            EventKind::ObjExists { addr, size, type_id } => match self.objects.get(addr) {
                Some(o) if o.size == size && o.type_id == type_id => Ok(Applied::Nothing),
                Some(o) => Err(ReplayError::SnapshotMismatch {
                    ts,
                    addr,
                    size,
                    type_id,
                    was_size: o.size,
                    was_type: o.type_id,
                }),
                None => {
                    self.objects.insert(addr, LiveObject { size, type_id, site: 0, alloc_ns: ts, from_snapshot: true });
                    self.bytes += size;
                    Ok(Applied::Allocated)
                }
            },
            EventKind::SpanAlloc(s) => {
                if self.spans.insert(s.base, s).is_some() {
                    return Err(ReplayError::Span { ts, base: s.base, what: "allocated while already allocated" });
                }
                Ok(Applied::Nothing)
            }
            EventKind::SpanExists(s) => {
                self.spans.insert(s.base, s);
                Ok(Applied::Nothing)
            }
            EventKind::SpanFree { base } => match self.spans.remove(&base) {
                Some(_) => Ok(Applied::Nothing),
                None => Err(ReplayError::Span { ts, base, what: "freed but not allocated" }),
            },
            EventKind::StackAlloc { base, size } | EventKind::StackExists { base, size } => {
                self.stacks.insert(base, size);
                Ok(Applied::Nothing)
            }
            EventKind::StackFree { base } => match self.stacks.remove(&base) {
                Some(_) => Ok(Applied::Nothing),
                None => Err(ReplayError::Stack { ts, base, what: "freed but not allocated" }),
            },
            EventKind::ThreadStart
            | EventKind::ThreadEnd
            | EventKind::ThreadExists { .. }
            | EventKind::GcBegin { .. }
            | EventKind::GcEnd(_) => Ok(Applied::Nothing),
        }
    }
}

/// Replays one generation alone from an empty live set (its snapshot first), checking pairing and GC
/// agreement; returns the live set at its end.
pub fn replay_generation(gen_: &Generation) -> Result<LiveSet, ReplayError> {
    let mut live = LiveSet::new();
    for ev in gen_.events() {
        live.apply(&ev)?;
    }
    Ok(live)
}

/// A GC whose reported live figures differ from the replay's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcDisagreement {
    pub ts: u64,
    pub cycle: u64,
    pub reported_bytes: u64,
    pub reported_objects: u64,
    pub replayed_bytes: u64,
    pub replayed_objects: u64,
}

/// Replays every generation in order (each one's snapshot is checked against the replay so far), calling
/// `f` after each event. Returns the live set at the end and the GCs whose figures disagree.
pub fn replay_all(
    trace: &Trace,
    mut f: impl FnMut(&Generation, &Event, &Applied, &LiveSet),
) -> Result<(LiveSet, Vec<GcDisagreement>), ReplayError> {
    let mut live = LiveSet::new();
    let mut disagreements = Vec::new();
    for (i, g) in trace.generations.iter().enumerate() {
        // After the first generation, each snapshot must list exactly what the replay holds.
        let mut listed: Option<HashSet<u64>> = (i > 0).then(HashSet::new);
        for ev in g.events() {
            if let Some(set) = &mut listed {
                if let EventKind::ObjExists { addr, .. } = ev.kind {
                    if live.get(addr).is_none() {
                        return Err(ReplayError::SnapshotExtra { ts: ev.ts, gen_: g.number, addr });
                    }
                    set.insert(addr);
                } else if !ev.kind.is_snapshot() {
                    check_listed(&live, set, g, ev.ts)?;
                    listed = None;
                }
            }
            let applied = live.apply(&ev)?;
            if let EventKind::GcEnd(e) = ev.kind
                && (e.live_bytes != live.bytes() || e.live_objects != live.objects() as u64)
            {
                disagreements.push(GcDisagreement {
                    ts: ev.ts,
                    cycle: e.cycle,
                    reported_bytes: e.live_bytes,
                    reported_objects: e.live_objects,
                    replayed_bytes: live.bytes(),
                    replayed_objects: live.objects() as u64,
                });
            }
            f(g, &ev, &applied, &live);
        }
        if let Some(set) = &listed {
            check_listed(&live, set, g, g.end_ns)?;
        }
    }
    Ok((live, disagreements))
}

fn check_listed(live: &LiveSet, listed: &HashSet<u64>, g: &Generation, ts: u64) -> Result<(), ReplayError> {
    if listed.len() == live.objects() {
        return Ok(());
    }
    let mut missing = live.iter().map(|(a, _)| a).filter(|a| !listed.contains(a)).collect::<Vec<_>>();
    missing.sort_unstable();
    Err(ReplayError::SnapshotMissing { ts, gen_: g.number, addr: missing[0], count: missing.len() })
}
