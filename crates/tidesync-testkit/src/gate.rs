//! A TCP gate in front of a server, for outage tests: real sockets on 127.0.0.1 that forward
//! to the server, refuse connections (nothing listens: "connection refused"), or accept and
//! never answer (a hung server or a black-holing proxy). Switching the mode cuts the
//! connections it forwarded so far, as a server going away does.
//!
//! ```no_run
//! # async fn demo(server: &tidesync_testkit::server::ReferenceServer) {
//! use tidesync_testkit::gate::{Gate, GateMode};
//! let gate = Gate::start(server.addr(), GateMode::Closed).await;
//! // point the engine at gate.url() … then:
//! gate.set_mode(GateMode::Forward).await;
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the gate does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Pass them on to the server.
    Forward,
    /// Nothing listens: every connection is refused.
    Closed,
    /// Accept them and never answer (the bytes sent are read and dropped).
    Hang,
}

/// The gate. Dropping it stops it and cuts every connection.
pub struct Gate {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<GateState>,
    listener: Mutex<Option<JoinHandle<()>>>,
    mode: Mutex<GateMode>,
}

#[derive(Default)]
struct GateState {
    /// Connections accepted while hanging.
    hung: AtomicU64,
    /// Connections forwarded.
    forwarded: AtomicU64,
    /// Tasks serving accepted connections (aborted on every mode switch).
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Gate {
    /// A gate on a free port of 127.0.0.1 in front of `upstream`.
    pub async fn start(upstream: SocketAddr, mode: GateMode) -> Gate {
        let probe = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a port for the gate: {e}"));
        let addr = probe
            .local_addr()
            .unwrap_or_else(|e| panic!("gate address: {e}"));
        drop(probe);
        let gate = Gate {
            addr,
            upstream,
            state: Arc::new(GateState::default()),
            listener: Mutex::new(None),
            mode: Mutex::new(GateMode::Closed),
        };
        gate.set_mode(mode).await;
        gate
    }

    /// The gate's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gate's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> GateMode {
        *lock(&self.mode)
    }

    /// Connections accepted and left unanswered (in [`GateMode::Hang`]) so far.
    pub fn hung_connections(&self) -> u64 {
        self.state.hung.load(Ordering::SeqCst)
    }

    /// Connections forwarded to the server so far.
    pub fn forwarded_connections(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Switches the mode: the listener stops or starts, and every connection served so far is
    /// cut (a forwarded request in progress sees its connection reset).
    pub async fn set_mode(&self, mode: GateMode) {
        let listener = lock(&self.listener).take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        for connection in lock(&self.state.connections).drain(..) {
            connection.abort();
        }
        *lock(&self.mode) = mode;
        if mode == GateMode::Closed {
            return;
        }
        // The port was ours a moment ago; SO_REUSEADDR (tokio's default on Unix) lets it be
        // bound again at once.
        let listener = bind_again(self.addr).await;
        let (state, upstream) = (self.state.clone(), self.upstream);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let served = match mode {
                    GateMode::Forward => {
                        state.forwarded.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(forward(socket, upstream))
                    }
                    _ => {
                        state.hung.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(hang(socket))
                    }
                };
                lock(&state.connections).push(served);
            }
        });
        *lock(&self.listener) = Some(task);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(listener) = lock(&self.listener).take() {
            listener.abort();
        }
        for connection in lock(&self.state.connections).drain(..) {
            connection.abort();
        }
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    panic!("cannot bind the gate's port {addr} again: {last:?}")
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

async fn hang(mut client: TcpStream) {
    // Read and drop what comes, never answer, until the client gives up.
    let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
    std::future::pending::<()>().await;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
