//! Typed, spanned reads from a parsed TOML table.
//!
//! [`Fields`] wraps one table of the plan. Each read checks the value's type and
//! reports a diagnostic at the value when it is wrong; [`Fields::check_keys`]
//! reports every key the table may not have, with a suggestion. Reads return
//! `None` after reporting, so callers go on and find the next problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::diagnostic::{did_you_mean, Diagnostics};
use super::source::{SourceFile, Span, Spanned};

pub type TomlSpanned<T> = toml::Spanned<T>;

/// Where a parsed value is in the plan file. Every span of the plan goes
/// through here, so that text parsed on its own (a group of steps, see
/// `load/large.rs`) can still point into the whole file: see [`SpanBase`].
pub fn span_of<T>(spanned: &TomlSpanned<T>) -> Span {
    let range = spanned.span();
    let base = SPAN_BASE.get();
    Span::new(base + range.start, base + range.end)
}

thread_local! {
    static SPAN_BASE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// While alive, spans from [`span_of`] on this thread are shifted by `base`:
/// the offset in the plan file of the text that was parsed.
pub struct SpanBase(usize);

impl SpanBase {
    pub fn set(base: usize) -> Self {
        SpanBase(SPAN_BASE.replace(base))
    }
}

impl Drop for SpanBase {
    fn drop(&mut self) {
        SPAN_BASE.set(self.0);
    }
}

/// The TOML type of a value, as messages name it.
pub fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// An integer literal's value, if it fits in an `i64`.
pub fn integer_value(value: &DeValue<'_>) -> Option<i64> {
    match value {
        DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix()).ok(),
        _ => None,
    }
}

/// One table of the plan, with what it is called in messages.
pub struct Fields<'a, 'i> {
    pub source: &'a Arc<SourceFile>,
    pub table: &'a DeTable<'i>,
    /// Where to point when a required key is missing: the table's header.
    pub span: Span,
    /// "step `db`", "the plan table", "store `backups`".
    pub what: String,
}

impl<'a, 'i> Fields<'a, 'i> {
    pub fn new(
        source: &'a Arc<SourceFile>,
        table: &'a DeTable<'i>,
        span: Span,
        what: impl Into<String>,
    ) -> Self {
        Fields {
            source,
            table,
            span,
            what: what.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<(Span, &'a TomlSpanned<DeValue<'i>>)> {
        self.table.get_key_value(key).map(|(k, v)| (span_of(k), v))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The span of a key, for messages about the key itself.
    pub fn key_span(&self, key: &str) -> Span {
        self.get(key).map(|(span, _)| span).unwrap_or(self.span)
    }

    /// Reports every key not in `allowed`. `elsewhere` may explain a key that
    /// belongs to another kind of table (a field of another action, say).
    pub fn check_keys(
        &self,
        allowed: &[&str],
        diags: &mut Diagnostics,
        elsewhere: impl Fn(&str) -> Option<String>,
    ) {
        for key in self.table.keys() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = match crate::plan::diagnostic::suggest(name, allowed.iter().copied()) {
                Some(close) => format!("; did you mean `{close}`?"),
                None => elsewhere(name).unwrap_or_default(),
            };
            diags.error(
                self.source,
                span_of(key),
                "unknown-key",
                format!("unknown key `{name}` in {}{hint}", self.what),
            );
        }
    }

    fn type_error(
        &self,
        diags: &mut Diagnostics,
        key: &str,
        value: &TomlSpanned<DeValue<'_>>,
        expected: &str,
    ) {
        diags.error(
            self.source,
            span_of(value),
            "type",
            format!(
                "`{key}` in {} must be {expected}, found {}",
                self.what,
                type_name(value.get_ref())
            ),
        );
    }

    pub fn missing(&self, diags: &mut Diagnostics, key: &str) {
        diags.error(
            self.source,
            self.span,
            "missing-field",
            format!("{} is missing the required key `{key}`", self.what),
        );
    }

    pub fn string(&self, key: &str, diags: &mut Diagnostics) -> Option<Spanned<String>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(s.to_string(), span_of(value))),
            _ => {
                self.type_error(diags, key, value, "a string");
                None
            }
        }
    }

    pub fn required_string(&self, key: &str, diags: &mut Diagnostics) -> Option<Spanned<String>> {
        if !self.contains(key) {
            self.missing(diags, key);
            return None;
        }
        self.string(key, diags)
    }

    pub fn bool(&self, key: &str, diags: &mut Diagnostics) -> Option<Spanned<bool>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(*b, span_of(value))),
            _ => {
                self.type_error(diags, key, value, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    /// A non-negative integer no larger than `max`.
    pub fn integer(&self, key: &str, max: u64, diags: &mut Diagnostics) -> Option<Spanned<u64>> {
        let (_, value) = self.get(key)?;
        match integer_value(value.get_ref()) {
            Some(n) if n >= 0 && n as u64 <= max => Some(Spanned::new(n as u64, span_of(value))),
            Some(n) => {
                diags.error(
                    self.source,
                    span_of(value),
                    "range",
                    format!(
                        "`{key}` in {} must be between 0 and {max}, found {n}",
                        self.what
                    ),
                );
                None
            }
            None => {
                self.type_error(diags, key, value, "an integer");
                None
            }
        }
    }

    /// A humantime duration such as `90s`, `10m` or `1h 30m`.
    pub fn duration(&self, key: &str, diags: &mut Diagnostics) -> Option<Spanned<Duration>> {
        let (_, value) = self.get(key)?;
        // `timeout = 30`: seconds, or minutes? Said, with the way to write it.
        if let DeValue::Integer(_) | DeValue::Float(_) = value.get_ref() {
            let number = self.source.slice(span_of(value));
            diags.error(
                self.source,
                span_of(value),
                "type",
                format!(
                    "`{key}` in {} must be a duration with its unit, found {}: write `{key} = \"{number}s\"` (or `\"{number}m\"`, `\"{number}h\"`)",
                    self.what,
                    type_name(value.get_ref())
                ),
            );
            return None;
        }
        let text = self.string(key, diags)?;
        match parse_duration(&text) {
            Ok(duration) => Some(Spanned::new(duration, text.span)),
            Err(reason) => {
                diags.error(
                    self.source,
                    text.span,
                    "duration",
                    format!(
                        "`{key}` in {}: invalid duration `{}`: {reason}",
                        self.what, text.value
                    ),
                );
                None
            }
        }
    }

    /// An array of strings; with `non_empty`, an empty array is an error.
    pub fn string_list(
        &self,
        key: &str,
        non_empty: bool,
        diags: &mut Diagnostics,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let (_, value) = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(diags, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(s.to_string(), span_of(item))),
                other => {
                    ok = false;
                    diags.error(
                        self.source,
                        span_of(item),
                        "type",
                        format!(
                            "`{key}` in {} must hold only strings, found {}",
                            self.what,
                            type_name(other)
                        ),
                    );
                }
            }
        }
        if non_empty && out.is_empty() && ok {
            diags.error(
                self.source,
                span_of(value),
                "empty",
                format!("`{key}` in {} must not be empty", self.what),
            );
            return None;
        }
        ok.then(|| Spanned::new(out, span_of(value)))
    }

    /// A table whose values are all strings (`env`, `headers`, `outputs`).
    pub fn string_map(
        &self,
        key: &str,
        diags: &mut Diagnostics,
    ) -> Option<BTreeMap<String, Spanned<String>>> {
        let table = self.table_field(key, diags)?;
        let mut out = BTreeMap::new();
        for (name, value) in table.table.iter() {
            match value.get_ref() {
                DeValue::String(s) => {
                    out.insert(
                        name.get_ref().to_string(),
                        Spanned::new(s.to_string(), span_of(value)),
                    );
                }
                other => diags.error(
                    self.source,
                    span_of(value),
                    "type",
                    format!(
                        "`{key}.{}` in {} must be a string, found {}{}",
                        name.get_ref(),
                        self.what,
                        type_name(other),
                        match other {
                            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) =>
                                format!(
                                    ": quote it, `{} = \"{}\"`",
                                    name.get_ref(),
                                    self.source.slice(span_of(value))
                                ),
                            _ => String::new(),
                        }
                    ),
                ),
            }
        }
        Some(out)
    }

    pub fn table_field(&self, key: &str, diags: &mut Diagnostics) -> Option<Fields<'a, 'i>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(Fields::new(
                self.source,
                table,
                span_of(value),
                format!("`{key}` of {}", self.what),
            )),
            _ => {
                self.type_error(diags, key, value, "a table");
                None
            }
        }
    }

    /// Reports that at most one of `keys` may be set; returns how many are.
    pub fn exclusive(&self, keys: &[&str], diags: &mut Diagnostics) -> usize {
        let present: Vec<&str> = keys.iter().copied().filter(|k| self.contains(k)).collect();
        if present.len() > 1 {
            diags.error(
                self.source,
                self.key_span(present[1]),
                "exclusive",
                format!(
                    "{} sets both `{}` and `{}`; they are mutually exclusive",
                    self.what, present[0], present[1]
                ),
            );
        }
        present.len()
    }

    /// Requires exactly one of `keys`.
    pub fn exactly_one(&self, keys: &[&str], diags: &mut Diagnostics) {
        if self.exclusive(keys, diags) == 0 {
            let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            diags.error(
                self.source,
                self.span,
                "missing-field",
                format!("{} needs one of {}", self.what, names.join(" or ")),
            );
        }
    }

    /// A string that must be one of `choices`.
    pub fn choice(
        &self,
        key: &str,
        choices: &[&'static str],
        diags: &mut Diagnostics,
    ) -> Option<Spanned<&'static str>> {
        let text = self.string(key, diags)?;
        match choices.iter().find(|c| **c == text.value) {
            Some(choice) => Some(Spanned::new(*choice, text.span)),
            None => {
                let names: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
                diags.error(
                    self.source,
                    text.span,
                    "invalid-value",
                    format!(
                        "`{key}` in {} must be one of {}, found `{}`{}",
                        self.what,
                        names.join(", "),
                        text.value,
                        did_you_mean(&text.value, choices.iter().copied())
                    ),
                );
                None
            }
        }
    }
}

/// Durations as plans write them: humantime (`90s`, `10m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| e.to_string())
}

/// `8MiB`, `512KiB`, `1GiB`, `1048576`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}
