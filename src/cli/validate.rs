//! `phoenix validate`: every problem in every plan, in one pass.

use std::path::PathBuf;

use clap::Args;

use super::{print_diagnostics, CliResult, GlobalArgs, TextOrJson, VarArgs};
use crate::exit_codes;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Plan files to check.
    #[arg(required = true, value_name = "PLAN")]
    pub plans: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
    /// `text`: one line a problem on stderr; `json`: an array on stdout.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

pub fn run(global: &GlobalArgs, args: ValidateArgs) -> CliResult {
    let mut failed = false;
    let mut all = Vec::new();
    for path in &args.plans {
        let loaded = crate::plan::load(path, &args.vars.load_options())?;
        let diags = loaded.diagnostics;
        failed |= diags.has_errors();
        match args.format {
            TextOrJson::Json => all.extend(diags.sorted()),
            TextOrJson::Text => {
                let (errors, warnings) = (diags.error_count(), diags.warning_count());
                print_diagnostics(diags, global.quiet);
                if !global.quiet {
                    let summary = match (&loaded.plan, errors) {
                        (Some(plan), 0) => format!(
                            "`{}`: valid plan `{}`, {}",
                            path.display(),
                            plan.name.value,
                            crate::counted(plan.steps.len(), "step")
                        ),
                        _ => format!("`{}`: {}", path.display(), crate::counted(errors, "error")),
                    };
                    let warned = if warnings > 0 {
                        format!(", {}", crate::counted(warnings, "warning"))
                    } else {
                        String::new()
                    };
                    crate::note!("{summary}{warned}");
                }
            }
        }
    }
    if args.format == TextOrJson::Json {
        let json: Vec<_> = all.iter().map(|d| d.to_json()).collect();
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into())
        );
    }
    Ok(if failed {
        exit_codes::FAILURE
    } else {
        exit_codes::SUCCESS
    })
}
