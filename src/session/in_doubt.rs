//! Steps in doubt: those that were running when the run stopped. What their
//! last attempt left running is found and stopped, and their `check`s are
//! asked, with the outputs a check gives, before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use super::{journal_write, lacks, outputs_needed, scratch_dir, SessionError};
use crate::actions::Action;
use crate::exec::leftovers::Leftover;
use crate::exec::scheduler::Start;
use crate::exec::{leftovers, Event, Shared};
use crate::journal::reader::{RunView, StepState};
use crate::journal::record::{Outputs, Record, RunResult, SkipReason};
use crate::plan::source::Spanned;
use crate::plan::{Plan, Step};

/// Stops what the steps in doubt left running, before their checks and
/// before they run again, or when their drill is abandoned: as a timed-out
/// step is stopped, and said. The processes of a step accepted as done
/// (`--skip`) are left to finish what they do, and said too.
pub(super) async fn stop_leftovers(shared: &Shared, still_running: &[Leftover], starts: &[Start]) {
    let mut by_step: BTreeMap<&str, Vec<Leftover>> = BTreeMap::new();
    for leftover in still_running {
        by_step
            .entry(&leftover.step)
            .or_default()
            .push(leftover.clone());
    }
    let mut stopping = Vec::new();
    for (step, found) in by_step {
        let start = shared
            .plan
            .steps
            .iter()
            .position(|s| s.id.as_str() == step)
            .map(|i| starts[i]);
        let processes = leftovers::describe(&found);
        let why = match start {
            Some(Start::Pending { .. }) => "stopping it before the step is checked or run again",
            // Nothing of a drill given up goes on beside its teardown.
            Some(Start::Left) => "stopping it, as the drill is abandoned",
            _ => {
                shared.events.emit(Event::Info(format!(
                    "step `{step}`: its last attempt is still running ({processes}); left as it is, as the step does not run again"
                )));
                continue;
            }
        };
        shared.events.emit(Event::Warning(format!(
            "step `{step}`: its last attempt is still running ({processes}); {why}"
        )));
        stopping.extend(found);
    }
    if !stopping.is_empty() {
        leftovers::stop(&stopping, crate::exec::process::grace()).await;
    }
}

/// In-doubt steps with a `check`: a check that exits 0 means the step's effect
/// is there, and it counts as done, with the outputs the check gave (a check
/// writes them to `PHOENIX_OUTPUT` as its step does: the probe that finds
/// the VPC gives its id). A check that passes without an output a step still
/// to run reads (with no `default`) is not enough: the step runs again, or,
/// if it must not run twice, the resume stops and says what is missing. A
/// check that gives no answer (it cannot be started, or does not finish in
/// the step's timeout) says nothing of the effect either way: the same.
pub(super) async fn run_checks(
    shared: &Arc<Shared>,
    checks: &[usize],
    starts: &mut [Start],
) -> Result<(), SessionError> {
    for &i in checks {
        let step = &shared.plan.steps[i];
        let Some(argv) = &step.check else { continue };
        let check = match render_check(shared, step, argv) {
            Err(why) => Checked::NotRun(why),
            Ok(command) => {
                let log = shared.run.logs.join(format!("{}.check.log", step.id.value));
                let run = run_check(shared, &step.id.value, &command, log);
                // The step's timeout bounds its check: a probe that hangs
                // (a host that takes the connection and never answers) must
                // not hold the resume forever.
                let bounded = async {
                    match step.timeout {
                        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
                        None => Some(run.await),
                    }
                };
                tokio::select! {
                    checked = bounded => match checked {
                        None => Checked::TimedOut,
                        Some(Err(why)) => Checked::NotRun(why),
                        Some(Ok(None)) => Checked::Failed,
                        Some(Ok(Some(outputs))) => Checked::Passed(outputs),
                    },
                    // Dropped, the check is killed; nothing is decided.
                    _ = shared.interrupt.cancelled() => return Ok(()),
                }
            }
        };
        let unanswered = match &check {
            Checked::TimedOut => Some("did not finish within the step's timeout".to_string()),
            Checked::NotRun(why) => Some(format!("could not be run ({why})")),
            _ => None,
        };
        if let (Some(unanswered), false) = (&unanswered, step.idempotent) {
            let error = SessionError::CheckUnanswered {
                step: step.id.value.clone(),
                why: unanswered.clone(),
            };
            return stop(shared, error).await;
        }
        let decision = match check {
            Checked::TimedOut | Checked::NotRun(_) => format!(
                "its check {}: running it again",
                unanswered.unwrap_or_default()
            ),
            Checked::Failed => "its check failed: running it again".into(),
            Checked::Passed(outputs) => {
                let passed =
                    crate::exec::attempt::withhold_secrets(shared, &step.id.value, &outputs);
                match unmet_reader(&shared.plan, starts, &step.id.value, &passed.values) {
                    Some((reader, key)) if step.idempotent => format!(
                        "its check passed, but gave no {}, which `{reader}` reads (a check gives outputs in `$PHOENIX_OUTPUT`, as its step does): running it again",
                        key.map_or("outputs".into(), |key| format!("`{key}`"))
                    ),
                    Some((reader, key)) => {
                        let error = SessionError::CheckWithoutOutputs {
                            step: step.id.value.clone(),
                            reader: reader.to_string(),
                            key,
                        };
                        return stop(shared, error).await;
                    }
                    None => {
                        starts[i] = Start::Done;
                        shared
                            .journal
                            .append_durable(Record::Skipped {
                                step: step.id.value.clone(),
                                at: Utc::now(),
                                reason: SkipReason::Check,
                                outputs,
                                withheld: Default::default(),
                            })
                            .await
                            .map_err(journal_write(shared))?;
                        shared
                            .outputs
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(step.id.value.clone(), passed);
                        "its check passed: counted as done".into()
                    }
                }
            }
        };
        shared.events.emit(Event::Info(format!(
            "step `{}` was in doubt; {decision}",
            step.id.value
        )));
    }
    Ok(())
}

/// What a step's check said.
/// Ends the run as failed, for a person to decide what the check could
/// not: `error` says what.
async fn stop(shared: &Shared, error: SessionError) -> Result<(), SessionError> {
    shared
        .journal
        .append_durable(Record::Ended {
            at: Utc::now(),
            result: RunResult::Failed,
        })
        .await
        .map_err(journal_write(shared))?;
    Err(error)
}

enum Checked {
    /// Not within the step's timeout.
    TimedOut,
    /// It could not be put together (an output it reads is missing or
    /// withheld, a secret unreadable) or started (no such program).
    NotRun(String),
    /// It exited with another status than 0.
    Failed,
    /// It exited 0, having written these outputs.
    Passed(Outputs),
}

/// A step still to run that reads an output of `step` which `outputs` lacks
/// (with no `default`): the reader, and the output (`None`: the outputs as
/// a whole).
fn unmet_reader<'p>(
    plan: &'p Plan,
    starts: &[Start],
    step: &str,
    outputs: &Outputs,
) -> Option<(&'p str, Option<String>)> {
    plan.steps
        .iter()
        .enumerate()
        .filter(|(j, _)| matches!(starts[*j], Start::Pending { .. }))
        .find_map(|(_, reader)| {
            outputs_needed(reader)
                .find(|(of, key)| of == step && lacks(outputs, key))
                .map(|(_, key)| (reader.id.as_str(), key))
        })
}

/// Runs a step's `check`: the outputs it gave if it exited 0, `None` if
/// not. It is started as a step's command is ([`crate::exec::spawn`]: no
/// terminal, so that a probe such as `ssh` cannot ask at the terminal; the
/// run's variables and a `PHOENIX_OUTPUT` file of its own), in the plan's
/// directory. Its output goes to `log` through the secret masker, as a
/// step's does: a check that prints what it probes (a connection string, a
/// token from its environment) must not put a secret in the state. Dropped
/// before it ends (the step's timeout, Ctrl-C), its process group is killed.
///
/// `Err` says why it could not be started; `Ok(None)` is a check that
/// failed.
async fn run_check(
    shared: &Shared,
    step: &str,
    command: &CheckCommand,
    log: PathBuf,
) -> Result<Option<Outputs>, String> {
    use std::ffi::OsStr;
    use std::os::fd::AsFd;
    let (program, args) = (&command.args[0], &command.args[1..]);
    let not_started = |e: std::io::Error| format!("`{program}`: {}", crate::error_text(&e));
    let spawner = shared.spawner().map_err(not_started)?;
    let (reader, writer) = std::io::pipe().map_err(not_started)?;
    let reader =
        tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).map_err(not_started)?;
    let output_file = shared.run.tmp.join(format!("{step}.check.out"));
    // Left by a check that was killed: what it wrote is not this one's.
    let _ = std::fs::remove_file(&output_file);
    // As its step's command gets them: the step's own `env` first.
    let env = shared.run.environment(
        step,
        command
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
        &output_file,
    );
    let mut child = spawner
        .spawn(&crate::exec::spawn::SpawnRequest {
            program: OsStr::new(program),
            args,
            env: &env,
            cwd: &shared.plan.dir,
            output: writer.as_fd(),
        })
        .map_err(not_started)?;
    // The child holds the pipe's write end: closed here, the copy sees the end.
    drop(writer);
    let group = crate::exec::process::KillOnDrop::new(child.id());
    // Copied while the check runs, so that a full pipe never stops it.
    let mut copier = Box::pin(crate::actions::command::copy_masked(
        reader,
        log,
        Arc::clone(&shared.masker),
    ));
    let mut copied = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut copier, if !copied => copied = true,
        }
    };
    group.disarm();
    // A check's log that cannot be written changes nothing of its answer.
    if !copied {
        crate::actions::command::finish_copy(copier).await;
    }
    // Read, and removed, either way: it may hold a secret.
    let read = crate::actions::command::read_outputs(&output_file);
    if !status.is_ok_and(|s| s.success()) {
        return Ok(None);
    }
    Ok(match read {
        Ok((outputs, problems)) => {
            for problem in problems {
                shared.events.emit(Event::Warning(format!(
                    "step `{step}`: its check's `PHOENIX_OUTPUT` {problem}"
                )));
            }
            Some(outputs)
        }
        // Passed, but with no outputs taken: a step that reads one runs
        // again, or stops the resume if it must not (never a failed check,
        // which would run a step that must not run twice).
        Err(too_large) => {
            shared.events.emit(Event::Warning(format!(
                "step `{step}`: its check passed, but {too_large}: none of its outputs are taken"
            )));
            Some(Outputs::new())
        }
    })
}

/// A step's `check`, rendered.
struct CheckCommand {
    args: Vec<String>,
    /// The `env` its step's command gets: a check probes what the step
    /// made, with the same credentials.
    env: Vec<(String, String)>,
}

/// A step's check, or why it cannot be rendered (masked: it becomes an
/// error message).
fn render_check(
    shared: &Shared,
    step: &Step,
    argv: &[Spanned<String>],
) -> Result<CheckCommand, String> {
    let why = |text: String| shared.masker.mask(&text).into_owned();
    let context = crate::exec::context::build(shared, step).map_err(|e| why(e.to_string()))?;
    let render = |text: &Spanned<String>| {
        crate::plan::interpolate::render(text, &context).map_err(|e| why(e.to_string()))
    };
    let args = argv.iter().map(render).collect::<Result<Vec<_>, _>>()?;
    if args.is_empty() {
        return Err("it names no program".into());
    }
    let env = match &step.action.value {
        Action::Command(spec) => spec
            .env
            .iter()
            .map(|(key, value)| Ok((key.clone(), render(value)?)))
            .collect::<Result<_, String>>()?,
        _ => Vec::new(),
    };
    Ok(CheckCommand { args, env })
}

/// What the steps in doubt left running, if the phoenix that ran them was
/// killed on this machine: a step run again must not run beside it. `/proc`
/// is looked through only when a step is in doubt.
pub(super) fn left_running(run_id: &str, run_dir: &Path, view: &RunView) -> Vec<Leftover> {
    let in_doubt = |step: &str| {
        view.steps
            .get(step)
            .is_some_and(|s| matches!(s.state, StepState::InDoubt | StepState::Running))
    };
    if !view.steps.keys().any(|step| in_doubt(step)) {
        return Vec::new();
    }
    let mut found = leftovers::find(run_id, &scratch_dir(run_dir));
    found.retain(|l| in_doubt(&l.step));
    found
}
