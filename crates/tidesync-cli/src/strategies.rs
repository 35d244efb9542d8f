//! The conflict strategies a config file can name, dispatched to the plugin that owns each
//! name (`tidesync-conflict-policies`, `tidesync-conflict-merge`).

use std::sync::Arc;

use tidesync::{ConflictStrategy, Error};

/// Every conflict strategy name the config accepts: `tidesync-conflict-policies`' names, then
/// `tidesync-conflict-merge`'s.
pub fn strategy_names() -> Vec<&'static str> {
    tidesync_conflict_policies::STRATEGY_NAMES
        .iter()
        .chain(tidesync_conflict_merge::STRATEGY_NAMES)
        .copied()
        .collect()
}

/// Whether `name` is a known conflict strategy.
pub fn is_strategy_name(name: &str) -> bool {
    strategy_names().contains(&name)
}

/// Builds a table's conflict strategy, dispatching on its name to the plugin that owns it.
/// An unknown name is one `Config` error listing every valid name.
pub fn build(
    name: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Result<Arc<dyn ConflictStrategy>, Error> {
    let options = serde_json::Value::Object(options.clone());
    if tidesync_conflict_policies::STRATEGY_NAMES.contains(&name) {
        tidesync_conflict_policies::by_name(name, &options)
    } else if tidesync_conflict_merge::STRATEGY_NAMES.contains(&name) {
        tidesync_conflict_merge::by_name(name, &options)
    } else {
        Err(Error::config(format!(
            "unknown conflict strategy `{name}`; valid names: {}",
            strategy_names().join(", ")
        ))
        .field("strategy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_dispatch_to_both_plugins() {
        for name in strategy_names() {
            let built = build(name, &serde_json::Map::new()).map(|s| s.name().to_owned());
            assert_eq!(built.ok().as_deref(), Some(name));
        }
        let err = build("lww", &serde_json::Map::new())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(
                "valid names: server_wins, client_wins, last_write_wins, park, field_merge"
            )),
            "{err:?}"
        );
    }
}
