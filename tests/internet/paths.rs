//! The tests: peers on the public segment, behind NATs (relay and hole punching), across a
//! slot boundary, and the ways of finding no one.

use super::*;

#[test]
fn public_peers_find_each_other_through_the_dht() {
    let src = tree(1);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("pub", 1);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Sender and receiver know different helpers: the helpers must form one DHT.
    // Listening on TCP and QUIC, as `pcp send` does by default.
    let mut s = send_dht(
        &net,
        &sender,
        &boot[..1],
        &src.path().join("share"),
        &[],
        &[TCP_ANY, QUIC_ANY],
    );
    // The receiver takes its bootstrap peers from PCP_BOOTSTRAP instead of --bootstrap.
    let mut c = receive_dht(&net, &receiver, &[], &s.code, "30s", out.path());
    c.env("PCP_BOOTSTRAP", boot[boot.len() - 1..].join(","));
    let r = run(c, 60);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    let line = found_line(&r).unwrap();
    // The receiver dials the sender's addresses from the DHT QUIC first (smart dialing), and
    // over the internet QUIC is the better transport (BBR, README's benchmarks).
    assert!(
        line.contains("direct QUIC"),
        "{line}\n{}",
        report(&net, &r, &s)
    );
    // Publication is claimed once, with the count of peers that stored the record.
    let err = s.stderr.lock().unwrap().clone();
    assert_eq!(err.matches("Published on the DHT (").count(), 1, "{err}");
    assert!(err.contains("peers stored the record)."), "{err}");
    assert!(!err.contains("Not published"), "{err}");
    eprintln!(
        "public peers: {line} (receiver ran {:.1} s)",
        r.took.as_secs_f64()
    );
}

#[test]
fn peers_behind_nat_meet_through_a_relay_and_punch_a_hole() {
    let src = tree(2);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("nat", 2);
    let boot = net.start_helpers();
    let sender = net.nat_peer("snd", 31, 1);
    let receiver = net.nat_peer("rcv", 32, 2);
    let probe = net.public_peer("probe", 40);
    let mut s = send_dht(
        &net,
        &sender,
        &boot,
        &src.path().join("share"),
        &[],
        &[TCP_ANY],
    );
    // Negative control: the sender's port on its router's public address (it listens on
    // 0.0.0.0, one port for every interface, and the router keeps ports), dialed directly by a
    // public host, leads nowhere: the router masquerades and drops unsolicited packets.
    let listen = (0..100)
        .find_map(|_| {
            let found = s.stderr.lock().unwrap().lines().find_map(|l| {
                let a = l.strip_prefix("Listening on /ip4/")?;
                let port = a.split('/').skip_while(|p| *p != "tcp").nth(1)?;
                Some(port.to_string())
            });
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
        .unwrap_or_else(|| panic!("sender printed no address: {}", s.stderr.lock().unwrap()));
    let outside = format!("/ip4/{}/tcp/{listen}", net.public_ip(31));
    let nowhere = tempfile::tempdir().unwrap();
    let mut c = net.pcp(&probe);
    c.args(["receive", "--discovery", "none", "--peer", &outside])
        .args(["--yes", "--no-progress", "--wait", "3s", "--out"])
        .arg(nowhere.path())
        .arg(&s.code);
    let p = run(c, 10);
    assert!(
        p.code == Some(1) && p.stderr.contains("no sender found for this code within"),
        "a direct dial to {outside} from outside the NAT did not fail as expected \
         (exit {:?}): {}",
        p.code,
        p.stderr
    );
    let r = run(
        receive_dht(&net, &receiver, &boot, &s.code, "30s", out.path()),
        60,
    );
    eprintln!("--- NAT receiver stderr:\n{}", r.stderr);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    let line = found_line(&r).unwrap();
    // Neither private host is reachable from outside, and the routers drop unsolicited
    // packets: a direct connection to the sender's router address exists only if both sides
    // punched a hole, which they could coordinate only over the relay.
    let router = format!("/ip4/{}/", net.public_ip(31));
    assert!(
        line.contains("direct") && !line.contains("relayed") && !line.contains("p2p-circuit"),
        "not upgraded to a direct connection: {line}\n{}",
        report(&net, &r, &s)
    );
    assert!(
        line.contains(&router),
        "direct connection not to the sender's router {router}: {line}\n{}",
        report(&net, &r, &s)
    );
    eprintln!(
        "behind NAT: {line} (receiver ran {:.1} s)",
        r.took.as_secs_f64()
    );
}

/// Unix seconds as the shifted clock of a pcp with PCP_CLOCK_OFFSET_SECS=offset reads them.
fn shifted_now(offset: i64) -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + offset as f64
}

#[test]
fn a_sender_started_before_a_slot_boundary_is_found_after_it() {
    const SLOT: i64 = 300;
    let src = tree(3);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("slot", 3);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Shift the clock so that the sender starts 2-3 s before the end of its time slot.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let offset = (SLOT - 3) - now.rem_euclid(SLOT);
    let env = [("PCP_CLOCK_OFFSET_SECS", offset.to_string())];
    let started = shifted_now(offset);
    let sender_slot = (started as i64).div_euclid(SLOT);
    let mut s = send_dht(
        &net,
        &sender,
        &boot,
        &src.path().join("share"),
        &env,
        &[TCP_ANY],
    );
    let printed = shifted_now(offset);
    // Wait until 2 s into the next slot (by the same shifted clock).
    while (shifted_now(offset) as i64).div_euclid(SLOT) == sender_slot
        || (shifted_now(offset) as i64).rem_euclid(SLOT) < 2
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The premise: the sender announced itself in the old slot. pcp says so at -v (a wording
    // this test does not insist on: it only reports whether it saw it).
    let published_before = s.stderr.lock().unwrap().contains("Published on the DHT");
    let receiver_slot = (shifted_now(offset) as i64).div_euclid(SLOT);
    assert_eq!(receiver_slot, sender_slot + 1);
    let mut c = receive_dht(&net, &receiver, &boot, &s.code, "30s", out.path());
    c.env("PCP_CLOCK_OFFSET_SECS", offset.to_string());
    let r = run(c, 60);
    assert_transferred(&net, &r, &mut s, src.path(), out.path());
    eprintln!(
        "slot boundary: sender started {:.1} s and printed its code {:.1} s before the boundary \
         (published on the DHT before it: {published_before}); receiver found it in the next \
         slot in {:.1} s",
        ((sender_slot + 1) * SLOT) as f64 - started,
        ((sender_slot + 1) * SLOT) as f64 - printed,
        r.took.as_secs_f64()
    );
}

#[test]
fn a_receiver_that_finds_no_one_gives_up_clearly() {
    let src = tree(4);
    let out = tempfile::tempdir().unwrap();
    let mut net = Net::new("none", 4);
    let boot = net.start_helpers();
    let sender = net.public_peer("snd", 21);
    let receiver = net.public_peer("rcv", 22);
    // Someone shares on the DHT, but under another code (no word in common).
    let mut c = net.pcp(&sender);
    c.env_remove("PCP_BOOTSTRAP")
        .args(["send", "-v", "--discovery", "dht"])
        .args(bootstrap_args(&boot))
        .args(["--listen", "/ip4/0.0.0.0/tcp/0", "--no-progress"])
        .args(["--code", "bubble-enemy-result-increase"])
        .arg(src.path().join("share"));
    let s = Sending::start(c);
    let r = run(
        receive_dht(
            &net,
            &receiver,
            &boot,
            "abandon-ability-able-about",
            "8s",
            out.path(),
        ),
        60,
    );
    assert_eq!(r.code, Some(1), "{}", report(&net, &r, &s));
    assert!(
        r.stderr.contains("no sender found for this code within"),
        "{}",
        report(&net, &r, &s)
    );
    assert!(r.stdout.is_empty(), "{}", report(&net, &r, &s));
    assert!(
        r.took >= Duration::from_secs(7) && r.took < Duration::from_secs(20),
        "gave up after {:.1} s with --wait 8s\n{}",
        r.took.as_secs_f64(),
        report(&net, &r, &s)
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    eprintln!("no sender: gave up after {:.1} s", r.took.as_secs_f64());
}

#[test]
fn a_sender_that_reaches_no_dht_peer_says_so_once() {
    let src = tree(5);
    let mut net = Net::new("lone", 5);
    let sender = net.public_peer("snd", 21);
    // The only bootstrap peer is an address on this network where no one answers.
    let nobody = format!("/ip4/{}/tcp/4001", net.public_ip(99));
    let s = send_dht(
        &net,
        &sender,
        &[nobody],
        &src.path().join("share"),
        &[],
        &[TCP_ANY],
    );
    let said = |s: &Sending| {
        s.stderr
            .lock()
            .unwrap()
            .contains("Not published on the DHT")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !said(&s) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = s.stderr.lock().unwrap().clone();
    assert!(said(&s), "{err}");
    assert_eq!(err.matches("Not published on the DHT").count(), 1, "{err}");
    assert!(!err.contains("Published on the DHT ("), "{err}");
    // --discovery dht: nothing claims that mDNS takes over.
    assert!(!err.contains("mDNS"), "{err}");
    drop(s);
}
