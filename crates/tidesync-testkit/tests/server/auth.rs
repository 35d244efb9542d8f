//! Bearer auth: 401s, expiry, refresh, revocation, and tokens never reaching the log.

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use tidesync_testkit::server::ReferenceServer;

use crate::{Api, send};

#[tokio::test]
async fn tokens_expire_and_refresh() -> Result<()> {
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(1))
        .start()
        .await;
    let api = Api::new(server.url());
    let get = |token: Option<&str>| {
        let req = api.req(Method::GET, "/api/p");
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };

    let r = send(get(None)).await?;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"error": "unauthorized"}));
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    assert_eq!(send(get(Some("made-up"))).await?.status, 401);
    let r = send(
        api.req(Method::GET, "/api/p")
            .header("authorization", "Basic Zm9vOmJhcg=="),
    )
    .await?;
    assert_eq!(r.status, 401);

    let issued = server.issue_token();
    assert_eq!(send(get(Some(&issued))).await?.status, 200);

    // Refresh over HTTP (the token endpoint itself needs no token).
    let refresh = server.refresh_token();
    let t = api
        .post("/auth/token", &json!({ "refresh_token": refresh }))
        .await?;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.body["expires_in"], 1);
    assert_eq!(t.body["token_type"], "Bearer");
    let token = t.body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(send(get(Some(&token))).await?.status, 200);
    let write = send(
        api.req(Method::POST, "/api/p")
            .bearer_auth(&token)
            .json(&json!({"id": 1})),
    )
    .await?;
    assert_eq!(write.status, 201);

    // Expiry by time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send(get(Some(&token))).await?.status, 401);

    // Expiry on demand, then refresh again.
    let t = api
        .post("/auth/token", &json!({ "refresh_token": refresh }))
        .await?;
    let token = t.body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    server.expire_all_tokens();
    assert_eq!(send(get(Some(&token))).await?.status, 401);
    let t = api
        .post("/auth/token", &json!({ "refresh_token": refresh }))
        .await?;
    assert_eq!(t.status, 200);
    let token = t.body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(send(get(Some(&token))).await?.status, 200);

    // Bad grants.
    let bad = api
        .post("/auth/token", &json!({"refresh_token": "nope"}))
        .await?;
    assert_eq!(
        (bad.status, bad.body["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let bad = api
        .post("/auth/token", &json!({"something": "else"}))
        .await?;
    assert_eq!(
        (bad.status, bad.body["error"].clone()),
        (400, json!("invalid_request"))
    );
    let form = send(
        api.req(Method::POST, "/auth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={refresh}")),
    )
    .await?;
    assert_eq!(form.status, 200, "form-encoded refresh works too");
    server.revoke_refresh();
    let revoked = api
        .post("/auth/token", &json!({ "refresh_token": refresh }))
        .await?;
    assert_eq!(
        (revoked.status, revoked.body["error"].clone()),
        (400, json!("invalid_grant"))
    );

    // Turned off at run time.
    server.set_auth_required(false);
    assert_eq!(send(get(None)).await?.status, 200);
    assert_eq!(server.auth_rejections(), 5);

    // No token value ever reaches the log.
    let log = server.request_log();
    let dump = format!("{log:?}");
    for secret in [issued.as_str(), token.as_str(), refresh.as_str()] {
        assert!(
            !dump.contains(secret),
            "a token leaked into the request log"
        );
    }
    assert!(
        log.iter()
            .any(|e| e.header("authorization") == Some("<redacted>"))
    );
    Ok(())
}
