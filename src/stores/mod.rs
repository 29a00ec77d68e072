//! Backup stores: where restore steps find backups.
//!
//! A store can list objects under a prefix, describe one object, and read a
//! byte range of it: that is all a restore needs. Each store type is one file
//! and one arm of [`Store`].

use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::plan::model::{self, StoreKind};

pub mod fs;
pub mod s3;

/// What a store says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// The object's identity as the store gives it (S3 ETag; size and time for
    /// files): a resumed restore reads exactly this object or fails.
    pub version: Option<String>,
    /// A digest the store keeps with the object (S3 metadata `sha256`).
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read `{path}`")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{operation} `{key}` in bucket `{bucket}`: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
        /// Whether trying again may help (a 5xx, a timeout, a reset connection).
        transient: bool,
    },
    #[error("`{key}` changed since it was chosen (it was {expected}, it is {found})")]
    Changed {
        key: String,
        expected: String,
        found: String,
    },
    #[error("`{key}`: the part at offset {offset} stalled for {}", humantime::format_duration(*.after))]
    Stalled {
        key: String,
        offset: u64,
        after: std::time::Duration,
    },
    /// An `fs` store's `path` that is not there: a typo, or a volume not
    /// mounted, not a store without backups.
    #[error("the store's directory `{}` does not exist", .0.display())]
    NoDirectory(std::path::PathBuf),
    #[error("`{key}`: expected {expected} bytes from offset {offset}, got {got}")]
    ShortRead {
        key: String,
        offset: u64,
        expected: u64,
        got: u64,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::S3 { transient, .. } => *transient,
            StoreError::ShortRead { .. } | StoreError::Stalled { .. } => true,
            StoreError::Io { .. } | StoreError::Changed { .. } | StoreError::NoDirectory(_) => {
                false
            }
        }
    }
}

pub enum Store {
    Fs(fs::FsStore),
    S3(s3::S3Store),
}

impl Store {
    /// Opens a store of the plan with its fields rendered by `render`.
    pub async fn open(
        def: &model::Store,
        plan_dir: &Path,
        render: impl Fn(
            &crate::plan::source::Spanned<String>,
        ) -> Result<String, crate::plan::interpolate::RenderError>,
    ) -> Result<Store, crate::plan::interpolate::RenderError> {
        Ok(match &def.kind {
            StoreKind::Fs { path } => Store::Fs(fs::FsStore::new(plan_dir.join(render(path)?))),
            StoreKind::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                path_style,
            } => {
                let opt = |v: &Option<crate::plan::source::Spanned<String>>| {
                    v.as_ref().map(&render).transpose()
                };
                Store::S3(
                    s3::S3Store::new(s3::S3Options {
                        bucket: render(bucket)?,
                        prefix: opt(prefix)?.unwrap_or_default(),
                        region: opt(region)?,
                        endpoint: opt(endpoint)?,
                        path_style: *path_style,
                    })
                    .await,
                )
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Fs(store) => store.describe(),
            Store::S3(store) => store.describe(),
        }
    }

    /// Every object whose key starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self {
            Store::Fs(store) => store.list(prefix).await,
            Store::S3(store) => store.list(prefix).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            Store::Fs(store) => store.head(key).await,
            Store::S3(store) => store.head(key).await,
        }
    }

    /// Bytes `start..end` of the object `info` describes, in the chunks they
    /// arrived in (an HTTP body's frames are not copied into one buffer);
    /// fails if the object is no longer that one.
    pub async fn read_range(
        &self,
        info: &ObjectInfo,
        start: u64,
        end: u64,
    ) -> Result<Vec<Bytes>, StoreError> {
        let chunks = match self {
            Store::Fs(store) => vec![store.read_range(info, start, end).await?],
            Store::S3(store) => store.read_range(info, start, end).await?,
        };
        let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if got != end - start {
            return Err(StoreError::ShortRead {
                key: info.key.clone(),
                offset: start,
                expected: end - start,
                got,
            });
        }
        Ok(chunks)
    }

    /// A small object whole (a `.sha256` sidecar); `None` when there is none.
    pub async fn read_small(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(info) = self.head(key).await? else {
            return Ok(None);
        };
        if info.size > 64 * 1024 {
            return Ok(None);
        }
        let chunks = self.read_range(&info, 0, info.size).await?;
        Ok(Some(Bytes::from(chunks.concat())))
    }
}
