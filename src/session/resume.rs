//! `phoenix resume`: the resume rules. Reads the run's journal and the plan
//! it goes on with, decides where each step starts (done, to run again, in
//! doubt, skipped with the outputs given), refuses what would fail as it
//! starts, and hands the session its first records.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use super::{
    absolute, ended_successfully, lacks, lock_info, newest_unfinished, newest_where,
    outputs_needed, plan_hash, scratch_dir, unless_lost, unset_secrets, warn_took_over,
    ResumeRequest, Resuming, Session, SessionEnd, SessionError,
};
use crate::actions::approval::{current_user, host_name};
use crate::exec::chaos::{Chaos, ChaosSpec};
use crate::exec::scheduler::Start;
use crate::exec::{Approvals, Event, EventSink, StepOutputs};
use crate::journal::reader::{RunView, StepState};
use crate::journal::record::{
    ChangedStep, Header, InDoubt, Outputs, Record, Resumed, RunResult, SkipReason,
};
use crate::journal::{RunLog, StateError, StateStore};
use crate::plan::diagnostic::did_you_mean;
use crate::plan::load::{load_source, overrides_from_values};
use crate::plan::source::SourceFile;
use crate::plan::Plan;

/// `phoenix resume`: takes the run's lock, reads its journal, and runs what
/// is left of it by the resume rules (see the module's comment).
pub fn resume(
    state: &dyn StateStore,
    request: ResumeRequest,
    events: Arc<dyn EventSink>,
) -> Result<SessionEnd, SessionError> {
    let run_id = match &request.run_id {
        Some(id) => id.clone(),
        None => {
            // `--plan FILE` says which plan is meant: its newest unfinished
            // run, not that of another plan sharing the state (which the
            // file would then be refused for).
            let of_plan = match request.plan.as_deref().and_then(plan_name) {
                Some(name) => newest_where(state, |header, bytes| {
                    header.plan == name && !ended_successfully(bytes)
                })?,
                None => None,
            };
            match of_plan {
                Some(id) => id,
                None => match newest_unfinished(state)? {
                    Some(id) => id,
                    // Every run succeeded: as for a succeeded run named.
                    None => {
                        return Err(match super::newest(state)? {
                            Some(id) => SessionError::AlreadySucceeded(id),
                            None => SessionError::NothingToResume(state.describe()),
                        })
                    }
                },
            }
        }
    };
    let lock = state.lock(&lock_info(&run_id))?;
    warn_took_over(lock.as_ref(), events.as_ref());
    let bytes = state.read_journal(&run_id)?;
    let log = RunLog::parse(&bytes).map_err(|source| SessionError::Journal {
        run: run_id.clone(),
        source,
    })?;
    if let Some(torn) = log.torn {
        let side = state.set_aside_tail(&run_id, torn.offset)?;
        events.emit(Event::Warning(format!(
            "journal line {} was torn by a crash mid-write (or a write that failed part-way); set aside in `{}`",
            torn.line,
            side.display()
        )));
    }
    let view = log.fold();
    if view.result == Some(RunResult::Succeeded) {
        return Err(SessionError::AlreadySucceeded(run_id));
    }
    let header = &log.header;
    let (plan, _) = load_for_resume(state, &run_id, header, &view, request.plan.as_deref())?;
    let plan = Arc::new(plan);
    let known: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    for (flag, ids) in [
        ("--approve", &request.approve),
        ("--skip", &request.skip),
        ("--rerun", &request.rerun),
    ] {
        for id in ids {
            if !known.contains(&id.as_str()) {
                return Err(SessionError::Usage(format!(
                    "`{flag} {id}`: the plan has no step `{id}`{}",
                    did_you_mean(id, known.iter().copied())
                )));
            }
        }
    }
    // A gate mistyped as another step would leave the run paused where it was.
    for id in &request.approve {
        if let Some(step) = plan.steps.iter().find(|s| s.id.as_str() == id.as_str()) {
            let kind = step.action.value.kind();
            if kind != "approval" {
                return Err(SessionError::Usage(format!(
                    "`--approve {id}`: step `{id}` is not an approval gate (its action is `{kind}`)"
                )));
            }
        }
    }

    let graph = plan.graph();
    let run_dir_gone = !scratch_dir(&state.run_dir(&run_id)).is_dir();
    let changed = changed_steps(&plan, &view, run_dir_gone);
    let rerun_changed: BTreeSet<String> = changed.iter().map(|c| c.step.clone()).collect();
    for c in &changed {
        if view
            .steps
            .get(&c.step)
            .is_some_and(|s| s.state != StepState::Pending)
        {
            events.emit(Event::Info(format!(
                "step `{}` runs again: {}",
                c.step, c.reason
            )));
        }
    }

    let skip: HashSet<&str> = request.skip.iter().map(String::as_str).collect();
    let rerun: HashSet<&str> = request.rerun.iter().map(String::as_str).collect();
    let mut starts = Vec::with_capacity(plan.steps.len());
    let mut outputs = BTreeMap::new();
    let mut frozen = BTreeMap::new();
    let mut in_doubt = Vec::new();
    let mut blocked = Vec::new();
    let mut needs_check = Vec::new();
    let mut rerun_in_doubt = Vec::new();
    let mut records = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let id = step.id.as_str();
        let previous = view.steps.get(id).cloned().unwrap_or_default();
        let first_attempt = previous.attempts + 1;
        if !step.applies(header.drill) {
            starts.push(Start::NotApplicable);
            continue;
        }
        if !rerun_changed.contains(id) && !previous.frozen.is_empty() {
            frozen.insert(id.to_string(), previous.frozen.clone());
        }
        // A step done already stays as it is, outputs and all: skipping it
        // would record it as skipped and leave its dependents without them.
        if skip.contains(id) && previous.is_done() {
            if request.outputs.contains_key(id) {
                return Err(SessionError::Usage(format!(
                    "`--output {id}.…`: step `{id}` is done already, and its outputs stay as they are"
                )));
            }
            events.emit(Event::Warning(format!(
                "`--skip {id}`: step `{id}` is done already; nothing to skip"
            )));
        } else if skip.contains(id) {
            let given = request.outputs.get(id).cloned().unwrap_or_default();
            records.push(Record::Skipped {
                step: id.into(),
                at: Utc::now(),
                reason: SkipReason::Operator {
                    user: current_user(),
                },
                outputs: given.clone(),
                withheld: Default::default(),
            });
            if !given.is_empty() {
                // Masked, and withheld where they hold a secret, once the
                // run's secrets are read (`Session::execute`).
                let given = StepOutputs {
                    values: given,
                    withheld: Default::default(),
                };
                outputs.insert(id.to_string(), given);
            }
            if previous.state == StepState::InDoubt {
                in_doubt.push(InDoubt {
                    step: id.into(),
                    decision: "skipped".into(),
                });
            }
            starts.push(Start::Done);
            continue;
        }
        if rerun.contains(id) || rerun_changed.contains(id) {
            if previous.state == StepState::InDoubt {
                in_doubt.push(InDoubt {
                    step: id.into(),
                    decision: "rerun".into(),
                });
            }
            starts.push(Start::Pending { first_attempt });
            continue;
        }
        match previous.state {
            _ if previous.is_done() => {
                let restored = StepOutputs {
                    values: previous.outputs.clone(),
                    withheld: previous.withheld.clone(),
                };
                outputs.insert(id.to_string(), restored);
                starts.push(Start::Done);
            }
            StepState::InDoubt | StepState::Running => {
                if step.check.is_some() {
                    needs_check.push(i);
                    starts.push(Start::Pending { first_attempt });
                } else if !step.idempotent {
                    blocked.push(i);
                    starts.push(Start::Pending { first_attempt });
                } else {
                    rerun_in_doubt.push(i);
                    in_doubt.push(InDoubt {
                        step: id.into(),
                        decision: "rerun".into(),
                    });
                    starts.push(Start::Pending { first_attempt });
                }
            }
            _ => starts.push(Start::Pending { first_attempt }),
        }
    }
    // A done step run again may give its dependents other outputs, or
    // replace what they put in place (a checkout a template wrote into):
    // those that are done stay as they are unless named too, and are named.
    for id in &request.rerun {
        let done = |id: &str| view.steps.get(id).is_some_and(|s| s.is_done());
        let Some(index) = known.iter().position(|k| k == id).filter(|_| done(id)) else {
            continue;
        };
        let after: Vec<String> = graph
            .descendants_of([index])
            .ones()
            .map(|d| plan.steps[d].id.as_str())
            .filter(|d| d != id && done(d) && !rerun.contains(d) && !rerun_changed.contains(*d))
            .map(|d| format!("`{d}`"))
            .collect();
        if !after.is_empty() {
            events.emit(Event::Warning(format!(
                "`--rerun {id}`: step `{id}` was done; the done steps after it ({}) keep what they did with its last run: name them with `--rerun` too to run them again",
                after.join(", ")
            )));
        }
    }
    // A drill abandoned (now or by an earlier resume) runs its teardown
    // only: what else it had not done is left, checks and in-doubt steps
    // included, and the teardown steps that read what never ran are skipped
    // as after a failure.
    let abandon = request.abandon || view.abandoned;
    if request.abandon && !header.drill {
        return Err(SessionError::Usage(format!(
            "`--abandon` is for drills: run `{run_id}` is a recovery, which has no teardown"
        )));
    }
    if abandon {
        let teardown = |i: usize| plan.steps[i].phase.value == crate::plan::Phase::Teardown;
        for (i, start) in starts.iter_mut().enumerate() {
            if !teardown(i) && matches!(start, Start::Pending { .. }) {
                *start = Start::Left;
            }
        }
        needs_check.retain(|&i| teardown(i));
        blocked.retain(|&i| teardown(i));
        events.emit(Event::Info(format!(
            "abandoning drill `{run_id}`: only its teardown runs; the run will not succeed"
        )));
    }
    for &i in &rerun_in_doubt {
        if matches!(starts[i], Start::Pending { .. }) {
            events.emit(Event::Info(format!(
                "step `{}` was in doubt (running when the run stopped): running it again",
                plan.steps[i].id.value
            )));
        }
    }
    unset_secrets(
        &plan,
        |i| matches!(starts[i], Start::Pending { .. }),
        "resume",
    )?;
    outputs_of_skipped(&plan, &starts, &view, &skip, &request.outputs)?;
    let still_running = super::in_doubt::left_running(&run_id, &state.run_dir(&run_id), &view);
    if !blocked.is_empty() {
        let steps: Vec<String> = blocked
            .iter()
            .map(|&i| plan.steps[i].id.value.clone())
            .collect();
        let still_running = still_running
            .into_iter()
            .filter(|l| steps.contains(&l.step))
            .collect();
        return Err(SessionError::InDoubt {
            steps,
            still_running,
        });
    }
    let plan_changed = plan_hash(&plan.source.text) != view.plan_hash;
    let resumed = Resumed {
        at: Utc::now(),
        host: host_name(),
        pid: std::process::id(),
        fingerprints: plan_changed.then(|| {
            plan.steps
                .iter()
                .map(|s| (s.id.value.clone(), s.fingerprint.clone()))
                .collect()
        }),
        plan_hash: plan_changed.then(|| plan_hash(&plan.source.text)),
        plan_path: request
            .plan
            .as_deref()
            .map(|path| absolute(path).display().to_string()),
        plan_dir: request
            .plan
            .as_ref()
            .map(|_| plan.dir.display().to_string()),
        changed,
        in_doubt,
        abandoned: request.abandon && !view.abandoned,
    };
    if plan_changed {
        // A step the run had that the plan has no more: what it did stays
        // done (or undone), and nothing waits for it now.
        let in_plan: HashSet<&str> = known.iter().copied().collect();
        let gone: Vec<String> = view
            .fingerprints
            .keys()
            .filter(|id| !in_plan.contains(id.as_str()))
            .filter(|id| !view.steps.get(id.as_str()).is_some_and(|s| s.is_done()))
            .map(|id| format!("`{id}`"))
            .collect();
        if !gone.is_empty() {
            events.emit(Event::Warning(format!(
                "no longer in the plan, and not done: {}; the run goes on without {}",
                gone.join(", "),
                if gone.len() == 1 { "it" } else { "them" }
            )));
        }
        // The copy in the state follows the plan the run goes on with, so
        // that `status`, `report` and `history` show the steps it has, and a
        // resume with neither file at hand reads this one. Written before the
        // journal says the plan changed: a crash in between only finds the
        // change again.
        state.write_file(&run_id, "plan.toml", plan.source.text.as_bytes())?;
    }
    let approve: HashSet<String> = request.approve.iter().cloned().collect();
    if let Some(paused) = &view.paused_at {
        if request.approve.is_empty() && !request.yes && !request.interactive {
            events.emit(Event::Warning(format!(
                "the run is paused at approval gate `{paused}`; resume with `--approve {paused}` to pass it"
            )));
        }
    }
    let approvals = Approvals {
        all: request.yes,
        steps: approve,
        interactive: request.interactive,
    };
    let chaos = match &header.chaos {
        Some(text) => ChaosSpec::parse(text)
            .ok()
            .map(|spec| Chaos::new(spec, view.resumes as u64 + 1)),
        None => None,
    };
    let session = Session {
        state,
        lock: lock.as_ref(),
        run_id: run_id.clone(),
        plan,
        drill: header.drill,
        concurrency: request.concurrency.unwrap_or(header.concurrency),
        keep_going: request.keep_going || header.keep_going,
        events,
    };
    let mut first = vec![Record::Resumed(resumed)];
    first.extend(records);
    let result = session.execute(
        first,
        starts,
        outputs,
        frozen,
        chaos,
        approvals,
        Some(Resuming {
            checks: needs_check,
            still_running,
        }),
        Some((log.header.clone(), view)),
    );
    crate::drop_later(log);
    let result = unless_lost(lock.as_ref(), result)?;
    drop(lock);
    Ok(result)
}

/// The steps a resume runs again whatever their state, and why: those whose
/// definition changed since the run started (or that are new), everything
/// after them, and, when the run directory is gone (a resume on another
/// machine with a remote state, a cache that was lost), the done steps whose
/// result was in it.
fn changed_steps(plan: &Plan, view: &RunView, run_dir_gone: bool) -> Vec<ChangedStep> {
    let graph = plan.graph();
    let mut changed = Vec::new();
    let mut changed_roots = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        match view.fingerprints.get(step.id.as_str()) {
            Some(old) if *old == step.fingerprint => {}
            Some(_) => {
                changed_roots.push(i);
                changed.push(ChangedStep {
                    step: step.id.value.clone(),
                    reason: "its definition changed".into(),
                });
            }
            None => {
                changed_roots.push(i);
                changed.push(ChangedStep {
                    step: step.id.value.clone(),
                    reason: "it is new in the plan".into(),
                });
            }
        }
    }
    let downstream = graph.descendants_of(changed_roots.iter().copied());
    for i in downstream.ones() {
        if !changed_roots.contains(&i) {
            let step = &plan.steps[i];
            let cause = graph
                .ancestors(i)
                .ones()
                .find(|a| changed_roots.contains(a))
                .map(|a| plan.steps[a].id.value.clone())
                .unwrap_or_default();
            changed.push(ChangedStep {
                step: step.id.value.clone(),
                reason: format!("it comes after `{cause}`, which changed"),
            });
        }
    }
    // What earlier sessions put in the run directory is not there any more:
    // the steps whose destination is in it make it again. Only those: they
    // replace their destination as a whole and touch nothing else, so running
    // them again is always safe.
    if run_dir_gone {
        for step in &plan.steps {
            let done = view
                .steps
                .get(step.id.as_str())
                .is_some_and(|s| s.is_done());
            let in_run_dir = step
                .action
                .value
                .dest()
                .is_some_and(|dest| crate::plan::interpolate::reads_run_dir(dest));
            if done && in_run_dir && !changed.iter().any(|c| c.step == step.id.value) {
                changed.push(ChangedStep {
                    step: step.id.value.clone(),
                    reason: "its result was in `{{ run.dir }}`, which this machine does not have"
                        .into(),
                });
            }
        }
    }
    changed
}

/// The plan a resume runs: `--plan`, else the file the run started from, else
/// the copy kept in the state; with the run's own var overrides.
fn load_for_resume(
    state: &dyn StateStore,
    run_id: &str,
    header: &Header,
    view: &RunView,
    plan: Option<&Path>,
) -> Result<(Plan, bool), SessionError> {
    let overrides = overrides_from_values(&header.vars);
    // The file the run started from, or the one the latest `resume --plan`
    // named: a plan fixed in another file is not swapped back for the
    // broken one by the next plain `resume`.
    let original = PathBuf::from(&view.plan_path);
    let (source, dir, from_state) = match plan {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })?;
            let dir = absolute(path)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (SourceFile::new(path, text), dir, false)
        }
        None if original.is_file() => {
            let text = std::fs::read_to_string(&original).map_err(|source| StateError::Io {
                action: "read",
                path: original.clone(),
                source,
            })?;
            (
                SourceFile::new(&original, text),
                PathBuf::from(&view.plan_dir),
                false,
            )
        }
        // The state copied to another machine, or the checkout moved: the
        // copy kept in the state has the steps, but they run in the plan's
        // directory and read their relative paths from it. Each would fail
        // on its own, after the resume had begun.
        None if !Path::new(&view.plan_dir).is_dir() => {
            return Err(SessionError::Usage(format!(
                "run `{run_id}` started from `{}`, and neither that file nor its directory is there any more: its steps run in that directory and read their relative paths from it. Resume with `--plan FILE` naming where the plan is now",
                original.display()
            )))
        }
        None => {
            let text = state.read_plan(run_id)?;
            (
                SourceFile::new(state.run_dir(run_id).join("plan.toml"), text),
                PathBuf::from(&view.plan_dir),
                true,
            )
        }
    };
    let loaded = load_source(source, dir, overrides);
    match loaded.plan {
        // Another plan's file at the run's path, or given with `--plan`: its
        // steps would be checked against a journal that is not theirs.
        Some(plan) if plan.name.value != header.plan => Err(SessionError::Usage(format!(
            "run `{run_id}` is a run of plan `{}`, but `{}` is plan `{}`{}",
            header.plan,
            plan.source.path.display(),
            plan.name.value,
            if from_state {
                ""
            } else {
                "; resume with `--plan` naming that plan's file"
            }
        ))),
        Some(plan) => Ok((plan, from_state)),
        None => {
            crate::cli::print_diagnostics(loaded.diagnostics, true);
            Err(SessionError::InvalidPlan {
                run: run_id.to_string(),
                from_state,
            })
        }
    }
}

/// The `[plan] name` of a plan file, read without checking the rest of it;
/// `None` when the file cannot be read or parsed that far.
fn plan_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    Some(table.get("plan")?.get("name")?.as_str()?.to_string())
}

/// A step accepted as done without running (`--skip`, now or in an earlier
/// resume) gives only the outputs given with it (`--output`): a step to run
/// that reads another would fail as it starts, perhaps hours on. Said before
/// anything starts. (A teardown step
/// is skipped with a word instead, as after a failure; an expression that
/// gives a `default` reads none.)
fn outputs_of_skipped(
    plan: &Plan,
    starts: &[Start],
    view: &RunView,
    skip: &HashSet<&str>,
    given: &BTreeMap<String, Outputs>,
) -> Result<(), SessionError> {
    let empty = Outputs::new();
    // What a step accepted as done without running gives: what `--output`
    // said, now or in the resume that skipped it.
    let skipped = |id: &str| match view.steps.get(id) {
        // Named with `--skip` though done: left as it is, outputs and all.
        Some(s) if s.is_done() => (s.state == StepState::Skipped
            && matches!(s.skip, Some(SkipReason::Operator { .. })))
        .then_some(&s.outputs),
        _ => skip.contains(id).then(|| given.get(id).unwrap_or(&empty)),
    };
    for (i, step) in plan.steps.iter().enumerate() {
        if !matches!(starts[i], Start::Pending { .. })
            || step.phase.value == crate::plan::Phase::Teardown
        {
            continue;
        }
        let missing = outputs_needed(step)
            .find(|(producer, key)| skipped(producer).is_some_and(|outputs| lacks(outputs, key)));
        if let Some((producer, key)) = missing {
            let (what, example) = match &key {
                Some(key) => (
                    format!("the output `{key}`"),
                    format!("{producer}.{key}=VALUE"),
                ),
                None => ("the outputs".to_string(), format!("{producer}.KEY=VALUE")),
            };
            return Err(SessionError::Usage(format!(
                "step `{}` reads {what} of `{producer}`, which was accepted as done without running (`--skip`) and does not give it: `{}` would fail as it starts. Give it with `--skip {producer} --output {example}` (what `{producer}` would have given), or give the expression a `default`",
                step.id.value, step.id.value
            )));
        }
    }
    Ok(())
}
