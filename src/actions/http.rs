//! `http`: one request, optionally repeated until it answers as expected.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::{integer_value, span_of, Fields};
use crate::plan::interpolate::has_expressions;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &[
    "method",
    "url",
    "headers",
    "body",
    "json",
    "expect_status",
    "until",
    "outputs",
];

pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Clone, Debug)]
pub enum Body {
    Text(Spanned<String>),
    /// The `json` table, as JSON; strings in it are interpolated at run time.
    Json(serde_json::Value),
}

#[derive(Clone, Debug)]
pub struct HttpSpec {
    pub method: &'static str,
    pub url: Spanned<String>,
    pub headers: BTreeMap<String, Spanned<String>>,
    pub body: Option<Body>,
    pub expect_status: Vec<u16>,
    pub until: Option<Duration>,
    /// Output name to JSON pointer into the response body.
    pub outputs: BTreeMap<String, Spanned<String>>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<HttpSpec> {
    let method = match fields.string("method", diags) {
        Some(text) => {
            let upper = text.to_ascii_uppercase();
            match METHODS.iter().find(|m| **m == upper) {
                Some(m) => *m,
                None => {
                    diags.error(
                        fields.source,
                        text.span,
                        "http-method",
                        format!(
                            "`method` in {} must be one of {}, found `{}`",
                            fields.what,
                            METHODS.join(", "),
                            text.value
                        ),
                    );
                    "GET"
                }
            }
        }
        None => "GET",
    };
    let url = fields.required_string("url", diags);
    if let Some(url) = &url {
        if !(has_expressions(url) || url.starts_with("http://") || url.starts_with("https://")) {
            diags.error(
                fields.source,
                url.span,
                "invalid-value",
                format!(
                    "`url` in {} must start with http:// or https://, found `{}`",
                    fields.what, url.value
                ),
            );
        }
    }
    let headers = fields.string_map("headers", diags).unwrap_or_default();
    fields.exclusive(&["body", "json"], diags);
    let body = if let Some((_, json)) = fields.get("json") {
        Some(Body::Json(crate::plan::load::to_json(json.get_ref())))
    } else {
        fields.string("body", diags).map(Body::Text)
    };
    let expect_status = parse_statuses(fields, diags);
    let until = fields.duration("until", diags).map(|d| d.value);
    let outputs = fields.string_map("outputs", diags).unwrap_or_default();
    for (name, pointer) in &outputs {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            diags.error(
                fields.source,
                pointer.span,
                "json-pointer",
                format!(
                    "output `{name}` in {}: `{}` is not a JSON pointer (it must start with `/`)",
                    fields.what, pointer.value
                ),
            );
        }
    }
    Some(HttpSpec {
        method,
        url: url?,
        headers,
        body,
        expect_status,
        until,
        outputs,
    })
}

fn parse_statuses(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Vec<u16> {
    let Some((_, value)) = fields.get("expect_status") else {
        return vec![200];
    };
    let items: Vec<_> = match value.get_ref() {
        toml::de::DeValue::Array(items) => items.iter().collect(),
        _ => vec![value],
    };
    let mut statuses = Vec::new();
    for item in items {
        match integer_value(item.get_ref()) {
            Some(code @ 100..=599) => statuses.push(code as u16),
            _ => diags.error(
                fields.source,
                span_of(item),
                "http-status",
                format!(
                    "`expect_status` in {} must hold HTTP status codes from 100 to 599, found `{}`",
                    fields.what,
                    fields.source.slice(span_of(item))
                ),
            ),
        }
    }
    if statuses.is_empty() {
        statuses.push(200);
    }
    statuses
}
