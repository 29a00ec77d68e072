//! Plan text to [`Plan`]: TOML syntax, every table's keys and types, vars
//! overrides. Cross-references and the graph are checked in [`super::validate`].
//!
//! The TOML is parsed into `toml::de::DeTable`, which keeps the span of every key
//! and value, and walked by hand rather than through serde: a serde derive stops
//! at the first problem, and a plan author wants all of them at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{did_you_mean, Diagnostics};
use super::fields::{span_of, type_name, Fields, TomlSpanned};
use super::model::*;
use super::source::{SourceFile, Span, Spanned};
use crate::actions::{self, Action};

mod large;

/// What the command line adds to a plan.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--vars FILE`: TOML tables of var values, applied in order.
    pub vars_files: Vec<PathBuf>,
    /// `--var KEY=VALUE`, applied after the files.
    pub vars: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`--var {0}`: expected KEY=VALUE")]
    VarSyntax(String),
}

/// The outcome of loading: a plan when there were no errors, and every
/// diagnostic found either way.
pub struct Loaded {
    pub plan: Option<Plan>,
    pub diagnostics: Diagnostics,
    /// The overrides applied, as values: the journal keeps them so a resume
    /// resolves the plan the same way.
    pub overrides: BTreeMap<String, serde_json::Value>,
}

pub const TOP_KEYS: &[&str] = &[
    "version", "plan", "vars", "secrets", "pools", "stores", "step",
];
pub const PLAN_KEYS: &[&str] = &["name", "description", "rto", "rpo", "concurrency"];
pub const STEP_KEYS: &[&str] = &[
    "id",
    "phase",
    "action",
    "needs",
    "description",
    "pool",
    "timeout",
    "retries",
    "backoff",
    "when",
    "estimate",
    "check",
    "idempotent",
];

/// Reads and checks the plan at `path`.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let source = SourceFile::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(at) = source.not_utf8_at {
        let mut diagnostics = Diagnostics::default();
        diagnostics.error(
            &source,
            Span::new(at, at + 1),
            "not-utf8",
            "invalid UTF-8: a plan is TOML, which must be UTF-8 text (is the file in another encoding?)",
        );
        return Ok(Loaded {
            plan: None,
            diagnostics,
            overrides: BTreeMap::new(),
        });
    }
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let overrides = read_overrides(options)?;
    Ok(load_source(source, dir, overrides))
}

/// Checks plan text whose relative paths resolve against `dir`, with var
/// overrides already read (as a resume does from the journal).
pub fn load_source(source: Arc<SourceFile>, dir: PathBuf, overrides: Overrides) -> Loaded {
    let t0 = std::time::Instant::now();
    if let Some(loaded) = large::load(&source, &dir, &overrides) {
        tracing::debug!(elapsed = ?t0.elapsed(), "plan: read in groups of steps and checked");
        return loaded;
    }
    load_whole(source, dir, overrides)
}

/// Parses the whole file at once: every plan but the largest.
fn load_whole(source: Arc<SourceFile>, dir: PathBuf, overrides: Overrides) -> Loaded {
    let t0 = std::time::Instant::now();
    let mut diags = Diagnostics::default();
    let (root, syntax_errors) = DeTable::parse_recoverable(&source.text);
    tracing::debug!(elapsed = ?t0.elapsed(), "plan: TOML parsed");
    if !syntax_errors.is_empty() {
        for err in syntax_errors {
            let span = err.span().map(Span::from).unwrap_or_default();
            let (span, message) = syntax_message(&source, span, err.message().trim());
            diags.error(&source, span, "toml-syntax", message);
        }
        return Loaded {
            plan: None,
            diagnostics: diags,
            overrides: BTreeMap::new(),
        };
    }
    let fields = Fields::new(&source, root.get_ref(), Span::new(0, 0), "the plan file");
    let plan = read_plan(&fields, dir, None, &mut diags);
    tracing::debug!(elapsed = ?t0.elapsed(), "plan: steps read");
    // The parsed document is the largest thing in memory: let it go before the
    // graph is built.
    drop(root);
    let loaded = finish(plan, diags, overrides);
    tracing::debug!(elapsed = ?t0.elapsed(), "plan: checked");
    loaded
}

/// What a TOML syntax error says, and where: the parser's words, with the
/// key a "duplicate key" is about, and the usual cause of one said plainly
/// (a step written `[step]`, which makes `step` one table that a later
/// `[[step]]` cannot add to).
fn syntax_message(source: &SourceFile, span: Span, message: &str) -> (Span, String) {
    if message != "duplicate key" {
        return (span, format!("invalid TOML: {message}"));
    }
    let key = source.slice(span).trim();
    let table = format!("[{key}]");
    let before = &source.text[..span.start.min(source.text.len())];
    let mut offset = 0;
    for line in before.split_inclusive('\n') {
        if line.trim() == table && key == "step" {
            let start = offset + (line.len() - line.trim_start().len());
            return (
                Span::new(start, start + table.len()),
                "`[step]` makes `step` a single table, and a `[[step]]` after it cannot add to it: write every step as `[[step]]`".into(),
            );
        }
        offset += line.len();
    }
    (span, format!("invalid TOML: duplicate key `{key}`"))
}

/// Var overrides and the checks across steps, once the steps are read.
fn finish(mut plan: Option<Plan>, mut diags: Diagnostics, overrides: Overrides) -> Loaded {
    let applied = plan
        .as_mut()
        .map(|plan| apply_overrides(plan, overrides, &mut diags))
        .unwrap_or_default();
    if let Some(plan) = &mut plan {
        super::validate::check(plan, &mut diags);
    }
    Loaded {
        plan: if diags.has_errors() { None } else { plan },
        diagnostics: diags,
        overrides: applied,
    }
}

/// The plan from its root table; `steps` when they were read already (in groups).
fn read_plan(
    root: &Fields<'_, '_>,
    dir: PathBuf,
    steps: Option<Vec<Step>>,
    diags: &mut Diagnostics,
) -> Option<Plan> {
    let source = root.source;
    root.check_keys(TOP_KEYS, diags, |key| {
        PLAN_KEYS
            .contains(&key)
            .then(|| format!("; `{key}` belongs in `[plan]`"))
    });
    // `version = 1` written under `[plan]` is in that table, as TOML reads
    // it: said there, once, where it is.
    let version_in_plan = root.get("plan").is_some_and(
        |(_, plan)| matches!(plan.get_ref(), DeValue::Table(t) if t.contains_key("version")),
    );
    match root.get("version") {
        None if version_in_plan => {}
        None => diags.error(
            source,
            Span::new(0, 0),
            "version",
            "the plan has no `version`; add `version = 1`",
        ),
        Some((_, value)) => match super::fields::integer_value(value.get_ref()) {
            Some(1) => {}
            _ => diags.error(
                source,
                span_of(value),
                "version",
                format!(
                    "unsupported plan version `{}`: this phoenix reads version 1",
                    source.slice(span_of(value))
                ),
            ),
        },
    }

    let header = match root.table_field("plan", diags) {
        Some(header) => Some(header),
        None => {
            if !root.contains("plan") {
                diags.error(
                    source,
                    Span::new(0, 0),
                    "missing-field",
                    "the plan has no `[plan]` table with its `name`",
                );
            }
            None
        }
    };
    let mut name = None;
    let (mut description, mut rto, mut rpo, mut concurrency) = (None, None, None, None);
    if let Some(header) = header {
        let header = Fields {
            what: "`[plan]`".into(),
            ..header
        };
        header.check_keys(PLAN_KEYS, diags, |key| {
            (key == "version").then(|| {
                "; it goes at the top of the file, before `[plan]` (a key after a table's header belongs to that table)".into()
            })
        });
        name = header.required_string("name", diags);
        if let Some(n) = &name {
            if !valid_name(n, true) {
                diags.error(
                    source,
                    n.span,
                    "plan-name",
                    format!("plan name `{}` must match [a-z][a-z0-9_-]*", n.value),
                );
            }
        }
        description = header.string("description", diags).map(|d| d.value);
        rto = header.duration("rto", diags);
        rpo = header.duration("rpo", diags);
        concurrency = header
            .integer("concurrency", 100_000, diags)
            .map(|c| c.value as usize);
        if concurrency == Some(0) {
            diags.error(
                source,
                span_of(header.get("concurrency")?.1),
                "range",
                "`concurrency` must be at least 1",
            );
        }
        if rto.is_none() && !header.contains("rto") {
            diags.warning(
                source,
                header.span,
                "no-target",
                "the plan sets no `rto` target: reports cannot say whether recovery time was met",
            );
        }
        if rpo.is_none() && !header.contains("rpo") {
            diags.warning(source, header.span, "no-target", "the plan sets no `rpo` target: reports cannot say whether data loss was within bounds");
        }
    }

    let vars = read_vars(root, diags);
    let secrets = read_secrets(root, diags);
    let pools = read_pools(root, diags);
    let stores = read_stores(root, diags);
    let mut store_texts = Vec::new();
    if let Some((_, value)) = root.get("stores") {
        if let DeValue::Table(table) = value.get_ref() {
            collect_strings(table, &mut store_texts);
        }
    }
    let steps = steps.unwrap_or_else(|| read_steps(root, diags));
    Some(Plan {
        source: Arc::clone(source),
        dir,
        name: name?,
        description,
        rto,
        rpo,
        concurrency,
        vars,
        secrets,
        pools,
        stores,
        store_texts,
        steps,
        graph: std::sync::OnceLock::new(),
    })
}

/// Names of plans, steps, vars: lowercase ASCII, starting with a letter.
pub fn valid_name(name: &str, allow_dash: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
        })
}

fn read_vars(root: &Fields<'_, '_>, diags: &mut Diagnostics) -> BTreeMap<String, Var> {
    let mut vars = BTreeMap::new();
    let Some(table) = root.table_field("vars", diags) else {
        return vars;
    };
    for (key, value) in table.table.iter() {
        match scalar(value.get_ref()) {
            Some(json) => {
                vars.insert(
                    key.get_ref().to_string(),
                    Var {
                        value: json,
                        span: span_of(value),
                        overridden_by: None,
                    },
                );
            }
            None => diags.error(
                root.source,
                span_of(value),
                "var-type",
                format!(
                    "var `{}` must be a string, number or boolean, found {}",
                    key.get_ref(),
                    type_name(value.get_ref())
                ),
            ),
        }
    }
    vars
}

fn scalar(value: &DeValue<'_>) -> Option<serde_json::Value> {
    match value {
        DeValue::String(_) | DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
            Some(to_json(value))
        }
        _ => None,
    }
}

fn read_secrets(root: &Fields<'_, '_>, diags: &mut Diagnostics) -> BTreeMap<String, Secret> {
    let mut secrets = BTreeMap::new();
    let Some(table) = root.table_field("secrets", diags) else {
        return secrets;
    };
    for (key, value) in table.table.iter() {
        let name = key.get_ref();
        let DeValue::Table(inner) = value.get_ref() else {
            diags.error(
                root.source,
                span_of(value),
                "secret-source",
                format!("secret `{name}` must be `{{ env = \"VAR\" }}` or `{{ file = \"path\" }}`, found {}", type_name(value.get_ref())),
            );
            continue;
        };
        let fields = Fields::new(
            root.source,
            inner,
            span_of(value),
            format!("secret `{name}`"),
        );
        fields.check_keys(&["env", "file"], diags, |_| None);
        fields.exactly_one(&["env", "file"], diags);
        let source = if let Some(env) = fields.string("env", diags) {
            if env.is_empty() || env.contains('=') || env.contains('\0') {
                diags.error(
                    root.source,
                    env.span,
                    "secret-source",
                    format!(
                        "secret `{name}`: `{}` is not an environment variable name",
                        env.value
                    ),
                );
            }
            SecretSource::Env(env.value)
        } else if let Some(file) = fields.string("file", diags) {
            SecretSource::File(PathBuf::from(file.value))
        } else {
            continue;
        };
        secrets.insert(
            name.to_string(),
            Secret {
                source,
                span: span_of(value),
            },
        );
    }
    secrets
}

fn read_pools(root: &Fields<'_, '_>, diags: &mut Diagnostics) -> BTreeMap<String, Spanned<usize>> {
    let mut pools = BTreeMap::new();
    let Some(table) = root.table_field("pools", diags) else {
        return pools;
    };
    let table = Fields {
        what: "`[pools]`".into(),
        ..table
    };
    for key in table.table.keys() {
        let name = key.get_ref();
        if let Some(size) = table.integer(name, 100_000, diags) {
            if size.value == 0 {
                diags.error(
                    root.source,
                    size.span,
                    "range",
                    format!("pool `{name}` must allow at least 1 step"),
                );
            }
            pools.insert(
                name.to_string(),
                Spanned::new(size.value as usize, size.span),
            );
        }
    }
    pools
}

const S3_KEYS: &[&str] = &[
    "type",
    "bucket",
    "prefix",
    "region",
    "endpoint",
    "path_style",
];
const FS_KEYS: &[&str] = &["type", "path"];

fn read_stores(root: &Fields<'_, '_>, diags: &mut Diagnostics) -> BTreeMap<String, Store> {
    let mut stores = BTreeMap::new();
    let Some(table) = root.table_field("stores", diags) else {
        return stores;
    };
    for (key, value) in table.table.iter() {
        let name = Spanned::new(key.get_ref().to_string(), span_of(key));
        let DeValue::Table(inner) = value.get_ref() else {
            diags.error(
                root.source,
                span_of(value),
                "type",
                format!(
                    "store `{}` must be a table, found {}",
                    name.value,
                    type_name(value.get_ref())
                ),
            );
            continue;
        };
        let fields = Fields::new(
            root.source,
            inner,
            span_of(key),
            format!("store `{}`", name.value),
        );
        let Some(kind) = fields.required_string("type", diags) else {
            continue;
        };
        let kind = match kind.as_str() {
            "s3" => {
                fields.check_keys(S3_KEYS, diags, |k| {
                    FS_KEYS
                        .contains(&k)
                        .then(|| format!("; `{k}` is a field of `fs` stores"))
                });
                let bucket = fields.required_string("bucket", diags);
                if let Some(bucket) = &bucket {
                    if !valid_bucket(bucket) {
                        diags.error(root.source, bucket.span, "store-field", format!("store `{}`: `{}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `.` and `-`)", name.value, bucket.value));
                    }
                }
                let endpoint = fields.string("endpoint", diags);
                if let Some(endpoint) = &endpoint {
                    if !(crate::plan::interpolate::has_expressions(endpoint)
                        || endpoint.starts_with("http://")
                        || endpoint.starts_with("https://"))
                    {
                        diags.error(root.source, endpoint.span, "store-field", format!("store `{}`: `endpoint` must be an http:// or https:// URL, found `{}`", name.value, endpoint.value));
                    }
                }
                let prefix = fields.string("prefix", diags);
                let region = fields.string("region", diags);
                let path_style = fields
                    .bool("path_style", diags)
                    .map(|b| b.value)
                    .unwrap_or(false);
                let Some(bucket) = bucket else { continue };
                StoreKind::S3 {
                    bucket,
                    prefix,
                    region,
                    endpoint,
                    path_style,
                }
            }
            "fs" => {
                fields.check_keys(FS_KEYS, diags, |k| {
                    S3_KEYS
                        .contains(&k)
                        .then(|| format!("; `{k}` is a field of `s3` stores"))
                });
                let Some(path) = fields.required_string("path", diags) else {
                    continue;
                };
                StoreKind::Fs { path }
            }
            other => {
                diags.error(
                    root.source,
                    kind.span,
                    "store-type",
                    format!(
                        "store `{}`: unknown type `{other}`; expected `s3` or `fs`{}",
                        name.value,
                        did_you_mean(other, ["s3", "fs"])
                    ),
                );
                continue;
            }
        };
        stores.insert(name.value.clone(), Store { name, kind });
    }
    stores
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn read_steps(root: &Fields<'_, '_>, diags: &mut Diagnostics) -> Vec<Step> {
    let Some((_, value)) = root.get("step") else {
        return Vec::new();
    };
    let DeValue::Array(tables) = value.get_ref() else {
        diags.error(
            root.source,
            span_of(value),
            "type",
            "`step` must be an array of tables: write each step as `[[step]]`",
        );
        return Vec::new();
    };
    let mut steps = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let DeValue::Table(inner) = table.get_ref() else {
            diags.error(
                root.source,
                span_of(table),
                "type",
                "each `step` must be a table",
            );
            continue;
        };
        if let Some(step) = read_step(root.source, inner, span_of(table), index, diags) {
            steps.push(step);
        }
    }
    steps
}

fn read_step(
    source: &Arc<SourceFile>,
    table: &DeTable<'_>,
    span: Span,
    index: usize,
    diags: &mut Diagnostics,
) -> Option<Step> {
    let mut fields = Fields::new(source, table, span, format!("step #{}", index + 1));
    let id = fields.required_string("id", diags);
    if let Some(id) = &id {
        if valid_name(id, false) {
            fields.what = format!("step `{}`", id.value);
        } else {
            diags.error(
                source,
                id.span,
                "step-id",
                format!("step id `{}` must match [a-z][a-z0-9_]*", id.value),
            );
        }
    }
    let phase = fields.string("phase", diags).and_then(|p| match Phase::from_name(&p) {
        Some(phase) => Some(Spanned::new(phase, p.span)),
        None => {
            diags.error(source, p.span, "phase", format!("{}: unknown phase `{}`; expected one of provision, configure, restore, teardown{}", fields.what, p.value, did_you_mean(&p, Phase::NAMES)));
            None
        }
    });
    if !fields.contains("phase") {
        fields.missing(diags, "phase");
    }
    let kind = fields.required_string("action", diags);
    let action_fields = match &kind {
        Some(kind) => match Action::fields_of(kind) {
            Some(fields) => Some(fields),
            None => {
                let names: Vec<&str> = actions::KINDS.iter().map(|(n, _)| *n).collect();
                diags.error(
                    source,
                    kind.span,
                    "action",
                    format!(
                        "{}: unknown action `{}`; expected one of {}{}",
                        fields.what,
                        kind.value,
                        names.join(", "),
                        did_you_mean(kind, names.iter().copied())
                    ),
                );
                None
            }
        },
        None => None,
    };
    // With an unknown action, its fields cannot be judged: say nothing of them.
    if let Some(action_fields) = action_fields {
        let allowed: Vec<&str> = STEP_KEYS.iter().chain(action_fields).copied().collect();
        let kind_name = kind.as_ref().map(|k| k.value.clone()).unwrap_or_default();
        fields.check_keys(&allowed, diags, |key| {
            actions::owners_of(key).map(|owners| format!("{owners}, not of `{kind_name}`"))
        });
    }
    let action = match (&kind, action_fields) {
        (Some(kind), Some(_)) => {
            Action::parse(kind, &fields, diags).map(|a| Spanned::new(a, kind.span))
        }
        _ => None,
    };
    let needs = fields
        .string_list("needs", false, diags)
        .map(|n| n.value)
        .unwrap_or_default();
    let description = fields.string("description", diags).map(|d| d.value);
    let pool = fields.string("pool", diags);
    let timeout = fields.duration("timeout", diags).map(|d| d.value);
    if timeout == Some(std::time::Duration::ZERO) {
        diags.error(
            source,
            span_of(fields.get("timeout")?.1),
            "range",
            format!("{}: `timeout` must be longer than zero", fields.what),
        );
    }
    let retries = fields
        .integer("retries", 100, diags)
        .map(|r| r.value as u32)
        .unwrap_or(0);
    let backoff = fields
        .duration("backoff", diags)
        .map(|d| d.value)
        .unwrap_or(DEFAULT_BACKOFF);
    let when = match fields.choice("when", &When::NAMES, diags).map(|w| w.value) {
        Some("drill") => When::Drill,
        Some("recovery") => When::Recovery,
        _ => When::Always,
    };
    let estimate = fields.duration("estimate", diags).map(|d| d.value);
    let check = fields.string_list("check", true, diags).map(|c| c.value);
    let idempotent = fields
        .bool("idempotent", diags)
        .map(|b| b.value)
        .unwrap_or(true);
    let mut texts = Vec::new();
    collect_strings(table, &mut texts);
    if let Some(action) = &action {
        if !fields.contains("timeout") && action.wants_timeout() {
            diags.warning(
                source,
                id.as_ref().map(|i| i.span).unwrap_or(span),
                "no-timeout",
                format!(
                    "{} has no `timeout`: a hung {} would stall the rebuild",
                    fields.what,
                    action.kind()
                ),
            );
        }
    }
    let fingerprint = fingerprint(table);
    Some(Step {
        id: id?,
        phase: phase?,
        action: action?,
        needs,
        description,
        pool,
        timeout,
        retries,
        backoff,
        when,
        estimate,
        check,
        idempotent,
        span,
        texts,
        fingerprint,
    })
}

/// Every string value in a table that holds `{{`, recursively, with its span.
pub(crate) fn collect_strings(table: &DeTable<'_>, out: &mut Vec<Spanned<String>>) {
    fn visit(value: &TomlSpanned<DeValue<'_>>, out: &mut Vec<Spanned<String>>) {
        match value.get_ref() {
            DeValue::String(s) if crate::plan::interpolate::has_expressions(s) => {
                out.push(Spanned::new(s.to_string(), span_of(value)))
            }
            DeValue::Array(items) => items.iter().for_each(|item| visit(item, out)),
            DeValue::Table(table) => collect_strings(table, out),
            _ => {}
        }
    }
    for value in table.values() {
        visit(value, out);
    }
}

/// A TOML value as JSON (objects with sorted keys).
pub fn to_json(value: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(_) => super::fields::integer_value(value)
            .map(J::from)
            .unwrap_or(J::Null),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .map(J::from)
            .unwrap_or(J::Null),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(items) => J::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(table) => J::Object(
            table
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}

/// A step's fingerprint: SHA-256 of its table as canonical JSON (sorted keys),
/// the JSON streamed into the hash rather than built first. The bytes are
/// those of `to_json(table).to_string()`: journals keep these fingerprints.
fn fingerprint(table: &DeTable<'_>) -> String {
    struct Hash(sha2::Sha256);
    impl std::io::Write for Hash {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            sha2::Digest::update(&mut self.0, bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hash = Hash(sha2::Sha256::new());
    let _ = serde_json::to_writer(&mut hash, &Canonical::Table(table));
    super::validate::hex(&hash.0.finalize())
}

/// A TOML value serialized as [`to_json`] would make it, without building it.
enum Canonical<'a, 'i> {
    Value(&'a DeValue<'i>),
    Table(&'a DeTable<'i>),
}

impl serde::Serialize for Canonical<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let value = match self {
            Canonical::Table(table) => {
                let mut entries: Vec<_> = table.iter().map(|(k, v)| (k.get_ref(), v)).collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key.as_ref(), &Canonical::Value(value.get_ref()))?;
                }
                return map.end();
            }
            Canonical::Value(value) => value,
        };
        match value {
            DeValue::Table(table) => Canonical::Table(table).serialize(serializer),
            DeValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(&Canonical::Value(item.get_ref()))?;
                }
                seq.end()
            }
            DeValue::String(s) => serializer.serialize_str(s),
            DeValue::Boolean(b) => serializer.serialize_bool(*b),
            DeValue::Datetime(d) => serializer.collect_str(d),
            DeValue::Integer(_) | DeValue::Float(_) => to_json(value).serialize(serializer),
        }
    }
}

/// Var values from `--vars` files and `--var`, each with where it came from.
pub type Overrides = Vec<Override>;

#[derive(Clone, Debug)]
pub struct Override {
    pub name: String,
    pub value: OverrideValue,
    /// The file (or `--var` text) and span it was written at, for messages.
    pub source: Arc<SourceFile>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum OverrideValue {
    /// From the journal: typed already, as applied when the run started.
    Typed(serde_json::Value),
    /// From a `--vars` file: typed, and held to the declared var's type.
    File(serde_json::Value),
    /// From `--var`: converted to the declared var's type.
    Text(String),
    /// Not a string, number or boolean.
    Invalid(&'static str),
    /// A vars file that is not TOML: what is wrong, at the override's span.
    Syntax(String),
}

pub fn read_overrides(options: &LoadOptions) -> Result<Overrides, LoadError> {
    let mut overrides = Vec::new();
    for path in &options.vars_files {
        let source = SourceFile::read(path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let (table, errors) = DeTable::parse_recoverable(&source.text);
        // Not UTF-8 is not TOML either: reported at its first bad byte.
        let bad = match source.not_utf8_at {
            Some(at) => Some((
                Span::new(at, at + 1),
                "invalid UTF-8: a vars file is TOML, which must be UTF-8 text".to_string(),
            )),
            None => errors.first().map(|err| {
                (
                    err.span().map(Span::from).unwrap_or_default(),
                    format!("invalid TOML in vars file: {}", err.message().trim()),
                )
            }),
        };
        if let Some((span, message)) = bad {
            overrides.push(Override {
                name: String::new(),
                value: OverrideValue::Syntax(message),
                span,
                source: Arc::clone(&source),
            });
            continue;
        }
        for (key, value) in table.get_ref().iter() {
            overrides.push(Override {
                name: key.get_ref().to_string(),
                value: scalar(value.get_ref())
                    .map(OverrideValue::File)
                    .unwrap_or(OverrideValue::Invalid(type_name(value.get_ref()))),
                source: Arc::clone(&source),
                span: span_of(key),
            });
        }
    }
    for text in &options.vars {
        let Some((name, value)) = text.split_once('=') else {
            return Err(LoadError::VarSyntax(text.clone()));
        };
        let source = SourceFile::new("--var", text.clone());
        overrides.push(Override {
            name: name.trim().to_string(),
            value: OverrideValue::Text(value.to_string()),
            span: Span::new(0, name.len()),
            source,
        });
    }
    Ok(overrides)
}

/// Overrides as the journal keeps them, ready to apply again.
pub fn overrides_from_values(values: &BTreeMap<String, serde_json::Value>) -> Overrides {
    let source = SourceFile::new("journal", String::new());
    values
        .iter()
        .map(|(name, value)| Override {
            name: name.clone(),
            value: OverrideValue::Typed(value.clone()),
            source: Arc::clone(&source),
            span: Span::default(),
        })
        .collect()
}

fn apply_overrides(
    plan: &mut Plan,
    overrides: Overrides,
    diags: &mut Diagnostics,
) -> BTreeMap<String, serde_json::Value> {
    let mut applied = BTreeMap::new();
    for o in overrides {
        let Some(var) = plan.vars.get_mut(&o.name) else {
            if let OverrideValue::Syntax(message) = o.value {
                diags.error(&o.source, o.span, "toml-syntax", message);
            } else {
                diags.error(
                    &o.source,
                    o.span,
                    "unknown-var",
                    format!(
                        "unknown var `{}`: the plan declares no such var in `[vars]`{}",
                        o.name,
                        did_you_mean(&o.name, plan.vars.keys().map(String::as_str))
                    ),
                );
            }
            continue;
        };
        let value = match o.value {
            OverrideValue::Typed(value) => value,
            // As `--var` is: a var declared a number stays a number, which a
            // template may compare or add to.
            OverrideValue::File(value) => {
                let kind = |v: &serde_json::Value| match v {
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a string",
                };
                if kind(&value) != kind(&var.value) {
                    diags.error(
                        &o.source,
                        o.span,
                        "var-type",
                        format!(
                            "var `{}` is {}: found {} (`{value}`)",
                            o.name,
                            kind(&var.value),
                            kind(&value)
                        ),
                    );
                    continue;
                }
                value
            }
            // Said above: a syntax error has no var name.
            OverrideValue::Syntax(_) => continue,
            OverrideValue::Invalid(found) => {
                diags.error(
                    &o.source,
                    o.span,
                    "var-type",
                    format!(
                        "var `{}` must be a string, number or boolean, found {found}",
                        o.name
                    ),
                );
                continue;
            }
            OverrideValue::Text(text) => {
                match &var.value {
                    serde_json::Value::Bool(_) => match text.as_str() {
                        "true" => true.into(),
                        "false" => false.into(),
                        _ => {
                            diags.error(&o.source, o.span, "var-type", format!("var `{}` is a boolean: expected `true` or `false`, found `{text}`", o.name));
                            continue;
                        }
                    },
                    serde_json::Value::Number(_) => match text
                        .parse::<i64>()
                        .map(serde_json::Value::from)
                        .or_else(|_| text.parse::<f64>().map(serde_json::Value::from))
                    {
                        Ok(number) => number,
                        Err(_) => {
                            diags.error(
                                &o.source,
                                o.span,
                                "var-type",
                                format!("var `{}` is a number: `{text}` is not one", o.name),
                            );
                            continue;
                        }
                    },
                    _ => serde_json::Value::String(text),
                }
            }
        };
        var.value = value.clone();
        var.overridden_by = Some(o.source.path.display().to_string());
        applied.insert(o.name, value);
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed fingerprint is byte for byte the hash of the canonical JSON
    /// that journals were written with.
    #[test]
    fn fingerprints_hash_the_canonical_json() {
        let text = r#"
zeta = "z"
id = "a"
n = 0x1F
f = 1_000.5
inf = inf
when = 1979-05-27T07:32:00Z
flag = true
list = ["b", 2, [3.0, "x\"y"], { k = 1, a = "é" }]
[env]
B = "{{ vars.x }}"
A = "1"
"#;
        let table = DeTable::parse(text).unwrap();
        let old = super::super::validate::hex(&sha2::Sha256::digest(
            to_json(&DeValue::Table(table.get_ref().clone()))
                .to_string()
                .as_bytes(),
        ));
        assert_eq!(fingerprint(table.get_ref()), old);
    }

    /// `steps` chained command steps, with `extra` after step `at`.
    fn big_plan(steps: usize, at: usize, extra: &str) -> String {
        let mut text = String::from(
            "version = 1\n[plan]\nname = \"big\"\nrto = \"1h\"\n\n[vars]\nx = \"1\"\n",
        );
        for i in 0..steps {
            let needs = if i == 0 {
                String::new()
            } else {
                format!("\"s{}\"", i - 1)
            };
            text += &format!(
                "\n[[step]]\nid = \"s{i}\"\nphase = \"provision\"\naction = \"command\"\nrun = [\"echo\", \"{{{{ vars.x }}}}\"]\ntimeout = \"1m\"\nneeds = [{needs}]\n"
            );
            if i == at {
                text += extra;
            }
        }
        text
    }

    fn both(text: &str) -> (Loaded, Loaded) {
        let source = SourceFile::new(PathBuf::from("big.toml"), text.to_string());
        let grouped = load_source(Arc::clone(&source), PathBuf::from("."), Vec::new());
        let whole = load_whole(source, PathBuf::from("."), Vec::new());
        (grouped, whole)
    }

    fn rendered(loaded: Loaded) -> Vec<String> {
        loaded
            .diagnostics
            .sorted()
            .iter()
            .map(|d| d.render(false, false))
            .collect()
    }

    /// Read in groups or whole, a large plan gives the same steps and the same
    /// diagnostics, at the same places.
    #[test]
    fn large_plans_read_in_groups_read_as_whole_ones() {
        let (grouped, whole) = both(&big_plan(12_000, 0, ""));
        let (g, w) = (grouped.plan.unwrap(), whole.plan.unwrap());
        assert_eq!(g.steps.len(), 12_000);
        for (a, b) in g.steps.iter().zip(&w.steps) {
            assert_eq!(
                (&a.id, &a.needs, &a.fingerprint, a.span),
                (&b.id, &b.needs, &b.fingerprint, b.span)
            );
            assert_eq!(a.texts.len(), b.texts.len());
        }
        let bad = "timeout2 = \"1m\"\nretries = \"x\"\n\n[[step]]\nid = \"s1\"\nphase = \"nope\"\naction = \"noop\"\nneeds = [\"ghost\"]\n";
        let (grouped, whole) = both(&big_plan(12_000, 7_000, bad));
        assert!(grouped.plan.is_none());
        let (g, w) = (rendered(grouped), rendered(whole));
        assert!(g.len() >= 4, "{g:?}");
        assert_eq!(g, w);
    }

    /// Where a cut at `[[step]]` lines could be wrong, or a group does not
    /// parse, the file is read whole: the results cannot differ.
    #[test]
    fn large_plans_fall_back_to_a_whole_read_when_a_cut_could_be_wrong() {
        for (at, extra) in [
            (3_000, "[step.env]\nA = \"1\"\n"),
            // A `[[step]]` line inside a string, just where a group would start.
            (4_999, "description = \"\"\"\n[[step]]\nid = \"\"\"\n"),
            (3_000, "description = \"unterminated\n"),
        ] {
            let text = big_plan(6_000, at, extra);
            assert!(large::load(
                &SourceFile::new(PathBuf::from("big.toml"), text.clone()),
                Path::new("."),
                &Vec::new()
            )
            .is_none());
            let (grouped, whole) = both(&text);
            assert_eq!(rendered(grouped), rendered(whole));
        }
    }
}
