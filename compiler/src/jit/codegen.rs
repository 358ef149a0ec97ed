//! Translation of one step's decision table into one Cranelift function.
//!
//! The function is `fn(args: *const EvalArgs)`: a loop over the records of a
//! block that, per record, tries the rules in order and stores the index of
//! the first that fires (or `NO_RULE`). Conditions are compiled as jumps
//! (`branch`): a rule fires only when its condition is exactly true, so
//! `and`, `or` and `not` become control flow that stops at the first operand
//! that decides, and NULL never needs a value of its own there. Where a
//! boolean is a value (`flag = (a and b)`, `coalesce(a, b)`), `value` keeps
//! SQL's three-valued logic as a (value, null flag) pair, inline.
//!
//! Subexpressions that read no field (they depend on `now()` only; constants
//! are folded before) are computed once per block, before the loop, so a
//! rule decided for the whole block costs one predicted branch per record.

use super::helpers::{LikeMatcher, TextSet};
use super::{ColumnRef, ConstEntry, EvalArgs, Helper, NO_RULE};
use crate::ir::{ArithOp, CmpOp, Expr, ExprKind, Step};
use crate::types::Type;
use crate::value::Value as Constant;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlot,
    StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;
use std::mem::offset_of;

/// An `in` list of at least this many constant texts is one hash lookup.
const TEXT_SET_MIN_ITEMS: usize = 3;

/// Text constants up to this many bytes are compared inline.
const SHORT_TEXT_BYTES: usize = 16;

/// How the generated code knows a value's NULL-ness.
#[derive(Clone, Copy)]
enum Null {
    Never,
    Always,
    /// An `i8`: 1 when NULL.
    Maybe(Value),
}

#[derive(Clone, Copy)]
enum Repr {
    /// `i64` (int, timestamp, duration), `f64` or `i8` (bool, 0 or 1).
    Scalar(Value),
    /// Pointer and byte length (both `i64`).
    Text(Value, Value),
}

/// A compiled value: what it is when not NULL, and whether it is NULL.
#[derive(Clone, Copy)]
struct CVal {
    repr: Repr,
    null: Null,
}

impl CVal {
    fn scalar(&self) -> Value {
        match self.repr {
            Repr::Scalar(v) => v,
            Repr::Text(..) => unreachable!("the checker typed this operand as a scalar"),
        }
    }

    fn text(&self) -> (Value, Value) {
        match self.repr {
            Repr::Text(p, l) => (p, l),
            Repr::Scalar(_) => unreachable!("the checker typed this operand as text"),
        }
    }
}

pub(super) struct StepCodegen<'a, 'f> {
    b: FunctionBuilder<'f>,
    fields: &'a [Type],
    /// Declares helpers in the module on first use.
    helper: &'a mut dyn FnMut(Helper, &mut cranelift_codegen::ir::Function) -> FuncRef,
    helpers: HashMap<Helper, FuncRef>,
    pub(super) consts: Vec<ConstEntry>,
    args: Value,
    consts_ptr: Value,
    scratch: Value,
    now: Value,
    /// The block's `ColumnRef` array.
    columns: Value,
    /// The fields the rules read.
    used: Vec<bool>,
    /// The record being decided (valid inside the loop only).
    record: Value,
    /// Each used field of the current record, read once at the loop head.
    loaded: Vec<Option<CVal>>,
    /// Values computed before the loop, by the address of their expression.
    hoisted: HashMap<*const Expr, CVal>,
    /// Loaded pointers to `like` matchers and `in` sets.
    objects: HashMap<*const Expr, Value>,
    /// The bytes of text constants short enough to compare inline, by the
    /// value holding their pointer.
    short_texts: HashMap<Value, Box<[u8]>>,
    text_slot: Option<StackSlot>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

fn clif_type(ty: Type) -> cranelift_codegen::ir::Type {
    match ty {
        Type::Int | Type::Timestamp | Type::Duration => types::I64,
        Type::Float => types::F64,
        Type::Bool => types::I8,
        Type::Text => unreachable!("text is two values"),
    }
}

fn reads_fields(e: &Expr) -> bool {
    matches!(e.kind, ExprKind::Field(_)) || e.children().into_iter().any(reads_fields)
}

impl<'a, 'f> StepCodegen<'a, 'f> {
    pub(super) fn new(
        b: FunctionBuilder<'f>,
        fields: &'a [Type],
        helper: &'a mut dyn FnMut(Helper, &mut cranelift_codegen::ir::Function) -> FuncRef,
    ) -> Self {
        StepCodegen {
            b,
            fields,
            helper,
            helpers: HashMap::new(),
            consts: Vec::new(),
            args: Value::from_u32(0),
            consts_ptr: Value::from_u32(0),
            scratch: Value::from_u32(0),
            now: Value::from_u32(0),
            columns: Value::from_u32(0),
            used: vec![false; fields.len()],
            record: Value::from_u32(0),
            loaded: vec![None; fields.len()],
            hoisted: HashMap::new(),
            objects: HashMap::new(),
            short_texts: HashMap::new(),
            text_slot: None,
        }
    }

    /// Emits the whole function for `step`.
    pub(super) fn compile(mut self, step: &Step, target: TargetFrontendConfig) -> Vec<ConstEntry> {
        let ptr = types::I64;
        self.b.func.signature.params.push(AbiParam::new(ptr));
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        self.args = self.b.block_params(entry)[0];
        let load = |b: &mut FunctionBuilder, offset: usize, base: Value| {
            b.ins().load(ptr, flags(), base, offset as i32)
        };
        let len = load(&mut self.b, offset_of!(EvalArgs, len), self.args);
        self.now = load(&mut self.b, offset_of!(EvalArgs, now), self.args);
        self.consts_ptr = load(&mut self.b, offset_of!(EvalArgs, consts), self.args);
        self.scratch = load(&mut self.b, offset_of!(EvalArgs, scratch), self.args);
        let out = load(&mut self.b, offset_of!(EvalArgs, out), self.args);
        let columns = load(&mut self.b, offset_of!(EvalArgs, columns), self.args);

        // Rules after one that always fires can never fire; rules whose
        // condition is constantly false or NULL never fire.
        let mut rules: Vec<(usize, Option<&Expr>)> = Vec::new();
        for (index, rule) in step.rules.iter().enumerate() {
            match rule.condition.as_ref().map(|c| c.as_const()) {
                None | Some(Some(Constant::Bool(true))) => {
                    rules.push((index, None));
                    break;
                }
                Some(Some(_)) => {}
                Some(None) => rules.push((index, rule.condition.as_ref())),
            }
        }

        // Before the loop: column pointers, constants, block invariants.
        let mut used = vec![false; self.fields.len()];
        for (_, condition) in &rules {
            if let Some(c) = condition {
                mark_fields(c, &mut used);
            }
        }
        self.used = used;
        self.columns = columns;
        for (_, condition) in &rules {
            if let Some(c) = condition {
                self.prepare(c);
            }
        }

        let head = self.b.create_block();
        let record = self.b.append_block_param(head, types::I64);
        let store = self.b.create_block();
        let fired = self.b.append_block_param(store, types::I32);
        let exit = self.b.create_block();
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b
            .ins()
            .brif(len, head, &[BlockArg::Value(zero)], exit, &[]);

        self.b.switch_to_block(head);
        self.record = record;
        for field in 0..self.fields.len() {
            if self.used[field] {
                self.loaded[field] = Some(self.field(field));
            }
        }
        let mut rules = rules.as_slice();
        while let Some(&(index, condition)) = rules.first() {
            // A run of cheap rules: every condition computed, the first
            // that holds chosen by selects, one branch for the whole run.
            let run = rules
                .iter()
                .take_while(|(_, c)| c.is_some_and(is_cheap))
                .count();
            if run >= 2 {
                let mut holds = Vec::with_capacity(run);
                for (index, condition) in &rules[..run] {
                    let v = self.value(condition.expect("cheap rules have conditions"));
                    holds.push((*index, self.is_exactly(v, true)));
                }
                let (last_index, last_holds) = holds[run - 1];
                let mut any = last_holds;
                let mut fired = self.b.ins().iconst(types::I32, last_index as i64);
                for &(index, h) in holds[..run - 1].iter().rev() {
                    let i = self.b.ins().iconst(types::I32, index as i64);
                    fired = self.b.ins().select(h, i, fired);
                    any = self.b.ins().bor(any, h);
                }
                let next = self.b.create_block();
                self.b
                    .ins()
                    .brif(any, store, &[BlockArg::Value(fired)], next, &[]);
                self.b.switch_to_block(next);
                rules = &rules[run..];
                continue;
            }
            let fire = self.b.create_block();
            let next = self.b.create_block();
            match condition {
                None => {
                    self.b.ins().jump(fire, &[]);
                }
                Some(c) => self.branch(c, true, fire, next),
            }
            self.b.switch_to_block(fire);
            let index = self.b.ins().iconst(types::I32, index as i64);
            self.b.ins().jump(store, &[BlockArg::Value(index)]);
            self.b.switch_to_block(next);
            rules = &rules[1..];
        }
        // The block after the last rule (unreachable after `else`).
        let none = self.b.ins().iconst(types::I32, i64::from(NO_RULE));
        self.b.ins().jump(store, &[BlockArg::Value(none)]);

        self.b.switch_to_block(store);
        let slot = self.b.ins().ishl_imm_u(record, 2);
        let slot = self.b.ins().iadd(out, slot);
        self.b.ins().store(MemFlagsData::trusted(), fired, slot, 0);
        let next = self.b.ins().iadd_imm_s(record, 1);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, len);
        self.b
            .ins()
            .brif(more, head, &[BlockArg::Value(next)], exit, &[]);

        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        self.b.finalize(target);
        self.consts
    }

    /// Before the loop: computes what no field changes and loads the
    /// constants and matcher objects the loop uses.
    fn prepare(&mut self, e: &Expr) {
        let is_scalar_const = matches!(e.kind, ExprKind::Const(_)) && e.ty != Type::Text;
        if is_scalar_const {
            return;
        }
        if !reads_fields(e) {
            let v = self.value(e);
            self.hoisted.insert(e, v);
            return;
        }
        match &e.kind {
            ExprKind::Like(x, pattern) => {
                self.object(e, || ConstEntry::Like(Box::new(LikeMatcher::new(pattern))));
                self.prepare(x);
            }
            ExprKind::Cmp(CmpOp::Eq | CmpOp::NotEq, x, y) => {
                if let Some((_, c)) = self.lowered_constant(x, y) {
                    self.object(e, || {
                        ConstEntry::Like(Box::new(LikeMatcher::Exact(c.to_string())))
                    });
                }
                self.prepare(x);
                self.prepare(y);
            }
            ExprKind::InList(x, items) => match text_set(x, items) {
                // The items live in the set: only the operand is read.
                Some(set) => {
                    self.object(e, || ConstEntry::Set(Box::new(set)));
                    self.prepare(x);
                }
                None => {
                    self.prepare(x);
                    items.iter().for_each(|item| self.prepare(item));
                }
            },
            _ => {
                for child in e.children() {
                    self.prepare(child);
                }
            }
        }
    }

    /// The loaded pointer to the matcher or set `e` uses: the one prepared
    /// before the loop, or (for an expression `prepare` did not see) made
    /// and loaded here.
    fn object(&mut self, e: &Expr, make: impl FnOnce() -> ConstEntry) -> Value {
        if let Some(p) = self.objects.get(&(e as *const Expr)) {
            return *p;
        }
        let k = self.push_const(make());
        let p = self.const_ptr(k);
        self.objects.insert(e, p);
        p
    }

    fn push_const(&mut self, entry: ConstEntry) -> usize {
        self.consts.push(entry);
        self.consts.len() - 1
    }

    /// Loads `(pointer, length)` of constant `k` from the bundle's table.
    fn const_ptr(&mut self, k: usize) -> Value {
        let offset = (k * size_of::<super::ConstRef>()) as i32;
        self.b
            .ins()
            .load(types::I64, flags(), self.consts_ptr, offset)
    }

    fn const_len(&mut self, k: usize) -> Value {
        let offset = (k * size_of::<super::ConstRef>() + 8) as i32;
        self.b
            .ins()
            .load(types::I64, flags(), self.consts_ptr, offset)
    }

    fn call(&mut self, helper: Helper, args: &[Value]) -> Option<Value> {
        let f = match self.helpers.get(&helper) {
            Some(f) => *f,
            None => {
                let f = (self.helper)(helper, self.b.func);
                self.helpers.insert(helper, f);
                f
            }
        };
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call).first().copied()
    }

    fn iconst8(&mut self, v: bool) -> Value {
        self.b.ins().iconst(types::I8, i64::from(v))
    }

    fn null_flag(&mut self, n: Null) -> Value {
        match n {
            Null::Never => self.iconst8(false),
            Null::Always => self.iconst8(true),
            Null::Maybe(v) => v,
        }
    }

    fn either_null(&mut self, a: Null, b: Null) -> Null {
        match (a, b) {
            (Null::Always, _) | (_, Null::Always) => Null::Always,
            (Null::Never, n) | (n, Null::Never) => n,
            (Null::Maybe(x), Null::Maybe(y)) => Null::Maybe(self.b.ins().bor(x, y)),
        }
    }

    /// `null` or'd with a computed condition (overflow, division by zero).
    fn null_if(&mut self, n: Null, cond: Value) -> Null {
        let c = Null::Maybe(cond);
        self.either_null(n, c)
    }

    fn zero(&mut self, ty: Type) -> Repr {
        match ty {
            Type::Text => {
                let z = self.b.ins().iconst(types::I64, 0);
                Repr::Text(z, z)
            }
            Type::Float => Repr::Scalar(self.b.ins().f64const(0.0)),
            ty => Repr::Scalar(self.b.ins().iconst(clif_type(ty), 0)),
        }
    }

    fn constant(&mut self, e: &Expr, c: &Constant) -> CVal {
        let scalar = |repr| CVal {
            repr: Repr::Scalar(repr),
            null: Null::Never,
        };
        match c {
            Constant::Null => CVal {
                repr: self.zero(e.ty),
                null: Null::Always,
            },
            Constant::Int(v) | Constant::Timestamp(v) | Constant::Duration(v) => {
                scalar(self.b.ins().iconst(types::I64, *v))
            }
            Constant::Float(v) => scalar(self.b.ins().f64const(*v)),
            Constant::Bool(v) => scalar(self.iconst8(*v)),
            Constant::Text(s) => {
                let k = self.push_const(ConstEntry::Text(s.clone().into_boxed_str()));
                let (p, l) = (self.const_ptr(k), self.const_len(k));
                if s.len() <= SHORT_TEXT_BYTES {
                    self.short_texts.insert(p, s.as_bytes().into());
                }
                CVal {
                    repr: Repr::Text(p, l),
                    null: Null::Never,
                }
            }
        }
    }

    /// Reads `field` of the current record. The column's pointers are read
    /// from the `ColumnRef` array here, per record, rather than held in
    /// registers across the loop: they are L1 hits, and a dozen values live
    /// through the whole loop would cost spills and register-allocation
    /// time instead.
    fn field(&mut self, field: usize) -> CVal {
        let base = (field * size_of::<ColumnRef>()) as i32;
        let column = |s: &mut Self, offset: usize| {
            s.b.ins()
                .load(types::I64, flags(), s.columns, base + offset as i32)
        };
        let nulls = column(self, offset_of!(ColumnRef, nulls));
        let values = column(self, offset_of!(ColumnRef, values));
        let i = self.record;
        let word = self.b.ins().ushr_imm_u(i, 6);
        let word = self.b.ins().ishl_imm_u(word, 3);
        let word = self.b.ins().iadd(nulls, word);
        let word = self.b.ins().load(types::I64, flags(), word, 0);
        let bit = self.b.ins().ushr(word, i);
        let bit = self.b.ins().band_imm_u(bit, 1);
        let null = Null::Maybe(self.b.ins().ireduce(types::I8, bit));
        let repr = match self.fields[field] {
            Type::Text => {
                let offsets = column(self, offset_of!(ColumnRef, offsets));
                let at = self.b.ins().ishl_imm_u(i, 2);
                let at = self.b.ins().iadd(offsets, at);
                let start = self.b.ins().uload32(flags(), at, 0);
                let end = self.b.ins().uload32(flags(), at, 4);
                let ptr = self.b.ins().iadd(values, start);
                let len = self.b.ins().isub(end, start);
                Repr::Text(ptr, len)
            }
            ty => {
                let ct = clif_type(ty);
                let at = if ct == types::I8 {
                    i
                } else {
                    self.b.ins().ishl_imm_u(i, 3)
                };
                let at = self.b.ins().iadd(values, at);
                Repr::Scalar(self.b.ins().load(ct, flags(), at, 0))
            }
        };
        CVal { repr, null }
    }

    /// Jumps to `yes` when `e` is exactly `want` (not NULL), else to `no`.
    fn branch(&mut self, e: &Expr, want: bool, yes: Block, no: Block) {
        if !self.hoisted.contains_key(&(e as *const Expr)) {
            match &e.kind {
                ExprKind::Const(c) => {
                    let target = if *c == Constant::Bool(want) { yes } else { no };
                    self.b.ins().jump(target, &[]);
                    return;
                }
                ExprKind::Not(x) => return self.branch(x, !want, yes, no),
                // `a and b` is true when both are; it is false when either is.
                // A cheap right operand is computed, not jumped around: a
                // mispredicted branch costs more than the work it skips.
                ExprKind::And(x, y) | ExprKind::Or(x, y) if !is_cheap(y) => {
                    let conjunction = matches!(e.kind, ExprKind::And(..));
                    let mid = self.b.create_block();
                    if conjunction == want {
                        self.branch(x, want, mid, no);
                        self.b.switch_to_block(mid);
                        self.branch(y, want, yes, no);
                    } else {
                        self.branch(x, want, yes, mid);
                        self.b.switch_to_block(mid);
                        self.branch(y, want, yes, no);
                    }
                    return;
                }
                _ => {}
            }
        }
        let v = self.value(e);
        let holds = self.is_exactly(v, want);
        self.b.ins().brif(holds, yes, &[], no, &[]);
    }

    /// The value of `e` for the current record (or before the loop).
    fn value(&mut self, e: &Expr) -> CVal {
        if let Some(v) = self.hoisted.get(&(e as *const Expr)) {
            return *v;
        }
        match &e.kind {
            ExprKind::Const(c) => self.constant(e, c),
            ExprKind::Field(f) => match self.loaded[*f] {
                Some(v) => v,
                None => self.field(*f),
            },
            ExprKind::Now => CVal {
                repr: Repr::Scalar(self.now),
                null: Null::Never,
            },
            ExprKind::Not(x) => {
                let v = self.value(x);
                let r = self.b.ins().bxor_imm_u(v.scalar(), 1);
                CVal {
                    repr: Repr::Scalar(r),
                    null: v.null,
                }
            }
            ExprKind::And(x, y) | ExprKind::Or(x, y) => {
                let conjunction = matches!(e.kind, ExprKind::And(..));
                if is_cheap(y) {
                    self.logic_eager(x, y, conjunction)
                } else {
                    self.logic(x, y, conjunction)
                }
            }
            ExprKind::Neg(x) | ExprKind::Abs(x) => {
                let negate = matches!(e.kind, ExprKind::Neg(_));
                let v = self.value(x);
                let x = v.scalar();
                if e.ty == Type::Float {
                    let r = if negate {
                        self.b.ins().fneg(x)
                    } else {
                        self.b.ins().fabs(x)
                    };
                    return CVal {
                        repr: Repr::Scalar(r),
                        null: v.null,
                    };
                }
                // Both overflow on MIN only (its negation does not fit).
                let overflow = self.b.ins().icmp_imm_s(IntCC::Equal, x, i64::MIN);
                let r = if negate {
                    self.b.ins().ineg(x)
                } else {
                    self.b.ins().iabs(x)
                };
                CVal {
                    repr: Repr::Scalar(r),
                    null: self.null_if(v.null, overflow),
                }
            }
            ExprKind::Arith(op, x, y) => {
                let (a, b) = (self.value(x), self.value(y));
                let null = self.either_null(a.null, b.null);
                if x.ty == Type::Float {
                    self.float_arith(*op, a.scalar(), b.scalar(), null)
                } else if let (ArithOp::Div | ArithOp::Rem, Some(Constant::Int(c))) =
                    (op, y.as_const())
                {
                    self.int_divide_by_constant(*op, a.scalar(), *c, null)
                } else {
                    self.int_arith(*op, a.scalar(), b.scalar(), null)
                }
            }
            ExprKind::Cmp(op @ (CmpOp::Eq | CmpOp::NotEq), x, y)
                if self.objects.contains_key(&(e as *const Expr)) =>
            {
                // `lower(t) = 'c'` is `lower(t) like 'c'` when `c` has no
                // wildcard (`prepare` made the matcher).
                let (lowered, c) = self
                    .lowered_constant(x, y)
                    .expect("prepared as lower(t) = 'c'");
                let matcher = self.object(e, || {
                    ConstEntry::Like(Box::new(LikeMatcher::Exact(c.to_string())))
                });
                let eq = self.text_match(lowered, matcher);
                if *op == CmpOp::Eq {
                    return eq;
                }
                CVal {
                    repr: Repr::Scalar(self.b.ins().bxor_imm_u(eq.scalar(), 1)),
                    null: eq.null,
                }
            }
            ExprKind::Cmp(op, x, y) => {
                let (a, b) = (self.value(x), self.value(y));
                let r = self.compare(*op, x.ty, a, b);
                let null = self.either_null(a.null, b.null);
                CVal {
                    repr: Repr::Scalar(r),
                    null,
                }
            }
            ExprKind::ToFloat(x) => {
                let v = self.value(x);
                let r = self.b.ins().fcvt_from_sint(types::F64, v.scalar());
                CVal {
                    repr: Repr::Scalar(r),
                    null: v.null,
                }
            }
            ExprKind::IsNull(x) => {
                let v = self.value(x);
                let r = self.null_flag(v.null);
                CVal {
                    repr: Repr::Scalar(r),
                    null: Null::Never,
                }
            }
            ExprKind::InList(x, items) => self.in_list(e, x, items),
            ExprKind::Like(x, pattern) => {
                let matcher =
                    self.object(e, || ConstEntry::Like(Box::new(LikeMatcher::new(pattern))));
                self.text_match(x, matcher)
            }
            ExprKind::Lower(x) | ExprKind::Upper(x) => {
                let v = self.value(x);
                let (p, l) = v.text();
                let slot = match self.text_slot {
                    Some(s) => s,
                    None => {
                        let s = self.b.create_sized_stack_slot(StackSlotData::new(
                            StackSlotKind::ExplicitSlot,
                            16,
                            3,
                        ));
                        self.text_slot = Some(s);
                        s
                    }
                };
                let out = self.b.ins().stack_addr(types::I64, slot, 0);
                let helper = if matches!(e.kind, ExprKind::Lower(_)) {
                    Helper::Lower
                } else {
                    Helper::Upper
                };
                self.call(helper, &[self.scratch, p, l, out]);
                let p = self.b.ins().stack_load(types::I64, types::I64, slot, 0);
                let l = self.b.ins().stack_load(types::I64, types::I64, slot, 8);
                CVal {
                    repr: Repr::Text(p, l),
                    null: v.null,
                }
            }
            ExprKind::Length(x) => {
                let v = self.value(x);
                let (p, l) = v.text();
                let r = self.call(Helper::Length, &[p, l]).expect("returns a value");
                CVal {
                    repr: Repr::Scalar(r),
                    null: v.null,
                }
            }
            ExprKind::Coalesce(args) if args.iter().all(is_cheap) => self.coalesce_eager(args),
            ExprKind::Coalesce(args) => self.coalesce(e.ty, args),
        }
    }

    /// Whether `operand` matches the `like` matcher at `matcher`. For
    /// `lower(t)` one call lowers `t` as it compares (no lowered copy).
    fn text_match(&mut self, operand: &Expr, matcher: Value) -> CVal {
        let v = match &operand.kind {
            ExprKind::Lower(t) if !self.hoisted.contains_key(&(operand as *const Expr)) => {
                let v = self.value(t);
                let (p, l) = v.text();
                let r = self.call(Helper::LikeLower, &[matcher, self.scratch, p, l]);
                (r, v.null)
            }
            _ => {
                let v = self.value(operand);
                let (p, l) = v.text();
                (self.call(Helper::Like, &[matcher, p, l]), v.null)
            }
        };
        CVal {
            repr: Repr::Scalar(v.0.expect("returns a value")),
            null: v.1,
        }
    }

    /// For `lower(t) = 'c'` (either way round, `c` without `%` or `_`):
    /// `lower(t)` and `c`.
    fn lowered_constant<'e>(&self, x: &'e Expr, y: &'e Expr) -> Option<(&'e Expr, &'e str)> {
        let pair = |l: &'e Expr, c: &'e Expr| match (&l.kind, c.as_const()) {
            (ExprKind::Lower(_), Some(Constant::Text(s)))
                if !s.contains(['%', '_']) && !self.hoisted.contains_key(&(l as *const Expr)) =>
            {
                Some((l, s.as_str()))
            }
            _ => None,
        };
        pair(x, y).or_else(|| pair(y, x))
    }

    /// `and` (`conjunction`) or `or` as a value, by three-valued logic,
    /// not evaluating `y` when `x` decides.
    fn logic(&mut self, x: &Expr, y: &Expr, conjunction: bool) -> CVal {
        // The deciding value: false for `and`, true for `or`.
        let decider = !conjunction;
        let a = self.value(x);
        let done = self.b.create_block();
        let result = self.b.append_block_param(done, types::I8);
        let result_null = self.b.append_block_param(done, types::I8);
        let rest = self.b.create_block();
        let a_decides = self.is_exactly(a, decider);
        let d = self.iconst8(decider);
        let zero = self.iconst8(false);
        self.b.ins().brif(
            a_decides,
            done,
            &[BlockArg::Value(d), BlockArg::Value(zero)],
            rest,
            &[],
        );
        self.b.switch_to_block(rest);
        let b = self.value(y);
        // `a` is not the decider here: the result is the decider if `b` is,
        // else NULL if either is NULL, else the other value.
        let b_decides = self.is_exactly(b, decider);
        let any_null = self.either_null(a.null, b.null);
        let any_null = self.null_flag(any_null);
        let null = self.b.ins().band_not(any_null, b_decides);
        let other = self.iconst8(!decider);
        let value = self.b.ins().select(b_decides, d, other);
        self.b
            .ins()
            .jump(done, &[BlockArg::Value(value), BlockArg::Value(null)]);
        self.b.switch_to_block(done);
        CVal {
            repr: Repr::Scalar(result),
            null: Null::Maybe(result_null),
        }
    }

    /// `and` (`conjunction`) or `or` as a value, both operands computed:
    /// the result is the decider (false for `and`, true for `or`) if either
    /// operand is, else NULL if either is NULL, else the other value.
    fn logic_eager(&mut self, x: &Expr, y: &Expr, conjunction: bool) -> CVal {
        let decider = !conjunction;
        let (a, b) = (self.value(x), self.value(y));
        let a_decides = self.is_exactly(a, decider);
        let b_decides = self.is_exactly(b, decider);
        let decided = self.b.ins().bor(a_decides, b_decides);
        let null = match self.either_null(a.null, b.null) {
            Null::Never => Null::Never,
            n => {
                let n = self.null_flag(n);
                Null::Maybe(self.b.ins().band_not(n, decided))
            }
        };
        // Not decided and not NULL: both are the other value.
        let value = if decider {
            decided
        } else {
            self.b.ins().bxor_imm_u(decided, 1)
        };
        CVal {
            repr: Repr::Scalar(value),
            null,
        }
    }

    /// `coalesce` of cheap arguments: all computed, the first non-NULL
    /// chosen by selects from the last argument back.
    fn coalesce_eager(&mut self, args: &[Expr]) -> CVal {
        let values: Vec<CVal> = args.iter().map(|a| self.value(a)).collect();
        let mut result = *values.last().expect("coalesce has an argument");
        for v in values.iter().rev().skip(1) {
            let n = match v.null {
                Null::Never => {
                    result = *v;
                    continue;
                }
                Null::Always => continue,
                Null::Maybe(n) => n,
            };
            let repr = match (v.repr, result.repr) {
                (Repr::Scalar(a), Repr::Scalar(r)) => Repr::Scalar(self.b.ins().select(n, r, a)),
                (Repr::Text(ap, al), Repr::Text(rp, rl)) => Repr::Text(
                    self.b.ins().select(n, rp, ap),
                    self.b.ins().select(n, rl, al),
                ),
                _ => unreachable!("coalesce arguments share one type"),
            };
            let null = match result.null {
                Null::Never => Null::Never,
                Null::Always => Null::Maybe(n),
                Null::Maybe(r) => Null::Maybe(self.b.ins().band(n, r)),
            };
            result = CVal { repr, null };
        }
        result
    }

    /// 1 when the boolean `v` is not NULL and equals `want`.
    fn is_exactly(&mut self, v: CVal, want: bool) -> Value {
        let is_want = if want {
            v.scalar()
        } else {
            self.b.ins().bxor_imm_u(v.scalar(), 1)
        };
        match v.null {
            Null::Never => is_want,
            Null::Always => self.iconst8(false),
            Null::Maybe(n) => self.b.ins().band_not(is_want, n),
        }
    }

    fn int_arith(&mut self, op: ArithOp, a: Value, b: Value, null: Null) -> CVal {
        let (r, bad) = match op {
            ArithOp::Add => self.b.ins().sadd_overflow(a, b),
            ArithOp::Sub => self.b.ins().ssub_overflow(a, b),
            ArithOp::Mul => self.b.ins().smul_overflow(a, b),
            ArithOp::Div => {
                // NULL on a zero divisor and on MIN / -1; divide by 1
                // instead so the instruction can never trap.
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let minus_one = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
                let min = self.b.ins().icmp_imm_s(IntCC::Equal, a, i64::MIN);
                let overflow = self.b.ins().band(minus_one, min);
                let bad = self.b.ins().bor(zero, overflow);
                let one = self.b.ins().iconst(types::I64, 1);
                let divisor = self.b.ins().select(bad, one, b);
                (self.b.ins().sdiv(a, divisor), bad)
            }
            ArithOp::Rem => {
                // x % 0 is NULL; x % -1 is 0 (also for MIN, where the
                // instruction would trap): both divide by 1 instead.
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let minus_one = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
                let unsafe_divisor = self.b.ins().bor(zero, minus_one);
                let one = self.b.ins().iconst(types::I64, 1);
                let divisor = self.b.ins().select(unsafe_divisor, one, b);
                (self.b.ins().srem(a, divisor), zero)
            }
        };
        let null = self.null_if(null, bad);
        CVal {
            repr: Repr::Scalar(r),
            null,
        }
    }

    /// `/` and `%` by a constant: no run-time guard where the constant
    /// rules the edge cases out, which lets Cranelift turn the division
    /// into a multiplication.
    fn int_divide_by_constant(&mut self, op: ArithOp, a: Value, c: i64, null: Null) -> CVal {
        let (r, null) = match (op, c) {
            (_, 0) => (self.b.ins().iconst(types::I64, 0), Null::Always),
            (ArithOp::Div, -1) => {
                let overflow = self.b.ins().icmp_imm_s(IntCC::Equal, a, i64::MIN);
                (self.b.ins().ineg(a), self.null_if(null, overflow))
            }
            (ArithOp::Rem, -1) => (self.b.ins().iconst(types::I64, 0), null),
            (ArithOp::Div, c) => {
                let c = self.b.ins().iconst(types::I64, c);
                (self.b.ins().sdiv(a, c), null)
            }
            (_, c) => {
                let c = self.b.ins().iconst(types::I64, c);
                (self.b.ins().srem(a, c), null)
            }
        };
        CVal {
            repr: Repr::Scalar(r),
            null,
        }
    }

    fn float_arith(&mut self, op: ArithOp, a: Value, b: Value, null: Null) -> CVal {
        let (r, null) = match op {
            ArithOp::Add => (self.b.ins().fadd(a, b), null),
            ArithOp::Sub => (self.b.ins().fsub(a, b), null),
            ArithOp::Mul => (self.b.ins().fmul(a, b), null),
            ArithOp::Div | ArithOp::Rem => {
                let zero = self.b.ins().f64const(0.0);
                let by_zero = self.b.ins().fcmp(FloatCC::Equal, b, zero);
                let null = self.null_if(null, by_zero);
                let r = if op == ArithOp::Div {
                    self.b.ins().fdiv(a, b)
                } else {
                    self.call(Helper::FloatRem, &[a, b])
                        .expect("returns a value")
                };
                (r, null)
            }
        };
        // NaN (inf - inf, inf * 0, …) is NULL.
        let nan = self.b.ins().fcmp(FloatCC::Unordered, r, r);
        let null = self.null_if(null, nan);
        CVal {
            repr: Repr::Scalar(r),
            null,
        }
    }

    /// The relation `op` between two non-NULL values of type `ty`, as an `i8`.
    fn compare(&mut self, op: CmpOp, ty: Type, a: CVal, b: CVal) -> Value {
        let int_cc = match op {
            CmpOp::Eq => IntCC::Equal,
            CmpOp::NotEq => IntCC::NotEqual,
            CmpOp::Lt => IntCC::SignedLessThan,
            CmpOp::LtEq => IntCC::SignedLessThanOrEqual,
            CmpOp::Gt => IntCC::SignedGreaterThan,
            CmpOp::GtEq => IntCC::SignedGreaterThanOrEqual,
        };
        match ty {
            Type::Float => {
                let cc = match op {
                    CmpOp::Eq => FloatCC::Equal,
                    CmpOp::NotEq => FloatCC::NotEqual,
                    CmpOp::Lt => FloatCC::LessThan,
                    CmpOp::LtEq => FloatCC::LessThanOrEqual,
                    CmpOp::Gt => FloatCC::GreaterThan,
                    CmpOp::GtEq => FloatCC::GreaterThanOrEqual,
                };
                self.b.ins().fcmp(cc, a.scalar(), b.scalar())
            }
            Type::Text => {
                let ((ap, al), (bp, bl)) = (a.text(), b.text());
                match op {
                    CmpOp::Eq | CmpOp::NotEq => {
                        let eq = if let Some(c) = self.short_texts.get(&bp).cloned() {
                            self.text_eq_short(ap, al, bp, &c)
                        } else if let Some(c) = self.short_texts.get(&ap).cloned() {
                            self.text_eq_short(bp, bl, ap, &c)
                        } else {
                            self.text_eq(ap, al, bp, bl)
                        };
                        if op == CmpOp::Eq {
                            eq
                        } else {
                            self.b.ins().bxor_imm_u(eq, 1)
                        }
                    }
                    _ => {
                        let order = self
                            .call(Helper::TextCmp, &[ap, al, bp, bl])
                            .expect("returns a value");
                        self.b.ins().icmp_imm_s(int_cc, order, 0)
                    }
                }
            }
            // Booleans are 0/1 and compare as such (false < true); int,
            // timestamp and duration are signed 64-bit.
            _ => self.b.ins().icmp(int_cc, a.scalar(), b.scalar()),
        }
    }

    /// Equality with a constant of at most `SHORT_TEXT_BYTES` bytes, with
    /// no branch and no call: the length, then at most two overlapping
    /// loads of the text's bytes compared with the constant's. When the
    /// lengths differ the loads read the constant itself (`cp`), so they
    /// never leave the text.
    fn text_eq_short(&mut self, p: Value, len: Value, cp: Value, c: &[u8]) -> Value {
        let n = c.len();
        let same_len = self.b.ins().icmp_imm_s(IntCC::Equal, len, n as i64);
        if n == 0 {
            return same_len;
        }
        let at = self.b.ins().select(same_len, p, cp);
        let width = [8, 4, 2, 1].into_iter().find(|&w| w <= n).expect("n > 0");
        let ty = match width {
            8 => types::I64,
            4 => types::I32,
            2 => types::I16,
            _ => types::I8,
        };
        let unaligned = MemFlagsData::new().with_notrap().with_readonly();
        let mut eq = same_len;
        let offsets: &[usize] = if width == n { &[0] } else { &[0, n - width] };
        for &offset in offsets {
            let mut word = [0u8; 8];
            word[..width].copy_from_slice(&c[offset..offset + width]);
            let expected = i64::from_ne_bytes(word);
            let expected = match width {
                8 => expected,
                4 => i64::from(expected as i32),
                2 => i64::from(expected as i16),
                _ => i64::from(expected as i8),
            };
            let loaded = self.b.ins().load(ty, unaligned, at, offset as i32);
            let same = self.b.ins().icmp_imm_s(IntCC::Equal, loaded, expected);
            eq = self.b.ins().band(eq, same);
        }
        eq
    }

    /// Text equality: lengths first, inline; bytes only when they agree.
    fn text_eq(&mut self, ap: Value, al: Value, bp: Value, bl: Value) -> Value {
        let same_len = self.b.ins().icmp(IntCC::Equal, al, bl);
        let bytes = self.b.create_block();
        let done = self.b.create_block();
        let result = self.b.append_block_param(done, types::I8);
        let no = self.iconst8(false);
        self.b
            .ins()
            .brif(same_len, bytes, &[], done, &[BlockArg::Value(no)]);
        self.b.switch_to_block(bytes);
        let eq = self
            .call(Helper::TextEq, &[ap, al, bp, bl])
            .expect("returns a value");
        self.b.ins().jump(done, &[BlockArg::Value(eq)]);
        self.b.switch_to_block(done);
        result
    }

    fn in_list(&mut self, e: &Expr, x: &Expr, items: &[Expr]) -> CVal {
        let v = self.value(x);
        if let Some(set) = self.objects.get(&(e as *const Expr)).copied() {
            let (p, l) = v.text();
            let r = self
                .call(Helper::InTextSet, &[set, p, l])
                .expect("returns a value");
            return CVal {
                repr: Repr::Scalar(r),
                null: v.null,
            };
        }
        // found: some item equals x (both not NULL); saw_null: some item
        // is NULL. x in (...) is true if found, else NULL if x or an item
        // is NULL, else false. Items are cheap and pure: no short circuit.
        let mut found = self.iconst8(false);
        let mut saw_null = Null::Never;
        for item in items {
            let it = self.value(item);
            if matches!(it.null, Null::Always) {
                saw_null = Null::Always;
                continue;
            }
            let eq = self.compare(CmpOp::Eq, x.ty, v, it);
            let eq = match it.null {
                Null::Maybe(n) => self.b.ins().band_not(eq, n),
                _ => eq,
            };
            found = self.b.ins().bor(found, eq);
            saw_null = self.either_null(saw_null, it.null);
        }
        let null = match (v.null, saw_null) {
            (Null::Always, _) => Null::Always,
            (xn, Null::Never) => xn,
            (xn, items_null) => {
                let items_null = self.null_flag(items_null);
                let unresolved = self.b.ins().band_not(items_null, found);
                self.null_if(xn, unresolved)
            }
        };
        CVal {
            repr: Repr::Scalar(found),
            null,
        }
    }

    /// The first argument that is not NULL, trying them in order.
    fn coalesce(&mut self, ty: Type, args: &[Expr]) -> CVal {
        let done = self.b.create_block();
        let result = match ty {
            Type::Text => {
                let p = self.b.append_block_param(done, types::I64);
                let l = self.b.append_block_param(done, types::I64);
                Repr::Text(p, l)
            }
            ty => Repr::Scalar(self.b.append_block_param(done, clif_type(ty))),
        };
        let result_null = self.b.append_block_param(done, types::I8);
        for (index, arg) in args.iter().enumerate() {
            let v = self.value(arg);
            let mut block_args: Vec<BlockArg> = match v.repr {
                Repr::Scalar(s) => vec![BlockArg::Value(s)],
                Repr::Text(p, l) => vec![BlockArg::Value(p), BlockArg::Value(l)],
            };
            let last = index + 1 == args.len();
            match v.null {
                Null::Never => {
                    block_args.push(BlockArg::Value(self.iconst8(false)));
                    self.b.ins().jump(done, &block_args);
                    break;
                }
                Null::Always if !last => continue,
                null => {
                    let n = self.null_flag(null);
                    block_args.push(BlockArg::Value(n));
                    if last {
                        self.b.ins().jump(done, &block_args);
                    } else {
                        let next = self.b.create_block();
                        self.b.ins().brif(n, next, &[], done, &block_args);
                        self.b.switch_to_block(next);
                    }
                }
            }
        }
        self.b.switch_to_block(done);
        CVal {
            repr: result,
            null: Null::Maybe(result_null),
        }
    }
}

/// Whether `e` is a few inline instructions: no helper call (text
/// operations, float `%`) and no control flow of its own. Cheap operands
/// are computed rather than branched around, and runs of rules with cheap
/// conditions are decided without a branch per rule.
fn is_cheap(e: &Expr) -> bool {
    let here = match &e.kind {
        ExprKind::Like(..) | ExprKind::Lower(_) | ExprKind::Upper(_) | ExprKind::Length(_) => false,
        ExprKind::Cmp(CmpOp::Eq | CmpOp::NotEq, x, y) if x.ty == Type::Text => {
            is_short_text(x) || is_short_text(y)
        }
        ExprKind::InList(x, items) if x.ty == Type::Text => {
            items.len() < TEXT_SET_MIN_ITEMS && items.iter().all(is_short_text)
        }
        ExprKind::Cmp(_, x, _) => x.ty != Type::Text,
        ExprKind::Arith(ArithOp::Rem, x, _) => x.ty != Type::Float,
        _ => true,
    };
    here && e.children().into_iter().all(is_cheap)
}

/// A text constant compared inline (`text_eq_short`).
fn is_short_text(e: &Expr) -> bool {
    matches!(e.as_const(), Some(Constant::Text(s)) if s.len() <= SHORT_TEXT_BYTES)
}

fn mark_fields(e: &Expr, used: &mut [bool]) {
    if let ExprKind::Field(f) = e.kind {
        used[f] = true;
    }
    for child in e.children() {
        mark_fields(child, used);
    }
}

/// The set of an `in` list over text whose items are all non-NULL text
/// constants, when it is long enough to be worth a lookup.
fn text_set(x: &Expr, items: &[Expr]) -> Option<TextSet> {
    if x.ty != Type::Text || items.len() < TEXT_SET_MIN_ITEMS {
        return None;
    }
    let items: Option<Vec<Box<[u8]>>> = items
        .iter()
        .map(|item| match item.as_const() {
            Some(Constant::Text(s)) => Some(s.as_bytes().into()),
            _ => None,
        })
        .collect();
    items.map(TextSet::new)
}

/// The signature of a helper, for the module's declaration.
pub(super) fn helper_signature(helper: Helper, sig: &mut Signature) {
    let p = |t| AbiParam::new(t);
    let (params, ret): (
        &[cranelift_codegen::ir::Type],
        Option<cranelift_codegen::ir::Type>,
    ) = match helper {
        Helper::TextEq | Helper::TextCmp | Helper::LikeLower => (&[types::I64; 4], Some(types::I8)),
        Helper::Length => (&[types::I64; 2], Some(types::I64)),
        Helper::Like | Helper::InTextSet => (&[types::I64; 3], Some(types::I8)),
        Helper::Lower | Helper::Upper => (&[types::I64; 4], None),
        Helper::FloatRem => (&[types::F64; 2], Some(types::F64)),
    };
    sig.params.extend(params.iter().map(|&t| p(t)));
    sig.returns.extend(ret.map(p));
}
