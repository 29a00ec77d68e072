//! `phoenix status`: where a run stands.

use clap::Args;

use super::{existing_state, CliResult, GlobalArgs, TextOrJson};
use crate::exit_codes;
use crate::report::status;
use crate::session;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The run (default: the newest).
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<String>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

pub fn run(global: &GlobalArgs, args: StatusArgs) -> CliResult {
    let state = existing_state(global)?;
    let run_id = super::run_or_newest(state.as_ref(), args.run_id)?;
    let (header, view, live) = session::view(state.as_ref(), &run_id)?;
    let plan = super::run_plan(state.as_ref(), &header, &view);
    let status = status::build(&header, &view, live, plan.as_ref());
    match args.format {
        TextOrJson::Json => crate::out!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        ),
        TextOrJson::Text => crate::out_raw!("{}", status::render_text(&status)),
    }
    Ok(exit_codes::SUCCESS)
}
