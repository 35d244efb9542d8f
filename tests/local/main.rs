//! The local table API, the atomic outbox and coalescing, end to end through the engine.

mod api;
mod bad_input;
mod bulk;
mod layout_fixture;
mod layout_v3_fixture;
mod outbox;
mod schema;

use tidesync::{Engine, MemoryStore, RedbStore, TableSpec};

/// Tables used by these tests.
pub fn specs() -> Vec<TableSpec> {
    vec![
        TableSpec::new("posts").index("updatedAt").index("author"),
        TableSpec::new("comments").references("postId", "posts"),
        TableSpec::new("counters").integer_keys(),
        TableSpec::new("drafts").local_only(),
    ]
}

/// An engine on a fresh in-memory store.
pub fn memory_engine() -> Engine {
    let mut builder = Engine::builder().store(MemoryStore::new());
    for spec in specs() {
        builder = builder.table(spec);
    }
    builder.start().expect("engine starts")
}

/// An engine on a redb file in `dir`.
pub fn redb_engine(dir: &std::path::Path) -> Engine {
    let mut builder =
        Engine::builder().store(RedbStore::open(dir.join("app.redb")).expect("open redb"));
    for spec in specs() {
        builder = builder.table(spec);
    }
    builder.start().expect("engine starts")
}
