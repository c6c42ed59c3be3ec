//! `--limit-rate`: a pace for file data shared by every stream it applies to. The sender takes
//! from it before each answer goes out (all its receivers together); a receiver before each
//! read request goes out (all its data streams together), so the answers come back at that
//! pace.

use std::sync::Mutex;
use std::time::Duration;

/// Bytes reserved one piece after another on a clock that advances by bytes / rate; a piece
/// may go when the clock has caught up with the ones before it, so over any stretch longer
/// than one piece at most the rate goes, whatever the number of streams sharing the limit.
pub(crate) struct RateLimit {
    per_sec: f64,
    /// When the bytes reserved so far will have gone out at the rate.
    clock: Mutex<tokio::time::Instant>,
}

impl RateLimit {
    pub(crate) fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            per_sec: bytes_per_sec.max(1) as f64,
            clock: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits until `n` more bytes may go out (at once when the limit has been idle; nothing
    /// to send, such as a run of zeros sent as its length, never waits).
    pub(crate) async fn take(&self, n: u64) {
        if n == 0 {
            return;
        }
        let at = {
            let mut clock = self.clock.lock().expect("lock");
            let start = (*clock).max(tokio::time::Instant::now());
            *clock = start + Duration::from_secs_f64(n as f64 / self.per_sec);
            start
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_rate_holds_over_every_stream_together_and_an_idle_one_sends_at_once() {
        let limit = Arc::new(RateLimit::new(2_000_000));
        let t = std::time::Instant::now();
        limit.take(100_000).await;
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "the first goes out at once"
        );
        // Four streams, three answers of 100 kB each: 1.3 MB in all, the last reserved at
        // 1.2 MB / 2 MB/s = 0.6 s.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = limit.clone();
                tokio::spawn(async move {
                    for _ in 0..3 {
                        l.take(100_000).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            t.elapsed() >= Duration::from_millis(590),
            "{:?}",
            t.elapsed()
        );
        // Idle for longer than its reservations: the next goes out at once, with no debt.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        limit.take(1).await;
        assert!(t.elapsed() < Duration::from_millis(300));
    }
}
