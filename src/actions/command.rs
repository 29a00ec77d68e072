//! `command`: run a program, as an argv or through `/bin/sh -c`.

use std::collections::BTreeMap;

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["run", "shell", "cwd", "env"];

#[derive(Clone, Debug)]
pub enum Program {
    Argv(Vec<Spanned<String>>),
    Shell(Spanned<String>),
}

#[derive(Clone, Debug)]
pub struct CommandSpec {
    pub program: Program,
    pub cwd: Option<Spanned<String>>,
    pub env: BTreeMap<String, Spanned<String>>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<CommandSpec> {
    fields.exactly_one(&["run", "shell"], diags);
    let cwd = fields.string("cwd", diags);
    let env = fields.string_map("env", diags).unwrap_or_default();
    let program = if fields.contains("run") {
        Program::Argv(fields.string_list("run", true, diags)?.value)
    } else {
        Program::Shell(fields.string("shell", diags)?)
    };
    Some(CommandSpec { program, cwd, env })
}
