//! Raw probes of a table's routes, for diagnostics (`tidesync doctor`): one request built
//! exactly as the configured feed or fetch route builds it (templates, query order, headers,
//! credentials), and what came back (status, the headers that matter, the JSON body), without
//! interpreting the answer. Nothing here changes a walk or a checkpoint.

use serde_json::Value;
use tidesync_core::{Error, Key, Result};

use crate::client::{Incoming, Outgoing, RestTransport};
use crate::pagination::Params;
use crate::pull::link_next;

/// The placeholder values of one probe of a feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedProbe {
    /// `{cursor}` (already written in the feed's cursor format); `None`: left out.
    pub cursor: Option<String>,
    /// `{after_key}`; `None`: left out.
    pub after_key: Option<String>,
    /// `{limit}`.
    pub limit: u64,
    /// `{offset}`.
    pub offset: u64,
    /// `{page}` (`None`: the feed's first page number).
    pub page: Option<u64>,
}

impl FeedProbe {
    /// The first page of the feed from the start, `limit` items.
    pub fn first(limit: u64) -> Self {
        FeedProbe {
            limit,
            ..FeedProbe::default()
        }
    }

    /// The first page after `cursor` (and `after_key`, for keyset filters).
    pub fn after(cursor: impl Into<String>, after_key: Option<String>, limit: u64) -> Self {
        FeedProbe {
            cursor: Some(cursor.into()),
            after_key,
            limit,
            ..FeedProbe::default()
        }
    }
}

/// What one probe got back.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResponse {
    /// The request URL (query included; credentials travel in headers, never here).
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The server clock from `Date`, in epoch milliseconds.
    pub server_time_ms: Option<i64>,
    /// The `ETag`, without quotes or the weak prefix.
    pub etag: Option<String>,
    /// The `rel="next"` target of a `Link` header, resolved against the request URL.
    pub link_next: Option<String>,
    /// The body as JSON, or why it is not (empty, not JSON, too large).
    pub body: std::result::Result<Value, String>,
    /// The start of the body (credentials redacted), for messages.
    pub excerpt: String,
}

impl ProbeResponse {
    /// A 2xx status.
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn from_incoming(transport: &RestTransport, url: &reqwest::Url, resp: &Incoming) -> Self {
        let body = if resp.overflow {
            Err(format!(
                "the body is larger than max_response_bytes ({} bytes)",
                transport.config.max_response_bytes
            ))
        } else if resp.body_is_empty() {
            Err("the body is empty".to_owned())
        } else {
            serde_json::from_slice(&resp.body).map_err(|e| format!("the body is not JSON: {e}"))
        };
        ProbeResponse {
            url: url.to_string(),
            status: resp.status,
            server_time_ms: resp.server_time_ms(),
            etag: resp.etag(),
            link_next: resp
                .header("link")
                .and_then(link_next)
                .and_then(|target| url.join(&target).ok())
                .map(|u| u.to_string()),
            body,
            excerpt: resp.excerpt(transport.config.excerpt_bytes),
        }
    }
}

impl RestTransport {
    /// Sends one request of `table`'s change feed (its deleted-ids feed with `deleted`) with
    /// the probe's placeholder values. Any status is returned; only a request that got no
    /// answer (connect, DNS, TLS, timeout) is an error.
    pub async fn probe_feed(
        &self,
        table: &str,
        deleted: bool,
        probe: &FeedProbe,
    ) -> Result<ProbeResponse> {
        let routes = self.routes(table)?;
        let feed = routes
            .pull
            .as_ref()
            .ok_or_else(|| Error::config("no pull route configured").table(table))?;
        let feed = match (deleted, feed.deleted.as_deref()) {
            (false, _) => feed,
            (true, Some(deleted)) => deleted,
            (true, None) => {
                return Err(Error::config("no deleted-ids feed configured").table(table));
            }
        };
        let params = Params {
            cursor: probe.cursor.clone(),
            after_key: probe.after_key.clone(),
            limit: probe.limit,
            offset: probe.offset,
            page: probe.page.unwrap_or(feed.pagination.first_page),
            token: None,
            since_token: None,
            next_url: None,
        };
        let url = self.feed_url(table, feed, &params)?;
        let out = Outgoing {
            method: reqwest::Method::GET,
            url: url.clone(),
            headers: self.headers(&feed.headers),
            body: None,
        };
        let resp = self.execute(table, &out).await?;
        Ok(ProbeResponse::from_incoming(self, &url, &resp))
    }

    /// Sends `table`'s fetch route for `key`. Any status is returned.
    pub async fn probe_fetch(&self, table: &str, key: &Key) -> Result<ProbeResponse> {
        let (_, out) = self.fetch_request(table, key)?;
        let resp = self.execute(table, &out).await.map_err(|e| e.key(key))?;
        Ok(ProbeResponse::from_incoming(self, &out.url, &resp))
    }

    /// Whether `url` is on `base_url`'s origin (scheme, host and port).
    pub fn is_same_origin(&self, url: &str) -> bool {
        reqwest::Url::parse(url).is_ok_and(|u| self.same_origin(&u))
    }
}
