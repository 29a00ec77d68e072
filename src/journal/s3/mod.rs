//! The state in S3, or in any S3-compatible server that honours conditional
//! writes: `--state s3://BUCKET/PREFIX`, for a rebuild that must survive the
//! machine that drives it.
//!
//! ```text
//! PREFIX/lock                                  the lease (`lease.rs`)
//! PREFIX/runs/RUN_ID/plan.toml                 written once, with If-None-Match
//! PREFIX/runs/RUN_ID/journal/0000000000.jsonl  the journal, a segment per group commit (`segments.rs`)
//! PREFIX/runs/RUN_ID/logs/                     step logs, copied up as the run goes
//! PREFIX/runs/RUN_ID/report.json               and any other report written
//! ```
//!
//! The store is the one source of truth. What must be a local directory (step
//! logs as they are written, `{{ run.dir }}`, scratch space) lives in a cache,
//! `PHOENIX_CACHE_DIR` (default `~/.cache/phoenix`), which any machine can
//! lose: logs are copied up after journal batches (at most every few seconds)
//! and when the session ends, and their tails fetched back for reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::runtime::Handle;

use super::lock::{LockError, LockInfo};
use super::{JournalBackend, StateError, StateLock, StateStore};

mod lease;
mod object;
mod segments;

use lease::LeaseState;
use object::{block_on, PutIf, Remote, RemoteError};

pub struct S3State {
    /// The state's own runtime: its calls work the same from plain threads,
    /// from the journal's writer thread and from inside the executor's runtime.
    runtime: tokio::runtime::Runtime,
    remote: Remote,
    url: String,
    cache: PathBuf,
    lease: Arc<LeaseState>,
    logs: Arc<LogSync>,
}

/// Splits `s3://BUCKET/PREFIX` into the bucket and a prefix ending in `/` (or empty).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() || prefix.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Some((bucket.to_string(), prefix))
}

/// The local cache of remote states: `PHOENIX_CACHE_DIR`, else the user's cache.
fn cache_root() -> PathBuf {
    let from = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("PHOENIX_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|d| d.join("phoenix")))
        .or_else(|| from("HOME").map(|d| d.join(".cache").join("phoenix")))
        .unwrap_or_else(|| std::env::temp_dir().join("phoenix-cache"))
}

impl S3State {
    pub fn open(url: &str, create: bool) -> Result<S3State, StateError> {
        let remote_error = |message: String| StateError::Remote {
            url: url.to_string(),
            message,
        };
        let (bucket, prefix) = parse_url(url)
            .ok_or_else(|| remote_error("expected s3://BUCKET or s3://BUCKET/PREFIX".into()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("phoenix-state")
            .enable_all()
            .build()
            .map_err(|e| remote_error(format!("cannot start a runtime: {e}")))?;
        let endpoint = std::env::var("PHOENIX_S3_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty());
        let path_style = endpoint.is_some();
        let client = block_on(
            runtime.handle(),
            crate::stores::s3::client(None, endpoint, path_style),
        )
        .ok_or_else(|| remote_error("the state's runtime has stopped".into()))?;
        let remote = Remote::new(client, bucket.clone(), prefix.clone());
        // One call up front: a wrong bucket or missing credentials are said
        // here, once, not by the first journal write.
        let top = {
            let remote = remote.clone();
            object::run(runtime.handle(), async move { remote.list_dirs("").await })
                .map_err(|e| remote_error(e.to_string()))?
        };
        if !create && !top.iter().any(|d| d == "runs") {
            return Err(StateError::NoState(url.to_string()));
        }
        let cache = cache_root()
            .join("s3")
            .join(&bucket)
            .join(prefix.trim_end_matches('/'));
        Ok(S3State {
            runtime,
            logs: Arc::new(LogSync::new(remote.clone())),
            remote,
            url: url.trim_end_matches('/').to_string(),
            cache,
            lease: Arc::default(),
        })
    }

    fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// Runs one call against the store and waits for it.
    fn call<T, F>(&self, future: F) -> Result<T, StateError>
    where
        F: std::future::Future<Output = Result<T, RemoteError>> + Send + 'static,
        T: Send + 'static,
    {
        object::run(self.handle(), future).map_err(|e| self.error(e))
    }

    fn error(&self, error: RemoteError) -> StateError {
        StateError::Remote {
            url: self.url.clone(),
            message: error.to_string(),
        }
    }

    fn journal_bytes(&self, run_id: &str) -> Result<Vec<Bytes>, StateError> {
        let (remote, run) = (self.remote.clone(), run_id.to_string());
        self.call(async move { segments::read(&remote, &run).await })
    }
}

impl StateStore for S3State {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn create_run(&self, run_id: &str, plan_text: &str) -> Result<(), StateError> {
        let (remote, key) = (self.remote.clone(), format!("runs/{run_id}/plan.toml"));
        let body = Bytes::from(plan_text.to_string());
        match object::run(self.handle(), async move {
            remote.put(&key, body, PutIf::Absent).await
        }) {
            Ok(_) => Ok(()),
            Err(RemoteError::Precondition) => Err(StateError::RunExists(run_id.to_string())),
            Err(e) => Err(self.error(e)),
        }
    }

    fn discard_run(&self, run_id: &str) {
        // As far as the store can be reached: the same failure may stop this.
        let (remote, key) = (self.remote.clone(), format!("runs/{run_id}/plan.toml"));
        let _ = object::run(
            self.handle(),
            async move { remote.delete(&key, None).await },
        );
        let _ = std::fs::remove_dir_all(self.run_dir(run_id));
    }

    fn journal(&self, run_id: &str) -> Result<Box<dyn JournalBackend>, StateError> {
        let (remote, run) = (self.remote.clone(), run_id.to_string());
        let next = self
            .call(async move { segments::numbers(&remote, &run).await })?
            .last()
            .map_or(0, |n| n + 1);
        let logs = Arc::clone(&self.logs);
        let (handle, run, dir) = (
            self.handle().clone(),
            run_id.to_string(),
            self.run_dir(run_id).join("logs"),
        );
        let lease = Arc::clone(&self.lease);
        let after_batch = {
            let lease = Arc::clone(&lease);
            move || {
                if lease.check().is_ok() && logs.due() {
                    let (logs, run, dir) = (Arc::clone(&logs), run.clone(), dir.clone());
                    handle.spawn(async move { logs.upload(&run, &dir).await });
                }
            }
        };
        Ok(Box::new(segments::SegmentJournal {
            remote: self.remote.clone(),
            handle: self.handle().clone(),
            run: run_id.to_string(),
            next,
            pending: Vec::new(),
            lease,
            after_batch: Arc::new(after_batch),
        }))
    }

    fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StateError> {
        let parts = self.journal_bytes(run_id)?;
        if parts.is_empty() {
            // A run is there once its plan is; with no journal yet it is empty.
            self.read_plan(run_id)?;
        }
        Ok(parts.concat())
    }

    fn set_aside_tail(&self, run_id: &str, len: u64) -> Result<PathBuf, StateError> {
        let (remote, run) = (self.remote.clone(), run_id.to_string());
        let name = format!(
            "runs/{run_id}/journal.torn-{}.jsonl",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let side = name.clone();
        self.call(async move {
            let cut = segments::truncate(&remote, &run, len).await?;
            remote.put(&side, Bytes::from(cut), PutIf::Always).await
        })?;
        Ok(PathBuf::from(self.remote.url(&name)))
    }

    fn write_file(&self, run_id: &str, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        // A process fenced out writes nothing more to the state.
        if let Err(why) = self.lease.check() {
            return Err(StateError::Remote {
                url: self.url.clone(),
                message: why,
            });
        }
        let (remote, key) = (self.remote.clone(), format!("runs/{run_id}/{name}"));
        let body = Bytes::copy_from_slice(bytes);
        self.call(async move { remote.put(&key, body, PutIf::Always).await })?;
        // A copy in the cache, for the commands that print its path.
        let local = self.run_dir(run_id).join(name);
        super::local::make_dir(&self.run_dir(run_id))?;
        super::local::create_private(&local)
            .and_then(|mut file| std::io::Write::write_all(&mut file, bytes))
            .map_err(StateError::io("write", &local))?;
        Ok(local)
    }

    fn read_plan(&self, run_id: &str) -> Result<String, StateError> {
        let (remote, key) = (self.remote.clone(), format!("runs/{run_id}/plan.toml"));
        match self.call(async move { remote.get(&key).await })? {
            Some(object) => Ok(String::from_utf8_lossy(&object.bytes).into_owned()),
            None => Err(StateError::NoRun(run_id.to_string())),
        }
    }

    fn run_ids(&self) -> Result<Vec<String>, StateError> {
        let remote = self.remote.clone();
        self.call(async move { remote.list_dirs("runs/").await })
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.cache.join("runs").join(run_id)
    }

    fn location(&self, run_id: &str) -> String {
        format!("{}/runs/{run_id}", self.url)
    }

    fn logs_dir(&self, run_id: &str) -> PathBuf {
        let dir = self.run_dir(run_id).join("logs");
        let (logs, run, local) = (Arc::clone(&self.logs), run_id.to_string(), dir.clone());
        if let Err(error) = self.call(async move { logs.fetch_tails(&run, &local).await }) {
            tracing::warn!("cannot fetch the logs of run `{run_id}`: {error}");
        }
        dir
    }

    fn sync_logs(&self, run_id: &str) -> Result<(), StateError> {
        if self.lease.check().is_err() {
            return Ok(());
        }
        let (logs, run, dir) = (
            Arc::clone(&self.logs),
            run_id.to_string(),
            self.run_dir(run_id).join("logs"),
        );
        self.call(async move { logs.upload(&run, &dir).await })
    }

    fn lock(&self, info: &LockInfo) -> Result<Box<dyn StateLock>, LockError> {
        Ok(Box::new(lease::acquire(
            &self.remote,
            self.handle(),
            Arc::clone(&self.lease),
            info,
        )?))
    }

    fn force_unlock(&self, lock_id: Option<&str>) -> Result<Option<LockInfo>, LockError> {
        lease::force_remove(&self.remote, self.handle(), lock_id)
    }

    fn lock_holder(&self) -> Option<LockInfo> {
        lease::holder(&self.remote, self.handle())
    }
}

/// Copies step logs up to the store, each time it changed, and their tails
/// back down for reports.
struct LogSync {
    remote: Remote,
    /// What was copied up: name to (size, modified).
    sent: tokio::sync::Mutex<HashMap<String, (u64, SystemTime)>>,
    last: Mutex<Option<Instant>>,
}

/// How often logs are copied up while a run goes.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How much of a log a report needs: its tail.
const TAIL: u64 = 64 * 1024;

impl LogSync {
    fn new(remote: Remote) -> LogSync {
        LogSync {
            remote,
            sent: Default::default(),
            last: Mutex::new(None),
        }
    }

    /// Whether it is time for another upload (and, if so, counts it started).
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if at.elapsed() < LOG_EVERY => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    async fn upload(&self, run: &str, dir: &Path) -> Result<(), RemoteError> {
        // One upload at a time; the last one sees every change.
        let mut sent = self.sent.lock().await;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let key = format!("{run}/{name}");
            if sent.get(&key) == Some(&stamp) {
                continue;
            }
            self.remote
                .put_file(&format!("runs/{run}/logs/{name}"), &entry.path())
                .await?;
            sent.insert(key, stamp);
        }
        Ok(())
    }

    /// The tail of every log of `run` missing from `dir`.
    async fn fetch_tails(&self, run: &str, dir: &Path) -> Result<(), RemoteError> {
        let names = self.remote.list(&format!("runs/{run}/logs/")).await?;
        let missing: Vec<String> = names
            .into_iter()
            .filter(|n| !n.contains('/') && !dir.join(n).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        super::local::make_dir(dir).map_err(|e| RemoteError::Failed {
            message: e.to_string(),
            transient: false,
        })?;
        for name in missing {
            if let Some(object) = self
                .remote
                .get_tail(&format!("runs/{run}/logs/{name}"), TAIL)
                .await?
            {
                let _ = super::local::create_private(&dir.join(&name))
                    .and_then(|mut file| std::io::Write::write_all(&mut file, &object.bytes));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn state_urls() {
        let parsed = |url: &str| parse_url(url).map(|(b, p)| format!("{b}|{p}"));
        assert_eq!(parsed("s3://bucket").as_deref(), Some("bucket|"));
        assert_eq!(parsed("s3://bucket/").as_deref(), Some("bucket|"));
        assert_eq!(parsed("s3://bucket/a/b/").as_deref(), Some("bucket|a/b/"));
        assert_eq!(parsed("s3://bucket//a").as_deref(), Some("bucket|a/"));
        assert_eq!(parsed("s3:///a"), None);
        assert_eq!(parsed("s3://bucket/a/../b"), None);
        assert_eq!(parsed("gs://bucket"), None);
    }
}
