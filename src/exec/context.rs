//! The interpolation context of a step: what its `{{ }}` can read.
//!
//! Built per step from only what its strings reference, so a 10,000-step plan
//! does not copy every output into every step.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{ActionError, Shared};
use crate::plan::interpolate::{expressions, has_expressions, references};
use crate::plan::Step;

/// `(step ids, secret names)` that a step's strings read.
fn referenced(step: &Step) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut steps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for text in step.texts.iter().filter(|t| has_expressions(t)) {
        for expr in expressions(text).unwrap_or_default() {
            for name in references(&expr) {
                let mut parts = name.split('.');
                match (parts.next(), parts.next()) {
                    (Some("steps"), Some(id)) => {
                        steps.insert(id.to_string());
                    }
                    (Some("secrets"), Some(secret)) => {
                        secrets.insert(secret.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    (steps, secrets)
}

/// The names of the secrets a step's own strings read (a template's files
/// may read others, which cannot be known before they are).
pub fn secrets_read(step: &Step) -> BTreeSet<String> {
    referenced(step).1
}

pub fn build(shared: &Shared, step: &Step) -> Result<minijinja::Value, ActionError> {
    if !step.texts.iter().any(|t| has_expressions(t)) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    let (step_refs, secret_refs) = referenced(step);
    let mut secrets = Map::new();
    for name in secret_refs {
        let value = shared.secrets.get(&name, &shared.masker)?;
        secrets.insert(name, Value::String(value));
    }
    let mut steps = Map::new();
    {
        let outputs = shared.outputs.read().unwrap_or_else(|e| e.into_inner());
        for id in step_refs {
            let values = outputs.get(&id).cloned().unwrap_or_default();
            steps.insert(id, json!({ "outputs": values }));
        }
    }
    Ok(minijinja::Value::from(minijinja::value::Serde(
        context_json(shared, secrets, steps),
    )))
}

/// The context of a template: every var and secret, the outputs of every step
/// this one depends on, `run` and `plan`. Template files are not part of the
/// plan, so what they reference cannot be known before they are read.
pub fn build_full(shared: &Shared, step: &Step) -> Result<minijinja::Value, ActionError> {
    let plan = &shared.plan;
    let mut secrets = Map::new();
    for name in plan.secrets.keys() {
        secrets.insert(
            name.clone(),
            Value::String(shared.secrets.get(name, &shared.masker)?),
        );
    }
    let index = plan
        .steps
        .iter()
        .position(|s| s.id.value == step.id.value)
        .unwrap_or(0);
    let mut steps = Map::new();
    {
        let outputs = shared.outputs.read().unwrap_or_else(|e| e.into_inner());
        for ancestor in shared.plan.graph().ancestors(index).ones() {
            let id = &plan.steps[ancestor].id.value;
            let values = outputs.get(id).cloned().unwrap_or_default();
            steps.insert(id.clone(), json!({ "outputs": values }));
        }
    }
    Ok(minijinja::Value::from(minijinja::value::Serde(
        context_json(shared, secrets, steps),
    )))
}

/// What a plan's strings can read before a run exists (`phoenix plan` and
/// `phoenix backups`): its vars and `plan`, no secrets, no run, no outputs.
pub fn before_run(plan: &crate::plan::Plan) -> minijinja::Value {
    let vars: Map<String, Value> = plan
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    minijinja::Value::from(minijinja::value::Serde(json!({
        "vars": vars,
        "plan": {"dir": plan.dir.display().to_string(), "name": plan.name.value},
    })))
}

fn context_json(shared: &Shared, secrets: Map<String, Value>, steps: Map<String, Value>) -> Value {
    let plan = &shared.plan;
    let vars: Map<String, Value> = plan
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    json!({
        "vars": vars,
        "secrets": secrets,
        "steps": steps,
        "run": {
            "id": shared.run.id,
            "dir": shared.run.dir.display().to_string(),
            "drill": shared.run.drill,
        },
        "plan": {
            "dir": plan.dir.display().to_string(),
            "name": plan.name.value,
        },
    })
}
