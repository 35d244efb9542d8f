//! The accept loop. Each connection is served by hyper's HTTP/1 connection driver in its own
//! task, which also listens to a per-connection kill switch ([`ConnControl`], put in every
//! request's extensions): dropping the connection future closes the socket without a
//! response, which is how [`super::FaultKind::Drop`] is done for real. Stopping the loop
//! aborts every connection task, hung requests included.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// The kill switch of one connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnControl(Arc<Notify>);

impl ConnControl {
    /// Closes the connection (no response is written).
    pub(crate) fn kill(&self) {
        self.0.notify_one();
    }

    async fn killed(&self) {
        self.0.notified().await;
    }
}

/// Serves connections until `stop` completes; then aborts the open connections.
pub(crate) async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, router.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "reference server: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let ctl = ConnControl::default();
    let svc = TowerToHyperService::new(router);
    let req_ctl = ctl.clone();
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(req_ctl.clone());
        svc.call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        // The live channel's WebSocket upgrades the connection.
        .with_upgrades();
    tokio::select! {
        biased;
        () = ctl.killed() => {
            tracing::debug!("reference server: connection dropped on purpose");
        }
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reference server: connection ended with an error");
            }
        }
    }
}
