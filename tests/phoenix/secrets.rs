//! The secret canary: a secret printed every way a step can print it must not
//! appear in any file of the state or in anything phoenix prints.

use crate::common::{shell_step, Workspace, HEADER};

const CANARY: &str = "canary-Zx81-SECRET";
const FILE_CANARY: &str = "file-canary-Qq77";

fn find_canaries(dir: &std::path::Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            find_canaries(&path, found);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            if text.contains(CANARY) || text.contains(FILE_CANARY) {
                found.push(path.display().to_string());
            }
        }
    }
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
        !output.contains(CANARY) && !output.contains(FILE_CANARY),
        "a secret reached the output:\n{output}"
    );
    let mut found = Vec::new();
    find_canaries(&ws.state(), &mut found);
    assert!(found.is_empty(), "secrets in state files: {found:?}");
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
