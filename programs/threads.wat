;; wasi-threads in miniature: threads spawned with `wasi`.`thread-spawn` share one memory and meet through
;; atomics and `memory.atomic.wait`/`notify`.
;;
;;   vmrun --invoke count programs/threads.wat 4 100000   ;; 4 threads × 100000 atomic increments: 400000
;;   vmrun --invoke grown programs/threads.wat            ;; sees a page another thread added: 42
;;
;; Memory layout (bytes):
;;   0  counter       the threads' atomic increments
;;   4  done          threads finished; the main thread waits on it
;;   8  iterations    how many increments each thread makes
;;   12 grown         set to 1 by the growing thread after `memory.grow`
;;   16 ready         set to 1 by `grown` once it runs the loop that must see the grow
(module
  (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
  (import "env" "memory" (memory 1 16 shared))

  ;; A spawned thread: start_arg 0 counts, 1 grows the memory.
  (func (export "wasi_thread_start") (param $tid i32) (param $mode i32)
    (local $i i32)
    (if (i32.eq (local.get $mode) (i32.const 1))
      (then
        ;; Grow only once the main thread is inside the loop that reads the new page.
        (loop $not_ready
          (if (i32.eqz (i32.atomic.load (i32.const 16)))
            (then
              (drop (memory.atomic.wait32 (i32.const 16) (i32.const 0) (i64.const -1)))
              (br $not_ready))))
        (drop (memory.grow (i32.const 1)))
        ;; The new page is zero and belongs to every thread at once; write it, then publish.
        (i32.store (i32.const 65536) (i32.const 42))
        (i32.atomic.store (i32.const 12) (i32.const 1))
        (drop (memory.atomic.notify (i32.const 12) (i32.const 1)))
        (return)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.atomic.load (i32.const 8))))
        (drop (i32.atomic.rmw.add (i32.const 0) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (drop (i32.atomic.rmw.add (i32.const 4) (i32.const 1)))
    (drop (memory.atomic.notify (i32.const 4) (i32.const -1))))

  ;; Spawn `threads` counting threads of `n` increments each, wait until all are done, return the count.
  (func (export "count") (param $threads i32) (param $n i32) (result i32)
    (local $i i32) (local $done i32)
    (i32.atomic.store (i32.const 8) (local.get $n))
    (block $spawned
      (loop $spawn_next
        (br_if $spawned (i32.ge_u (local.get $i) (local.get $threads)))
        (if (i32.lt_s (call $spawn (i32.const 0)) (i32.const 1)) (then (unreachable)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $spawn_next)))
    (block $all_done
      (loop $wait
        (local.set $done (i32.atomic.load (i32.const 4)))
        (br_if $all_done (i32.ge_u (local.get $done) (local.get $threads)))
        ;; Sleeps only while `done` still holds the value just read: no lost wake-up.
        (drop (memory.atomic.wait32 (i32.const 4) (local.get $done) (i64.const -1)))
        (br $wait)))
    (i32.atomic.load (i32.const 0)))

  ;; Spawn a thread that grows the memory, spin (without leaving the interpreter's loop: atomics and
  ;; backward branches do not) until it says so, then read the new page with a plain load: the view of the
  ;; memory taken before the grow must follow it.
  (func (export "grown") (result i32)
    (if (i32.lt_s (call $spawn (i32.const 1)) (i32.const 1)) (then (unreachable)))
    (i32.atomic.store (i32.const 16) (i32.const 1))
    (drop (memory.atomic.notify (i32.const 16) (i32.const 1)))
    (loop $spin
      (br_if $spin (i32.eqz (i32.atomic.load (i32.const 12)))))
    (i32.load (i32.const 65536)))
)
