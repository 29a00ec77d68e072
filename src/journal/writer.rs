//! The journal writer: appends records and makes them durable with group commit.
//!
//! One thread owns the backend. Callers send records down a channel; the thread
//! takes everything that has queued up, writes it as one batch, syncs once, and
//! then wakes every caller that asked to wait. Steps that finish together share
//! one fsync, so durability costs one sync per batch, not per step.
//!
//! A caller may also wait "on demand": its record is written at once but synced
//! only when somebody needs it to be ([`JournalWriter::sync`], or a record that
//! must be durable now), or [`MAX_SYNC_DELAY`] later. The walker uses this for
//! finished steps: while other steps are ready to fill every slot, nothing
//! waits for a finish to be durable, and a run of thousands of short steps on
//! two slots needs a few syncs a second instead of one per step.
//!
//! The thread also folds every record it wrote into a [`RunView`], so the report
//! at the end of a run is built from memory instead of reading the journal back.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::reader::RunView;
use super::record::{Header, Record};
use super::JournalBackend;

/// A run as its journal stands: the header and every record folded in.
pub type Folded = Option<(Header, RunView)>;

/// A finished step's record is durable at the latest this long after it was
/// written, when no step waits for it before then.
pub const MAX_SYNC_DELAY: Duration = Duration::from_millis(100);

/// When a waiting caller's record must be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// With the batch it arrives in: the caller waits for it now.
    Now,
    /// With the next sync anybody asks for ([`JournalWriter::sync`] or a
    /// `Now` record), or after [`MAX_SYNC_DELAY`].
    OnDemand,
}

type Waiter = oneshot::Sender<Result<(), String>>;

enum Message {
    Append(Box<Record>, Option<(Waiter, Durability)>),
    /// Sync everything sent so far, then answer.
    Flush(Waiter),
    /// Sync everything sent so far.
    Sync,
}

/// A cheap handle to the writer thread.
#[derive(Clone)]
pub struct JournalWriter {
    sender: mpsc::Sender<Message>,
    masker: std::sync::Arc<crate::exec::secrets::Masker>,
}

/// Owns the writer thread; joining it closes the journal.
pub struct WriterThread {
    handle: Option<JoinHandle<Folded>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal: {0}")]
pub struct JournalWriteError(pub String);

impl JournalWriter {
    /// Starts the writer thread. `folded` is the journal so far, for a resume.
    pub fn start(
        backend: Box<dyn JournalBackend>,
        masker: std::sync::Arc<crate::exec::secrets::Masker>,
        folded: Folded,
    ) -> (JournalWriter, WriterThread) {
        Self::start_with_delay(backend, masker, folded, MAX_SYNC_DELAY)
    }

    /// [`JournalWriter::start`] with another bound on how long an on-demand
    /// record may wait for its sync (tests).
    fn start_with_delay(
        mut backend: Box<dyn JournalBackend>,
        masker: std::sync::Arc<crate::exec::secrets::Masker>,
        mut folded: Folded,
        max_delay: Duration,
    ) -> (JournalWriter, WriterThread) {
        let (sender, receiver) = mpsc::channel::<Message>();
        let thread_masker = std::sync::Arc::clone(&masker);
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let mut buffer = Vec::with_capacity(64 * 1024);
                let mut batch: Vec<Box<Record>> = Vec::new();
                // Callers waiting for the next sync, and whether anything
                // written is not synced yet.
                let mut waiters: Vec<Waiter> = Vec::new();
                let mut unsynced = false;
                let mut deadline: Option<Instant> = None;
                loop {
                    let first = match deadline {
                        None => match receiver.recv() {
                            Ok(message) => Some(message),
                            Err(_) => break,
                        },
                        Some(at) => {
                            match receiver
                                .recv_timeout(at.saturating_duration_since(Instant::now()))
                            {
                                Ok(message) => Some(message),
                                Err(mpsc::RecvTimeoutError::Timeout) => None,
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    };
                    // A deadline that passed syncs what waits.
                    let mut sync = first.is_none();
                    let mut next = first;
                    // Take everything already queued: one write and one sync for all.
                    while let Some(message) = next {
                        match message {
                            Message::Append(record, waiter) => {
                                let line = serde_json::to_string(&record).unwrap_or_default();
                                let masked = thread_masker.mask(&line);
                                buffer.extend_from_slice(masked.as_bytes());
                                buffer.push(b'\n');
                                if let Some((waiter, durability)) = waiter {
                                    sync |= durability == Durability::Now;
                                    waiters.push(waiter);
                                }
                                // Fold what the journal holds: the masked record.
                                batch.push(match masked {
                                    std::borrow::Cow::Borrowed(_) => record,
                                    std::borrow::Cow::Owned(text) => {
                                        serde_json::from_str(&text).map(Box::new).unwrap_or(record)
                                    }
                                });
                            }
                            Message::Flush(waiter) => {
                                sync = true;
                                waiters.push(waiter);
                            }
                            Message::Sync => sync = true,
                        }
                        next = receiver.try_recv().ok();
                    }
                    // Records nobody waits for yet (a step's start, a finish
                    // that no step needs yet) are written but not synced on
                    // their own: the next sync takes them too. A process killed
                    // before it loses none of them; a machine that goes down
                    // loses at most the steps that nothing had waited for, which
                    // run again on resume.
                    tracing::trace!(
                        bytes = buffer.len(),
                        waiters = waiters.len(),
                        sync,
                        "journal batch"
                    );
                    let result = if sync && (unsynced || !buffer.is_empty()) {
                        backend.append(&buffer).map_err(|e| e.to_string())
                    } else if !buffer.is_empty() {
                        backend.write(&buffer).map_err(|e| e.to_string())
                    } else {
                        Ok(())
                    };
                    unsynced = !sync && (unsynced || !buffer.is_empty());
                    buffer.clear();
                    for record in batch.drain(..) {
                        if result.is_err() {
                            continue; // not in the journal: not in the view either
                        }
                        match (&mut folded, *record) {
                            (None, Record::Header(header)) => {
                                let view = RunView::new(&header);
                                folded = Some((header, view));
                            }
                            (Some((_, view)), record) => view.apply(&record),
                            (None, _) => {}
                        }
                    }
                    if sync || result.is_err() {
                        for waiter in waiters.drain(..) {
                            let _ = waiter.send(result.clone());
                        }
                        deadline = None;
                    } else if !waiters.is_empty() && deadline.is_none() {
                        deadline = Some(Instant::now() + max_delay);
                    }
                }
                // Every handle is gone: whatever was written and never asked
                // for is made durable before the journal closes.
                if unsynced {
                    let _ = backend.append(&[]);
                }
                folded
            })
            .expect("spawn the journal thread");
        (
            JournalWriter { sender, masker },
            WriterThread {
                handle: Some(handle),
            },
        )
    }

    /// Queues a record; it becomes durable with the next batch.
    pub fn append(&self, record: Record) {
        let _ = self.sender.send(Message::Append(Box::new(record), None));
    }

    /// Appends a record and returns once it is durable.
    pub async fn append_durable(&self, record: Record) -> Result<(), JournalWriteError> {
        self.append_waiting(record, Durability::Now).await
    }

    /// Queues a record at once; the future it returns ends when the record is
    /// durable, which for [`Durability::OnDemand`] is at the next sync.
    pub fn append_waiting(
        &self,
        record: Record,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), JournalWriteError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .sender
            .send(Message::Append(Box::new(record), Some((tx, durability))));
        async move {
            sent.map_err(|_| JournalWriteError("the journal is closed".into()))?;
            rx.await
                .map_err(|_| JournalWriteError("the journal is closed".into()))?
                .map_err(JournalWriteError)
        }
    }

    /// Asks for a sync of everything sent so far, without waiting for it.
    pub fn sync(&self) {
        let _ = self.sender.send(Message::Sync);
    }

    /// Returns once every record sent so far is durable.
    pub async fn flush(&self) -> Result<(), JournalWriteError> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Message::Flush(tx))
            .map_err(|_| JournalWriteError("the journal is closed".into()))?;
        rx.await
            .map_err(|_| JournalWriteError("the journal is closed".into()))?
            .map_err(JournalWriteError)
    }

    pub fn masker(&self) -> &crate::exec::secrets::Masker {
        &self.masker
    }
}

impl WriterThread {
    /// Waits for the thread to write what it was sent, and returns the run as
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

    use super::{Durability, JournalWriter};
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
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            self.0.lock().unwrap().push(("sync", lines));
            Ok(())
        }

        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            self.0.lock().unwrap().push(("write", lines));
            Ok(())
        }
    }

    fn record(step: &str) -> Record {
        Record::Skipped {
            step: step.into(),
            at: Utc::now(),
            reason: crate::journal::record::SkipReason::Check,
        }
    }

    /// A writer whose on-demand records wait for their sync at most `delay`.
    fn start(delay: Duration) -> (JournalWriter, super::WriterThread, Calls) {
        let calls = Calls::default();
        let (writer, thread) =
            JournalWriter::start_with_delay(Box::new(calls.clone()), Arc::default(), None, delay);
        (writer, thread, calls)
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
        assert_eq!(calls.take(), [("write", 1), ("sync", 1)]);
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
}
