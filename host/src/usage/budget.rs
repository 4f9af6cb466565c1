//! Budgets and token limits, by reserve → settle.
//!
//! Before a request is forwarded, an estimate of what it will cost — its input (body
//! bytes / 4) plus the output cap it asked for, priced at its route's dearest backend
//! — is reserved against every limit of its user; a request whose reservation does
//! not fit is refused. When the answer ends, the reservation is replaced by what the
//! provider reported. Concurrent requests therefore cannot overshoot a limit by more
//! than the difference between their reservations and what they really used: a
//! request that asks for no output cap reserves its input alone.
//!
//! Days and months are UTC; `tokens_per_minute` is a fixed minute window. The
//! counters are rebuilt from the ledger at start, so budgets survive restarts.

use std::sync::Arc;

use crate::by_user::ByUser;
use crate::config::Budget;

/// What a request is expected to use, or did use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amount {
    pub tokens: u64,
    pub cost: f64,
}

#[derive(Default)]
pub struct Budgets(ByUser<Spend>);

/// One user's use in the current day, month and minute, and what requests in
/// flight have reserved.
#[derive(Default, Clone)]
struct Spend {
    day: u64,
    month: u64,
    minute: u64,
    day_used: Amount,
    month_used: Amount,
    minute_tokens: u64,
    reserved: Amount,
}

/// A limit a request did not fit in.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// "max_cost_per_day", …, "tokens_per_minute".
    pub limit: &'static str,
    /// When the window resets (ms since the epoch).
    pub resets_ms: u64,
}

/// A reservation: settled with the real use when the request ends (or with nothing,
/// if it is dropped unsettled).
pub struct Reservation {
    budgets: Arc<Budgets>,
    user: String,
    reserved: Amount,
    settled: bool,
    /// Settles the same reservation in the fleet's shared counters (`[cluster]`).
    shared: Option<SharedSettle>,
}

/// Called with (reserved, used) when a reservation held in shared counters settles.
pub type SharedSettle = Box<dyn FnOnce(Amount, Amount) + Send + Sync>;

impl Reservation {
    pub fn settle(self, used: Amount) {
        self.settle_at(used, crate::health::now_ms());
    }

    /// Settle as of `now_ms` (what `settle` does with the clock's time).
    pub fn settle_at(mut self, used: Amount, now_ms: u64) {
        self.finish(used, now_ms);
    }

    /// Also settle in the fleet's counters, which admitted this reservation.
    pub fn shared_with(mut self, settle: SharedSettle) -> Self {
        self.shared = Some(settle);
        self
    }

    fn finish(&mut self, used: Amount, now_ms: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.budgets.settle(&self.user, self.reserved, used, now_ms);
        if let Some(shared) = self.shared.take() {
            shared(self.reserved, used);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(Amount::default(), crate::health::now_ms());
    }
}

pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 86_400_000;

impl Budgets {
    fn with<T>(&self, user: &str, f: impl FnOnce(&mut Spend) -> T) -> T {
        self.0.with(user, f)
    }

    /// Reserve `estimate` for `user` against `budget`, or say which limit refuses.
    pub fn reserve(
        self: &Arc<Self>,
        user: &str,
        budget: &Budget,
        estimate: Amount,
        now_ms: u64,
    ) -> Result<Reservation, Refusal> {
        self.with(user, |spend| {
            spend.roll(now_ms);
            let tokens = |used: u64| used + spend.reserved.tokens + estimate.tokens;
            let cost = |used: f64| used + spend.reserved.cost + estimate.cost;
            let (day_end, month_end) = ((spend.day + 1) * DAY_MS, month_start_ms(spend.month + 1));
            let checks = [
                (
                    "max_tokens_per_day",
                    budget.max_tokens_per_day.is_some_and(|m| tokens(spend.day_used.tokens) > m),
                    day_end,
                ),
                (
                    "max_tokens_per_month",
                    budget.max_tokens_per_month.is_some_and(|m| tokens(spend.month_used.tokens) > m),
                    month_end,
                ),
                ("max_cost_per_day", budget.max_cost_per_day.is_some_and(|m| cost(spend.day_used.cost) > m), day_end),
                (
                    "max_cost_per_month",
                    budget.max_cost_per_month.is_some_and(|m| cost(spend.month_used.cost) > m),
                    month_end,
                ),
                (
                    "tokens_per_minute",
                    budget.tokens_per_minute.is_some_and(|m| tokens(spend.minute_tokens) > m),
                    (spend.minute + 1) * MINUTE_MS,
                ),
            ];
            if let Some((limit, _, resets_ms)) = checks.into_iter().find(|(_, over, _)| *over) {
                return Err(Refusal { limit, resets_ms });
            }
            spend.reserved.tokens += estimate.tokens;
            spend.reserved.cost += estimate.cost;
            Ok(Reservation {
                budgets: self.clone(),
                user: user.to_string(),
                reserved: estimate,
                settled: false,
                shared: None,
            })
        })
    }

    /// Reserve without checking (the fleet's shared counters decided): this
    /// replica's own counters still follow its requests.
    pub fn hold(self: &Arc<Self>, user: &str, estimate: Amount, now_ms: u64) -> Reservation {
        self.with(user, |spend| {
            spend.roll(now_ms);
            spend.reserved.tokens += estimate.tokens;
            spend.reserved.cost += estimate.cost;
        });
        Reservation { budgets: self.clone(), user: user.to_string(), reserved: estimate, settled: false, shared: None }
    }

    fn settle(&self, user: &str, reserved: Amount, used: Amount, now_ms: u64) {
        self.with(user, |spend| {
            spend.reserved.tokens = spend.reserved.tokens.saturating_sub(reserved.tokens);
            spend.reserved.cost = (spend.reserved.cost - reserved.cost).max(0.0);
            spend.add(used, now_ms);
        });
    }

    /// Count use recorded before this process started (the ledger's rows of the
    /// current month), so limits hold across restarts.
    pub fn restore(&self, user: &str, used: Amount, at_ms: u64, now_ms: u64) {
        self.with(user, |spend| {
            spend.roll(now_ms);
            if at_ms / DAY_MS == spend.day {
                spend.day_used.tokens += used.tokens;
                spend.day_used.cost += used.cost;
            }
            if month_of(at_ms / DAY_MS) == spend.month {
                spend.month_used.tokens += used.tokens;
                spend.month_used.cost += used.cost;
            }
        });
    }

    /// This user's use today, this month, and reserved now.
    pub fn used(&self, user: &str, now_ms: u64) -> (Amount, Amount, Amount) {
        self.with(user, |spend| {
            spend.roll(now_ms);
            (spend.day_used, spend.month_used, spend.reserved)
        })
    }
}

impl Spend {
    /// Start new windows when their time has come.
    fn roll(&mut self, now_ms: u64) {
        let (day, minute) = (now_ms / DAY_MS, now_ms / MINUTE_MS);
        let month = month_of(day);
        if self.day != day {
            self.day = day;
            self.day_used = Amount::default();
        }
        if self.month != month {
            self.month = month;
            self.month_used = Amount::default();
        }
        if self.minute != minute {
            self.minute = minute;
            self.minute_tokens = 0;
        }
    }

    fn add(&mut self, used: Amount, now_ms: u64) {
        self.roll(now_ms);
        self.day_used.tokens += used.tokens;
        self.day_used.cost += used.cost;
        self.month_used.tokens += used.tokens;
        self.month_used.cost += used.cost;
        self.minute_tokens += used.tokens;
    }
}

/// Months since January 1970 of a day since the epoch (UTC).
pub fn month_of(days: u64) -> u64 {
    let (year, month, _) = civil(days);
    (year - 1970) * 12 + (month - 1)
}

/// The first millisecond of a month counted as by [`month_of`].
pub fn month_start_ms(month: u64) -> u64 {
    let (year, month) = (1970 + month / 12, month % 12 + 1);
    days_from_civil(year, month) * DAY_MS
}

/// (year, month 1–12, day 1–31) of a day since the epoch (Howard Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since the epoch of the first day of `month` in `year`.
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months_are_utc_and_exact() {
        // 2026-12-01T00:00:00Z = 1796083200000 ms.
        let december = 1_796_083_200_000;
        assert_eq!(civil(december / DAY_MS), (2026, 12, 1));
        assert_eq!(month_start_ms(month_of(december / DAY_MS)), december);
        assert_eq!(month_start_ms(month_of(december / DAY_MS) + 1), 1_798_761_600_000, "2027-01-01");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn reservations_hold_concurrent_requests_and_settle_to_the_real_use() {
        let budgets = Arc::new(Budgets::default());
        let budget = Budget { max_tokens_per_day: Some(40), ..Budget::default() };
        let now = 1_796_083_200_000 + 3_600_000;
        let ask = Amount { tokens: 17, cost: 0.0 };
        let first = budgets.reserve("u", &budget, ask, now).expect("fits");
        let second = budgets.reserve("u", &budget, ask, now).expect("fits: 34 of 40");
        let refused = budgets.reserve("u", &budget, ask, now).err().expect("51 > 40 while both are in flight");
        assert_eq!(refused, Refusal { limit: "max_tokens_per_day", resets_ms: 1_796_083_200_000 + DAY_MS });
        first.settle_at(Amount { tokens: 9, cost: 0.0 }, now);
        second.settle_at(Amount::default(), now); // failed: used nothing
        assert_eq!(budgets.used("u", now).0.tokens, 9);
        let third = budgets.reserve("u", &budget, ask, now).expect("9 + 17 fits");
        third.settle_at(Amount { tokens: 9, cost: 0.0 }, now);
        let fourth = budgets.reserve("u", &budget, ask, now).expect("18 + 17 fits");
        fourth.settle_at(Amount { tokens: 9, cost: 0.0 }, now);
        assert!(budgets.reserve("u", &budget, ask, now).is_err(), "27 + 17 > 40");
        assert!(budgets.reserve("u", &budget, ask, now + DAY_MS).is_ok(), "a new day");
    }

    #[test]
    fn token_rate_and_cost_limits_refuse_with_their_reset() {
        let budgets = Arc::new(Budgets::default());
        let budget = Budget { tokens_per_minute: Some(100), max_cost_per_month: Some(1.0), ..Budget::default() };
        let now = 1_796_083_200_000 + 30_000;
        let used = Amount { tokens: 90, cost: 0.5 };
        budgets.reserve("u", &budget, used, now).expect("fits").settle_at(used, now);
        let minute = budgets.reserve("u", &budget, Amount { tokens: 20, cost: 0.1 }, now).err().expect("tpm");
        assert_eq!(minute, Refusal { limit: "tokens_per_minute", resets_ms: 1_796_083_200_000 + 60_000 });
        let cost = budgets.reserve("u", &budget, Amount { tokens: 1, cost: 0.6 }, now + 60_000).err().expect("cost");
        assert_eq!(cost.limit, "max_cost_per_month");
        assert_eq!(cost.resets_ms, 1_798_761_600_000);
        budgets.restore("v", Amount { tokens: 5, cost: 0.25 }, now - 1_000, now);
        assert_eq!(budgets.used("v", now).1, Amount { tokens: 5, cost: 0.25 });
    }
}
