//! Budgets shared exactly across the fleet: the same reserve → settle as one node
//! (`crate::usage::budget`), on Redis counters per user and window.
//!
//! A request adds its estimate to each of its user's counters (`INCRBY` for tokens,
//! `INCRBYFLOAT` for cost: one round trip, no scripts); Redis orders the additions,
//! so every request sees what all replicas used and reserved before it. Over a limit:
//! the additions are taken back (off the request path) and the request is refused.
//! When the answer ends, the difference between the estimate and the real use is
//! added (off the request path). Without Redis, `on_unavailable` decides, as for rate
//! limits: `local` checks this replica's own counters at its share of each limit.

use std::sync::Arc;

use redis::{Value, pipe};

use super::Cluster;
use super::link::Op;
use crate::config::{Budget, OnUnavailable};
use crate::error::GatewayError;
use crate::usage::budget::{DAY_MS, MINUTE_MS, month_of, month_start_ms};
use crate::usage::{Amount, Budgets, Refusal, Reservation};

/// One shared counter a request counts against.
struct Counter {
    key: String,
    /// Cost (float) or tokens (integer).
    cost: bool,
    limit: f64,
    limit_name: &'static str,
    resets_ms: u64,
    ttl_ms: u64,
}

impl Cluster {
    /// Reserve `estimate` for `user` across the fleet; a refusal, or a reservation
    /// that settles in the fleet's counters too.
    pub async fn reserve_budget(
        self: &Arc<Self>,
        budgets: &Arc<Budgets>,
        user: &str,
        budget: &Budget,
        estimate: Amount,
    ) -> Result<Result<Reservation, Refusal>, GatewayError> {
        let now = crate::health::now_ms();
        if self.link.up() {
            let counters = self.counters(user, budget, now);
            if let Ok(over) = self.add(&counters, estimate).await {
                if let Some(c) = over {
                    self.take_back(&counters, estimate, Amount::default());
                    return Ok(Err(Refusal { limit: c.limit_name, resets_ms: c.resets_ms }));
                }
                let cluster = self.clone();
                let reservation = budgets
                    .hold(user, estimate, now)
                    .shared_with(Box::new(move |reserved, used| cluster.take_back(&counters, reserved, used)));
                return Ok(Ok(reservation));
            }
        }
        match self.fallback() {
            OnUnavailable::Local => {
                let n = self.replicas();
                let share = |v: Option<u64>| v.map(|v| v / u64::from(n));
                let scaled = Budget {
                    max_tokens_per_day: share(budget.max_tokens_per_day),
                    max_tokens_per_month: share(budget.max_tokens_per_month),
                    tokens_per_minute: share(budget.tokens_per_minute),
                    max_cost_per_day: budget.max_cost_per_day.map(|c| c / f64::from(n)),
                    max_cost_per_month: budget.max_cost_per_month.map(|c| c / f64::from(n)),
                };
                Ok(budgets.reserve(user, &scaled, estimate, now))
            }
            OnUnavailable::Allow => Ok(Ok(budgets.hold(user, estimate, now))),
            OnUnavailable::Deny => Err(GatewayError::shared_limits_unavailable()),
        }
    }

    fn counters(&self, user: &str, budget: &Budget, now: u64) -> Arc<Vec<Counter>> {
        let (day, minute) = (now / DAY_MS, now / MINUTE_MS);
        let month = month_of(day);
        let (day_end, month_end) = ((day + 1) * DAY_MS, month_start_ms(month + 1));
        let mut counters = Vec::new();
        let mut add = |name: &'static str, window: String, cost: bool, limit: Option<f64>, resets_ms: u64| {
            if let Some(limit) = limit {
                counters.push(Counter {
                    key: self.key(&format!("budget:{window}:{user}")),
                    cost,
                    limit,
                    limit_name: name,
                    resets_ms,
                    ttl_ms: resets_ms.saturating_sub(now) + DAY_MS,
                });
            }
        };
        let tokens = |v: Option<u64>| v.map(|v| v as f64);
        add("max_tokens_per_day", format!("td:{day}"), false, tokens(budget.max_tokens_per_day), day_end);
        add("max_tokens_per_month", format!("tm:{month}"), false, tokens(budget.max_tokens_per_month), month_end);
        add("max_cost_per_day", format!("cd:{day}"), true, budget.max_cost_per_day, day_end);
        add("max_cost_per_month", format!("cm:{month}"), true, budget.max_cost_per_month, month_end);
        let minute_end = (minute + 1) * MINUTE_MS;
        add("tokens_per_minute", format!("tpm:{minute}"), false, tokens(budget.tokens_per_minute), minute_end);
        Arc::new(counters)
    }

    /// Add `amount` to every counter; the first counter now over its limit, if any.
    async fn add<'a>(&self, counters: &'a [Counter], amount: Amount) -> Result<Option<&'a Counter>, String> {
        let mut p = pipe();
        for c in counters {
            if c.cost {
                p.cmd("INCRBYFLOAT").arg(&c.key).arg(amount.cost);
            } else {
                p.cmd("INCRBY").arg(&c.key).arg(amount.tokens);
            }
            p.pexpire(&c.key, c.ttl_ms as i64).ignore();
        }
        let values: Vec<Value> = self.link.query(Op::RateLimit, &p).await?;
        if values.len() != counters.len() {
            return Err("Redis answered an unexpected shape".to_string());
        }
        let mut over = None;
        for (c, v) in counters.iter().zip(&values) {
            let total = number(v).ok_or("Redis answered a counter that is not a number")?;
            if over.is_none() && total > c.limit + 1e-9 {
                over = Some(c);
            }
        }
        Ok(over)
    }

    /// Replace `reserved` by `used` in the counters, off the request path.
    fn take_back(self: &Arc<Self>, counters: &Arc<Vec<Counter>>, reserved: Amount, used: Amount) {
        let tokens = used.tokens as i64 - reserved.tokens as i64;
        let cost = used.cost - reserved.cost;
        if tokens == 0 && cost == 0.0 {
            return;
        }
        let mut p = pipe();
        for c in counters.iter() {
            if c.cost {
                p.cmd("INCRBYFLOAT").arg(&c.key).arg(cost).ignore();
            } else {
                p.cmd("INCRBY").arg(&c.key).arg(tokens).ignore();
            }
        }
        let link = self.link.clone();
        tokio::spawn(async move { link.query::<()>(Op::RateLimit, &p).await });
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(n) => Some(*n as f64),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}
