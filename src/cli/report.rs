//! `phoenix report`: a run's report as Markdown, JSON, JUnit or HTML.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{existing_state, CliError, CliResult, GlobalArgs};
use crate::exit_codes;
use crate::report;
use crate::session;

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
    let run_id = match args.run_id {
        Some(id) => id,
        None => session::newest(state.as_ref())?
            .ok_or_else(|| CliError::Usage(format!("no runs in `{}`", state.describe())))?,
    };
    let report = report::for_run(state.as_ref(), &run_id, None)?;
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
            std::fs::write(&path, text)?;
            if !global.quiet {
                eprintln!("wrote {}", path.display());
            }
        }
        None => print!("{text}"),
    }
    Ok(exit_codes::SUCCESS)
}
