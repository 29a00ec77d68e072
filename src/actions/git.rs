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
    let remote = Remote::new(&ctx.render(&spec.repo)?, &ctx.shared.plan.dir);
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
            let commit = resolve(&remote, &reference, &ctx.cancel).await?;
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
        &remote,
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

/// A repository as git is told of it. Credentials written into an http(s)
/// URL (`https://oauth2:TOKEN@host/repo`, often with a secret interpolated)
/// are taken out of it and given to git as an `Authorization` header for
/// that URL, in its environment (`GIT_CONFIG_COUNT`): a process's arguments
/// can be read by every user of the machine (`ps`), and a clone keeps its
/// URL in the checkout's `.git/config`, in the rebuilt configuration. A git
/// older than 2.31 (no `GIT_CONFIG_COUNT`) is given the URL as written, as
/// before: a rebuild on an old distribution must still fetch its config.
#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    /// A local path made absolute, or the URL without credentials.
    pub url: String,
    /// `(scheme://host/, Authorization: Basic …)`, from the credentials the
    /// URL had: for the whole host, as submodules given by a relative URL
    /// live beside the repository.
    header: Option<(String, String)>,
    /// The URL with its credentials, for a git that cannot take the header.
    written: String,
}

impl Remote {
    /// A local path relative to the plan's directory, or a URL.
    pub fn new(repo: &str, plan_dir: &Path) -> Remote {
        if !(repo.contains("://") || repo.contains('@') && repo.contains(':')) {
            let path = plan_dir.join(repo).display().to_string();
            return Remote {
                url: path.clone(),
                header: None,
                written: path,
            };
        }
        let plain = Remote {
            url: repo.to_string(),
            header: None,
            written: repo.to_string(),
        };
        let Some((scheme, rest)) = repo.split_once("://") else {
            return plain;
        };
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let (true, Some((userinfo, host))) = (
            matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"),
            authority.rsplit_once('@'),
        ) else {
            return plain;
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8_lossy()
                .into_owned()
        };
        // A user alone (a token as the user name) is sent with an empty
        // password, as git sends it when nothing gives one.
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let credentials = format!("{}:{}", decode(user), decode(password));
        use base64::Engine as _;
        Remote {
            url: format!("{scheme}://{host}{}", &rest[authority.len()..]),
            header: Some((
                format!("{scheme}://{host}/"),
                format!(
                    "Authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
            )),
            written: repo.to_string(),
        }
    }

    /// Gives `command` (a git that talks to this remote) its credentials,
    /// after any configuration the environment already passes the same way;
    /// the URL to name the remote by.
    async fn authorize(&self, command: &mut tokio::process::Command) -> &str {
        let Some((host, header)) = &self.header else {
            return &self.url;
        };
        if !takes_config_from_env().await {
            return &self.written;
        }
        let count: usize = std::env::var("GIT_CONFIG_COUNT")
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        command
            .env(
                format!("GIT_CONFIG_KEY_{count}"),
                format!("http.{host}.extraHeader"),
            )
            .env(format!("GIT_CONFIG_VALUE_{count}"), header)
            .env("GIT_CONFIG_COUNT", (count + 1).to_string());
        &self.url
    }
}

/// Whether this machine's git reads configuration from `GIT_CONFIG_COUNT`
/// (2.31 and later). Asked once.
async fn takes_config_from_env() -> bool {
    static TAKES: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *TAKES
        .get_or_init(|| async {
            let version = tokio::process::Command::new("git")
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            git_version_at_least(&version, (2, 31))
        })
        .await
}

/// Whether `git --version`'s answer (`git version 2.47.3`) is `least` or later.
fn git_version_at_least(answer: &str, least: (u32, u32)) -> bool {
    let mut numbers = answer
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    version >= least
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

/// [`git`] working in `repo` (`git -C REPO`).
async fn git_in(repo: &Path) -> tokio::process::Command {
    let mut command = git().await;
    command.arg("-C").arg(repo);
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

/// The commit `reference` names in `remote`: a full commit id as is; else a
/// tag (peeled), a branch, or a full ref name, as the repository lists them.
pub async fn resolve(
    remote: &Remote,
    reference: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<String, ActionError> {
    if is_full_commit(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    let mut command = git().await;
    let url = remote.authorize(&mut command).await;
    command.args(["ls-remote", "--", url]);
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
                    strip_credentials(&remote.url)
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
        let mut fetch = git_in(scratch).await;
        let url = remote.authorize(&mut fetch).await;
        fetch.args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--",
            url,
            &format!("+{name}:refs/phoenix/probe"),
        ]);
        run_git(fetch, cancel).await?;
        let mut parse = git_in(scratch).await;
        parse.args(["rev-parse", "--verify", "refs/phoenix/probe^{commit}"]);
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
    let mut head = git_in(dest).await;
    head.args(["rev-parse", "HEAD"]);
    let Ok(head) = run_git(head, &never).await else {
        return false;
    };
    if head.trim() != commit {
        return false;
    }
    let mut status = git_in(dest).await;
    status.args(["status", "--porcelain", "--ignore-submodules=none"]);
    matches!(run_git(status, &never).await, Ok(out) if out.trim().is_empty())
}

async fn checkout(
    remote: &Remote,
    reference: &str,
    commit: &str,
    temp: &Path,
    submodules: bool,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ActionError> {
    match shallow(remote, reference, commit, temp, cancel).await {
        Ok(()) => {}
        Err(ActionError::Interrupted) => return Err(ActionError::Interrupted),
        Err(_) => {
            let _ = std::fs::remove_dir_all(temp);
            whole(remote, reference, commit, temp, cancel).await?;
        }
    }
    if submodules && temp.join(".gitmodules").exists() {
        let mut update = git_in(temp).await;
        // Local paths and bundles are how offline rebuilds get their code.
        update.args([
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "--quiet",
            "update",
            "--init",
            "--recursive",
        ]);
        remote.authorize(&mut update).await;
        run_git(update, cancel).await?;
    }
    Ok(())
}

/// Checks out `commit` with only its own tree fetched (`--depth 1` of
/// `reference`): a configuration repository with years of history comes in
/// a moment instead of whole, and the rebuild's RTO does not grow with it.
/// It fails where that cannot be done: a remote that cannot fetch shallow (a
/// dumb HTTP server), or a `reference` that points elsewhere now (a tag
/// moved since the run froze its commit). The caller then clones whole.
async fn shallow(
    remote: &Remote,
    reference: &str,
    commit: &str,
    temp: &Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ActionError> {
    let mut init = git().await;
    init.args(["init", "--quiet"]).arg(temp);
    run_git(init, cancel).await?;
    // As a clone would name it: relative submodule URLs resolve against it.
    let mut add = git_in(temp).await;
    let url = remote.authorize(&mut add).await;
    add.args(["remote", "add", "origin", "--", url]);
    run_git(add, cancel).await?;
    let mut fetch = git_in(temp).await;
    remote.authorize(&mut fetch).await;
    fetch.args([
        "fetch",
        "--quiet",
        "--depth",
        "1",
        "--no-tags",
        "origin",
        reference,
    ]);
    run_git(fetch, cancel).await?;
    let mut parse = git_in(temp).await;
    parse.args(["rev-parse", "--verify", "FETCH_HEAD^{commit}"]);
    let fetched = run_git(parse, cancel).await?;
    if fetched.trim() != commit {
        return Err(ActionError::Git(format!(
            "`{reference}` is {} now, not {commit}",
            fetched.trim()
        )));
    }
    detach(temp, commit, cancel).await
}

/// `git checkout --detach COMMIT` in `repo`.
async fn detach(
    repo: &Path,
    commit: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ActionError> {
    let mut checkout = git_in(repo).await;
    checkout.args([
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--detach",
        commit,
    ]);
    run_git(checkout, cancel).await.map(drop)
}

/// Checks out `commit` from a whole clone: for the remotes [`shallow`]
/// cannot serve, and for a commit no ref points to any more.
async fn whole(
    remote: &Remote,
    reference: &str,
    commit: &str,
    temp: &Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ActionError> {
    let mut clone = git().await;
    let url = remote.authorize(&mut clone).await;
    clone
        .args(["clone", "--quiet", "--no-checkout", "--", url])
        .arg(temp);
    run_git(clone, cancel).await?;
    if detach(temp, commit, cancel).await.is_err() {
        // The commit is no longer on any branch or tag (the tag moved away from
        // it): ask for it by id, then check out again.
        let mut fetch = git_in(temp).await;
        fetch.args(["fetch", "--quiet", "origin", commit]);
        remote.authorize(&mut fetch).await;
        run_git(fetch, cancel).await.map_err(|e| {
            ActionError::Git(format!(
                "commit {commit} (from `{reference}`) is no longer in {}: {e}",
                strip_credentials(&remote.url)
            ))
        })?;
        detach(temp, commit, cancel).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL git is given, and the header's scope and value.
    fn split(repo: &str) -> (String, Option<(String, String)>) {
        let remote = Remote::new(repo, Path::new("/plans"));
        (remote.url, remote.header)
    }

    #[test]
    fn the_header_needs_git_2_31() {
        assert!(git_version_at_least("git version 2.47.3", (2, 31)));
        assert!(git_version_at_least(
            "git version 2.31.0.windows.1",
            (2, 31)
        ));
        assert!(git_version_at_least("git version 3.0.0", (2, 31)));
        assert!(!git_version_at_least("git version 2.30.2", (2, 31)));
        assert!(!git_version_at_least("not git", (2, 31)));
    }

    #[test]
    fn credentials_leave_an_http_url_for_a_header_on_its_host() {
        assert_eq!(
            split("https://oauth2:t%40k@git.example.com:8443/ops/config.git"),
            (
                "https://git.example.com:8443/ops/config.git".into(),
                Some((
                    "https://git.example.com:8443/".into(),
                    // base64 of `oauth2:t@k`
                    "Authorization: Basic b2F1dGgyOnRAaw==".into()
                ))
            )
        );
        // A token as the user name goes with an empty password.
        let (url, header) = split("https://TOKEN@github.com/o/r");
        assert_eq!(url, "https://github.com/o/r");
        assert_eq!(header.unwrap().1, "Authorization: Basic VE9LRU46");
    }

    #[test]
    fn other_repositories_are_left_as_written() {
        for repo in [
            "ssh://git@host/ops/config.git",
            "git@host:ops/config.git",
            "https://host/ops/a@b.git",
        ] {
            assert_eq!(split(repo), (repo.to_string(), None));
        }
        assert_eq!(
            split("demo/config.bundle"),
            ("/plans/demo/config.bundle".into(), None)
        );
    }
}
