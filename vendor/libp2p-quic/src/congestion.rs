// pcp: this file is not part of libp2p-quic 0.14.0 (see PCP-PATCH.md).
//
//! quinn's BBR with its window held to BBR's gains (2.885 in start-up, then 2) times the
//! bandwidth-delay product that the acknowledgements show.
//!
//! quinn's BBR (documented as experimental) estimates the bottleneck rate from the gap between
//! two consecutive acknowledgements and two consecutive sends, and keeps the largest such
//! estimate for ten round trips. Acknowledgements that arrive bunched make that estimate
//! several times the real rate, its window (twice the estimate times the minimum round trip)
//! follows, and quinn paces at 1.25 windows per round trip: the flow overruns any router queue
//! smaller than its window. On an emulated 50 ms path of 200 Mbit/s with a one-BDP queue, a
//! third of its packets were dropped (TCP: 4%). Here the rate is measured over whole round
//! trips instead (bytes acknowledged over at least the minimum round trip of the last 10 s),
//! and the window is at most BBR's gain times that rate times that round trip. BBR's own
//! behaviour (start-up, drain, probing, ignoring random loss) is otherwise untouched.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{BbrConfig, Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// The window is at most this many bandwidth-delay products once the pipe is full: BBR's
/// `cwnd_gain`.
const GAIN: f64 = 2.0;
/// ... and this many before, while the measured rate still grows by a quarter or more per round
/// trip: BBR's start-up gain (2 / ln 2), so the cap never slows BBR's start-up.
const STARTUP_GAIN: f64 = 2.885;
/// The pipe is full after this many round trips without the rate growing by a quarter (BBR's
/// full-bandwidth test).
const FULL_ROUNDS: u32 = 3;
/// Round-trip rate samples kept; the window follows the largest.
const SAMPLES: usize = 10;
/// How long a minimum round trip is trusted (BBR's `min_rtt` filter).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

/// Builds [`CappedBbr`] controllers around quinn's BBR with its default configuration.
#[derive(Debug, Default)]
pub(crate) struct CappedBbrConfig {
    bbr: Arc<BbrConfig>,
}

impl ControllerFactory for CappedBbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let bbr = self.bbr.clone().build(now, current_mtu);
        Box::new(CappedBbr {
            floor: bbr.initial_window(),
            bbr,
            rate: RoundRate::default(),
        })
    }
}

/// quinn's BBR, its window capped by [`RoundRate`].
pub(crate) struct CappedBbr {
    bbr: Box<dyn Controller>,
    /// The cap never goes below BBR's first window.
    floor: u64,
    rate: RoundRate,
}

/// The delivery rate over whole round trips: the bytes acknowledged from one sample's start
/// until at least one minimum round trip later, divided by that time.
#[derive(Clone, Debug, Default)]
struct RoundRate {
    start: Option<Instant>,
    bytes: u64,
    /// The smallest round trip seen in the last [`MIN_RTT_WINDOW`] (BBR's filter: its
    /// ProbeRTT drains the queue that often), and when it was seen; a path whose round trip
    /// grows is followed within that time.
    min_rtt: Option<(Duration, Instant)>,
    /// Bytes per second of the last [`SAMPLES`] round trips.
    samples: VecDeque<u64>,
    /// BBR's full-bandwidth test: the rate at the last growth by a quarter, the round trips
    /// since, and whether [`FULL_ROUNDS`] have passed.
    full_rate: u64,
    full_count: u32,
    full: bool,
}

impl RoundRate {
    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        let rtt = now.saturating_duration_since(sent);
        match self.min_rtt {
            Some((min, at)) if rtt > min && now.saturating_duration_since(at) < MIN_RTT_WINDOW => {}
            _ => self.min_rtt = Some((rtt, now)),
        }
        let min_rtt = self.min_rtt.map(|(m, _)| m).unwrap_or_default();
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        self.bytes += bytes;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < min_rtt || elapsed.is_zero() {
            return;
        }
        let rate = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
        // A round with too little data to send says nothing about the path, unless it is
        // faster than anything seen.
        if !app_limited || rate > self.max().unwrap_or(0) {
            if self.samples.len() == SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(rate);
        }
        if !app_limited && !self.full {
            if rate as f64 >= self.full_rate as f64 * 1.25 {
                self.full_rate = rate;
                self.full_count = 0;
            } else {
                self.full_count += 1;
                self.full = self.full_count >= FULL_ROUNDS;
            }
        }
        self.start = Some(now);
        self.bytes = 0;
    }

    fn max(&self) -> Option<u64> {
        self.samples.iter().copied().max()
    }

    /// The most the window should be, once a round trip has been measured.
    fn cap(&self) -> Option<u64> {
        let rate = self.max()?;
        let (min_rtt, _) = self.min_rtt?;
        let gain = if self.full { GAIN } else { STARTUP_GAIN };
        Some((gain * rate as f64 * min_rtt.as_secs_f64()) as u64)
    }
}

impl Controller for CappedBbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.bbr.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.rate.on_ack(now, sent, bytes, app_limited);
        self.bbr.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.bbr
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.bbr
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.bbr.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        let w = self.bbr.window();
        match self.rate.cap() {
            Some(cap) => w.min(cap.max(self.floor)),
            None => w,
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.bbr.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(CappedBbr {
            bbr: self.bbr.clone_box(),
            floor: self.floor,
            rate: self.rate.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.bbr.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
