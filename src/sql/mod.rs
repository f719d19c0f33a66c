//! SQL over rows: scalar expressions ([`expr`]) and aggregates
//! ([`aggregate`]), parsed with `sqlparser`. Job files use them for filters,
//! computed columns, window selects and sink column mappings; the SQL front
//! end shares the parser and the evaluator.

pub mod aggregate;
pub mod expr;
pub mod row_key;
