//! Reading the ledger: summaries grouped by user, model, backend or day, for
//! `GET /admin/usage` and `berry usage` (which reads the file directly, also while no
//! gateway runs). Readers open their own connection; WAL keeps them off the writer's way.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Map, Value, json};

use super::Amount;

/// A grouping key of a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    User,
    Model,
    Backend,
    Day,
}

impl Key {
    pub fn parse(name: &str) -> Option<Key> {
        match name {
            "user" => Some(Key::User),
            "model" => Some(Key::Model),
            "backend" => Some(Key::Backend),
            "day" => Some(Key::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Key::User => "user",
            Key::Model => "model",
            Key::Backend => "backend",
            Key::Day => "day",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Key::User => "user",
            Key::Model => "model",
            Key::Backend => "provider || '/' || upstream_model",
            Key::Day => "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')",
        }
    }
}

/// One line of a summary: the group's key values, then its sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub keys: Vec<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: f64,
}

impl Row {
    pub fn json(&self, by: &[Key]) -> Value {
        let mut o = Map::new();
        for (k, v) in by.iter().zip(&self.keys) {
            o.insert(k.name().to_string(), json!(v));
        }
        o.insert("requests".into(), json!(self.requests));
        o.insert("input_tokens".into(), json!(self.input_tokens));
        o.insert("output_tokens".into(), json!(self.output_tokens));
        o.insert("cached_input_tokens".into(), json!(self.cached_input_tokens));
        o.insert("reasoning_tokens".into(), json!(self.reasoning_tokens));
        o.insert("cost".into(), json!(self.cost));
        Value::Object(o)
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// Sums of the requests in `[from_ms, to_ms)`, grouped by `by` (all together when
/// empty), dearest first.
pub fn summary(path: &Path, from_ms: u64, to_ms: u64, by: &[Key]) -> rusqlite::Result<Vec<Row>> {
    let c = open(path)?;
    let keys: Vec<&str> = by.iter().map(|k| k.sql()).collect();
    let select = keys.iter().map(|k| format!("{k}, ")).collect::<String>();
    let group = if keys.is_empty() { String::new() } else { format!("GROUP BY {}", keys.join(", ")) };
    let sql = format!(
        "SELECT {select} COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
            COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cost), 0.0)
         FROM requests WHERE time_ms >= ?1 AND time_ms < ?2 {group} ORDER BY {cost_column} DESC, 1",
        cost_column = by.len() + 6,
    );
    let mut statement = c.prepare(&sql)?;
    let n = by.len();
    let rows = statement.query_map(params![from_ms as i64, to_ms.min(i64::MAX as u64) as i64], |r| {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.get::<_, Option<String>>(i)?.unwrap_or_default());
        }
        Ok(Row {
            keys,
            requests: r.get::<_, i64>(n)? as u64,
            input_tokens: r.get::<_, i64>(n + 1)? as u64,
            output_tokens: r.get::<_, i64>(n + 2)? as u64,
            cached_input_tokens: r.get::<_, i64>(n + 3)? as u64,
            reasoning_tokens: r.get::<_, i64>(n + 4)? as u64,
            cost: r.get::<_, f64>(n + 5)?,
        })
    })?;
    rows.collect()
}

/// Each user's use since `since_ms`, by hour (what budgets are rebuilt from at start).
pub fn spend_since(path: &Path, since_ms: u64) -> rusqlite::Result<Vec<(String, u64, Amount)>> {
    let c = open(path)?;
    let mut statement = c.prepare(
        "SELECT user, (time_ms / 3600000) * 3600000, SUM(input_tokens + output_tokens), SUM(cost)
         FROM requests WHERE time_ms >= ?1 GROUP BY 1, 2",
    )?;
    let rows = statement.query_map(params![since_ms as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)? as u64,
            Amount { tokens: r.get::<_, i64>(2)? as u64, cost: r.get::<_, f64>(3)? },
        ))
    })?;
    rows.collect()
}

/// A duration like "7d", "12h", "30m" in milliseconds.
pub fn parse_since(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// A summary as a text table (`berry usage`).
pub fn table(rows: &[Row], by: &[Key]) -> String {
    let mut header: Vec<String> = by.iter().map(|k| k.name().to_string()).collect();
    header.extend(["requests", "input", "output", "cached", "reasoning", "cost"].map(String::from));
    let mut lines: Vec<Vec<String>> = vec![header];
    for r in rows {
        let mut line = r.keys.clone();
        line.extend([
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cached_input_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            format!("{:.4}", r.cost),
        ]);
        lines.push(line);
    }
    let widths: Vec<usize> =
        (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                // Key columns left-aligned, numbers right-aligned.
                if i < by.len() { format!("{cell:<w$}", w = widths[i]) } else { format!("{cell:>w$}", w = widths[i]) }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
