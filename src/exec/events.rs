//! What the executor tells the world. The executor never prints: the terminal
//! view and the JSON log both consume these events.

use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Event {
    RunStarted {
        run_id: String,
        plan: String,
        steps: usize,
        drill: bool,
        resumed: bool,
        /// Steps per phase that this run will execute, for progress.
        per_phase: Vec<(crate::plan::Phase, usize)>,
    },
    StepStarted {
        step: String,
        phase: crate::plan::Phase,
        attempt: u32,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        error: String,
        delay: Duration,
    },
    StepFinished {
        step: String,
        phase: crate::plan::Phase,
        attempt: u32,
        succeeded: bool,
        /// No attempt follows this one.
        last: bool,
        duration: Duration,
        error: Option<String>,
        /// The last lines of the step's output, on failure.
        log_tail: Option<String>,
        log: Option<std::path::PathBuf>,
    },
    StepSkipped {
        step: String,
        phase: crate::plan::Phase,
        reason: String,
    },
    Paused {
        step: String,
        prompt: String,
    },
    /// Bytes moved so far by a running restore.
    Progress {
        step: String,
        done: u64,
        total: u64,
        elapsed: Duration,
    },
    /// Something an operator should read that is not a step's own story.
    Warning(String),
    Info(String),
    RunFinished {
        run_id: String,
        result: crate::journal::record::RunResult,
        duration: Duration,
    },
}

pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
    /// Called with `true` before an interactive prompt and `false` after it,
    /// so that a progress display steps aside while a person answers. Lines
    /// emitted meanwhile are still written.
    fn prompting(&self, _on: bool) {}
}
