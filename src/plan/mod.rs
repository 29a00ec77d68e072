//! Plans: text to a checked [`model::Plan`].
//!
//! `source` (text and spans) -> `load` (TOML tables, types, overrides) ->
//! `validate` (cross-references, graph, `{{ }}`), all reporting into one
//! `diagnostic::Diagnostics`.

pub mod diagnostic;
pub mod fields;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod source;
pub mod validate;

pub use load::{load, LoadOptions, Loaded};
pub use model::{Phase, Plan, Step};
