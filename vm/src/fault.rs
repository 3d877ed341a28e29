//! Out-of-bounds accesses of compiled code found by the hardware: guard regions and the `SIGSEGV`
//! handler that turns a fault in one into the wasm trap.
//!
//! # Why
//!
//! An explicit bounds check is an add, a compare and a branch before every load and store; in a
//! memory-bound loop (the sieve) that is a third of the loop's instructions. Every 32-bit index is
//! below 4 GiB, so a memory whose mapping reserves 4 GiB plus a guard region, all `PROT_NONE` past the
//! committed length (`memory.rs`), cannot be escaped by `base + index + offset` when `offset + size`
//! fits the guard: an access the check would have refused touches a `PROT_NONE` page instead and
//! faults. Compiled code then makes no check for such accesses (`jit/src/translate/multimem.rs`) and
//! this file turns the fault into the same trap, message and backtrace as the check would have.
//!
//! # When
//!
//! Natively only. Under Valgrind a memory reserves 256 MiB (`memory.rs`), so no memory is guarded and
//! every access is checked explicitly: Memcheck would report each faulting access as an invalid read
//! before delivering the signal, and a run must stay clean. [`Runtime`](crate::Runtime)'s
//! `memory_guard_bytes` is what compiled code assumes; it is non-zero only when every memory the
//! runtime creates is guarded.
//!
//! # How a fault becomes a trap
//!
//! 1. [`call_entry`] is how Rust enters compiled code (`interp/jit.rs`): like `setjmp`, it saves the
//!    callee-saved registers, the stack pointer and a resume address in a [`Resume`] on its own frame,
//!    links it as the thread's innermost entry, and calls the array entry.
//! 2. A fault runs [`on_segv`]. It is ours only if the faulting instruction is a heap-trap site of
//!    compiled code ([`register_code`]), the address is inside a guarded memory's mapping
//!    ([`register_memory`]) and the thread is inside [`call_entry`]. Anything else goes to the handler
//!    that was installed before ours (Rust's stack-overflow reporter, or the default action), so a VM
//!    bug still crashes loudly.
//! 3. Ours: the handler changes the interrupted context so that, when it returns, the thread runs
//!    `vmrun_fault_landing` on the faulting stack with the faulting frame pointer and address. The
//!    landing calls [`record_fault`], which builds the trap while the compiled frames are still intact
//!    (it walks them by frame pointer, as the race reports do), and then restores the registers saved
//!    in step 1 and jumps to the resume address: [`call_entry`] returns status 1, "trap pending", like
//!    any trap of compiled code. The compiled frames in between are abandoned; they own nothing (no
//!    destructors, no locks), and the VM's bookkeeping of the entry (`call_compiled`) is restored by
//!    the Rust code after the call, as on every return.
//!
//! Nothing in the handler allocates or waits except the read locks of the two registries, which no
//! thread holds while running compiled code (they are written only when code or memories are created
//! and dropped).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Once, PoisonError, RwLock};

use crate::tier::VmCtx;

/// A compiled function's code length and the sorted offsets of its heap-trap sites.
type TrapSites = (usize, Box<[u32]>);
/// Compiled functions by start address.
static CODE: RwLock<BTreeMap<usize, TrapSites>> = RwLock::new(BTreeMap::new());
/// Guarded memories' mappings by start address: mapping length.
static MEMORIES: RwLock<BTreeMap<usize, usize>> = RwLock::new(BTreeMap::new());
/// The `SIGSEGV` action before ours, for faults that are not ours.
static mut PREVIOUS: Option<libc::sigaction> = None;
static INSTALL: Once = Once::new();

thread_local! {
    /// The innermost [`Resume`] of this thread (null outside compiled code).
    static INNERMOST: Cell<*mut Resume> = const { Cell::new(std::ptr::null_mut()) };
}

/// Where [`call_entry`] resumes after a fault: the registers the call must find unchanged (the
/// field order is the landing's offsets), and what [`record_fault`] needs.
#[repr(C)]
struct Resume {
    rsp: usize,
    rbp: usize,
    rbx: usize,
    r12: usize,
    r13: usize,
    r14: usize,
    r15: usize,
    resume_at: usize,
    /// The entry's `VmCtx`, through which `record_fault` reaches the store.
    vmctx: *mut VmCtx,
    /// The enclosing entry's resume point (a nested entry through the interpreter).
    outer: *mut Resume,
}

/// Registers compiled code at `start..start + len` whose instructions at `trap_sites` (offsets from
/// `start`) may fault on a guarded memory. Until [`unregister_code`], a fault there is a trap.
pub fn register_code(start: usize, len: usize, mut trap_sites: Vec<u32>) {
    if trap_sites.is_empty() {
        return;
    }
    trap_sites.sort_unstable();
    install_handler();
    CODE.write().unwrap_or_else(PoisonError::into_inner).insert(start, (len, trap_sites.into()));
}

/// Forgets the code registered at `start` (before its memory is freed).
pub fn unregister_code(start: usize) {
    CODE.write().unwrap_or_else(PoisonError::into_inner).remove(&start);
}

/// Registers a guarded memory's whole mapping (`memory.rs`).
pub(crate) fn register_memory(start: usize, len: usize) {
    MEMORIES.write().unwrap_or_else(PoisonError::into_inner).insert(start, len);
}

/// Forgets a guarded memory's mapping (before it is unmapped).
pub(crate) fn unregister_memory(start: usize) {
    MEMORIES.write().unwrap_or_else(PoisonError::into_inner).remove(&start);
}

/// Whether a fault at instruction `pc` reading or writing `addr` is a guarded memory's trap.
fn is_memory_trap(pc: usize, addr: usize) -> bool {
    let code = CODE.read().unwrap_or_else(PoisonError::into_inner);
    let site = code
        .range(..=pc)
        .next_back()
        .is_some_and(|(&start, (len, sites))| pc - start < *len && sites.binary_search(&((pc - start) as u32)).is_ok());
    drop(code);
    let memories = MEMORIES.read().unwrap_or_else(PoisonError::into_inner);
    site && memories.range(..=addr).next_back().is_some_and(|(&start, &len)| addr - start < len)
}

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: a plain sigaction call with a zeroed (valid: empty mask, no flags) struct filled in;
        // `PREVIOUS` is written once here, before the handler that reads it can run.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_segv as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGSEGV, &action, &mut previous) == 0 {
                *std::ptr::addr_of_mut!(PREVIOUS) = Some(previous);
            }
        }
    });
}

/// The `SIGSEGV` handler (see the module comment).
extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext for an SA_SIGINFO handler; the context's
    // registers are ours to change, and the change takes effect when the handler returns.
    unsafe {
        let uc = &mut *ctx.cast::<libc::ucontext_t>();
        let regs = &mut uc.uc_mcontext.gregs;
        let pc = regs[libc::REG_RIP as usize] as usize;
        let addr = (*info).si_addr() as usize;
        let resume = INNERMOST.with(Cell::get);
        if !resume.is_null() && is_memory_trap(pc, addr) {
            regs[libc::REG_RDI as usize] = regs[libc::REG_RBP as usize];
            regs[libc::REG_RSI as usize] = pc as i64;
            regs[libc::REG_RDX as usize] = resume as i64;
            regs[libc::REG_RIP as usize] = vmrun_fault_landing as *const () as usize as i64;
            return;
        }
        forward(sig, info, ctx);
    }
}

/// Hands a fault that is not ours to the action installed before ours.
///
/// # Safety
/// The arguments are the handler's own.
unsafe fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `PREVIOUS` was written before our handler was installed and is never written again.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    // SAFETY: an SA_SIGINFO action's handler has this signature.
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(sig, info, ctx);
            } else {
                // SAFETY: a plain action's handler takes the signal number.
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(sig);
            }
        }
        _ => {
            // The default action: put it back and return, so the faulting instruction runs again and the
            // kernel ends the process with the signal, as it would have without us.
            // SAFETY: a plain sigaction call with a zeroed default action.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGSEGV, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Calls the array entry `entry(code, vmctx, args)` (`tier.rs`) with a resume point for faults: returns
/// the entry's status, or 1 (trap pending, built by [`record_fault`]) after a guarded memory's fault.
///
/// # Safety
/// As for calling `entry` directly: it is an array entry of the compiler, and `code`, `vmctx` and `args`
/// are valid for it.
pub(crate) unsafe fn call_entry(entry: usize, code: usize, vmctx: *mut VmCtx, args: *mut u64) -> u32 {
    let mut resume = Resume {
        rsp: 0,
        rbp: 0,
        rbx: 0,
        r12: 0,
        r13: 0,
        r14: 0,
        r15: 0,
        resume_at: 0,
        vmctx,
        outer: INNERMOST.with(Cell::get),
    };
    let here: *mut Resume = &mut resume;
    INNERMOST.with(|c| c.set(here));
    let status: u32;
    // SAFETY: saves this frame's callee-saved registers, stack pointer and the address of label 2 in
    // `resume`, then calls the entry with the C convention (`clobber_abi("C")`: every caller-saved
    // register may change). Both ways back reach label 2 with the callee-saved registers and the stack
    // pointer as they were: the entry's own return, or the landing's restore of the saved ones, which
    // also sets eax. The stack is aligned for a call at the start of an asm block.
    unsafe {
        std::arch::asm!(
            "mov [r10], rsp",
            "mov [r10 + 8], rbp",
            "mov [r10 + 16], rbx",
            "mov [r10 + 24], r12",
            "mov [r10 + 32], r13",
            "mov [r10 + 40], r14",
            "mov [r10 + 48], r15",
            "lea rax, [rip + 2f]",
            "mov [r10 + 56], rax",
            "call r11",
            "2:",
            in("r10") here,
            in("r11") entry,
            in("rdi") code,
            in("rsi") vmctx,
            in("rdx") args,
            lateout("eax") status,
            clobber_abi("C"),
        );
    }
    INNERMOST.with(|c| c.set(resume.outer));
    status
}

// The landing (see the module comment): entered from the handler with rdi = the faulting frame's frame
// pointer, rsi = the faulting instruction, rdx = the thread's innermost `Resume`, and the faulting stack.
// It aligns the stack, calls `record_fault(fp, pc, resume)` (its status stays in eax), and resumes.
std::arch::global_asm!(
    ".pushsection .text.vmrun_fault_landing,\"ax\",@progbits",
    ".p2align 4",
    "vmrun_fault_landing:",
    "and rsp, -16",
    "push rdx",
    "push rdx",
    "call {record}",
    "pop rdx",
    "pop rdx",
    "mov rsp, [rdx]",
    "mov rbp, [rdx + 8]",
    "mov rbx, [rdx + 16]",
    "mov r12, [rdx + 24]",
    "mov r13, [rdx + 32]",
    "mov r14, [rdx + 40]",
    "mov r15, [rdx + 48]",
    "jmp qword ptr [rdx + 56]",
    ".popsection",
    record = sym record_fault,
);

unsafe extern "C" {
    fn vmrun_fault_landing();
}

/// Makes the trap of a guarded memory's fault at `pc` in the compiled frame whose frame pointer is `fp`
/// the pending trap of the entry `resume` (status 1).
extern "C" fn record_fault(fp: usize, pc: usize, resume: *mut Resume) -> u32 {
    // SAFETY: `resume` is the innermost entry's, on a live frame of this thread (the landing got it from
    // the handler, which read it from `INNERMOST`).
    let vmctx = unsafe { (*resume).vmctx };
    crate::interp::memory_fault_trap(vmctx, fp, pc)
}

/// `VMRUN_VM_DEBUG=fault-drops-callers`: the planted bug `tests/tiers.rs` shows the tests catch: a guarded
/// memory's trap names only the faulting function, not its compiled callers.
pub(crate) fn planted_short_backtrace() -> bool {
    std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "fault-drops-callers")
}
