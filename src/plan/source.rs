//! Source files and byte spans: the link between a parsed value and the
//! `FILE:LINE:COL` a diagnostic points at.
//!
//! Every span in the plan model is a byte range into one [`SourceFile`]; lines and
//! columns are computed only when a diagnostic is rendered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A byte range into a source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(range: std::ops::Range<usize>) -> Self {
        Span::new(range.start, range.end)
    }
}

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The text of one file, with the offsets of its lines.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it: what diagnostics print.
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
    /// Where the file stops being UTF-8, when it does: read as lossy text,
    /// so that a diagnostic can point at the first bad byte.
    pub not_utf8_at: Option<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Arc<Self> {
        Arc::new(Self::build(path.into(), text, None))
    }

    /// Line endings are made `\n`: a plan saved on Windows has `\r\n` in
    /// its multi-line strings, and a `shell` script of such lines runs
    /// `cd /srv\r` (TOML lets a reader normalize them). Lines and columns
    /// stay where they were.
    fn build(path: PathBuf, text: String, not_utf8_at: Option<usize>) -> Self {
        let text = if not_utf8_at.is_none() && text.contains("\r\n") {
            text.replace("\r\n", "\n")
        } else {
            text
        };
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
            not_utf8_at,
        }
    }

    /// The file's text; one that is not UTF-8 is read all the same, with
    /// `not_utf8_at` set, for its reader to report where.
    pub fn read(path: &Path) -> std::io::Result<Arc<Self>> {
        match String::from_utf8(std::fs::read(path)?) {
            Ok(text) => Ok(Self::new(path, text)),
            Err(error) => {
                let at = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
                Ok(Arc::new(Self::build(path.into(), text, Some(at))))
            }
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count();
        (line + 1, column + 1)
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.start..span.end).unwrap_or("")
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_and_count_characters() {
        let file = SourceFile::new("p.toml", "a = 1\nbé = \"x\"\n".to_string());
        assert_eq!(file.location(0), (1, 1));
        assert_eq!(file.location(4), (1, 5));
        assert_eq!(file.location(6), (2, 1));
        // `=` after a two-byte character is the fourth character of its line.
        assert_eq!(file.location(10), (2, 4));
        assert_eq!(file.line_text(2), "bé = \"x\"");
    }
}
