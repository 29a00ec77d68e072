//! `phoenix status`: where a run stands, from its journal and its plan copy.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::journal::reader::{RunView, StepState, StepView};
use crate::journal::record::{Header, Outputs, SkipReason};
use crate::plan::Plan;

#[derive(Serialize)]
pub struct Status {
    pub run_id: String,
    pub plan: String,
    pub drill: bool,
    /// A drill given up with `resume --abandon`: only its teardown ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    pub state: &'static str,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::option::serialize")]
    pub finished_at: Option<DateTime<Utc>>,
    pub resumes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    pub steps: Vec<StepStatus>,
}

impl Status {
    /// "recovery", "drill", or "drill, abandoned": the kind of run, as the
    /// status and the reports name it.
    pub fn kind(&self) -> &'static str {
        match (self.drill, self.abandoned) {
            (true, true) => "drill, abandoned",
            (true, false) => "drill",
            (false, _) => "recovery",
        }
    }

    /// "resumed once", "resumed 3 times"; nothing for a run never resumed.
    pub fn resumed(&self) -> Option<String> {
        match self.resumes {
            0 => None,
            1 => Some("resumed once".into()),
            n => Some(format!("resumed {n} times")),
        }
    }
}

#[derive(Serialize)]
pub struct StepStatus {
    pub id: String,
    pub phase: &'static str,
    pub state: StepState,
    pub attempts: u32,
    #[serde(serialize_with = "crate::timestamp::option::serialize")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::option::serialize")]
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub outputs: Outputs,
    /// The outputs that held a secret's value (masked in `outputs`): a
    /// step that reads one fails.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub withheld: std::collections::BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a skipped step was: "skipped" alone leaves open whether its
    /// work was done, and who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipReason>,
}

impl StepStatus {
    /// The state as the reports show it: `skipped: WHY` for a skipped step.
    pub fn state_with_note(&self) -> String {
        match self.skip_note() {
            Some(note) => format!("{}: {note}", self.state.as_str()),
            None => self.state.as_str().to_string(),
        }
    }

    /// Why the step was skipped, in words.
    pub fn skip_note(&self) -> Option<String> {
        Some(match self.skip.as_ref()? {
            SkipReason::Operator { user } => format!("accepted as done by {user} (--skip)"),
            SkipReason::Check => "in doubt; its check found it done".into(),
            SkipReason::Upstream { failed } => format!("`{failed}` did not succeed"),
        })
    }
}

/// The status of a run. `plan` is the run's plan (for step order and phases);
/// without it, the steps the journal mentions are listed.
pub fn build(header: &Header, view: &RunView, live: bool, plan: Option<&Plan>) -> Status {
    let state = if live {
        "running"
    } else {
        match view.result {
            Some(result) => result.as_str(),
            None => "interrupted",
        }
    };
    let none = StepView::default();
    let step_status = |id: &str, phase: &'static str, step: Option<&StepView>| {
        let step = step.unwrap_or(&none);
        let state = match step.state {
            StepState::InDoubt if live => StepState::Running,
            other => other,
        };
        StepStatus {
            id: id.to_string(),
            phase,
            state,
            attempts: step.attempts,
            started_at: step.started_at,
            finished_at: step.finished_at,
            duration_seconds: step.duration_seconds,
            outputs: step.outputs.clone(),
            withheld: step.withheld.clone(),
            error: step.error.clone(),
            skip: (state == StepState::Skipped)
                .then(|| step.skip.clone())
                .flatten(),
        }
    };
    let steps = match plan {
        Some(plan) => plan
            .applicable(header.drill)
            .map(|s| {
                step_status(
                    s.id.as_str(),
                    s.phase.value.name(),
                    view.steps.get(s.id.as_str()),
                )
            })
            .collect(),
        None => {
            let mut ids: Vec<&String> = view.steps.keys().collect();
            ids.sort();
            ids.into_iter()
                .map(|id| step_status(id, "", view.steps.get(id)))
                .collect()
        }
    };
    Status {
        run_id: header.run_id.clone(),
        plan: header.plan.clone(),
        drill: header.drill,
        abandoned: view.abandoned,
        state,
        started_at: header.started_at,
        finished_at: if live { None } else { view.finished_at },
        resumes: view.resumes,
        paused_at: view.paused_at.clone(),
        steps,
    }
}

pub fn render_text(status: &Status) -> String {
    let mut out = String::new();
    let kind = status.kind();
    let _ = writeln!(
        out,
        "run `{}` of plan `{}` ({kind}): {}",
        status.run_id, status.plan, status.state
    );
    let finished = status
        .finished_at
        .map(|f| format!(", finished {}", f.format("%Y-%m-%d %H:%M:%SZ")))
        .unwrap_or_default();
    let resumes = status
        .resumed()
        .map(|r| format!(", {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "started {}{finished}{resumes}",
        status.started_at.format("%Y-%m-%d %H:%M:%SZ")
    );
    if let Some(step) = &status.paused_at {
        if status.state == "paused" {
            let _ = writeln!(
                out,
                "paused at approval gate `{step}`: `phoenix resume --approve {step}`"
            );
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for step in &status.steps {
        *counts
            .entry(step.state.as_str().replace('_', " "))
            .or_insert(0) += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(out, "steps: {}", summary.join(", "));
    let width = status.steps.iter().map(|s| s.id.len()).max().unwrap_or(4);
    for step in &status.steps {
        let state = step.state.as_str();
        let duration = step
            .duration_seconds
            .map(|d| format!("{d:.1}s"))
            .unwrap_or_default();
        let attempts = if step.attempts > 1 {
            format!("{} attempts", step.attempts)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "  {:<10} {:<width$}  {:<9} {:>8} {}",
            step.phase, step.id, state, duration, attempts
        );
        if let Some(error) = &step.error {
            if step.state == StepState::Failed {
                let _ = write!(out, " {error}");
            }
        }
        if let Some(note) = step.skip_note() {
            let _ = write!(out, " {note}");
        }
        out = out.trim_end().to_string();
        out.push('\n');
    }
    out
}
