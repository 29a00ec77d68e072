//! `phoenix graph` and `phoenix plan`: outputs that need no execution.

use crate::common::{repo_root, shell_step, Phoenix, Workspace};

#[test]
fn graph_dot_groups_steps_by_phase() {
    let run = Phoenix::new(&repo_root())
        .args(["graph", "plans/shop.toml"])
        .run()
        .expect_code(0);
    let dot = run.stdout();
    assert!(dot.starts_with("digraph \"shop\" {"));
    assert!(dot.contains("subgraph \"cluster_provision\""));
    assert!(dot.contains("subgraph \"cluster_teardown\""));
    assert!(dot.contains("\"network\" -> \"db_host\";"));
}

#[test]
fn graph_mermaid() {
    let run = Phoenix::new(&repo_root())
        .args(["graph", "plans/shop.toml", "--format", "mermaid"])
        .run()
        .expect_code(0);
    let text = run.stdout();
    assert!(text.starts_with("flowchart LR\n"));
    assert!(
        text.contains("  subgraph phase_restore [restore]\n"),
        "{text}"
    );
    assert!(
        text.contains("  step_db_restore --> step_health\n"),
        "{text}"
    );
}

#[test]
fn mermaid_ids_never_meet_its_keywords_or_the_phases() {
    // `end` closes a subgraph in Mermaid, and a node called as its subgraph
    // is its own parent: both made the diagram fail to render.
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("restore", "restore", "true", ""),
        shell_step("end", "restore", "true", "needs = [\"restore\"]"),
    ]);
    let run = ws.expect(["graph", "plan.toml", "--format", "mermaid"], 0);
    let text = run.stdout();
    assert_eq!(
        text,
        "flowchart LR\n  subgraph phase_restore [restore]\n    step_restore[\"restore<br/>command\"]\n    step_end[\"end<br/>command\"]\n  end\n  step_restore --> step_end\n",
    );
}

#[test]
fn plan_shows_waves_critical_path_and_rto() {
    let run = Phoenix::new(&repo_root())
        .args(["plan", "plans/shop.toml"])
        .run()
        .expect_code(0);
    let text = run.stdout();
    assert!(
        text.contains("wave   1: network (provision), config (configure)"),
        "{text}"
    );
    assert!(text.contains("critical path (from estimates): network (3m) -> db_host (8m) -> db_up (1m) -> db_config (5s) -> db_restore (20m) -> health (1m)"), "{text}");
    assert!(
        text.contains("predicted RTO: 33m 5s against target 45m: within target"),
        "{text}"
    );
    assert!(
        text.contains("steps have no estimate and count as 0s: switch_dns, done"),
        "{text}"
    );
    assert!(
        !text.contains("destroy"),
        "teardown is not part of a recovery: {text}"
    );
}

#[test]
fn a_plan_of_short_steps_predicts_tenths_of_a_second() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("a", "provision", "true", "estimate = \"300ms\""),
        shell_step(
            "b",
            "provision",
            "true",
            "needs = [\"a\"]\nestimate = \"1200ms\"",
        ),
        shell_step("c", "provision", "true", "needs = [\"b\"]"),
    ]);
    let run = ws.expect(["plan", "plan.toml"], 0);
    assert!(
        run.stdout()
            .contains("plan `t`: 3 steps in 3 waves (recovery run)"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout()
            .contains("1 step has no estimate and counts as 0s: c"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout()
            .contains("predicted RTO: 1.5s against target 10m: within target"),
        "{}",
        run.stdout()
    );
}

#[test]
fn plan_json_for_a_drill_includes_teardown_last() {
    let run = Phoenix::new(&repo_root())
        .args(["plan", "plans/shop.toml", "--drill", "--format", "json"])
        .run()
        .expect_code(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let waves = json["waves"].as_array().unwrap();
    assert_eq!(waves.last().unwrap(), &serde_json::json!(["destroy"]));
    assert_eq!(json["predicted_rto_seconds"], 1985.0);
    assert_eq!(json["rto_met"], true);
    assert_eq!(json["duration_source"], "estimate");
    // `switch_dns` is recovery-only.
    assert!(!run.stdout().contains("switch_dns"));
}

#[test]
fn plan_refuses_an_invalid_plan() {
    let run = Phoenix::new(&repo_root())
        .args(["plan", "tests/fixtures/invalid/needs-cycle.toml"])
        .run()
        .expect_code(1);
    assert!(
        run.stderr().contains("dependency cycle: a -> c -> b -> a"),
        "{}",
        run.stderr()
    );
}
