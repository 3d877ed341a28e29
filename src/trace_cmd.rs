//! `vmrun --trace allocfree [--trace-out FILE]` and `vmrun trace summary|dump|perfetto|plot FILE`: the
//! command-line side of the alloc/free tracer (`vmtrace`; the VM side is `vm/src/tracing.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Subcommand, ValueEnum};

/// What `--trace` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceKind {
    /// Every allocation and free (with sites and types), spans, stacks, collections.
    Allocfree,
}

/// Tracing options of a run.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Tracing")]
pub struct TraceOptions {
    /// Record a trace while the program runs; read it with `vmrun trace summary FILE`.
    #[arg(long, value_name = "KIND")]
    pub trace: Option<TraceKind>,

    /// Where --trace writes.
    #[arg(long, value_name = "FILE", default_value = "vmrun.trace", requires = "trace")]
    pub trace_out: PathBuf,

    /// Start a new generation (tables and a live-heap snapshot, readable alone) after SIZE of trace
    /// records (e.g. `4MiB`) or one second, whichever comes first.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", requires = "trace")]
    pub trace_generation: String,
}

impl TraceOptions {
    /// Starts tracing into `store` if asked to.
    pub fn start(&self, store: &mut vm::Store) -> Result<()> {
        if self.trace.is_some() {
            let config = vmtrace::TraceConfig {
                generation_bytes: crate::parse_size("--trace-generation", &self.trace_generation)? as u64,
                ..vmtrace::TraceConfig::default()
            };
            let tracer = vmtrace::Tracer::create(&self.trace_out, config)
                .with_context(|| format!("--trace-out: cannot create `{}`", self.trace_out.display()))?;
            store.trace_allocations(tracer);
        }
        Ok(())
    }

    /// Closes the trace (after the program ended, however it ended) and says where it is.
    pub fn finish(&self, store: &mut vm::Store) -> Result<()> {
        let Some(done) = store.finish_trace() else { return Ok(()) };
        let stats = done.with_context(|| format!("cannot write the trace to `{}`", self.trace_out.display()))?;
        let per_event = if stats.events == 0 { 0.0 } else { stats.bytes as f64 / stats.events as f64 };
        eprintln!(
            "vmrun: trace written to {} ({} events, {} bytes, {per_event:.1} bytes/event)",
            self.trace_out.display(),
            stats.events,
            stats.bytes
        );
        Ok(())
    }
}

/// `vmrun trace ...`: read a trace file.
#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Totals, peak live heap, live at end by type, top types and sites, bytes reclaimed per GC,
    /// object lifetimes.
    Summary { file: PathBuf },
    /// One event per line.
    Dump { file: PathBuf },
    /// Chrome trace-event JSON for ui.perfetto.dev (live bytes/objects, GC slices, top types).
    Perfetto {
        file: PathBuf,
        #[arg(short = 'o', value_name = "OUT.json")]
        out: PathBuf,
    },
    /// An SVG of the heap over time with the collections marked.
    Plot {
        file: PathBuf,
        #[arg(short = 'o', value_name = "OUT.svg")]
        out: PathBuf,
    },
}

impl TraceCommand {
    /// Reads the trace and writes what was asked. A file damaged after some complete generations still gives
    /// results for those, then the damage is reported as an error (naming its byte offset) and the exit
    /// status is non-zero, like a decompressor that meets a truncated archive.
    pub fn run(&self) -> Result<()> {
        let file = match self {
            TraceCommand::Summary { file }
            | TraceCommand::Dump { file }
            | TraceCommand::Perfetto { file, .. }
            | TraceCommand::Plot { file, .. } => file,
        };
        let trace = vmtrace::tools::load(file).map_err(|e| anyhow!("{e}"))?;
        let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        match self {
            TraceCommand::Summary { .. } => {
                write_stdout(&vmtrace::tools::summary::render(&vmtrace::tools::Profile::build(&trace), &name))?
            }
            TraceCommand::Dump { .. } => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                vmtrace::tools::dump::write(&trace, &name, &mut out)
                    .and_then(|()| out.flush())
                    .context("cannot write the dump")?;
            }
            TraceCommand::Perfetto { out, .. } => {
                let profile = vmtrace::tools::Profile::build(&trace);
                let mut w = std::io::BufWriter::new(
                    std::fs::File::create(out).with_context(|| format!("cannot create `{}`", out.display()))?,
                );
                vmtrace::tools::perfetto::write(&trace, &profile, &name, &mut w)
                    .and_then(|()| w.flush())
                    .with_context(|| format!("cannot write `{}`", out.display()))?;
                report_written(out);
            }
            TraceCommand::Plot { out, .. } => {
                let svg = vmtrace::tools::plot::render(&vmtrace::tools::Profile::build(&trace), &name);
                std::fs::write(out, svg).with_context(|| format!("cannot write `{}`", out.display()))?;
                report_written(out);
            }
        }
        match &trace.error {
            None => Ok(()),
            Some(e) => Err(anyhow!(
                "{}: {e} (read the {} complete generations before it)",
                file.display(),
                trace.generations.len()
            )),
        }
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout")
}

fn report_written(path: &Path) {
    eprintln!("vmrun: wrote {}", path.display());
}
