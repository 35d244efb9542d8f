//! Starting and stopping: [`ReferenceServerBuilder`] and [`ReferenceServer`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::auth::AuthState;
use super::collection::CollectionConfig;
use super::faults::{FaultEngine, Faults};
use super::handle::ServerHandle;
use super::live::{LiveHub, LiveOptions};
use super::log::RequestLog;
use super::net;
use super::routes;
use super::state::Shared;
use super::store::Store;

/// Seed of the fault generator when none is given.
pub const DEFAULT_SEED: u64 = 0x7469_6465_7379_6e63;

/// Largest request body accepted by default (8 MiB); larger ones get 413.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Access-token lifetime when auth is off (tokens can still be issued).
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Options of a [`ReferenceServer`]; see [`ReferenceServer::builder`].
#[derive(Clone, Debug)]
pub struct ReferenceServerBuilder {
    auth_ttl: Option<Duration>,
    seed: u64,
    bind: SocketAddr,
    body_limit: usize,
    faults: Faults,
    default_collection: CollectionConfig,
    collections: HashMap<String, CollectionConfig>,
    live: LiveOptions,
}

impl Default for ReferenceServerBuilder {
    fn default() -> Self {
        Self {
            auth_ttl: None,
            seed: DEFAULT_SEED,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            body_limit: DEFAULT_BODY_LIMIT,
            faults: Faults::none(),
            default_collection: CollectionConfig::default(),
            collections: HashMap::new(),
            live: LiveOptions::default(),
        }
    }
}

impl ReferenceServerBuilder {
    /// Requires `Authorization: Bearer <token>` on every `/api` request; access tokens live
    /// `ttl` (whole seconds are reported as `expires_in`).
    #[must_use]
    pub fn auth(mut self, ttl: Duration) -> Self {
        self.auth_ttl = Some(ttl);
        self
    }

    /// No token required (the default).
    #[must_use]
    pub fn without_auth(mut self) -> Self {
        self.auth_ttl = None;
        self
    }

    /// Seed of the random faults ([`DEFAULT_SEED`] by default).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Address to listen on (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Port to listen on, keeping the bind address.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.bind.set_port(port);
        self
    }

    /// Largest request body accepted ([`DEFAULT_BODY_LIMIT`] by default).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Random faults active from the start.
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Options of the live channel (`/live/events`, `/live/ws`; both on by default).
    #[must_use]
    pub fn live(mut self, options: LiveOptions) -> Self {
        self.live = options;
        self
    }

    /// Options of one collection.
    #[must_use]
    pub fn collection(mut self, name: &str, config: CollectionConfig) -> Self {
        self.collections.insert(name.to_owned(), config);
        self
    }

    /// Options of every collection not configured with [`ReferenceServerBuilder::collection`].
    #[must_use]
    pub fn default_collection(mut self, config: CollectionConfig) -> Self {
        self.default_collection = config;
        self
    }

    fn shared(self) -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::new(Store::new(self.default_collection, self.collections)),
            log: Mutex::new(RequestLog::default()),
            faults: Mutex::new(FaultEngine::new(self.seed, self.faults)),
            auth: Mutex::new(AuthState::new(
                self.auth_ttl.is_some(),
                self.auth_ttl.unwrap_or(DEFAULT_TTL),
            )),
            body_limit: self.body_limit,
            live: Mutex::new(LiveHub::new(self.live)),
        })
    }

    /// Starts the server on the current tokio runtime.
    ///
    /// # Panics
    /// If the address cannot be bound (never for the default `127.0.0.1:0` in practice; use
    /// [`ReferenceServerBuilder::try_start`] for a chosen address), or outside a tokio runtime.
    pub async fn start(self) -> ReferenceServer {
        let bind = self.bind;
        match self.try_start().await {
            Ok(s) => s,
            Err(e) => panic!("reference server: cannot listen on {bind}: {e}"),
        }
    }

    /// Starts the server on the current tokio runtime (it must be running when the server is
    /// dropped for the stop to take effect).
    pub async fn try_start(self) -> io::Result<ReferenceServer> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let shared = self.shared();
        let router = routes::router(shared.clone());
        let task = tokio::spawn(net::serve(listener, router, std::future::pending()));
        Ok(ReferenceServer::new(shared, addr, Runner::Task(task)))
    }

    /// Starts the server on a thread of its own with its own tokio runtime. Works from
    /// blocking code, any async runtime, or an actix `System`.
    ///
    /// # Panics
    /// If the address cannot be bound or the thread cannot start; see
    /// [`ReferenceServerBuilder::try_start_background`].
    pub fn start_background(self) -> ReferenceServer {
        let bind = self.bind;
        match self.try_start_background() {
            Ok(s) => s,
            Err(e) => panic!("reference server: cannot start on {bind}: {e}"),
        }
    }

    /// Starts the server on a thread of its own with its own tokio runtime.
    pub fn try_start_background(self) -> io::Result<ReferenceServer> {
        let std_listener = std::net::TcpListener::bind(self.bind)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = self.shared();
        let router = routes::router(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("tidesync-reference-server-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let stop = async move {
                        // A dropped sender stops the server too.
                        let _ = stop_rx.await;
                    };
                    net::serve(listener, router, stop).await;
                });
                rt.shutdown_background();
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("reference server thread exited early")),
        }
        Ok(ReferenceServer::new(
            shared,
            addr,
            Runner::Thread {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
        ))
    }
}

enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread {
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

/// A running reference server. Dropping it (or [`ReferenceServer::shutdown`]) stops it and
/// closes every open connection; [`ServerHandle`]s taken from it keep the state readable.
///
/// Derefs to its [`ServerHandle`], so `server.records("posts")` works directly.
///
/// ```no_run
/// # async fn demo() {
/// use tidesync_testkit::server::ReferenceServer;
/// let server = ReferenceServer::start().await;
/// let url = format!("{}/api/posts", server.url());
/// # let _ = url;
/// assert!(server.records("posts").is_empty());
/// # }
/// ```
pub struct ReferenceServer {
    handle: ServerHandle,
    addr: SocketAddr,
    runner: Runner,
}

impl std::fmt::Debug for ReferenceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ReferenceServer {
    fn new(shared: Arc<Shared>, addr: SocketAddr, runner: Runner) -> Self {
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let url = format!("http://{}", SocketAddr::new(host, addr.port()));
        Self {
            handle: ServerHandle::new(shared, url),
            addr,
            runner,
        }
    }

    /// The options builder.
    pub fn builder() -> ReferenceServerBuilder {
        ReferenceServerBuilder::default()
    }

    /// Starts a server with default options on `127.0.0.1:0` in the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if no loopback port can be bound.
    pub async fn start() -> ReferenceServer {
        Self::builder().start().await
    }

    /// Starts a server with default options on its own thread and runtime.
    ///
    /// # Panics
    /// If no loopback port can be bound or the thread cannot start.
    pub fn start_background() -> ReferenceServer {
        Self::builder().start_background()
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        self.handle.url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle on the state, to keep after the server is gone or to move to another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops the server (same as dropping it).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Deref for ReferenceServer {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Task(task) => task.abort(),
            Runner::Thread { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}
