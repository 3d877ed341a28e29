//! Runs the tools on a trace file and reports how long each took (for measuring the reader):
//! `cargo run --release -p vmtrace --example tools -- FILE [OUT_DIR]`

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: tools FILE [OUT_DIR]");
        std::process::exit(2);
    };
    let out =
        std::path::PathBuf::from(args.get(2).map_or_else(|| std::env::temp_dir().display().to_string(), Clone::clone));
    let t = Instant::now();
    match vmtrace::summary(path) {
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    eprintln!("summary: {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    vmtrace::plot(path, out.join("heap.svg")).unwrap();
    eprintln!("plot: {:.2} s -> {}", t.elapsed().as_secs_f64(), out.join("heap.svg").display());
    let t = Instant::now();
    vmtrace::perfetto(path, out.join("trace.json")).unwrap();
    eprintln!("perfetto: {:.2} s -> {}", t.elapsed().as_secs_f64(), out.join("trace.json").display());
}
