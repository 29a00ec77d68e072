//! `phoenix unlock --force [LOCK_ID]`: remove a lock left by a run that is gone.

use clap::Args;

use super::{existing_state, CliError, CliResult, GlobalArgs};
use crate::exit_codes;

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Required: removing a lock is a deliberate act.
    #[arg(long)]
    pub force: bool,
    /// A remote lease's lock id (shown by `status` and in "locked" errors):
    /// removes that lease even before it expires, for a holder known to be gone.
    pub lock_id: Option<String>,
}

pub fn run(global: &GlobalArgs, args: UnlockArgs) -> CliResult {
    if !args.force {
        return Err(CliError::Usage("`phoenix unlock` needs `--force`".into()));
    }
    let state = existing_state(global)?;
    match state
        .force_unlock(args.lock_id.as_deref())
        .map_err(crate::session::SessionError::from)?
    {
        Some(info) => super::say_info(&format!("removed the lock of {}", info.describe())),
        None => super::say_info(&format!("`{}` is not locked", state.describe())),
    }
    Ok(exit_codes::SUCCESS)
}
