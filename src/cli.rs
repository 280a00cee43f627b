//! Operator commands that talk to a running switchyard's admin API.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A readable summary of `GET /status`.
pub fn summarize_status(json: &serde_json::Value) -> String {
    let mut out = String::new();
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    out.push_str(&format!(
        "primary           {}\nmirror            {}\nvirtual cluster   {}\nclient connections {}\n",
        text(&json["primary"]),
        text(&json["mirror"]),
        text(&json["virtual_cluster_id"]),
        json["client_connections"]
    ));
    let cutover = &json["cutover"];
    if cutover.is_object() {
        out.push_str(&format!(
            "started on        {}{}\n",
            text(&cutover["home"]),
            if cutover["fenced"] == true {
                " (a flip is running: Produce and JoinGroup are held)"
            } else {
                ""
            }
        ));
        let last = &cutover["last_flip"];
        if last.is_object() {
            out.push_str(&format!(
                "last flip         {} {} -> {}: {} in {} ms\n",
                text(&last["direction"]),
                text(&last["from"]),
                text(&last["to"]),
                text(&last["outcome"]),
                last["duration_ms"]
            ));
        }
    }
    if let Some(brokers) = json["virtual_brokers"].as_array() {
        out.push_str("virtual brokers\n");
        for b in brokers {
            out.push_str(&format!(
                "  {:>3}  port {:<6} -> cluster {} node {} at {}\n",
                b["virtual_id"],
                b["listen_port"],
                text(&b["cluster"]),
                b["node_id"],
                text(&b["real_address"])
            ));
        }
    }
    let mirroring = &json["mirroring"];
    if !mirroring.is_null() {
        out.push_str(&format!(
            "mirroring to {}: lag {} records / {} bytes, divergent records {}\n",
            text(&mirroring["target"]),
            mirroring["lag_records"],
            mirroring["lag_bytes"],
            mirroring["divergent_records"]
        ));
        for p in mirroring["partitions"].as_array().into_iter().flatten() {
            let error = p["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}-{}: lag {}, mirrored batches {}, translated {}..{}{}{}\n",
                text(&p["topic"]),
                p["partition"],
                p["lag_records"],
                p["mirrored_batches"],
                p["translated_from"],
                p["translated_to"],
                if p["topic_missing"] == true {
                    "  TOPIC MISSING"
                } else {
                    ""
                },
                error
            ));
        }
    }
    let readiness = &json["readiness"];
    out.push_str(&format!(
        "flip would be lossless now: {}\n",
        if readiness["ready"] == true {
            "yes"
        } else {
            "no"
        }
    ));
    for reason in readiness["reasons"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", text(reason)));
    }
    for group in readiness["groups"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  group {}: {}\n",
            text(&group["group"]),
            if group["ready"] == true {
                "ready"
            } else {
                "not ready"
            }
        ));
        for reason in group["reasons"].as_array().into_iter().flatten() {
            out.push_str(&format!("    - {}\n", text(reason)));
        }
        for p in group["partitions"].as_array().into_iter().flatten() {
            if let Some(reason) = p["reason"].as_str() {
                out.push_str(&format!(
                    "    - {}-{}: {reason}\n",
                    text(&p["topic"]),
                    p["partition"]
                ));
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
    let json: serde_json::Value =
        serde_json::from_str(&body).context("GET /status did not answer JSON")?;
    print!("{}", summarize_status(&json));
    Ok(())
}

/// A readable summary of a flip or rollback report.
pub fn summarize_flip(json: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = format!(
        "{} {} -> {}: {} in {} ms (clients held {} ms)\n",
        text(&json["direction"]),
        text(&json["from"]),
        text(&json["to"]),
        text(&json["outcome"]),
        json["duration_ms"],
        json["fenced_ms"],
    );
    for step in json["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<8} {:>6} ms  {}\n",
            text(&step["step"]),
            step["ms"],
            text(&step["detail"])
        ));
    }
    for group in json["groups"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  group {}: {} offsets committed, {} carried by switchyard\n",
            text(&group["group"]),
            group["committed"],
            group["carried"]
        ));
        for p in group["untranslatable"].as_array().into_iter().flatten() {
            out.push_str(&format!("    - not moved: {}\n", text(p)));
        }
    }
    for reason in json["reasons"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", text(reason)));
    }
    out
}

/// `switchyard flip` and `switchyard rollback`: run it, print the report;
/// an error unless clients moved.
pub async fn flip(addr: &str, token: Option<&str>, path: &str, force: bool) -> anyhow::Result<()> {
    let body = if force { r#"{"force": true}"# } else { "" };
    let (status, body) = admin_request(addr, "POST", path, token, body).await?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("POST {path} answered {status} without JSON: {body}"))?;
    if json.get("outcome").is_none() {
        bail!("POST {path} answered {status}: {}", json["error"]);
    }
    print!("{}", summarize_flip(&json));
    if status != 200 {
        bail!("clients did not move ({})", json["outcome"]);
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
