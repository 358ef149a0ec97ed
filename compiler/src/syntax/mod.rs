//! Text → AST: the pest grammar, the parser driver with error recovery, and
//! the values of literals.

pub mod ast;
mod expected;
pub mod literals;
pub mod parser;
pub mod test_file;

pub use parser::parse_file;
