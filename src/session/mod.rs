//! A session: one invocation of `phoenix run` or `phoenix resume` driving a run
//! from lock to final record.
//!
//! It owns the order of things around the executor: take the lock, create or
//! read the run's journal, decide where each step starts (the resume rules),
//! start the journal writer and the signal watcher, execute, write the end
//! record, release the lock. What is particular to a resume is beside it:
//! deciding where each step starts ([`resume`]) and what to do with the
//! steps that were running when the run stopped ([`in_doubt`]).

mod in_doubt;
mod resume;

pub use resume::resume;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::actions::approval::host_name;
use crate::exec::attempt::withhold_secrets;
use crate::exec::chaos::{Chaos, ChaosSpec};
use crate::exec::leftovers::{self, Leftover};
use crate::exec::scheduler::{self, Start};
use crate::exec::secrets::Masker;
use crate::exec::spawn::ShortSlice;
use crate::exec::{Approvals, Event, EventSink, RunInfo, Shared, StepOutputs};
use crate::journal::reader::RunView;
use crate::journal::record::{Header, Outputs, Record, RunResult, FORMAT_VERSION};
use crate::journal::writer::IdleWrites;
use crate::journal::{
    JournalError, JournalWriter, LockError, LockInfo, RunLog, StateError, StateLock, StateStore,
};
use crate::plan::load::Loaded;
use crate::plan::model::DEFAULT_CONCURRENCY;
use crate::plan::validate::hex;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("run `{run}`: its journal cannot be read")]
    Journal {
        run: String,
        #[source]
        source: JournalError,
    },
    #[error("{0}")]
    Usage(String),
    #[error("the plan of run `{run}` is no longer valid{}", if *.from_state { " (the copy kept in the state)" } else { "; fix it, or resume with `--plan FILE`" })]
    InvalidPlan { run: String, from_state: bool },
    #[error(
        "{} in doubt and not idempotent: {}; it may or may not have taken effect, so phoenix will not run it again by itself. Check it, then resume with `--rerun STEP` or `--skip STEP`",
        if steps.len() == 1 { "this step was running when the run stopped, is" } else { "these steps were running when the run stopped, are" },
        in_doubt_list(steps, still_running)
    )]
    InDoubt {
        steps: Vec<String>,
        /// Their processes that are still running: what the operator
        /// deciding between `--rerun` and `--skip` most needs to know.
        still_running: Vec<Leftover>,
    },
    #[error(
        "step `{step}` was in doubt, and its check passed, but gave no {}, which `{reader}` reads; it must not run twice (`idempotent = false`), so phoenix will not run it again by itself. Make its check write {} to `$PHOENIX_OUTPUT` (as the step does), or resume with `--rerun {step}`",
        key.as_ref().map_or("outputs".into(), |key| format!("`{key}`")),
        key.as_ref().map_or("the outputs".into(), |key| format!("`{key}=…`"))
    )]
    CheckWithoutOutputs {
        step: String,
        reader: String,
        key: Option<String>,
    },
    #[error(
        "step `{step}` was in doubt, and its check {why}, which says nothing of whether it is done; it must not run twice (`idempotent = false`), so phoenix will not run it again by itself. Make the check work and resume, or resume with `--rerun {step}` or `--skip {step}`"
    )]
    CheckUnanswered { step: String, why: String },
    #[error("no run in `{0}` to resume")]
    NothingToResume(String),
    #[error("run `{0}` already succeeded; there is nothing to resume")]
    AlreadySucceeded(String),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    /// The journal stops at its first failed write or sync (a full disk, a
    /// lost mount): the records before it are whole, so the run resumes.
    #[error("run `{run}` stopped: its journal could not be written; what it recorded is kept, and once the state can be written again `phoenix resume` goes on from there")]
    JournalWrite {
        run: String,
        #[source]
        source: crate::journal::writer::JournalWriteError,
    },
    /// The journal's first record, its header, could not be written: the
    /// run has nothing to resume from, and its directory is gone.
    #[error("run `{run}` could not start: its journal could not be written; nothing was recorded, and nothing ran: `phoenix run` it again once the state can be written")]
    NotStarted {
        run: String,
        #[source]
        source: crate::journal::writer::JournalWriteError,
    },
}

/// `` `a`, `b` (still running: pid 42 (sh)) ``.
fn in_doubt_list(steps: &[String], still_running: &[Leftover]) -> String {
    steps
        .iter()
        .map(|step| {
            let running: Vec<&Leftover> =
                still_running.iter().filter(|l| &l.step == step).collect();
            if running.is_empty() {
                format!("`{step}`")
            } else {
                format!("`{step}` (still running: {})", leftovers::describe(running))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`SessionError::JournalWrite`] for the run `shared` runs.
fn journal_write(
    shared: &Shared,
) -> impl FnOnce(crate::journal::writer::JournalWriteError) -> SessionError + '_ {
    move |source| SessionError::JournalWrite {
        run: shared.run.id.clone(),
        source,
    }
}

/// What `phoenix run` asks for.
pub struct RunRequest {
    pub plan_path: PathBuf,
    pub loaded: Loaded,
    pub drill: bool,
    pub concurrency: Option<usize>,
    pub keep_going: bool,
    pub chaos: Option<(String, ChaosSpec)>,
    pub yes: bool,
    pub run_id: Option<String>,
    pub interactive: bool,
}

/// What `phoenix resume` asks for.
pub struct ResumeRequest {
    pub run_id: Option<String>,
    pub plan: Option<PathBuf>,
    pub approve: Vec<String>,
    pub skip: Vec<String>,
    /// `--output STEP.KEY=VALUE`: what steps named by `--skip` give.
    pub outputs: BTreeMap<String, Outputs>,
    pub rerun: Vec<String>,
    pub yes: bool,
    /// `--abandon`: only the drill's teardown runs.
    pub abandon: bool,
    /// `--concurrency` and `--keep-going`: for this session only.
    pub concurrency: Option<usize>,
    pub keep_going: bool,
    pub interactive: bool,
}

/// How a session ended.
pub struct SessionEnd {
    pub run_id: String,
    /// Where the run is kept: its directory, or its URL in a remote state.
    pub location: String,
    pub result: RunResult,
    pub run_dir: PathBuf,
    /// Whether `report.json` was written (a full disk may stop it).
    pub report_written: bool,
}

pub fn new_run_id() -> String {
    use rand::Rng;
    let suffix: u16 = rand::rng().random();
    format!("{}-{suffix:04x}", Utc::now().format("%Y%m%dT%H%M%SZ"))
}

/// When a run id of [`new_run_id`]'s form was made; `None` for one given
/// with `--run-id`.
fn generated_at(id: &str) -> Option<chrono::NaiveDateTime> {
    let (time, suffix) = id.split_once('-')?;
    (suffix.len() == 4 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ").ok())
        .flatten()
}

/// Warns when the state's newest run of the same plan and kind (a drill, or
/// a recovery; of the runs with a generated id) did not succeed: `run`
/// starts over from the first step, which in a recovery may be hours of work
/// done again, where `resume` goes on from where that run stopped. Journals
/// are read newest first, a few at the most.
fn warn_of_unfinished(
    state: &dyn StateStore,
    plan: &str,
    drill: bool,
    run_id: &str,
    events: &dyn EventSink,
) {
    /// Other plans' or kinds' runs looked through before giving up.
    const LOOK_AT: usize = 8;
    let Ok(ids) = state.run_ids() else {
        return;
    };
    let mut runs: Vec<_> = ids
        .into_iter()
        .filter(|id| id != run_id)
        .filter_map(|id| Some((generated_at(&id)?, id)))
        .collect();
    runs.sort_unstable_by(|a, b| b.cmp(a));
    for (_, id) in runs.into_iter().take(LOOK_AT) {
        let Ok(bytes) = state.read_journal(&id) else {
            continue;
        };
        let Some(header) = first_header(&bytes) else {
            continue;
        };
        if header.plan != plan || header.drill != drill {
            continue;
        }
        // A drill given up has nothing left to go on with.
        if !ended_successfully(&bytes) && !was_abandoned(&bytes) {
            // Killed, its steps run on: this run's would run beside them.
            let still_running = leftovers::find(&id, &scratch_dir(&state.run_dir(&id)));
            let still_running = if still_running.is_empty() {
                String::new()
            } else {
                format!(
                    "; its steps' processes are still running: {}",
                    leftovers::describe(&still_running)
                )
            };
            events.emit(Event::Warning(format!(
                "run `{id}` of this plan did not succeed; this run starts over from the first step, where `phoenix resume {id}` would go on from where it stopped{still_running}"
            )));
        }
        return;
    }
}

/// Whether a journal records `resume --abandon`.
fn was_abandoned(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| line.windows(16).any(|w| w == b"\"abandoned\":true"))
        .any(|line| {
            matches!(serde_json::from_slice::<Record>(line), Ok(Record::Resumed(resumed)) if resumed.abandoned)
        })
}

/// Run ids name directories: no separators, no dot files.
fn valid_run_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn plan_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn lock_info(run_id: &str) -> LockInfo {
    LockInfo {
        pid: std::process::id(),
        host: host_name(),
        run_id: run_id.to_string(),
        since: Utc::now(),
        lock_id: None,
        expires: None,
    }
}

/// Says, once, that the lock was taken over from a run that is gone.
fn warn_took_over(lock: &dyn StateLock, events: &dyn EventSink) {
    if let Some(previous) = lock.took_over() {
        let why = match previous.expires {
            Some(expires) => format!("whose lease expired at {}", expires.format("%H:%M:%SZ")),
            None => "whose process is gone".to_string(),
        };
        events.emit(Event::Warning(format!(
            "took over the lock of {}, {why}",
            previous.describe()
        )));
    }
}

/// A session's result, unless its lock was lost on the way: then that is what
/// the operator must hear.
fn unless_lost(
    lock: &dyn StateLock,
    result: Result<SessionEnd, SessionError>,
) -> Result<SessionEnd, SessionError> {
    match lock.lost() {
        Some(why) => Err(SessionError::Lock(crate::journal::LockError::Lost(why))),
        None => result,
    }
}

/// Phoenix's own CPU seconds in user space and in the kernel (every thread,
/// not the steps' processes) and its context switches, voluntary and forced:
/// what the benchmarks compare with ninja's. Zero where `getrusage` fails.
#[derive(Default)]
struct OwnUsage {
    user_seconds: f64,
    system_seconds: f64,
    switches: i64,
    forced_switches: i64,
}

fn own_usage() -> OwnUsage {
    use nix::sys::resource::{getrusage, UsageWho};
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    getrusage(UsageWho::RUSAGE_SELF).map_or_else(
        |_| OwnUsage::default(),
        |usage| OwnUsage {
            user_seconds: seconds(usage.user_time()),
            system_seconds: seconds(usage.system_time()),
            switches: usage.voluntary_context_switches(),
            forced_switches: usage.involuntary_context_switches(),
        },
    )
}

/// The run's runtime; `idle` writes the journal whenever it runs out of work.
fn runtime(idle: &IdleWrites) -> Result<tokio::runtime::Runtime, SessionError> {
    // The executor itself needs little CPU: the steps' processes and the
    // blocking threads (hashing, unpacking) do the work. Half the cores, so
    // that spawning and reaping children does not contend with itself.
    let workers = crate::cores() / 2;
    let mut builder = if workers <= 1 {
        // One worker runs every task alone either way; the current-thread
        // runtime does it without the work-stealing scheduler's bookkeeping
        // (its poll-time averages and clock reads each turn): 4% less of
        // Phoenix's own CPU on 10,000 command steps (docs/performance.md).
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // A worker keeps the short slice until it ends with the runtime.
        builder
            .worker_threads(workers)
            .on_thread_start(|| std::mem::forget(ShortSlice::for_this_thread()));
        builder
    };
    builder
        .on_thread_park(idle.hook())
        .enable_all()
        .build()
        .map_err(SessionError::Runtime)
}

pub fn run(
    state: &dyn StateStore,
    request: RunRequest,
    events: Arc<dyn EventSink>,
) -> Result<SessionEnd, SessionError> {
    let plan = Arc::new(request.loaded.plan.expect("a valid plan"));
    let run_id = request.run_id.clone().unwrap_or_else(new_run_id);
    if !valid_run_id(&run_id) {
        return Err(SessionError::Usage(format!(
            "`--run-id {run_id}`: a run id is 1 to 100 letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        )));
    }
    unset_secrets(&plan, |i| plan.steps[i].applies(request.drill), "run")?;
    let lock = state.lock(&lock_info(&run_id))?;
    warn_took_over(lock.as_ref(), events.as_ref());
    warn_of_unfinished(
        state,
        &plan.name.value,
        request.drill,
        &run_id,
        events.as_ref(),
    );
    state.create_run(&run_id, &plan.source.text)?;
    let concurrency = request
        .concurrency
        .or(plan.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY);
    let header = Header {
        format: FORMAT_VERSION,
        run_id: run_id.clone(),
        plan: plan.name.value.clone(),
        plan_hash: plan_hash(&plan.source.text),
        plan_path: absolute(&request.plan_path).display().to_string(),
        plan_dir: plan.dir.display().to_string(),
        drill: request.drill,
        started_at: Utc::now(),
        vars: request.loaded.overrides.clone(),
        fingerprints: plan
            .steps
            .iter()
            .map(|s| (s.id.value.clone(), s.fingerprint.clone()))
            .collect(),
        concurrency,
        keep_going: request.keep_going,
        chaos: request.chaos.as_ref().map(|(text, _)| text.clone()),
        host: host_name(),
        pid: std::process::id(),
        phoenix_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let starts: Vec<Start> = plan
        .steps
        .iter()
        .map(|s| {
            if s.applies(request.drill) {
                Start::Pending { first_attempt: 1 }
            } else {
                Start::NotApplicable
            }
        })
        .collect();
    let approvals = Approvals {
        all: request.yes,
        steps: HashSet::new(),
        interactive: request.interactive,
    };
    let chaos = request.chaos.map(|(_, spec)| Chaos::new(spec, 0));
    let session = Session {
        state,
        lock: lock.as_ref(),
        run_id,
        plan,
        drill: request.drill,
        concurrency,
        keep_going: request.keep_going,
        events,
    };
    let result = session.execute(
        vec![Record::Header(header)],
        starts,
        BTreeMap::new(),
        BTreeMap::new(),
        chaos,
        approvals,
        None,
        None,
    );
    let result = unless_lost(lock.as_ref(), result)?;
    drop(lock);
    Ok(result)
}

/// The newest run that did not succeed. A run whose journal is damaged counts
/// as unfinished, so that resuming it reports the damage.
pub fn newest_unfinished(state: &dyn StateStore) -> Result<Option<String>, SessionError> {
    newest_where(state, |_, bytes| !ended_successfully(bytes))
}

/// Whether a journal's last complete record ends the run successfully:
/// nothing follows a success (a succeeded run is not resumed), so the last
/// line says it without reading the whole journal.
pub(crate) fn ended_successfully(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .rev()
        .filter(|line| !line.is_empty())
        .find_map(|line| serde_json::from_slice::<Record>(line).ok())
        .is_some_and(|record| {
            matches!(
                record,
                Record::Ended {
                    result: RunResult::Succeeded,
                    ..
                }
            )
        })
}

/// The newest run in the state, finished or not.
pub fn newest(state: &dyn StateStore) -> Result<Option<String>, SessionError> {
    newest_where(state, |_, _| true)
}

fn newest_where(
    state: &dyn StateStore,
    keep: impl Fn(&Header, &[u8]) -> bool,
) -> Result<Option<String>, SessionError> {
    let mut best: Option<(chrono::DateTime<Utc>, String)> = None;
    for id in state.run_ids()? {
        // A run without a journal, or whose header was never written whole,
        // never started. One whose journal cannot be read now may well be
        // the newest: going on without it could pick an older run.
        let bytes = match state.read_journal(&id) {
            Ok(bytes) => bytes,
            Err(StateError::NoRun(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let Some(header) = first_header(&bytes) else {
            continue;
        };
        if !keep(&header, &bytes) {
            continue;
        }
        if best.as_ref().is_none_or(|(at, _)| header.started_at > *at) {
            best = Some((header.started_at, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// The header record alone, even when later lines are damaged.
pub(crate) fn first_header(bytes: &[u8]) -> Option<Header> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    match serde_json::from_slice(line) {
        Ok(Record::Header(header)) => Some(header),
        _ => None,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

struct Session<'a> {
    state: &'a dyn StateStore,
    lock: &'a dyn StateLock,
    run_id: String,
    plan: Arc<Plan>,
    drill: bool,
    concurrency: usize,
    keep_going: bool,
    events: Arc<dyn EventSink>,
}

/// The outputs `step` reads with no `default` to fall back on, by step
/// (see [`crate::plan::interpolate::output_keys_read`]).
fn outputs_needed(step: &crate::plan::Step) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    step.texts
        .iter()
        .filter(|text| !text.contains("default"))
        .flat_map(|text| crate::plan::interpolate::output_keys_read(text))
}

/// Whether `outputs` lacks `key` (`None`: has no outputs at all).
fn lacks(outputs: &Outputs, key: &Option<String>) -> bool {
    match key {
        Some(key) => !outputs.contains_key(key),
        None => outputs.is_empty(),
    }
}

/// Secrets from environment variables that the steps to run read, and that
/// are not set: said before anything starts, where the first step to read
/// one would fail hours into the rebuild (a resume from a new terminal that
/// was not given them is the usual case). A secret from a file is not
/// checked: a step may make the file.
fn unset_secrets(
    plan: &Plan,
    will_run: impl Fn(usize) -> bool,
    then: &str,
) -> Result<(), SessionError> {
    let mut unset: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    let to_run = plan.steps.iter().enumerate().filter(|(i, _)| will_run(*i));
    for step in to_run.map(|(_, step)| step) {
        for name in crate::exec::context::secrets_read(step) {
            let Some((name, secret)) = plan.secrets.get_key_value(name.as_str()) else {
                continue;
            };
            if let crate::plan::model::SecretSource::Env(var) = &secret.source {
                if std::env::var_os(var).is_none() {
                    unset
                        .entry(name)
                        .or_insert((var, Vec::new()))
                        .1
                        .push(step.id.as_str());
                }
            }
        }
    }
    if unset.is_empty() {
        return Ok(());
    }
    let said: Vec<String> = unset
        .iter()
        .map(|(name, (var, steps))| {
            let steps: Vec<String> = steps.iter().map(|s| format!("`{s}`")).collect();
            format!(
                "secret `{name}` comes from environment variable `{var}`, which is not set (read by {})",
                steps.join(", ")
            )
        })
        .collect();
    Err(SessionError::Usage(format!(
        "{}; set {} and {then} again",
        said.join("; "),
        if unset.len() == 1 { "it" } else { "them" }
    )))
}

/// `{{ run.dir }}` of the run kept in `run_dir`: its steps' scratch space.
fn scratch_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("work")
}

/// What a resume does before its steps start.
struct Resuming {
    /// In-doubt steps with a `check`, by index.
    checks: Vec<usize>,
    /// The processes the steps in doubt left running.
    still_running: Vec<Leftover>,
}

impl Session<'_> {
    #[allow(clippy::too_many_arguments)]
    fn execute(
        self,
        first_records: Vec<Record>,
        mut starts: Vec<Start>,
        outputs: BTreeMap<String, StepOutputs>,
        frozen: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
        chaos: Option<Chaos>,
        approvals: Approvals,
        resuming: Option<Resuming>,
        folded: crate::journal::writer::Folded,
    ) -> Result<SessionEnd, SessionError> {
        // The steps' programs get the machine's huge-page policy, not the one
        // Phoenix reads plans under.
        crate::hugepages::restore();
        let run_dir = self.state.run_dir(&self.run_id);
        let info = RunInfo {
            id: self.run_id.clone(),
            dir: scratch_dir(&run_dir),
            drill: self.drill,
            logs: run_dir.join("logs"),
            tmp: run_dir.join("tmp"),
        };
        for dir in [&info.dir, &info.logs, &info.tmp] {
            crate::journal::local::make_dir(dir)?;
        }
        // `PHOENIX_OUTPUT` files a killed run left unread: their attempts
        // count as not run, a new attempt of the same number would add to one,
        // and one may hold a secret a step wrote as an output.
        for entry in std::fs::read_dir(&info.tmp).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let masker = Arc::new(Masker::default());
        let backend = self.state.journal(&self.run_id)?;
        let (writer, thread) = JournalWriter::start(backend, Arc::clone(&masker), folded);
        let idle = IdleWrites::default();
        let writer = writer.written_when_idle(idle.clone());
        let runtime = runtime(&idle)?;
        let shared = Arc::new(Shared::new(
            Arc::clone(&self.plan),
            info,
            writer,
            Arc::clone(&self.events),
            masker,
            chaos,
            approvals,
            self.keep_going,
            self.concurrency,
        ));
        shared.secrets.preload(&shared.masker);
        // A placeholder (`test`, a PIN) is masked in every timestamp, id and
        // word it stands in, and withholds every output it appears in: said
        // once, before the puzzling logs and failures it makes.
        for (name, length) in shared.secrets.short(6) {
            self.events.emit(Event::Warning(format!(
                "secret `{name}` is only {length} characters long: wherever those characters stand (in a word, a number, a time) they are masked as `***`, and a step's output they appear in is withheld from the steps that read it"
            )));
        }
        if let Some(Record::Header(header)) = first_records.first() {
            warn_of_secret_vars(&header.vars, &shared.masker, self.events.as_ref());
        }
        {
            // A lost lease stops the run as an interrupt would; the journal
            // refuses what the run writes after that anyway.
            let (interrupt, events) = (shared.interrupt.clone(), Arc::clone(&shared.events));
            self.lock.on_lost(Box::new(move |why| {
                events.emit(Event::Warning(format!(
                    "lost the lock on the state ({why}); stopping"
                )));
                interrupt.cancel();
            }));
        }
        {
            // What `resume --output` gave is withheld where it holds a secret,
            // as a step's own outputs are (the journal keeps it masked).
            // Outputs read back from the journal were masked when written.
            let outputs = outputs.into_iter().map(|(step, given)| {
                let mut passed = withhold_secrets(&shared, &step, &given.values);
                passed.withheld.extend(given.withheld);
                (step, passed)
            });
            let mut map = shared.outputs.write().unwrap_or_else(|e| e.into_inner());
            map.extend(outputs);
        }
        {
            let mut map = shared.frozen.lock().unwrap_or_else(|e| e.into_inner());
            map.extend(frozen);
        }
        let started = std::time::Instant::now();
        let resumed = matches!(first_records.first(), Some(Record::Resumed(_)));
        // The thread that runs the executor (the current-thread runtime's
        // only one) starts and reaps the children: see ShortSlice.
        let short_slice = ShortSlice::for_this_thread();
        let result = runtime.block_on(async {
            for record in first_records {
                let header = matches!(record, Record::Header(_));
                match shared.journal.append_durable(record).await {
                    Ok(_) => {}
                    Err(source) if header => {
                        return Err(SessionError::NotStarted {
                            run: self.run_id.clone(),
                            source,
                        });
                    }
                    Err(source) => return Err(journal_write(&shared)(source)),
                }
            }
            // Watched from here: a check that hangs is stopped by Ctrl-C
            // like a step, with the lock released and the run resumable.
            let watcher = crate::exec::signals::watch(Arc::clone(&shared));
            if let Some(resuming) = resuming {
                // First: a check that looked while the last attempt still
                // ran (a database up, its restore not over) could pass it.
                in_doubt::stop_leftovers(&shared, &resuming.still_running, &starts).await;
                in_doubt::run_checks(&shared, &resuming.checks, &mut starts).await?;
            }
            let per_phase = crate::plan::Phase::ALL
                .iter()
                .map(|phase| {
                    let count = starts
                        .iter()
                        .enumerate()
                        .filter(|(i, s)| {
                            matches!(s, Start::Pending { .. })
                                && shared.plan.steps[*i].phase.value == *phase
                        })
                        .count();
                    (*phase, count)
                })
                .collect();
            self.events.emit(Event::RunStarted {
                run_id: self.run_id.clone(),
                plan: self.plan.name.value.clone(),
                steps: starts
                    .iter()
                    .filter(|s| matches!(s, Start::Pending { .. }))
                    .count(),
                drill: self.drill,
                resumed,
                per_phase,
            });
            // The walker runs as a task on a worker thread, not on this thread:
            // a step's message then wakes it on the same worker, without an
            // extra thread hop per step.
            let result = tokio::spawn(scheduler::execute(Arc::clone(&shared), starts))
                .await
                .unwrap_or(RunResult::Failed);
            watcher.abort();
            shared
                .journal
                .append_durable(Record::Ended {
                    at: Utc::now(),
                    result,
                })
                .await
                .map_err(journal_write(&shared))?;
            Ok::<_, SessionError>(result)
        });
        drop(short_slice);
        let result = match result {
            Err(error @ SessionError::NotStarted { .. }) => {
                // Nothing ran and nothing was recorded: no run to report.
                drop(shared);
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                let _ = thread.join();
                self.state.discard_run(&self.run_id);
                return Err(error);
            }
            result => result,
        };
        self.events.emit(Event::RunFinished {
            run_id: self.run_id.clone(),
            result: *result.as_ref().unwrap_or(&RunResult::Failed),
            duration: started.elapsed(),
        });
        drop(shared);
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        let folded = thread.join();
        // No step runs after this: the report is built as the plan was read.
        crate::hugepages::suspend();
        let usage = own_usage();
        tracing::debug!(
            elapsed = ?started.elapsed(),
            cpu_seconds = usage.user_seconds + usage.system_seconds,
            user_seconds = usage.user_seconds,
            system_seconds = usage.system_seconds,
            switches = usage.switches,
            forced_switches = usage.forced_switches,
            "run: executed, journal closed"
        );
        if let Err(error) = self.state.sync_logs(&self.run_id) {
            self.events.emit(Event::Warning(format!(
                "cannot copy the run's logs to the state: {}",
                crate::error_text(&error)
            )));
        }
        let report = match folded {
            Some((header, view)) => {
                let written =
                    crate::report::write_json_from(self.state, &header, &view, &self.plan);
                crate::drop_later((header, view));
                written
            }
            None => crate::report::write_json(self.state, &self.run_id, &self.plan),
        };
        tracing::debug!(elapsed = ?started.elapsed(), "run: report written");
        if let Err(error) = &report {
            self.events.emit(Event::Warning(format!(
                "cannot write the run's report: {}",
                crate::error_text(error)
            )));
        }
        crate::drop_later(self.plan);
        Ok(SessionEnd {
            location: self.state.location(&self.run_id),
            run_id: self.run_id,
            result: result?,
            run_dir,
            report_written: report.is_ok(),
        })
    }
}

/// `--var` values are kept in the journal as given: a resume resolves the
/// plan with them again, and a masked one would resolve it differently. One
/// that holds a secret's value (a password in a DSN, or a short secret that
/// happens to be part of a date) is worth a word.
fn warn_of_secret_vars(
    vars: &BTreeMap<String, serde_json::Value>,
    masker: &Masker,
    events: &dyn EventSink,
) {
    for (name, value) in vars {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if masker.reveals(&text) {
            events.emit(Event::Warning(format!(
                "the value of var `{name}` holds a secret's value; vars are kept in the journal as given, for a resume: declare the secret under [secrets] and use `{{{{ secrets.NAME }}}}` instead"
            )));
        }
    }
}

/// Where a run stands: the journal folded, plus whether it is live.
pub fn view(state: &dyn StateStore, run_id: &str) -> Result<(Header, RunView, bool), SessionError> {
    let bytes = state.read_journal(run_id)?;
    let log = RunLog::parse(&bytes).map_err(|source| SessionError::Journal {
        run: run_id.to_string(),
        source,
    })?;
    let live = state
        .lock_holder()
        .is_some_and(|holder| holder.run_id == run_id);
    let view = log.fold();
    Ok((log.header, view, live))
}
