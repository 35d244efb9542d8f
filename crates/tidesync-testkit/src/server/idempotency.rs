//! The idempotency store: `Idempotency-Key` (header, or `idempotencyKey` of a bulk op) → the
//! first successful reply, replayed on a retry with the same key.
//!
//! Keys share one namespace across single requests and bulk ops, so an op first sent in a bulk
//! request and retried alone (or the other way round) is applied once. Each key remembers a
//! fingerprint (collection, action, id); reusing a key for a different operation is refused
//! with 422. Only 2xx replies are stored: a refused write had no effect, so a retry after
//! resolving a conflict is evaluated afresh.

use std::collections::HashMap;

use axum::http::HeaderMap;

use super::reply::Reply;

/// Longest accepted key.
const MAX_KEY_LEN: usize = 255;

/// What a keyed write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Create,
    Update,
    Delete,
    Bulk,
}

/// What a key was first used for.
#[derive(Clone, Debug)]
pub(crate) struct Fingerprint {
    pub(crate) collection: String,
    pub(crate) action: Action,
    /// The id as the client named it (in the path, query or body), if any.
    pub(crate) id: Option<String>,
}

impl Fingerprint {
    fn same_operation(&self, other: &Fingerprint) -> bool {
        self.collection == other.collection
            && self.action == other.action
            && match (&self.id, &other.id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Result of a lookup.
pub(crate) enum Lookup {
    /// Never seen: apply the write.
    Miss,
    /// Seen: replay this reply.
    Replay(Reply),
    /// Seen for a different operation.
    Mismatch,
}

#[derive(Debug, Default)]
pub(crate) struct IdempotencyStore {
    entries: HashMap<String, (Fingerprint, Reply)>,
}

impl IdempotencyStore {
    pub(crate) fn lookup(&self, key: &str, fp: &Fingerprint) -> Lookup {
        match self.entries.get(key) {
            None => Lookup::Miss,
            Some((seen, reply)) if seen.same_operation(fp) => Lookup::Replay(reply.as_replay()),
            Some(_) => Lookup::Mismatch,
        }
    }

    /// Remembers a reply; only 2xx replies are kept.
    pub(crate) fn remember(&mut self, key: &str, fp: Fingerprint, reply: &Reply) {
        if reply.status.is_success() {
            self.entries.insert(key.to_owned(), (fp, reply.clone()));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Validates a key: 1 to 255 visible ASCII characters.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The `Idempotency-Key` header, validated. `Ok(None)` if absent.
pub(crate) fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, String> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if valid_key(s.trim()) => Ok(Some(s.trim().to_owned())),
            _ => Err("`Idempotency-Key` must be 1 to 255 visible ASCII characters".into()),
        },
    }
}
