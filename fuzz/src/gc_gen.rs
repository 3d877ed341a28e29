//! The GC-focused generator: random allocation graphs as WasmGC modules (text).
//!
//! wasm-smith draws instructions one at a time, so its GC modules rarely build anything a collector finds
//! interesting. This generator draws the heap's *shape* instead. A module has:
//! - one rec group of 1-5 struct types and 1-3 array types. Struct fields are packed (`i8`, `i16`) or full
//!   numbers, or nullable references to any of the group's types, `anyref`, `eqref` or `i31ref`, mutable or
//!   not; a struct type may extend an earlier one (`sub`, the parent's fields first), so casts see subtypes;
//! - a root table: a global array of `anyref` slots;
//! - `run`: a straight-line list of heap operations — allocate a struct (fields from constants, from other
//!   slots through a checked cast, or from nested allocations), allocate an array (`new`, `new_default`,
//!   `new_fixed`), link a mutable field or element to another slot's object (cycles, self-loops), copy
//!   arrays, store an `i31`, drop or copy a slot, hold an object only in a typed local across further
//!   allocations, allocate a chain of 10-300 objects in a loop (garbage, or kept through its head), and
//!   hash a slot's subgraph midway. It returns the hash of everything the roots reach;
//! - `walk`: the same hash again (the host calls it after a full collection).
//!
//! The hash (`$visit`) walks from each slot to a bounded depth with a global fuel, so cycles end; it
//! mixes every number, each object's most derived type (found with `ref.test`, most derived first), array
//! lengths and `i31` values. Casts are checked (`br_on_cast`) except where `ref.test` guarded them, so
//! runs do not trap. Everything is a pure function of the random stream: the same seed gives the same text.

use crate::rng::SplitMix64;

/// What a reference may point to.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Struct(usize),
    Array(usize),
    Any,
    Eq,
    I31,
}

#[derive(Clone, Copy, PartialEq)]
enum Storage {
    I8,
    I16,
    I32,
    I64,
    F64,
    Ref(Target),
}

#[derive(Clone, Copy)]
struct Field {
    ty: Storage,
    mutable: bool,
}

struct StructType {
    parent: Option<usize>,
    fields: Vec<Field>,
}

/// Array elements are always mutable.
struct ArrayType {
    elem: Storage,
}

struct Types {
    structs: Vec<StructType>,
    arrays: Vec<ArrayType>,
}

fn target(rng: &mut SplitMix64, structs: usize, arrays: usize) -> Target {
    match rng.below(8) {
        0..=3 => Target::Struct(rng.below(structs as u64) as usize),
        4 | 5 => Target::Array(rng.below(arrays as u64) as usize),
        6 => [Target::Any, Target::Eq][rng.below(2) as usize],
        _ => Target::I31,
    }
}

fn storage(rng: &mut SplitMix64, structs: usize, arrays: usize) -> Storage {
    match rng.below(10) {
        0 => Storage::I8,
        1 => Storage::I16,
        2 | 3 => Storage::I32,
        4 => Storage::I64,
        5 => Storage::F64,
        _ => Storage::Ref(target(rng, structs, arrays)),
    }
}

fn types(rng: &mut SplitMix64) -> Types {
    let (ns, na) = (1 + rng.below(5) as usize, 1 + rng.below(3) as usize);
    let mut structs: Vec<StructType> = Vec::new();
    for i in 0..ns {
        let parent = (i > 0 && rng.chance(2)).then(|| rng.below(i as u64) as usize);
        let mut fields = parent.map_or_else(Vec::new, |p| structs[p].fields.clone());
        for _ in 0..rng.below(4) + u64::from(fields.is_empty()) {
            fields.push(Field { ty: storage(rng, ns, na), mutable: !rng.chance(4) });
        }
        structs.push(StructType { parent, fields });
    }
    let arrays = (0..na).map(|_| ArrayType { elem: storage(rng, ns, na) }).collect();
    Types { structs, arrays }
}

fn ref_text(t: Target) -> String {
    match t {
        Target::Struct(i) => format!("(ref null $s{i})"),
        Target::Array(i) => format!("(ref null $a{i})"),
        Target::Any => "anyref".into(),
        Target::Eq => "eqref".into(),
        Target::I31 => "i31ref".into(),
    }
}

fn storage_text(s: Storage) -> String {
    match s {
        Storage::I8 => "i8".into(),
        Storage::I16 => "i16".into(),
        Storage::I32 => "i32".into(),
        Storage::I64 => "i64".into(),
        Storage::F64 => "f64".into(),
        Storage::Ref(t) => ref_text(t),
    }
}

fn field_text(f: Field) -> String {
    let ty = storage_text(f.ty);
    if f.mutable { format!("(field (mut {ty}))") } else { format!("(field {ty})") }
}

/// The generator's state while writing `run`.
struct Gen<'a> {
    rng: &'a mut SplitMix64,
    types: &'a Types,
    slots: usize,
}

impl Gen<'_> {
    fn slot(&mut self) -> String {
        let s = self.rng.below(self.slots as u64);
        format!("(array.get $slots (global.get $roots) (i32.const {s}))")
    }

    fn int(&mut self) -> i64 {
        match self.rng.below(4) {
            0 => self.rng.below(16) as i64,
            1 => -(self.rng.below(1000) as i64),
            _ => self.rng.next_u64() as i64,
        }
    }

    /// An expression of storage type `s`; `depth` bounds nested allocations.
    fn value(&mut self, s: Storage, depth: u32) -> String {
        match s {
            Storage::I8 | Storage::I16 | Storage::I32 => format!("(i32.const {})", self.int() as i32),
            Storage::I64 => format!("(i64.const {})", self.int()),
            Storage::F64 => format!("(f64.const {}.5)", self.int() as i32),
            Storage::Ref(t) => self.reference(t, depth),
        }
    }

    fn reference(&mut self, t: Target, depth: u32) -> String {
        let fresh = depth > 0 && self.rng.chance(3);
        match t {
            Target::Struct(i) if fresh => self.new_struct(i, depth - 1),
            Target::Array(i) if fresh => self.new_array(i, depth - 1),
            Target::Struct(i) if !self.rng.chance(5) => format!("(call $as_s{i} {})", self.slot()),
            Target::Array(i) if !self.rng.chance(5) => format!("(call $as_a{i} {})", self.slot()),
            Target::Struct(i) => format!("(ref.null $s{i})"),
            Target::Array(i) => format!("(ref.null $a{i})"),
            Target::I31 => match self.rng.below(3) {
                0 => "(ref.null i31)".into(),
                _ => format!("(ref.i31 (i32.const {}))", self.int() as i32),
            },
            Target::Any | Target::Eq => match self.rng.below(4) {
                0 => format!("(ref.i31 (i32.const {}))", self.int() as i32),
                1 if depth > 0 => {
                    let i = self.rng.below(self.types.structs.len() as u64) as usize;
                    self.new_struct(i, depth - 1)
                }
                _ if t == Target::Eq => format!("(call $as_eq {})", self.slot()),
                _ => self.slot(),
            },
        }
    }

    fn new_struct(&mut self, i: usize, depth: u32) -> String {
        if self.rng.chance(4) {
            return format!("(struct.new_default $s{i})");
        }
        let fields: Vec<Storage> = self.types.structs[i].fields.iter().map(|f| f.ty).collect();
        let values: Vec<String> = fields.into_iter().map(|f| self.value(f, depth)).collect();
        format!("(struct.new $s{i} {})", values.join(" "))
    }

    fn new_array(&mut self, i: usize, depth: u32) -> String {
        let elem = self.types.arrays[i].elem;
        let len = self.rng.below(9);
        match self.rng.below(3) {
            0 => format!("(array.new_default $a{i} (i32.const {len}))"),
            1 => format!("(array.new $a{i} {} (i32.const {len}))", self.value(elem, depth)),
            _ => {
                let values: Vec<String> = (0..len.min(4)).map(|_| self.value(elem, depth)).collect();
                format!("(array.new_fixed $a{i} {} {})", values.len(), values.join(" "))
            }
        }
    }

    /// One heap operation of `run`, as statements.
    fn op(&mut self) -> String {
        let (ns, na) = (self.types.structs.len(), self.types.arrays.len());
        let store =
            |slot: u64, value: String| format!("(array.set $slots (global.get $roots) (i32.const {slot}) {value})");
        let s = self.rng.below(self.slots as u64);
        match self.rng.below(12) {
            0 | 1 => {
                let i = self.rng.below(ns as u64) as usize;
                let v = self.new_struct(i, 2);
                store(s, v)
            }
            2 => {
                let i = self.rng.below(na as u64) as usize;
                let v = self.new_array(i, 1);
                store(s, v)
            }
            3 | 4 => self.link_field(),
            5 => self.set_element(),
            6 => store(s, format!("(ref.i31 (i32.const {}))", self.int() as i32)),
            7 => store(s, if self.rng.chance(2) { "(ref.null any)".into() } else { self.slot() }),
            8 => self.hold_in_local(s),
            9 => self.chain(s),
            10 => self.copy_array(),
            _ => format!("(global.set $fuel (i32.const 200)) (call $visit {} (i32.const 3))", self.slot()),
        }
    }

    /// Set a mutable field of a slot's struct (if it is one) to a new value.
    fn link_field(&mut self) -> String {
        let i = self.rng.below(self.types.structs.len() as u64) as usize;
        let mutable: Vec<usize> =
            (0..self.types.structs[i].fields.len()).filter(|&f| self.types.structs[i].fields[f].mutable).collect();
        if mutable.is_empty() {
            return "(nop)".into();
        }
        let f = mutable[self.rng.below(mutable.len() as u64) as usize];
        let slot = self.slot();
        let value = self.value(self.types.structs[i].fields[f].ty, 1);
        format!(
            "(local.set $p{i} (call $as_s{i} {slot})) (if (i32.eqz (ref.is_null (local.get $p{i}))) (then (struct.set $s{i} {f} (local.get $p{i}) {value})))"
        )
    }

    fn set_element(&mut self) -> String {
        let i = self.rng.below(self.types.arrays.len() as u64) as usize;
        let (slot, index) = (self.slot(), self.rng.below(8));
        let value = self.value(self.types.arrays[i].elem, 1);
        format!(
            "(local.set $q{i} (call $as_a{i} {slot})) (if (i32.eqz (ref.is_null (local.get $q{i}))) (then (if (i32.lt_u (i32.const {index}) (array.len (local.get $q{i}))) (then (array.set $a{i} (local.get $q{i}) (i32.const {index}) {value})))))"
        )
    }

    /// Keep a slot's struct only in a typed local while other operations allocate, then store it back
    /// elsewhere: the local is the only root across those allocations.
    fn hold_in_local(&mut self, s: u64) -> String {
        let i = self.rng.below(self.types.structs.len() as u64) as usize;
        let slot = self.slot();
        let mut out = format!(
            "(local.set $p{i} (call $as_s{i} {slot})) (array.set $slots (global.get $roots) (i32.const {s}) (ref.null any))"
        );
        for _ in 0..1 + self.rng.below(3) {
            out.push(' ');
            out.push_str(&self.op_without_locals());
        }
        let back = self.rng.below(self.slots as u64);
        out.push_str(&format!(" (array.set $slots (global.get $roots) (i32.const {back}) (local.get $p{i}))"));
        out
    }

    /// An allocating operation that leaves the typed locals alone.
    fn op_without_locals(&mut self) -> String {
        let i = self.rng.below(self.types.structs.len() as u64) as usize;
        let s = self.rng.below(self.slots as u64);
        let v = self.new_struct(i, 2);
        format!("(array.set $slots (global.get $roots) (i32.const {s}) {v})")
    }

    /// Allocate `n` structs in a loop, each linked to the previous one through a field of its own type when
    /// it has one (a list), else garbage; the last one (the list's head) may be kept in slot `s`.
    fn chain(&mut self, s: u64) -> String {
        let i = self.rng.below(self.types.structs.len() as u64) as usize;
        let n = 10 + self.rng.below(290);
        let fields = &self.types.structs[i].fields;
        let link = fields.iter().position(|f| matches!(f.ty, Storage::Ref(Target::Struct(j)) if j == i));
        let tys: Vec<Storage> = fields.iter().map(|f| f.ty).collect();
        let values: Vec<String> = tys
            .into_iter()
            .enumerate()
            .map(|(f, ty)| if Some(f) == link { format!("(local.get $p{i})") } else { self.value(ty, 1) })
            .collect();
        let keep = if self.rng.chance(2) {
            format!(" (array.set $slots (global.get $roots) (i32.const {s}) (local.get $p{i}))")
        } else {
            String::new()
        };
        format!(
            "(local.set $p{i} (ref.null $s{i})) (local.set $n (i32.const 0)) (loop $chain (local.set $p{i} (struct.new $s{i} {})) (local.set $n (i32.add (local.get $n) (i32.const 1))) (br_if $chain (i32.lt_u (local.get $n) (i32.const {n})))){keep}",
            values.join(" ")
        )
    }

    fn copy_array(&mut self) -> String {
        let i = self.rng.below(self.types.arrays.len() as u64) as usize;
        let (dst, src) = (self.slot(), self.slot());
        format!(
            "(local.set $q{i} (call $as_a{i} {dst})) (local.set $r{i} (call $as_a{i} {src})) (if (i32.eqz (i32.or (ref.is_null (local.get $q{i})) (ref.is_null (local.get $r{i})))) (then (array.copy $a{i} $a{i} (local.get $q{i}) (i32.const 0) (local.get $r{i}) (i32.const 0) (select (array.len (local.get $q{i})) (array.len (local.get $r{i})) (i32.lt_u (array.len (local.get $q{i})) (array.len (local.get $r{i})))))))"
        )
    }
}

/// The hash of one value of storage type `s` read by `get` (a `struct.get`/`array.get` without its
/// operands' closing parenthesis handled by the caller).
fn mix_value(s: Storage, read: &str, read_signed: &str) -> String {
    match s {
        Storage::I8 | Storage::I16 => format!("(call $mix (i64.extend_i32_s {read_signed}))"),
        Storage::I32 => format!("(call $mix (i64.extend_i32_s {read}))"),
        Storage::I64 => format!("(call $mix {read})"),
        Storage::F64 => format!("(call $mix (i64.reinterpret_f64 {read}))"),
        Storage::Ref(_) => format!("(call $visit {read} (i32.sub (local.get $d) (i32.const 1)))"),
    }
}

fn visit_function(types: &Types) -> String {
    let mut out = String::from("  (func $visit (param $v anyref) (param $d i32) (local $k i32)\n");
    for i in 0..types.structs.len() {
        out.push_str(&format!("    (local $x{i} (ref null $s{i}))\n"));
    }
    for i in 0..types.arrays.len() {
        out.push_str(&format!("    (local $y{i} (ref null $a{i}))\n"));
    }
    out.push_str(
        "    (if (i32.or (i32.eqz (local.get $d)) (i32.eqz (global.get $fuel))) (then (return)))
    (global.set $fuel (i32.sub (global.get $fuel) (i32.const 1)))
    (if (ref.is_null (local.get $v)) (then (call $mix (i64.const 7)) (return)))
    (if (ref.test (ref i31) (local.get $v)) (then (call $mix (i64.extend_i32_s (i31.get_s (ref.cast (ref i31) (local.get $v))))) (return)))\n",
    );
    // Most derived first: a subtype always has a higher index than its parent.
    for (i, st) in types.structs.iter().enumerate().rev() {
        out.push_str(&format!(
            "    (if (ref.test (ref $s{i}) (local.get $v)) (then (local.set $x{i} (ref.cast (ref $s{i}) (local.get $v))) (call $mix (i64.const {}))",
            1000 + i
        ));
        for (f, field) in st.fields.iter().enumerate() {
            let read = format!("(struct.get $s{i} {f} (local.get $x{i}))");
            let read_signed = format!("(struct.get_s $s{i} {f} (local.get $x{i}))");
            out.push(' ');
            out.push_str(&mix_value(field.ty, &read, &read_signed));
        }
        out.push_str(" (return)))\n");
    }
    for (i, at) in types.arrays.iter().enumerate() {
        let read = format!("(array.get $a{i} (local.get $y{i}) (local.get $k))");
        let read_signed = format!("(array.get_s $a{i} (local.get $y{i}) (local.get $k))");
        out.push_str(&format!(
            "    (if (ref.test (ref $a{i}) (local.get $v)) (then (local.set $y{i} (ref.cast (ref $a{i}) (local.get $v))) (call $mix (i64.const {})) (call $mix (i64.extend_i32_u (array.len (local.get $y{i}))))
      (local.set $k (i32.const 0))
      (block $done (loop $each (br_if $done (i32.ge_u (local.get $k) (array.len (local.get $y{i})))) {} (local.set $k (i32.add (local.get $k) (i32.const 1))) (br $each)))
      (return)))\n",
            2000 + i,
            mix_value(at.elem, &read, &read_signed)
        ));
    }
    out.push_str("    (call $mix (i64.const 99)))\n");
    out
}

/// A module as described in the module comment, with `ops` operations in `run`.
pub fn module(rng: &mut SplitMix64) -> String {
    let types = types(rng);
    let slots = 3 + rng.below(8) as usize;
    let ops = 10 + rng.below(70) as usize;
    let mut out = String::from("(module\n  (rec\n");
    for (i, st) in types.structs.iter().enumerate() {
        let fields: Vec<String> = st.fields.iter().map(|f| field_text(*f)).collect();
        let parent = st.parent.map_or(String::new(), |p| format!(" $s{p}"));
        out.push_str(&format!("    (type $s{i} (sub{parent} (struct {})))\n", fields.join(" ")));
    }
    for (i, at) in types.arrays.iter().enumerate() {
        out.push_str(&format!("    (type $a{i} (array (mut {})))\n", storage_text(at.elem)));
    }
    out.push_str("  )\n  (type $slots (array (mut anyref)))\n");
    out.push_str("  (global $roots (mut (ref null $slots)) (ref.null $slots))\n");
    out.push_str("  (global $hash (mut i64) (i64.const 0))\n  (global $fuel (mut i32) (i32.const 0))\n");
    out.push_str(
        "  (func $mix (param i64) (global.set $hash (i64.add (i64.mul (global.get $hash) (i64.const 1099511628211)) (local.get 0))))\n",
    );
    for i in 0..types.structs.len() {
        out.push_str(&format!(
            "  (func $as_s{i} (param anyref) (result (ref null $s{i})) (block $ok (result (ref null $s{i})) (br_on_cast $ok anyref (ref $s{i}) (local.get 0)) (drop) (ref.null $s{i})))\n"
        ));
    }
    for i in 0..types.arrays.len() {
        out.push_str(&format!(
            "  (func $as_a{i} (param anyref) (result (ref null $a{i})) (block $ok (result (ref null $a{i})) (br_on_cast $ok anyref (ref $a{i}) (local.get 0)) (drop) (ref.null $a{i})))\n"
        ));
    }
    out.push_str(
        "  (func $as_eq (param anyref) (result eqref) (block $ok (result eqref) (br_on_cast $ok anyref eqref (local.get 0)) (drop) (ref.null eq)))\n",
    );
    out.push_str(&visit_function(&types));
    out.push_str(&format!(
        "  (func $walk (export \"walk\") (result i64) (local $s i32)
    (global.set $hash (i64.const 0)) (global.set $fuel (i32.const 5000))
    (block $done (loop $each (br_if $done (i32.ge_u (local.get $s) (i32.const {slots})))
      (call $visit (array.get $slots (global.get $roots) (local.get $s)) (i32.const 6))
      (local.set $s (i32.add (local.get $s) (i32.const 1))) (br $each)))
    (global.get $hash))\n"
    ));
    out.push_str("  (func (export \"run\") (result i64) (local $n i32)\n");
    for i in 0..types.structs.len() {
        out.push_str(&format!("    (local $p{i} (ref null $s{i}))\n"));
    }
    for i in 0..types.arrays.len() {
        out.push_str(&format!("    (local $q{i} (ref null $a{i})) (local $r{i} (ref null $a{i}))\n"));
    }
    out.push_str(&format!("    (global.set $roots (array.new_default $slots (i32.const {slots})))\n"));
    let mut g = Gen { rng, types: &types, slots };
    for _ in 0..ops {
        out.push_str("    ");
        out.push_str(&g.op());
        out.push('\n');
    }
    out.push_str("    (call $walk))\n)\n");
    out
}
