//! `phoenix history`: every run in the state, oldest first.

use std::fmt::Write as _;

use serde::Serialize;

use crate::journal::{RunLog, StateError, StateStore};

#[derive(Serialize, Clone)]
pub struct HistoryEntry {
    pub run_id: String,
    pub plan: String,
    pub drill: bool,
    pub result: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub rto_met: Option<bool>,
    pub rpo_met: Option<bool>,
}

/// Every run in the state: those that can be read, oldest first, and those
/// that cannot, each with why.
pub struct History {
    pub entries: Vec<HistoryEntry>,
    pub unreadable: Vec<(String, String)>,
}

/// A run's figures come from its journal (as `phoenix report` builds them),
/// not from its `report.json`: a run that is still going, or was
/// interrupted, has none yet. Only a state that cannot be listed is an error.
pub fn collect(state: &dyn StateStore) -> Result<History, StateError> {
    let holder = state.lock_holder();
    let mut history = History {
        entries: Vec::new(),
        unreadable: Vec::new(),
    };
    for id in state.run_ids()? {
        let log = match state.read_journal(&id) {
            Ok(bytes) => RunLog::parse(&bytes).map_err(|e| crate::error_text(&e)),
            Err(StateError::NoRun(_)) => {
                Err("it has no journal: the run never started".to_string())
            }
            Err(e) => Err(crate::error_text(&e)),
        };
        let log = match log {
            Ok(log) => log,
            Err(why) => {
                history.unreadable.push((id, why));
                continue;
            }
        };
        let live = holder.as_ref().is_some_and(|h| h.run_id == id);
        let view = log.fold();
        let plan = crate::cli::run_plan(state, &log.header, &view);
        let report = super::model::build(
            &log.header,
            &view,
            live,
            plan.as_ref(),
            &state.logs_dir(&id),
        );
        history.entries.push(HistoryEntry {
            run_id: id,
            plan: log.header.plan.clone(),
            drill: log.header.drill,
            result: report.result.clone(),
            started_at: log.header.started_at,
            finished_at: report.status.finished_at,
            rto_seconds: report.rto.actual_seconds,
            rpo_seconds: report.rpo.actual_seconds,
            rto_met: report.rto.met,
            rpo_met: report.rpo.met,
        });
    }
    history.entries.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.run_id.cmp(&b.run_id))
    });
    Ok(history)
}

pub fn render_text(entries: &[HistoryEntry]) -> String {
    let mut out = String::new();
    let show = |v: Option<f64>| {
        v.map(super::markdown::duration)
            .unwrap_or_else(|| "—".into())
    };
    let met = |v: Option<bool>| match v {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "—",
    };
    let _ = writeln!(
        out,
        "{:<26} {:<14} {:<9} {:<11} {:<20} {:>9} {:<6} {:>9} {:<6}",
        "run", "plan", "kind", "result", "started", "rto", "", "rpo", ""
    );
    for e in entries {
        let _ = writeln!(
            out,
            "{:<26} {:<14} {:<9} {:<11} {:<20} {:>9} {:<6} {:>9} {:<6}",
            e.run_id,
            e.plan,
            if e.drill { "drill" } else { "recovery" },
            e.result,
            e.started_at.format("%Y-%m-%d %H:%M:%S"),
            show(e.rto_seconds),
            met(e.rto_met),
            show(e.rpo_seconds),
            met(e.rpo_met)
        );
    }
    out
}
