//! `tidesync init [PATH]`: writes a commented sample config.

use std::io::Write;
use std::path::PathBuf;

use crate::commands::Ctx;
use crate::error::{CliError, Exit};

/// The sample config. It passes `tidesync check` and syncs with the testkit's reference server
/// (`tidesync-reference-server --port 8080`) as written.
pub const SAMPLE_CONFIG: &str = r#"# tidesync configuration: `tidesync check` validates it, `tidesync run` syncs with it.
#
# As written, it syncs with the testkit's reference server:
#     cargo run -p tidesync-testkit --bin tidesync-reference-server -- --port 8080
# Durations are "250ms", "30s", "5m", "1h" or plain milliseconds.

# The local database (redb). A relative path is relative to this file's directory.
# Each `tidesync run` on it registers in "<path>.daemons/<pid>.json"; `tidesync status` lists them.
[store]
path = "app.redb"
# Several processes of the app sharing this file? Set this in every one of them, and elect the
# syncing process with [leader] below.
# multi_process = true

# Tables (tidesync_core::TableSpec): name, key (default "id"), key_kind ("string" or
# "integer"), indexes, references, push and pull (both default true; false/false = local only).
[[tables]]
name = "posts"
key = "id"                     # records written without an id get a UUIDv7
indexes = ["updatedAt"]

[[tables]]
name = "comments"
# A comment is pushed only after the post it points at has been created on the server.
references = [{ field = "postId", table = "posts" }]

# The REST API (tidesync_transport_rest::RestConfig; docs/rest-routes.md has more shapes).
[server]
base_url = "http://127.0.0.1:8080"
connect_timeout_ms = 10000
request_timeout_ms = 30000
# idempotency_header = "Idempotency-Key"     # the default; false sends none
# headers = { "X-Client" = "tidesync" }      # non-secret headers for every request
# live = { kind = "sse", url = "/live/events" }  # server changes within a blink (docs/live.md)

# Routes of each synced table (tidesync_transport_rest::TableRoutes).
[server.tables.posts]
version = { field = "version" }  # optimistic concurrency: the base version travels in the body
create = { method = "POST", url = "/api/posts" }
update = { method = "PUT", url = "/api/posts/{id}" }
delete = { method = "DELETE", url = "/api/posts/{id}" }
fetch = { url = "/api/posts/{id}" }

# The change feed: a gap-free keyset filter on (updatedAt, id), tombstones flagged `deleted`.
[server.tables.posts.pull]
url = "/api/posts"
query = { after_updated = "{cursor}", after_id = "{after_key}", limit = "{limit}" }
items = "/data"
cursor_field = "updatedAt"
timestamp = "epoch_ms"
filter = "keyset"
pagination = { has_more = "/hasMore" }
tombstone = { field = "deleted" }

[server.tables.comments]
version = { field = "version" }
create = { method = "POST", url = "/api/comments" }
update = { method = "PUT", url = "/api/comments/{id}" }
delete = { method = "DELETE", url = "/api/comments/{id}" }
fetch = { url = "/api/comments/{id}" }

[server.tables.comments.pull]
url = "/api/comments"
query = { after_updated = "{cursor}", after_id = "{after_key}", limit = "{limit}" }
items = "/data"
cursor_field = "updatedAt"
timestamp = "epoch_ms"
filter = "keyset"
pagination = { has_more = "/hasMore" }
tombstone = { field = "deleted" }

# Credentials are read from environment variables when `run` or `sync` starts; secrets never
# go in this file.
# [auth]
# bearer_env = "API_TOKEN"                     # Authorization: Bearer $API_TOKEN
# headers_env = { "X-Api-Key" = "API_KEY" }    # header name = variable holding its value

# Conflict strategy per table (default server_wins): server_wins, client_wins,
# last_write_wins, park (tidesync-conflict-policies) or field_merge (tidesync-conflict-merge).
[conflicts]
posts = { strategy = "last_write_wins", timestamp_field = "updatedAt" }
comments = { strategy = "field_merge", default = "prefer_remote", fields = { body = "prefer_local" } }

# Sync settings (tidesync_actors::SyncSettings); every one has a default.
[sync]
interval = "30s"               # periodic sync; "off" disables the timer
debounce = "250ms"             # quiet time after a local write before a sync starts
sync_on_start = true
concurrency = 4                # records pushed concurrently
page_size = 200                # records per pulled page
max_attempts = 25              # retryable failures before an entry is dead-lettered
backoff_base = "500ms"         # full-jitter exponential backoff between retries
backoff_cap = "5m"
stale_after = "10m"            # health turns degraded after this long without a sync

# Prometheus /metrics of `tidesync run` (loopback only unless allow_non_loopback = true).
# Remove this section to serve no metrics.
[metrics]
listen = "127.0.0.1:9187"
# labels = { app = "my-app" }

# One syncing process among several sharing the store: a lock file next to the database elects
# it, with fencing epochs; followers take over within campaign_every when it exits or dies.
# [leader]
# lockfile = true
# campaign_every = "1s"
"#;

/// Writes the sample to `path` (default: the `-c` path); refuses to overwrite without `force`.
pub fn run(ctx: &Ctx, path: Option<PathBuf>, force: bool) -> Result<(), CliError> {
    let path = path.unwrap_or_else(|| ctx.config_path.clone());
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::usage(format!("{} already exists", path.display()))
                .hint("pass --force to overwrite it, or give another path: tidesync init FILE")
        } else {
            CliError::msg(
                Exit::Failed,
                format!("cannot write {}: {e}", path.display()),
            )
        }
    })?;
    file.write_all(SAMPLE_CONFIG.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            CliError::msg(
                Exit::Failed,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    if ctx.out.json {
        return ctx.out.json(&serde_json::json!({ "written": path }));
    }
    let shown = path.display();
    ctx.out.line(format!("wrote {shown}"));
    ctx.out.line(format!(
        "next: edit base_url and the routes, then `tidesync check -c {shown}` and \
         `tidesync run -c {shown}`"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SAMPLE_CONFIG;

    #[test]
    fn the_readme_shows_the_sample_verbatim() {
        assert!(include_str!("../../README.md").contains(SAMPLE_CONFIG));
    }

    #[test]
    fn the_sample_routes_are_the_reference_server_routes() {
        use tidesync_transport_rest::{Feed, Filter, Pagination, TableRoutes, TimeFormat};
        let config = crate::config::parse(SAMPLE_CONFIG).ok();
        let server = config.and_then(|c| c.server);
        for table in ["posts", "comments"] {
            let base = format!("/api/{table}");
            let expected = TableRoutes::rest(&base)
                .update(tidesync_transport_rest::WriteRoute::put(&format!(
                    "{base}/{{id}}"
                )))
                .delete(tidesync_transport_rest::WriteRoute::delete(&format!(
                    "{base}/{{id}}"
                )))
                .fetch(tidesync_transport_rest::FetchRoute::get(&format!(
                    "{base}/{{id}}"
                )))
                .version_field("version")
                .pull(
                    Feed::get(&base)
                        .query("after_updated", "{cursor}")
                        .query("after_id", "{after_key}")
                        .query("limit", "{limit}")
                        .items("/data")
                        .cursor_field("updatedAt", TimeFormat::EpochMs)
                        .filter(Filter::Keyset)
                        .pagination(Pagination::none().has_more("/hasMore"))
                        .tombstone("deleted"),
                );
            let routes = server.as_ref().and_then(|s| s.tables.get(table));
            assert_eq!(routes, Some(&expected), "{table}");
        }
    }
}
