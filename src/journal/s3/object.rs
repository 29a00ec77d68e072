//! The few S3 calls a remote state makes, with the conditions that make it
//! safe: `If-None-Match: *` (create only), `If-Match: ETAG` (replace only
//! what was read). Every answer is sorted into "the condition failed", "not
//! there", or an error worth a message.

use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

/// A bucket and prefix, and a client for them.
#[derive(Clone)]
pub struct Remote {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
}

/// The condition on a write.
pub enum PutIf<'a> {
    /// Only if no object has the key: `If-None-Match: *`.
    Absent,
    /// Only if the object is still the one with this ETag: `If-Match`.
    Matches(&'a str),
    Always,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The write's condition did not hold (HTTP 412, or 409 for a
    /// conditional write racing another).
    #[error("the object changed since it was read (precondition failed)")]
    Precondition,
    #[error("no such object")]
    NotFound,
    #[error("{message}")]
    Failed { message: String, transient: bool },
}

impl RemoteError {
    pub fn transient(&self) -> bool {
        matches!(
            self,
            RemoteError::Failed {
                transient: true,
                ..
            }
        )
    }
}

fn sort<E: ProvideErrorMetadata + std::fmt::Debug>(
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> RemoteError {
    let status = error.raw_response().map(|r| r.status().as_u16());
    match status {
        Some(412) | Some(409) => return RemoteError::Precondition,
        Some(404) => return RemoteError::NotFound,
        _ => {}
    }
    if error.code() == Some("NoSuchKey") {
        return RemoteError::NotFound;
    }
    let (transient, message) = crate::stores::s3::classify(&error, status);
    RemoteError::Failed { message, transient }
}

/// One stored object: its bytes and ETag.
pub struct Object {
    pub bytes: Bytes,
    pub etag: String,
}

impl Remote {
    pub fn new(client: aws_sdk_s3::Client, bucket: String, prefix: String) -> Remote {
        Remote {
            client,
            bucket,
            prefix,
        }
    }

    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    pub async fn get(&self, rel: &str) -> Result<Option<Object>, RemoteError> {
        self.get_range(rel, None).await
    }

    /// The last `bytes` bytes of an object (all of it when shorter).
    pub async fn get_tail(&self, rel: &str, bytes: u64) -> Result<Option<Object>, RemoteError> {
        self.get_range(rel, Some(format!("bytes=-{bytes}"))).await
    }

    async fn get_range(
        &self,
        rel: &str,
        range: Option<String>,
    ) -> Result<Option<Object>, RemoteError> {
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .set_range(range)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return match sort(error) {
                    RemoteError::NotFound => Ok(None),
                    // A range on an empty object is unsatisfiable (416).
                    RemoteError::Failed { message, .. } if message.contains("416") => {
                        Ok(Some(Object {
                            bytes: Bytes::new(),
                            etag: String::new(),
                        }))
                    }
                    other => Err(other),
                };
            }
        };
        let etag = response.e_tag().unwrap_or_default().to_string();
        let bytes = response
            .body
            .collect()
            .await
            .map_err(|e| RemoteError::Failed {
                message: format!("the body was cut short: {e}"),
                transient: true,
            })?
            .into_bytes();
        Ok(Some(Object { bytes, etag }))
    }

    /// Writes an object under a condition; returns its new ETag.
    pub async fn put(
        &self,
        rel: &str,
        body: Bytes,
        condition: PutIf<'_>,
    ) -> Result<String, RemoteError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .body(ByteStream::from(body));
        request = match condition {
            PutIf::Absent => request.if_none_match("*"),
            PutIf::Matches(etag) => request.if_match(etag),
            PutIf::Always => request,
        };
        let response = request.send().await.map_err(sort)?;
        Ok(response.e_tag().unwrap_or_default().to_string())
    }

    /// Uploads a local file, streamed from disk.
    pub async fn put_file(&self, rel: &str, path: &std::path::Path) -> Result<(), RemoteError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| RemoteError::Failed {
                message: format!("cannot read `{}`: {e}", path.display()),
                transient: false,
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .body(body)
            .send()
            .await
            .map_err(sort)?;
        Ok(())
    }

    /// Deletes an object, only if it is still the one with `etag` when given.
    pub async fn delete(&self, rel: &str, etag: Option<&str>) -> Result<(), RemoteError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .set_if_match(etag.map(str::to_string))
            .send()
            .await
            .map_err(sort)?;
        Ok(())
    }

    /// The keys under `rel` (relative to the prefix), at any depth.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>, RemoteError> {
        self.list_with(rel, None).await
    }

    /// The names of the "directories" right under `rel`, without slashes.
    pub async fn list_dirs(&self, rel: &str) -> Result<Vec<String>, RemoteError> {
        self.list_with(rel, Some("/")).await
    }

    async fn list_with(
        &self,
        rel: &str,
        delimiter: Option<&str>,
    ) -> Result<Vec<String>, RemoteError> {
        let full = self.key(rel);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .set_delimiter(delimiter.map(str::to_string))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sort)?;
            if delimiter.is_some() {
                for common in page.common_prefixes() {
                    if let Some(p) = common.prefix() {
                        let name = p.strip_prefix(&full).unwrap_or(p).trim_end_matches('/');
                        out.push(name.to_string());
                    }
                }
            } else {
                for object in page.contents() {
                    if let Some(key) = object.key() {
                        out.push(key.strip_prefix(&full).unwrap_or(key).to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs `future` on `handle`'s runtime and waits for it from any thread,
/// inside another runtime or not. `None` when that runtime has shut down.
pub fn block_on<F>(handle: &tokio::runtime::Handle, future: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().ok()
}

/// [`block_on`] for a call to the store: a runtime that has shut down is one
/// more way for the call to fail.
pub fn run<T, F>(handle: &tokio::runtime::Handle, future: F) -> Result<T, RemoteError>
where
    F: Future<Output = Result<T, RemoteError>> + Send + 'static,
    T: Send + 'static,
{
    block_on(handle, future).unwrap_or_else(|| {
        Err(RemoteError::Failed {
            message: "the state's runtime has stopped".into(),
            transient: false,
        })
    })
}

/// Retries a call while its errors are transient, with backoff, for as long
/// as `keep_trying` allows.
pub async fn with_retries<T, F, Fut>(
    mut call: F,
    mut keep_trying: impl FnMut() -> bool,
) -> Result<T, RemoteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RemoteError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Err(error) if error.transient() && keep_trying() => {
                tracing::warn!("state store: {error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
