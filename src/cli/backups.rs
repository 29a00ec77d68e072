//! `phoenix backups`: the preflight of every restore step. For each, the backup
//! it would pick now, its size and age against `max_age`, and whether the
//! digest it needs is there. Exit 1 when any is missing, too old, or lacks a
//! digest.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{load_valid, CliResult, GlobalArgs, TextOrJson, VarArgs};
use crate::actions::restore::{age, choose, expected_digest, resolve_source};
use crate::actions::Action;
use crate::exec::ActionError;
use crate::exit_codes;
use crate::plan::interpolate::render;
use crate::report::markdown::duration;
use crate::stores::Store;

#[derive(Args, Debug)]
pub struct BackupsArgs {
    /// The plan file (TOML).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

#[derive(Serialize)]
struct Check {
    step: String,
    store: String,
    key: Option<String>,
    size: Option<u64>,
    last_modified: Option<String>,
    age_seconds: Option<f64>,
    max_age_seconds: Option<f64>,
    digest: Option<&'static str>,
    verify: bool,
    ok: bool,
    problem: Option<String>,
    /// Set when the backup can only be chosen during the run (its key uses a
    /// step's output or `run`): not a failure of the preflight.
    #[serde(skip_serializing_if = "Option::is_none")]
    deferred: Option<String>,
}

pub fn run(_global: &GlobalArgs, args: BackupsArgs) -> CliResult {
    let Some(loaded) = load_valid(&args.plan, &args.vars)? else {
        return Ok(exit_codes::FAILURE);
    };
    let Some(plan) = loaded.plan else {
        return Ok(exit_codes::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(crate::session::SessionError::Runtime)?;
    let context = crate::exec::context::before_run(&plan);
    let now = chrono::Utc::now();
    let checks: Vec<Check> = runtime.block_on(async {
        let mut checks = Vec::new();
        for step in plan.steps.iter() {
            let Action::Restore(spec) = &step.action.value else {
                continue;
            };
            let max_age = spec.max_age.or(plan.rpo.as_ref().map(|r| r.value));
            let mut check = Check {
                step: step.id.value.clone(),
                store: spec.store.value.clone(),
                key: None,
                size: None,
                last_modified: None,
                age_seconds: None,
                max_age_seconds: max_age.map(|d| d.as_secs_f64()),
                digest: None,
                verify: spec.verify,
                ok: false,
                problem: None,
                deferred: None,
            };
            let source_texts: Vec<&str> = match &spec.source {
                crate::actions::restore::Source::Key(key) => vec![key.as_str()],
                crate::actions::restore::Source::Prefix {
                    prefix, pattern, ..
                } => std::iter::once(prefix.as_str())
                    .chain(pattern.as_ref().map(|p| p.as_str()))
                    .collect(),
            };
            let runtime_only = source_texts
                .iter()
                .any(|t| t.contains("{{") && (t.contains("steps.") || t.contains("run.")));
            if runtime_only {
                check.ok = true;
                check.deferred = Some(
                    "its key uses run-time values (step outputs or `run`): chosen when it runs"
                        .into(),
                );
                checks.push(check);
                continue;
            }
            let result: Result<(), ActionError> = async {
                let definition = &plan.stores[spec.store.as_str()];
                let store = Store::open(definition, &plan.dir, |t| render(t, &context))
                    .await
                    .map_err(ActionError::Render)?;
                let source = resolve_source(&spec.source, |t| {
                    render(t, &context).map_err(ActionError::Render)
                })?;
                let object = choose(&store, &source).await?;
                let age = age(&object, now).as_secs_f64();
                check.key = Some(object.key.clone());
                check.size = Some(object.size);
                check.last_modified = Some(object.last_modified.to_rfc3339());
                check.age_seconds = Some(age.round());
                check.digest = expected_digest(&store, &object)
                    .await?
                    .map(|(_, from)| from);
                // Every problem at once: one fixed and the run still failing
                // on the next costs another round in an incident.
                let mut problems = Vec::new();
                if let Some(limit) = max_age {
                    if age > limit.as_secs_f64() {
                        problems.push(format!(
                            "{} old, older than {} allowed",
                            duration(age.round()),
                            humantime::format_duration(limit)
                        ));
                    }
                }
                problems.extend(crate::actions::restore::not_unpackable(spec, &object.key));
                if spec.verify && check.digest.is_none() {
                    problems.push(format!(
                        "no digest: neither `{}.sha256` nor `sha256` metadata",
                        object.key
                    ));
                }
                check.ok = problems.is_empty();
                check.problem = (!problems.is_empty()).then(|| problems.join("; "));
                Ok(())
            }
            .await;
            if let Err(error) = result {
                check.problem = Some(crate::actions::git::strip_credentials(&error.to_string()));
            }
            checks.push(check);
        }
        checks
    });
    let failed = checks.iter().any(|c| !c.ok);
    match args.format {
        TextOrJson::Json => crate::out!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        ),
        TextOrJson::Text => {
            if checks.is_empty() {
                crate::out!("plan `{}` has no restore steps", plan.name.value);
            }
            for c in &checks {
                let verdict = if c.ok { "ok" } else { "FAIL" };
                let what = match (&c.key, c.size, c.age_seconds) {
                    (Some(key), Some(size), Some(age)) => format!(
                        " `{key}` ({size} bytes, {} old{}, digest: {})",
                        duration(age),
                        c.max_age_seconds
                            .map(|m| format!(" of {} allowed", duration(m)))
                            .unwrap_or_default(),
                        c.digest.unwrap_or("none")
                    ),
                    _ => String::new(),
                };
                let problem = c
                    .problem
                    .as_ref()
                    .or(c.deferred.as_ref())
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default();
                crate::out!(
                    "{verdict:>4} {} from store `{}`{what}{problem}",
                    c.step,
                    c.store
                );
            }
        }
    }
    Ok(if failed {
        exit_codes::FAILURE
    } else {
        exit_codes::SUCCESS
    })
}
