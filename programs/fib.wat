;; fib.wat: naive doubly recursive Fibonacci, the classic call-overhead benchmark.
;;
;;   vmrun --invoke fib programs/fib.wat 35    prints: 9227465
;;   vmrun programs/fib.wat                    prints: fib(25) = 75025
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; 0..8: iovec and nwritten; 32..64: digit buffer; 64..: text.
  (memory (export "memory") 1)
  (data (i32.const 64) "fib(25) = ")

  ;; fib(0) = 0, fib(1) = 1, fib(n) = fib(n-1) + fib(n-2). Exponential on purpose: almost all
  ;; the time goes into calls, returns, a compare and a branch.
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else
        (i32.add
          (call $fib (i32.sub (local.get $n) (i32.const 1)))
          (call $fib (i32.sub (local.get $n) (i32.const 2)))))))

  ;; Write memory[ptr..ptr+len) to stdout.
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; Print $n in decimal and a newline. Digits come out least significant first, so the
  ;; buffer [32, 64) is filled from its end.
  (func $print_u32 (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 63))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (call $write (local.get $p) (i32.sub (i32.const 64) (local.get $p))))

  (func $main (export "_start")
    (call $write (i32.const 64) (i32.const 10))
    (call $print_u32 (call $fib (i32.const 25)))))
