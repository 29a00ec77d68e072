//! The secret canary: a secret printed every way a step can print it must not
//! appear in any file of the state or in anything phoenix prints.

use crate::common::{shell_step, state_of, Workspace, HEADER};

const CANARY: &str = "canary-Zx81-SECRET";
const FILE_CANARY: &str = "file-canary-Qq77";

/// The files under `dir` that contain any of `needles`.
fn files_containing(dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                if needles.iter().any(|n| text.contains(n)) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

fn assert_no_canary_in_state(ws: &Workspace) {
    let found = files_containing(&ws.state(), &[CANARY, FILE_CANARY]);
    assert!(found.is_empty(), "secrets in state files: {found:?}");
}

/// `phoenix ARGS` with the canary as `CANARY_TOKEN`, expected to exit `code`.
fn with_canary(ws: &Workspace, args: &[&str], code: i32) -> crate::common::Run {
    ws.phoenix()
        .env("CANARY_TOKEN", CANARY)
        .args(args)
        .run()
        .expect_code(code)
}

#[test]
fn secrets_never_reach_state_logs_or_output() {
    let ws = Workspace::new();
    ws.write("secret.txt", &format!("{FILE_CANARY}\n"));
    let plan = format!(
        "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\nfromfile = {{ file = \"secret.txt\" }}\n{}{}{}{}{}",
        shell_step("interpolated", "provision", "echo token={{ secrets.token }}; echo to stderr {{ secrets.token }} >&2", ""),
        shell_step("from_env", "provision", "echo $CANARY_TOKEN; printf '%s' \"$CANARY_TOKEN\" | head -c 5; echo", ""),
        shell_step("as_output", "provision", "echo leaked={{ secrets.token }} >> \"$PHOENIX_OUTPUT\"", ""),
        shell_step("fails", "configure", "echo {{ secrets.fromfile }}; exit 1", "needs = [\"as_output\"]"),
        "\n[[step]]\nid = \"http_fails\"\nphase = \"provision\"\naction = \"http\"\nurl = \"http://127.0.0.1:9/{{ secrets.token }}\"\ntimeout = \"10s\"\n",
    );
    ws.write("plan.toml", &plan);
    let mut output = String::new();
    for format in ["text", "json"] {
        let run = ws
            .phoenix()
            .env("CANARY_TOKEN", CANARY)
            .args([
                "run",
                "plan.toml",
                "--keep-going",
                "--log-format",
                format,
                "-v",
            ])
            .run()
            .expect_code(1);
        if format == "json" {
            // Every line a JSON object, the closing summary included.
            run.stderr_events();
            assert!(run.stderr().contains("\"event\":\"run_summary\""));
        }
        output.push_str(&run.stdout());
        output.push_str(&run.stderr());
    }
    for args in [vec!["status"], vec!["status", "--format", "json"]] {
        let run = ws.phoenix().args(&args).run();
        output.push_str(&run.stdout());
        output.push_str(&run.stderr());
    }
    assert!(output.contains("***"), "masking is visible: {output}");
    assert!(
        output.contains("output `leaked` holds a secret's value"),
        "{output}"
    );
    assert!(
        !output.contains(CANARY) && !output.contains(FILE_CANARY),
        "a secret reached the output:\n{output}"
    );
    assert_no_canary_in_state(&ws);
    // The masked output is still there, so the test would have seen a leak.
    let status = ws.status();
    let as_output = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "as_output")
        .unwrap();
    assert_eq!(as_output["outputs"]["leaked"], "***");
}

/// Output comes in reads of whatever the pipe holds: a secret that arrives
/// across two of them, or sits where a long line is cut, is masked all the
/// same, and a secret of several lines is masked whole.
#[test]
fn secrets_split_between_reads_are_masked() {
    let ws = Workspace::new();
    ws.write(
        "key.pem",
        "-----BEGIN KEY-----\nQq77-key-body\n-----END KEY-----\n",
    );
    // A line longer than the 64 KB the log copier holds, in two writes, the
    // second ending just past a secret; then a key of three lines, printed
    // with a pause inside it.
    let long_line = "python3 -c \"import os,sys,time; w=sys.stdout.write; f=sys.stdout.flush; \
        w('y'*65000); f(); time.sleep(0.3); w('y'*600+os.environ['CANARY_TOKEN']+'zzzzz'); f(); \
        time.sleep(0.3); w('\\n')\"";
    let key = "printf 'key: -----BEGIN KEY-----\\nQq77-key-body\\n'; sleep 0.3; \
        printf -- '-----END KEY----- done\\n'";
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\nkey = {{ file = \"key.pem\" }}\n{}{}",
            shell_step("long_line", "provision", long_line, ""),
            shell_step("key", "provision", key, ""),
        ),
    );
    ws.phoenix()
        .env("CANARY_TOKEN", CANARY)
        .args(["run", "plan.toml"])
        .run()
        .expect_code(0);
    let logs = ws.run_dir().join("logs");
    let long = std::fs::read_to_string(logs.join("long_line.1.log")).unwrap();
    assert!(
        long.ends_with(&format!("{}***zzzzz\n", "y".repeat(600))),
        "{}",
        &long[long.len().saturating_sub(100)..]
    );
    let key = std::fs::read_to_string(logs.join("key.1.log")).unwrap();
    assert_eq!(key, "key: *** done\n");
    assert_no_canary_in_state(&ws);
}

/// A `check` prints what it probes, through the masker like a step's output.
#[test]
fn a_checks_output_is_masked() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\n{}",
            shell_step(
                "checked",
                "provision",
                "true",
                "check = [\"sh\", \"-c\", \"echo check sees {{ secrets.token }}; echo and $CANARY_TOKEN >&2\"]"
            ),
        ),
    );
    let phoenix = |args: &[&str], code: i32| with_canary(&ws, args, code);
    phoenix(&["run", "plan.toml"], 0);
    // In doubt, as after a crash: the resume runs the check.
    ws.crash_before_finishes();
    let resumed = phoenix(&["resume"], 0);
    assert!(
        resumed.stderr().contains("its check passed"),
        "{}",
        resumed.stderr()
    );
    let log = std::fs::read_to_string(ws.run_dir().join("logs/checked.check.log")).unwrap();
    assert_eq!(log, "check sees ***\nand ***\n");
    // `phoenix logs STEP --check` prints it.
    let shown = phoenix(&["logs", "checked", "--check"], 0);
    assert_eq!(shown.stdout(), log);
    assert_no_canary_in_state(&ws);
}

/// An approval gate's prompt may name a secret: masked where it is shown,
/// journaled and reported.
#[test]
fn an_approval_prompt_is_masked() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\n\n[[step]]\nid = \"gate\"\nphase = \"provision\"\naction = \"approval\"\nprompt = \"Rotate {{{{ secrets.token }}}} now?\"\n"
        ),
    );
    let paused = ws
        .phoenix()
        .env("CANARY_TOKEN", CANARY)
        .args(["run", "plan.toml"])
        .run()
        .expect_code(3);
    let mut output = paused.stdout() + &paused.stderr();
    assert!(output.contains("Rotate *** now?"), "{output}");
    for args in [vec!["status"], vec!["report", "--format", "json"]] {
        let run = ws.phoenix().args(&args).run();
        output.push_str(&run.stdout());
        output.push_str(&run.stderr());
    }
    assert!(
        !output.contains(CANARY),
        "a secret reached the output:\n{output}"
    );
    assert_no_canary_in_state(&ws);
}

/// A secret that is also a word of the journal's own (here the record type
/// `finished`, and a run id's digits) is masked in what steps print, and the
/// journal stays readable: masking the serialized lines once turned every
/// `"type":"finished"` into `"type":"***"`, and the run could not be read.
/// A `--var` holding the secret is kept as given, with a warning, so that a
/// resume resolves the plan as the run did.
#[test]
fn a_secret_that_is_also_a_word_of_the_journal_leaves_it_readable() {
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}\n[vars]\nhost = \"db\"\n\n[secrets]\nword = {{ env = \"WORD\" }}\npin = {{ env = \"PIN\" }}\n{}{}",
        shell_step(
            "says",
            "provision",
            "echo it {{ secrets.word }} with {{ secrets.pin }}; echo said={{ secrets.word }} >> \"$PHOENIX_OUTPUT\"",
            ""
        ),
        shell_step("after", "configure", "test -e {{ vars.host }}.ok", "needs = [\"says\"]"),
    );
    ws.write("plan.toml", &plan);
    let phoenix = |args: &[&str], code: i32| {
        ws.phoenix()
            .env("WORD", "finished")
            .env("PIN", "4711")
            .args(args)
            .run()
            .expect_code(code)
    };
    let run = phoenix(
        &[
            "run",
            "plan.toml",
            "--run-id",
            "run-4711",
            "--var",
            "host=db-4711",
        ],
        1,
    );
    assert!(
        run.stderr()
            .contains("the value of var `host` holds a secret's value"),
        "{}",
        run.stderr()
    );
    // The PIN is said to be short, before the logs it makes puzzling; the
    // word (8 characters) is not.
    assert!(
        run.stderr().contains("secret `pin` is only 4 characters long: wherever those characters stand (in a word, a number, a time) they are masked as `***`"),
        "{}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains("secret `word` is only"),
        "{}",
        run.stderr()
    );
    let status = ws.expect(["status", "--format", "json"], 0).stdout();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["run_id"], "run-4711");
    assert_eq!(status["state"], "failed");
    assert_eq!(status["steps"][0]["outputs"]["said"], "***");
    let log = ws.read(".phoenix/runs/run-4711/logs/says.1.log");
    assert_eq!(log, "it *** with ***\n");
    ws.expect(["report", "--format", "json"], 0);

    // The resume reads `db-4711` back, not `db-***`.
    ws.write("db-4711.ok", "");
    let resumed = phoenix(&["resume"], 0);
    assert!(
        !resumed.stderr().contains("changed"),
        "{}",
        resumed.stderr()
    );
}

/// A secret in a URL that the HTTP client percent-encodes (`p@ss word`
/// becomes `p@ss%20word` in its errors) is still masked: the error names
/// the URL as the step rendered it, where the masker finds the value.
#[test]
fn a_secret_percent_encoded_in_a_url_is_masked() {
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"SPACED\" }}\n\n[[step]]\nid = \"call\"\nphase = \"provision\"\naction = \"http\"\nurl = \"http://127.0.0.1:9/x/{{{{ secrets.token }}}}?q={{{{ secrets.token }}}}\"\ntimeout = \"10s\"\n"
        ),
    );
    let run = ws
        .phoenix()
        .env("SPACED", "p@ss wordZq")
        .args(["run", "plan.toml", "-v"])
        .run()
        .expect_code(1);
    let mut output = run.stdout() + &run.stderr();
    assert!(
        output.contains("http://127.0.0.1:9/x/***?q=***"),
        "{output}"
    );
    for args in [vec!["status"], vec!["report", "--format", "json"]] {
        let run = ws.phoenix().args(&args).run();
        output.push_str(&run.stdout());
        output.push_str(&run.stderr());
    }
    assert!(
        !output.contains("wordZq"),
        "a secret reached the output:\n{output}"
    );
    let found = files_containing(&ws.state(), &["wordZq"]);
    assert!(found.is_empty(), "a secret reached the state: {found:?}");
}

#[test]
fn credentials_phoenix_was_given_are_masked_in_what_steps_print() {
    // Phoenix's own AWS keys, or a token a CI job was given: every step
    // inherits them, and one that prints its environment must not write
    // them into its log. (Short placeholders, as tests use, are left alone.)
    const AMBIENT: &str = "ambient-Yk42-credential";
    let ws = Workspace::new();
    ws.write_plan(&[shell_step(
        "prints_env",
        "provision",
        "env | grep -e DEPLOY_TOKEN -e AWS_SECRET; echo \"$SHORT_TOKEN\"; exit 1",
        "",
    )]);
    let run = ws
        .phoenix()
        .env("DEPLOY_TOKEN", AMBIENT)
        .env("AWS_SECRET_ACCESS_KEY", format!("{AMBIENT}-aws"))
        .env("SHORT_TOKEN", "short")
        .args(["run", "plan.toml"])
        .run()
        .expect_code(1);
    let output = run.stderr() + &run.stdout();
    assert!(output.contains("DEPLOY_TOKEN=***"), "{output}");
    assert!(output.contains("AWS_SECRET_ACCESS_KEY=***"), "{output}");
    assert!(output.contains("| short"), "{output}");
    assert!(!output.contains(AMBIENT), "{output}");
    let found = files_containing(&ws.state(), &[AMBIENT]);
    assert!(found.is_empty(), "credentials in state files: {found:?}");
}

#[test]
fn each_line_of_a_key_is_masked_when_part_of_it_is_printed() {
    // A PEM key, a kubeconfig: a step that prints some of its lines (`tail`,
    // a tool that logs it line by line) or an output holding one.
    const LINES: [&str; 2] = [
        "MIIEvQIBADANBgkqhkiG9w0B-canary",
        "AQEFAASCBKcwggSjAgEAAoIB-canary",
    ];
    let ws = Workspace::new();
    ws.write(
        "key.pem",
        &format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
            LINES[0], LINES[1]
        ),
    );
    ws.write_plan(&[
        "\n[secrets]\nkey = { file = \"key.pem\" }\n".to_string(),
        shell_step(
            "prints_part",
            "provision",
            "printf '%s\\n' \"$KEY\" | tail -n 2; exit 1",
            "env = { KEY = \"{{ secrets.key }}\" }",
        ),
        shell_step(
            "as_output",
            "provision",
            "printf '%s\\n' \"$KEY\" | sed -n 2p | sed 's/^/line=/' >> \"$PHOENIX_OUTPUT\"",
            "env = { KEY = \"{{ secrets.key }}\" }",
        ),
    ]);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let output = run.stderr() + &run.stdout();
    assert!(output.contains("| ***"), "{output}");
    for line in LINES {
        assert!(!output.contains(line), "{output}");
    }
    let found = files_containing(&ws.state(), &LINES);
    assert!(
        found.is_empty(),
        "a secret's line in state files: {found:?}"
    );
}

#[test]
fn a_secret_a_step_makes_is_masked_in_what_it_printed() {
    // A password generated during the rebuild, into a file the plan
    // declares as a secret: phoenix cannot know it before the step has
    // run, and masks it in that step's log once it has.
    // (Made by the shell: the plan's text must not hold it.)
    const MADE: &str = "generated-42-Pw-canary";
    let ws = Workspace::new();
    ws.write_plan(&[
        "\n[secrets]\nnew_password = { file = \"password.txt\" }\n".to_string(),
        shell_step(
            "make_password",
            "provision",
            "echo generated-$((6 * 7))-Pw-canary > password.txt; echo \"new password: $(cat password.txt)\"; echo password=$(cat password.txt) >> \"$PHOENIX_OUTPUT\"",
            "",
        ),
        shell_step(
            "use_password",
            "configure",
            "test \"$PW\" = \"$(cat password.txt)\"; echo set",
            "needs = [\"make_password\"]\nenv = { PW = \"{{ secrets.new_password }}\" }",
        ),
    ]);
    let run = ws.expect(["run", "plan.toml", "-v"], 0);
    let output = run.stderr() + &run.stdout();
    assert!(!output.contains(MADE), "{output}");
    let found = files_containing(&ws.state(), &[MADE]);
    assert!(found.is_empty(), "a made secret in state files: {found:?}");
    let logs = ws
        .state()
        .join("runs")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("logs");
    assert_eq!(
        std::fs::read_to_string(logs.join("make_password.1.log")).unwrap(),
        "new password: ***\n"
    );
}

#[test]
fn a_secret_from_an_unset_variable_stops_the_run_before_it_starts() {
    // Known at the start, not when the step that reads it is reached: a
    // resume from a new terminal that was not given the secret is the usual
    // case.
    let ws = Workspace::new();
    ws.write_plan(&[
        "\n[secrets]\npw = { env = \"PHOENIX_TEST_UNSET_PW\" }\nother = { env = \"PHOENIX_TEST_UNSET_OTHER\" }\n".to_string(),
        shell_step("first", "provision", "echo first >> ledger", ""),
        shell_step(
            "reads",
            "configure",
            "test -n \"$PW\" && test -e fixed",
            "needs = [\"first\"]\nenv = { PW = \"{{ secrets.pw }}\" }",
        ),
    ]);
    let refused = ws.expect(["run", "plan.toml"], 2);
    assert!(
        refused.stderr().contains("secret `pw` comes from environment variable `PHOENIX_TEST_UNSET_PW`, which is not set (read by `reads`); set it and run again"),
        "{}",
        refused.stderr()
    );
    assert!(!ws.path().join("ledger").exists(), "nothing ran");
    ws.phoenix()
        .env("PHOENIX_TEST_UNSET_PW", "given-here")
        .args(["run", "plan.toml"])
        .run()
        .expect_code(1);
    ws.write("fixed", "");
    let resume = ws.expect(["resume"], 2);
    assert!(
        resume
            .stderr()
            .contains("(read by `reads`); set it and resume again"),
        "{}",
        resume.stderr()
    );
    ws.phoenix()
        .env("PHOENIX_TEST_UNSET_PW", "given-here")
        .args(["resume"])
        .run()
        .expect_code(0);
    // `other` is read by no step: it need not be set.
    assert_eq!(ws.read("ledger"), "first\n");
}

/// An output that holds a secret's value is journaled masked, and a step
/// that reads it fails, saying why, instead of being given `***` (which in a
/// shell script is a glob): on the first run, after a resume, and for what
/// `resume --output` gives alike. A step that does not read it runs.
#[test]
fn a_step_reading_an_output_that_held_a_secret_fails_instead_of_getting_it_masked() {
    let ws = Workspace::new();
    ws.write("app.conf.tpl", "dsn = {{ steps.made.outputs.url }}\n");
    let template = "\n[[step]]\nid = \"conf\"\nphase = \"configure\"\naction = \"template\"\nsource = \"app.conf.tpl\"\ndest = \"app.conf\"\nneeds = [\"made\"]\ntimeout = \"10s\"\n";
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\n{}{}{}{}{template}",
            shell_step(
                "made",
                "provision",
                "echo url=https://app:{{ secrets.token }}@db >> \"$PHOENIX_OUTPUT\"; echo host=db >> \"$PHOENIX_OUTPUT\"",
                ""
            ),
            shell_step(
                "reader",
                "provision",
                "echo {{ steps.made.outputs.url }} >> ledger",
                "needs = [\"made\"]"
            ),
            shell_step(
                "host_only",
                "provision",
                "echo {{ steps.made.outputs.host }} >> ledger",
                "needs = [\"made\"]"
            ),
            shell_step("given", "provision", "exit 1", ""),
        ),
    );
    let phoenix = |args: &[&str], code: i32| with_canary(&ws, args, code);
    let refused = "reads the output `url` of `made`, which held a secret's value and is not passed on (it would arrive as `***`): read the secret itself with `{{ secrets.NAME }}`";
    let run = phoenix(&["run", "plan.toml", "--keep-going"], 1);
    assert!(
        run.stderr()
            .contains("step `made`: output `url` holds a secret's value; it is kept masked, and a step that reads it fails"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains(refused), "{}", run.stderr());
    assert!(
        run.stderr()
            .contains(&format!("template `app.conf.tpl`: {refused}")),
        "{}",
        run.stderr()
    );
    assert!(!ws.path().join("app.conf").exists());
    assert_eq!(ws.read("ledger"), "db\n", "the step reading `host` ran");
    assert!(ws.journal().contains("\"withheld\":[\"url\"]"));
    let status = ws.status();
    assert_eq!(state_of(&status, "reader"), "failed");
    let made = crate::common::step_of(&status, "made");
    assert_eq!(made["withheld"], serde_json::json!(["url"]));
    assert_eq!(made["outputs"]["url"], "https://app:***@db");
    // A resume reads back only `https://app:***@db`: still refused.
    let resumed = phoenix(&["resume", "--skip", "given"], 1);
    assert!(resumed.stderr().contains(refused), "{}", resumed.stderr());
    assert_eq!(ws.read("ledger"), "db\n");
    assert_no_canary_in_state(&ws);

    // What `--output` gives is held to the same rule.
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[secrets]\ntoken = {{ env = \"CANARY_TOKEN\" }}\n{}{}",
            shell_step("made", "provision", "exit 1", ""),
            shell_step(
                "reader",
                "provision",
                "echo {{ steps.made.outputs.url }} >> ledger",
                "needs = [\"made\"]"
            ),
        ),
    );
    phoenix(&["run", "plan.toml"], 1);
    let given = format!("made.url=https://app:{CANARY}@db");
    let resumed = phoenix(&["resume", "--skip", "made", "--output", &given], 1);
    for said in ["step `made`: output `url` holds a secret's value", refused] {
        assert!(resumed.stderr().contains(said), "{}", resumed.stderr());
    }
    assert!(!resumed.stderr().contains(CANARY), "{}", resumed.stderr());
    assert_eq!(ws.read("ledger"), "db\n");
    assert_no_canary_in_state(&ws);
}
