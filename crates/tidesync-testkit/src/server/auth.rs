//! Bearer-token auth: short-lived access tokens, one long-lived refresh token exchanged at
//! `POST /auth/token`. Token values are never logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// The token state.
#[derive(Debug)]
pub(crate) struct AuthState {
    /// Whether `/api` requests need a token.
    pub(crate) required: bool,
    pub(crate) ttl: Duration,
    tokens: HashMap<String, Instant>,
    refresh: String,
    refresh_revoked: bool,
    pub(crate) rejections: u64,
}

fn new_secret(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl AuthState {
    pub(crate) fn new(required: bool, ttl: Duration) -> Self {
        Self {
            required,
            ttl,
            tokens: HashMap::new(),
            refresh: new_secret("rt"),
            refresh_revoked: false,
            rejections: 0,
        }
    }

    /// Issues an access token valid for the ttl.
    pub(crate) fn issue(&mut self) -> String {
        let now = Instant::now();
        self.tokens.retain(|_, exp| *exp > now);
        let token = new_secret("at");
        self.tokens.insert(token.clone(), now + self.ttl);
        token
    }

    pub(crate) fn refresh_token(&self) -> String {
        self.refresh.clone()
    }

    pub(crate) fn expire_all(&mut self) {
        self.tokens.clear();
    }

    pub(crate) fn revoke_refresh(&mut self) {
        self.refresh_revoked = true;
    }

    /// Exchanges the refresh token for an access token: `(token, expires_in seconds)`.
    pub(crate) fn exchange(&mut self, refresh: &str) -> Option<(String, u64)> {
        if self.refresh_revoked || refresh != self.refresh {
            return None;
        }
        Some((self.issue(), self.ttl.as_secs()))
    }

    /// Whether the request carries a valid, unexpired `Authorization: Bearer` token.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let mut parts = value.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or("");
        let token = parts.next().unwrap_or("").trim();
        scheme.eq_ignore_ascii_case("bearer")
            && self
                .tokens
                .get(token)
                .is_some_and(|exp| *exp > Instant::now())
    }
}
