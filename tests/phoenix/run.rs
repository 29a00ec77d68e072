//! `phoenix run`, `resume` and `status` with real child processes.

use crate::common::{shell_step, state_of, Workspace, HEADER};

#[test]
fn outputs_flow_to_dependents_and_status_reports_them() {
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}{}{}",
        shell_step(
            "make",
            "provision",
            "echo vpc_id=vpc-42 >> \"$PHOENIX_OUTPUT\"; printf '# a comment\\n\\nforgot the sign\\n=no key\\nzone=\\351\\n' >> \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step(
            "use",
            "configure",
            "echo {{ steps.make.outputs.vpc_id }} > used.txt",
            "needs = [\"make\"]"
        ),
    );
    ws.write("plan.toml", &plan);
    let run = ws.expect(["run", "plan.toml"], 0);
    assert_eq!(ws.read("used.txt"), "vpc-42\n");
    // What is not an output is said, by line number, not dropped in silence.
    for problem in [
        "step `make`: `PHOENIX_OUTPUT` holds bytes that are not UTF-8",
        "step `make`: `PHOENIX_OUTPUT` line 4 is not `key=value`: left out",
        "step `make`: `PHOENIX_OUTPUT` line 5 is not `key=value`: left out",
    ] {
        assert!(run.stderr().contains(problem), "{}", run.stderr());
    }
    assert_eq!(ws.outputs("make")["zone"], "\u{fffd}");
    let status = ws.status();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["plan"], "t");
    assert_eq!(status["drill"], false);
    assert_eq!(status["steps"][0]["outputs"]["vpc_id"], "vpc-42");
    assert_eq!(status["steps"][0]["phase"], "provision");
    assert_eq!(status["steps"][0]["attempts"], 1);
    assert!(status["finished_at"].is_string());
}

/// A script that sent a command's whole output to `PHOENIX_OUTPUT` fails
/// saying so, instead of putting megabytes into the journal, the run's
/// memory and every report; nothing of it is kept, the file included.
#[test]
fn outputs_over_a_mebibyte_fail_the_step() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "dump",
            "provision",
            "echo host=db >> \"$PHOENIX_OUTPUT\"; head -c 3000000 /dev/zero | tr '\\0' x >> \"$PHOENIX_OUTPUT\"",
            "",
        ),
        shell_step("small", "provision", "echo host=db >> \"$PHOENIX_OUTPUT\"", ""),
    ]);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    assert!(
        run.stderr().contains("`PHOENIX_OUTPUT` holds 2.9 MiB, more than the 1 MiB outputs may take (they are values later steps read: ids, hosts, paths); write large data to a file and give its path as the output"),
        "{}",
        run.stderr()
    );
    assert_eq!(state_of(&ws.status(), "dump"), "failed");
    assert_eq!(ws.outputs("small")["host"], "db");
    assert!(ws.journal().len() < 100_000, "nothing of it journaled");
    let tmp = ws.run_dir().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn outputs_arrive_however_the_file_was_made() {
    // Phoenix opens a step's PHOENIX_OUTPUT file only when an inotify watch
    // saw its name made: written, renamed into place, made by a grandchild,
    // by steps running side by side. The watch is on until at most 64 steps
    // are left to start (16 rounds of `--concurrency 2`; their files are
    // opened): 70 steps follow.
    let ws = Workspace::new();
    let after: String = (0..70)
        .map(|i| {
            shell_step(
                &format!("after{i}"),
                "configure",
                "true",
                "needs = [\"use\"]",
            )
        })
        .collect();
    let plan = format!(
        "{HEADER}{}{}{}{}{}{after}",
        shell_step("written", "provision", "echo a=1 > \"$PHOENIX_OUTPUT\"", ""),
        shell_step(
            "renamed",
            "provision",
            "echo b=2 > staged.$$ && mv staged.$$ \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step(
            "grandchild",
            "provision",
            "sh -c 'echo c=3 >> \"$PHOENIX_OUTPUT\"' & wait",
            ""
        ),
        shell_step("silent", "provision", "true", ""),
        shell_step(
            "use",
            "configure",
            "echo {{ steps.written.outputs.a }}{{ steps.renamed.outputs.b }}{{ steps.grandchild.outputs.c }} > used.txt",
            "needs = [\"written\", \"renamed\", \"grandchild\", \"silent\"]"
        ),
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml", "--concurrency", "2"], 0);
    assert_eq!(ws.read("used.txt"), "123\n");
    let status = ws.status();
    assert_eq!(status["steps"][3]["outputs"], serde_json::json!({}));
}

#[test]
fn a_failed_run_resumes_where_it_stopped() {
    let ws = Workspace::new();
    let plan = |fix: &str| {
        format!(
            "{HEADER}{}{}{}",
            shell_step(
                "first",
                "provision",
                "echo first >> ledger; echo n=1 >> \"$PHOENIX_OUTPUT\"",
                ""
            ),
            shell_step(
                "flaky",
                "configure",
                &format!("echo flaky >> ledger; test -e {fix}"),
                "needs = [\"first\"]"
            ),
            shell_step(
                "last",
                "restore",
                "echo last {{ steps.first.outputs.n }} >> ledger",
                "needs = [\"flaky\"]"
            ),
        )
    };
    ws.write("plan.toml", &plan("fixed"));
    let run = ws.expect(["run", "plan.toml"], 1);
    assert!(
        run.stderr().contains("continue with: phoenix resume"),
        "{}",
        run.stderr()
    );
    let status = ws.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(state_of(&status, "flaky"), "failed");
    assert_eq!(state_of(&status, "last"), "pending");

    ws.write("fixed", "");
    ws.expect(["resume"], 0);
    let ledger = ws.read("ledger");
    // `first` is not run again; its output comes back from the journal.
    assert_eq!(ledger, "first\nflaky\nflaky\nlast 1\n");
    let status = ws.status();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["resumes"], 1);
    let text = ws.expect(["status"], 0);
    assert!(
        text.stdout().contains(", resumed once"),
        "{}",
        text.stdout()
    );
    // Resuming a finished run does nothing, and is no failure: a loop that
    // resumes until the run succeeds stops.
    let run_id = status["run_id"].as_str().unwrap().to_string();
    let journal = ws.journal();
    for args in [vec!["resume", &run_id], vec!["resume"]] {
        let again = ws.expect(&args, 0);
        assert_eq!(ws.journal(), journal, "nothing recorded");
        assert!(
            again.stderr().contains(&format!(
                "run `{run_id}` already succeeded; there is nothing to resume"
            )),
            "{args:?}: {}",
            again.stderr()
        );
    }
    // A state with no run at all is another matter: a wrong `--state`.
    let empty = ws.phoenix().args(["--state", "elsewhere", "resume"]).run();
    assert_eq!(empty.code(), 2, "{}", empty.stderr());
}

/// `run` after a run of the same plan that did not succeed starts over; in a
/// recovery that can be hours done again, so it says so, and what resumes.
#[test]
fn running_again_after_a_failure_says_it_starts_over() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("flaky", "provision", "test -e fixed", "")]);
    ws.expect(["run", "plan.toml", "--run-id", "20261129T120000Z-0001"], 1);
    // A drill in between neither warns of the recovery nor hides it.
    let drill = ws.expect(
        [
            "run",
            "plan.toml",
            "--drill",
            "--run-id",
            "20261129T120000Z-0002",
        ],
        1,
    );
    assert!(
        !drill.stderr().contains("starts over"),
        "{}",
        drill.stderr()
    );
    ws.write("fixed", "");
    let again = ws.expect(["run", "plan.toml", "--run-id", "20261129T120001Z-0003"], 0);
    assert!(
        again.stderr().contains(
            "run `20261129T120000Z-0001` of this plan did not succeed; this run starts over from the first step, where `phoenix resume 20261129T120000Z-0001` would go on"
        ),
        "{}",
        again.stderr()
    );
    // After a success there is nothing to say.
    let third = ws.expect(["run", "plan.toml"], 0);
    assert!(
        !third.stderr().contains("starts over"),
        "{}",
        third.stderr()
    );
}

/// `resume --plan FILE`: a file of another plan is refused; one of the same
/// plan is what the run goes on with, from then on (a later plain `resume`
/// does not go back to the file the run started from), and what `status`
/// shows; a step it no longer has is said and left behind.
#[test]
fn a_resume_goes_on_with_the_plan_it_was_given() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("first", "provision", "echo first >> ledger", ""),
        shell_step("flaky", "configure", "test -e fixed", "needs = [\"first\"]"),
        shell_step(
            "last",
            "restore",
            "echo last >> ledger",
            "needs = [\"flaky\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 1);

    // The file the run started from, broken since: said, with the way out.
    let text = ws.read("plan.toml");
    ws.write("plan.toml", &format!("{text}\nbroken = ["));
    let broken = ws.expect(["resume"], 1);
    assert!(
        broken
            .stderr()
            .contains("is no longer valid; fix it, or resume with `--plan FILE`"),
        "{}",
        broken.stderr()
    );
    ws.write("plan.toml", &text);

    ws.write(
        "other.toml",
        &HEADER.replace("name = \"t\"", "name = \"other\""),
    );
    let other = ws.expect(["resume", "--plan", "other.toml"], 2);
    assert!(
        other
            .stderr()
            .contains("is a run of plan `t`, but `other.toml` is plan `other`"),
        "{}",
        other.stderr()
    );

    std::fs::create_dir(ws.path().join("fix")).unwrap();
    ws.write(
        "fix/plan.toml",
        &format!(
            "{HEADER}{}{}{}",
            shell_step("first", "provision", "echo first >> ledger", ""),
            shell_step(
                "flaky",
                "configure",
                "echo fixed >> ledger; test -e go",
                "needs = [\"first\"]"
            ),
            shell_step(
                "extra",
                "restore",
                "echo extra >> ledger",
                "needs = [\"flaky\"]"
            ),
        ),
    );
    // `go` is looked for in the plan's directory: the new one.
    let fixed = ws.expect(["resume", "--plan", "fix/plan.toml"], 1);
    assert!(
        fixed
            .stderr()
            .contains("no longer in the plan, and not done: `last`"),
        "{}",
        fixed.stderr()
    );
    ws.write("fix/go", "");
    ws.expect(["resume"], 0);
    // Steps run in their plan's directory: `first` once, in the first one.
    assert_eq!(ws.read("ledger"), "first\n");
    assert_eq!(ws.read("fix/ledger"), "fixed\nfixed\nextra\n");
    let status = ws.status();
    let steps: Vec<&str> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first", "flaky", "extra"]);
}

#[test]
fn a_changed_step_and_its_descendants_run_again() {
    let ws = Workspace::new();
    let plan = |message: &str| {
        format!(
            "{HEADER}{}{}{}{}",
            shell_step("base", "provision", "echo base >> ledger", ""),
            shell_step(
                "edited",
                "configure",
                &format!("echo {message} >> ledger"),
                "needs = [\"base\"]"
            ),
            shell_step(
                "after",
                "restore",
                "echo after >> ledger",
                "needs = [\"edited\"]"
            ),
            shell_step("gate", "restore", "test -e open", "needs = [\"after\"]"),
        )
    };
    ws.write("plan.toml", &plan("v1"));
    ws.expect(["run", "plan.toml"], 1);
    ws.write("plan.toml", &plan("v2"));
    ws.write("open", "");
    let run = ws.expect(["resume"], 0);
    let stderr = run.stderr();
    assert!(
        stderr.contains("step `edited` runs again: its definition changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("step `after` runs again: it comes after `edited`, which changed"),
        "{stderr}"
    );
    let ledger = ws.read("ledger");
    assert_eq!(ledger, "base\nv1\nafter\nv2\nafter\n");
}

#[test]
fn skip_accepts_a_failed_step_as_done() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("fine", "provision", "echo n=7 >> \"$PHOENIX_OUTPUT\"", ""),
        shell_step("broken", "provision", "exit 1", "needs = [\"fine\"]"),
        shell_step(
            "next",
            "configure",
            "echo ran {{ steps.fine.outputs.n }} > next.txt",
            "needs = [\"broken\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 1);
    let bad = ws.expect(["resume", "--skip", "brokn"], 2);
    assert!(
        bad.stderr().contains("did you mean `broken`?"),
        "{}",
        bad.stderr()
    );
    // Both skipped and run again: which was meant is not guessed.
    let both = ws.expect(["resume", "--rerun", "broken", "--skip", "broken"], 2);
    assert!(
        both.stderr()
            .contains("`--skip broken` and `--rerun broken`"),
        "{}",
        both.stderr()
    );
    // A step that succeeded named too: left as it is, outputs and all.
    let resumed = ws
        .phoenix()
        .args(["resume", "--skip", "broken", "--skip", "fine"])
        .run()
        .expect_code(0);
    assert!(
        resumed
            .stderr()
            .contains("`--skip fine`: step `fine` is done already; nothing to skip"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("next.txt"), "ran 7\n");
    let status = ws.status();
    assert_eq!(state_of(&status, "broken"), "skipped");
    assert_eq!(state_of(&status, "fine"), "succeeded");
    assert!(ws
        .journal()
        .contains("\"type\":\"skipped\",\"step\":\"broken\""));
}

#[test]
fn keep_going_runs_what_it_can_and_reports_skips() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("broken", "provision", "echo to stderr >&2; exit 7", ""),
        shell_step("blocked", "configure", "true", "needs = [\"broken\"]"),
        shell_step("free", "configure", "echo free > free.txt", ""),
    ]);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let stderr = run.stderr();
    assert!(stderr.contains("FAIL broken"), "{stderr}");
    assert!(stderr.contains("exited with status 7"), "{stderr}");
    assert!(
        stderr.contains("| to stderr"),
        "the log tail is shown: {stderr}"
    );
    assert!(ws.path().join("free.txt").exists());
    let status = ws.status();
    assert_eq!(state_of(&status, "blocked"), "skipped");
    assert_eq!(state_of(&status, "free"), "succeeded");
}

/// A `check` that hangs is bounded by its step's timeout (then the step runs
/// again), and stopped by SIGINT like a step (the resume exits 130, starts
/// nothing, and can be resumed).
#[test]
fn a_hanging_check_gives_way_to_the_timeout_and_to_sigint() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "probed",
        "provision",
        "echo ran >> ledger",
        "check = [\"sh\", \"-c\", \"echo $PHOENIX_STEP >> checked; sleep 30 & echo $! >> sleepers; wait\"]\ntimeout = \"1s\"",
    )
    .replace("timeout = \"1m\"\n", "")]);
    ws.expect(["run", "plan.toml"], 0);
    ws.crash_before_finishes();

    let child = ws.phoenix().args(["resume"]).spawn();
    let pid = child.id();
    std::thread::sleep(std::time::Duration::from_millis(500));
    crate::common::signal(pid, "INT");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    assert_eq!(ws.read("ledger"), "ran\n", "nothing started");
    assert_eq!(state_of(&ws.status(), "probed"), "in_doubt");

    let resumed = ws.expect(["resume"], 0);
    assert!(
        resumed
            .stderr()
            .contains("its check did not finish within the step's timeout: running it again"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "ran\nran\n");
    // Run as a step is, and given up on with all it started.
    assert_eq!(ws.read("checked"), "probed\nprobed\n");
    for pid in ws.read("sleepers").lines() {
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| {
                    stat.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        };
        assert!(
            crate::common::wait_for(std::time::Duration::from_secs(5), gone),
            "what the check started outlived it: {pid}"
        );
    }
}

#[test]
fn in_doubt_steps_follow_check_and_idempotent() {
    let ws = Workspace::new();
    // Both steps are in doubt after a crash: simulate one by cutting the
    // journal after their start records.
    ws.write_plan(&[
        shell_step(
            "checked",
            "provision",
            "echo checked >> ledger",
            "check = [\"test\", \"-e\", \"ledger\"]",
        ),
        shell_step(
            "once",
            "provision",
            "echo once >> ledger",
            "idempotent = false\nneeds = [\"checked\"]",
        ),
        shell_step("stop", "configure", "exit 1", "needs = [\"once\"]"),
    ]);
    ws.expect(["run", "plan.toml"], 1);
    ws.crash_before_finishes();
    let status = ws.status();
    assert_eq!(state_of(&status, "once"), "in_doubt");
    assert_eq!(status["state"], "interrupted");

    let refused = ws.expect(["resume"], 1);
    assert!(refused.stderr().contains("`once`"), "{}", refused.stderr());
    assert!(
        refused.stderr().contains("--rerun STEP` or `--skip STEP"),
        "{}",
        refused.stderr()
    );

    let run = ws.expect(["resume", "--skip", "once"], 1);
    assert!(
        run.stderr()
            .contains("step `checked` was in doubt; its check passed"),
        "{}",
        run.stderr()
    );
    let ledger = ws.read("ledger");
    assert_eq!(ledger, "checked\nonce\n", "neither in-doubt step ran again");
}

#[test]
fn status_text_and_a_missing_run() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("only", "provision", "true", "")]);
    let none = ws.expect(["status"], 2);
    assert!(none.stderr().contains("no state at"), "{}", none.stderr());
    // A state that cannot be made is bad usage (2), not a failed run (1).
    ws.write("a-file", "");
    let unusable = ws.expect(["--state", "a-file", "run", "plan.toml"], 2);
    assert!(
        unusable
            .stderr()
            .contains("`a-file` cannot hold the state (see --state and PHOENIX_STATE)\n  Caused by: cannot create directory `a-file`"),
        "{}",
        unusable.stderr()
    );
    ws.phoenix()
        .args(["run", "plan.toml", "--run-id", "first-run"])
        .run()
        .expect_code(0);
    let text = ws.expect(["status", "first-run"], 0).stdout();
    assert!(
        text.starts_with("run `first-run` of plan `t` (recovery): succeeded"),
        "{text}"
    );
    assert!(text.contains("provision  only  succeeded"), "{text}");
    ws.expect(["status", "nope"], 2);
    // A run id is never reused: bad usage.
    ws.phoenix()
        .args(["run", "plan.toml", "--run-id", "first-run"])
        .run()
        .expect_code(2);
}

#[test]
fn state_works_from_any_directory() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "only",
        "provision",
        "pwd > where; echo logged",
        "",
    )]);
    let elsewhere = tempfile::tempdir().unwrap();
    let state = ws.path().join("state");
    crate::common::Phoenix::new(elsewhere.path())
        .args([
            "--state",
            state.to_str().unwrap(),
            "run",
            ws.path().join("plan.toml").to_str().unwrap(),
        ])
        .run()
        .expect_code(0);
    // The default working directory is the plan's own directory.
    assert!(ws.path().join("where").exists());
    let run = crate::common::Phoenix::new(elsewhere.path())
        .env("PHOENIX_STATE", &state)
        .args(["status", "--format", "json"])
        .run()
        .expect_code(0);
    assert!(run.stdout().contains("\"state\": \"succeeded\""));
    // State files are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let runs = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in ["journal.jsonl", "plan.toml", "logs/only.1.log"] {
        let mode = std::fs::metadata(runs.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
}

/// `report.json` is written at the end from what the session folded while
/// writing the journal: it must be exactly what reading the journal back gives.
#[test]
fn the_report_written_at_the_end_matches_the_journal_read_back() {
    let ws = Workspace::new();
    ws.write("flag", "");
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"REPORT_TOKEN\" }}\n{}{}{}{}",
            shell_step(
                "out",
                "provision",
                "echo key={{ secrets.token }} >> \"$PHOENIX_OUTPUT\"; echo plain=v >> \"$PHOENIX_OUTPUT\"",
                ""
            ),
            shell_step("flaky", "configure", "test -f flag && rm flag && exit 1; true", "retries = 1\nbackoff = \"10ms\"\nneeds = [\"out\"]"),
            shell_step("gate", "configure", "test -f go", "needs = [\"flaky\"]"),
            shell_step("after", "restore", "echo {{ steps.out.outputs.plain }}", "needs = [\"gate\"]"),
        ),
    );
    let same = |ws: &Workspace| {
        let written = std::fs::read_to_string(ws.run_dir().join("report.json")).unwrap();
        let read = ws.expect(["report", "--format", "json"], 0).stdout();
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(parse(&written), parse(&read));
        assert!(!written.contains("s3cr3t-value"), "{written}");
    };
    let run = ws
        .phoenix()
        .env("REPORT_TOKEN", "s3cr3t-value")
        .env("NO_COLOR", "1")
        .args(["run", "plan.toml"])
        .run()
        .expect_code(1);
    same(&ws);
    // An attempt that is retried is not the step's failure; the last one is.
    let stderr = run.stderr();
    assert!(
        stderr.contains(" fail flaky after") && stderr.contains(" FAIL gate after"),
        "{stderr}"
    );
    assert!(!stderr.contains(" FAIL flaky"), "{stderr}");
    ws.write("go", "");
    ws.phoenix()
        .env("REPORT_TOKEN", "s3cr3t-value")
        .args(["resume"])
        .run()
        .expect_code(0);
    same(&ws);
}

/// Whoever reads phoenix's output may stop reading (`phoenix run … 2>&1 |
/// head -1`): the rebuild goes on to the end, and the exit code is the run's.
#[test]
fn a_closed_output_pipe_does_not_stop_the_run() {
    use std::io::BufRead;
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("first", "provision", "echo first >> ledger; sleep 0.3", ""),
        shell_step(
            "second",
            "provision",
            "echo second >> ledger",
            "needs = [\"first\"]",
        ),
    ]);
    for format in ["json", "text"] {
        std::fs::remove_file(ws.path().join("ledger")).ok();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .current_dir(ws.path())
            .env_remove("PHOENIX_STATE")
            .args(["run", "plan.toml", "--log-format", format])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        drop(child.stdout.take()); // both pipes closed now
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("phoenix ({format}) hung after its output pipe closed");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{format}: first line {first:?}");
        let ledger = ws.read("ledger");
        assert_eq!(ledger, "first\nsecond\n");
    }
}

/// What a command step's process gets: the step's `env` over Phoenix's own
/// (`PATH` included, for looking the program up), its `cwd`, stdin from
/// `/dev/null`; and what Phoenix says when the program or directory is not
/// there.
#[test]
fn command_steps_get_their_environment_directory_and_clear_errors() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("work")).unwrap();
    std::fs::create_dir(ws.path().join("bin")).unwrap();
    ws.write(
        "bin/hello",
        "#!/bin/sh\necho \"hello from $(pwd) $GREETING\" >> ../ledger\n",
    );
    let hello = ws.path().join("bin/hello");
    std::fs::set_permissions(&hello, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = ws.path().join("bin");
    ws.write(
        "plan.toml",
        &(format!(
            "{HEADER}\n[[step]]\nid = \"argv\"\nphase = \"provision\"\naction = \"command\"\n\
             run = [\"hello\"]\ncwd = \"work\"\n\
             env = {{ PATH = \"{}:/usr/bin:/bin\", GREETING = \"hi\" }}\n",
            bin.display()
        ) + &shell_step(
            "stdin",
            "provision",
            "cat; echo \"stdin done $PHOENIX_STEP\" >> ledger",
            "needs = [\"argv\"]",
        )),
    );
    ws.expect(["run", "plan.toml"], 0);
    let ledger = ws.read("ledger");
    let work = ws.path().join("work").canonicalize().unwrap();
    assert_eq!(
        ledger,
        format!("hello from {} hi\nstdin done stdin\n", work.display())
    );

    // A program that is not on the step's PATH, and a directory that is not there.
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[[step]]\nid = \"missing\"\nphase = \"provision\"\naction = \"command\"\nrun = [\"hello\"]\n\n[[step]]\nid = \"nowhere\"\nphase = \"provision\"\naction = \"command\"\nrun = [\"true\"]\ncwd = \"no-such-dir\"\n"
        ),
    );
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let stderr = run.stderr();
    assert!(stderr.contains("cannot start `hello`"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");

    // A script beside the plan named as a command is looked up in PATH, as
    // a shell does; one without an execute bit cannot be started: each
    // error says the way out.
    ws.write("deploy.sh", "echo deployed\n");
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[[step]]\nid = \"bare\"\nphase = \"provision\"\naction = \"command\"\nrun = [\"deploy.sh\"]\n\n[[step]]\nid = \"plain\"\nphase = \"provision\"\naction = \"command\"\nrun = [\"./deploy.sh\"]\n"
        ),
    );
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let stderr = run.stderr();
    assert!(
        stderr.contains("cannot start `deploy.sh`: not found in PATH; the file in the step's directory is `./deploy.sh`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot start `./deploy.sh`: the file is not executable: `chmod +x` it"),
        "{stderr}"
    );
}

/// Phoenix reads plans with transparent huge pages off (`hugepages.rs`), a
/// setting that passes through exec: a step's process gets the setting the
/// test process has, not that one.
#[test]
fn steps_get_the_huge_page_setting_phoenix_was_started_with() {
    let thp_line = |status: &str| {
        status
            .lines()
            .find(|line| line.starts_with("THP_enabled:"))
            .map(|line| {
                line.split_whitespace()
                    .last()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let Some(expected) = thp_line(&ours) else {
        // Kernels before 6.8 do not show the setting.
        return;
    };
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "thp",
        "provision",
        "cat /proc/self/status > status",
        "",
    )]);
    ws.expect(["run", "plan.toml"], 0);
    let theirs = ws.read("status");
    assert_eq!(thp_line(&theirs), Some(expected), "{theirs}");
}

/// A step that leaves a process running (a daemon started without
/// redirecting its output) finishes when its own process does, and what the
/// daemon prints while Phoenix runs still lands in the step's log.
#[test]
fn a_step_that_leaves_a_daemon_finishes_and_its_output_is_still_logged() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "daemon",
            "provision",
            "echo $$ > group; (sleep 0.3; echo late from the daemon; sleep 30) & echo started",
            "",
        ),
        shell_step(
            "after",
            "provision",
            "sleep 1.5; echo after >> ledger",
            "needs = [\"daemon\"]",
        ),
    ]);
    let start = std::time::Instant::now();
    let run = ws.phoenix().args(["run", "plan.toml"]).run();
    let elapsed = start.elapsed();
    let group = ws.read("group");
    // The daemon's group: the step's own process led it.
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", group.trim())])
        .status();
    run.expect_code(0);
    assert!(
        elapsed < std::time::Duration::from_secs(15),
        "the run waited for the daemon ({elapsed:?})"
    );
    let log = std::fs::read_to_string(ws.run_dir().join("logs/daemon.1.log")).unwrap();
    assert_eq!(log, "started\nlate from the daemon\n");
}

#[test]
fn a_step_that_closes_its_output_early_is_waited_for_to_the_end() {
    // The end of a step's output is how a short step's exit is noticed first:
    // a process that closes it and goes on must still be waited for, its
    // exit code and its outputs taken when it really ends.
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "quiet",
            "provision",
            "echo before; exec >/dev/null 2>&1; sleep 0.4; echo done=late >> \"$PHOENIX_OUTPUT\"",
            "",
        ),
        shell_step(
            "after",
            "provision",
            "echo {{ steps.quiet.outputs.done }} >> ledger",
            "needs = [\"quiet\"]",
        ),
        shell_step(
            "failing",
            "provision",
            "exec >/dev/null 2>&1; sleep 0.4; exit 3",
            "",
        ),
    ]);
    let run = ws
        .phoenix()
        .args(["run", "plan.toml", "--keep-going"])
        .run();
    run.expect_code(1);
    let ledger = ws.read("ledger");
    assert_eq!(ledger, "late\n");
    let log = std::fs::read_to_string(ws.run_dir().join("logs/quiet.1.log")).unwrap();
    assert_eq!(log, "before\n");
    let status = ws.status();
    assert_eq!(state_of(&status, "quiet"), "succeeded");
    assert_eq!(state_of(&status, "failing"), "failed");
    let failing = crate::common::step_of(&status, "failing").to_string();
    assert!(
        failing.contains("exit") && failing.contains('3'),
        "{failing}"
    );
}

/// A run killed after a step wrote its `PHOENIX_OUTPUT` file but before
/// Phoenix read it leaves the file behind. The resume runs that attempt
/// again under the same number: it starts from an empty file, not from what
/// the lost attempt wrote, and nothing is left in the state's `tmp`.
#[test]
fn outputs_a_killed_run_left_unread_are_not_taken_up() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "writes",
        "provision",
        "echo fresh=1 >> \"$PHOENIX_OUTPUT\"",
        "",
    )]);
    ws.expect(["run", "plan.toml"], 0);
    // As if killed while the first attempt ran: no record of it, and its
    // file, written but never read, still there.
    ws.cut_journal(|l| l.contains("\"step\":\"writes\"") || l.contains("\"type\":\"ended\""));
    let tmp = ws.run_dir().join("tmp");
    std::fs::write(tmp.join("writes.1.out"), "stale=1\n").unwrap();
    let resumed = ws.expect(["resume"], 0);
    assert!(
        resumed.stderr().contains("of plan `t`: 1 step to run"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.outputs("writes"), serde_json::json!({"fresh": "1"}));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_log_that_cannot_be_written_is_said_to_be_incomplete() {
    // A full disk, as the state's logs directory turned into a file does it
    // for any user: the step's own result stands, but whoever reads its log
    // must know that it stops short.
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "break",
            "provision",
            "rm -rf \"$PHOENIX_RUN_DIR/../logs\" && : > \"$PHOENIX_RUN_DIR/../logs\"",
            "",
        ),
        shell_step(
            "loud",
            "configure",
            "echo hello; echo done >> ledger",
            "needs = [\"break\"]",
        ),
    ]);
    let run = ws.expect(["run", "plan.toml"], 0);
    assert_eq!(ws.read("ledger"), "done\n");
    let stderr = run.stderr();
    assert!(
        stderr.contains("warning: step `loud`: its log `")
            && stderr.contains("loud.1.log` is incomplete: output was lost: Not a directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("step `break`: its log"), "{stderr}");
}

#[test]
fn a_resume_after_the_checkout_moved_asks_where_the_plan_is_now() {
    // The state carried to a new machine, or the checkout moved: the steps
    // run in the plan's directory, which is no longer there.
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("repo")).unwrap();
    ws.write(
        "repo/plan.toml",
        &format!(
            "{HEADER}{}{}",
            shell_step("first", "provision", "echo first >> ledger", ""),
            shell_step("flaky", "configure", "test -e fixed", "needs = [\"first\"]"),
        ),
    );
    ws.expect(["run", "repo/plan.toml"], 1);
    std::fs::rename(ws.path().join("repo"), ws.path().join("moved")).unwrap();
    ws.write("moved/fixed", "");

    let refused = ws.expect(["resume"], 2);
    let stderr = refused.stderr();
    assert!(
        stderr
            .contains("repo/plan.toml`, and neither that file nor its directory is there any more")
            && stderr.contains("Resume with `--plan FILE` naming where the plan is now"),
        "{stderr}"
    );
    assert!(!stderr.contains("start flaky"), "{stderr}");

    ws.expect(["resume", "--plan", "moved/plan.toml"], 0);
    assert_eq!(ws.read("moved/ledger"), "first\n");
}

#[test]
fn resume_with_a_plan_takes_up_that_plans_newest_unfinished_run() {
    // Two plans share the state; the one that failed first is meant.
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "db",
        "restore",
        "test -e fixed && echo db >> ledger",
        "",
    )]);
    ws.write(
        "other.toml",
        &format!(
            "{}{}",
            HEADER.replace("name = \"t\"", "name = \"other\""),
            shell_step("web", "configure", "exit 1", "")
        ),
    );
    ws.expect(["run", "plan.toml"], 1);
    ws.expect(["run", "other.toml"], 1);
    ws.write("fixed", "");

    let resumed = ws.expect(["resume", "--plan", "plan.toml"], 0);
    assert!(
        resumed.stderr().contains("of plan `t`"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "db\n");
    // Without a plan, the newest unfinished run, as before.
    let plain = ws.expect(["resume"], 1);
    assert!(
        plain.stderr().contains("of plan `other`"),
        "{}",
        plain.stderr()
    );
}

#[test]
fn a_runaway_output_keeps_its_start_and_end_and_not_the_disk() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("loud", "provision", "seq 1 400000; exit 2", "")]);
    let run = ws
        .phoenix()
        .args(["run", "plan.toml"])
        .env("PHOENIX_LOG_LIMIT", "100KiB")
        .run()
        .expect_code(1);
    let stderr = run.stderr();
    assert!(
        stderr.contains("warning: step `loud`: its output passed 100.0 KiB: ")
            && stderr.contains("were left out of the middle of its log"),
        "{stderr}"
    );
    // The failure still shows how the output ended.
    assert!(stderr.contains("| 400000\n"), "{stderr}");
    let log = std::fs::read_to_string(ws.run_dir().join("logs/loud.1.log")).unwrap();
    assert!(log.starts_with("1\n2\n3\n") && log.ends_with("399999\n400000\n"));
    assert!(log.len() < 100 * 1024 + (1 << 20) + 200, "{}", log.len());
    assert!(log.contains("of output left out here"));
}

#[test]
fn a_resume_may_run_with_fewer_steps_at_once_or_keep_going() {
    // A run that failed on an API's rate limit goes on with fewer steps at
    // once; one whose failing step waits for someone goes on around it.
    let ws = Workspace::new();
    let overlap = "touch running_$PHOENIX_STEP; sleep 0.3; ls running_* | wc -l | tr -d ' ' >> seen; rm running_$PHOENIX_STEP";
    ws.write_plan(&[
        shell_step("gate", "provision", "test -e ok", "estimate = \"1h\""),
        shell_step("p", "configure", overlap, "needs = [\"gate\"]"),
        shell_step("q", "configure", overlap, "needs = [\"gate\"]"),
        shell_step("stuck", "provision", "test -e fixed", "estimate = \"1h\""),
        shell_step("beside", "provision", "echo beside >> ledger", ""),
    ]);
    ws.expect(["run", "plan.toml", "--concurrency", "1"], 1);
    ws.write("ok", "");
    // Without `--keep-going`, `stuck` fails again first and nothing new starts.
    ws.expect(["resume", "--concurrency", "1"], 1);
    assert!(!ws.path().join("ledger").exists());
    ws.expect(["resume", "--concurrency", "1", "--keep-going"], 1);
    assert_eq!(ws.read("seen"), "1\n1\n", "one step at a time");
    assert_eq!(ws.read("ledger"), "beside\n");
}

#[test]
fn rerunning_a_done_step_names_the_done_steps_after_it() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("checkout", "configure", "echo checkout >> ledger", ""),
        shell_step(
            "render",
            "configure",
            "echo render >> ledger",
            "needs = [\"checkout\"]",
        ),
        shell_step(
            "serve",
            "configure",
            "echo serve >> ledger; test -e ok",
            "needs = [\"render\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 1);
    ws.write("ok", "");
    let resumed = ws.expect(["resume", "--rerun", "checkout"], 0);
    assert!(
        resumed.stderr().contains("`--rerun checkout`: step `checkout` was done; the done steps after it (`render`) keep what they did with its last run"),
        "{}",
        resumed.stderr()
    );
    // `serve` needs only `render`, which stays done, so it reruns beside
    // `checkout`, in either order.
    let ledger = ws.read("ledger");
    let again = ledger
        .strip_prefix("checkout\nrender\nserve\n")
        .unwrap_or_else(|| panic!("the first run is not first: {ledger}"));
    let mut again: Vec<&str> = again.lines().collect();
    again.sort_unstable();
    assert_eq!(again, ["checkout", "serve"], "{ledger}");
}

#[test]
fn a_run_id_taken_already_is_bad_usage() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("a", "provision", "echo a >> ledger", "")]);
    ws.expect(["run", "plan.toml", "--run-id", "drill-q3"], 0);
    let again = ws.expect(["run", "plan.toml", "--run-id", "drill-q3"], 2);
    assert!(
        again
            .stderr()
            .contains("a run `drill-q3` exists already; choose another --run-id"),
        "{}",
        again.stderr()
    );
    assert_eq!(ws.read("ledger"), "a\n", "nothing ran the second time");
}

#[test]
fn a_plan_saved_with_windows_line_endings_runs_its_scripts_as_written() {
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}\n[[step]]\nid = \"a\"\nphase = \"provision\"\naction = \"command\"\nshell = \"\"\"\ncd sub\necho one >> ledger\n\"\"\"\ntimeout = \"10s\"\nbogus = 1\n"
    )
    .replace('\n', "\r\n");
    std::fs::create_dir(ws.path().join("sub")).unwrap();
    ws.write("plan.toml", &plan);
    let invalid = ws.expect(["validate", "plan.toml"], 1);
    assert!(
        invalid
            .stderr()
            .contains("plan.toml:16:1: error: unknown key `bogus`"),
        "{}",
        invalid.stderr()
    );
    ws.write("plan.toml", &plan.replace("bogus = 1\r\n", ""));
    ws.expect(["run", "plan.toml"], 0);
    assert_eq!(ws.read("sub/ledger"), "one\n");
}

#[test]
fn skipping_a_step_whose_outputs_a_step_to_run_reads_needs_them_given() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("net", "provision", "exit 1", ""),
        shell_step(
            "host",
            "provision",
            "echo {{ steps.net.outputs.vpc }} >> ledger",
            "needs = [\"net\"]",
        ),
        shell_step(
            "tagged",
            "provision",
            "echo {{ steps.net.outputs.tag | default('none') }} >> ledger",
            "needs = [\"net\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 1);
    let refused = ws.expect(["resume", "--skip", "net"], 2);
    assert!(
        refused.stderr().contains("step `host` reads the output `vpc` of `net`, which was accepted as done without running (`--skip`) and does not give it: `host` would fail as it starts. Give it with `--skip net --output net.vpc=VALUE` (what `net` would have given), or give the expression a `default`"),
        "{}",
        refused.stderr()
    );
    // Outputs go with a skip, in the form KEY=VALUE, to a step of the plan.
    for (args, said) in [
        (
            &["resume", "--output", "net.vpc=vpc-1"][..],
            "`--output net.vpc=…`: outputs are given to a step accepted as done without running; add `--skip net`",
        ),
        (
            &["resume", "--skip", "net", "--output", "vpc=vpc-1"],
            "`--output vpc=vpc-1`: write it `STEP.KEY=VALUE`",
        ),
        (
            &["resume", "--skip", "net", "--output", "net.tag=blue"],
            "step `host` reads the output `vpc` of `net`",
        ),
    ] {
        let run = ws.expect(args, 2);
        assert!(run.stderr().contains(said), "{args:?}: {}", run.stderr());
    }
    assert_eq!(
        ws.status()["steps"][0]["state"],
        "failed",
        "nothing recorded"
    );
    // The host made by hand: what `net` would have said of it goes on.
    ws.expect(["resume", "--skip", "net", "--output", "net.vpc=vpc-1"], 0);
    let mut ledger: Vec<String> = ws.read("ledger").lines().map(String::from).collect();
    ledger.sort();
    assert_eq!(ledger, ["none", "vpc-1"]);
    let status = ws.status();
    assert_eq!(status["steps"][0]["state"], "skipped");
    assert_eq!(status["steps"][0]["outputs"]["vpc"], "vpc-1");
    assert!(ws.journal().contains("\"outputs\":{\"vpc\":\"vpc-1\"}"));
    let text = ws.expect(["status"], 0).stdout();
    assert!(
        text.contains("skipped") && text.contains("accepted as done by"),
        "{text}"
    );
    for format in ["md", "junit", "html"] {
        let report = ws.expect(["report", "--format", format], 0).stdout();
        assert!(
            report.contains("skipped: accepted as done by"),
            "{format}: {report}"
        );
    }
}

/// `phoenix logs STEP --follow` prints a running step's output as it is
/// written, secrets masked, and ends with the attempt; the operator no
/// longer pieces a log's path together for `tail -f`.
#[test]
fn logs_follow_a_running_step_until_it_ends() {
    use std::io::{BufRead, Read};
    let ws = Workspace::new();
    let secret = "logs-canary-Q7x2";
    let plan = format!(
        "{HEADER}\n[secrets]\ntok = {{ env = \"LOGS_TOK\" }}\n{}{}",
        shell_step(
            "slow",
            "provision",
            "echo first $TOK; while [ ! -e go ]; do sleep 0.02; done; echo second $TOK",
            "env = { TOK = \"{{ secrets.tok }}\" }"
        ),
        shell_step("later", "configure", "echo later", "needs = [\"slow\"]"),
    );
    ws.write("plan.toml", &plan);
    let mut run = ws
        .phoenix()
        .env("LOGS_TOK", secret)
        .args(["run", "plan.toml"])
        .spawn();
    let started = crate::common::wait_for(std::time::Duration::from_secs(30), || {
        ws.state().join("runs").is_dir()
            && std::fs::read_to_string(ws.run_dir().join("logs/slow.1.log"))
                .is_ok_and(|log| log.contains("first"))
    });
    assert!(started, "the step printed its first line");
    // A step that has not started has nothing yet; one the run does not
    // have is refused, naming the run's steps (those not started too).
    let pending = ws.expect(["logs", "later"], 0);
    assert!(
        pending.stderr().contains("step `later` of run"),
        "{}",
        pending.stderr()
    );
    assert!(
        pending.stderr().contains("has not started"),
        "{}",
        pending.stderr()
    );
    let unknown = ws.expect(["logs", "nope"], 2);
    assert!(
        unknown.stderr().contains("its steps: later, slow"),
        "{}",
        unknown.stderr()
    );
    let mut follow = ws.phoenix().args(["logs", "slow", "--follow"]).spawn();
    // Read on a thread: a `logs` that hung would otherwise hang the test.
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(follow.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let limit = std::time::Duration::from_secs(30);
    assert_eq!(printed.recv_timeout(limit).as_deref(), Ok("first ***"));
    // Written after `logs` started: followed.
    ws.write("go", "");
    let ended = crate::common::wait_for(limit, || follow.try_wait().unwrap().is_some());
    if !ended {
        let _ = follow.kill();
    }
    assert!(ended, "--follow ends with the attempt");
    assert_eq!(printed.recv_timeout(limit).as_deref(), Ok("second ***"));
    let mut stderr = String::new();
    follow
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("step `slow` attempt 1 succeeded"),
        "{stderr}"
    );
    assert!(follow.wait().unwrap().success());
    assert!(run.wait().unwrap().success());
    // Afterwards: the run's logs listed, a step's printed whole.
    let list = ws.expect(["logs"], 0).stdout();
    assert!(
        list.contains("slow.1.log") && list.contains("later.1.log"),
        "{list}"
    );
    assert!(
        list.find("slow").unwrap() < list.find("later").unwrap(),
        "{list}"
    );
    assert_eq!(ws.expect(["logs", "later"], 0).stdout(), "later\n");
    let attempt = ws.expect(["logs", "slow", "--attempt", "2"], 2);
    assert!(
        attempt.stderr().contains("has 1 attempt"),
        "{}",
        attempt.stderr()
    );
    assert!(!list.contains(secret));
}
