//! `restore`: bring a backup back from a store, verified.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;
use crate::stores::{ObjectInfo, Store};

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &[
    "store",
    "key",
    "prefix",
    "select",
    "match",
    "verify",
    "dest",
    "unpack",
    "owners",
    "max_age",
    "part_size",
    "parallelism",
];

/// Ranged GETs of 8 MiB, 4 at a time: enough to keep a link to S3 busy, and
/// memory stays near (parallelism + 2) x part size whatever the object's size.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_PARALLELISM: usize = 6;

/// Which object under a prefix is the backup to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    Latest,
    /// The newest backup written at or before this time: point-in-time recovery.
    Before(DateTime<Utc>),
}

#[derive(Clone, Debug)]
pub enum Source {
    Key(Spanned<String>),
    Prefix {
        prefix: Spanned<String>,
        select: Select,
        pattern: Option<Spanned<String>>,
    },
}

#[derive(Clone, Debug)]
pub struct RestoreSpec {
    pub store: Spanned<String>,
    pub source: Source,
    pub verify: bool,
    pub verify_span: Option<crate::plan::source::Span>,
    pub dest: Spanned<String>,
    pub unpack: bool,
    /// `owners`: whose the restored files are; unset, an archive's as root.
    pub owners: Option<OwnersSpec>,
    pub max_age: Option<Duration>,
    pub part_size: u64,
    pub parallelism: usize,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<RestoreSpec> {
    let store = fields.required_string("store", diags);
    let dest = fields.required_string("dest", diags);
    fields.exactly_one(&["key", "prefix"], diags);
    if fields.contains("key") {
        for key in ["select", "match"] {
            if fields.contains(key) {
                diags.error(
                    fields.source,
                    fields.key_span(key),
                    "exclusive",
                    format!(
                        "`{key}` in {} goes with `prefix`, not with `key`",
                        fields.what
                    ),
                );
            }
        }
    }
    let select = match fields.string("select", diags) {
        Some(text) => parse_select(&text).map_err(|message| {
            diags.error(
                fields.source,
                text.span,
                "select",
                format!("`select` in {}: {message}", fields.what),
            )
        }),
        None => Ok(Select::Latest),
    };
    let pattern = fields.string("match", diags);
    if let Some(pattern) = &pattern {
        if let Err(err) = globset::Glob::new(pattern) {
            diags.error(
                fields.source,
                pattern.span,
                "glob",
                format!(
                    "`match` in {}: invalid glob `{}`: {}",
                    fields.what,
                    pattern.value,
                    err.kind()
                ),
            );
        }
    }
    let verify = fields.choice("verify", &["sha256", "none"], diags);
    if let Some(verify) = &verify {
        if verify.value == "none" {
            diags.warning(
                fields.source,
                verify.span,
                "verify-none",
                format!(
                    "{} restores without verifying the backup's digest",
                    fields.what
                ),
            );
        }
    }
    let unpack = fields.choice("unpack", &["auto", "none"], diags);
    let owners = fields.string("owners", diags).and_then(|text| {
        let owners = OwnersSpec::parse(&text.value);
        if owners.is_none() {
            diags.error(
                fields.source,
                text.span,
                "invalid-value",
                format!(
                    "`owners` in {} must be `archive`, `self` or a user such as `postgres` or `postgres:postgres`, found `{}`",
                    fields.what, text.value
                ),
            );
        }
        owners
    });
    let max_age = fields.duration("max_age", diags).map(|d| d.value);
    let part_size = match fields.string("part_size", diags) {
        Some(text) => match crate::plan::fields::parse_size(&text) {
            Some(size) if (64 * 1024..=1024 * 1024 * 1024).contains(&size) => size,
            _ => {
                diags.error(
                    fields.source,
                    text.span,
                    "invalid-value",
                    format!("`part_size` in {} must be a size from 64KiB to 1GiB such as \"8MiB\", found `{}`", fields.what, text.value),
                );
                DEFAULT_PART_SIZE
            }
        },
        None => DEFAULT_PART_SIZE,
    };
    let parallelism = fields
        .integer("parallelism", 64, diags)
        .map(|p| p.value.max(1) as usize)
        .unwrap_or(DEFAULT_PARALLELISM);
    let source = match fields.string("key", diags) {
        Some(key) => Source::Key(key),
        None => Source::Prefix {
            prefix: fields.string("prefix", diags)?,
            select: select.ok()?,
            pattern,
        },
    };
    Some(RestoreSpec {
        store: store?,
        source,
        verify: verify.as_ref().map(|v| v.value == "sha256").unwrap_or(true),
        verify_span: verify.map(|v| v.span),
        dest: dest?,
        unpack: unpack.map(|u| u.value == "auto").unwrap_or(true),
        owners,
        max_age,
        part_size,
        parallelism,
    })
}

/// Why a backup named like a tar archive in a wrapping phoenix does not
/// unpack (`db.tar.lz4`, `db.tar.gz.gpg`) is refused under `unpack =
/// "auto"`, before a byte is fetched: written to `dest` as a file, it would
/// have the next step fail on a directory that is not there, or worse.
pub fn not_unpackable(spec: &RestoreSpec, key: &str) -> Option<String> {
    let wrapping = crate::unpack::Format::unknown_wrapping(key).filter(|_| spec.unpack)?;
    Some(format!(
        "`{key}` looks like a tar archive in `.{wrapping}`, which phoenix does not unpack (it unpacks {}); set `unpack = \"none\"` to restore it as a file and unpack it in a later step",
        crate::unpack::UNPACKED
    ))
}

/// Whose the restored files are, as the plan says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnersSpec {
    /// `archive`: an archive's entries' own (the default as root).
    Archive,
    /// `self`: the user phoenix runs as (the default for any other).
    Current,
    /// `USER` or `USER:GROUP` (names or numbers): everything restored,
    /// looked up when the step runs (an earlier step may make the user).
    Named { user: String, group: Option<String> },
}

impl OwnersSpec {
    fn parse(text: &str) -> Option<OwnersSpec> {
        let name = |n: &str| {
            n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        };
        match text {
            "archive" => Some(OwnersSpec::Archive),
            "self" => Some(OwnersSpec::Current),
            _ => {
                let (user, group) = match text.split_once(':') {
                    Some((user, group)) => (user, Some(group)),
                    None => (text, None),
                };
                (name(user) && group.is_none_or(name)).then(|| OwnersSpec::Named {
                    user: user.to_string(),
                    group: group.map(str::to_string),
                })
            }
        }
    }

    /// What the unpacking is told, users and groups looked up on this machine.
    fn resolve(&self) -> Result<crate::unpack::Owners, ActionError> {
        use crate::unpack::Owners;
        let (user, group) = match self {
            OwnersSpec::Archive => return Ok(Owners::Archive),
            OwnersSpec::Current => return Ok(Owners::Current),
            OwnersSpec::Named { user, group } => (user, group),
        };
        let missing = |what: &str, name: &str| {
            ActionError::Restore(format!(
                "`owners`: there is no {what} `{name}` on this machine (an earlier step may make it: `needs` that step)"
            ))
        };
        let (uid, primary) = match (crate::unpack::user(user), user.parse::<u32>()) {
            (Some((uid, gid)), _) => (uid, Some(gid)),
            (None, Ok(uid)) => (uid, None),
            (None, Err(_)) => return Err(missing("user", user)),
        };
        let gid = match group {
            Some(group) => match (crate::unpack::group(group), group.parse::<u32>()) {
                (Some(gid), _) | (None, Ok(gid)) => gid,
                (None, Err(_)) => return Err(missing("group", group)),
            },
            None => primary.unwrap_or(uid),
        };
        Ok(Owners::Given { uid, gid })
    }
}

/// `latest` or `before:RFC3339`.
pub fn parse_select(text: &str) -> Result<Select, String> {
    if text == "latest" {
        return Ok(Select::Latest);
    }
    if let Some(time) = text.strip_prefix("before:") {
        return DateTime::parse_from_rfc3339(time)
            .map(|t| Select::Before(t.with_timezone(&Utc)))
            .map_err(|e| format!("`{time}` is not an RFC 3339 time ({e}); write e.g. `before:2026-11-26T00:00:00Z`"));
    }
    Err(format!(
        "expected `latest` or `before:TIME`, found `{text}`"
    ))
}

/// The object a restore step would pick now, and why any other was not.
pub async fn choose(store: &Store, source: &ResolvedSource) -> Result<ObjectInfo, ActionError> {
    let restore_error = |message: String| ActionError::Restore(message);
    match source {
        ResolvedSource::Key(key) => store
            .head(key)
            .await
            .map_err(ActionError::Store)?
            .ok_or_else(|| restore_error(format!("no backup `{key}` in {}", store.describe()))),
        ResolvedSource::Prefix {
            prefix,
            select,
            pattern,
        } => {
            let matcher = match pattern {
                Some(glob) => Some(
                    globset::Glob::new(glob)
                        .map_err(|e| restore_error(format!("invalid glob `{glob}`: {e}")))?
                        .compile_matcher(),
                ),
                None => None,
            };
            let candidates = store.list(prefix).await.map_err(ActionError::Store)?;
            let mut eligible: Vec<&ObjectInfo> = candidates
                .iter()
                .filter(|o| !o.key.ends_with(".sha256"))
                .filter(|o| {
                    let name = o.key.rsplit('/').next().unwrap_or(&o.key);
                    matcher.as_ref().is_none_or(|m| m.is_match(name))
                })
                .filter(|o| match select {
                    Select::Latest => true,
                    Select::Before(time) => o.last_modified <= *time,
                })
                .collect();
            eligible.sort_by(|a, b| {
                a.last_modified
                    .cmp(&b.last_modified)
                    .then(a.key.cmp(&b.key))
            });
            let chosen = eligible.pop().ok_or_else(|| {
                let when = match select {
                    Select::Latest => String::new(),
                    Select::Before(time) => format!(" written before {}", time.to_rfc3339()),
                };
                let glob = pattern
                    .as_ref()
                    .map(|p| format!(" matching `{p}`"))
                    .unwrap_or_default();
                restore_error(format!(
                    "no backup under `{prefix}`{glob}{when} in {}",
                    store.describe()
                ))
            })?;
            // Listings may omit metadata: ask for the object itself.
            Ok(store
                .head(&chosen.key)
                .await
                .map_err(ActionError::Store)?
                .unwrap_or_else(|| chosen.clone()))
        }
    }
}

/// A step's source with its `{{ }}` rendered.
pub enum ResolvedSource {
    Key(String),
    Prefix {
        prefix: String,
        select: Select,
        pattern: Option<String>,
    },
}

pub fn resolve_source(
    source: &Source,
    render: impl Fn(&Spanned<String>) -> Result<String, ActionError>,
) -> Result<ResolvedSource, ActionError> {
    Ok(match source {
        Source::Key(key) => ResolvedSource::Key(render(key)?),
        Source::Prefix {
            prefix,
            select,
            pattern,
        } => ResolvedSource::Prefix {
            prefix: render(prefix)?,
            select: select.clone(),
            pattern: pattern.as_ref().map(&render).transpose()?,
        },
    })
}

/// The digest a backup must have: its `.sha256` sidecar (first word), else its
/// `sha256` metadata.
pub async fn expected_digest(
    store: &Store,
    object: &ObjectInfo,
) -> Result<Option<(String, &'static str)>, ActionError> {
    if let Some(bytes) = store
        .read_small(&format!("{}.sha256", object.key))
        .await
        .map_err(ActionError::Store)?
    {
        let text = String::from_utf8_lossy(&bytes);
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Some((word, "sidecar")));
        }
        return Err(ActionError::Restore(format!(
            "`{}.sha256` does not start with a SHA-256 hex digest",
            object.key
        )));
    }
    Ok(object.sha256.clone().map(|d| (d, "metadata")))
}

/// The backup's age when it was chosen.
pub fn age(object: &ObjectInfo, at: DateTime<Utc>) -> Duration {
    (at - object.last_modified).to_std().unwrap_or_default()
}

fn frozen_object(
    values: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Option<(ObjectInfo, f64)> {
    let text = |k: &str| values.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Some((
        ObjectInfo {
            key: text("key")?,
            size: values.get("size")?.as_u64()?,
            last_modified: DateTime::parse_from_rfc3339(&text("last_modified")?)
                .ok()?
                .with_timezone(&Utc),
            version: text("version"),
            sha256: text("sha256_metadata"),
        },
        values.get("age_seconds")?.as_f64()?,
    ))
}

/// The backup a run chose when the step first ran, which a resume restores
/// again, must still be there as it was. Said plainly here, before its
/// digest is looked for: a retention rule that deleted it took its sidecar
/// too, and "no digest" would send the operator the wrong way.
async fn still_there(
    store: &Store,
    chosen: &ObjectInfo,
    store_name: &str,
) -> Result<(), ActionError> {
    let why = match store.head(&chosen.key).await.map_err(ActionError::Store)? {
        None => "is no longer there (deleted since: a retention rule?)",
        Some(now)
            if now.version.is_some()
                && chosen.version.is_some()
                && now.version != chosen.version =>
        {
            "has changed since (written over)"
        }
        Some(_) => return Ok(()),
    };
    Err(ActionError::Restore(format!(
        "the backup this run chose when the step first ran, `{}` in store `{store_name}`, {why}; a resume restores only the backup its run chose, so that every step sees the same data. To restore another, start a new run, or change this step in the plan (a changed step chooses again)",
        chosen.key
    )))
}

/// Chooses the backup (or takes the one frozen on the first run), checks its
/// age and digest, downloads it in parallel ranged parts beside `dest` while
/// hashing, and moves it (or the tree unpacked from it) into place only once
/// the digest matched.
pub async fn run(spec: &RestoreSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let plan = &ctx.shared.plan;
    let definition = plan
        .stores
        .get(spec.store.as_str())
        .ok_or_else(|| ActionError::Restore(format!("no store `{}`", spec.store.value)))?;
    let store = Store::open(definition, &plan.dir, |t| {
        crate::plan::interpolate::render(t, &ctx.context)
    })
    .await
    .map_err(ActionError::Render)?;
    let (object, age_seconds) = match ctx.frozen().as_ref().and_then(frozen_object) {
        Some(frozen) => {
            still_there(&store, &frozen.0, &spec.store.value).await?;
            frozen
        }
        None => {
            let source = resolve_source(&spec.source, |t| ctx.render(t))?;
            let object = choose(&store, &source).await?;
            let age_seconds = age(&object, Utc::now()).as_secs_f64();
            if let Some(limit) = spec.max_age.or(plan.rpo.as_ref().map(|r| r.value)) {
                if age_seconds > limit.as_secs_f64() {
                    return Err(ActionError::Restore(format!(
                        "the newest eligible backup `{}` is {} old, older than the {} allowed (max_age, else the plan's rpo)",
                        object.key,
                        crate::report::markdown::duration(age_seconds.round()),
                        humantime::format_duration(limit)
                    )));
                }
            }
            let mut values = std::collections::BTreeMap::new();
            values.insert("key".into(), object.key.clone().into());
            values.insert("size".into(), object.size.into());
            values.insert(
                "last_modified".into(),
                object.last_modified.to_rfc3339().into(),
            );
            values.insert("age_seconds".into(), age_seconds.into());
            if let Some(version) = &object.version {
                values.insert("version".into(), version.clone().into());
            }
            if let Some(digest) = &object.sha256 {
                values.insert("sha256_metadata".into(), digest.clone().into());
            }
            ctx.freeze(values).await?;
            (object, age_seconds)
        }
    };
    let expected = if spec.verify {
        Some(expected_digest(&store, &object).await?.ok_or_else(|| {
            ActionError::Restore(format!(
                "no digest for `{}`: neither a `{}.sha256` sidecar nor `sha256` metadata (set `verify = \"none\"` to restore unverified)",
                object.key, object.key
            ))
        })?)
    } else {
        None
    };

    if let Some(problem) = not_unpackable(spec, &object.key) {
        return Err(ActionError::Restore(problem));
    }
    // Before a byte is fetched: a user that is not there fails at once.
    let owners = spec.owners.as_ref().map(OwnersSpec::resolve).transpose()?;
    let dest = ctx.path(&spec.dest)?;
    let download = super::beside(&dest, "download")?;
    let result = async {
        let digest = transfer(&store, &object, &download, spec, ctx).await?;
        if let Some((expected, from)) = &expected {
            if *expected != digest {
                return Err(ActionError::Restore(format!(
                    "`{}` has SHA-256 {digest}, but its {from} says {expected}: the backup is damaged or not the one described; nothing was written to `{}`",
                    object.key,
                    dest.display()
                )));
            }
        }
        let format = if spec.unpack { crate::unpack::Format::of(&object.key) } else { None };
        match format {
            Some(format) => {
                let tree = super::beside(&dest, "unpack")?;
                let _ = std::fs::remove_dir_all(&tree);
                std::fs::create_dir(&tree).map_err(|source| ActionError::Io { action: "create", path: tree.clone(), source })?;
                let (archive, into) = (download.clone(), tree.clone());
                let owners = owners.unwrap_or_else(crate::unpack::Owners::by_default);
                let unpacked = tokio::task::spawn_blocking(move || crate::unpack::unpack(&archive, format, &into, owners))
                    .await
                    .map_err(|e| ActionError::Restore(e.to_string()))?;
                if let Err(error) = unpacked {
                    let _ = std::fs::remove_dir_all(&tree);
                    return Err(ActionError::Unpack(error));
                }
                let swapped = super::replace_tree(&tree, &dest);
                if swapped.is_err() {
                    let _ = std::fs::remove_dir_all(&tree);
                }
                swapped?;
            }
            None => {
                if dest.is_dir() {
                    return Err(ActionError::Restore(format!("`{}` is a directory; `{}` is not an archive to unpack into it", dest.display(), object.key)));
                }
                if let Some(crate::unpack::Owners::Given { uid, gid }) = owners {
                    std::os::unix::fs::lchown(&download, Some(uid), Some(gid)).map_err(|source| ActionError::Io { action: "give its owner to", path: dest.clone(), source })?;
                }
                std::fs::rename(&download, &dest).map_err(|source| ActionError::Io { action: "move into place", path: dest.clone(), source })?;
                super::sync_parent(&dest).map_err(|source| ActionError::Io { action: "make durable the move of", path: dest.clone(), source })?;
            }
        }
        Ok(digest)
    }
    .await;
    let _ = std::fs::remove_file(&download);
    let digest = result?;
    Ok(Outputs::from([
        ("key".to_string(), object.key.clone()),
        ("size".to_string(), object.size.to_string()),
        ("sha256".to_string(), digest),
        (
            "last_modified".to_string(),
            object.last_modified.to_rfc3339(),
        ),
        ("age_seconds".to_string(), format!("{age_seconds:.0}")),
    ]))
}

/// Downloads `object` to `path` in ranged parts, `parallelism` at a time, each
/// retried alone on a transient failure; the parts are hashed and written in
/// order by one blocking thread as they arrive. Returns the SHA-256.
async fn transfer(
    store: &Store,
    object: &ObjectInfo,
    path: &std::path::Path,
    spec: &RestoreSpec,
    ctx: &StepContext<'_>,
) -> Result<String, ActionError> {
    use futures_util::StreamExt;
    let part_size = spec.part_size;
    let parts = object.size.div_ceil(part_size).max(1);
    let file = crate::journal::local::create_private(path).map_err(|source| ActionError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })?;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<bytes::Bytes>>(2);
    let writer_path = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<String, ActionError> {
        use sha2::Digest;
        let mut file = file;
        let mut hasher = sha2::Sha256::new();
        let io = |action: &'static str| {
            let path = writer_path.clone();
            move |source| ActionError::Io {
                action,
                path,
                source,
            }
        };
        // A second handle syncs what is written so far in the background, so
        // the disk writes while the rest downloads and the last sync is short.
        let flusher = Flusher::start(file.try_clone().map_err(io("open"))?);
        for part in receiver {
            // Hashed as the chunks lie, written with vectored writes: the bytes
            // are copied once, by the kernel, into the page cache.
            for chunk in &part {
                hasher.update(chunk);
            }
            write_chunks(&mut file, &part).map_err(io("write"))?;
            flusher.wrote(part.iter().map(|c| c.len() as u64).sum());
        }
        flusher.finish().map_err(io("sync"))?;
        file.sync_all().map_err(io("sync"))?;
        Ok(crate::plan::validate::hex(&hasher.finalize()))
    });
    let started = tokio::time::Instant::now();
    let mut done: u64 = 0;
    let mut fetches = futures_util::stream::iter(0..parts)
        .map(|n| {
            let start = n * part_size;
            let end = (start + part_size).min(object.size);
            fetch_part(store, object, start, end, &ctx.cancel)
        })
        .buffered(spec.parallelism);
    let mut failure = None;
    while let Some(part) = fetches.next().await {
        match part {
            Ok(chunks) => {
                done += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
                if sender.send(chunks).is_err() {
                    break;
                }
                ctx.shared.events.emit(crate::exec::Event::Progress {
                    step: ctx.step.id.value.clone(),
                    done,
                    total: object.size,
                    elapsed: started.elapsed(),
                });
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    drop(fetches);
    drop(sender);
    let digest = writer
        .await
        .map_err(|e| ActionError::Restore(e.to_string()))?;
    match failure {
        Some(error) => Err(error),
        None => digest,
    }
}

/// Syncs a file being written from a thread of its own, once every
/// [`Flusher::EVERY`] bytes written: the page cache never holds much unsynced
/// data, and the final sync of a large restore has little left to do.
struct Flusher {
    sender: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    unsynced: std::cell::Cell<u64>,
}

impl Flusher {
    const EVERY: u64 = 64 * 1024 * 1024;

    fn start(file: std::fs::File) -> Flusher {
        // Capacity 1: requests made while a sync runs fold into the next one.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("restore-sync".into())
            .spawn(move || {
                for () in receiver {
                    file.sync_data()?;
                }
                Ok(())
            })
            .ok();
        Flusher {
            sender: Some(sender),
            thread,
            unsynced: std::cell::Cell::new(0),
        }
    }

    fn wrote(&self, bytes: u64) {
        let unsynced = self.unsynced.get() + bytes;
        if unsynced < Self::EVERY {
            self.unsynced.set(unsynced);
            return;
        }
        self.unsynced.set(0);
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(());
        }
    }

    /// Waits for the sync in progress; an error from any sync is returned.
    fn finish(mut self) -> std::io::Result<()> {
        drop(self.sender.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the sync thread panicked")),
            None => Ok(()),
        }
    }
}

/// Writes every chunk, in order, with as few `writev` calls as it takes.
fn write_chunks(file: &mut std::fs::File, chunks: &[bytes::Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| IoSlice::new(c))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        // The kernel takes at most IOV_MAX (1024) slices a call.
        let batch = rest.len().min(1024);
        let written = file.write_vectored(&rest[..batch])?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

/// How long one part may take before it counts as stalled and is tried again:
/// `PHOENIX_PART_TIMEOUT` (a duration), else 60s.
fn part_timeout() -> Duration {
    crate::settings::part_timeout()
}

/// One part, retried alone (up to 5 attempts, backing off) when the failure
/// may pass: a 5xx, a timeout, a reset connection, a short body.
async fn fetch_part(
    store: &Store,
    object: &ObjectInfo,
    start: u64,
    end: u64,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<bytes::Bytes>, ActionError> {
    let mut attempt = 0;
    let limit = part_timeout();
    loop {
        attempt += 1;
        let result = tokio::select! {
            result = tokio::time::timeout(limit, store.read_range(object, start, end)) => result.unwrap_or_else(|_| Err(crate::stores::StoreError::Stalled {
                key: object.key.clone(),
                offset: start,
                after: limit,
            })),
            _ = cancel.cancelled() => return Err(ActionError::Interrupted),
        };
        match result {
            Ok(bytes) => return Ok(bytes),
            Err(error) if error.is_transient() && attempt < 5 => {
                tokio::time::sleep(crate::exec::attempt::backoff(
                    Duration::from_millis(200),
                    attempt - 1,
                ))
                .await;
            }
            Err(error) => return Err(ActionError::Store(error)),
        }
    }
}
