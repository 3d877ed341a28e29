;; binary_trees.wat: the Benchmarks Game's binary-trees on Wasm GC structs: a stretch tree of
;; depth n+1, a long-lived tree of depth n, and 2^(n-d+4) short-lived trees of each depth
;; d = 4, 6, ..., n. Nearly all time is allocation and collection of two-field structs.
;;
;;   vmrun --invoke run programs/binary_trees.wat 10     prints: 135854     (the sum of all node counts)
;;   vmrun --invoke run programs/binary_trees.wat 16     prints: 14985902
(module
  ;; A node: two children, both null in a leaf.
  (type $tree (struct (field $left (ref null $tree)) (field $right (ref null $tree))))

  (func $make (param $depth i32) (result (ref $tree))
    (if (result (ref $tree)) (i32.eqz (local.get $depth))
      (then (struct.new $tree (ref.null $tree) (ref.null $tree)))
      (else
        (struct.new $tree
          (call $make (i32.sub (local.get $depth) (i32.const 1)))
          (call $make (i32.sub (local.get $depth) (i32.const 1)))))))

  ;; Number of nodes in the tree: 2^(depth+1) - 1.
  (func $check (param $t (ref $tree)) (result i32)
    (local $left (ref null $tree))
    (local.set $left (struct.get $tree $left (local.get $t)))
    (if (result i32) (ref.is_null (local.get $left))
      (then (i32.const 1))
      (else
        (i32.add
          (i32.add (i32.const 1) (call $check (ref.as_non_null (local.get $left))))
          (call $check (ref.as_non_null (struct.get $tree $right (local.get $t))))))))

  (func $run (export "run") (param $n i32) (result i32)
    (local $max i32) (local $depth i32) (local $iterations i32) (local $i i32) (local $total i32)
    (local $long_lived (ref null $tree))
    ;; max_depth = max(6, n)
    (local.set $max (select (local.get $n) (i32.const 6) (i32.gt_s (local.get $n) (i32.const 6))))
    (local.set $total (call $check (call $make (i32.add (local.get $max) (i32.const 1)))))
    (local.set $long_lived (call $make (local.get $max)))
    (local.set $depth (i32.const 4))
    (loop $depths
      (local.set $iterations
        (i32.shl (i32.const 1) (i32.add (i32.sub (local.get $max) (local.get $depth)) (i32.const 4))))
      (local.set $i (i32.const 0))
      (loop $trees
        (local.set $total (i32.add (local.get $total) (call $check (call $make (local.get $depth)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $trees (i32.lt_s (local.get $i) (local.get $iterations))))
      (local.set $depth (i32.add (local.get $depth) (i32.const 2)))
      (br_if $depths (i32.le_s (local.get $depth) (local.get $max))))
    ;; The long-lived tree must have survived every collection intact.
    (i32.add (local.get $total) (call $check (ref.as_non_null (local.get $long_lived))))))
