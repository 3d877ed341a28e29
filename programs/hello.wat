;; hello.wat: the smallest WASI program. `_start` writes "Hello, world!\n" to stdout with one
;; `fd_write` call, the way wasi-libc's `puts` ends up doing it.
;;
;;   vmrun programs/hello.wat          prints: Hello, world!
(module
  ;; fd_write(fd, iovs, iovs_len, nwritten_ptr) -> errno
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; The text lives at offset 16; the iovec {buf, len} at offset 0; nwritten at offset 8.
  (data (i32.const 16) "Hello, world!\n")

  (func $main (export "_start")
    (i32.store (i32.const 0) (i32.const 16))   ;; iov.buf
    (i32.store (i32.const 4) (i32.const 14))   ;; iov.len
    ;; The errno is dropped: there is nothing useful to do if stdout is gone.
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
