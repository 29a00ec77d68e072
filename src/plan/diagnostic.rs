//! Diagnostics: every problem found in a plan, with where it is.
//!
//! Validation never stops at the first problem: each stage pushes into one
//! [`Diagnostics`] list, and the list is rendered once, at the edge, either as
//! `FILE:LINE:COL: error: MESSAGE` lines (with the source line and a caret on a
//! terminal) or as a JSON array.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::source::{SourceFile, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub source: Arc<SourceFile>,
    pub span: Span,
    pub severity: Severity,
    /// A stable, kebab-case name for the rule, for tooling.
    pub code: &'static str,
    pub message: String,
}

/// The JSON form of a diagnostic: the contract of `validate --format json`.
#[derive(Serialize)]
pub struct DiagnosticJson<'a> {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
}

impl Diagnostic {
    pub fn location(&self) -> (usize, usize) {
        self.source.location(self.span.start)
    }

    pub fn to_json(&self) -> DiagnosticJson<'_> {
        let (line, column) = self.location();
        DiagnosticJson {
            file: self.source.path.display().to_string(),
            line,
            column,
            severity: self.severity,
            code: self.code,
            message: &self.message,
        }
    }

    /// `FILE:LINE:COL: error: MESSAGE`, followed on a terminal by the source line
    /// and a caret under the offending text.
    pub fn render(&self, snippet: bool, color: bool) -> String {
        let (line, column) = self.location();
        let (on, off) = match (color, self.severity) {
            (false, _) => ("", ""),
            (true, Severity::Error) => ("\x1b[1;31m", "\x1b[0m"),
            (true, Severity::Warning) => ("\x1b[1;33m", "\x1b[0m"),
        };
        let mut out = format!(
            "{}:{line}:{column}: {on}{}{off}: {}",
            self.source.path.display(),
            self.severity.label(),
            self.message
        );
        if snippet {
            let text = self.source.line_text(line);
            let width = self
                .source
                .slice(self.span)
                .lines()
                .next()
                .map(|first| first.chars().count())
                .unwrap_or(1)
                .max(1);
            let gutter = line.to_string().len();
            let _ = write!(
                out,
                "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {}{on}{}{off}",
                "",
                "",
                " ".repeat(column - 1),
                "^".repeat(width.min(text.chars().count().saturating_sub(column - 1).max(1))),
            );
        }
        out
    }
}

/// The problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(
        &mut self,
        source: &Arc<SourceFile>,
        span: Span,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(source, span, Severity::Error, code, message.into());
    }

    pub fn warning(
        &mut self,
        source: &Arc<SourceFile>,
        span: Span,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(source, span, Severity::Warning, code, message.into());
    }

    fn push(
        &mut self,
        source: &Arc<SourceFile>,
        span: Span,
        severity: Severity,
        code: &'static str,
        message: String,
    ) {
        self.items.push(Diagnostic {
            source: Arc::clone(source),
            span,
            severity,
            code,
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.items.iter().filter(|d| d.severity == severity).count()
    }

    /// The diagnostics in file order: by file, then position, errors first.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (&a.source.path, a.span.start, a.severity).cmp(&(
                &b.source.path,
                b.span.start,
                b.severity,
            ))
        });
        self.items
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

/// "did you mean" for a misspelt name: the closest candidate, if it is close enough.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // A typo is either a small edit (a swapped or dropped letter: `rot` for `rto`)
    // or a near-identical spelling of a longer word (`netwrok` for `network`).
    let max_edits = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let edits = strsim::osa_distance(name, candidate);
            let similarity = strsim::jaro_winkler(name, candidate);
            (edits <= max_edits || similarity >= 0.85).then_some((edits, candidate))
        })
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, candidate)| candidate)
}

/// `; did you mean `x`?` or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(name, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(suggest("neds", ["needs", "phase", "action"]), Some("needs"));
        assert_eq!(suggest("zzzz", ["needs", "phase"]), None);
    }

    #[test]
    fn renders_location_and_caret() {
        let file = SourceFile::new("p.toml", "version = 1\nnmae = \"x\"\n".into());
        let mut diags = Diagnostics::default();
        diags.error(
            &file,
            Span::new(12, 16),
            "unknown-key",
            "unknown key `nmae`",
        );
        let rendered = diags.sorted()[0].render(true, false);
        assert_eq!(
            rendered,
            "p.toml:2:1: error: unknown key `nmae`\n  |\n2 | nmae = \"x\"\n  | ^^^^"
        );
    }
}
