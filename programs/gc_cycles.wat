;; gc_cycles.wat: cyclic garbage. Each round builds a two-node cycle (a -> b -> a), each node
;; holding a 64-byte i64 array, then drops it; only the current cycle is live. A reference-
;; counting collector never frees these; a tracing one keeps memory flat.
;;
;;   vmrun --invoke run programs/gc_cycles.wat 1000        prints: 500500   (sum of 1..k, read back through the cycle)
;;   vmrun --invoke run programs/gc_cycles.wat 5000000     prints: 12500002500000
(module
  (type $payload (array (mut i64)))
  (rec (type $node (struct (field $next (mut (ref null $node))) (field $data (ref $payload)))))

  (func $run (export "run") (param $k i32) (result i64)
    (local $i i32) (local $sum i64)
    (local $a (ref null $node)) (local $b (ref null $node))
    (loop $round
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      ;; a's payload is 8 copies of i; b's is zeros.
      (local.set $a
        (struct.new $node (ref.null $node) (array.new $payload (i64.extend_i32_u (local.get $i)) (i32.const 8))))
      (local.set $b (struct.new $node (local.get $a) (array.new_default $payload (i32.const 8))))
      (struct.set $node $next (local.get $a) (local.get $b))
      ;; Read i back the long way round: b -> a -> b -> a, last element.
      (local.set $sum
        (i64.add (local.get $sum)
          (array.get $payload
            (struct.get $node $data
              (struct.get $node $next (struct.get $node $next (struct.get $node $next (local.get $b)))))
            (i32.const 7))))
      (br_if $round (i32.lt_u (local.get $i) (local.get $k))))
    (local.get $sum)))
