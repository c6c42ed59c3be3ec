//! The TCP transport: TLS 1.3 with AES-GCM, then yamux.
//!
//! libp2p's own TLS (`libp2p-tls`) offers ChaCha20-Poly1305 first, and Noise is ChaCha20-Poly1305
//! only; both run the cipher in software, on the same two cores as pcp's own record layer. This
//! transport speaks the same `/tls/1.0.0` protocol (the libp2p TLS handshake: a self-signed
//! certificate carrying the libp2p key's signature, checked by libp2p-tls's own parser), but
//! lists AES-128-GCM first, which AWS-LC (or ring, on CPUs where its code is the faster one:
//! [`aes_gcm_suites`]) runs with the CPU's AES and carry-less multiply instructions, and
//! keeps rustls's key exchange order (hybrid X25519MLKEM768 first), so TCP connections
//! between pcp peers are post-quantum at the transport too.
//!
//! A dial proposes TLS alone, lazily (multistream-select `V1Lazy`: no round trip of its own);
//! an inbound connection may also choose Noise, so older pcp releases and Noise-only libp2p
//! nodes can still reach this one.
//!
//! Buffers on both sides of TLS keep system calls and TCP segments few: the socket is read 64
//! KiB at a time (rustls asks for 4 KiB), yamux's frames go out through
//! [`Coalesce`](super::coalesce::Coalesce), and rustls takes 256 KiB of records before a write
//! waits (its default, 64 KiB, cut each 128 KiB frame in two system calls).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::Either;
use futures::io::BufReader;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, Version};
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::tls::certificate;
use libp2p::{identity, noise, tcp, yamux, Multiaddr, PeerId};
use lru::LruCache;
use multistream_select::{dialer_select_proto, listener_select_proto};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::SupportedCipherSuite;
use rustls::{CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::coalesce::Coalesce;
use super::lazy::Lazy;

const TLS: &str = "/tls/1.0.0";
const NOISE: &str = "/noise";
const YAMUX: &str = "/yamux/1.0.0";
/// ALPN of the libp2p TLS handshake.
const ALPN: &[u8] = b"libp2p";
/// Sealed TLS records a connection takes before its writes report the socket full: rustls's
/// default, 64 KiB, cut each of yamux's 128 KiB frames in two system calls.
const TLS_SEND_BUFFER: usize = 256 * 1024;
/// A connection that has not finished its handshakes by then is dropped.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the latest TCP connections negotiated, by the address the swarm reports them with
/// (`ConnectedPoint`: the dialled address, or the listener's send-back address), for the
/// `transport keys` log line; bounded, an old entry is simply forgotten.
static NEGOTIATED: Mutex<Option<LruCache<Multiaddr, String>>> = Mutex::new(None);
const NEGOTIATED_KEPT: usize = 64;

fn remember(endpoint: &ConnectedPoint, what: String) {
    let mut m = NEGOTIATED.lock().unwrap_or_else(|e| e.into_inner());
    m.get_or_insert_with(|| LruCache::new(NonZeroUsize::new(NEGOTIATED_KEPT).expect("non-zero")))
        .put(endpoint.get_remote_address().clone(), what);
}

/// The key exchange and cipher the TCP connection to or from `remote` negotiated, if it is
/// one of the latest.
pub(super) fn negotiated(remote: &Multiaddr) -> Option<String> {
    let mut m = NEGOTIATED.lock().unwrap_or_else(|e| e.into_inner());
    m.as_mut()?.pop(remote)
}

fn describe_tls(state: &CommonState) -> String {
    let group = state
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "?".into());
    let suite = state
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "?".into());
    format!("TLS 1.3 with {group}, {suite}")
}

/// The TCP transport of a pcp node (see the module documentation).
pub(super) fn transport(
    key: &identity::Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    let tls = Tls::new(key)?;
    let noise = noise::Config::new(key)?;
    warm_up();
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |io, endpoint| {
                let up = upgrade(io, endpoint, tls.clone(), noise.clone());
                async move {
                    tokio::time::timeout(UPGRADE_TIMEOUT, up)
                        .await
                        .map_err(|_| other("the connection's handshakes timed out"))?
                }
            })
            .boxed(),
    )
}

/// AWS-LC's first hybrid key exchange in a process costs tens of milliseconds of one-time
/// setup; done on a thread of its own at start, it is over before the first connection.
fn warm_up() {
    std::thread::spawn(|| {
        for group in aws_lc_rs::default_provider().kx_groups {
            if let Ok(kx) = group.start() {
                let share = kx.pub_key().to_vec();
                let _ = group.start_and_complete(&share);
            }
        }
    });
}

/// Bytes read from the socket at once under TLS: rustls asks for 4 KiB at a time, which made
/// a system call per 4 KiB of a bulk transfer.
const READ_BUFFER: usize = 64 * 1024;

fn other(e: impl Into<BoxError>) -> std::io::Error {
    std::io::Error::other(e)
}

async fn upgrade<C>(
    io: C,
    endpoint: ConnectedPoint,
    tls: Tls,
    noise: noise::Config,
) -> std::io::Result<(PeerId, StreamMuxerBox)>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // A hole punch dials from both ends; one of them then acts as the listener.
    let dialer = matches!(
        endpoint,
        ConnectedPoint::Dialer {
            role_override: Endpoint::Dialer,
            ..
        }
    );
    let yamux = yamux::Config::default();
    if dialer {
        let (_, io) = dialer_select_proto(io, [TLS], Version::V1Lazy)
            .await
            .map_err(other)?;
        let (peer, io) = tls
            .connect(BufReader::with_capacity(READ_BUFFER, io))
            .await?;
        remember(&endpoint, describe_tls(io.get_ref().1));
        let (_, io) = dialer_select_proto(io, [YAMUX], Version::V1Lazy)
            .await
            .map_err(other)?;
        let muxer = yamux
            .upgrade_outbound(Coalesce::new(io), YAMUX)
            .await
            .map_err(other)?;
        return Ok((peer, StreamMuxerBox::new(Lazy::new(muxer))));
    }
    let (proto, io) = listener_select_proto(io, [TLS, NOISE])
        .await
        .map_err(other)?;
    let (peer, io) = if proto == TLS {
        let (peer, io) = tls
            .accept(BufReader::with_capacity(READ_BUFFER, io))
            .await?;
        remember(&endpoint, describe_tls(io.get_ref().1));
        (peer, Either::Left(io))
    } else {
        let (peer, io) = noise.upgrade_inbound(io, NOISE).await.map_err(other)?;
        remember(&endpoint, "Noise XX with X25519".into());
        (peer, Either::Right(io))
    };
    let (_, io) = listener_select_proto(io, [YAMUX]).await.map_err(other)?;
    let muxer = yamux
        .upgrade_inbound(Coalesce::new(io), YAMUX)
        .await
        .map_err(other)?;
    Ok((peer, StreamMuxerBox::new(Lazy::new(muxer))))
}

/// TLS 1.3's two AES-GCM suites from whichever implementation runs them faster on this CPU.
/// The same algorithm either way, so the choice is local and changes no byte on the wire.
///
/// AWS-LC's assembly uses the vector AES instructions (VAES) only with AVX-512; on a CPU that
/// has VAES and AVX2 but no AVX-512 (AMD Zen 3, Intel Alder Lake and later desktops) it falls
/// back to one 128-bit block per AES instruction, where ring's VAES/AVX2 code runs twice as
/// fast: 5.1-6.6 against 2.1-3.5 GB/s sealing 16 KiB records (TLS's largest) on an AMD EPYC without
/// AVX-512 (`scripts/BENCHMARKS.md`, 2026-12-02). Elsewhere (AVX-512, or no VAES) AWS-LC's
/// code is at least as fast and stays.
fn aes_gcm_suites() -> [SupportedCipherSuite; 2] {
    if vaes_without_avx512() {
        return [
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ];
    }
    [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ]
}

/// Whether the CPU has 256-bit AES and carry-less multiply (VAES, VPCLMULQDQ) with AVX2 but
/// not the AVX-512 set AWS-LC's AES-GCM needs to use them (F, DQ, BW, VL and IFMA).
fn vaes_without_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let vaes = has!("vaes") && has!("vpclmulqdq") && has!("avx2");
        let avx512 = has!("avx512f")
            && has!("avx512dq")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512ifma");
        vaes && !avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Both ends of the libp2p TLS handshake, with AES-GCM first.
#[derive(Clone)]
struct Tls {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Tls {
    fn new(key: &identity::Keypair) -> Result<Tls, BoxError> {
        Tls::with_aes_gcm(key, aes_gcm_suites())
    }

    /// With `aes`, the two AES-GCM suites of one implementation, first.
    fn with_aes_gcm(
        key: &identity::Keypair,
        aes: [SupportedCipherSuite; 2],
    ) -> Result<Tls, BoxError> {
        let (cert, private) = certificate::generate(key)?;
        let mut provider = aws_lc_rs::default_provider();
        let [aes128, aes256] = aes;
        provider.cipher_suites = vec![aes128, aes256, cipher_suite::TLS13_CHACHA20_POLY1305_SHA256];
        let provider = Arc::new(provider);
        // The certificate's critical libp2p extension is unknown to webpki, so it is handed
        // out as is rather than through rustls's checked `with_single_cert`.
        let ours = Arc::new(OurCert(Arc::new(CertifiedKey::new(
            vec![cert],
            aws_lc_rs::sign::any_ecdsa_type(&private)?,
        ))));
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Libp2pCert))
            .with_client_cert_resolver(ours.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(Libp2pCert))
            .with_cert_resolver(ours);
        server.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Tls {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    async fn connect<C>(&self, io: C) -> std::io::Result<(PeerId, futures_rustls::TlsStream<C>)>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        // The libp2p TLS spec: no server name (SNI) is sent.
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let mut s = futures_rustls::TlsConnector::from(self.client.clone())
            .connect(name, io)
            .await?;
        s.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let peer = peer_id(s.get_ref().1)?;
        Ok((peer, s.into()))
    }

    async fn accept<C>(&self, io: C) -> std::io::Result<(PeerId, futures_rustls::TlsStream<C>)>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let mut s = futures_rustls::TlsAcceptor::from(self.server.clone())
            .accept(io)
            .await?;
        s.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let peer = peer_id(s.get_ref().1)?;
        Ok((peer, s.into()))
    }
}

/// This node's certificate, for every handshake in either role.
#[derive(Debug)]
struct OurCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OurCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OurCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The peer id the other side's (already verified) certificate carries.
fn peer_id(state: &CommonState) -> std::io::Result<PeerId> {
    match state.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert).map_err(other)?.peer_id()),
        _ => Err(other("the peer did not present exactly one certificate")),
    }
}

/// The libp2p certificate rules (as libp2p-tls checks them): exactly one self-signed
/// certificate whose libp2p extension signs its key with the peer's libp2p key, and a handshake
/// signature by that certificate's key. Which peer it must be is checked by the swarm against
/// the dialled address.
#[derive(Debug)]
struct Libp2pCert;

fn check_chain(
    end: &CertificateDer,
    intermediates: &[CertificateDer],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "libp2p TLS requires exactly one certificate".into(),
        ));
    }
    certificate::parse(end)?;
    Ok(())
}

fn check_signature(
    cert: &CertificateDer,
    dss: &DigitallySignedStruct,
    message: &[u8],
) -> Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)?.verify_signature(dss.scheme, message, dss.signature())?;
    Ok(HandshakeSignatureValid::assertion())
}

fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

const SCHEMES: [SignatureScheme; 9] = [
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// The handshake-signature checks both verifiers share: TLS 1.3 only, by the certificate's key.
macro_rules! signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(no_tls12())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            check_signature(cert, dss, message)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            SCHEMES.to_vec()
        }
    };
}

impl ServerCertVerifier for Libp2pCert {
    fn verify_server_cert(
        &self,
        end: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_chain(end, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

impl ClientCertVerifier for Libp2pCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_chain(end, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    signatures!();
}

#[cfg(test)]
mod tests;
