//! `phoenix report --format html`: one self-contained file (no network): a
//! summary, a Gantt timeline drawn as SVG (a bar per step, coloured by phase,
//! the critical path outlined, the RTO target as a line), the trend of earlier
//! runs of the same plan, and the step table.

use std::fmt::Write as _;

use super::history::HistoryEntry;
use super::markdown::duration;
use super::model::{Report, Target};

const PHASE_COLORS: [(&str, &str); 4] = [
    ("provision", "#3b82f6"),
    ("configure", "#10b981"),
    ("restore", "#f59e0b"),
    ("teardown", "#9ca3af"),
];

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(phase: &str) -> &'static str {
    PHASE_COLORS
        .iter()
        .find(|(p, _)| *p == phase)
        .map(|(_, c)| *c)
        .unwrap_or("#6b7280")
}

fn objective(name: &str, target: &Target) -> String {
    let (class, verdict) = match (target.met, target.target_seconds) {
        (Some(true), _) => ("met", "met"),
        (Some(false), _) => ("missed", "missed"),
        (None, Some(_)) => ("none", "not measured"),
        (None, None) => ("none", "no target"),
    };
    format!(
        "<div class=\"card {class}\"><div class=\"label\">{name}</div><div class=\"value\">{}</div><div class=\"sub\">target {} · {verdict}</div></div>",
        target.actual_seconds.map(duration).unwrap_or_else(|| "—".into()),
        target.target_seconds.map(duration).unwrap_or_else(|| "—".into()),
    )
}

/// The Gantt chart: one row a step, time from the run's first start.
fn gantt(report: &Report) -> String {
    let steps: Vec<_> = report
        .status
        .steps
        .iter()
        .filter(|s| s.started_at.is_some())
        .collect();
    let Some(origin) = steps.iter().filter_map(|s| s.started_at).min() else {
        return "<p>No step has run yet.</p>".into();
    };
    let end = steps
        .iter()
        .filter_map(|s| s.finished_at.or(s.started_at))
        .max()
        .map(|e| (e - origin).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    let target = report.rto.target_seconds.unwrap_or(0.0);
    let scale_end = end.max(target).max(0.001) * 1.05;
    let (label_width, chart_width, row) = (180.0, 700.0, 22.0);
    let height = steps.len() as f64 * row + 40.0;
    let x = |seconds: f64| label_width + seconds / scale_end * chart_width;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"gantt\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\" role=\"img\" aria-label=\"timeline\">",
        label_width + chart_width + 40.0,
        label_width + chart_width + 40.0
    );
    for tick in 0..=5 {
        let seconds = scale_end / 5.0 * tick as f64;
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"0\" x2=\"{0:.1}\" y2=\"{1:.1}\" class=\"grid\"/><text x=\"{0:.1}\" y=\"{2:.1}\" class=\"tick\">{3}</text>",
            x(seconds),
            height - 25.0,
            height - 10.0,
            escape(&duration(seconds))
        );
    }
    for (n, step) in steps.iter().enumerate() {
        let y = n as f64 * row + 4.0;
        let start = (step.started_at.unwrap_or(origin) - origin).num_milliseconds() as f64 / 1000.0;
        let finish = step
            .finished_at
            .map(|f| (f - origin).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(end);
        let width = (x(finish) - x(start)).max(2.0);
        let critical = report.critical_path.contains(&step.id);
        let state = serde_json::to_value(step.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"name\">{}</text><rect class=\"bar{}\" data-step=\"{}\" data-phase=\"{}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} ({}, {state}): {}</title></rect>",
            label_width - 8.0,
            y + row * 0.62,
            escape(&step.id),
            if critical { " critical" } else { "" },
            escape(&step.id),
            escape(step.phase),
            x(start),
            row - 6.0,
            color(step.phase),
            escape(&step.id),
            escape(step.phase),
            duration(finish - start),
        );
    }
    if let Some(target) = report.rto.target_seconds {
        let _ = write!(
            svg,
            "<line class=\"rto-target\" x1=\"{0:.1}\" y1=\"0\" x2=\"{0:.1}\" y2=\"{1:.1}\"/><text class=\"rto-label\" x=\"{2:.1}\" y=\"12\">RTO target {3}</text>",
            x(target),
            height - 25.0,
            x(target) - 4.0,
            escape(&duration(target))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Earlier runs of the same plan: RTO per run against the target.
fn trend(history: &[HistoryEntry], target: Option<f64>) -> String {
    let runs: Vec<_> = history.iter().filter(|h| h.rto_seconds.is_some()).collect();
    if runs.len() < 2 {
        return "<p>The trend appears once the plan has run more than once.</p>".into();
    }
    let max = runs
        .iter()
        .filter_map(|h| h.rto_seconds)
        .fold(target.unwrap_or(0.0), f64::max)
        .max(0.001)
        * 1.1;
    let (width, height, gap) = (720.0, 160.0, 6.0);
    let bar = (width / runs.len() as f64 - gap).clamp(4.0, 60.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"trend\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"trend\">", height + 20.0);
    for (n, run) in runs.iter().enumerate() {
        let value = run.rto_seconds.unwrap_or(0.0);
        let h = value / max * height;
        let fill = match run.rto_met {
            Some(false) => "#ef4444",
            Some(true) => "#22c55e",
            None => "#94a3b8",
        };
        let _ = write!(
            svg,
            "<rect class=\"run\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{} {} {}: {}</title></rect>",
            n as f64 * (bar + gap),
            height - h,
            escape(&run.run_id),
            if run.drill { "drill" } else { "recovery" },
            escape(&run.result),
            duration(value)
        );
    }
    if let Some(target) = target {
        let y = height - target / max * height;
        let _ = write!(
            svg,
            "<line class=\"rto-target\" x1=\"0\" y1=\"{y:.1}\" x2=\"{width}\" y2=\"{y:.1}\"/>"
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" class=\"tick\">oldest → newest ({})</text></svg>",
        height + 16.0,
        crate::counted(runs.len(), "run")
    );
    svg
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:980px;color:#111827;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.meta{color:#4b5563}
.cards{display:flex;gap:12px;margin:16px 0}.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.card .label{font-size:12px;color:#6b7280;text-transform:uppercase;letter-spacing:.04em}.card .value{font-size:22px;font-weight:600}
.card .sub{font-size:12px;color:#6b7280}.card.met{border-color:#22c55e}.card.missed{border-color:#ef4444;background:#fef2f2}
.result{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600}.result.succeeded{background:#dcfce7;color:#166534}
.result.failed,.result.interrupted{background:#fee2e2;color:#991b1b}.result.paused,.result.running{background:#fef3c7;color:#92400e}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb}code{font:12px ui-monospace,Menlo,monospace}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
svg .name{font-size:11px;text-anchor:end;fill:#374151}svg .tick{font-size:10px;fill:#6b7280}svg .grid{stroke:#f3f4f6}
svg .bar{rx:3}svg .bar.critical{stroke:#111827;stroke-width:2}svg .rto-target{stroke:#dc2626;stroke-width:2;stroke-dasharray:6 4}
svg .rto-label{font-size:11px;fill:#dc2626;text-anchor:end}pre{background:#f9fafb;padding:8px;overflow:auto;font-size:12px}";

pub fn render(report: &Report, history: &[HistoryEntry]) -> String {
    let status = &report.status;
    let kind = status.kind();
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"/><title>Phoenix report: {plan} {run}</title><style>{STYLE}</style></head><body>
<h1>Phoenix report: plan <code>{plan}</code> ({kind})</h1>
<p class=\"meta\">Run <code>{run}</code> · <span class=\"result {result}\">{result}</span> · started {started}{finished}{resumes}</p>
<div class=\"cards\">{rto}{rpo}<div class=\"card\"><div class=\"label\">steps</div><div class=\"value\">{steps}</div><div class=\"sub\">{failed} failed</div></div></div>",
        plan = escape(&status.plan),
        run = escape(&status.run_id),
        result = escape(&report.result),
        started = status.started_at.format("%Y-%m-%d %H:%M:%SZ"),
        finished = status.finished_at.map(|f| format!(", finished {}", f.format("%Y-%m-%d %H:%M:%SZ"))).unwrap_or_default(),
        resumes = status.resumed().map(|r| format!(" · {r}")).unwrap_or_default(),
        rto = objective("RTO", &report.rto),
        rpo = objective("RPO", &report.rpo),
        steps = status.steps.len(),
        failed = status.steps.iter().filter(|s| s.state == crate::journal::reader::StepState::Failed).count(),
    );
    html.push_str("<h2>Timeline</h2><p class=\"legend\">");
    for (phase, c) in PHASE_COLORS {
        let _ = write!(html, "<span><i style=\"background:{c}\"></i>{phase}</span>");
    }
    html.push_str("<span><i style=\"background:#fff;border:2px solid #111827\"></i>critical path</span><span><i style=\"background:#dc2626\"></i>RTO target</span></p>");
    html.push_str(&gantt(report));
    html.push_str("<h2>Trend of this plan's runs</h2>");
    html.push_str(&trend(history, report.rto.target_seconds));
    if let Some(previous) = &report.previous {
        let _ = write!(
            html,
            "<h2>Against the previous {kind}</h2><p>{}</p>",
            super::compare::summary(report, previous, |id| format!(
                "<code>{}</code>",
                escape(id)
            ))
        );
        if previous.steps.is_empty() {
            html.push_str("<p>No step's duration changed by 1s and 10% or more.</p>");
        } else {
            html.push_str("<table><tr><th>step</th><th>then</th><th>now</th><th>change</th></tr>");
            for step in &previous.steps {
                let _ = write!(
                    html,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&step.id),
                    duration(step.before_seconds),
                    duration(step.now_seconds),
                    escape(&super::compare::change(
                        step.before_seconds,
                        step.now_seconds
                    ))
                );
            }
            html.push_str("</table>");
        }
    }
    html.push_str("<h2>Steps</h2><table><tr><th>step</th><th>phase</th><th>state</th><th>attempts</th><th>duration</th><th>outputs</th></tr>");
    for step in &status.steps {
        let state = escape(&step.state_with_note());
        let outputs: Vec<String> = step
            .outputs
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
            .collect();
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&step.id),
            escape(step.phase),
            step.attempts,
            step.duration_seconds.map(duration).unwrap_or_else(|| "—".into()),
            outputs.join(" ")
        );
    }
    html.push_str("</table>");
    if !report.deployed.is_empty() || !report.restored.is_empty() {
        html.push_str("<h2>Deployed and restored</h2><table><tr><th>step</th><th>what</th><th>identity</th></tr>");
        for d in &report.deployed {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{} at {}</td><td><code>{}</code></td></tr>",
                escape(&d.step),
                escape(&d.repo),
                escape(&d.reference),
                escape(d.commit.as_deref().unwrap_or("—"))
            );
        }
        for r in &report.restored {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{} from store {}{}</td><td><code>sha256 {}</code></td></tr>",
                escape(&r.step),
                escape(r.key.as_deref().unwrap_or("—")),
                escape(&r.store),
                r.age_seconds.map(|a| format!(", {} old", duration(a))).unwrap_or_default(),
                escape(r.sha256.as_deref().unwrap_or("—"))
            );
        }
        html.push_str("</table>");
    }
    if !report.approvals.is_empty() || !report.chaos_events.is_empty() {
        html.push_str("<h2>Approvals and chaos</h2><ul>");
        for a in &report.approvals {
            let _ = write!(
                html,
                "<li><code>{}</code> approved by {} on {} at {}</li>",
                escape(&a.step),
                escape(&a.by),
                escape(&a.host),
                a.at.format("%H:%M:%SZ")
            );
        }
        for c in &report.chaos_events {
            let _ = write!(
                html,
                "<li>chaos at {}: <code>{}</code> {}</li>",
                c.at.format("%H:%M:%S%.3fZ"),
                escape(&c.step),
                escape(&c.event)
            );
        }
        html.push_str("</ul>");
    }
    for (step, tail) in &report.log_tails {
        let _ = write!(
            html,
            "<h2>Output of failed step <code>{}</code></h2><pre>{}</pre>",
            escape(step),
            escape(tail)
        );
    }
    html.push_str("</body></html>\n");
    html
}
