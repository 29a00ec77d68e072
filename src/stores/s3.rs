//! The `s3` store: a bucket (and prefix) on S3 or any S3-compatible server,
//! through aws-sdk-s3. Credentials come from the standard AWS chain (env,
//! profile, IMDS), never from the plan.

use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectInfo, StoreError};

pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// An S3 client: standard credential chain; a region from the plan, the
/// environment or `us-east-1`; an optional endpoint for S3-compatible servers.
pub async fn client(
    region: Option<String>,
    endpoint: Option<String>,
    path_style: bool,
) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    let shared = loader.load().await;
    // A server that stops answering must not hang a rebuild: connections and
    // reads time out (`PHOENIX_S3_TIMEOUT`, default 30s) and the SDK retries.
    let read_timeout = crate::settings::s3_timeout();
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(read_timeout)
        .build();
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .timeout_config(timeouts)
        .force_path_style(path_style)
        // phoenix verifies SHA-256 itself as bytes arrive; the SDK's own
        // checksums would hash everything twice, and older servers reject them.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

fn to_chrono(time: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    time.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

/// Whether an SDK error is worth another try, and what to say about it.
pub(crate) fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
    status: Option<u16>,
) -> (bool, String) {
    match error {
        SdkError::TimeoutError(_) => (true, "timed out".into()),
        SdkError::DispatchFailure(e) => {
            let reason = match e.as_connector_error() {
                Some(connector) => causes(connector),
                None => "the request was not sent".to_string(),
            };
            // No retry makes credentials appear: said once, plainly.
            if reason.contains("credentials") {
                (
                    false,
                    format!(
                        "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a role provides them ({reason})"
                    ),
                )
            } else {
                (true, format!("cannot reach the server: {reason}"))
            }
        }
        SdkError::ResponseError(_) => (true, "the response was cut short".into()),
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("error");
            let message = e.err().message().unwrap_or("");
            let status = status.unwrap_or(0);
            (
                status >= 500 || status == 429,
                format!("{code} (HTTP {status}) {message}")
                    .trim()
                    .to_string(),
            )
        }
        SdkError::ConstructionFailure(_) => (false, "the request could not be built".into()),
        _ => (false, "unknown error".into()),
    }
}

/// An error and its causes, each said once (a cause's text is often part of
/// the one above it), at most 300 characters: the SDK's `Debug` form ran to
/// kilobytes of nested structs, with the reason buried in the middle.
fn causes(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for text in crate::error_chain(error).map(|e| e.to_string()) {
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let text = parts.join(": ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl S3Store {
    pub async fn new(options: S3Options) -> Self {
        S3Store {
            client: client(options.region, options.endpoint, options.path_style).await,
            bucket: options.bucket,
            prefix: options.prefix,
        }
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error<E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        operation: &'static str,
        key: &str,
        error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let (transient, message) = classify(&error, status);
        StoreError::S3 {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message,
            transient,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    key: key.strip_prefix(&self.prefix).unwrap_or(key).to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_chrono(object.last_modified()),
                    version: object.e_tag().map(str::to_string),
                    sha256: None,
                });
            }
        }
        Ok(out)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: head.content_length().unwrap_or(0).max(0) as u64,
                last_modified: to_chrono(head.last_modified()),
                version: head.e_tag().map(str::to_string),
                sha256: head
                    .metadata()
                    .and_then(|m| m.get("sha256"))
                    .map(|s| s.trim().to_ascii_lowercase()),
            })),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    pub async fn read_range(
        &self,
        info: &ObjectInfo,
        start: u64,
        end: u64,
    ) -> Result<Vec<Bytes>, StoreError> {
        if start == end {
            return Ok(Vec::new());
        }
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(&info.key))
            .range(format!("bytes={start}-{}", end - 1));
        if let Some(etag) = &info.version {
            // A part of a different object would corrupt the restore.
            request = request.if_match(etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.error("get", &info.key, e))?;
        let body = response.body.collect().await.map_err(|e| StoreError::S3 {
            operation: "get",
            bucket: self.bucket.clone(),
            key: info.key.clone(),
            message: format!("the body was cut short: {e}"),
            transient: true,
        })?;
        // The frames as they came off the connection: no copy into one buffer.
        Ok(body.into_segments().collect())
    }
}
