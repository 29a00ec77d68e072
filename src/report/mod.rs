//! Consumers of a run: the terminal view while it runs, and the status built
//! from its journal afterwards.

pub mod status;
pub mod terminal;
