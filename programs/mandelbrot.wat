;; mandelbrot.wat: count the points of a size x size grid over [-1.5, 0.5] x [-1, 1] that stay
;; in the Mandelbrot set for 50 iterations (escape when |z|^2 > 4), as in the Computer Language
;; Benchmarks Game. Pure f64 arithmetic in a tight loop; the count is a checksum of every rounding.
;;
;;   vmrun --invoke mandelbrot programs/mandelbrot.wat 200     prints: 15899
;;   vmrun --invoke mandelbrot programs/mandelbrot.wat 1200    prints: 571628   (the benchmark)
;;   vmrun programs/mandelbrot.wat                             prints: mandelbrot 200x200: 15899
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)
  (data (i32.const 64) "mandelbrot 200x200: ")

  (func $mandelbrot (export "mandelbrot") (param $size i32) (result i32)
    (local $x i32) (local $y i32) (local $iter i32) (local $inside i32)
    (local $scale f64) (local $cr f64) (local $ci f64)
    (local $zr f64) (local $zi f64) (local $zr2 f64) (local $zi2 f64)
    (if (i32.le_s (local.get $size) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $scale (f64.div (f64.const 2) (f64.convert_i32_s (local.get $size))))
    (loop $row
      ;; ci = 2*y/size - 1
      (local.set $ci (f64.sub (f64.mul (f64.convert_i32_s (local.get $y)) (local.get $scale)) (f64.const 1)))
      (local.set $x (i32.const 0))
      (loop $column
        ;; cr = 2*x/size - 1.5
        (local.set $cr (f64.sub (f64.mul (f64.convert_i32_s (local.get $x)) (local.get $scale)) (f64.const 1.5)))
        (local.set $zr (f64.const 0))
        (local.set $zi (f64.const 0))
        (local.set $zr2 (f64.const 0))
        (local.set $zi2 (f64.const 0))
        (local.set $iter (i32.const 50))
        (block $escaped
          (loop $step
            ;; z = z^2 + c, with zr^2 and zi^2 kept from the escape test.
            (local.set $zi (f64.add (f64.mul (f64.mul (f64.const 2) (local.get $zr)) (local.get $zi)) (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $escaped (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $iter (i32.sub (local.get $iter) (i32.const 1)))
            (br_if $step (local.get $iter)))
          ;; All 50 iterations stayed bounded.
          (local.set $inside (i32.add (local.get $inside) (i32.const 1))))
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br_if $column (i32.lt_s (local.get $x) (local.get $size))))
      (local.set $y (i32.add (local.get $y) (i32.const 1)))
      (br_if $row (i32.lt_s (local.get $y) (local.get $size))))
    (local.get $inside))

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
    (call $write (i32.const 64) (i32.const 20))
    (call $print_u32 (call $mandelbrot (i32.const 200)))))
