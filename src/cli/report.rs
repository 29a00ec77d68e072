//! `phoenix report`: a run's report as Markdown, JSON, JUnit or HTML.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{existing_state, CliResult, GlobalArgs};
use crate::exit_codes;
use crate::report;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run (default: the newest).
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
    /// Write the report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    Md,
    Json,
    Junit,
    Html,
}

pub fn run(global: &GlobalArgs, args: ReportArgs) -> CliResult {
    let state = existing_state(global)?;
    let run_id = super::run_or_newest(state.as_ref(), args.run_id)?;
    let mut report = report::for_run(state.as_ref(), &run_id, None)?;
    if !matches!(args.format, ReportFormat::Junit) {
        report.previous = report::compare::with_previous(state.as_ref(), &report);
    }
    let text = match args.format {
        ReportFormat::Md => report::markdown::render(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        ReportFormat::Junit => report::junit::render(&report),
        ReportFormat::Html => report::html::render(
            &report,
            &report::plan_history(state.as_ref(), &report.status.plan),
        ),
    };
    match args.output {
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| super::CliError::Output {
                path: path.clone(),
                source,
            })?;
            if !global.quiet {
                super::say_info(&format!("wrote {}", path.display()));
            }
        }
        None => crate::out_raw!("{text}"),
    }
    Ok(exit_codes::SUCCESS)
}
