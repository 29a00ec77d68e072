//! The crash test: `phoenix` killed with SIGKILL at random moments and resumed
//! each time, until the run is done. Every step's effect must be in the ledger,
//! repeated only for steps that were running at a kill, and the journal must be
//! readable after every kill.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{Workspace, HEADER};

const LAYERS: usize = 10;
const WIDTH: usize = 10;
const KILLS: usize = 20;

fn plan() -> String {
    let mut plan = HEADER.replace("rto = \"10m\"", "rto = \"10m\"\nconcurrency = 4");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for layer in 0..LAYERS {
        for i in 0..WIDTH {
            let needs: BTreeSet<String> = if layer == 0 {
                BTreeSet::new()
            } else {
                (0..rng.random_range(1..=2))
                    .map(|_| format!("\"s{}_{}\"", layer - 1, rng.random_range(0..WIDTH)))
                    .collect()
            };
            plan.push_str(&format!(
                "\n[[step]]\nid = \"s{layer}_{i}\"\nphase = \"provision\"\naction = \"command\"\nshell = \"echo s{layer}_{i} >> ledger; sleep 0.1\"\ntimeout = \"1m\"\nneeds = [{}]\n",
                needs.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    plan
}

fn ledger(ws: &Workspace) -> Vec<String> {
    std::fs::read_to_string(ws.path().join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every line of the journal parses, except perhaps a torn last one.
fn assert_readable(ws: &Workspace, kill: usize) {
    let journal = ws.journal();
    let lines: Vec<&str> = journal.split_inclusive('\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let ok = line.ends_with('\n') && serde_json::from_str::<serde_json::Value>(line).is_ok();
        assert!(
            ok || n + 1 == lines.len(),
            "after kill {kill}: journal line {} is damaged: {line:?}",
            n + 1
        );
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_converges() {
    let ws = Workspace::new();
    ws.write("plan.toml", &plan());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // Steps that were running at the last kill: the only ones the next life may
    // run a second time.
    let mut at_risk: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut read = 0;
    let mut repeated = BTreeSet::new();
    let mut check_life = |ws: &Workspace, at_risk: &BTreeSet<String>, life: usize| {
        let lines = ledger(ws);
        for id in &lines[read..] {
            if !seen.insert(id.clone()) {
                assert!(
                    at_risk.contains(id),
                    "life {life}: step {id} ran again but was not running at the kill before"
                );
                repeated.insert(id.clone());
            }
        }
        read = lines.len();
    };
    let mut kills = 0;
    let mut first = true;
    while kills < KILLS {
        let args: Vec<&str> = if first {
            vec!["run", "plan.toml", "--run-id", "crash"]
        } else {
            vec!["resume", "crash"]
        };
        let mut child = ws.phoenix().args(&args).spawn();
        first = false;
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) after only {kills} kills; make the steps slower");
        }
        crate::common::signal(child.id(), "KILL");
        let _ = child.wait();
        kills += 1;
        // Orphaned steps may still be appending: let them.
        std::thread::sleep(Duration::from_millis(250));
        assert_readable(&ws, kills);
        let status = ws.status();
        let done: BTreeSet<String> = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "succeeded")
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        check_life(&ws, &at_risk, kills);
        // A step whose effect is in the ledger but whose finish is not durable
        // was running at this kill: it may run again.
        at_risk = ledger(&ws)
            .into_iter()
            .filter(|id| !done.contains(id))
            .collect();
    }
    let mut finished = false;
    for _ in 0..3 {
        let run = ws.phoenix().args(["resume", "crash"]).run();
        if run.code() == 0 {
            finished = true;
            break;
        }
    }
    assert!(finished, "the run did not finish after the kills");
    check_life(&ws, &at_risk, kills + 1);
    let status = ws.status();
    assert_eq!(status["state"], "succeeded");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in ledger(&ws) {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        LAYERS * WIDTH,
        "every step's effect is in the ledger"
    );
    eprintln!(
        "{kills} kills, {} steps repeated: {repeated:?}",
        repeated.len()
    );
}
