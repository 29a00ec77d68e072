//! The `s3` store against a real S3 server (moto's, on 127.0.0.1), with faults
//! injected by a small TCP proxy: 500s, connections cut mid-body, stalls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{state_of, wait_for, Workspace};
use crate::restore::sha256;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server, stopped when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// moto with extra environment (its request recorder, for a restart).
    pub fn start_with(env: &[(&str, &std::path::Path)]) -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]') runs");
        assert!(
            wait_for(Duration::from_secs(30), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "moto did not start"
        );
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Moto {
    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    metadata: Option<&str>,
) {
    runtime().block_on(async {
        let mut request = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into());
        if let Some(digest) = metadata {
            request = request.metadata("sha256", digest);
        }
        request.send().await.unwrap();
    });
}

fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    runtime().block_on(async { client.create_bucket().bucket(bucket).send().await.unwrap() });
}

fn plan(endpoint: &str, steps: &str) -> String {
    format!(
        "version = 1\n[plan]\nname = \"s3\"\nrto = \"10m\"\nrpo = \"1h\"\n\n[stores.remote]\ntype = \"s3\"\nbucket = \"backups\"\nprefix = \"prod/\"\nendpoint = \"{endpoint}\"\npath_style = true\n{steps}"
    )
}

fn step(id: &str, fields: &str) -> String {
    format!("\n[[step]]\nid = \"{id}\"\nphase = \"restore\"\naction = \"restore\"\nstore = \"remote\"\ntimeout = \"5m\"\n{fields}\n")
}

fn phoenix(ws: &Workspace) -> crate::common::Phoenix {
    ws.phoenix()
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("PHOENIX_PART_TIMEOUT", "3s")
        .env("PHOENIX_S3_TIMEOUT", "3s")
}

#[test]
fn selection_digests_and_failures_against_s3() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint());
    create_bucket(&s3, "backups");
    put(&s3, "backups", "prod/pg/db-1.dump", b"first".to_vec(), None);
    put(
        &s3,
        "backups",
        "prod/pg/db-1.dump.sha256",
        format!("{}  db-1.dump\n", sha256(b"first")).into_bytes(),
        None,
    );
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::thread::sleep(Duration::from_millis(1100));
    put(
        &s3,
        "backups",
        "prod/pg/db-2.dump",
        b"second".to_vec(),
        Some(&sha256(b"second")),
    );
    put(
        &s3,
        "backups",
        "prod/pg/notes.txt",
        b"not a dump".to_vec(),
        Some(&sha256(b"not a dump")),
    );
    put(
        &s3,
        "backups",
        "prod/bad.dump",
        b"tampered".to_vec(),
        Some(&sha256(b"original")),
    );
    let ws = Workspace::new();
    let steps = format!(
        "{}{}{}{}{}",
        step(
            "latest",
            "prefix = \"pg/\"\nmatch = \"*.dump\"\ndest = \"out/latest.dump\""
        ),
        step(
            "before",
            &format!("prefix = \"pg/\"\nselect = \"before:{between}\"\ndest = \"out/before.dump\"")
        ),
        step("wrong", "key = \"bad.dump\"\ndest = \"out/bad.dump\""),
        step("missing", "key = \"nope.dump\"\ndest = \"out/nope.dump\""),
        step(
            "too_old",
            "key = \"pg/db-1.dump\"\nmax_age = \"1s\"\ndest = \"out/old.dump\""
        ),
    );
    ws.write("plan.toml", &plan(&moto.endpoint(), &steps));
    let run = phoenix(&ws)
        .args(["run", "plan.toml", "--keep-going"])
        .run()
        .expect_code(1);
    let stderr = run.stderr();
    assert_eq!(ws.read("out/latest.dump"), "second", "digest from metadata");
    assert_eq!(
        ws.read("out/before.dump"),
        "first",
        "digest from the sidecar"
    );
    assert!(
        stderr.contains(&format!("but its metadata says {}", sha256(b"original"))),
        "{stderr}"
    );
    assert!(!ws.path().join("out/bad.dump").exists());
    assert!(
        stderr.contains("no backup `nope.dump` in s3://backups/prod/"),
        "{stderr}"
    );
    assert!(stderr.contains("older than the 1s allowed"), "{stderr}");
    let status = ws.status();
    assert_eq!(state_of(&status, "latest"), "succeeded");

    // The preflight sees the same.
    ws.write(
        "check.toml",
        &plan(
            &moto.endpoint(),
            &step(
                "latest",
                "prefix = \"pg/\"\nmatch = \"*.dump\"\ndest = \"out/x\"",
            ),
        ),
    );
    let out = phoenix(&ws)
        .args(["backups", "check.toml"])
        .run()
        .expect_code(0)
        .stdout();
    assert!(
        out.contains("`pg/db-2.dump` (6 bytes") && out.contains("digest: metadata"),
        "{out}"
    );
}

/// A TCP proxy to `upstream` that spoils the first connections it serves, one
/// fault each, in turn: a 500, a response cut after 100 KB, a 10 s stall.
struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    pub faults: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: u16, spoil: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(AtomicUsize::new(0));
        let (stop_flag, fault_count) = (Arc::clone(&stop), Arc::clone(&faults));
        std::thread::spawn(move || {
            let mut served = 0usize;
            while !stop_flag.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                served += 1;
                let fault = if served <= spoil {
                    Some(served % 3)
                } else {
                    None
                };
                let counter = Arc::clone(&fault_count);
                std::thread::spawn(move || relay(client, upstream, fault, counter));
            }
        });
        FaultProxy { port, stop, faults }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(mut client: TcpStream, upstream: u16, fault: Option<usize>, faults: Arc<AtomicUsize>) {
    if fault == Some(0) {
        let mut buffer = [0u8; 65536];
        let _ = client.read(&mut buffer);
        let _ = client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        faults.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    let mut buffer = vec![0u8; 65536];
    let mut relayed = 0usize;
    loop {
        let n = match server.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match fault {
            Some(1) if relayed + n > 100_000 => {
                // Cut the body short and reset the connection.
                let _ = client.write_all(&buffer[..100_000usize.saturating_sub(relayed)]);
                faults.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
            Some(2) if relayed == 0 => {
                faults.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(10));
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
            _ => {}
        }
        if client.write_all(&buffer[..n]).is_err() {
            break;
        }
        relayed += n;
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}

#[test]
fn a_multi_part_object_survives_faults_and_verifies() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint());
    create_bucket(&s3, "backups");
    // 256 MiB of incompressible, repeatable bytes.
    let mut data = vec![0u8; 256 * 1024 * 1024];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let digest = sha256(&data);
    put(
        &s3,
        "backups",
        "prod/big/base.tar.zst.raw",
        data,
        Some(&digest),
    );
    let proxy = FaultProxy::start(moto.port, 9);
    let ws = Workspace::new();
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    ws.write(
        "plan.toml",
        &plan(&endpoint, &step("big", "prefix = \"big/\"\ndest = \"out/base.raw\"\npart_size = \"16MiB\"\nparallelism = 4\nretries = 2")),
    );
    let run = phoenix(&ws).args(["run", "plan.toml"]).run();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        proxy.faults.load(Ordering::SeqCst) >= 3,
        "faults were injected"
    );
    let restored = std::fs::read(ws.path().join("out/base.raw")).unwrap();
    assert_eq!(restored.len(), 256 * 1024 * 1024);
    assert_eq!(sha256(&restored), digest);
    let status = ws.status();
    let out = &status["steps"][0]["outputs"];
    assert_eq!(out["sha256"], digest.as_str());
    assert_eq!(out["size"], (256u64 * 1024 * 1024).to_string());
}

#[test]
fn a_server_that_only_fails_fails_cleanly() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint());
    create_bucket(&s3, "backups");
    let body = vec![1u8; 3 * 1024 * 1024];
    put(
        &s3,
        "backups",
        "prod/db.dump",
        body.clone(),
        Some(&sha256(&body)),
    );
    let proxy = FaultProxy::start(moto.port, usize::MAX);
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("out")).unwrap();
    std::fs::write(ws.path().join("out/db.dump"), "previous").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    ws.write(
        "plan.toml",
        &plan(
            &endpoint,
            &step(
                "db",
                "key = \"db.dump\"\ndest = \"out/db.dump\"\npart_size = \"1MiB\"",
            ),
        ),
    );
    let run = phoenix(&ws).args(["run", "plan.toml"]).run().expect_code(1);
    assert!(run.stderr().contains("FAIL db"), "{}", run.stderr());
    assert_eq!(ws.read("out/db.dump"), "previous");
    let leftovers: Vec<_> = std::fs::read_dir(ws.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
}

/// A server that cannot be reached is said in a line: what failed, not the
/// SDK's nested error structs.
#[test]
fn an_unreachable_server_is_said_plainly() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = Workspace::new();
    ws.write(
        "plan.toml",
        &plan(
            &format!("http://127.0.0.1:{closed}"),
            &step("db", "prefix = \"pg/\"\ndest = \"out/db.dump\""),
        ),
    );
    let run = phoenix(&ws)
        .args(["backups", "plan.toml"])
        .run()
        .expect_code(1);
    let text = run.stdout() + &run.stderr();
    assert!(
        text.contains("list `pg/` in bucket `backups`: cannot reach the server: ")
            && text.contains("Connection refused"),
        "{text}"
    );
    assert!(!text.contains("DispatchFailure"), "{text}");
}
