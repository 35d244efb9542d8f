//! From a loaded config to the library's objects: the store (with "locked by a running daemon"
//! detection), the REST transport with credentials from the environment, conflict strategies,
//! the metrics endpoint, and the [`Engine`].

use std::path::{Path, PathBuf};

use tidesync::{Engine, Error, ErrorKind, RedbStore, SyncSettings};
use tidesync_metrics_prometheus::PrometheusMetrics;
use tidesync_transport_rest::{RestTransport, StaticAuth};

use crate::config::{AuthConfig, LoadedConfig, MetricsConfig};
use crate::daemons;

/// Reads an environment variable (`None` when unset or not UTF-8).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The credentials of `[auth]`, read from the environment through `env`. A variable that is
/// unset or empty is a `Config` error naming it.
pub fn auth(
    config: &AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<StaticAuth>, Error> {
    if config.is_empty() {
        return Ok(None);
    }
    let read = |var: &str, setting: &str| {
        env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::config(format!(
                "environment variable `{var}` (named by auth.{setting}) is not set or empty: \
                 export it before starting tidesync"
            ))
            .field(setting.to_owned())
        })
    };
    let mut auth = StaticAuth::new();
    if let Some(var) = &config.bearer_env {
        auth = auth.header(
            "Authorization",
            format!("Bearer {}", read(var, "bearer_env")?),
        );
    }
    for (header, var) in &config.headers_env {
        auth = auth.header(header.clone(), read(var, "headers_env")?);
    }
    Ok(Some(auth))
}

/// The REST transport of `[server]`, with the credentials of `[auth]`.
pub fn transport(
    loaded: &LoadedConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RestTransport, Error> {
    let server = loaded.config.server.as_ref().ok_or_else(|| {
        Error::config(format!(
            "{} has no [server] section, so there is nothing to sync with",
            loaded.path.display()
        ))
    })?;
    let mut builder = RestTransport::from_config(server.clone());
    if let Some(auth) = auth(&loaded.config.auth, env)? {
        builder = builder.auth(auth);
    }
    builder.build()
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally `tidesync run`) has the file open.
    #[error("{}", locked_message(path, *pid, registry))]
    Locked {
        /// The store file.
        path: PathBuf,
        /// The pid of the live daemon registered on the store, when there is one.
        pid: Option<u32>,
        /// The daemon registry that was read (`<store>.daemons`).
        registry: PathBuf,
    },
    /// Any other failure.
    #[error("cannot open the store {}: {source}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Error,
    },
}

fn locked_message(path: &Path, pid: Option<u32>, registry: &Path) -> String {
    match pid {
        Some(pid) => format!(
            "the store {} is locked by process {pid} (a running `tidesync run`, registered in {})",
            path.display(),
            registry.display()
        ),
        None => format!(
            "the store {} is locked by another process (no live daemon registered in {})",
            path.display(),
            registry.display()
        ),
    }
}

/// Whether a store error is redb's "database already open" (the file is locked by another
/// process or handle).
pub fn is_already_open(err: &Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(redb::DatabaseError::DatabaseAlreadyOpen) =
            cause.downcast_ref::<redb::DatabaseError>()
        {
            return true;
        }
        source = cause.source();
    }
    err.kind() == ErrorKind::Storage && err.message().contains("already open")
}

/// Opens the store of `[store]` (creating the file, and its directory, if missing).
pub fn open_store(loaded: &LoadedConfig) -> Result<RedbStore, StoreError> {
    let path = loaded.store_path();
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: Error::new(
                ErrorKind::Storage,
                format!("cannot create the directory {}: {e}", dir.display()),
            ),
        })?;
    }
    let options =
        tidesync_store_redb::RedbOptions::new().multi_process(loaded.config.store.multi_process);
    options.open(&path).map_err(|source| {
        if is_already_open(&source) {
            let pid = daemons::live(&path).ok().and_then(|live| {
                live.iter()
                    .find(|d| d.pid != std::process::id())
                    .map(|d| d.pid)
            });
            StoreError::Locked {
                pid,
                registry: daemons::registry_dir(&path),
                path,
            }
        } else {
            StoreError::Open { path, source }
        }
    })
}

/// Starts an engine on `store` with the config's tables: local-only without a transport (no
/// sync actors: inspection and local writes), syncing with one (plus the conflict strategies).
pub fn engine(
    loaded: &LoadedConfig,
    store: RedbStore,
    transport: Option<RestTransport>,
    settings: SyncSettings,
) -> Result<Engine, Error> {
    let config = &loaded.config;
    let settings = if transport.is_some() {
        with_takeover_hold(loaded, settings)
    } else {
        settings
    };
    let mut builder = Engine::builder()
        .store(store)
        .settings(settings)
        .on_schema_progress(schema_note);
    for spec in &config.tables {
        builder = builder.table(spec.clone());
    }
    if let Some(transport) = transport {
        builder = builder.transport(transport);
        if config.leader.lockfile {
            let elector =
                tidesync_leader_lockfile::LockfileLeader::for_database(loaded.store_path())?;
            builder = builder.leader(elector, config.leader.campaign_every);
        }
        for (table, conflict) in &config.conflicts {
            let strategy = crate::strategies::build(&conflict.strategy, &conflict.options)
                .map_err(|e| e.table(table.clone()))?;
            builder = builder.shared_conflicts(table, strategy);
        }
    }
    builder.start()
}

/// An index declared since the last open is built when the store opens, before the command
/// runs: on stderr, a line when the build starts and every 10 000 records until it ends.
fn schema_note(progress: &tidesync::SchemaProgress) {
    let tidesync::SchemaProgress::IndexBuild {
        table,
        index,
        done,
        total,
    } = progress
    else {
        // Migrations need the application's code: the CLI never runs one.
        return;
    };
    let line = if *done == 0 {
        format!("building the new index {table}.{index} over {total} records")
    } else if done == total || done % 10_000 == 0 {
        format!("building the new index {table}.{index}: {done} / {total}")
    } else {
        return;
    };
    crate::output::Output::new(false).note(line);
}

/// `takeover_hold` defaults to the server's `request_timeout_ms` (a deposed leader's request
/// cannot land later than that); a `takeover_hold` written in `[sync]` wins.
pub fn with_takeover_hold(loaded: &LoadedConfig, mut settings: SyncSettings) -> SyncSettings {
    let explicit = toml::from_str::<toml::Table>(&loaded.source)
        .ok()
        .is_some_and(|file| {
            file.get("sync")
                .and_then(|sync| sync.get("takeover_hold"))
                .is_some()
        });
    if !explicit && let Some(server) = &loaded.config.server {
        settings.takeover_hold = std::time::Duration::from_millis(server.request_timeout_ms);
    }
    settings
}

/// Installs the Prometheus recorder (describing every tidesync metric) and starts `/metrics`.
pub fn metrics(
    config: &MetricsConfig,
) -> Result<PrometheusMetrics, tidesync_metrics_prometheus::Error> {
    let mut builder = PrometheusMetrics::builder()
        .listen(config.listen)
        .allow_non_loopback(config.allow_non_loopback)
        .describe_with(tidesync::actors::telemetry::describe_all);
    for (key, value) in &config.labels {
        builder = builder.global_label(key.clone(), value.clone());
    }
    builder.install()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn auth_reads_the_environment_and_names_missing_variables() {
        let config = AuthConfig {
            bearer_env: Some("TOKEN".into()),
            headers_env: BTreeMap::from([("X-Api-Key".to_owned(), "KEY".to_owned())]),
        };
        let env = |name: &str| (name == "TOKEN").then(|| "t0k3n".to_owned());
        let err = auth(&config, &env).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("`KEY`")),
            "{err:?}"
        );
        let env = |_: &str| Some("v".to_owned());
        let built = auth(&config, &env).ok().flatten();
        let shown = format!("{built:?}");
        assert!(shown.contains("Authorization") && shown.contains("X-Api-Key"));
        assert!(!shown.contains("Bearer v"), "{shown}");
        assert!(auth(&AuthConfig::default(), &env).ok().flatten().is_none());
    }
}
