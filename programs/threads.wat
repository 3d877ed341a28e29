;; wasi-threads in miniature: threads spawned with `wasi`.`thread-spawn` share one memory and meet through
;; atomics and `memory.atomic.wait`/`notify`.
;;
;;   vmrun --invoke count programs/threads.wat 4 100000   ;; 4 threads × 100000 atomic increments: 400000
;;   vmrun --invoke grown programs/threads.wat            ;; sees a page another thread added: 42
;;   vmrun --invoke lists programs/threads.wat 4 200      ;; 4 threads × 200 lists of 100 GC structs: 3960000
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

  ;; A list node on the GC heap (each thread's own objects; collections stop every thread).
  (type $node (struct (field $value i32) (field $next (ref null $node))))

  ;; Mode 2: `iterations` times, build a 100-node list and add up its values; add the total to the counter.
  (func $lists (param $iterations i32)
    (local $i i32) (local $k i32) (local $sum i32) (local $list (ref null $node))
    (block $done
      (loop $next_list
        (br_if $done (i32.ge_u (local.get $i) (local.get $iterations)))
        (local.set $list (ref.null $node))
        (local.set $k (i32.const 0))
        (loop $build
          (local.set $list (struct.new $node (local.get $k) (local.get $list)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $build (i32.lt_u (local.get $k) (i32.const 100))))
        (block $walked
          (loop $walk
            (br_if $walked (ref.is_null (local.get $list)))
            (local.set $sum (i32.add (local.get $sum) (struct.get $node $value (local.get $list))))
            (local.set $list (struct.get $node $next (local.get $list)))
            (br $walk)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_list)))
    (drop (i32.atomic.rmw.add (i32.const 0) (local.get $sum))))

  ;; A spawned thread: start_arg 0 counts, 1 grows the memory.
  (func (export "wasi_thread_start") (param $tid i32) (param $mode i32)
    (local $i i32)
    (if (i32.eq (local.get $mode) (i32.const 2))
      (then
        (call $lists (i32.atomic.load (i32.const 8)))
        (drop (i32.atomic.rmw.add (i32.const 4) (i32.const 1)))
        (drop (memory.atomic.notify (i32.const 4) (i32.const -1)))
        (return)))
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
    (call $run_threads (i32.const 0) (local.get $threads) (local.get $n)))

  ;; Spawn `threads` list-building threads of `n` lists each, wait until all are done, return the total.
  (func (export "lists") (param $threads i32) (param $n i32) (result i32)
    (call $run_threads (i32.const 2) (local.get $threads) (local.get $n)))

  ;; Spawn `threads` threads in `mode` with `n` iterations each; wait for all; return the counter.
  (func $run_threads (param $mode i32) (param $threads i32) (param $n i32) (result i32)
    (local $i i32) (local $done i32)
    (i32.atomic.store (i32.const 8) (local.get $n))
    (block $spawned
      (loop $spawn_next
        (br_if $spawned (i32.ge_u (local.get $i) (local.get $threads)))
        (if (i32.lt_s (call $spawn (local.get $mode)) (i32.const 1)) (then (unreachable)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $spawn_next)))
    (block $all_done
      (loop $wait
        (local.set $done (i32.atomic.load (i32.const 4)))
        (br_if $all_done (i32.ge_u (local.get $done) (local.get $threads)))
        ;; Sleeps only while `done` still holds the value just read: no lost wake-up.
        (drop (memory.atomic.wait32 (i32.const 4) (local.get $done) (i64.const -1)))
        (br $wait)))
    ;; Sleep 20 ms (a wait nobody notifies) so the threads, done, also return from `wasi_thread_start`:
    ;; returning from the program ends threads still in wasm (wasi-threads), and under Memcheck one cut
    ;; off there would show as lost memory.
    (drop (memory.atomic.wait32 (i32.const 20) (i32.const 0) (i64.const 20_000_000)))
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
    (i32.load (i32.const 65536))
    ;; As in `run_threads`: let the grower return from `wasi_thread_start` before the program ends.
    (drop (memory.atomic.wait32 (i32.const 20) (i32.const 0) (i64.const 20_000_000))))
)
