//! Reproductions of engine bugs the replica checker found, each as small as it gets. A fixed
//! bug's reproduction runs in every `cargo test` as its regression test; an open one is
//! `#[ignore]`d until it is fixed (run them with `cargo test --test replicas -- --ignored`).
//! Details:
//! docs/reliability.md, "Multi-replica histories".

use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, SyncSettings, TableSpec};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer};
use tidesync_transport_rest::{RestTransport, TableRoutes};

use crate::verify::id_text;

/// BUG-10. An application that got a temporary key for a record whose key the server
/// assigns (`tasks`), and writes a reference to it (`steps.task`) after the create was
/// acknowledged and the key remapped, gets the write accepted, and the engine pushes the
/// temporary key to the server: a dangling reference for good. The remap rewrote only the
/// references that existed at the time; the later write neither waits (no create is pending
/// under that key any more) nor is mapped to the server's key. In the replica runs the race is
/// an ordinary one: the app read the task (temporary key) just before the ack landed.
#[tokio::test]
// Fixed: the remap is remembered and later references to the temporary key follow it.
async fn bug10_a_reference_written_after_the_remap_keeps_the_temporary_key() {
    let server = ReferenceServer::builder()
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .start()
        .await;
    let transport = RestTransport::builder(server.url())
        .table("tasks", TableRoutes::reference_server("tasks").server_ids())
        .table("steps", TableRoutes::reference_server("steps"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("tasks"))
        .table(TableSpec::new("steps").references("task", "tasks"))
        .transport(transport)
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    let tasks = engine.table::<Value>("tasks").unwrap();
    let steps = engine.table::<Value>("steps").unwrap();
    let temporary = tasks.put(&json!({"title": "t"})).await.unwrap();
    engine.push().await.unwrap();
    let server_id = server.records("tasks")[0]["id"].clone();
    assert_ne!(temporary.to_string(), id_text(&server_id));

    // The app still holds the temporary key (read before the ack) and references it.
    steps
        .put(&json!({"id": "s1", "task": temporary.to_string()}))
        .await
        .unwrap();
    engine.push().await.unwrap();

    let step = server.record("steps", "s1").expect("the step was pushed");
    assert_eq!(
        id_text(&step["task"]),
        id_text(&server_id),
        "the server's step references the temporary key {temporary}, which the server never \
         had; the task is {server_id}"
    );
    engine.shutdown();
}

/// BUG-11. The engine learns the client–server clock offset only from the `Date` of 2xx push
/// answers and pull pages, never from a conflict answer (409/412), and starts every process
/// at offset 0. A push conflict that is the first answer since the engine started is therefore
/// decided with the server's raw clock: with a server clock 5 s behind, a remote write made 1 s
/// *after* the local one looks 4 s older, and last-write-wins keeps the local version over
/// the newer remote one. (The replica runs found it as "skew correction off by exactly the
/// skew" on the first conflict of a restarted replica, for `last_write_wins` and for field
/// merge's `latest`.)
#[tokio::test]
// Fixed: every answer's `Date` is observed, refusals included.
async fn bug11_a_first_push_conflict_is_decided_without_skew_correction() {
    let server = ReferenceServer::start().await;
    server.skew_clock(-5_000);
    let transport = RestTransport::builder(server.url())
        .table("notes", TableRoutes::reference_server("notes"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("notes"))
        .transport(transport)
        .conflicts("notes", tidesync_conflict_policies::LastWriteWins::new())
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    let notes = engine.table::<Value>("notes").unwrap();
    notes
        .put(&json!({"id": "n1", "text": "local"}))
        .await
        .unwrap();
    // Another client writes the same record a second later (the server stamps it with its
    // clock, 5 s behind: 4 s before the local write).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    server
        .insert_direct("notes", json!({"id": "n1", "text": "remote, 1 s later"}))
        .unwrap();
    engine.push().await.unwrap();
    engine.push().await.unwrap();
    assert_eq!(
        server.record("notes", "n1").unwrap()["text"],
        json!("remote, 1 s later"),
        "last write wins kept the older local write: the 409 was decided with the server's \
         clock uncorrected"
    );
    engine.shutdown();
}

/// A strategy that lets the test act while a conflict is being decided: it reports that it
/// was called, waits for the go-ahead, then takes the remote version.
struct Gate {
    entered: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    go: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl tidesync::ConflictStrategy for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    async fn resolve(&self, _: &tidesync::Conflict) -> tidesync::Result<tidesync::Resolution> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
        }
        if let Some(go) = self.go.lock().await.take() {
            let _ = go.await;
        }
        Ok(tidesync::Resolution::TakeRemote)
    }
}

/// BUG-12. A local write committed while its record's conflict is being resolved is thrown
/// away when the resolution is applied: `RemoteChanges::apply_resolution`
/// (crates/tidesync-core/src/local/remap.rs) removes every pending entry of the record and,
/// for `TakeRemote` (and `Merged`), writes the outcome over the current record, without
/// checking that the record is still the `local` the strategy decided on. The write was
/// acknowledged to the application, is in no conflict, and never reaches the server. The
/// replica runs found it on a field-merge table (seed 1318165103: `fm/fm4`, write `r1k0.95`
/// committed 17 ms after its record's push conflict was decided, gone from the outbox right
/// after).
#[tokio::test]
// Fixed: the later write is kept on top of the outcome and pushed.
async fn bug12_a_write_during_conflict_resolution_is_lost() {
    let server = ReferenceServer::start().await;
    server
        .insert_direct("notes", json!({"id": "n1", "text": "v1"}))
        .unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let transport = RestTransport::builder(server.url())
        .table("notes", TableRoutes::reference_server("notes"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("notes"))
        .transport(transport)
        .conflicts(
            "notes",
            Gate {
                entered: std::sync::Mutex::new(Some(entered_tx)),
                go: tokio::sync::Mutex::new(Some(go_rx)),
            },
        )
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    engine.pull(None).await.unwrap();
    let notes = engine.table::<Value>("notes").unwrap();
    // Another client edits the record; our edit of `text` will meet it in a 409.
    server
        .update_direct("notes", "n1", json!({"text": "remote"}))
        .unwrap();
    notes.update("n1", json!({"text": "local"})).await.unwrap();
    let pushing = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.push().await })
    };
    entered_rx.await.expect("the conflict reached the strategy");
    // While the strategy decides, the application writes another field: acknowledged.
    notes
        .update("n1", json!({"note": "written during the resolution"}))
        .await
        .expect("the write is acknowledged");
    go_tx.send(()).unwrap();
    pushing.await.unwrap().unwrap();
    engine.push().await.unwrap();

    let local = notes.get("n1").await.unwrap().unwrap_or_default();
    let on_server = server.record("notes", "n1").unwrap_or_default();
    assert!(
        local["note"] == json!("written during the resolution")
            && on_server["note"] == json!("written during the resolution"),
        "the acknowledged write is gone: local {local}, server {on_server}"
    );
    engine.shutdown();
}

/// BUG-13. `Table::update` (src/table.rs) commits the write, then reads the record back to
/// return it; when the record is gone by then (the ack of its create remapped a
/// server-assigned key, or a pull or a conflict outcome deleted it, in the instant between the
/// two) it returns `NotFound` ("record vanished after update") although the write is committed
/// and will be pushed. The application is told the write failed; one that retries it or shows
/// an error is misled. The replica runs found a token of such a "failed" write on the server
/// (seed 1318220452, `tasks`, write `r2k0.2`). A race: this reproduction tries up to 300 times
/// and reports how many attempts hit it.
#[tokio::test]
// Fixed: `update` returns the record as its own write left it.
async fn bug13_update_reports_not_found_for_a_write_it_committed() {
    let server = ReferenceServer::builder()
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .start()
        .await;
    let transport = RestTransport::builder(server.url())
        .table("tasks", TableRoutes::reference_server("tasks").server_ids())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("tasks").index("cid"))
        .transport(transport)
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    let tasks = engine.table::<Value>("tasks").unwrap();
    let mut misreported = Vec::new();
    for i in 0..300u64 {
        let key = tasks.put(&json!({"cid": format!("c{i}")})).await.unwrap();
        let pushing = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.push().await })
        };
        tokio::time::sleep(Duration::from_micros(i * 53 % 4_000)).await;
        let result = tasks.update(key, json!({"n": i})).await;
        pushing.await.unwrap().unwrap();
        engine.push().await.unwrap();
        if result.is_err() {
            let on_server = server
                .records("tasks")
                .into_iter()
                .find(|r| r["cid"] == json!(format!("c{i}")));
            if on_server.is_some_and(|r| r["n"] == json!(i)) {
                misreported.push(i);
            }
        }
        if misreported.len() >= 3 {
            break;
        }
    }
    assert!(
        misreported.is_empty(),
        "update returned NotFound, yet the server has its write, in attempts {misreported:?}"
    );
    engine.shutdown();
}

/// BUG-14. A push conflict carries the HLC stamp of the entry the server refused
/// (`local_hlc: entry.hlc` in the pusher), not of the latest local write to the record, when
/// newer writes are queued behind that entry (it was sealed by an earlier attempt). The
/// `local` record the strategy sees holds those newer writes, but last write wins (and field
/// merge's `latest`) compares the old stamp: a local write made after the remote one loses to
/// it. `Conflict::local_hlc` is documented as "the stamp of the latest local write to the
/// record". The replica runs found it as a conflict whose local record carried a write stamped
/// later than the conflict's `local_hlc` (seed 1318165103, `fm/fm4`: local stamp of `r1k0.51`
/// for a local record written by `r1k0.92`, 1.3 s later).
/// Fixed: the push conflict carries the latest pending write's stamp.
#[tokio::test]
async fn bug14_a_push_conflict_compares_the_stamp_of_the_refused_entry() {
    let server = ReferenceServer::start().await;
    server
        .insert_direct("notes", json!({"id": "n1", "text": "v1"}))
        .unwrap();
    let transport = RestTransport::builder(server.url())
        .table("notes", TableRoutes::reference_server("notes"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("notes"))
        .transport(transport)
        .conflicts("notes", tidesync_conflict_policies::LastWriteWins::new())
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            retry_delay: Some(std::sync::Arc::new(|_| Duration::from_millis(1_500))),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    engine.pull(None).await.unwrap();
    let notes = engine.table::<Value>("notes").unwrap();
    notes
        .update("n1", json!({"text": "local 1"}))
        .await
        .unwrap();
    // The first attempt fails: the entry is sealed, later writes queue behind it.
    server.fail_next(1, tidesync_testkit::server::FaultKind::status(503));
    let _ = engine.push().await;
    server
        .update_direct("notes", "n1", json!({"text": "remote"}))
        .unwrap();
    // A second later the application writes again: the latest local write is now clearly
    // later than the remote one.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    notes
        .update("n1", json!({"text": "local 2, after the remote"}))
        .await
        .unwrap();
    // The refused entry falls due again (1.5 s after its failure).
    tokio::time::sleep(Duration::from_millis(700)).await;
    engine.push().await.unwrap();
    engine.push().await.unwrap();
    assert_eq!(
        server.record("notes", "n1").unwrap()["text"],
        json!("local 2, after the remote"),
        "last write wins gave the record to the older remote write"
    );
    engine.shutdown();
}

/// BUG-15. A record whose create was sent but not acknowledged (the server committed it, the
/// answer was lost) and that another client then deletes stays alive on this device for good:
/// the pull that brings the tombstone leaves the record and its pending create as they are
/// (no conflict, nothing recorded) but moves its cursor past the tombstone; the retry is
/// answered by idempotent replay with the original 201 (version 1), and the acknowledgement
/// applies that stale answer as the record's current server state. The server holds a
/// tombstone (version 2), the device a live record (version 1), and no later pull brings the
/// delete again. Found by the replica runs as a convergence failure after client wins
/// re-created a record over a remote delete with a lost answer and the other client deleted it
/// again (seeds 1318212545 `cw/cw5`, 1318315336 `cw/cw1`, both with the server clock 3 s
/// behind, which is not needed: the reproduction has no skew).
#[tokio::test]
// Fixed: the head entry keeps the pulled delete, and its acknowledgement applies it.
async fn bug15_a_delete_pulled_during_a_lost_create_answer_is_never_applied() {
    use tidesync_testkit::server::{FaultFilter, FaultKind};
    let server = ReferenceServer::start().await;
    let transport = RestTransport::builder(server.url())
        .table("notes", TableRoutes::reference_server("notes"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("notes"))
        .transport(transport)
        .conflicts("notes", tidesync_conflict_policies::ClientWins)
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: Duration::from_secs(600),
            retry_delay: Some(std::sync::Arc::new(|_| Duration::from_millis(300))),
            ..SyncSettings::default()
        })
        .start()
        .unwrap();
    let notes = engine.table::<Value>("notes").unwrap();
    notes
        .put(&json!({"id": "n1", "text": "local"}))
        .await
        .unwrap();
    // The create commits, its answer is lost: the entry waits 300 ms to be retried.
    server.fail_next_where(FaultFilter::writes(), 1, FaultKind::CommitThenDrop);
    let _ = engine.push().await;
    // Another client deletes the record; this device pulls before the retry.
    server.delete_direct("notes", "n1").unwrap();
    engine.pull(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..4 {
        engine.sync().await.unwrap();
    }
    let local = notes.get("n1").await.unwrap();
    assert!(
        server.record("notes", "n1").is_none(),
        "the server deleted the record"
    );
    assert_eq!(
        local, None,
        "the device still has the record the server deleted, after every sync"
    );
    engine.shutdown();
}
