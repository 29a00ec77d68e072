//! Which command steps wrote their `PHOENIX_OUTPUT` file, told by the kernel
//! instead of found out by opening every step's file after it exits.
//!
//! Most steps write no outputs, and opening a file that is not there is a
//! failed lookup of a name never seen before: the filesystem is searched and
//! a negative dentry allocated, a few microseconds each time: 6% of the
//! executor thread's time on 10,000 short steps. Here one inotify
//! watch on the run's `tmp` directory reports every name made there
//! (created, linked or renamed in); after a step's process has exited, the
//! events are read (one non-blocking `read`, which finds nothing for most
//! steps) and the file is opened only if its name was among them.
//!
//! A file made by a process is reported before the call that made it returns,
//! so by the time the step's process is reaped, its file's event is queued.
//! Files already there when the watch begins count as made (a run empties the
//! directory before, so there should be none).
//! Whenever the watch cannot be sure (no inotify, the event queue overflowed,
//! the directory was removed or moved, too many names never read), every file
//! is opened, as without a watch. So it is when the directory is on a
//! filesystem another machine may write to (NFS, SMB, FUSE, anything not on
//! the list of local ones): inotify reports only what this machine's calls
//! made, and a step may write its outputs through `ssh` to a shared state.
//! And so it is for a run's last few dozen steps (`OutputFiles::stop`).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Names made in the directory and not yet taken: past this, the watch stops
/// keeping them and every file is opened (something other than steps' output
/// files is filling the directory).
const MAX_UNTAKEN: usize = 4096;

/// The watch on one run's `PHOENIX_OUTPUT` directory.
pub struct OutputFiles {
    watch: Option<Mutex<Watch>>,
}

struct Watch {
    inotify: Inotify,
    wd: WatchDescriptor,
    /// The watch was taken off the directory: see `stop`.
    stopped: bool,
    /// Names made in the directory since the watch began, not yet taken.
    made: HashSet<OsString>,
    /// The watch has missed something: every file must be opened from now on.
    blind: bool,
    /// Read into, kept from one step to the next. Room for 4,096 bytes of
    /// events, at least one with the longest name (16 + 256 bytes).
    buffer: Vec<u8>,
}

impl OutputFiles {
    /// Starts watching `dir`. Without a watch (inotify missing or at its
    /// limits, or not a local filesystem), every output file is opened.
    pub fn watch(dir: &Path) -> OutputFiles {
        match Watch::begin(dir) {
            Ok(watch) => OutputFiles {
                watch: Some(Mutex::new(watch)),
            },
            Err(error) => {
                tracing::debug!(%error, dir = %dir.display(), "no inotify watch: every output file is opened");
                OutputFiles { watch: None }
            }
        }
    }

    /// No watch: every output file is opened (a run with few steps left).
    pub fn unwatched() -> OutputFiles {
        OutputFiles { watch: None }
    }

    /// Whether the file `name` in the directory may exist: false only when
    /// the watch has seen every name made there since it began, and not this
    /// one. A name it has seen is taken: asked again, the answer is false
    /// unless the name was made again. Call once the process that could write
    /// the file has exited.
    pub fn take(&self, name: &OsStr) -> bool {
        let Some(watch) = &self.watch else {
            return true;
        };
        let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
        watch.read_events();
        if watch.blind {
            return true;
        }
        watch.made.remove(name)
    }

    /// Stops watching: from now on every file may exist, and each is opened.
    /// For the run's last steps. The kernel retires a watch after a grace
    /// period (5-15 ms on this project's machine), and closing an instance
    /// waits for that: a watch taken off while the last steps run is gone
    /// by the time the run ends, instead of holding up its exit.
    pub fn stop(&self) {
        let Some(watch) = &self.watch else {
            return;
        };
        let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
        if !watch.stopped {
            watch.stopped = true;
            // Blind: the next `take` lets the names go.
            watch.blind = true;
            let wd = watch.wd;
            let _ = watch.inotify.rm_watch(wd);
        }
    }
}

/// Filesystems only this machine writes to, by `statfs` magic: ext2-4, XFS,
/// Btrfs, tmpfs, F2FS, ZFS, bcachefs and overlayfs (a container's root).
fn local(magic: i64) -> bool {
    const LOCAL: [i64; 8] = [
        0xEF53,     // ext2, ext3, ext4
        0x58465342, // XFS
        0x9123683E, // Btrfs
        0x01021994, // tmpfs
        0xF2F52010, // F2FS
        0x2FC12FC1, // ZFS
        0xCA451A4E, // bcachefs
        0x794C7630, // overlayfs
    ];
    LOCAL.contains(&magic)
}

impl Drop for OutputFiles {
    /// Closing an inotify instance whose watch is still on waits for the
    /// kernel to retire it (a run that ended before its last steps): that is
    /// done on a thread of its own while the run writes its report, not in
    /// line before it.
    fn drop(&mut self) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        let stopped = watch.lock().is_ok_and(|w| w.stopped);
        if !stopped {
            let _ = std::thread::Builder::new()
                .name("inotify".into())
                .spawn(move || drop(watch));
        }
    }
}

impl Watch {
    fn begin(dir: &Path) -> std::io::Result<Watch> {
        // `f_type` is a `long` on glibc, other widths elsewhere.
        #[allow(clippy::unnecessary_cast)]
        let magic = nix::sys::statfs::statfs(dir)?.filesystem_type().0 as i64;
        if !local(magic) {
            return Err(std::io::Error::other(format!(
                "filesystem {magic:#x} is not one only this machine writes to"
            )));
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let wd = inotify.add_watch(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )?;
        // Files there before the watch (none, as a run empties the directory
        // first; but the watch does not count on it) count as made: listed
        // after the watch began, so that none falls between the two.
        let made = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<std::io::Result<HashSet<_>>>()?;
        Ok(Watch {
            inotify,
            wd,
            stopped: false,
            blind: made.len() > MAX_UNTAKEN,
            made,
            buffer: vec![0; 4096],
        })
    }

    /// Reads every event queued so far.
    fn read_events(&mut self) {
        // inotify's records: wd (i32), mask, cookie and len (u32), then `len`
        // bytes of name padded with NULs.
        const HEADER: usize = 16;
        let lost = AddWatchFlags::IN_Q_OVERFLOW
            | AddWatchFlags::IN_IGNORED
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        while !self.blind {
            let read = match nix::unistd::read(&self.inotify, &mut self.buffer) {
                Ok(read) => read,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.blind = true;
                    break;
                }
            };
            let mut events = &self.buffer[..read];
            while events.len() >= HEADER {
                let field =
                    |at: usize| u32::from_ne_bytes(events[at..at + 4].try_into().expect("4 bytes"));
                let mask = AddWatchFlags::from_bits_truncate(field(4));
                let len = field(12) as usize;
                let Some(name) = events.get(HEADER..HEADER + len) else {
                    self.blind = true;
                    break;
                };
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(len)];
                if mask.intersects(lost) {
                    self.blind = true;
                } else if !name.is_empty() {
                    self.made.insert(OsStr::from_bytes(name).to_os_string());
                }
                events = &events[HEADER + len..];
            }
            if self.made.len() > MAX_UNTAKEN {
                self.blind = true;
            }
        }
        // Nothing is asked of a blind watch again: its names can go.
        self.made = HashSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::OutputFiles;
    use std::ffi::OsStr;

    #[test]
    fn a_name_is_taken_once_it_was_made_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutputFiles::watch(dir.path());
        assert!(files.watch.is_some(), "inotify is there on Linux");
        assert!(!files.take(OsStr::new("a.1.out")));
        std::fs::write(dir.path().join("a.1.out"), "k=v\n").unwrap();
        std::fs::write(dir.path().join("elsewhere"), "").unwrap();
        std::fs::write(dir.path().join("staged"), "k=v\n").unwrap();
        std::fs::rename(dir.path().join("staged"), dir.path().join("b.1.out")).unwrap();
        std::fs::hard_link(dir.path().join("elsewhere"), dir.path().join("c.1.out")).unwrap();
        assert!(files.take(OsStr::new("a.1.out")));
        assert!(!files.take(OsStr::new("a.1.out")), "taken already");
        assert!(files.take(OsStr::new("b.1.out")), "renamed into place");
        assert!(files.take(OsStr::new("c.1.out")), "linked into place");
        assert!(!files.take(OsStr::new("d.1.out")));
    }

    #[test]
    fn names_are_read_across_many_reads_and_too_many_untaken_blind_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutputFiles::watch(dir.path());
        // 200 events of 16 + 64 bytes: several reads of the 4 KB buffer.
        let name = |i: usize| format!("{i:0>60}.out");
        for i in 0..200 {
            std::fs::write(dir.path().join(name(i)), "").unwrap();
        }
        for i in 0..200 {
            assert!(files.take(OsStr::new(&name(i))), "{}", name(i));
        }
        assert!(!files.take(OsStr::new("other.out")));
        for i in 0..=super::MAX_UNTAKEN {
            std::fs::write(dir.path().join(format!("{i}")), "").unwrap();
        }
        assert!(
            files.take(OsStr::new("other.out")),
            "blind: opens every file"
        );
    }

    #[test]
    fn a_stopped_watch_says_every_file_may_exist() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutputFiles::watch(dir.path());
        std::fs::write(dir.path().join("a.1.out"), "k=v\n").unwrap();
        files.stop();
        files.stop();
        assert!(files.take(OsStr::new("a.1.out")));
        assert!(files.take(OsStr::new("never.out")));
        std::fs::write(dir.path().join("b.1.out"), "k=v\n").unwrap();
        assert!(files.take(OsStr::new("b.1.out")));
    }

    #[test]
    fn files_there_before_the_watch_count_as_made() {
        // A killed run's step wrote its file; the resumed attempt appends to
        // it (no new name is made) and its outputs must still be read.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.2.out"), "k=old\n").unwrap();
        let files = OutputFiles::watch(dir.path());
        std::fs::write(dir.path().join("a.2.out"), "k=new\n").unwrap();
        assert!(files.take(OsStr::new("a.2.out")));
        assert!(!files.take(OsStr::new("b.1.out")));
    }

    #[test]
    fn a_watch_that_lost_its_directory_says_every_file_may_exist() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("tmp");
        std::fs::create_dir(&dir).unwrap();
        let files = OutputFiles::watch(&dir);
        assert!(!files.take(OsStr::new("a.1.out")));
        std::fs::rename(&dir, parent.path().join("moved")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert!(files.take(OsStr::new("a.1.out")));
        assert!(files.take(OsStr::new("never.out")));
    }

    #[test]
    fn only_local_filesystems_are_watched() {
        assert!(super::local(0xEF53), "ext4");
        assert!(super::local(0x01021994), "tmpfs");
        assert!(!super::local(0x6969), "NFS");
        assert!(!super::local(0xFE534D42), "SMB2");
        assert!(!super::local(0x65735546), "FUSE");
    }

    #[test]
    fn no_directory_means_no_watch_and_every_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutputFiles::watch(&dir.path().join("missing"));
        assert!(files.watch.is_none());
        assert!(files.take(OsStr::new("a.1.out")));
    }
}
