//! `Engine::start()` works from plain `main` (no async runtime at all), from `#[tokio::main]`
//! and from `#[actix::main]`: the engine runs its own actix System on a dedicated thread, and
//! its handle is `Clone + Send + Sync`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, TableSpec};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// The smallest executor: polls a future on the current thread, parking between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn engine(server_url: &str) -> Engine {
    let transport = RestTransport::builder(server_url)
        .table("posts", TableRoutes::rest("/api/posts"))
        .build()
        .expect("transport");
    let settings = tidesync::SyncSettings {
        interval: None,
        sync_on_start: false,
        ..Default::default()
    };
    Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts").push_only())
        .transport(transport)
        .settings(settings)
        .start()
        .expect("engine starts")
}

fn assert_send_sync<T: Send + Sync + Clone>() {}

#[test]
fn from_plain_main_without_any_runtime() {
    assert_send_sync::<Engine>();
    assert_send_sync::<tidesync::Table<Value>>();
    let server = ReferenceServer::start_background();
    let engine = engine(server.url());
    let posts = engine.table::<Value>("posts").unwrap();
    block_on(posts.put(&json!({"id": "plain"}))).unwrap();
    let report = block_on(engine.push()).unwrap();
    assert_eq!(report.pushed, 1);
    assert!(server.record("posts", "plain").is_some());
    engine.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn from_a_current_thread_tokio_runtime() {
    let server = ReferenceServer::start().await;
    let engine = engine(server.url());
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "tokio"}))
        .await
        .unwrap();
    assert_eq!(engine.push().await.unwrap().pushed, 1);
    assert!(server.record("posts", "tokio").is_some());
}

#[actix_rt::test]
async fn from_inside_an_actix_system() {
    let server = ReferenceServer::start_background();
    let engine = engine(server.url());
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "actix"}))
        .await
        .unwrap();
    assert_eq!(engine.push().await.unwrap().pushed, 1);
    assert!(server.record("posts", "actix").is_some());
    engine.shutdown();
}

#[test]
fn shutdown_is_idempotent_and_later_writes_fail_cleanly() {
    let server = ReferenceServer::start_background();
    let engine = engine(server.url());
    engine.shutdown();
    engine.shutdown();
    let err = block_on(
        engine
            .table::<Value>("posts")
            .unwrap()
            .put(&json!({"id": "late"})),
    )
    .unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::Closed);
    assert!(
        block_on(engine.table::<Value>("posts").unwrap().get("late"))
            .unwrap()
            .is_none(),
        "reads still work"
    );
}
