//! A run against the one before it: the last run of the same plan and kind
//! (drill or recovery) that succeeded. A quarterly drill's question is not
//! only "did we meet the RTO" but "what got slower since last time": the
//! RTO then and now, and the steps whose duration changed the most.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::history::HistoryEntry;
use super::model::Report;
use crate::journal::StateStore;

/// How many changed steps a comparison names, the largest changes first.
const STEPS_SHOWN: usize = 5;

#[derive(Serialize)]
pub struct Comparison {
    /// The earlier run.
    pub run_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub started_at: DateTime<Utc>,
    pub rto_seconds: Option<f64>,
    /// The steps whose duration changed the most (by 1s and 10% or more),
    /// the largest change first.
    pub steps: Vec<StepChange>,
}

#[derive(Serialize)]
pub struct StepChange {
    pub id: String,
    pub before_seconds: f64,
    pub now_seconds: f64,
}

impl StepChange {
    pub fn change(&self) -> f64 {
        self.now_seconds - self.before_seconds
    }
}

/// `report`'s run against the last succeeded run of the same plan and kind
/// that started before it, among `history` (the state's runs); `None` when
/// there is none, or it cannot be read.
pub fn with_previous(
    state: &dyn StateStore,
    report: &Report,
    history: &[HistoryEntry],
) -> Option<Comparison> {
    let status = &report.status;
    let earlier = history
        .iter()
        .filter(|h| {
            h.plan == status.plan
                && h.drill == status.drill
                && h.result == "succeeded"
                && h.started_at < status.started_at
                && h.run_id != status.run_id
        })
        .max_by_key(|h| h.started_at)?;
    let (_, view, _) = crate::session::view(state, &earlier.run_id).ok()?;
    let mut steps: Vec<StepChange> = status
        .steps
        .iter()
        .filter_map(|step| {
            let now = step.duration_seconds?;
            let before = view.steps.get(&step.id)?.duration_seconds?;
            Some(StepChange {
                id: step.id.clone(),
                before_seconds: before,
                now_seconds: now,
            })
        })
        .filter(|c| c.change().abs() >= 1.0 && c.change().abs() >= 0.1 * c.before_seconds)
        .collect();
    steps.sort_by(|a, b| b.change().abs().total_cmp(&a.change().abs()));
    steps.truncate(STEPS_SHOWN);
    Some(Comparison {
        run_id: earlier.run_id.clone(),
        started_at: earlier.started_at,
        rto_seconds: earlier.rto_seconds,
        steps,
    })
}

/// `+1m 5s, +23%`, `-2.0s, -40%`: a change and its share of `before`.
pub fn change(before: f64, now: f64) -> String {
    let delta = now - before;
    let sign = if delta < 0.0 { "-" } else { "+" };
    let share = if before > 0.0 {
        format!(", {sign}{:.0}%", (delta.abs() / before) * 100.0)
    } else {
        String::new()
    };
    format!("{sign}{}{share}", super::markdown::duration(delta.abs()))
}

/// The comparison's opening sentence, the same in every format:
/// `Against the previous drill, run `ID` of DATE: RTO then 31m, now 38m
/// (+7m, +23%).`
pub fn summary(report: &Report, previous: &Comparison) -> String {
    let kind = report.status.kind();
    let rto = match (previous.rto_seconds, report.rto.actual_seconds) {
        (Some(before), Some(now)) => format!(
            "RTO then {}, now {} ({})",
            super::markdown::duration(before),
            super::markdown::duration(now),
            change(before, now)
        ),
        (Some(before), None) => format!(
            "RTO then {}, none now (the run has not ended)",
            super::markdown::duration(before)
        ),
        _ => "no RTO to compare".to_string(),
    };
    format!(
        "Against the previous {kind}, run `{}` of {}: {rto}.",
        previous.run_id,
        previous.started_at.format("%Y-%m-%d %H:%M:%SZ")
    )
}
