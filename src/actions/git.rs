//! `git`: put the configuration repository in place at a pinned revision.

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["repo", "ref", "commit", "dest", "submodules"];

#[derive(Clone, Debug)]
pub struct GitSpec {
    pub repo: Spanned<String>,
    pub reference: Spanned<String>,
    pub commit: Option<Spanned<String>>,
    pub dest: Spanned<String>,
    pub submodules: bool,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<GitSpec> {
    let repo = fields.required_string("repo", diags);
    let reference = fields.required_string("ref", diags);
    let dest = fields.required_string("dest", diags);
    let submodules = fields
        .bool("submodules", diags)
        .map(|b| b.value)
        .unwrap_or(true);
    let commit = fields.string("commit", diags);
    if let Some(commit) = &commit {
        if !is_full_commit(commit) {
            diags.error(
                fields.source,
                commit.span,
                "commit-pin",
                format!(
                    "`commit` in {} must be a full 40-character hex commit id, found `{}`",
                    fields.what, commit.value
                ),
            );
        }
    }
    Some(GitSpec {
        repo: repo?,
        reference: reference?,
        commit,
        dest: dest?,
        submodules,
    })
}

pub fn is_full_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
