//! Unpacking restored archives (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`) into a
//! directory, refusing anything that would land outside it.
//!
//! The `tar` crate reads entries; phoenix writes them itself. Every entry is
//! checked first: no absolute paths, no `..`, no device files or FIFOs, no
//! link whose target leaves the directory, and no write through a symbolic
//! link (every parent of a target must be a real directory, and an existing
//! target is never followed). Files are created with `O_NOFOLLOW`-like
//! semantics (new files only); setuid and setgid bits are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry `{entry}`: {reason}")]
    Refused { entry: String, reason: &'static str },
    #[error("archive entry `{entry}`: cannot write `{path}`")]
    Write {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive entry `{entry}`: cannot give it its owner, user {uid} and group {gid} (as a user other than root, or where those ids are not mapped, `owners = \"self\"` restores without them)")]
    Owner {
        entry: String,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
}

/// Whose an unpacked archive's files are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owners {
    /// The archive's: by user and group name where this machine knows the
    /// name, else by number. GNU tar's way as root: a service's data
    /// directory (PostgreSQL's) must be its user's, or it will not start.
    Archive,
    /// The user phoenix runs as: GNU tar's way for any other user.
    Current,
    /// One user and group for every entry (`owners = "postgres"`).
    Given { uid: u32, gid: u32 },
}

impl Owners {
    /// [`Owners::Archive`] as root, else [`Owners::Current`].
    pub fn by_default() -> Owners {
        if nix::unistd::geteuid().is_root() {
            Owners::Archive
        } else {
            Owners::Current
        }
    }
}

/// The archive kinds phoenix unpacks, by file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    TarZst,
    TarXz,
    TarBz2,
}

/// Every name ending [`Format::of`] knows, for messages.
pub const UNPACKED: &str = ".tar, .tar.gz/.tgz, .tar.zst, .tar.xz/.txz, .tar.bz2/.tbz2";

impl Format {
    pub fn of(name: &str) -> Option<Format> {
        let name = name.to_ascii_lowercase();
        let ends = |endings: &[&str]| endings.iter().any(|e| name.ends_with(e));
        if ends(&[".tar"]) {
            Some(Format::Tar)
        } else if ends(&[".tar.gz", ".tgz"]) {
            Some(Format::TarGz)
        } else if ends(&[".tar.zst", ".tar.zstd"]) {
            Some(Format::TarZst)
        } else if ends(&[".tar.xz", ".txz"]) {
            Some(Format::TarXz)
        } else if ends(&[".tar.bz2", ".tbz2", ".tbz"]) {
            Some(Format::TarBz2)
        } else {
            None
        }
    }

    /// What a name such as `db.tar.lz4` or `db.tar.gz.gpg` is wrapped in: a
    /// tar archive compressed or encrypted in a way phoenix cannot unpack,
    /// which `unpack = "auto"` would otherwise write to `dest` as a file
    /// without a word. Only known wrappings count: `db.tar.zst.raw` is a
    /// name of the plan's own choosing, and stays a file.
    pub fn unknown_wrapping(name: &str) -> Option<String> {
        const WRAPPINGS: &[&str] = &[
            "gz", "zst", "zstd", "xz", "bz2", "lz4", "lz", "lzma", "lzo", "z", "sz", "br", "gpg",
            "pgp", "asc", "age", "enc", "aes",
        ];
        let lower = name.to_ascii_lowercase();
        let file = lower.rsplit('/').next().unwrap_or(&lower);
        if Format::of(file).is_some() {
            return None;
        }
        let (_, after) = file.rsplit_once(".tar.")?;
        after
            .split('.')
            .all(|part| WRAPPINGS.contains(&part))
            .then(|| after.to_string())
    }
}

/// xz's dictionary can be 1.5 GiB; as for zstd's window, a bound on what a
/// hostile archive can make us allocate (`xz -9` needs 65 MiB to unpack).
const XZ_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// zstd frames may ask for a window of up to 2 GiB; 128 MiB is plenty for
/// backups and bounds the memory a hostile archive can make us allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Unpacks `archive` into `dest`, which must be an empty directory; the
/// archive's own entry for its top (`./`) gives `dest` its mode, time and
/// owner, as GNU tar does.
pub fn unpack(
    archive: &Path,
    format: Format,
    dest: &Path,
    owners: Owners,
) -> Result<usize, UnpackError> {
    let file = File::open(archive).map_err(UnpackError::Read)?;
    let reader = io::BufReader::with_capacity(256 * 1024, file);
    match format {
        Format::Tar => extract(reader, dest, owners),
        Format::TarGz => extract(flate2::read::MultiGzDecoder::new(reader), dest, owners),
        Format::TarZst => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(reader).map_err(UnpackError::Read)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(UnpackError::Read)?;
            extract(decoder, dest, owners)
        }
        Format::TarXz => {
            // Concatenated streams, as `pxz` and `xz -T` may write them.
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| UnpackError::Read(e.into()))?;
            extract(
                liblzma::read::XzDecoder::new_stream(reader, stream),
                dest,
                owners,
            )
        }
        Format::TarBz2 => extract(bzip2::read::MultiBzDecoder::new(reader), dest, owners),
    }
}

/// The entry's path as components inside the archive root, or why not.
fn relative_path(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Resolves `target` (a link's target, relative to `base` inside the root)
/// lexically; `None` when it climbs out of the root.
fn resolve_inside(base: &Path, target: &Path) -> Option<PathBuf> {
    if target.is_absolute() {
        return None;
    }
    let mut parts: Vec<std::ffi::OsString> = base
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for component in target.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Refuses a target with a symbolic link anywhere on its way, so nothing is
/// written through one.
fn check_parents(dest: &Path, relative: &Path) -> Result<(), &'static str> {
    let mut at = dest.to_path_buf();
    let count = relative.components().count();
    for (n, component) in relative.components().enumerate() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(if n + 1 == count {
                    "would replace a symbolic link"
                } else {
                    "would be written through a symbolic link"
                });
            }
            Ok(meta) if n + 1 < count && !meta.is_dir() => {
                return Err("has a parent that is not a directory")
            }
            _ => {}
        }
    }
    Ok(())
}

/// The user and group ids an archive's names stand for on this machine,
/// each name looked up once.
#[derive(Default)]
struct Ids {
    users: std::collections::HashMap<String, Option<u32>>,
    groups: std::collections::HashMap<String, Option<u32>>,
}

impl Ids {
    /// `(uid, gid)` for an entry: its user's and group's names where this
    /// machine has them (the ids of a rebuilt machine's `postgres` user may
    /// differ from the old one's), else the numbers in the archive.
    fn of(&mut self, header: &tar::Header) -> (u32, u32) {
        let number =
            |id: io::Result<u64>| id.ok().and_then(|id| u32::try_from(id).ok()).unwrap_or(0);
        let by_name = |names: &mut std::collections::HashMap<String, Option<u32>>,
                       name: Option<&str>,
                       look_up: fn(&str) -> Option<u32>| {
            let name = name.filter(|n| !n.is_empty())?;
            *names
                .entry(name.to_string())
                .or_insert_with(|| look_up(name))
        };
        let uid = by_name(&mut self.users, header.username().ok().flatten(), |name| {
            user(name).map(|(uid, _)| uid)
        })
        .unwrap_or_else(|| number(header.uid()));
        let gid = by_name(&mut self.groups, header.groupname().ok().flatten(), group)
            .unwrap_or_else(|| number(header.gid()));
        (uid, gid)
    }
}

/// User `name`'s id and primary group's id on this machine.
pub fn user(name: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Group `name`'s id on this machine.
pub fn group(name: &str) -> Option<u32> {
    let group = nix::unistd::Group::from_name(name).ok().flatten()?;
    Some(group.gid.as_raw())
}

fn extract(reader: impl Read, dest: &Path, owners: Owners) -> Result<usize, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut ids = (owners == Owners::Archive).then(Ids::default);
    let given = match owners {
        Owners::Given { uid, gid } => Some((uid, gid)),
        _ => None,
    };
    let mut count = 0;
    let mut directories = Vec::new();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let name = raw.display().to_string();
        let refuse = |reason: &'static str| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let relative = relative_path(&raw).map_err(refuse)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777; // no setuid, no setgid
                                                                    // Whose the entry is to be, when the archive says: `None` keeps the
                                                                    // user phoenix runs as.
        let owner = given.or_else(|| ids.as_mut().map(|ids| ids.of(entry.header())));
        // `lchown`: a link's own owner; the same as `chown` for anything else.
        let give = |path: &Path| match owner {
            Some((uid, gid)) => {
                std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| {
                    UnpackError::Owner {
                        entry: name.clone(),
                        uid,
                        gid,
                        source,
                    }
                })
            }
            None => Ok(()),
        };
        if relative.as_os_str().is_empty() {
            // `./` itself: `dest`, which takes its mode, time and owner.
            if kind.is_dir() {
                give(dest)?;
                directories.push((dest.to_path_buf(), mode, entry.header().mtime().ok()));
            }
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() {
            return Err(refuse("is a device file"));
        }
        if kind.is_fifo() {
            return Err(refuse("is a FIFO"));
        }
        check_parents(dest, &relative).map_err(refuse)?;
        let target = dest.join(&relative);
        let write_error = |source: io::Error| UnpackError::Write {
            entry: name.clone(),
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(write_error)?;
        }
        if kind.is_dir() {
            match fs::create_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => return Err(write_error(e)),
            }
            give(&target)?;
            directories.push((target.clone(), mode, entry.header().mtime().ok()));
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| refuse("is a link without a target"))?;
            let base = relative.parent().unwrap_or(Path::new(""));
            if resolve_inside(base, &link).is_none() {
                return Err(refuse(
                    "is a symbolic link that points outside the destination",
                ));
            }
            std::os::unix::fs::symlink(&*link, &target).map_err(write_error)?;
            give(&target)?;
            links.push((name.clone(), target.clone()));
        } else if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| refuse("is a link without a target"))?;
            let source_relative = relative_path(&link)
                .map_err(|_| refuse("is a hard link that points outside the destination"))?;
            check_parents(dest, &source_relative)
                .map_err(|_| refuse("is a hard link through a symbolic link"))?;
            let source = dest.join(&source_relative);
            match fs::symlink_metadata(&source) {
                Ok(meta) if meta.is_file() => {}
                _ => {
                    return Err(refuse(
                        "is a hard link to something that is not a file in the archive",
                    ))
                }
            }
            fs::hard_link(&source, &target).map_err(write_error)?;
        } else if kind.is_file()
            || kind == tar::EntryType::Continuous
            || kind == tar::EntryType::GNUSparse
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(write_error)?;
            io::copy(&mut entry, &mut file).map_err(write_error)?;
            // Before the mode: a change of owner would clear its setuid
            // and setgid bits, were they kept.
            give(&target)?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(write_error)?;
            if let Ok(mtime) = entry.header().mtime() {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                let _ = file.set_modified(time);
            }
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(refuse("has an entry type phoenix does not unpack"));
        }
        count += 1;
    }
    // Each link was checked alone; together, one may lead another out (`b -> a/..`
    // after `a -> .`). Resolve every link as the filesystem would.
    let root = fs::canonicalize(dest).map_err(UnpackError::Read)?;
    for (entry, link) in &links {
        if !resolves_inside(&root, link) {
            return Err(UnpackError::Refused {
                entry: entry.clone(),
                reason:
                    "is a symbolic link that leads outside the destination through another link",
            });
        }
    }
    // Directory modes and times last: a read-only directory must not stop the
    // files inside it from being written.
    for (dir, mode, mtime) in directories.into_iter().rev() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode));
        if let Some(mtime) = mtime {
            if let Ok(handle) = File::open(&dir) {
                let _ = handle
                    .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
            }
        }
    }
    Ok(count)
}

/// Whether `link` resolves inside `root`, following every link on its way; for
/// a dangling link, its longest existing prefix is resolved and the rest must
/// not climb.
fn resolves_inside(root: &Path, link: &Path) -> bool {
    let Ok(target) = fs::read_link(link) else {
        return false;
    };
    let full = link.parent().unwrap_or(root).join(target);
    let mut existing = full.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = fs::canonicalize(&existing) {
            if rest.iter().any(|c: &std::ffi::OsString| c == "..") {
                return false;
            }
            return canonical.starts_with(root);
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_resolution_stays_inside() {
        assert_eq!(
            resolve_inside(Path::new("a/b"), Path::new("../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(resolve_inside(Path::new("a"), Path::new("../../etc")), None);
        assert_eq!(
            resolve_inside(Path::new(""), Path::new("/etc/passwd")),
            None
        );
        assert_eq!(relative_path(Path::new("./x/../y")), Err("contains `..`"));
        assert_eq!(relative_path(Path::new("/abs")), Err("is an absolute path"));
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::of("db.tar.zst"), Some(Format::TarZst));
        assert_eq!(Format::of("db.TGZ"), Some(Format::TarGz));
        assert_eq!(Format::of("db.dump"), None);
        assert_eq!(Format::of("db.tar.xz"), Some(Format::TarXz));
        assert_eq!(Format::of("db.txz"), Some(Format::TarXz));
        assert_eq!(Format::of("db.tar.bz2"), Some(Format::TarBz2));
        assert_eq!(
            Format::unknown_wrapping("nightly/db.tar.lz4").as_deref(),
            Some("lz4")
        );
        assert_eq!(
            Format::unknown_wrapping("db.tar.gz.gpg").as_deref(),
            Some("gz.gpg")
        );
        assert_eq!(Format::unknown_wrapping("db.tar.gz"), None);
        assert_eq!(Format::unknown_wrapping("db.dump"), None);
        assert_eq!(Format::unknown_wrapping("my.tarball/db.dump"), None);
        assert_eq!(Format::unknown_wrapping("base.tar.zst.raw"), None);
    }
}
