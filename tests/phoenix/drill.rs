//! Drills: teardown, chaos, approval gates, reports and history.

use std::collections::BTreeSet;

use crate::common::{shell_step, state_of, Workspace};

const DRILL_HEADER: &str = "version = 1\n[plan]\nname = \"drill\"\nrto = \"1m\"\nrpo = \"1h\"\n";

fn drill_plan(middle: &str, teardown: &str) -> String {
    format!(
        "{DRILL_HEADER}{}{}{}{}",
        shell_step(
            "up",
            "provision",
            "echo up >> ledger; echo addr=10.0.0.1 >> \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step("middle", "configure", middle, "needs = [\"up\"]"),
        shell_step(
            "only_drill",
            "restore",
            "echo only_drill >> ledger",
            "needs = [\"middle\"]\nwhen = \"drill\""
        ),
        shell_step("down", "teardown", teardown, "needs = [\"up\"]"),
    )
}

fn ledger(ws: &Workspace) -> Vec<String> {
    std::fs::read_to_string(ws.path().join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn teardown_runs_last_after_success_and_only_in_drills() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &drill_plan("echo middle >> ledger", "echo down >> ledger"),
    );
    ws.expect(["run", "plan.toml"], 0);
    assert_eq!(
        ledger(&ws),
        ["up", "middle"],
        "a recovery has no drill steps and no teardown"
    );
    std::fs::remove_file(ws.path().join("ledger")).unwrap();
    ws.phoenix()
        .args(["run", "plan.toml", "--drill"])
        .run()
        .expect_code(0);
    assert_eq!(ledger(&ws), ["up", "middle", "only_drill", "down"]);
    let status = ws.status();
    assert_eq!(status["drill"], true);
}

#[test]
fn teardown_runs_after_a_failure_and_a_failing_teardown_fails_the_drill() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &drill_plan("echo middle >> ledger; exit 1", "echo down >> ledger"),
    );
    ws.phoenix()
        .args(["run", "plan.toml", "--drill"])
        .run()
        .expect_code(1);
    assert_eq!(ledger(&ws), ["up", "middle", "down"]);
    assert_eq!(state_of(&ws.status(), "down"), "succeeded");

    let ws = Workspace::new();
    ws.write("plan.toml", &drill_plan("true", "exit 3"));
    ws.phoenix()
        .args(["run", "plan.toml", "--drill"])
        .run()
        .expect_code(1);
    let status = ws.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(state_of(&status, "down"), "failed");
}

#[test]
fn teardown_of_a_step_that_never_succeeded_is_skipped_and_the_rest_tears_down() {
    let ws = Workspace::new();
    let plan = |vm_exit: u8| {
        format!(
            "{DRILL_HEADER}{}{}{}{}{}",
            shell_step(
                "vm",
                "provision",
                &format!("echo id=vm-1 >> \"$PHOENIX_OUTPUT\"; exit {vm_exit}"),
                ""
            ),
            shell_step(
                "net",
                "provision",
                "echo id=net-1 >> \"$PHOENIX_OUTPUT\"",
                ""
            ),
            shell_step(
                "destroy_vm",
                "teardown",
                "echo destroy {{ steps.vm.outputs.id }} >> ledger",
                "needs = [\"vm\"]"
            ),
            // Needs no outputs: runs whatever became of `vm`.
            shell_step(
                "sweep",
                "teardown",
                "echo sweep >> ledger",
                "needs = [\"vm\"]"
            ),
            shell_step(
                "destroy_net",
                "teardown",
                "echo destroy {{ steps.net.outputs.id }} >> ledger",
                "needs = [\"net\", \"destroy_vm\"]"
            ),
        )
    };
    ws.write("plan.toml", &plan(1));
    let run = ws.expect(["run", "plan.toml", "--drill", "--run-id", "d"], 1);
    assert!(
        run.stderr()
            .contains("skip destroy_vm: it reads the outputs of `vm`, which did not succeed"),
        "{}",
        run.stderr()
    );
    let torn_down: BTreeSet<String> = ledger(&ws).into_iter().collect();
    assert_eq!(
        torn_down,
        BTreeSet::from(["sweep".to_string(), "destroy net-1".to_string()])
    );
    let status = ws.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(state_of(&status, "destroy_vm"), "skipped");
    assert_eq!(state_of(&status, "destroy_net"), "succeeded");

    // Once `vm` succeeds, a resume tears it down too.
    ws.write("plan.toml", &plan(0));
    ws.expect(["resume", "d"], 0);
    assert!(ledger(&ws).contains(&"destroy vm-1".to_string()));
}

#[test]
fn teardown_waits_for_a_crashed_run_to_be_resumed() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &drill_plan(
            "echo middle >> ledger; kill -9 $PPID; sleep 5",
            "echo down >> ledger",
        ),
    );
    // The step kills phoenix itself: a crash in the middle of the drill.
    let run = ws.phoenix().args(["run", "plan.toml", "--drill"]).run();
    assert_ne!(run.code(), 0);
    assert_eq!(
        ledger(&ws),
        ["up", "middle"],
        "no teardown before the run is over"
    );
    std::fs::write(
        ws.path().join("plan.toml"),
        drill_plan("echo middle >> ledger", "echo down >> ledger"),
    )
    .unwrap();
    ws.expect(["resume"], 0);
    assert_eq!(
        ledger(&ws),
        ["up", "middle", "middle", "only_drill", "down"]
    );
}

#[test]
fn chaos_is_refused_without_drill_and_journaled_with_it() {
    let ws = Workspace::new();
    ws.write("plan.toml", &drill_plan("true", "true"));
    let run = ws.expect(["run", "plan.toml", "--chaos", "fail=1"], 2);
    assert!(
        run.stderr().contains("`--chaos` is for drills only"),
        "{}",
        run.stderr()
    );
    ws.phoenix()
        .args(["run", "plan.toml", "--drill", "--chaos", "fail=2"])
        .run()
        .expect_code(2);
    ws.phoenix()
        .args(["run", "plan.toml", "--drill", "--chaos", "fail=1,seed=1"])
        .run()
        .expect_code(1);
    let report: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["report", "--format", "json"])
            .run()
            .expect_code(0)
            .stdout(),
    )
    .unwrap();
    let events = report["chaos_events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events[0]["event"].as_str().unwrap().starts_with("fail"));
}

/// A drill with `kill` chaos, resumed until it ends, converges to the same
/// result as a clean run.
#[test]
fn chaos_kill_drills_converge_to_the_clean_result() {
    let plan = format!(
        "{DRILL_HEADER}{}{}{}{}{}",
        shell_step(
            "a",
            "provision",
            "echo a >> ledger; echo v=1 >> \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step("b", "provision", "echo b >> ledger", ""),
        shell_step(
            "c",
            "configure",
            "echo c{{ steps.a.outputs.v }} >> ledger",
            "needs = [\"a\", \"b\"]"
        ),
        shell_step("d", "restore", "echo d >> ledger", "needs = [\"c\"]"),
        shell_step("z", "teardown", "echo z >> ledger", ""),
    );
    let clean = Workspace::new();
    clean.write("plan.toml", &plan);
    clean.expect(["run", "plan.toml", "--drill"], 0);
    let expected: BTreeSet<String> = ledger(&clean).into_iter().collect();

    let chaotic = Workspace::new();
    chaotic.write("plan.toml", &plan);
    let first = chaotic
        .phoenix()
        .args(["run", "plan.toml", "--drill", "--chaos", "kill=0.5,seed=7"])
        .run();
    let mut crashes = usize::from(first.code() != 0);
    let mut done = first.code() == 0;
    for _ in 0..20 {
        if done {
            break;
        }
        let run = chaotic.phoenix().args(["resume"]).run();
        done = run.code() == 0;
        crashes += usize::from(!done);
    }
    assert!(done, "the drill never finished");
    assert!(crashes > 0, "the seed should crash at least once");
    let got: BTreeSet<String> = ledger(&chaotic).into_iter().collect();
    assert_eq!(got, expected);
    let status = chaotic.status();
    assert_eq!(status["state"], "succeeded");
    let report: serde_json::Value = serde_json::from_str(
        &chaotic
            .phoenix()
            .args(["report", "--format", "json"])
            .run()
            .stdout(),
    )
    .unwrap();
    assert_eq!(report["chaos_events"].as_array().unwrap().len(), crashes);
    assert_eq!(report["resumes"], crashes);
}

#[test]
fn approval_gates_pause_resume_and_yes() {
    let plan = format!(
        "{DRILL_HEADER}{}\n[[step]]\nid = \"gate\"\nphase = \"configure\"\naction = \"approval\"\nprompt = \"Switch DNS?\"\nneeds = [\"up\"]\n{}",
        shell_step("up", "provision", "echo up >> ledger", ""),
        shell_step("after", "restore", "echo after >> ledger", "needs = [\"gate\"]"),
    );
    let ws = Workspace::new();
    ws.write("plan.toml", &plan);
    let paused = ws.expect(["run", "plan.toml"], 3);
    assert!(
        paused.stderr().contains("phoenix resume --approve gate"),
        "{}",
        paused.stderr()
    );
    let status = ws.status();
    assert_eq!(status["state"], "paused");
    assert_eq!(ledger(&ws), ["up"]);
    // Resuming without approval pauses again.
    ws.expect(["resume"], 3);
    // Another step named instead of the gate is a mistake, said at once.
    let wrong = ws.expect(["resume", "--approve", "up"], 2);
    assert!(
        wrong.stderr().contains(
            "`--approve up`: step `up` is not an approval gate (its action is `command`)"
        ),
        "{}",
        wrong.stderr()
    );
    ws.phoenix()
        .args(["resume", "--approve", "gate"])
        .env("USER", "alice")
        .run()
        .expect_code(0);
    assert_eq!(ledger(&ws), ["up", "after"]);
    let report: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["report", "--format", "json"])
            .run()
            .stdout(),
    )
    .unwrap();
    let approval = &report["approvals"][0];
    assert_eq!(approval["step"], "gate");
    assert!(approval["by"].as_str().unwrap().starts_with("alice"));
    assert!(approval["host"].is_string() && approval["at"].is_string());

    let ws = Workspace::new();
    ws.write("plan.toml", &plan);
    ws.phoenix()
        .args(["run", "plan.toml", "--yes"])
        .run()
        .expect_code(0);
    assert_eq!(ledger(&ws), ["up", "after"]);
}

#[test]
fn reports_in_every_format() {
    let ws = Workspace::new();
    let plan = format!(
        "{DRILL_HEADER}{}{}{}",
        shell_step(
            "make",
            "provision",
            "echo id=vpc-1 >> \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step(
            "broken",
            "configure",
            "echo some output; echo the reason >&2; exit 2",
            "needs = [\"make\"]"
        ),
        shell_step("down", "teardown", "true", ""),
    );
    ws.write("plan.toml", &plan);
    ws.phoenix()
        .args(["run", "plan.toml", "--drill", "--run-id", "snap"])
        .run()
        .expect_code(1);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.add_filter(
        r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)?",
        "[TIME]",
    );
    settings.add_filter(r"\b\d+(\.\d+)?s\b", "[DURATION]");
    settings.add_filter(
        r#""(duration_seconds|actual_seconds)": [0-9.e-]+"#,
        "\"$1\": [SECONDS]",
    );
    settings.add_filter(r#"time="[0-9.]+""#, "time=\"[SECONDS]\"");
    settings.add_filter(r#"timestamp="[^"]*""#, "timestamp=\"[TIME]\"");
    settings.bind(|| {
        let md = ws.expect(["report", "snap"], 0).stdout();
        insta::assert_snapshot!("report_md", md);
        let json = ws
            .expect(["report", "snap", "--format", "json"], 0)
            .stdout();
        insta::assert_snapshot!("report_json", json);
        let junit = ws
            .expect(["report", "snap", "--format", "junit"], 0)
            .stdout();
        insta::assert_snapshot!("report_junit", junit);
    });

    // report.json is written at the end of every run.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.run_dir().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(written["result"], "failed");
    assert_eq!(written["run_id"], "snap");
    assert_eq!(written["log_tails"]["broken"], "some output\nthe reason");
}

#[test]
fn junit_reads_back_as_suites_and_cases() {
    let ws = Workspace::new();
    ws.write("plan.toml", &drill_plan("echo bad; exit 1", "true"));
    ws.phoenix()
        .args(["run", "plan.toml", "--drill"])
        .run()
        .expect_code(1);
    ws.phoenix()
        .args(["report", "--format", "junit", "-o", "junit.xml"])
        .run()
        .expect_code(0);
    let xml = ws.read("junit.xml");
    // A file that cannot be written is named, and its cause said once.
    let unwritable = ws.expect(["report", "-o", "missing/report.md"], 2);
    assert!(
        unwritable
            .stderr()
            .contains("cannot write `missing/report.md`")
            && unwritable.stderr().matches("No such file").count() == 1,
        "{}",
        unwritable.stderr()
    );
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut suites, mut cases, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let mut current_case = String::new();
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
                let attr = |key: &str| {
                    e.attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == key.as_bytes())
                        .map(|a| a.unescape_value().unwrap().to_string())
                };
                match name.as_str() {
                    "testsuite" => suites.push(attr("name").unwrap()),
                    "testcase" => {
                        current_case = attr("name").unwrap();
                        cases.push(current_case.clone());
                    }
                    "failure" => {
                        failures.push((current_case.clone(), attr("message").unwrap_or_default()))
                    }
                    _ => {}
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, ["provision", "configure", "restore", "teardown"]);
    assert_eq!(cases, ["up", "middle", "only_drill", "down"]);
    assert_eq!(
        failures,
        [("middle".to_string(), "exited with status 1".to_string())]
    );
}

#[test]
fn html_report_has_a_bar_per_step_and_the_target_line() {
    let ws = Workspace::new();
    ws.write("plan.toml", &drill_plan("sleep 0.2", "true"));
    for _ in 0..2 {
        ws.phoenix()
            .args(["run", "plan.toml", "--drill"])
            .run()
            .expect_code(0);
    }
    ws.phoenix()
        .args(["report", "--format", "html", "-o", "report.html"])
        .run()
        .expect_code(0);
    let html = ws.read("report.html");
    assert!(
        !html.contains("http://")
            || html
                .matches("http://")
                .all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\"")),
        "no external resources"
    );
    assert!(!html.contains("<script") && !html.contains("<link"));
    let mut reader = quick_xml::Reader::from_str(&html);
    let (mut bars, mut critical, mut targets, mut trend_runs) = (Vec::new(), 0, 0, 0);
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let class = e
                    .attributes()
                    .filter_map(Result::ok)
                    .find(|a| a.key.as_ref() == b"class")
                    .map(|a| a.unescape_value().unwrap().to_string())
                    .unwrap_or_default();
                if class.starts_with("bar") {
                    let step = e
                        .attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == b"data-step")
                        .unwrap();
                    bars.push(step.unescape_value().unwrap().to_string());
                    critical += usize::from(class.contains("critical"));
                }
                targets += usize::from(class == "rto-target");
                trend_runs += usize::from(class == "run");
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(bars, ["up", "middle", "only_drill", "down"]);
    assert_eq!(critical, 3, "up -> middle -> only_drill");
    assert_eq!(targets, 2, "on the timeline and on the trend");
    assert_eq!(trend_runs, 2);
}

#[test]
fn rto_and_rpo_match_known_timings() {
    let ws = Workspace::new();
    let plan = format!(
        "version = 1\n[plan]\nname = \"timed\"\nrto = \"1s\"\n{}{}{}",
        shell_step("first", "provision", "sleep 0.6", ""),
        shell_step("second", "configure", "sleep 0.6", "needs = [\"first\"]"),
        shell_step("side", "configure", "sleep 0.1", ""),
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 0);
    let report: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["report", "--format", "json"])
            .run()
            .stdout(),
    )
    .unwrap();
    let rto = report["rto"]["actual_seconds"].as_f64().unwrap();
    assert!((1.2..1.6).contains(&rto), "rto {rto}");
    assert_eq!(report["rto"]["target_seconds"], 1.0);
    assert_eq!(report["rto"]["met"], false);
    assert_eq!(report["rpo"]["target_seconds"], serde_json::Value::Null);
    assert_eq!(report["rpo"]["met"], serde_json::Value::Null);
    assert_eq!(
        report["critical_path"],
        serde_json::json!(["first", "second"])
    );
    assert_eq!(report["phases"][0]["name"], "provision");

    let history: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["history", "--format", "json"])
            .run()
            .stdout(),
    )
    .unwrap();
    let entry = &history[0];
    assert_eq!(entry["plan"], "timed");
    assert_eq!(entry["drill"], false);
    assert_eq!(entry["result"], "succeeded");
    assert_eq!(entry["rto_met"], false);
    assert!((1.2..1.6).contains(&entry["rto_seconds"].as_f64().unwrap()));
    for key in [
        "run_id",
        "started_at",
        "finished_at",
        "rpo_seconds",
        "rpo_met",
    ] {
        assert!(entry.get(key).is_some(), "{key}");
    }

    // `plan` now predicts from the measured run.
    let text = ws.expect(["plan", "plan.toml"], 0).stdout();
    assert!(
        text.contains("critical path (from durations measured in run `"),
        "{text}"
    );
    assert!(text.contains("first (0.6s) -> second (0.6s)"), "{text}");
}

/// Whether `what` is in `text` but never on the line of a question (a line
/// that also holds its `[y/N]`).
fn starts_its_own_line(text: &str, what: &str) -> bool {
    text.contains(what)
        && !text
            .lines()
            .any(|l| l.contains("[y/N]") && l.contains(what))
}

/// At a terminal the gate asks. A `y` approves it; a question left
/// unanswered gives way to the step's timeout and to Ctrl-C (the wait once
/// held the display's lock, and neither could end it).
#[test]
fn an_approval_asked_at_a_terminal() {
    // `script` gives phoenix a terminal for stdin and stderr; what the test
    // writes to script's stdin is typed at it.
    let at_terminal = |ws: &Workspace, typed: Option<&str>| {
        let mut child = std::process::Command::new("script")
            .args([
                "-qec",
                &format!(
                    "{} run plan.toml --keep-going",
                    env!("CARGO_BIN_EXE_phoenix")
                ),
                "/dev/null",
            ])
            .current_dir(ws.path())
            .env_remove("PHOENIX_STATE")
            .env("NO_COLOR", "1")
            .env("USER", "alice")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script starts");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(typed) = typed {
            std::io::Write::write_all(&mut stdin, typed.as_bytes()).unwrap();
        }
        (child, stdin)
    };
    // A phoenix that never ends fails the test instead of hanging it.
    let finish = |mut child: std::process::Child| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("phoenix did not end while its question went unanswered");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    let gate = |timeout: &str| {
        format!(
            "{DRILL_HEADER}\n[[step]]\nid = \"gate\"\nphase = \"configure\"\naction = \"approval\"\nprompt = \"Switch DNS?\"\n{timeout}\n{}",
            shell_step("after", "restore", "echo after >> ledger", "needs = [\"gate\"]"),
        )
    };

    let ws = Workspace::new();
    ws.write("plan.toml", &gate(""));
    let (child, stdin) = at_terminal(&ws, Some("y\n"));
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("Switch DNS? [y/N]"), "{text}");
    assert_eq!(ledger(&ws), ["after"]);
    assert!(ws.status()["steps"][0]["outputs"]["approved_by"] == "alice");

    let ws = Workspace::new();
    ws.write("plan.toml", &gate("timeout = \"1s\""));
    let (child, stdin) = at_terminal(&ws, None);
    let output = finish(child);
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("timed out after 1s"), "{text}");
    assert!(starts_its_own_line(&text, "timed out after 1s"), "{text}");

    let ws = Workspace::new();
    ws.write("plan.toml", &gate(""));
    let (child, stdin) = at_terminal(&ws, None);
    // Phoenix's pid, from the lock it holds while it asks.
    let lock = ws.state().join("lock");
    let mut pid = None;
    assert!(crate::common::wait_for(
        std::time::Duration::from_secs(10),
        || {
            pid = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["pid"].as_u64());
            pid.is_some()
        }
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    crate::common::signal(pid.unwrap() as u32, "INT");
    let output = finish(child);
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{text}");
    assert!(starts_its_own_line(&text, "SIGINT: stopping"), "{text}");
    assert_eq!(ws.status()["state"], "interrupted");

    // A question that timed out leaves its read waiting on the terminal; the
    // next question takes it over, so the answer typed for that one is not
    // swallowed by the old read.
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{DRILL_HEADER}\n[[step]]\nid = \"first\"\nphase = \"configure\"\naction = \"approval\"\nprompt = \"First?\"\ntimeout = \"1s\"\n{}\n[[step]]\nid = \"second\"\nphase = \"configure\"\naction = \"approval\"\nprompt = \"Second?\"\nneeds = [\"slow\"]\n{}",
            shell_step("slow", "provision", "sleep 2", ""),
            shell_step("after", "restore", "echo after >> ledger", "needs = [\"second\"]"),
        ),
    );
    let (child, mut stdin) = at_terminal(&ws, None);
    std::thread::sleep(std::time::Duration::from_secs(3));
    std::io::Write::write_all(&mut stdin, b"y\n").unwrap();
    let output = finish(child);
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(ledger(&ws), ["after"], "{text}");
}

#[test]
fn an_abandoned_drill_runs_only_its_teardown() {
    // A drill paused at a gate (no terminal to ask), or stopped, that its
    // operator gives up: what it built must still come down.
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{DRILL_HEADER}{}\n[[step]]\nid = \"gate\"\nphase = \"configure\"\naction = \"approval\"\nprompt = \"Go on?\"\nneeds = [\"up\"]\n{}{}{}",
            shell_step("up", "provision", "echo up >> ledger; echo id=vm-7 >> $PHOENIX_OUTPUT", ""),
            shell_step("after", "restore", "echo after >> ledger; echo id=db-1 >> $PHOENIX_OUTPUT", "needs = [\"gate\"]"),
            shell_step("down", "teardown", "echo down {{ steps.up.outputs.id }} >> ledger", "needs = [\"up\"]"),
            shell_step("drop_db", "teardown", "echo drop {{ steps.after.outputs.id }} >> ledger", "needs = [\"after\"]"),
        ),
    );
    ws.expect(["run", "plan.toml", "--drill"], 3);
    assert_eq!(ws.read("ledger"), "up\n", "paused before its teardown");

    let abandoned = ws.expect(["resume", "--abandon"], 1);
    assert!(
        abandoned
            .stderr()
            .contains("only its teardown runs; the run will not succeed"),
        "{}",
        abandoned.stderr()
    );
    assert_eq!(ws.read("ledger"), "up\ndown vm-7\n");
    let status = ws.status();
    assert_eq!(status["abandoned"], true);
    assert_eq!(status["state"], "failed");
    assert_eq!(state_of(&status, "after"), "pending");
    assert_eq!(state_of(&status, "drop_db"), "skipped");
    let text = ws.expect(["status"], 0);
    assert!(
        text.stdout().contains("(drill, abandoned): failed"),
        "{}",
        text.stdout()
    );
    let report = ws.expect(["report"], 0);
    assert!(report
        .stdout()
        .starts_with("# Phoenix report: plan `drill` (drill, abandoned)"));

    // Abandoned for good: a later resume runs no more of the drill.
    ws.expect(["resume", "--approve", "gate"], 1);
    assert_eq!(ws.read("ledger"), "up\ndown vm-7\n");
    // And the next drill is not told that resuming it would go on.
    let next = ws.expect(["run", "plan.toml", "--drill"], 3);
    assert!(!next.stderr().contains("starts over"), "{}", next.stderr());

    // A recovery has no teardown to fall back on.
    let recovery = Workspace::new();
    recovery.write_plan(&[shell_step("fails", "provision", "exit 1", "")]);
    recovery.expect(["run", "plan.toml"], 1);
    let refused = recovery.expect(["resume", "--abandon"], 2);
    assert!(
        refused.stderr().contains("`--abandon` is for drills"),
        "{}",
        refused.stderr()
    );
}

/// The processes of run `run_id`'s steps still running, found as a resume
/// finds them ([`phoenix::exec::leftovers::find`]); `work` is its
/// `{{ run.dir }}`.
fn processes_of(run_id: &str, work: &std::path::Path) -> Vec<i32> {
    phoenix::exec::leftovers::find(run_id, work)
        .iter()
        .map(|l| l.pid)
        .collect()
}

/// Stops, when dropped (a test that failed too), every process of the run
/// directory's steps: the demo's service stand-in runs until stopped.
struct StopsLeftovers(String, std::path::PathBuf);

impl Drop for StopsLeftovers {
    fn drop(&mut self) {
        for pid in processes_of(&self.0, &self.1) {
            crate::common::signal(pid as u32, "KILL");
        }
    }
}

/// The README's first plan must survive what it is there to show: a crash
/// at any moment, after which a resume runs again whatever was running.
/// Each step in turn is put in doubt, the others done, and the run resumed:
/// the step runs a second time over what its first run left, and the run
/// ends as the first did (the step placing the restored tree had moved it
/// away, and failed the second time).
#[test]
fn every_step_of_the_demo_plan_is_safe_to_run_again() {
    let ws = Workspace::new();
    let plan = crate::common::repo_root().join("plans/demo.toml");
    // A recovery (no teardown to clean the site away), its gate passed.
    ws.expect(["run".as_ref(), plan.as_os_str(), "--yes".as_ref()], 0);
    let status = ws.status();
    let run_id = status["run_id"].as_str().unwrap().to_string();
    // What phoenix gives its steps as PHOENIX_RUN_DIR (`{{ run.dir }}`).
    let run_dir = ws.run_dir().join("work");
    let _stops = StopsLeftovers(run_id.clone(), run_dir.clone());
    let steps: Vec<String> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(steps.len() >= 10, "{steps:?}");
    // Last first: a step meets what its first run left before any step
    // it needs runs again and makes that anew.
    for step in steps.iter().rev() {
        ws.make_in_doubt(step);
        ws.cut_journal(|line| line.contains("\"type\":\"ended\""));
        let resumed = ws.expect(["resume", "--yes"], 0);
        assert!(
            resumed.stderr().contains(&format!(
                "step `{step}` was in doubt (running when the run stopped): running it again"
            )),
            "{}",
            resumed.stderr()
        );
    }
    let site = run_dir.join("site");
    let status = std::fs::read_to_string(site.join("service.status")).unwrap();
    assert!(status.starts_with("serving"), "{status}");
    // The service stand-in is stopped as the drill's teardown would, and
    // nothing else of the run is left.
    assert!(
        !processes_of(&run_id, &run_dir).is_empty(),
        "the service runs"
    );
    let pid = std::fs::read_to_string(site.join("service.pid")).unwrap();
    crate::common::signal(pid.trim().parse().unwrap(), "TERM");
    assert!(
        crate::common::wait_for(std::time::Duration::from_secs(10), || {
            processes_of(&run_id, &run_dir).is_empty()
        }),
        "left running: {:?}",
        processes_of(&run_id, &run_dir)
    );
}

/// A report names what changed since the last succeeded run of the same
/// plan and kind: the RTO then and now, and the steps whose duration changed
/// the most. A recovery is not compared with a drill, nor a failed run used
/// as the baseline; `report.json`, written as the run ends, has none of it.
#[test]
fn a_report_compares_with_the_previous_run_of_its_kind() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{DRILL_HEADER}\n[vars]\nrestore = \"true\"\nfail = \"false\"\n{}{}",
            shell_step("db", "restore", "{{ vars.restore }}", ""),
            shell_step("check", "restore", "! {{ vars.fail }}", "needs = [\"db\"]"),
        ),
    );
    let run = |args: &[&str], code| {
        let mut all = vec!["run", "plan.toml", "-q"];
        all.extend(args);
        ws.expect(all, code);
        ws.status()["run_id"].as_str().unwrap().to_string()
    };
    let first = run(&["--drill"], 0);
    let alone = ws.expect(["report", "--format", "json"], 0).stdout();
    let alone: serde_json::Value = serde_json::from_str(&alone).unwrap();
    assert!(alone.get("previous").is_none(), "the first drill has none");
    // A recovery and a failed drill between: neither is the baseline.
    run(&["--var", "restore=sleep 2"], 0);
    run(&["--drill", "--var", "fail=true"], 1);
    let slower = run(&["--drill", "--var", "restore=sleep 1.2"], 0);
    let md = ws.expect(["report"], 0).stdout();
    assert!(
        md.contains(&format!(
            "## Against the previous drill\n\nAgainst the previous drill, run `{first}` of "
        )),
        "{md}"
    );
    assert!(md.contains("RTO then "), "{md}");
    let section = &md[md.find("## Against").unwrap()..md.find("## Phases").unwrap()];
    let row = section
        .lines()
        .find(|l| l.starts_with("| `db` |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(row.contains("| +"), "slower: {row}");
    assert!(
        !section.contains("`check`"),
        "an unchanged step is not listed: {section}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ws.expect(["report", "--format", "json"], 0).stdout()).unwrap();
    assert_eq!(json["previous"]["run_id"], first.as_str());
    assert_eq!(json["previous"]["steps"][0]["id"], "db");
    let (then, now) = (
        &json["previous"]["steps"][0]["before_seconds"],
        &json["previous"]["steps"][0]["now_seconds"],
    );
    assert!(
        now.as_f64().unwrap() >= 1.2 && then.as_f64().unwrap() < 1.0,
        "{json}"
    );
    let html = ws.expect(["report", "--format", "html"], 0).stdout();
    assert!(
        html.contains("<h2>Against the previous drill</h2>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("run <code>{first}</code> of ")),
        "{html}"
    );
    let file =
        std::fs::read_to_string(ws.state().join("runs").join(&slower).join("report.json")).unwrap();
    assert!(!file.contains("\"previous\""), "{file}");
}
