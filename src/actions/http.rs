//! `http`: one request, optionally repeated until it answers as expected.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;

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
    "ca_cert",
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
    /// A PEM file of CA certificates trusted for this request besides the
    /// system's: a rebuilt internal service signed by the company's own CA.
    pub ca_cert: Option<Spanned<String>>,
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
    let ca_cert = fields.string("ca_cert", diags);
    Some(HttpSpec {
        ca_cert,
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

/// Sends the request; with `until`, again every second until the answer is as
/// expected or the time is up. Each try then ends when the time is up (a
/// server that takes the connection and never answers, as one still
/// starting behind a load balancer does, would otherwise hold the step to its
/// timeout), and the step fails saying what the last try got.
pub async fn run(spec: &HttpSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let url = ctx.render(&spec.url)?;
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in &spec.headers {
        headers.push((name.clone(), ctx.render(value)?));
    }
    let body = match &spec.body {
        Some(Body::Text(text)) => Some((ctx.render(text)?, None)),
        Some(Body::Json(json)) => Some((
            render_json(json, ctx)?.to_string(),
            Some("application/json"),
        )),
        None => None,
    };
    let method =
        reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let client = match &spec.ca_cert {
        Some(path) => ctx.shared.http_trusting(&ctx.path(path)?)?,
        None => ctx.shared.http().clone(),
    };
    let started = tokio::time::Instant::now();
    loop {
        let mut request = client.request(method.clone(), &url);
        if let Some(until) = spec.until {
            request = request.timeout(
                until
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_secs(1)),
            );
        }
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some((text, content_type)) = &body {
            if let Some(content_type) = content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, *content_type);
            }
            request = request.body(text.clone());
        }
        let attempt = tokio::select! {
            response = request.send() => response,
            _ = ctx.cancel.cancelled() => return Err(ActionError::Interrupted),
        };
        let error = match attempt {
            Ok(response) => {
                let status = response.status().as_u16();
                // Only what outputs or an error's excerpt need: a probe of an
                // endpoint that answers with a file reads its start once a try.
                let limit = if spec.outputs.is_empty() {
                    EXCERPT_LIMIT
                } else {
                    BODY_LIMIT
                };
                let body = tokio::select! {
                    body = read_body(response, limit) => body,
                    _ = ctx.cancel.cancelled() => return Err(ActionError::Interrupted),
                };
                let (text, whole) = body.unwrap_or_default();
                if spec.expect_status.contains(&status) {
                    if !whole && !spec.outputs.is_empty() {
                        return Err(ActionError::Outputs(format!(
                            "{url} answered with a body of more than {}: outputs are read from bodies of at most that",
                            crate::report::terminal::bytes(BODY_LIMIT as f64)
                        )));
                    }
                    return outputs(spec, &text);
                }
                ActionError::Status {
                    url: url.clone(),
                    status,
                    expected: spec.expect_status.clone(),
                    body: Some(text.chars().take(200).collect::<String>())
                        .filter(|b| !b.is_empty()),
                }
            }
            Err(source) => ActionError::Request {
                url: url.clone(),
                // Its own copy of the URL is percent-encoded: a secret in it
                // would no longer match the value the masker knows.
                source: source.without_url(),
            },
        };
        match spec.until {
            Some(until) if started.elapsed() < until => {}
            Some(until) => {
                // What the last try got, without the URL the error names first.
                let last = match &error {
                    ActionError::Request { source, .. } => crate::error_text(source),
                    other => {
                        let text = other.to_string();
                        match text.strip_prefix(&format!("{url} ")) {
                            Some(rest) => rest.to_string(),
                            None => text,
                        }
                    }
                };
                return Err(ActionError::NotReady {
                    target: url,
                    after: until,
                    last,
                });
            }
            None => return Err(error),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = ctx.cancel.cancelled() => return Err(ActionError::Interrupted),
        }
    }
}

/// The most of a response's body read for its outputs: an API's list (a
/// cluster's pods, a cloud's instances) from which a pointer takes one value
/// may run to megabytes.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The most read of a body no output is taken from: its start is quoted when
/// the status is not the one expected.
const EXCERPT_LIMIT: usize = 64 * 1024;

/// A response's body, up to `limit` bytes (lossy UTF-8), and whether that
/// was all of it.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(String, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            body.extend_from_slice(&chunk[..limit - body.len()]);
            return Ok((String::from_utf8_lossy(&body).into_owned(), false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), true))
}

fn outputs(spec: &HttpSpec, body: &str) -> Result<Outputs, ActionError> {
    if spec.outputs.is_empty() {
        return Ok(Outputs::new());
    }
    let mut out = Outputs::new();
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    for (name, pointer) in &spec.outputs {
        let json = json
            .as_ref()
            .ok_or_else(|| ActionError::NotJson { name: name.clone() })?;
        let value = json.pointer(pointer).ok_or_else(|| ActionError::Pointer {
            name: name.clone(),
            pointer: pointer.value.clone(),
        })?;
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(name.clone(), text);
    }
    let size = out.values().map(String::len).sum::<usize>() as u64;
    if size > super::command::OUTPUTS_LIMIT {
        return Err(ActionError::Outputs(format!(
            "the outputs hold {}; point at the values, not at what holds them",
            super::command::over_the_limit(size)
        )));
    }
    Ok(out)
}

/// Renders `{{ }}` in every string of a JSON body.
fn render_json(
    value: &serde_json::Value,
    ctx: &StepContext<'_>,
) -> Result<serde_json::Value, ActionError> {
    use serde_json::Value as J;
    Ok(match value {
        J::String(s) => J::String(ctx.render(&Spanned::new(s.clone(), Default::default()))?),
        J::Array(items) => J::Array(
            items
                .iter()
                .map(|i| render_json(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, ctx)?)))
                .collect::<Result<_, ActionError>>()?,
        ),
        other => other.clone(),
    })
}
