//! Scheduler tests on small graphs, in virtual time: order, limits, pools,
//! timeouts, retries with backoff, keep-going and fail-fast.
//!
//! Steps that must take time are `wait` steps on a path that never appears:
//! they fail after their `until`, which under paused time costs no wall time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::scheduler::{execute, Start};
use super::secrets::Masker;
use super::{Approvals, Event, EventSink, RunInfo, Shared};
use crate::journal::record::RunResult;
use crate::journal::{JournalWriter, StateStore};
use crate::plan::load::load_source;
use crate::plan::source::SourceFile;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(Instant, Event)>>,
}

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.events.lock().unwrap().push((Instant::now(), event));
    }
}

impl Recorder {
    /// `(start, end)` of every attempt, by step id, in start order.
    fn spans(&self) -> Vec<(String, Instant, Instant)> {
        let events = self.events.lock().unwrap();
        let mut spans: Vec<(String, Instant, Option<Instant>)> = Vec::new();
        for (at, event) in events.iter() {
            match event {
                Event::StepStarted { step, .. } => spans.push((step.clone(), *at, None)),
                // The slot is given back when the action ends, before the finish
                // record is durable: the action's own duration is the span.
                Event::StepFinished { step, duration, .. } => {
                    if let Some(span) = spans
                        .iter_mut()
                        .rev()
                        .find(|s| &s.0 == step && s.2.is_none())
                    {
                        span.2 = Some(span.1 + *duration);
                    }
                }
                _ => {}
            }
        }
        spans
            .into_iter()
            .map(|(s, a, b)| (s, a, b.unwrap_or(a)))
            .collect()
    }

    fn started(&self) -> Vec<String> {
        self.spans().into_iter().map(|s| s.0).collect()
    }

    /// The most attempts in flight at once among `steps` (all when empty).
    fn max_overlap(&self, steps: &[&str]) -> usize {
        let spans: Vec<_> = self
            .spans()
            .into_iter()
            .filter(|s| steps.is_empty() || steps.contains(&s.0.as_str()))
            .collect();
        spans
            .iter()
            .map(|(_, start, _)| {
                spans
                    .iter()
                    .filter(|(_, a, b)| a <= start && start < b)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

const HEADER: &str = "version = 1\n[plan]\nname = \"t\"\nrto = \"1h\"\nrpo = \"1h\"\n";

/// A step that fails after `secs` virtual seconds.
fn slow(id: &str, secs: u32, extra: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"provision\"\naction = \"wait\"\npath = \"/nonexistent/phoenix-test\"\nuntil = \"{secs}s\"\n{extra}\n")
}

fn noop(id: &str, extra: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"provision\"\naction = \"noop\"\n{extra}\n")
}

struct Harness {
    recorder: Arc<Recorder>,
    result: RunResult,
    _dir: tempfile::TempDir,
}

async fn run(plan_text: String, concurrency: usize, keep_going: bool) -> Harness {
    run_on(plan_text, concurrency, keep_going, None).await
}

/// A journal whose every sync fails, as on a full disk.
struct FullDisk;

impl crate::journal::JournalBackend for FullDisk {
    fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }

    fn sync(&mut self) -> crate::journal::SyncJob {
        Box::new(|| Err(std::io::Error::from_raw_os_error(28)))
    }
}

/// [`run`], with the journal's backend given (else the state's own file).
async fn run_on(
    plan_text: String,
    concurrency: usize,
    keep_going: bool,
    backend: Option<Box<dyn crate::journal::JournalBackend>>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_source(
        SourceFile::new("t.toml", plan_text),
        dir.path().to_path_buf(),
        Vec::new(),
    );
    let diagnostics: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.render(false, false))
        .collect();
    let plan = Arc::new(
        loaded
            .plan
            .unwrap_or_else(|| panic!("invalid test plan: {diagnostics:?}")),
    );
    let state =
        crate::journal::local::LocalState::new(dir.path().join("state").to_str().unwrap()).unwrap();
    state.create_run("r", &plan.source.text).unwrap();
    let masker = Arc::new(Masker::default());
    let backend = backend.unwrap_or_else(|| state.journal("r").unwrap());
    let (writer, thread) = JournalWriter::start(backend, Arc::clone(&masker), None);
    let recorder = Arc::new(Recorder::default());
    let run_dir = state.run_dir("r");
    let info = RunInfo {
        id: "r".into(),
        dir: run_dir.join("work"),
        drill: false,
        logs: run_dir.join("logs"),
        tmp: run_dir.join("tmp"),
    };
    let shared = Arc::new(Shared::new(
        Arc::clone(&plan),
        info,
        writer,
        Arc::clone(&recorder) as Arc<dyn EventSink>,
        masker,
        None,
        Approvals::default(),
        keep_going,
        concurrency,
    ));
    let starts = vec![Start::Pending { first_attempt: 1 }; plan.steps.len()];
    let result = execute(Arc::clone(&shared), starts).await;
    drop(shared);
    thread.join();
    Harness {
        recorder,
        result,
        _dir: dir,
    }
}

#[tokio::test(start_paused = true)]
async fn dependencies_order_the_steps() {
    let plan = format!(
        "{HEADER}{}{}{}{}",
        noop("d", "needs = [\"b\", \"c\"]"),
        noop("b", "needs = [\"a\"]"),
        noop("c", "needs = [\"a\"]"),
        noop("a", "")
    );
    let h = run(plan, 8, false).await;
    assert_eq!(h.result, RunResult::Succeeded);
    let order = h.recorder.started();
    assert_eq!(order.first().map(String::as_str), Some("a"));
    assert_eq!(order.last().map(String::as_str), Some("d"));
    assert_eq!(order.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_global_limit_holds() {
    let plan = format!(
        "{HEADER}{}",
        (0..6)
            .map(|i| slow(&format!("s{i}"), 1, ""))
            .collect::<String>()
    );
    let h = run(plan, 2, true).await;
    assert_eq!(h.result, RunResult::Failed);
    assert_eq!(h.recorder.max_overlap(&[]), 2);
    assert_eq!(h.recorder.started().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn pools_limit_their_steps_only() {
    let plan = format!(
        "{HEADER}\n[pools]\napi = 1\n{}{}",
        (0..3)
            .map(|i| slow(&format!("p{i}"), 1, "pool = \"api\""))
            .collect::<String>(),
        (0..3)
            .map(|i| slow(&format!("f{i}"), 1, ""))
            .collect::<String>()
    );
    let h = run(plan, 8, true).await;
    assert_eq!(h.recorder.max_overlap(&["p0", "p1", "p2"]), 1);
    assert!(h.recorder.max_overlap(&["f0", "f1", "f2"]) >= 2);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_the_attempt() {
    let plan = format!("{HEADER}{}", slow("hang", 3600, "timeout = \"5m\""));
    let started = Instant::now();
    let h = run(plan, 8, false).await;
    assert_eq!(h.result, RunResult::Failed);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(300) && elapsed < Duration::from_secs(310),
        "{elapsed:?}"
    );
    let events = h.recorder.events.lock().unwrap();
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, Event::StepFinished { error: Some(error), .. } if error == "timed out after 5m")));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially() {
    let plan = format!(
        "{HEADER}{}",
        slow(
            "flaky",
            1,
            "retries = 3\nbackoff = \"10s\"\ntimeout = \"1m\""
        )
    );
    let h = run(plan, 8, false).await;
    let spans = h.recorder.spans();
    assert_eq!(spans.len(), 4, "one attempt and three retries");
    // Delays of 10s, 20s, 40s, each jittered by at most 25%.
    for (n, pair) in spans.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].2;
        let base = 10.0 * 2f64.powi(n as i32);
        assert!(
            gap.as_secs_f64() >= base * 0.75 && gap.as_secs_f64() <= base * 1.25 + 0.5,
            "retry {n}: {gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_stops_new_steps_but_lets_running_ones_finish() {
    let plan = format!(
        "{HEADER}{}{}{}",
        slow("fails", 1, ""),
        slow("long", 5, ""),
        noop("after", "needs = [\"fails\"]")
    );
    let h = run(plan, 8, false).await;
    assert_eq!(h.result, RunResult::Failed);
    let started = h.recorder.started();
    assert!(started.contains(&"long".to_string()));
    assert!(!started.contains(&"after".to_string()));
    // `long` ran to its end even though `fails` failed first.
    let long = h
        .recorder
        .spans()
        .into_iter()
        .find(|s| s.0 == "long")
        .unwrap();
    assert!(long.2 - long.1 >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn keep_going_runs_independent_branches_and_skips_downstream() {
    let plan = format!(
        "{HEADER}{}{}{}{}",
        slow("fails", 1, ""),
        noop("downstream", "needs = [\"fails\"]"),
        noop("other", ""),
        noop("other_after", "needs = [\"other\"]")
    );
    let h = run(plan, 1, true).await;
    assert_eq!(h.result, RunResult::Failed);
    let started = h.recorder.started();
    assert!(started.contains(&"other_after".to_string()));
    assert!(!started.contains(&"downstream".to_string()));
    let events = h.recorder.events.lock().unwrap();
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, Event::StepSkipped { step, .. } if step == "downstream")));
}

#[tokio::test(start_paused = true)]
async fn ready_steps_on_the_critical_path_start_first() {
    // With one slot, `long_chain` (estimate 1h) must start before `short`.
    let plan = format!(
        "{HEADER}{}{}{}",
        noop("short", "estimate = \"1s\""),
        noop("long_chain", "estimate = \"1h\""),
        noop("tail", "needs = [\"long_chain\"]\nestimate = \"1h\"")
    );
    let h = run(plan, 1, false).await;
    assert_eq!(h.recorder.started()[0], "long_chain");
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_finish_cannot_be_recorded_says_so() {
    let plan = format!("{HEADER}{}{}", noop("a", ""), noop("b", "needs = [\"a\"]"));
    let h = run_on(plan, 2, false, Some(Box::new(FullDisk))).await;
    assert_eq!(h.result, RunResult::Failed);
    let warnings: Vec<String> = h
        .recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, event)| match event {
            Event::Warning(text) => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("step `a` succeeded, but its finish could not be recorded (")
            && warnings[0].ends_with("): a resume finds it in doubt"),
        "{warnings:?}"
    );
    assert_eq!(h.recorder.started(), ["a"], "nothing starts after it");
}

#[tokio::test(start_paused = true)]
async fn a_wait_gives_up_as_its_time_runs_out() {
    // Polled at 100 ms, then half as long again each time: the tries before
    // 5 s fall at 4.9 s and then 6.9 s, which the wait used to reach.
    let h = run(format!("{HEADER}{}", slow("w", 5, "")), 1, false).await;
    let (_, start, end) = h.recorder.spans().remove(0);
    assert!(
        end - start >= Duration::from_secs(5) && end - start < Duration::from_millis(5100),
        "{:?}",
        end - start
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_once_a_step_has_failed() {
    // One slot: `fails` (on the longer chain) runs first. Its failure is
    // recorded before the walker hears of it; the slot must not be free in
    // between, or `other` would start after the failure.
    let plan = format!(
        "{HEADER}{}{}",
        slow("fails", 1, "estimate = \"1h\""),
        noop("other", "")
    );
    let h = run(plan, 1, false).await;
    assert_eq!(h.result, RunResult::Failed);
    assert_eq!(h.recorder.started(), ["fails"]);
}
