//! The `restore` action and `phoenix backups`: the `fs` store here; the `s3`
//! store against a real S3 server in `s3.rs`.

use sha2::Digest;

use crate::common::{state_of, Workspace};

const HEADER: &str = "version = 1\n[plan]\nname = \"r\"\nrto = \"10m\"\nrpo = \"1h\"\n\n[stores.local]\ntype = \"fs\"\npath = \"backups\"\n";

pub fn sha256(bytes: &[u8]) -> String {
    phoenix::plan::validate::hex(&sha2::Sha256::digest(bytes))
}

/// Writes a backup and, unless told not to, its sidecar; sets its time.
fn backup(ws: &Workspace, key: &str, content: &[u8], sidecar: bool, age_secs: u64) {
    let path = ws.path().join("backups").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    let time = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(time)
        .unwrap();
    if sidecar {
        let side = path.with_file_name(format!(
            "{}.sha256",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&side, format!("{}  {}\n", sha256(content), key)).unwrap();
        // Sidecars are newest of all: they must never be picked as backups.
        std::fs::File::options()
            .write(true)
            .open(&side)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
    }
}

/// `source`'s contents archived from its top by GNU tar (`tar OPTIONS -C
/// SOURCE .`, `-czf` for gzip), as backup scripts make them.
fn tar_of(source: &std::path::Path, options: &[&str]) -> Vec<u8> {
    let archive = source.with_extension("archive");
    let status = std::process::Command::new("tar")
        .args(options)
        .arg(&archive)
        .arg("-C")
        .arg(source)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar {options:?}");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::remove_file(&archive).unwrap();
    bytes
}

fn restore_step(id: &str, fields: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"restore\"\naction = \"restore\"\nstore = \"local\"\ntimeout = \"1m\"\n{fields}\n")
}

#[test]
fn selection_latest_before_and_match() {
    let ws = Workspace::new();
    backup(&ws, "pg/db-1.dump", b"one", true, 600);
    backup(&ws, "pg/db-2.dump", b"two", true, 300);
    backup(&ws, "pg/db-3.tar", b"not a dump", true, 10);
    backup(&ws, "pg/db-4.dump", b"four", true, 5);
    let before = (chrono::Utc::now() - chrono::Duration::seconds(200))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let plan = format!(
        "{HEADER}{}{}{}{}",
        restore_step("latest", "prefix = \"pg/\"\nmatch = \"*.dump\"\ndest = \"out/latest.dump\""),
        restore_step("before", &format!("prefix = \"pg/\"\nmatch = \"*.dump\"\nselect = \"before:{before}\"\ndest = \"out/before.dump\"")),
        restore_step("by_key", "key = \"pg/db-1.dump\"\ndest = \"out/key.dump\""),
        restore_step("any", "prefix = \"pg/db-4\"\ndest = \"out/any\"\nunpack = \"none\""),
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 0);
    let read = |f: &str| ws.read(format!("out/{f}"));
    assert_eq!(read("latest.dump"), "four");
    assert_eq!(read("before.dump"), "two");
    assert_eq!(read("key.dump"), "one");
    assert_eq!(
        read("any"),
        "four",
        "the sidecar is newer but never a backup"
    );
    let out = ws.outputs("latest");
    assert_eq!(out["key"], "pg/db-4.dump");
    assert_eq!(out["size"], "4");
    assert_eq!(out["sha256"], sha256(b"four"));
    let age: f64 = out["age_seconds"].as_str().unwrap().parse().unwrap();
    assert!((4.0..30.0).contains(&age), "{age}");
    assert!(out["last_modified"].as_str().unwrap().contains('T'));
    // The report's RPO is the age of the oldest backup restored.
    let report: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["report", "--format", "json"])
            .run()
            .stdout(),
    )
    .unwrap();
    assert!(report["rpo"]["actual_seconds"].as_f64().unwrap() >= 590.0);
    assert_eq!(report["rpo"]["met"], true);
    assert_eq!(report["restored"].as_array().unwrap().len(), 4);
}

#[test]
fn a_wrong_or_missing_digest_fails_and_leaves_dest_alone() {
    let ws = Workspace::new();
    backup(&ws, "wrong.dump", b"real content", false, 10);
    std::fs::write(
        ws.path().join("backups/wrong.dump.sha256"),
        format!("{}  wrong.dump\n", sha256(b"other content")),
    )
    .unwrap();
    backup(&ws, "nodigest.dump", b"x", false, 10);
    std::fs::create_dir_all(ws.path().join("out")).unwrap();
    std::fs::write(ws.path().join("out/wrong.dump"), "previous").unwrap();
    let plan = format!(
        "{HEADER}{}{}{}",
        restore_step("wrong", "key = \"wrong.dump\"\ndest = \"out/wrong.dump\""),
        restore_step(
            "nodigest",
            "key = \"nodigest.dump\"\ndest = \"out/nodigest.dump\""
        ),
        restore_step(
            "missing",
            "key = \"missing.dump\"\ndest = \"out/missing.dump\""
        ),
    );
    ws.write("plan.toml", &plan);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!(
            "`wrong.dump` has SHA-256 {}, but its sidecar says {}",
            sha256(b"real content"),
            sha256(b"other content")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no digest for `nodigest.dump`"), "{stderr}");
    assert!(
        stderr.contains("no backup `missing.dump` in directory"),
        "{stderr}"
    );
    assert_eq!(ws.read("out/wrong.dump"), "previous");
    assert!(!ws.path().join("out/nodigest.dump").exists());
    let leftovers: Vec<_> = std::fs::read_dir(ws.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
    // verify = "none" restores without a digest.
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step(
                "nodigest",
                "key = \"nodigest.dump\"\nverify = \"none\"\ndest = \"out/nodigest.dump\""
            )
        ),
    );
    ws.expect(["run", "plan.toml"], 0);
}

#[test]
fn a_backup_older_than_max_age_or_rpo_fails() {
    let ws = Workspace::new();
    backup(&ws, "old.dump", b"old", true, 7200);
    let plan = format!(
        "{HEADER}{}{}",
        restore_step("by_rpo", "key = \"old.dump\"\ndest = \"out/a\""),
        restore_step(
            "by_max_age",
            "key = \"old.dump\"\nmax_age = \"3h\"\ndest = \"out/b\""
        ),
    );
    ws.write("plan.toml", &plan);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    assert!(
        run.stderr()
            .contains("`old.dump` is 2h old, older than the 1h allowed"),
        "{}",
        run.stderr()
    );
    let status = ws.status();
    assert_eq!(state_of(&status, "by_rpo"), "failed");
    assert_eq!(state_of(&status, "by_max_age"), "succeeded");
}

/// Step `data` restores the newest backup under `pg/` to `out/db.dump`;
/// step `after` fails until the file `go` is there, so that the run stops
/// with the restore done.
fn restore_then_gate() -> String {
    format!(
        "{}\n[[step]]\nid = \"after\"\nphase = \"restore\"\naction = \"command\"\nshell = \"test -e go\"\ntimeout = \"1m\"\nneeds = [\"data\"]\n",
        restore_step("data", "prefix = \"pg/\"\ndest = \"out/db.dump\""),
    )
}

#[test]
fn a_resumed_restore_uses_the_backup_it_chose_first() {
    resumed_restore_uses_the_backup_it_chose_first(None);
}

/// The backup's name holds a secret's value (a PIN that is also part of a
/// date, say): what the step froze is kept as it was, not masked, or the
/// resume would look for `pg/***.dump`.
#[test]
fn a_secret_in_a_backups_name_does_not_change_what_a_resume_restores() {
    resumed_restore_uses_the_backup_it_chose_first(Some("db-1"));
}

fn resumed_restore_uses_the_backup_it_chose_first(secret: Option<&str>) {
    let ws = Workspace::new();
    backup(&ws, "pg/db-1.dump", b"first", true, 60);
    let secrets = match secret {
        Some(_) => "\n[secrets]\npin = { env = \"PIN\" }\n",
        None => "",
    };
    let plan = format!("{HEADER}{secrets}{}", restore_then_gate());
    ws.write("plan.toml", &plan);
    let phoenix = |args: &[&str], code: i32| {
        ws.phoenix()
            .env("PIN", secret.unwrap_or_default())
            .args(args)
            .run()
            .expect_code(code)
    };
    phoenix(&["run", "plan.toml"], 1);
    // A newer backup appears; the restore step is made in doubt (as a crash
    // right after it would leave it) and its file is lost.
    backup(&ws, "pg/db-2.dump", b"second", true, 1);
    ws.make_in_doubt("data");
    std::fs::remove_file(ws.path().join("out/db.dump")).unwrap();
    ws.write("go", "");
    phoenix(&["resume"], 0);
    assert_eq!(ws.read("out/db.dump"), "first");
    // Outputs are masked, as everything a step says.
    let key = if secret.is_some() {
        "pg/***.dump"
    } else {
        "pg/db-1.dump"
    };
    assert_eq!(ws.outputs("data")["key"], key);
}

/// The backup a run chose is gone by the time a resume restores it again
/// (a retention rule deleted it, with its sidecar): said as that, not as a
/// missing digest; written over, said as that too.
#[test]
fn a_resume_whose_chosen_backup_is_gone_or_changed_says_so() {
    let ws = Workspace::new();
    backup(&ws, "pg/db-1.dump", b"first", true, 60);
    let plan = format!("{HEADER}{}", restore_then_gate());
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 1);
    ws.make_in_doubt("data");
    ws.write("go", "");
    backup(&ws, "pg/db-1.dump", b"overwritten", true, 30);
    let changed = ws.expect(["resume"], 1);
    assert!(
        changed.stderr().contains("the backup this run chose when the step first ran, `pg/db-1.dump` in store `local`, has changed since (written over)"),
        "{}",
        changed.stderr()
    );
    std::fs::remove_dir_all(ws.path().join("backups/pg")).unwrap();
    backup(&ws, "pg/db-2.dump", b"second", true, 1);
    let gone = ws.expect(["resume"], 1);
    assert!(
        gone.stderr().contains("`pg/db-1.dump` in store `local`, is no longer there (deleted since: a retention rule?); a resume restores only the backup its run chose"),
        "{}",
        gone.stderr()
    );
    assert!(!gone.stderr().contains("no digest"), "{}", gone.stderr());
}

#[test]
fn archives_are_unpacked_into_dest_and_replace_it_whole() {
    let ws = Workspace::new();
    let source = ws.path().join("src");
    std::fs::create_dir_all(source.join("conf")).unwrap();
    std::fs::write(source.join("conf/app.conf"), "x = 1\n").unwrap();
    let bytes = tar_of(&source, &["-czf"]);
    backup(&ws, "files/files.tar.gz", &bytes, true, 5);
    std::fs::create_dir_all(ws.path().join("restored/stale")).unwrap();
    // What a Phoenix killed mid-restore left beside `dest` under its own
    // process id (one long gone), and what a live one is writing.
    let dead = ws.path().join(".restored.phoenix-2147483646.download");
    let half_unpacked = ws.path().join(".restored.phoenix-2147483646.unpack");
    let live = ws
        .path()
        .join(format!(".restored.phoenix-{}.download", std::process::id()));
    for path in [&dead, &live] {
        std::fs::write(path, "partial").unwrap();
    }
    std::fs::create_dir_all(half_unpacked.join("conf")).unwrap();
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step("files", "prefix = \"files/\"\ndest = \"restored\"")
        ),
    );
    ws.expect(["run", "plan.toml"], 0);
    assert_eq!(ws.read("restored/conf/app.conf"), "x = 1\n");
    assert!(!ws.path().join("restored/stale").exists());
    assert!(
        !dead.exists() && !half_unpacked.exists(),
        "a dead run's leftovers are removed"
    );
    assert!(live.exists(), "a live process's work is left alone");
}

#[test]
fn backups_preflight_reports_and_fails_on_problems() {
    let ws = Workspace::new();
    backup(&ws, "pg/db-1.dump", b"ok", true, 60);
    let plan = format!(
        "{HEADER}{}",
        restore_step("data", "prefix = \"pg/\"\ndest = \"out/db.dump\"")
    );
    ws.write("plan.toml", &plan);
    let ok = ws.expect(["backups", "plan.toml"], 0).stdout();
    assert!(
        ok.contains("ok data from store `local` `pg/db-1.dump` (2 bytes"),
        "{ok}"
    );
    assert!(ok.contains("digest: sidecar"), "{ok}");
    let json: serde_json::Value = serde_json::from_str(
        &ws.phoenix()
            .args(["backups", "plan.toml", "--format", "json"])
            .run()
            .expect_code(0)
            .stdout(),
    )
    .unwrap();
    assert_eq!(json[0]["key"], "pg/db-1.dump");
    assert_eq!(json[0]["ok"], true);
    assert_eq!(json[0]["max_age_seconds"], 3600.0);
    // Too old.
    let path = ws.path().join("backups/pg/db-1.dump");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7300))
        .unwrap();
    let old = ws.expect(["backups", "plan.toml"], 1).stdout();
    assert!(
        old.contains("FAIL data") && old.contains("older than 1h allowed"),
        "{old}"
    );
    // No digest.
    backup(&ws, "pg/db-2.dump", b"new", false, 1);
    let nodigest = ws.expect(["backups", "plan.toml"], 1).stdout();
    assert!(nodigest.contains("no digest"), "{nodigest}");
    // Both: both said, not the first alone.
    std::fs::File::options()
        .write(true)
        .open(ws.path().join("backups/pg/db-2.dump"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7300))
        .unwrap();
    let both = ws.expect(["backups", "plan.toml"], 1).stdout();
    assert!(
        both.contains("older than 1h allowed; no digest: neither `pg/db-2.dump.sha256`"),
        "{both}"
    );
    // Missing entirely.
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step("data", "prefix = \"nothing/\"\ndest = \"out/db.dump\"")
        ),
    );
    let missing = ws.expect(["backups", "plan.toml"], 1).stdout();
    assert!(missing.contains("no backup under `nothing/`"), "{missing}");
    // The store's directory missing (a typo, a volume not mounted) is said
    // as such, not as a store without backups; by a run too.
    ws.write(
        "plan.toml",
        &format!(
            "{}{}",
            HEADER.replace("path = \"backups\"", "path = \"backpus\""),
            restore_step("data", "prefix = \"pg/\"\ndest = \"out/db.dump\"")
        ),
    );
    let no_dir = ws.expect(["backups", "plan.toml"], 1).stdout();
    assert!(no_dir.contains("the store's directory `"), "{no_dir}");
    assert!(no_dir.contains("backpus` does not exist"), "{no_dir}");
    let run = ws.expect(["run", "plan.toml"], 1);
    assert!(
        run.stderr().contains("backpus` does not exist"),
        "{}",
        run.stderr()
    );
}

/// A backup named like a tar archive in a wrapping phoenix does not unpack
/// (`.tar.lz4`, an encrypted `.tar.gz.gpg`) used to be written to `dest` as
/// a file under `unpack = "auto"`, and the step after it failed on a
/// directory that was not there. It is refused before anything is fetched,
/// and by the preflight; `unpack = "none"` restores it as a file.
#[test]
fn a_tar_in_a_wrapping_phoenix_does_not_unpack_is_refused_not_written_as_a_file() {
    let ws = Workspace::new();
    backup(
        &ws,
        "pg/db.tar.lz4",
        b"\x04\x22\x4d\x18 lz4 frame",
        true,
        60,
    );
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step("data", "prefix = \"pg/\"\ndest = \"out/data\"")
        ),
    );
    let run = ws.expect(["run", "plan.toml"], 1);
    assert!(
        run.stderr().contains(
            "`pg/db.tar.lz4` looks like a tar archive in `.lz4`, which phoenix does not unpack"
        ),
        "{}",
        run.stderr()
    );
    assert!(!ws.path().join("out/data").exists());
    let preflight = ws.expect(["backups", "plan.toml"], 1);
    assert!(
        preflight.stdout().contains("does not unpack"),
        "{}",
        preflight.stdout()
    );
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step(
                "data",
                "prefix = \"pg/\"\ndest = \"out/db.tar.lz4\"\nunpack = \"none\""
            )
        ),
    );
    ws.expect(["run", "plan.toml"], 0);
    assert_eq!(
        std::fs::read(ws.path().join("out/db.tar.lz4")).unwrap(),
        b"\x04\x22\x4d\x18 lz4 frame"
    );
}

/// Unmounts what a test mounted, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A restore into a mount point (a fresh volume mounted for the data, the
/// usual target) was unpacked beside it, on the filesystem above (the root
/// one, for a backup of hundreds of gigabytes), and then failed: a mount
/// point cannot be renamed over. Now the work is done inside the volume and
/// the tree replaces what it held, its `lost+found` kept.
#[test]
fn a_restore_into_a_mount_point_works_on_that_filesystem() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let volume = ws.path().join("vol");
    std::fs::create_dir(&volume).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&volume)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Mounted(volume.clone());
    std::fs::create_dir(volume.join("lost+found")).unwrap();
    std::fs::write(volume.join("old"), "from before").unwrap();
    // A data directory archived from its top: 0700, two files.
    let source = ws.path().join("pgdata");
    std::fs::create_dir_all(source.join("base")).unwrap();
    std::fs::write(source.join("PG_VERSION"), "16\n").unwrap();
    std::fs::write(source.join("base/1"), vec![7u8; 100_000]).unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o700)).unwrap();
    let bytes = tar_of(&source, &["-cf"]);
    backup(&ws, "pg/data.tar", &bytes, true, 60);
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            restore_step("data", "key = \"pg/data.tar\"\ndest = \"vol\"")
        ),
    );
    let run = ws.expect(["run", "plan.toml"], 0);
    let mut names: Vec<String> = std::fs::read_dir(&volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["PG_VERSION", "base", "lost+found"],
        "{}",
        run.stderr()
    );
    assert_eq!(ws.read("vol/PG_VERSION"), "16\n");
    assert_eq!(std::fs::read(volume.join("base/1")).unwrap().len(), 100_000);
    assert_eq!(
        std::fs::metadata(&volume).unwrap().permissions().mode() & 0o777,
        0o700,
        "the volume's top takes the archive's"
    );
    let beside: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("phoenix-"))
        .collect();
    assert!(
        beside.is_empty(),
        "nothing was staged beside the volume: {beside:?}"
    );
}

/// `owners = "USER[:GROUP]"` gives everything restored to one user: an
/// archive made on another system (its ids mean nothing here), or a dump
/// the service's user must read. Looked up when the step runs, before a
/// byte is fetched; a user that is not there fails the step at once.
#[test]
fn owners_can_name_the_user_everything_restored_goes_to() {
    use std::os::unix::fs::MetadataExt;
    let ws = Workspace::new();
    let source = ws.path().join("tree");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/file"), "x").unwrap();
    let bytes = tar_of(
        &source,
        &["--owner=4242", "--group=4343", "--numeric-owner", "-cf"],
    );
    backup(&ws, "a/tree.tar", &bytes, true, 60);
    backup(&ws, "a/db.dump", b"dump", true, 60);
    let plan = |owners: &str| {
        format!(
            "{HEADER}{}{}",
            restore_step(
                "tree",
                &format!("key = \"a/tree.tar\"\ndest = \"out/tree\"\nowners = \"{owners}\"")
            ),
            restore_step(
                "dump",
                &format!("key = \"a/db.dump\"\ndest = \"out/db.dump\"\nowners = \"{owners}\"")
            )
        )
    };
    ws.write("plan.toml", &plan("no-such-user"));
    let missing = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    assert!(
        missing
            .stderr()
            .contains("`owners`: there is no user `no-such-user` on this machine"),
        "{}",
        missing.stderr()
    );
    assert!(!ws.path().join("out/tree").exists() && !ws.path().join("out/db.dump").exists());
    ws.write("plan.toml", &plan("bad user"));
    let invalid = ws.expect(["validate", "plan.toml"], 1);
    assert!(
        invalid.stderr().contains("`owners` in step `tree` must be"),
        "{}",
        invalid.stderr()
    );
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the rest: giving files to another user needs root");
        return;
    }
    ws.write("plan.toml", &plan("nobody:nogroup"));
    ws.expect(["run", "plan.toml"], 0);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    for path in [
        "out/tree",
        "out/tree/sub",
        "out/tree/sub/file",
        "out/db.dump",
    ] {
        let meta = std::fs::metadata(ws.path().join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (nobody, nogroup), "{path}");
    }
}
