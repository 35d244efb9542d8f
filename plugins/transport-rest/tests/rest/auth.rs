//! Auth: static headers, a refreshing provider, refusal after the retries, no leaked tokens.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tidesync_core::{Error, ErrorKind, Op, Transport};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{
    AuthHeaders, AuthProvider, RestTransport, Secret, StaticAuth, TableRoutes,
};

use crate::support::push;

/// Exchanges the server's refresh token at `POST /auth/token` for access tokens.
struct Refreshing {
    url: String,
    refresh_token: Secret,
    access: Mutex<Secret>,
    refreshes: AtomicU32,
    http: reqwest::Client,
}

#[async_trait]
impl AuthProvider for Refreshing {
    async fn headers(&self) -> tidesync_core::Result<AuthHeaders> {
        let token = self
            .access
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .clone();
        Ok(vec![(
            "Authorization".into(),
            Secret::new(format!("Bearer {}", token.expose())),
        )])
    }

    async fn refresh(&self) -> tidesync_core::Result<()> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let resp = self
            .http
            .post(format!("{}/auth/token", self.url))
            .json(&json!({"refresh_token": self.refresh_token.expose()}))
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Network, e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::Auth,
                "refresh token refused; sign in again",
            ));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::new(ErrorKind::Decode, e.to_string()))?;
        let token = body["access_token"].as_str().unwrap_or_default().to_owned();
        *self
            .access
            .lock()
            .map_err(|_| Error::internal("poisoned"))? = Secret::new(token);
        Ok(())
    }
}

async fn auth_server() -> ReferenceServer {
    ReferenceServer::builder()
        .auth(Duration::from_secs(60))
        .start()
        .await
}

fn provider(server: &ReferenceServer) -> Arc<Refreshing> {
    // This test builds its own reqwest client, so it needs a crypto provider too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(Refreshing {
        url: server.url().to_owned(),
        refresh_token: Secret::new(server.refresh_token()),
        access: Mutex::new(Secret::new(server.issue_token())),
        refreshes: AtomicU32::new(0),
        http: reqwest::Client::new(),
    })
}

fn with(server: &ReferenceServer, auth: Arc<dyn AuthProvider>) -> RestTransport {
    RestTransport::builder(server.url())
        .auth_arc(auth)
        .table("posts", TableRoutes::rest("/api/posts"))
        .build()
        .expect("valid")
}

#[tokio::test]
async fn expired_tokens_are_refreshed_and_the_request_retried() -> anyhow::Result<()> {
    let server = auth_server().await;
    let auth = provider(&server);
    let t = with(&server, auth.clone());
    t.push(push("posts", Op::Create, "a1", Some(json!({"id": "a1"}))))
        .await?;
    assert_eq!(auth.refreshes.load(Ordering::SeqCst), 0);
    server.expire_all_tokens();
    t.push(push("posts", Op::Create, "a2", Some(json!({"id": "a2"}))))
        .await?;
    assert_eq!(auth.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(server.auth_rejections(), 1);
    assert!(server.record("posts", "a2").is_some());
    // Pulls and fetches go through the same path.
    server.expire_all_tokens();
    assert!(t.fetch("posts", &"a2".into()).await?.is_some());
    assert_eq!(auth.refreshes.load(Ordering::SeqCst), 2);
    let log = server.request_log();
    assert!(
        log.iter()
            .filter(|r| r.path.starts_with("/api"))
            .all(|r| r.header("authorization") == Some("<redacted>"))
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_refresh_or_a_bad_static_token_ends_as_auth() -> anyhow::Result<()> {
    let server = auth_server().await;
    let auth = provider(&server);
    let t = with(&server, auth.clone());
    server.expire_all_tokens();
    server.revoke_refresh();
    let err = t
        .push(push("posts", Op::Create, "b1", Some(json!({"id": "b1"}))))
        .await
        .expect_err("refresh refused");
    assert_eq!(
        (err.kind(), err.table_name()),
        (ErrorKind::Auth, Some("posts"))
    );
    assert!(!err.retryable());

    let secret = "static-secret-token-123";
    for (retries, requests) in [(1, 2), (3, 4), (0, 1)] {
        server.clear_log();
        let t = RestTransport::builder(server.url())
            .auth(StaticAuth::bearer(secret))
            .auth_retries(retries)
            .table("posts", TableRoutes::rest("/api/posts"))
            .build()?;
        let err = t
            .push(push("posts", Op::Create, "b2", Some(json!({"id": "b2"}))))
            .await
            .expect_err("bad token");
        assert_eq!(
            (err.kind(), err.http_status()),
            (ErrorKind::Auth, Some(401))
        );
        assert_eq!(server.request_log().len(), requests, "retries {retries}");
        // The token appears nowhere.
        let shown = format!("{err} {err:?} {t:?}");
        assert!(!shown.contains(secret), "{shown}");
    }
    Ok(())
}

#[tokio::test]
async fn without_a_provider_401_is_auth_at_once() -> anyhow::Result<()> {
    let server = auth_server().await;
    let t = RestTransport::builder(server.url())
        .table("posts", TableRoutes::rest("/api/posts"))
        .build()?;
    let err = t
        .push(push("posts", Op::Create, "c1", Some(json!({"id": "c1"}))))
        .await
        .expect_err("no token");
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert_eq!(server.request_log().len(), 1);
    Ok(())
}
