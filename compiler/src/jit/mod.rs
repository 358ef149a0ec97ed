//! The Cranelift JIT: each step of a track becomes one native function that
//! classifies a columnar [`Block`] of records, writing per record the index
//! of the rule that fired. The reference interpreter defines what the
//! answer is; this module only makes it fast (differential tests hold the
//! two, and SQLite, to the same answers).
//!
//! A [`Jit`] owns the host's target description and a cache of compiled
//! steps keyed by their IR, so a step compiled once is shared by every
//! block, thread and deploy that asks for it again. A [`CompiledStep`] owns
//! its machine code and frees it when the last reference is dropped.

mod codegen;
mod helpers;

use crate::block::Block;
use crate::interp::Env;
use crate::ir::Step;
use crate::types::Type;
use codegen::{helper_signature, StepCodegen};
use cranelift_codegen::ir::{Function, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use helpers::{LikeMatcher, Scratch, TextSet};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Written for a record when no rule of the step fires.
pub const NO_RULE: u32 = u32::MAX;

/// What the generated function reads: one per evaluation.
#[repr(C)]
struct EvalArgs {
    columns: *const ColumnRef,
    len: u64,
    now: i64,
    consts: *const ConstRef,
    scratch: *mut Scratch,
    out: *mut u32,
}

/// One column's buffers, as the generated code reads them.
#[repr(C)]
struct ColumnRef {
    values: *const u8,
    nulls: *const u64,
    /// Text columns only (else null).
    offsets: *const u32,
}

/// One entry of a compiled step's constant table: a text (pointer and
/// length) or an object the helpers use (pointer only).
#[repr(C)]
struct ConstRef {
    ptr: *const u8,
    len: u64,
}

/// What a constant-table entry owns; boxed so that its address is stable.
enum ConstEntry {
    Text(Box<str>),
    Like(Box<LikeMatcher>),
    Set(Box<TextSet>),
}

/// The functions generated code may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Helper {
    TextEq,
    TextCmp,
    Length,
    Like,
    LikeLower,
    InTextSet,
    Lower,
    Upper,
    FloatRem,
}

impl Helper {
    const ALL: [Helper; 9] = [
        Helper::TextEq,
        Helper::TextCmp,
        Helper::Length,
        Helper::Like,
        Helper::LikeLower,
        Helper::InTextSet,
        Helper::Lower,
        Helper::Upper,
        Helper::FloatRem,
    ];

    fn symbol(self) -> &'static str {
        match self {
            Helper::TextEq => "trackc_text_eq",
            Helper::TextCmp => "trackc_text_cmp",
            Helper::Length => "trackc_length",
            Helper::Like => "trackc_like",
            Helper::LikeLower => "trackc_like_lower",
            Helper::InTextSet => "trackc_in_text_set",
            Helper::Lower => "trackc_lower",
            Helper::Upper => "trackc_upper",
            Helper::FloatRem => "trackc_float_rem",
        }
    }

    fn address(self) -> *const u8 {
        match self {
            Helper::TextEq => helpers::text_eq as *const u8,
            Helper::TextCmp => helpers::text_cmp as *const u8,
            Helper::Length => helpers::text_length as *const u8,
            Helper::Like => helpers::text_like as *const u8,
            Helper::LikeLower => helpers::text_like_lower as *const u8,
            Helper::InTextSet => helpers::text_in_set as *const u8,
            Helper::Lower => helpers::text_lower as *const u8,
            Helper::Upper => helpers::text_upper as *const u8,
            Helper::FloatRem => helpers::float_rem as *const u8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JitError {
    /// The host cannot be targeted, or Cranelift rejected the function
    /// (a bug in the code generator: the message says where).
    Codegen(String),
    /// The block does not have the columns the step was compiled for.
    BlockMismatch(String),
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitError::Codegen(m) => write!(f, "JIT compilation failed: {m}"),
            JitError::BlockMismatch(m) => write!(f, "block does not fit the step: {m}"),
        }
    }
}

impl std::error::Error for JitError {}

fn codegen_error(e: impl fmt::Display) -> JitError {
    JitError::Codegen(e.to_string())
}

/// The compiler of steps, with its cache. Share one per process.
pub struct Jit {
    isa: OwnedTargetIsa,
    cache: Mutex<HashMap<String, Arc<CompiledStep>>>,
}

/// The host's ISA at opt level `speed`.
fn host_isa() -> Result<OwnedTargetIsa, JitError> {
    let mut flags = settings::builder();
    for (name, value) in [
        ("opt_level", "speed"),
        // The JIT needs absolute calls to the helpers; see cranelift-jit.
        ("use_colocated_libcalls", "false"),
        ("is_pic", "false"),
        // The verifier checks Cranelift's input; tests (debug builds) keep
        // it, release builds spend the time compiling.
        (
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        ),
    ] {
        flags.set(name, value).map_err(codegen_error)?;
    }
    // `backtracking` (the default) makes the faster code; `single_pass`
    // compiles about twice as fast (BENCHMARKS.md has both).
    if let Ok(algorithm) = std::env::var("TRACKC_JIT_REGALLOC") {
        flags
            .set("regalloc_algorithm", &algorithm)
            .map_err(|e| codegen_error(format!("TRACKC_JIT_REGALLOC={algorithm}: {e}")))?;
    }
    let builder = cranelift_native::builder().map_err(codegen_error)?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(codegen_error)
}

/// The cache key: everything the generated code depends on — the field
/// types and the step's rules — in a canonical text form.
fn cache_key(fields: &[Type], step: &Step) -> String {
    let conditions: Vec<_> = step.rules.iter().map(|r| &r.condition).collect();
    format!("{fields:?}|{conditions:?}")
}

impl Jit {
    pub fn new() -> Result<Jit, JitError> {
        Ok(Jit {
            isa: host_isa()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled form of `step` over records with `fields`, from the
    /// cache when the same IR was compiled before.
    pub fn compile(&self, fields: &[Type], step: &Step) -> Result<Arc<CompiledStep>, JitError> {
        let key = cache_key(fields, step);
        if let Some(hit) = self.lock_cache().get(&key) {
            return Ok(hit.clone());
        }
        let compiled = Arc::new(self.compile_uncached(fields, step)?);
        // Two threads may compile the same step at once; the first stored
        // wins and both get a working function.
        Ok(self.lock_cache().entry(key).or_insert(compiled).clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CompiledStep>>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (one insert), so a poisoned lock is still a usable cache.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many compiled steps the cache holds.
    pub fn cached_steps(&self) -> usize {
        self.lock_cache().len()
    }

    /// Drops every cached step (their code is freed once no one holds it).
    pub fn clear_cache(&self) {
        self.lock_cache().clear();
    }

    /// Compiles without the cache: a new function, new memory.
    pub fn compile_uncached(&self, fields: &[Type], step: &Step) -> Result<CompiledStep, JitError> {
        let started = Instant::now();
        let mut builder = JITBuilder::with_isa(self.isa.clone(), default_libcall_names());
        for helper in Helper::ALL {
            builder.symbol(helper.symbol(), helper.address());
        }
        let mut module = JITModule::new(builder);
        let (func, consts, _) = build_function(&mut module, fields, step)?;
        let mut ctx = module.make_context();
        ctx.func = func;
        let id = module
            .declare_function("step", Linkage::Export, &ctx.func.signature)
            .map_err(codegen_error)?;
        let finished = match module.define_function(id, &mut ctx) {
            Ok(()) => module.finalize_definitions(),
            Err(e) => Err(e),
        };
        if let Err(e) = finished {
            // SAFETY: nothing of this module was handed out.
            unsafe { module.free_memory() };
            return Err(codegen_error(format!("{e:?}")));
        }
        let code = module.get_finalized_function(id);
        let table = consts
            .iter()
            .map(|entry| match entry {
                ConstEntry::Text(s) => ConstRef {
                    ptr: s.as_ptr(),
                    len: s.len() as u64,
                },
                ConstEntry::Like(m) => ConstRef {
                    ptr: (&**m as *const LikeMatcher).cast(),
                    len: 0,
                },
                ConstEntry::Set(s) => ConstRef {
                    ptr: (&**s as *const TextSet).cast(),
                    len: 0,
                },
            })
            .collect();
        Ok(CompiledStep {
            // SAFETY: the function was generated with the `EvalArgs`
            // signature by `StepCodegen`.
            code: unsafe { std::mem::transmute::<*const u8, StepFn>(code) },
            fields: fields.to_vec(),
            module: Some(module),
            _consts: consts,
            table,
            compile_time: started.elapsed(),
        })
    }

    /// The Cranelift IR of `step`, as generated (before Cranelift's own
    /// optimizations), with the helpers it calls named.
    pub fn clif(&self, fields: &[Type], step: &Step) -> Result<String, JitError> {
        let builder = JITBuilder::with_isa(self.isa.clone(), default_libcall_names());
        let mut module = JITModule::new(builder);
        let (func, _, helper_ids) = build_function(&mut module, fields, step)?;
        let body = func.display().to_string();
        let mut text = String::new();
        for (helper, id) in Helper::ALL.iter().zip(helper_ids) {
            let name = format!("u0:{}", id.as_u32());
            if body.contains(&name) {
                text.push_str(&format!("; {name} = {}\n", helper.symbol()));
            }
        }
        text.push_str(&body);
        // SAFETY: nothing was compiled or handed out.
        unsafe { module.free_memory() };
        Ok(text)
    }
}

/// The CLIF of every step of `program`, each under a `; track T, step S`
/// header (`trackc build --emit clif`).
pub fn clif_program(jit: &Jit, program: &crate::ir::Program) -> Result<String, JitError> {
    let mut text = String::new();
    for track in &program.tracks {
        let fields: Vec<Type> = track.fields.iter().map(|f| f.ty).collect();
        for step in &track.steps {
            text.push_str(&format!("; track {}, step {}\n", track.name, step.name));
            text.push_str(&jit.clif(&fields, step)?);
            text.push('\n');
        }
    }
    Ok(text)
}

/// Generates the CLIF of `step`; returns it with its constant table and
/// the ids of the helpers, in the order of `Helper::ALL`.
fn build_function(
    module: &mut JITModule,
    fields: &[Type],
    step: &Step,
) -> Result<(Function, Vec<ConstEntry>, Vec<FuncId>), JitError> {
    let mut ids = Vec::new();
    for helper in Helper::ALL {
        let mut sig = module.make_signature();
        helper_signature(helper, &mut sig);
        ids.push(
            module
                .declare_function(helper.symbol(), Linkage::Import, &sig)
                .map_err(codegen_error)?,
        );
    }
    let mut func =
        Function::with_name_signature(UserFuncName::testcase("step"), module.make_signature());
    let mut fctx = FunctionBuilderContext::new();
    let target = module.target_config();
    let mut declare = |helper: Helper, func: &mut Function| {
        let index = Helper::ALL
            .iter()
            .position(|h| *h == helper)
            .expect("every helper is in ALL");
        module.declare_func_in_func(ids[index], func)
    };
    let builder = FunctionBuilder::new(&mut func, &mut fctx);
    let consts = StepCodegen::new(builder, fields, &mut declare).compile(step, target);
    Ok((func, consts, ids))
}

type StepFn = unsafe extern "C" fn(*const EvalArgs);

/// A step as native code over blocks whose columns have `fields` types.
pub struct CompiledStep {
    code: StepFn,
    fields: Vec<Type>,
    /// Its memory is freed when the step is dropped.
    module: Option<JITModule>,
    /// Owns what `table` points to.
    _consts: Vec<ConstEntry>,
    table: Vec<ConstRef>,
    compile_time: Duration,
}

// SAFETY: after compilation the module is never touched again but to free
// it on drop (which needs `&mut self`, so no call can be running); the code
// only reads its arguments and the immutable constant table, and each call
// gets its own scratch and output.
unsafe impl Send for CompiledStep {}
unsafe impl Sync for CompiledStep {}

impl Drop for CompiledStep {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `&mut self`: no evaluation is running, and the
            // function pointer dies with `self`.
            unsafe { module.free_memory() };
        }
    }
}

impl fmt::Debug for CompiledStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledStep")
            .field("fields", &self.fields)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}

impl CompiledStep {
    /// How long compiling took (code generation and Cranelift).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Decides every record of `block`: `out[i]` is the index of the rule
    /// that fired for record `i`, or [`NO_RULE`].
    pub fn eval_into(&self, block: &Block, env: Env, out: &mut Vec<u32>) -> Result<(), JitError> {
        let columns = block.columns();
        if columns.len() != self.fields.len()
            || columns
                .iter()
                .zip(&self.fields)
                .any(|(c, ty)| c.ty() != *ty)
        {
            return Err(JitError::BlockMismatch(format!(
                "the step reads ({}), the block has ({})",
                type_list(&self.fields),
                type_list(&block.types())
            )));
        }
        let refs: Vec<ColumnRef> = columns
            .iter()
            .map(|c| {
                use crate::block::Values;
                let (values, offsets) = match c.values() {
                    Values::Int(v) | Values::Timestamp(v) | Values::Duration(v) => {
                        (v.as_ptr().cast(), std::ptr::null())
                    }
                    Values::Float(v) => (v.as_ptr().cast(), std::ptr::null()),
                    Values::Bool(v) => (v.as_ptr(), std::ptr::null()),
                    Values::Text(t) => (t.bytes().as_ptr(), t.offsets().as_ptr()),
                };
                ColumnRef {
                    values,
                    nulls: c.nulls().as_ptr(),
                    offsets,
                }
            })
            .collect();
        out.clear();
        out.resize(block.len(), NO_RULE);
        // Allocates nothing until a helper needs room for a text.
        let mut scratch = Scratch::default();
        let args = EvalArgs {
            columns: refs.as_ptr(),
            len: block.len() as u64,
            now: env.now,
            consts: self.table.as_ptr(),
            scratch: &mut scratch,
            out: out.as_mut_ptr(),
        };
        // SAFETY: the block is valid (its invariant) and has the columns
        // the code was generated for (checked above); `out` holds one slot
        // per record; the constant table lives as long as `self`.
        unsafe { (self.code)(&args) };
        Ok(())
    }

    /// [`Self::eval_into`], as rule indices.
    pub fn eval(&self, block: &Block, env: Env) -> Result<Vec<Option<usize>>, JitError> {
        let mut out = Vec::new();
        self.eval_into(block, env, &mut out)?;
        Ok(out
            .into_iter()
            .map(|r| (r != NO_RULE).then_some(r as usize))
            .collect())
    }
}

fn type_list(types: &[Type]) -> String {
    types
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, BlockBuilder};
    use crate::value::Value;

    const NOW: i64 = 1_780_315_200_000_000;

    /// The fields and steps of the one track in `source`.
    fn track(source: &str) -> crate::ir::Track {
        let compilation = crate::compile_str("test.dt", source, None);
        let errors: Vec<_> = compilation.errors().map(|d| d.message.clone()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        compilation.program.tracks.into_iter().next().unwrap()
    }

    const SCORES: &str = "track t {
        source key id { SELECT id, score, name FROM c }
        fields { id: int, score: int?, name: text? }
        step s {
            when score > 10 and name like 'a%' then end
            when score / 0 is null and name = 'b' then end
            when false then end
        }
        step invariant {
            when now() - 1d > 2026-01-01T00:00:00Z and score > 1 then end
            when null then end
            else end
        }
    }";

    fn block(rows: &[(i64, Option<i64>, Option<&str>)]) -> Block {
        let mut b = BlockBuilder::new(&[Type::Int, Type::Int, Type::Text]);
        for (id, score, name) in rows {
            let record = [
                Value::Int(*id),
                score.map_or(Value::Null, Value::Int),
                name.map_or(Value::Null, |n| Value::Text(n.to_string())),
            ];
            b.push(&id.to_string(), &record).unwrap();
        }
        b.finish()
    }

    fn types(track: &crate::ir::Track) -> Vec<Type> {
        track.fields.iter().map(|f| f.ty).collect()
    }

    #[test]
    fn empty_blocks_and_blocks_of_one() {
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        let step = jit.compile(&types(&t), &t.steps[0]).unwrap();
        let env = Env { now: NOW };
        assert_eq!(step.eval(&block(&[]), env).unwrap(), vec![]);
        assert_eq!(
            step.eval(&block(&[(1, Some(11), Some("ab"))]), env)
                .unwrap(),
            vec![Some(0)]
        );
        assert_eq!(
            step.eval(&block(&[(1, None, Some("b"))]), env).unwrap(),
            vec![Some(1)]
        );
        assert_eq!(
            step.eval(&block(&[(1, None, None)]), env).unwrap(),
            vec![None]
        );
    }

    #[test]
    fn agrees_with_the_interpreter_across_bitmap_words() {
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        let names = [Some("a"), Some("b"), None, Some("ab"), Some("é")];
        let rows: Vec<_> = (0..200)
            .map(|i| {
                let score = (i % 7 != 0).then_some(i % 23);
                (i, score, names[i as usize % names.len()])
            })
            .collect();
        let b = block(&rows);
        for now in [NOW, 0] {
            let env = Env { now };
            for step in &t.steps {
                let compiled = jit.compile(&types(&t), step).unwrap();
                assert_eq!(
                    compiled.eval(&b, env).unwrap(),
                    crate::interp::eval_block(step, &b, env),
                    "step {}",
                    step.name
                );
            }
        }
    }

    #[test]
    fn steps_are_cached_by_their_ir() {
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        let a = jit.compile(&types(&t), &t.steps[0]).unwrap();
        let b = jit.compile(&types(&t), &t.steps[0].clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = jit.compile(&types(&t), &t.steps[1]).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(jit.cached_steps(), 2);
        jit.clear_cache();
        assert_eq!(jit.cached_steps(), 0);
        // Still usable after the cache let go of it.
        assert_eq!(a.eval(&block(&[]), Env { now: NOW }).unwrap(), vec![]);
    }

    #[test]
    fn a_block_of_other_columns_is_refused() {
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        let step = jit.compile(&types(&t), &t.steps[0]).unwrap();
        let mut b = BlockBuilder::new(&[Type::Int, Type::Text, Type::Text]);
        b.push("1", &[Value::Int(1), Value::Null, Value::Null])
            .unwrap();
        let err = step.eval(&b.finish(), Env { now: NOW }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "block does not fit the step: the step reads (int, int, text), the block has (int, text, text)"
        );
    }

    #[test]
    fn compiled_steps_are_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CompiledStep>();
        send_sync::<Jit>();
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        let step = jit.compile(&types(&t), &t.steps[0]).unwrap();
        let rows: Vec<_> = (0..1000).map(|i| (i, Some(i % 20), Some("abc"))).collect();
        let b = block(&rows);
        let expected = step.eval(&b, Env { now: NOW }).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(step.eval(&b, Env { now: NOW }).unwrap(), expected);
                    }
                });
            }
        });
    }

    /// Block invariants are computed before the loop and rules that can
    /// never fire leave no code: the loop reads only what varies.
    #[test]
    fn clif_hoists_block_invariants_and_drops_dead_rules() {
        let t = track(SCORES);
        let jit = Jit::new().unwrap();
        insta::assert_snapshot!(jit.clif(&types(&t), &t.steps[1]).unwrap());
    }
}
