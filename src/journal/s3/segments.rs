//! A run's journal in S3: a numbered series of segment objects.
//!
//! S3 cannot append, so every group commit becomes one object,
//! `runs/RUN_ID/journal/0000000042.jsonl`, written with `If-None-Match: *`: a
//! number can be written once, by one process. The writer that finds its next
//! number taken has been fenced out (another process took over the lease and
//! claimed that number) and stops. Read back, the segments are concatenated in
//! order and parse exactly like a local `journal.jsonl`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::runtime::Handle;

use super::lease::LeaseState;
use super::object::{block_on, with_retries, PutIf, Remote, RemoteError};
use crate::journal::record::Record;
use crate::journal::{JournalBackend, SyncJob};

fn dir(run: &str) -> String {
    format!("runs/{run}/journal/")
}

fn segment(run: &str, number: u64) -> String {
    format!("runs/{run}/journal/{number:010}.jsonl")
}

/// The segment numbers of a run, in order.
pub async fn numbers(remote: &Remote, run: &str) -> Result<Vec<u64>, RemoteError> {
    let mut numbers: Vec<u64> = remote
        .list(&dir(run))
        .await?
        .iter()
        .filter_map(|name| name.strip_suffix(".jsonl")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Each segment's bytes, in order. A gap in the numbers is damage: nothing is
/// skipped silently.
pub async fn read(remote: &Remote, run: &str) -> Result<Vec<Bytes>, RemoteError> {
    let numbers = numbers(remote, run).await?;
    if let Some((i, n)) = numbers.iter().enumerate().find(|(i, n)| **n != *i as u64) {
        return Err(RemoteError::Failed {
            message: format!(
                "journal segment {} of run `{run}` is missing (the next one is {n})",
                segment(run, i as u64)
            ),
            transient: false,
        });
    }
    futures_util::stream::iter(numbers)
        .map(|n| async move {
            let key = segment(run, n);
            match remote.get(&key).await? {
                Some(object) => Ok(object.bytes),
                None => Err(RemoteError::Failed {
                    message: format!("journal segment {key} vanished while being read"),
                    transient: false,
                }),
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

/// Claims the next segment of `run` with a record saying it was fenced, so
/// that its old writer's next write is refused. A run with no journal yet has
/// nothing to fence.
pub async fn fence(remote: &Remote, run: &str, by: &str) -> Result<(), RemoteError> {
    let record = Record::Fenced {
        at: chrono::Utc::now(),
        by: by.to_string(),
    };
    let mut line = serde_json::to_vec(&record).unwrap_or_default();
    line.push(b'\n');
    let line = Bytes::from(line);
    for _ in 0..16 {
        let Some(last) = numbers(remote, run).await?.last().copied() else {
            return Ok(());
        };
        match remote
            .put(&segment(run, last + 1), line.clone(), PutIf::Absent)
            .await
        {
            Ok(_) => return Ok(()),
            Err(RemoteError::Precondition) => continue, // it wrote one more: claim the next
            Err(error) => return Err(error),
        }
    }
    Err(RemoteError::Failed {
        message: "its writer kept writing".into(),
        transient: false,
    })
}

/// Cuts a run's journal back to `len` bytes: the segments past it are
/// deleted, the one it falls in rewritten. Returns the bytes cut.
pub async fn truncate(remote: &Remote, run: &str, len: u64) -> Result<Vec<u8>, RemoteError> {
    let numbers = numbers(remote, run).await?;
    let mut start = 0u64;
    let mut cut = Vec::new();
    for n in numbers {
        let key = segment(run, n);
        let Some(object) = remote.get(&key).await? else {
            continue;
        };
        let end = start + object.bytes.len() as u64;
        if end > len {
            let keep = len.saturating_sub(start) as usize;
            cut.extend_from_slice(&object.bytes[keep..]);
            if keep == 0 {
                remote.delete(&key, Some(&object.etag)).await?;
            } else {
                remote
                    .put(
                        &key,
                        object.bytes.slice(..keep),
                        PutIf::Matches(&object.etag),
                    )
                    .await?;
            }
        }
        start = end;
    }
    Ok(cut)
}

/// Appends to a run's journal, one segment per durable batch.
pub struct SegmentJournal {
    pub remote: Remote,
    pub handle: Handle,
    pub run: String,
    pub next: u64,
    pub pending: Vec<u8>,
    pub lease: Arc<LeaseState>,
    /// Called after each durable batch (copies logs up now and then).
    pub after_batch: Arc<dyn Fn() + Send + Sync>,
}

/// How long a batch keeps being retried while the store does not answer and
/// no lease says otherwise.
const PATIENCE: Duration = Duration::from_secs(120);

impl JournalBackend for SegmentJournal {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // Not durable yet: the next sync job carries these bytes.
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Everything written since the last job becomes the next segment. The
    /// number is taken now, so jobs run in order write segments in order; a job
    /// that fails stops the journal (the writer syncs nothing after it), so no
    /// later segment can follow a missing one.
    fn sync(&mut self) -> SyncJob {
        if self.pending.is_empty() {
            return Box::new(|| Ok(()));
        }
        let key = segment(&self.run, self.next);
        self.next += 1;
        let body = Bytes::from(std::mem::take(&mut self.pending));
        let (remote, lease) = (self.remote.clone(), Arc::clone(&self.lease));
        let (handle, after_batch) = (self.handle.clone(), Arc::clone(&self.after_batch));
        Box::new(move || {
            lease.check().map_err(std::io::Error::other)?;
            let put = async move {
                let started = Instant::now();
                let result = with_retries(
                    || remote.put(&key, body.clone(), PutIf::Absent),
                    || lease.check().is_ok() && started.elapsed() < PATIENCE,
                )
                .await;
                match result {
                    Ok(_) => Ok(()),
                    Err(RemoteError::Precondition) => {
                        // Ours, if an earlier try landed but its answer was lost.
                        if let Ok(Some(object)) = remote.get(&key).await {
                            if object.bytes == body {
                                return Ok(());
                            }
                        }
                        let why = format!(
                            "another process wrote journal segment {} first: this run was fenced out",
                            remote.url(&key)
                        );
                        lease.lose(why.clone());
                        Err(why)
                    }
                    Err(error) => Err(match lease.check() {
                        Err(why) => why,
                        Ok(()) => format!("cannot write {}: {error}", remote.url(&key)),
                    }),
                }
            };
            match block_on(&handle, put) {
                Some(Ok(())) => {
                    after_batch();
                    Ok(())
                }
                Some(Err(why)) => Err(std::io::Error::other(why)),
                None => Err(std::io::Error::other("the state's runtime has stopped")),
            }
        })
    }
}
