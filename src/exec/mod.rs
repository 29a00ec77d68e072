//! The executor: runs a checked plan's steps as soon as their dependencies
//! allow, within the concurrency limits, checkpointing every step in the journal.
//!
//! - [`scheduler`]: the walker: which steps are ready, limits and pools, what a
//!   failure or an interrupt stops, teardown after everything else.
//! - [`attempt`]: one step from first attempt to last: timeout, retries with
//!   backoff, chaos, the durable finish record.
//! - [`context`]: what a step's `{{ }}` can read.
//! - [`secrets`], [`process`], [`signals`], [`chaos`]: the pieces they share.
//! - [`leftovers`]: what a killed phoenix's steps left running, for a resume.
//!
//! Actions never see the scheduler: they get a [`StepContext`] and return outputs
//! or an [`ActionError`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::journal::record::Outputs;
use crate::journal::JournalWriter;
use crate::plan::interpolate::RenderError;
use crate::plan::source::Spanned;
use crate::plan::{Plan, Step};

pub mod attempt;
pub mod chaos;
pub mod context;
pub mod events;
pub mod leftovers;
pub mod outputs;
pub mod process;
pub mod scheduler;
pub mod secrets;
pub mod signals;
pub mod spawn;
#[cfg(test)]
mod tests;

pub use events::{Event, EventSink};

/// The run as its steps see it: `{{ run.* }}` and where files go.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub id: String,
    /// `{{ run.dir }}`: the run's scratch directory.
    pub dir: PathBuf,
    pub drill: bool,
    pub logs: PathBuf,
    /// Short-lived files (a step's `PHOENIX_OUTPUT`), removed once read.
    pub tmp: PathBuf,
}

impl RunInfo {
    /// What every process Phoenix starts for a step (its command, its
    /// `check`) gets over the environment it inherits: the step's own `env`,
    /// then its `PHOENIX_OUTPUT` file and what it is told of the run and the
    /// step (Phoenix's, over any `env` that names them).
    pub fn environment<'a>(
        &'a self,
        step: &'a str,
        own: impl IntoIterator<Item = (&'a str, &'a str)>,
        output: &'a std::path::Path,
    ) -> Vec<(&'a str, &'a std::ffi::OsStr)> {
        use std::ffi::OsStr;
        let mut env: Vec<(&str, &OsStr)> = own
            .into_iter()
            .map(|(key, value)| (key, OsStr::new(value)))
            .collect();
        env.extend([
            ("PHOENIX_OUTPUT", output.as_os_str()),
            ("PHOENIX_RUN_ID", OsStr::new(&self.id)),
            ("PHOENIX_RUN_DIR", self.dir.as_os_str()),
            ("PHOENIX_STEP", OsStr::new(step)),
        ]);
        env
    }
}

/// How gates are answered.
#[derive(Clone, Debug, Default)]
pub struct Approvals {
    /// `--yes`: every gate.
    pub all: bool,
    /// `--approve STEP` on resume.
    pub steps: HashSet<String>,
    /// Whether a person is at a terminal to ask.
    pub interactive: bool,
}

/// What a done step gives the steps after it.
#[derive(Clone, Debug, Default)]
pub struct StepOutputs {
    /// Masked: an output that held a secret's value holds `***` in its place.
    pub values: Outputs,
    /// The outputs that held a secret's value. A step that reads one fails
    /// instead of being given the masked value: `***` in place of a password
    /// in a config, or in a shell script (where it is a glob), is never what
    /// the plan meant. The journal names them too (`withheld`), since a
    /// resume reads back only the masked values.
    pub withheld: BTreeSet<String>,
}

/// Everything the steps of one run share.
pub struct Shared {
    pub plan: Arc<Plan>,
    pub run: RunInfo,
    pub journal: JournalWriter,
    pub events: Arc<dyn EventSink>,
    pub masker: Arc<secrets::Masker>,
    pub secrets: secrets::Secrets,
    /// Outputs of the steps that have succeeded, by step id.
    pub outputs: RwLock<HashMap<String, StepOutputs>>,
    /// What steps resolved on their first run, by step id.
    pub frozen: Mutex<HashMap<String, BTreeMap<String, serde_json::Value>>>,
    pub processes: process::ProcessGroups,
    /// Cancelled on the first SIGINT or SIGTERM.
    pub interrupt: CancellationToken,
    pub chaos: Option<chaos::Chaos>,
    pub approvals: Approvals,
    pub keep_going: bool,
    pub concurrency: usize,
    http: std::sync::OnceLock<reqwest::Client>,
    /// Clients trusting a plan's own CA certificates, by their file.
    http_trusting: Mutex<HashMap<PathBuf, reqwest::Client>>,
    spawner: std::sync::OnceLock<spawn::Spawner>,
    output_files: std::sync::OnceLock<outputs::OutputFiles>,
    /// The run's last steps are starting: see `last_steps`.
    last_steps: std::sync::atomic::AtomicBool,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: Arc<Plan>,
        run: RunInfo,
        journal: JournalWriter,
        events: Arc<dyn EventSink>,
        masker: Arc<secrets::Masker>,
        chaos: Option<chaos::Chaos>,
        approvals: Approvals,
        keep_going: bool,
        concurrency: usize,
    ) -> Self {
        let secrets = secrets::Secrets::new(plan.secrets.clone(), plan.dir.clone());
        Shared {
            plan,
            run,
            journal,
            events,
            masker,
            secrets,
            outputs: RwLock::new(HashMap::new()),
            frozen: Mutex::new(HashMap::new()),
            processes: process::ProcessGroups::default(),
            interrupt: CancellationToken::new(),
            chaos,
            approvals,
            keep_going,
            concurrency,
            http: std::sync::OnceLock::new(),
            http_trusting: Mutex::new(HashMap::new()),
            spawner: std::sync::OnceLock::new(),
            output_files: std::sync::OnceLock::new(),
            last_steps: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts command steps' processes from the environment Phoenix had when
    /// the run began (read once, at the first command step).
    pub fn spawner(&self) -> std::io::Result<&spawn::Spawner> {
        if let Some(spawner) = self.spawner.get() {
            return Ok(spawner);
        }
        let spawner = spawn::Spawner::new()?;
        Ok(self.spawner.get_or_init(|| spawner))
    }

    /// The watch on `run.tmp` that tells which steps wrote their
    /// `PHOENIX_OUTPUT` file (begun at the first command step, before its
    /// process starts).
    pub fn output_files(&self) -> &outputs::OutputFiles {
        self.output_files.get_or_init(|| {
            if self.last_steps.load(std::sync::atomic::Ordering::Relaxed) {
                outputs::OutputFiles::unwatched()
            } else {
                outputs::OutputFiles::watch(&self.run.tmp)
            }
        })
    }

    /// Told by the walker when few steps are left to start: what is kept up
    /// for many steps, and costs time to take down at the end, is taken down
    /// while they run (the watch on `PHOENIX_OUTPUT` files: its last steps,
    /// at most a few dozen, open their files instead).
    pub fn last_steps(&self) {
        self.last_steps
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(files) = self.output_files.get() {
            files.stop();
        }
    }

    /// One HTTP client for the run: connections are reused between steps.
    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(reqwest::Client::new)
    }

    /// A client that trusts the CA certificates of the PEM file at `path`
    /// as well as the system's (`ca_cert` of an `http` step): made once per
    /// file and run, as [`Shared::http`] is.
    pub fn http_trusting(&self, path: &std::path::Path) -> Result<reqwest::Client, ActionError> {
        let mut clients = self.http_trusting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(path) {
            return Ok(client.clone());
        }
        let fail = |source: std::io::Error| ActionError::Io {
            action: "use the CA certificates (`ca_cert`) in",
            path: path.to_path_buf(),
            source,
        };
        let pem = std::fs::read(path).map_err(fail)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if certs.is_empty() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            )));
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| fail(std::io::Error::other(e)))?;
        clients.insert(path.to_path_buf(), client.clone());
        Ok(client)
    }

    /// An error as it may be written anywhere: its causes joined, secrets masked.
    pub fn describe(&self, error: &dyn std::error::Error) -> String {
        self.masker.mask(&crate::error_text(error)).into_owned()
    }
}

/// What an action gets: its step, the run, and a way to render `{{ }}`.
pub struct StepContext<'a> {
    pub shared: &'a Shared,
    pub step: &'a Step,
    pub attempt: u32,
    /// Cancelled on timeout or interrupt: the action must stop promptly.
    pub cancel: CancellationToken,
    /// Where this attempt's output is captured.
    pub log_path: PathBuf,
    pub(crate) context: minijinja::Value,
}

impl StepContext<'_> {
    pub fn render(&self, text: &Spanned<String>) -> Result<String, ActionError> {
        crate::plan::interpolate::render(text, &self.context).map_err(ActionError::Render)
    }

    /// A path from the plan, rendered, relative to the plan file's directory.
    pub fn path(&self, text: &Spanned<String>) -> Result<PathBuf, ActionError> {
        Ok(self.shared.plan.dir.join(self.render(text)?))
    }

    /// What this step froze on an earlier attempt or run.
    pub fn frozen(&self) -> Option<BTreeMap<String, serde_json::Value>> {
        self.shared
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(self.step.id.as_str())
            .cloned()
    }

    /// Records what this step resolved, durably, before it acts on it.
    pub async fn freeze(
        &self,
        values: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), ActionError> {
        self.shared
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.step.id.value.clone(), values.clone());
        self.shared
            .journal
            .append_durable(crate::journal::Record::Frozen {
                step: self.step.id.value.clone(),
                values,
            })
            .await
            .map_err(|e| ActionError::Journal(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Render(RenderError),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exited with status {0}")]
    Exit(i32),
    #[error("killed by signal {0}")]
    Signal(String),
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}, expected {expected:?}{}", body.as_deref().map(|b| format!(": {b}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        expected: Vec<u16>,
        body: Option<String>,
    },
    #[error("output `{name}`: the response has nothing at JSON pointer `{pointer}`")]
    Pointer { name: String, pointer: String },
    #[error("output `{name}`: the response is not JSON")]
    NotJson { name: String },
    #[error("`{target}` was not ready after {} (last try: {last})", humantime::format_duration(*.after))]
    NotReady {
        target: String,
        after: Duration,
        /// Why the last try failed: refused, no such host, no such file.
        last: String,
    },
    #[error("approval denied at the prompt")]
    Denied,
    /// Not a failure: the run pauses here until the gate is approved.
    #[error("waiting for approval: {prompt}")]
    AwaitingApproval { prompt: String },
    #[error("chaos: injected failure")]
    Chaos,
    #[error("restore: {0}")]
    Restore(String),
    #[error(transparent)]
    Store(crate::stores::StoreError),
    #[error(transparent)]
    Unpack(crate::unpack::UnpackError),
    #[error("git: {0}")]
    Git(String),
    #[error("template `{file}`{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("the journal failed: {0}")]
    Journal(String),
    /// What the step gave as outputs cannot be taken.
    #[error("{0}")]
    Outputs(String),
    #[error("reads the output `{key}` of `{step}`, which held a secret's value and is not passed on (it would arrive as `***`): read the secret itself with `{{{{ secrets.NAME }}}}`")]
    Withheld { step: String, key: String },
}
