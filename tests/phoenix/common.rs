//! A small builder around the `phoenix` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// `phoenix ARGS…` run in `dir`, with a state directory of its own.
pub struct Phoenix {
    command: Command,
}

impl Phoenix {
    pub fn new(dir: &Path) -> Self {
        Self::under(dir, &[])
    }

    /// Phoenix started by `wrapper` (`["nohup"]`: ignoring SIGHUP).
    pub fn under(dir: &Path, wrapper: &[&str]) -> Self {
        let phoenix = env!("CARGO_BIN_EXE_phoenix");
        let mut command = match wrapper {
            [] => Command::new(phoenix),
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(phoenix);
                command
            }
        };
        command
            .current_dir(dir)
            .env_remove("PHOENIX_STATE")
            .env("NO_COLOR", "1");
        Phoenix { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Starts phoenix without waiting, its output captured.
    pub fn spawn(mut self) -> std::process::Child {
        self.command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("phoenix starts")
    }

    pub fn run(mut self) -> Run {
        let output = self.command.output().expect("phoenix runs");
        Run { output }
    }
}

pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Stderr of a `--log-format json` run, a JSON object a line; panics
    /// naming the first line that is not one.
    #[track_caller]
    pub fn stderr_events(&self) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A scratch directory with a plan in it; phoenix runs there with `.phoenix` as
/// its state.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The text of a file in the workspace.
    pub fn read(&self, name: impl AsRef<Path>) -> String {
        let path = self.path().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes `plan.toml`: [`HEADER`], then `steps`.
    pub fn write_plan(&self, steps: &[String]) -> PathBuf {
        self.write("plan.toml", &format!("{HEADER}{}", steps.concat()))
    }

    /// Starts `phoenix run plan.toml --run-id RUN_ID` on a plan of one step,
    /// `hold`, that keeps the run (and its lock) alive for two seconds; returns
    /// once that step has started.
    pub fn start_holding(&self, run_id: &str) -> std::process::Child {
        self.write_plan(&[shell_step(
            "hold",
            "provision",
            "touch started; sleep 2",
            "",
        )]);
        let run = self
            .phoenix()
            .args(["run", "plan.toml", "--run-id", run_id])
            .spawn();
        let started = self.path().join("started");
        assert!(wait_for(std::time::Duration::from_secs(10), || started.exists()));
        run
    }

    pub fn phoenix(&self) -> Phoenix {
        Phoenix::new(self.path())
    }

    /// `phoenix ARGS…` here, which must exit with `code`.
    #[track_caller]
    pub fn expect<I, S>(&self, args: I, code: i32) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.phoenix().args(args).run().expect_code(code)
    }

    /// The outputs of `step` in the newest run, from `phoenix status`.
    pub fn outputs(&self, step: &str) -> serde_json::Value {
        step_of(&self.status(), step)["outputs"].clone()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join(".phoenix")
    }

    /// `phoenix status --format json` of the newest run.
    pub fn status(&self) -> serde_json::Value {
        let run = self.expect(["status", "--format", "json"], 0);
        serde_json::from_str(&run.stdout()).expect("status json")
    }

    /// The directory of the only run in the state.
    pub fn run_dir(&self) -> PathBuf {
        let runs = self.state().join("runs");
        std::fs::read_dir(&runs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    }

    /// Removes the journal records matching `drop`, as a crash before they
    /// were durable would have: how tests make a step in doubt.
    pub fn cut_journal(&self, drop: impl Fn(&str) -> bool) {
        let path = self.run_dir().join("journal.jsonl");
        let journal = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = journal.lines().filter(|line| !drop(line)).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    }

    /// Makes `step` in doubt: its finish record is gone.
    pub fn make_in_doubt(&self, step: &str) {
        let needle = format!("\"step\":\"{step}\"");
        self.cut_journal(|line| line.contains("\"type\":\"finished\"") && line.contains(&needle));
    }

    /// Makes every step that finished in doubt, and the run unfinished: as
    /// a crash before any finish was durable would leave it.
    pub fn crash_before_finishes(&self) {
        self.cut_journal(|l| {
            l.contains("\"type\":\"finished\"") || l.contains("\"type\":\"ended\"")
        });
    }

    pub fn journal(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("journal.jsonl")).unwrap()
    }
}

/// The plan header every test plan starts with.
pub const HEADER: &str = "version = 1\n[plan]\nname = \"t\"\nrto = \"10m\"\nrpo = \"1h\"\n";

/// A command step running `script` with `/bin/sh`.
pub fn shell_step(id: &str, phase: &str, script: &str, extra: &str) -> String {
    format!(
        "\n[[step]]\nid = \"{id}\"\nphase = \"{phase}\"\naction = \"command\"\nshell = '''{script}'''\ntimeout = \"1m\"\n{extra}\n"
    )
}

/// `step` (from [`shell_step`]) with another timeout than its minute.
pub fn timed(step: String, timeout: &str) -> String {
    step.replace("timeout = \"1m\"", &format!("timeout = \"{timeout}\""))
}

/// A step's entry in `phoenix status --format json`.
pub fn step_of<'a>(status: &'a serde_json::Value, step: &str) -> &'a serde_json::Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == step)
        .unwrap_or_else(|| panic!("no step {step} in {status}"))
}

pub fn state_of(status: &serde_json::Value, step: &str) -> String {
    step_of(status, step)["state"].as_str().unwrap().to_string()
}

/// Waits until `check` holds, for at most `limit`.
pub fn wait_for(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    check()
}

/// Sends `signal` to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A request as [`HttpServer`] hands it to its handler.
pub struct Request {
    pub method: String,
    /// With its query, as sent.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers: status, extra header lines (each ending in
/// `\r\n`), body.
pub type Response = (u16, String, Vec<u8>);

/// A small HTTP/1.1 server on 127.0.0.1, one connection at a time, each
/// closed after its answer; records every request's path; stopped when
/// dropped.
pub struct HttpServer {
    pub port: u16,
    pub paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpServer {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + 'static) -> HttpServer {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (thread_stop, thread_paths) = (stop.clone(), paths.clone());
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
                let mut request = Request {
                    method: method.to_string(),
                    path: path.to_string(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        request
                            .headers
                            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                    }
                }
                let length = request
                    .header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                request.body = vec![0; length];
                let _ = reader.read_exact(&mut request.body);
                thread_paths.lock().unwrap().push(request.path.clone());
                let (status, headers, body) = handler(&request);
                let mut stream = stream;
                // The client may stop reading early: that is its answer.
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .and_then(|_| stream.write_all(&body));
            }
        });
        HttpServer { port, paths, stop }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
