//! `restore`: bring a backup back from a store, verified.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &[
    "store", "key", "prefix", "select", "match", "verify", "dest", "unpack", "max_age",
];

/// Which object under a prefix is the backup to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    Latest,
    /// The newest backup written at or before this time: point-in-time recovery.
    Before(DateTime<Utc>),
}

#[derive(Clone, Debug)]
pub enum Source {
    Key(Spanned<String>),
    Prefix {
        prefix: Spanned<String>,
        select: Select,
        pattern: Option<Spanned<String>>,
    },
}

#[derive(Clone, Debug)]
pub struct RestoreSpec {
    pub store: Spanned<String>,
    pub source: Source,
    pub verify: bool,
    pub verify_span: Option<crate::plan::source::Span>,
    pub dest: Spanned<String>,
    pub unpack: bool,
    pub max_age: Option<Duration>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<RestoreSpec> {
    let store = fields.required_string("store", diags);
    let dest = fields.required_string("dest", diags);
    fields.exactly_one(&["key", "prefix"], diags);
    if fields.contains("key") {
        for key in ["select", "match"] {
            if fields.contains(key) {
                diags.error(
                    fields.source,
                    fields.key_span(key),
                    "exclusive",
                    format!(
                        "`{key}` in {} goes with `prefix`, not with `key`",
                        fields.what
                    ),
                );
            }
        }
    }
    let select = match fields.string("select", diags) {
        Some(text) => parse_select(&text).map_err(|message| {
            diags.error(
                fields.source,
                text.span,
                "select",
                format!("`select` in {}: {message}", fields.what),
            )
        }),
        None => Ok(Select::Latest),
    };
    let pattern = fields.string("match", diags);
    if let Some(pattern) = &pattern {
        if let Err(err) = globset::Glob::new(pattern) {
            diags.error(
                fields.source,
                pattern.span,
                "glob",
                format!(
                    "`match` in {}: invalid glob `{}`: {}",
                    fields.what,
                    pattern.value,
                    err.kind()
                ),
            );
        }
    }
    let verify = fields.choice("verify", &["sha256", "none"], diags);
    if let Some(verify) = &verify {
        if verify.value == "none" {
            diags.warning(
                fields.source,
                verify.span,
                "verify-none",
                format!(
                    "{} restores without verifying the backup's digest",
                    fields.what
                ),
            );
        }
    }
    let unpack = fields.choice("unpack", &["auto", "none"], diags);
    let max_age = fields.duration("max_age", diags).map(|d| d.value);
    let source = match fields.string("key", diags) {
        Some(key) => Source::Key(key),
        None => Source::Prefix {
            prefix: fields.string("prefix", diags)?,
            select: select.ok()?,
            pattern,
        },
    };
    Some(RestoreSpec {
        store: store?,
        source,
        verify: verify.as_ref().map(|v| v.value == "sha256").unwrap_or(true),
        verify_span: verify.map(|v| v.span),
        dest: dest?,
        unpack: unpack.map(|u| u.value == "auto").unwrap_or(true),
        max_age,
    })
}

/// `latest` or `before:RFC3339`.
pub fn parse_select(text: &str) -> Result<Select, String> {
    if text == "latest" {
        return Ok(Select::Latest);
    }
    if let Some(time) = text.strip_prefix("before:") {
        return DateTime::parse_from_rfc3339(time)
            .map(|t| Select::Before(t.with_timezone(&Utc)))
            .map_err(|e| format!("`{time}` is not an RFC 3339 time ({e}); write e.g. `before:2026-11-26T00:00:00Z`"));
    }
    Err(format!(
        "expected `latest` or `before:TIME`, found `{text}`"
    ))
}
