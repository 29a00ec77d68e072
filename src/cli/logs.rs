//! `phoenix logs`: what a step printed, from its log in the state, secrets
//! already masked; `--follow` prints it as it is written, until the attempt
//! ends. During a real recovery the operator's question is "what is
//! `db_restore` doing?", and the answer was `tail -f` on a path they had to
//! piece together.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{existing_state, CliError, CliResult, GlobalArgs};
use crate::exit_codes;
use crate::journal::reader::{RunView, StepState};
use crate::journal::StateStore;
use crate::session;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The step whose output to print (without: the run's logs, listed).
    #[arg(value_name = "STEP")]
    pub step: Option<String>,
    /// The run (default: the newest).
    #[arg(long = "run", value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// Which attempt (default: the latest).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// The output of the check a resume ran for the step in doubt instead.
    #[arg(long, conflicts_with_all = ["attempt", "follow"])]
    pub check: bool,
    /// Go on printing what the attempt writes until it ends (waiting for the
    /// step to start, if it has not).
    #[arg(short, long)]
    pub follow: bool,
}

/// How often a followed log is read for what was added.
const POLL: Duration = Duration::from_millis(200);
/// How often the journal is read to learn whether the attempt has ended.
const CHECK_EVERY: u32 = 5;

pub fn run(global: &GlobalArgs, args: LogsArgs) -> CliResult {
    let state = existing_state(global)?;
    let run_id = super::run_or_newest(state.as_ref(), args.run_id.clone())?;
    let (header, view, live) = session::view(state.as_ref(), &run_id)?;
    let Some(step) = args.step.as_deref() else {
        list(&state.logs_dir(&run_id), &view, &run_id);
        return Ok(exit_codes::SUCCESS);
    };
    if !view.steps.contains_key(step) {
        // The journal knows the steps that started; the run's plan, every
        // step (read only for a step that has not started).
        let plan = super::run_plan(state.as_ref(), &header, &view);
        let mut ids: Vec<&str> = match &plan {
            Some(plan) => plan.steps.iter().map(|s| s.id.value.as_str()).collect(),
            None => view.steps.keys().map(String::as_str).collect(),
        };
        if !ids.contains(&step) {
            ids.sort_unstable();
            return Err(CliError::Usage(format!(
                "run `{run_id}` has no step `{step}`; its steps: {}",
                ids.join(", ")
            )));
        }
    }
    if args.check {
        let path = state.logs_dir(&run_id).join(format!("{step}.check.log"));
        if print_from(&path, 0).is_none_or(|printed| printed == 0) {
            super::say_info(&format!(
                "no check of step `{step}` printed anything in run `{run_id}` (a check runs for a step in doubt, on resume)"
            ));
        }
        return Ok(exit_codes::SUCCESS);
    }
    let attempts = view.steps.get(step).map_or(0, |s| s.attempts);
    if args.attempt.is_some_and(|n| n == 0 || n > attempts) {
        return Err(CliError::Usage(format!(
            "step `{step}` of run `{run_id}` has {} (attempts are numbered from 1)",
            crate::counted(attempts as usize, "attempt")
        )));
    }
    let mut attempt = args.attempt.unwrap_or(attempts);
    if attempt == 0 {
        if !(args.follow && live) {
            super::say_info(&format!("step `{step}` of run `{run_id}` has not started"));
            return Ok(exit_codes::SUCCESS);
        }
        super::say_info(&format!("waiting for step `{step}` to start"));
        attempt = match wait_for_start(state.as_ref(), &run_id, step)? {
            Some(attempt) => attempt,
            None => {
                super::say_info(&format!(
                    "run `{run_id}` stopped before step `{step}` started"
                ));
                return Ok(exit_codes::SUCCESS);
            }
        };
    }
    let logs = state.logs_dir(&run_id);
    let path = logs.join(format!("{step}.{attempt}.log"));
    let mut printed = print_from(&path, 0);
    let following = args.follow && live && ends(&view, step, attempt).is_none();
    if !following {
        if printed == Some(0) || !path.exists() {
            super::say_info(&format!(
                "step `{step}` printed nothing in attempt {attempt}"
            ));
        }
        return Ok(exit_codes::SUCCESS);
    }
    let mut polls = 0u32;
    loop {
        std::thread::sleep(POLL);
        printed = match printed {
            Some(offset) => print_from(&path, offset).map(|more| offset + more),
            None => print_from(&path, 0),
        };
        if printed.is_none() && path.exists() {
            // Stdout is gone (`| head`): nothing more to do.
            return Ok(exit_codes::SUCCESS);
        }
        polls += 1;
        if !polls.is_multiple_of(CHECK_EVERY) {
            continue;
        }
        let (_, view, live) = session::view(state.as_ref(), &run_id)?;
        let end = ends(&view, step, attempt);
        if end.is_some() || !live {
            // What was written between the last read and the end.
            if let Some(offset) = printed {
                print_from(&path, offset);
            }
            let how = end.unwrap_or("was left running by a run that stopped");
            super::say_info(&format!("step `{step}` attempt {attempt} {how}"));
            return Ok(exit_codes::SUCCESS);
        }
    }
}

/// How attempt `attempt` of `step` ended, once it has: `None` while it runs.
fn ends(view: &RunView, step: &str, attempt: u32) -> Option<&'static str> {
    let seen = view.steps.get(step)?;
    if seen.attempts > attempt {
        return Some("ended; a later attempt has started");
    }
    match seen.state {
        // Started with no end recorded: running while the run is live (the
        // caller asks), in doubt once it is not.
        StepState::Running | StepState::Pending | StepState::InDoubt => None,
        StepState::Succeeded => Some("succeeded"),
        StepState::Failed => Some("failed"),
        StepState::Skipped => Some("was skipped"),
    }
}

/// Waits while the run is live for `step`'s first attempt: its number, or
/// `None` when the run stopped first.
fn wait_for_start(
    state: &dyn StateStore,
    run_id: &str,
    step: &str,
) -> Result<Option<u32>, CliError> {
    loop {
        std::thread::sleep(POLL * CHECK_EVERY);
        let (_, view, live) = session::view(state, run_id)?;
        match view.steps.get(step) {
            Some(seen) if seen.attempts > 0 => return Ok(Some(seen.attempts)),
            _ if !live => return Ok(None),
            _ => {}
        }
    }
}

/// Copies `path` from byte `offset` to stdout: how many bytes, or `None`
/// when the file is not there (an attempt's log is made on its first byte)
/// or stdout is closed.
fn print_from(path: &Path, offset: u64) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut stdout = std::io::stdout().lock();
    let mut buffer = vec![0; 64 * 1024];
    let mut copied = 0;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        stdout.write_all(&buffer[..n]).ok()?;
        copied += n as u64;
    }
    stdout.flush().ok()?;
    Some(copied)
}

/// Every log of the run, in the order its steps started: step, attempt (or
/// `check`, for the check a resume ran), size and path.
fn list(logs: &Path, view: &RunView, run_id: &str) {
    let mut found: Vec<(String, String, u64, PathBuf)> = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (step, attempt) = name.strip_suffix(".log")?.rsplit_once('.')?;
            let size = entry.metadata().ok()?.len();
            Some((step.to_string(), attempt.to_string(), size, entry.path()))
        })
        .collect();
    if found.is_empty() {
        super::say_info(&format!("run `{run_id}`: no step has printed anything"));
        return;
    }
    let started = |step: &str| view.steps.get(step).and_then(|s| s.started_at);
    found.sort_by(|a, b| {
        let number = |attempt: &str| attempt.parse::<u32>().unwrap_or(0);
        (started(&a.0), &a.0, number(&a.1)).cmp(&(started(&b.0), &b.0, number(&b.1)))
    });
    let width = found.iter().map(|f| f.0.len()).max().unwrap_or(0).max(4);
    let mut text = format!(
        "{:width$}  {:>7}  {:>10}  LOG\n",
        "STEP", "ATTEMPT", "BYTES"
    );
    for (step, attempt, size, path) in &found {
        text.push_str(&format!(
            "{step:width$}  {attempt:>7}  {size:>10}  {}\n",
            path.display()
        ));
    }
    crate::out_raw!("{text}");
}
