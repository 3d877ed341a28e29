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
fn dump_fib_code() {
    let wasm = wat::parse_str(FIB).unwrap();
    let mut store = Store::new(Default::default());
    let m = store.load_module(Source::from_binary("t", wasm)).unwrap();
    for (i, ins) in store.modules[m.0 as usize].code[0].code.iter().enumerate() {
        eprintln!("{i}: {ins:?}");
    }
}
