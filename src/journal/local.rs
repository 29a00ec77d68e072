//! The state in a local directory. Files are created readable by their owner
//! only: logs and journals describe infrastructure.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::lock::{FileLock, LockError, LockInfo};
use super::{JournalBackend, StateError, StateLock, StateStore};

pub struct LocalState {
    root: PathBuf,
}

impl LocalState {
    pub fn new(location: &str) -> Result<Self, StateError> {
        let root = PathBuf::from(location);
        make_dir(&root)?;
        let root = fs::canonicalize(&root).map_err(StateError::io("resolve", &root))?;
        Ok(LocalState { root })
    }

    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }
}

/// Creates a directory (and its parents) with mode 0700.
pub fn make_dir(path: &Path) -> Result<(), StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(StateError::io("create directory", path))
}

/// Creates (or truncates) a file with mode 0600.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

struct LocalJournal {
    /// Shared with the sync jobs: `fdatasync` needs no more than the file.
    file: std::sync::Arc<File>,
    /// Where the last whole write ended.
    len: u64,
}

impl JournalBackend for LocalJournal {
    /// A write that fails part-way (a full disk) is cut off again, so that
    /// the journal still ends with a whole line; were that cut to fail too,
    /// a resume sets the partial line aside as a torn tail.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match (&*self.file).write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }

    fn sync(&mut self) -> super::SyncJob {
        let file = std::sync::Arc::clone(&self.file);
        Box::new(move || file.sync_data())
    }
}

impl StateStore for LocalState {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn create_run(&self, run_id: &str, plan_text: &str) -> Result<(), StateError> {
        let dir = self.run_dir(run_id);
        if dir.exists() {
            return Err(StateError::RunExists(run_id.to_string()));
        }
        // Its `logs`, `work` and `tmp` are made where the run executes
        // (`Session::execute`), as they are for a run kept in S3.
        make_dir(&dir)?;
        let made = || -> Result<(), StateError> {
            let plan = dir.join("plan.toml");
            let mut file = create_private(&plan).map_err(StateError::io("write", &plan))?;
            file.write_all(plan_text.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(StateError::io("write", &plan))?;
            let journal = self.journal_path(run_id);
            create_private(&journal).map_err(StateError::io("create", &journal))?;
            // The new entries must survive a crash as well as the files' contents.
            for d in [&dir, &self.runs()] {
                File::open(d)
                    .and_then(|f| f.sync_all())
                    .map_err(StateError::io("sync", d))?;
            }
            Ok(())
        };
        // A run that could not be made (a full disk) leaves no directory
        // behind to be taken for a run.
        made().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }

    fn discard_run(&self, run_id: &str) {
        let _ = std::fs::remove_dir_all(self.run_dir(run_id));
    }

    fn journal(&self, run_id: &str) -> Result<Box<dyn JournalBackend>, StateError> {
        let path = self.journal_path(run_id);
        let file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(StateError::io("open", &path))?;
        let len = file
            .metadata()
            .map_err(StateError::io("open", &path))?
            .len();
        Ok(Box::new(LocalJournal {
            file: std::sync::Arc::new(file),
            len,
        }))
    }

    fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StateError> {
        let path = self.journal_path(run_id);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StateError::NoRun(run_id.to_string()),
            _ => StateError::io("read", &path)(e),
        })
    }

    fn set_aside_tail(&self, run_id: &str, len: u64) -> Result<PathBuf, StateError> {
        let path = self.journal_path(run_id);
        let bytes = fs::read(&path).map_err(StateError::io("read", &path))?;
        let side = self.run_dir(run_id).join(format!(
            "journal.torn-{}.jsonl",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
        let mut file = create_private(&side).map_err(StateError::io("write", &side))?;
        file.write_all(&bytes[len as usize..])
            .and_then(|_| file.sync_all())
            .map_err(StateError::io("write", &side))?;
        let journal = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(StateError::io("open", &path))?;
        journal
            .set_len(len)
            .and_then(|_| journal.sync_all())
            .map_err(StateError::io("truncate", &path))?;
        Ok(side)
    }

    fn write_file(&self, run_id: &str, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        let path = self.run_dir(run_id).join(name);
        let partial = self.run_dir(run_id).join(format!(".{name}.partial"));
        let mut file = create_private(&partial).map_err(StateError::io("write", &partial))?;
        if let Err(error) = file.write_all(bytes).and_then(|_| file.sync_all()) {
            // A full disk: nothing half-written is left behind.
            let _ = fs::remove_file(&partial);
            return Err(StateError::io("write", &partial)(error));
        }
        fs::rename(&partial, &path).map_err(StateError::io("rename", &path))?;
        Ok(path)
    }

    fn read_plan(&self, run_id: &str) -> Result<String, StateError> {
        let path = self.run_dir(run_id).join("plan.toml");
        fs::read_to_string(&path).map_err(StateError::io("read", &path))
    }

    fn run_ids(&self) -> Result<Vec<String>, StateError> {
        let runs = self.runs();
        let entries = match fs::read_dir(&runs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StateError::io("list", &runs)(e)),
        };
        Ok(entries
            .filter_map(Result::ok)
            // A run is there once its journal is. A journal that is there
            // but cannot be looked at is listed: reading it says why.
            .filter(|e| {
                !matches!(fs::symlink_metadata(e.path().join("journal.jsonl")),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound)
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs().join(run_id)
    }

    fn lock(&self, info: &LockInfo) -> Result<Box<dyn StateLock>, LockError> {
        Ok(Box::new(FileLock::acquire(&self.root.join("lock"), info)?))
    }

    fn force_unlock(&self, _lock_id: Option<&str>) -> Result<Option<LockInfo>, LockError> {
        // Here the kernel knows whether the holder lives: no id overrides that.
        FileLock::force_remove(&self.root.join("lock"))
    }

    fn lock_holder(&self) -> Option<LockInfo> {
        FileLock::holder(&self.root.join("lock"))
    }
}
