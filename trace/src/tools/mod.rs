//! The tools behind `vmrun trace summary|dump|perfetto|plot`. Each reads a trace file, replays it, and
//! returns text or writes a file; a file with damage after some complete generations still gives results for
//! those (with a warning naming the byte offset), a file with none gives an error.

pub mod dump;
pub mod perfetto;
pub mod plot;
pub mod profile;
pub mod summary;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub use profile::Profile;

use crate::reader::{Trace, TraceError};

/// Opens a trace; an error if not even one generation is readable.
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    let trace = Trace::open(path)?;
    match (&trace.error, trace.generations.is_empty()) {
        (Some(e), true) => Err(TraceError::Format { path: path.display().to_string(), source: e.clone() }),
        _ => Ok(trace),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TraceError + '_ {
    move |source| TraceError::Io { path: path.display().to_string(), source }
}

/// The text summary of the trace at `path`.
pub fn summary(path: impl AsRef<Path>) -> Result<String, TraceError> {
    let path = path.as_ref();
    let trace = load(path)?;
    Ok(summary::render(&Profile::build(&trace), &file_name(path)))
}

/// One line per event (the whole dump in memory; see [`dump_to`] for large traces).
pub fn dump(path: impl AsRef<Path>) -> Result<String, TraceError> {
    let mut out = Vec::new();
    dump_to(path, &mut out)?;
    String::from_utf8(out).map_err(|e| TraceError::Other(e.to_string()))
}

/// Streams the dump of the trace at `path` to `w`.
pub fn dump_to(path: impl AsRef<Path>, w: &mut dyn Write) -> Result<(), TraceError> {
    let path = path.as_ref();
    let trace = load(path)?;
    dump::write(&trace, &file_name(path), w).map_err(|source| TraceError::Io { path: "<output>".into(), source })
}

/// Writes Chrome trace-event JSON for ui.perfetto.dev to `out`.
pub fn perfetto(path: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<(), TraceError> {
    let (path, out) = (path.as_ref(), out.as_ref());
    let trace = load(path)?;
    let profile = Profile::build(&trace);
    let mut w = BufWriter::new(File::create(out).map_err(io_err(out))?);
    perfetto::write(&trace, &profile, &file_name(path), &mut w).map_err(io_err(out))?;
    w.flush().map_err(io_err(out))
}

/// Writes an SVG of the heap over time to `out_svg`.
pub fn plot(path: impl AsRef<Path>, out_svg: impl AsRef<Path>) -> Result<(), TraceError> {
    let (path, out) = (path.as_ref(), out_svg.as_ref());
    let trace = load(path)?;
    let svg = plot::render(&Profile::build(&trace), &file_name(path));
    std::fs::write(out, svg).map_err(io_err(out))
}
