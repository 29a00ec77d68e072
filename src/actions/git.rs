//! `git`: put the configuration repository in place at a pinned revision.

use std::path::Path;

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;
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

/// Resolves the ref (or takes the commit frozen on the first run), checks the
/// pin, freezes the commit, and puts a checkout of it (with submodules) at
/// `dest` through a temporary directory beside it and an atomic exchange.
pub async fn run(spec: &GitSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let repo = resolve_repo(&ctx.render(&spec.repo)?, &ctx.shared.plan.dir);
    let reference = ctx.render(&spec.reference)?;
    let dest = ctx.path(&spec.dest)?;
    let frozen = ctx.frozen().and_then(|values| {
        values
            .get("commit")
            .and_then(|c| c.as_str().map(str::to_string))
    });
    let commit = match frozen {
        Some(commit) => commit,
        None => {
            let commit = resolve(&repo, &reference, &ctx.cancel).await?;
            if let Some(pin) = &spec.commit {
                if !pin.value.eq_ignore_ascii_case(&commit) {
                    return Err(ActionError::Git(format!(
                        "`{reference}` resolves to {commit}, but the plan pins {}: the ref moved; check the release, then update the pin",
                        pin.value
                    )));
                }
            }
            let mut values = std::collections::BTreeMap::new();
            values.insert(
                "commit".to_string(),
                serde_json::Value::String(commit.clone()),
            );
            values.insert(
                "ref".to_string(),
                serde_json::Value::String(reference.clone()),
            );
            ctx.freeze(values).await?;
            commit
        }
    };
    if is_clean_checkout(&dest, &commit).await {
        return Ok(Outputs::from([("commit".to_string(), commit)]));
    }
    let temp = super::beside(&dest, "checkout")?;
    let _ = std::fs::remove_dir_all(&temp);
    let result = checkout(
        &repo,
        &reference,
        &commit,
        &temp,
        spec.submodules,
        &ctx.cancel,
    )
    .await;
    if let Err(error) = result {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(error);
    }
    super::replace_tree(&temp, &dest)?;
    Ok(Outputs::from([("commit".to_string(), commit)]))
}

/// A local path relative to the plan's directory, or the URL as written.
pub fn resolve_repo(repo: &str, plan_dir: &Path) -> String {
    if repo.contains("://") || repo.contains('@') && repo.contains(':') {
        return repo.to_string();
    }
    plan_dir.join(repo).display().to_string()
}

/// `git` with prompts off: a rebuild must fail, not hang, on missing credentials.
async fn git() -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if !ssh_configured().await {
        command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    command
}

/// Whether the person running Phoenix chose how git runs ssh
/// (`GIT_SSH_COMMAND`, `GIT_SSH`, or `core.sshCommand` in git's global or
/// system configuration): then that is left as it is. Otherwise git's ssh
/// runs in batch mode: on a machine rebuilt a moment ago, with no
/// `known_hosts` yet, plain ssh asks on the terminal whether to trust the
/// host (or for a key's passphrase), where the progress display hides the
/// question and the step hangs until its timeout; in batch mode it fails at
/// once and says why ("Host key verification failed"). Asked once, without
/// blocking the thread that runs the steps.
async fn ssh_configured() -> bool {
    static CONFIGURED: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *CONFIGURED
        .get_or_init(|| async {
            if std::env::var_os("GIT_SSH_COMMAND").is_some()
                || std::env::var_os("GIT_SSH").is_some()
            {
                return true;
            }
            for scope in ["--global", "--system"] {
                let set = tokio::process::Command::new("git")
                    .args(["config", scope, "--get", "core.sshCommand"])
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .await
                    .is_ok_and(|out| out.status.success());
                if set {
                    return true;
                }
            }
            false
        })
        .await
}

/// Runs git, returning stdout; on failure, its stderr with any credentials in
/// URLs removed.
async fn run_git(
    mut command: tokio::process::Command,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<String, ActionError> {
    let output = tokio::select! {
        output = command.output() => output.map_err(|source| ActionError::Spawn { program: "git".into(), source })?,
        _ = cancel.cancelled() => return Err(ActionError::Interrupted),
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The advice git adds after every failed fetch would take the place of
    // what went wrong (ssh's own line before it).
    const ADVICE: [&str; 2] = [
        "Please make sure you have the correct access rights",
        "and the repository exists.",
    ];
    let last: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !ADVICE.contains(&l.trim()))
        .collect();
    let tail = last[last.len().saturating_sub(3)..].join("; ");
    Err(ActionError::Git(strip_credentials(&tail)))
}

/// `https://user:token@host/x` becomes `https://***@host/x`.
pub fn strip_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo) => {
                out.push_str("***");
                out.push_str(&tail[userinfo..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The commit `reference` names in `repo`: a full commit id as is; else a tag
/// (peeled), a branch, or a full ref name, as the repository lists them.
pub async fn resolve(
    repo: &str,
    reference: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<String, ActionError> {
    if is_full_commit(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    let mut command = git().await;
    command.args(["ls-remote", "--", repo]);
    let listing = run_git(command, cancel).await?;
    let refs: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(sha, name)| (sha.trim(), name.trim()))
        .collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, n)| *n == name)
            .map(|(sha, _)| sha.to_string())
    };
    let tag = format!("refs/tags/{reference}");
    if let Some(peeled) = find(&format!("{tag}^{{}}")) {
        return Ok(peeled);
    }
    let (name, id) = match find(&tag) {
        Some(id) => (tag.clone(), id),
        None => {
            let branch = format!("refs/heads/{reference}");
            return find(&branch).or_else(|| find(reference)).ok_or_else(|| {
                ActionError::Git(format!(
                    "`{reference}` is neither a tag nor a branch of {}",
                    strip_credentials(repo)
                ))
            });
        }
    };
    // An annotated tag that the listing does not peel (bundles list tags
    // unpeeled): fetch it into a scratch repository and ask for its commit.
    // Those of processes that are gone (a crash, `kill -9`, `--chaos kill`
    // in the middle of a resolve) held what they fetched, and nothing else
    // removes them.
    super::remove_leftovers(&std::env::temp_dir(), SCRATCH_PREFIX, |rest| {
        rest.starts_with('-')
    });
    let guard = Scratch(std::env::temp_dir().join(format!(
        "{SCRATCH_PREFIX}{}-{}",
        std::process::id(),
        &id[..12.min(id.len())]
    )));
    let scratch = &guard.0;
    let _ = std::fs::remove_dir_all(scratch);
    async {
        let mut init = git().await;
        init.args(["init", "--quiet", "--bare"]).arg(scratch);
        run_git(init, cancel).await?;
        let mut fetch = git().await;
        fetch.arg("-C").arg(scratch).args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--",
            repo,
            &format!("+{name}:refs/phoenix/probe"),
        ]);
        run_git(fetch, cancel).await?;
        let mut parse = git().await;
        parse
            .arg("-C")
            .arg(scratch)
            .args(["rev-parse", "--verify", "refs/phoenix/probe^{commit}"]);
        Ok(run_git(parse, cancel).await?.trim().to_string())
    }
    .await
}

/// Where a scratch repository for resolving a tag is made, in the system's
/// temporary directory: the prefix, the process id, `-` and the tag's id.
const SCRATCH_PREFIX: &str = "phoenix-resolve-";

/// A scratch directory, removed when dropped: also when the resolve it
/// serves is dropped half-way (a timeout, Ctrl-C).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `dest` is a checkout of `commit` with no changes (submodules included).
async fn is_clean_checkout(dest: &Path, commit: &str) -> bool {
    if !dest.join(".git").exists() {
        return false;
    }
    let never = tokio_util::sync::CancellationToken::new();
    let mut head = git().await;
    head.arg("-C").arg(dest).args(["rev-parse", "HEAD"]);
    let Ok(head) = run_git(head, &never).await else {
        return false;
    };
    if head.trim() != commit {
        return false;
    }
    let mut status = git().await;
    status
        .arg("-C")
        .arg(dest)
        .args(["status", "--porcelain", "--ignore-submodules=none"]);
    matches!(run_git(status, &never).await, Ok(out) if out.trim().is_empty())
}

async fn checkout(
    repo: &str,
    reference: &str,
    commit: &str,
    temp: &Path,
    submodules: bool,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ActionError> {
    let mut clone = git().await;
    clone
        .args(["clone", "--quiet", "--no-checkout", "--", repo])
        .arg(temp);
    run_git(clone, cancel).await?;
    let checkout = || async {
        let mut checkout = git().await;
        checkout.arg("-C").arg(temp).args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            commit,
        ]);
        run_git(checkout, cancel).await
    };
    if checkout().await.is_err() {
        // The commit is no longer on any branch or tag (the tag moved away from
        // it): ask for it by id, then check out again.
        let mut fetch = git().await;
        fetch
            .arg("-C")
            .arg(temp)
            .args(["fetch", "--quiet", "origin", commit]);
        run_git(fetch, cancel).await.map_err(|e| {
            ActionError::Git(format!(
                "commit {commit} (from `{reference}`) is no longer in {}: {e}",
                strip_credentials(repo)
            ))
        })?;
        checkout().await?;
    }
    if submodules && temp.join(".gitmodules").exists() {
        let mut update = git().await;
        // Local paths and bundles are how offline rebuilds get their code.
        update.arg("-C").arg(temp).args([
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "--quiet",
            "update",
            "--init",
            "--recursive",
        ]);
        run_git(update, cancel).await?;
    }
    Ok(())
}
