//! Cross-references and the graph: the checks that need the whole plan.
//!
//! Runs after [`super::load`] has read every table. Checks step ids, `needs`,
//! phase order, pools, stores, cycles and every `{{ }}` reference, pushing each
//! problem into the same [`Diagnostics`], then computes step fingerprints.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use super::diagnostic::{did_you_mean, Diagnostics};
use super::interpolate::{expressions, has_expressions, references, Expression};
use super::model::{Phase, Plan};
use super::source::{Span, Spanned};
use crate::actions::command::Program;
use crate::actions::Action;
use crate::graph::StepGraph;

/// The fields of `run` and `plan` that expressions may read.
pub const RUN_FIELDS: &[&str] = &["id", "dir", "drill"];
pub const PLAN_FIELDS: &[&str] = &["dir", "name"];
const ROOTS: &[&str] = &["vars", "secrets", "steps", "run", "plan"];

pub fn check(plan: &mut Plan, diags: &mut Diagnostics) {
    let source = plan.source.clone();
    // (A step with errors is left out of `steps`: those errors say enough.)
    if plan.steps.is_empty() && !diags.has_errors() {
        diags.warning(
            &source,
            plan.name.span,
            "no-steps",
            "the plan has no `[[step]]`: a run of it does nothing",
        );
    }
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if let Some(&first) = first_seen.get(step.id.as_str()) {
            let (line, _) = source.location(plan.steps[first].id.span.start);
            diags.error(
                &source,
                step.id.span,
                "duplicate-step",
                format!(
                    "duplicate step id `{}` (first defined on line {line})",
                    step.id.value
                ),
            );
        } else {
            first_seen.insert(step.id.as_str(), i);
        }
    }
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    for step in &plan.steps {
        let mut seen = BTreeSet::new();
        for need in &step.needs {
            if need.value == step.id.value {
                diags.error(
                    &source,
                    need.span,
                    "self-need",
                    format!("step `{}` needs itself", step.id.value),
                );
                continue;
            }
            if !seen.insert(need.as_str()) {
                diags.warning(
                    &source,
                    need.span,
                    "duplicate-need",
                    format!(
                        "step `{}` lists `{}` in `needs` twice",
                        step.id.value, need.value
                    ),
                );
                continue;
            }
            let Some(&dep) = first_seen.get(need.as_str()) else {
                diags.error(
                    &source,
                    need.span,
                    "unknown-step",
                    format!(
                        "step `{}` needs unknown step `{}`{}",
                        step.id.value,
                        need.value,
                        did_you_mean(need, ids.iter().copied())
                    ),
                );
                continue;
            };
            let dep_phase = plan.steps[dep].phase.value;
            let phase = step.phase.value;
            if dep_phase == Phase::Teardown && phase != Phase::Teardown {
                diags.error(&source, need.span, "phase-order", format!("step `{}` ({phase}) needs teardown step `{}`: only teardown steps may need a teardown step", step.id.value, need.value));
            } else if phase != Phase::Teardown && dep_phase > phase {
                diags.error(&source, need.span, "phase-order", format!("step `{}` ({phase}) needs `{}` from the later {dep_phase} phase: a step may need only its own or an earlier phase", step.id.value, need.value));
            }
        }
        if let Some(pool) = &step.pool {
            if !plan.pools.contains_key(pool.as_str()) {
                diags.error(
                    &source,
                    pool.span,
                    "unknown-pool",
                    format!(
                        "step `{}` uses unknown pool `{}`{}",
                        step.id.value,
                        pool.value,
                        did_you_mean(pool, plan.pools.keys().map(String::as_str))
                    ),
                );
            }
        }
        if let Action::Restore(restore) = &step.action.value {
            if !plan.stores.contains_key(restore.store.as_str()) {
                diags.error(
                    &source,
                    restore.store.span,
                    "unknown-store",
                    format!(
                        "step `{}` restores from unknown store `{}`{}",
                        step.id.value,
                        restore.store.value,
                        did_you_mean(&restore.store, plan.stores.keys().map(String::as_str))
                    ),
                );
            }
        }
    }

    let graph = StepGraph::new(plan);
    for cycle in graph.cycles() {
        let names: Vec<&str> = cycle.iter().map(|&i| plan.steps[i].id.as_str()).collect();
        let (from, to) = (&plan.steps[cycle[0]], plan.steps[cycle[1]].id.as_str());
        let span = from
            .needs
            .iter()
            .find(|n| n.value == to)
            .map(|n| n.span)
            .unwrap_or(from.id.span);
        if cycle.len() > 2 {
            diags.error(
                &source,
                span,
                "cycle",
                format!("dependency cycle: {}", names.join(" -> ")),
            );
        }
    }

    check_expressions(plan, &graph, diags);
    check_destinations(plan, &graph, diags);
    check_command_lines(plan, diags);
    // Kept for the run, `phoenix plan` and resume: built once a plan.
    let _ = plan.graph.set(graph);
}

/// Two steps that put a tree or file in place at the same path (or one inside
/// the other's) with neither needing the other: each replaces its `dest`
/// whole, so which result stays depends on which finishes last. A warning,
/// not an error: an overwrite in a known order is fine, and two steps that
/// never run in the same kind of run (`when`) are left alone. Only literal
/// destinations can be compared before a run.
fn check_destinations(plan: &Plan, graph: &StepGraph, diags: &mut Diagnostics) {
    use std::path::{Component, PathBuf};
    let mut dests: Vec<(PathBuf, usize)> = plan
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let dest = step.action.value.dest()?;
            if has_expressions(dest) {
                return None;
            }
            // Lexically, as the path is written: `a/../b` is `b`.
            let mut path = PathBuf::new();
            for part in plan.dir.join(dest.as_str()).components() {
                match part {
                    Component::CurDir => {}
                    Component::ParentDir => {
                        path.pop();
                    }
                    other => path.push(other),
                }
            }
            Some((path, i))
        })
        .collect();
    // Sorted by components, a path's descendants follow it directly.
    dests.sort();
    let runs_with = |a: &super::model::Step, b: &super::model::Step| {
        [false, true]
            .iter()
            .any(|&drill| a.applies(drill) && b.applies(drill))
    };
    for (n, (outer, i)) in dests.iter().enumerate() {
        for (inner, j) in dests[n + 1..]
            .iter()
            .take_while(|(p, _)| p.starts_with(outer))
        {
            let (a, b) = (&plan.steps[*i], &plan.steps[*j]);
            let ordered = graph.ancestors(*i).contains(*j) || graph.ancestors(*j).contains(*i);
            if ordered || !runs_with(a, b) {
                continue;
            }
            let Some(dest) = b.action.value.dest() else {
                continue;
            };
            let what = if inner == outer {
                format!(
                    "steps `{}` and `{}` both put `{}` in place",
                    a.id.value, b.id.value, dest.value
                )
            } else {
                format!(
                    "step `{}` puts `{}` in place inside `{}`, which step `{}` replaces whole",
                    b.id.value,
                    dest.value,
                    a.action
                        .value
                        .dest()
                        .map(|d| d.value.as_str())
                        .unwrap_or(""),
                    a.id.value
                )
            };
            diags.warning(
                &plan.source,
                dest.span,
                "same-dest",
                format!(
                    "{what}, and neither needs the other: which result stays depends on which finishes last; add one to the other's `needs`"
                ),
            );
        }
    }
}

/// Every `{{ }}` in step and store strings: syntax, and that each name it reads
/// exists and, for step outputs, comes from an ancestor.
fn check_expressions(plan: &mut Plan, graph: &StepGraph, diags: &mut Diagnostics) {
    let source = plan.source.clone();
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut fingerprints = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let mut ancestors = None;
        let mut used_vars = BTreeSet::new();
        for text in &step.texts {
            for (span, name) in expression_names(&source, text, diags) {
                let parts: Vec<&str> = name.split('.').collect();
                if parts[0] == "vars" && parts.len() > 1 {
                    used_vars.insert(parts[1].to_string());
                }
                if parts[0] == "steps" {
                    let Some(target) = parts.get(1) else { continue };
                    let Some(&dep) = index.get(target) else {
                        diags.error(
                            &source,
                            span,
                            "unknown-step",
                            format!(
                                "step `{}` reads outputs of unknown step `{target}`{}",
                                step.id.value,
                                did_you_mean(target, index.keys().copied())
                            ),
                        );
                        continue;
                    };
                    if parts.get(2).is_some_and(|p| *p != "outputs") {
                        diags.error(
                            &source,
                            span,
                            "reference",
                            format!("`{name}`: a step exposes only `steps.{target}.outputs.NAME`"),
                        );
                        continue;
                    }
                    let ancestors = ancestors.get_or_insert_with(|| graph.ancestors(i));
                    if !ancestors.contains(dep) {
                        diags.error(&source, span, "not-ancestor", format!("step `{}` reads outputs of `{target}`, which is not among its dependencies; add `{target}` to its `needs` (directly or through another step)", step.id.value));
                        continue;
                    }
                    // A step that does not run in a kind of run has no
                    // outputs there: whoever reads them fails in exactly the
                    // run that finds out too late (a recovery, for a step
                    // only drills run).
                    let producer = &plan.steps[dep];
                    let has_default = || {
                        source
                            .slice(Span::new(span.start, text.span.end))
                            .split("}}")
                            .next()
                            .is_some_and(|e| e.contains("default"))
                    };
                    if let Some(kind) = [(true, "a drill"), (false, "a recovery")]
                        .into_iter()
                        .find(|(drill, _)| step.applies(*drill) && !producer.applies(*drill))
                        .map(|(_, kind)| kind)
                        .filter(|_| !has_default())
                    {
                        diags.warning(&source, span, "when-outputs", format!("step `{}` reads outputs of `{target}`, which does not run in {kind} (`when = \"{}\"`): there `{}` fails, unless the expression gives a `default`", step.id.value, producer.when.name(), step.id.value));
                    }
                    continue;
                }
                check_name(plan, &name, &parts, span, diags);
            }
        }
        if used_vars.is_empty() {
            fingerprints.push(None);
            continue;
        }
        let mut hasher = Sha256::new();
        hasher.update(step.fingerprint.as_bytes());
        for var in &used_vars {
            if let Some(value) = plan.vars.get(var) {
                hasher.update(format!("\0{var}={}", value.value).as_bytes());
            }
        }
        fingerprints.push(Some(hex(&hasher.finalize())));
    }
    for (step, fingerprint) in plan.steps.iter_mut().zip(fingerprints) {
        if let Some(fingerprint) = fingerprint {
            step.fingerprint = fingerprint;
        }
    }

    // Stores may interpolate vars, secrets, run and plan, but no step outputs.
    for text in &plan.store_texts {
        for (span, name) in expression_names(&source, text, diags) {
            let parts: Vec<&str> = name.split('.').collect();
            if parts[0] == "steps" {
                diags.error(
                    &source,
                    span,
                    "reference",
                    format!("`{name}`: a store cannot read step outputs"),
                );
            } else {
                check_name(plan, &name, &parts, span, diags);
            }
        }
    }
}

/// What goes on a command line: [secret-in-argv], a secret there (every
/// user of the machine can read a process's arguments, `ps` or
/// `/proc/PID/cmdline`, while it runs, and a `shell` script is `sh`'s
/// argument; its environment only its owner can read, so a secret goes in
/// through `env` and is read from there), and [unquoted-output] in a
/// `shell` script ([`check_shell_outputs`]).
fn check_command_lines(plan: &Plan, diags: &mut Diagnostics) {
    let source = plan.source.clone();
    // Broken expressions were said by `check_expressions` already.
    let mut said = Diagnostics::default();
    for step in &plan.steps {
        let mut lines: Vec<(&Spanned<String>, &str)> = Vec::new();
        if let Action::Command(spec) = &step.action.value {
            match &spec.program {
                Program::Argv(argv) => lines.extend(argv.iter().map(|a| (a, "`run`"))),
                Program::Shell(script) => {
                    check_shell_outputs(&source, step.id.as_str(), script, &mut said, diags);
                    lines.push((script, "the `shell` script"));
                }
            }
        }
        if let Some(check) = &step.check {
            lines.extend(check.iter().map(|a| (a, "`check`")));
        }
        for (text, what) in lines {
            for (span, name) in expression_names(&source, text, &mut said) {
                // An unknown one is an error of its own already.
                let Some(secret) = name
                    .strip_prefix("secrets.")
                    .filter(|secret| plan.secrets.contains_key(*secret))
                else {
                    continue;
                };
                let variable = secret.to_ascii_uppercase();
                diags.warning(
                    &source,
                    span,
                    "secret-in-argv",
                    format!(
                        "`secrets.{secret}` in {what} of step `{}`: a process's arguments can be read by every user of the machine while it runs (`ps`); give it in `env` (`env = {{ {variable} = \"{{{{ secrets.{secret} }}}}\" }}`) and read `${variable}` there",
                        step.id.value
                    ),
                );
            }
        }
    }
}

/// [unquoted-output]: a step's output written into a `shell` script becomes
/// part of the script's text, so a value with a space is split, one with a
/// `*` expanded, and one with `'`, `"` or `$(…)` can end a quote or run a
/// command: quotes written around the expression do not hold it. The
/// `quote` filter makes any value one shell word. (Vars are the plan's
/// own, and `run` and `plan` Phoenix's: what other programs print is what
/// an author does not see coming.)
fn check_shell_outputs(
    source: &std::sync::Arc<super::source::SourceFile>,
    step: &str,
    script: &Spanned<String>,
    said: &mut Diagnostics,
    diags: &mut Diagnostics,
) {
    for (span, expr) in located_expressions(source, script, said) {
        let quoted = expr
            .source
            .rsplit_once('|')
            .is_some_and(|(_, last)| last.trim() == "quote");
        let reads_output = references(&expr)
            .iter()
            .any(|name| name.starts_with("steps."));
        if reads_output && !quoted {
            diags.warning(
                source,
                span,
                "unquoted-output",
                format!(
                    "`{{{{ {} }}}}` in the `shell` script of step `{step}`: the output becomes part of the script, where a space, a `*`, a quote or `$(…)` in it is split, expanded or run; write `{{{{ {} | quote }}}}`, with no quotes around it, or give it in `env` and use \"$NAME\"",
                    expr.source, expr.source
                ),
            );
        }
    }
}

/// The names read by the expressions in `text`, each with the span of its `{{`.
fn expression_names(
    source: &std::sync::Arc<super::source::SourceFile>,
    text: &Spanned<String>,
    diags: &mut Diagnostics,
) -> Vec<(Span, String)> {
    located_expressions(source, text, diags)
        .into_iter()
        .flat_map(|(span, expr)| references(&expr).into_iter().map(move |name| (span, name)))
        .collect()
}

/// The expressions in `text`, each with the span of its `{{` in the file;
/// one that does not parse is said in `diags`.
fn located_expressions(
    source: &std::sync::Arc<super::source::SourceFile>,
    text: &Spanned<String>,
    diags: &mut Diagnostics,
) -> Vec<(Span, Expression)> {
    if !has_expressions(text) {
        return Vec::new();
    }
    let raw = source.slice(text.span);
    // Escapes can make the raw text longer than the value, but never add or drop a
    // `{{`: the k-th `{{` of the value is the k-th of the raw text.
    let locate = |offset: usize| -> Span {
        let k = text[..offset].matches("{{").count();
        match raw.match_indices("{{").nth(k) {
            Some((at, _)) => Span::new(text.span.start + at, text.span.start + at + 2),
            None => text.span,
        }
    };
    match expressions(text) {
        Err(err) => {
            diags.error(source, locate(err.offset), "interpolation", err.message);
            Vec::new()
        }
        Ok(exprs) => exprs
            .into_iter()
            .map(|expr| (locate(expr.offset), expr))
            .collect(),
    }
}

fn check_name(plan: &Plan, name: &str, parts: &[&str], span: Span, diags: &mut Diagnostics) {
    let source = &plan.source;
    let field = parts.get(1).copied();
    match (parts[0], field) {
        ("vars", Some(var)) if !plan.vars.contains_key(var) => {
            diags.error(
                source,
                span,
                "unknown-var",
                format!(
                    "unknown var `{var}`{}",
                    did_you_mean(var, plan.vars.keys().map(String::as_str))
                ),
            );
        }
        ("secrets", Some(secret)) if !plan.secrets.contains_key(secret) => {
            diags.error(
                source,
                span,
                "unknown-secret",
                format!(
                    "unknown secret `{secret}`{}",
                    did_you_mean(secret, plan.secrets.keys().map(String::as_str))
                ),
            );
        }
        ("run", Some(f)) if !RUN_FIELDS.contains(&f) => {
            diags.error(
                source,
                span,
                "unknown-run-field",
                format!(
                    "unknown field `run.{f}`; `run` has {}{}",
                    RUN_FIELDS.join(", "),
                    did_you_mean(f, RUN_FIELDS.iter().copied())
                ),
            );
        }
        ("plan", Some(f)) if !PLAN_FIELDS.contains(&f) => {
            diags.error(
                source,
                span,
                "unknown-plan-field",
                format!(
                    "unknown field `plan.{f}`; `plan` has {}{}",
                    PLAN_FIELDS.join(", "),
                    did_you_mean(f, PLAN_FIELDS.iter().copied())
                ),
            );
        }
        (root, _) if !ROOTS.contains(&root) => {
            diags.error(
                source,
                span,
                "unknown-name",
                format!(
                    "unknown name `{name}`: expressions read vars, secrets, steps, run and plan{}",
                    did_you_mean(root, ROOTS.iter().copied())
                ),
            );
        }
        _ => {}
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}
