//! TLS with rustls: client configurations that verify servers against the platform's roots, the
//! bundled Mozilla roots and any extra CA certificates; server configurations from a PEM
//! certificate chain and key. ALPN is `http/1.1` both ways (RFC 6455 §4.1 runs over HTTP/1.1).

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::Error;

/// The rustls version wsx is built with, for building configurations by hand.
pub use rustls;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Parses every certificate in a PEM file's contents.
pub fn certificates_from_pem(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad PEM certificate: {e}"))
        })?;
    if certs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate found in PEM"));
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), with ALPN `http/1.1`.
pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<ServerConfig>> {
    let chain = certificates_from_pem(cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad PEM private key: {e}"))
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("certificate and key: {e}"))
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Options for verifying servers, and the client configuration built from them once.
///
/// Clones share the built configuration: a builder cloned for many connections, or one
/// connecting again, reuses one root store and loads the platform's certificates at most once per
/// process.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTls {
    extra_roots: Vec<CertificateDer<'static>>,
    accept_invalid_certs: bool,
    config: Option<Arc<ClientConfig>>,
    /// Built on the first connect; replaced (not changed) when an option changes, so a clone
    /// made before keeps the configuration of its own options.
    built: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl ClientTls {
    /// Trusts `certs` too: as CAs, or as the very certificate a server presents.
    pub(crate) fn add_roots(&mut self, certs: Vec<CertificateDer<'static>>) {
        self.extra_roots.extend(certs);
        self.built = Arc::default();
    }

    /// **Testing only**: accept any server certificate.
    pub(crate) fn set_accept_invalid_certs(&mut self, accept: bool) {
        self.accept_invalid_certs = accept;
        self.built = Arc::default();
    }

    /// Uses `config` as given.
    pub(crate) fn set_config(&mut self, config: Arc<ClientConfig>) {
        self.config = Some(config);
    }

    /// The rustls configuration: a user-supplied one, the process-wide default, or the one built
    /// from these options on first use.
    pub(crate) fn client_config(&self) -> io::Result<Arc<ClientConfig>> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        if self.extra_roots.is_empty() && !self.accept_invalid_certs {
            return default_client_config();
        }
        if let Some(c) = self.built.get() {
            return Ok(c.clone());
        }
        let config = self.build()?;
        // Two connects racing here both build; the first one stored is kept by all.
        Ok(self.built.get_or_init(|| config).clone())
    }

    fn build(&self) -> io::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.accept_invalid_certs {
            Arc::new(AcceptAnyCertificate(provider()))
        } else {
            let mut roots = base_roots().clone();
            roots.add_parsable_certificates(self.extra_roots.iter().cloned());
            Arc::new(Verifier::new(roots, self.extra_roots.clone())?)
        };
        let mut config =
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Arc::new(config))
    }
}

/// The configuration of every client without options of its own: the platform's and the bundled
/// roots, built once per process.
fn default_client_config() -> io::Result<Arc<ClientConfig>> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = DEFAULT.get() {
        return Ok(c.clone());
    }
    let config = ClientTls::default().build()?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

/// The bundled Mozilla roots and the platform's, loaded once per process.
fn base_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The platform's store adds corporate and locally installed CAs; unreadable entries are
        // skipped, as browsers do.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        roots
    })
}

/// The server name to verify for `host` (a DNS name or an IP literal without brackets).
pub(crate) fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("invalid TLS server name {host:?}"))
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls' WebPKI verification, plus one case it refuses: the server presents, as its own
/// certificate, exactly one of the extra roots the user gave, and that certificate is a CA
/// (`openssl req -x509` marks its self-signed certificates CA:TRUE since OpenSSL 3).
///
/// webpki refuses a CA certificate as an end entity (`CaUsedAsEndEntity`) before it even
/// looks for an issuer. But a user who trusts this very certificate has made it a trust anchor,
/// and RFC 5280 §6.1 takes a trust anchor as trusted input: its signature means nothing more.
/// What still matters is checked here: the validity period (§4.1.2.5), the extended key usage
/// (§4.2.1.12) and the server's name (RFC 6125); the TLS handshake signatures are verified as
/// always, so the server must hold the certificate's key.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl Verifier {
    fn new(roots: RootCertStore, extra_roots: Vec<CertificateDer<'static>>) -> io::Result<Self> {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(io::Error::other)?;
        Ok(Self { webpki, extra_roots })
    }

    /// The checks for a certificate the user trusts as it is (see [`Verifier`]).
    fn verify_trusted_as_is(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fields = der::Fields::parse(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let now = now.as_secs();
        if now < fields.not_before {
            return Err(CertificateError::NotValidYetContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(now)),
                not_before: UnixTime::since_unix_epoch(Duration::from_secs(fields.not_before)),
            }
            .into());
        }
        if now > fields.not_after {
            return Err(CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(now)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(fields.not_after)),
            }
            .into());
        }
        if !fields.server_auth_allowed {
            return Err(CertificateError::InvalidPurpose.into());
        }
        // Also refuses unknown critical extensions (RFC 5280 §4.2).
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(e) if is_ca_used_as_end_entity(&e) => e,
            Err(e) => return Err(e),
        };
        if self.extra_roots.iter().any(|root| root.as_ref() == end_entity.as_ref()) {
            return Self::verify_trusted_as_is(end_entity, server_name, now);
        }
        // A self-issued certificate nobody trusts as such: its only possible issuer is itself,
        // which is not a trusted root, so say so rather than name the CA flag.
        match webpki::EndEntityCert::try_from(end_entity) {
            Ok(cert) if cert.issuer() == cert.subject() => {
                Err(CertificateError::UnknownIssuer.into())
            }
            _ => Err(refused),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// Whether rustls refused a certificate because it is a CA's (webpki's `CaUsedAsEndEntity`,
/// which rustls passes on as an opaque "other" error).
fn is_ca_used_as_end_entity(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// The library error for a failed TLS handshake with `host`: a [`rustls::Error`] becomes
/// [`Error::Tls`], anything else stays I/O.
pub(crate) fn handshake_error(error: io::Error, host: &str) -> Error {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(tls) => Error::Tls { host: host.to_owned(), error: tls.clone() },
        None => Error::Io(error),
    }
}

/// How to make a client trust a private CA or a self-signed server.
const TRUST_HINT: &str = "to trust a private CA or a self-signed server, pass its certificate: \
                          wsx connect --cacert FILE, or ClientBuilder::add_root_certificates_pem";

/// One sentence for a failed TLS handshake with `host` that says what is wrong and how to fix
/// it: [`Error::Tls`]'s message.
pub(crate) fn describe(host: &str, error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(e) = error else {
        return format!("the TLS handshake with {host} failed: {error}");
    };
    let subject = format!("the certificate of {host}");
    match e {
        CertificateError::UnknownIssuer => {
            format!("{subject} is not signed by a trusted CA ({TRUST_HINT})")
        }
        CertificateError::NotValidForName => format!(
            "{subject} is for another name (connect with a name it lists, or give the server a \
             certificate for {host})"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<_> = presented.iter().map(|n| presented_name(n)).collect();
            if names.is_empty() {
                format!(
                    "{subject} names no host, so it is not valid for {host} (give the server a \
                     certificate with {host} in its subjectAltName)"
                )
            } else {
                format!(
                    "the certificate is for {}, not {host} (connect with a name it lists, or give \
                     the server a certificate for {host})",
                    names.join(", ")
                )
            }
        }
        CertificateError::Expired => format!(
            "{subject} has expired (the server needs a renewed certificate; if it is new, check \
             this machine's clock)"
        ),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "{subject} expired on {} (the server needs a renewed certificate; if it is new, check \
             this machine's clock)",
            date(*not_after)
        ),
        CertificateError::NotValidYet => {
            format!("{subject} is not valid yet (check this machine's clock)")
        }
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "{subject} is not valid until {} (check this machine's clock)",
            date(*not_before)
        ),
        CertificateError::Revoked => {
            format!("{subject} has been revoked by its CA (the server needs a new certificate)")
        }
        CertificateError::UnknownRevocationStatus
        | CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. }
        | CertificateError::InvalidOcspResponse => {
            format!("the revocation status of {subject} could not be checked")
        }
        CertificateError::BadSignature => format!(
            "{subject} has an invalid signature (it was altered, or not signed by the CA it names)"
        ),
        CertificateError::BadEncoding => format!("{subject} is malformed"),
        CertificateError::UnhandledCriticalExtension => {
            format!("{subject} has a critical extension wsx does not understand")
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            format!("{subject} is signed with an algorithm wsx does not support")
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "{subject} is not meant for TLS servers (its extended key usage lacks serverAuth)"
            )
        }
        CertificateError::ApplicationVerificationFailure => {
            format!("{subject} was refused by the application's certificate verifier")
        }
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            format!(
                "{subject} is a CA certificate, which a server may not present as its own (give \
                 the server a certificate its CA issued; {TRUST_HINT})"
            )
        }
        CertificateError::Other(other) => format!("{subject} is invalid: {}", other.0),
        // Including the deprecated UnsupportedSignatureAlgorithm, and variants added later.
        other => format!("{subject} is invalid: {other:?}"),
    }
}

/// `DnsName("example.com")` or `IpAddress(127.0.0.1)` (webpki's rendering) as a plain name.
fn presented_name(name: &str) -> &str {
    for prefix in ["DnsName(\"", "IpAddress("] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest.trim_end_matches(')').trim_end_matches('"');
        }
    }
    name
}

/// `YYYY-MM-DD` (UTC) for a certificate's date.
fn date(time: UnixTime) -> String {
    let (y, m, d) = der::civil_from_days((time.as_secs() / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Accepts any server certificate: for tests against self-signed servers only.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // Signatures are still checked, so the handshake itself stays sound.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The few fields of an X.509 certificate (RFC 5280 §4.1) that webpki does not expose and
/// [`Verifier`] checks itself: the validity period and the extended key usage.
mod der {
    /// What [`Verifier`](super::Verifier) reads from a certificate.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Fields {
        /// notBefore, in seconds since the Unix epoch.
        pub(super) not_before: u64,
        /// notAfter, in seconds since the Unix epoch.
        pub(super) not_after: u64,
        /// No extended key usage extension, or one listing id-kp-serverAuth.
        pub(super) server_auth_allowed: bool,
    }

    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    /// `[0] EXPLICIT Version`.
    const VERSION: u8 = 0xa0;
    /// `[3] EXPLICIT Extensions`.
    const EXTENSIONS: u8 = 0xa3;
    /// id-ce-extKeyUsage, 2.5.29.37 (RFC 5280 §4.2.1.12), as the OID's content bytes.
    const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
    const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

    impl Fields {
        /// Reads a DER certificate; `None` if it is not one.
        pub(super) fn parse(cert: &[u8]) -> Option<Self> {
            // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
            let (cert, _) = expect(cert, SEQUENCE)?;
            let (mut tbs, _) = expect(cert, SEQUENCE)?;
            // TBSCertificate ::= SEQUENCE { version [0] (optional), serialNumber, signature,
            // issuer, validity, subject, subjectPublicKeyInfo, [1], [2], extensions [3] }
            if tbs.first() == Some(&VERSION) {
                tbs = expect(tbs, VERSION)?.1;
            }
            let (_, tbs) = expect(tbs, INTEGER)?;
            let (_, tbs) = expect(tbs, SEQUENCE)?;
            let (_, tbs) = expect(tbs, SEQUENCE)?;
            let (validity, mut tbs) = expect(tbs, SEQUENCE)?;
            let (not_before, validity) = time(validity)?;
            let (not_after, rest) = time(validity)?;
            if !rest.is_empty() || not_before > not_after {
                return None;
            }
            let mut server_auth_allowed = true;
            while let Some((tag, value, rest)) = tlv(tbs) {
                tbs = rest;
                if tag == EXTENSIONS {
                    server_auth_allowed = server_auth_in(value)?;
                }
            }
            Some(Self { not_before, not_after, server_auth_allowed })
        }
    }

    /// Whether the `Extensions` allow server authentication: no extKeyUsage, or one that lists
    /// id-kp-serverAuth (RFC 5280 §4.2.1.12; webpki likewise takes no other purpose as enough).
    fn server_auth_in(extensions: &[u8]) -> Option<bool> {
        let (mut list, _) = expect(extensions, SEQUENCE)?;
        while !list.is_empty() {
            // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
            let (ext, rest) = expect(list, SEQUENCE)?;
            list = rest;
            let (id, mut ext) = expect(ext, OID)?;
            if ext.first() == Some(&BOOLEAN) {
                ext = expect(ext, BOOLEAN)?.1;
            }
            let (value, _) = expect(ext, OCTET_STRING)?;
            if id == EXT_KEY_USAGE {
                let (mut purposes, _) = expect(value, SEQUENCE)?;
                while !purposes.is_empty() {
                    let (purpose, rest) = expect(purposes, OID)?;
                    if purpose == SERVER_AUTH {
                        return Some(true);
                    }
                    purposes = rest;
                }
                return Some(false);
            }
        }
        Some(true)
    }

    /// Reads a `Time` (RFC 5280 §4.1.2.5): seconds since the Unix epoch, and what follows.
    fn time(input: &[u8]) -> Option<(u64, &[u8])> {
        let (tag, value, rest) = tlv(input)?;
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let bytes = value.get(range)?;
            bytes
                .iter()
                .try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
        };
        // UTCTime YYMMDDHHMMSSZ, GeneralizedTime YYYYMMDDHHMMSSZ: both always in UTC, with
        // seconds and without fractions in a certificate.
        let (year, at) = match (tag, value.len()) {
            (UTC_TIME, 13) => {
                let yy = digits(0..2)?;
                // §4.1.2.5.1: YY of 50 or more is 19YY, otherwise 20YY.
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
            }
            (GENERALIZED_TIME, 15) => (digits(0..4)?, 4),
            _ => return None,
        };
        if value.last() != Some(&b'Z') {
            return None;
        }
        let month = digits(at..at + 2)?;
        let day = digits(at + 2..at + 4)?;
        let hour = digits(at + 4..at + 6)?;
        let minute = digits(at + 6..at + 8)?;
        let second = digits(at + 8..at + 10)?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        // Seconds up to 60 allow a leap second.
        if second > 60 {
            return None;
        }
        let days = days_from_civil(i64::from(year), month, day);
        let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
        Some((u64::try_from(secs).ok()?, rest))
    }

    /// A TLV with `tag`: its value and what follows.
    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        match tlv(input)? {
            (t, value, rest) if t == tag => Some((value, rest)),
            _ => None,
        }
    }

    /// One DER tag-length-value (X.690 §8.1): tag, value, what follows.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, input) = input.split_first()?;
        let (len, input) = if first < 0x80 {
            (usize::from(first), input)
        } else {
            // Long form: the low bits count the length's bytes; certificates need at most 4.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || input.len() < n {
                return None;
            }
            let len = input[..n].iter().fold(0usize, |len, &b| len << 8 | usize::from(b));
            (len, &input[n..])
        };
        if input.len() < len {
            return None;
        }
        let (value, rest) = input.split_at(len);
        Some((tag, value, rest))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(month);
        let day_of_year =
            (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date of a day since 1970-01-01: the inverse of [`days_from_civil`].
    pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let days = days + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_root() -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_default_client_config_is_built_once_per_process() {
        let a = ClientTls::default().client_config().unwrap();
        let b = ClientTls::default().client_config().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_builders_client_config_is_built_once_and_shared_by_its_clones() {
        let mut tls = ClientTls::default();
        tls.add_roots(vec![ca_root()]);
        let first = tls.client_config().unwrap();
        assert!(Arc::ptr_eq(&first, &tls.client_config().unwrap()), "a second connect");
        let clone = tls.clone();
        assert!(Arc::ptr_eq(&first, &clone.client_config().unwrap()), "a clone");
        assert!(!Arc::ptr_eq(&first, &default_client_config().unwrap()));

        // Changing the options of a clone builds its own, and leaves the original's alone.
        let mut changed = tls.clone();
        changed.add_roots(vec![ca_root()]);
        assert!(!Arc::ptr_eq(&first, &changed.client_config().unwrap()));
        assert!(Arc::ptr_eq(&first, &tls.client_config().unwrap()));
        let mut insecure = tls.clone();
        insecure.set_accept_invalid_certs(true);
        assert!(!Arc::ptr_eq(&first, &insecure.client_config().unwrap()));
    }

    #[test]
    fn a_given_client_config_is_used_as_it_is() {
        let given = default_client_config().unwrap();
        let mut tls = ClientTls::default();
        tls.add_roots(vec![ca_root()]);
        tls.set_config(given.clone());
        assert!(Arc::ptr_eq(&given, &tls.client_config().unwrap()));
    }

    #[test]
    fn certificate_fields_are_read_from_der() {
        let check = |adjust: &dyn Fn(&mut rcgen::CertificateParams), expected: der::Fields| {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            adjust(&mut params);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(der::Fields::parse(cert.der()), Some(expected));
        };
        let day = |y, m, d| der::days_from_civil(y, m, d) as u64 * 86_400;
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
        check(
            &|p| {
                p.not_before = rcgen::date_time_ymd(1999, 12, 31);
                p.not_after = rcgen::date_time_ymd(2050, 1, 1);
            },
            der::Fields {
                not_before: day(1999, 12, 31),
                not_after: day(2050, 1, 1),
                server_auth_allowed: true,
            },
        );
        check(
            &|p| {
                p.not_before = rcgen::date_time_ymd(2024, 2, 29);
                p.not_after = rcgen::date_time_ymd(4096, 1, 1);
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            },
            der::Fields {
                not_before: day(2024, 2, 29),
                not_after: day(4096, 1, 1),
                server_auth_allowed: false,
            },
        );
        check(
            &|p| {
                p.not_before = rcgen::date_time_ymd(2024, 1, 1);
                p.not_after = rcgen::date_time_ymd(2025, 1, 1);
                p.extended_key_usages = vec![
                    rcgen::ExtendedKeyUsagePurpose::CodeSigning,
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                ];
            },
            der::Fields {
                not_before: day(2024, 1, 1),
                not_after: day(2025, 1, 1),
                server_auth_allowed: true,
            },
        );
        for bad in [&b""[..], b"\x30\x00", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01"] {
            assert_eq!(der::Fields::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_and_days_convert_both_ways() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (24_855, (2038, 1, 19)),
            (2_932_896, (9999, 12, 31)),
        ] {
            assert_eq!(der::civil_from_days(days), date, "{days}");
            assert_eq!(der::days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
    }

    #[test]
    fn certificate_errors_are_one_sentence_with_the_fix() {
        let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let check = |error: CertificateError, expected: &str| {
            let shown = describe("example.com", &rustls::Error::InvalidCertificate(error));
            assert!(shown.starts_with(expected), "{shown:?} should start with {expected:?}");
            assert!(!shown.contains('\n'), "{shown:?}");
        };
        check(
            CertificateError::UnknownIssuer,
            "the certificate of example.com is not signed by a trusted CA (to trust a private CA \
             or a self-signed server, pass its certificate: wsx connect --cacert FILE, or \
             ClientBuilder::add_root_certificates_pem)",
        );
        check(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("example.com").unwrap(),
                presented: vec![
                    "DnsName(\"a.example\")".to_owned(),
                    "IpAddress(10.0.0.1)".to_owned(),
                ],
            },
            "the certificate is for a.example, 10.0.0.1, not example.com (",
        );
        check(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("example.com").unwrap(),
                presented: vec![],
            },
            "the certificate of example.com names no host",
        );
        check(
            CertificateError::ExpiredContext { time: at(1_700_000_000), not_after: at(86_400) },
            "the certificate of example.com expired on 1970-01-02 (the server needs a renewed",
        );
        check(
            CertificateError::NotValidYetContext { time: at(0), not_before: at(1_700_000_000) },
            "the certificate of example.com is not valid until 2023-11-14 (check this machine's",
        );
        check(CertificateError::Revoked, "the certificate of example.com has been revoked");
        check(CertificateError::BadSignature, "the certificate of example.com has an invalid sig");
        check(CertificateError::InvalidPurpose, "the certificate of example.com is not meant for");
        check(
            CertificateError::Other(rustls::OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity))),
            "the certificate of example.com is a CA certificate, which a server may not present",
        );
        let other = describe("example.com", &rustls::Error::NoCertificatesPresented);
        assert!(other.starts_with("the TLS handshake with example.com failed: "), "{other}");
    }
}
