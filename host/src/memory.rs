//! Giving memory back after a burst.
//!
//! glibc's allocator keeps the pages a burst freed (5,000 streams come and go, and
//! the gateway sits at ten times its idle size for good): not a leak, but an
//! operator cannot tell the difference, and the host is short of memory. A task
//! watches the open client connections and, once they have fallen well below the
//! peak since the last trim, asks the allocator to return its free pages
//! (`malloc_trim`). Trimming costs milliseconds and takes the allocator's locks,
//! so it runs only when load has dropped, never at a steady state, and never on a
//! request's path. Measured in BENCHMARKS.md (memory after bursts).

use std::sync::Weak;
use std::time::Duration;

use crate::metrics::Metrics;

/// How often the connection count is looked at.
const EVERY: Duration = Duration::from_secs(2);
/// A drop that is worth a trim: to half the peak, and by at least this many
/// connections (small swings free little).
const MIN_DROP: i64 = 64;

/// Watch `metrics` (while the gateway lives) and trim after bursts.
pub fn spawn_trimmer(metrics: Weak<Metrics>) {
    if !can_trim() {
        return;
    }
    tokio::spawn(async move {
        let mut peak = 0i64;
        // After a burst, what it leaves behind is freed over the next minutes too
        // (idle upstream connections close, buffers are dropped): trimmed again at
        // these times after it, as long as the load stays down.
        let mut follow_ups: Vec<u64> = Vec::new();
        let mut ticks = 0u64;
        loop {
            tokio::time::sleep(EVERY).await;
            ticks += 1;
            let Some(metrics) = metrics.upgrade() else { return };
            let open = metrics.open_connections.get();
            peak = peak.max(open);
            let burst_over = open <= peak / 2 && peak - open >= MIN_DROP;
            if burst_over {
                peak = open;
                follow_ups = FOLLOW_UPS.iter().map(|d| ticks + d.as_secs() / EVERY.as_secs()).collect();
            } else if open > peak / 2 {
                // Busy again: what the burst left is in use.
                follow_ups.clear();
            }
            let follow_up = follow_ups.first() == Some(&ticks);
            if follow_up {
                follow_ups.remove(0);
            }
            if burst_over || follow_up {
                let started = std::time::Instant::now();
                // Off the runtime's worker threads: it may take a while.
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(released, took_ms = started.elapsed().as_millis() as u64, "returned freed memory");
            }
        }
    });
}

/// Trims after the one at the end of a burst: soon, once the burst's idle upstream
/// connections have closed (`relay::client`: 45 s), and once more.
const FOLLOW_UPS: [Duration; 3] = [Duration::from_secs(10), Duration::from_secs(50), Duration::from_secs(100)];

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn can_trim() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn can_trim() -> bool {
    false
}

/// Return the allocator's free pages to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "one call into glibc, audited below")]
pub fn trim() -> bool {
    unsafe extern "C" {
        /// glibc: release free memory from the top of the heap and the free pages
        /// inside it, in every arena. `pad`: bytes to keep at the top.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and only touches the allocator's own
    // state, under its own locks; it is safe to call from any thread at any time.
    let released = unsafe { malloc_trim(0) };
    released == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}
