//! `phoenix run`: execute a plan, checkpointing as it goes.

use std::path::PathBuf;

use clap::Args;

use super::{
    exit_code_of, load_valid, open_state, terminal, CliError, CliResult, GlobalArgs, VarArgs,
};
use crate::exec::chaos::ChaosSpec;
use crate::session::{self, RunRequest};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan file (TOML).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Rebuild into an isolated target: drill-only steps and teardown run.
    #[arg(long)]
    pub drill: bool,
    /// Steps in flight at once (default: the plan's `concurrency`, else 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// On a failure, run every branch that does not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Inject failures in a drill: `fail=P,kill=P,seed=N`.
    #[arg(long, value_name = "SPEC")]
    pub chaos: Option<String>,
    /// Approve every approval gate.
    #[arg(long)]
    pub yes: bool,
    /// Name the run (default: the start time and a random suffix).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
}

pub fn run(global: &GlobalArgs, args: RunArgs) -> CliResult {
    let chaos = match &args.chaos {
        Some(_) if !args.drill => {
            return Err(CliError::Usage(
                "`--chaos` is for drills only: add `--drill`".into(),
            ));
        }
        Some(text) => Some((
            text.clone(),
            ChaosSpec::parse(text).map_err(|e| CliError::Usage(format!("`--chaos`: {e}")))?,
        )),
        None => None,
    };
    let Some(loaded) = load_valid(&args.plan, &args.vars)? else {
        return Ok(crate::exit_codes::FAILURE);
    };
    let state = open_state(global)?;
    let events = terminal(global);
    let request = RunRequest {
        plan_path: args.plan.clone(),
        loaded,
        drill: args.drill,
        concurrency: args.concurrency.map(|c| c as usize),
        keep_going: args.keep_going,
        chaos,
        yes: args.yes,
        run_id: args.run_id,
        interactive: super::interactive(),
    };
    let end = session::run(state.as_ref(), request, events)?;
    Ok(exit_code_of(&end, global))
}
