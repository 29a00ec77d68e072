//! The journal writer: appends records and makes them durable with group commit.
//!
//! One thread owns the backend. Callers send records down a channel; the thread
//! takes everything that has queued up, writes it as one batch, syncs once, and
//! then wakes every caller that asked to wait. Steps that finish together share
//! one fsync, so durability costs one sync per batch, not per step.
//!
//! The thread also folds every record it wrote into a [`RunView`], so the report
//! at the end of a run is built from memory instead of reading the journal back.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::reader::RunView;
use super::record::{Header, Record};
use super::JournalBackend;

/// A run as its journal stands: the header and every record folded in.
pub type Folded = Option<(Header, RunView)>;

enum Message {
    Append(Box<Record>, Option<oneshot::Sender<Result<(), String>>>),
    /// Sync everything sent so far, then answer.
    Flush(oneshot::Sender<Result<(), String>>),
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
        mut backend: Box<dyn JournalBackend>,
        masker: std::sync::Arc<crate::exec::secrets::Masker>,
        mut folded: Folded,
    ) -> (JournalWriter, WriterThread) {
        let (sender, receiver) = mpsc::channel::<Message>();
        let thread_masker = std::sync::Arc::clone(&masker);
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let mut buffer = Vec::with_capacity(64 * 1024);
                let mut waiters = Vec::new();
                let mut batch: Vec<Box<Record>> = Vec::new();
                while let Ok(first) = receiver.recv() {
                    let mut next = Some(first);
                    // Take everything already queued: one write and one sync for all.
                    while let Some(message) = next {
                        match message {
                            Message::Append(record, waiter) => {
                                let line = serde_json::to_string(&record).unwrap_or_default();
                                let masked = thread_masker.mask(&line);
                                buffer.extend_from_slice(masked.as_bytes());
                                buffer.push(b'\n');
                                waiters.extend(waiter);
                                // Fold what the journal holds: the masked record.
                                batch.push(match masked {
                                    std::borrow::Cow::Borrowed(_) => record,
                                    std::borrow::Cow::Owned(text) => {
                                        serde_json::from_str(&text).map(Box::new).unwrap_or(record)
                                    }
                                });
                            }
                            Message::Flush(waiter) => waiters.push(waiter),
                        }
                        next = receiver.try_recv().ok();
                    }
                    // Records nobody waits for (a step's start) are written but not
                    // synced on their own: the next record somebody waits for
                    // syncs them too. Losing one in a crash only makes its step
                    // look not started instead of in doubt: it runs again either way.
                    tracing::trace!(
                        bytes = buffer.len(),
                        waiters = waiters.len(),
                        "journal batch"
                    );
                    let result = if buffer.is_empty() {
                        Ok(())
                    } else if waiters.is_empty() {
                        backend.write(&buffer).map_err(|e| e.to_string())
                    } else {
                        backend.append(&buffer).map_err(|e| e.to_string())
                    };
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
                    for waiter in waiters.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
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
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Message::Append(Box::new(record), Some(tx)))
            .map_err(|_| JournalWriteError("the journal is closed".into()))?;
        rx.await
            .map_err(|_| JournalWriteError("the journal is closed".into()))?
            .map_err(JournalWriteError)
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
