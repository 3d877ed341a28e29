//! Loading program bytes: `.wat` text or `.wasm` binary (told apart by content, not by file
//! extension), with what is needed to describe offsets in the binary to a human.
//!
//! Text is parsed with the `wast` crate and encoded with a DWARF line table (the `dwarf` feature
//! of `wat`/`wast`): every instruction's code offset maps back to the `line:col` it came from. The
//! table is decoded once with `gimli` into a sorted vector, so validation errors and trap
//! backtraces can name `file:line:col` instead of a byte offset (wasmtime reports only offsets).
//! The name section gives function names for backtraces.

use std::collections::HashMap;
use std::path::Path;

/// A position in the text source.
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

/// Code offset → text position, sorted by offset (offsets are module-relative).
#[derive(Clone, Debug, Default)]
struct LineTable {
    rows: Vec<(u64, u32, u32)>,
}

impl LineTable {
    /// The row covering `offset`: the last row at or before it.
    fn lookup(&self, offset: u64) -> Option<(u32, u32)> {
        let i = self.rows.partition_point(|r| r.0 <= offset);
        let (_, line, col) = *self.rows.get(i.checked_sub(1)?)?;
        Some((line, col))
    }
}

/// Loaded module bytes plus what is needed to describe offsets in them.
pub struct Source {
    /// Name used in messages (the path as the user typed it).
    pub name: String,
    /// The binary module.
    pub wasm: Vec<u8>,
    lines: Option<LineTable>,
    /// Byte range of the code section's contents (DWARF addresses are relative to its start).
    code_range: Option<std::ops::Range<u64>>,
    module_name: Option<String>,
    func_names: HashMap<u32, String>,
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
        let text = String::from_utf8(bytes)
            .map_err(|_| crate::Error::Load(format!("{name}: neither a wasm binary nor UTF-8 text")))?;
        Source::from_text(name, &text)
    }

    /// Parse WebAssembly text, keeping a line table.
    pub fn from_text(name: &str, text: &str) -> Result<Source, crate::Error> {
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

    /// A binary module with no line table (spec scripts, tests).
    pub fn from_binary(name: &str, wasm: Vec<u8>) -> Source {
        let mut source = Source {
            name: name.to_string(),
            wasm,
            lines: None,
            code_range: None,
            module_name: None,
            func_names: HashMap::new(),
        };
        source.read_names();
        source
    }

    /// Scan the sections for the code section's range and the name section. Malformed input is
    /// ignored here: the validator reports it.
    fn read_names(&mut self) {
        for payload in wasmparser::Parser::new(0).parse_all(&self.wasm) {
            let Ok(payload) = payload else { return };
            match payload {
                wasmparser::Payload::CodeSectionStart { unchecked_range: range, .. } => {
                    self.code_range = Some(range);
                }
                wasmparser::Payload::CustomSection(c) => {
                    if let wasmparser::KnownCustom::Name(reader) = c.as_known() {
                        for name in reader.into_iter().flatten() {
                            match name {
                                wasmparser::Name::Module { name, .. } => self.module_name = Some(name.to_string()),
                                wasmparser::Name::Function(map) => {
                                    for n in map.into_iter().flatten() {
                                        self.func_names.insert(n.index, n.name.to_string());
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Decode the DWARF line program from the `.debug_*` custom sections.
    fn read_line_table(&self) -> Option<LineTable> {
        let code_start = self.code_range.as_ref()?.start;
        let mut sections: HashMap<&str, &[u8]> = HashMap::new();
        for payload in wasmparser::Parser::new(0).parse_all(&self.wasm) {
            if let Ok(wasmparser::Payload::CustomSection(c)) = payload
                && c.name().starts_with(".debug_") {
                    sections.insert(c.name(), c.data());
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
                if row.end_sequence() {
                    continue;
                }
                let line = row.line().map(|l| l.get() as u32).unwrap_or(0);
                let col = match row.column() {
                    gimli::ColumnType::LeftEdge => 1,
                    gimli::ColumnType::Column(c) => c.get() as u32,
                };
                rows.push((code_start + row.address(), line, col));
            }
        }
        rows.sort_by_key(|r| r.0);
        Some(LineTable { rows })
    }

    /// Source location of a byte offset in `wasm` (an instruction in the code section), if known.
    pub fn location(&self, offset: usize) -> Option<SourceLoc> {
        let lines = self.lines.as_ref()?;
        let code = self.code_range.as_ref()?;
        if !code.contains(&(offset as u64)) {
            return None;
        }
        let (line, column) = lines.lookup(offset as u64)?;
        (line > 0).then(|| SourceLoc { file: self.name.clone(), line, column })
    }

    /// "`file:line:col`" for text with a line table, else "`file: offset 0x..`"; used for error messages.
    pub fn describe(&self, offset: usize) -> String {
        match self.location(offset) {
            Some(loc) => loc.to_string(),
            None => format!("{}: offset {offset:#x}", self.name),
        }
    }

    /// The module's name from the name section.
    pub fn module_name(&self) -> Option<&str> {
        self.module_name.as_deref()
    }

    /// A function's name from the name section (`$name` in text), by function index.
    pub fn func_name(&self, index: u32) -> Option<&str> {
        self.func_names.get(&index).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_are_detected_by_content() {
        let text = Source::from_bytes("a.wasm", b"(module)".to_vec()).expect("text parses");
        assert!(text.wasm.starts_with(b"\0asm"));
        let bin = Source::from_bytes("b.wat", text.wasm.clone()).expect("binary loads");
        assert_eq!(bin.wasm, text.wasm);
        let junk = Source::from_bytes("c", vec![0xff, 0xfe]);
        assert!(matches!(junk, Err(crate::Error::Load(m)) if m.contains("neither")));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = Source::from_text("bad.wat", "(module\n  (func (result i32)\n    i32.const x))").err();
        let Some(crate::Error::Load(msg)) = err else { panic!("expected a load error") };
        assert!(msg.starts_with("bad.wat:3:15: "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn instruction_offsets_map_to_lines_and_names() {
        let text = "(module\n  (func $first (result i32)\n    i32.const 1\n    i32.const 2\n    i32.add))";
        let s = Source::from_text("f.wat", text).expect("parses");
        assert_eq!(s.func_name(0), Some("first"));
        // Find the i32.add opcode (0x6a) in the code section and check it maps to line 5.
        let code = s.code_range.clone().expect("has code");
        let add = (code.start as usize..code.end as usize).find(|&i| s.wasm[i] == 0x6a).expect("add opcode");
        let loc = s.location(add).expect("mapped");
        assert_eq!((loc.line, loc.column), (5, 5), "{loc}");
        assert!(s.describe(0).starts_with("f.wat: offset"));
    }
}
