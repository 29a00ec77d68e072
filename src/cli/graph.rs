//! `phoenix graph`: the step graph as Graphviz DOT or Mermaid, grouped by phase.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{load_valid, CliResult, GlobalArgs, VarArgs};
use crate::exit_codes;
use crate::plan::{Phase, Plan};

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The plan file (TOML).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

pub fn run(_global: &GlobalArgs, args: GraphArgs) -> CliResult {
    let Some(loaded) = load_valid(&args.plan, &args.vars)? else {
        return Ok(exit_codes::FAILURE);
    };
    let Some(plan) = loaded.plan else {
        return Ok(exit_codes::FAILURE);
    };
    let text = match args.format {
        GraphFormat::Dot => dot(&plan),
        GraphFormat::Mermaid => mermaid(&plan),
    };
    crate::out_raw!("{text}");
    Ok(exit_codes::SUCCESS)
}

const COLORS: [&str; 4] = ["#dbeafe", "#dcfce7", "#fef3c7", "#f3f4f6"];

pub fn dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
        plan.name.value
    );
    for phase in Phase::ALL {
        let steps: Vec<_> = plan
            .steps
            .iter()
            .filter(|s| s.phase.value == phase)
            .collect();
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  subgraph \"cluster_{phase}\" {{\n    label=\"{phase}\";\n    node [fillcolor=\"{}\"];", COLORS[phase as usize]);
        for step in steps {
            let _ = writeln!(
                out,
                "    \"{}\" [label=\"{}\\n{}\"];",
                step.id.value,
                step.id.value,
                step.action.value.kind()
            );
        }
        out.push_str("  }\n");
    }
    for step in &plan.steps {
        for need in &step.needs {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", need.value, step.id.value);
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid's node and subgraph ids share one namespace with its keywords: a
/// step called `restore` would be its own phase's parent, and one called `end`
/// would close the subgraph. Steps are `step_ID` and phases `phase_NAME`,
/// each labelled with its own name.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for phase in Phase::ALL {
        let steps: Vec<_> = plan
            .steps
            .iter()
            .filter(|s| s.phase.value == phase)
            .collect();
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  subgraph phase_{phase} [{phase}]");
        for step in steps {
            let _ = writeln!(
                out,
                "    step_{}[\"{}<br/>{}\"]",
                step.id.value,
                step.id.value,
                step.action.value.kind()
            );
        }
        out.push_str("  end\n");
    }
    for step in &plan.steps {
        for need in &step.needs {
            let _ = writeln!(out, "  step_{} --> step_{}", need.value, step.id.value);
        }
    }
    out
}
