//! `phoenix plan`: what a run would do, without doing it.
//!
//! Execution waves, the critical path, and the predicted RTO against the plan's
//! target. Durations come from each step's `estimate`; once a run of the plan is
//! in the state, its measured durations are used instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{load_valid, CliResult, GlobalArgs, TextOrJson, VarArgs};
use crate::exit_codes;
use crate::graph::schedule;
use crate::plan::Plan;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The plan file (TOML).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Plan a drill: include drill-only and teardown steps.
    #[arg(long)]
    pub drill: bool,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

/// Where the expected duration of each step came from.
#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum DurationSource {
    Estimate,
    LastRun,
}

#[derive(Serialize)]
struct PlanJson<'a> {
    plan: &'a str,
    drill: bool,
    steps: usize,
    waves: Vec<Vec<&'a str>>,
    critical_path: Vec<&'a str>,
    predicted_rto_seconds: f64,
    rto_target_seconds: Option<f64>,
    rto_met: Option<bool>,
    duration_source: DurationSource,
    /// The run whose durations were used, with `last_run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    measured_in: Option<String>,
    without_estimate: Vec<&'a str>,
    #[serde(skip)]
    durations: BTreeMap<&'a str, Duration>,
    /// What each git step's ref resolves to now.
    git: Vec<GitNow>,
}

#[derive(Serialize)]
struct GitNow {
    step: String,
    repo: String,
    r#ref: String,
    /// The commit the ref resolves to now, when the repository is reachable.
    commit: Option<String>,
    pinned: Option<String>,
    pin_matches: Option<bool>,
    error: Option<String>,
}

/// Asks each git step's repository what its ref points at now (`validate`
/// stays offline; `plan` may look).
fn git_now(plan: &Plan, drill: bool) -> Vec<GitNow> {
    use crate::actions::Action;
    let steps: Vec<_> = plan
        .applicable(drill)
        .filter_map(|s| match &s.action.value {
            Action::Git(spec) => Some((s, spec)),
            _ => None,
        })
        .collect();
    if steps.is_empty() {
        return Vec::new();
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let context = crate::exec::context::before_run(plan);
    let never = tokio_util::sync::CancellationToken::new();
    steps
        .into_iter()
        .map(|(step, spec)| {
            let repo = crate::plan::interpolate::render(&spec.repo, &context);
            let reference = crate::plan::interpolate::render(&spec.reference, &context);
            let pinned = spec.commit.as_ref().map(|c| c.value.to_ascii_lowercase());
            let (commit, error) = match (&repo, &reference) {
                (Ok(repo), Ok(reference)) => {
                    let remote = crate::actions::git::Remote::new(repo, &plan.dir);
                    let lookup = crate::actions::git::resolve(&remote, reference, &never);
                    match runtime.block_on(async {
                        tokio::time::timeout(Duration::from_secs(15), lookup).await
                    }) {
                        Ok(Ok(commit)) => (Some(commit), None),
                        Ok(Err(e)) => (None, Some(format!("cannot resolve: {e}"))),
                        Err(_) => (
                            None,
                            Some("the repository did not answer within 15s".into()),
                        ),
                    }
                }
                _ => (
                    None,
                    Some("its repo or ref uses run-time values; resolved when it runs".into()),
                ),
            };
            GitNow {
                step: step.id.value.clone(),
                repo: crate::actions::git::strip_credentials(&spec.repo.value),
                r#ref: spec.reference.value.clone(),
                pin_matches: match (&commit, &pinned) {
                    (Some(c), Some(p)) => Some(c == p),
                    _ => None,
                },
                commit,
                pinned,
                error,
            }
        })
        .collect()
}

/// The step durations of the newest succeeded run of this plan in the state, if
/// there is a state and such a run. `plan` never creates a state.
fn last_run_durations(
    global: &GlobalArgs,
    plan: &str,
) -> Option<(Option<String>, BTreeMap<String, Duration>)> {
    if global.state.starts_with("s3://") || !std::path::Path::new(&global.state).is_dir() {
        return None;
    }
    let state = crate::journal::open(&global.state, false).ok()?;
    let mut best: Option<(
        chrono::DateTime<chrono::Utc>,
        String,
        BTreeMap<String, Duration>,
    )> = None;
    for id in state.run_ids().ok()? {
        let Ok(bytes) = state.read_journal(&id) else {
            continue;
        };
        let Ok(log) = crate::journal::RunLog::parse(&bytes) else {
            continue;
        };
        if log.header.plan != plan || best.as_ref().is_some_and(|b| b.0 >= log.header.started_at) {
            continue;
        }
        let view = log.fold();
        if view.result != Some(crate::journal::record::RunResult::Succeeded) {
            continue;
        }
        let durations = view
            .steps
            .iter()
            .filter_map(|(id, s)| {
                s.duration_seconds
                    .map(|d| (id.clone(), Duration::from_secs_f64(d.max(0.0))))
            })
            .collect();
        best = Some((log.header.started_at, id, durations));
    }
    best.map(|(_, id, durations)| (Some(id), durations))
}

pub fn run(global: &GlobalArgs, args: PlanArgs) -> CliResult {
    let Some(loaded) = load_valid(&args.plan, &args.vars)? else {
        return Ok(exit_codes::FAILURE);
    };
    let Some(plan) = loaded.plan else {
        return Ok(exit_codes::FAILURE);
    };
    let (measured_in, measured) = last_run_durations(global, &plan.name.value).unwrap_or_default();
    let mut view = preview(&plan, args.drill, &measured);
    view.measured_in = measured_in;
    view.git = git_now(&plan, args.drill);
    match args.format {
        TextOrJson::Json => crate::out!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        ),
        TextOrJson::Text => crate::out_raw!("{}", render_text(&plan, &view)),
    }
    Ok(exit_codes::SUCCESS)
}

fn preview<'a>(plan: &'a Plan, drill: bool, measured: &BTreeMap<String, Duration>) -> PlanJson<'a> {
    let graph = plan.graph();
    let source = if measured.is_empty() {
        DurationSource::Estimate
    } else {
        DurationSource::LastRun
    };
    let duration = |i: usize| {
        let step = &plan.steps[i];
        measured
            .get(step.id.as_str())
            .copied()
            .or(step.estimate)
            .unwrap_or_default()
    };
    let durations = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), duration(i)))
        .collect();
    let sched = schedule(plan, graph, |i| plan.steps[i].applies(drill), duration);
    let id = |i: &usize| plan.steps[*i].id.as_str();
    let predicted = sched.predicted.as_secs_f64();
    let target = plan.rto.as_ref().map(|r| r.value.as_secs_f64());
    PlanJson {
        plan: &plan.name.value,
        drill,
        steps: plan.applicable(drill).count(),
        waves: sched
            .waves
            .iter()
            .map(|w| w.iter().map(id).collect())
            .collect(),
        critical_path: sched.critical_path.iter().map(id).collect(),
        predicted_rto_seconds: predicted,
        rto_target_seconds: target,
        rto_met: target.map(|t| predicted <= t),
        duration_source: source,
        measured_in: None,
        durations,
        git: Vec::new(),
        without_estimate: plan
            .applicable(drill)
            .filter(|s| s.estimate.is_none() && !measured.contains_key(s.id.as_str()))
            .map(|s| s.id.as_str())
            .collect(),
    }
}

fn render_text(plan: &Plan, view: &PlanJson<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let steps: std::collections::HashMap<&str, &crate::plan::Step> =
        plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let kind = if view.drill { "drill" } else { "recovery" };
    let _ = writeln!(
        out,
        "plan `{}`: {} in {} ({kind} run)",
        view.plan,
        crate::counted(view.steps, "step"),
        crate::counted(view.waves.len(), "wave")
    );
    for (n, wave) in view.waves.iter().enumerate() {
        let names: Vec<String> = wave
            .iter()
            .map(|id| match steps.get(id) {
                Some(step) => format!("{id} ({})", step.phase.value),
                None => id.to_string(),
            })
            .collect();
        let _ = writeln!(out, "  wave {:>3}: {}", n + 1, names.join(", "));
    }
    let source = match (&view.duration_source, &view.measured_in) {
        (DurationSource::LastRun, Some(run)) => format!("durations measured in run `{run}`"),
        _ => "estimates".to_string(),
    };
    let path: Vec<String> = view
        .critical_path
        .iter()
        .map(|id| {
            let took = view.durations.get(id).copied().unwrap_or_default();
            format!(
                "{id} ({})",
                crate::report::markdown::duration(took.as_secs_f64())
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "critical path (from {source}): {}",
        if path.is_empty() {
            "none".into()
        } else {
            path.join(" -> ")
        }
    );
    // As the critical path's steps are shown: a plan of short steps predicts
    // "0.3s", not "0s".
    let predicted = crate::report::markdown::duration(view.predicted_rto_seconds);
    match (view.rto_target_seconds, view.rto_met) {
        (Some(target), Some(met)) => {
            let target = humantime::format_duration(Duration::from_secs(target.round() as u64));
            let verdict = if met { "within target" } else { "OVER TARGET" };
            let _ = writeln!(
                out,
                "predicted RTO: {predicted} against target {target}: {verdict}"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "predicted RTO: {predicted} (the plan sets no `rto` target)"
            );
        }
    }
    for git in &view.git {
        let line = match (&git.commit, &git.error) {
            (Some(commit), _) => {
                let pin = match git.pin_matches {
                    Some(true) => ", as pinned".to_string(),
                    Some(false) => format!(
                        ", but the plan pins {}: the ref moved",
                        git.pinned.as_deref().unwrap_or("")
                    ),
                    None => String::new(),
                };
                format!("`{}` resolves to {commit} now{pin}", git.r#ref)
            }
            (None, Some(error)) => format!("`{}` at {}: {error}", git.r#ref, git.repo),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "git step `{}`: {line}", git.step);
    }
    if !view.without_estimate.is_empty() {
        let _ = writeln!(
            out,
            "{} as 0s: {}",
            match view.without_estimate.len() {
                1 => "1 step has no estimate and counts".to_string(),
                n => format!("{n} steps have no estimate and count"),
            },
            view.without_estimate.join(", ")
        );
    }
    out
}
