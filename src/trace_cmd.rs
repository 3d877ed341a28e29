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
}

impl TraceOptions {
    /// Starts tracing into `store` if asked to.
    pub fn start(&self, store: &mut vm::Store) -> Result<()> {
        if self.trace.is_some() {
            let tracer = vmtrace::Tracer::create(&self.trace_out, vmtrace::TraceConfig::default())
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
    pub fn run(&self) -> Result<()> {
        let err = |e: vmtrace::TraceError| anyhow!("{e}");
        match self {
            TraceCommand::Summary { file } => write_stdout(&vmtrace::summary(file).map_err(err)?),
            TraceCommand::Dump { file } => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                vmtrace::dump_to(file, &mut out).map_err(err)?;
                out.flush().context("cannot write the dump")
            }
            TraceCommand::Perfetto { file, out } => {
                vmtrace::perfetto(file, out).map_err(err)?;
                report_written(out)
            }
            TraceCommand::Plot { file, out } => {
                vmtrace::plot(file, out).map_err(err)?;
                report_written(out)
            }
        }
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout")
}

fn report_written(path: &Path) -> Result<()> {
    eprintln!("vmrun: wrote {}", path.display());
    Ok(())
}
