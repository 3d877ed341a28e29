;; sieve.wat: the sieve of Eratosthenes over a byte array in linear memory: memory-bound
;; loads, stores and tight loops.
;;
;;   vmrun --invoke sieve programs/sieve.wat 100            prints: 25
;;   vmrun --invoke run programs/sieve.wat 10000000 10      prints: 664579   (the benchmark)
;;   vmrun programs/sieve.wat                               prints: primes below 1000000: 78498
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; Page 0 holds the iovec, the digit buffer and the text; the sieve's bytes start at
  ;; $flags and the memory grows to fit them.
  (memory (export "memory") 1)
  (global $flags i32 (i32.const 65536))
  (data (i32.const 64) "primes below 1000000: ")

  ;; The number of primes below $n. Byte $flags + i is 1 while i may still be prime.
  (func $sieve (export "sieve") (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $count i32) (local $need i32)
    (if (i32.lt_u (local.get $n) (i32.const 3)) (then (return (i32.const 0))))
    ;; Grow memory to hold $flags + $n bytes (rounded up to whole pages).
    (local.set $need
      (i32.sub
        (i32.shr_u (i32.add (i32.add (global.get $flags) (local.get $n)) (i32.const 65535)) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    ;; 0 and 1 are not prime; everything else starts as a candidate.
    (memory.fill (global.get $flags) (i32.const 1) (local.get $n))
    (i32.store16 (global.get $flags) (i32.const 0))
    ;; Cross out the multiples of each prime $i from $i * $i on, for $i * $i < $n.
    (local.set $i (i32.const 2))
    (block $done
      (loop $next_i
        (br_if $done (i32.ge_u (i32.mul (local.get $i) (local.get $i)) (local.get $n)))
        (if (i32.load8_u (i32.add (global.get $flags) (local.get $i)))
          (then
            (local.set $j (i32.mul (local.get $i) (local.get $i)))
            (loop $cross
              (i32.store8 (i32.add (global.get $flags) (local.get $j)) (i32.const 0))
              (local.set $j (i32.add (local.get $j) (local.get $i)))
              (br_if $cross (i32.lt_u (local.get $j) (local.get $n))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_i)))
    ;; Count the survivors.
    (local.set $i (i32.const 0))
    (loop $count_next
      (local.set $count
        (i32.add (local.get $count) (i32.load8_u (i32.add (global.get $flags) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $count_next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $count))

  ;; Sieve below $n, $reps times (the benchmark workload); returns the last count.
  (func $run (export "run") (param $n i32) (param $reps i32) (result i32)
    (local $count i32)
    (loop $again
      (local.set $count (call $sieve (local.get $n)))
      (local.set $reps (i32.sub (local.get $reps) (i32.const 1)))
      (br_if $again (i32.gt_s (local.get $reps) (i32.const 0))))
    (local.get $count))

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; Print $n in decimal and a newline, filling the buffer [32, 64) from its end.
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
    (call $write (i32.const 64) (i32.const 22))
    (call $print_u32 (call $sieve (i32.const 1000000)))))
