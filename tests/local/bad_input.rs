//! Bad input gets a clear, typed error naming table, key and field; nothing is written.

use serde_json::{Value, json};
use tidesync::{ErrorKind, Key};

use crate::memory_engine;

#[tokio::test]
async fn unknown_table_is_named() {
    let engine = memory_engine();
    let err = engine.table::<Value>("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.table_name(), Some("nope"));
    assert!(
        err.to_string().contains("posts"),
        "lists the declared tables: {err}"
    );
    let err = engine
        .batch()
        .put("nope", &json!({"id": "x"}))
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.table_name(), Some("nope"));
}

#[tokio::test]
async fn non_object_records_are_refused() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    for bad in [json!([1, 2]), json!("text"), json!(3), json!(null)] {
        let err = posts.put(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        assert_eq!(err.table_name(), Some("posts"));
        assert!(err.to_string().contains("JSON object"), "{err}");
    }
    assert_eq!(posts.count().await.unwrap(), 0);
    assert!(engine.outbox(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn keys_of_the_wrong_type_are_refused() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let err = posts.put(&json!({"id": 42})).await.unwrap_err();
    assert_eq!(
        (err.table_name(), err.field_name()),
        (Some("posts"), Some("id"))
    );
    assert!(err.to_string().contains("got an integer"), "{err}");
    let counters = engine.table::<Value>("counters").unwrap();
    let err = counters.put(&json!({"id": "seven"})).await.unwrap_err();
    assert_eq!(err.field_name(), Some("id"));
    let err = counters.put(&json!({"n": 1})).await.unwrap_err();
    assert!(err.to_string().contains("explicit key"), "{err}");
    let err = counters.get(Key::from("x")).await;
    assert!(
        err.unwrap().is_none(),
        "a read of a missing key is simply empty"
    );
    let err = counters.delete(Key::from("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.record_key(), Some("x"));
}

#[tokio::test]
async fn non_scalar_values_in_indexed_fields_are_refused_with_the_field() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let err = posts
        .put(&json!({"id": "p1", "updatedAt": {"nested": true}}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.table_name(), err.record_key(), err.field_name()),
        (Some("posts"), Some("p1"), Some("updatedAt"))
    );
    assert_eq!(posts.get("p1").await.unwrap(), None);
}

#[tokio::test]
async fn queries_on_unindexed_fields_name_the_field() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let err = posts.query_eq("title", "x", 10).await.unwrap_err();
    assert_eq!(
        (err.table_name(), err.field_name()),
        (Some("posts"), Some("title"))
    );
    assert!(
        err.to_string().contains("updatedAt"),
        "lists the indexes: {err}"
    );
}

#[tokio::test]
async fn patches_cannot_change_the_key_or_target_missing_records() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1"})).await.unwrap();
    let err = posts.update("p1", json!({"id": "p2"})).await.unwrap_err();
    assert_eq!(err.field_name(), Some("id"));
    let err = posts.update("p9", json!({"a": 1})).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.record_key()),
        (ErrorKind::NotFound, Some("p9"))
    );
    let err = posts.update("p1", json!([1])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn values_that_are_not_json_serializable_are_refused() {
    use std::collections::HashMap;
    let engine = memory_engine();
    let typed = engine.table::<HashMap<(u8, u8), u8>>("posts").unwrap();
    let mut bad = HashMap::new();
    bad.insert((1, 2), 3);
    let err = typed.put(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.table_name(), Some("posts"));
    assert!(err.to_string().contains("not JSON-serializable"), "{err}");
}

#[tokio::test]
async fn stored_records_that_do_not_fit_the_type_give_a_decode_error() {
    #[derive(serde::Deserialize, serde::Serialize, Debug)]
    struct Strict {
        id: String,
        count: u32,
    }
    let engine = memory_engine();
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "p1", "count": "many"}))
        .await
        .unwrap();
    let err = engine
        .table::<Strict>("posts")
        .unwrap()
        .get("p1")
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.record_key()),
        (ErrorKind::Decode, Some("p1"))
    );
}

#[test]
fn invalid_table_specs_fail_at_start() {
    let err = tidesync::Engine::builder()
        .store(tidesync::MemoryStore::new())
        .table(tidesync::TableSpec::new("a").references("bId", "b"))
        .start()
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.table_name(), err.field_name()),
        (ErrorKind::Config, Some("a"), Some("bId"))
    );
    let err = tidesync::Engine::builder().start().unwrap_err();
    assert!(err.to_string().contains("no store"), "{err}");
}
