//! Start-up and shutdown, the background variant from sync code, the inspection API, the
//! request log, and garbage on the wire.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use tidesync_testkit::server::{DirectError, FaultKind, ReferenceServer};

use crate::{Api, send};

/// One raw HTTP/1.1 exchange over a blocking socket; returns the whole response text.
fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn background_server_from_blocking_code() -> Result<()> {
    let server = ReferenceServer::start_background();
    let addr = server.addr();
    assert_eq!(server.url(), format!("http://{addr}"));
    let body = r#"{"id":"a","t":"from a blocking client"}"#;
    let req = format!(
        "POST /api/sync HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_http(addr, req.as_bytes())?;
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("\r\ndate: "), "{resp}");
    assert_eq!(
        server.record("sync", "a").map(|r| r["t"].clone()),
        Some(json!("from a blocking client"))
    );

    let handle = server.handle();
    server.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port is closed once shutdown returns"
    );
    assert_eq!(
        handle.records("sync").len(),
        1,
        "the handle outlives the server"
    );
    Ok(())
}

#[test]
fn garbage_on_the_wire_does_not_hurt() -> Result<()> {
    let server = ReferenceServer::start_background();
    let addr = server.addr();
    for junk in [
        &b"\x00\x01\x02 not http\r\n\r\n"[..],
        b"GET /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /api/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw_http(addr, junk).unwrap_or_default();
        assert!(
            resp.is_empty() || resp.starts_with("HTTP/1.1 4"),
            "a 4xx or a closed connection, got {resp}"
        );
    }
    let ok = raw_http(
        addr,
        b"GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_server_inside_a_runtime_and_concurrent_clients() -> Result<()> {
    let server = ReferenceServer::start_background();
    let api = Api::new(server.url());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.post("/api/many", &json!({ "id": i })).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await??.status, 201);
    }
    assert_eq!(server.records("many").len(), 20);
    drop(server); // joins the server thread from inside a runtime: must not panic
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_the_port_and_hung_connections() -> Result<()> {
    let server = ReferenceServer::start().await;
    let addr = server.addr();
    let api = Api::new(server.url());
    server.fail_next(1, FaultKind::hang());
    let hung = tokio::spawn(async move { api.get("/api/x").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown();
    let outcome = tokio::time::timeout(Duration::from_secs(3), hung).await?;
    assert!(
        outcome?.is_err(),
        "the hung request ends with a closed connection"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn direct_writes_stamp_like_the_api() -> Result<()> {
    let server = ReferenceServer::start().await;
    server.freeze_clock(Some(1_000));
    assert_eq!(server.now_ms(), 1_000);
    let a = server.insert_direct(
        "d",
        json!({"id": "a", "n": 1, "version": 99, "updatedAt": 5}),
    )?;
    assert_eq!(
        (a["version"].clone(), a["updatedAt"].clone()),
        (json!(1), json!(1_000))
    );
    server.freeze_clock(Some(2_000));
    let a = server.update_direct("d", "a", json!({"m": 2}))?;
    assert_eq!(
        (a["version"].clone(), a["updatedAt"].clone()),
        (json!(2), json!(2_000))
    );
    assert_eq!((a["n"].clone(), a["m"].clone()), (json!(1), json!(2)));
    let a = server.insert_direct("d", json!({"id": "a", "z": 0}))?;
    assert_eq!(
        a["version"], 3,
        "insert_direct on an existing id replaces it"
    );
    assert!(a.get("n").is_none());
    let t = server.delete_direct("d", "a")?;
    assert_eq!(
        (t["deleted"].clone(), t["version"].clone()),
        (json!(true), json!(4))
    );
    let no_id = server.insert_direct("d", json!({"x": 1}))?;
    assert!(no_id["id"].is_string());

    assert_eq!(server.delete_direct("d", "a"), Err(DirectError::NotFound));
    assert_eq!(
        server.update_direct("d", "zz", json!({})),
        Err(DirectError::NotFound)
    );
    assert_eq!(
        server.insert_direct("d", json!([1])),
        Err(DirectError::NotAnObject)
    );
    assert!(matches!(
        server.insert_direct("d", json!({"id": {"no": 1}})),
        Err(DirectError::Invalid(_))
    ));

    // Seen by a client exactly as API writes are.
    let api = Api::new(server.url());
    let r = api.get("/api/d?updated_after=1000").await?;
    assert_eq!(r.body["total"], 2);
    Ok(())
}

#[tokio::test]
async fn the_request_log_records_what_was_asked() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    api.post("/api/g", &json!({"id": "a"})).await?;
    server.clear_log();
    let r = send(
        api.req(Method::PATCH, "/api/g/a?x=1")
            .header("idempotency-key", "k")
            .header("if-match", "\"1\"")
            .header("x-tidesync-epoch", "3")
            .header("x-unrelated", "no")
            .json(&json!({"n": 1})),
    )
    .await?;
    assert_eq!(r.status, 200);
    api.get("/api/g?limit=1").await?;
    let log = server.request_log();
    assert_eq!(log.len(), 2);
    let e = &log[0];
    assert_eq!(e.seq, 1, "seq keeps counting across clear_log");
    assert_eq!((e.method.as_str(), e.path.as_str()), ("PATCH", "/api/g/a"));
    assert_eq!(e.query.as_deref(), Some("x=1"));
    assert_eq!(e.idempotency_key(), Some("k"));
    assert_eq!(e.header("If-Match"), Some("\"1\""));
    assert_eq!(e.header("x-tidesync-epoch"), Some("3"));
    assert_eq!(e.header("x-unrelated"), None);
    assert_eq!(e.json(), Some(json!({"n": 1})));
    assert_eq!(e.status, Some(200));
    assert!(e.is_write() && !log[1].is_write());
    assert_eq!(log[1].query.as_deref(), Some("limit=1"));
    Ok(())
}

#[test]
fn inside_an_actix_system() -> Result<()> {
    let system = actix_rt::System::new();
    system.block_on(async {
        // Both variants work there: the System runs a tokio runtime.
        let background = ReferenceServer::start_background();
        let local = ReferenceServer::start().await;
        for server in [&background, &local] {
            let api = Api::new(server.url());
            let r = api.post("/api/actix", &json!({"id": 1})).await?;
            assert_eq!(r.status, 201);
            assert_eq!(server.records("actix").len(), 1);
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

#[test]
fn handles_are_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn sendable<T: Send + Sync + 'static>() {}
    shareable::<tidesync_testkit::server::ServerHandle>();
    sendable::<ReferenceServer>();
}
