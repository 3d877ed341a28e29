//! Module and argument generation for the differential oracle.
//!
//! Each iteration draws a few KiB of random bytes and lets `wasm-smith` shape them into a valid module
//! ("swarm testing": the limits themselves are drawn from the bytes too, so some modules are many small
//! functions and others one deep body). The features are the ones both vmrun and the reference engine
//! (wasmi 2.0) implement: core wasm with bulk memory, reference types, multi-value, tail calls, sign
//! extension, saturating conversions, extended constants and multi-memory; no SIMD, threads, exceptions or
//! GC. Three rewrites make the modules comparable across engines:
//! - `ensure_termination` threads a fuel global through every loop head and function entry, so every call
//!   ends (with `unreachable` once the fuel is gone) after the same number of steps in every engine;
//! - `canonicalize_nans` makes every float result canonical, so NaN bits stored in memory or globals are
//!   deterministic and memories can be compared byte for byte;
//! - memories and tables always declare a maximum, so `memory.grow` stays small.

use arbitrary::Unstructured;
use wasm_smith::{Config, Module};

use crate::rng::SplitMix64;

/// Fuel each module gets: loop iterations plus function entries over all its calls.
pub const MODULE_FUEL: u32 = 5_000;

/// A generated module with the knobs it was made with.
pub struct Generated {
    pub wasm: Vec<u8>,
}

/// The wasm-smith configuration for iteration data `u`: drawn limits, fixed features.
pub fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<Config> {
    let mut c: Config = u.arbitrary()?;
    c.simd_enabled = false;
    c.relaxed_simd_enabled = false;
    c.threads_enabled = false;
    c.shared_everything_threads_enabled = false;
    c.exceptions_enabled = false;
    c.gc_enabled = false;
    c.custom_descriptors_enabled = false;
    c.custom_page_sizes_enabled = false;
    c.memory64_enabled = false;
    c.wide_arithmetic_enabled = false;
    c.reference_types_enabled = true;
    c.bulk_memory_enabled = true;
    c.multi_value_enabled = true;
    c.tail_call_enabled = true;
    c.sign_extension_ops_enabled = true;
    c.saturating_float_to_int_enabled = true;
    c.extended_const_enabled = true;
    c.allow_floats = true;
    c.canonicalize_nans = true;
    c.allow_invalid_funcs = false;
    // The guards wasm-smith wraps around trapping operators trip a wasmi 2.0 bug (FUZZING.md), and traps
    // are worth comparing anyway.
    c.disallow_traps = false;
    c.export_everything = true;
    c.max_imports = 0;
    c.min_imports = 0;
    c.max_funcs = c.max_funcs.clamp(1, 20);
    c.min_funcs = c.min_funcs.clamp(1, c.max_funcs);
    c.max_instructions = c.max_instructions.min(400);
    c.max_memories = c.max_memories.min(2);
    c.max_memory32_bytes = c.max_memory32_bytes.min(4 << 16);
    c.memory_max_size_required = true;
    c.max_tables = c.max_tables.min(3);
    c.max_table_elements = c.max_table_elements.min(1_000);
    c.table_max_size_required = true;
    c.max_data_segments = c.max_data_segments.min(10);
    c.max_element_segments = c.max_element_segments.min(10);
    c.max_elements = c.max_elements.min(100);
    c.max_globals = c.max_globals.min(20);
    c.max_exports = c.max_exports.min(40);
    c.min_exports = c.min_exports.min(c.max_exports);
    c.max_types = c.max_types.min(30);
    c.max_nesting_depth = c.max_nesting_depth.min(10);
    c.generate_custom_sections = false;
    Ok(c)
}

/// The module of one iteration, or `None` if the bytes ran out before wasm-smith produced one (rare: it
/// fills with zeros; counted as skipped).
pub fn module(rng: &mut SplitMix64) -> Option<Generated> {
    let len = 512 + rng.below(8 * 1024) as usize;
    let data = rng.bytes(len);
    let mut u = Unstructured::new(&data);
    let cfg = config(&mut u).ok()?;
    let mut m = Module::new(cfg, &mut u).ok()?;
    m.ensure_termination(MODULE_FUEL).ok()?;
    Some(Generated { wasm: m.to_bytes() })
}

/// A value for a parameter, with edge cases (0, ±1, MIN, MAX, NaN, infinities) over-represented.
pub fn arg(rng: &mut SplitMix64, ty: vm::ValType) -> vm::Val {
    use vm::{Ref, Val, ValType};
    let pick = rng.below(8);
    let bits = rng.next_u64();
    match ty {
        ValType::I32 => Val::I32(match pick {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => i32::MIN,
            4 => i32::MAX,
            5 => (bits % 64) as i32,
            _ => bits as i32,
        }),
        ValType::I64 => Val::I64(match pick {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => i64::MIN,
            4 => i64::MAX,
            5 => (bits % 64) as i64,
            _ => bits as i64,
        }),
        ValType::F32 => Val::F32(match pick {
            0 => 0f32.to_bits(),
            1 => (-0f32).to_bits(),
            2 => f32::NAN.to_bits(),
            3 => f32::INFINITY.to_bits(),
            4 => ((bits % 1_000) as f32).to_bits(),
            _ => bits as u32,
        }),
        ValType::F64 => Val::F64(match pick {
            0 => 0f64.to_bits(),
            1 => (-0f64).to_bits(),
            2 => f64::NAN.to_bits(),
            3 => f64::NEG_INFINITY.to_bits(),
            4 => ((bits % 1_000) as f64).to_bits(),
            _ => bits,
        }),
        // Null is the only reference the host can make for every reference type without imports.
        ValType::Ref(_) | ValType::V128 => Val::Ref(Ref::Null),
    }
}
