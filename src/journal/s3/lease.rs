//! The lock on a remote state: a lease.
//!
//! `PREFIX/lock` says who holds the state and until when (`expires`). It is
//! created with `If-None-Match: *`, so of two processes racing for it exactly
//! one wins, and renewed every third of the lease with `If-Match` on the ETag
//! the holder last wrote. The ETag is the fencing token: once another process
//! has taken the lease over (allowed only after `expires`, and again with
//! `If-Match`, so two takers cannot both win), the old holder's renewal is
//! refused and it stops.
//!
//! A holder does not wait to be told: it counts its lease as lost a quarter
//! of a lease before it could expire (to allow for clock skew), if it has not
//! renewed it by then. And a taker claims the next segment of the old
//! holder's journal, so a holder that was paused past its lease (a stopped
//! process, a suspended VM whose clock did not count the pause) has every
//! later journal write refused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::object::{block_on, Object, PutIf, Remote, RemoteError};
use crate::journal::lock::{LockError, LockInfo};
use crate::journal::StateLock;

const LOCK: &str = "lock";

/// How long a lease lasts: `PHOENIX_LEASE` (a duration), default 60 seconds.
pub fn duration() -> Duration {
    crate::settings::lease()
}

/// How long after sending a renewal the holder may count on it: three
/// quarters of the lease, leaving the rest for clock skew between machines.
fn trusted(lease: Duration) -> Duration {
    lease * 3 / 4
}

type OnLost = Box<dyn FnOnce(String) + Send>;

/// What the holder, its heartbeat and its journal share: whether the lease is
/// still ours, and until when we may trust it.
#[derive(Default)]
pub struct LeaseState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    etag: String,
    deadline: Option<Instant>,
    lost: Option<String>,
    on_lost: Vec<OnLost>,
}

impl LeaseState {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` with the reason once the lease is lost or can no longer be trusted.
    pub fn check(&self) -> Result<(), String> {
        let expired = {
            let inner = self.inner();
            if let Some(why) = &inner.lost {
                return Err(why.clone());
            }
            inner.deadline.is_some_and(|d| Instant::now() >= d)
        };
        if expired {
            let why = "the lease on the state could not be renewed in time".to_string();
            self.lose(why.clone());
            return Err(why);
        }
        Ok(())
    }

    /// Marks the lease lost and tells whoever asked, once.
    pub fn lose(&self, why: String) {
        let callbacks = {
            let mut inner = self.inner();
            if inner.lost.is_some() {
                return;
            }
            tracing::debug!("lost the lock on the state: {why}");
            inner.lost = Some(why.clone());
            std::mem::take(&mut inner.on_lost)
        };
        for callback in callbacks {
            callback(why.clone());
        }
    }

    fn renewed(&self, etag: String, sent: Instant, lease: Duration) {
        let mut inner = self.inner();
        inner.etag = etag;
        inner.deadline = Some(sent + trusted(lease));
    }

    fn etag(&self) -> String {
        self.inner().etag.clone()
    }

    /// Takes the lock's current etag without extending the trusted lease:
    /// when the stored lease was written by an earlier renewal, when is not
    /// known exactly.
    fn adopt(&self, etag: String) {
        if !etag.is_empty() {
            self.inner().etag = etag;
        }
    }

    fn lost(&self) -> Option<String> {
        self.inner().lost.clone()
    }
}

/// A held lease; released (deleted, if still ours) when dropped.
pub struct Lease {
    remote: Remote,
    handle: Handle,
    state: Arc<LeaseState>,
    stop: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    took_over: Option<LockInfo>,
}

fn body(info: &LockInfo) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(info).unwrap_or_default())
}

fn expired(info: &LockInfo) -> bool {
    info.expires.is_none_or(|e| e <= Utc::now())
}

fn remote_error(remote: &Remote) -> impl Fn(RemoteError) -> LockError + '_ {
    move |error| LockError::Remote {
        url: remote.url(LOCK),
        message: error.to_string(),
    }
}

/// Refuses a store that ignores conditional writes: on it a lease would not
/// keep a second process out.
async fn probe(remote: &Remote) -> Result<(), LockError> {
    let key = format!("{LOCK}.probe-{:016x}", rand::random::<u64>());
    let sample =
        || Bytes::from_static(b"phoenix checks that this store honours conditional writes\n");
    remote
        .put(&key, sample(), PutIf::Absent)
        .await
        .map_err(remote_error(remote))?;
    let again = remote.put(&key, sample(), PutIf::Absent).await;
    let stale = remote
        .put(&key, sample(), PutIf::Matches("\"phoenix-no-such-etag\""))
        .await;
    let _ = remote.delete(&key, None).await;
    match (again, stale) {
        (
            Err(RemoteError::Precondition),
            Err(RemoteError::Precondition | RemoteError::NotFound),
        ) => Ok(()),
        (Err(error @ RemoteError::Failed { .. }), _)
        | (_, Err(error @ RemoteError::Failed { .. })) => Err(remote_error(remote)(error)),
        (again, _) => Err(LockError::Unsupported {
            url: remote.url(""),
            what: if again.is_ok() {
                "If-None-Match"
            } else {
                "If-Match"
            },
        }),
    }
}

/// Takes the lease, or says who holds it.
pub fn acquire(
    remote: &Remote,
    handle: &Handle,
    state: Arc<LeaseState>,
    info: &LockInfo,
) -> Result<Lease, LockError> {
    let lease = duration();
    let mut info = info.clone();
    info.lock_id = Some(format!("{:016x}", rand::random::<u64>()));
    let (etag, sent, took_over, info) = {
        let taker = remote.clone();
        block_on(handle, async move {
            let (etag, sent, took_over) = take(&taker, &mut info, lease).await?;
            Ok::<_, LockError>((etag, sent, took_over, info))
        })
        .ok_or(LockError::Remote {
            url: remote.url(LOCK),
            message: "the state's runtime has stopped".into(),
        })??
    };
    state.renewed(etag, sent, lease);
    let stop = CancellationToken::new();
    let heartbeat = handle.spawn(heartbeat(
        remote.clone(),
        Arc::clone(&state),
        info,
        lease,
        stop.clone(),
    ));
    Ok(Lease {
        remote: remote.clone(),
        handle: handle.clone(),
        state,
        stop,
        heartbeat: Some(heartbeat),
        took_over,
    })
}

async fn take(
    remote: &Remote,
    info: &mut LockInfo,
    lease: Duration,
) -> Result<(String, Instant, Option<LockInfo>), LockError> {
    probe(remote).await?;
    for _ in 0..8 {
        let sent = Instant::now();
        info.expires = Some(Utc::now() + lease);
        match remote.put(LOCK, body(info), PutIf::Absent).await {
            Ok(etag) => {
                let etag = settled(remote, info, etag).await?;
                return Ok((etag, sent, None));
            }
            Err(RemoteError::Precondition) => {}
            Err(error) => return Err(remote_error(remote)(error)),
        }
        let Some(current) = remote.get(LOCK).await.map_err(remote_error(remote))? else {
            continue; // released in between: try again
        };
        let Ok(held) = serde_json::from_slice::<LockInfo>(&current.bytes) else {
            return Err(LockError::HeldUnknown);
        };
        if !expired(&held) {
            return Err(LockError::Held(held));
        }
        let sent = Instant::now();
        info.expires = Some(Utc::now() + lease);
        match remote
            .put(LOCK, body(info), PutIf::Matches(&current.etag))
            .await
        {
            Ok(etag) => {
                let etag = settled(remote, info, etag).await?;
                fence_run(remote, &held, &format!("taken over by {}", info.describe())).await;
                return Ok((etag, sent, Some(held)));
            }
            Err(RemoteError::Precondition | RemoteError::NotFound) => continue,
            Err(error) => return Err(remote_error(remote)(error)),
        }
    }
    Err(LockError::Remote {
        url: remote.url(LOCK),
        message: "the lock kept changing while phoenix tried to take it".into(),
    })
}

/// How long a new holder waits before reading its lock back.
const SETTLE: Duration = Duration::from_millis(250);

/// Reads the lock back a moment after writing it, and keeps it only if it is
/// still ours. Some servers check a condition and then write, without holding
/// anything between the two (s3s-fs always; moto, rarely, under load): two
/// writers racing for the lock can then both be told they won, and the one
/// written last is the one stored. Once every racing write has landed, the
/// stored lock names exactly one of them.
async fn settled(remote: &Remote, info: &LockInfo, etag: String) -> Result<String, LockError> {
    tokio::time::sleep(SETTLE).await;
    let current = remote.get(LOCK).await.map_err(remote_error(remote))?;
    match current {
        Some(current) => match serde_json::from_slice::<LockInfo>(&current.bytes) {
            Ok(stored) if stored.lock_id == info.lock_id => Ok(if current.etag.is_empty() {
                etag
            } else {
                current.etag
            }),
            Ok(stored) => Err(LockError::Held(stored)),
            Err(_) => Err(LockError::HeldUnknown),
        },
        None => Err(LockError::Remote {
            url: remote.url(LOCK),
            message: "the lock vanished right after it was taken; try again".into(),
        }),
    }
}

/// Closes the journal of the run that held a lease to its old holder.
async fn fence_run(remote: &Remote, held: &LockInfo, by: &str) {
    if let Err(error) = super::segments::fence(remote, &held.run_id, by).await {
        tracing::warn!(
            "cannot fence the journal of run `{}`: {error}; its process, if it is still alive, stops when it finds its lease gone",
            held.run_id
        );
    }
}

/// What a renewal the store refused (precondition failed, or no lock) means,
/// from the lock as it reads now.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// The lock is still ours: an earlier write of ours landed though its
    /// answer was lost, and the refused one was its retry. `extended` when the
    /// stored lease is the one this renewal sent.
    OursAfterAll { etag: String, extended: bool },
    /// Somebody else holds it now, or it was removed: why, for the operator.
    Lost(String),
    /// The lock could not be read: the next renewal will tell.
    Unknown(String),
}

fn after_refusal(current: Result<Option<Object>, RemoteError>, sent: &LockInfo) -> Refusal {
    match current {
        Ok(Some(current)) => match serde_json::from_slice::<LockInfo>(&current.bytes) {
            Ok(_) if current.etag.is_empty() => {
                Refusal::Unknown("the store answered without an etag".into())
            }
            Ok(held) if held.lock_id.is_some() && held.lock_id == sent.lock_id => {
                Refusal::OursAfterAll {
                    extended: held.expires == sent.expires,
                    etag: current.etag,
                }
            }
            Ok(held) => Refusal::Lost(format!("it is now held by {}", held.describe())),
            Err(_) => Refusal::Lost("it was replaced".into()),
        },
        Ok(None) => Refusal::Lost("it was removed (`phoenix unlock --force`)".into()),
        Err(error) => Refusal::Unknown(error.to_string()),
    }
}

async fn heartbeat(
    remote: Remote,
    state: Arc<LeaseState>,
    mut info: LockInfo,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = lease / 3;
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if state.check().is_err() {
            return;
        }
        let sent = Instant::now();
        info.expires = Some(Utc::now() + lease);
        let etag = state.etag();
        match remote.put(LOCK, body(&info), PutIf::Matches(&etag)).await {
            Ok(etag) => {
                state.renewed(etag, sent, lease);
                wait = every;
            }
            Err(RemoteError::Precondition | RemoteError::NotFound) => {
                match after_refusal(remote.get(LOCK).await, &info) {
                    Refusal::OursAfterAll { etag, extended } => {
                        // The write the store refused was a retry of one that
                        // had landed (its answer lost on the way back).
                        if extended {
                            state.renewed(etag, sent, lease);
                            wait = every;
                        } else {
                            state.adopt(etag);
                            wait = (every / 4).max(Duration::from_millis(250));
                        }
                    }
                    Refusal::Lost(now) => {
                        state.lose(format!("another process took the lock on the state: {now}"));
                        return;
                    }
                    Refusal::Unknown(error) => {
                        tracing::warn!(
                            "the store refused to renew the lease and cannot be read back ({error}); trying again"
                        );
                        wait = (every / 4).max(Duration::from_millis(250));
                    }
                }
            }
            Err(error) => {
                tracing::warn!("cannot renew the lease on the state: {error}; trying again");
                // Try again soon: the lease is trusted for a little while only.
                wait = (every / 4).max(Duration::from_millis(250));
            }
        }
    }
}

impl StateLock for Lease {
    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }

    fn on_lost(&self, callback: Box<dyn FnOnce(String) + Send>) {
        let lost = {
            let mut inner = self.state.inner();
            match &inner.lost {
                Some(why) => Some(why.clone()),
                None => {
                    inner.on_lost.push(callback);
                    return;
                }
            }
        };
        if let Some(why) = lost {
            callback(why);
        }
    }

    fn lost(&self) -> Option<String> {
        self.state.lost()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        // Let a renewal in flight land first: deleting with the ETag it
        // replaces would fail and leave the lock behind.
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = block_on(&self.handle, heartbeat);
        }
        if self.state.lost().is_some() {
            return;
        }
        // Only if it is still ours: a conditional delete.
        let remote = self.remote.clone();
        let etag = self.state.etag();
        let released = block_on(&self.handle, async move {
            remote.delete(LOCK, Some(&etag)).await
        });
        if let Some(Err(error)) = released {
            tracing::warn!("cannot release the lock on the state: {error}; it expires by itself");
        }
    }
}

/// The live holder of the lease, if any.
pub fn holder(remote: &Remote, handle: &Handle) -> Option<LockInfo> {
    let remote = remote.clone();
    let current = block_on(handle, async move { remote.get(LOCK).await })?.ok()??;
    let info: LockInfo = serde_json::from_slice(&current.bytes).ok()?;
    (!expired(&info)).then_some(info)
}

/// Removes the lease: an expired one always, a live one only when its lock id
/// is given (the operator knows its holder is gone). The run it belonged to is
/// fenced, so its process, if it lives, can write nothing more.
pub fn force_remove(
    remote: &Remote,
    handle: &Handle,
    lock_id: Option<&str>,
) -> Result<Option<LockInfo>, LockError> {
    let remote = remote.clone();
    let lock_id = lock_id.map(str::to_string);
    block_on(handle, async move {
        let Some(current) = remote.get(LOCK).await.map_err(remote_error(&remote))? else {
            return Ok(None);
        };
        let info = serde_json::from_slice::<LockInfo>(&current.bytes).ok();
        let named = lock_id.is_some()
            && info.as_ref().and_then(|i| i.lock_id.as_deref()) == lock_id.as_deref();
        match &info {
            Some(held) if !expired(held) && !named => {
                return Err(LockError::LiveLease(held.clone()))
            }
            None if lock_id.is_none() => return Err(LockError::HeldUnknown),
            _ => {}
        }
        remote
            .delete(LOCK, Some(&current.etag))
            .await
            .map_err(|error| match error {
                RemoteError::Precondition => LockError::Remote {
                    url: remote.url(LOCK),
                    message: "the lock changed while it was being removed; look again".into(),
                },
                other => remote_error(&remote)(other),
            })?;
        if let Some(held) = &info {
            fence_run(&remote, held, "`phoenix unlock --force`").await;
        }
        Ok(info)
    })
    .unwrap_or(Err(LockError::HeldUnknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lock_id: &str, expires_in: i64) -> LockInfo {
        let since = chrono::DateTime::parse_from_rfc3339("2026-11-27T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        LockInfo {
            pid: 7,
            host: "a".into(),
            run_id: "r".into(),
            since,
            lock_id: Some(lock_id.into()),
            expires: Some(since + chrono::Duration::seconds(expires_in)),
        }
    }

    fn stored(info: &LockInfo) -> Result<Option<Object>, RemoteError> {
        Ok(Some(Object {
            bytes: body(info),
            etag: "\"e2\"".into(),
        }))
    }

    #[test]
    fn a_refused_renewal_whose_earlier_write_landed_keeps_the_lease() {
        let sent = info("ours", 20);
        assert_eq!(
            after_refusal(stored(&sent), &sent),
            Refusal::OursAfterAll {
                etag: "\"e2\"".into(),
                extended: true
            }
        );
        // Written by an earlier renewal: the etag is taken, the lease not extended.
        assert_eq!(
            after_refusal(stored(&info("ours", 10)), &sent),
            Refusal::OursAfterAll {
                etag: "\"e2\"".into(),
                extended: false
            }
        );
    }

    #[test]
    fn a_refused_renewal_is_a_loss_only_when_the_lock_says_so() {
        let sent = info("ours", 20);
        match after_refusal(stored(&info("theirs", 20)), &sent) {
            Refusal::Lost(why) => assert!(why.contains("lock id theirs"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            after_refusal(Ok(None), &sent),
            Refusal::Lost("it was removed (`phoenix unlock --force`)".into())
        );
        let garbage = Ok(Some(Object {
            bytes: Bytes::from_static(b"not a lock"),
            etag: "\"e3\"".into(),
        }));
        assert_eq!(
            after_refusal(garbage, &sent),
            Refusal::Lost("it was replaced".into())
        );
        // Not readable: nothing is concluded; the lease runs out if it stays so.
        let failed = Err(RemoteError::Failed {
            message: "timed out".into(),
            transient: true,
        });
        assert_eq!(
            after_refusal(failed, &sent),
            Refusal::Unknown("timed out".into())
        );
    }
}
