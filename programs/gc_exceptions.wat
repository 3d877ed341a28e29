;; Exceptions on the GC heap: `run n` throws n exceptions, each carrying a fresh struct, through
;; `call_ref`, a `return_call_indirect` that replaces the frame between thrower and handler, a
;; `try_table` that keeps the exception (`catch_all_ref`) while it allocates garbage (so collections
;; happen while the exception alone holds its payload), `throw_ref`, and legacy `try`/`catch`/`rethrow`.
;; Returns the sum over i < n of (i % 5 == 0 ? 1000 : 3 * i), read back from the payloads.
(module $gc_exceptions
  (type $box (struct (field i64)))
  (type $pair (struct (field (ref $box)) (field (ref null $pair))))
  (type $thrower (func (param i32)))
  (tag $found (param (ref $box) i32))
  (tag $empty)
  (table $throwers 2 funcref)
  (elem (table $throwers) (i32.const 0) func $throw_box $throw_empty)
  (elem declare func $pick)

  (func $throw_box (type $thrower) (param $i i32)
    (throw $found
      (struct.new $box (i64.extend_i32_u (i32.mul (local.get $i) (i32.const 3))))
      (local.get $i)))

  (func $throw_empty (type $thrower) (param $i i32)
    (throw $empty))

  ;; Every fifth one throws $empty.
  (func $pick (type $thrower) (param $i i32)
    (return_call_indirect $throwers (type $thrower)
      (local.get $i)
      (i32.eqz (i32.rem_u (local.get $i) (i32.const 5)))))

  (func $keep_and_rethrow (param $i i32)
    (local $exn exnref)
    (local $junk (ref null $pair))
    (local $k i32)
    (block $caught (result exnref)
      (try_table (catch_all_ref $caught)
        (call_ref $thrower (local.get $i) (ref.func $pick)))
      (return))
    (local.set $exn)
    (loop $garbage
      (local.set $junk (struct.new $pair (struct.new $box (i64.const 1)) (local.get $junk)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $garbage (i32.lt_u (local.get $k) (i32.const 8))))
    (throw_ref (local.get $exn)))

  (func $legacy (param $i i32) (result i64)
    (try (result i64)
      (do
        (try
          (do (call $keep_and_rethrow (local.get $i)))
          (catch_all (rethrow 0)))
        (i64.const 0))
      (catch $found
        (drop)
        (struct.get $box 0))
      (catch $empty
        (i64.const 1000))))

  (func (export "run") (param $n i32) (result i64)
    (local $i i32)
    (local $sum i64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $sum (i64.add (local.get $sum) (call $legacy (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sum)))
