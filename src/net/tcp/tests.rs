//! Tests of the TCP transport's TLS and of the vendored yamux under it.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// A yamux client over `io`, one stream opened on it, and the task that drives it.
async fn client_stream(
    io: tokio::io::DuplexStream,
) -> (yamux::Stream, tokio::task::JoinHandle<bool>) {
    let mut client =
        yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Client);
    let out = futures::future::poll_fn(|cx| client.poll_new_outbound(cx))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        futures::future::poll_fn(|cx| client.poll_next_inbound(cx))
            .await
            .is_none()
    });
    (out, drive)
}

/// The yamux under the TCP transport is vendor/yamux (PCP-PATCH.md): a stream grants its
/// remote 2 MiB of credit as soon as it is read, not the specification's 256 KiB, so a
/// sender on a lossy long path is not held to 256 KiB a stream while auto-tuning catches
/// up. Here the receiving side reads one byte and then nothing: the sender must still get
/// 2 MiB out (an unpatched yamux blocks it after 256 KiB).
#[tokio::test]
async fn a_yamux_stream_grants_two_mib_at_once() {
    let (a, b) = tokio::io::duplex(8 << 20);
    let (mut out, drive_client) = client_stream(a).await;
    let cfg = yamux::Config::default();
    let mut server = yamux::Connection::new(b.compat(), cfg, yamux::Mode::Server);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let drive_server = tokio::spawn(async move {
        let mut s = futures::future::poll_fn(|cx| server.poll_next_inbound(cx))
            .await
            .unwrap()
            .unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        let _ = tx.send(s);
        futures::future::poll_fn(|cx| server.poll_next_inbound(cx))
            .await
            .is_none()
    });
    out.write_all(b"x").await.unwrap();
    out.flush().await.unwrap();
    let _held = rx.await.unwrap();
    let piece = vec![7u8; 64 << 10];
    let window = 2 << 20;
    let mut sent = 1;
    while sent < window {
        let n = piece.len().min(window - sent);
        let w = tokio::time::timeout(Duration::from_secs(5), out.write_all(&piece[..n])).await;
        assert!(w.is_ok(), "blocked after {sent} bytes");
        sent += n;
    }
    // And not a byte more: the window is what was granted.
    let more = tokio::time::timeout(Duration::from_millis(300), out.write_all(b"y")).await;
    assert!(more.is_err(), "wrote past the granted window");
    drive_client.abort();
    drive_server.abort();
}

/// vendor/yamux reads a frame into the body of one read before (PCP-PATCH.md): frames of
/// every length, on two streams read in pieces of odd sizes, still arrive byte for byte,
/// whatever the kept body held before.
#[tokio::test]
async fn yamux_frames_in_kept_bodies_arrive_intact() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut client =
        yamux::Connection::new(a.compat(), yamux::Config::default(), yamux::Mode::Client);
    let mut outs = Vec::new();
    for _ in 0..2 {
        outs.push(
            futures::future::poll_fn(|cx| client.poll_new_outbound(cx))
                .await
                .unwrap(),
        );
    }
    let drive_client = tokio::spawn(async move {
        futures::future::poll_fn(|cx| client.poll_next_inbound(cx))
            .await
            .is_none()
    });
    let mut server =
        yamux::Connection::new(b.compat(), yamux::Config::default(), yamux::Mode::Server);
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let drive_server = tokio::spawn(async move {
        while let Some(Ok(s)) = futures::future::poll_fn(|cx| server.poll_next_inbound(cx)).await {
            let _ = tx.send(s).await;
        }
    });
    // Stream `k` carries bytes `(i * 31 + k) mod 251` in writes of 1 byte to 128 KiB + 1.
    let total = 3 << 20;
    let pattern = |k: usize, i: usize| ((i * 31 + k) % 251) as u8;
    let mut writers = Vec::new();
    for (k, mut out) in outs.into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let data: Vec<u8> = (0..total).map(|i| pattern(k, i)).collect();
            let (mut at, mut n) = (0, 1);
            while at < total {
                let end = (at + n).min(total);
                out.write_all(&data[at..end]).await.unwrap();
                out.flush().await.unwrap();
                at = end;
                n = n * 7 % ((128 << 10) + 2) + 1;
            }
            out
        }));
    }
    for _ in 0..2 {
        let mut s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.unwrap();
        let k = (0..2).find(|&k| pattern(k, 0) == first[0]).unwrap();
        let mut got = vec![first[0]];
        let mut piece = vec![0u8; 40_000 + 17 * k];
        while got.len() < total {
            let want = piece.len().min(total - got.len());
            let n = s.read(&mut piece[..want]).await.unwrap();
            assert!(n > 0, "stream {k} ended after {} bytes", got.len());
            got.extend_from_slice(&piece[..n]);
        }
        let bad = (0..total).find(|&i| got[i] != pattern(k, i));
        assert_eq!(bad, None, "stream {k}: first wrong byte");
    }
    for w in writers {
        drop(w.await.unwrap());
    }
    drive_client.abort();
    drive_server.abort();
}

/// A TLS stream pair over an in-memory pipe of `pipe` bytes: the dialer's (`dialer` suites,
/// key `kd`) and the listener's (`listener`, `kl`), each with the peer it authenticated.
async fn tls_pair(
    (kd, dialer): (
        &libp2p::identity::Keypair,
        [rustls::SupportedCipherSuite; 2],
    ),
    (kl, listener): (
        &libp2p::identity::Keypair,
        [rustls::SupportedCipherSuite; 2],
    ),
    pipe: usize,
) -> ((libp2p::PeerId, TlsOverPipe), (libp2p::PeerId, TlsOverPipe)) {
    let d = super::Tls::with_aes_gcm(kd, dialer).unwrap();
    let l = super::Tls::with_aes_gcm(kl, listener).unwrap();
    let (a, b) = tokio::io::duplex(pipe);
    let (dialed, accepted) = tokio::join!(d.connect(a.compat()), l.accept(b.compat()));
    (dialed.unwrap(), accepted.unwrap())
}

type TlsOverPipe = futures_rustls::TlsStream<tokio_util::compat::Compat<tokio::io::DuplexStream>>;

/// The TLS under the TCP transport takes AES-GCM from ring on some CPUs and from AWS-LC on
/// others ([`super::aes_gcm_suites`]): a handshake between one of each agrees on
/// AES-128-GCM, and 4 MiB cross it both ways intact.
#[tokio::test]
async fn tls_with_ring_and_aws_lc_aes_gcm_interoperate() {
    use rustls::crypto::{aws_lc_rs, ring};
    let ring_suites = [
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let aws_suites = [
        aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    for (dialer, listener) in [(ring_suites, aws_suites), (aws_suites, ring_suites)] {
        let (kd, kl) = (
            libp2p::identity::Keypair::generate_ed25519(),
            libp2p::identity::Keypair::generate_ed25519(),
        );
        let ((peer_l, mut x), (peer_d, mut y)) =
            tls_pair((&kd, dialer), (&kl, listener), 256 << 10).await;
        assert_eq!(
            (peer_l, peer_d),
            (kl.public().to_peer_id(), kd.public().to_peer_id())
        );
        let suite = x.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let data: Vec<u8> = (0..4 << 20).map(|i: usize| (i % 253) as u8).collect();
        for _ in 0..2 {
            let send = async {
                x.write_all(&data).await.unwrap();
                x.flush().await.unwrap();
            };
            let recv = async {
                let mut got = vec![0u8; data.len()];
                y.read_exact(&mut got).await.unwrap();
                got
            };
            let ((), got) = tokio::join!(send, recv);
            assert!(got == data, "bytes changed crossing TLS");
            std::mem::swap(&mut x, &mut y);
        }
    }
}

/// vendor/yamux also sends data in frames of up to 128 KiB (upstream: 16 KiB): a 1 MiB answer
/// is 8 frames, not 64. Read raw off the wire: the 256 KiB a new stream may send before any
/// window update go out as two full frames.
#[tokio::test]
async fn yamux_sends_data_in_frames_of_128_kib() {
    use tokio::io::AsyncReadExt as _;
    let (a, mut raw) = tokio::io::duplex(8 << 20);
    let (mut out, drive_client) = client_stream(a).await;
    let credit = 256 << 10;
    let write = tokio::spawn(async move {
        out.write_all(&vec![7u8; credit]).await.unwrap();
        out.flush().await.unwrap();
        out
    });
    let mut frames = Vec::new();
    let mut data = 0;
    while data < credit {
        let mut header = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut header))
            .await
            .expect("the stream's credit arrives")
            .unwrap();
        let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
        // Type 0 is data; its length counts the body that follows.
        if header[1] == 0 {
            let mut body = vec![0u8; len];
            raw.read_exact(&mut body).await.unwrap();
            frames.push(len);
            data += len;
        }
    }
    assert_eq!(frames, [128 << 10; 2]);
    drop(write);
    drive_client.abort();
}

/// The TLS under the TCP transport takes up to 256 KiB of records before a write waits for the
/// socket (rustls's default: 64 KiB), so each of yamux's 128 KiB frames, with the header that
/// leads it, is one system call. Here the socket takes almost nothing: one write of 192 KiB is
/// still taken whole.
#[tokio::test]
async fn tls_takes_a_whole_frame_in_one_write() {
    let suites = [
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let key = libp2p::identity::Keypair::generate_ed25519;
    let ((_, mut x), (_, mut y)) = tls_pair((&key(), suites), (&key(), suites), 16 << 10).await;
    let data = vec![5u8; 192 << 10];
    let n = tokio::time::timeout(Duration::from_secs(5), x.write(&data))
        .await
        .expect("a write is taken without the socket draining")
        .unwrap();
    assert_eq!(
        n,
        data.len(),
        "the write was cut to what rustls buffers by default"
    );
    // And it all arrives.
    let recv = async {
        let mut got = vec![0u8; data.len()];
        y.read_exact(&mut got).await.unwrap();
        got
    };
    let (flushed, got) = tokio::join!(x.flush(), recv);
    flushed.unwrap();
    assert!(got == data);
}
