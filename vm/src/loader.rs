//! Loading program bytes: `.wat` text or `.wasm` binary (told apart by content, not by file
//! extension), with what is needed to describe offsets in the binary to a human.
//!
//! ## Text and its line table
//! Text is parsed with the `wast` crate and encoded with a DWARF line table (the `dwarf` feature
//! of `wat`/`wast`). This is exactly what `wat::Parser::new().generate_dwarf(GenerateDwarf::Lines)`
//! does internally; we call `wast` directly because `wat::Error` only offers a multi-line
//! `Display` with a caret, while `wast::Error` gives the span and the bare message, which is
//! what a one-line `file:line:col: message` needs.
//!
//! The line program is decoded once with `gimli` into a [`LineTable`]: rows sorted by
//! *module* offset (what wasmparser's errors and the interpreter report). The encoder (`wast`
//! 263, `core/binary/dwarf.rs`) writes each function's address as its body's offset from the first
//! byte after the code section's function-count LEB (`CodeSection::byte_len` excludes the count),
//! so the conversion adds the module offset of that byte. The unit tests check this against
//! every instruction of a small module.
//!
//! ## Looking up an offset
//! An offset inside a function body maps to the last row at or before it *in the same body*
//! (an instruction's immediates belong to it; the implicit `end` of a function maps to the last
//! instruction, which is where a "type mismatch at end of function" was caused). An offset in a
//! body's local declarations maps to the body's first row. Offsets outside the code section
//! (a bad export, a bad data segment) have no text position, and are described as
//! `file: offset 0x..`.
//!
//! ## Names
//! The name section gives the module name and function names for backtraces ([`NameMap`]).

use crate::translate::CompileError;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// A position in the text source (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLoc {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One row of the line table: an instruction's module offset and its text position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LineRow {
    offset: u64,
    line: u32,
    column: u32,
}

/// Code offset → text position. Rows are sorted by module offset; `bodies` are the byte
/// ranges of the function bodies (local declarations included), sorted and disjoint.
#[derive(Clone, Debug, Default)]
struct LineTable {
    rows: Vec<LineRow>,
    bodies: Vec<Range<u64>>,
}

impl LineTable {
    /// The row that describes `offset`; see the module comment for the rules.
    fn lookup(&self, offset: u64) -> Option<LineRow> {
        let after = self.rows.partition_point(|r| r.offset <= offset);
        let body_index = self.bodies.partition_point(|b| b.end <= offset);
        let Some(body) = self.bodies.get(body_index).filter(|b| b.contains(&offset)) else {
            // Between bodies (a body's size prefix): the nearest preceding row.
            return after.checked_sub(1).map(|i| self.rows[i]);
        };
        match after.checked_sub(1).map(|i| self.rows[i]) {
            Some(row) if row.offset >= body.start => Some(row),
            // In the local declarations: the body's first instruction.
            _ => self.rows.get(after).copied().filter(|r| body.contains(&r.offset)),
        }
    }
}

/// Names from the name section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameMap {
    module: Option<String>,
    funcs: HashMap<u32, String>,
    types: HashMap<u32, String>,
    /// Field names by (type index, field index).
    fields: HashMap<(u32, u32), String>,
    tags: HashMap<u32, String>,
    globals: HashMap<u32, String>,
    tables: HashMap<u32, String>,
}

impl NameMap {
    /// The module's name (`(module $name ...)` in text).
    pub fn module_name(&self) -> Option<&str> {
        self.module.as_deref()
    }

    /// A function's name (`$name` in text), by index in the function index space (imports first).
    pub fn func_name(&self, index: u32) -> Option<&str> {
        self.funcs.get(&index).map(String::as_str)
    }

    /// A type's name (`(type $name ...)` in text), by index in the module's type section.
    pub fn type_name(&self, index: u32) -> Option<&str> {
        self.types.get(&index).map(String::as_str)
    }

    /// A struct field's name (`(field $name ...)` in text), by type index and field index.
    pub fn field_name(&self, type_index: u32, field: u32) -> Option<&str> {
        self.fields.get(&(type_index, field)).map(String::as_str)
    }

    /// A tag's name (`(tag $name ...)` in text), by index in the tag index space (imports first).
    pub fn tag_name(&self, index: u32) -> Option<&str> {
        self.tags.get(&index).map(String::as_str)
    }

    /// A table's name (`(table $name ...)` in text), by index in the table index space (imports first).
    pub fn table_name(&self, index: u32) -> Option<&str> {
        self.tables.get(&index).map(String::as_str)
    }

    /// A global's name (`(global $name ...)` in text), by index in the global index space (imports first).
    pub fn global_name(&self, index: u32) -> Option<&str> {
        self.globals.get(&index).map(String::as_str)
    }
}

/// Loaded module bytes plus what is needed to describe offsets in them.
pub struct Source {
    /// Name used in messages (the path as the user typed it).
    pub name: String,
    /// The binary module.
    pub wasm: Vec<u8>,
    /// Present for text input.
    lines: Option<LineTable>,
    /// Module offsets of the code section's contents (from the function count on).
    code_range: Option<Range<u64>>,
    names: NameMap,
}

impl Source {
    /// Read a file; `\0asm` magic means binary, anything else is parsed as text.
    pub fn from_file(path: &Path) -> Result<Source, crate::Error> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| crate::Error::Load(format!("{name}: {e}")))?;
        Source::from_bytes(&name, bytes)
    }

    /// Bytes of either kind, detected by content.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Source, crate::Error> {
        if bytes.starts_with(b"\0asm") {
            return Ok(Source::from_binary(name, bytes));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            crate::Error::Load(format!(
                "{name}: neither a wasm binary (no `\\0asm` header) nor UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Source::from_text(name, &text)
    }

    /// Parse WebAssembly text (a `(module ...)` or bare module fields), keeping a line table.
    /// A syntax or name-resolution error is one line: `name:line:col: message`.
    pub fn from_text(name: &str, text: &str) -> Result<Source, crate::Error> {
        let text = &*unfold_legacy_try(text);
        let describe = |e: wast::Error| {
            let (line, col) = e.span().linecol_in(text);
            crate::Error::Load(format!("{name}:{}:{}: {}", line + 1, col + 1, e.message()))
        };
        let mut buf = wast::parser::ParseBuffer::new(text).map_err(describe)?;
        buf.track_instr_spans(true);
        let mut wat = wast::parser::parse::<wast::Wat>(&buf).map_err(describe)?;
        let mut opts = wast::core::EncodeOptions::default();
        opts.dwarf(Path::new(name), text, wast::core::GenerateDwarf::Lines);
        let wasm = opts.encode_wat(&mut wat).map_err(describe)?;
        let mut source = Source::from_binary(name, wasm);
        source.lines = source.read_line_table();
        Ok(source)
    }

    /// A binary module, with names from its name section but no line table (spec scripts,
    /// tests, `.wasm` files).
    pub fn from_binary(name: &str, wasm: Vec<u8>) -> Source {
        let mut source =
            Source { name: name.to_string(), wasm, lines: None, code_range: None, names: NameMap::default() };
        source.read_sections();
        source
    }

    /// Find the code section and read the name section. Malformed input is ignored here: the
    /// validator reports it.
    fn read_sections(&mut self) {
        for payload in parser(wasmparser::WasmFeatures::all()).parse_all(&self.wasm) {
            let Ok(payload) = payload else { return };
            match payload {
                wasmparser::Payload::CodeSectionStart { unchecked_range, .. } => {
                    self.code_range = Some(unchecked_range);
                }
                wasmparser::Payload::CustomSection(section) => {
                    if let wasmparser::KnownCustom::Name(reader) = section.as_known() {
                        self.names = read_names(reader);
                    }
                }
                _ => {}
            }
        }
    }

    /// Decode the DWARF line program from the `.debug_*` custom sections.
    fn read_line_table(&self) -> Option<LineTable> {
        let code = self.code_range.clone()?;
        // DWARF addresses count from the byte after the function-count LEB.
        let contents = self.wasm.get(usize::try_from(code.start).ok()?..usize::try_from(code.end).ok()?)?;
        let mut reader = wasmparser::BinaryReader::new(contents, code.start);
        reader.read_var_u32().ok()?;
        let address_base = reader.original_position();

        let mut sections: HashMap<&str, &[u8]> = HashMap::new();
        let mut bodies = Vec::new();
        for payload in parser(wasmparser::WasmFeatures::all()).parse_all(&self.wasm) {
            match payload {
                Ok(wasmparser::Payload::CustomSection(c)) if c.name().starts_with(".debug_") => {
                    sections.insert(c.name(), c.data());
                }
                Ok(wasmparser::Payload::CodeSectionEntry(body)) => bodies.push(body.range()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        let load = |id: gimli::SectionId| -> Result<gimli::EndianSlice<'_, gimli::LittleEndian>, gimli::Error> {
            Ok(gimli::EndianSlice::new(sections.get(id.name()).copied().unwrap_or(&[]), gimli::LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(load).ok()?;
        let mut rows = Vec::new();
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Ok(unit) = dwarf.unit(header) else { continue };
            let Some(program) = unit.line_program.clone() else { continue };
            let mut program_rows = program.rows();
            while let Ok(Some((_, row))) = program_rows.next_row() {
                // An end-of-sequence row marks the first byte after a function, not an instruction.
                if row.end_sequence() {
                    continue;
                }
                let Some(line) = row.line() else { continue };
                let column = match row.column() {
                    gimli::ColumnType::LeftEdge => 1,
                    gimli::ColumnType::Column(c) => u32::try_from(c.get()).unwrap_or(u32::MAX),
                };
                rows.push(LineRow {
                    offset: address_base + row.address(),
                    line: u32::try_from(line.get()).unwrap_or(u32::MAX),
                    column,
                });
            }
        }
        rows.sort_by_key(|r| r.offset);
        Some(LineTable { rows, bodies })
    }

    /// Whether offsets can be mapped to text positions (the module came from text).
    pub fn has_line_table(&self) -> bool {
        self.lines.as_ref().is_some_and(|t| !t.rows.is_empty())
    }

    /// Source location of a byte offset in `wasm` (as wasmparser and the interpreter report
    /// them), if it lies in the code section of a module that came from text.
    pub fn location(&self, offset: usize) -> Option<SourceLoc> {
        let lines = self.lines.as_ref()?;
        let offset = u64::try_from(offset).ok()?;
        if !self.code_range.as_ref()?.contains(&offset) {
            return None;
        }
        let row = lines.lookup(offset)?;
        Some(SourceLoc { file: self.name.clone(), line: row.line, column: row.column })
    }

    /// "`file:line:col`" when the offset has a text position, else "`file: offset 0x..`".
    pub fn describe(&self, offset: usize) -> String {
        match self.location(offset) {
            Some(loc) => loc.to_string(),
            None => format!("{}: offset {offset:#x}", self.name),
        }
    }

    fn describe_u64(&self, offset: u64) -> String {
        match usize::try_from(offset) {
            Ok(offset) => self.describe(offset),
            Err(_) => format!("{}: offset {offset:#x}", self.name),
        }
    }

    /// A decoding or validation error as the user should see it:
    /// `Error::Invalid("file:line:col: message")` (or `file: offset 0x..: message`).
    pub fn validation_error(&self, err: &wasmparser::BinaryReaderError) -> crate::Error {
        crate::Error::Invalid(format!("{}: {}", self.describe_u64(err.offset()), err.message()))
    }

    /// Names from the name section.
    pub fn names(&self) -> &NameMap {
        &self.names
    }

    /// The module's name from the name section.
    pub fn module_name(&self) -> Option<&str> {
        self.names.module_name()
    }

    /// A function's name from the name section (`$name` in text), by function index.
    pub fn func_name(&self, index: u32) -> Option<&str> {
        self.names.func_name(index)
    }

    /// A type's name from the name section (`$name` in text), by type index.
    pub fn type_name(&self, index: u32) -> Option<&str> {
        self.names.type_name(index)
    }

    /// A tag's name from the name section (`$name` in text), by tag index.
    pub fn tag_name(&self, index: u32) -> Option<&str> {
        self.names.tag_name(index)
    }
}

/// The module and function names of a name section. A malformed subsection ends reading
/// (names are advisory; the validator has its own opinion of the section).
fn read_names(reader: wasmparser::NameSectionReader<'_>) -> NameMap {
    let mut names = NameMap::default();
    for subsection in reader {
        match subsection {
            Ok(wasmparser::Name::Module { name, .. }) => names.module = Some(name.to_string()),
            Ok(wasmparser::Name::Function(map)) => {
                for naming in map.into_iter().map_while(Result::ok) {
                    names.funcs.insert(naming.index, naming.name.to_string());
                }
            }
            Ok(wasmparser::Name::Type(map)) => {
                for naming in map.into_iter().map_while(Result::ok) {
                    names.types.insert(naming.index, naming.name.to_string());
                }
            }
            Ok(wasmparser::Name::Field(map)) => {
                for indirect in map.into_iter().map_while(Result::ok) {
                    for naming in indirect.names.map_while(Result::ok) {
                        names.fields.insert((indirect.index, naming.index), naming.name.to_string());
                    }
                }
            }
            Ok(wasmparser::Name::Tag(map)) => {
                for naming in map.into_iter().map_while(Result::ok) {
                    names.tags.insert(naming.index, naming.name.to_string());
                }
            }
            Ok(wasmparser::Name::Global(map)) => {
                for naming in map.into_iter().map_while(Result::ok) {
                    names.globals.insert(naming.index, naming.name.to_string());
                }
            }
            Ok(wasmparser::Name::Table(map)) => {
                for naming in map.into_iter().map_while(Result::ok) {
                    names.tables.insert(naming.index, naming.name.to_string());
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    names
}

/// The legacy exception-handling proposal's folded `try`, which the `wast` crate no longer parses, rewritten
/// to the flat form it does parse: `(try BT (do A*) (catch $t B*)* (catch_all C*)?)` becomes
/// `try BT A* catch $t B* catch_all C* end`, and `(try BT (do A*) (delegate L))` becomes `try BT A* delegate L`.
/// The spec's `legacy/` scripts use the folded form throughout. Strings and comments are copied untouched (so
/// a quoted module stays as written: the parser rejects a folded `try` there, as `assert_malformed` wants);
/// line breaks are kept, so positions in messages keep their lines. Text without `(try` is returned as is.
pub fn unfold_legacy_try(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("(try") {
        return text.into();
    }
    /// What an open parenthesis was, to know what its `)` becomes.
    #[derive(PartialEq)]
    enum Open {
        Other,
        /// A folded `try`; `delegated` once its `(delegate L)` was seen (then it ends without `end`).
        Try {
            delegated: bool,
        },
        /// `(do`, `(catch`, `(catch_all` directly in a `try`: the parentheses go.
        Clause,
        /// `(delegate` directly in a `try`.
        Delegate,
    }
    let bytes = text.as_bytes();
    let keyword_at = |i: usize, word: &str| {
        text[i..].starts_with(word)
            && bytes.get(i + word.len()).is_none_or(|c| c.is_ascii_whitespace() || *c == b'(' || *c == b')')
    };
    let mut out = String::with_capacity(text.len() + 64);
    let mut stack: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with(";;") {
            let end = rest.find('\n').map_or(text.len(), |n| i + n);
            out.push_str(&text[i..end]);
            i = end;
        } else if rest.starts_with("(;") {
            let end = block_comment_end(text, i);
            out.push_str(&text[i..end]);
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            out.push_str(&text[i..end]);
            i = end;
        } else if bytes[i] == b'(' {
            let j = i + 1 + rest[1..].len() - rest[1..].trim_start().len();
            let in_try = matches!(stack.last(), Some(Open::Try { .. }));
            let (open, skip) = if keyword_at(j, "try") {
                (Open::Try { delegated: false }, 1)
            } else if in_try && keyword_at(j, "do") {
                (Open::Clause, j - i + 2)
            } else if in_try && (keyword_at(j, "catch") || keyword_at(j, "catch_all")) {
                (Open::Clause, 1)
            } else if in_try && keyword_at(j, "delegate") {
                if let Some(Open::Try { delegated }) = stack.last_mut() {
                    *delegated = true;
                }
                (Open::Delegate, 1)
            } else {
                (Open::Other, 0)
            };
            if open == Open::Other {
                out.push('(');
            } else {
                out.push(' ');
            }
            stack.push(open);
            i += skip.max(1);
        } else if bytes[i] == b')' {
            match stack.pop() {
                Some(Open::Try { delegated: false }) => out.push_str(" end"),
                Some(Open::Other) | None => out.push(')'),
                Some(_) => out.push(' '),
            }
            i += 1;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out.into()
}

/// The end of the (nestable) block comment starting at `start`.
fn block_comment_end(text: &str, start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < text.len() {
        if text[i..].starts_with("(;") {
            depth += 1;
            i += 2;
        } else if text[i..].starts_with(";)") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    text.len()
}

/// A `wasmparser::Parser` for a whole module, with features `features`.
///
/// `Parser::new` leaves the payload bytes of its `State` enum uninitialised (the `Header` state has
/// none), and the optimised `Parser::parse` loads `FunctionBody::remaining` and branches on it before it
/// checks which state it is in. That is harmless on the machine (the outcome is ignored unless the state
/// is `FunctionBody`), but Memcheck reports a branch on uninitialised memory on every parse, and
/// `valgrind vmrun prog.wat` must be clean without a suppressions file. So the parser is declared defined
/// to Memcheck (a no-op natively), the way the Go runtime marks its copies of stack words. Every parse and
/// validation of a module goes through here.
pub(crate) fn parser(features: wasmparser::WasmFeatures) -> wasmparser::Parser {
    let mut parser = wasmparser::Parser::new(0);
    parser.set_features(features);
    valgrind_bridge::make_mem_defined((&raw const parser).cast(), size_of::<wasmparser::Parser>());
    parser
}

/// `Validator::validate_all`, with the parser from [`parser`]: the same steps in the same order (every
/// section first, then the function bodies), so errors are reported exactly as wasmparser would.
pub(crate) fn validate_all(validator: &mut wasmparser::Validator, wasm: &[u8]) -> Result<(), CompileError> {
    let mut bodies = Vec::new();
    for payload in parser(*validator.features()).parse_all(wasm) {
        let payload = payload?;
        if let wasmparser::ValidPayload::Func(func, body) = validator.payload(&payload)? {
            bodies.push((func, body));
        }
        refuse_v128_declarations(&payload)?;
    }
    let mut allocs = wasmparser::FuncValidatorAllocations::default();
    for (func, body) in bodies {
        let mut v = func.into_validator(allocs);
        validate_body(&mut v, &body)?;
        allocs = v.into_allocations();
    }
    Ok(())
}

/// Why a module that uses `v128` is refused (worded like wasmparser's disabled-proposal errors, so the spec
/// runner counts it as a SIMD skip).
const NO_SIMD: &str = "SIMD support is not enabled: vmrun accepts v128 only as a field type of structs and arrays \
                       that no instruction reads or writes";

/// Which declarations of a module may not use `v128`: everything but the type section.
///
/// The validator runs with SIMD on, because compilers put `v128` fields into type definitions that the
/// program never touches: Kotlin/Wasm 2.4 adds "mixin" struct types with `v128` fields to its rec groups so
/// that equal-shaped groups stay distinct. A module is refused as soon as a `v128` could become a value:
/// a global, a tag, a function parameter, result or local, or any operand of an instruction (see
/// [`validate_body`]); so the interpreter and the compiled tier never see one.
fn refuse_v128_declarations(payload: &wasmparser::Payload<'_>) -> Result<(), CompileError> {
    use wasmparser::{Payload, TypeRef, ValType};
    let refuse = |offset| Err(CompileError { message: NO_SIMD.to_string(), offset });
    match payload {
        Payload::GlobalSection(r) => {
            for g in r.clone().into_iter_with_offsets() {
                let (offset, g) = g?;
                if g.ty.content_type == ValType::V128 {
                    return refuse(offset);
                }
            }
        }
        Payload::ImportSection(r) => {
            for imp in r.clone().into_imports_with_offsets() {
                let (offset, imp) = imp?;
                if matches!(imp.ty, TypeRef::Global(g) if g.content_type == ValType::V128) {
                    return refuse(offset);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Validate one function body like `FuncValidator::validate`, operator by operator, and refuse `v128`
/// parameters, locals and operands. Every value enters the operand stack as an operator's result, so
/// checking each operator's results keeps the whole stack free of `v128` (tags whose payload has one are
/// caught where the payload is pushed: at a legacy `catch`, or at the end of the block a `try_table`
/// branches to).
fn validate_body(
    v: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    body: &wasmparser::FunctionBody<'_>,
) -> Result<(), CompileError> {
    use wasmparser::ValType;
    let mut reader = body.get_binary_reader();
    v.read_locals(&mut reader)?;
    if (0..v.len_locals()).any(|i| v.get_local_type(i) == Some(ValType::V128)) {
        // Reported at the body's first instruction: the line table maps instructions, not declarations.
        return Err(CompileError { message: NO_SIMD.to_string(), offset: reader.original_position() });
    }
    let mut ops = wasmparser::OperatorsReader::new(reader);
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset()?;
        // The arity is asked before the operator changes the control stack (an `end` pushes its block's
        // results); when it is unknown, the whole stack is checked.
        let results = op.operator_arity(&v.visitor(offset)).map(|(_, results)| results as usize);
        v.op(offset, &op)?;
        let height = v.operand_stack_height() as usize;
        let pushed = results.map_or(height, |r| r.min(height));
        if (0..pushed).any(|depth| v.get_operand_type(depth) == Some(Some(ValType::V128))) {
            return Err(CompileError { message: NO_SIMD.to_string(), offset });
        }
    }
    Ok(ops.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_error(result: Result<Source, crate::Error>) -> String {
        match result {
            Err(crate::Error::Load(msg)) => msg,
            Err(other) => panic!("expected a load error, got {other:?}"),
            Ok(_) => panic!("expected a load error, got a module"),
        }
    }

    /// Validate with wasmparser (the store's features are irrelevant to positions).
    fn validate(source: &Source) -> String {
        match wasmparser::Validator::new().validate_all(&source.wasm) {
            Err(err) => source.validation_error(&err).to_string(),
            Ok(_) => panic!("module is valid"),
        }
    }

    /// Module offsets of the opcodes `op` in the code section, in order.
    fn opcode_offsets(source: &Source, op: u8) -> Vec<usize> {
        let code = source.code_range.clone().expect("has a code section");
        (code.start as usize..code.end as usize).filter(|&i| source.wasm[i] == op).collect()
    }

    #[test]
    fn text_and_binary_are_detected_by_content() {
        let text = Source::from_bytes("a.wasm", b"(module)".to_vec()).expect("text parses");
        assert!(text.wasm.starts_with(b"\0asm"));
        let bin = Source::from_bytes("b.wat", text.wasm.clone()).expect("binary loads");
        assert_eq!(bin.wasm, text.wasm);
        assert!(!bin.has_line_table());
        let junk = load_error(Source::from_bytes("c", vec![b'(', 0xff, 0xfe]));
        assert!(junk.starts_with("c: neither a wasm binary"), "{junk}");
        assert!(junk.contains("offset 1"), "{junk}");
    }

    #[test]
    fn bare_module_fields_are_a_module() {
        let s = Source::from_text("bare.wat", "(func $f (result i32) i32.const 7)").expect("parses");
        assert_eq!(s.func_name(0), Some("f"));
        assert!(s.has_line_table());
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let msg = load_error(Source::from_file(Path::new("/nonexistent/dir/prog.wat")));
        assert!(msg.starts_with("/nonexistent/dir/prog.wat: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let msg = load_error(Source::from_text("bad.wat", "(module\n  (func (result i32)\n    i32.const x))"));
        assert!(msg.starts_with("bad.wat:3:15: "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        // Lexer errors and name-resolution errors (found while encoding) too.
        let msg = load_error(Source::from_text("lex.wat", "(module\n  \"unterminated"));
        assert_eq!(msg, "lex.wat:2:16: unexpected end-of-file");
        let msg = load_error(Source::from_text("names.wat", "(module\n  (func\n    call $missing))"));
        assert!(msg.starts_with("names.wat:3:10: "), "{msg}");
        assert!(msg.contains("unknown func"), "{msg}");
    }

    #[test]
    fn every_instruction_maps_to_its_own_line() {
        // One single-byte instruction per line, in two functions with locals, so an address
        // base off by even one byte would map some opcode to its neighbour's line.
        let text = "(module\n\
                    (func $a (result i32) (local i32 i64)\n\
                    i32.const 1\n\
                    i32.eqz\n\
                    i32.eqz\n\
                    i32.eqz)\n\
                    (func $b (param i32) (result i32)\n\
                    local.get 0\n\
                    i32.clz\n\
                    i32.ctz\n\
                    i32.popcnt))";
        let s = Source::from_text("f.wat", text).expect("parses");
        let line_at = |offset| s.location(offset).map(|l| l.line);
        let eqz = opcode_offsets(&s, 0x45);
        assert_eq!(eqz.iter().map(|&o| line_at(o)).collect::<Vec<_>>(), [Some(4), Some(5), Some(6)]);
        let [clz, ctz, popcnt] = [0x67, 0x68, 0x69].map(|op| opcode_offsets(&s, op)[0]);
        assert_eq!([clz, ctz, popcnt].map(line_at), [Some(9), Some(10), Some(11)]);
        // The immediate of `i32.const 1` belongs to `i32.const`.
        let const_op = opcode_offsets(&s, 0x41)[0];
        assert_eq!(line_at(const_op), Some(3));
        assert_eq!(line_at(const_op + 1), Some(3));
        // Columns count from 1.
        assert_eq!(s.location(clz).map(|l| l.column), Some(1));
        // The function's implicit `end` maps to its last instruction.
        let end_of_a = eqz[2] + 1;
        assert_eq!(s.wasm[end_of_a], 0x0b);
        assert_eq!(line_at(end_of_a), Some(6));
        // Not in the code section: no text position.
        assert_eq!(s.location(0), None);
        assert!(s.describe(0).starts_with("f.wat: offset 0x0"), "{}", s.describe(0));
        assert_eq!(s.describe(clz), "f.wat:9:1");
    }

    #[test]
    fn address_base_skips_a_multi_byte_function_count() {
        // 130 functions need a two-byte count LEB.
        let mut text = String::from("(module\n");
        for _ in 0..129 {
            text.push_str("(func)\n");
        }
        text.push_str("(func (result i32)\ni32.const 5\ni32.eqz))\n");
        let s = Source::from_text("many.wat", &text).expect("parses");
        let eqz = opcode_offsets(&s, 0x45);
        assert_eq!(eqz.len(), 1);
        assert_eq!(s.location(eqz[0]).map(|l| l.line), Some(133));
    }

    #[test]
    fn local_declarations_map_to_the_first_instruction() {
        let s = Source::from_text("l.wat", "(module\n  (func (local i64)\n    nop))").expect("parses");
        let body_start = s.lines.as_ref().expect("line table").bodies[0].start;
        assert_eq!(s.location(body_start as usize).map(|l| (l.line, l.column)), Some((3, 5)));
    }

    #[test]
    fn type_mismatches_name_the_offending_instruction() {
        // An operand of the wrong type: reported at the consuming instruction.
        let s = Source::from_text(
            "b.wat",
            "(module\n  (func (result i32)\n    (i32.add\n      (i32.const 1)\n      (f32.const 2))))",
        )
        .expect("parses");
        let msg = validate(&s);
        assert!(msg.starts_with("b.wat:3:6: type mismatch"), "{msg}");
        // A wrong result at the implicit end of the function: reported at the last instruction.
        let s = Source::from_text("a.wat", "(module\n  (func (result i32)\n    i32.const 1\n    i64.extend_i32_u))")
            .expect("parses");
        let msg = validate(&s);
        assert!(msg.starts_with("a.wat:4:5: type mismatch"), "{msg}");
        // In the second function.
        let text = "(module\n  (func)\n  (func (param i32)\n    (local.set 0 (i64.const 0))))";
        let msg = validate(&Source::from_text("c.wat", text).expect("parses"));
        assert!(msg.starts_with("c.wat:4:6: type mismatch"), "{msg}");
    }

    #[test]
    fn errors_outside_code_fall_back_to_the_offset() {
        let s = Source::from_text("d.wat", "(module\n  (func)\n  (export \"x\" (func 5)))").expect("parses");
        let Err(err) = wasmparser::Validator::new().validate_all(&s.wasm) else { panic!("valid") };
        assert!(matches!(s.validation_error(&err), crate::Error::Invalid(_)));
        let msg = validate(&s);
        assert!(msg.starts_with("d.wat: offset 0x"), "{msg}");
        assert!(msg.contains("function index out of bounds"), "{msg}");
    }

    #[test]
    fn binary_errors_use_offsets() {
        let bin = Source::from_binary("m.wasm", b"\0asm\x01\0\0\0\x0a\x01".to_vec());
        let msg = validate(&bin);
        assert!(msg.starts_with("m.wasm: offset 0x"), "{msg}");
    }

    #[test]
    fn names_come_from_the_name_section() {
        let text = "(module $prog\n  (import \"env\" \"log\" (func $log))\n  (func $first)\n  (func)\n  (func $third))";
        let s = Source::from_text("n.wat", text).expect("parses");
        assert_eq!(s.names().module_name(), Some("prog"));
        assert_eq!(s.module_name(), Some("prog"));
        assert_eq!(s.func_name(0), Some("log"));
        assert_eq!(s.func_name(1), Some("first"));
        assert_eq!(s.func_name(2), None);
        assert_eq!(s.names().func_name(3), Some("third"));
        // Binary modules keep their names too.
        let bin = Source::from_binary("n.wasm", s.wasm.clone());
        assert_eq!(bin.func_name(3), Some("third"));
        assert_eq!(bin.location(opcode_offsets(&bin, 0x0b)[0]), None);
    }
}
