//! Limits that hold however many requests arrive at once. The guess budget: an attempt is
//! reserved when a handshake with the code begins and released only when its verdict is
//! counted, and no handshake starts while failures plus handshakes in flight reach the limit,
//! so parallel handshakes can never get more verdicts than the limit allows. Streams: a bound
//! per peer and in all, so a peer cannot make the sender hold unbounded state. (The rate of
//! `--limit-rate` is [`crate::rate`].)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::Notify;

/// The guess budget of one share.
pub(crate) struct Attempts {
    limit: u32,
    /// (failures so far, handshakes in flight)
    state: Mutex<(u32, u32)>,
    /// Woken when a handshake in flight gets its verdict.
    settled: Notify,
}

/// One reserved attempt; released when dropped, unless [`failed`](Attempt::failed) counted it.
pub(crate) struct Attempt {
    attempts: Arc<Attempts>,
    settled: bool,
}

impl Attempts {
    pub(crate) fn new(limit: u32) -> Arc<Attempts> {
        Arc::new(Attempts {
            limit,
            state: Mutex::new((0, 0)),
            settled: Notify::new(),
        })
    }

    /// Reserves an attempt, waiting up to `within` for a handshake in flight to get its
    /// verdict while failures plus attempts in flight reach the limit (several receivers of a
    /// `--keep` share authenticate one after another instead of being turned away). `None`
    /// once the failures alone reach the limit, or when the wait runs out.
    pub(crate) async fn wait_reserve(self: &Arc<Self>, within: Duration) -> Option<Attempt> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a verdict between the two is not missed.
            notified.as_mut().enable();
            if self.state.lock().expect("lock").0 >= self.limit {
                return None;
            }
            if let Some(a) = self.reserve() {
                return Some(a);
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
        }
    }

    /// Reserves an attempt, or `None` while failures plus attempts in flight reach the limit.
    pub(crate) fn reserve(self: &Arc<Self>) -> Option<Attempt> {
        let mut st = self.state.lock().expect("lock");
        if st.0 + st.1 >= self.limit {
            return None;
        }
        st.1 += 1;
        Some(Attempt {
            attempts: self.clone(),
            settled: false,
        })
    }

    /// Counts a wrong guess made without a reservation (a resumption whose proof failed);
    /// returns the failures so far.
    pub(crate) fn record_failure(&self) -> u32 {
        let mut st = self.state.lock().expect("lock");
        st.0 += 1;
        st.0
    }

    /// Failed attempts so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.state.lock().expect("lock").0
    }
}

impl Attempt {
    /// Counts this attempt as a wrong guess; returns the failures so far.
    pub(crate) fn failed(mut self) -> u32 {
        self.settled = true;
        let failures = {
            let mut st = self.attempts.state.lock().expect("lock");
            st.1 -= 1;
            st.0 += 1;
            st.0
        };
        self.attempts.settled.notify_waiters();
        failures
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.attempts.state.lock().expect("lock").1 -= 1;
            self.attempts.settled.notify_waiters();
        }
    }
}

/// Streams the sender serves at once, per peer and in all.
pub(crate) struct StreamSlots {
    per_peer: usize,
    total: usize,
    /// Streams open per peer, and their sum.
    state: Mutex<(HashMap<PeerId, usize>, usize)>,
}

/// One stream's place; given back when dropped.
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    peer: PeerId,
}

impl StreamSlots {
    pub(crate) fn new(per_peer: usize, total: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            per_peer,
            total,
            state: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// A place for a new stream of `peer`, or `None` when it or everyone has too many.
    pub(crate) fn take(self: &Arc<Self>, peer: PeerId) -> Option<StreamSlot> {
        let mut st = self.state.lock().expect("lock");
        let (by_peer, all) = &mut *st;
        let mine = by_peer.entry(peer).or_insert(0);
        if *mine >= self.per_peer || *all >= self.total {
            return None;
        }
        *mine += 1;
        *all += 1;
        Some(StreamSlot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut st = self.slots.state.lock().expect("lock");
        let (by_peer, all) = &mut *st;
        *all -= 1;
        if let Some(n) = by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handshake_waits_for_a_verdict_then_takes_its_place() {
        let a = Attempts::new(3);
        let mut held: Vec<_> = (0..3).map(|_| a.reserve().expect("room")).collect();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.wait_reserve(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room until a verdict");
        drop(held.pop()); // a success gives its place back
        held.push(waiter.await.unwrap().expect("its place"));
        // Out of time while full: none.
        assert!(a.wait_reserve(Duration::from_millis(20)).await.is_none());
        // Once the failures alone reach the limit: none at once.
        for r in held {
            r.failed();
        }
        let t = std::time::Instant::now();
        assert!(a.wait_reserve(Duration::from_secs(5)).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn attempts_in_flight_count_against_the_budget() {
        let a = Attempts::new(3);
        let r: Vec<_> = (0..3).map(|_| a.reserve().expect("room")).collect();
        assert!(a.reserve().is_none(), "a fourth handshake must wait");
        let mut r = r.into_iter();
        // A handshake that ends without a verdict gives its place back ...
        drop(r.next());
        let again = a.reserve().expect("room again");
        // ... a wrong guess keeps it for good.
        assert_eq!(r.next().unwrap().failed(), 1);
        assert_eq!(again.failed(), 2);
        assert!(a.reserve().is_none());
        assert_eq!(r.next().unwrap().failed(), 3);
        assert!(a.reserve().is_none());
        assert_eq!(a.failures(), 3);
    }

    #[test]
    fn attempts_hold_under_many_threads() {
        let a = Attempts::new(3);
        let granted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..50)
                .map(|_| s.spawn(|| a.reserve().map(|r| r.failed()).is_some() as usize))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 3);
        assert_eq!(a.failures(), 3);
    }

    #[test]
    fn streams_are_bounded_per_peer_and_in_all() {
        let s = StreamSlots::new(2, 3);
        let (p, q) = (PeerId::random(), PeerId::random());
        let a = s.take(p).unwrap();
        let _b = s.take(p).unwrap();
        assert!(s.take(p).is_none());
        let _c = s.take(q).unwrap();
        assert!(s.take(q).is_none(), "3 in all");
        drop(a);
        assert!(s.take(q).is_some());
    }
}
