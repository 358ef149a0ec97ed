//! The trackc compiler: decision tracks from text to checked, typed decision
//! tables and their evaluators.
//!
//! Data flows one way: [`syntax`] (text → AST) → [`check`] (AST + schema →
//! IR and diagnostics) → [`ir`] → [`interp`] (the reference evaluator).

pub mod diagnostics;
pub mod interp;
pub mod ir;
pub mod schema;
pub mod span;
pub mod sql;
pub mod syntax;
pub mod types;
pub mod value;
