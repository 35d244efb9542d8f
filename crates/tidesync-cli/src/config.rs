//! The configuration file: its model (serde, reusing the library's own specs verbatim), loading,
//! and validation into [`Diagnostic`]s that carry a line and column.
//!
//! ```toml
//! [store]
//! path = "app.redb"                       # relative to this file's directory
//!
//! [server]                                # tidesync_transport_rest::RestConfig, verbatim
//! base_url = "http://127.0.0.1:8080"
//! [server.tables.posts]                   # tidesync_transport_rest::TableRoutes, verbatim
//! create = { method = "POST", url = "/api/posts" }
//!
//! [auth]                                  # secrets come from the environment, never the file
//! bearer_env = "API_TOKEN"
//!
//! [[tables]]                              # tidesync_core::TableSpec, verbatim
//! name = "posts"
//!
//! [conflicts]                             # strategy name + its options, per table
//! posts = { strategy = "last_write_wins", timestamp_field = "updatedAt" }
//!
//! [sync]                                  # tidesync_actors::SyncSettings, verbatim
//! interval = "30s"
//!
//! [metrics]                               # optional Prometheus endpoint
//! listen = "127.0.0.1:9187"
//! ```
//!
//! Errors here are [`ConfigError`] (thiserror) and [`Diagnostic`]s; semantic checks call the
//! library's own validators (`RestConfig::validate`, `TableRoutes::validate`,
//! `TableSpec::validate`, `SyncSettings::validate`, the conflict plugins' `by_name`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use tidesync::{Error, SyncSettings, TableSpec};
use tidesync_transport_rest::RestConfig;

/// The file name used when no `-c/--config` is given (and `TIDESYNC_CONFIG` is not set).
pub const DEFAULT_CONFIG_FILE: &str = "tidesync.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[store]`: where the local database lives.
    pub store: StoreConfig,
    /// `[server]`: the REST API, a [`RestConfig`] exactly as the transport plugin reads it
    /// (`base_url`, timeouts, headers, and the routes of every table under
    /// `[server.tables.NAME]`). Absent: the store is local-only (inspection works, `run` and
    /// `sync` refuse).
    #[serde(default)]
    pub server: Option<RestConfig>,
    /// `[auth]`: where credentials come from (environment variables only).
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[[tables]]`: one [`TableSpec`] per table (name, key, indexes, references, push/pull).
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    /// `[conflicts]`: the conflict strategy per table name.
    #[serde(default)]
    pub conflicts: BTreeMap<String, ConflictConfig>,
    /// `[sync]`: [`SyncSettings`] (durations as `"250ms"`, `"30s"`, `"5m"` or milliseconds).
    #[serde(default)]
    pub sync: SyncSettings,
    /// `[metrics]`: the Prometheus endpoint of `tidesync run` (optional).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `[leader]`: which process syncs when several share the store (optional).
    #[serde(default)]
    pub leader: LeaderConfig,
}

/// `[leader]`: with `lockfile = true`, processes sharing the store (`[store] multi_process =
/// true`) elect one syncing leader through a lock file next to the database, with fencing
/// epochs; the others keep writing to the outbox and take over within `campaign_every` when
/// the leader exits or dies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// Elect the syncing process through `<store>.leader.lock`.
    pub lockfile: bool,
    /// How often followers try to take over (`"1s"`, or milliseconds).
    #[serde(deserialize_with = "duration")]
    pub campaign_every: std::time::Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            lockfile: false,
            campaign_every: std::time::Duration::from_secs(1),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(std::time::Duration::from_millis(ms)),
        Raw::Text(text) => {
            tidesync::actors::settings::parse_duration(&text).map_err(serde::de::Error::custom)
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The redb file; a relative path is relative to the config file's directory.
    pub path: PathBuf,
    /// Open the file so that several processes can use it at once (redb's multi-writer
    /// mode); every process must then set it. Pair it with `[leader] lockfile = true`.
    #[serde(default)]
    pub multi_process: bool,
}

/// `[auth]`: credentials read from environment variables when `run` or `sync` starts. Secrets
/// never belong in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Sends `Authorization: Bearer $VAR` with every request.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// Credential headers: header name → environment variable holding its value
    /// (`"X-Api-Key" = "API_KEY"`).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
}

impl AuthConfig {
    /// Whether any credential is configured.
    pub fn is_empty(&self) -> bool {
        self.bearer_env.is_none() && self.headers_env.is_empty()
    }

    /// Every environment variable the credentials are read from.
    pub fn env_vars(&self) -> Vec<&str> {
        self.bearer_env
            .iter()
            .map(String::as_str)
            .chain(self.headers_env.values().map(String::as_str))
            .collect()
    }
}

/// One table's conflict strategy: `{ strategy = "NAME", <options of that strategy> }`.
///
/// Names from `tidesync-conflict-policies` (`server_wins`, `client_wins`, `last_write_wins`,
/// `park`) and `tidesync-conflict-merge` (`field_merge`); the options are those plugins' own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConflictConfig {
    /// The strategy name.
    pub strategy: String,
    /// Its options (e.g. `timestamp_field`, or `default` and `fields` for `field_merge`).
    #[serde(flatten)]
    pub options: serde_json::Map<String, Value>,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` endpoint (loopback unless `allow_non_loopback`).
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address (the endpoint has no authentication).
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// Labels added to every metric (e.g. `{ app = "inventory" }`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Diagnostics

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as intended.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about the config file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    /// The dotted path of the setting (`server.tables.posts.create.url`, `tables[0].name`).
    pub path: Option<String>,
    /// The table the finding is about.
    pub table: Option<String>,
    /// The field the finding is about.
    pub field: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    fn new(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            message: message.into(),
            line: None,
            column: None,
            path: None,
            table: None,
            field: None,
            hint: None,
        }
    }

    /// An error.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }

    /// A warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }

    /// From a tidesync error: its message, table and field.
    pub fn from_error(err: &Error) -> Self {
        let mut d = Self::error(err.message());
        d.table = err.table_name().map(str::to_owned);
        d.field = err.field_name().map(str::to_owned);
        if let Some(excerpt) = err.response_excerpt() {
            d.hint = Some(excerpt.to_owned());
        }
        d
    }

    /// Sets the table.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Sets the field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `LINE:COL: ` or nothing.
    pub fn position(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("{line}:{column}"),
            (Some(line), None) => format!("{line}"),
            _ => String::new(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = self.position();
        if !position.is_empty() {
            write!(f, "{position}: ")?;
        }
        write!(f, "{}: ", self.severity)?;
        if let Some(path) = &self.path {
            write!(f, "[{path}] ")?;
        }
        f.write_str(&self.message)?;
        let mut context = Vec::new();
        if let Some(table) = &self.table {
            context.push(format!("table `{table}`"));
        }
        if let Some(field) = &self.field {
            context.push(format!("field `{field}`"));
        }
        if !context.is_empty() {
            write!(f, " ({})", context.join(", "))?;
        }
        Ok(())
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is invalid.
    #[error("{} is invalid: {}", path.display(), summary(diagnostics))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every finding (errors and warnings).
        diagnostics: Vec<Diagnostic>,
    },
}

fn summary(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    match errors.as_slice() {
        [] => "no errors".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Locating settings in the source text

/// One step of a settings path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'p> {
    /// A table key.
    Key(&'p str),
    /// An array index.
    Index(usize),
}

/// Finds where settings are written, from the parsed document's spans.
pub struct Locator<'a> {
    source: &'a str,
    doc: Spanned<DeTable<'a>>,
}

impl fmt::Debug for Locator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locator").finish_non_exhaustive()
    }
}

fn lookup<'t, 'a>(
    table: &'t DeTable<'a>,
    key: &str,
) -> Option<(
    &'t Spanned<toml::de::DeString<'a>>,
    &'t Spanned<DeValue<'a>>,
)> {
    table.get_key_value(key)
}

impl<'a> Locator<'a> {
    /// Parses `source` (recovering from syntax errors as far as possible).
    pub fn new(source: &'a str) -> Self {
        let (doc, _errors) = DeTable::parse_recoverable(source);
        Locator { source, doc }
    }

    /// The span of the deepest written prefix of `path`: the value for scalars, the key for
    /// tables (so `[server.tables.posts]` points at `posts`), the element for array items.
    pub fn span(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let mut best: Option<Range<usize>> = None;
        let mut current: Option<&Spanned<DeValue<'a>>> = None;
        for seg in path {
            let next = match (seg, current) {
                (Seg::Key(key), None) => lookup(self.doc.get_ref(), key),
                (Seg::Key(key), Some(value)) => match value.get_ref() {
                    DeValue::Table(table) => lookup(table, key),
                    _ => None,
                },
                (Seg::Index(i), Some(value)) => match value.get_ref() {
                    DeValue::Array(items) => match items.get(*i) {
                        Some(item) => {
                            best = Some(item.span());
                            current = Some(item);
                            continue;
                        }
                        None => None,
                    },
                    _ => None,
                },
                (Seg::Index(_), None) => None,
            };
            let Some((key, value)) = next else { break };
            best = Some(match value.get_ref() {
                DeValue::Table(_) | DeValue::Array(_) => key.span(),
                _ => value.span(),
            });
            current = Some(value);
        }
        best
    }

    /// The dotted path of the deepest setting whose value contains `offset`.
    pub fn path_at(&self, offset: usize) -> Option<String> {
        let mut path = String::new();
        descend_table(self.doc.get_ref(), offset, &mut path);
        (!path.is_empty()).then_some(path)
    }

    /// `(line, column)` of a byte offset, both 1-based; the column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.source, offset)
    }

    /// Locates `diag` at `path` (keeping its own location if it has one).
    pub fn locate(&self, mut diag: Diagnostic, path: &[Seg<'_>]) -> Diagnostic {
        if diag.path.is_none() && !path.is_empty() {
            diag.path = Some(render_path(path));
        }
        if diag.line.is_none()
            && let Some(span) = self.span(path)
        {
            let (line, column) = self.line_col(span.start);
            diag.line = Some(line);
            diag.column = Some(column);
        }
        diag
    }
}

/// Whether `offset` is inside `value` or anything under it (a table written with a
/// `[header]` spans only its header, so its entries are checked too).
fn contains_deep(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    if value.span().contains(&offset) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .any(|(k, v)| k.span().contains(&offset) || contains_deep(v, offset)),
        DeValue::Array(items) => items.iter().any(|item| contains_deep(item, offset)),
        _ => false,
    }
}

fn descend_table(table: &DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table.iter() {
        let inside = key.span().contains(&offset) || contains_deep(value, offset);
        if inside {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            descend_value(value.get_ref(), offset, path);
            return;
        }
    }
}

fn descend_value(value: &DeValue<'_>, offset: usize, path: &mut String) {
    match value {
        DeValue::Table(table) => descend_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if contains_deep(item, offset) {
                    path.push_str(&format!("[{i}]"));
                    descend_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Renders a settings path as `a.b[0].c`.
pub fn render_path(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// `(line, column)` of a byte offset in `source`, both 1-based; the column counts characters.
/// Offsets past the end or inside a character are clamped.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while end > 0 && !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = source.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Loading

/// A parsed config file, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub source: String,
    /// The model.
    pub config: Config,
    /// Warnings found while validating (errors make loading fail).
    pub warnings: Vec<Diagnostic>,
}

impl LoadedConfig {
    /// The directory relative paths in the file are relative to.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The store file, resolved against the config file's directory.
    pub fn store_path(&self) -> PathBuf {
        let path = &self.config.store.path;
        if path.is_absolute() {
            path.clone()
        } else {
            self.base_dir().join(path)
        }
    }

    /// The directory where `tidesync run` daemons register (`<store>.daemons`).
    pub fn daemons_dir(&self) -> PathBuf {
        crate::daemons::registry_dir(&self.store_path())
    }

    /// The spec of a declared table.
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.config.tables.iter().find(|t| t.name == name)
    }

    /// The declared table names, in file order.
    pub fn table_names(&self) -> Vec<&str> {
        self.config.tables.iter().map(|t| t.name.as_str()).collect()
    }
}

/// Reads, parses and validates a config file. Errors (with every diagnostic) fail; warnings are
/// kept in [`LoadedConfig::warnings`].
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (loaded, diagnostics) = check_source(path, source);
    match loaded {
        Some(mut loaded) if !diagnostics.iter().any(Diagnostic::is_error) => {
            loaded.warnings = diagnostics;
            Ok(loaded)
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            diagnostics,
        }),
    }
}

/// Parses and validates config text: the model (if it parsed) and every finding, in file
/// order for syntax and type errors, then semantic ones.
pub fn check_source(path: &Path, source: String) -> (Option<LoadedConfig>, Vec<Diagnostic>) {
    let parsed = parse(&source);
    match parsed {
        Err(diagnostics) => (None, diagnostics),
        Ok(config) => {
            let loaded = LoadedConfig {
                path: path.to_path_buf(),
                source,
                config,
                warnings: Vec::new(),
            };
            let diagnostics = validate(&loaded);
            (Some(loaded), diagnostics)
        }
    }
}

/// Parses config text into the model: TOML syntax errors (all of them) or the first type
/// error, each with its line and column.
pub fn parse(source: &str) -> Result<Config, Vec<Diagnostic>> {
    let locator = Locator::new(source);
    let (_, syntax) = DeTable::parse_recoverable(source);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| {
                let mut diag = toml_diagnostic(&locator, e, "TOML syntax error");
                diag.path = None; // the document around a syntax error is not trustworthy
                diag
            })
            .collect());
    }
    toml::from_str::<Config>(source).map_err(|e| vec![toml_diagnostic(&locator, &e, "")])
}

fn toml_diagnostic(locator: &Locator<'_>, err: &toml::de::Error, prefix: &str) -> Diagnostic {
    let message = err.message().trim().to_owned();
    let message = if prefix.is_empty() {
        message
    } else {
        format!("{prefix}: {message}")
    };
    let mut diag = Diagnostic::error(message);
    if let Some(span) = err.span() {
        let (line, column) = locator.line_col(span.start);
        diag.line = Some(line);
        diag.column = Some(column);
        diag.path = locator.path_at(span.start);
    }
    diag
}

// ---------------------------------------------------------------------------------------------
// Semantic validation

/// Every semantic finding about a parsed config, located in its source.
pub fn validate(loaded: &LoadedConfig) -> Vec<Diagnostic> {
    let locator = Locator::new(&loaded.source);
    let config = &loaded.config;
    let mut out = Vec::new();
    let mut push = |diag: Diagnostic, path: &[Seg<'_>]| out.push(locator.locate(diag, path));

    if config.store.path.as_os_str().is_empty() {
        push(
            Diagnostic::error("the store path is empty").hint("e.g. path = \"app.redb\""),
            &[Seg::Key("store"), Seg::Key("path")],
        );
    }

    // Tables.
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, spec) in config.tables.iter().enumerate() {
        if let Err(err) = spec.validate() {
            let field = table_field_key(err.field_name(), spec);
            let mut path = vec![Seg::Key("tables"), Seg::Index(i)];
            path.extend(field.map(Seg::Key));
            push(Diagnostic::from_error(&err), &path);
        }
        if names.insert(spec.name.as_str(), i).is_some() {
            push(
                Diagnostic::error("table declared twice").table(&spec.name),
                &[Seg::Key("tables"), Seg::Index(i), Seg::Key("name")],
            );
        }
    }
    let declared = || {
        let list: Vec<&str> = names.keys().copied().collect();
        if list.is_empty() {
            "no tables are declared".to_owned()
        } else {
            format!("declared: {}", list.join(", "))
        }
    };
    for (i, spec) in config.tables.iter().enumerate() {
        for (k, reference) in spec.references.iter().enumerate() {
            if !names.contains_key(reference.table.as_str()) {
                push(
                    Diagnostic::error(format!(
                        "references unknown table `{}` ({})",
                        reference.table,
                        declared()
                    ))
                    .table(&spec.name)
                    .field(&reference.field),
                    &[
                        Seg::Key("tables"),
                        Seg::Index(i),
                        Seg::Key("references"),
                        Seg::Index(k),
                        Seg::Key("table"),
                    ],
                );
            }
        }
    }
    if config.tables.is_empty() {
        push(
            Diagnostic::warning("no tables are declared")
                .hint("add a [[tables]] section with name = \"...\""),
            &[],
        );
    }

    // Server and routes.
    match &config.server {
        Some(server) => validate_server(server, config, &names, &mut push),
        None => {
            if config.tables.iter().any(|t| t.push || t.pull) {
                push(
                    Diagnostic::warning(
                        "no [server] section: the store works locally, but `run` and `sync` \
                         need one",
                    )
                    .hint("add [server] with base_url and the routes of every synced table"),
                    &[],
                );
            }
        }
    }

    // Auth.
    if let Some(var) = &config.auth.bearer_env
        && !valid_env_name(var)
    {
        push(
            Diagnostic::error(format!("`{var}` is not a valid environment variable name"))
                .hint("bearer_env names the variable that holds the token, e.g. \"API_TOKEN\""),
            &[Seg::Key("auth"), Seg::Key("bearer_env")],
        );
    }
    for (header, var) in &config.auth.headers_env {
        if !valid_header_name(header) {
            push(
                Diagnostic::error(format!("`{header}` is not a valid HTTP header name")),
                &[Seg::Key("auth"), Seg::Key("headers_env"), Seg::Key(header)],
            );
        }
        if !valid_env_name(var) {
            push(
                Diagnostic::error(format!("`{var}` is not a valid environment variable name"))
                    .hint("the value names the variable that holds the header's value"),
                &[Seg::Key("auth"), Seg::Key("headers_env"), Seg::Key(header)],
            );
        }
    }
    if !config.auth.is_empty() && config.server.is_none() {
        push(
            Diagnostic::warning("[auth] is set but there is no [server] to send it to"),
            &[Seg::Key("auth")],
        );
    }

    // Conflicts.
    for (table, conflict) in &config.conflicts {
        if !names.contains_key(table.as_str()) {
            push(
                Diagnostic::error(format!(
                    "conflict strategy for unknown table `{table}` ({})",
                    declared()
                ))
                .table(table)
                .hint("conflicts are keyed by table name: declare the table in [[tables]]"),
                &[Seg::Key("conflicts"), Seg::Key(table)],
            );
        }
        if let Err(err) = crate::strategies::build(&conflict.strategy, &conflict.options) {
            let at_name = !crate::strategies::is_strategy_name(&conflict.strategy);
            let diag = Diagnostic::from_error(&err).table(table);
            if at_name {
                push(
                    diag,
                    &[Seg::Key("conflicts"), Seg::Key(table), Seg::Key("strategy")],
                );
            } else {
                let mut path = vec![Seg::Key("conflicts"), Seg::Key(table)];
                path.extend(err.setting_path().iter().map(|s| Seg::Key(s)));
                push(diag, &path);
            }
        }
    }

    // Sync settings.
    if let Err(err) = config.sync.validate() {
        let field = err.field_name().unwrap_or_default().to_owned();
        let mut path = vec![Seg::Key("sync")];
        if !field.is_empty() {
            path.push(Seg::Key(&field));
        }
        push(Diagnostic::from_error(&err), &path);
    }
    for table in config.sync.rate_limits.keys() {
        if !names.contains_key(table.as_str()) {
            push(
                Diagnostic::warning(format!(
                    "rate limit for unknown table `{table}` ({})",
                    declared()
                ))
                .table(table),
                &[Seg::Key("sync"), Seg::Key("rate_limits"), Seg::Key(table)],
            );
        }
    }

    // Metrics.
    if let Some(metrics) = &config.metrics
        && !metrics.listen.ip().is_loopback()
        && !metrics.allow_non_loopback
    {
        push(
            Diagnostic::error(format!(
                "metrics would listen on the non-loopback address {}; /metrics has no \
                 authentication",
                metrics.listen
            ))
            .hint("use 127.0.0.1:9187, or set allow_non_loopback = true if that is intended"),
            &[Seg::Key("metrics"), Seg::Key("listen")],
        );
    }
    lint(loaded, &locator, &mut push);
    // File order reads best; findings without a position go last.
    out.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
    out
}

/// A pull whose first sort parameter (a name with `order` or `sort` in it) does not sort by
/// the cursor field: with offset or page walking over a changing table that skips rows, and
/// re-filtering needs the cursor-field order. Returns the parameter and the message.
fn sort_order_warning(feed: &tidesync_transport_rest::Feed) -> Option<(&str, String)> {
    let cursor = feed.cursor_field.as_deref()?;
    let (name, value) = feed.query.iter().find(|(name, _)| {
        let lower = name.to_ascii_lowercase();
        lower.contains("order") || lower.contains("sort")
    })?;
    // `orderby.updatedAt` / `sort[updatedAt]` name the field; `sort = "updatedAt,id"` /
    // `order = "id.asc"` give it in the value.
    let named = name
        .split_once(['.', '['])
        .map(|(_, field)| field.trim_end_matches(']').to_owned());
    let value = value.to_string();
    let first = named.unwrap_or_else(|| {
        value
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_start_matches(['-', '+'])
            .to_owned()
    });
    let field = first.split(['.', ':', ' ']).next().unwrap_or_default();
    let normal = |s: &str| s.replace('_', "").to_ascii_lowercase();
    (normal(field) != normal(cursor)).then(|| {
        (
            name,
            format!(
                "the first sort parameter `{name}` sorts by `{field}`, not by the cursor field \
                 `{cursor}`"
            ),
        )
    })
}

fn validate_server(
    server: &RestConfig,
    config: &Config,
    names: &BTreeMap<&str, usize>,
    push: &mut impl FnMut(Diagnostic, &[Seg<'_>]),
) {
    // The top level, without the tables (those are checked one by one to report them all).
    let mut top = server.clone();
    top.tables.clear();
    if let Err(err) = top.validate() {
        let mut path = vec![Seg::Key("server")];
        path.extend(err.setting_path().iter().map(|s| Seg::Key(s)));
        push(Diagnostic::from_error(&err), &path);
    }
    for (table, routes) in &server.tables {
        let base = [Seg::Key("server"), Seg::Key("tables"), Seg::Key(table)];
        if !names.contains_key(table.as_str()) {
            push(
                Diagnostic::error(format!(
                    "routes for table `{table}`, which is not declared in [[tables]]"
                ))
                .table(table)
                .hint(format!(
                    "add [[tables]] name = \"{table}\", or remove [server.tables.{table}]"
                )),
                &base,
            );
        }
        if let Err(err) = routes.validate(table) {
            let mut path = base.to_vec();
            path.extend(err.setting_path().iter().map(|s| Seg::Key(s)));
            let mut diag = Diagnostic::from_error(&err);
            if let Some(walk @ ("offset" | "page")) = err.field_name() {
                // A walking style whose requests never change: every page would be the first.
                diag = diag.hint(format!(
                    "without `{{{walk}}}` every request asks for the same page; add it to the \
                     query, e.g. query = {{ {walk} = \"{{{walk}}}\", limit = \"{{limit}}\" }}"
                ));
            }
            push(diag, &path);
        }
        if let Some(feed) = &routes.pull
            && let Some((param, message)) = sort_order_warning(feed)
        {
            let mut path = base.to_vec();
            path.extend([Seg::Key("pull"), Seg::Key("query"), Seg::Key(param)]);
            push(
                Diagnostic::warning(message).table(table).field(param).hint(
                    "query parameters go out in the order written, and APIs that sort by \
                     parameters sort by the first: put the cursor field's sort first",
                ),
                &path,
            );
        }
        if let Some(spec) = config.tables.iter().find(|t| &t.name == table) {
            if routes.key != spec.key {
                push(
                    Diagnostic::warning(format!(
                        "the routes use key field `{}` but the table's key is `{}`",
                        routes.key, spec.key
                    ))
                    .table(table)
                    .hint(format!("set key = \"{}\" in both places", spec.key)),
                    &[
                        Seg::Key("server"),
                        Seg::Key("tables"),
                        Seg::Key(table),
                        Seg::Key("key"),
                    ],
                );
            }
            // The same check the engine runs at start (`Transport::check_table`).
            if let Err(err) = routes.check_spec(spec) {
                let hint = if err.setting_path().first().is_some_and(|s| s == "pull") {
                    format!("add [server.tables.{table}.pull], or set pull = false on the table")
                } else {
                    "add create/update/delete routes, or set push = false on the table".to_owned()
                };
                push(Diagnostic::from_error(&err).hint(hint), &base);
            }
        }
    }
    for (i, spec) in config.tables.iter().enumerate() {
        if (spec.push || spec.pull) && !server.tables.contains_key(&spec.name) {
            push(
                Diagnostic::error("the table syncs (push or pull) but has no routes")
                    .table(&spec.name)
                    .hint(format!(
                        "add [server.tables.{}], or set push = false and pull = false to keep \
                         it local",
                        spec.name
                    )),
                &[Seg::Key("tables"), Seg::Index(i), Seg::Key("name")],
            );
        }
    }
}

/// Maps a `TableSpec::validate` field name to the config key that holds it.
fn table_field_key<'s>(field: Option<&str>, spec: &'s TableSpec) -> Option<&'s str> {
    let field = field?;
    if spec.indexes.iter().any(|i| i == field) {
        Some("indexes")
    } else if spec.references.iter().any(|r| r.field == field) {
        Some("references")
    } else if spec.key == field {
        Some("key")
    } else {
        None
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// ---------------------------------------------------------------------------------------------
// Likely mistakes that parse and validate (warnings and errors with the fix)

/// Duration settings that accept a bare number (read as milliseconds).
const DURATION_KEYS: &[&[&str]] = &[
    &["sync", "interval"],
    &["sync", "debounce"],
    &["sync", "backoff_base"],
    &["sync", "backoff_cap"],
    &["sync", "probe_base"],
    &["sync", "probe_cap"],
    &["sync", "stale_after"],
    &["sync", "global_rate_limit", "window"],
    &["leader", "campaign_every"],
];

/// `:name` segments and `<name>` placeholders in a URL template: `(byte offset, name)`.
fn foreign_placeholders(url: &str) -> Vec<(usize, String, &'static str)> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes = url.as_bytes();
    for (i, c) in url.char_indices() {
        let starts_segment = i == 0 || matches!(bytes[i - 1], b'/' | b'=' | b'?' | b'&');
        let rest = &url[i + 1..];
        let name: String = rest.chars().take_while(|c| name_char(*c)).collect();
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            continue;
        }
        if c == ':' && starts_segment {
            out.push((i, name, "an express-style `:name`"));
        } else if c == '<' && rest[name.len()..].starts_with('>') {
            out.push((i, name, "a `<name>`"));
        }
    }
    out
}

/// Where the text of a string value starts in the source, when it is written plainly (no
/// escapes before `offset`): the byte offset of character `offset` of the value.
fn offset_in_string(source: &str, span: &Range<usize>, value: &str, offset: usize) -> usize {
    let written = source.get(span.clone()).unwrap_or_default();
    let quote_len = if written.starts_with("'''") || written.starts_with("\"\"\"") {
        3
    } else {
        1
    };
    match written.get(quote_len..quote_len + offset) {
        Some(prefix) if Some(prefix) == value.get(..offset) => span.start + quote_len + offset,
        _ => span.start,
    }
}

/// Preconditions that cannot work: an `If-Match` header that holds no `{version}` (the same
/// precondition on every write), and `{version}` in a route of a table that learns no versions.
fn precondition_lints(
    table: &str,
    routes: &tidesync_transport_rest::TableRoutes,
    push: &mut impl FnMut(Diagnostic, &[Seg<'_>]),
) {
    let versioned = routes.version.field.is_some() || routes.version.etag;
    for (name, route) in [
        ("create", &routes.create),
        ("update", &routes.update),
        ("delete", &routes.delete),
    ] {
        let Some(route) = route else { continue };
        for (header, value) in &route.headers.0 {
            let path = [
                Seg::Key("server"),
                Seg::Key("tables"),
                Seg::Key(table),
                Seg::Key(name),
                Seg::Key("headers"),
                Seg::Key(header),
            ];
            if name != "create"
                && header.eq_ignore_ascii_case("if-match")
                && value.trim() != "*"
                && !value.contains("{version}")
            {
                push(
                    Diagnostic::warning(format!(
                        "the {name} route's `{header}` header holds no `{{version}}`: every \
                         write sends the same precondition, so a stale edit is never refused \
                         and a current one may be"
                    ))
                    .table(table)
                    .field(header.clone())
                    .hint(format!(
                        "send the base version: \"{header}\" = \"{{version}}\" (bare) or \
                         \"\\\"{{version}}\\\"\" (quoted, as ETags are)"
                    )),
                    &path,
                );
            }
            if !versioned && value.contains("{version}") {
                push(
                    Diagnostic::warning(format!(
                        "the {name} route's `{header}` header uses `{{version}}`, but the table \
                         sets neither version.field nor version.etag: tidesync learns no \
                         versions, so the header is never sent"
                    ))
                    .table(table)
                    .field(header.clone())
                    .hint("version = { field = \"version\" } (or etag = true)"),
                    &path,
                );
            }
        }
    }
}

fn lint(
    loaded: &LoadedConfig,
    locator: &Locator<'_>,
    push: &mut impl FnMut(Diagnostic, &[Seg<'_>]),
) {
    let config = &loaded.config;
    let source = loaded.source.as_str();
    let at_offset = |diag: Diagnostic, path: &[Seg<'_>], value: &str, offset: usize| {
        let mut diag = locator.locate(diag, path);
        if let Some(span) = locator.span(path) {
            let (line, column) = locator.line_col(offset_in_string(source, &span, value, offset));
            diag.line = Some(line);
            diag.column = Some(column);
        }
        diag
    };
    if let Some(server) = &config.server {
        for (table, routes) in &server.tables {
            let mut urls: Vec<(Vec<&str>, &str)> = Vec::new();
            for (name, route) in [
                ("create", &routes.create),
                ("update", &routes.update),
                ("delete", &routes.delete),
                ("recreate", &routes.recreate),
            ] {
                if let Some(route) = route {
                    urls.push((vec![name, "url"], route.url.as_str()));
                }
            }
            if let Some(fetch) = &routes.fetch {
                urls.push((vec!["fetch", "url"], fetch.url.as_str()));
            }
            for (name, bulk) in [
                ("bulk", &routes.bulk),
                ("bulk_create", &routes.bulk_create),
                ("bulk_update", &routes.bulk_update),
                ("bulk_delete", &routes.bulk_delete),
            ] {
                if let Some(bulk) = bulk {
                    urls.push((vec![name, "url"], bulk.url.as_str()));
                }
            }
            if let Some(pull) = &routes.pull {
                urls.push((vec!["pull", "url"], pull.url.as_str()));
                if let Some(deleted) = &pull.deleted {
                    urls.push((vec!["pull", "deleted", "url"], deleted.url.as_str()));
                }
            }
            for (sub, url) in &urls {
                let mut path = vec![Seg::Key("server"), Seg::Key("tables"), Seg::Key(table)];
                path.extend(sub.iter().map(|s| Seg::Key(s)));
                for (offset, name, style) in foreign_placeholders(url) {
                    let written = if style.contains("express") {
                        format!(":{name}")
                    } else {
                        format!("<{name}>")
                    };
                    let fixed = url.replacen(&written, &format!("{{{name}}}"), 1);
                    let diag = at_offset(
                        Diagnostic::error(format!(
                            "`{written}` in the url is sent literally: {style} placeholder is \
                             not a tidesync placeholder"
                        ))
                        .table(table)
                        .field(name.clone())
                        .hint(format!(
                            "tidesync placeholders are written in braces: url = \"{fixed}\""
                        )),
                        &path,
                        url,
                        offset,
                    );
                    push(diag, &path);
                }
            }
            precondition_lints(table, routes, push);
            let Some(pull) = &routes.pull else { continue };
            if let Some(tombstone) = &pull.tombstone
                && let Value::String(text) = &tombstone.value
            {
                let typed = match text.trim() {
                    "true" | "false" => Some((text.trim().to_owned(), "a boolean")),
                    t if t.parse::<f64>().is_ok() => Some((t.to_owned(), "a number")),
                    _ => None,
                };
                if let Some((literal, kind)) = typed {
                    push(
                        Diagnostic::warning(format!(
                            "tombstone.value is the string \"{text}\": it matches only that \
                             string, never {kind}, so a `{}` field holding {kind} never marks a \
                             delete",
                            tombstone.field
                        ))
                        .table(table)
                        .field(tombstone.field.clone())
                        .hint(format!(
                            "if the server sends {kind}, write it without quotes: value = \
                             {literal}"
                        )),
                        &[
                            Seg::Key("server"),
                            Seg::Key("tables"),
                            Seg::Key(table),
                            Seg::Key("pull"),
                            Seg::Key("tombstone"),
                            Seg::Key("value"),
                        ],
                    );
                }
            }
            let walks_nothing = pull.pagination.style == tidesync_transport_rest::PageStyle::None
                && pull.filter == tidesync_transport_rest::Filter::None;
            let signal = [
                ("has_more", pull.pagination.has_more.is_some()),
                ("total", pull.pagination.total.is_some()),
            ]
            .into_iter()
            .find(|(_, set)| *set)
            .map(|(name, _)| name);
            if walks_nothing && let Some(signal) = signal {
                push(
                    Diagnostic::warning(format!(
                        "pagination.{signal} is set, but nothing in the pull's request changes \
                         between pages (pagination style `none`, filter `none`): only the first \
                         page is ever read"
                    ))
                    .table(table)
                    .hint(
                        "walk the pages: pagination = { style = \"offset\" } with query \
                         `offset = \"{offset}\"` (or style \"page\" with `{page}`), or filter \
                         on a change timestamp with `{cursor}`",
                    ),
                    &[
                        Seg::Key("server"),
                        Seg::Key("tables"),
                        Seg::Key(table),
                        Seg::Key("pull"),
                        Seg::Key("pagination"),
                    ],
                );
            }
        }
    }
    // Unitless durations.
    let Ok(raw) = toml::from_str::<toml::Table>(source) else {
        return;
    };
    let mut paths: Vec<Vec<String>> = DURATION_KEYS
        .iter()
        .map(|p| p.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    if let Some(toml::Value::Table(limits)) = raw
        .get("sync")
        .and_then(|s| s.as_table())
        .and_then(|s| s.get("rate_limits"))
    {
        for table in limits.keys() {
            paths.push(vec![
                "sync".into(),
                "rate_limits".into(),
                table.clone(),
                "window".into(),
            ]);
        }
    }
    for path in &paths {
        let mut value: Option<&toml::Value> = None;
        for (i, key) in path.iter().enumerate() {
            value = if i == 0 {
                raw.get(key)
            } else {
                value.and_then(|v| v.as_table()).and_then(|t| t.get(key))
            };
        }
        let Some(toml::Value::Integer(n)) = value else {
            continue;
        };
        let name = path.last().map(String::as_str).unwrap_or_default();
        let segs: Vec<Seg<'_>> = path.iter().map(|s| Seg::Key(s)).collect();
        push(
            Diagnostic::warning(format!(
                "`{name} = {n}` has no unit: the number is read as {n} milliseconds"
            ))
            .hint(format!(
                "write the unit: {name} = \"{n}ms\" if milliseconds are meant, or e.g. \
                 \"{n}s\" for seconds"
            )),
            &segs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<Diagnostic> {
        check_source(Path::new("t.toml"), text.to_owned()).1
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3)); // after "bé" (é is two bytes)
        assert_eq!(line_col(text, 8), (2, 2)); // inside é: clamped
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let diags = check("[store]\npath = \"a.redb\"\n[sync\n");
        assert!(!diags.is_empty());
        assert_eq!(diags[0].line, Some(3), "{diags:?}");
        assert!(diags[0].message.contains("TOML syntax error"), "{diags:?}");
    }

    #[test]
    fn unknown_fields_are_located() {
        let diags =
            check("[store]\npath = \"a.redb\"\n\n[server]\nbase_url = \"http://x\"\ntimeout = 3\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (Some(6), Some(1)));
        assert!(diags[0].message.contains("unknown field `timeout`"));
    }

    #[test]
    fn semantic_errors_name_table_and_position() {
        let text = "[store]\npath = \"a.redb\"\n\n[[tables]]\nname = \"posts\"\npush = false\npull = false\n\n[conflicts]\nposts = { strategy = \"lww\" }\nnotes = { strategy = \"server_wins\" }\n";
        let diags = check(text);
        let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 2, "{diags:?}");
        let notes = errors.iter().find(|d| d.table.as_deref() == Some("notes"));
        assert_eq!(notes.map(|d| d.line), Some(Some(11)), "{errors:?}");
        let lww = errors.iter().find(|d| d.table.as_deref() == Some("posts"));
        let lww = lww.map(|d| (d.line, d.message.clone()));
        assert_eq!(lww.as_ref().map(|l| l.0), Some(Some(10)));
        let message = lww.map(|l| l.1).unwrap_or_default();
        assert!(
            message.contains("server_wins, client_wins, last_write_wins, park, field_merge"),
            "{message}"
        );
    }

    #[test]
    fn sample_config_is_valid() {
        let diags = check(crate::commands::init::SAMPLE_CONFIG);
        assert!(diags.is_empty(), "{diags:#?}");
    }
}
