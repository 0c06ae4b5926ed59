//! Output: aligned tables for people, CSV and JSON for scripts.

use serde_json::Value;

use super::api::printable;

/// A table of text cells; numeric columns are right-aligned.
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `headers`: names, where a leading `>` marks a right-aligned column.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers
                .iter()
                .map(|h| h.trim_start_matches('>').to_string())
                .collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(w - c.chars().count());
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One CSV line (RFC 4180 quoting; text that a spreadsheet would run as a formula is
/// prefixed with `'`).
pub fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| {
            let c = if c.starts_with(['=', '+', '-', '@']) && c.parse::<f64>().is_err() {
                format!("'{c}")
            } else {
                c.clone()
            };
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// Writes a command's output; a reader that went away (`| head`) ends it quietly.
pub fn emit(s: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the output: {e}"))
        }
        _ => Ok(()),
    }
}

pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A field as a table cell: text as is, numbers and booleans printed, null and absent `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A Unix time in seconds as an RFC 3339 date-time, or `-`.
pub fn time(v: &Value) -> String {
    v.as_u64()
        .map(crate::records::period::rfc3339)
        .unwrap_or_else(|| "-".into())
}

/// Spend against a limit: `0.12 / 5.00 daily`, or the spend alone without a limit.
pub fn spend(standing: &Value) -> String {
    let spent = cell(&standing["spend"]);
    match (&standing["max_budget"], &standing["budget_period"]) {
        (Value::String(max), Value::String(p)) => format!("{spent} / {max} {p}"),
        (Value::String(max), _) => format!("{spent} / {max}"),
        _ => spent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_sanitize() {
        let mut t = Table::new(&["name", ">n"]);
        t.row(vec!["a\u{1b}x".into(), "1".into()]);
        t.row(vec!["long name".into(), "100".into()]);
        assert_eq!(
            t.render(),
            "name         n\na x          1\nlong name  100\n"
        );
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(
            csv_line(&[
                "a,b".into(),
                "=cmd()".into(),
                "-1.5".into(),
                "say \"x\"".into()
            ]),
            "\"a,b\",'=cmd(),-1.5,\"say \"\"x\"\"\"\n"
        );
    }

    #[test]
    fn spend_shows_the_limit_when_there_is_one() {
        assert_eq!(
            spend(&json!({"spend": "0.10", "max_budget": "5.00", "budget_period": "daily"})),
            "0.10 / 5.00 daily"
        );
        assert_eq!(spend(&json!({"spend": "0.00", "max_budget": null})), "0.00");
    }
}
