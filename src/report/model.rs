//! The report of a run: everything `phoenix status` says, plus what an auditor
//! asks: RTO and RPO against their targets, each phase's span, the critical
//! path as measured, chaos events, resumes, approvals, and what was deployed
//! and restored. Built from the journal alone (and the run's plan copy); every
//! format renders this one model.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::status::{self, Status};
use crate::actions::Action;
use crate::journal::reader::{Approval, ChaosEvent, RunView, StepState};
use crate::journal::record::Header;
use crate::plan::{Phase, Plan};

#[derive(Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub status: Status,
    /// `succeeded` or `failed` once the run has ended; otherwise the run's state.
    pub result: String,
    pub rto: Target,
    pub rpo: Target,
    pub phases: Vec<PhaseSpan>,
    pub critical_path: Vec<String>,
    pub chaos_events: Vec<ChaosEvent>,
    pub approvals: Vec<Approval>,
    /// Commits the `git` steps put in place.
    pub deployed: Vec<Deployed>,
    /// Backups the `restore` steps brought back.
    pub restored: Vec<Restored>,
    /// The last lines of output of each failed step.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub log_tails: BTreeMap<String, String>,
    /// Against the last succeeded run of the same plan and kind: filled by
    /// `phoenix report`, not in the `report.json` a run ends with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<super::compare::Comparison>,
}

#[derive(Serialize, Clone, Copy)]
pub struct Target {
    pub target_seconds: Option<f64>,
    pub actual_seconds: Option<f64>,
    pub met: Option<bool>,
}

impl Target {
    fn new(target: Option<f64>, actual: Option<f64>) -> Self {
        Target {
            target_seconds: target,
            actual_seconds: actual,
            met: match (target, actual) {
                (Some(t), Some(a)) => Some(a <= t),
                _ => None,
            },
        }
    }
}

#[derive(Serialize)]
pub struct PhaseSpan {
    pub name: &'static str,
    #[serde(serialize_with = "crate::timestamp::option::serialize")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::option::serialize")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub struct Deployed {
    pub step: String,
    pub repo: String,
    pub reference: String,
    pub commit: Option<String>,
}

#[derive(Serialize)]
pub struct Restored {
    pub step: String,
    pub store: String,
    pub key: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<String>,
    pub age_seconds: Option<f64>,
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

pub fn build(
    header: &Header,
    view: &RunView,
    live: bool,
    plan: Option<&Plan>,
    logs: &Path,
) -> Report {
    let status = status::build(header, view, live, plan);
    // The run's state doubles as its result: `succeeded` and `failed` once it
    // has ended, `running`, `paused` or `interrupted` before.
    let result = status.state.to_string();
    let non_teardown = || status.steps.iter().filter(|s| s.phase != "teardown");
    let first_start = status.steps.iter().filter_map(|s| s.started_at).min();
    let last_end = non_teardown().filter_map(|s| s.finished_at).max();
    let rto_actual = match (first_start, last_end) {
        (Some(a), Some(b)) if status.state == "succeeded" || status.state == "failed" => {
            Some(seconds(a, b))
        }
        _ => None,
    };
    let mut restored = Vec::new();
    let mut deployed = Vec::new();
    if let Some(plan) = plan {
        for step in plan.applicable(header.drill) {
            if !matches!(step.action.value, Action::Restore(_) | Action::Git(_)) {
                continue;
            }
            let id = step.id.as_str();
            let Some(view_step) = view.steps.get(id) else {
                continue;
            };
            let value = |key: &str| {
                view_step.outputs.get(key).cloned().or_else(|| {
                    view_step.frozen.get(key).map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                })
            };
            match &step.action.value {
                Action::Restore(spec) => restored.push(Restored {
                    step: id.to_string(),
                    store: spec.store.value.clone(),
                    key: value("key"),
                    sha256: value("sha256"),
                    size: value("size"),
                    age_seconds: value("age_seconds").and_then(|a| a.parse().ok()),
                }),
                Action::Git(spec) => deployed.push(Deployed {
                    step: id.to_string(),
                    repo: spec.repo.value.clone(),
                    reference: spec.reference.value.clone(),
                    commit: value("commit"),
                }),
                _ => {}
            }
        }
    }
    let rpo_actual = restored
        .iter()
        .filter_map(|r| r.age_seconds)
        .max_by(|a, b| a.total_cmp(b));
    let phases = Phase::ALL
        .iter()
        .filter_map(|phase| {
            let steps: Vec<_> = status
                .steps
                .iter()
                .filter(|s| s.phase == phase.name())
                .collect();
            if steps.is_empty() {
                return None;
            }
            Some(PhaseSpan {
                name: phase.name(),
                started_at: steps.iter().filter_map(|s| s.started_at).min(),
                finished_at: steps.iter().filter_map(|s| s.finished_at).max(),
            })
        })
        .collect();
    let critical_path = plan
        .map(|p| measured_critical_path(p, view, header.drill))
        .unwrap_or_default();
    let mut log_tails = BTreeMap::new();
    for step in status.steps.iter().filter(|s| s.state == StepState::Failed) {
        let log = logs.join(format!("{}.{}.log", step.id, step.attempts));
        if let Some(tail) = crate::exec::attempt::tail(&log, 20) {
            log_tails.insert(step.id.clone(), tail);
        }
    }
    let mut rto = Target::new(
        plan.and_then(|p| p.rto.as_ref())
            .map(|r| r.value.as_secs_f64()),
        rto_actual,
    );
    // A rebuild that did not finish did not meet its recovery time, however fast it failed.
    if result == "failed" && rto.met.is_some() {
        rto.met = Some(false);
    }
    Report {
        result,
        rto,
        rpo: Target::new(
            plan.and_then(|p| p.rpo.as_ref())
                .map(|r| r.value.as_secs_f64()),
            rpo_actual,
        ),
        phases,
        critical_path,
        chaos_events: view.chaos.clone(),
        approvals: view.approvals.clone(),
        deployed,
        restored,
        log_tails,
        previous: None,
        status,
    }
}

/// The chain of non-teardown steps that decided when the rebuild ended: from
/// the step that finished last, back through the need that finished last.
fn measured_critical_path(plan: &Plan, view: &RunView, drill: bool) -> Vec<String> {
    // One lookup per step, then plain indexing: plans can have 100,000 steps.
    let finished: Vec<_> = plan
        .steps
        .iter()
        .map(|s| view.steps.get(s.id.as_str()).and_then(|v| v.finished_at))
        .collect();
    let Some(mut at) = (0..plan.steps.len())
        .filter(|&i| plan.steps[i].applies(drill) && plan.steps[i].phase.value != Phase::Teardown)
        .filter(|&i| finished[i].is_some())
        .max_by_key(|&i| finished[i])
    else {
        return Vec::new();
    };
    let index: std::collections::HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut path = vec![plan.steps[at].id.value.clone()];
    while let Some(previous) = plan.steps[at]
        .needs
        .iter()
        .filter_map(|n| index.get(n.as_str()).copied())
        .filter(|&d| finished[d].is_some())
        .max_by_key(|&d| finished[d])
    {
        path.push(plan.steps[previous].id.value.clone());
        at = previous;
    }
    path.reverse();
    path
}
