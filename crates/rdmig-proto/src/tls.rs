//! Mutual TLS 1.3 between `rdmig migrate` and the agents (rustls with its aws-lc-rs provider and its
//! defaults, but for the order of two cipher suites: see [`provider`]; no curve or check is chosen
//! here).
//!
//! Both ends present a certificate of the cluster CA ([`crate::ca`]) and accept only peers with
//! one. The client checks that the agent's certificate names what it connects to (the node name
//! if it was given, else the IP address it dialled); the agent learns the client's node name
//! from its certificate ([`peer_name`]) and decides with its own policy whether that node may
//! migrate to it (the agent's `--allow-peer`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::ca::{valid_node_name, CA_CERT, NODE_CERT, NODE_KEY};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Pem { path: String, why: String },
    #[error("key file {path} is readable by others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("certificate {path} names no node (no DNS subject alternative name that is a node name)")]
    NoName { path: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// This node's TLS identity: the cluster CA, its certificate and key, and the node name the
/// certificate carries.
#[derive(Clone)]
pub struct Identity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    name: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.name)
    }
}

/// rustls' aws-lc-rs provider with one change: TLS13_AES_128_GCM_SHA256 is preferred to
/// TLS13_AES_256_GCM_SHA384 (the provider's first choice), which stays allowed as the second.
/// Both are standard TLS 1.3 suites; AES-128 takes 10 rounds per block where AES-256 takes 14,
/// and every byte of a TCP transfer is sealed and opened in them (measured: see
/// docs/measurements.md, "host-tls"). The server follows the client's order, and both ends use
/// this provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let preferred = [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384];
    let rest = p.cipher_suites.iter().filter(|s| !preferred.iter().any(|x| x.suite() == s.suite())).copied();
    p.cipher_suites = preferred.into_iter().chain(rest).collect();
    Arc::new(p)
}

impl Identity {
    /// A node directory as `rdmig ca issue` writes it: `ca.pem`, `node.pem`, `node.key` (which
    /// must be mode 0600 or stricter).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        use std::os::unix::fs::MetadataExt;
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read(&p).map_err(|e| TlsError::Read { path: p.display().to_string(), source: e })
        };
        let key_path = dir.join(NODE_KEY);
        let meta = std::fs::metadata(&key_path).map_err(|e| TlsError::Read { path: key_path.display().to_string(), source: e })?;
        if meta.mode() & 0o077 != 0 {
            return Err(TlsError::Permissions { path: key_path.display().to_string(), mode: meta.mode() & 0o777 });
        }
        let (ca, cert, key) = (read(CA_CERT)?, read(NODE_CERT)?, read(NODE_KEY)?);
        Self::from_pem(&ca, &cert, &key).map_err(|e| match e {
            TlsError::Pem { path, why } => TlsError::Pem { path: dir.join(path).display().to_string(), why },
            TlsError::NoName { path } => TlsError::NoName { path: dir.join(path).display().to_string() },
            e => e,
        })
    }

    /// The same from PEM bytes.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let pem = |path: &str, why: String| TlsError::Pem { path: path.into(), why };
        let ca = CertificateDer::from_pem_slice(ca).map_err(|e| pem(CA_CERT, e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| pem(NODE_CERT, e.to_string()))?;
        let Some(leaf) = chain.first() else { return Err(pem(NODE_CERT, "no certificate".into())) };
        let name = peer_name(leaf).ok_or_else(|| TlsError::NoName { path: NODE_CERT.into() })?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem(NODE_KEY, e.to_string()))?;
        let id = Self { ca, chain, key: Arc::new(key), name };
        // Refuse a key that does not belong to the certificate now, not at the first handshake.
        id.server()?;
        Ok(id)
    }

    /// The node name in this node's certificate.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(roots)
    }

    /// The connecting side (`rdmig migrate`): TLS 1.3 only, this node's certificate, the cluster
    /// CA as the only root. `expect`: the node name the agent's certificate must carry (None: the
    /// IP address dialled).
    pub fn client(&self, expect: Option<&str>) -> Result<ClientTls, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        let expect = match expect {
            Some(n) if valid_node_name(n) => Some(ServerName::try_from(n.to_string()).map_err(|_| TlsError::ServerName(n.into()))?),
            Some(n) => return Err(TlsError::ServerName(n.into())),
            None => None,
        };
        Ok(ClientTls { config: Arc::new(config), expect })
    }

    /// The accepting side (the agent): TLS 1.3 only, a client certificate of the cluster CA
    /// required.
    pub fn server(&self) -> Result<ServerTls, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider()).build()?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(ServerTls { config: Arc::new(config) })
    }
}

/// What a client needs for its handshakes.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    expect: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The name the agent at `ip` must prove: the expected node name, or `ip` itself.
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.expect.clone().unwrap_or(ServerName::IpAddress(ip.into()))
    }

    /// The same, with a name given for this connection only.
    pub fn named(&self, node: &str) -> Result<ServerName<'static>, TlsError> {
        if !valid_node_name(node) {
            return Err(TlsError::ServerName(node.into()));
        }
        ServerName::try_from(node.to_string()).map_err(|_| TlsError::ServerName(node.into()))
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls(expect {:?})", self.expect)
    }
}

/// What an agent needs for its handshakes.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

/// The node a certificate names: its first DNS subject alternative name that is a node name.
/// (Only called on certificates rustls has verified against the cluster CA, or on our own.)
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = x.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        x509_parser::extensions::GeneralName::DNSName(n) if valid_node_name(n) => Some(n.to_string()),
        _ => None,
    })
}

pub mod testing {
    //! Certificates made in memory, for tests (here and in the crates that use the channel).
    use super::*;

    /// A CA in memory (PEM certificate and key).
    pub struct TestCa {
        pub cert: String,
        pub key: String,
    }

    impl Default for TestCa {
        fn default() -> Self {
            Self::new()
        }
    }

    impl TestCa {
        pub fn new() -> Self {
            Self::named("test")
        }

        /// A CA whose name is `cluster` (two CAs of one name are told apart by their keys).
        pub fn named(cluster: &str) -> Self {
            let (cert, key) = crate::ca::new_ca(cluster).unwrap();
            Self { cert, key }
        }

        /// A node identity of this CA, naming `name` and the addresses `ips`.
        pub fn node(&self, name: &str, ips: &[&str]) -> Identity {
            let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
            let (c, k) = crate::ca::new_node(&self.cert, &self.key, name, &ips).unwrap();
            Identity::from_pem(self.cert.as_bytes(), c.as_bytes(), k.as_bytes()).unwrap()
        }

        /// A client with a certificate of this CA for `name` that trusts `trusted` (an intruder:
        /// it accepts the agents of `trusted`, whose agents must refuse it).
        pub fn intruder(&self, name: &str, trusted: &TestCa) -> ClientTls {
            let id = self.node(name, &[]);
            let ca = CertificateDer::from_pem_slice(trusted.cert.as_bytes()).unwrap();
            Identity { ca, ..id }.client(None).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestCa;
    use super::*;

    #[test]
    fn identities_carry_their_node_name_and_refuse_a_key_of_another_certificate() {
        let ca = TestCa::new();
        let id = ca.node("node7", &["10.0.0.7"]);
        assert_eq!(id.name(), "node7");
        let (c1, _) = crate::ca::new_node(&ca.cert, &ca.key, "a", &[]).unwrap();
        let (_, k2) = crate::ca::new_node(&ca.cert, &ca.key, "b", &[]).unwrap();
        assert!(Identity::from_pem(ca.cert.as_bytes(), c1.as_bytes(), k2.as_bytes()).is_err());
        assert!(Identity::from_pem(ca.cert.as_bytes(), b"not pem", k2.as_bytes()).is_err());
    }

    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        crate::ca::init(&d.path().join("ca"), "t").unwrap();
        let n = d.path().join("n");
        crate::ca::issue(&d.path().join("ca"), "n1", &[], &n).unwrap();
        assert!(Identity::load(&n).is_ok());
        std::fs::set_permissions(n.join(NODE_KEY), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Identity::load(&n), Err(TlsError::Permissions { .. })));
    }

    /// A handshake in memory between `client` and `server`: the cipher suite both ends use.
    fn agreed(client: Arc<ClientConfig>, server: &ServerTls) -> rustls::CipherSuite {
        let mut c = rustls::ClientConnection::new(client, ServerName::try_from("node2").unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server.config.clone()).unwrap();
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets().unwrap();
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().unwrap();
            }
        }
        let suite = c.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(s.negotiated_cipher_suite().unwrap().suite(), suite);
        suite
    }

    #[test]
    fn aes_128_gcm_is_preferred_and_aes_256_gcm_still_accepted() {
        use rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384;
        use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256 as AES128, TLS13_AES_256_GCM_SHA384 as AES256};
        let ca = TestCa::new();
        let server = ca.node("node2", &[]).server().unwrap();
        let id = ca.node("node1", &[]);
        assert_eq!(agreed(id.client(None).unwrap().config, &server), AES128);
        // A client of rustls' own order (AES-256 first: rdmig before this preference), or of
        // AES-256 alone: the agent follows it.
        let other = |suites| {
            let p = rustls::crypto::CryptoProvider { cipher_suites: suites, ..rustls::crypto::aws_lc_rs::default_provider() };
            let c = ClientConfig::builder_with_provider(Arc::new(p))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(id.roots().unwrap())
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .unwrap();
            Arc::new(c)
        };
        assert_eq!(agreed(other(rustls::crypto::aws_lc_rs::default_provider().cipher_suites), &server), AES256);
        assert_eq!(agreed(other(vec![TLS13_AES_256_GCM_SHA384]), &server), AES256);
    }

    #[test]
    fn expected_server_names_are_node_names() {
        let id = TestCa::new().node("n", &[]);
        assert!(id.client(Some("node2")).is_ok());
        assert!(matches!(id.client(Some("*.evil")), Err(TlsError::ServerName(_))));
        let c = id.client(None).unwrap();
        assert_eq!(c.server_name("10.1.2.3".parse().unwrap()), ServerName::IpAddress("10.1.2.3".parse::<IpAddr>().unwrap().into()));
    }
}
