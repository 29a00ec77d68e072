//! Real signals and real crashes: SIGINT and SIGTERM, SIGKILL at random moments,
//! a torn journal, two runs racing for the lock.

use std::time::Duration;

use crate::common::{
    shell_step, signal, state_of, step_of, timed, wait_for, Phoenix, Workspace, HEADER,
};

#[test]
fn sigint_stops_children_flushes_and_exits_130() {
    stops_children_flushes_and_exits_130("INT");
}

/// A terminal or SSH session gone: the run stops as on SIGTERM instead of
/// dying and leaving its steps running unwatched.
#[test]
fn sighup_stops_children_flushes_and_exits_130() {
    stops_children_flushes_and_exits_130("HUP");
}

/// SIGHUP's bit in a `SigIgn` line of /proc/PID/status.
fn ignores_hangup(status_line: &str) -> bool {
    let mask = u64::from_str_radix(status_line.split_whitespace().nth(1).unwrap(), 16).unwrap();
    mask & 1 != 0
}

fn stops_children_flushes_and_exits_130(name: &str) {
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}{}{}",
        shell_step(
            "long",
            "provision",
            "grep SigIgn /proc/$$/status > sigign; echo $$ > child.pid; sleep 30 & wait",
            ""
        ),
        shell_step("never", "configure", "true", "needs = [\"long\"]"),
    );
    ws.write("plan.toml", &plan);
    // Started with SIGHUP at its default even where the tests run ignoring
    // it (under `nohup`): one phoenix was started ignoring goes on ignoring.
    let child = Phoenix::under(ws.path(), &["env", "--default-signal=HUP"])
        .args(["run", "plan.toml"])
        .env("PHOENIX_KILL_GRACE", "5s")
        .spawn();
    let shell_pid = pid_written(&ws, "child.pid");
    assert!(
        !ignores_hangup(&ws.read("sigign")),
        "a step keeps SIGHUP's default"
    );
    signal(child.id(), name);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("SIG{name}: stopping")),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The whole process group is gone, the grandchild `sleep` included.
    assert!(wait_for(Duration::from_secs(5), || !std::path::Path::new(
        &format!("/proc/{shell_pid}")
    )
    .exists()));
    assert!(
        wait_for(Duration::from_secs(5), || !group_alive(shell_pid)),
        "the step's process group survived"
    );
    assert!(!ws.state().join("lock").exists(), "the lock is released");
    let journal = ws.journal();
    assert!(journal.contains("\"type\":\"interrupted\""));
    assert!(journal.contains("\"result\":\"interrupted\""));
    let status = ws.status();
    assert_eq!(status["state"], "interrupted");
    assert_eq!(state_of(&status, "long"), "in_doubt");

    std::fs::write(
        ws.path().join("plan.toml"),
        plan.replace("sleep 30 & wait", "true"),
    )
    .unwrap();
    ws.expect(["resume"], 0);
}

/// `nohup phoenix run …` outlives the terminal (its steps ignore SIGHUP as
/// well: `a_step_gets_default_signals_but_keeps_those_phoenix_was_started_ignoring`).
#[test]
fn a_run_started_ignoring_sighup_goes_on() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "long",
        "provision",
        "touch started; sleep 1",
        "",
    )]);
    let child = Phoenix::under(ws.path(), &["nohup"])
        .args(["run", "plan.toml"])
        .spawn();
    let started = ws.path().join("started");
    assert!(wait_for(Duration::from_secs(10), || started.exists()));
    signal(child.id(), "HUP");
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(ws.status()["state"], "succeeded");
}

#[test]
fn a_second_signal_kills_at_once() {
    let ws = Workspace::new();
    // The step ignores SIGTERM, so the graceful path would wait out the grace.
    ws.write_plan(&[shell_step(
        "stubborn",
        "provision",
        "trap '' TERM; echo $$ > child.pid; sleep 60",
        "",
    )]);
    let child = ws
        .phoenix()
        .args(["run", "plan.toml"])
        .env("PHOENIX_KILL_GRACE", "60s")
        .spawn();
    let shell_pid = pid_written(&ws, "child.pid");
    signal(child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    signal(child.id(), "TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_for(Duration::from_secs(5), || !std::path::Path::new(
        &format!("/proc/{shell_pid}")
    )
    .exists()));
}

#[test]
fn two_runs_at_once_exactly_one_proceeds() {
    let ws = Workspace::new();
    let first = ws.start_holding("first");
    let second = ws.expect(["run", "plan.toml", "--run-id", "second"], 4);
    let stderr = second.stderr();
    assert!(
        stderr.contains("the state is locked by run `first` (pid "),
        "{stderr}"
    );
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    // Only the first run exists.
    let runs: Vec<_> = std::fs::read_dir(ws.state().join("runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
}

#[test]
fn many_simultaneous_runs_one_holder() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("hold", "provision", "sleep 1", "")]);
    let children: Vec<_> = (0..6)
        .map(|i| {
            ws.phoenix()
                .args(["run", "plan.toml", "--run-id", &format!("r{i}")])
                .spawn()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 4).count(), 5, "{codes:?}");
}

#[test]
fn a_lock_left_by_a_dead_run_is_taken_over() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step("a", "provision", "true", "")]);
    std::fs::create_dir_all(ws.state()).unwrap();
    std::fs::write(
        ws.state().join("lock"),
        r#"{"pid":999999,"host":"gone","run_id":"old","since":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let run = ws.expect(["run", "plan.toml"], 0);
    assert!(
        run.stderr().contains("took over the lock of run `old`"),
        "{}",
        run.stderr()
    );
    // And `unlock --force` removes a stale one.
    std::fs::write(
        ws.state().join("lock"),
        r#"{"pid":999999,"host":"gone","run_id":"old2","since":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let unlock = ws.expect(["unlock", "--force"], 0);
    assert!(
        unlock.stderr().contains("removed the lock of run `old2`"),
        "{}",
        unlock.stderr()
    );
    assert!(!ws.state().join("lock").exists());
    ws.expect(["unlock"], 2);
}

#[test]
fn unlock_refuses_a_live_lock() {
    let ws = Workspace::new();
    let first = ws.start_holding("live");
    let status = ws.status();
    assert_eq!(status["state"], "running");
    assert_eq!(state_of(&status, "hold"), "running");
    let unlock = ws.expect(["unlock", "--force"], 4);
    assert!(
        unlock.stderr().contains("run `live`"),
        "{}",
        unlock.stderr()
    );
    assert_eq!(first.wait_with_output().unwrap().status.code(), Some(0));
}

#[test]
fn a_torn_last_line_is_set_aside_and_damage_is_reported() {
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}{}{}",
        shell_step("a", "provision", "echo a >> ledger", ""),
        shell_step("b", "configure", "test -e go", "needs = [\"a\"]"),
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 1);
    let journal_path = ws.run_dir().join("journal.jsonl");
    let intact = std::fs::read_to_string(&journal_path).unwrap();
    std::fs::write(
        &journal_path,
        format!("{intact}{{\"type\":\"started\",\"st"),
    )
    .unwrap();
    ws.write("go", "");
    let run = ws.expect(["resume"], 0);
    assert!(
        run.stderr().contains(
            "was torn by a crash mid-write (or a write that failed part-way); set aside in"
        ),
        "{}",
        run.stderr()
    );
    let side: Vec<_> = std::fs::read_dir(ws.run_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal.torn-"))
        .collect();
    assert_eq!(side.len(), 1);
    assert_eq!(
        std::fs::read_to_string(side[0].path()).unwrap(),
        "{\"type\":\"started\",\"st"
    );
    assert_eq!(ws.read("ledger"), "a\n");

    // Damage before the last line stops resume with the line number.
    let ws = Workspace::new();
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 1);
    let journal_path = ws.run_dir().join("journal.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&journal_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[2] = "{not json".into();
    std::fs::write(&journal_path, lines.join("\n") + "\n").unwrap();
    let run = ws.expect(["resume"], 1);
    // Said once: the error names the run, its cause the line.
    assert_eq!(
        run.stderr().matches("journal line 3 is damaged").count(),
        1,
        "{}",
        run.stderr()
    );
    // `history` lists what it can read and says what it left out.
    let history = ws.expect(["history"], 0);
    assert!(
        history
            .stderr()
            .contains("is left out: journal line 3 is damaged"),
        "{}",
        history.stderr()
    );
    // Nothing was dropped: the damaged journal is as it was.
    assert_eq!(
        std::fs::read_to_string(&journal_path).unwrap(),
        lines.join("\n") + "\n"
    );

    // A newer run whose journal cannot be read stops `resume`, which must
    // not take up the older run in its place (as it would if it passed over
    // what it could not read, as on an S3 read that failed for a moment).
    let ws = Workspace::new();
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 1);
    let newer = ws.state().join("runs").join("99991231T000000Z-newer");
    std::fs::create_dir_all(newer.join("journal.jsonl")).unwrap();
    let run = ws.expect(["resume"], 1);
    assert!(
        run.stderr().contains("99991231T000000Z-newer"),
        "{}",
        run.stderr()
    );
    ws.write("go", "");
    assert_eq!(ws.read("ledger"), "a\n");
}

/// The pid a step wrote (`echo $$ > NAME`), once it has.
fn pid_written(ws: &Workspace, name: &str) -> i32 {
    let file = ws.path().join(name);
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
        }),
        "no `{name}`"
    );
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `phoenix ARGS…` killed with SIGKILL once each step named has written its
/// pid (`echo $$ > NAME.pid`), as a crash would; those pids.
fn killed_while(ws: &Workspace, args: &[&str], steps: &[&str]) -> Vec<i32> {
    let child = ws.phoenix().args(args).spawn();
    let pids = steps
        .iter()
        .map(|step| pid_written(ws, &format!("{step}.pid")))
        .collect();
    signal(child.id(), "KILL");
    child.wait_with_output().unwrap();
    pids
}

/// Whether any process of group `pgid` is alive (zombies are dead).
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after `)`.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
}

#[test]
fn a_step_gets_default_signals_but_keeps_those_phoenix_was_started_ignoring() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "look",
        "provision",
        "cat /proc/self/status > signals.txt",
        "",
    )]);
    // Started as `nohup` starts a program: SIGHUP ignored. Phoenix itself
    // handles SIGINT and SIGTERM; its step must not inherit that, and must
    // inherit the ignored SIGHUP, as exec would have it.
    Phoenix::under(ws.path(), &["sh", "-c", "trap '' HUP; exec \"$0\" \"$@\""])
        .args(["run", "plan.toml", "-q"])
        .run()
        .expect_code(0);
    let text = ws.read("signals.txt");
    let mask = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |signal: i32| 1u64 << (signal - 1);
    assert_eq!(mask("SigCgt:"), 0, "no handler survives: {text}");
    let ignored = mask("SigIgn:");
    assert_ne!(
        ignored & bit(libc::SIGHUP),
        0,
        "SIGHUP stays ignored: {text}"
    );
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        assert_eq!(
            ignored & bit(signal),
            0,
            "signal {signal} is not ignored: {text}"
        );
    }
}

/// A disk that fills up mid-run (here a file-size limit, which fails a write
/// part-way as a full disk does): the run stops with the reason, the journal
/// still ends with a whole line, no half-written report is left, and once
/// there is room the resume goes on without a torn line to set aside.
#[test]
fn a_full_disk_stops_the_run_and_leaves_the_journal_whole() {
    let ws = Workspace::new();
    let mut plan = String::from(HEADER);
    for i in 0..300 {
        let needs = if i > 0 {
            format!("needs = [\"s{}\"]\n", i - 1)
        } else {
            String::new()
        };
        plan.push_str(&format!(
            "\n[[step]]\nid = \"s{i}\"\nphase = \"provision\"\naction = \"noop\"\n{needs}"
        ));
    }
    ws.write("plan.toml", &plan);
    // 40 KiB a file (`ulimit -f` counts 512-byte blocks): the plan's copy
    // fits, the journal does not; SIGXFSZ ignored, the write fails instead.
    let run = Phoenix::under(
        ws.path(),
        &["sh", "-c", "trap '' XFSZ; ulimit -f 80; exec \"$0\" \"$@\""],
    )
    .args(["run", "plan.toml", "-q"])
    .run()
    .expect_code(1);
    let stderr = run.stderr();
    assert!(stderr.contains("cannot write the journal"), "{stderr}");
    let run_dir = ws.run_dir();
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert!(
        journal.len() > 30_000 && journal.ends_with('\n'),
        "the journal ends with a whole line"
    );
    assert!(!run_dir.join(".report.json.partial").exists());
    let resumed = ws.expect(["resume"], 0);
    assert!(!resumed.stderr().contains("torn"), "{}", resumed.stderr());
    assert_eq!(ws.status()["state"], "succeeded");
}

/// A disk full before the journal's first record (its header, with a
/// fingerprint per step) is written: nothing ran and nothing was recorded,
/// so the run says to start again, not to resume, and leaves no directory
/// to be listed as an unreadable run.
#[test]
fn a_run_whose_journal_cannot_take_its_header_leaves_nothing() {
    let ws = Workspace::new();
    let mut plan = String::from(HEADER);
    for i in 0..600 {
        plan.push_str(&format!(
            "\n[[step]]\nid = \"s{i}\"\nphase = \"provision\"\naction = \"noop\"\n"
        ));
    }
    ws.write("plan.toml", &plan);
    // 38 KiB a file: the plan's copy (some 34 KB) fits, the header (some 45
    // KB of fingerprints) does not.
    let run = Phoenix::under(
        ws.path(),
        &["sh", "-c", "trap '' XFSZ; ulimit -f 76; exec \"$0\" \"$@\""],
    )
    .args(["run", "plan.toml"])
    .run()
    .expect_code(1);
    let stderr = run.stderr();
    assert!(
        stderr.contains("could not start: its journal could not be written; nothing was recorded"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("report"),
        "no report of a run that never was: {stderr}"
    );
    let runs = std::fs::read_dir(ws.state().join("runs")).unwrap().count();
    assert_eq!(runs, 0, "no run directory is left behind");
    let history = ws.expect(["history"], 0);
    assert!(
        !history.stderr().contains("left out"),
        "{}",
        history.stderr()
    );
    ws.expect(["run", "plan.toml", "-q"], 0);
}

#[test]
fn a_step_that_asks_at_the_terminal_fails_instead_of_hanging() {
    // Phoenix on a terminal (`script` gives it one), a step that would ask
    // there, as ssh asks about a new host's key: in a background group of
    // that terminal, it was stopped by SIGTTIN and hung, unseen, until its
    // timeout; with no terminal of its own it fails to open one at once.
    let ws = Workspace::new();
    ws.write_plan(&[timed(
        shell_step(
            "asks",
            "provision",
            "read answer < /dev/tty && echo \"$answer\" >> ledger",
            "",
        ),
        "3s",
    )]);
    let phoenix = env!("CARGO_BIN_EXE_phoenix");
    let status = std::process::Command::new("script")
        .args(["-qec", &format!("{phoenix} run plan.toml"), "/dev/null"])
        .current_dir(ws.path())
        .env("PHOENIX_KILL_GRACE", "1s")
        .env_remove("PHOENIX_STATE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script (util-linux)");
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(ws.run_dir().join("logs/asks.1.log")).unwrap();
    assert!(log.contains("cannot open /dev/tty"), "{log}");
    assert!(!ws.journal().contains("timed out"), "{}", ws.journal());
}

#[test]
fn a_stopped_step_still_gets_sigterm_on_its_timeout() {
    // SIGTERM waits while a process is stopped: it is continued, so that it
    // can clean up in its grace period instead of being killed at its end.
    let ws = Workspace::new();
    ws.write_plan(&[timed(
        shell_step(
            "stopped",
            "provision",
            "trap 'echo cleaned up >> ledger; exit 1' TERM; kill -STOP $$; sleep 30",
            "",
        ),
        "1s",
    )]);
    ws.phoenix()
        .args(["run", "plan.toml"])
        .env("PHOENIX_KILL_GRACE", "3s")
        .run()
        .expect_code(1);
    assert_eq!(ws.read("ledger"), "cleaned up\n");
}

#[test]
fn a_resume_stops_what_a_killed_run_left_running_before_running_it_again() {
    // Phoenix killed with SIGKILL cannot stop its steps: they run on. The
    // resume runs a step in doubt again only once its last attempt is gone,
    // and says so; one that may not be run again by itself is named with
    // what of it still runs.
    let ws = Workspace::new();
    let attempt = "if [ -e first ]; then echo again >> ledger; else touch first; echo $$ > {id}.pid; sleep 60; fi";
    ws.write_plan(&[
        shell_step("load", "restore", &attempt.replace("{id}", "load"), ""),
        shell_step(
            "switch",
            "restore",
            &attempt
                .replace("{id}", "switch")
                .replace("first", "first_switch"),
            "idempotent = false",
        ),
    ]);
    let pids = killed_while(&ws, &["run", "plan.toml"], &["load", "switch"]);
    let (load, switch) = (pids[0], pids[1]);
    assert!(group_alive(load) && group_alive(switch), "the steps ran on");
    // A new run of the plan is told.
    let fresh = ws.expect(["run", "plan.toml", "--run-id", "fresh"], 0);
    for pid in [load, switch] {
        assert!(
            fresh
                .stderr()
                .contains("its steps' processes are still running: ")
                && fresh.stderr().contains(&format!("pid {pid} (sh)")),
            "{}",
            fresh.stderr()
        );
    }

    let blocked = ws.expect(["resume"], 1);
    assert!(
        blocked
            .stderr()
            .contains(&format!("`switch` (still running: pid {switch} (sh)")),
        "{}",
        blocked.stderr()
    );
    assert!(
        group_alive(load),
        "nothing is stopped before the operator decides"
    );

    let resumed = ws.expect(["resume", "--rerun", "switch"], 0);
    for (id, pid) in [("load", load), ("switch", switch)] {
        assert!(
            resumed.stderr().contains(&format!(
                "step `{id}`: its last attempt is still running (pid {pid} (sh)"
            )),
            "{}",
            resumed.stderr()
        );
        assert!(!group_alive(pid), "`{id}`'s last attempt was stopped");
    }
    assert_eq!(ws.read("ledger"), "again\n".repeat(4));
}

#[test]
fn a_check_looks_only_once_the_last_attempt_is_stopped() {
    // The killed run's attempt still runs and looks done to its check (a
    // database is up while its restore goes on); stopped, it is not.
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "restore_db",
        "restore",
        "if [ -e first ]; then echo again >> ledger; touch up; else touch first; trap 'rm -f up; exit 1' TERM; touch up; echo $$ > attempt.pid; sleep 60 & wait; fi",
        "check = [\"test\", \"-e\", \"up\"]",
    )]);
    killed_while(&ws, &["run", "plan.toml"], &["attempt"]);
    let resumed = ws.expect(["resume"], 0);
    assert!(
        resumed
            .stderr()
            .contains("its check failed: running it again"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "again\n");
}

#[test]
fn abandoning_a_killed_drill_stops_what_it_left_running() {
    // Nothing of a drill given up goes on beside its teardown.
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step("load", "restore", "echo $$ > load.pid; sleep 60", ""),
        shell_step("remove", "teardown", "echo removed >> ledger", ""),
    ]);
    let load = killed_while(&ws, &["run", "plan.toml", "--drill"], &["load"])[0];
    let abandoned = ws.expect(["resume", "--abandon"], 1);
    assert!(
        abandoned.stderr().contains(&format!(
            "step `load`: its last attempt is still running (pid {load} (sh)"
        )) && abandoned
            .stderr()
            .contains("stopping it, as the drill is abandoned"),
        "{}",
        abandoned.stderr()
    );
    assert!(
        !abandoned.stderr().contains("running it again"),
        "{}",
        abandoned.stderr()
    );
    assert!(!group_alive(load));
    assert_eq!(ws.read("ledger"), "removed\n");
}

#[test]
fn a_step_in_doubt_whose_outputs_are_read_runs_again_though_its_check_passes() {
    // A check that passes says the effect is there, but this one gives no
    // outputs: a step that reads them would fail on their absence.
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "net",
            "provision",
            "echo vpc=vpc-7 >> \"$PHOENIX_OUTPUT\"; if [ ! -e first ]; then touch first; echo $$ > net.pid; sleep 60; fi",
            "check = [\"true\"]",
        ),
        shell_step(
            "host",
            "provision",
            "echo {{ steps.net.outputs.vpc }} >> ledger",
            "needs = [\"net\"]",
        ),
    ]);
    killed_while(&ws, &["run", "plan.toml"], &["net"]);
    let resumed = ws.expect(["resume"], 0);
    assert!(
        resumed.stderr().contains("step `net` was in doubt; its check passed, but gave no `vpc`, which `host` reads (a check gives outputs in `$PHOENIX_OUTPUT`, as its step does): running it again"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "vpc-7\n");
}

/// A check that cannot be run (no such program, or an output it reads is
/// missing) or does not finish says nothing of the step's effect: a step
/// that must not run twice is then not run again by itself, as if it had no
/// check; one that may is run again, saying why.
#[test]
fn a_check_that_gives_no_answer_does_not_rerun_a_step_that_must_not_run_twice() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "switch",
            "provision",
            "echo switch >> ledger",
            "check = [\"no-such-probe\", \"--dns\"]\nidempotent = false",
        ),
        shell_step(
            "warm",
            "provision",
            "echo warm >> ledger",
            "check = [\"no-such-probe\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 0);
    ws.crash_before_finishes();
    let stopped = ws.expect(["resume"], 1);
    assert!(
        stopped.stderr().contains(
            "step `switch` was in doubt, and its check could not be run (`no-such-probe`: "
        ),
        "{}",
        stopped.stderr()
    );
    assert!(
        stopped.stderr().contains("which says nothing of whether it is done; it must not run twice (`idempotent = false`), so phoenix will not run it again by itself. Make the check work and resume, or resume with `--rerun switch` or `--skip switch`"),
        "{}",
        stopped.stderr()
    );
    // The two run side by side: the ledger's order is theirs.
    let ledger = |ws: &Workspace| {
        let mut lines: Vec<String> = ws.read("ledger").lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(ledger(&ws), ["switch", "warm"], "nothing ran again");
    let resumed = ws.expect(["resume", "--skip", "switch"], 0);
    assert!(
        resumed
            .stderr()
            .contains("step `warm` was in doubt; its check could not be run (`no-such-probe`: "),
        "{}",
        resumed.stderr()
    );
    assert!(
        resumed.stderr().contains("): running it again"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ledger(&ws), ["switch", "warm", "warm"]);
}

/// A check probes what its step made with what the step's command is given:
/// the step's `env` (a password, a kubeconfig), not only phoenix's own.
#[test]
fn a_check_gets_its_steps_env() {
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "made",
        "provision",
        "echo made >> ledger",
        "env = { PROBE_TOKEN = \"t-{{ run.drill }}\" }\ncheck = [\"sh\", \"-c\", \"test \\\"$PROBE_TOKEN\\\" = t-false\"]\nidempotent = false",
    )]);
    ws.expect(["run", "plan.toml"], 0);
    ws.crash_before_finishes();
    let resumed = ws.expect(["resume"], 0);
    assert!(
        resumed
            .stderr()
            .contains("step `made` was in doubt; its check passed: counted as done"),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "made\n");
}

/// A check that sends too much to `PHOENIX_OUTPUT` passes with none of its
/// outputs taken, saying why: a step that reads one runs its producer again
/// (a failed check would run even a step that must not run twice).
#[test]
fn a_checks_outputs_over_a_mebibyte_are_not_taken() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "net",
            "provision",
            "echo net >> ledger; echo vpc=vpc-7 >> \"$PHOENIX_OUTPUT\"",
            "check = [\"sh\", \"-c\", \"echo vpc=vpc-7 >> $PHOENIX_OUTPUT; head -c 3000000 /dev/zero >> $PHOENIX_OUTPUT\"]",
        ),
        shell_step(
            "host",
            "provision",
            "echo {{ steps.net.outputs.vpc }} >> ledger",
            "needs = [\"net\"]",
        ),
    ]);
    ws.expect(["run", "plan.toml"], 0);
    ws.crash_before_finishes();
    let resumed = ws.expect(["resume"], 0);
    for said in [
        "step `net`: its check passed, but `PHOENIX_OUTPUT` holds 2.9 MiB, more than the 1 MiB outputs may take",
        "step `net` was in doubt; its check passed, but gave no `vpc`, which `host` reads",
    ] {
        assert!(resumed.stderr().contains(said), "{}", resumed.stderr());
    }
    assert_eq!(ws.read("ledger"), "net\nvpc-7\nnet\nvpc-7\n");
}

/// The probe that finds what a step in doubt made gives what it would have
/// said of it: the check's `PHOENIX_OUTPUT` lines are the step's outputs, for
/// this resume and every later one. A step that must not run twice (the
/// usual reason for a check) then needs no `--rerun` to go on.
#[test]
fn a_check_that_passes_gives_the_steps_outputs() {
    let ws = Workspace::new();
    let probe =
        "check = [\"sh\", \"-c\", \"test -e first && echo vpc=vpc-7 >> \\\"$PHOENIX_OUTPUT\\\"\"]";
    ws.write_plan(&[
        shell_step(
            "net",
            "provision",
            "echo net >> ledger; if [ ! -e first ]; then touch first; echo $$ > net.pid; sleep 60; fi; echo vpc=vpc-7 >> \"$PHOENIX_OUTPUT\"",
            &format!("{probe}\nidempotent = false"),
        ),
        shell_step(
            "db",
            "provision",
            "echo db >> ledger; if [ ! -e first-db ]; then touch first-db; echo $$ > db.pid; sleep 60; fi; echo vpc=vpc-7 >> \"$PHOENIX_OUTPUT\"",
            &probe.replace("first", "first-db"),
        ),
        shell_step(
            "host",
            "configure",
            "echo host {{ steps.net.outputs.vpc }} {{ steps.db.outputs.vpc }} >> ledger",
            "needs = [\"net\", \"db\"]",
        ),
        shell_step(
            "later",
            "configure",
            "test -e open && echo later {{ steps.net.outputs.vpc }} >> ledger",
            "needs = [\"host\"]",
        ),
    ]);
    killed_while(&ws, &["run", "plan.toml"], &["net", "db"]);
    let resumed = ws.expect(["resume"], 1);
    for step in ["net", "db"] {
        assert!(
            resumed.stderr().contains(&format!(
                "step `{step}` was in doubt; its check passed: counted as done"
            )),
            "{}",
            resumed.stderr()
        );
    }
    let ledger = ws.read("ledger");
    let mut lines: Vec<&str> = ledger.lines().collect();
    // The two started side by side: either may have written first.
    lines[..2].sort_unstable();
    assert_eq!(
        lines,
        ["db", "net", "host vpc-7 vpc-7"],
        "neither ran again"
    );
    let status = ws.status();
    assert_eq!(step_of(&status, "net")["outputs"]["vpc"], "vpc-7");
    let text = ws.expect(["status"], 0).stdout();
    assert!(text.contains("in doubt; its check found it done"), "{text}");
    // A later resume takes the outputs up from the journal.
    ws.write("open", "");
    ws.expect(["resume"], 0);
    assert!(ws
        .read("ledger")
        .ends_with("host vpc-7 vpc-7\nlater vpc-7\n"));
    assert!(!ws.run_dir().join("tmp/net.check.out").exists());
}

#[test]
fn a_step_in_doubt_that_must_not_run_twice_stops_the_resume_when_its_check_gives_no_output_read() {
    let ws = Workspace::new();
    ws.write_plan(&[
        shell_step(
            "switch",
            "provision",
            "echo switched >> ledger; if [ ! -e first ]; then touch first; echo $$ > switch.pid; sleep 60; fi; echo at=noon >> \"$PHOENIX_OUTPUT\"",
            "check = [\"true\"]\nidempotent = false",
        ),
        shell_step(
            "after",
            "provision",
            "echo after {{ steps.switch.outputs.at }} >> ledger",
            "needs = [\"switch\"]",
        ),
    ]);
    killed_while(&ws, &["run", "plan.toml"], &["switch"]);
    let resumed = ws.expect(["resume"], 1);
    assert!(
        resumed.stderr().contains(
            "step `switch` was in doubt, and its check passed, but gave no `at`, which `after` reads; it must not run twice (`idempotent = false`), so phoenix will not run it again by itself. Make its check write `at=…` to `$PHOENIX_OUTPUT` (as the step does), or resume with `--rerun switch`"
        ),
        "{}",
        resumed.stderr()
    );
    assert_eq!(ws.read("ledger"), "switched\n", "not run a second time");
    let status = ws.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(state_of(&status, "switch"), "in_doubt");
    ws.expect(["resume", "--rerun", "switch"], 0);
    assert_eq!(ws.read("ledger"), "switched\nswitched\nafter noon\n");
}
