//! Passive stats of one backend, updated after every upstream attempt. All atomics:
//! many requests record into the same backend at once without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::circuit::{Circuit, CircuitPolicy, CircuitView};

/// A failure class, from a status code or a transport error (never message text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Network,
    Timeout,
    /// 401/403 from the upstream: our key was rejected.
    Auth,
    /// 429.
    RateLimit,
    /// 5xx.
    Server,
    /// 404: the provider does not serve the model.
    Model,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::Network,
        ErrorClass::Timeout,
        ErrorClass::Auth,
        ErrorClass::RateLimit,
        ErrorClass::Server,
        ErrorClass::Model,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Auth => "auth",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Server => "server",
            ErrorClass::Model => "model",
        }
    }

    /// The class of an upstream status that is not a success, or `None` when the
    /// status blames the caller's own request (other 4xx).
    pub fn from_status(status: u16) -> Option<ErrorClass> {
        match status {
            401 | 403 => Some(ErrorClass::Auth),
            404 => Some(ErrorClass::Model),
            408 => Some(ErrorClass::Timeout),
            429 => Some(ErrorClass::RateLimit),
            500..=599 => Some(ErrorClass::Server),
            _ => None,
        }
    }
}

/// The result of one attempt, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(ErrorClass),
    /// The caller's request was bad (4xx other than the classes above): no blame.
    ClientError,
}

impl Outcome {
    /// How many outcomes there are ([`Outcome::index`] is below this).
    pub const COUNT: usize = 2 + ErrorClass::ALL.len();

    /// Every outcome, in [`Outcome::index`] order.
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::Failure(ErrorClass::Network),
        Outcome::Failure(ErrorClass::Timeout),
        Outcome::Failure(ErrorClass::Auth),
        Outcome::Failure(ErrorClass::RateLimit),
        Outcome::Failure(ErrorClass::Server),
        Outcome::Failure(ErrorClass::Model),
    ];

    /// A dense index, for per-outcome tables.
    pub fn index(self) -> usize {
        match self {
            Outcome::Success => 0,
            Outcome::ClientError => 1,
            Outcome::Failure(class) => 2 + class as usize,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::Failure(class) => class.as_str(),
        }
    }
}

pub struct BackendHealth {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    in_flight: AtomicU32,
    /// f64 bits of the latency EWMA in ms; `NO_VALUE` until the first success.
    latency_ewma: AtomicU64,
    consecutive_failures: AtomicU32,
    last_failure_ms: AtomicU64,
    successes: AtomicU64,
    errors: [AtomicU32; 6],
    /// f64 bits of the score the strategy asked us to keep; `NO_VALUE` when none.
    score: AtomicU64,
    score_updated_ms: AtomicU64,
    /// After a 429: not to be chosen before this time (ms since the epoch).
    cooling_until_ms: AtomicU64,
    circuit: Circuit,
}

const NO_VALUE: u64 = u64::MAX;
/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.2;

/// Everything a strategy sees of a backend, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct HealthView {
    pub circuit: CircuitView,
    pub latency_ms: Option<f64>,
    pub in_flight: u32,
    pub consecutive_failures: u32,
    pub last_failure_ms: u64,
    pub errors: [u32; 6],
    pub successes: u64,
    pub score: Option<f64>,
    pub score_updated_ms: u64,
    /// Rate-limited by its provider until this time (ms since the epoch); 0 if not.
    pub cooling_until_ms: u64,
}

impl HealthView {
    /// Whether a strategy should treat the backend as usable now: its circuit is not
    /// open and its provider has not asked us to hold off.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.circuit.healthy() && self.cooling_until_ms <= now_ms
    }
}

impl BackendHealth {
    pub fn new(provider: &str, model: &str) -> Self {
        BackendHealth {
            provider: provider.into(),
            model: model.into(),
            in_flight: AtomicU32::new(0),
            latency_ewma: AtomicU64::new(NO_VALUE),
            consecutive_failures: AtomicU32::new(0),
            last_failure_ms: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            errors: Default::default(),
            score: AtomicU64::new(NO_VALUE),
            score_updated_ms: AtomicU64::new(0),
            cooling_until_ms: AtomicU64::new(0),
            circuit: Circuit::default(),
        }
    }

    pub fn view(&self, now_ms: u64, policy: &CircuitPolicy) -> HealthView {
        let bits = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|&b| b != NO_VALUE).map(f64::from_bits);
        HealthView {
            circuit: self.circuit.view(now_ms, policy),
            latency_ms: bits(&self.latency_ewma),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_failure_ms: self.last_failure_ms.load(Ordering::Relaxed),
            errors: std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed)),
            successes: self.successes.load(Ordering::Relaxed),
            score: bits(&self.score),
            score_updated_ms: self.score_updated_ms.load(Ordering::Relaxed),
            cooling_until_ms: self.cooling_until_ms.load(Ordering::Relaxed),
        }
    }

    /// Count a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Record one attempt's outcome. Exactly one call per attempt: the relay owns this.
    pub fn record(&self, outcome: Outcome, latency_ms: f64, now_ms: u64, policy: &CircuitPolicy) {
        match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.update_latency(latency_ms);
                self.circuit.record_success(now_ms, policy);
            }
            Outcome::Failure(class) => {
                self.errors[class as usize].fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                self.last_failure_ms.store(now_ms, Ordering::Relaxed);
                // A rate limit says "not now", not "broken": it cools the backend for
                // the provider's Retry-After (`cool`) instead of opening its circuit.
                if class != ErrorClass::RateLimit && self.circuit.record_failure(now_ms, policy) {
                    tracing::warn!(provider = &*self.provider, model = &*self.model, "circuit opened");
                }
            }
            Outcome::ClientError => {}
        }
    }

    /// Hold the backend off until `until_ms` (a provider's Retry-After).
    pub fn cool(&self, until_ms: u64) {
        self.cooling_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }

    /// The part of its health the fleet shares (`crate::cluster`).
    pub fn shared(&self) -> SharedHealth {
        let (circuit, opened_ms) = self.circuit.raw();
        SharedHealth { circuit, opened_ms, cooling_until_ms: self.cooling_until_ms.load(Ordering::Relaxed) }
    }

    /// Take what another replica published.
    pub fn adopt(&self, shared: SharedHealth) {
        let (circuit, opened_ms) = self.circuit.raw();
        if (circuit, opened_ms) != (shared.circuit, shared.opened_ms) {
            self.circuit.adopt(shared.circuit, shared.opened_ms);
        }
        self.cool(shared.cooling_until_ms);
    }

    /// The kept score and when it last moved, if there is one.
    pub fn score(&self) -> Option<(f64, u64)> {
        let bits = self.score.load(Ordering::Relaxed);
        (bits != NO_VALUE).then(|| (f64::from_bits(bits), self.score_updated_ms.load(Ordering::Relaxed)))
    }

    /// Set the kept score as the fleet computed it, keeping the time it last moved.
    pub fn set_score_at(&self, score: f64, updated_ms: u64) {
        if score.is_finite() {
            self.score.store(score.to_bits(), Ordering::Relaxed);
            self.score_updated_ms.fetch_max(updated_ms, Ordering::Relaxed);
        }
    }

    pub fn set_score(&self, score: f64, now_ms: u64) {
        if score.is_finite() {
            self.score.store(score.to_bits(), Ordering::Relaxed);
            self.score_updated_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    fn update_latency(&self, sample: f64) {
        // Probes pass NaN: they count as successes but say nothing about latency.
        if !sample.is_finite() {
            return;
        }
        // A lost race between two concurrent updates drops one sample: harmless
        // for a moving average, and cheaper than a CAS loop.
        let old = self.latency_ewma.load(Ordering::Relaxed);
        let new = if old == NO_VALUE { sample } else { f64::from_bits(old) * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA };
        self.latency_ewma.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// A backend's circuit and cooling as the fleet shares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedHealth {
    /// The circuit's raw state: closed, open, or half-open + stage.
    pub circuit: u8,
    pub opened_ms: u64,
    pub cooling_until_ms: u64,
}

impl SharedHealth {
    /// Whether `self` follows from `before` by time alone (an open circuit whose
    /// cooldown ended reads as half-open): every replica makes that step itself.
    pub fn only_time_passed(&self, before: &SharedHealth) -> bool {
        before.circuit == super::circuit::OPEN
            && self.circuit == super::circuit::HALF_OPEN
            && self.opened_ms == before.opened_ms
            && self.cooling_until_ms == before.cooling_until_ms
    }

    /// `circuit,opened_ms,cooling_until_ms`.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.circuit, self.opened_ms, self.cooling_until_ms)
    }

    pub fn decode(s: &str) -> Option<SharedHealth> {
        let mut parts = s.splitn(3, ',');
        Some(SharedHealth {
            circuit: parts.next()?.parse().ok()?,
            opened_ms: parts.next()?.parse().ok()?,
            cooling_until_ms: parts.next()?.parse().ok()?,
        })
    }
}

/// Decrements the backend's in-flight count when dropped.
pub struct InFlight(Arc<BackendHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::circuit::{HALF_OPEN, OPEN};

    #[test]
    fn shared_health_round_trips_and_tells_time_from_change() {
        let open = SharedHealth { circuit: OPEN, opened_ms: 1_000, cooling_until_ms: 5 };
        assert_eq!(SharedHealth::decode(&open.encode()), Some(open));
        assert_eq!(SharedHealth::decode("1,2"), None);
        assert_eq!(SharedHealth::decode("x,1,2"), None);
        let cooled_down = SharedHealth { circuit: HALF_OPEN, ..open };
        assert!(cooled_down.only_time_passed(&open), "every replica makes that step itself");
        let reopened = SharedHealth { opened_ms: 2_000, ..open };
        assert!(!reopened.only_time_passed(&open));
        let next_stage = SharedHealth { circuit: HALF_OPEN + 1, ..open };
        assert!(!next_stage.only_time_passed(&cooled_down), "a recovery step is news");
    }

    #[test]
    fn adopting_keeps_the_longest_cooling_and_the_fleet_score_time() {
        let b = BackendHealth::new("p", "m");
        b.cool(9_000);
        b.adopt(SharedHealth { circuit: OPEN, opened_ms: 100, cooling_until_ms: 4_000 });
        assert_eq!(b.shared(), SharedHealth { circuit: OPEN, opened_ms: 100, cooling_until_ms: 9_000 });
        b.set_score(0.5, 2_000);
        b.set_score_at(0.7, 1_000);
        assert_eq!(b.score(), Some((0.7, 2_000)), "the time a score last moved never goes back");
    }
}
