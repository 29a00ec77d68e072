//! A remote state in S3 (moto's server on 127.0.0.1, whose conditional writes
//! are atomic: `scripts/check-s3-atomicity.py`): a run driven from one
//! "machine" (a cache directory and a process) and resumed from another with
//! only the URL, the lease raced for, a paused holder fenced out, a live one
//! removed by `unlock --force LOCK_ID`, a store that ignores conditional
//! writes refused, and the server going away mid-run.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{shell_step, signal, wait_for, Phoenix, Workspace, HEADER};
use crate::s3::{free_port, Moto};

/// One "machine": its own working directory (plan, ledger) and cache.
struct Machine<'a> {
    ws: &'a Workspace,
    cache: PathBuf,
    endpoint: String,
    lease: &'static str,
}

impl Machine<'_> {
    fn phoenix(&self) -> Phoenix {
        self.ws
            .phoenix()
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("PHOENIX_S3_ENDPOINT", &self.endpoint)
            .env("PHOENIX_S3_TIMEOUT", "2s")
            .env("PHOENIX_CACHE_DIR", &self.cache)
            .env("PHOENIX_LEASE", self.lease)
    }

    /// `phoenix ARGS…` on this machine, which must exit with `code`.
    #[track_caller]
    fn expect<const N: usize>(&self, args: [&str; N], code: i32) -> crate::common::Run {
        self.phoenix().args(args).run().expect_code(code)
    }
}

fn machine<'a>(ws: &'a Workspace, name: &str, endpoint: &str, lease: &'static str) -> Machine<'a> {
    Machine {
        ws,
        cache: ws.path().join(format!("cache-{name}")),
        endpoint: endpoint.to_string(),
        lease,
    }
}

/// Starts `phoenix run plan.toml` on machine `m` against `url` and returns
/// once `steps` steps have written to the ledger.
fn run_until(m: &Machine, url: &str, steps: usize) -> std::process::Child {
    let child = m
        .phoenix()
        .args(["run", "plan.toml", "--state", url])
        .spawn();
    assert!(
        wait_for(Duration::from_secs(30), || ledger(m.ws.path()).len()
            >= steps),
        "the run did not get {steps} steps done"
    );
    child
}

/// Sends an empty `method` request to `url` (moto's own API, bucket creation);
/// whether it answered 2xx.
fn request(method: &str, url: &str) -> bool {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[2], method=sys.argv[1]), timeout=60)",
            method,
            url,
        ])
        .status()
        .unwrap()
        .success()
}

fn make_bucket(moto: &Moto, bucket: &str) {
    assert!(
        request("PUT", &format!("{}/{bucket}", moto.endpoint())),
        "create bucket {bucket}"
    );
}

/// A chain of `n` steps, each appending its id to `ledger` and sleeping.
fn chain(n: usize, sleep: &str) -> String {
    let mut plan = HEADER.to_string();
    for i in 0..n {
        let needs = if i == 0 {
            String::new()
        } else {
            format!("needs = [\"s{:02}\"]", i - 1)
        };
        plan += &shell_step(
            &format!("s{i:02}"),
            "provision",
            &format!("echo s{i:02} >> ledger; sleep {sleep}; echo s{i:02} done"),
            &needs,
        );
    }
    plan
}

fn ledger(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every step once, in order, except that `repeated` may appear twice.
fn assert_ledger(lines: &[String], n: usize, repeated: &[String]) {
    let mut seen: Vec<String> = lines.to_vec();
    seen.dedup();
    let expected: Vec<String> = (0..n).map(|i| format!("s{i:02}")).collect();
    assert_eq!(seen, expected, "ledger {lines:?}");
    for step in &expected {
        let count = lines.iter().filter(|l| *l == step).count();
        assert!(
            count == 1 || (count == 2 && repeated.contains(step)),
            "{step} ran {count} times; only {repeated:?} were running at the interruption"
        );
    }
}

/// Resumes until the old lease has expired and the run is done.
fn resume_until_done(m: &Machine, url: &str) -> crate::common::Run {
    let start = Instant::now();
    loop {
        let run = m.phoenix().args(["resume", "--state", url]).run();
        if run.code() != 4 || start.elapsed() > Duration::from_secs(30) {
            return run;
        }
        assert!(run.stderr().contains("lock id"), "{}", run.stderr());
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn status_json(m: &Machine, url: &str) -> serde_json::Value {
    let run = m.expect(["status", "--format", "json", "--state", url], 0);
    serde_json::from_str(&run.stdout()).unwrap()
}

#[test]
fn killed_on_one_machine_resumed_on_another_with_only_the_url() {
    let moto = Moto::start();
    make_bucket(&moto, "dr-state");
    let url = "s3://dr-state/site-a";
    let ws = Workspace::new();
    ws.write("plan.toml", &chain(12, "0.2"));
    let a = machine(&ws, "a", &moto.endpoint(), "2s");
    let mut child = run_until(&a, url, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = ledger(ws.path());
    // The first machine is gone, cache and all.
    std::fs::remove_dir_all(&a.cache).unwrap();

    let b = machine(&ws, "b", &moto.endpoint(), "2s");
    let resumed = resume_until_done(&b, url).expect_code(0);
    assert!(
        resumed.stderr().contains("took over the lock"),
        "{}",
        resumed.stderr()
    );
    // The step running at the kill may run again; nothing else does.
    assert_ledger(&ledger(ws.path()), 12, &at_kill[at_kill.len() - 1..]);

    // Status, history and reports from a third machine, with nothing local.
    let c = machine(&ws, "c", &moto.endpoint(), "2s");
    let status = status_json(&c, url);
    assert_eq!(status["state"], "succeeded", "{status}");
    let history = c.expect(["history", "--format", "json", "--state", url], 0);
    let history: serde_json::Value = serde_json::from_str(&history.stdout()).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["result"], "succeeded");
    let report = c.expect(["report", "--format", "json", "--state", url], 0);
    assert!(
        report.stdout().contains("\"result\": \"succeeded\""),
        "{}",
        report.stdout()
    );
    // What a step printed, from the logs the run copied up.
    let logs = c.expect(["logs", "s11", "--state", url], 0);
    assert_eq!(logs.stdout(), "s11 done\n", "{}", logs.stderr());
    // A local state elsewhere is not touched, and no `.phoenix` appears.
    assert!(!ws.state().exists());
}

#[test]
fn runs_racing_for_the_lease_get_exactly_one_holder_each_time() {
    let moto = Moto::start();
    make_bucket(&moto, "race");
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &(HEADER.to_string() + &shell_step("hold", "provision", "sleep 1", "")),
    );
    for round in 0..8 {
        let url = format!("s3://race/round-{round}");
        let children: Vec<_> = (0..3)
            .map(|i| {
                machine(&ws, &format!("{round}-{i}"), &moto.endpoint(), "10s")
                    .phoenix()
                    .args(["run", "plan.toml", "--state", &url])
                    .spawn()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap()).collect();
        assert_eq!(
            codes.iter().filter(|c| **c == 0).count(),
            1,
            "round {round}: exit codes {codes:?}: {:?}",
            outputs
                .iter()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(codes.iter().filter(|c| **c == 4).count(), 2, "{codes:?}");
        for output in outputs.iter().filter(|o| o.status.code() == Some(4)) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("the state is locked by run"), "{stderr}");
        }
    }
}

#[test]
fn a_holder_paused_past_its_lease_is_stopped_and_the_taker_finishes() {
    let moto = Moto::start();
    make_bucket(&moto, "paused");
    let url = "s3://paused/x";
    let ws = Workspace::new();
    ws.write("plan.toml", &chain(6, "0.5"));
    let a = machine(&ws, "a", &moto.endpoint(), "2s");
    let child = run_until(&a, url, 2);
    signal(child.id(), "STOP");
    let at_pause = ledger(ws.path());
    let b = machine(&ws, "b", &moto.endpoint(), "2s");
    let resumed = resume_until_done(&b, url);
    signal(child.id(), "CONT");
    let old = child.wait_with_output().unwrap();
    resumed.expect_code(0);
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert_eq!(old.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("lost its lock on the state"), "{stderr}");
    // The step running at the pause may have run twice; no other.
    assert_ledger(&ledger(ws.path()), 6, &at_pause[at_pause.len() - 1..]);
    let status = status_json(&b, url);
    assert_eq!(status["state"], "succeeded", "{status}");
}

#[test]
fn unlock_force_by_lock_id_fences_a_live_holder_out() {
    let moto = Moto::start();
    make_bucket(&moto, "fence");
    let url = "s3://fence/x";
    let ws = Workspace::new();
    ws.write("plan.toml", &chain(10, "0.3"));
    // A long lease: the holder learns it was fenced from its journal write.
    let a = machine(&ws, "a", &moto.endpoint(), "60s");
    let child = run_until(&a, url, 2);
    let b = machine(&ws, "b", &moto.endpoint(), "60s");
    let refused = b.expect(["resume", "--state", url], 4);
    let lock_id = refused
        .stderr()
        .split("lock id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the error names the lock id")
        .to_string();
    // Without the id a live lease is not removed.
    let kept = b.expect(["unlock", "--force", "--state", url], 4);
    assert!(kept.stderr().contains("is live"), "{}", kept.stderr());
    b.phoenix()
        .args(["unlock", "--force", &lock_id, "--state", url])
        .run()
        .expect_code(0);
    let old = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert_eq!(old.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("fenced out"), "{stderr}");
    let at_stop = ledger(ws.path());
    b.phoenix()
        .args(["resume", "--state", url])
        .run()
        .expect_code(0);
    assert_ledger(&ledger(ws.path()), 10, &at_stop[at_stop.len() - 1..]);
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused() {
    let moto = Moto::start();
    make_bucket(&moto, "lax");
    let proxy = Gate::start(moto.port, true);
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &(HEADER.to_string() + &shell_step("a", "provision", "echo ran >> ledger", "")),
    );
    let m = machine(&ws, "a", &proxy.endpoint(), "10s");
    let run = m.expect(["run", "plan.toml", "--state", "s3://lax/x"], 1);
    assert!(
        run.stderr()
            .contains("ignores conditional writes (If-None-Match)"),
        "{}",
        run.stderr()
    );
    assert!(ledger(ws.path()).is_empty(), "nothing ran");
}

#[test]
fn the_store_going_away_mid_run_is_survived_or_stopped_cleanly() {
    let moto = Moto::start();
    make_bucket(&moto, "outage");
    let proxy = Gate::start(moto.port, false);
    let ws = Workspace::new();
    ws.write("plan.toml", &chain(8, "0.3"));

    // Down for less than the lease: the journal waits and the run goes on.
    let a = machine(&ws, "a", &proxy.endpoint(), "20s");
    let child = run_until(&a, "s3://outage/short", 2);
    proxy.set_up(false);
    std::thread::sleep(Duration::from_secs(3));
    proxy.set_up(true);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ledger(&ledger(ws.path()), 8, &[]);

    // Down for longer than the lease: the run stops, then resumes.
    std::fs::remove_file(ws.path().join("ledger")).unwrap();
    let b = machine(&ws, "b", &proxy.endpoint(), "2s");
    let child = run_until(&b, "s3://outage/long", 2);
    proxy.set_up(false);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("could not be renewed in time"), "{stderr}");
    let at_stop = ledger(ws.path());
    proxy.set_up(true);
    resume_until_done(&b, "s3://outage/long").expect_code(0);
    assert_ledger(&ledger(ws.path()), 8, &at_stop[at_stop.len() - 1..]);
}

#[test]
fn the_store_restarted_mid_run_keeps_its_objects_and_the_run_goes_on() {
    // moto keeps objects in memory: a restart is a new process that replays
    // every request the old one recorded. The proxy keeps clients out until
    // the replay is done, as a real server's port would be closed meanwhile.
    let ws = Workspace::new();
    let recording = ws.path().join("moto-recording");
    let enable = ws.path().join("yes");
    let mut first = Moto::start_with(&[
        ("MOTO_ENABLE_RECORDING", enable.as_path()),
        ("MOTO_RECORDER_FILEPATH", recording.as_path()),
    ]);
    make_bucket(&first, "restart");
    let proxy = Gate::start(first.port, false);
    ws.write("plan.toml", &chain(8, "0.4"));
    let a = machine(&ws, "a", &proxy.endpoint(), "20s");
    let child = run_until(&a, "s3://restart/x", 3);
    proxy.set_up(false);
    first.kill();
    let second = Moto::start_with(&[("MOTO_RECORDER_FILEPATH", recording.as_path())]);
    assert!(
        request(
            "POST",
            &format!("{}/moto-api/recorder/replay-recording", second.endpoint())
        ),
        "moto replays its recording"
    );
    proxy.set_upstream(second.port);
    proxy.set_up(true);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("the run across the restart exited {:?}", out.status.code());
    match out.status.code() {
        // Survived: every journal write waited for the store and went on.
        Some(0) => assert_ledger(&ledger(ws.path()), 8, &[]),
        // Or stopped cleanly (a renewal in flight at the crash was applied by
        // the replay but never answered), and resumes.
        Some(4) => {
            assert!(stderr.contains("lost its lock"), "{stderr}");
            let at_stop = ledger(ws.path());
            resume_until_done(&a, "s3://restart/x").expect_code(0);
            assert_ledger(&ledger(ws.path()), 8, &at_stop[at_stop.len() - 1..]);
        }
        other => panic!("exit {other:?}: {stderr}"),
    }
    let status = status_json(&a, "s3://restart/x");
    assert_eq!(status["state"], "succeeded", "{status}");
}

/// A loopback TCP proxy to moto that can go down (listener closed, open
/// connections cut: what clients see of a server restart) and come back on
/// the same port, and can hide the conditional headers from the server, as a
/// store that ignores them would.
struct Gate {
    port: u16,
    upstream: Arc<AtomicU16>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    fn start(upstream: u16, strip_conditions: bool) -> Gate {
        let port = free_port();
        let upstream = Arc::new(AtomicU16::new(upstream));
        let to = Arc::clone(&upstream);
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up_flag, stop_flag) = (Arc::clone(&up), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !stop_flag.load(Ordering::SeqCst) {
                if !up_flag.load(Ordering::SeqCst) {
                    if listener.take().is_some() {
                        for stream in open.lock().unwrap().drain(..) {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let Some(l) = listener.as_ref() else {
                    if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                        l.set_nonblocking(true).unwrap();
                        listener = Some(l);
                    }
                    continue;
                };
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", to.load(Ordering::SeqCst)))
                else {
                    continue;
                };
                let mut guard = open.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(server.try_clone().unwrap());
                drop(guard);
                let (client_read, server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client_read, server_write, strip_conditions));
                std::thread::spawn(move || pipe(server, client, false));
            }
            for stream in open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Gate {
            port,
            upstream,
            up,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn set_upstream(&self, port: u16) {
        self.upstream.store(port, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies one direction; with `strip`, renames the conditional request
/// headers to same-length names the server ignores.
fn pipe(mut from: TcpStream, mut to: TcpStream, strip: bool) {
    let mut buffer = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if strip {
            rename(&mut buffer[..n], b"if-none-match:", b"x-ignored-inm:");
            rename(&mut buffer[..n], b"if-match:", b"x-ignore:");
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn rename(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if bytes[i..i + from.len()].eq_ignore_ascii_case(from) {
            bytes[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// A resume on a machine without the run's directory makes again what the
/// earlier sessions' git, template and restore steps put in `{{ run.dir }}`;
/// a resume where the directory is still there does not.
#[test]
fn a_new_machine_remakes_what_was_in_the_run_directory() {
    let moto = Moto::start();
    make_bucket(&moto, "rundir");
    let url = "s3://rundir/x";
    let ws = Workspace::new();
    ws.write("app.conf.j2", "port = {{ vars.port }}\n");
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}\n[vars]\nport = 5432\n{}{}",
            "\n[[step]]\nid = \"conf\"\nphase = \"configure\"\naction = \"template\"\nsource = \"app.conf.j2\"\ndest = \"{{ run.dir }}/app.conf\"\ntimeout = \"1m\"\n",
            shell_step(
                "use",
                "configure",
                "grep -q 'port = 5432' '{{ run.dir }}/app.conf' && test -f go",
                "needs = [\"conf\"]"
            ),
        ),
    );
    let a = machine(&ws, "a", &moto.endpoint(), "10s");
    a.phoenix()
        .args(["run", "plan.toml", "--state", url])
        .run()
        .expect_code(1);
    // Same machine: the file is there, `conf` is not run again.
    let same = a.expect(["resume", "--state", url], 1);
    assert!(!same.stderr().contains("start conf"), "{}", same.stderr());
    // Another machine: `conf` makes the file again before `use` runs.
    ws.write("go", "");
    let b = machine(&ws, "b", &moto.endpoint(), "10s");
    let other = b.expect(["resume", "--state", url], 0);
    assert!(
        other
            .stderr()
            .contains("step `conf` runs again: its result was in `{{ run.dir }}`"),
        "{}",
        other.stderr()
    );
}
