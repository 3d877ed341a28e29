//! Loading program bytes: `.wat` text or `.wasm` binary (detected by content), with a DWARF line
//! table for text so that offsets map back to `file:line:col`. (Stub surface.)

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

/// Loaded module bytes plus what is needed to describe offsets in them.
pub struct Source {
    /// Name used in messages (the path as the user typed it).
    pub name: String,
    /// The binary module.
    pub wasm: Vec<u8>,
}

impl Source {
    /// Read a file; `\0asm` magic means binary, anything else is parsed as text.
    pub fn from_file(path: &std::path::Path) -> Result<Source, crate::Error> {
        let _ = path;
        todo!()
    }
    /// Bytes of either kind, detected by content.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Source, crate::Error> {
        Ok(Source { name: name.to_string(), wasm: bytes })
    }
    /// A binary module with no line table (spec scripts, tests).
    pub fn from_binary(name: &str, wasm: Vec<u8>) -> Source {
        Source { name: name.to_string(), wasm }
    }
    /// Source location of a byte offset in `wasm` (an instruction in the code section), if known.
    pub fn location(&self, offset: usize) -> Option<SourceLoc> {
        let _ = offset;
        None
    }
    /// "`file:line:col`" for text with a line table, else "`file: offset 0x..`"; used for error messages.
    pub fn describe(&self, offset: usize) -> String {
        match self.location(offset) {
            Some(loc) => loc.to_string(),
            None => format!("{}: offset {offset:#x}", self.name),
        }
    }
}
