//! `phoenix resume`: continue an interrupted, failed or paused run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::{existing_state, exit_code_of, terminal, CliError, CliResult, GlobalArgs};
use crate::journal::record::Outputs;
use crate::session::{self, ResumeRequest};

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run to resume (default: the newest unfinished run).
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// Resume against this plan file instead of the one the run started from.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// Approve this approval gate (repeatable).
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// Accept this step as done without running it (repeatable; recorded).
    #[arg(long, value_name = "STEP")]
    pub skip: Vec<String>,
    /// With `--skip STEP`: an output the skipped step gives the steps that
    /// read it, as it would have (repeatable): `--output db_host.host=10.0.0.5`
    /// for a database made by hand. Recorded with the skip.
    #[arg(long = "output", value_name = "STEP.KEY=VALUE")]
    pub outputs: Vec<String>,
    /// Run this step again even if it is in doubt and not idempotent (repeatable).
    #[arg(long, value_name = "STEP")]
    pub rerun: Vec<String>,
    /// Approve every approval gate.
    #[arg(long)]
    pub yes: bool,
    /// Abandon a drill: run only its teardown, now and in any later resume,
    /// leaving the steps it had not done (the run does not succeed).
    #[arg(long)]
    pub abandon: bool,
    /// Steps in flight at once in this resume (default: as the run started).
    /// Fewer, for one that failed on an API's rate limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// In this resume, on a failure run every branch that does not depend on
    /// it (default: as the run started).
    #[arg(long)]
    pub keep_going: bool,
}

pub fn run(global: &GlobalArgs, args: ResumeArgs) -> CliResult {
    if let Some(both) = args.skip.iter().find(|id| args.rerun.contains(id)) {
        return Err(CliError::Usage(format!(
            "`--skip {both}` and `--rerun {both}`: a step is either accepted as done or run again, not both"
        )));
    }
    let mut outputs: BTreeMap<String, Outputs> = BTreeMap::new();
    for given in &args.outputs {
        let parsed = given
            .split_once('=')
            .and_then(|(name, value)| Some((name.split_once('.')?, value)))
            .filter(|((step, key), _)| !step.is_empty() && !key.trim().is_empty());
        let Some(((step, key), value)) = parsed else {
            return Err(CliError::Usage(format!(
                "`--output {given}`: write it `STEP.KEY=VALUE`, as in `--output db_host.host=10.0.0.5`"
            )));
        };
        if !args.skip.iter().any(|s| s == step) {
            return Err(CliError::Usage(format!(
                "`--output {step}.{key}=…`: outputs are given to a step accepted as done without running; add `--skip {step}`"
            )));
        }
        outputs
            .entry(step.to_string())
            .or_default()
            .insert(key.trim().to_string(), value.to_string());
    }
    let state = existing_state(global)?;
    let events = terminal(global);
    let request = ResumeRequest {
        run_id: args.run_id,
        plan: args.plan,
        approve: args.approve,
        skip: args.skip,
        outputs,
        rerun: args.rerun,
        yes: args.yes,
        abandon: args.abandon,
        concurrency: args.concurrency.map(|c| c as usize),
        keep_going: args.keep_going,
        interactive: super::interactive(),
    };
    let end = match session::resume(state.as_ref(), request, events) {
        // Done is what a resume is for: a loop that resumes until the run
        // succeeds (the chaos recipe in docs/drill-runbook.md) must stop
        // when the run needed none, not try again for ever.
        Err(session::SessionError::AlreadySucceeded(run_id)) => {
            if !global.quiet {
                crate::note!("run `{run_id}` already succeeded; there is nothing to resume");
            }
            return Ok(0);
        }
        other => other?,
    };
    Ok(exit_code_of(&end, global))
}
