//! The `wait` and `http` actions against real sockets on 127.0.0.1.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{state_of, HttpServer, Workspace, HEADER};

/// The test server: `/ok` answers 200 with JSON, `/flaky` answers 503 twice
/// then 200, `/echo` answers 201 with the request's method, a header and
/// body as JSON; `/list` answers 200 with 20 MB of JSON, `/blob` with 2 MB of
/// it in one value.
fn server() -> HttpServer {
    let flaky = AtomicUsize::new(0);
    HttpServer::start(move |request| {
        let (status, text) = match request.path.as_str() {
            "/ok" => (200, r#"{"version":"1.2","nested":{"n":3}}"#.to_string()),
            "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) < 2 => (503, "not yet".to_string()),
            "/flaky" => (200, "{}".to_string()),
            "/list" => (
                200,
                format!(r#"{{"items":["{}"],"id":"i"}}"#, "x".repeat(20_000_000)),
            ),
            "/blob" => (
                200,
                format!(r#"{{"blob":"{}","id":"b"}}"#, "x".repeat(2_000_000)),
            ),
            "/echo" => (
                201,
                serde_json::json!({
                    "method": request.method,
                    "token": request.header("x-token").unwrap_or(""),
                    "body": String::from_utf8_lossy(&request.body),
                })
                .to_string(),
            ),
            _ => (404, "no".to_string()),
        };
        (status, String::new(), text.into_bytes())
    })
}

fn http_step(id: &str, fields: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"provision\"\naction = \"http\"\ntimeout = \"30s\"\n{fields}\n")
}

/// A body is read only as far as what is taken from it needs: a probe of a
/// large answer passes without reading it, outputs come from bodies of up to
/// 16 MiB, and outputs of more than 1 MiB (a pointer at what holds the
/// value) fail the step.
#[test]
fn http_reads_bodies_only_as_far_as_needed() {
    let server = server();
    let base = format!("http://127.0.0.1:{}", server.port);
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}{}{}{}",
            http_step("probe", &format!("url = \"{base}/list\"")),
            http_step(
                "listed",
                &format!("url = \"{base}/list\"\noutputs = {{ id = \"/id\" }}")
            ),
            http_step(
                "blob",
                &format!("url = \"{base}/blob\"\noutputs = {{ blob = \"/blob\" }}")
            ),
            http_step(
                "id",
                &format!("url = \"{base}/blob\"\noutputs = {{ id = \"/id\" }}")
            ),
        ),
    );
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    for said in [
        &format!("{base}/list answered with a body of more than 16.0 MiB: outputs are read from bodies of at most that")[..],
        "the outputs hold 1.9 MiB, more than the 1 MiB outputs may take",
    ] {
        assert!(run.stderr().contains(said), "{said}\n{}", run.stderr());
    }
    let status = ws.status();
    assert_eq!(state_of(&status, "probe"), "succeeded");
    assert_eq!(state_of(&status, "listed"), "failed");
    assert_eq!(state_of(&status, "blob"), "failed");
    assert_eq!(ws.outputs("id")["id"], "b");
}

#[test]
fn http_requests_expectations_polling_and_outputs() {
    let server = server();
    let base = format!("http://127.0.0.1:{}", server.port);
    // Takes connections (the kernel does, up to its backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "http://127.0.0.1:{}/health",
        silent.local_addr().unwrap().port()
    );
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}\n[vars]\nname = \"shop\"\n{}{}{}{}{}\n[[step]]\nid = \"use\"\nphase = \"configure\"\naction = \"command\"\nshell = \"echo {{{{ steps.probe.outputs.version }}}} {{{{ steps.probe.outputs.n }}}} > seen.txt\"\ntimeout = \"10s\"\nneeds = [\"probe\"]\n",
        http_step("probe", &format!("url = \"{base}/ok\"\noutputs = {{ version = \"/version\", n = \"/nested/n\" }}")),
        http_step("ready", &format!("url = \"{base}/flaky\"\nuntil = \"20s\"")),
        http_step("post", &format!("method = \"POST\"\nurl = \"{base}/echo\"\nheaders = {{ X-Token = \"t-{{{{ vars.name }}}}\" }}\njson = {{ name = \"{{{{ vars.name }}}}\" }}\nexpect_status = [201]\noutputs = {{ echoed = \"/body\", token = \"/token\" }}")),
        http_step("missing", &format!("url = \"{base}/nothing\"")),
        http_step("silent", &format!("url = \"{silent_url}\"\nuntil = \"2s\"")),
    );
    ws.write("plan.toml", &plan);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    assert!(
        run.stderr().contains("answered 404, expected [200]"),
        "{}",
        run.stderr()
    );
    assert_eq!(ws.read("seen.txt"), "1.2 3\n");
    // Each try ends with `until`: the step is not held to its 30s timeout.
    assert!(
        run.stderr().contains(&format!(
            "`{silent_url}` was not ready after 2s (last try: "
        )),
        "{}",
        run.stderr()
    );
    let status = ws.status();
    assert_eq!(state_of(&status, "ready"), "succeeded");
    assert_eq!(state_of(&status, "missing"), "failed");
    let post = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "post")
        .unwrap();
    assert_eq!(post["outputs"]["echoed"], r#"{"name":"shop"}"#);
    assert_eq!(post["outputs"]["token"], "t-shop");
    let flaky = server
        .paths
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("/flaky"))
        .count();
    assert_eq!(flaky, 3, "polled until the third answer");
}

#[test]
fn wait_for_a_port_and_for_a_path() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ws = Workspace::new();
    let plan = format!(
        "{HEADER}
[[step]]
id = \"port\"
phase = \"provision\"
action = \"wait\"
tcp = \"127.0.0.1:{open}\"
until = \"10s\"

[[step]]
id = \"closed\"
phase = \"provision\"
action = \"wait\"
tcp = \"127.0.0.1:{closed}\"
until = \"1s\"

[[step]]
id = \"maker\"
phase = \"provision\"
action = \"command\"
shell = \"sleep 0.3; touch made\"
timeout = \"10s\"

[[step]]
id = \"file\"
phase = \"provision\"
action = \"wait\"
path = \"made\"
until = \"10s\"

[[step]]
id = \"typo\"
phase = \"provision\"
action = \"wait\"
tcp = \"no-such-host.invalid:80\"
until = \"1s\"
"
    );
    ws.write("plan.toml", &plan);
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    assert!(
        run.stderr().contains(&format!(
            "`127.0.0.1:{closed}` was not ready after 1s (last try: Connection refused"
        )),
        "{}",
        run.stderr()
    );
    // A name that does not resolve says so: likely a typo, not a slow start
    // (or, where the resolver itself cannot be reached, that it had no answer).
    let typo = "`no-such-host.invalid:80` was not ready after 1s (last try: ";
    assert!(
        run.stderr()
            .contains(&format!("{typo}failed to lookup address"))
            || run
                .stderr()
                .contains(&format!("{typo}no answer within 1s)")),
        "{}",
        run.stderr()
    );
    let status = ws.status();
    assert_eq!(state_of(&status, "port"), "succeeded");
    assert_eq!(state_of(&status, "file"), "succeeded");
    drop(listener);
}

/// `openssl s_server -www` on 127.0.0.1 with a certificate signed by a CA of
/// the test's own, as a rebuilt internal service has: killed when dropped.
struct TlsServer {
    port: u16,
    child: std::process::Child,
}

impl TlsServer {
    fn start(dir: &std::path::Path) -> TlsServer {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Phoenix test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-cert",
                "server.pem",
                "-key",
                "server.key",
            ])
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let server = TlsServer { port, child };
        assert!(crate::common::wait_for(
            std::time::Duration::from_secs(10),
            || { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() }
        ));
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn http_trusts_the_plans_own_ca_when_told() {
    let ws = Workspace::new();
    let server = TlsServer::start(ws.path());
    let url = format!("https://127.0.0.1:{}/", server.port);
    ws.write(
        "plan.toml",
        &format!(
            "{HEADER}{}{}{}",
            http_step("system_roots", &format!("url = \"{url}\"")),
            http_step("own_ca", &format!("url = \"{url}\"\nca_cert = \"ca.pem\"")),
            http_step(
                "not_a_cert",
                &format!("url = \"{url}\"\nca_cert = \"server.ext\"")
            ),
        ),
    );
    let run = ws.expect(["run", "plan.toml", "--keep-going"], 1);
    let stderr = run.stderr();
    let status = ws.status();
    assert_eq!(state_of(&status, "own_ca"), "succeeded", "{stderr}");
    assert_eq!(state_of(&status, "system_roots"), "failed");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        stderr.contains("cannot use the CA certificates (`ca_cert`) in `")
            && stderr.contains("server.ext`: it holds no PEM certificate"),
        "{stderr}"
    );
}
