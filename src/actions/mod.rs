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

type ActionResult = Result<crate::journal::record::Outputs, crate::exec::ActionError>;

/// Makes a rename in `path`'s directory durable: the entry survives a power
/// loss, not only the file's data. A step counts as done once its finish
/// record is durable, and a resume does not run it again: what it put in
/// place must be durable by then as well.
pub(crate) fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Makes every file written under `tree` durable, data and entries: one
/// `syncfs` of its filesystem, where a checkout or an unpacked archive would
/// take an `fsync` for each of thousands of files and directories.
pub(crate) fn sync_tree(tree: &std::path::Path) -> std::io::Result<()> {
    // Any file of the filesystem will do: the tree's directory, or its
    // parent should an archive have made the tree's own unreadable.
    let dir = std::fs::File::open(tree)
        .or_else(|error| tree.parent().map_or(Err(error), std::fs::File::open))?;
    nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
}

/// Puts the tree at `temp` where `dest` is, made durable first (see
/// [`sync_tree`]): an atomic exchange when `dest` exists (a reader sees the
/// old tree or the new one, never a mix), then the old tree is removed.
pub(crate) fn replace_tree(
    temp: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(), crate::exec::ActionError> {
    let io = |action: &'static str| {
        let path = dest.to_path_buf();
        move |source| crate::exec::ActionError::Io {
            action,
            path,
            source,
        }
    };
    sync_tree(temp).map_err(io("make durable the new tree of"))?;
    if dest.symlink_metadata().is_ok() {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            temp,
            nix::fcntl::AT_FDCWD,
            dest,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| io("replace")(std::io::Error::from(e)))?;
        sync_parent(dest).map_err(io("make durable the move of"))?;
        let old = temp;
        if old.is_dir() {
            std::fs::remove_dir_all(old).map_err(io("remove the old tree of"))?;
        } else {
            std::fs::remove_file(old).map_err(io("remove the old file of"))?;
        }
    } else {
        std::fs::rename(temp, dest).map_err(io("move into place"))?;
        sync_parent(dest).map_err(io("make durable the move of"))?;
    }
    Ok(())
}

/// A path beside `dest` for work in progress (`.NAME.phoenix-PID.SUFFIX`), in
/// the same directory so that the final move is a rename; the directory is
/// created first.
pub(crate) fn beside(
    dest: &std::path::Path,
    suffix: &str,
) -> Result<std::path::PathBuf, crate::exec::ActionError> {
    let parent = dest
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|source| crate::exec::ActionError::Io {
        action: "create",
        path: parent.clone(),
        source,
    })?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ending = format!(".{suffix}");
    remove_leftovers(&parent, &format!(".{name}.phoenix-"), |rest| rest == ending);
    Ok(parent.join(format!(".{name}.phoenix-{}.{suffix}", std::process::id())))
}

/// Removes the work in progress that a Phoenix killed mid-step (a crash, a
/// lost machine's disk brought back, `--chaos kill`) left under the same
/// name with its own process id: its resume starts afresh under a new one,
/// and a partial download can be gigabytes. One whose process still lives
/// is left alone. The names are `PREFIX` `PID` and then what
/// `after_pid` accepts.
pub(crate) fn remove_leftovers(
    parent: &std::path::Path,
    prefix: &str,
    after_pid: impl Fn(&str) -> bool,
) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| {
                let digits = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                after_pid(&rest[digits..]).then(|| rest[..digits].parse::<i32>().ok())?
            })
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if !gone {
            continue;
        }
        let path = entry.path();
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}
