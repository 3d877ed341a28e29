//! Every program in `programs/` runs and prints what `programs/README.md` says it prints.
//!
//! The README's table is the single list of commands and expected outputs: this test parses it,
//! so the documentation cannot drift from the behaviour.

use std::path::Path;
use std::process::Command;

/// One table row: the command after `vmrun`, its expected stdout, whether it is a benchmark size.
struct Row {
    args: Vec<String>,
    expected: String,
    benchmark: bool,
}

/// The text between the first pair of backticks in `cell`.
fn backticked(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// Rows of the tables in `programs/README.md`.
fn readme_rows(readme: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| program | what | `command` | `output` |" splits into 6 cells, the outer two empty.
        if cells.len() != 6 {
            continue;
        }
        let (Some(command), Some(expected)) = (backticked(cells[3]), backticked(cells[4])) else { continue };
        let Some(args) = command.strip_prefix("vmrun ") else { continue };
        rows.push(Row {
            args: args.split_whitespace().map(String::from).collect(),
            expected: format!("{expected}\n"),
            benchmark: cells[2].contains("benchmark"),
        });
    }
    rows
}

#[test]
fn every_program_prints_what_the_readme_says() {
    let readme = std::fs::read_to_string("programs/README.md").expect("programs/README.md");
    let rows = readme_rows(&readme);
    assert!(rows.len() >= 15, "a row per command; found {}", rows.len());
    for row in &rows {
        // Benchmark sizes take minutes in an unoptimized build; `cargo test --release` runs them.
        if row.benchmark && cfg!(debug_assertions) {
            eprintln!("skipped in a debug build: vmrun {}", row.args.join(" "));
            continue;
        }
        // Every tier: the interpreter, every function compiled up front, and tier-up after 2 calls.
        for tier in [&["--jit=off"][..], &["--jit=eager"], &["--jit=auto", "--jit-threshold", "2"]] {
            let out =
                Command::new(env!("CARGO_BIN_EXE_vmrun")).args(tier).args(&row.args).output().expect("vmrun starts");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                (out.status.code(), stdout.as_ref(), stderr.as_ref()),
                (Some(0), row.expected.as_str(), ""),
                "vmrun {} {}",
                tier.join(" "),
                row.args.join(" ")
            );
        }
    }
}

/// The core programs, and the GC program with exceptions of both encodings, really run compiled with
/// `--jit=eager` (none of their functions falls back).
#[test]
fn core_programs_compile_completely() {
    for (file, export, arg) in [
        ("programs/fib.wat", "fib", "20"),
        ("programs/sieve.wat", "sieve", "100"),
        ("programs/mandelbrot.wat", "mandelbrot", "20"),
        ("programs/gc_exceptions.wat", "run", "300"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .args(["--jit=eager", "--jit-stats", "--invoke", export, file, arg])
            .output()
            .expect("vmrun starts");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(" 0 left interpreted"), "{file}: {stderr}");
        assert!(!stderr.starts_with("jit: 0 functions compiled"), "{file}: {stderr}");
    }
}

#[test]
fn every_program_file_is_in_the_readme() {
    let readme = std::fs::read_to_string("programs/README.md").expect("programs/README.md");
    let mut files: Vec<String> = std::fs::read_dir(Path::new("programs"))
        .expect("programs/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wat") || name.ends_with(".wasm"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "hello, fib, sieve and mandelbrot at least: {files:?}");
    for f in files {
        assert!(readme.contains(&format!("| {f} |")), "programs/{f} has no row in programs/README.md");
    }
}

#[test]
fn the_readme_parser_reads_table_rows_only() {
    let text = "# t\n| p | d | c | o |\n|---|---|---|---|\n| a.wat | the benchmark | `vmrun --invoke f a.wat 1` | `2` |\n\
                text with | a | bar |\n| b.wat | x | `vmrun b.wat` | `3` |\n";
    let rows = readme_rows(text);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].args, ["--invoke", "f", "a.wat", "1"]);
    assert_eq!((rows[0].expected.as_str(), rows[0].benchmark), ("2\n", true));
    assert_eq!((rows[1].args.as_slice(), rows[1].benchmark), (&["b.wat".to_string()][..], false));
}
