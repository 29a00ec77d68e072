//! Integration tests: each runs the real `phoenix` binary.

mod actions;
mod common;
mod configure;
mod crash;
mod drill;
mod graph_and_plan;
mod interrupt;
mod run;
mod secrets;
mod validate;
