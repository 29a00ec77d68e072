//! Consumers of a run: the terminal view while it runs, and, from its journal
//! afterwards, the status, the report in every format, and the history.

pub mod compare;
pub mod history;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod model;
pub mod status;
pub mod terminal;

use crate::journal::StateStore;

/// The report of a run, from its journal. `plan` is the run's plan when the
/// caller has it; otherwise the copy kept in the state is read.
pub fn for_run(
    state: &dyn StateStore,
    run_id: &str,
    plan: Option<&crate::plan::Plan>,
) -> Result<model::Report, crate::session::SessionError> {
    let (header, view, live) = crate::session::view(state, run_id)?;
    let owned;
    let plan = match plan {
        Some(plan) => Some(plan),
        None => {
            owned = crate::cli::run_plan(state, &header, &view);
            owned.as_ref()
        }
    };
    Ok(model::build(
        &header,
        &view,
        live,
        plan,
        &state.logs_dir(run_id),
    ))
}

/// Writes `report.json` beside the run's journal: every run ends with one.
/// Called by the session that ran it, which still holds the lock: the run is over.
pub fn write_json(
    state: &dyn StateStore,
    run_id: &str,
    plan: &crate::plan::Plan,
) -> Result<std::path::PathBuf, crate::session::SessionError> {
    let (header, view, _) = crate::session::view(state, run_id)?;
    write_json_from(state, &header, &view, plan)
}

/// Writes `report.json` from the run as the session folded it while writing
/// its journal: the same report, without reading the journal back.
pub fn write_json_from(
    state: &dyn StateStore,
    header: &crate::journal::record::Header,
    view: &crate::journal::reader::RunView,
    plan: &crate::plan::Plan,
) -> Result<std::path::PathBuf, crate::session::SessionError> {
    let run_id = &header.run_id;
    let t = std::time::Instant::now();
    let report = model::build(header, view, false, Some(plan), &state.logs_dir(run_id));
    tracing::debug!(elapsed = ?t.elapsed(), "report: built");
    // Compact: a file for programs (`phoenix report --format json` pretty-prints
    // it for people), and a third the size for a run of 100,000 steps.
    let text = serde_json::to_vec(&report).unwrap_or_default();
    tracing::debug!(elapsed = ?t.elapsed(), "report: serialized");
    let written = state.write_file(run_id, "report.json", &text);
    crate::drop_later((report, text));
    Ok(written?)
}

/// The runs of one plan, oldest first, for the HTML trend.
pub fn plan_history(state: &dyn StateStore, plan: &str) -> Vec<history::HistoryEntry> {
    // For a chart: a run that cannot be read is one point fewer.
    history::collect(state)
        .map(|h| h.entries)
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.plan == plan)
        .collect()
}
