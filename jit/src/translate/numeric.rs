//! Numeric operators: constants, integer and float arithmetic, comparisons, conversions. Semantics
//! follow the interpreter (`vm/src/interp/numeric.rs`, `float.rs`): `min`/`max` return the canonical
//! NaN when an operand is NaN; division and trapping truncation check their operands first and trap
//! with the interpreter's kinds; rounding and `sqrt` are the hardware's (quiet NaNs, as the
//! interpreter's `quiet_*`).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use vm::tier::{TrapCode, Unsupported};
use wasmparser::Operator;

use super::FuncTranslator;

use types::{F32, F64, I32, I64};

impl FuncTranslator<'_, '_> {
    fn binary(&mut self, f: impl FnOnce(&mut Self, Value, Value) -> Value) {
        let b = self.pop();
        let a = self.pop();
        let v = f(self, a, b);
        self.push(v);
    }

    fn unary(&mut self, f: impl FnOnce(&mut Self, Value) -> Value) {
        let a = self.pop();
        let v = f(self, a);
        self.push(v);
    }

    fn icmp(&mut self, cc: IntCC) {
        self.binary(|t, a, b| {
            let c = t.b.ins().icmp(cc, a, b);
            t.b.ins().uextend(I32, c)
        });
    }

    fn fcmp(&mut self, cc: FloatCC) {
        self.binary(|t, a, b| {
            let c = t.b.ins().fcmp(cc, a, b);
            t.b.ins().uextend(I32, c)
        });
    }

    fn eqz(&mut self) {
        self.unary(|t, a| {
            let c = t.b.ins().icmp_imm_s(IntCC::Equal, a, 0);
            t.b.ins().uextend(I32, c)
        });
    }

    /// Trap with divide-by-zero when `b` is 0.
    fn check_divisor(&mut self, b: Value, offset: u32) {
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        self.trap_if(zero, TrapCode::IntegerDivideByZero, offset);
    }

    fn div_s(&mut self, ty: Type, offset: u32) {
        let b = self.pop();
        let a = self.pop();
        self.check_divisor(b, offset);
        let min = if ty == I32 { i32::MIN as i64 } else { i64::MIN };
        let is_min = self.b.ins().icmp_imm_s(IntCC::Equal, a, min);
        let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let overflow = self.b.ins().band(is_min, is_m1);
        self.trap_if(overflow, TrapCode::IntegerOverflow, offset);
        let v = self.b.ins().sdiv(a, b);
        self.push(v);
    }

    fn rem_s(&mut self, ty: Type, offset: u32) {
        let b = self.pop();
        let a = self.pop();
        self.check_divisor(b, offset);
        // x rem -1 is 0 (and MIN rem -1 must not fault): divide by 1 instead.
        let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let one = self.b.ins().iconst(ty, 1);
        let d = self.b.ins().select(is_m1, one, b);
        let v = self.b.ins().srem(a, d);
        self.push(v);
    }

    fn unsigned_div_rem(&mut self, rem: bool, offset: u32) {
        let b = self.pop();
        let a = self.pop();
        self.check_divisor(b, offset);
        let v = if rem { self.b.ins().urem(a, b) } else { self.b.ins().udiv(a, b) };
        self.push(v);
    }

    /// `min`/`max` with the interpreter's canonical NaN.
    fn min_max(&mut self, ty: Type, max: bool) {
        self.binary(|t, a, b| {
            let r = if max { t.b.ins().fmax(a, b) } else { t.b.ins().fmin(a, b) };
            let nan = t.b.ins().fcmp(FloatCC::Unordered, a, b);
            let canon = if ty == F32 {
                t.b.ins().f32const(Ieee32::with_bits(0x7FC0_0000))
            } else {
                t.b.ins().f64const(Ieee64::with_bits(0x7FF8_0000_0000_0000))
            };
            t.b.ins().select(nan, canon, r)
        });
    }

    /// Trapping float → int truncation: NaN is an invalid conversion, out of `(lo, hi)` (or `[lo, hi)`
    /// when `lo_inclusive`) an overflow; the bounds are the interpreter's, in f64.
    fn trunc(&mut self, to: Type, signed: bool, offset: u32) {
        let x = self.pop();
        let wide = if self.b.func.dfg.value_type(x) == F32 { self.b.ins().fpromote(F64, x) } else { x };
        let (lo, hi, lo_inclusive) = match (to, signed) {
            (I32, true) => (-2147483649.0, 2147483648.0, false),
            (I32, false) => (-1.0, 4294967296.0, false),
            (_, true) => (-9223372036854775808.0, 9223372036854775808.0, true),
            (_, false) => (-1.0, 18446744073709551616.0, false),
        };
        let nan = self.b.ins().fcmp(FloatCC::Unordered, wide, wide);
        self.trap_if(nan, TrapCode::InvalidConversionToInteger, offset);
        let lo_v = self.b.ins().f64const(lo);
        let hi_v = self.b.ins().f64const(hi);
        let below =
            self.b.ins().fcmp(if lo_inclusive { FloatCC::LessThan } else { FloatCC::LessThanOrEqual }, wide, lo_v);
        let above = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, wide, hi_v);
        let out = self.b.ins().bor(below, above);
        self.trap_if(out, TrapCode::IntegerOverflow, offset);
        // In range now; the saturating form has no trap paths of its own.
        let v = if signed { self.b.ins().fcvt_to_sint_sat(to, wide) } else { self.b.ins().fcvt_to_uint_sat(to, wide) };
        self.push(v);
    }

    fn sext(&mut self, narrow: Type, to: Type) {
        self.unary(|t, a| {
            let n = t.b.ins().ireduce(narrow, a);
            t.b.ins().sextend(to, n)
        });
    }

    /// Numeric operators; false if `op` is not one.
    pub(crate) fn numeric_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        macro_rules! bin {
            ($m:ident) => {
                self.binary(|t, a, b| t.b.ins().$m(a, b))
            };
        }
        macro_rules! un {
            ($m:ident) => {
                self.unary(|t, a| t.b.ins().$m(a))
            };
        }
        macro_rules! conv {
            ($m:ident, $ty:expr) => {
                self.unary(|t, a| t.b.ins().$m($ty, a))
            };
        }
        match *op {
            O::I32Const { value } => {
                let v = self.b.ins().iconst(I32, value as u32 as i64);
                self.push(v);
            }
            O::I64Const { value } => {
                let v = self.b.ins().iconst(I64, value);
                self.push(v);
            }
            O::F32Const { value } => {
                let v = self.b.ins().f32const(Ieee32::with_bits(value.bits()));
                self.push(v);
            }
            O::F64Const { value } => {
                let v = self.b.ins().f64const(Ieee64::with_bits(value.bits()));
                self.push(v);
            }
            O::I32Eqz | O::I64Eqz => self.eqz(),
            O::I32Eq | O::I64Eq => self.icmp(IntCC::Equal),
            O::I32Ne | O::I64Ne => self.icmp(IntCC::NotEqual),
            O::I32LtS | O::I64LtS => self.icmp(IntCC::SignedLessThan),
            O::I32LtU | O::I64LtU => self.icmp(IntCC::UnsignedLessThan),
            O::I32GtS | O::I64GtS => self.icmp(IntCC::SignedGreaterThan),
            O::I32GtU | O::I64GtU => self.icmp(IntCC::UnsignedGreaterThan),
            O::I32LeS | O::I64LeS => self.icmp(IntCC::SignedLessThanOrEqual),
            O::I32LeU | O::I64LeU => self.icmp(IntCC::UnsignedLessThanOrEqual),
            O::I32GeS | O::I64GeS => self.icmp(IntCC::SignedGreaterThanOrEqual),
            O::I32GeU | O::I64GeU => self.icmp(IntCC::UnsignedGreaterThanOrEqual),
            O::F32Eq | O::F64Eq => self.fcmp(FloatCC::Equal),
            O::F32Ne | O::F64Ne => self.fcmp(FloatCC::NotEqual),
            O::F32Lt | O::F64Lt => self.fcmp(FloatCC::LessThan),
            O::F32Gt | O::F64Gt => self.fcmp(FloatCC::GreaterThan),
            O::F32Le | O::F64Le => self.fcmp(FloatCC::LessThanOrEqual),
            O::F32Ge | O::F64Ge => self.fcmp(FloatCC::GreaterThanOrEqual),
            O::I32Clz | O::I64Clz => un!(clz),
            O::I32Ctz | O::I64Ctz => un!(ctz),
            O::I32Popcnt | O::I64Popcnt => un!(popcnt),
            O::I32Add if self.bugs.i32_add_is_sub => bin!(isub),
            O::I32Add | O::I64Add => bin!(iadd),
            O::I32Sub | O::I64Sub => bin!(isub),
            O::I32Mul | O::I64Mul => bin!(imul),
            O::I32DivS => self.div_s(I32, offset),
            O::I64DivS => self.div_s(I64, offset),
            O::I32RemS => self.rem_s(I32, offset),
            O::I64RemS => self.rem_s(I64, offset),
            O::I32DivU | O::I64DivU => self.unsigned_div_rem(false, offset),
            O::I32RemU | O::I64RemU => self.unsigned_div_rem(true, offset),
            O::I32And | O::I64And => bin!(band),
            O::I32Or | O::I64Or => bin!(bor),
            O::I32Xor | O::I64Xor => bin!(bxor),
            O::I32Shl | O::I64Shl => bin!(ishl),
            O::I32ShrS | O::I64ShrS => bin!(sshr),
            O::I32ShrU | O::I64ShrU => bin!(ushr),
            O::I32Rotl | O::I64Rotl => bin!(rotl),
            O::I32Rotr | O::I64Rotr => bin!(rotr),
            O::F32Abs | O::F64Abs => un!(fabs),
            O::F32Neg | O::F64Neg => un!(fneg),
            O::F32Ceil | O::F64Ceil => un!(ceil),
            O::F32Floor | O::F64Floor => un!(floor),
            O::F32Trunc | O::F64Trunc => un!(trunc),
            O::F32Nearest | O::F64Nearest => un!(nearest),
            O::F32Sqrt | O::F64Sqrt => un!(sqrt),
            O::F32Add | O::F64Add => bin!(fadd),
            O::F32Sub | O::F64Sub => bin!(fsub),
            O::F32Mul | O::F64Mul => bin!(fmul),
            O::F32Div | O::F64Div => bin!(fdiv),
            O::F32Min => self.min_max(F32, false),
            O::F32Max => self.min_max(F32, true),
            O::F64Min => self.min_max(F64, false),
            O::F64Max => self.min_max(F64, true),
            O::F32Copysign | O::F64Copysign => bin!(fcopysign),
            O::I32WrapI64 => conv!(ireduce, I32),
            O::I64ExtendI32S => conv!(sextend, I64),
            O::I64ExtendI32U => conv!(uextend, I64),
            O::I32TruncF32S | O::I32TruncF64S => self.trunc(I32, true, offset),
            O::I32TruncF32U | O::I32TruncF64U => self.trunc(I32, false, offset),
            O::I64TruncF32S | O::I64TruncF64S => self.trunc(I64, true, offset),
            O::I64TruncF32U | O::I64TruncF64U => self.trunc(I64, false, offset),
            O::I32TruncSatF32S | O::I32TruncSatF64S => conv!(fcvt_to_sint_sat, I32),
            O::I32TruncSatF32U | O::I32TruncSatF64U => conv!(fcvt_to_uint_sat, I32),
            O::I64TruncSatF32S | O::I64TruncSatF64S => conv!(fcvt_to_sint_sat, I64),
            O::I64TruncSatF32U | O::I64TruncSatF64U => conv!(fcvt_to_uint_sat, I64),
            O::F32ConvertI32S | O::F32ConvertI64S => conv!(fcvt_from_sint, F32),
            O::F32ConvertI32U | O::F32ConvertI64U => conv!(fcvt_from_uint, F32),
            O::F64ConvertI32S | O::F64ConvertI64S => conv!(fcvt_from_sint, F64),
            O::F64ConvertI32U | O::F64ConvertI64U => conv!(fcvt_from_uint, F64),
            O::F32DemoteF64 => conv!(fdemote, F32),
            O::F64PromoteF32 => conv!(fpromote, F64),
            O::I32ReinterpretF32 => self.unary(|t, a| t.b.ins().bitcast(I32, MemFlagsData::new(), a)),
            O::I64ReinterpretF64 => self.unary(|t, a| t.b.ins().bitcast(I64, MemFlagsData::new(), a)),
            O::F32ReinterpretI32 => self.unary(|t, a| t.b.ins().bitcast(F32, MemFlagsData::new(), a)),
            O::F64ReinterpretI64 => self.unary(|t, a| t.b.ins().bitcast(F64, MemFlagsData::new(), a)),
            O::I32Extend8S => self.sext(types::I8, I32),
            O::I32Extend16S => self.sext(types::I16, I32),
            O::I64Extend8S => self.sext(types::I8, I64),
            O::I64Extend16S => self.sext(types::I16, I64),
            O::I64Extend32S => self.sext(I32, I64),
            _ => return Ok(false),
        }
        Ok(true)
    }
}
