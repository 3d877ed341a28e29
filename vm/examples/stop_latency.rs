//! Time to stop the world while another thread spins in a loop without calls: the collector sets the
//! spinner's stop flag and waits until it parks at its loop's back-edge safepoint. Prints the p50, p99
//! and max of ROUNDS collections (BENCHMARKS.md records a run).
//!
//!   cargo run --release -p vm --example stop_latency [ROUNDS]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vm::{Extern, Linker, Runtime, Source, Store, Val};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let wat = r#"(module
      (func (export "spin") (param $n i64) (result i64) (local $i i64)
        (loop $l
          (local.set $i (i64.add (local.get $i) (i64.const 1)))
          (br_if $l (i64.ne (local.get $i) (local.get $n))))
        (local.get $i)))"#;
    let rt = Runtime::new(Default::default());
    let m = rt.load_module(Source::from_text("spin.wat", wat).unwrap()).unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (rt, started) = (rt.clone(), started.clone());
        std::thread::spawn(move || {
            let mut store = Store::with_runtime(rt);
            let i = store.instantiate(m, &Linker::new()).unwrap();
            let Some(Extern::Func(f)) = store.get_export(i, "spin") else { panic!("no spin export") };
            started.store(true, Ordering::SeqCst);
            // Long enough to outlast every round; the process exits when main is done.
            let _ = store.call(f, &[Val::I64(i64::MAX)]);
        })
    };
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut store = Store::with_runtime(rt);
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t0 = Instant::now();
            store.collect_garbage();
            t0.elapsed()
        })
        .collect();
    assert!(!spinner.is_finished(), "the spinner must still be running for the numbers to mean anything");
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{rounds} collections with a mutator spinning in a loop: p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        times[times.len() - 1]
    );
    drop(spinner);
    std::process::exit(0);
}
