;; Shared GC objects across threads (the shared-everything-threads subset vmrun runs).
;;
;; `run(n)`: two threads started with `vmrun`.`thread_spawn` on a shared function reference, each given
;; a shared `$job` struct made in the call itself (so until the thread holds it, only the runtime's
;; hand-off keeps it alive). Each thread makes `n` shared arrays, counts in them with `array.atomic.rmw.add`,
;; and pushes a shared `$node` per iteration onto one lock-free list (a Treiber stack: `struct.atomic.rmw.cmpxchg` on the
;; head field of the shared struct in the shared global `$list`). The main thread waits for both (`global.atomic.get` of
;; `$finished`) and sums the list: nodes allocated by the workers, read by another thread, kept alive
;; across every thread's collections. Result: sum over i < n of (i + 2) + (i + 1001) = n(n + 1) + 1001n.
;;
;; `leak(threads, iterations)`: the race detector's leak benchmark (issue 13's point 5, Go's
;; BenchmarkSyncLeak): each thread makes a 1 KiB shared array per iteration, makes 16 atomic adds at 16
;; places in it (each a synchronization object for `--race`, at an address that moves with the iteration)
;; and drops it. Returns the iterations done.
(module
  (type $node (shared (struct (field $val i64) (field $next (mut (ref null $node))))))
  (type $list (shared (struct (field $head (mut (ref null $node))))))
  (type $buf (shared (array (mut i32))))
  (type $job (shared (struct (field $iters i32) (field $seed i32) (field $keep i32) (field $size i32))))
  (type $worker_t (shared (func (param (ref null (shared any))))))
  (type $sleep_t (shared (func (param i64))))
  (type $push_t (shared (func (param (ref $node)))))
  (import "vmrun" "thread_spawn" (func $spawn (param (ref null (shared func)) (ref null (shared any))) (result i32)))
  (import "env" "memory" (memory 1 1 shared))
  ;; wasmparser 0.263 accepts `global.atomic.*` on i32, i64 and unshared references only, so the list's
  ;; head is a field of a shared struct that an immutable shared global holds.
  (global $list (shared (ref $list)) (struct.new $list (ref.null $node)))
  (global $finished (shared mut i32) (i32.const 0))
  (global $iterations (shared mut i32) (i32.const 0))

  ;; Sleeps `ns` nanoseconds in a wait nobody notifies.
  (func $sleep (type $sleep_t) (param $ns i64)
    (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (local.get $ns))))

  ;; Pushes `n` onto the list at `$head`.
  (func $push (type $push_t) (param $n (ref $node))
    (local $old (ref null $node))
    (loop $retry
      (local.set $old (struct.atomic.get seqcst $list $head (global.get $list)))
      (struct.set $node $next (local.get $n) (local.get $old))
      (br_if $retry
        (i32.eqz
          (ref.eq
            (struct.atomic.rmw.cmpxchg seqcst $list $head (global.get $list) (local.get $old) (local.get $n))
            (local.get $old))))))

  (func $worker (type $worker_t) (param $p (ref null (shared any)))
    (local $job (ref $job))
    (local $i i32)
    (local $k i32)
    (local $buf (ref null $buf))
    (local.set $job (ref.cast (ref $job) (local.get $p)))
    (block $done
      (br_if $done (i32.eqz (struct.get $job $iters (local.get $job))))
      (loop $next
        (local.set $buf (array.new_default $buf (struct.get $job $size (local.get $job))))
        ;; 16 atomic adds at 16 places spread over the array, shifted by the iteration (so over time the
        ;; atomics reach every element of every slot the arrays are given, as a ring buffer's would).
        (local.set $k (i32.const 0))
        (loop $adds
          (drop (array.atomic.rmw.add seqcst $buf (local.get $buf)
            (i32.rem_u
              (i32.add (i32.mul (local.get $k) (i32.const 16)) (local.get $i))
              (struct.get $job $size (local.get $job)))
            (i32.const 1)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $adds (i32.lt_u (local.get $k) (i32.const 16))))
        ;; A plain write and read of this thread's own array (instrumented under --race, never a race).
        (array.set $buf (local.get $buf) (i32.const 1) (i32.add (local.get $i) (i32.const 1)))
        (if (struct.get $job $keep (local.get $job))
          (then
            (call $push
              (struct.new $node
                (i64.extend_i32_u
                  (i32.add (array.get $buf (local.get $buf) (i32.const 1)) (struct.get $job $seed (local.get $job))))
                (ref.null $node)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (struct.get $job $iters (local.get $job))))))
    (drop (global.atomic.rmw.add seqcst $iterations (local.get $i)))
    (drop (global.atomic.rmw.add seqcst $finished (i32.const 1))))

  ;; Starts a worker on a new job; traps if the thread cannot start.
  (func $start (param $iters i32) (param $seed i32) (param $keep i32) (param $size i32)
    (if (i32.lt_s
          (call $spawn (ref.func $worker)
            (struct.new $job (local.get $iters) (local.get $seed) (local.get $keep) (local.get $size)))
          (i32.const 1))
      (then (unreachable))))

  ;; 16 jobs that nobody runs: garbage made while a thread may still be on its way to its job, whose slots
  ;; a collection in between would hand out again (so a job not kept alive until its thread holds it would
  ;; be overwritten: the negative control of tests/gc.rs).
  (func $garbage
    (local $i i32)
    (loop $next
      (drop (struct.new $job (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 16)))))

  (func $wait_for (param $threads i32)
    (loop $wait
      (if (i32.lt_u (global.atomic.get seqcst $finished) (local.get $threads))
        (then (call $sleep (i64.const 1_000_000)) (br $wait)))))

  (func (export "run") (param $n i32) (result i64)
    (local $node (ref null $node))
    (local $sum i64)
    (call $start (local.get $n) (i32.const 1) (i32.const 1) (i32.const 16))
    (call $garbage)
    (call $start (local.get $n) (i32.const 1000) (i32.const 1) (i32.const 16))
    (call $garbage)
    (call $wait_for (i32.const 2))
    (local.set $node (struct.atomic.get seqcst $list $head (global.get $list)))
    (block $end
      (loop $walk
        (br_if $end (ref.is_null (local.get $node)))
        (local.set $sum (i64.add (local.get $sum) (struct.get $node $val (local.get $node))))
        (local.set $node (struct.get $node $next (local.get $node)))
        (br $walk)))
    (local.get $sum))

  (func (export "leak") (param $threads i32) (param $iters i32) (result i32)
    (local $t i32)
    (block $started
      (loop $next
        (br_if $started (i32.ge_u (local.get $t) (local.get $threads)))
        (call $start (local.get $iters) (i32.const 0) (i32.const 0) (i32.const 256))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $next)))
    (call $wait_for (local.get $threads))
    (global.get $iterations))
  (elem declare func $worker))
