//! The journal writer: records are written where they are made, and made
//! durable with group commit on a thread of the writer's own.
//!
//! Whoever has a record (a step's task, the session) hands it over under a
//! lock: no thread hop per record, so a step costs the executor no wake-up of
//! another thread. Records made while the executor has tasks to run are
//! serialized, masked and written together when it has none left, in one
//! `write` just before its thread sleeps ([`IdleWrites`]): after the step
//! that finished has made way for the next one, not between the two.
//! Durability is the sync thread's job: asked for a sync, it writes what is
//! pending, takes everything written so far as one [`SyncJob`], runs it
//! outside the lock (an `fdatasync`, or an upload for a remote state) while
//! later records go on being handed over, and then wakes every caller whose
//! record that job covered. Steps that finish together share one sync.
//!
//! A caller may wait "on demand": its record is written with the others but synced
//! only when somebody needs it to be ([`JournalWriter::sync`], or a record that
//! must be durable now), or [`MAX_SYNC_DELAY`] later. The walker uses this for
//! finished steps: while other steps are ready to fill every slot, nothing
//! waits for a finish to be durable, and a run of thousands of short steps on
//! two slots needs a few syncs a second instead of one per step.
//!
//! Every record written is also folded into a [`RunView`] (only once the
//! backend took it: what is not in the journal is not in the view either), so
//! the report at the end of a run is built from memory instead of reading the
//! journal back.
//!
//! A failed write or sync stops the journal: nothing after it is written, and
//! every caller waiting, or writing later, gets the error. A journal with a
//! record missing in the middle would be worse than one that ends early.

use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::reader::RunView;
use super::record::{Header, Record};
use super::JournalBackend;
use crate::exec::secrets::Masker;

/// A run as its journal stands: the header and every record folded in.
pub type Folded = Option<(Header, RunView)>;

/// A finished step's record is durable at the latest this long after it was
/// written, when no step waits for it before then.
pub const MAX_SYNC_DELAY: Duration = Duration::from_millis(100);

/// When a waiting caller's record must be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// At once: the caller waits for it now.
    Now,
    /// With the next sync anybody asks for ([`JournalWriter::sync`] or a
    /// `Now` record), or after [`MAX_SYNC_DELAY`].
    OnDemand,
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// What the sync thread is asked to do.
enum Request {
    /// Sync everything written so far.
    Sync,
    /// Sync everything written so far, then answer.
    Flush(Waiter),
    /// An on-demand record waits: sync within [`MAX_SYNC_DELAY`].
    Due,
}

/// The journal as the writers and the sync thread share it.
struct Journal {
    backend: Box<dyn JournalBackend>,
    masker: Arc<Masker>,
    folded: Folded,
    /// Records handed over and not yet written (see [`JournalWriter::write`]).
    pending: Vec<Record>,
    /// The lines of `pending`, a buffer kept from one write to the next.
    lines: Vec<u8>,
    /// `pending` is due with the runtime's [`IdleWrites`].
    write_scheduled: bool,
    /// Written since the last sync job was taken.
    unsynced: bool,
    /// Callers whose records are in (written, or pending), waiting for the
    /// next sync.
    waiters: Vec<Waiter>,
    /// Set by the first write or sync that fails; final.
    failed: Option<String>,
}

impl Journal {
    /// Serializes and masks what is pending, writes it to the backend, and
    /// folds it into the view.
    fn write_pending(&mut self) -> Result<(), String> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let masking = !self.masker.is_empty();
        for record in &mut pending {
            // The view folds what the journal holds: the masked record.
            if masking {
                record.mask(&self.masker);
            }
            // Serialized straight into the buffer. A record does not fail to
            // serialize (string keys, finite numbers); one that did would
            // leave its line empty.
            let start = lines.len();
            if serde_json::to_writer(&mut lines, record).is_err() {
                lines.truncate(start);
            }
            lines.push(b'\n');
        }
        let result = self.backend.write(&lines);
        self.lines = lines;
        match result {
            Ok(()) => {
                self.unsynced = true;
                for record in pending.drain(..) {
                    self.fold(record);
                }
                self.pending = pending;
                Ok(())
            }
            Err(error) => {
                self.fail(error.to_string());
                Err(error.to_string())
            }
        }
    }

    fn fold(&mut self, record: Record) {
        match (&mut self.folded, record) {
            (None, Record::Header(header)) => {
                let view = RunView::new(&header);
                self.folded = Some((header, view));
            }
            (Some((_, view)), record) => view.apply(&record),
            (None, _) => {}
        }
    }

    fn fail(&mut self, error: String) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        self.failed = Some(error);
    }
}

/// A cheap handle to the journal.
#[derive(Clone)]
pub struct JournalWriter {
    journal: Arc<Mutex<Journal>>,
    requests: mpsc::Sender<Request>,
    /// Where records made on the runtime wait to be written; without it,
    /// each is written at once.
    idle: Option<IdleWrites>,
}

/// At most this many records wait in memory for the runtime to run out of
/// work: a runtime kept busy (a burst of instant steps) writes them then.
const MAX_PENDING: usize = 256;

/// The journals whose records wait for the runtime to run out of work.
///
/// Installed as the runtime's `on_thread_park` hook ([`IdleWrites::hook`])
/// and given to its writers ([`JournalWriter::written_when_idle`]): a step
/// that finishes and the step that takes its slot run in the same stretch
/// of work, and their records are written after both, once the thread has
/// nothing left to run and is about to wait for events. The child of the
/// next step is then running while the journal is written, instead of
/// waiting for it.
#[derive(Clone, Default)]
pub struct IdleWrites {
    /// Journals with records pending, each at most once.
    due: Arc<Mutex<Vec<Arc<Mutex<Journal>>>>>,
}

impl IdleWrites {
    /// What the runtime runs before a thread of its parks.
    pub fn hook(&self) -> impl Fn() + Send + Sync + 'static {
        let idle = self.clone();
        move || idle.write_due()
    }

    fn write_due(&self) {
        // A journal's lock is taken under this one, never the other way round
        // (see JournalWriter::write).
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        for journal in due.drain(..) {
            let mut journal = lock(&journal);
            journal.write_scheduled = false;
            // A failure stops the journal: every caller hears of it.
            let _ = journal.write_pending();
        }
    }
}

/// Owns the sync thread; joining it closes the journal.
pub struct WriterThread {
    handle: Option<JoinHandle<Folded>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal: {0}")]
pub struct JournalWriteError(pub String);

fn lock(journal: &Mutex<Journal>) -> MutexGuard<'_, Journal> {
    // A panic while holding the lock leaves nothing half-done that the next
    // holder could trip on: the backend's write is one call.
    journal.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JournalWriter {
    /// Starts the sync thread. `folded` is the journal so far, for a resume.
    pub fn start(
        backend: Box<dyn JournalBackend>,
        masker: Arc<Masker>,
        folded: Folded,
    ) -> (JournalWriter, WriterThread) {
        Self::start_with_delay(backend, masker, folded, MAX_SYNC_DELAY)
    }

    /// [`JournalWriter::start`] with another bound on how long an on-demand
    /// record may wait for its sync (tests).
    fn start_with_delay(
        backend: Box<dyn JournalBackend>,
        masker: Arc<Masker>,
        folded: Folded,
        max_delay: Duration,
    ) -> (JournalWriter, WriterThread) {
        let journal = Arc::new(Mutex::new(Journal {
            backend,
            masker,
            folded,
            pending: Vec::new(),
            lines: Vec::new(),
            write_scheduled: false,
            unsynced: false,
            waiters: Vec::new(),
            failed: None,
        }));
        let (requests, receiver) = mpsc::channel::<Request>();
        let thread_journal = Arc::clone(&journal);
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || sync_thread(&thread_journal, &receiver, max_delay))
            .expect("spawn the journal thread");
        (
            JournalWriter {
                journal,
                requests,
                idle: None,
            },
            WriterThread {
                handle: Some(handle),
            },
        )
    }

    /// Leaves the records made on a runtime for `idle` to write: the
    /// runtime must run [`IdleWrites::hook`] before it parks.
    pub fn written_when_idle(mut self, idle: IdleWrites) -> JournalWriter {
        self.idle = Some(idle);
        self
    }

    /// Hands a record over; it is written when the runtime runs out of work
    /// and becomes durable with the next sync.
    pub fn append(&self, record: Record) {
        self.write(record, None);
    }

    /// Appends a record and returns once it is durable.
    pub async fn append_durable(&self, record: Record) -> Result<(), JournalWriteError> {
        self.append_waiting(record, Durability::Now).await
    }

    /// Hands a record over at once; the future it returns ends when the
    /// record is durable, which for [`Durability::OnDemand`] is at the next
    /// sync.
    pub fn append_waiting(
        &self,
        record: Record,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), JournalWriteError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.write(record, Some((tx, durability)));
        async move {
            rx.await
                .map_err(|_| JournalWriteError("the journal is closed".into()))?
                .map_err(JournalWriteError)
        }
    }

    /// Adds a record to those pending, written when the runtime runs out of
    /// work, or at once outside one.
    fn write(&self, record: Record, waiter: Option<(Waiter, Durability)>) {
        let mut journal = lock(&self.journal);
        if let Some(error) = &journal.failed {
            if let Some((waiter, _)) = waiter {
                let _ = waiter.send(Err(error.clone()));
            }
            return;
        }
        journal.pending.push(record);
        // A record is in memory only until the runtime runs out of work, as
        // it was in a channel before; a sync writes what is pending first, so
        // no durable record waits for that.
        let register = match &self.idle {
            Some(idle)
                if journal.pending.len() < MAX_PENDING
                    && tokio::runtime::Handle::try_current().is_ok() =>
            {
                (!std::mem::replace(&mut journal.write_scheduled, true)).then_some(idle)
            }
            _ => {
                let _ = journal.write_pending();
                None
            }
        };
        let waiting = waiter.map(|(waiter, durability)| {
            let first = journal.waiters.is_empty();
            journal.waiters.push(waiter);
            (durability, first)
        });
        drop(journal);
        if let Some(idle) = register {
            // After the journal's lock is let go: IdleWrites takes it under
            // its own.
            idle.due
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&self.journal));
        }
        let Some((durability, first)) = waiting else {
            return;
        };
        // The sync thread wakes only when there is something for it to do:
        // most records cost no wake-up at all.
        match durability {
            Durability::Now => {
                let _ = self.requests.send(Request::Sync);
            }
            Durability::OnDemand if first => {
                let _ = self.requests.send(Request::Due);
            }
            Durability::OnDemand => {}
        }
    }

    /// Asks for a sync of everything written so far, without waiting for it.
    pub fn sync(&self) {
        let _ = self.requests.send(Request::Sync);
    }

    /// Returns once every record written so far is durable.
    pub async fn flush(&self) -> Result<(), JournalWriteError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Flush(tx))
            .map_err(|_| JournalWriteError("the journal is closed".into()))?;
        rx.await
            .map_err(|_| JournalWriteError("the journal is closed".into()))?
            .map_err(JournalWriteError)
    }
}

/// The sync thread: waits for a request (or an on-demand record's deadline),
/// takes every request already queued, and runs one sync job for them all.
fn sync_thread(
    journal: &Mutex<Journal>,
    receiver: &mpsc::Receiver<Request>,
    max_delay: Duration,
) -> Folded {
    let mut deadline: Option<Instant> = None;
    let mut flushers: Vec<Waiter> = Vec::new();
    loop {
        let first = match deadline {
            None => match receiver.recv() {
                Ok(request) => Some(request),
                Err(_) => break,
            },
            Some(at) => match receiver.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(request) => Some(request),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        // A deadline that passed syncs what waits.
        let mut sync = first.is_none();
        let mut next = first;
        while let Some(request) = next {
            match request {
                Request::Sync => sync = true,
                Request::Flush(waiter) => {
                    sync = true;
                    flushers.push(waiter);
                }
                Request::Due => {
                    deadline.get_or_insert_with(|| Instant::now() + max_delay);
                }
            }
            next = receiver.try_recv().ok();
        }
        if !sync {
            continue;
        }
        let result = run_sync(journal);
        tracing::trace!(
            flushed = flushers.len(),
            ok = result.is_ok(),
            "journal sync"
        );
        for waiter in flushers.drain(..) {
            let _ = waiter.send(result.clone());
        }
        // Records written while the job ran wait for the next one.
        deadline = (!lock(journal).waiters.is_empty()).then(|| Instant::now() + max_delay);
    }
    // Every handle is gone: whatever was written and never asked for is made
    // durable before the journal closes.
    let _ = run_sync(journal);
    lock(journal).folded.take()
}

/// Takes a sync job and the callers it covers under the lock, runs the job
/// outside it, and answers them.
fn run_sync(journal: &Mutex<Journal>) -> Result<(), String> {
    let (job, waiters) = {
        let mut journal = lock(journal);
        journal.write_pending()?;
        let job = std::mem::take(&mut journal.unsynced).then(|| journal.backend.sync());
        (job, std::mem::take(&mut journal.waiters))
    };
    let result = job.map_or(Ok(()), |job| job().map_err(|e| e.to_string()));
    if let Err(error) = &result {
        lock(journal).fail(error.clone());
    }
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
    result
}

impl WriterThread {
    /// Waits for the thread to sync what was written, and returns the run as
    /// the journal now holds it. Every `JournalWriter` handle must be dropped first.
    pub fn join(mut self) -> Folded {
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use chrono::Utc;

    use super::{Durability, IdleWrites, JournalWriter, MAX_PENDING};
    use crate::journal::record::Record;
    use crate::journal::JournalBackend;

    /// A backend that notes each call: how many lines, and whether it synced.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<(&'static str, usize)>>>);

    impl Calls {
        fn take(&self) -> Vec<(&'static str, usize)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl JournalBackend for Calls {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            self.0.lock().unwrap().push(("write", lines));
            Ok(())
        }

        fn sync(&mut self) -> crate::journal::SyncJob {
            let calls = self.clone();
            Box::new(move || {
                calls.0.lock().unwrap().push(("sync", 0));
                Ok(())
            })
        }
    }

    /// A backend whose syncs fail.
    struct Failing;

    impl JournalBackend for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }

        fn sync(&mut self) -> crate::journal::SyncJob {
            Box::new(|| Err(std::io::Error::other("disk on fire")))
        }
    }

    fn record(step: &str) -> Record {
        Record::Skipped {
            step: step.into(),
            at: Utc::now(),
            reason: crate::journal::record::SkipReason::Check,
            outputs: Default::default(),
            withheld: Default::default(),
        }
    }

    /// A writer whose on-demand records wait for their sync at most `delay`.
    fn start(delay: Duration) -> (JournalWriter, super::WriterThread, Calls) {
        let calls = Calls::default();
        let (writer, thread) =
            JournalWriter::start_with_delay(Box::new(calls.clone()), Arc::default(), None, delay);
        (writer, thread, calls)
    }

    /// A writer whose records wait for `builder`'s runtime to run out of
    /// work, and that runtime.
    fn start_idle(
        mut builder: tokio::runtime::Builder,
    ) -> (
        tokio::runtime::Runtime,
        JournalWriter,
        super::WriterThread,
        Calls,
    ) {
        let idle = IdleWrites::default();
        let runtime = builder
            .on_thread_park(idle.hook())
            .enable_all()
            .build()
            .unwrap();
        let (writer, thread, calls) = start(NEVER);
        (runtime, writer.written_when_idle(idle), thread, calls)
    }

    /// Waits until the backend has been called `n` times.
    async fn calls_reach(calls: &Calls, n: usize) {
        let limit = Instant::now() + Duration::from_secs(30);
        while calls.0.lock().unwrap().len() < n {
            assert!(Instant::now() < limit, "the journal thread wrote nothing");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn on_demand_records_are_written_at_once_and_synced_when_asked() {
        let (writer, thread, calls) = start(NEVER);
        let a = tokio::spawn(writer.append_waiting(record("a"), Durability::OnDemand));
        calls_reach(&calls, 1).await;
        let b = tokio::spawn(writer.append_waiting(record("b"), Durability::OnDemand));
        calls_reach(&calls, 2).await;
        assert!(
            !a.is_finished() && !b.is_finished(),
            "acknowledged before any sync"
        );
        assert_eq!(calls.take(), [("write", 1), ("write", 1)]);
        writer.sync();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        // One sync for both, with nothing left to write.
        assert_eq!(calls.take(), [("sync", 0)]);
        // Nothing unsynced: a second request costs no sync.
        writer.sync();
        writer.flush().await.unwrap();
        assert_eq!(calls.take(), []);
        drop(writer);
        thread.join();
    }

    #[tokio::test]
    async fn a_record_needed_now_syncs_the_waiting_ones_with_it() {
        let (writer, thread, calls) = start(NEVER);
        let lazy = tokio::spawn(writer.append_waiting(record("a"), Durability::OnDemand));
        calls_reach(&calls, 1).await;
        writer.append_durable(record("b")).await.unwrap();
        lazy.await.unwrap().unwrap();
        assert_eq!(calls.take(), [("write", 1), ("write", 1), ("sync", 0)]);
        drop(writer);
        thread.join();
    }

    #[tokio::test]
    async fn nobody_asking_still_syncs_within_the_delay() {
        let (writer, thread, calls) = start(Duration::from_millis(50));
        let started = Instant::now();
        writer
            .append_waiting(record("a"), Durability::OnDemand)
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(calls.take(), [("write", 1), ("sync", 0)]);
        drop(writer);
        thread.join();
    }

    #[tokio::test]
    async fn closing_syncs_what_was_only_written() {
        let (writer, thread, calls) = start(NEVER);
        writer.append(record("a"));
        drop(writer);
        thread.join();
        assert_eq!(calls.take(), [("write", 1), ("sync", 0)]);
    }

    #[test]
    fn records_wait_for_the_runtime_to_run_out_of_work() {
        let (runtime, writer, thread, calls) =
            start_idle(tokio::runtime::Builder::new_current_thread());
        // The test runs as a task: the runtime runs out of work (and parks)
        // only when no task and not the `block_on` future itself has any.
        let test = {
            let (writer, calls) = (writer.clone(), calls.clone());
            async move {
                // Three tasks hand a record over each, and a fourth looks before
                // the runtime has run out of work.
                let tasks: Vec<_> = ["a", "b", "c"]
                    .map(|step| {
                        let writer = writer.clone();
                        tokio::spawn(async move { writer.append(record(step)) })
                    })
                    .into();
                let early = tokio::spawn({
                    let calls = calls.clone();
                    async move { calls.take() }
                });
                for task in tasks {
                    task.await.unwrap();
                }
                assert_eq!(early.await.unwrap(), [], "written while tasks were left");
                // Waiting for a timer, the runtime has nothing to run.
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert_eq!(calls.take(), [("write", 3)]);

                // A durable record does not wait: the sync writes what is pending.
                writer.append(record("d"));
                writer.append_durable(record("e")).await.unwrap();
                assert_eq!(calls.take(), [("write", 2), ("sync", 0)]);

                // A runtime that never runs out of work holds no more than
                // MAX_PENDING records.
                let writer = writer.clone();
                let burst = tokio::spawn(async move {
                    for n in 0..=MAX_PENDING {
                        writer.append(record(&n.to_string()));
                    }
                });
                let during = tokio::spawn({
                    let calls = calls.clone();
                    async move { calls.take() }
                });
                burst.await.unwrap();
                assert_eq!(during.await.unwrap(), [("write", MAX_PENDING)]);
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert_eq!(calls.take(), [("write", 1)]);
            }
        };
        runtime.block_on(runtime.spawn(test)).unwrap();
        // Outside the runtime, a record is written at once.
        writer.append(record("f"));
        assert_eq!(calls.take(), [("write", 1)]);
        drop(writer);
        thread.join();
    }

    #[test]
    fn a_multi_thread_runtime_writes_when_its_workers_park() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        let (runtime, writer, thread, calls) = start_idle(builder);
        let task = {
            let writer = writer.clone();
            async move {
                for step in ["a", "b", "c"] {
                    writer.append(record(step));
                }
            }
        };
        runtime.block_on(runtime.spawn(task)).unwrap();
        let limit = Instant::now() + Duration::from_secs(30);
        let mut written = 0;
        while written < 3 {
            assert!(Instant::now() < limit, "records left unwritten");
            std::thread::sleep(Duration::from_millis(1));
            for (call, lines) in calls.take() {
                assert_eq!(call, "write", "nothing asked for a sync");
                written += lines;
            }
        }
        assert_eq!(written, 3);
        drop(writer);
        thread.join();
    }

    #[tokio::test]
    async fn a_failed_sync_stops_the_journal_for_everyone() {
        let (writer, thread) =
            JournalWriter::start_with_delay(Box::new(Failing), Arc::default(), None, NEVER);
        let lazy = writer.append_waiting(record("a"), Durability::OnDemand);
        let error = writer.append_durable(record("b")).await.unwrap_err();
        assert!(error.to_string().contains("disk on fire"), "{error}");
        assert!(lazy.await.is_err(), "a record the failed sync covered");
        // Nothing is written after the failure, and everyone hears why.
        let later = writer.append_durable(record("c")).await.unwrap_err();
        assert!(later.to_string().contains("disk on fire"), "{later}");
        assert!(writer.flush().await.is_err());
        drop(writer);
        thread.join();
    }
}
