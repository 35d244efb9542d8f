//! The `/metrics` HTTP endpoint and the upkeep loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The only path that is served.
pub const METRICS_PATH: &str = "/metrics";

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves once shutdown is asked for. If the sender is dropped without asking (the
/// [`PrometheusMetrics`](crate::PrometheusMetrics) handle was dropped), it never resolves: the
/// endpoint then lives as long as its runtime, like the global recorder it serves.
pub(crate) async fn shutdown_requested(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `handle.run_upkeep()` every `every` until shutdown.
pub(crate) async fn upkeep_loop(
    handle: PrometheusHandle,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown_requested(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
    tracing::debug!("metrics upkeep stopped");
}

/// Accepts connections until shutdown; each one is served on its own task.
pub(crate) async fn serve_loop(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stop = shutdown_requested(shutdown.clone());
    tokio::pin!(stop);

    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let http = Arc::clone(&http);
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(&http, stream, peer, handle, shutdown).await;
        });
    }
    let addr = listener.local_addr().ok();
    drop(listener);
    // Let requests in flight finish: each connection task holds a permit until it ends.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
    tracing::debug!(?addr, "metrics endpoint stopped");
}

async fn serve_connection(
    http: &http1::Builder,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handle: PrometheusHandle,
    shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(&handle, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stop = shutdown_requested(shutdown);
    tokio::pin!(stop);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = &mut stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "metrics endpoint: connection error");
    }
}

/// `GET`/`HEAD /metrics` renders; another method there is 405; any other path is 404.
fn respond<B>(handle: &PrometheusHandle, req: &Request<B>) -> Response<String> {
    if req.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // hyper leaves the body out of a HEAD response but keeps its Content-Length.
    let mut response = Response::new(handle.render());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<String> {
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn request(method: Method, uri: &str) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().unwrap_or_default();
        req
    }

    #[test]
    fn routes() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let ok = respond(&handle, &request(Method::GET, "/metrics?x=1"));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], CONTENT_TYPE_TEXT);
        assert_eq!(
            respond(&handle, &request(Method::HEAD, "/metrics")).status(),
            StatusCode::OK
        );
        let post = respond(&handle, &request(Method::POST, "/metrics"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        for path in ["/", "/metrics/", "/metricsx", "/health"] {
            assert_eq!(
                respond(&handle, &request(Method::GET, path)).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
