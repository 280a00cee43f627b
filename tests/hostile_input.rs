//! Bad input gets a clear answer or the close of that one connection; the
//! proxy keeps serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::Decodable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// A real client still produces and consumes through the proxy.
async fn normal_client_succeeds(bootstrap: &str, topic: &str, tag: &str) {
    let acked = workload::produce(bootstrap, &ProduceSpec::new(topic, 100))
        .await
        .unwrap();
    assert_eq!(acked.len(), 100, "after {tag}");
    let consumed = workload::consume(
        bootstrap,
        topic,
        &format!("g-{tag}"),
        100,
        Duration::from_secs(30),
        false,
    )
    .await
    .unwrap();
    assert!(
        check(&acked, &consumed).lost == 0 || consumed.len() >= 100,
        "after {tag}"
    );
}

/// A long-lived connection that must keep working while others misbehave.
async fn still_answers(stream: &mut TcpStream, correlation_id: i32) {
    let mut body = exchange(
        stream,
        ApiKey::Metadata,
        9,
        correlation_id,
        &MetadataRequest::default(),
    )
    .await
    .expect("the bystander connection still gets answers");
    let response = MetadataResponse::decode(&mut body, 9).unwrap();
    assert_eq!(response.brokers.len(), 3);
}

async fn send_raw(bootstrap: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(bootstrap).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_frame_closes_only_its_own_connection() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let harness = start_proxy_with(&a, None, |c| c.listen.max_frame_bytes = 64 * 1024).await;
    let bootstrap = harness.bootstrap();
    let mut bystander = TcpStream::connect(&bootstrap).await.unwrap();
    still_answers(&mut bystander, 1).await;

    // Oversized length prefix: refused before buffering.
    let mut s = send_raw(&bootstrap, &(1u32 << 30).to_be_bytes()).await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "oversized frame"
    );
    normal_client_succeeds(&bootstrap, "t", "oversized").await;

    // Negative length.
    let mut s = send_raw(&bootstrap, &(-7i32).to_be_bytes()).await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "negative length"
    );

    // Truncated frame: the client goes away mid-frame.
    let mut s = send_raw(&bootstrap, &[0, 0, 0, 100, 0, 3, 0, 9]).await;
    s.shutdown().await.unwrap();
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "truncated frame"
    );
    normal_client_succeeds(&bootstrap, "t", "truncated").await;

    // Unknown API key.
    let mut s = send_raw(
        &bootstrap,
        &frame(&[0x03, 0xe7, 0, 0, 0, 0, 0, 5, 0xff, 0xff]),
    )
    .await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "unknown api key"
    );

    // Known API, version nobody supports.
    let mut s = send_raw(&bootstrap, &frame(&[0, 3, 0, 99, 0, 0, 0, 6, 0xff, 0xff])).await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "unsupported Metadata version"
    );

    // An API the proxy does not offer (replica ids it cannot translate).
    let mut s = send_raw(&bootstrap, &frame(&[0, 46, 0, 0, 0, 0, 0, 6, 0xff, 0xff])).await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "ListPartitionReassignments"
    );

    // Header shorter than a header.
    let mut s = send_raw(&bootstrap, &frame(&[0, 3, 0])).await;
    assert!(closed_by_peer(&mut s, CLOSE_WITHIN).await, "short header");

    // A Metadata body that does not decode (topic count says 1000 topics):
    // the broker refuses it, and only this connection closes.
    let mut s = send_raw(
        &bootstrap,
        &frame(&[0, 3, 0, 4, 0, 0, 0, 8, 0xff, 0xff, 0, 0, 0x03, 0xe8, 0, 1]),
    )
    .await;
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "undecodable body"
    );
    normal_client_succeeds(&bootstrap, "t", "undecodable").await;

    still_answers(&mut bystander, 2).await;

    let (status, metrics) = http_get(harness.proxy.admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(metric_value(&metrics, "switchyard_client_errors_total", &["bad_frame"]) >= 3.0);
    assert!(metric_value(&metrics, "switchyard_client_errors_total", &["bad_request"]) >= 4.0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_of_an_unknown_version_gets_kafkas_own_error() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let harness = start_proxy(&a, None).await;
    let mut stream = TcpStream::connect(harness.proxy.bootstrap_addr())
        .await
        .unwrap();
    // v99 of ApiVersions: the answer is UNSUPPORTED_VERSION in v0, listing
    // the ApiVersions versions that work, and the connection stays open.
    let header = [0u8, 18, 0, 99, 0, 0, 0, 42, 0xff, 0xff, 0];
    stream.write_all(&frame(&header)).await.unwrap();
    let payload = read_frame(&mut stream, CLOSE_WITHIN)
        .await
        .expect("an answer");
    assert_eq!(&payload[..4], &42i32.to_be_bytes());
    let mut body = payload.slice(4..);
    let response = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(response.error_code, 35);
    let entry = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("lists ApiVersions");
    assert!(entry.max_version >= entry.min_version);

    // The client retries with the version offered and gets the full table.
    let mut body = exchange(
        &mut stream,
        ApiKey::ApiVersions,
        entry.max_version,
        43,
        &ApiVersionsRequest::default(),
    )
    .await
    .unwrap();
    let response = ApiVersionsResponse::decode(&mut body, entry.max_version).unwrap();
    assert_eq!(response.error_code, 0);
    let produce = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert!(
        produce.max_version <= 12,
        "topic-id versions are never offered"
    );
    assert!(response
        .api_keys
        .iter()
        .all(|k| k.api_key != ApiKey::ConsumerGroupHeartbeat as i16));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_times_out_and_one_that_closes_is_reported() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let harness = start_proxy_with(&a, None, |c| c.upstream.request_timeout_ms = 1000).await;
    let bootstrap = harness.bootstrap();
    // Learn the virtual brokers first.
    normal_client_succeeds(&bootstrap, "t", "warm-up").await;
    let records = harness.proxy.shared().brokers.records();
    let (broker1, port1) = records
        .iter()
        .find(|(r, _)| r.node_id == 1)
        .map(|(r, p)| (r.virtual_id, p.unwrap()))
        .unwrap();
    let _ = broker1;

    // Broker 1 stops answering for longer than the request timeout.
    a.broker_round_trip_time(1, Duration::from_secs(30))
        .unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port1)).await.unwrap();
    s.write_all(&request_frame(
        ApiKey::Metadata,
        9,
        1,
        &MetadataRequest::default(),
    ))
    .await
    .unwrap();
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN).await,
        "a request with no answer ends the connection after the timeout"
    );
    a.broker_round_trip_time(1, Duration::ZERO).unwrap();

    // Broker 1 goes down: a connection to its virtual broker is closed
    // instead of hanging, and clients carry on through the others.
    a.broker_down(1).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port1)).await.unwrap();
    let _ = s
        .write_all(&request_frame(
            ApiKey::Metadata,
            9,
            1,
            &MetadataRequest::default(),
        ))
        .await;
    assert!(closed_by_peer(&mut s, CLOSE_WITHIN).await, "down broker");
    a.broker_up(1).unwrap();
    normal_client_succeeds(&bootstrap, "t", "broker back").await;

    let (_, metrics) = http_get(harness.proxy.admin_addr(), "/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "switchyard_upstream_errors_total",
            &["cluster=\"a\"", "timeout"]
        ) >= 1.0,
        "{metrics}"
    );
    harness.stop().await;
}

/// A broker that answers ApiVersions properly and Metadata with an array
/// count of 2^31 - 1 and nothing behind it: decoded blindly, the count
/// alone asks for about 170 GB and aborts the process.
async fn broker_with_a_corrupt_metadata_answer(
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let mut buf = bytes::Bytes::from(payload);
                    let Ok(header) = decode_request_header_from_buffer(&mut buf) else {
                        return;
                    };
                    let version = header.request_api_version;
                    let mut answer = header.correlation_id.to_be_bytes().to_vec();
                    if header.request_api_key == ApiKey::ApiVersions as i16 {
                        let response = ApiVersionsResponse::default().with_api_keys(vec![
                            ApiVersion::default()
                                .with_api_key(ApiKey::ApiVersions as i16)
                                .with_max_version(3),
                            ApiVersion::default()
                                .with_api_key(ApiKey::Metadata as i16)
                                .with_max_version(12),
                        ]);
                        let mut body = bytes::BytesMut::new();
                        response.encode(&mut body, version.min(3)).unwrap();
                        answer.extend_from_slice(&body);
                    } else if header.request_api_key == ApiKey::Metadata as i16 {
                        if version >= 9 {
                            answer.push(0); // response header tags
                            answer.extend_from_slice(&0i32.to_be_bytes()); // throttle
                            answer.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
                        } else {
                            if version >= 3 {
                                answer.extend_from_slice(&0i32.to_be_bytes());
                            }
                            answer.extend_from_slice(&i32::MAX.to_be_bytes());
                        }
                    } else {
                        return;
                    }
                    let mut frame = (answer.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&answer);
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    };
    (addr, tokio::spawn(serve))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_answer_with_a_corrupt_count_closes_one_connection_and_nothing_else() {
    let (broker, server) = broker_with_a_corrupt_metadata_answer().await;
    let harness = start_proxy(&broker.to_string(), None).await;
    let bootstrap = harness.bootstrap();
    for version in [1, 9, 12] {
        let mut victim = TcpStream::connect(&bootstrap).await.unwrap();
        victim
            .write_all(&request_frame(
                ApiKey::Metadata,
                version,
                7,
                &MetadataRequest::default(),
            ))
            .await
            .unwrap();
        assert!(
            closed_by_peer(&mut victim, CLOSE_WITHIN).await,
            "Metadata v{version}: the connection with the corrupt answer is closed"
        );
        // Everyone else is still served.
        let mut bystander = TcpStream::connect(&bootstrap).await.unwrap();
        let answer = exchange(
            &mut bystander,
            ApiKey::ApiVersions,
            0,
            8,
            &ApiVersionsRequest::default(),
        )
        .await
        .expect("a new connection is answered");
        let response = ApiVersionsResponse::decode(&mut answer.clone(), 0).unwrap();
        assert_eq!(response.error_code, 0);
    }
    let (status, _) = http_get(harness.proxy.admin_addr(), "/healthz").await;
    assert_eq!(status, 200);
    harness.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_health_status_and_names_unknown_paths() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let harness = start_proxy(&a, None).await;
    let admin = harness.proxy.admin_addr();
    let (status, body) = http_get(admin, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = http_get(admin, "/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["primary"], "a");
    assert_eq!(json["virtual_cluster_id"].as_str().unwrap().len(), 22);
    let (status, body) = http_get(admin, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/nope"), "{body}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_a_token_refuses_callers_without_it() {
    let a = start_cluster(3, &[("t", 3)]).unwrap();
    let harness = start_proxy_with(&a, None, |c| c.admin.token = Some("s3cret".into())).await;
    let admin = harness.proxy.admin_addr();
    assert_eq!(
        http_get(admin, "/healthz").await.0,
        200,
        "health needs no token"
    );
    let (status, body) = http_get(admin, "/status").await;
    assert_eq!(status, 401);
    assert!(body.contains("bearer token"), "{body}");
    let wrong = http_request(admin, "GET", "/metrics", "Authorization: Bearer nope\r\n").await;
    assert_eq!(wrong.0, 401);
    let right = http_request(admin, "GET", "/status", "Authorization: Bearer s3cret\r\n").await;
    assert_eq!(right.0, 200, "{}", right.1);
    harness.stop().await;
}
