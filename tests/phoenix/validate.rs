//! `phoenix validate`: the fixture corpus, one expected diagnostic list per plan,
//! and the command's formats and exit codes.

use std::path::Path;

use crate::common::{fixtures, repo_root, Phoenix};

/// Every `NAME.toml` under `dir` with its `NAME.expected`: the exact lines
/// `LINE:COL: severity: message` that validate prints for it.
fn check_corpus(dir: &Path, expected_code: i32) -> usize {
    let mut plans: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    plans.sort();
    let mut failures = Vec::new();
    for plan in &plans {
        let expected = std::fs::read_to_string(plan.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", plan.display()));
        let run = Phoenix::new(dir).args(["validate"]).arg_path(plan).run();
        let prefix = format!("{}:", plan.display());
        let actual: Vec<String> = run
            .stderr()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect();
        let expected: Vec<String> = expected.lines().map(str::to_string).collect();
        if actual != expected || run.code() != expected_code {
            failures.push(format!(
                "{}: exit {} (want {expected_code})\n  expected: {expected:#?}\n  actual:   {actual:#?}",
                plan.display(),
                run.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    plans.len()
}

trait ArgPath {
    fn arg_path(self, path: &Path) -> Self;
}

impl ArgPath for Phoenix {
    fn arg_path(self, path: &Path) -> Self {
        self.args([path])
    }
}

#[test]
fn invalid_plans_report_exactly_their_diagnostics() {
    let count = check_corpus(&fixtures().join("invalid"), 1);
    assert!(count >= 40, "the invalid corpus has only {count} plans");
}

#[test]
fn valid_plans_report_only_their_warnings() {
    check_corpus(&fixtures().join("valid"), 0);
}

#[test]
fn every_plan_in_plans_validates() {
    let dir = repo_root().join("plans");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let run = Phoenix::new(&dir).args(["validate"]).arg_path(&path).run();
            assert_eq!(run.code(), 0, "{}:\n{}", path.display(), run.stderr());
            assert!(!run.stderr().contains("error:"), "{}", run.stderr());
            count += 1;
        }
    }
    assert!(count > 0);
}

#[test]
fn json_format_lists_every_problem_on_stdout() {
    let plan = fixtures().join("invalid/needs-unknown.toml");
    let run = Phoenix::new(&repo_root())
        .args(["validate", "--format", "json"])
        .arg_path(&plan)
        .run()
        .expect_code(1);
    let diags: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let first = &diags[0];
    assert_eq!(first["line"], 17);
    assert_eq!(first["column"], 10);
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "unknown-step");
    assert_eq!(first["file"], plan.display().to_string());
    assert!(first["message"]
        .as_str()
        .unwrap()
        .contains("did you mean `network`?"));

    // With `--log-format json`, a command refusing the plan says so in JSON
    // lines on stderr, diagnostics included, as a run's events are.
    let run = Phoenix::new(&repo_root())
        .args(["--log-format", "json", "run"])
        .arg_path(&plan)
        .run()
        .expect_code(1);
    let events = run.stderr_events();
    assert_eq!(events[0]["event"], "diagnostic");
    assert_eq!(events[0]["code"], "unknown-step");
    assert_eq!(events.last().unwrap()["event"], "error");
}

#[test]
fn all_problems_are_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("many.toml");
    std::fs::write(
        &plan,
        r#"version = 1
[plan]
name = "many"
rto = "1m"
rpo = "1m"

[[step]]
id = "a"
phase = "provison"
action = "noop"

[[step]]
id = "b"
phase = "provision"
action = "command"
run = ["echo", "{{ vars.nope }}"]
needs = ["zz", "b"]
timeout = "1x"
"#,
    )
    .unwrap();
    let run = Phoenix::new(dir.path())
        .args(["validate", "many.toml"])
        .run()
        .expect_code(1);
    let stderr = run.stderr();
    for expected in [
        "many.toml:9:9: error: step `a`: unknown phase `provison`",
        "many.toml:16:17: error: unknown var `nope`",
        "many.toml:17:10: error: step `b` needs unknown step `zz`",
        "many.toml:17:16: error: step `b` needs itself",
        "many.toml:18:11: error: `timeout` in step `b`: invalid duration `1x`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn vars_files_and_overrides_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "version = 1\n[plan]\nname = \"v\"\nrto = \"1m\"\nrpo = \"1m\"\n[vars]\nregion = \"eu\"\nreplicas = 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("vars.toml"),
        "region = \"us\"\nregoin = \"x\"\n",
    )
    .unwrap();
    // Typed in the file, so held to the declared type as `--var` is.
    std::fs::write(
        dir.path().join("typed.toml"),
        "replicas = \"3\"\nregion = 7\n",
    )
    .unwrap();
    let run = Phoenix::new(dir.path())
        .args([
            "validate",
            "p.toml",
            "--vars",
            "vars.toml",
            "--vars",
            "typed.toml",
            "--var",
            "replicas=many",
        ])
        .run()
        .expect_code(1);
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "typed.toml:1:1: error: var `replicas` is a number: found a string (`\"3\"`)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("typed.toml:2:1: error: var `region` is a string: found a number (`7`)"),
        "{stderr}"
    );
    assert!(stderr.contains("vars.toml:2:1: error: unknown var `regoin`: the plan declares no such var in `[vars]`; did you mean `region`?"), "{stderr}");
    assert!(
        stderr.contains("--var:1:1: error: var `replicas` is a number: `many` is not one"),
        "{stderr}"
    );
    Phoenix::new(dir.path())
        .args([
            "validate",
            "p.toml",
            "--var",
            "replicas=3",
            "--var",
            "region=ap",
        ])
        .run()
        .expect_code(0);
    Phoenix::new(dir.path())
        .args(["validate", "p.toml", "--var", "noequals"])
        .run()
        .expect_code(2);
    // A vars file in another encoding: where its first bad byte is.
    std::fs::write(
        dir.path().join("latin1.toml"),
        b"region = \"s\xe3o-paulo\"\n",
    )
    .unwrap();
    let run = Phoenix::new(dir.path())
        .args(["validate", "p.toml", "--vars", "latin1.toml"])
        .run()
        .expect_code(1);
    assert!(
        run.stderr().contains(
            "latin1.toml:1:12: error: invalid UTF-8: a vars file is TOML, which must be UTF-8 text"
        ),
        "{}",
        run.stderr()
    );
    // Broken TOML: where, and what is wrong there.
    std::fs::write(
        dir.path().join("broken.toml"),
        "region = \"eu\nreplicas = 3\n",
    )
    .unwrap();
    let run = Phoenix::new(dir.path())
        .args(["validate", "p.toml", "--vars", "broken.toml"])
        .run()
        .expect_code(1);
    assert!(
        run.stderr()
            .contains("broken.toml:1:13: error: invalid TOML in vars file: invalid basic string"),
        "{}",
        run.stderr()
    );
}

#[test]
fn unreadable_plan_is_a_usage_error() {
    let run = Phoenix::new(&repo_root())
        .args(["validate", "no/such/plan.toml"])
        .run()
        .expect_code(2);
    assert!(
        run.stderr()
            .contains("error: cannot read `no/such/plan.toml`"),
        "{}",
        run.stderr()
    );
    // The plans around it are checked all the same; the code is still 2.
    let run = Phoenix::new(&repo_root())
        .args([
            "validate",
            "plans/demo.toml",
            "no/such/plan.toml",
            "plans/shop.toml",
        ])
        .run()
        .expect_code(2);
    for line in [
        "`plans/demo.toml`: valid plan `demo`",
        "error: cannot read `no/such/plan.toml`",
        "`plans/shop.toml`: valid plan `shop`",
    ] {
        assert!(run.stderr().contains(line), "{line}\n{}", run.stderr());
    }
    // In JSON, for a CI job that reads only the array, the file is an entry.
    let run = Phoenix::new(&repo_root())
        .args([
            "validate",
            "plans/demo.toml",
            "no/such/plan.toml",
            "--format",
            "json",
        ])
        .run()
        .expect_code(2);
    let entries: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["file"], "no/such/plan.toml");
    assert_eq!(entries[0]["code"], "unreadable");
    assert_eq!(entries[0]["severity"], "error");
    assert_eq!(entries[0]["line"], 1);
}

#[test]
fn validate_needs_no_secret_values() {
    // `plans/shop.toml` reads a secret from an env var and a file that do not
    // exist here: validation must not look.
    Phoenix::new(&repo_root())
        .args(["validate", "plans/shop.toml"])
        .run()
        .expect_code(0);
}

#[test]
fn a_setting_that_does_not_parse_is_said() {
    // `PHOENIX_KILL_GRACE=30` has no unit: it used to mean the default, 10s,
    // without a word.
    let run = Phoenix::new(&repo_root())
        .args(["validate", "plans/demo.toml"])
        .env("PHOENIX_KILL_GRACE", "30")
        .env("PHOENIX_LOG_LIMIT", "lots")
        .env("PHOENIX_PART_TIMEOUT", "2m")
        .run()
        .expect_code(0);
    let stderr = run.stderr();
    assert!(
        stderr.contains("warning: `PHOENIX_KILL_GRACE=30` is not a duration such as `30s` or `2m`: using the default, 10s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: `PHOENIX_LOG_LIMIT=lots` is not a size"),
        "{stderr}"
    );
    assert!(!stderr.contains("PHOENIX_PART_TIMEOUT"), "{stderr}");
}
