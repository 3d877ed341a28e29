;; gc_casts.wat: subtyping, casts and i31. An array of anyref holds circles, rectangles (both
;; subtypes of $shape) and unboxed i31 numbers; the loop classifies each with br_on_cast_fail
;; and ref.test and sums a per-kind value.
;;
;;   vmrun --invoke run programs/gc_casts.wat 30     prints: 27830
(module
  (type $shape (sub (struct (field $kind i32))))
  (type $circle (sub final $shape (struct (field $kind i32) (field $radius i32))))
  (type $rect (sub final $shape (struct (field $kind i32) (field $width i32) (field $height i32))))
  (type $things (array (mut anyref)))

  ;; Element i: i mod 3 = 0 -> circle of radius i; 1 -> i x 2 rectangle; 2 -> i31 of -i.
  (func $build (param $n i32) (result (ref $things))
    (local $a (ref $things)) (local $i i32)
    (local.set $a (array.new_default $things (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (array.set $things (local.get $a) (local.get $i)
          (block $made (result anyref)
            (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 3)))
              (then (br $made (struct.new $circle (i32.const 0) (local.get $i)))))
            (if (i32.eq (i32.rem_u (local.get $i) (i32.const 3)) (i32.const 1))
              (then (br $made (struct.new $rect (i32.const 1) (local.get $i) (i32.const 2)))))
            (ref.i31 (i32.sub (i32.const 0) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $a))

;; circle: 3 r^2; rectangle: w h; i31: its signed value; plus 1000 per $shape found by ref.test.
  (func $value (param $x anyref) (result i64)
    (local $shapes i64) (local $c (ref null $circle)) (local $r (ref null $rect))
    (if (ref.test (ref $shape) (local.get $x)) (then (local.set $shapes (i64.const 1000))))
    ;; br_on_cast_fail leaves the circle on the stack, or branches out with the original value.
    (drop
      (block $not_circle (result anyref)
        (local.set $c (br_on_cast_fail $not_circle anyref (ref $circle) (local.get $x)))
        (return
          (i64.add (local.get $shapes)
            (i64.mul (i64.const 3)
              (i64.extend_i32_s
                (i32.mul (struct.get $circle $radius (local.get $c)) (struct.get $circle $radius (local.get $c)))))))))
    (if (ref.test (ref $rect) (local.get $x))
      (then
        (local.set $r (ref.cast (ref $rect) (local.get $x)))
        (return
          (i64.add (local.get $shapes)
            (i64.extend_i32_s
              (i32.mul (struct.get $rect $width (local.get $r)) (struct.get $rect $height (local.get $r))))))))
    ;; Neither shape: must be an i31 (a failing ref.cast would trap).
    (i64.extend_i32_s (i31.get_s (ref.cast (ref i31) (local.get $x)))))

  (func $run (export "run") (param $n i32) (result i64)
    (local $things (ref null $things)) (local $i i32) (local $sum i64)
    (local.set $things (call $build (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $sum
          (i64.add (local.get $sum) (call $value (array.get $things (local.get $things) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sum)))
