//! Integration tests: each runs the real `phoenix` binary.

mod common;
mod graph_and_plan;
mod validate;
