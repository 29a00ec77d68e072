//! Integration tests: each runs the real `phoenix` binary.

mod actions;
mod archives;
mod common;
mod configure;
mod crash;
mod drill;
mod graph_and_plan;
mod interrupt;
mod remote;
mod restore;
mod run;
mod s3;
mod secrets;
mod validate;
