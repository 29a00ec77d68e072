//! The lock on a local state: one live run at a time.
//!
//! `STATE/lock` holds who has it (pid, host, run id, since) and is `flock`ed for
//! as long as the run lives. The kernel drops the `flock` when the process dies,
//! however it dies, so a lock file that can be locked belongs to a run that is
//! gone: it is taken over, with a warning.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StateLock;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    pub run_id: String,
    pub since: DateTime<Utc>,
    /// A remote lease's id, for `phoenix unlock --force LOCK_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_id: Option<String>,
    /// When a remote lease ends unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

impl LockInfo {
    pub fn describe(&self) -> String {
        let lease = match (&self.lock_id, &self.expires) {
            (Some(id), Some(expires)) => format!(
                ", lease until {}, lock id {id}",
                expires.format("%Y-%m-%d %H:%M:%SZ")
            ),
            _ => String::new(),
        };
        format!(
            "run `{}` (pid {} on {}, since {}{lease})",
            self.run_id,
            self.pid,
            self.host,
            self.since.format("%Y-%m-%d %H:%M:%SZ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state is locked by {}", .0.describe())]
    Held(LockInfo),
    #[error("the state is locked by a live process that left no details")]
    HeldUnknown,
    #[error(
        "the lease of {} is live; if that process is truly gone, `phoenix unlock --force {}`",
        .0.describe(),
        .0.lock_id.as_deref().unwrap_or("LOCK_ID")
    )]
    LiveLease(LockInfo),
    #[error("this run lost its lock on the state and stopped: {0}")]
    Lost(String),
    #[error("cannot use the lock `{url}`: {message}")]
    Remote { url: String, message: String },
    #[error("`{url}` ignores conditional writes ({what}), so a lock there would not keep a second run out; use a store that honours them (AWS S3, MinIO, moto)")]
    Unsupported { url: String, what: &'static str },
    #[error("cannot use the lock file `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct FileLock {
    path: PathBuf,
    file: File,
    took_over: Option<LockInfo>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_info(file: &mut File) -> Option<LockInfo> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Locks `file` without waiting; one held by another process is said with
/// its holder, as far as the file says who that is.
fn try_lock(file: &mut File, path: &Path) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(read_info(file)
            .map(LockError::Held)
            .unwrap_or(LockError::HeldUnknown)),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path)(e)),
    }
}

impl FileLock {
    pub fn acquire(path: &Path, info: &LockInfo) -> Result<FileLock, LockError> {
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io_error(path))?;
            try_lock(&mut file, path)?;
            // A releasing run unlinks the file before it unlocks; if this file is
            // no longer the one at `path`, lock the new one instead.
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(ours), Ok(now)) => ours.ino() == now.ino() && ours.dev() == now.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let took_over = read_info(&mut file);
            let text = serde_json::to_string(info).unwrap_or_default();
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(text.as_bytes()))
                .and_then(|_| file.sync_all())
                .map_err(io_error(path))?;
            return Ok(FileLock {
                path: path.to_path_buf(),
                file,
                took_over,
            });
        }
    }

    /// Who holds the lock now, if a live process does.
    pub fn holder(path: &Path) -> Option<LockInfo> {
        let mut file = File::open(path).ok()?;
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => read_info(&mut file),
            _ => None,
        }
    }

    /// Removes a lock left by a run that is gone. A lock held by a live process
    /// is refused: removing it would let a second run in beside the first.
    pub fn force_remove(path: &Path) -> Result<Option<LockInfo>, LockError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path)(e)),
        };
        try_lock(&mut file, path)?;
        let info = read_info(&mut file);
        std::fs::remove_file(path).map_err(io_error(path))?;
        Ok(info)
    }
}

impl StateLock for FileLock {
    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlink first, then unlock (on close): a waiting run that opened the old
        // file sees it is no longer at `path` and opens the new one.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}
