//! Printing: human text or `--json` documents on stdout, errors on stderr. Writes never panic
//! (a closed pipe, as in `tidesync scan posts | head`, just ends the output).

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{CliError, Exit};

/// Where command output goes, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: machine-readable documents instead of text.
    pub json: bool,
}

impl Output {
    /// Text or JSON output.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints a line on stdout.
    pub fn line(&self, text: impl AsRef<str>) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", text.as_ref());
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::msg(Exit::Failed, format!("cannot render JSON: {e}")))?;
        self.line(text);
        Ok(())
    }

    /// Prints a value as one line of JSON on stdout.
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::msg(Exit::Failed, format!("cannot render JSON: {e}")))?;
        self.line(text);
        Ok(())
    }

    /// Prints a line on stderr (progress, notes).
    pub fn note(&self, text: impl AsRef<str>) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", text.as_ref());
    }

    /// Reports a failure on stderr: `error: …`, its causes and a hint (or a JSON object with
    /// `--json`).
    pub fn error(&self, err: &CliError) {
        if err.reported {
            return;
        }
        let causes: Vec<String> = err.error.chain().skip(1).map(|c| c.to_string()).collect();
        let message = err.error.to_string();
        if self.json {
            let doc = serde_json::json!({
                "error": message,
                "causes": causes,
                "hint": err.hint,
                "exit_code": err.exit.code(),
            });
            self.note(serde_json::to_string(&doc).unwrap_or_else(|_| message.clone()));
            return;
        }
        let mut text = format!("error: {message}");
        for cause in causes {
            // Engine errors repeat their cause in the message; print only what is new.
            if !message.contains(&cause) {
                text.push_str(&format!("\n  caused by: {cause}"));
            }
        }
        if let Some(hint) = &err.hint {
            text.push_str(&format!("\n  hint: {hint}"));
        }
        self.note(text);
    }
}

/// The stderr line of a listing that a limit cut: how many were shown and how to see the rest.
/// `default` says whether the limit was the command's default (not an explicit `--limit`).
pub fn truncation_note(what: &str, shown: usize, default: bool, more: &str) -> String {
    let by = if default {
        "the default limit"
    } else {
        "--limit"
    };
    format!(
        "note: output cut at {shown} {what} by {by}; there are more: see them with --limit N \
         or --all{more}"
    )
}

/// NDJSON (or a JSON array's items, one per line) on stdout, buffered; a closed pipe (as in
/// `tidesync export posts | head`) just ends the output.
pub struct JsonLines {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    array: bool,
    count: usize,
    /// Set once a write failed (the reader went away): nothing more is written.
    pub closed: bool,
}

impl JsonLines {
    /// One JSON document per line, or (`array`) a JSON array with one item per line.
    pub fn new(array: bool) -> Self {
        let mut lines = JsonLines {
            out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock()),
            array,
            count: 0,
            closed: false,
        };
        if array {
            lines.raw(b"[");
        }
        lines
    }

    fn raw(&mut self, bytes: &[u8]) {
        if !self.closed && self.out.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    /// Writes one value.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_vec(value)
            .map_err(|e| CliError::msg(Exit::Failed, format!("cannot render JSON: {e}")))?;
        let sep: &[u8] = match (self.array, self.count) {
            (true, 0) => b"\n",
            (true, _) => b",\n",
            (false, _) => b"",
        };
        self.raw(sep);
        self.raw(&text);
        if !self.array {
            self.raw(b"\n");
        }
        self.count += 1;
        Ok(())
    }

    /// Ends the output (closes the array) and flushes it.
    pub fn finish(mut self) {
        if self.array {
            let end: &[u8] = if self.count == 0 { b"]\n" } else { b"\n]\n" };
            self.raw(end);
        }
        if !self.closed && self.out.flush().is_err() {
            self.closed = true;
        }
    }
}

/// Whether stderr is a terminal (progress bars are drawn only then).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Renders rows as aligned columns under a header.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<pad$}  "));
            }
        }
        line.trim_end().to_owned()
    };
    let mut out = vec![render(header.to_vec())];
    for row in rows {
        out.push(render(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// A duration in milliseconds as `850ms`, `12s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Shortens text to `max` characters (with `…`) and puts it on one line.
pub fn short(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_columns() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_000), "12s");
        assert_eq!(human_ms(200_000), "3m 20s");
        assert_eq!(human_ms(7_500_000), "2h 5m");
        assert_eq!(human_ms(90_000_000), "1d 1h");
        let text = columns(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(text, "A    LONG\nxyz  1");
        assert_eq!(short("a\nbcdef", 4), "a b…");
    }
}
