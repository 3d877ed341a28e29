;; gc_arrays.wat: array churn. Allocates arrays of pseudo-random lengths (1..1000), fills,
;; copies and sums them, and drops most of them: size classes of every kind, and the bulk array
;; instructions. Every 16th source array is kept in a 64-entry ring, so a changing set of
;; arrays of mixed sizes stays live across collections (and dies 1024 rounds later).
;;
;;   vmrun --invoke run programs/gc_arrays.wat 1000      prints: 249967000   (the sum of every array's elements)
(module
  (type $ints (array (mut i32)))
  (type $ring (array (mut (ref null $ints))))

  (func $run (export "run") (param $k i32) (result i64)
    (local $i i32) (local $len i32) (local $j i32) (local $sum i64)
    (local $src (ref null $ints)) (local $dst (ref null $ints))
    (local $kept (ref $ring))
    (local.set $kept (array.new_default $ring (i32.const 64)))
    (loop $round
      ;; len = (i * 7919) mod 1000 + 1
      (local.set $len (i32.add (i32.rem_u (i32.mul (local.get $i) (i32.const 7919)) (i32.const 1000)) (i32.const 1)))
      (local.set $src (array.new $ints (local.get $i) (local.get $len)))
      (local.set $dst (array.new_default $ints (i32.add (local.get $len) (i32.const 1))))
      ;; every 16th round: kept[(i / 16) mod 64] = src, dropping the array kept there 1024 rounds ago
      (if (i32.eqz (i32.and (local.get $i) (i32.const 15)))
        (then (array.set $ring (local.get $kept)
                (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 63))
                (local.get $src))))
      ;; dst[0] = 1, dst[1..] = src
      (array.fill $ints (local.get $dst) (i32.const 0) (i32.const 1) (i32.const 1))
      (array.copy $ints $ints (local.get $dst) (i32.const 1) (local.get $src) (i32.const 0) (local.get $len))
      (local.set $j (i32.const 0))
      (loop $elements
        (local.set $sum
          (i64.add (local.get $sum) (i64.extend_i32_u (array.get $ints (local.get $dst) (local.get $j)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br_if $elements (i32.lt_u (local.get $j) (array.len (local.get $dst)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $round (i32.lt_u (local.get $i) (local.get $k))))
    (local.get $sum)))
