//! Authentication: static headers or an async provider asked before every request.
//!
//! Secrets never leave this module readable: [`Secret`] prints as `***` in `Debug` and
//! `Display`, header values built from it are marked sensitive (so `reqwest`/`http` redact them
//! too), and no error or log line of this crate includes a request header.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tidesync_core::Result;

/// A secret string (token, API key). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

/// Headers carrying credentials: `(name, value)` pairs, values kept secret.
pub type AuthHeaders = Vec<(String, Secret)>;

/// Supplies credentials for each request and renews them when the server refuses them.
///
/// [`headers`](AuthProvider::headers) is called before every request (so it should be cheap,
/// e.g. return a cached token). When the server answers 401 or 403, the transport calls
/// [`refresh`](AuthProvider::refresh) and tries again, up to the configured number of times
/// (`auth_retries`, default 1); after that the failure is reported as
/// [`ErrorKind::Auth`](tidesync_core::ErrorKind::Auth). A `refresh` error is reported as is
/// (use `ErrorKind::Auth` for "the user must sign in again").
#[async_trait]
pub trait AuthProvider: Send + Sync + 'static {
    /// The credential headers for the next request.
    async fn headers(&self) -> Result<AuthHeaders>;

    /// Renews the credentials after the server refused them.
    async fn refresh(&self) -> Result<()>;
}

/// Fixed credential headers (an API key, a long-lived token). `refresh` does nothing, so a
/// refused credential ends as `ErrorKind::Auth` after the configured retries.
#[derive(Clone, Default)]
pub struct StaticAuth {
    headers: AuthHeaders,
}

impl StaticAuth {
    /// No headers yet.
    pub fn new() -> Self {
        StaticAuth::default()
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: impl Into<String>) -> Self {
        StaticAuth::new().header("Authorization", format!("Bearer {}", token.into()))
    }

    /// Adds a header (e.g. `X-Api-Key`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl fmt::Debug for StaticAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("StaticAuth")
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthProvider for StaticAuth {
    async fn headers(&self) -> Result<AuthHeaders> {
        Ok(self.headers.clone())
    }

    async fn refresh(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl<T: AuthProvider + ?Sized> AuthProvider for Arc<T> {
    async fn headers(&self) -> Result<AuthHeaders> {
        (**self).headers().await
    }

    async fn refresh(&self) -> Result<()> {
        (**self).refresh().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let auth = StaticAuth::bearer("s3cr3t-token").header("X-Api-Key", "k3y");
        let shown = format!("{auth:?} {} {:?}", Secret::new("abc"), Secret::new("abc"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("k3y"), "{shown}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
