//! Busy polling after an answer, as the kernel's `busy_poll` does for sockets: a reader that
//! asks for one block at a time (a mount's random reads, a file manager opening files) sends
//! its next request a fraction of a millisecond after the answer, and a runtime that went to
//! sleep in between must be woken for it: on a VM that is a halted vCPU woken through the
//! host, 30-45 µs, on bare metal a deep C-state. So after each answer the runtime's worker keeps
//! polling for [`LINGER`] (one task yielding, which makes the worker check its sockets without
//! sleeping) before it sleeps. Other tasks run as usual meanwhile; an idle runtime polls for
//! at most [`LINGER`] after its last answer, and only answers of at most [`LINGER_AFTER`]
//! bytes start it. Both peers use it: the sender after it answers a request, the mount after
//! it answers a read that waited for the sender (its runtime reads the kernel's requests
//! itself, so polling there catches both the next read and the sender's answer).
//!
//! A polling worker gives its CPU away at every turn ([`Linger::turn`]). The reader, woken by the
//! answer, usually lands on a CPU where a worker is polling, and the kernel's scheduler (EEVDF)
//! lets a running task finish its slice before a woken one preempts it. Without the yield, 1
//! read in 20 to 1 in 100 of the mount's random 4 KiB reads waited about that long: a 99th
//! percentile of 707-764 µs against a median of 89-121 µs (`scripts/BENCHMARKS.md`). And
//! when a turn shows the CPU busy with other work, polling stops for a while ([`BACK_OFF`]):
//! there it only takes turns with that work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the worker keeps polling after an answer.
pub(crate) const LINGER: Duration = Duration::from_micros(300);

/// Answers carrying more bytes than this are not followed by polling. Big answers are a bulk
/// transfer's, whose next requests are already on their way and whose receiver needs every
/// cycle of a shared core (polling there cost a 1 GiB receive on 2 cores 4%).
pub(crate) const LINGER_AFTER: usize = 64 * 1024;

/// A turn given away for at least this long went to another task's time slice (about 0.7 ms
/// here): the CPU has other work, and polling on would only take turns with it, while a thread
/// that sleeps gets the CPU back at once when its socket wakes it. The reader's own turns
/// between reads, and the other peer's, take tens of µs.
const BUSY_CPU: Duration = Duration::from_micros(300);

/// After the CPU was found busy, no polling for this long at first, twice as long each time
/// it is found busy again, up to [`BACK_OFF_MAX`]; a polling spell that runs its course
/// without finding it busy starts over from here. So a moment of other work (a process
/// starting, a flush) costs a mount's reads 10 ms of polling, and a CPU that stays busy sees a
/// try about once a second. With two CPU-bound programs beside a mount's random reads,
/// polling again after a fixed 20 ms gave 1,733-2,642 IOPS, after 250 ms 2,643-3,232, and no
/// polling at all 2,929-3,064 (polling without this check: 487-4,039, and 1,495-2,639
/// spinning without yielding).
const BACK_OFF: Duration = Duration::from_millis(10);
const BACK_OFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Linger {
    base: Instant,
    /// Until when to poll, in µs since `base`.
    until: AtomicU64,
    /// Whether the polling task runs.
    running: AtomicBool,
    /// No polling before this, in µs since `base`: the CPU was found busy with other work.
    quiet_until: AtomicU64,
    /// The next back-off, µs.
    back_off: AtomicU64,
}

impl Linger {
    pub(crate) fn new() -> Arc<Linger> {
        Arc::new(Linger {
            base: Instant::now(),
            until: AtomicU64::new(0),
            running: AtomicBool::new(false),
            quiet_until: AtomicU64::new(0),
            back_off: AtomicU64::new(BACK_OFF.as_micros() as u64),
        })
    }

    /// Whether polling is worth it now: not while backing off from a busy CPU.
    pub(crate) fn may_poll(&self) -> bool {
        self.now() >= self.quiet_until.load(Ordering::Acquire)
    }

    /// One turn of a polling loop: gives the CPU away ([`yield_cpu`]) and says whether to go
    /// on polling. When the CPU went to other work for a while (a build, a video decoder,
    /// another program polling), it says no, and [`may_poll`](Self::may_poll) says no for a
    /// while ([`BACK_OFF`], growing while the CPU stays busy): on a busy CPU a poller only
    /// takes turns with that work, and misses the quick wake-up the scheduler gives a thread
    /// that slept.
    pub(crate) fn turn(&self) -> bool {
        self.after_yield(yield_cpu())
    }

    fn after_yield(&self, took: Duration) -> bool {
        if took < BUSY_CPU {
            return true;
        }
        let max = BACK_OFF_MAX.as_micros() as u64;
        let back_off = self
            .back_off
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b * 2).min(max))
            })
            .unwrap_or(max);
        self.quiet_until
            .fetch_max(self.now() + back_off, Ordering::AcqRel);
        false
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// An answer went out: poll until [`LINGER`] from now (one task, however many answers),
    /// unless the CPU was recently found busy.
    pub(crate) fn answered(self: &Arc<Self>) {
        if !self.may_poll() {
            return;
        }
        self.until
            .fetch_max(self.now() + LINGER.as_micros() as u64, Ordering::AcqRel);
        if !self.running.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.poll().await });
        }
    }

    async fn poll(&self) {
        loop {
            while self.now() < self.until.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
                if !self.turn() {
                    self.running.store(false, Ordering::Release);
                    return;
                }
            }
            // A spell that ran its course: the next busy CPU backs off briefly again.
            self.back_off
                .store(BACK_OFF.as_micros() as u64, Ordering::Release);
            self.running.store(false, Ordering::Release);
            // An answer that came after the last look and saw this task running started none.
            if self.now() >= self.until.load(Ordering::Acquire)
                || self.running.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    #[cfg(test)]
    fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// Lets any other task that is ready to run on this CPU go first (`sched_yield`); returns at
/// once when there is none. For loops that poll: a thread woken meanwhile (the reader an answer
/// just woke, a worker of the other peer) runs now, not after the poller's time slice. Returns
/// how long the CPU was away.
fn yield_cpu() -> Duration {
    let t = Instant::now();
    // SAFETY: sched_yield takes no arguments and touches no memory of ours.
    unsafe { libc::sched_yield() };
    t.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn that gave the CPU away for a time slice stops the polling and keeps answers
    /// from starting it for a while; short turns (the reader, the other peer) do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_busy_cpu_stops_the_polling_for_a_while() {
        let l = Linger::new();
        assert!(l.after_yield(Duration::from_micros(20)));
        assert!(l.may_poll());
        assert!(!l.after_yield(BUSY_CPU));
        assert!(!l.may_poll());
        l.answered();
        assert!(!l.running(), "an answer started polling on a busy CPU");
        let t = Instant::now();
        while !l.may_poll() {
            assert!(t.elapsed() < Duration::from_secs(5), "still backing off");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(t.elapsed() >= BACK_OFF - Duration::from_millis(5));
        // Found busy again: twice as long.
        assert!(!l.after_yield(BUSY_CPU));
        let quiet = l.quiet_until.load(Ordering::Acquire) - l.now();
        assert!(quiet > BACK_OFF.as_micros() as u64 * 3 / 2, "{quiet} µs");
        l.quiet_until.store(0, Ordering::Release);
        l.answered();
        assert!(l.running());
        // A spell that runs its course starts the back-off over.
        while l.running() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if l.may_poll() {
            assert_eq!(
                l.back_off.load(Ordering::Acquire),
                BACK_OFF.as_micros() as u64
            );
        }
    }

    /// Answers keep the worker polling until [`LINGER`] after the last of them, then it stops;
    /// a later answer starts it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn polls_for_a_while_after_the_last_answer_then_stops() {
        let l = Linger::new();
        assert!(!l.running());
        for _ in 0..2 {
            for _ in 0..100 {
                l.answered();
            }
            // Timed from after the last answer: it cannot have stopped before LINGER.
            let t = Instant::now();
            while l.running() {
                assert!(t.elapsed() < Duration::from_secs(5), "still polling");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let until = Duration::from_micros(l.until.load(Ordering::Acquire));
            // Other tests share the CPUs: a turn that found them busy ends the polling early,
            // as it should; otherwise it ran to its time.
            assert!(
                l.base.elapsed() >= until || !l.may_poll(),
                "stopped before its time"
            );
            l.quiet_until.store(0, Ordering::Release);
        }
    }
}
