//! The circuit breaker of one backend: closed → open → half-open (recovering through
//! stages of its weight) → closed.
//!
//! Readers on the hot path see the state through atomics; the small mutex is taken
//! only to record a failure or a success while not fully closed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// Share of its weight a recovering backend gets, stage by stage.
pub const RECOVERY_STAGES: [f64; 3] = [0.1, 0.3, 0.5];

/// Thresholds, from `[settings]`.
#[derive(Debug, Clone, Copy)]
pub struct CircuitPolicy {
    pub threshold: u32,
    pub window: Duration,
    pub cooldown: Duration,
    /// Successes that advance a recovering backend to the next stage.
    pub successes_per_stage: u32,
}

/// What a reader sees of a circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CircuitView {
    Closed,
    Open,
    /// Recovering: stage index into [`RECOVERY_STAGES`].
    HalfOpen {
        stage: u8,
    },
}

impl CircuitView {
    pub fn healthy(self) -> bool {
        !matches!(self, CircuitView::Open)
    }

    /// The share of its weight the backend should get now.
    pub fn recovery_factor(self) -> f64 {
        match self {
            CircuitView::Closed => 1.0,
            CircuitView::Open => 0.0,
            CircuitView::HalfOpen { stage } => RECOVERY_STAGES.get(stage as usize).copied().unwrap_or(1.0),
        }
    }
}

pub const CLOSED: u8 = 0;
pub const OPEN: u8 = 1;
// HALF_OPEN + stage
pub const HALF_OPEN: u8 = 2;

pub struct Circuit {
    /// CLOSED, OPEN, or HALF_OPEN + stage.
    state: AtomicU8,
    /// When the circuit last opened, ms since the epoch.
    opened_ms: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Failure times (ms) within the window, while closed.
    failures: VecDeque<u64>,
    /// Successes in the current recovery stage.
    stage_successes: u32,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit { state: AtomicU8::new(CLOSED), opened_ms: AtomicU64::new(0), inner: Mutex::new(Inner::default()) }
    }
}

impl Circuit {
    /// The state now. An open circuit whose cooldown has passed reads as half-open
    /// (and becomes so), so recovery needs no timer.
    pub fn view(&self, now_ms: u64, policy: &CircuitPolicy) -> CircuitView {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitView::Closed,
            OPEN => {
                let opened = self.opened_ms.load(Ordering::Acquire);
                if now_ms.saturating_sub(opened) >= policy.cooldown.as_millis() as u64 {
                    // Losing this race to a concurrent failure (which re-opened) is fine.
                    let _ = self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire);
                    self.view_raw()
                } else {
                    CircuitView::Open
                }
            }
            s => CircuitView::HalfOpen { stage: s - HALF_OPEN },
        }
    }

    fn view_raw(&self) -> CircuitView {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitView::Closed,
            OPEN => CircuitView::Open,
            s => CircuitView::HalfOpen { stage: s - HALF_OPEN },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn record_success(&self, now_ms: u64, policy: &CircuitPolicy) {
        let CircuitView::HalfOpen { stage } = self.view(now_ms, policy) else { return };
        let mut inner = self.lock();
        inner.stage_successes += 1;
        if inner.stage_successes >= policy.successes_per_stage.max(1) {
            inner.stage_successes = 0;
            let next = stage as usize + 1;
            if next >= RECOVERY_STAGES.len() {
                inner.failures.clear();
                self.state.store(CLOSED, Ordering::Release);
            } else {
                self.state.store(HALF_OPEN + next as u8, Ordering::Release);
            }
        }
    }

    /// Record a failure; returns true when this failure opened the circuit.
    pub fn record_failure(&self, now_ms: u64, policy: &CircuitPolicy) -> bool {
        let view = self.view(now_ms, policy);
        let mut inner = self.lock();
        match view {
            CircuitView::Open => false,
            CircuitView::HalfOpen { .. } => {
                // A failure while recovering re-opens at once.
                inner.stage_successes = 0;
                self.open(now_ms);
                true
            }
            CircuitView::Closed => {
                let window = policy.window.as_millis() as u64;
                while inner.failures.front().is_some_and(|&t| now_ms.saturating_sub(t) > window) {
                    inner.failures.pop_front();
                }
                inner.failures.push_back(now_ms);
                if inner.failures.len() as u32 >= policy.threshold {
                    inner.failures.clear();
                    self.open(now_ms);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The raw state (CLOSED, OPEN, or HALF_OPEN + stage) and when it last opened:
    /// what the fleet shares.
    pub fn raw(&self) -> (u8, u64) {
        (self.state.load(Ordering::Acquire), self.opened_ms.load(Ordering::Acquire))
    }

    /// Take a state another replica published; local counting starts over.
    pub fn adopt(&self, state: u8, opened_ms: u64) {
        let state = state.min(HALF_OPEN + RECOVERY_STAGES.len() as u8 - 1);
        let mut inner = self.lock();
        inner.failures.clear();
        inner.stage_successes = 0;
        self.opened_ms.store(opened_ms, Ordering::Release);
        self.state.store(state, Ordering::Release);
    }

    fn open(&self, now_ms: u64) {
        self.opened_ms.store(now_ms, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            threshold: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            successes_per_stage: 2,
        }
    }

    #[test]
    fn opens_after_exactly_threshold_failures_in_window() {
        let c = Circuit::default();
        let p = policy();
        assert!(!c.record_failure(1_000, &p));
        assert!(!c.record_failure(2_000, &p));
        assert_eq!(c.view(2_000, &p), CircuitView::Closed);
        assert!(c.record_failure(3_000, &p));
        assert_eq!(c.view(3_000, &p), CircuitView::Open);
    }

    #[test]
    fn an_adopted_state_starts_local_counting_over() {
        let c = Circuit::default();
        let p = policy();
        c.record_failure(1_000, &p);
        c.record_failure(1_100, &p);
        // Another replica opened it at 2_000: open here too, with its cooldown.
        c.adopt(OPEN, 2_000);
        assert_eq!(c.view(2_500, &p), CircuitView::Open);
        assert_eq!(c.view(32_000, &p), CircuitView::HalfOpen { stage: 0 });
        // …and closed it: the two earlier failures here no longer count.
        c.adopt(CLOSED, 0);
        assert!(!c.record_failure(33_000, &p));
        assert_eq!(c.view(33_000, &p), CircuitView::Closed);
        // A stage beyond the last is read as the last.
        c.adopt(HALF_OPEN + 9, 0);
        assert_eq!(c.view(33_000, &p), CircuitView::HalfOpen { stage: 2 });
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let c = Circuit::default();
        let p = policy();
        c.record_failure(0, &p);
        c.record_failure(1_000, &p);
        assert!(!c.record_failure(70_000, &p));
        assert_eq!(c.view(70_000, &p), CircuitView::Closed);
    }

    #[test]
    fn recovers_through_stages_and_reopens_on_failure() {
        let c = Circuit::default();
        let p = policy();
        for t in 0..3 {
            c.record_failure(t, &p);
        }
        assert_eq!(c.view(29_000, &p), CircuitView::Open);
        assert_eq!(c.view(31_000, &p), CircuitView::HalfOpen { stage: 0 });
        assert_eq!(c.view(31_000, &p).recovery_factor(), 0.1);
        c.record_success(31_000, &p);
        c.record_success(31_000, &p);
        assert_eq!(c.view(31_000, &p).recovery_factor(), 0.3);
        c.record_success(31_000, &p);
        c.record_success(31_000, &p);
        assert_eq!(c.view(31_000, &p).recovery_factor(), 0.5);
        assert!(c.record_failure(32_000, &p));
        assert_eq!(c.view(32_000, &p), CircuitView::Open);
        assert_eq!(c.view(62_000, &p), CircuitView::HalfOpen { stage: 0 });
        for _ in 0..6 {
            c.record_success(62_000, &p);
        }
        assert_eq!(c.view(62_000, &p), CircuitView::Closed);
    }
}
