//! `vg_probe <scenario>`: issues client requests and (under Valgrind) provokes the Memcheck reports they should
//! cause, one scenario per run, for `tests/under_valgrind.rs`. Natively every scenario must run to completion
//! with exit code 0: all memory it touches stays valid for Rust (the "bad" reads go to memory that is only
//! *marked* bad for Memcheck), so the same binary serves as the native no-op check.
//!
//! Under Valgrind (`running_on_valgrind() > 0`, and a build with the feature on) the probe also asserts the
//! values requests return, and panics (exit code 101) if one is wrong. Each line it prints is `key=value`.
//!
//! Scenarios: `running`, `clean`, `noaccess`, `mempool`, `metapool`, `freelike`, `resize`, `trim`, `check`,
//! `count-errors`, `leak`, `stack`, `stack-unregistered`, `discard`, `discard-skipped`, and
//! `bench [iterations]` (native cost per request).

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::time::Instant;

use valgrind_bridge as vg;

/// Static memory for pools and custom blocks: addressable and defined to Memcheck, and never a malloc block
/// (a pool chunk overlapping a malloc block would make the leak checker abort).
#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_LEN]>);
// SAFETY: the probe is single-threaded; the arena is only accessed through raw pointers on the main thread.
unsafe impl Sync for Arena {}
const ARENA_LEN: usize = 64 * 1024;
static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_LEN]));

fn arena() -> *mut u8 {
    ARENA.0.get().cast()
}

/// Whether request results can be checked: under Valgrind with requests compiled in.
fn checking() -> bool {
    vg::ENABLED && vg::running_on_valgrind() > 0
}

/// Reads a word the way a buggy program would: a real load Memcheck sees. The memory is always valid for Rust.
#[inline(never)]
fn read_word(p: *const u8) -> u64 {
    // SAFETY: every caller passes an 8-aligned address inside the arena or a live, initialised heap buffer.
    black_box(unsafe { p.cast::<u64>().read_volatile() })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).map(String::as_str).unwrap_or("running");
    println!("enabled={}", vg::ENABLED);
    println!("running_on_valgrind={}", vg::running_on_valgrind());
    match scenario {
        "running" => {}
        "clean" => clean(),
        "noaccess" => noaccess(),
        "mempool" => mempool(),
        "metapool" => metapool(),
        "freelike" => freelike(),
        "resize" => resize(),
        "trim" => trim(),
        "check" => check(),
        "count-errors" => count_errors(),
        "leak" => leak(),
        "stack" => stack(true),
        "stack-unregistered" => stack(false),
        "discard" => discard(true),
        "discard-skipped" => discard(false),
        "bench" => bench(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000_000)),
        other => {
            eprintln!("vg_probe: unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    println!("done={scenario}");
}

/// Every request, used correctly: Memcheck must report nothing (and Valgrind must not abort).
fn clean() {
    let base = arena();
    let pool = base; // the anchor: any unique address
    let span = base.wrapping_add(4096);
    vg::make_mem_noaccess(base, ARENA_LEN);
    vg::create_mempool(pool, 0, false, vg::MempoolFlags::METAPOOL_AUTO_FREE);
    if checking() {
        assert!(vg::mempool_exists(pool));
        assert!(!vg::mempool_exists(span));
    }
    vg::mempool_alloc(pool, span, 4096);
    vg::make_mem_noaccess(span, 4096);
    // Two objects: one freed explicitly, one left to the span's auto-free.
    let (a, b) = (span, span.wrapping_add(64));
    vg::malloclike_block(a, 32, 0, false);
    vg::malloclike_block(b, 48, 0, false);
    // SAFETY: a and b are inside the arena; writing initialises what MALLOCLIKE marked undefined.
    unsafe {
        a.write_bytes(1, 32);
        b.write_bytes(2, 48);
    }
    vg::resizeinplace_block(b, 48, 56, 0);
    // SAFETY: inside the arena; the grown tail is undefined until written.
    unsafe { b.add(48).write_bytes(3, 8) };
    if checking() {
        assert_eq!(vg::check_mem_is_defined(b, 56), 0);
        assert_eq!(vg::check_mem_is_addressable(a, 32), 0);
    }
    let _ = read_word(a) + read_word(b.wrapping_add(48));
    vg::freelike_block(a, 0);

    // Leak checks in the middle of the run: nothing is lost (b is still registered and the arena is a root
    // region, but b is reachable only if a pointer to it exists; keep one in a local).
    let keep = black_box(b);
    vg::do_quick_leak_check();
    vg::do_added_leak_check();
    vg::do_changed_leak_check();
    let counts = vg::count_leaks();
    let blocks = vg::count_leak_blocks();
    println!("leaks={counts:?} leak_blocks={blocks:?}");
    if checking() {
        assert_eq!(counts.leaked, 0);
    }
    let _ = black_box(keep);

    // Chunk bookkeeping: move a chunk's record, rename the pool, trim to the span, free, destroy.
    let span2 = base.wrapping_add(3 * 4096);
    vg::mempool_alloc(pool, span2, 4096);
    vg::mempool_change(pool, span2, span2.wrapping_add(4096), 4096);
    let pool2 = base.wrapping_add(1);
    vg::move_mempool(pool, pool2);
    if checking() {
        assert!(!vg::mempool_exists(pool));
        assert!(vg::mempool_exists(pool2));
    }
    vg::mempool_trim(pool2, span, 4096); // frees the moved chunk, keeps the first span
    vg::mempool_free(pool2, span); // auto-frees b
    vg::destroy_mempool(pool2);
    if checking() {
        assert!(!vg::mempool_exists(pool2));
    }

    // Definedness round trip on ordinary memory.
    vg::make_mem_defined(base, ARENA_LEN);
    vg::make_mem_undefined(base, 64);
    vg::make_mem_defined_if_addressable(base, 64);
    if checking() {
        assert_eq!(vg::check_mem_is_defined(base, ARENA_LEN), 0);
    }

    // Error reporting toggles nest; a stack registration round trip; a translation discard of our own code.
    vg::disable_error_reporting();
    vg::disable_error_reporting();
    vg::enable_error_reporting();
    vg::enable_error_reporting();
    let stack = vec![0u8; 16 * 1024];
    let lo = stack.as_ptr();
    let id = vg::stack_register(lo, lo.wrapping_add(stack.len() - 1));
    vg::stack_change(id, lo, lo.wrapping_add(stack.len() / 2 - 1));
    vg::stack_deregister(id);
    vg::discard_translations(clean as fn() as *const u8, 64);
    if checking() {
        assert!(id >= 1, "stack ids start at 1, got {id}");
        assert_eq!(vg::count_errors(), 0);
    }
}

/// Part of a heap buffer made unaddressable, then read: "Invalid read of size 8 ... 40 bytes inside a block of
/// size 64 alloc'd".
fn noaccess() {
    let buf = Box::new([0u64; 8]); // a 64-byte heap block
    let p = buf.as_ptr().cast::<u8>();
    vg::make_mem_noaccess(p.wrapping_add(32), 32);
    let _ = read_word(p.wrapping_add(40));
    vg::make_mem_defined(p.wrapping_add(32), 32);
}

/// A plain pool chunk freed, then read: "Invalid read of size 8 ... 8 bytes inside a block of size 48 free'd".
fn mempool() {
    let pool = arena();
    let chunk = arena().wrapping_add(256);
    vg::create_mempool(pool, 0, true, vg::MempoolFlags::PLAIN);
    vg::mempool_alloc(pool, chunk, 48);
    vg::mempool_free(pool, chunk);
    let _ = read_word(chunk.wrapping_add(8));
    vg::destroy_mempool(pool);
}

/// An auto-free metapool: a malloc-like object in a superblock, the superblock freed, the object read:
/// "Invalid read of size 8 ... 0 bytes inside a block of size 32 free'd".
fn metapool() {
    let pool = arena();
    let span = arena().wrapping_add(4096);
    vg::create_mempool(pool, 0, false, vg::MempoolFlags::METAPOOL_AUTO_FREE);
    vg::mempool_alloc(pool, span, 4096);
    vg::make_mem_noaccess(span, 4096);
    let obj = span.wrapping_add(128);
    vg::malloclike_block(obj, 32, 0, true);
    let _ = read_word(obj);
    vg::mempool_free(pool, span);
    let _ = read_word(obj);
    vg::destroy_mempool(pool);
}

/// A malloc-like block freed, then read: "Invalid read of size 8 ... 16 bytes inside a block of size 32 free'd".
fn freelike() {
    let obj = arena().wrapping_add(512);
    vg::malloclike_block(obj, 32, 16, true);
    let _ = read_word(obj.wrapping_add(16));
    vg::freelike_block(obj, 16);
    let _ = read_word(obj.wrapping_add(16));
}

/// A malloc-like block shrunk in place, then read past its new end: "0 bytes after a block of size 16 alloc'd".
fn resize() {
    let obj = arena().wrapping_add(512);
    vg::malloclike_block(obj, 32, 0, true);
    vg::resizeinplace_block(obj, 32, 16, 0);
    let _ = read_word(obj.wrapping_add(16));
    vg::freelike_block(obj, 0);
}

/// Three chunks, the pool trimmed to the middle one, the first read: "... inside a block of size 32 free'd".
fn trim() {
    let pool = arena();
    let chunks = [256, 512, 768].map(|off| arena().wrapping_add(off));
    vg::create_mempool(pool, 0, true, vg::MempoolFlags::PLAIN);
    for c in chunks {
        vg::mempool_alloc(pool, c, 32);
    }
    vg::mempool_trim(pool, chunks[1], 32);
    let _ = read_word(chunks[0]);
    let _ = read_word(chunks[1]); // kept: no error
    vg::destroy_mempool(pool);
}

/// The check requests return the first bad address and report "Uninitialised byte(s) found during client
/// check request" / "Unaddressable byte(s) found during client check request".
fn check() {
    let buf = Box::new([0u64; 8]); // a 64-byte heap block
    let p = buf.as_ptr().cast::<u8>();
    let good = vg::check_mem_is_defined(p, 64);
    vg::make_mem_undefined(p.wrapping_add(16), 8);
    let undefined = vg::check_mem_is_defined(p, 64);
    vg::make_mem_noaccess(p.wrapping_add(48), 16);
    let unaddressable = vg::check_mem_is_addressable(p, 64);
    let addressable = vg::check_mem_is_addressable(p, 48);
    vg::make_mem_defined(p, 64);
    println!("check_defined_ok={good} first_undefined_offset={:?}", undefined.checked_sub(p as usize));
    println!(
        "check_addressable_ok={addressable} first_unaddressable_offset={:?}",
        unaddressable.checked_sub(p as usize)
    );
    if checking() {
        assert_eq!((good, addressable), (0, 0));
        assert_eq!(undefined, p as usize + 16);
        assert_eq!(unaddressable, p as usize + 48);
    }
}

/// `count_errors` goes up by one per error, and not while reporting is disabled.
fn count_errors() {
    let buf = Box::new([0u64; 8]); // a 64-byte heap block
    let p = buf.as_ptr().cast::<u8>();
    vg::make_mem_noaccess(p, 64);
    let before = vg::count_errors();
    let _ = read_word(p);
    let after = vg::count_errors();
    vg::disable_error_reporting();
    let _ = read_word(p.wrapping_add(8));
    vg::enable_error_reporting();
    let after_disabled = vg::count_errors();
    vg::make_mem_defined(p, 64);
    println!("errors_before={before} errors_after={after} errors_after_disabled_read={after_disabled}");
    if checking() {
        assert_eq!((before, after, after_disabled), (0, 1, 1));
    }
}

/// A malloc-like block nobody points to, then a leak check: "100 bytes in 1 blocks are definitely lost".
fn leak() {
    register_unreferenced_block();
    clobber_registers(); // so no stale copy of the block's address stays in a register
    vg::do_leak_check();
    let counts = vg::count_leaks();
    let blocks = vg::count_leak_blocks();
    println!("leaked_bytes={} leaked_blocks={}", counts.leaked, blocks.leaked);
    if checking() {
        assert_eq!((counts.leaked, blocks.leaked), (100, 1));
    }
}

#[inline(never)]
fn register_unreferenced_block() {
    vg::malloclike_block(arena().wrapping_add(2048), 100, 0, false);
}

#[inline(never)]
fn clobber_registers() {
    black_box([0u64; 16]);
}

/// Runs a function on a heap-allocated stack (x86_64), registered or not. Registered: a silent stack switch.
/// Unregistered: Memcheck warns "client switching stacks?".
fn stack(register: bool) {
    const LEN: usize = 256 * 1024;
    let mem = vec![0u8; LEN];
    let lo = mem.as_ptr();
    let id = if register { vg::stack_register(lo, lo.wrapping_add(LEN - 1)) } else { 0 };
    println!("stack_id={id}");
    if checking() && register {
        assert!(id >= 1, "stack ids start at 1, got {id}");
    }
    let top = (lo as usize + LEN) & !15;
    #[cfg(target_arch = "x86_64")]
    {
        extern "C" fn work() {
            let mut frame = [0u64; 256];
            for (i, w) in frame.iter_mut().enumerate() {
                *w = i as u64;
            }
            black_box(&frame);
        }
        // SAFETY: switches rsp to the 16-aligned top of a live 256 KiB buffer, calls `work` (which needs a few
        // KiB), and restores rsp from r12, which the C ABI makes `work` preserve. Caller-saved registers are
        // declared clobbered with clobber_abi.
        unsafe {
            std::arch::asm!(
                "mov r12, rsp",
                "mov rsp, {top}",
                "call {work}",
                "mov rsp, r12",
                top = in(reg) top,
                work = in(reg) work as extern "C" fn(),
                out("r12") _,
                clobber_abi("C"),
            );
        }
    }
    let _ = top;
    if register {
        vg::stack_deregister(id);
    }
    // Memcheck made the popped frames unaddressable while the stack was registered; the buffer is ours again.
    vg::make_mem_defined(lo, LEN);
    drop(mem);
}

/// JIT-style code patched in place (x86_64): run `mov eax, 1; ret`, patch to 2, run again. With
/// `--smc-check=none`, Valgrind keeps running the stale translation unless the bridge discards it.
fn discard(do_discard: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::ffi::c_void;
        unsafe extern "C" {
            fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut c_void;
            fn munmap(addr: *mut c_void, len: usize) -> i32;
        }
        const PROT_RWX: i32 = 1 | 2 | 4;
        const MAP_PRIVATE_ANON: i32 = 0x02 | 0x20;
        // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
        let code = unsafe { mmap(std::ptr::null_mut(), 4096, PROT_RWX, MAP_PRIVATE_ANON, -1, 0) };
        assert_ne!(code as isize, -1, "mmap failed");
        let code = code.cast::<u8>();
        // SAFETY: the mapping is 4096 bytes, RWX, and holds a complete function `mov eax, imm32; ret` when called;
        // x86 keeps instruction fetch coherent with the preceding stores.
        unsafe {
            code.copy_from_nonoverlapping([0xb8, 1, 0, 0, 0, 0xc3].as_ptr(), 6);
            let f: extern "C" fn() -> u32 = std::mem::transmute(code);
            let before = f();
            code.add(1).write_volatile(2);
            if do_discard {
                vg::discard_translations(code, 6);
            }
            let after = f();
            println!("before={before} after={after}");
            munmap(code.cast(), 4096);
        }
    }
    let _ = do_discard;
}

/// Native cost of one request: a loop of `running_on_valgrind()` against the same loop without the request.
fn bench(iterations: u64) {
    let t = Instant::now();
    let mut acc = 0usize;
    for _ in 0..iterations {
        acc = acc.wrapping_add(black_box(vg::running_on_valgrind()));
    }
    let with = t.elapsed();
    let t = Instant::now();
    for _ in 0..iterations {
        acc = acc.wrapping_add(black_box(0usize));
    }
    let without = t.elapsed();
    let ns = |d: std::time::Duration| d.as_secs_f64() * 1e9 / iterations as f64;
    println!(
        "iterations={iterations} ns_per_request={:.2} ns_per_empty_iteration={:.2} acc={acc}",
        ns(with),
        ns(without)
    );
}
