//! Child process groups: every command step runs in a group of its own, so a
//! timeout or an interrupt reaches the whole tree it started.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a group gets between SIGTERM and SIGKILL (`PHOENIX_KILL_GRACE`).
pub fn grace() -> Duration {
    crate::settings::kill_grace()
}

/// The process groups of running steps, for the second Ctrl-C.
#[derive(Default)]
pub struct ProcessGroups {
    groups: Mutex<HashSet<i32>>,
}

impl ProcessGroups {
    pub fn insert(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    pub fn remove(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pgid);
    }

    /// SIGKILL to every group still running.
    pub fn kill_all(&self) {
        for pgid in self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            signal_group(*pgid, Signal::SIGKILL);
        }
    }
}

pub fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Kills a process group when dropped, unless disarmed first: for a child
/// whose waiting may be given up (a check past its step's timeout, or
/// stopped by Ctrl-C), so that nothing it started goes on behind the run.
pub struct KillOnDrop {
    pgid: Option<i32>,
}

impl KillOnDrop {
    pub fn new(pgid: i32) -> Self {
        KillOnDrop { pgid: Some(pgid) }
    }

    /// The group ended as it should: nothing to kill.
    pub fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}
