//! `phoenix validate`: every problem in every plan, in one pass.

use std::path::PathBuf;

use clap::Args;

use super::{print_diagnostics, CliResult, GlobalArgs, TextOrJson, VarArgs};
use crate::exit_codes;
use crate::plan::diagnostic::{Diagnostic, Severity};
use crate::plan::source::{SourceFile, Span};

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

/// Every plan is checked even when one cannot be read (CI checking a
/// directory of plans wants all their problems at once); that one is said on
/// stderr, and the exit code is then 2, as for any file that cannot be read.
pub fn run(global: &GlobalArgs, args: ValidateArgs) -> CliResult {
    let mut failed = false;
    let mut unreadable = false;
    let mut all = Vec::new();
    for path in &args.plans {
        let loaded = match crate::plan::load(path, &args.vars.load_options()) {
            Ok(loaded) => loaded,
            Err(error @ crate::plan::load::LoadError::Read { .. }) => {
                let message = crate::error_text(&error);
                // A CI job that reads the array must not take a plan it
                // could not read for one without problems.
                if args.format == TextOrJson::Json {
                    all.push(Diagnostic {
                        source: SourceFile::new(path, String::new()),
                        span: Span::new(0, 0),
                        severity: Severity::Error,
                        code: "unreadable",
                        message: message.clone(),
                    });
                }
                super::say_error(&message);
                unreadable = true;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
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
                    super::say_info(&format!("{summary}{warned}"));
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
    Ok(if unreadable {
        exit_codes::USAGE
    } else if failed {
        exit_codes::FAILURE
    } else {
        exit_codes::SUCCESS
    })
}
