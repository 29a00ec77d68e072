//! The `git` and `template` actions, against real repositories made here.

use std::path::Path;
use std::process::Command;

use crate::common::{state_of, HttpServer, Workspace, HEADER};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository with `file` at "v1" (annotated tag v1), then "v2" (tag v2, branch main).
fn make_repo(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    std::fs::write(dir.join("file"), "v1\n").unwrap();
    git(dir, &["add", "file"]);
    git(dir, &["commit", "-q", "-m", "one"]);
    git(dir, &["tag", "-a", "v1", "-m", "release 1"]);
    let one = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("file"), "v2\n").unwrap();
    git(dir, &["commit", "-q", "-am", "two"]);
    git(dir, &["tag", "v2"]);
    let two = git(dir, &["rev-parse", "HEAD"]);
    (one, two)
}

fn git_step(id: &str, repo: &str, reference: &str, dest: &str, extra: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"configure\"\naction = \"git\"\nrepo = \"{repo}\"\nref = \"{reference}\"\ndest = \"{dest}\"\ntimeout = \"1m\"\n{extra}\n")
}

#[test]
fn tags_branches_commits_bundles_and_paths() {
    let ws = Workspace::new();
    let (one, two) = make_repo(&ws.path().join("repo"));
    git(
        &ws.path().join("repo"),
        &["bundle", "create", "../config.bundle", "--all"],
    );
    let plan = format!(
        "{HEADER}{}{}{}{}",
        git_step(
            "by_tag",
            "repo",
            "v1",
            "out/tag",
            &format!("commit = \"{one}\"")
        ),
        git_step("by_branch", "repo", "main", "out/branch", ""),
        git_step("by_commit", "repo", &one, "out/commit", ""),
        git_step("from_bundle", "config.bundle", "v2", "out/bundle", ""),
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 0);
    let read = |d: &str| ws.read(format!("out/{d}/file"));
    assert_eq!(read("tag"), "v1\n");
    assert_eq!(read("branch"), "v2\n");
    assert_eq!(read("commit"), "v1\n");
    assert_eq!(read("bundle"), "v2\n");
    assert_eq!(ws.outputs("by_tag")["commit"], one.as_str());
    assert_eq!(ws.outputs("from_bundle")["commit"], two.as_str());
    let report = ws.expect(["report"], 0).stdout();
    assert!(
        report.contains(&format!("| `by_tag` | repo | v1 | `{one}` |")),
        "{report}"
    );

    // `plan` says what the refs resolve to now, and whether pins still hold.
    let text = ws.expect(["plan", "plan.toml"], 0).stdout();
    assert!(
        text.contains(&format!(
            "git step `by_tag`: `v1` resolves to {one} now, as pinned"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "git step `from_bundle`: `v2` resolves to {two} now"
        )),
        "{text}"
    );
}

#[test]
fn a_moved_tag_fails_against_its_pin() {
    let ws = Workspace::new();
    let repo = ws.path().join("repo");
    let (one, two) = make_repo(&repo);
    git(&repo, &["tag", "-f", "-a", "v1", "-m", "moved", &two]);
    ws.write_plan(&[git_step(
        "cfg",
        "repo",
        "v1",
        "out",
        &format!("commit = \"{one}\""),
    )]);
    let run = ws.expect(["run", "plan.toml"], 1);
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!("`v1` resolves to {two}, but the plan pins {one}")),
        "{stderr}"
    );
    assert!(!ws.path().join("out").exists());
    let text = ws.expect(["plan", "plan.toml"], 0).stdout();
    assert!(text.contains("but the plan pins"), "{text}");
}

#[test]
fn submodules_are_checked_out_at_their_pinned_tags() {
    let ws = Workspace::new();
    let lib_a = ws.path().join("lib_a");
    let lib_b = ws.path().join("lib_b");
    let (a_one, _) = make_repo(&lib_a);
    let (_, b_two) = make_repo(&lib_b);
    let sup = ws.path().join("env");
    std::fs::create_dir_all(&sup).unwrap();
    git(&sup, &["init", "-q"]);
    git(
        &sup,
        &["submodule", "add", "-q", lib_a.to_str().unwrap(), "a"],
    );
    git(&ws.path().join("env/a"), &["checkout", "-q", "v1"]);
    // By a URL relative to the superproject's, as hosted repositories often
    // are: the checkout resolves it against its `origin`.
    git(&sup, &["submodule", "add", "-q", "../lib_b", "b"]);
    git(&ws.path().join("env/b"), &["checkout", "-q", "v2"]);
    git(&sup, &["add", "-A"]);
    git(&sup, &["commit", "-q", "-m", "pin libs"]);
    git(&sup, &["tag", "prod-1"]);
    // The libraries move on after the pin: the checkout must not follow.
    std::fs::write(lib_a.join("file"), "v3\n").unwrap();
    git(&lib_a, &["commit", "-q", "-am", "three"]);
    ws.write_plan(&[git_step("env", "env", "prod-1", "deployed", "")]);
    ws.expect(["run", "plan.toml"], 0);
    assert_eq!(ws.read("deployed/a/file"), "v1\n");
    assert_eq!(ws.read("deployed/b/file"), "v2\n");
    assert_eq!(
        git(&ws.path().join("deployed/a"), &["rev-parse", "HEAD"]),
        a_one
    );
    assert_eq!(
        git(&ws.path().join("deployed/b"), &["rev-parse", "HEAD"]),
        b_two
    );
}

#[test]
fn a_resumed_run_keeps_the_frozen_commit_after_the_tag_moved() {
    let ws = Workspace::new();
    let repo = ws.path().join("repo");
    let (one, two) = make_repo(&repo);
    let plan = format!(
        "{HEADER}{}\n[[step]]\nid = \"after\"\nphase = \"restore\"\naction = \"command\"\nshell = \"test -e go\"\ntimeout = \"1m\"\nneeds = [\"cfg\"]\n",
        git_step("cfg", "repo", "v1", "out", "")
    );
    ws.write("plan.toml", &plan);
    ws.expect(["run", "plan.toml"], 1);
    // The tag moves, and the checkout is lost (the step is made in doubt, as a
    // crash right after its checkout would leave it): the resume checks out again.
    git(&repo, &["tag", "-f", "-a", "v1", "-m", "moved", &two]);
    ws.make_in_doubt("cfg");
    std::fs::remove_dir_all(ws.path().join("out")).unwrap();
    ws.write("go", "");
    ws.expect(["resume"], 0);
    assert_eq!(ws.read("out/file"), "v1\n");
    assert_eq!(ws.outputs("cfg")["commit"], one.as_str());
}

#[test]
fn a_failed_checkout_leaves_dest_as_it_was() {
    let ws = Workspace::new();
    make_repo(&ws.path().join("repo"));
    std::fs::create_dir_all(ws.path().join("out")).unwrap();
    std::fs::write(ws.path().join("out/keep.txt"), "precious").unwrap();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    ws.write_plan(&[git_step("cfg", "repo", missing, "out", "")]);
    ws.expect(["run", "plan.toml"], 1);
    assert_eq!(ws.read("out/keep.txt"), "precious");
    let leftovers: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("phoenix-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary checkouts are removed");
    // And a good checkout replaces the old tree whole.
    ws.write_plan(&[git_step("cfg", "repo", "v2", "out", "")]);
    ws.expect(["run", "plan.toml"], 0);
    assert!(!ws.path().join("out/keep.txt").exists());
    assert_eq!(ws.read("out/file"), "v2\n");
}

/// Only the pinned commit's tree is fetched where the remote can do it: a
/// configuration repository's whole history used to be cloned on every
/// rebuild, and its size added to the RTO. Where it cannot (a bundle here
/// takes the tag whole; a tag moved since the run froze its commit), the
/// checkout is the same, from a whole clone.
#[test]
fn a_checkout_fetches_only_the_pinned_commit_where_it_can() {
    let ws = Workspace::new();
    let repo = ws.path().join("repo");
    let (one, two) = make_repo(&repo);
    for n in 3..6 {
        std::fs::write(repo.join("file"), format!("v{n}\n")).unwrap();
        git(&repo, &["commit", "-q", "-am", "more"]);
    }
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}{}",
            git_step("tag", "repo", "v2", "by-tag", ""),
            git_step("id", "repo", &one, "by-id", "")
        ),
    );
    ws.expect(["run", "plan.toml"], 0);
    for (dest, commit, content) in [("by-tag", &two, "v2\n"), ("by-id", &one, "v1\n")] {
        let checkout = ws.path().join(dest);
        assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), *commit);
        assert_eq!(ws.read(format!("{dest}/file")), content);
        assert!(checkout.join(".git/shallow").exists(), "{dest}: shallow");
        assert_eq!(
            git(&checkout, &["rev-list", "--count", "HEAD"]),
            "1",
            "{dest}"
        );
        assert_eq!(
            git(&checkout, &["remote", "get-url", "origin"]),
            repo.display().to_string(),
            "{dest}: origin named as a clone names it"
        );
    }
}

const CANARY: &str = "tpl-secret-Kx93";

#[test]
fn templates_render_files_and_trees_with_secrets_masked_elsewhere() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("tpl/conf.d")).unwrap();
    ws.write("tpl/main.conf", "listen = {{ vars.port }}\npassword = {{ secrets.db }}\nfrom = {{ steps.make.outputs.host }}\n{% if run.drill %}drill = yes{% endif %}\n");
    ws.write("tpl/conf.d/extra.conf", "name = {{ plan.name }}\n");
    ws.write("single.tpl", "port={{ vars.port + 1 }}\n");
    ws.write("cred.tpl", "password={{ secrets.db }}\n");
    let plan = format!(
        "{HEADER}\n[vars]\nport = 5432\n\n[secrets]\ndb = {{ env = \"TPL_SECRET\" }}\n
[[step]]
id = \"make\"
phase = \"provision\"
action = \"command\"
shell = \"echo host=db1 >> $PHOENIX_OUTPUT\"
timeout = \"1m\"

[[step]]
id = \"tree\"
phase = \"configure\"
action = \"template\"
source = \"tpl\"
dest = \"rendered\"
mode = \"0640\"
needs = [\"make\"]
timeout = \"1m\"

[[step]]
id = \"one\"
phase = \"configure\"
action = \"template\"
source = \"single.tpl\"
dest = \"out/single.conf\"
timeout = \"1m\"

[[step]]
id = \"cred\"
phase = \"configure\"
action = \"template\"
source = \"cred.tpl\"
dest = \"out/cred.conf\"
timeout = \"1m\"
"
    );
    ws.write("plan.toml", &plan);
    let run = ws
        .phoenix()
        .env("TPL_SECRET", CANARY)
        .args(["run", "plan.toml", "--drill"])
        .run()
        .expect_code(0);
    let main = ws.read("rendered/main.conf");
    assert_eq!(
        main,
        format!("listen = 5432\npassword = {CANARY}\nfrom = db1\ndrill = yes\n")
    );
    assert_eq!(ws.read("rendered/conf.d/extra.conf"), "name = t\n");
    assert_eq!(ws.read("out/single.conf"), "port=5433\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(ws.path().join("rendered/main.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    // Without `mode`: 0644, but 0600 for a file that holds a secret.
    let mode = |name: &str| {
        std::fs::metadata(ws.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("out/single.conf"), 0o644);
    assert_eq!(mode("out/cred.conf"), 0o600);
    let out = ws.outputs("tree");
    assert_eq!(out["files"], "2");
    assert_eq!(out["sha256"].as_str().unwrap().len(), 64);
    // The rendered secret is in the rendered file only.
    assert!(!run.stderr().contains(CANARY) && !run.stdout().contains(CANARY));
    let report = ws
        .phoenix()
        .args(["report", "--format", "json"])
        .run()
        .stdout();
    assert!(!report.contains(CANARY));
    for entry in walk(&ws.state()) {
        assert!(
            !std::fs::read_to_string(&entry)
                .unwrap_or_default()
                .contains(CANARY),
            "{}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_undefined_name_in_a_template_fails_with_file_and_line() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("tpl")).unwrap();
    ws.write("tpl/app.conf", "a = 1\nb = {{ vars.nope }}\n");
    ws.write(
        "plan.toml",
        &format!("{HEADER}\n[[step]]\nid = \"t\"\nphase = \"configure\"\naction = \"template\"\nsource = \"tpl\"\ndest = \"out\"\ntimeout = \"1m\"\n"),
    );
    let run = ws.expect(["run", "plan.toml"], 1);
    assert!(
        run.stderr().contains("template `tpl/app.conf` line 2: "),
        "{}",
        run.stderr()
    );
    // A single file is named the same way (it was named ``).
    ws.write(
        "single.toml",
        &format!("{HEADER}\n[[step]]\nid = \"t\"\nphase = \"configure\"\naction = \"template\"\nsource = \"tpl/app.conf\"\ndest = \"out.conf\"\ntimeout = \"1m\"\n"),
    );
    let single = ws.expect(["run", "single.toml"], 1);
    assert!(
        single.stderr().contains("template `tpl/app.conf` line 2: "),
        "{}",
        single.stderr()
    );
    assert!(
        !ws.path().join("out").exists(),
        "nothing is written when a file fails"
    );
    assert_eq!(state_of(&ws.status(), "t"), "failed");
}

/// A template tree is made again as `cp -r` would copy it, rendered: a
/// configuration repository holds scripts, links between its files, empty
/// directories and the odd binary file, and each used to be lost without a
/// word (a script's execute bit, a link, a directory) or to fail the step (a
/// binary file).
#[test]
fn a_template_tree_keeps_modes_links_directories_and_binary_files() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let ws = Workspace::new();
    let tpl = ws.path().join("tpl");
    for dir in ["bin", "sites-available", "sites-enabled", "empty", ".git"] {
        std::fs::create_dir_all(tpl.join(dir)).unwrap();
    }
    ws.write(
        "tpl/bin/start.sh",
        "#!/bin/sh\nexec app --port {{ vars.port }}\n",
    );
    ws.write(
        "tpl/bin/secret.sh",
        "#!/bin/sh\nTOKEN={{ secrets.token }}\n",
    );
    for script in ["tpl/bin/start.sh", "tpl/bin/secret.sh"] {
        std::fs::set_permissions(
            ws.path().join(script),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    ws.write("tpl/sites-available/default", "listen {{ vars.port }}\n");
    symlink(
        "../sites-available/default",
        tpl.join("sites-enabled/default"),
    )
    .unwrap();
    symlink("/run/secrets/app", tpl.join("credentials")).unwrap();
    let binary = [0u8, 159, 146, 150, b'{', b'{', 0, 255];
    std::fs::write(tpl.join("keystore.jks"), binary).unwrap();
    ws.write("tpl/.git/HEAD", "ref: refs/heads/main {{ nope }}\n");
    let plan = format!(
        "{HEADER}\n[vars]\nport = 8080\n\n[secrets]\ntoken = {{ env = \"TPL_SECRET\" }}\n
[[step]]
id = \"tree\"
phase = \"configure\"
action = \"template\"
source = \"tpl\"
dest = \"out\"
timeout = \"1m\"
"
    );
    ws.write("plan.toml", &plan);
    let run = |code| {
        ws.phoenix()
            .env("TPL_SECRET", CANARY)
            .args(["run", "plan.toml"])
            .run()
            .expect_code(code)
    };
    run(0);
    let out = ws.path().join("out");
    let mode = |name: &str| {
        std::fs::symlink_metadata(out.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        ws.read("out/bin/start.sh"),
        "#!/bin/sh\nexec app --port 8080\n"
    );
    assert_eq!(mode("bin/start.sh"), 0o755, "a script stays executable");
    assert_eq!(
        mode("bin/secret.sh"),
        0o700,
        "the owner's alone: it holds a secret"
    );
    assert_eq!(mode("sites-available/default"), 0o644);
    assert_eq!(
        std::fs::read_link(out.join("sites-enabled/default")).unwrap(),
        Path::new("../sites-available/default")
    );
    assert_eq!(ws.read("out/sites-enabled/default"), "listen 8080\n");
    assert_eq!(
        std::fs::read_link(out.join("credentials")).unwrap(),
        Path::new("/run/secrets/app"),
        "a link is made as it is, not followed"
    );
    assert!(out.join("empty").is_dir());
    assert_eq!(std::fs::read(out.join("keystore.jks")).unwrap(), binary);
    assert!(
        !out.join(".git").exists(),
        "git's own files are no configuration"
    );
    assert_eq!(ws.outputs("tree")["files"], "4");
    // Rendered again over its own result: the same.
    run(0);
    assert_eq!(ws.read("out/sites-enabled/default"), "listen 8080\n");
    // A link left in `dest` where the tree has a directory is not written
    // through.
    let elsewhere = ws.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir_all(out.join("sites-available")).unwrap();
    symlink(&elsewhere, out.join("sites-available")).unwrap();
    let refused = run(1);
    assert!(
        refused
            .stderr()
            .contains("a symbolic link: the template's files would be written where it points"),
        "{}",
        refused.stderr()
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // A text file that is not UTF-8 fails, named with its line; nothing of
    // the tree is written.
    std::fs::remove_file(out.join("sites-available")).unwrap();
    std::fs::write(tpl.join("latin1.conf"), b"a = 1\nname = caf\xe9\n").unwrap();
    let latin = run(1);
    assert!(
        latin
            .stderr()
            .contains("template `tpl/latin1.conf` line 2: not UTF-8 text"),
        "{}",
        latin.stderr()
    );
    assert!(!out.join("sites-available").exists());
    // An empty tree still makes its directory, as `cp -r` does.
    std::fs::create_dir(ws.path().join("empty-tpl")).unwrap();
    ws.write(
        "empty.toml",
        &format!("{HEADER}\n[[step]]\nid = \"e\"\nphase = \"configure\"\naction = \"template\"\nsource = \"empty-tpl\"\ndest = \"empty-out\"\ntimeout = \"1m\"\n"),
    );
    ws.expect(["run", "empty.toml"], 0);
    assert!(ws.path().join("empty-out").is_dir());
}

/// Over ssh, git runs in batch mode: on a rebuilt machine with no
/// `known_hosts`, plain ssh would ask on the terminal and hang the step. An
/// ssh command the operator chose is left as it is. A stand-in `ssh` on the
/// `PATH` records how git called it.
#[test]
fn git_over_ssh_never_asks_at_the_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let bin = ws.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, record) in [("ssh", "ssh.args"), ("my-ssh", "my-ssh.args")] {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$@\" > '{}'\necho 'Host key verification failed.' >&2\nexit 255\n",
                ws.path().join(record).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}",
            git_step(
                "cfg",
                "ssh://git@127.0.0.1:2222/config.git",
                "v1",
                "out",
                ""
            )
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Git's own configuration kept out: the person running the tests may
    // have an ssh command there.
    let phoenix = || {
        ws.phoenix()
            .env("PATH", &path)
            .env("HOME", ws.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["run", "plan.toml"])
    };
    let run = phoenix().run().expect_code(1);
    assert!(
        run.stderr().contains("Host key verification failed"),
        "{}",
        run.stderr()
    );
    assert!(
        ws.read("ssh.args").contains("-o BatchMode=yes"),
        "{}",
        ws.read("ssh.args")
    );

    let run = phoenix()
        .env("GIT_SSH_COMMAND", "my-ssh")
        .run()
        .expect_code(1);
    let args = ws.read("my-ssh.args");
    assert!(!args.contains("BatchMode"), "{args}\n{}", run.stderr());
}

/// An annotated tag in a bundle is resolved in a scratch repository in the
/// temporary directory. A process killed in the middle (a crash, `--chaos
/// kill`) left it there, with what it had fetched: one per crash, never
/// removed. The next resolve removes those of processes that are gone, and
/// leaves its own and those of live processes alone.
#[test]
fn scratch_repositories_left_by_a_killed_process_are_removed() {
    let ws = Workspace::new();
    let tmp = ws.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // A process id that is certainly gone: a child waited for.
    let gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let _ = { gone }.wait();
    let stale = tmp.join(format!("phoenix-resolve-{gone_pid}-0123456789ab"));
    let live = tmp.join(format!(
        "phoenix-resolve-{}-0123456789ab",
        std::process::id()
    ));
    let other = tmp.join("phoenix-resolved-notes");
    for dir in [&stale, &live, &other] {
        std::fs::create_dir_all(dir.join("objects")).unwrap();
    }
    let plan = crate::common::repo_root().join("plans/demo.toml");
    let run = crate::common::Phoenix::new(ws.path())
        .env("TMPDIR", &tmp)
        .args(["plan".as_ref(), plan.as_os_str()])
        .run()
        .expect_code(0);
    assert!(
        run.stdout().contains("`v1.2.0` resolves to"),
        "{}",
        run.stdout()
    );
    let mut left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "phoenix-resolve-".to_string() + &format!("{}-0123456789ab", std::process::id()),
            "phoenix-resolved-notes".to_string()
        ]
    );
}

/// Serves `root` over git's dumb HTTP protocol (plain files), answering 401
/// to a request without `authorization`; records what each request was
/// authorized with.
fn dumb_http(
    root: std::path::PathBuf,
    authorization: &str,
) -> (HttpServer, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let expected = authorization.to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = HttpServer::start(move |request| {
        let authorization = request.header("authorization").unwrap_or("");
        record.lock().unwrap().push(authorization.to_string());
        if authorization != expected {
            return (
                401,
                "www-authenticate: Basic realm=\"t\"\r\n".into(),
                Vec::new(),
            );
        }
        let file = root.join(
            request
                .path
                .split('?')
                .next()
                .unwrap()
                .trim_start_matches('/'),
        );
        match std::fs::read(&file) {
            Ok(body) if file.is_file() => (200, String::new(), body),
            _ => (404, String::new(), Vec::new()),
        }
    });
    (server, seen)
}

/// Credentials written into a repository's URL (a token from the plan's
/// secrets) reach the server, but not git's command line (which `ps` shows
/// every user of the machine) nor the checkout's `.git/config`.
#[test]
fn credentials_in_a_repository_url_stay_out_of_git_arguments_and_the_checkout() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let (one, _) = make_repo(&ws.path().join("repo"));
    git(
        ws.path(),
        &["clone", "-q", "--bare", "repo", "served/config.git"],
    );
    git(
        &ws.path().join("served/config.git"),
        &["update-server-info"],
    );
    // `oauth2:s3cr3t/tok` as the user and password: Basic b2F1dGgyOnMzY3IzdC90b2s=.
    let (server, seen) = dumb_http(ws.path().join("served"), "Basic b2F1dGgyOnMzY3IzdC90b2s=");
    // A git that writes down how it was called, then runs the real one.
    let bin = ws.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec {} \"$@\"\n",
            ws.path().join("git.args").display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = format!(
        "http://oauth2:{{{{ secrets.token }}}}@127.0.0.1:{}/config.git",
        server.port
    );
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"GIT_TOKEN\" }}\n{}",
            git_step("cfg", &url, "v1", "out", "")
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = ws
        .phoenix()
        .env("PATH", &path)
        .env("GIT_TOKEN", "s3cr3t%2Ftok")
        .env("HOME", ws.path())
        .args(["run", "plan.toml"])
        .run();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(ws.outputs("cfg")["commit"], one);
    assert_eq!(ws.read("out/file"), "v1\n");
    let args = ws.read("git.args");
    assert!(
        args.contains(&format!("http://127.0.0.1:{}/config.git", server.port)),
        "{args}"
    );
    let config = ws.read("out/.git/config");
    assert!(
        config.contains(&format!(
            "url = http://127.0.0.1:{}/config.git",
            server.port
        )),
        "{config}"
    );
    for (what, text) in [
        ("git's arguments", &args),
        ("the checkout's config", &config),
    ] {
        assert!(
            !text.contains("s3cr3t") && !text.contains("b2F1dGgy"),
            "the token in {what}: {text}"
        );
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|auth| auth.starts_with("Basic ")),
        "{seen:?}"
    );
    assert!(server
        .paths
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.contains("info/refs")));
}
