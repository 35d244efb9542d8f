//! The builder and the running exporter.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::Error;
use crate::server::{METRICS_PATH, serve_loop, upkeep_loop};

/// Where `/metrics` is served unless [`PrometheusMetricsBuilder::listen`] says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9187));

/// How often `run_upkeep` runs unless [`PrometheusMetricsBuilder::upkeep_every`] says otherwise.
pub const DEFAULT_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Upper bounds (seconds) of the histogram buckets of every metric whose name ends in
/// `_seconds`: from 5 ms (a local round trip) to 5 min (a long sync cycle).
pub const DEFAULT_SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds (seconds) of the buckets of the store writer's histograms (names starting with
/// [`STORE_METRICS_PREFIX`]): a commit takes from a tenth of a millisecond (no fsync) to about
/// a second (a slow disk), far below the sync metrics' 5 ms first bucket.
pub const STORE_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The name prefix of the store writer's histograms, which get [`STORE_SECONDS_BUCKETS`].
pub const STORE_METRICS_PREFIX: &str = "tidesync_store_";

const THREAD_NAME: &str = "tidesync-metrics";

/// Configures the Prometheus recorder and its `/metrics` endpoint.
///
/// Made by [`PrometheusMetrics::builder`]. The recorder options are [`buckets`](Self::buckets),
/// [`buckets_for`](Self::buckets_for) and [`global_label`](Self::global_label); the endpoint
/// options are [`listen`](Self::listen), [`allow_non_loopback`](Self::allow_non_loopback),
/// [`upkeep_every`](Self::upkeep_every) and [`dedicated_thread`](Self::dedicated_thread).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `install()`, `build_recorder()` or `serve()`"]
pub struct PrometheusMetricsBuilder {
    listen: SocketAddr,
    allow_non_loopback: bool,
    seconds_buckets: Vec<f64>,
    bucket_overrides: Vec<(Matcher, Vec<f64>)>,
    global_labels: Vec<(String, String)>,
    upkeep_every: Duration,
    describe: Option<fn()>,
    dedicated_thread: bool,
}

impl Default for PrometheusMetricsBuilder {
    fn default() -> Self {
        PrometheusMetricsBuilder {
            listen: DEFAULT_LISTEN_ADDR,
            allow_non_loopback: false,
            seconds_buckets: DEFAULT_SECONDS_BUCKETS.to_vec(),
            bucket_overrides: Vec::new(),
            global_labels: Vec::new(),
            upkeep_every: DEFAULT_UPKEEP_EVERY,
            describe: None,
            dedicated_thread: false,
        }
    }
}

impl PrometheusMetricsBuilder {
    /// The address `/metrics` is served on (default [`DEFAULT_LISTEN_ADDR`], `127.0.0.1:9187`).
    /// Port 0 picks a free port; [`PrometheusMetrics::local_addr`] tells which.
    ///
    /// A non-loopback address (including `0.0.0.0` and `[::]`) is refused unless
    /// [`allow_non_loopback(true)`](Self::allow_non_loopback) is set as well.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Allows a non-loopback listen address. Metrics name tables and reveal activity: expose
    /// them beyond the host only behind a firewall or a proxy that authenticates scrapers.
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// Bucket upper bounds for every histogram whose name ends in `_seconds` (default
    /// [`DEFAULT_SECONDS_BUCKETS`]), except the store writer's, which start at 0.1 ms
    /// ([`STORE_SECONDS_BUCKETS`]; change them with [`buckets_for`](Self::buckets_for) and
    /// `Matcher::Prefix(STORE_METRICS_PREFIX)`). Must be finite and strictly increasing; `+Inf`
    /// is implied.
    pub fn buckets(mut self, bounds: &[f64]) -> Self {
        self.seconds_buckets = bounds.to_vec();
        self
    }

    /// Bucket upper bounds for the histograms `matcher` selects. A [`Matcher::Full`] wins over
    /// a [`Matcher::Prefix`], which wins over a [`Matcher::Suffix`] (so over the `_seconds`
    /// default too). A histogram that no matcher selects is rendered as a Prometheus
    /// *summary*, which cannot be aggregated across instances: give every histogram buckets.
    pub fn buckets_for(mut self, matcher: Matcher, bounds: &[f64]) -> Self {
        self.bucket_overrides.push((matcher, bounds.to_vec()));
        self
    }

    /// A label added to every series (for example `"app" => "inventory"`). Labels set on a
    /// metric win over a global label of the same name.
    pub fn global_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.global_labels.push((key.into(), value.into()));
        self
    }

    /// How often the recorder's upkeep runs (default [`DEFAULT_UPKEEP_EVERY`]): it drains
    /// histogram samples, which would otherwise pile up between scrapes. Must not be zero.
    pub fn upkeep_every(mut self, every: Duration) -> Self {
        self.upkeep_every = every;
        self
    }

    /// A function that registers metric descriptions and units, called by
    /// [`install`](Self::install) right after the recorder becomes the global one (descriptions
    /// given to no recorder are lost). For tidesync, pass
    /// `tidesync_actors::telemetry::describe_all`.
    pub fn describe_with(mut self, describe: fn()) -> Self {
        self.describe = Some(describe);
        self
    }

    /// Serve `/metrics` from a thread of its own (running a current-thread tokio runtime) even
    /// when called inside a tokio runtime. By default the endpoint runs as tasks on the current
    /// runtime when there is one (it must have IO and time enabled and outlive the endpoint),
    /// and on its own thread otherwise.
    pub fn dedicated_thread(mut self, dedicated: bool) -> Self {
        self.dedicated_thread = dedicated;
        self
    }

    /// Builds the recorder without installing it, and returns it with a handle to render it.
    ///
    /// For hosts that compose recorders (for example with `metrics_util::layers::Stack` or
    /// `FanoutBuilder`) or install them in a scope (`metrics::with_local_recorder`). Whoever
    /// installs the recorder calls the describe function afterwards; to serve the handle (with
    /// upkeep) pass it to [`serve`](Self::serve), or else call
    /// [`PrometheusHandle::run_upkeep`] periodically yourself.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBuckets`] if bucket bounds are empty, not finite or not increasing.
    pub fn build_recorder(&self) -> Result<(PrometheusRecorder, PrometheusHandle), Error> {
        let mut builder = PrometheusBuilder::new();
        let seconds = Matcher::Suffix("_seconds".to_owned());
        let store = (
            Matcher::Prefix(STORE_METRICS_PREFIX.to_owned()),
            STORE_SECONDS_BUCKETS.to_vec(),
        );
        // Later entries replace earlier ones for the same matcher: the host's come last.
        let overrides = [(&seconds, &self.seconds_buckets), (&store.0, &store.1)]
            .into_iter()
            .chain(self.bucket_overrides.iter().map(|(m, b)| (m, b)));
        for (matcher, bounds) in overrides {
            check_buckets(matcher, bounds)?;
            builder = builder
                .set_buckets_for_metric(matcher.clone(), bounds)
                .map_err(|_| Error::InvalidBuckets {
                    matcher: format!("{matcher:?}"),
                    reason: "rejected by the exporter",
                })?;
        }
        for (key, value) in &self.global_labels {
            builder = builder.add_global_label(key.clone(), value.clone());
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Ok((recorder, handle))
    }

    /// Serves `handle` on `GET /metrics` and runs its upkeep, without touching the global
    /// recorder: for a recorder from [`build_recorder`](Self::build_recorder) that the host
    /// installed itself.
    ///
    /// # Errors
    ///
    /// [`Error::NonLoopbackAddress`], [`Error::AddressInUse`], [`Error::Bind`],
    /// [`Error::InvalidOption`] (zero upkeep interval) or [`Error::Runtime`].
    pub fn serve(&self, handle: PrometheusHandle) -> Result<PrometheusMetrics, Error> {
        if self.upkeep_every.is_zero() {
            return Err(Error::InvalidOption("the upkeep interval must not be zero"));
        }
        let addr = self.listen;
        if !self.allow_non_loopback && !is_loopback(addr.ip()) {
            return Err(Error::NonLoopbackAddress { addr });
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::bind(addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::bind(addr, e))?;
        let local_addr = listener.local_addr().map_err(|e| Error::bind(addr, e))?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let current = if self.dedicated_thread {
            None
        } else {
            tokio::runtime::Handle::try_current().ok()
        };
        let thread = match current {
            Some(runtime) => {
                let listener = {
                    let _entered = runtime.enter();
                    TcpListener::from_std(listener).map_err(Error::Runtime)?
                };
                runtime.spawn(upkeep_loop(
                    handle.clone(),
                    self.upkeep_every,
                    stop_rx.clone(),
                ));
                runtime.spawn(serve_loop(listener, handle.clone(), stop_rx));
                None
            }
            None => Some(spawn_thread(
                listener,
                handle.clone(),
                self.upkeep_every,
                stop_rx,
            )?),
        };
        tracing::info!(
            addr = %local_addr,
            own_thread = thread.is_some(),
            "serving Prometheus metrics on http://{local_addr}{METRICS_PATH}"
        );
        Ok(PrometheusMetrics {
            handle,
            local_addr,
            stop: stop_tx,
            thread,
        })
    }

    /// Builds the recorder, serves it on `GET /metrics`, installs it as the process-wide
    /// `metrics` recorder, then calls the [`describe_with`](Self::describe_with) function.
    ///
    /// Nothing is installed if anything fails (the listener is closed again).
    ///
    /// # Errors
    ///
    /// Those of [`build_recorder`](Self::build_recorder) and [`serve`](Self::serve), and
    /// [`Error::RecorderAlreadyInstalled`].
    pub fn install(&self) -> Result<PrometheusMetrics, Error> {
        let (recorder, handle) = self.build_recorder()?;
        let server = self.serve(handle)?;
        if metrics::set_global_recorder(recorder).is_err() {
            server.shutdown();
            return Err(Error::RecorderAlreadyInstalled);
        }
        if let Some(describe) = self.describe {
            describe();
        }
        Ok(server)
    }
}

/// A running Prometheus exporter: the recorder's handle and the `/metrics` endpoint.
///
/// Dropping it leaves the endpoint running for as long as its runtime lives (a global recorder
/// lives as long as the process anyway); call [`shutdown`](Self::shutdown) to stop it.
#[derive(Debug)]
pub struct PrometheusMetrics {
    handle: PrometheusHandle,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusMetrics {
    /// A builder with the defaults: `127.0.0.1:9187`, loopback only, `_seconds` histograms with
    /// [`DEFAULT_SECONDS_BUCKETS`], upkeep every 5 s.
    pub fn builder() -> PrometheusMetricsBuilder {
        PrometheusMetricsBuilder::default()
    }

    /// The current exposition text, as served on `/metrics`.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The recorder's handle (cheap to clone), for serving it elsewhere too.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// The address actually listened on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://{local_addr}/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.local_addr, METRICS_PATH)
    }

    /// Stops the endpoint and the upkeep: no new connections; requests in flight finish (up
    /// to 5 s). With a thread of its own this returns once the thread has ended and the port
    /// is closed; on a host runtime it returns at once and the tasks end at their next poll.
    /// A global recorder stays installed (it cannot be removed) and keeps recording.
    pub fn shutdown(self) {
        // An error only means the tasks are gone already.
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread
            && thread.join().is_err()
        {
            tracing::error!("the metrics server thread panicked");
        }
    }
}

/// Starts a thread with a current-thread runtime that serves until shutdown; waits until it
/// runs so that a failure is reported here.
fn spawn_thread(
    listener: std::net::TcpListener,
    handle: PrometheusHandle,
    upkeep_every: Duration,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, Error> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    let listener = {
                        let _entered = runtime.enter();
                        TcpListener::from_std(listener)?
                    };
                    Ok((runtime, listener))
                });
            let (runtime, listener) = match started {
                Ok(started) => {
                    let _ = ready_tx.send(Ok(()));
                    started
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::spawn(upkeep_loop(handle.clone(), upkeep_every, stop.clone()));
                serve_loop(listener, handle, stop).await;
            });
        })
        .map_err(Error::Runtime)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(Error::Runtime(err))
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::Runtime(io::Error::other(
                "the metrics server thread ended while starting",
            )))
        }
    }
}

fn check_buckets(matcher: &Matcher, bounds: &[f64]) -> Result<(), Error> {
    let reason = if bounds.is_empty() {
        Some("no bounds given")
    } else if bounds.iter().any(|b| !b.is_finite()) {
        Some("bounds must be finite (+Inf is implied)")
    } else if bounds.windows(2).any(|w| w[0] >= w[1]) {
        Some("bounds must be strictly increasing")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidBuckets {
            matcher: format!("{matcher:?}"),
            reason,
        }),
    }
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_classification() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(
                is_loopback(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
                "{ip}"
            );
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(
                !is_loopback(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{ip}"
            );
        }
    }

    #[test]
    fn bucket_checks() {
        let m = Matcher::Suffix("_seconds".into());
        assert!(check_buckets(&m, DEFAULT_SECONDS_BUCKETS).is_ok());
        assert!(check_buckets(&m, &[]).is_err());
        assert!(check_buckets(&m, &[0.1, f64::NAN]).is_err());
        assert!(check_buckets(&m, &[0.1, f64::INFINITY]).is_err());
        assert!(check_buckets(&m, &[0.5, 0.5]).is_err());
        assert!(check_buckets(&m, &[1.0, 0.5]).is_err());
    }
}
