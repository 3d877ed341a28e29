//! A loaded module: decoded, validated and translated, ready to be instantiated any number of times.
//!
//! Loading is one pass over the binary with the store's shared validator (so type ids are
//! canonical across modules). Module-level sections are decoded into plain data here; function
//! bodies are translated after the whole module is validated, each with its own
//! `FuncValidator` feeding the translator operand types.

use crate::bytecode::CompiledFunc;
use crate::translate::{CompileError, ModuleEnv, Translator};
use crate::types::{RtHeapType, RtValType, TypeRegistry, canonical_heap_type, canonical_val_type};
use crate::{Error, Source};
use wasmparser::{
    DataKind, ElementItems, ElementKind, ExternalKind, Operator, Payload, TableInit, TypeRef, ValidPayload, Validator,
    WasmFeatures,
};

/// The features vmrun accepts: WebAssembly 3.0 and threads, without memory64, plus the legacy
/// exception-handling instructions (`try`/`catch`/`delegate`/`rethrow`) that compilers still emit. SIMD is
/// on for the validator only so that `v128` may appear as a field type in type definitions (Kotlin/Wasm
/// emits such types); `loader::validate_all` refuses every other use of `v128` before anything runs.
pub fn features() -> WasmFeatures {
    (WasmFeatures::WASM2
        | WasmFeatures::EXCEPTIONS
        | WasmFeatures::LEGACY_EXCEPTIONS
        | WasmFeatures::GC
        | WasmFeatures::GC_TYPES
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::FUNCTION_REFERENCES
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::CALL_INDIRECT_OVERLONG
        | WasmFeatures::BULK_MEMORY_OPT
        | WasmFeatures::THREADS
        | WasmFeatures::SIMD
        | WasmFeatures::SHARED_EVERYTHING_THREADS)
        - WasmFeatures::RELAXED_SIMD
}

/// A constant expression, evaluated at instantiation.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstOp {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    RefNull,
    RefFunc(u32),
    GlobalGet(u32),
    I32Add,
    I32Sub,
    I32Mul,
    I64Add,
    I64Sub,
    I64Mul,
    RefI31,
    StructNew(u32),
    StructNewDefault(u32),
    ArrayNew(u32),
    ArrayNewDefault(u32),
    ArrayNewFixed(u32, u32),
    ConvertRef,
}

pub type ConstExpr = Box<[ConstOp]>;

#[derive(Clone, Debug)]
pub struct TableDesc {
    pub nullable: bool,
    pub heap: RtHeapType,
    pub min: u64,
    pub max: Option<u64>,
    /// Declared `shared` (shared-everything threads): one table for every thread's instance.
    pub shared: bool,
}

#[derive(Clone, Debug)]
pub struct MemoryDesc {
    pub min: u64,
    pub max: Option<u64>,
    /// Declared `shared` (threads proposal): other threads may use it at the same time.
    pub shared: bool,
}

#[derive(Clone, Debug)]
pub struct GlobalDesc {
    pub ty: RtValType,
    pub mutable: bool,
    /// Declared `shared` (shared-everything threads): one cell for every thread's instance.
    pub shared: bool,
}

#[derive(Clone, Debug)]
pub enum ImportDesc {
    Func(u32),
    Table(TableDesc),
    Memory(MemoryDesc),
    Global(GlobalDesc),
    /// A tag of this canonical function type.
    Tag(u32),
}

#[derive(Clone, Debug)]
pub struct Import {
    pub module: String,
    pub name: String,
    pub desc: ImportDesc,
}

#[derive(Clone, Debug)]
pub enum SegmentMode {
    Passive,
    Active { index: u32, offset: ConstExpr },
    Declared,
}

#[derive(Clone, Debug)]
pub struct ElemSegment {
    pub mode: SegmentMode,
    pub items: Vec<ConstExpr>,
}

#[derive(Clone, Debug)]
pub struct DataSegment {
    pub mode: SegmentMode,
    pub bytes: std::sync::Arc<[u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Func,
    Table,
    Memory,
    Global,
    Tag,
}

/// A tag of the module's tag index space.
#[derive(Clone, Debug)]
pub struct TagDesc {
    /// Canonical id of its function type (parameters = payload, no results).
    pub ty: u32,
    /// The heap type of the exceptions this module throws with it (`TypeKind::Exn`, named after the tag).
    pub exn_type: u32,
    /// Where each payload value sits in such an object (the tag identity before them excluded). Any module's
    /// layout for a tag of the same type is the same, so a catch reads what another module's throw wrote.
    pub payload: Box<[crate::types::FieldLayout]>,
}

pub struct ModuleData {
    pub source: Source,
    /// The module's index in its runtime (set when the runtime adds it; race reports name sites by it).
    pub index: u32,
    pub type_ids: Vec<u32>,
    /// Canonical type of every function in the function index space.
    pub func_types: Vec<u32>,
    pub imports: Vec<Import>,
    pub num_imported_funcs: u32,
    pub tables: Vec<(TableDesc, Option<ConstExpr>)>,
    pub memories: Vec<MemoryDesc>,
    pub globals: Vec<(GlobalDesc, ConstExpr)>,
    /// The tag index space, imports first.
    pub tags: Vec<TagDesc>,
    pub num_imported_tags: u32,
    pub exports: Vec<(String, ExportKind, u32)>,
    pub start: Option<u32>,
    pub elems: Vec<ElemSegment>,
    pub datas: Vec<DataSegment>,
    /// Translated bodies of the defined functions.
    pub code: Vec<CompiledFunc>,
    /// Where each defined function's body lies in `source.wasm` (the compiled tier reads it again).
    pub body_ranges: Vec<std::ops::Range<usize>>,
    /// Compiled code per defined function: unset until compilation is tried, then the code or `None`
    /// (the compiler declined). Shared by every instance of the module (`tier.rs`).
    pub compiled: Box<[std::sync::OnceLock<Option<crate::tier::CompiledFunc>>]>,
    /// On-stack-replacement variants by (defined function, loop header pc): the code, or `None` (declined).
    pub osr: std::sync::Mutex<std::collections::HashMap<(u32, u32), Option<crate::tier::CompiledFunc>>>,
}

impl ModuleData {
    /// The frame of function `func_index` (index space) at wasm byte `offset`, as backtraces print it.
    pub(crate) fn wasm_frame(&self, func_index: u32, offset: u32) -> crate::WasmFrame {
        crate::WasmFrame {
            module: self.source.module_name().map(str::to_string),
            func_index,
            func_name: self.source.func_name(func_index).map(str::to_string),
            offset,
            source: self.source.location(offset as usize),
        }
    }

    /// Memories the module imports (the first indices of its memory index space).
    pub fn num_imported_memories(&self) -> usize {
        self.imports.iter().filter(|i| matches!(i.desc, ImportDesc::Memory(_))).count()
    }

    pub fn num_imported_tables(&self) -> usize {
        self.imports.iter().filter(|i| matches!(i.desc, ImportDesc::Table(_))).count()
    }
}

fn err(source: &Source, e: CompileError) -> Error {
    Error::Invalid(format!("{}: {}", source.describe(e.offset as usize), e.message))
}

fn const_expr(expr: &wasmparser::ConstExpr<'_>, type_ids: &[u32]) -> Result<ConstExpr, CompileError> {
    let mut ops = Vec::new();
    let mut reader = expr.get_operators_reader();
    while !reader.eof() {
        let op = reader.read()?;
        ops.push(match op {
            Operator::I32Const { value } => ConstOp::I32(value),
            Operator::I64Const { value } => ConstOp::I64(value),
            Operator::F32Const { value } => ConstOp::F32(value.bits()),
            Operator::F64Const { value } => ConstOp::F64(value.bits()),
            Operator::RefNull { .. } => ConstOp::RefNull,
            Operator::RefFunc { function_index } => ConstOp::RefFunc(function_index),
            Operator::GlobalGet { global_index } => ConstOp::GlobalGet(global_index),
            Operator::I32Add => ConstOp::I32Add,
            Operator::I32Sub => ConstOp::I32Sub,
            Operator::I32Mul => ConstOp::I32Mul,
            Operator::I64Add => ConstOp::I64Add,
            Operator::I64Sub => ConstOp::I64Sub,
            Operator::I64Mul => ConstOp::I64Mul,
            Operator::RefI31 | Operator::RefI31Shared => ConstOp::RefI31,
            Operator::StructNew { struct_type_index } => ConstOp::StructNew(type_ids[struct_type_index as usize]),
            Operator::StructNewDefault { struct_type_index } => {
                ConstOp::StructNewDefault(type_ids[struct_type_index as usize])
            }
            Operator::ArrayNew { array_type_index } => ConstOp::ArrayNew(type_ids[array_type_index as usize]),
            Operator::ArrayNewDefault { array_type_index } => {
                ConstOp::ArrayNewDefault(type_ids[array_type_index as usize])
            }
            Operator::ArrayNewFixed { array_type_index, array_size } => {
                ConstOp::ArrayNewFixed(type_ids[array_type_index as usize], array_size)
            }
            Operator::AnyConvertExtern | Operator::ExternConvertAny => ConstOp::ConvertRef,
            Operator::End => break,
            other => {
                return Err(CompileError {
                    message: format!("unsupported constant operator {other:?}"),
                    offset: reader.original_position(),
                });
            }
        });
    }
    Ok(ops.into())
}

/// Tag `index` of type `ty`: its exception layout is registered (with the heap, through `on_new_type`) under
/// the tag's name from the name section (`tag $e`), else its index (`tag 3`).
fn tag_desc(
    registry: &TypeRegistry,
    source: &Source,
    index: u32,
    ty: u32,
    on_new_type: &mut impl FnMut(u32, &crate::types::TypeInfo),
) -> TagDesc {
    let crate::types::TypeKind::Func { params, .. } = &registry.get(ty).kind else {
        unreachable!("tags have function types")
    };
    let name = match source.tag_name(index) {
        Some(name) => format!("tag ${name}"),
        None => format!("tag {index}"),
    };
    let exn_type = registry.register_exn_type(params, name, on_new_type);
    let crate::types::TypeKind::Exn { fields, .. } = &registry.get(exn_type).kind else { unreachable!("just made") };
    TagDesc { ty, exn_type, payload: fields[1..].into() }
}

/// Decode, validate and translate `source` with the store's shared validator.
/// With `race`, accesses to shared memories are translated with the race detector's hooks (`race.rs`).
pub fn load(
    validator: &mut Validator,
    registry: &TypeRegistry,
    source: Source,
    race: bool,
    mut on_new_type: impl FnMut(u32, &crate::types::TypeInfo),
) -> Result<ModuleData, Error> {
    // Validate with a throwaway validator first: a failed validation leaves a validator unusable,
    // and the shared one must survive bad modules to keep type ids canonical.
    let features = *validator.features();
    if let Err(e) = crate::loader::validate_all(&mut Validator::new_with_features(features), &source.wasm) {
        return Err(err(&source, e));
    }
    let result = load_validated(validator, registry, &source, race, &mut on_new_type);
    match result {
        Ok(parts) => {
            validator.reset();
            Ok(ModuleData { source, ..parts })
        }
        Err(e) => {
            // Should not happen after the first pass; start over with a fresh validator.
            *validator = Validator::new_with_features(features);
            Err(err(&source, e))
        }
    }
}

fn load_validated(
    validator: &mut Validator,
    registry: &TypeRegistry,
    source: &Source,
    race: bool,
    on_new_type: &mut impl FnMut(u32, &crate::types::TypeInfo),
) -> Result<ModuleData, CompileError> {
    let wasm: &[u8] = &source.wasm;
    let mut func_type_indices: Vec<u32> = Vec::new();
    let mut raw_imports = Vec::new();
    let mut raw_tables = Vec::new();
    let mut raw_memories = Vec::new();
    let mut raw_globals = Vec::new();
    let mut raw_exports = Vec::new();
    let mut raw_elems = Vec::new();
    let mut raw_datas = Vec::new();
    let mut tag_type_indices = Vec::new();
    let mut start = None;
    let mut bodies = Vec::new();
    let mut types = None;
    for payload in crate::loader::parser(*validator.features()).parse_all(wasm) {
        let payload = payload?;
        match validator.payload(&payload)? {
            ValidPayload::Func(f, body) => bodies.push((f, body)),
            ValidPayload::End(t) => types = Some(t),
            _ => {}
        }
        match payload {
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    let imp = imp?;
                    if let TypeRef::Func(t) | TypeRef::FuncExact(t) = imp.ty {
                        func_type_indices.push(t);
                    }
                    if let TypeRef::Tag(t) = imp.ty {
                        tag_type_indices.push(t.func_type_idx);
                    }
                    raw_imports.push((imp.module.to_string(), imp.name.to_string(), imp.ty));
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    func_type_indices.push(t?);
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    let t = t?;
                    raw_tables.push((t.ty, t.init));
                }
            }
            Payload::MemorySection(r) => {
                for m in r {
                    raw_memories.push(m?);
                }
            }
            Payload::GlobalSection(r) => {
                for g in r {
                    let g = g?;
                    raw_globals.push((g.ty, g.init_expr));
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e?;
                    raw_exports.push((e.name.to_string(), e.kind, e.index));
                }
            }
            Payload::TagSection(r) => {
                for t in r {
                    tag_type_indices.push(t?.func_type_idx);
                }
            }
            Payload::StartSection { func, .. } => start = Some(func),
            Payload::ElementSection(r) => {
                for e in r {
                    raw_elems.push(e?);
                }
            }
            Payload::DataSection(r) => {
                for d in r {
                    raw_datas.push(d?);
                }
            }
            _ => {}
        }
    }
    let types = types.expect("a validated module ends");
    let type_ids = registry.register_module(&types, |id, info| on_new_type(id, info));
    let func_types: Vec<u32> = func_type_indices.iter().map(|&t| type_ids[t as usize]).collect();
    let val = |vt| canonical_val_type(&types, vt, None);
    let val_mod = |vt: wasmparser::ValType| match vt {
        wasmparser::ValType::Ref(r) => RtValType::Ref {
            nullable: r.is_nullable(),
            heap: canonical_heap_type(&types, r.heap_type(), None, &type_ids),
        },
        other => val(other),
    };
    let table_desc = |t: &wasmparser::TableType| TableDesc {
        nullable: t.element_type.is_nullable(),
        heap: canonical_heap_type(&types, t.element_type.heap_type(), None, &type_ids),
        min: t.initial,
        max: t.maximum,
        shared: t.shared,
    };

    let mut imports = Vec::new();
    let mut num_imported_funcs = 0;
    // The memory index space (imports first): which memories' accesses the race detector sees.
    let imported_shared = raw_imports.iter().filter_map(|(_, _, ty)| match ty {
        TypeRef::Memory(m) => Some(m.shared),
        _ => None,
    });
    let race_memories: Vec<bool> =
        imported_shared.chain(raw_memories.iter().map(|m| m.shared)).map(|shared| race && shared).collect();
    for (module, name, ty) in raw_imports {
        let desc = match ty {
            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                num_imported_funcs += 1;
                ImportDesc::Func(type_ids[t as usize])
            }
            TypeRef::Table(t) => ImportDesc::Table(table_desc(&t)),
            TypeRef::Memory(m) => ImportDesc::Memory(MemoryDesc { min: m.initial, max: m.maximum, shared: m.shared }),
            TypeRef::Global(g) => {
                ImportDesc::Global(GlobalDesc { ty: val_mod(g.content_type), mutable: g.mutable, shared: g.shared })
            }
            TypeRef::Tag(t) => ImportDesc::Tag(type_ids[t.func_type_idx as usize]),
        };
        imports.push(Import { module, name, desc });
    }
    let num_imported_tags = imports.iter().filter(|i| matches!(i.desc, ImportDesc::Tag(_))).count() as u32;
    let tags: Vec<TagDesc> = tag_type_indices
        .iter()
        .enumerate()
        .map(|(index, &t)| tag_desc(registry, source, index as u32, type_ids[t as usize], on_new_type))
        .collect();
    let mut tables = Vec::new();
    for (ty, init) in raw_tables {
        let init = match init {
            TableInit::RefNull => None,
            TableInit::Expr(e) => Some(const_expr(&e, &type_ids)?),
        };
        tables.push((table_desc(&ty), init));
    }
    let memories =
        raw_memories.iter().map(|m| MemoryDesc { min: m.initial, max: m.maximum, shared: m.shared }).collect();
    let mut globals = Vec::new();
    for (ty, init) in raw_globals {
        let desc = GlobalDesc { ty: val_mod(ty.content_type), mutable: ty.mutable, shared: ty.shared };
        globals.push((desc, const_expr(&init, &type_ids)?));
    }
    let exports = raw_exports
        .into_iter()
        .map(|(name, kind, index)| {
            let kind = match kind {
                ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
                ExternalKind::Table => ExportKind::Table,
                ExternalKind::Memory => ExportKind::Memory,
                ExternalKind::Global => ExportKind::Global,
                ExternalKind::Tag => ExportKind::Tag,
            };
            (name, kind, index)
        })
        .collect();
    let mut elems = Vec::new();
    for e in raw_elems {
        let mode = match e.kind {
            ElementKind::Passive => SegmentMode::Passive,
            ElementKind::Declared => SegmentMode::Declared,
            ElementKind::Active { table_index, offset_expr } => {
                SegmentMode::Active { index: table_index.unwrap_or(0), offset: const_expr(&offset_expr, &type_ids)? }
            }
        };
        let mut items = Vec::new();
        match e.items {
            ElementItems::Functions(r) => {
                for f in r {
                    items.push(vec![ConstOp::RefFunc(f?)].into_boxed_slice());
                }
            }
            ElementItems::Expressions(_, r) => {
                for x in r {
                    items.push(const_expr(&x?, &type_ids)?);
                }
            }
        }
        elems.push(ElemSegment { mode, items });
    }
    let mut datas = Vec::new();
    for d in raw_datas {
        let mode = match d.kind {
            DataKind::Passive => SegmentMode::Passive,
            DataKind::Active { memory_index, offset_expr } => {
                SegmentMode::Active { index: memory_index, offset: const_expr(&offset_expr, &type_ids)? }
            }
        };
        datas.push(DataSegment { mode, bytes: d.data.into() });
    }

    // The global index space (imports first): which globals are one cell shared by every thread.
    let shared_globals: Vec<bool> = imports
        .iter()
        .filter_map(|i| match &i.desc {
            ImportDesc::Global(g) => Some(g.shared),
            _ => None,
        })
        .chain(globals.iter().map(|(g, _)| g.shared))
        .collect();
    // `--race`: the shared globals whose plain accesses are reads and writes for the detector (a global
    // that is not mutable is written only before any thread can see it).
    let race_globals: Vec<bool> = imports
        .iter()
        .filter_map(|i| match &i.desc {
            ImportDesc::Global(g) => Some(g),
            _ => None,
        })
        .chain(globals.iter().map(|(g, _)| g))
        .map(|g| race && g.shared && g.mutable)
        .collect();
    let env = ModuleEnv {
        registry,
        types: &types,
        type_ids: &type_ids,
        func_types: &func_types,
        num_imported_funcs,
        tags: &tags,
        race_memories: &race_memories,
        shared_globals: &shared_globals,
        race_globals: &race_globals,
        race,
    };
    let mut code = Vec::with_capacity(bodies.len());
    let body_ranges = bodies
        .iter()
        .map(|(_, body)| {
            let r = body.range();
            r.start as usize..r.end as usize
        })
        .collect();
    let mut allocs = wasmparser::FuncValidatorAllocations::default();
    for (i, (func, body)) in bodies.into_iter().enumerate() {
        let fv = func.into_validator(allocs);
        let (compiled, back) = Translator::translate(&env, num_imported_funcs + i as u32, fv, &body)?;
        allocs = back;
        code.push(compiled);
    }
    Ok(ModuleData {
        index: 0,
        source: Source::from_binary("", Vec::new()),
        type_ids,
        func_types,
        imports,
        num_imported_funcs,
        tables,
        memories,
        globals,
        tags,
        num_imported_tags,
        exports,
        start,
        elems,
        datas,
        compiled: code.iter().map(|_| Default::default()).collect(),
        osr: Default::default(),
        code,
        body_ranges,
    })
}
