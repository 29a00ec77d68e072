//! The `fs` store: a directory of backup files. Keys are paths relative to it;
//! an object's time is its file's modification time.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectInfo, StoreError};

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: PathBuf) -> Self {
        FsStore { root }
    }

    pub fn describe(&self) -> String {
        format!("directory `{}`", self.root.display())
    }

    fn path_of(&self, key: &str) -> Option<PathBuf> {
        // A key never leaves the store's directory.
        let relative = Path::new(key);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return None;
        }
        Some(self.root.join(relative))
    }

    fn info(&self, key: String, meta: &std::fs::Metadata) -> ObjectInfo {
        let modified: DateTime<Utc> = meta
            .modified()
            .map(DateTime::from)
            .unwrap_or_else(|_| Utc::now());
        ObjectInfo {
            version: Some(format!(
                "{}@{}",
                meta.len(),
                modified.timestamp_nanos_opt().unwrap_or_default()
            )),
            key,
            size: meta.len(),
            last_modified: modified,
            sha256: None,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let this = FsStore { root: root.clone() };
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            if let Err(e) = std::fs::metadata(&root) {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound => StoreError::NoDirectory(root),
                    _ => StoreError::Io {
                        path: root,
                        source: e,
                    },
                });
            }
            // Start from the deepest directory the prefix names.
            let base = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut stack = vec![base];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(StoreError::Io { path: dir, source }),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(meta) = entry.metadata() else { continue };
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if meta.is_dir() {
                        stack.push(path);
                    } else if meta.is_file() && key.starts_with(&prefix) {
                        out.push(this.info(key, &meta));
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: self.root.clone(),
                source: std::io::Error::other(e),
            })
        })
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let Some(path) = self.path_of(key) else {
            return Ok(None);
        };
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(self.info(key.to_string(), &meta))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tokio::fs::metadata(&self.root).await.is_err() {
                    return Err(StoreError::NoDirectory(self.root.clone()));
                }
                Ok(None)
            }
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub async fn read_range(
        &self,
        info: &ObjectInfo,
        start: u64,
        end: u64,
    ) -> Result<Bytes, StoreError> {
        let path = self.path_of(&info.key).ok_or_else(|| StoreError::Io {
            path: self.root.join(&info.key),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "key leaves the store"),
        })?;
        let expected = info.clone();
        let this_root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
            let meta = file.metadata().map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
            let now = FsStore { root: this_root }.info(expected.key.clone(), &meta);
            if now.version != expected.version {
                return Err(StoreError::Changed {
                    key: expected.key.clone(),
                    expected: expected.version.clone().unwrap_or_default(),
                    found: now.version.unwrap_or_default(),
                });
            }
            let mut buffer = vec![0u8; (end - start) as usize];
            let mut filled = 0;
            while filled < buffer.len() {
                let n = file
                    .read_at(&mut buffer[filled..], start + filled as u64)
                    .map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buffer.truncate(filled);
            Ok(Bytes::from(buffer))
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: self.root.clone(),
                source: std::io::Error::other(e),
            })
        })
    }
}
