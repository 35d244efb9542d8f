//! The Grafana dashboard and `docs/observability.md` may only name metrics that
//! `tidesync_actors::telemetry` defines, and must cover them.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const DASHBOARD: &str = include_str!("../../../docs/grafana/tidesync-dashboard.json");
const OBSERVABILITY_MD: &str = include_str!("../../../docs/observability.md");

/// Every series name a query may use: the metric names, plus `_bucket`, `_sum` and `_count`
/// of the histograms.
fn known_series() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for d in common::described() {
        if d.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{}{suffix}", d.name));
            }
        }
        known.insert(d.name);
    }
    known
}

/// The `tidesync_*` identifiers in a PromQL expression.
fn metric_tokens(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("tidesync_"))
        .map(str::to_owned)
        .collect()
}

/// The series a token stands for (`X_bucket` → `X` for histograms).
fn base_metric(token: &str) -> String {
    let histograms: BTreeSet<String> = common::described()
        .into_iter()
        .filter(|d| d.kind == "histogram")
        .map(|d| d.name)
        .collect();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = token.strip_suffix(suffix)
            && histograms.contains(base)
        {
            return base.to_owned();
        }
    }
    token.to_owned()
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON")
}

/// All panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard, with where it is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"]),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = format!("variable {:?}", var["name"]);
        if let Some(q) = var["query"].as_str() {
            out.push((name.clone(), q.to_owned()));
        }
        if let Some(q) = var["query"]["query"].as_str() {
            out.push((name.clone(), q.to_owned()));
        }
        if let Some(q) = var["definition"].as_str() {
            out.push((name, q.to_owned()));
        }
    }
    out
}

#[test]
fn dashboard_is_importable() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "__inputs must declare the Prometheus datasource DS_PROMETHEUS"
    );
    assert!(d["__requires"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(
        d["id"].is_null(),
        "an exported dashboard has no database id"
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some());

    let mut ids = BTreeSet::new();
    for panel in panels(&d) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric panel id")),
            "duplicate panel id in {title}"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].as_u64().is_some(),
                "{title}: gridPos.{key}"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "{title}: empty expr"
            );
            assert!(
                refs.insert(target["refId"].as_str().expect("a refId")),
                "{title}"
            );
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        assert_eq!(var["datasource"]["uid"], "${DS_PROMETHEUS}", "{var}");
    }
}

#[test]
fn dashboard_names_only_defined_metrics_and_covers_them_all() {
    let d = dashboard();
    let known = known_series();
    let mut used = BTreeSet::new();
    for (place, expr) in dashboard_queries(&d) {
        let tokens = metric_tokens(&expr);
        assert!(!tokens.is_empty(), "{place}: no tidesync metric in {expr}");
        for token in tokens {
            assert!(
                known.contains(&token),
                "{place}: unknown metric {token} in {expr}"
            );
            used.insert(base_metric(&token));
        }
        if expr.contains("histogram_quantile") {
            assert!(
                expr.contains("_bucket"),
                "{place}: quantile of no buckets: {expr}"
            );
            assert!(
                expr.contains("le"),
                "{place}: quantile without `le`: {expr}"
            );
        }
        // Counters are only meaningful as rates.
        for token in metric_tokens(&expr) {
            if token.ends_with("_total") || token.ends_with("_bucket") || token.ends_with("_count")
            {
                assert!(
                    expr.contains("rate(") || expr.contains("increase("),
                    "{place}: counter {token} used without rate/increase: {expr}"
                );
            }
        }
    }
    for name in common::metric_constants().values() {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

/// The rows of the metric reference table: name → (type, unit, labels, meaning).
fn doc_table() -> BTreeMap<String, (String, String, BTreeSet<String>, String)> {
    let mut rows = BTreeMap::new();
    for line in OBSERVABILITY_MD.lines() {
        if !line.starts_with("| `tidesync_") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a metric row has 5 cells: {line}");
        let name = cells[0].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        let row = (
            cells[1].to_owned(),
            cells[2].to_owned(),
            labels,
            cells[4].to_owned(),
        );
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "{name} listed twice"
        );
    }
    rows
}

#[test]
fn observability_md_matches_telemetry() {
    let rows = doc_table();
    let labels = common::labels_in_sources();
    let described = common::described();
    assert_eq!(
        rows.keys().collect::<BTreeSet<_>>(),
        described.iter().map(|d| &d.name).collect::<BTreeSet<_>>(),
        "docs/observability.md must list exactly the metrics of telemetry.rs"
    );
    for d in &described {
        let (kind, unit, doc_labels, meaning) = &rows[&d.name];
        assert_eq!(kind, &d.kind, "{}: type", d.name);
        let want_unit = match d.unit.as_deref() {
            Some(unit) => unit.to_lowercase(),
            None => "—".to_owned(),
        };
        assert_eq!(unit, &want_unit, "{}: unit", d.name);
        assert_eq!(
            meaning, &d.help,
            "{}: the meaning is the # HELP text",
            d.name
        );
        let code_labels = labels.get(&d.name).cloned().unwrap_or_default();
        assert_eq!(
            doc_labels, &code_labels,
            "{}: labels used in the sources",
            d.name
        );
    }
}

/// The PromQL in the ```yaml and ```promql blocks of the docs.
fn doc_code_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in OBSERVABILITY_MD.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == "```yaml" || l == "```promql" => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn alert_rules_name_only_defined_metrics() {
    let known = known_series();
    let blocks = doc_code_blocks();
    assert!(
        blocks.len() >= 3,
        "expected the scrape config, the rules and the queries"
    );
    for block in &blocks {
        for token in metric_tokens(block) {
            assert!(
                known.contains(&token),
                "unknown metric {token} in:\n{block}"
            );
        }
    }
    let rules = blocks
        .iter()
        .find(|b| b.contains("groups:"))
        .expect("the alerting rules");
    for needle in [
        "tidesync_outbox_oldest_age_seconds",
        "tidesync_dead_letters_waiting)",
        "tidesync_auth_required",
        "tidesync_online",
        "tidesync_sync_cycle_duration_seconds_count{outcome=\"failed\"}",
        "tidesync_clock_skew_seconds",
        "tidesync_store_commit_duration_seconds_bucket",
    ] {
        assert!(rules.contains(needle), "no alert uses {needle}");
    }
}

#[test]
fn token_scanner() {
    assert_eq!(
        metric_tokens("sum by (le) (rate(tidesync_x_bucket{job=\"tidesync\"}[5m])) / tidesync_y"),
        ["tidesync_x_bucket", "tidesync_y"]
    );
    assert_eq!(
        base_metric("tidesync_request_duration_seconds_bucket"),
        "tidesync_request_duration_seconds"
    );
    assert_eq!(base_metric("tidesync_pull_total"), "tidesync_pull_total");
}
