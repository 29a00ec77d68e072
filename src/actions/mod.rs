//! Actions: what a step does. One file per action kind behind one closed enum.
//!
//! Each action file owns its spec type (the step fields it reads), the rules on
//! those fields, and (for the actions the executor runs) its `run`. Adding an
//! action is one more file and one more arm here; the scheduler never changes.

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub mod approval;
pub mod command;
pub mod git;
pub mod http;
pub mod restore;
pub mod template;
pub mod wait;

/// A step's action with its own fields.
#[derive(Clone, Debug)]
pub enum Action {
    Command(command::CommandSpec),
    Http(http::HttpSpec),
    Wait(wait::WaitSpec),
    Git(git::GitSpec),
    Template(template::TemplateSpec),
    Restore(restore::RestoreSpec),
    Approval(approval::ApprovalSpec),
    Noop,
}

/// The action names of spec v1, with the step fields each one reads.
pub const KINDS: &[(&str, &[&str])] = &[
    ("command", command::FIELDS),
    ("http", http::FIELDS),
    ("wait", wait::FIELDS),
    ("git", git::FIELDS),
    ("template", template::FIELDS),
    ("restore", restore::FIELDS),
    ("approval", approval::FIELDS),
    ("noop", &[]),
];

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Command(_) => "command",
            Action::Http(_) => "http",
            Action::Wait(_) => "wait",
            Action::Git(_) => "git",
            Action::Template(_) => "template",
            Action::Restore(_) => "restore",
            Action::Approval(_) => "approval",
            Action::Noop => "noop",
        }
    }

    /// The fields of the action named `kind`, if there is such an action.
    pub fn fields_of(kind: &str) -> Option<&'static [&'static str]> {
        KINDS
            .iter()
            .find(|(name, _)| *name == kind)
            .map(|(_, fields)| *fields)
    }

    /// Reads the fields of the action named `kind` from a step table.
    pub fn parse(kind: &str, fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<Action> {
        Some(match kind {
            "command" => Action::Command(command::parse(fields, diags)?),
            "http" => Action::Http(http::parse(fields, diags)?),
            "wait" => Action::Wait(wait::parse(fields, diags)?),
            "git" => Action::Git(git::parse(fields, diags)?),
            "template" => Action::Template(template::parse(fields, diags)?),
            "restore" => Action::Restore(restore::parse(fields, diags)?),
            "approval" => Action::Approval(approval::parse(fields, diags)?),
            "noop" => Action::Noop,
            _ => return None,
        })
    }

    /// Where the action puts its result, for the actions that replace a
    /// destination as a whole (and so can always make it again): git,
    /// template, restore.
    pub fn dest(&self) -> Option<&Spanned<String>> {
        match self {
            Action::Git(spec) => Some(&spec.dest),
            Action::Template(spec) => Some(&spec.dest),
            Action::Restore(spec) => Some(&spec.dest),
            _ => None,
        }
    }

    /// Whether a step of this kind can run unattended for long enough that a
    /// missing `timeout` deserves a warning.
    pub fn wants_timeout(&self) -> bool {
        match self {
            Action::Noop | Action::Approval(_) => false,
            Action::Wait(spec) => spec.until.is_none(),
            Action::Http(spec) => spec.until.is_none(),
            _ => true,
        }
    }
}

/// For an unknown key: the actions it belongs to, as a hint.
pub fn owners_of(key: &str) -> Option<String> {
    let owners: Vec<String> = KINDS
        .iter()
        .filter(|(_, fields)| fields.contains(&key))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    (!owners.is_empty()).then(|| {
        format!(
            "; `{key}` is a field of the {} action",
            owners.join(" and ")
        )
    })
}

impl Action {
    /// Runs the action for one attempt of its step.
    /// The action's future, boxed on its own: the futures differ in size by
    /// kilobytes (a restore's or a git fetch's against a command's), and a
    /// step's task would otherwise carry, and copy on every start, the
    /// largest of them.
    pub fn run<'a>(
        &'a self,
        ctx: &'a crate::exec::StepContext<'_>,
    ) -> futures_util::future::BoxFuture<'a, ActionResult> {
        match self {
            Action::Command(spec) => Box::pin(command::run(spec, ctx)),
            Action::Http(spec) => Box::pin(http::run(spec, ctx)),
            Action::Wait(spec) => Box::pin(wait::run(spec, ctx)),
            Action::Approval(spec) => Box::pin(approval::run(spec, ctx)),
            Action::Noop => Box::pin(std::future::ready(Ok(Default::default()))),
            Action::Git(spec) => Box::pin(git::run(spec, ctx)),
            Action::Template(spec) => Box::pin(template::run(spec, ctx)),
            Action::Restore(spec) => Box::pin(restore::run(spec, ctx)),
        }
    }
}

mod place;
pub(crate) use place::{beside, remove_leftovers, replace_tree, sync_parent};

type ActionResult = Result<crate::journal::record::Outputs, crate::exec::ActionError>;
