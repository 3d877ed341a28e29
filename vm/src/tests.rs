//! Unit tests of translation and execution on small modules.

use crate::{Linker, Source, Store, Trap, TrapKind, Val};

fn run(wat: &str, export: &str, args: &[Val]) -> Result<Vec<Val>, Trap> {
    let wasm = wat::parse_str(wat).expect("test module parses");
    let mut store = Store::new(Default::default());
    let m = store.load_module(Source::from_binary("test.wat", wasm)).expect("test module loads");
    let i = store.instantiate(m, &Linker::new()).expect("test module instantiates");
    let Some(crate::Extern::Func(f)) = store.get_export(i, export) else { panic!("no export {export}") };
    store.call(f, args)
}

const FIB: &str = r#"(module (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_s (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2))))))))"#;

#[test]
fn recursive_fib() {
    assert_eq!(run(FIB, "fib", &[Val::I32(20)]).unwrap(), vec![Val::I32(6765)]);
}

#[test]
fn loop_with_locals() {
    let wat = r#"(module (func (export "sum") (param i32) (result i64) (local i64)
        (block $done (loop $top
          (br_if $done (i32.eqz (local.get 0)))
          (local.set 1 (i64.add (local.get 1) (i64.extend_i32_u (local.get 0))))
          (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
          (br $top)))
        (local.get 1)))"#;
    assert_eq!(run(wat, "sum", &[Val::I32(100)]).unwrap(), vec![Val::I64(5050)]);
}

#[test]
fn multi_value_blocks_and_br_table() {
    let wat = r#"(module (func (export "f") (param i32) (result i32 i32)
        (block $a (result i32 i32)
          (block $b (result i32 i32)
            (i32.const 10) (i32.const 20)
            (br_table $a $b (local.get 0)))
          (i32.add) (i32.const 1) (br $a))))"#;
    assert_eq!(run(wat, "f", &[Val::I32(0)]).unwrap(), vec![Val::I32(10), Val::I32(20)]);
    assert_eq!(run(wat, "f", &[Val::I32(1)]).unwrap(), vec![Val::I32(30), Val::I32(1)]);
    assert_eq!(run(wat, "f", &[Val::I32(7)]).unwrap(), vec![Val::I32(30), Val::I32(1)]);
}

#[test]
fn local_tee_keeps_old_value_on_stack() {
    // The deferred `local.get 0` must be materialized before `local.set 0` changes it.
    let wat = r#"(module (func (export "f") (param i32) (result i32)
        (local.get 0)
        (local.set 0 (i32.const 5))
        (i32.sub (local.get 0))))"#;
    assert_eq!(run(wat, "f", &[Val::I32(12)]).unwrap(), vec![Val::I32(7)]);
}

#[test]
fn traps() {
    let wat = r#"(module
        (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
        (func $r (export "rec") (call $r))
        (memory 1)
        (func (export "oob") (result i32) (i32.load (i32.const 65535))))"#;
    assert_eq!(run(wat, "div", &[Val::I32(1), Val::I32(0)]).unwrap_err().kind, TrapKind::IntegerDivideByZero);
    assert_eq!(run(wat, "div", &[Val::I32(i32::MIN), Val::I32(-1)]).unwrap_err().kind, TrapKind::IntegerOverflow);
    assert_eq!(run(wat, "rec", &[]).unwrap_err().kind, TrapKind::CallStackExhausted);
    assert_eq!(run(wat, "oob", &[]).unwrap_err().kind, TrapKind::MemoryOutOfBounds);
}

#[test]
fn fib_translates_to_compact_register_code() {
    use crate::bytecode::Instr;
    let wasm = wat::parse_str(FIB).unwrap();
    let mut store = Store::new(Default::default());
    let m = store.load_module(Source::from_binary("t", wasm)).unwrap();
    let module = store.s.rt.module(m);
    let code = &module.code[0].code;
    // `local.get`s and constants fold into operands, the comparison fuses into the branch, and the
    // call arguments are computed directly into the callee's frame base.
    assert_eq!(code.len(), 9, "{code:#?}");
    assert!(matches!(code[0], Instr::BrI32GeSImm { a: 0, imm: 2, .. }));
    // The base case returns the parameter directly.
    assert!(matches!(code[1], Instr::Return1 { src: 0 }));
    assert!(matches!(code[3], Instr::I32SubImm { dst: 1, a: 0, imm: 1 }));
    assert!(matches!(code[4], Instr::CallLocal { func: 0, base: 1 }));
    assert!(matches!(code[8], Instr::Return1 { .. }));
}

#[test]
fn if_with_params_and_dead_code_after_branches() {
    let wat = r#"(module (func (export "f") (param i32 i32) (result i32)
        (local.get 1)
        (if (param i32) (result i32) (local.get 0)
          (then (i32.const 100) (i32.add))
          (else (i32.const 7) (i32.mul)))
        (block (result i32)
          (br 0 (i32.const 1))
          (unreachable)
          (i32.add))
        (i32.add)))"#;
    assert_eq!(run(wat, "f", &[Val::I32(1), Val::I32(5)]).unwrap(), vec![Val::I32(106)]);
    assert_eq!(run(wat, "f", &[Val::I32(0), Val::I32(5)]).unwrap(), vec![Val::I32(36)]);
}

#[test]
fn tail_calls_run_in_constant_frames() {
    // 1,000,000 tail calls would exhaust the frame limit if they were ordinary calls.
    let wat = r#"(module
        (func $count (export "count") (param i64 i64) (result i64)
          (if (result i64) (i64.eqz (local.get 0)) (then (local.get 1))
            (else (return_call $count (i64.sub (local.get 0) (i64.const 1)) (i64.add (local.get 1) (i64.const 2)))))))"#;
    assert_eq!(run(wat, "count", &[Val::I64(1_000_000), Val::I64(0)]).unwrap(), vec![Val::I64(2_000_000)]);
}

#[test]
fn call_indirect_checks_signatures() {
    let wat = r#"(module
        (type $ii (func (param i32) (result i32)))
        (type $v (func))
        (table funcref (elem $double $nothing))
        (func $double (type $ii) (i32.mul (local.get 0) (i32.const 2)))
        (func $nothing (type $v))
        (func (export "call") (param i32 i32) (result i32)
          (call_indirect (type $ii) (local.get 1) (local.get 0))))"#;
    assert_eq!(run(wat, "call", &[Val::I32(0), Val::I32(21)]).unwrap(), vec![Val::I32(42)]);
    assert_eq!(run(wat, "call", &[Val::I32(1), Val::I32(21)]).unwrap_err().kind, TrapKind::IndirectCallTypeMismatch);
    assert_eq!(run(wat, "call", &[Val::I32(2), Val::I32(21)]).unwrap_err().kind, TrapKind::UndefinedElement);
}

#[test]
fn trap_backtrace_lists_frames_innermost_first() {
    let wat = r#"(module
        (func $inner (unreachable))
        (func $middle (call $inner))
        (func (export "outer") (call $middle)))"#;
    let t = run(wat, "outer", &[]).unwrap_err();
    assert_eq!(t.kind, TrapKind::Unreachable);
    let idx: Vec<u32> = t.backtrace.iter().map(|f| f.func_index).collect();
    assert_eq!(idx, vec![0, 1, 2]);
}

#[test]
fn br_table_with_value_copies_to_outer_labels() {
    let wat = r#"(module (func (export "f") (param i32) (result i32)
        (block $outer (result i32)
          (i32.const 1) (drop)
          (block $inner (result i32)
            (i32.const 99) (i32.const 42)
            (br_table $inner $outer (local.get 0)))
          (i32.const 1000) (i32.add))))"#;
    assert_eq!(run(wat, "f", &[Val::I32(0)]).unwrap(), vec![Val::I32(1042)]);
    assert_eq!(run(wat, "f", &[Val::I32(1)]).unwrap(), vec![Val::I32(42)]);
}

#[test]
fn validation_errors_name_the_source_line() {
    let text = "(module\n  (func (result i32)\n    f32.const 1))";
    let source = Source::from_text("bad.wat", text).expect("parses");
    let err = Store::new(Default::default()).load_module(source).expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.starts_with("bad.wat:3:"), "{msg}");
    assert!(msg.contains("type mismatch"), "{msg}");
}

#[test]
fn backtraces_carry_names_and_lines() {
    let text = "(module\n  (func $boom (unreachable))\n  (func (export \"go\") (call $boom)))";
    let mut store = Store::new(Default::default());
    let m = store.load_module(Source::from_text("t.wat", text).unwrap()).unwrap();
    let i = store.instantiate(m, &Linker::new()).unwrap();
    let Some(crate::Extern::Func(f)) = store.get_export(i, "go") else { panic!() };
    let t = store.call(f, &[]).unwrap_err();
    assert_eq!(t.backtrace[0].func_name.as_deref(), Some("boom"));
    let loc = t.backtrace[0].source.clone().expect("line known");
    assert_eq!((loc.line, loc.column), (2, 16));
    assert_eq!(t.backtrace[1].source.as_ref().map(|l| l.line), Some(3));
}

/// Run `export` with a collection at every allocation and the heap verifier on: any reference the
/// translator forgot in a stack map is freed while still in use, and the verifier or the result
/// catches it.
fn run_stressed(wat: &str, export: &str, args: &[Val]) -> Result<Vec<Val>, Trap> {
    let wasm = wat::parse_str(wat).expect("test module parses");
    let mut config = crate::Config::default();
    config.gc.stress_every = Some(1);
    config.gc.verify = true;
    let mut store = Store::new(config);
    let m = store.load_module(Source::from_binary("gc.wat", wasm)).expect("loads");
    let i = store.instantiate(m, &Linker::new()).expect("instantiates");
    let Some(crate::Extern::Func(f)) = store.get_export(i, export) else { panic!("no export {export}") };
    let r = store.call(f, args);
    assert!(store.gc_stats().collections > 0, "stress mode collected");
    r
}

const TREES: &str = r#"(module
  (type $t (struct (field $l (ref null $t)) (field $r (ref null $t)) (field $v i32)))
  (global $keep (mut (ref null $t)) (ref.null $t))
  (table $tab 1 (ref null $t))
  (func $make (param $d i32) (result (ref $t))
    (if (result (ref $t)) (i32.eqz (local.get $d))
      (then (struct.new $t (ref.null $t) (ref.null $t) (i32.const 1)))
      ;; the left subtree lives only in an operand slot while the right one is built
      (else (struct.new $t (call $make (i32.sub (local.get $d) (i32.const 1)))
                           (call $make (i32.sub (local.get $d) (i32.const 1)))
                           (local.get $d)))))
  (func $sum (param $n (ref null $t)) (result i32)
    (if (result i32) (ref.is_null (local.get $n)) (then (i32.const 0))
      (else (i32.add (struct.get $t $v (local.get $n))
              (i32.add (call $sum (struct.get $t $l (local.get $n)))
                       (call $sum (struct.get $t $r (local.get $n))))))))
  (func (export "run") (param $d i32) (result i32)
    (global.set $keep (call $make (local.get $d)))
    (table.set $tab (i32.const 0) (call $make (local.get $d)))
    (drop (call $make (local.get $d)))
    (i32.add (call $sum (global.get $keep)) (call $sum (table.get $tab (i32.const 0))))))"#;

#[test]
fn gc_roots_are_precise_under_stress() {
    // Each tree of depth 5 sums to 1*32 + sum over inner levels d*2^(5-d) = 32+5+8+12+16+16 = 89.
    assert_eq!(run_stressed(TREES, "run", &[Val::I32(5)]).unwrap(), vec![Val::I32(178)]);
}

#[test]
fn gc_arrays_and_casts_under_stress() {
    let wat = r#"(module
      (type $b (sub (struct (field i32))))
      (type $c (sub $b (struct (field i32) (field i64))))
      (type $a (array (mut (ref null $b))))
      (func (export "run") (param $n i32) (result i32)
        (local $arr (ref $a)) (local $i i32) (local $sum i32)
        (local.set $arr (array.new_default $a (local.get $n)))
        (block $done (loop $fill
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (array.set $a (local.get $arr) (local.get $i)
            (if (result (ref $b)) (i32.and (local.get $i) (i32.const 1))
              (then (struct.new $c (local.get $i) (i64.const 7)))
              (else (struct.new $b (local.get $i)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $fill)))
        (local.set $i (i32.const 0))
        (block $done (loop $count
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (ref.test (ref $c) (array.get $a (local.get $arr) (local.get $i)))
            (then (local.set $sum (i32.add (local.get $sum)
              (struct.get $c 0 (ref.cast (ref $c) (array.get $a (local.get $arr) (local.get $i))))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $count)))
        (local.get $sum)))"#;
    // Sum of the odd numbers below 40.
    assert_eq!(run_stressed(wat, "run", &[Val::I32(40)]).unwrap(), vec![Val::I32(400)]);
}

#[test]
fn gc_heap_limit_is_a_clean_trap() {
    let wat = r#"(module (type $a (array (mut i64)))
      (global $keep (mut (ref null $a)) (ref.null $a))
      (func (export "grow") (param $n i32)
        (loop $l (global.set $keep (array.new $a (i64.const 1) (local.get $n))) (br $l))))"#;
    let wasm = wat::parse_str(wat).unwrap();
    let mut config = crate::Config::default();
    config.gc.max_heap_bytes = Some(8 << 20);
    let mut store = Store::new(config);
    let m = store.load_module(Source::from_binary("oom.wat", wasm)).unwrap();
    let i = store.instantiate(m, &Linker::new()).unwrap();
    let Some(crate::Extern::Func(f)) = store.get_export(i, "grow") else { panic!() };
    // Each array is 16 MiB: over the limit on the first allocation.
    let t = store.call(f, &[Val::I32(2 << 20)]).unwrap_err();
    assert_eq!(t.to_string(), "out of memory: heap limit 8 MiB reached");
}

#[test]
fn a_store_dropped_while_tracing_still_writes_a_complete_trace() {
    // The embedder never calls `finish_trace`: dropping the store closes the trace with the exit snapshot.
    let path = std::env::temp_dir().join(format!("vm-drop-{}.trace", std::process::id()));
    {
        let mut store = Store::new(crate::Config::default());
        store.trace_allocations(vmtrace::Tracer::create(&path, vmtrace::TraceConfig::default()).unwrap());
        let wasm = wat::parse_str(TREES).expect("test module parses");
        let m = store.load_module(Source::from_binary("trees.wat", wasm)).expect("loads");
        let i = store.instantiate(m, &Linker::new()).expect("instantiates");
        let Some(crate::Extern::Func(f)) = store.get_export(i, "run") else { panic!("no export run") };
        assert_eq!(store.call(f, &[Val::I32(4)]).unwrap(), vec![Val::I32(84)]);
    }
    let trace = vmtrace::Trace::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(trace.error.is_none(), "{:?}", trace.error);
    assert_eq!(trace.generations.len(), 2, "the run's generation and the exit snapshot");
    let (live, disagreements) = vmtrace::replay_all(&trace, |_, _, _, _| {}).unwrap();
    assert!(disagreements.is_empty());
    // Three trees of depth 4 (31 nodes each) were made; all are still in the heap (no collection ran).
    assert_eq!(live.objects(), 93);
    let types: Vec<&str> = trace.generations[1].types.values().map(|t| t.name.as_str()).collect();
    assert!(types.contains(&"$t"), "{types:?}");
}

/// Constant expressions allocate several objects deep, and element segments hold many such items: every
/// object the host has made but not yet stored must survive a collection at each allocation.
const NESTED_CONSTANTS: &str = r#"(module
  (type $leaf (struct (field i32)))
  (type $pair (struct (field (ref $leaf)) (field (ref $leaf))))
  (type $arr (array (ref null $pair)))
  (global $g (ref $arr)
    (array.new_fixed $arr 3
      (struct.new $pair (struct.new $leaf (i32.const 1)) (struct.new $leaf (i32.const 2)))
      (ref.null $pair)
      (struct.new $pair (struct.new $leaf (i32.const 3)) (struct.new $leaf (i32.const 4)))))
  (global $f (ref $arr) (array.new $arr (struct.new $pair (struct.new $leaf (i32.const 5))
                                                          (struct.new $leaf (i32.const 6))) (i32.const 2)))
  (table $t 4 (ref null $pair))
  (elem (table $t) (i32.const 0) (ref null $pair)
    (struct.new $pair (struct.new $leaf (i32.const 10)) (struct.new $leaf (i32.const 20)))
    (struct.new $pair (struct.new $leaf (i32.const 30)) (struct.new $leaf (i32.const 40)))
    (struct.new $pair (struct.new $leaf (i32.const 50)) (struct.new $leaf (i32.const 60))))
  (func $sum (param $p (ref null $pair)) (result i32)
    (if (result i32) (ref.is_null (local.get $p)) (then (i32.const 0))
      (else (i32.add (struct.get $leaf 0 (struct.get $pair 0 (local.get $p)))
                     (struct.get $leaf 0 (struct.get $pair 1 (local.get $p)))))))
  (func (export "run") (result i32)
    (i32.add
      (i32.add (call $sum (array.get $arr (global.get $g) (i32.const 0)))
               (call $sum (array.get $arr (global.get $g) (i32.const 2))))
      (i32.add
        (i32.add (call $sum (array.get $arr (global.get $f) (i32.const 1)))
                 (call $sum (table.get $t (i32.const 0))))
        (i32.add (call $sum (table.get $t (i32.const 1))) (call $sum (table.get $t (i32.const 2))))))))"#;

#[test]
fn nested_allocations_in_constant_expressions_survive_stress() {
    assert_eq!(run_stressed(NESTED_CONSTANTS, "run", &[]).unwrap(), vec![Val::I32(1 + 2 + 3 + 4 + 5 + 6 + 210)]);
}

/// Two stores of one runtime run on two OS threads at the same time, each instance allocating on the one
/// heap; each thread's collections must keep the other thread's objects (its frames and globals) alive.
#[test]
fn two_mutators_allocate_on_one_heap_at_the_same_time() {
    let wasm = wat::parse_str(TREES).unwrap();
    let mut config = crate::Config::default();
    config.gc.verify = true;
    config.gc.min_heap_bytes = 1 << 20;
    let rt = crate::Runtime::new(config);
    let m = rt.load_module(Source::from_binary("trees.wat", wasm)).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let mut store = Store::with_runtime(rt);
                let i = store.instantiate(m, &Linker::new()).unwrap();
                let Some(crate::Extern::Func(f)) = store.get_export(i, "run") else { panic!() };
                (0..20).map(|_| store.call(f, &[Val::I32(12)]).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for r in t.join().unwrap() {
            assert_eq!(r, vec![Val::I32(tree_sum(12))]);
        }
    }
    assert!(rt.heap_stats().collections > 0, "the threads collected");
}

/// What `TREES`'s `run` returns for depth `d`: twice the sum of a tree whose leaves hold 1 and whose inner
/// nodes hold their depth.
fn tree_sum(d: i32) -> i32 {
    let node = |d: i32| -> i32 { (0..=d).fold(0, |sum, level| if level == 0 { 1 } else { level + 2 * sum }) };
    2 * node(d)
}

/// `f(n)` calls the host, which calls `f(n - 1)` back through `Caller::call`: host → wasm → host → wasm
/// nesting on the mutator's native stack. Returns the store and `f`, with the host's `Func` slot filled.
fn nesting_store() -> (Store, crate::Func) {
    use std::sync::{Arc, OnceLock};
    let wat = r#"(module
      (import "host" "down" (func $down (param i32) (result i32)))
      (func (export "f") (param $n i32) (result i32)
        (if (result i32) (i32.eqz (local.get $n)) (then (i32.const 0))
          (else (i32.add (i32.const 1) (call $down (i32.sub (local.get $n) (i32.const 1))))))))"#;
    let mut store = Store::new(Default::default());
    let f_slot: Arc<OnceLock<crate::Func>> = Arc::new(OnceLock::new());
    let slot = f_slot.clone();
    let ty = crate::FuncType { params: vec![crate::ValType::I32], results: vec![crate::ValType::I32] };
    let down = store.new_host_func(
        ty,
        Box::new(move |caller, args, results| {
            let f = *slot.get().expect("f is set after instantiation");
            results[0] = caller.call(f, args)?[0];
            Ok(())
        }),
    );
    let mut linker = Linker::new();
    linker.define("host", "down", crate::Extern::Func(down));
    let m = store.load_module(Source::from_text("nest.wat", wat).unwrap()).unwrap();
    let i = store.instantiate(m, &linker).unwrap();
    let Some(crate::Extern::Func(f)) = store.get_export(i, "f") else { panic!() };
    f_slot.set(f).unwrap();
    (store, f)
}

#[test]
fn host_and_wasm_nest_on_the_native_stack() {
    let (mut store, f) = nesting_store();
    assert_eq!(store.call(f, &[Val::I32(100)]).unwrap(), vec![Val::I32(100)]);
}

#[test]
fn nesting_past_the_native_stack_is_a_clean_trap() {
    let (mut store, f) = nesting_store();
    let t = store.call(f, &[Val::I32(10_000_000)]).unwrap_err();
    assert_eq!(t.kind, TrapKind::CallStackExhausted);
    // The store is usable afterwards.
    assert_eq!(store.call(f, &[Val::I32(3)]).unwrap(), vec![Val::I32(3)]);
}

#[test]
fn object_handles_cannot_be_forged_reused_or_mistyped() {
    let wat = r#"(module
      (type $a (struct (field i32)))
      (type $b (struct (field i64)))
      (func (export "make") (result (ref $a)) (struct.new $a (i32.const 7)))
      (func (export "get") (param (ref $a)) (result i32) (struct.get $a 0 (local.get 0)))
      (func (export "get_b") (param (ref $b)) (result i64) (struct.get $b 0 (local.get 0))))"#;
    let mut store = Store::new(Default::default());
    let m = store.load_module(Source::from_text("h.wat", wat).unwrap()).unwrap();
    let i = store.instantiate(m, &Linker::new()).unwrap();
    let func = |store: &Store, name: &str| match store.get_export(i, name) {
        Some(crate::Extern::Func(f)) => f,
        _ => panic!("no {name}"),
    };
    let (make, get, get_b) = (func(&store, "make"), func(&store, "get"), func(&store, "get_b"));
    let obj = store.call(make, &[]).unwrap()[0];
    store.collect_garbage();
    assert_eq!(store.call(get, &[obj]).unwrap(), vec![Val::I32(7)], "a handed-out object stays rooted");
    assert!(store.call(get_b, &[obj]).is_err(), "a handle of the wrong type is refused");
    let forged = Val::Ref(crate::Ref::Struct(crate::ObjHandle::from_parts(1000, 1)));
    assert!(store.call(get, &[forged]).is_err(), "a made-up handle is refused");
    let Val::Ref(r) = obj else { panic!() };
    assert!(store.unroot(r));
    assert!(store.call(get, &[obj]).is_err(), "an unrooted handle is refused");
    let bad_func = Val::Ref(crate::Ref::Func(crate::Func(1_000_000)));
    let g = store.new_global(
        wasmparser::GlobalType { content_type: crate::ValType::FUNCREF, mutable: false, shared: false },
        bad_func,
    );
    assert!(g.is_err(), "a function reference that is not the store's is refused");
}

/// A mutator in a loop without calls or allocations stops for another thread's collection at its loop
/// back-edge: the collection finishes while the loop is still running.
#[test]
fn a_loop_without_calls_stops_for_a_collection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let wat = r#"(module
      (func (export "spin") (param $n i32) (result i32) (local $i i32)
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.ne (local.get $i) (local.get $n))))
        (local.get $i)))"#;
    let rt = crate::Runtime::new(Default::default());
    let m = rt.load_module(Source::from_text("spin.wat", wat).unwrap()).unwrap();
    let (started, finished) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let spinner = {
        let (rt, started, finished) = (rt.clone(), started.clone(), finished.clone());
        std::thread::spawn(move || {
            let mut store = Store::with_runtime(rt);
            let i = store.instantiate(m, &Linker::new()).unwrap();
            let Some(crate::Extern::Func(f)) = store.get_export(i, "spin") else { panic!() };
            started.store(true, Ordering::SeqCst);
            let r = store.call(f, &[Val::I32(100_000_000)]);
            finished.store(true, Ordering::SeqCst);
            r
        })
    };
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut store = Store::with_runtime(rt);
    let t0 = std::time::Instant::now();
    store.collect_garbage();
    let waited = t0.elapsed();
    assert!(!finished.load(Ordering::SeqCst), "the collection waited for the loop to end ({waited:?})");
    eprintln!("stop latency with a spinning mutator: {waited:?}");
    drop(store);
    assert_eq!(spinner.join().unwrap().unwrap(), vec![Val::I32(100_000_000)]);
}

/// Exceptions through host frames: wasm → host → wasm (throws) → the host returns the error → the calling
/// wasm catches it; or the host catches it itself; or nobody does, and it reaches the embedder with the
/// backtrace of the throw through both invocations.
#[test]
fn exceptions_cross_host_functions() {
    let wat = r#"(module
      (import "host" "relay" (func $relay (param i32) (result i32)))
      (import "host" "swallow" (func $swallow (param i32) (result i32)))
      (tag $e (param i32))
      (func $boom (export "boom") (param i32) (result i32) (throw $e (local.get 0)))
      (func (export "outer") (param i32) (result i32)
        (block $h (result i32)
          (try_table (result i32) (catch $e $h) (call $relay (local.get 0)))))
      (func (export "swallowed") (param i32) (result i32) (call $swallow (local.get 0)))
      (func $escape (export "escape") (param i32) (result i32) (call $relay (local.get 0))))"#;
    let mut store = Store::new(Default::default());
    let boom: std::sync::Arc<std::sync::Mutex<Option<crate::Func>>> = Default::default();
    let ty = crate::FuncType { params: vec![crate::ValType::I32], results: vec![crate::ValType::I32] };
    let target = boom.clone();
    let relay = store.new_host_func(
        ty.clone(),
        Box::new(move |caller, args, results| {
            let f = target.lock().unwrap().expect("set after instantiation");
            results[0] = caller.call(f, args)?[0];
            Ok(())
        }),
    );
    let target = boom.clone();
    let swallow = store.new_host_func(
        ty,
        Box::new(move |caller, args, results| {
            let f = target.lock().unwrap().expect("set after instantiation");
            match caller.call(f, args) {
                Err(Trap { kind: TrapKind::UncaughtException { tag, .. }, .. }) if tag == "tag $e" => {
                    results[0] = Val::I32(-1);
                    Ok(())
                }
                other => panic!("expected the exception, got {other:?}"),
            }
        }),
    );
    let mut linker = Linker::new();
    linker.define("host", "relay", crate::Extern::Func(relay));
    linker.define("host", "swallow", crate::Extern::Func(swallow));
    let m = store.load_module(Source::from_binary("x.wasm", wat::parse_str(wat).unwrap())).unwrap();
    let i = store.instantiate(m, &linker).unwrap();
    let export = |store: &Store, name: &str| match store.get_export(i, name) {
        Some(crate::Extern::Func(f)) => f,
        _ => panic!("no export {name}"),
    };
    *boom.lock().unwrap() = Some(export(&store, "boom"));
    let outer = export(&store, "outer");
    assert_eq!(store.call(outer, &[Val::I32(5)]).unwrap(), vec![Val::I32(5)]);
    let swallowed = export(&store, "swallowed");
    assert_eq!(store.call(swallowed, &[Val::I32(5)]).unwrap(), vec![Val::I32(-1)]);
    let escape = export(&store, "escape");
    let trap = store.call(escape, &[Val::I32(5)]).unwrap_err();
    let TrapKind::UncaughtException { exn, tag } = &trap.kind else { panic!("{trap:?}") };
    assert_eq!(tag, "tag $e");
    let names: Vec<_> = trap.backtrace.iter().map(|f| f.func_name.clone().unwrap_or_default()).collect();
    assert_eq!(names, ["boom", "escape"]);
    // The exception reaches the embedder as a rooted handle, released like any other.
    assert!(store.unroot(crate::Ref::Exn(*exn)));
    assert!(!store.unroot(crate::Ref::Exn(*exn)));
    // Outside a catch the store is whole again: the handler still works.
    assert_eq!(store.call(outer, &[Val::I32(9)]).unwrap(), vec![Val::I32(9)]);
}

/// Kotlin/Wasm 2.4 declares struct types with `v128` fields that it never instantiates: such a module loads
/// and runs (even a `struct.new_default` of one), while every way a `v128` could become a value is refused
/// at load with a SIMD error naming the line.
#[test]
fn v128_is_accepted_only_as_an_untouched_field_type() {
    let wat = r#"(module
      (type $mixin (struct (field v128) (field i32) (field (mut v128))))
      (type $vecs (array (mut v128)))
      (func (export "f") (result i32)
        (drop (struct.new_default $mixin))
        (drop (array.new_default $vecs (i32.const 3)))
        (struct.get $mixin 1 (struct.new_default $mixin))))"#;
    assert_eq!(run(wat, "f", &[]).unwrap(), vec![Val::I32(0)]);
    assert_eq!(run_stressed(wat, "f", &[]).unwrap(), vec![Val::I32(0)]);

    let refused = [
        ("(global v128 (v128.const i64x2 0 0))", ": offset"),
        ("(import \"m\" \"g\" (global v128))", ": offset"),
        ("(func (param v128) (nop))", ":2:"),
        ("(func (local v128) (nop))", ":2:"),
        ("(func (result i32)\n (drop (v128.const i64x2 1 2)) (i32.const 0))", ":3:"),
        ("(type $s (struct (field v128)))\n(func (param (ref $s)) (drop (struct.get $s 0 (local.get 0))))", ":3:"),
        (
            "(type $a (array (mut v128)))\n(func (param (ref $a)) (drop (array.get $a (local.get 0) (i32.const 0))))",
            ":3:",
        ),
        ("(func $v (import \"m\" \"v\") (result i32 v128))\n(func (call $v) (drop) (drop))", ":3:"),
        (
            "(tag $t (param v128))\n(func (block (result v128) (try_table (catch $t 0) (nop)) (unreachable)) (drop))",
            ":3:",
        ),
    ];
    for (body, where_) in refused {
        let text = format!("(module\n{body})");
        let source = Source::from_text("v.wat", &text).expect("parses");
        let err = Store::new(Default::default()).load_module(source).expect_err(body).to_string();
        assert!(err.contains("SIMD support is not enabled"), "{body}: {err}");
        assert!(err.starts_with(&format!("v.wat{where_}")), "{body}: {err}");
    }
}
