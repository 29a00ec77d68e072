//! A run against the one before it: the last run of the same plan and kind
//! (drill or recovery) that succeeded. A quarterly drill's question is not
//! only "did we meet the RTO" but "what got slower since last time": the
//! RTO then and now, and the steps whose duration changed the most.

use chrono::{DateTime, Utc};
use serde::Serialize;

use std::collections::HashMap;

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
/// that started before it; `None` when there is none, or it cannot be read.
/// Each run's journal is read for its header and last record only; one, the
/// earlier run's, is read whole.
pub fn with_previous(state: &dyn StateStore, report: &Report) -> Option<Comparison> {
    let status = &report.status;
    let (started_at, run_id) = state
        .run_ids()
        .ok()?
        .into_iter()
        .filter(|id| *id != status.run_id)
        .filter_map(|id| {
            let bytes = state.read_journal(&id).ok()?;
            let header = crate::session::first_header(&bytes)?;
            (header.plan == status.plan
                && header.drill == status.drill
                && header.started_at < status.started_at
                && crate::session::ended_successfully(&bytes))
            .then_some((header.started_at, id))
        })
        .max()?;
    let earlier = super::for_run(state, &run_id, None).ok()?;
    let before: HashMap<&str, f64> = earlier
        .status
        .steps
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.duration_seconds?)))
        .collect();
    let mut steps: Vec<StepChange> = status
        .steps
        .iter()
        .filter_map(|step| {
            Some(StepChange {
                id: step.id.clone(),
                before_seconds: *before.get(step.id.as_str())?,
                now_seconds: step.duration_seconds?,
            })
        })
        .filter(|c| c.change().abs() >= 1.0 && c.change().abs() >= 0.1 * c.before_seconds)
        .collect();
    steps.sort_by(|a, b| b.change().abs().total_cmp(&a.change().abs()));
    steps.truncate(STEPS_SHOWN);
    Some(Comparison {
        run_id,
        started_at,
        rto_seconds: earlier.rto.actual_seconds,
        steps,
    })
}

/// `+1m 5s, +23%`, `-2.0s, -40%`: a change and its share of `before`;
/// `no change` below a twentieth of a second.
pub fn change(before: f64, now: f64) -> String {
    let delta = now - before;
    // What rounds to `0.0s` is no change, whatever its share of a blink.
    if delta.abs() < 0.05 {
        return "no change".to_string();
    }
    let sign = if delta < 0.0 { "-" } else { "+" };
    let share = if before > 0.0 {
        format!(", {sign}{:.0}%", (delta.abs() / before) * 100.0)
    } else {
        String::new()
    };
    format!("{sign}{}{share}", super::markdown::duration(delta.abs()))
}

/// The comparison's opening sentence, the same in every format, the run id
/// as `code` writes code: `Against the previous drill, run ID of DATE: RTO
/// then 31m, now 38m (+7m, +23%).`
pub fn summary(report: &Report, previous: &Comparison, code: impl Fn(&str) -> String) -> String {
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
        "Against the previous {kind}, run {} of {}: {rto}.",
        code(&previous.run_id),
        previous.started_at.format("%Y-%m-%d %H:%M:%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::change;

    #[test]
    fn changes_are_said_with_their_share() {
        assert_eq!(change(10.0, 12.5), "+2.5s, +25%");
        assert_eq!(change(120.0, 60.0), "-1m, -50%");
        assert_eq!(change(0.0, 2.0), "+2s");
        assert_eq!(change(0.30, 0.32), "no change");
    }
}
