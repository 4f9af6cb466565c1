//! `GET /admin/usage?from=&to=&group_by=user,model`: sums from the usage ledger.
//! `from`/`to` are milliseconds since the epoch or `YYYY-MM-DD` (UTC); by default
//! the last 30 days.

use http::{Response, StatusCode};
use serde_json::json;

use super::body::{BerryBody, json_response};
use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::usage::budget::DAY_MS;
use crate::usage::query::{self, Key};

pub async fn report(snapshot: &Snapshot, query_string: &str) -> Result<Response<BerryBody>, GatewayError> {
    let Some(ledger) = &snapshot.accounting.ledger else {
        return Err(GatewayError::not_found("usage_ledger_off", "The usage ledger is off (settings.usage_db = \"\")."));
    };
    let now = crate::health::now_ms();
    let (mut from, mut to, mut by) = (now.saturating_sub(30 * DAY_MS), now + 1, Vec::new());
    for (name, value) in query_string.split('&').filter_map(|p| p.split_once('=')) {
        match name {
            "from" => from = instant(value).ok_or_else(|| bad("from"))?,
            "to" => to = instant(value).ok_or_else(|| bad("to"))?,
            "group_by" => {
                for key in value.split([',', '+']).filter(|k| !k.is_empty()) {
                    by.push(Key::parse(key).ok_or_else(|| bad("group_by"))?);
                }
            }
            _ => {}
        }
    }
    let path = ledger.path().to_path_buf();
    let keys = by.clone();
    let rows = tokio::task::spawn_blocking(move || query::summary(&path, from, to, &keys))
        .await
        .map_err(|e| GatewayError::internal(format!("usage query failed: {e}")))?
        .map_err(|e| GatewayError::internal(format!("usage query failed: {e}")))?;
    let rows: Vec<_> = rows.iter().map(|r| r.json(&by)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "from": from, "to": to, "rows": rows })))
}

fn bad(param: &'static str) -> GatewayError {
    GatewayError::bad_request(
        "invalid_usage_query",
        format!("'{param}' must be milliseconds since the epoch or YYYY-MM-DD (group_by: user, model, backend, day)."),
    )
    .with_param(param)
}

/// Milliseconds since the epoch, or the start of a `YYYY-MM-DD` day (UTC).
fn instant(value: &str) -> Option<u64> {
    if let Ok(ms) = value.parse::<u64>() {
        return Some(ms);
    }
    let mut parts = value.splitn(3, '-');
    let (y, m, d): (u64, u64, u64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let month = (y - 1970) * 12 + (m - 1);
    Some(crate::usage::budget::month_start_ms(month) + (d - 1) * DAY_MS)
}
