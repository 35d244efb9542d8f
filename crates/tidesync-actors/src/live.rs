//! The live channel's connection loop and its observable state.
//!
//! The scheduler runs [`run`] as a future in its own context when the transport offers a
//! channel ([`tidesync_core::Transport::live`]). The loop connects while the scheduler wants
//! it (started, leading, not told the network is gone), reads signals and hands them to the
//! scheduler, and reconnects with full-jitter backoff (the server's `retry:` as a floor). It
//! never writes: every signal ends as a pull, so a signal never moves a checkpoint by itself.
//! After every connect the scheduler runs a full delta pull (nothing changed while
//! disconnected is lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use tidesync_core::live::{LiveChannel, LiveSession};

use crate::backoff::exponential_ceiling;
use crate::events::SyncEvent;
use crate::shared::SyncShared;
use crate::telemetry;

/// Where the live channel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveState {
    /// The transport has no live channel (or the engine has not started it).
    Off,
    /// Connecting (handshake included).
    Connecting,
    /// Open: server changes arrive as they happen.
    Connected,
    /// Closed; polling goes on and a reconnect is scheduled (or waits for the network).
    Disconnected,
}

impl LiveState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => LiveState::Connecting,
            2 => LiveState::Connected,
            3 => LiveState::Disconnected,
            _ => LiveState::Off,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            LiveState::Off => 0,
            LiveState::Connecting => 1,
            LiveState::Connected => 2,
            LiveState::Disconnected => 3,
        }
    }

    /// `off`, `connecting`, `connected`, `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveState::Off => "off",
            LiveState::Connecting => "connecting",
            LiveState::Connected => "connected",
            LiveState::Disconnected => "disconnected",
        }
    }
}

/// The live channel's counters, readable without asking an actor.
#[derive(Debug, Default)]
pub struct LiveStats {
    state: AtomicU8,
    /// Successful connects after the first one.
    pub reconnects: AtomicU64,
    /// Successful connects in all.
    pub connects: AtomicU64,
    /// Signals received.
    pub events: AtomicU64,
    /// Wall-clock ms of the last signal (0 = none yet).
    pub last_event_ms: AtomicU64,
    /// Wall-clock ms of the last successful connect (0 = never).
    pub connected_since_ms: AtomicU64,
}

impl LiveStats {
    /// The channel's state.
    pub fn state(&self) -> LiveState {
        LiveState::from_u8(self.state.load(Ordering::SeqCst))
    }

    pub(crate) fn set_state(&self, state: LiveState) {
        self.state.store(state.as_u8(), Ordering::SeqCst);
        metrics::gauge!(telemetry::LIVE_CONNECTED).set(if state == LiveState::Connected {
            1.0
        } else {
            0.0
        });
    }
}

/// What the scheduler wants of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Want {
    /// Keep the channel open.
    pub open: bool,
    /// Bumped to cut a backoff wait short (`set_online(true)`, `foreground()`).
    pub kick: u64,
}

/// From the loop to the scheduler.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum LiveEvent {
    /// The channel (re)connected: run a full delta pull.
    Connected,
    /// Pull these tables soon (empty: every table).
    Pull(Vec<String>),
}

/// The connection loop; ends when `want` is dropped (the scheduler stopped).
pub(crate) async fn run(
    sh: SyncShared,
    channel: Arc<dyn LiveChannel>,
    mut want: watch::Receiver<Want>,
    to: Recipient<LiveEvent>,
) {
    let stats = sh.state.live.clone();
    let describe = channel.describe();
    let mut last_event_id: Option<String> = None;
    let mut attempt: u32 = 0;
    loop {
        // Wait until the scheduler wants the channel open.
        loop {
            if want.borrow_and_update().open {
                break;
            }
            stats.set_state(LiveState::Disconnected);
            if want.changed().await.is_err() {
                stats.set_state(LiveState::Off);
                return;
            }
        }
        let kick_seen = want.borrow().kick;
        stats.set_state(LiveState::Connecting);
        let connected = tokio::select! {
            res = channel.connect(last_event_id.clone()) => Some(res),
            changed = want.changed() => {
                if changed.is_err() {
                    stats.set_state(LiveState::Off);
                    return;
                }
                None
            }
        };
        let retry_floor = match connected {
            // The wish changed while connecting: start over with the new one.
            None => continue,
            Some(Err(err)) => {
                tracing::debug!(channel = %describe, error = %err, attempt, "live channel: connect failed");
                stats.set_state(LiveState::Disconnected);
                // A 429/503 with `Retry-After`: the server says when to come back.
                err.retry_after_delay()
            }
            Some(Ok(mut session)) => {
                attempt = 0;
                let first = stats.connects.fetch_add(1, Ordering::SeqCst) == 0;
                if !first {
                    stats.reconnects.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!(telemetry::LIVE_RECONNECTS_TOTAL).increment(1);
                }
                stats
                    .connected_since_ms
                    .store(tidesync_core::hlc::wall_millis(), Ordering::SeqCst);
                stats.set_state(LiveState::Connected);
                tracing::info!(channel = %describe, "live channel connected");
                sh.events.emit(SyncEvent::LiveConnected);
                to.do_send(LiveEvent::Connected);
                let why = read(&mut *session, &mut want, &stats, &to).await;
                last_event_id = session.last_event_id().or(last_event_id);
                let floor = session.retry_after();
                stats.set_state(LiveState::Disconnected);
                match &why {
                    Ended::Stopped => {
                        stats.set_state(LiveState::Off);
                        return;
                    }
                    Ended::Unwanted => {
                        tracing::info!(channel = %describe, "live channel closed");
                    }
                    Ended::Closed => {
                        tracing::info!(channel = %describe, "live channel closed by the server; reconnecting");
                    }
                    Ended::Failed(error) => {
                        tracing::warn!(channel = %describe, %error, "live channel broke; reconnecting");
                    }
                }
                sh.events.emit(SyncEvent::LiveDisconnected {
                    reason: why.reason(),
                });
                if matches!(why, Ended::Unwanted) {
                    continue;
                }
                floor
            }
        };
        attempt = attempt.saturating_add(1);
        let settings = &sh.settings;
        let ceiling = exponential_ceiling(
            settings.live_backoff_base,
            settings.live_backoff_cap,
            attempt,
        );
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let mut delay = Duration::from_millis(rand::rng().random_range(0..=ms));
        if let Some(floor) = retry_floor {
            delay = delay.max(floor.min(settings.live_backoff_cap));
        }
        // Wait out the delay; a kick (`set_online(true)`, `foreground()`) cuts it short.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                changed = want.changed() => {
                    if changed.is_err() {
                        stats.set_state(LiveState::Off);
                        return;
                    }
                    let now = *want.borrow();
                    if !now.open || now.kick != kick_seen {
                        attempt = 0;
                        break;
                    }
                }
            }
        }
    }
}

enum Ended {
    /// The scheduler stopped.
    Stopped,
    /// The scheduler no longer wants the channel (not leading, offline by the host's word).
    Unwanted,
    /// The server closed it.
    Closed,
    /// It broke or stalled.
    Failed(String),
}

impl Ended {
    fn reason(&self) -> String {
        match self {
            Ended::Stopped => "stopped".into(),
            Ended::Unwanted => "closed by the engine".into(),
            Ended::Closed => "closed by the server".into(),
            Ended::Failed(error) => error.clone(),
        }
    }
}

async fn read(
    session: &mut dyn LiveSession,
    want: &mut watch::Receiver<Want>,
    stats: &LiveStats,
    to: &Recipient<LiveEvent>,
) -> Ended {
    loop {
        tokio::select! {
            next = session.next() => match next {
                Ok(Some(signal)) => {
                    stats.events.fetch_add(1, Ordering::Relaxed);
                    stats
                        .last_event_ms
                        .store(tidesync_core::hlc::wall_millis(), Ordering::SeqCst);
                    metrics::counter!(telemetry::LIVE_EVENTS_TOTAL).increment(1);
                    // Never refused (a bounded send could lose a hint): the scheduler
                    // coalesces hints into one pending set, so a burst costs no more pulls.
                    to.do_send(LiveEvent::Pull(signal.tables()));
                }
                Ok(None) => return Ended::Closed,
                Err(err) => return Ended::Failed(err.to_string()),
            },
            changed = want.changed() => {
                if changed.is_err() {
                    return Ended::Stopped;
                }
                if !want.borrow().open {
                    return Ended::Unwanted;
                }
            }
        }
    }
}
