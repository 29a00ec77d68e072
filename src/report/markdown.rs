//! `phoenix report --format md`: the report as Markdown, for a ticket or a wiki.

use std::fmt::Write as _;

use super::model::{Report, Target};

/// `1.2s` below a minute, `3m 5s` above; whole seconds always as humantime.
pub fn duration(seconds: f64) -> String {
    if seconds < 60.0 && seconds.fract() != 0.0 {
        format!("{seconds:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(seconds.round() as u64))
            .to_string()
    }
}

fn target_row(name: &str, target: &Target) -> String {
    let show = |v: Option<f64>| v.map(duration).unwrap_or_else(|| "—".into());
    let met = match target.met {
        Some(true) => "yes",
        Some(false) => "**NO**",
        None => "—",
    };
    format!(
        "| {name} | {} | {} | {met} |\n",
        show(target.target_seconds),
        show(target.actual_seconds)
    )
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "—".into())
}

pub fn render(report: &Report) -> String {
    let status = &report.status;
    let mut out = String::new();
    let kind = status.kind();
    let _ = writeln!(out, "# Phoenix report: plan `{}` ({kind})\n", status.plan);
    let _ = writeln!(
        out,
        "Run `{}`: **{}**. Started {}, finished {}{}.\n",
        status.run_id,
        report.result,
        time(Some(status.started_at)),
        time(status.finished_at),
        status
            .resumed()
            .map(|r| format!(", {r}"))
            .unwrap_or_default()
    );
    out.push_str("| objective | target | actual | met |\n|---|---|---|---|\n");
    out.push_str(&target_row("RTO", &report.rto));
    out.push_str(&target_row("RPO", &report.rpo));
    if let Some(previous) = &report.previous {
        let _ = writeln!(
            out,
            "\n## Against the previous {}\n\n{}\n",
            status.kind(),
            super::compare::summary(report, previous, |id| format!("`{id}`"))
        );
        if previous.steps.is_empty() {
            out.push_str("No step's duration changed by 1s and 10% or more.\n");
        } else {
            out.push_str("| step | then | now | change |\n|---|---|---|---|\n");
            for step in &previous.steps {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} |",
                    step.id,
                    duration(step.before_seconds),
                    duration(step.now_seconds),
                    super::compare::change(step.before_seconds, step.now_seconds)
                );
            }
        }
    }
    out.push_str("\n## Phases\n\n| phase | started | finished | span |\n|---|---|---|---|\n");
    for phase in &report.phases {
        let span = match (phase.started_at, phase.finished_at) {
            (Some(a), Some(b)) => duration((b - a).num_milliseconds() as f64 / 1000.0),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {span} |",
            phase.name,
            time(phase.started_at),
            time(phase.finished_at)
        );
    }
    let _ = writeln!(
        out,
        "\n## Critical path\n\n{}\n",
        if report.critical_path.is_empty() {
            "—".into()
        } else {
            report
                .critical_path
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" → ")
        }
    );
    out.push_str("## Steps\n\n| step | phase | state | attempts | duration | outputs |\n|---|---|---|---|---|---|\n");
    for step in &status.steps {
        let outputs: Vec<String> = step
            .outputs
            .iter()
            .map(|(k, v)| format!("`{k}={}`", v.replace('|', "\\|")))
            .collect();
        let state = step.state_with_note().replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{}` | {} | {state} | {} | {} | {} |",
            step.id,
            step.phase,
            step.attempts,
            step.duration_seconds
                .map(duration)
                .unwrap_or_else(|| "—".into()),
            outputs.join(" ")
        );
    }
    if !report.deployed.is_empty() {
        out.push_str("\n## Deployed\n\n| step | repository | ref | commit |\n|---|---|---|---|\n");
        for d in &report.deployed {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | `{}` |",
                d.step,
                d.repo,
                d.reference,
                d.commit.as_deref().unwrap_or("—")
            );
        }
    }
    if !report.restored.is_empty() {
        out.push_str("\n## Restored\n\n| step | store | key | sha256 | size | age |\n|---|---|---|---|---|---|\n");
        for r in &report.restored {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | `{}` | {} | {} |",
                r.step,
                r.store,
                r.key.as_deref().unwrap_or("—"),
                r.sha256.as_deref().unwrap_or("—"),
                r.size.as_deref().unwrap_or("—"),
                r.age_seconds.map(duration).unwrap_or_else(|| "—".into())
            );
        }
    }
    if !report.approvals.is_empty() {
        out.push_str("\n## Approvals\n\n");
        for a in &report.approvals {
            let _ = writeln!(
                out,
                "- `{}` approved by {} on {} at {}",
                a.step,
                a.by,
                a.host,
                time(Some(a.at))
            );
        }
    }
    if !report.chaos_events.is_empty() {
        out.push_str("\n## Chaos events\n\n");
        for c in &report.chaos_events {
            let _ = writeln!(out, "- {} `{}`: {}", time(Some(c.at)), c.step, c.event);
        }
    }
    let failed: Vec<_> = status
        .steps
        .iter()
        .filter(|s| s.error.is_some() && s.state == crate::journal::reader::StepState::Failed)
        .collect();
    if !failed.is_empty() {
        out.push_str("\n## Failures\n");
        for step in failed {
            let _ = writeln!(
                out,
                "\n### `{}`\n\n{}\n",
                step.id,
                step.error.as_deref().unwrap_or("")
            );
            if let Some(tail) = report.log_tails.get(&step.id) {
                let fence = fence_for(tail);
                let _ = writeln!(out, "{fence}\n{tail}\n{fence}");
            }
        }
    }
    out
}

/// A code fence longer than any run of backticks in `text`: a step that
/// printed three would otherwise end the block early.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::fence_for;

    #[test]
    fn a_fence_outlasts_the_backticks_it_holds() {
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("a ``` b `` c"), "````");
        assert_eq!(fence_for("``````"), "```````");
    }
}
