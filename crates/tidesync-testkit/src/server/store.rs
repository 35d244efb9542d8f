//! The server's data: every collection, the clock, the idempotency store and the leader-fencing
//! epoch, behind one lock so that a write, its epoch check and its idempotency record are one
//! atomic step.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use std::collections::VecDeque;

use super::collection::{Collection, CollectionConfig};
use super::history::{MAX_CHANGES, ServerChange};
use super::idempotency::{Fingerprint, IdempotencyStore, Lookup, key_from_headers};
use super::reply::Reply;
use super::time::system_now_ms;

/// Header carrying the writer's leader-fencing epoch.
pub(crate) const EPOCH_HEADER: &str = "x-tidesync-epoch";

/// The write-related headers of a mutating request.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteCtx {
    pub(crate) idem_key: Option<String>,
    pub(crate) epoch: Option<u64>,
}

impl WriteCtx {
    /// Reads `Idempotency-Key` and `X-Tidesync-Epoch`; a malformed one is a 400.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, Reply> {
        let idem_key = key_from_headers(headers).map_err(Reply::bad_request)?;
        let epoch = match headers.get(EPOCH_HEADER) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(e) => Some(e),
                None => {
                    return Err(Reply::bad_request(
                        "`X-Tidesync-Epoch` must be a non-negative integer",
                    ));
                }
            },
        };
        Ok(Self { idem_key, epoch })
    }
}

/// Everything the API reads and writes.
#[derive(Debug)]
pub(crate) struct Store {
    collections: HashMap<String, Collection>,
    configs: HashMap<String, CollectionConfig>,
    default_config: CollectionConfig,
    frozen: Option<i64>,
    /// How far the server clock runs ahead of the system clock (negative: behind), in ms.
    pub(crate) skew_ms: i64,
    pub(crate) idem: IdempotencyStore,
    pub(crate) max_epoch: Option<u64>,
    pub(crate) stale_rejections: u64,
    pub(crate) replays: u64,
    pub(crate) mismatches: u64,
    /// Every applied change, in order (the oldest dropped past [`MAX_CHANGES`]).
    pub(crate) changes: VecDeque<ServerChange>,
    next_change: u64,
    /// How far the `Date` header is off the real time (ms, positive: ahead).
    pub(crate) date_skew_ms: i64,
    /// The next change seq, published after every batch of changes (the live channel
    /// waits on it).
    pub(crate) live_seq: tokio::sync::watch::Sender<u64>,
}

impl Store {
    pub(crate) fn new(
        default_config: CollectionConfig,
        configs: HashMap<String, CollectionConfig>,
    ) -> Self {
        Self {
            collections: HashMap::new(),
            configs,
            default_config,
            frozen: None,
            skew_ms: 0,
            idem: IdempotencyStore::default(),
            max_epoch: None,
            stale_rejections: 0,
            replays: 0,
            mismatches: 0,
            changes: VecDeque::new(),
            next_change: 0,
            date_skew_ms: 0,
            live_seq: tokio::sync::watch::channel(0).0,
        }
    }

    /// Moves the changes the collections noted into the history, attributed to `idem_key`
    /// (a request's) or to a direct edit.
    pub(crate) fn collect_changes(&mut self, idem_key: Option<&str>, direct: bool) {
        for (name, coll) in &mut self.collections {
            for (key, record) in coll.changed.drain(..) {
                if self.changes.len() >= MAX_CHANGES {
                    self.changes.pop_front();
                }
                self.changes.push_back(ServerChange {
                    seq: self.next_change,
                    collection: name.clone(),
                    key,
                    record,
                    idempotency_key: idem_key.map(str::to_owned),
                    direct,
                });
                self.next_change += 1;
            }
        }
        self.live_seq.send_if_modified(|seq| {
            let moved = *seq != self.next_change;
            *seq = self.next_change;
            moved
        });
    }

    /// The seq the next change will get.
    pub(crate) fn next_change_seq(&self) -> u64 {
        self.next_change
    }

    /// The server clock in epoch milliseconds (frozen or system).
    pub(crate) fn now(&self) -> i64 {
        self.frozen
            .unwrap_or_else(|| system_now_ms().saturating_add(self.skew_ms))
    }

    pub(crate) fn freeze(&mut self, at: Option<i64>) {
        self.frozen = at;
    }

    /// Sets the options of a collection (existing or future).
    pub(crate) fn configure(&mut self, name: &str, config: CollectionConfig) {
        if let Some(c) = self.collections.get_mut(name) {
            c.set_config(config.clone());
        }
        self.configs.insert(name.to_owned(), config);
    }

    pub(crate) fn config_for(&self, name: &str) -> CollectionConfig {
        self.configs
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default_config.clone())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Collection> {
        self.collections.get(name)
    }

    /// Runs `f` on the collection, or on an empty one with its configuration if it does not
    /// exist yet (reads never create a collection).
    pub(crate) fn with_view<R>(&self, name: &str, f: impl FnOnce(&Collection) -> R) -> R {
        match self.collections.get(name) {
            Some(c) => f(c),
            None => f(&Collection::new(name, self.config_for(name))),
        }
    }

    /// The collection, created on first use.
    pub(crate) fn collection_mut(&mut self, name: &str) -> &mut Collection {
        let config = self.config_for(name);
        self.collections
            .entry(name.to_owned())
            .or_insert_with(|| Collection::new(name, config))
    }

    /// Runs a write with its fencing and idempotency rules:
    /// 1. an epoch lower than the highest seen → 409 `stale epoch` (else it is recorded);
    /// 2. a known idempotency key → the stored reply (422 if it was for another operation);
    /// 3. otherwise `apply`, and a 2xx reply is stored under the key.
    pub(crate) fn mutate(
        &mut self,
        ctx: &WriteCtx,
        fp: Fingerprint,
        apply: impl FnOnce(&mut Store) -> Reply,
    ) -> Reply {
        if let Some(epoch) = ctx.epoch {
            match self.max_epoch {
                Some(max) if epoch < max => {
                    self.stale_rejections += 1;
                    return Reply::json(
                        StatusCode::CONFLICT,
                        json!({ "error": "stale epoch", "epoch": epoch, "maxEpoch": max }),
                    );
                }
                _ => self.max_epoch = Some(epoch),
            }
        }
        if let Some(key) = &ctx.idem_key {
            match self.idem.lookup(key, &fp) {
                Lookup::Miss => {}
                Lookup::Replay(r) => {
                    self.replays += 1;
                    return r;
                }
                Lookup::Mismatch => {
                    self.mismatches += 1;
                    return Reply::error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency key reused for a different request",
                    );
                }
            }
        }
        let reply = apply(self);
        self.collect_changes(ctx.idem_key.as_deref(), false);
        if let Some(key) = &ctx.idem_key {
            self.idem.remember(key, fp, &reply);
        }
        reply
    }
}
