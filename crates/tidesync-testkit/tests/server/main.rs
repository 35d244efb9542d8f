//! Tests of the reference REST server, over real HTTP on loopback with reqwest.

mod auth;
mod crud;
mod faults;
mod history;
mod idempotency;
mod lifecycle;
mod pull;

use std::sync::Once;
use std::time::Duration;

use anyhow::Result;
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value;

/// A reqwest client (installing the rustls provider reqwest needs to build one at all).
pub fn client() -> Client {
    client_with_timeout(Duration::from_secs(10))
}

/// A client with a request timeout.
pub fn client_with_timeout(timeout: Duration) -> Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Client::builder()
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Null` if empty or not JSON).
    pub body: Value,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the response.
pub async fn send(req: RequestBuilder) -> Result<Resp> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Resp {
        status,
        headers,
        text,
        body,
    })
}

/// A tiny API client bound to one server.
#[derive(Clone)]
pub struct Api {
    /// The HTTP client.
    pub client: Client,
    /// The server's base URL.
    pub base: String,
}

impl Api {
    /// A client with the default timeout.
    pub fn new(base: &str) -> Self {
        Self {
            client: client(),
            base: base.to_owned(),
        }
    }

    /// A client of one's own.
    pub fn with_client(base: &str, client: Client) -> Self {
        Self {
            client,
            base: base.to_owned(),
        }
    }

    /// A request to `base + path` (path starts with `/`).
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Resp> {
        send(self.req(Method::GET, path)).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Resp> {
        send(self.req(Method::POST, path).json(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Resp> {
        send(self.req(Method::PUT, path).json(body)).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Resp> {
        send(self.req(Method::PATCH, path).json(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Resp> {
        send(self.req(Method::DELETE, path)).await
    }
}
