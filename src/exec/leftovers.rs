//! What a run's steps left running when the phoenix that ran them was killed
//! (a crash, `kill -9`, the OOM killer, `--chaos kill`): their processes go
//! on without it. A resume that ran such a step again would run it beside its
//! last attempt: two `pg_restore`s into one database, two `terraform apply`s.
//!
//! They are found by the variables every process of a step inherits
//! (`PHOENIX_RUN_ID` and `PHOENIX_RUN_DIR`, which is in the state, so that a
//! run of the same id in another state is not taken for this one; and
//! `PHOENIX_STEP`), in `/proc`: so on this machine, and
//! among the processes whose environment phoenix may read (its user's). A
//! process that cleared its environment is reached through its step's
//! process group, when another of the group is found.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// A process started for one of the run's steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub pgid: i32,
    pub step: String,
    /// The program's name, as `ps` shows it.
    pub name: String,
}

/// The processes on this machine started for the steps of run `run_id`,
/// whose `{{ run.dir }}` is `run_dir`.
pub fn find(run_id: &str, run_dir: &Path) -> Vec<Leftover> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Leftover> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| {
            let step = step_of(pid, run_id, run_dir)?;
            let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Some(Leftover {
                pid,
                pgid: pgid.as_raw(),
                step,
                name: name.trim_end().to_string(),
            })
        })
        .collect();
    found.sort_by_key(|l| l.pid);
    found
}

/// The step of the run that process `pid` was started for, if any. A
/// process that has exited (a zombie) has no environment left: none.
fn step_of(pid: i32, run_id: &str, run_dir: &Path) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let (mut id, mut dir, mut step) = (false, false, None);
    for entry in environ.split(|b| *b == 0) {
        if let Some(value) = entry.strip_prefix(b"PHOENIX_RUN_ID=") {
            id = value == run_id.as_bytes();
        } else if let Some(value) = entry.strip_prefix(b"PHOENIX_RUN_DIR=") {
            dir = value == run_dir.as_os_str().as_bytes();
        } else if let Some(value) = entry.strip_prefix(b"PHOENIX_STEP=") {
            step = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    step.filter(|_| id && dir)
}

/// Stops `leftovers` as a timed-out step is stopped: SIGTERM (and SIGCONT,
/// for one that is stopped) to each process and its group, then SIGKILL to
/// what is still there after `grace`. Returns once they are gone, or once
/// SIGKILL was sent.
pub async fn stop(leftovers: &[Leftover], grace: Duration) {
    let own_group = nix::unistd::getpgrp().as_raw();
    let groups: BTreeSet<i32> = leftovers
        .iter()
        .map(|l| l.pgid)
        .filter(|&g| g > 1 && g != own_group)
        .collect();
    let signal_all = |signal: Signal| {
        for &group in &groups {
            let _ = killpg(Pid::from_raw(group), signal);
        }
        for leftover in leftovers {
            let _ = kill(Pid::from_raw(leftover.pid), signal);
        }
    };
    signal_all(Signal::SIGTERM);
    signal_all(Signal::SIGCONT);
    let until = tokio::time::Instant::now() + grace;
    while leftovers.iter().any(still_there) {
        if tokio::time::Instant::now() >= until {
            signal_all(Signal::SIGKILL);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the group started and that cleared its environment.
    for &group in &groups {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// Whether the process is still the one found: its pid not reused, not yet
/// exited (a zombie waiting for its new parent to reap it is gone).
fn still_there(leftover: &Leftover) -> bool {
    let environ = std::fs::read(format!("/proc/{}/environ", leftover.pid)).unwrap_or_default();
    environ
        .split(|b| *b == 0)
        .any(|entry| entry.strip_prefix(b"PHOENIX_STEP=") == Some(leftover.step.as_bytes()))
}

/// `pid 4242 (pg_restore), pid 4250 (sh)`: for messages.
pub fn describe<'a>(leftovers: impl IntoIterator<Item = &'a Leftover>) -> String {
    leftovers
        .into_iter()
        .map(|l| format!("pid {} ({})", l.pid, l.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[tokio::test]
    async fn a_steps_processes_are_found_and_stopped() {
        let dir = Path::new("/state/runs/leftover-test-run/work");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & wait"])
            .env("PHOENIX_RUN_ID", "leftover-test-run")
            .env("PHOENIX_RUN_DIR", "/state/runs/leftover-test-run/work")
            .env("PHOENIX_STEP", "load")
            .process_group(0)
            .spawn()
            .unwrap();
        // Both the shell and its `sleep`, once the shell has started it.
        let mut found = Vec::new();
        for _ in 0..250 {
            found = find("leftover-test-run", dir);
            if found.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|l| l.step == "load" && l.pgid == child.id() as i32));
        assert!(find("another-run", dir).is_empty());
        // The same run id in another state is another run.
        assert!(find(
            "leftover-test-run",
            Path::new("/other/runs/leftover-test-run/work")
        )
        .is_empty());
        // The shell ignores SIGTERM: it is killed after the grace period.
        stop(&found, Duration::from_millis(200)).await;
        let status = child.wait().unwrap();
        assert!(!status.success());
        for _ in 0..250 {
            if find("leftover-test-run", dir).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("still running: {:?}", find("leftover-test-run", dir));
    }
}
