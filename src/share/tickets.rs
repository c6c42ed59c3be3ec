//! Resumption tickets the sender has issued: one per receiver that authenticated with the code,
//! so a receiver (a mount above all) that lost its connection can come back without the code.
//! A ticket belongs to one peer, and expires once no session has used it for
//! [`TICKET_IDLE`]: a stolen ticket is worth little, and a share that runs for days does not
//! keep every receiver's door open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::crypto::ResumeTicket;

/// How long a ticket stays valid while no session uses it.
pub const TICKET_IDLE: Duration = Duration::from_secs(3600);

/// Why a resumption was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No such ticket, or it belongs to another peer.
    Unknown,
    /// The ticket was unused for longer than the idle limit.
    Expired,
}

struct Entry {
    peer: PeerId,
    ticket: ResumeTicket,
    /// Sessions open with this ticket (the first one and resumptions).
    active: u32,
    /// When the last session with this ticket ended.
    idle_since: Instant,
}

pub(super) struct Tickets {
    idle: Duration,
    by_id: Mutex<HashMap<[u8; 16], Entry>>,
}

impl Tickets {
    pub(super) fn new(idle: Duration) -> Tickets {
        Tickets {
            idle,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Records the ticket of a session that authenticated with the code; that session uses it.
    pub(super) fn issue(&self, peer: PeerId, ticket: ResumeTicket) {
        let id = ticket.session;
        self.by_id.lock().expect("lock").insert(
            id,
            Entry {
                peer,
                ticket,
                active: 1,
                idle_since: Instant::now(),
            },
        );
    }

    /// The ticket `id` for a resumption by `peer`, counted as in use until [`end`](Self::end).
    pub(super) fn resume(&self, id: &[u8], peer: PeerId) -> Result<ResumeTicket, Refusal> {
        let mut map = self.by_id.lock().expect("lock");
        let Some(e) = map.get_mut(id).filter(|e| e.peer == peer) else {
            return Err(Refusal::Unknown);
        };
        if e.active == 0 && e.idle_since.elapsed() > self.idle {
            map.remove(id);
            return Err(Refusal::Expired);
        }
        e.active += 1;
        Ok(e.ticket.clone())
    }

    /// A session that used ticket `id` ended (whether it authenticated with the code or
    /// resumed).
    pub(super) fn end(&self, id: &[u8]) {
        if let Some(e) = self.by_id.lock().expect("lock").get_mut(id) {
            e.active = e.active.saturating_sub(1);
            if e.active == 0 {
                e.idle_since = Instant::now();
            }
        }
    }

    /// Forgets every ticket of `peer` (it finished or declined: it will not come back).
    pub(super) fn forget(&self, peer: PeerId) {
        self.by_id
            .lock()
            .expect("lock")
            .retain(|_, e| e.peer != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(b: u8) -> ResumeTicket {
        ResumeTicket {
            session: [b; 16],
            secret: [b; 32],
        }
    }

    #[test]
    fn a_ticket_is_for_its_peer_only_and_expires_when_unused() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Tickets::new(Duration::from_millis(50));
        t.issue(a, ticket(1));
        assert_eq!(t.resume(&[1; 16], b).unwrap_err(), Refusal::Unknown);
        assert_eq!(t.resume(&[2; 16], a).unwrap_err(), Refusal::Unknown);
        // In use (the first session is still open): never expires.
        std::thread::sleep(Duration::from_millis(80));
        assert!(t.resume(&[1; 16], a).is_ok());
        t.end(&[1; 16]);
        t.end(&[1; 16]);
        // Idle, but not for long.
        assert!(t.resume(&[1; 16], a).is_ok());
        t.end(&[1; 16]);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.resume(&[1; 16], a).unwrap_err(), Refusal::Expired);
        assert_eq!(t.resume(&[1; 16], a).unwrap_err(), Refusal::Unknown);
        t.issue(b, ticket(3));
        t.forget(b);
        assert_eq!(t.resume(&[3; 16], b).unwrap_err(), Refusal::Unknown);
    }
}
