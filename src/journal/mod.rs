//! The state: runs, their checkpoint journals, and the lock that admits one live
//! run at a time.
//!
//! ```text
//! STATE/lock                      held while a run is active
//! STATE/runs/RUN_ID/plan.toml     the plan as it was at start
//! STATE/runs/RUN_ID/journal.jsonl append-only checkpoint journal
//! STATE/runs/RUN_ID/logs/         captured output of every step attempt
//! STATE/runs/RUN_ID/work/         `{{ run.dir }}`: the run's scratch directory
//! ```
//!
//! The executor sees only [`JournalBackend`] (write, then sync) and
//! [`StateStore`] (runs, lock): a second backend, such as an object store,
//! implements those two and nothing else changes.

use std::path::{Path, PathBuf};

pub mod local;
pub mod lock;
pub mod reader;
pub mod record;
pub mod s3;
pub mod writer;

pub use lock::{LockError, LockInfo};
pub use reader::{JournalError, RunLog};
pub use record::Record;
pub use writer::JournalWriter;

/// Appends whole lines to one run's journal.
///
/// Writing and making durable are two steps, so that records are written where
/// they are made (no thread hop per record) while syncs, which may take a
/// network round trip, run on the writer's own thread.
pub trait JournalBackend: Send + 'static {
    /// Appends `bytes` (complete lines) after everything written before,
    /// without waiting for durability. Called with the journal's lock held by
    /// whichever thread made the record: it must be quick (a write to the page
    /// cache, a copy into memory).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// The work that makes everything written so far durable. The writer runs
    /// it outside the lock, one job at a time and in the order they were made,
    /// while later records are written; once one fails, nothing more is
    /// written or synced.
    fn sync(&mut self) -> SyncJob;
}

/// Makes a journal's written bytes durable: see [`JournalBackend::sync`].
pub type SyncJob = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

/// Where runs are kept.
pub trait StateStore: Send + Sync {
    /// A description for messages: the directory or URL.
    fn describe(&self) -> String;
    /// Makes the directories of a new run and keeps a copy of its plan.
    fn create_run(&self, run_id: &str, plan_text: &str) -> Result<(), StateError>;
    /// The journal of a run, opened for appending.
    fn journal(&self, run_id: &str) -> Result<Box<dyn JournalBackend>, StateError>;
    /// The whole journal of a run as it is now.
    fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StateError>;
    /// Cuts the journal back to `len` bytes, keeping what is cut in a side file.
    fn set_aside_tail(&self, run_id: &str, len: u64) -> Result<PathBuf, StateError>;
    /// Writes a whole file of a run (a report), replacing it atomically.
    fn write_file(&self, run_id: &str, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError>;
    /// Removes what [`StateStore::create_run`] made for a run whose journal
    /// could not take even its header: nothing of it was recorded.
    fn discard_run(&self, _run_id: &str) {}
    /// The plan copy kept at the run's start.
    fn read_plan(&self, run_id: &str) -> Result<String, StateError>;
    /// Every run id in the state, in no particular order.
    fn run_ids(&self) -> Result<Vec<String>, StateError>;
    /// The local directory of a run: logs and scratch space.
    fn run_dir(&self, run_id: &str) -> PathBuf;
    /// Where a run is kept, for messages: its directory or URL.
    fn location(&self, run_id: &str) -> String {
        self.run_dir(run_id).display().to_string()
    }
    /// The local directory holding a run's logs, as complete as the state
    /// allows (a remote state fetches their tails).
    fn logs_dir(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("logs")
    }
    /// Makes the run's logs safe in the state (a remote state copies them up).
    fn sync_logs(&self, _run_id: &str) -> Result<(), StateError> {
        Ok(())
    }
    /// Takes the lock, or says who holds it.
    fn lock(&self, info: &LockInfo) -> Result<Box<dyn StateLock>, LockError>;
    /// Removes a lock whose run is gone; refuses a live one unless its lock id
    /// is given (a remote lease, whose holder's life cannot be seen from here).
    fn force_unlock(&self, lock_id: Option<&str>) -> Result<Option<LockInfo>, LockError>;
    /// The current lock holder, if any.
    fn lock_holder(&self) -> Option<LockInfo>;
}

/// A held lock, released when dropped.
pub trait StateLock: Send {
    /// A lock taken over from a run that was gone: said once as a warning.
    fn took_over(&self) -> Option<&LockInfo>;
    /// Calls `callback` once if the lock is lost while held: a lease that could
    /// not be renewed, or was taken over. A local lock is never lost.
    fn on_lost(&self, _callback: Box<dyn FnOnce(String) + Send>) {}
    /// Why the lock was lost, if it was.
    fn lost(&self) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no run `{0}` in the state")]
    NoRun(String),
    #[error("no state at `{0}`: no run has used it yet (see --state and PHOENIX_STATE)")]
    NoState(String),
    #[error("`{0}`: not a state location; use a directory or s3://BUCKET/PREFIX")]
    Unsupported(String),
    /// A local state directory that cannot be made or used: bad usage, not
    /// a failed run.
    #[error("`{location}` cannot hold the state (see --state and PHOENIX_STATE)")]
    Location {
        location: String,
        #[source]
        source: Box<StateError>,
    },
    #[error("state `{url}`: {message}")]
    Remote { url: String, message: String },
    #[error("a run `{0}` exists already; choose another --run-id")]
    RunExists(String),
}

impl StateError {
    pub fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> StateError + 'a {
        move |source| StateError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens the state named by `--state`: a directory (created when `create`) or
/// `s3://BUCKET/PREFIX`.
pub fn open(location: &str, create: bool) -> Result<Box<dyn StateStore>, StateError> {
    if location.starts_with("s3://") {
        return Ok(Box::new(s3::S3State::open(location, create)?));
    }
    if location.contains("://") {
        return Err(StateError::Unsupported(location.to_string()));
    }
    if !create && !Path::new(location).is_dir() {
        return Err(StateError::NoState(location.to_string()));
    }
    let state = local::LocalState::new(location).map_err(|e| StateError::Location {
        location: location.to_string(),
        source: Box::new(e),
    })?;
    Ok(Box::new(state))
}
