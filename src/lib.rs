//! Phoenix: a disaster-recovery rebuild orchestrator.
//!
//! # Layout
//! A plan flows one way through the tree:
//!
//! - [`plan`]: plan text -> checked [`plan::Plan`], with diagnostics that point at
//!   `FILE:LINE:COL`.
//! - [`graph`]: the step DAG: cycles, ancestors, waves, critical path.
//! - [`actions`]: what each kind of step does, one file per action.
//! - [`cli`]: the `phoenix` command line; `main.rs` only maps its result to an
//!   exit code ([`exit_codes`]).

pub mod actions;
pub mod cli;
pub mod exec;
pub mod exit_codes;
pub mod graph;
pub mod journal;
pub mod plan;
pub mod report;
pub mod session;
pub mod stores;
pub mod unpack;
