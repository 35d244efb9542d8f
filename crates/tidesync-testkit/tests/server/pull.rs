//! Pulls: every filter syntax, every pagination style, ties on `updatedAt` at page boundaries,
//! tombstones as a flag and as a feed, `Link` headers, envelopes.

use std::collections::HashSet;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer, ServerHandle, TimestampFormat};

use crate::{Api, Resp, send};

fn ids(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|a| a.iter().map(|r| r["id"].clone()).collect())
        .unwrap_or_default()
}

fn data(r: &Resp) -> &Value {
    if r.body.is_array() {
        &r.body
    } else {
        &r.body["data"]
    }
}

/// The URL of a `Link: <url>; rel="next"` header.
fn next_link(r: &Resp) -> Option<String> {
    let link = r.header("link")?;
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    link.contains("rel=\"next\"")
        .then(|| link[start..end].to_owned())
}

/// Follows `Link` headers from `first` (a path) until there is none; returns all ids.
async fn walk_links(api: &Api, first: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut r = api.get(first).await?;
    for _ in 0..1000 {
        if r.status != 200 {
            bail!("status {}: {}", r.status, r.text);
        }
        out.extend(ids(data(&r)));
        let Some(next) = next_link(&r) else {
            return Ok(out);
        };
        let url = if next.starts_with('/') {
            format!("{}{next}", api.base)
        } else {
            next
        };
        r = send(api.client.get(url)).await?;
    }
    bail!("more than 1000 pages")
}

/// The ids of a collection in pull order, from the handle.
fn expected_order(server: &ServerHandle, collection: &str) -> Vec<Value> {
    let mut all = server.records(collection);
    all.extend(server.tombstones(collection));
    all.sort_by(|a, b| {
        let ka = (
            a["updatedAt"].as_i64(),
            a["id"].as_i64(),
            a["id"].as_str().map(str::to_owned),
        );
        let kb = (
            b["updatedAt"].as_i64(),
            b["id"].as_i64(),
            b["id"].as_str().map(str::to_owned),
        );
        ka.cmp(&kb)
    });
    all.iter().map(|r| r["id"].clone()).collect()
}

fn assert_exactly_once(seen: &[Value], expected: &[Value], what: &str) {
    let uniq: HashSet<String> = seen.iter().map(Value::to_string).collect();
    assert_eq!(uniq.len(), seen.len(), "{what}: a record was repeated");
    assert_eq!(
        seen, expected,
        "{what}: wrong order or a record was skipped"
    );
}

#[tokio::test]
async fn every_filter_syntax() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    for (ts, id) in [(1000, "a"), (1000, "b"), (2000, "c"), (3000, "d")] {
        server.freeze_clock(Some(ts));
        server.insert_direct("f", json!({ "id": id }))?;
    }
    let cases = [
        ("updated_after=1000", vec!["c", "d"]),
        ("updatedAt_gte=2000", vec!["c", "d"]),
        ("updatedAt_gt=1000&updatedAt_lte=2000", vec!["c"]),
        ("updatedAt_lt=2000", vec!["a", "b"]),
        ("updated_at=gt.1000", vec!["c", "d"]),
        ("updated_at=gte.2000", vec!["c", "d"]),
        ("updated_at=lt.3000", vec!["a", "b", "c"]),
        ("updated_at=lte.1000", vec!["a", "b"]),
        ("updatedAt=eq.2000", vec!["c"]),
        ("since=1970-01-01T00:00:01Z", vec!["c", "d"]),
        ("since=1970-01-01T00:00:01.999Z", vec!["c", "d"]),
        ("since=2000", vec!["d"]),
        ("filter=(updated%20%3E%20'1000')", vec!["c", "d"]),
        ("filter=(updatedAt%20%3E%3D%202000)", vec!["c", "d"]),
        ("filter=updated_at%20gt%20%222000%22", vec!["d"]),
        ("after_updated=1000&after_id=a", vec!["b", "c", "d"]),
        ("after_updated=1000", vec!["c", "d"]),
        ("after_updated=1970-01-01T00:00:02Z&after_id=c", vec!["d"]),
        ("id=in.(d,a)", vec!["a", "d"]),
        ("", vec!["a", "b", "c", "d"]),
        ("unknown=1&_=123", vec!["a", "b", "c", "d"]),
    ];
    for (q, want) in cases {
        let r = api.get(&format!("/api/f?{q}")).await?;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        let want: Vec<Value> = want.into_iter().map(Value::from).collect();
        assert_eq!(ids(&r.body["data"]), want, "{q}");
        if !q.contains("after_") {
            // `total` counts the filter's matches; keyset parameters are a position.
            assert_eq!(r.body["total"], want.len(), "{q}");
        }
        assert_eq!(r.body["hasMore"], false, "{q}");
        assert_eq!(r.body["nextCursor"], Value::Null, "{q}");
        assert!(r.header("link").is_none(), "{q}");
    }
    // A collection nobody wrote to is an empty list, not an error.
    let r = api.get("/api/never").await?;
    assert_eq!((r.status, r.body["total"].clone()), (200, json!(0)));
    Ok(())
}

/// 250 records with integer ids inserted in a scrambled order, sharing only 5 timestamps.
fn seed_250(server: &ServerHandle, collection: &str) -> Result<Vec<Value>> {
    for i in 0..250_i64 {
        let id = (i * 97) % 250 + 1; // a permutation of 1..=250
        server.freeze_clock(Some(1_000_000 + (i / 50) * 1000));
        server.insert_direct(collection, json!({ "id": id, "n": i }))?;
    }
    // Delete a few: tombstones are part of the feed.
    for id in [3, 77, 250] {
        server.delete_direct(collection, id)?;
    }
    let order = expected_order(server, collection);
    assert_eq!(order.len(), 250);
    Ok(order)
}

#[tokio::test]
async fn every_pagination_style_walks_250_records_with_ties() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let expected = seed_250(&server, "p")?;

    // Keyset, computed by the client from the last row.
    let mut seen = Vec::new();
    let mut q = "limit=7".to_owned();
    for _ in 0..100 {
        let r = api.get(&format!("/api/p?{q}")).await?;
        let page = r.body["data"].as_array().cloned().unwrap_or_default();
        seen.extend(page.iter().map(|x| x["id"].clone()));
        let Some(last) = page.last() else { break };
        if r.body["hasMore"] != true {
            break;
        }
        q = format!(
            "limit=7&after_updated={}&after_id={}",
            last["updatedAt"], last["id"]
        );
    }
    assert_exactly_once(&seen, &expected, "keyset");

    // Opaque cursor.
    let mut seen = Vec::new();
    let mut q = "limit=8".to_owned();
    for _ in 0..100 {
        let r = api.get(&format!("/api/p?{q}")).await?;
        seen.extend(ids(&r.body["data"]));
        match r.body["nextCursor"].as_str() {
            Some(c) => q = format!("limit=8&cursor={c}"),
            None => break,
        }
    }
    assert_exactly_once(&seen, &expected, "cursor");

    // page + per_page, 1-based.
    let mut seen = Vec::new();
    for page in 1..100 {
        let r = api.get(&format!("/api/p?page={page}&per_page=9")).await?;
        seen.extend(ids(&r.body["data"]));
        if r.body["hasMore"] != true {
            break;
        }
    }
    assert_exactly_once(&seen, &expected, "page");

    // limit + offset.
    let mut seen = Vec::new();
    for offset in (0..).step_by(11).take(100) {
        let r = api.get(&format!("/api/p?limit=11&offset={offset}")).await?;
        assert_eq!(r.body["total"], 250);
        seen.extend(ids(&r.body["data"]));
        if r.body["hasMore"] != true {
            break;
        }
    }
    assert_exactly_once(&seen, &expected, "offset");

    // Following Link headers, in each style, enveloped or bare.
    for first in [
        "/api/p?limit=13",
        "/api/p?limit=13&offset=0",
        "/api/p?page=1&per_page=13",
        "/api/p?limit=13&after_updated=0",
        "/api/p?limit=13&envelope=none",
        "/api/p?per_page=13&envelope=none&updated_after=0",
    ] {
        let seen = walk_links(&api, first).await?;
        assert_exactly_once(&seen, &expected, first);
    }

    // Default page size is 100; `limit` is clamped to 1000.
    let r = api.get("/api/p").await?;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(100));
    assert_eq!(r.body["hasMore"], true);
    let r = api.get("/api/p?limit=5000").await?;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(250));
    // Past the end: empty, no more.
    let r = api.get("/api/p?page=99&per_page=10").await?;
    assert_eq!(
        (ids(&r.body["data"]).len(), r.body["hasMore"].clone()),
        (0, json!(false))
    );
    Ok(())
}

#[tokio::test]
async fn keyset_walk_skips_nothing_while_records_change() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let before = seed_250(&server, "k")?;
    server.freeze_clock(None);

    let mut seen = Vec::new();
    let mut q = "limit=10".to_owned();
    for page_no in 0..200 {
        let r = api.get(&format!("/api/k?{q}")).await?;
        let page = r.body["data"].as_array().cloned().unwrap_or_default();
        seen.extend(page.iter().map(|x| x["id"].clone()));
        // Another client edits records ahead of and behind the cursor, and adds new ones.
        if page_no < 10 {
            let _ = server.update_direct("k", (page_no * 13) % 250 + 1, json!({"edited": page_no}));
            server.insert_direct("k", json!({"id": 1000 + page_no}))?;
        }
        let Some(last) = page.last() else { break };
        if r.body["hasMore"] != true {
            break;
        }
        q = format!(
            "limit=10&after_updated={}&after_id={}",
            last["updatedAt"], last["id"]
        );
    }
    let seen_set: HashSet<String> = seen.iter().map(Value::to_string).collect();
    for id in &before {
        assert!(
            seen_set.contains(&id.to_string()),
            "record {id} was skipped"
        );
    }
    for i in 0..10 {
        assert!(
            seen_set.contains(&(1000 + i).to_string()),
            "new record {} was skipped",
            1000 + i
        );
    }
    Ok(())
}

#[tokio::test]
async fn keyset_with_second_and_rfc3339_timestamps() -> Result<()> {
    let server = ReferenceServer::builder()
        .collection(
            "s",
            CollectionConfig::default().timestamps(TimestampFormat::EpochSeconds),
        )
        .collection(
            "r",
            CollectionConfig::default().timestamps(TimestampFormat::Rfc3339),
        )
        .start()
        .await;
    let api = Api::new(server.url());
    for i in 0..40_i64 {
        // Several writes per second, and per millisecond.
        server.freeze_clock(Some(1_700_000_000_000 + i * 300 - (i % 2) * 300));
        server.insert_direct("s", json!({ "id": format!("s{i:02}") }))?;
        server.insert_direct("r", json!({ "id": format!("r{i:02}") }))?;
    }
    for c in ["s", "r"] {
        let expected = {
            let r = api.get(&format!("/api/{c}?limit=1000")).await?;
            ids(&r.body["data"])
        };
        assert_eq!(expected.len(), 40);
        let mut seen = Vec::new();
        let mut q = "limit=3".to_owned();
        for _ in 0..100 {
            let r = api.get(&format!("/api/{c}?{q}")).await?;
            assert_eq!(r.status, 200, "{}", r.text);
            let page = r.body["data"].as_array().cloned().unwrap_or_default();
            seen.extend(page.iter().map(|x| x["id"].clone()));
            let Some(last) = page.last() else { break };
            if r.body["hasMore"] != true {
                break;
            }
            let ts = match &last["updatedAt"] {
                Value::String(s) => s.replace('+', "%2B"),
                other => other.to_string(),
            };
            q = format!(
                "limit=3&after_updated={ts}&after_id={}",
                last["id"].as_str().unwrap_or("")
            );
        }
        assert_exactly_once(&seen, &expected, c);
        let via_links = walk_links(&api, &format!("/api/{c}?limit=4&after_updated=0")).await?;
        assert_exactly_once(&via_links, &expected, c);
    }
    Ok(())
}

#[tokio::test]
async fn tombstones_as_flag_and_as_feed() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    for (ts, id) in [(10, "a"), (20, "b"), (30, "c"), (40, "d")] {
        server.freeze_clock(Some(ts));
        server.insert_direct("t", json!({ "id": id }))?;
    }
    server.freeze_clock(Some(50));
    assert_eq!(api.delete("/api/t/b").await?.status, 204);
    server.freeze_clock(Some(60));
    assert_eq!(api.delete("/api/t/d").await?.status, 204);

    let all = api.get("/api/t").await?;
    assert_eq!(
        ids(&all.body["data"]),
        [json!("a"), json!("c"), json!("b"), json!("d")]
    );
    assert_eq!(all.body["data"][2]["deleted"], true);
    assert_eq!(all.body["data"][2]["updatedAt"], 50);
    assert_eq!(all.body["data"][2]["version"], 2);
    let live = api.get("/api/t?tombstones=exclude").await?;
    assert_eq!(ids(&live.body["data"]), [json!("a"), json!("c")]);
    let only = api.get("/api/t?tombstones=only&updated_after=55").await?;
    assert_eq!(ids(&only.body["data"]), [json!("d")]);

    let feed = api.get("/api/t/deleted?since=0").await?;
    assert_eq!(
        feed.body["data"],
        json!([{"id": "b", "deletedAt": 50}, {"id": "d", "deletedAt": 60}])
    );
    let feed = api.get("/api/t/deleted?since=50").await?;
    assert_eq!(feed.body["data"], json!([{"id": "d", "deletedAt": 60}]));
    // Same pagination as the records feed.
    let mut seen = Vec::new();
    let mut r = api.get("/api/t/deleted?since=0&limit=1").await?;
    loop {
        seen.extend(ids(&r.body["data"]));
        let Some(c) = r.body["nextCursor"].as_str() else {
            break;
        };
        r = api
            .get(&format!("/api/t/deleted?since=0&limit=1&cursor={c}"))
            .await?;
    }
    assert_eq!(seen, [json!("b"), json!("d")]);
    assert_eq!(
        walk_links(&api, "/api/t/deleted?page=1&per_page=1").await?,
        seen
    );
    let bare = api.get("/api/t/deleted?envelope=none").await?;
    assert_eq!(bare.body.as_array().map(Vec::len), Some(2));
    // A revived record leaves the deleted feed.
    api.put("/api/t/b", &json!({})).await?;
    assert_eq!(
        ids(&api.get("/api/t/deleted").await?.body["data"]),
        [json!("d")]
    );
    Ok(())
}

#[tokio::test]
async fn link_headers_absolute_or_relative() -> Result<()> {
    let server = ReferenceServer::builder()
        .collection("rel", CollectionConfig::default().relative_links(true))
        .start()
        .await;
    let api = Api::new(server.url());
    for i in 0..3 {
        server.insert_direct("abs", json!({ "id": i }))?;
        server.insert_direct("rel", json!({ "id": i }))?;
    }
    let r = api.get("/api/abs?limit=1&offset=0&updated_after=0").await?;
    let link = next_link(&r).unwrap_or_default();
    assert!(
        link.starts_with(&format!("{}/api/abs?", server.url())),
        "absolute link: {link}"
    );
    assert!(
        link.contains("offset=1") && link.contains("updated_after=0"),
        "{link}"
    );
    assert_eq!(r.header("x-has-more"), Some("true"));
    assert!(r.header("x-next-cursor").is_some());
    let r = api.get("/api/rel?limit=1").await?;
    let link = next_link(&r).unwrap_or_default();
    assert!(
        link.starts_with("/api/rel?limit=1&cursor="),
        "relative link: {link}"
    );
    assert_eq!(walk_links(&api, "/api/rel?limit=1").await?.len(), 3);
    Ok(())
}
