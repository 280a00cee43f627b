//! Operator commands that talk to a running switchyard's admin API.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cutover::flip::FlipReport;
use crate::status::Status;

/// One HTTP/1.1 exchange with the admin listener; returns (status, body).
pub async fn admin_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach the admin API at {addr}"))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("the admin API did not answer HTTP")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .with_context(|| format!("the admin API at {addr} did not answer within 60 s"))?
}

/// How a value reads in JSON, strings without their quotes (enums by their
/// wire names, `null` for nothing).
fn text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// A readable summary of `GET /status`.
pub fn summarize_status(status: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "primary           {}\nmirror            {}\nvirtual cluster   {}\nclient connections {}\n",
        text(&status.primary),
        text(&status.mirror),
        status.virtual_cluster_id,
        status.client_connections
    ));
    let cutover = &status.cutover;
    out.push_str(&format!(
        "started on        {}{}\n",
        text(&cutover.home),
        if cutover.fenced {
            " (a flip is running: Produce and JoinGroup are held)"
        } else {
            ""
        }
    ));
    if let Some(last) = &cutover.last_flip {
        out.push_str(&format!(
            "last flip         {} {} -> {}: {} in {} ms\n",
            text(&last.direction),
            text(&last.from),
            text(&last.to),
            text(&last.outcome),
            last.duration_ms
        ));
    }
    out.push_str("virtual brokers\n");
    for b in &status.virtual_brokers {
        out.push_str(&format!(
            "  {:>3}  port {:<6} -> cluster {} node {} at {}\n",
            b.virtual_id,
            text(&b.listen_port),
            text(&b.cluster),
            b.node_id,
            text(&b.real_address)
        ));
    }
    if let Some(mirroring) = &status.mirroring {
        out.push_str(&format!(
            "mirroring to {}: lag {} records / {} bytes ({} in memory), divergent records {}\n",
            text(&mirroring.target),
            mirroring.lag_records,
            mirroring.lag_bytes,
            mirroring.queued_bytes_in_memory,
            mirroring.divergent_records
        ));
        for p in &mirroring.partitions {
            let error = p
                .live
                .last_error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}-{}: lag {}, mirrored batches {}, translated {}..{}{}{}\n",
                p.topic,
                p.partition,
                p.live.lag_records,
                p.live.mirrored_batches,
                text(&p.translated_from),
                text(&p.translated_to),
                if p.live.topic_missing {
                    "  TOPIC MISSING"
                } else {
                    ""
                },
                error
            ));
        }
    }
    let readiness = &status.readiness;
    out.push_str(&format!(
        "flip would be lossless now: {}\n",
        if readiness.ready { "yes" } else { "no" }
    ));
    for reason in &readiness.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    for group in &readiness.groups {
        out.push_str(&format!(
            "  group {}: {}\n",
            group.group,
            if group.ready { "ready" } else { "not ready" }
        ));
        for reason in &group.reasons {
            out.push_str(&format!("    - {reason}\n"));
        }
        for p in &group.partitions {
            if let Some(reason) = &p.reason {
                out.push_str(&format!("    - {}-{}: {reason}\n", p.topic, p.partition));
            }
        }
    }
    out
}

/// `switchyard status`: fetch and print.
pub async fn status(addr: &str, token: Option<&str>) -> anyhow::Result<()> {
    let (status, body) = admin_request(addr, "GET", "/status", token, "").await?;
    if status != 200 {
        bail!("GET /status answered {status}: {body}");
    }
    let status: Status = serde_json::from_str(&body)
        .context("GET /status did not answer the status of this switchyard version")?;
    print!("{}", summarize_status(&status));
    Ok(())
}

/// A readable summary of a flip or rollback report.
pub fn summarize_flip(report: &FlipReport) -> String {
    let mut out = format!(
        "{} {} -> {}: {} in {} ms (clients held {} ms)\n",
        text(&report.direction),
        text(&report.from),
        text(&report.to),
        text(&report.outcome),
        report.duration_ms,
        report.fenced_ms,
    );
    for step in &report.steps {
        out.push_str(&format!(
            "  {:<8} {:>6} ms  {}\n",
            step.step, step.ms, step.detail
        ));
    }
    for group in &report.groups {
        out.push_str(&format!(
            "  group {}: {} offsets committed, {} carried by switchyard\n",
            group.group, group.committed, group.carried
        ));
        for p in &group.untranslatable {
            out.push_str(&format!("    - not moved: {p}\n"));
        }
    }
    for reason in &report.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    out
}

/// `switchyard flip` and `switchyard rollback`: run it, print the report;
/// an error unless clients moved.
pub async fn flip(addr: &str, token: Option<&str>, path: &str, force: bool) -> anyhow::Result<()> {
    let body = if force { r#"{"force": true}"# } else { "" };
    let (status, body) = admin_request(addr, "POST", path, token, body).await?;
    let Ok(report) = serde_json::from_str::<FlipReport>(&body) else {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .map(|json| json["error"].to_string())
            .unwrap_or(body);
        bail!("POST {path} answered {status}: {reason}");
    };
    print!("{}", summarize_flip(&report));
    if status != 200 {
        bail!("clients did not move ({})", text(&report.outcome));
    }
    Ok(())
}

/// `switchyard finalize`: stop mirroring after a flip.
pub async fn finalize(addr: &str, token: Option<&str>) -> anyhow::Result<()> {
    let (status, body) = admin_request(addr, "POST", "/finalize", token, "").await?;
    if status != 200 {
        bail!("POST /finalize answered {status}: {body}");
    }
    println!("finalized: mirroring is off; clients stay on the current primary");
    Ok(())
}
