//! One function's wasm operators → Cranelift IR.
//!
//! The translator walks the operators once with a **value stack** of SSA values and a **control stack**
//! of frames (block, loop, if), as wasmtime's `code_translator` does. Locals are Cranelift `Variable`s,
//! so the SSA builder places the phis. A frame's *end block* takes its results as block parameters; a
//! loop's *header* takes its parameters, so `br` to a loop passes them and `br` to a block passes the
//! results. After an unconditional transfer (`br`, `return`, `unreachable`, `br_table`) the rest of the
//! frame is dead: operators are skipped (counting nested frames) until its `else` or `end`.
//!
//! **Run-time checks, all explicit (no signal handlers, nothing Memcheck could mistake for an error):**
//! - the prologue compares the stack pointer with `VmCtx::stack_limit` (call stack exhausted);
//! - each memory access checks `addr + offset + size <= len` against its memory's current byte length
//!   (loaded at every access, so growth by any path or thread is seen), after the alignment check of
//!   an atomic;
//! - division, remainder and float-to-int truncation check their operands as the interpreter does;
//! - loop headers poll the mutator's stop flag (the safepoint a collection on another thread waits for).
//!
//! A failed check jumps to the function's *trap block*, which records the trap with the operator's
//! offset (`Libcalls::trap`) and returns status 1. After every call the status is tested; non-zero jumps
//! to the *unwind block*, which adds this frame at the call's offset (`Libcalls::unwind`) and returns 1.
//!
//! Anything outside the supported set (SIMD's `v128` values and operators, which vmrun does not run in
//! either tier) returns [`Unsupported`] with the operator's name. Operator families live in their own
//! files: `memory.rs` (plain loads and stores), `multimem.rs` (where each memory is, bounds checks,
//! size/grow/bulk/segments, race hooks), `atomics.rs` (the threads proposal), `numeric.rs`, `calls.rs`,
//! `refs.rs`, `tables.rs`, `gc.rs`, `alloc.rs` (inline allocation), `shared_gc.rs` (shared-everything
//! atomics and race hooks), and
//! `exceptions.rs` (`try_table`, `throw`, `throw_ref` and the legacy
//! `try`/`catch`/`catch_all`/`delegate`/`rethrow`).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, Block, BlockArg, InstBuilder, JumpTableData, MemFlagsData, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use vm::tier::{FuncInput, Libcalls, TrapCode, Unsupported, VmCtx};
use vm::types::RtValType;
use wasmparser::{BinaryReader, BlockType, FunctionBody, Operator};

use crate::InjectedBugs;
use crate::abi::{self, Target, clif_type, fixed, store_slot, trusted, wasm_signature};

mod alloc;
mod atomics;
mod calls;
mod exceptions;
mod gc;
mod memory;
mod multimem;
mod numeric;
mod refs;
mod shared_gc;
mod tables;

/// How compiled code reaches the VM: the library functions, called through the exit trampoline.
pub struct VmCalls<'a> {
    pub libcalls: &'a Libcalls,
    pub exits: Exits,
}

/// The addresses of the trampolines compiled code calls the VM through (`trampolines.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Exits {
    /// The exit trampolines for up to [`abi::EXIT_ARGS`] and [`abi::EXIT_ARGS_WIDE`] arguments.
    pub narrow: usize,
    pub wide: usize,
    /// The poll trampoline of loops' safepoint polls.
    pub poll: usize,
}
pub(crate) mod osr;

/// Translate the function `input` names into `func`.
pub fn translate(
    input: &FuncInput<'_>,
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    vm: &VmCalls<'_>,
    target: &Target,
    bugs: InjectedBugs,
) -> Result<(), Unsupported> {
    let (mut t, body) = FuncTranslator::start(input, func, fctx, vm, target, bugs)?;
    t.operators(&body)?;
    t.finish();
    Ok(())
}

fn parse_error(e: wasmparser::BinaryReaderError) -> Unsupported {
    Unsupported::new(format!("unreadable body: {e}"))
}

/// The name of an operator, for `--jit-stats` (its `Debug` text up to the first field).
fn op_name(op: &Operator<'_>) -> String {
    let text = format!("{op:?}");
    let end = text.find([' ', '{', '(']).unwrap_or(text.len());
    text[..end].to_string()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameKind {
    Block,
    Loop,
    /// `else_block` takes the `if`'s parameters; `else_seen` once `else` was translated.
    If {
        else_block: Block,
        else_seen: bool,
    },
    /// A legacy `try` in a catch arm (`exceptions.rs`): `next` is where the arm's clause test failed (the
    /// next clause tests there), `offset` the failing operator's offset the landing block received.
    Catch {
        next: Block,
        offset: Value,
    },
}

pub(super) struct Frame {
    kind: FrameKind,
    /// Where `br` to this frame goes: the loop header, or the end block.
    branch_target: Block,
    end_block: Block,
    params: Vec<RtValType>,
    results: Vec<RtValType>,
    /// Value-stack height below the frame's parameters.
    height: usize,
    /// Whether anything jumps to `end_block`.
    end_reachable: bool,
}

impl Frame {
    /// Types a branch to this frame carries.
    fn branch_types(&self) -> &[RtValType] {
        if self.kind == FrameKind::Loop { &self.params } else { &self.results }
    }
}

/// A wasm local: its variable and whether it holds references.
#[derive(Clone, Copy)]
struct Local {
    var: Variable,
    ty: Type,
    is_ref: bool,
}

pub(crate) struct FuncTranslator<'a, 'b> {
    pub(crate) b: FunctionBuilder<'b>,
    input: &'a FuncInput<'a>,
    libcalls: &'a Libcalls,
    /// The trampolines every call into the VM goes through.
    exits: Exits,
    target: &'a Target,
    vmctx: Value,
    /// Loaded from the `VmCtx` once in the entry block (they never change for an instance).
    mem_base: Value,
    mem_len_addr: Value,
    /// Memory 0's byte length when it is not shared, kept in a variable: only a call can change it (a
    /// `memory.grow` in this function is a library call, one in a callee is behind a call), so it is
    /// reloaded after every call and a loop without calls checks its accesses against a register.
    mem0_len: Option<Variable>,
    globals: Value,
    entries: Value,
    stop_flag: Value,
    locals: Vec<Local>,
    stack: Vec<Value>,
    control: Vec<Frame>,
    /// The function's result types (Cranelift's, for the zeros returned with a trap status).
    results: Vec<Type>,
    trap_block: Block,
    unwind_block: Block,
    /// Every value declared a reference (on-stack replacement reloads stack values with their kind).
    refs: std::collections::HashSet<Value>,
    /// The `try_table`s around the current operator, innermost last (`exceptions.rs`).
    handlers: Vec<exceptions::Handler>,
    reachable: bool,
    /// Frames opened inside dead code, skipped until their `end`.
    dead_depth: u32,
    pub(crate) bugs: InjectedBugs,
    /// Set when translating an on-stack-replacement variant (`osr.rs`).
    osr: Option<osr::OsrTarget>,
    /// Plain accesses already bounds-checked on every path to the current block (`memory.rs`).
    checked: memory::CheckedAccesses,
}

impl<'a, 'b> FuncTranslator<'a, 'b> {
    /// The translator of `input`'s function into `func` (signature set, prologue emitted, locals
    /// declared), and the function's body.
    fn start(
        input: &'a FuncInput<'a>,
        func: &'b mut ir::Function,
        fctx: &'b mut FunctionBuilderContext,
        vm: &VmCalls<'a>,
        target: &'a Target,
        bugs: InjectedBugs,
    ) -> Result<(Self, FunctionBody<'a>), Unsupported> {
        let (params, results) = input.func_signature(input.func_index);
        *func = ir::Function::with_name_signature(ir::UserFuncName::default(), wasm_signature(params, results)?);
        let range = input.body();
        let body = FunctionBody::new(BinaryReader::new(&input.wasm()[range.clone()], range.start as u64));
        let b = FunctionBuilder::new(func, fctx);
        let mut t = FuncTranslator::new(b, input, vm, target, params, results, bugs)?;
        t.declare_locals(&body)?;
        Ok((t, body))
    }

    /// Translate every operator of `body`.
    fn operators(&mut self, body: &FunctionBody<'_>) -> Result<(), Unsupported> {
        let mut reader = body.get_operators_reader().map_err(parse_error)?;
        while !reader.eof() {
            let offset = reader.original_position() as u32;
            let op = reader.read().map_err(parse_error)?;
            // Call sites' offsets, for backtraces walked through compiled frames (`CraneliftCompiler::frames`).
            self.b.set_srcloc(ir::SourceLoc::new(offset));
            self.operator(op, offset)?;
        }
        Ok(())
    }

    fn new(
        mut b: FunctionBuilder<'b>,
        input: &'a FuncInput<'a>,
        vm: &VmCalls<'a>,
        target: &'a Target,
        params: &[RtValType],
        results: &[RtValType],
        bugs: InjectedBugs,
    ) -> Result<Self, Unsupported> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let args = b.block_params(entry).to_vec();
        let vmctx = args[1];
        let field = |b: &mut FunctionBuilder, off: i32| b.ins().load(types::I64, fixed(), vmctx, off);
        let mem_base = field(&mut b, VmCtx::MEM0_BASE);
        let mem_len_addr = field(&mut b, VmCtx::MEM0_LEN);
        let globals = field(&mut b, VmCtx::GLOBALS);
        let entries = field(&mut b, VmCtx::ENTRIES);
        let stop_flag = field(&mut b, VmCtx::STOP_FLAG);
        let mut locals = Vec::new();
        for (i, &p) in params.iter().enumerate() {
            let var = b.declare_var(clif_type(p)?);
            if abi::is_ref(p) {
                b.declare_var_needs_stack_map(var);
                b.declare_value_needs_stack_map(args[2 + i]);
            }
            b.def_var(var, args[2 + i]);
            locals.push(Local { var, ty: clif_type(p)?, is_ref: abi::is_ref(p) });
        }
        let mem0_len = (input.memories().0 > 0 && !input.memory_shared(0)).then(|| {
            let var = b.declare_var(types::I64);
            let len = b.ins().load(types::I64, trusted(), mem_len_addr, 0);
            b.def_var(var, len);
            var
        });
        let result_types = results.to_vec();
        let results: Vec<Type> = results.iter().map(|&r| clif_type(r)).collect::<Result<_, _>>()?;
        let trap_block = b.create_block();
        let unwind_block = b.create_block();
        let mut t = FuncTranslator {
            b,
            input,
            libcalls: vm.libcalls,
            exits: vm.exits,
            target,
            vmctx,
            mem_base,
            mem_len_addr,
            mem0_len,
            globals,
            entries,
            stop_flag,
            locals,
            stack: Vec::new(),
            control: Vec::new(),
            results: results.clone(),
            trap_block,
            unwind_block,
            refs: Default::default(),
            handlers: Vec::new(),
            reachable: true,
            dead_depth: 0,
            bugs,
            osr: None,
            checked: Default::default(),
        };
        t.stack_check();
        let end_block = t.block_with_params(&result_types)?;
        t.control.push(Frame {
            kind: FrameKind::Block,
            branch_target: end_block,
            end_block,
            params: Vec::new(),
            results: result_types,
            height: 0,
            end_reachable: false,
        });
        Ok(t)
    }

    fn declare_locals(&mut self, body: &FunctionBody<'_>) -> Result<(), Unsupported> {
        let mut reader = body.get_locals_reader().map_err(parse_error)?;
        for _ in 0..reader.get_count() {
            let (count, ty) = reader.read().map_err(parse_error)?;
            let rt = self.input.val_type(ty);
            let ty = clif_type(rt)?;
            let zero = abi::zero(&mut self.b, ty);
            for _ in 0..count {
                let var = self.b.declare_var(ty);
                if abi::is_ref(rt) {
                    self.b.declare_var_needs_stack_map(var);
                }
                self.b.def_var(var, zero);
                self.locals.push(Local { var, ty, is_ref: abi::is_ref(rt) });
            }
        }
        Ok(())
    }

    /// The prologue's stack-limit check. An overflow records the trap without a frame of its own: the
    /// caller adds its frame at the call, which is where the interpreter reports it too.
    fn stack_check(&mut self) {
        if self.bugs.no_stack_check {
            return;
        }
        let sp = self.b.ins().get_stack_pointer(types::I64);
        let limit = self.b.ins().load(types::I64, fixed(), self.vmctx, VmCtx::STACK_LIMIT);
        let over = self.b.ins().icmp(IntCC::UnsignedLessThan, sp, limit);
        let overflow = self.b.create_block();
        let body = self.b.create_block();
        self.b.ins().brif(over, overflow, &[], body, &[]);
        self.b.set_cold_block(overflow);
        self.b.switch_to_block(overflow);
        let code = self.b.ins().iconst(types::I32, TrapCode::CallStackExhausted as i64);
        let no_func = self.b.ins().iconst(types::I32, u32::MAX as i64);
        let zero = self.b.ins().iconst(types::I32, 0);
        self.call_vm(self.libcalls.trap, &[code, no_func, zero], None);
        self.return_trapped();
        self.b.switch_to_block(body);
    }

    /// Return status 1 with zero results.
    fn return_trapped(&mut self) {
        let mut rets = vec![self.b.ins().iconst(types::I32, 1)];
        for &ty in &self.results.clone() {
            rets.push(abi::zero(&mut self.b, ty));
        }
        self.b.ins().return_(&rets);
    }

    /// A block taking values of `types`; reference parameters are declared for stack maps.
    fn block_with_params(&mut self, types: &[RtValType]) -> Result<Block, Unsupported> {
        let block = self.b.create_block();
        for &ty in types {
            let v = self.b.append_block_param(block, clif_type(ty)?);
            if abi::is_ref(ty) {
                self.declare_ref(v);
            }
        }
        Ok(block)
    }

    /// Declare `v` a reference: Cranelift spills it across every call it is live across and records the
    /// slot in the call's stack map.
    pub(crate) fn declare_ref(&mut self, v: Value) {
        self.b.declare_value_needs_stack_map(v);
        self.refs.insert(v);
    }

    /// Call library function `libcall` (`vmctx` first, then `args`, integers of at most 64 bits) through
    /// the exit trampoline; its result as `result` (narrowed from the trampoline's 64 bits).
    pub(crate) fn call_vm(&mut self, libcall: usize, args: &[Value], result: Option<Type>) -> Option<Value> {
        let (exit, width) = if args.len() <= abi::EXIT_ARGS {
            (self.exits.narrow, abi::EXIT_ARGS)
        } else {
            (self.exits.wide, abi::EXIT_ARGS_WIDE)
        };
        assert!(args.len() <= width, "a library call with more arguments than the exit trampolines take");
        let mut call_args = vec![self.b.ins().iconst(types::I64, libcall as i64), self.vmctx];
        for &a in args {
            let wide = match self.b.func.dfg.value_type(a) {
                types::I64 => a,
                _ => self.b.ins().uextend(types::I64, a),
            };
            call_args.push(wide);
        }
        while call_args.len() < 2 + width {
            call_args.push(self.b.ins().iconst(types::I64, 0));
        }
        let sig = self.b.import_signature(abi::exit_signature(self.target.call_conv, width));
        let exit = self.b.ins().iconst(types::I64, exit as i64);
        let call = self.b.ins().call_indirect(sig, exit, &call_args);
        let r = self.b.inst_results(call)[0];
        self.after_call();
        result.map(|ty| if ty == types::I64 { r } else { self.b.ins().ireduce(ty, r) })
    }

    /// After a call returned: what a call may change and the translator keeps in variables is reloaded
    /// (memory 0's length).
    pub(crate) fn after_call(&mut self) {
        if let Some(var) = self.mem0_len
            && !self.bugs.stale_memory_length
        {
            let len = self.b.ins().load(types::I64, trusted(), self.mem_len_addr, 0);
            self.b.def_var(var, len);
        }
    }

    pub(crate) fn pop(&mut self) -> Value {
        self.stack.pop().expect("validated: operand on the stack")
    }

    fn pop_n(&mut self, n: usize) -> Vec<Value> {
        let at = self.stack.len() - n;
        self.stack.split_off(at)
    }

    pub(crate) fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    /// The trap and unwind blocks, emitted once at the end.
    fn finish(mut self) {
        let func_index = self.input.func_index;
        self.b.set_cold_block(self.trap_block);
        let code = self.b.append_block_param(self.trap_block, types::I32);
        let offset = self.b.append_block_param(self.trap_block, types::I32);
        self.b.switch_to_block(self.trap_block);
        let f = self.b.ins().iconst(types::I32, func_index as i64);
        self.call_vm(self.libcalls.trap, &[code, f, offset], None);
        self.return_trapped();

        self.b.set_cold_block(self.unwind_block);
        let offset = self.b.append_block_param(self.unwind_block, types::I32);
        self.b.switch_to_block(self.unwind_block);
        let f = self.b.ins().iconst(types::I32, func_index as i64);
        self.call_vm(self.libcalls.unwind, &[f, offset], None);
        self.return_trapped();

        self.b.seal_all_blocks();
        self.b.finalize(self.target.frontend);
    }

    /// Branch to the trap block with `code` when `cond` is non-zero.
    pub(crate) fn trap_if(&mut self, cond: Value, code: TrapCode, offset: u32) {
        let cont = self.b.create_block();
        let site = self.cold_block();
        let here = self.b.current_block();
        self.b.ins().brif(cond, site, &[], cont, &[]);
        self.b.switch_to_block(site);
        self.trap(code, offset);
        self.b.switch_to_block(cont);
        // Its one predecessor is known: sealed now, a local read in it is the value from before the test
        // (not a new block parameter), so later operators see the same values (`memory.rs`).
        self.b.seal_block(cont);
        self.checked.continued(here, cont);
    }

    /// A new block for a path taken only on a trap or an exception. Each such path gets its own, which
    /// sets up the trap block's arguments: a branch straight to the shared trap block would make the
    /// register allocator materialize them on the hot path, before the branch.
    fn cold_block(&mut self) -> Block {
        let block = self.b.create_block();
        self.b.set_cold_block(block);
        block
    }

    /// Jump to the trap block.
    fn trap(&mut self, code: TrapCode, offset: u32) {
        let code = self.b.ins().iconst(types::I32, code as i64);
        let off = self.b.ins().iconst(types::I32, offset as i64);
        let trap = self.trap_block;
        self.b.ins().jump(trap, &[BlockArg::Value(code), BlockArg::Value(off)]);
    }

    /// After a call returning `status`: unwind when it is non-zero (to the innermost `try_table`'s
    /// landing block, which may catch an exception, else out of the function).
    fn check_status(&mut self, status: Value, offset: u32) {
        let cont = self.b.create_block();
        let site = self.cold_block();
        let here = self.b.current_block();
        self.b.ins().brif(status, site, &[], cont, &[]);
        self.b.switch_to_block(site);
        let off = self.b.ins().iconst(types::I32, offset as i64);
        let unwind = self.unwind_target();
        self.b.ins().jump(unwind, &[BlockArg::Value(off)]);
        self.b.switch_to_block(cont);
        // Its one predecessor is known: sealed now, a local read in it is the value from before the test
        // (not a new block parameter), so later operators see the same values (`memory.rs`).
        self.b.seal_block(cont);
        self.checked.continued(here, cont);
    }

    fn block_type(&self, bt: BlockType) -> Result<(Vec<RtValType>, Vec<RtValType>), Unsupported> {
        Ok(match bt {
            BlockType::Empty => (Vec::new(), Vec::new()),
            BlockType::Type(t) => (Vec::new(), vec![self.input.val_type(t)]),
            BlockType::FuncType(i) => {
                let (p, r) = self.input.type_signature(i).ok_or_else(|| Unsupported::new("block type"))?;
                (p.to_vec(), r.to_vec())
            }
        })
    }

    fn operator(&mut self, op: Operator<'_>, offset: u32) -> Result<(), Unsupported> {
        if !self.reachable {
            return self.dead_operator(op);
        }
        use Operator as O;
        match op {
            O::Nop => {}
            O::Unreachable => {
                self.trap(TrapCode::Unreachable, offset);
                self.reachable = false;
            }
            O::Block { blockty } => {
                let (params, results) = self.block_type(blockty)?;
                let end_block = self.block_with_params(&results)?;
                let height = self.stack.len() - params.len();
                self.control.push(Frame {
                    kind: FrameKind::Block,
                    branch_target: end_block,
                    end_block,
                    params,
                    results,
                    height,
                    end_reachable: false,
                });
            }
            O::Loop { blockty } => {
                let (params, results) = self.block_type(blockty)?;
                let header = self.block_with_params(&params)?;
                let args = self.pop_n(params.len());
                self.jump(header, &args);
                self.osr_entry_at(offset, header, &params);
                self.b.switch_to_block(header);
                let height = self.stack.len();
                self.stack.extend(self.b.block_params(header).to_vec());
                self.safepoint_poll();
                let end_block = self.block_with_params(&results)?;
                self.control.push(Frame {
                    kind: FrameKind::Loop,
                    branch_target: header,
                    end_block,
                    params,
                    results,
                    height,
                    end_reachable: false,
                });
            }
            O::If { blockty } => {
                let (params, results) = self.block_type(blockty)?;
                let cond = self.pop();
                let then_block = self.block_with_params(&params)?;
                let else_block = self.block_with_params(&params)?;
                let end_block = self.block_with_params(&results)?;
                let args = self.pop_n(params.len());
                let a: Vec<BlockArg> = args.iter().map(|&v| BlockArg::Value(v)).collect();
                self.b.ins().brif(cond, then_block, &a, else_block, &a);
                self.b.switch_to_block(then_block);
                let height = self.stack.len();
                self.stack.extend(self.b.block_params(then_block).to_vec());
                self.control.push(Frame {
                    kind: FrameKind::If { else_block, else_seen: false },
                    branch_target: end_block,
                    end_block,
                    params,
                    results,
                    height,
                    end_reachable: false,
                });
            }
            O::Else => self.else_(),
            O::End => self.end(),
            O::Br { relative_depth } => {
                self.br(relative_depth);
                self.reachable = false;
            }
            O::BrIf { relative_depth } => {
                let cond = self.pop();
                self.br_if(cond, relative_depth);
            }
            O::BrTable { targets } => {
                let index = self.pop();
                let mut calls = Vec::new();
                let mut depths: Vec<u32> = Vec::new();
                for t in targets.targets() {
                    depths.push(t.map_err(parse_error)?);
                }
                let default = targets.default();
                for &d in depths.iter().chain(std::iter::once(&default)) {
                    let frame = &self.control[self.control.len() - 1 - d as usize];
                    let (target, n) = (frame.branch_target, frame.branch_types().len());
                    self.mark_end_reachable(d);
                    let args: Vec<BlockArg> =
                        self.stack[self.stack.len() - n..].iter().map(|&v| BlockArg::Value(v)).collect();
                    calls.push(self.b.func.dfg.block_call(target, &args));
                }
                let default_call = calls.pop().expect("the default target");
                let jt = self.b.create_jump_table(JumpTableData::new(default_call, &calls));
                self.b.ins().br_table(index, jt);
                self.reachable = false;
            }
            O::Return => {
                let n = self.results.len();
                let vals = self.pop_n(n);
                self.return_values(&vals);
                self.reachable = false;
            }
            O::Call { function_index } => self.call(function_index, offset, false)?,
            O::ReturnCall { function_index } => self.call(function_index, offset, true)?,
            O::CallIndirect { type_index, table_index } => {
                self.call_indirect(type_index, table_index, offset, false)?
            }
            O::CallRef { type_index } => self.call_ref(type_index, offset, false)?,
            O::TryTable { try_table } => self.open_handler(try_table.ty, try_table.catches)?,
            O::Try { blockty } => self.open_handler(blockty, Vec::new())?,
            O::Catch { tag_index } => self.legacy_catch(Some(tag_index)),
            O::CatchAll => self.legacy_catch(None),
            O::Delegate { relative_depth } => self.delegate(relative_depth),
            O::Rethrow { relative_depth } => self.rethrow(relative_depth, offset),
            O::Throw { tag_index } => self.throw(tag_index, offset),
            O::ThrowRef => self.throw_ref(offset),
            O::ReturnCallRef { type_index } => self.call_ref(type_index, offset, true)?,
            O::ReturnCallIndirect { type_index, table_index } => {
                self.call_indirect(type_index, table_index, offset, true)?
            }
            O::Drop => {
                self.pop();
            }
            O::Select => {
                let cond = self.pop();
                let bv = self.pop();
                let av = self.pop();
                let v = self.b.ins().select(cond, av, bv);
                self.push(v);
            }
            O::TypedSelect { ty } => {
                let rt = self.input.val_type(ty);
                clif_type(rt)?;
                let cond = self.pop();
                let bv = self.pop();
                let av = self.pop();
                let v = self.b.ins().select(cond, av, bv);
                if abi::is_ref(rt) {
                    self.declare_ref(v);
                }
                self.push(v);
            }
            O::LocalGet { local_index } => {
                let local = self.locals[local_index as usize];
                let v = self.b.use_var(local.var);
                if local.is_ref {
                    self.declare_ref(v);
                }
                self.push(v);
            }
            O::LocalSet { local_index } => {
                let v = self.pop();
                self.b.def_var(self.locals[local_index as usize].var, v);
            }
            O::LocalTee { local_index } => {
                let v = *self.stack.last().expect("validated");
                self.b.def_var(self.locals[local_index as usize].var, v);
            }
            O::GlobalGet { global_index } => {
                let (rt, mutable) = self.input.global(global_index);
                let ty = clif_type(rt)?;
                let addr = self.global_address(global_index);
                let v = if self.input.global_shared(global_index) {
                    // Another thread may store the cell at any time (sequentially consistent, as the
                    // interpreter's `AtomicU64`).
                    let bits = self.b.ins().atomic_load(ty.as_int(), MemFlagsData::trusted(), addr);
                    if ty.is_float() { self.b.ins().bitcast(ty, MemFlagsData::new(), bits) } else { bits }
                } else {
                    // An immutable global's value was set before any code of the instance ran.
                    let flags = if mutable { trusted() } else { fixed() };
                    self.b.ins().load(ty, flags, addr, 0)
                };
                if abi::is_ref(rt) {
                    self.declare_ref(v);
                }
                self.push(v);
                self.global_race_hook(global_index, false, offset);
            }
            O::GlobalSet { global_index } => {
                let (ty, _) = self.input.global(global_index);
                clif_type(ty)?;
                let v = self.pop();
                let addr = self.global_address(global_index);
                if self.input.global_shared(global_index) {
                    // The whole cell, as `store_slot` writes it (an i32 keeps its upper bits zero).
                    let t = self.b.func.dfg.value_type(v);
                    let bits = if t.is_float() { self.b.ins().bitcast(t.as_int(), MemFlagsData::new(), v) } else { v };
                    let wide = if bits_type(t) == types::I32 { self.b.ins().uextend(types::I64, bits) } else { bits };
                    self.b.ins().atomic_store(MemFlagsData::trusted(), wide, addr);
                } else {
                    store_slot(&mut self.b, v, addr, 0);
                }
                self.global_race_hook(global_index, true, offset);
            }
            other => {
                if !self.memory_op(&other, offset)?
                    && !self.multimem_op(&other, offset)?
                    && !self.atomic_op(&other, offset)?
                    && !self.numeric_op(&other, offset)?
                    && !self.reference_op(&other, offset)?
                    && !self.gc_op(&other, offset)?
                    && !self.shared_gc_op(&other, offset)?
                    && !self.table_op(&other, offset)?
                {
                    return Err(Unsupported::new(op_name(&other)));
                }
            }
        }
        Ok(())
    }

    /// An operator in dead code: only the frame structure matters.
    fn dead_operator(&mut self, op: Operator<'_>) -> Result<(), Unsupported> {
        match op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
            | Operator::Try { .. } => self.dead_depth += 1,
            Operator::Else if self.dead_depth == 0 => self.else_(),
            Operator::End if self.dead_depth == 0 => self.end(),
            // A live `try` whose body (or last arm) ended unreachable: its catch arms are reachable.
            Operator::Catch { tag_index } if self.dead_depth == 0 => self.legacy_catch(Some(tag_index)),
            Operator::CatchAll if self.dead_depth == 0 => self.legacy_catch(None),
            Operator::Delegate { relative_depth } if self.dead_depth == 0 => self.delegate(relative_depth),
            Operator::End | Operator::Delegate { .. } => self.dead_depth -= 1,
            _ => {}
        }
        Ok(())
    }

    fn jump(&mut self, block: Block, args: &[Value]) {
        let a: Vec<BlockArg> = args.iter().map(|&v| BlockArg::Value(v)).collect();
        self.b.ins().jump(block, &a);
    }

    /// Branch to frame `depth` when `cond` is non-zero, passing the values on top of the stack.
    pub(crate) fn br_if(&mut self, cond: Value, depth: u32) {
        let frame = &self.control[self.control.len() - 1 - depth as usize];
        let (target, n) = (frame.branch_target, frame.branch_types().len());
        self.mark_end_reachable(depth);
        let args: Vec<BlockArg> = self.stack[self.stack.len() - n..].iter().map(|&v| BlockArg::Value(v)).collect();
        let cont = self.b.create_block();
        self.b.ins().brif(cond, target, &args, cont, &[]);
        self.b.switch_to_block(cont);
    }

    fn mark_end_reachable(&mut self, depth: u32) {
        let i = self.control.len() - 1 - depth as usize;
        if self.control[i].kind != FrameKind::Loop {
            self.control[i].end_reachable = true;
        }
    }

    fn br(&mut self, depth: u32) {
        let frame = &self.control[self.control.len() - 1 - depth as usize];
        let (target, n) = (frame.branch_target, frame.branch_types().len());
        self.mark_end_reachable(depth);
        let args = self.stack[self.stack.len() - n..].to_vec();
        self.jump(target, &args);
    }

    fn else_(&mut self) {
        let frame = self.control.last_mut().expect("validated: else in an if");
        let FrameKind::If { else_block, .. } = frame.kind else { unreachable!("validated: else in an if") };
        frame.kind = FrameKind::If { else_block, else_seen: true };
        let (end_block, n, height) = (frame.end_block, frame.results.len(), frame.height);
        if self.reachable {
            frame.end_reachable = true;
            let vals = self.pop_n(n);
            self.jump(end_block, &vals);
        }
        self.stack.truncate(height);
        self.b.switch_to_block(else_block);
        self.stack.extend(self.b.block_params(else_block).to_vec());
        self.reachable = true;
        self.dead_depth = 0;
    }

    fn end(&mut self) {
        let mut frame = self.control.pop().expect("validated: end of a frame");
        if self.reachable {
            frame.end_reachable = true;
            let vals = self.pop_n(frame.results.len());
            self.jump(frame.end_block, &vals);
        }
        if self.handlers.last().is_some_and(|h| h.depth == self.control.len()) {
            let handler = self.handlers.pop().expect("checked");
            self.landing(handler);
        }
        if let FrameKind::Catch { next, offset } = frame.kind {
            self.end_catch(next, offset);
        }
        if let FrameKind::If { else_block, else_seen: false } = frame.kind {
            // No `else`: the parameters pass through (validation makes them the results).
            self.b.switch_to_block(else_block);
            let params = self.b.block_params(else_block).to_vec();
            self.jump(frame.end_block, &params);
            frame.end_reachable = true;
        }
        self.stack.truncate(frame.height);
        self.dead_depth = 0;
        if !frame.end_reachable {
            self.reachable = false;
            if self.control.is_empty() {
                // The function's end is unreachable; its block still needs a terminator.
                self.b.switch_to_block(frame.end_block);
                self.return_trapped();
            }
            return;
        }
        self.b.switch_to_block(frame.end_block);
        let vals = self.b.block_params(frame.end_block).to_vec();
        if self.control.is_empty() {
            self.return_values(&vals);
            self.reachable = false;
        } else {
            self.stack.extend(vals);
            self.reachable = true;
        }
    }

    fn return_values(&mut self, vals: &[Value]) {
        let mut rets = vec![self.b.ins().iconst(types::I32, 0)];
        rets.extend_from_slice(vals);
        self.b.ins().return_(&rets);
    }

    /// At a loop header: park if another thread asked for a collection.
    fn safepoint_poll(&mut self) {
        let flag = self.b.ins().load(types::I8, trusted(), self.stop_flag, 0);
        // A compare with zero rather than a branch on the byte: x64 folds the load into `cmpb $0, (flag)`.
        let stop = self.b.ins().icmp_imm_u(IntCC::NotEqual, flag, 0);
        let park = self.b.create_block();
        let cont = self.b.create_block();
        self.b.ins().brif(stop, park, &[], cont, &[]);
        self.b.set_cold_block(park);
        self.b.switch_to_block(park);
        let sig = self.b.import_signature(abi::poll_signature());
        let poll = self.b.ins().iconst(types::I64, self.exits.poll as i64);
        // A collection moves nothing and grows no memory: nothing to reload after it.
        self.b.ins().call_indirect(sig, poll, &[self.vmctx]);
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// The address of global `g`'s value. Read-only for Cranelift (it may share and hoist the load): a
    /// global's address changes only when its store's global vector moves, which only an instantiation
    /// does, and no instantiation runs while compiled code of the store is on the stack (host functions
    /// cannot instantiate).
    fn global_address(&mut self, g: u32) -> Value {
        self.b.ins().load(types::I64, fixed(), self.globals, (g * 8) as i32)
    }
}

/// The integer type of a value's bits.
fn bits_type(t: Type) -> Type {
    if t.is_float() { t.as_int() } else { t }
}
