//! `phoenix history`: every run in the state, oldest first.

use clap::Args;

use super::{existing_state, CliResult, GlobalArgs, TextOrJson};
use crate::exit_codes;
use crate::report::history;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

pub fn run(global: &GlobalArgs, args: HistoryArgs) -> CliResult {
    let state = existing_state(global)?;
    let history::History {
        entries,
        unreadable,
    } = history::collect(state.as_ref())?;
    for (run, why) in &unreadable {
        super::say_warning(&format!("run `{run}` is left out: {why}"));
    }
    match args.format {
        TextOrJson::Json => crate::out!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        ),
        TextOrJson::Text => crate::out_raw!("{}", history::render_text(&entries)),
    }
    Ok(exit_codes::SUCCESS)
}
