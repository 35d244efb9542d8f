//! `tidesync check`: validates the config and prints every finding with its line and column.

use serde::Serialize;

use crate::build;
use crate::commands::Ctx;
use crate::config::{self, ConfigError, Diagnostic, LoadedConfig, Locator, Seg};
use crate::error::{CliError, Exit};

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

/// Runs the check; exit 2 when there is an error.
pub fn run(ctx: &Ctx) -> Result<(), CliError> {
    let path = &ctx.config_path;
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let (loaded, mut diagnostics) = config::check_source(path, source);
    if let Some(loaded) = &loaded {
        diagnostics.extend(environment(loaded));
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let file = path.display().to_string();
    if ctx.out.json {
        ctx.out.json(&Report {
            file: file.clone(),
            valid: errors == 0,
            errors,
            warnings,
            diagnostics: &diagnostics,
        })?;
    } else {
        for diag in &diagnostics {
            let position = diag.position();
            let at = if position.is_empty() {
                format!("{file}: ")
            } else {
                format!("{file}:")
            };
            ctx.out.line(format!("{at}{diag}"));
            if let Some(hint) = &diag.hint {
                ctx.out.line(format!("  hint: {hint}"));
            }
        }
        if let (0, Some(loaded)) = (errors, &loaded) {
            ctx.out.line(summary(loaded, warnings));
        }
    }
    if errors > 0 {
        let message = format!(
            "{file}: {errors} error{} found",
            if errors == 1 { "" } else { "s" }
        );
        if ctx.out.json {
            return Err(CliError::reported(Exit::Usage, message));
        }
        return Err(CliError::usage(message));
    }
    Ok(())
}

/// Warnings for credentials whose environment variables are not set here (they are needed
/// only where `run` or `sync` starts, so they are not errors).
fn environment(loaded: &LoadedConfig) -> Vec<Diagnostic> {
    let locator = Locator::new(&loaded.source);
    let auth = &loaded.config.auth;
    let mut out = Vec::new();
    let mut check = |var: &str, path: &[Seg<'_>]| {
        if build::process_env(var).is_none_or(|v| v.is_empty()) {
            out.push(locator.locate(
                Diagnostic::warning(format!(
                    "environment variable `{var}` is not set here; `run` and `sync` need it"
                )),
                path,
            ));
        }
    };
    if let Some(var) = &auth.bearer_env {
        check(var, &[Seg::Key("auth"), Seg::Key("bearer_env")]);
    }
    for (header, var) in &auth.headers_env {
        check(
            var,
            &[Seg::Key("auth"), Seg::Key("headers_env"), Seg::Key(header)],
        );
    }
    out
}

fn summary(loaded: &LoadedConfig, warnings: usize) -> String {
    let config = &loaded.config;
    let mut parts = vec![format!(
        "{} table{} ({})",
        config.tables.len(),
        if config.tables.len() == 1 { "" } else { "s" },
        loaded.table_names().join(", ")
    )];
    parts.push(format!("store {}", loaded.store_path().display()));
    match &config.server {
        Some(server) => parts.push(format!("server {}", server.base_url)),
        None => parts.push("no server (local only)".to_owned()),
    }
    if let Some(metrics) = &config.metrics {
        parts.push(format!("metrics on {}", metrics.listen));
    }
    let mut line = format!("{}: ok: {}", loaded.path.display(), parts.join(", "));
    if warnings > 0 {
        line.push_str(&format!(
            " ({warnings} warning{})",
            if warnings == 1 { "" } else { "s" }
        ));
    }
    line
}
