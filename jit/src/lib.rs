//! `jit`: vmrun's Cranelift tier. A skeleton until the JIT issue: the interpreter is the only tier.
//!
//! The tier will compile hot functions from the `vm` crate's bytecode (the same definition the
//! interpreter runs), keep GC roots precise with Cranelift user stack maps, and run on VM-allocated
//! stacks registered with Valgrind.

/// Which execution tier runs a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The `vm` crate's bytecode interpreter.
    Interpreter,
}

/// The tiers this build can use. Only the interpreter until the Cranelift tier lands.
pub fn available_tiers() -> &'static [Tier] {
    &[Tier::Interpreter]
}

#[cfg(test)]
mod tests {
    #[test]
    fn interpreter_is_always_available() {
        assert!(super::available_tiers().contains(&super::Tier::Interpreter));
    }
}
