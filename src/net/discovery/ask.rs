//! One-shot mDNS queries (RFC 6762 §6.7, "legacy unicast"): a query sent from a port other than
//! 5353 is answered at once, by unicast to that port, whatever the responder multicast in the
//! last second. A browser's own multicast queries are not: a responder that has just announced
//! its share must wait a second before it multicasts the same records again (§6), and defers
//! answers to shared records by 20-120 ms (§6.3). A receiver started right after the sender
//! printed its code would then wait about a second. These queries are sent beside the
//! browser's, on every IPv4 interface that can multicast, a few times at growing intervals.
//!
//! Only TXT records are read from an answer (they carry the identifier, the peer id and the
//! ports); the address is the one the answer came from, which is on the link it came over.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
/// When the queries go out, from the start: fast at first, then the browser's own queries
/// (and the sender's announcements) take over.
pub(super) const SCHEDULE_MS: [u64; 6] = [0, 150, 400, 1000, 2000, 4000];
/// Compression pointers followed in one name, at most (a loop in a hostile packet ends here).
const MAX_JUMPS: usize = 16;

/// A socket for one-shot queries, and the interfaces they go out on.
pub(super) struct Asker {
    sock: UdpSocket,
    id: u16,
}

/// One answering service: its TXT properties and where the answer came from.
#[derive(Debug, PartialEq)]
pub(super) struct Answer {
    pub(super) props: HashMap<String, String>,
    pub(super) from: IpAddr,
}

impl Asker {
    pub(super) async fn new() -> std::io::Result<Asker> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        sock.set_multicast_ttl_v4(255)?;
        Ok(Asker {
            sock,
            id: rand::random::<u16>() | 1,
        })
    }

    /// Sends the query for `service` (e.g. `_pcp._udp.local.`) once on every IPv4 interface
    /// that is up and not loopback; returns how many it went out on.
    pub(super) async fn ask(&self, service: &str) -> usize {
        let query = query(self.id, service);
        let mut sent = 0;
        for ip in interfaces() {
            if set_multicast_if(&self.sock, ip).is_err() {
                continue;
            }
            if self
                .sock
                .send_to(&query, (MDNS_GROUP, MDNS_PORT))
                .await
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// The next answer to our queries (anything else that arrives is skipped).
    pub(super) async fn answer(&self) -> std::io::Result<Vec<Answer>> {
        let mut buf = vec![0u8; 9000];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await?;
            if from.port() != MDNS_PORT {
                continue;
            }
            if let Some(txts) = parse_response(&buf[..n], self.id) {
                return Ok(txts
                    .into_values()
                    .map(|props| Answer {
                        props,
                        from: from.ip(),
                    })
                    .collect());
            }
        }
    }
}

/// IPv4 addresses of the interfaces that are up, not loopback.
fn interfaces() -> Vec<Ipv4Addr> {
    let Ok(all) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Addr> = all
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.ip() {
            IpAddr::V4(v4) if !v4.is_link_local() => Some(v4),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn set_multicast_if(sock: &UdpSocket, ip: Ipv4Addr) -> std::io::Result<()> {
    let addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(ip.octets()),
    };
    // SAFETY: a valid socket and a pointer to an `in_addr` of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&addr as *const libc::in_addr).cast(),
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A standard query (id, no flags) with one question: PTR `service`, class IN.
fn query(id: u16, service: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in service.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_PTR.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads the (possibly compressed) name at `at`; returns it, lower-cased, and where the
/// record goes on after it.
fn name_at(p: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *p.get(at)? as usize;
        match len {
            0 => {
                return Some((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = (u16_at(p, at)? & 0x3fff) as usize;
            }
            l if l < 64 => {
                let label = p.get(at + 1..at + 1 + l)?;
                name.push_str(&String::from_utf8_lossy(label).to_lowercase());
                name.push('.');
                at += 1 + l;
            }
            _ => return None,
        }
    }
}

/// The TXT records of a response to query `id`, by owner name, as `key=value` properties;
/// `None` if it is not such a response.
fn parse_response(p: &[u8], id: u16) -> Option<HashMap<String, HashMap<String, String>>> {
    if u16_at(p, 0)? != id || p.get(2)? & 0x80 == 0 {
        return None;
    }
    let questions = u16_at(p, 4)?;
    let records = u16_at(p, 6)? as usize + u16_at(p, 8)? as usize + u16_at(p, 10)? as usize;
    let mut at = 12;
    for _ in 0..questions {
        at = name_at(p, at)?.1 + 4;
    }
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    for _ in 0..records {
        let (owner, after) = name_at(p, at)?;
        let ty = u16_at(p, after)?;
        let len = u16_at(p, after + 8)? as usize;
        let data = p.get(after + 10..after + 10 + len)?;
        at = after + 10 + len;
        if ty != TYPE_TXT {
            continue;
        }
        let props = out.entry(owner).or_default();
        let mut i = 0;
        while i < data.len() {
            let l = data[i] as usize;
            let Some(s) = data.get(i + 1..i + 1 + l) else {
                break;
            };
            let s = String::from_utf8_lossy(s);
            if let Some((k, v)) = s.split_once('=') {
                props.insert(k.to_string(), v.to_string());
            }
            i += 1 + l;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as mdns-sd writes it to a legacy query: the question echoed, a PTR answer,
    /// SRV, TXT and A additionals, with compressed names.
    fn response(id: u16) -> Vec<u8> {
        let mut p = query(id, "_pcp._udp.local.");
        p[2] = 0x84; // response, authoritative
        p[7] = 1; // one answer
        p[11] = 2; // two additionals
                   // PTR: owner = the question's name (pointer to 12), rdata = instance name.
        let inst = b"\x0bpcp-1-2-abc\xc0\x0c";
        p.extend_from_slice(&[0xc0, 0x0c, 0, 12, 0, 1, 0, 0, 0, 10, 0, inst.len() as u8]);
        let inst_at = p.len();
        p.extend_from_slice(inst);
        // TXT owned by the instance (pointer to it).
        let txt = b"\x06id=/x/\x08tcp=4001";
        p.extend_from_slice(&[0xc0 | (inst_at >> 8) as u8, inst_at as u8]);
        p.extend_from_slice(&[0, 16, 0x80, 1, 0, 0, 0, 10, 0, txt.len() as u8]);
        p.extend_from_slice(txt);
        // A record for some host.
        p.extend_from_slice(b"\x04host\x05local\x00");
        p.extend_from_slice(&[0, 1, 0x80, 1, 0, 0, 0, 10, 0, 4, 10, 0, 0, 1]);
        p
    }

    #[test]
    fn answers_are_read_and_anything_else_is_not() {
        let got = parse_response(&response(7), 7).unwrap();
        let props = &got["pcp-1-2-abc._pcp._udp.local."];
        assert_eq!(props["id"], "/x/");
        assert_eq!(props["tcp"], "4001");
        assert_eq!(got.len(), 1);
        // Another query's id, a query, a truncated packet, a pointer loop.
        assert!(parse_response(&response(7), 8).is_none());
        assert!(parse_response(&query(7, "_pcp._udp.local."), 7).is_none());
        let r = response(7);
        for cut in 0..r.len() {
            let _ = parse_response(&r[..cut], 7);
        }
        let mut looped = query(7, "a.");
        looped[2] = 0x84;
        looped[12] = 0xc0;
        looped[13] = 12;
        assert!(parse_response(&looped, 7).is_none());
    }
}
