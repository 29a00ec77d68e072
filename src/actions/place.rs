//! Putting what a step made in place: work in progress beside its `dest`
//! (or inside it, when `dest` is a mount point), moved in only once whole,
//! made durable before the step counts as done; and the leftovers of a
//! phoenix killed mid-step, removed.

use std::path::{Path, PathBuf};

use crate::exec::ActionError;

/// Makes a rename in `path`'s directory durable: the entry survives a power
/// loss, not only the file's data. A step counts as done once its finish
/// record is durable, and a resume does not run it again: what it put in
/// place must be durable by then as well.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Makes every file written under `tree` durable, data and entries: one
/// `syncfs` of its filesystem, where a checkout or an unpacked archive would
/// take an `fsync` for each of thousands of files and directories.
pub(crate) fn sync_tree(tree: &Path) -> std::io::Result<()> {
    // Any file of the filesystem will do: the tree's directory, or its
    // parent should an archive have made the tree's own unreadable.
    let dir = std::fs::File::open(tree)
        .or_else(|error| tree.parent().map_or(Err(error), std::fs::File::open))?;
    nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
}

/// Puts the tree at `temp` where `dest` is, made durable first (see
/// [`sync_tree`]): an atomic exchange when `dest` exists (a reader sees the
/// old tree or the new one, never a mix), then the old tree is removed.
///
/// When `temp` was made inside `dest` (a mount point, see [`beside`]), what
/// `dest` held is removed and the new tree's entries are moved up into it,
/// one by one: not atomic, so a crash part-way leaves the step in doubt, and
/// its next run makes the tree again.
pub(crate) fn replace_tree(temp: &Path, dest: &Path) -> Result<(), ActionError> {
    let io = |action: &'static str| {
        let path = dest.to_path_buf();
        move |source| ActionError::Io {
            action,
            path,
            source,
        }
    };
    sync_tree(temp).map_err(io("make durable the new tree of"))?;
    if temp.parent() == Some(dest) {
        return replace_contents(temp, dest).map_err(io("replace the contents of"));
    }
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

/// What a mount point keeps when a tree replaces its contents: the
/// filesystem's own `lost+found`.
const FILESYSTEM_OWN: &str = "lost+found";

/// The name work in progress has inside a mount point: `.phoenix-PID.SUFFIX`.
const INSIDE: &str = ".phoenix-";

/// Replaces what mount point `dest` holds with the entries of `temp`, a
/// directory inside it; then `dest` takes `temp`'s mode, owner and time (an
/// archive's top entry's, as when the tree is renamed into place).
fn replace_contents(temp: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(dest)? {
        let entry = entry?;
        let name = entry.file_name();
        let own = name.to_str().is_some_and(|n| n.starts_with(INSIDE));
        if own || name == FILESYSTEM_OWN {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    for entry in std::fs::read_dir(temp)? {
        let entry = entry?;
        let target = dest.join(entry.file_name());
        if entry.file_name() == FILESYSTEM_OWN && target.is_dir() {
            // The archive's copy of a filesystem's `lost+found`: this one's stays.
            continue;
        }
        std::fs::rename(entry.path(), target)?;
    }
    let top = std::fs::metadata(temp)?;
    std::os::unix::fs::lchown(dest, Some(top.uid()), Some(top.gid()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(top.mode() & 0o7777))?;
    if let Ok(modified) = top.modified() {
        let _ = std::fs::File::open(dest).and_then(|d| d.set_modified(modified));
    }
    std::fs::remove_dir_all(temp)?;
    std::fs::File::open(dest)?.sync_all()
}

/// Whether `dest` is a directory a filesystem is mounted on: a fresh volume
/// for the data, the usual place a restore goes. Work in progress beside it
/// would be written to the filesystem above (gigabytes on the root
/// filesystem), and a mount point cannot be renamed over.
pub(crate) fn is_mount_point(dest: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata(dest) else {
        return false;
    };
    if !own.is_dir() {
        return false;
    }
    // The kernel's table of mounts sees bind mounts too; without it, a
    // directory on another device than its parent, or the root.
    mount_root(dest).unwrap_or_else(|| {
        std::fs::metadata(dest.join(".."))
            .is_ok_and(|parent| parent.dev() != own.dev() || parent.ino() == own.ino())
    })
}

/// Whether `/proc/self/mountinfo` lists `path` as a mount point; `None`
/// where it cannot be read.
fn mount_root(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::fs::canonicalize(path).ok()?;
    let table = std::fs::read("/proc/self/mountinfo").ok()?;
    Some(table.split(|b| *b == b'\n').any(|line| {
        // The fifth field, with space, tab, newline and backslash as \ooo.
        line.split(|b| *b == b' ')
            .nth(4)
            .is_some_and(|point| unescape(point) == path.as_os_str().as_bytes())
    }))
}

/// `\040` and the like, as mountinfo writes them, back to their bytes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (field[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')),
                );
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// A path for work in progress on `dest`: beside it
/// (`.NAME.phoenix-PID.SUFFIX`, in the same directory so that the final move
/// is a rename), or inside it (`.phoenix-PID.SUFFIX`) when `dest` is a mount
/// point, so that the work is on `dest`'s filesystem; the directory is
/// created first.
pub(crate) fn beside(dest: &Path, suffix: &str) -> Result<PathBuf, ActionError> {
    let ending = format!(".{suffix}");
    if is_mount_point(dest) {
        // What replaces a mount point's contents would empty the machine.
        if std::fs::canonicalize(dest).is_ok_and(|d| d.parent().is_none()) {
            return Err(ActionError::Io {
                action: "put anything in place at",
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is the root of the machine's filesystem, whose contents a restore or checkout would replace; give a directory under it",
                ),
            });
        }
        remove_leftovers(dest, INSIDE, |rest| rest == ending);
        return Ok(dest.join(format!("{INSIDE}{}{ending}", std::process::id())));
    }
    let parent = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|source| ActionError::Io {
        action: "create",
        path: parent.clone(),
        source,
    })?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_leftovers(&parent, &format!(".{name}.phoenix-"), |rest| rest == ending);
    Ok(parent.join(format!(".{name}.phoenix-{}.{suffix}", std::process::id())))
}

/// Removes the work in progress that a Phoenix killed mid-step (a crash, a
/// lost machine's disk brought back, `--chaos kill`) left under the same
/// name with its own process id: its resume starts afresh under a new one,
/// and a partial download can be gigabytes. One whose process still lives
/// is left alone. The names are `PREFIX` `PID` and then what
/// `after_pid` accepts.
pub(crate) fn remove_leftovers(parent: &Path, prefix: &str, after_pid: impl Fn(&str) -> bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(br"/mnt/my\040disk"), b"/mnt/my disk");
        assert_eq!(unescape(br"/a\134b"), br"/a\b");
        assert_eq!(unescape(br"/plain\0"), br"/plain\0");
    }

    #[test]
    fn nothing_is_put_in_place_at_the_root() {
        let refused = crate::error_text(&beside(Path::new("/"), "unpack").unwrap_err());
        assert!(
            refused.contains("the root of the machine's filesystem"),
            "{refused}"
        );
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_plain_directory_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plain")).unwrap();
        assert!(!is_mount_point(&dir.path().join("plain")));
        assert!(!is_mount_point(&dir.path().join("missing")));
    }
}
