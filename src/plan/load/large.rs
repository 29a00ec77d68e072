//! Plans with thousands of steps, read in groups of `[[step]]` tables on every
//! core.
//!
//! Parsing a whole 100,000-step plan at once holds its entire TOML tree, with
//! a span for every key and value, in memory together with the lexer's tokens:
//! that tree, not the plan, is the peak of a large run's memory, and one core
//! does all of it. Here the text is cut at the `[[step]]` header lines, the
//! part before the first one (`[plan]`, vars, stores…) is read as usual, and
//! the groups of steps are parsed and turned into [`Step`]s by a few threads,
//! each tree dropped as soon as its steps are read.
//!
//! Each group is parsed from its own slice of the text, with spans shifted by
//! where the slice starts ([`SpanBase`]), so messages point at the right line
//! of the file. The cut is only trusted when it cannot be wrong:
//! no other line after the first `[[step]]` may start with `[` (a sub-table
//! such as `[step.env]`, another table, an array continued on a new line), and
//! every part must parse without error (a `[[step]]` line inside a multi-line
//! string leaves the part before it unterminated). Otherwise, and for any
//! syntax error, the whole file is read the ordinary way, so diagnostics are
//! the same either way.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use toml::de::{DeTable, DeValue};

use super::{finish, read_plan, read_step, Loaded, Overrides, Step};
use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::{span_of, Fields, SpanBase};
use crate::plan::source::{SourceFile, Span};

/// One group's steps and what reading them found.
type Group = (Vec<Step>, Diagnostics);

/// Below this many steps one parse is fast enough.
const FROM_STEPS: usize = 5_000;
/// Steps per group: small enough that a few groups' trees are a fraction of
/// the whole and that a thread held up (by a busy core) leaves its share to
/// the others, large enough that a group's copy and thread hand-off cost
/// nothing. (5,000 made two groups of a 10,000-step plan, one a thread; a
/// run waited for the slower, 57-110 ms in 3 of 10 loads against 22-30 ms.)
const GROUP_STEPS: usize = 1_000;

/// The plan read in groups, or `None` when it must be read whole.
pub(super) fn load(source: &Arc<SourceFile>, dir: &Path, overrides: &Overrides) -> Option<Loaded> {
    let text = source.text.as_str();
    let headers = step_headers(text)?;
    let (head, head_errors) = DeTable::parse_recoverable(&text[..headers[0]]);
    if !head_errors.is_empty() || head.get_ref().contains_key("step") {
        return None;
    }
    let groups: Vec<(usize, usize, usize)> = headers
        .chunks(GROUP_STEPS)
        .enumerate()
        .map(|(g, chunk)| {
            let end = headers
                .get((g + 1) * GROUP_STEPS)
                .copied()
                .unwrap_or(text.len());
            (chunk[0], end, g * GROUP_STEPS)
        })
        .collect();
    let results: Vec<Mutex<Option<Group>>> = groups.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let whole = AtomicBool::new(false);
    let threads = crate::cores().clamp(1, 8).min(groups.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= groups.len() || whole.load(Ordering::Relaxed) {
                    return;
                }
                let (start, end, first_index) = groups[g];
                match read_group(source, start, end, first_index) {
                    Some(read) => {
                        *results[g].lock().unwrap_or_else(|e| e.into_inner()) = Some(read)
                    }
                    None => whole.store(true, Ordering::Relaxed),
                }
            });
        }
    });
    if whole.load(Ordering::Relaxed) {
        return None;
    }
    let mut diags = Diagnostics::default();
    let mut steps = Vec::with_capacity(headers.len());
    for result in results {
        let (group_steps, group_diags) = result.into_inner().ok()??;
        steps.extend(group_steps);
        diags.extend(group_diags);
    }
    let fields = Fields::new(source, head.get_ref(), Span::new(0, 0), "the plan file");
    let plan = read_plan(&fields, dir.to_path_buf(), Some(steps), &mut diags);
    drop(head);
    Some(finish(plan, diags, overrides.clone()))
}

/// Byte offsets of the `[[step]]` header lines, when the plan has enough of
/// them and nothing after the first one could make a cut wrong.
fn step_headers(text: &str) -> Option<Vec<usize>> {
    let mut headers = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed == "[[step]]" {
            headers.push(offset);
        } else if !headers.is_empty() && trimmed.starts_with('[') {
            return None;
        }
        offset += line.len();
    }
    (headers.len() >= FROM_STEPS).then_some(headers)
}

/// The steps of one group, or `None` if it does not parse cleanly on its own.
fn read_group(
    source: &Arc<SourceFile>,
    start: usize,
    end: usize,
    first_index: usize,
) -> Option<Group> {
    let (root, errors) = DeTable::parse_recoverable(&source.text[start..end]);
    if !errors.is_empty() || root.get_ref().len() != 1 {
        return None;
    }
    let DeValue::Array(tables) = root.get_ref().get("step")?.get_ref() else {
        return None;
    };
    let _base = SpanBase::set(start);
    let mut diags = Diagnostics::default();
    let mut steps = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let DeValue::Table(inner) = table.get_ref() else {
            return None;
        };
        if let Some(step) = read_step(source, inner, span_of(table), first_index + i, &mut diags) {
            steps.push(step);
        }
    }
    Some((steps, diags))
}
