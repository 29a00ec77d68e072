//! Exit codes of `phoenix`, as `../shared/spec/cli-and-state.md` defines them.

/// Success.
pub const SUCCESS: i32 = 0;
/// The plan is invalid, a step failed, or a preflight check failed.
pub const FAILURE: i32 = 1;
/// Bad usage, or a file that cannot be read.
pub const USAGE: i32 = 2;
/// The run is paused at an approval gate.
pub const PAUSED: i32 = 3;
/// The state is locked by another live run.
pub const LOCKED: i32 = 4;
/// Interrupted by SIGINT or SIGTERM; the run can be resumed.
pub const INTERRUPTED: i32 = 130;
