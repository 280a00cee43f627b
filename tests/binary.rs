//! The `switchyard` binary: configuration errors, and a graceful stop on
//! SIGTERM that still answers the requests in flight.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::Decodable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_bad_config_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let example = include_str!("../proxy.toml");
    std::fs::write(&path, example.replace("node_port_base", "node_port_bsae")).unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = example
        .lines()
        .position(|l| l.starts_with("node_port_base"))
        .unwrap()
        + 1;
    assert!(stderr.contains("node_port_bsae"), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");

    std::fs::write(&path, example).unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bootstrap_port, admin_port) = (free_port(), free_port());
    let config = format!(
        r#"
[listen]
bootstrap = "127.0.0.1:{bootstrap_port}"
advertised_host = "127.0.0.1"
node_port_base = 0
[clusters.a]
bootstrap = "{}"
[admin]
listen = "127.0.0.1:{admin_port}"
[state]
dir = "{}"
[shutdown]
grace_ms = 10000
"#,
        a.bootstrap_servers(),
        dir.path().join("state").display()
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_until(Duration::from_secs(20), "admin /healthz", || async move {
        TcpStream::connect(admin).await.is_ok() && http_get(admin, "/healthz").await.0 == 200
    })
    .await;

    // Every broker now answers a second late; a request goes in, and once
    // the proxy has taken it, SIGTERM arrives.
    for broker in 1..=3 {
        a.broker_round_trip_time(broker, Duration::from_millis(1500))
            .unwrap();
    }
    let mut stream = TcpStream::connect(("127.0.0.1", bootstrap_port))
        .await
        .unwrap();
    stream
        .write_all(&request_frame(
            ApiKey::Metadata,
            9,
            77,
            &MetadataRequest::default(),
        ))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the request to be taken",
        || async move {
            let (_, metrics) = http_get(admin, "/metrics").await;
            metric_value(&metrics, "switchyard_requests_total", &["api=\"Metadata\""]) >= 1.0
        },
    )
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let payload = read_frame(&mut stream, Duration::from_secs(10)).await;
    let Some(payload) = payload else {
        let _ = child.wait().await;
        let mut stderr = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        panic!("the in-flight request is answered before the connection closes: {stderr}");
    };
    assert_eq!(&payload[..4], &77i32.to_be_bytes());
    // Metadata v9 is flexible: correlation id, then an empty tag section.
    let mut body = payload.slice(5..);
    let response = MetadataResponse::decode(&mut body, 9).unwrap();
    assert_eq!(response.brokers.len(), 3);
    assert!(closed_by_peer(&mut stream, Duration::from_secs(10)).await);

    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        pipe.read_to_string(&mut stderr).await.unwrap();
    }
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        use tokio::io::AsyncReadExt;
        pipe.read_to_string(&mut stdout).await.unwrap();
    }
    let logs = format!("{stdout}{stderr}");
    assert!(logs.contains("signal received"), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_route_mirror_and_readiness() {
    let a = start_cluster(3, &[("orders", 2)]).unwrap();
    let b = start_cluster(3, &[("orders", 2)]).unwrap();
    let harness = start_proxy_with(&a, Some(&b), |c| c.admin.token = Some("t0ken".into())).await;
    let admin = harness.proxy.admin_addr().to_string();
    harness
        .proxy
        .shared()
        .set_mirror_mode(switchyard::config::MirrorMode::Sync)
        .unwrap();
    let acked = workload::produce(&harness.bootstrap(), &ProduceSpec::new("orders", 100))
        .await
        .unwrap();
    assert_eq!(acked.len(), 100);

    let output = Command::new(BIN)
        .args(["status", "--admin", &admin, "--token", "t0ken"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("primary           a"), "{stdout}");
    assert!(stdout.contains("mirror            sync"), "{stdout}");
    assert!(stdout.contains("mirroring to b: lag 0 records"), "{stdout}");
    assert!(stdout.contains("orders-0"), "{stdout}");
    assert!(
        stdout.contains("flip would be lossless now: yes"),
        "{stdout}"
    );

    let refused = Command::new(BIN)
        .args(["status", "--admin", &admin])
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    // The operator commands: finalize before a flip and rollback on A are
    // refused with the reason; flip moves the route; status shows it.
    let run = |args: &'static [&'static str]| {
        let admin = admin.clone();
        async move {
            let mut all = args.to_vec();
            all.extend(["--admin", &admin, "--token", "t0ken"]);
            let output = Command::new(BIN).args(&all).output().await.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success(), text)
        }
    };
    let (ok, text) = run(&["finalize"]).await;
    assert!(!ok && text.contains("finalize follows a flip"), "{text}");
    let (ok, text) = run(&["rollback"]).await;
    assert!(!ok && text.contains("nothing to roll back"), "{text}");
    let (ok, text) = run(&["flip"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("flip a -> b: flipped"), "{text}");
    for step in ["fence", "drain", "settle", "switch", "unfence"] {
        assert!(text.contains(step), "{step} missing: {text}");
    }
    let (ok, text) = run(&["status"]).await;
    assert!(ok && text.contains("primary           b"), "{text}");
    assert!(
        text.contains("last flip         flip a -> b: flipped"),
        "{text}"
    );
    let (ok, text) = run(&["finalize"]).await;
    assert!(ok && text.contains("mirroring is off"), "{text}");
    harness.stop().await;
}
