//! The archive corpus: crafted malicious archives are all refused, naming the
//! entry, with nothing written outside the destination; benign ones unpack
//! identical to GNU tar's result.

use std::path::{Path, PathBuf};
use std::process::Command;

use phoenix::unpack::{unpack, Format, Owners, UnpackError};

/// One crafted entry: raw name bytes, type, link target, content.
struct Entry {
    name: &'static str,
    kind: tar::EntryType,
    link: Option<&'static str>,
    data: &'static [u8],
    mode: u32,
}

fn file(name: &'static str) -> Entry {
    Entry {
        name,
        kind: tar::EntryType::Regular,
        link: None,
        data: b"payload",
        mode: 0o644,
    }
}
fn dir(name: &'static str) -> Entry {
    Entry {
        name,
        kind: tar::EntryType::Directory,
        link: None,
        data: b"",
        mode: 0o755,
    }
}
fn symlink(name: &'static str, to: &'static str) -> Entry {
    Entry {
        name,
        kind: tar::EntryType::Symlink,
        link: Some(to),
        data: b"",
        mode: 0o777,
    }
}
fn hardlink(name: &'static str, to: &'static str) -> Entry {
    Entry {
        name,
        kind: tar::EntryType::Link,
        link: Some(to),
        data: b"",
        mode: 0o644,
    }
}
fn special(name: &'static str, kind: tar::EntryType) -> Entry {
    Entry {
        name,
        kind,
        link: None,
        data: b"",
        mode: 0o644,
    }
}

/// Writes a tar whose names are set byte for byte: the `tar` crate's own
/// setters refuse `..` and absolute paths, which is the point of the corpus.
fn craft(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        if e.name.len() > 99 {
            // A GNU long-name entry carries the real name.
            let mut long = tar::Header::new_gnu();
            long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            long.set_entry_type(tar::EntryType::GNULongName);
            long.set_size(e.name.len() as u64 + 1);
            long.set_cksum();
            let mut name = e.name.as_bytes().to_vec();
            name.push(0);
            builder.append(&long, name.as_slice()).unwrap();
        }
        {
            let gnu = header.as_gnu_mut().unwrap();
            let bytes = e.name.as_bytes();
            let n = bytes.len().min(99);
            gnu.name[..n].copy_from_slice(&bytes[..n]);
            if let Some(link) = e.link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_size(e.data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn compress(tar: Vec<u8>, format: Format) -> Vec<u8> {
    use std::io::Write;
    match format {
        Format::Tar => tar,
        Format::TarGz => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&tar).unwrap();
            encoder.finish().unwrap()
        }
        Format::TarZst => zstd::encode_all(tar.as_slice(), 3).unwrap(),
        // As backup scripts make them (`tar cJf`, `tar cjf`): by the tools.
        Format::TarXz => through("xz", &tar),
        Format::TarBz2 => through("bzip2", &tar),
    }
}

/// `bytes` compressed by `program` (xz, bzip2) to its standard output.
fn through(program: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(["-c", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "{program}");
    output.stdout
}

/// Every file below `dir`, for "nothing was written outside".
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            out.push(path.clone());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn malicious_archives_are_refused_naming_the_entry() {
    use tar::EntryType::*;
    let cases: Vec<(&str, Vec<Entry>, Format, &str)> = vec![
        ("absolute path", vec![file("/tmp/phoenix-evil")], Format::Tar, "/tmp/phoenix-evil"),
        ("parent", vec![file("../evil")], Format::Tar, "../evil"),
        ("parent in the middle", vec![file("a/../../evil")], Format::Tar, "a/../../evil"),
        ("dot then parent", vec![file("./../evil")], Format::Tar, "./../evil"),
        ("deep climb", vec![dir("a/"), file("a/b/../../../x")], Format::Tar, "a/b/../../../x"),
        ("symlink to an absolute path", vec![symlink("etc", "/etc")], Format::Tar, "etc"),
        ("symlink up", vec![symlink("up", "../outside")], Format::Tar, "up"),
        ("nested symlink up", vec![dir("a/"), symlink("a/link", "../../x")], Format::Tar, "a/link"),
        ("symlink then file through it", vec![dir("sub/"), symlink("d", "sub"), file("d/file")], Format::Tar, "d/file"),
        ("symlink then file over it", vec![symlink("l", "target"), file("l")], Format::Tar, "l"),
        ("hard link to an absolute path", vec![hardlink("h", "/etc/passwd")], Format::Tar, "h"),
        ("hard link up", vec![hardlink("h", "../outside")], Format::Tar, "h"),
        ("hard link through a symlink", vec![dir("sub/"), file("sub/f"), symlink("s", "sub"), hardlink("h", "s/f")], Format::Tar, "h"),
        ("character device", vec![special("tty", Char)], Format::Tar, "tty"),
        ("block device", vec![special("disk", Block)], Format::Tar, "disk"),
        ("fifo", vec![special("pipe", Fifo)], Format::Tar, "pipe"),
        ("two-step link", vec![symlink("a", "."), symlink("b", "a/..")], Format::Tar, "b"),
        ("chained links", vec![symlink("c1", "."), symlink("c2", "c1/c1/..")], Format::Tar, "c2"),
        ("dangling then escaping", vec![symlink("p", "q/x"), symlink("q", "..")], Format::Tar, "q"),
        ("long name climbing", vec![file("long/../../../aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")], Format::Tar, "long/../../../"),
        ("gzip parent", vec![file("../gz-evil")], Format::TarGz, "../gz-evil"),
        ("zstd absolute", vec![file("/tmp/zst-evil")], Format::TarZst, "/tmp/zst-evil"),
        ("zstd two-step", vec![dir("d/"), symlink("d/up", ".."), symlink("x", "d/up/..")], Format::TarZst, "x"),
    ];
    assert!(cases.len() >= 20);
    for (what, entries, format, entry_name) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let archive = scratch.path().join("a.tar");
        std::fs::write(&archive, compress(craft(&entries), format)).unwrap();
        let dest = scratch.path().join("root/dest");
        std::fs::create_dir_all(&dest).unwrap();
        let before = listing(scratch.path());
        let result = unpack(&archive, format, &dest, Owners::Current);
        match result {
            Err(UnpackError::Refused { entry, reason }) => {
                assert!(
                    entry.starts_with(entry_name),
                    "{what}: refused `{entry}` ({reason}), expected `{entry_name}`"
                );
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
        let after: Vec<PathBuf> = listing(scratch.path())
            .into_iter()
            .filter(|p| !p.starts_with(&dest))
            .collect();
        assert_eq!(
            after,
            before
                .into_iter()
                .filter(|p| !p.starts_with(&dest))
                .collect::<Vec<_>>(),
            "{what}: wrote outside dest"
        );
        assert!(!Path::new("/tmp/phoenix-evil").exists() && !Path::new("/tmp/zst-evil").exists());
    }
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("a.tar");
    let mut entry = file("tool");
    entry.mode = 0o6755;
    std::fs::write(&archive, craft(&[entry])).unwrap();
    let dest = scratch.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    unpack(&archive, Format::Tar, &dest, Owners::Current).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dest.join("tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
}

/// A description of a tree to compare: path, kind, mode, content or link target.
/// Every entry under `root` (and `root` itself, as `./`) with its mode, owner
/// and content or target.
fn describe(root: &Path) -> Vec<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out: Vec<String> = std::iter::once(root.to_path_buf())
        .chain(listing(root))
        .map(|path| {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            let owner = format!("{}:{}", meta.uid(), meta.gid());
            if meta.file_type().is_symlink() {
                format!(
                    "{relative} -> {} {owner}",
                    std::fs::read_link(&path).unwrap().display()
                )
            } else if meta.is_dir() {
                format!("{relative}/ {mode:o} {owner}")
            } else {
                let content = std::fs::read(&path).unwrap();
                use sha2::Digest;
                format!(
                    "{relative} {mode:o} {owner} {} {}",
                    content.len(),
                    phoenix::plan::validate::hex(&sha2::Sha256::digest(&content))
                )
            }
        })
        .collect();
    out.sort();
    out
}

/// GNU tar's unpacking as the user the tests run as (keeping the archive's
/// owners as root, as it does by default), into a new `into`.
fn gnu_unpack(tar_path: &Path, into: &Path) {
    std::fs::create_dir(into).unwrap();
    gnu_tar(
        &[
            "-xf",
            tar_path.to_str().unwrap(),
            "-C",
            into.to_str().unwrap(),
        ],
        into,
    );
}

fn gnu_tar(args: &[&str], dir: &Path) {
    let status = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?}");
}

/// Fills a directory with the tree an archive is made from.
type MakeTree = dyn Fn(&Path);

#[test]
fn benign_archives_unpack_like_gnu_tar() {
    let cases: Vec<(&str, Box<MakeTree>, Format)> = vec![
        (
            "empty directories",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.join("a/b/c")).unwrap();
                std::fs::create_dir_all(d.join("empty")).unwrap();
            }),
            Format::Tar,
        ),
        (
            "long names",
            Box::new(|d: &Path| {
                let long = "n".repeat(120);
                std::fs::create_dir_all(d.join(&long)).unwrap();
                std::fs::write(d.join(&long).join(format!("{long}.txt")), "x").unwrap();
            }),
            Format::Tar,
        ),
        (
            "links inside",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.join("lib")).unwrap();
                std::fs::write(d.join("lib/real"), "data").unwrap();
                std::os::unix::fs::symlink("lib/real", d.join("rel")).unwrap();
                std::fs::create_dir_all(d.join("bin")).unwrap();
                std::os::unix::fs::symlink("../lib/real", d.join("bin/tool")).unwrap();
                std::fs::hard_link(d.join("lib/real"), d.join("hard")).unwrap();
            }),
            Format::Tar,
        ),
        (
            "many small files",
            Box::new(|d: &Path| {
                for i in 0..500 {
                    std::fs::write(d.join(format!("f{i:03}")), format!("{i}\n")).unwrap();
                }
            }),
            Format::Tar,
        ),
        (
            "deep nesting",
            Box::new(|d: &Path| {
                let mut p = d.to_path_buf();
                for i in 0..30 {
                    p = p.join(format!("d{i}"));
                }
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("leaf"), "deep").unwrap();
            }),
            Format::Tar,
        ),
        (
            "odd names",
            Box::new(|d: &Path| {
                std::fs::write(d.join("with space"), "1").unwrap();
                std::fs::write(d.join("ünïcødé"), "2").unwrap();
                std::fs::write(d.join("-dash"), "3").unwrap();
            }),
            Format::Tar,
        ),
        (
            "modes",
            Box::new(|d: &Path| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(d.join("exec"), "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(d.join("exec"), std::fs::Permissions::from_mode(0o750))
                    .unwrap();
                std::fs::write(d.join("private"), "k").unwrap();
                std::fs::set_permissions(d.join("private"), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }),
            Format::Tar,
        ),
        (
            "empty file",
            Box::new(|d: &Path| {
                std::fs::write(d.join("empty"), "").unwrap();
            }),
            Format::Tar,
        ),
        (
            "gzip",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.join("etc")).unwrap();
                std::fs::write(d.join("etc/app.conf"), "a = 1\n".repeat(1000)).unwrap();
            }),
            Format::TarGz,
        ),
        (
            "zstd",
            Box::new(|d: &Path| {
                std::fs::write(d.join("big"), vec![7u8; 3_000_000]).unwrap();
                std::fs::write(d.join("small"), "s").unwrap();
            }),
            Format::TarZst,
        ),
        (
            "xz",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.join("var/lib")).unwrap();
                std::fs::write(d.join("var/lib/data"), "row\n".repeat(100_000)).unwrap();
            }),
            Format::TarXz,
        ),
        (
            "bzip2",
            Box::new(|d: &Path| {
                std::fs::write(d.join("dump.sql"), "INSERT 1;\n".repeat(50_000)).unwrap();
                std::fs::create_dir(d.join("empty")).unwrap();
            }),
            Format::TarBz2,
        ),
        (
            "dangling and dir links inside",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.join("data")).unwrap();
                std::os::unix::fs::symlink("data", d.join("current")).unwrap();
                std::os::unix::fs::symlink("not-yet", d.join("later")).unwrap();
            }),
            Format::Tar,
        ),
    ];
    assert!(cases.len() >= 10);
    for (what, make, format) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        std::fs::create_dir(&source).unwrap();
        make(&source);
        let tar_path = scratch.path().join("a.tar");
        gnu_tar(
            &[
                "-cf",
                tar_path.to_str().unwrap(),
                "-C",
                source.to_str().unwrap(),
                ".",
            ],
            scratch.path(),
        );
        let archive = scratch.path().join("archive");
        std::fs::write(
            &archive,
            compress(std::fs::read(&tar_path).unwrap(), format),
        )
        .unwrap();
        let by_gnu = scratch.path().join("gnu");
        gnu_unpack(&tar_path, &by_gnu);
        let by_phoenix = scratch.path().join("phoenix");
        std::fs::create_dir(&by_phoenix).unwrap();
        unpack(&archive, format, &by_phoenix, Owners::by_default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(describe(&by_phoenix), describe(&by_gnu), "{what}");
    }
}

/// A service's data directory, archived from its top (`tar -C PGDATA -cf
/// x.tar .`), comes back as GNU tar brings it back: the top takes the
/// archive's mode (PostgreSQL will not start on a data directory open to
/// others), and as root every file its owner, by name where this machine
/// has the name (a rebuilt machine's `postgres` user may have another id),
/// else by number. Before, everything was root's and the top 0755.
#[test]
fn archives_keep_their_owners_and_top_mode_as_gnu_tar_does() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = nix::unistd::geteuid().is_root();
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("pgdata");
    std::fs::create_dir_all(source.join("base/1")).unwrap();
    std::fs::write(source.join("PG_VERSION"), "16\n").unwrap();
    std::fs::write(source.join("base/1/1259"), vec![1u8; 8192]).unwrap();
    std::os::unix::fs::symlink("base", source.join("current")).unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o700)).unwrap();
    // By number (no such user here), and by a name every Debian has, with a
    // number that is not that name's here.
    for (what, owner) in [
        (
            "numbers",
            ["--owner=4242", "--group=4343", "--numeric-owner"],
        ),
        (
            "names",
            [
                "--owner=nobody:1234",
                "--group=nogroup:1235",
                "--format=gnu",
            ],
        ),
    ] {
        let tar_path = scratch.path().join(format!("{what}.tar"));
        let mut args = vec!["-cf", tar_path.to_str().unwrap()];
        args.extend(owner);
        args.extend(["-C", source.to_str().unwrap(), "."]);
        gnu_tar(&args, scratch.path());
        let by_gnu = scratch.path().join(format!("{what}-gnu"));
        gnu_unpack(&tar_path, &by_gnu);
        let by_phoenix = scratch.path().join(format!("{what}-phoenix"));
        std::fs::create_dir(&by_phoenix).unwrap();
        unpack(&tar_path, Format::Tar, &by_phoenix, Owners::by_default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(describe(&by_phoenix), describe(&by_gnu), "{what}");
        let meta = std::fs::metadata(&by_phoenix).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{what}");
        let file = std::fs::metadata(by_phoenix.join("base/1/1259")).unwrap();
        let expected = match (root, what) {
            (false, _) => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            (true, "numbers") => (4242, 4343),
            (true, _) => (
                nix::unistd::User::from_name("nobody")
                    .unwrap()
                    .unwrap()
                    .uid
                    .as_raw(),
                nix::unistd::Group::from_name("nogroup")
                    .unwrap()
                    .unwrap()
                    .gid
                    .as_raw(),
            ),
        };
        assert_eq!((file.uid(), file.gid()), expected, "{what}");
        assert_eq!(meta.uid(), expected.0, "{what}: the top's owner");
    }
    // `owners = "self"`: everything the unpacking user's, as before.
    let by_self = scratch.path().join("self");
    std::fs::create_dir(&by_self).unwrap();
    unpack(
        &scratch.path().join("numbers.tar"),
        Format::Tar,
        &by_self,
        Owners::Current,
    )
    .unwrap();
    let me = nix::unistd::geteuid().as_raw();
    for path in std::iter::once(by_self.clone()).chain(listing(&by_self)) {
        assert_eq!(
            std::fs::symlink_metadata(&path).unwrap().uid(),
            me,
            "{}",
            path.display()
        );
    }
}
