//! `check` catches the easy mistakes: each rule's exact message, with its line, column and fix.

use crate::support::{Env, replace};

/// 1-based `(line, column)` of the first `needle` in the config (column in characters).
fn position(env: &Env, needle: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `check` output line at `(line, column)` and the hint under it.
fn finding(env: &Env, at: (usize, usize)) -> (String, String, i32) {
    let run = env.run(&["check"]);
    let prefix = format!("tidesync.toml:{}:{}: ", at.0, at.1);
    let mut lines = run.stdout.lines();
    let found = lines
        .by_ref()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("nothing at {prefix}: {run:?}"));
    let message = found[found.find(&prefix).expect("prefix") + prefix.len()..].to_owned();
    let hint = lines.next().unwrap_or_default().trim().to_owned();
    (message, hint, run.code)
}

#[test]
fn check_refuses_express_style_placeholders_in_urls() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "update = { method = \"PUT\", url = \"/api/posts/{id}\" }",
            "update = { method = \"PUT\", url = \"/api/posts/:id\" }",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, ":id\""));
    assert_eq!(code, 2);
    assert_eq!(
        message,
        "error: [server.tables.posts.update.url] `:id` in the url is sent literally: an \
         express-style `:name` placeholder is not a tidesync placeholder (table `posts`, field \
         `id`)"
    );
    assert_eq!(
        hint,
        "hint: tidesync placeholders are written in braces: url = \"/api/posts/{id}\""
    );
}

#[test]
fn check_refuses_angle_bracket_placeholders_in_urls() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "fetch = { url = \"/api/comments/{id}\" }",
            "fetch = { url = \"/api/comments/<id>\" }",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, "<id>"));
    assert_eq!(code, 2);
    assert_eq!(
        message,
        "error: [server.tables.comments.fetch.url] `<id>` in the url is sent literally: a \
         `<name>` placeholder is not a tidesync placeholder (table `comments`, field `id`)"
    );
    assert_eq!(
        hint,
        "hint: tidesync placeholders are written in braces: url = \"/api/comments/{id}\""
    );
}

#[test]
fn check_warns_about_a_tombstone_value_written_as_a_string() {
    let env = Env::new();
    env.edit(|t| {
        let t = replace(
            t,
            "tombstone = { field = \"deleted\" }\n\n[server.tables.comments]",
            "tombstone = { field = \"deleted\", value = \"true\" }\n\n[server.tables.comments]",
        );
        // The other table's flag: a number written as a string.
        replace(
            &t,
            "tombstone = { field = \"deleted\" }\n\n#",
            "tombstone = { field = \"status\", value = \"9\" }\n\n#",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, "\"true\""));
    assert_eq!(code, 0, "a warning: the config still works");
    assert_eq!(
        message,
        "warning: [server.tables.posts.pull.tombstone.value] tombstone.value is the string \
         \"true\": it matches only that string, never a boolean, so a `deleted` field holding a \
         boolean never marks a delete (table `posts`, field `deleted`)"
    );
    assert_eq!(
        hint,
        "hint: if the server sends a boolean, write it without quotes: value = true"
    );
    let (message, hint, _) = finding(&env, position(&env, "\"9\""));
    assert_eq!(
        message,
        "warning: [server.tables.comments.pull.tombstone.value] tombstone.value is the string \
         \"9\": it matches only that string, never a number, so a `status` field holding a \
         number never marks a delete (table `comments`, field `status`)"
    );
    assert_eq!(
        hint,
        "hint: if the server sends a number, write it without quotes: value = 9"
    );
}

#[test]
fn check_warns_that_a_unitless_duration_means_milliseconds() {
    let env = Env::new();
    env.edit(|t| replace(t, "interval = \"30s\"", "interval = 30"));
    // The value's column: after `interval = `.
    let (line, _) = position(&env, "interval = 30");
    let (message, hint, code) = finding(&env, (line, 12));
    assert_eq!(code, 0, "a warning: the config still works");
    assert_eq!(
        message,
        "warning: [sync.interval] `interval = 30` has no unit: the number is read as 30 \
         milliseconds"
    );
    assert_eq!(
        hint,
        "hint: write the unit: interval = \"30ms\" if milliseconds are meant, or e.g. \"30s\" \
         for seconds"
    );
    // JSON output: the same finding, as a warning with its position.
    let json = env.ok(&["check", "--json"]).json();
    assert_eq!(json["valid"], true);
    assert_eq!(json["warnings"], 1, "{json}");
    assert_eq!(json["diagnostics"][0]["path"], "sync.interval");
    assert_eq!(json["diagnostics"][0]["column"], 12);
}

#[test]
fn check_warns_about_a_pull_whose_requests_never_change_between_pages() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "url = \"/api/comments\"\nquery = { after_updated = \"{cursor}\", after_id = \
             \"{after_key}\", limit = \"{limit}\" }\nitems = \"/data\"\ncursor_field = \
             \"updatedAt\"\ntimestamp = \"epoch_ms\"\nfilter = \"keyset\"\n",
            "url = \"/api/comments\"\nquery = { limit = \"{limit}\" }\nitems = \"/data\"\n",
        )
    });
    let at = position(
        &env,
        "pagination = { has_more = \"/hasMore\" }\ntombstone = { field = \"deleted\" }\n\n#",
    );
    let (message, hint, code) = finding(&env, at);
    assert_eq!(code, 0);
    assert_eq!(
        message,
        "warning: [server.tables.comments.pull.pagination] pagination.has_more is set, but \
         nothing in the pull's request changes between pages (pagination style `none`, filter \
         `none`): only the first page is ever read (table `comments`)"
    );
    assert_eq!(
        hint,
        "hint: walk the pages: pagination = { style = \"offset\" } with query `offset = \
         \"{offset}\"` (or style \"page\" with `{page}`), or filter on a change timestamp with \
         `{cursor}`"
    );
}

#[test]
fn check_refuses_an_offset_walk_without_an_offset_placeholder() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "url = \"/api/comments\"\nquery = { after_updated = \"{cursor}\", after_id = \
             \"{after_key}\", limit = \"{limit}\" }\nitems = \"/data\"\ncursor_field = \
             \"updatedAt\"\ntimestamp = \"epoch_ms\"\nfilter = \"keyset\"\npagination = { \
             has_more = \"/hasMore\" }",
            "url = \"/api/comments\"\nquery = { limit = \"{limit}\" }\nitems = \
             \"/data\"\npagination = { style = \"offset\", has_more = \"/hasMore\" }",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, "pagination = { style"));
    assert_eq!(code, 2);
    assert_eq!(
        message,
        "error: [server.tables.comments.pull.pagination] pull: pagination style `offset` needs \
         `{offset}` in the url or a query entry (table `comments`, field `offset`)"
    );
    assert_eq!(
        hint,
        "hint: without `{offset}` every request asks for the same page; add it to the query, \
         e.g. query = { offset = \"{offset}\", limit = \"{limit}\" }"
    );
}

#[test]
fn check_warns_about_an_if_match_header_without_the_version() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "update = { method = \"PUT\", url = \"/api/posts/{id}\" }",
            "update = { method = \"PUT\", url = \"/api/posts/{id}\", headers = { \"If-Match\" = \
             \"3\" } }",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, "\"3\""));
    assert_eq!(code, 0, "a warning: the config still works");
    assert_eq!(
        message,
        "warning: [server.tables.posts.update.headers.If-Match] the update route's `If-Match` \
         header holds no `{version}`: every write sends the same precondition, so a stale edit \
         is never refused and a current one may be (table `posts`, field `If-Match`)"
    );
    assert_eq!(
        hint,
        "hint: send the base version: \"If-Match\" = \"{version}\" (bare) or \
         \"\\\"{version}\\\"\" (quoted, as ETags are)"
    );
}

#[test]
fn check_warns_about_a_version_header_on_a_table_that_learns_no_versions() {
    let env = Env::new();
    env.edit(|t| {
        let t = replace(
            t,
            "version = { field = \"version\" }  # optimistic concurrency: the base version \
             travels in the body\n",
            "",
        );
        replace(
            &t,
            "delete = { method = \"DELETE\", url = \"/api/posts/{id}\" }",
            "delete = { method = \"DELETE\", url = \"/api/posts/{id}\", headers = { \"If-Match\" \
             = \"{version}\" } }",
        )
    });
    let (message, hint, code) = finding(&env, position(&env, "\"{version}\""));
    assert_eq!(code, 0);
    assert_eq!(
        message,
        "warning: [server.tables.posts.delete.headers.If-Match] the delete route's `If-Match` \
         header uses `{version}`, but the table sets neither version.field nor version.etag: \
         tidesync learns no versions, so the header is never sent (table `posts`, field \
         `If-Match`)"
    );
    assert_eq!(
        hint,
        "hint: version = { field = \"version\" } (or etag = true)"
    );
}

#[test]
fn check_refuses_a_server_id_table_whose_create_url_needs_the_key() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "create = { method = \"POST\", url = \"/api/posts\" }",
            "server_ids = true\ncreate = { method = \"PUT\", url = \"/api/posts/{id}\" }",
        )
    });
    let (message, _hint, code) = finding(&env, position(&env, "\"/api/posts/{id}\" }\nupdate"));
    assert_eq!(code, 2);
    assert_eq!(
        message,
        "error: [server.tables.posts.create.url] create route: url `/api/posts/{id}` uses \
         `{id}`, but with `server_ids` the server assigns the key: a create has only a \
         temporary local one (table `posts`, field `id`)"
    );
}

/// Where a validation error points comes from the error's structured setting path, not from
/// its wording: each of these settings is checked by a plugin (the REST transport, a conflict
/// strategy) and reported at its own line.
#[test]
fn check_points_at_the_setting_a_plugin_refused() {
    let env = Env::new();
    env.edit(|t| {
        let t = replace(
            t,
            "request_timeout_ms = 30000\n",
            "request_timeout_ms = 30000\nepoch_header = \"bad header\"\n",
        );
        let t = replace(
            &t,
            "posts = { strategy = \"last_write_wins\", timestamp_field = \"updatedAt\" }",
            "posts = { strategy = \"last_write_wins\", timestamp_format = 7 }",
        );
        // The comments feed's cursor field is empty.
        let field = "cursor_field = \"updatedAt\"";
        let at = t.rfind(field).expect("comments feed");
        format!("{}cursor_field = \"\"{}", &t[..at], &t[at + field.len()..])
    });
    let (message, _, code) = finding(&env, position(&env, "\"bad header\""));
    assert_eq!(code, 2);
    assert!(
        message.starts_with("error: [server.epoch_header] invalid header name"),
        "{message}"
    );
    let (message, _, _) = finding(&env, position(&env, "7 }"));
    assert!(
        message.starts_with("error: [conflicts.posts.timestamp_format] invalid options"),
        "{message}"
    );
    let (message, _, _) = finding(&env, position(&env, "\"\"\n"));
    assert!(
        message.starts_with("error: [server.tables.comments.pull.cursor_field] pull:"),
        "{message}"
    );
}

#[test]
fn check_refuses_fetch_before_write_without_a_fetch_route() {
    let env = Env::new();
    env.edit(|t| {
        let t = replace(
            t,
            "create = { method = \"POST\", url = \"/api/posts\" }",
            "conflict_detection = \"fetch_before_write\"\ncreate = { method = \"POST\", url = \"/api/posts\" }",
        );
        replace(&t, "fetch = { url = \"/api/posts/{id}\" }\n", "")
    });
    let run = env.run(&["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains(
            "conflict_detection: fetching before a write needs a fetch route (table `posts`, \
             field `fetch`)"
        ),
        "{run:?}"
    );
}
