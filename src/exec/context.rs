//! The interpolation context of a step: what its `{{ }}` can read.
//!
//! Built per step from only what its strings reference, so a 10,000-step plan
//! does not copy every output into every step.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::{ActionError, Shared, StepOutputs};
use crate::plan::interpolate::{expressions, has_expressions, output_keys_read, references};
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
        let none = Default::default();
        for id in step_refs {
            let given = outputs.get(&id).unwrap_or(&none);
            if !given.withheld.is_empty() {
                let reads = step.texts.iter().flat_map(|text| output_keys_read(text));
                refuse_withheld(reads, &outputs)?;
            }
            steps.insert(id, json!({ "outputs": given.values }));
        }
    }
    Ok(minijinja::Value::from(minijinja::value::Serde(
        context_json(shared, secrets, steps),
    )))
}

/// Fails where `reads` (a step's, by [`output_keys_read`]) take an output
/// that held a secret's value, or all of a step's outputs at once (`|
/// tojson`), which hold it.
fn refuse_withheld(
    reads: impl IntoIterator<Item = (String, Option<String>)>,
    outputs: &HashMap<String, StepOutputs>,
) -> Result<(), ActionError> {
    for (step, key) in reads {
        let Some(given) = outputs.get(&step) else {
            continue;
        };
        let withheld = match key {
            Some(key) => given.withheld.get(&key),
            None => given.withheld.first(),
        };
        if let Some(key) = withheld {
            return Err(ActionError::Withheld {
                step,
                key: key.clone(),
            });
        }
    }
    Ok(())
}

/// For a template's file: fails where its `{{ }}` read an output that held a
/// secret's value, as a step's own strings do (`build_full` leaves such an
/// output out, so a read inside a `{% %}` block fails as undefined).
pub fn refuse_withheld_in(shared: &Shared, text: &str) -> Result<(), ActionError> {
    let outputs = shared.outputs.read().unwrap_or_else(|e| e.into_inner());
    if outputs.values().all(|given| given.withheld.is_empty()) {
        return Ok(());
    }
    refuse_withheld(output_keys_read(text), &outputs)
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
            // What a template's files read is known only as they render: a
            // withheld output is left out, and reading it fails as undefined.
            let mut given = outputs.get(id).cloned().unwrap_or_default();
            given.values.retain(|key, _| !given.withheld.contains(key));
            steps.insert(id.clone(), json!({ "outputs": given.values }));
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
