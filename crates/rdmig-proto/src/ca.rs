//! The cluster's certificate authority: one CA per cluster, one certificate per node.
//!
//! A node's certificate names the node (a DNS subject alternative name, and the common name) and
//! optionally the addresses its agent listens on (IP SANs); it serves both as the agent's server
//! certificate and as the client certificate of `rdmig migrate` on that node. Keys are ECDSA
//! P-256 (rcgen, aws-lc-rs). Nothing here is cryptography of our own: rcgen writes the certificates,
//! rustls checks them (see [`crate::tls`]).
//!
//! Files (PEM): the CA directory holds `ca.pem` and `ca.key` (mode 0600); a node's directory
//! (what `--tls-dir` names) holds `ca.pem`, `node.pem` and `node.key` (mode 0600).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key";

/// How long a CA is valid, and a node certificate.
const CA_DAYS: i64 = 10 * 365;
const NODE_DAYS: i64 = 2 * 365;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} exists already; remove it first to replace it")]
    Exists { path: String },
    #[error("invalid node name {0:?}: use 1-63 of [a-z0-9-], starting and ending with a letter or digit")]
    Name(String),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A node name as it goes into a certificate and into agents' `--allow-peer` lists: one DNS
/// label, lower case.
pub fn valid_node_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty() && b.len() <= 63 && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
}

/// A new CA: its certificate and key, in PEM.
pub fn new_ca(cluster: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, format!("rdmig cluster CA {cluster}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p, CA_DAYS);
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate for `node` (and the addresses in `ips`) signed by the CA: certificate and key, in
/// PEM.
pub fn new_node(ca_pem: &str, ca_key_pem: &str, node: &str, ips: &[IpAddr]) -> Result<(String, String), CaError> {
    if !valid_node_name(node) {
        return Err(CaError::Name(node.into()));
    }
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key_pem)?)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(vec![node.to_string()])?;
    p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name.push(DnType::CommonName, node);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, NODE_DAYS);
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn validity(p: &mut CertificateParams, days: i64) {
    // A day back: nodes' clocks differ a little.
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(days);
}

/// `rdmig ca init DIR`: a new CA in `dir` (created if needed; an existing CA is never replaced).
pub fn init(dir: &Path, cluster: &str) -> Result<PathBuf, CaError> {
    let (cert, key) = new_ca(cluster)?;
    mkdir(dir)?;
    write_new(&dir.join(CA_KEY), key.as_bytes(), 0o600)?;
    write_new(&dir.join(CA_CERT), cert.as_bytes(), 0o644)?;
    Ok(dir.join(CA_CERT))
}

/// `rdmig ca issue NODE --dir DIR`: `node`'s directory `out` (`ca.pem`, `node.pem`, `node.key`),
/// ready to copy to the node.
pub fn issue(dir: &Path, node: &str, ips: &[IpAddr], out: &Path) -> Result<(), CaError> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| CaError::Io { path: p.display().to_string(), source: e });
    let ca = read(dir.join(CA_CERT))?;
    let ca_key = read(dir.join(CA_KEY))?;
    let (cert, key) = new_node(&ca, &ca_key, node, ips)?;
    mkdir(out)?;
    write_new(&out.join(NODE_KEY), key.as_bytes(), 0o600)?;
    write_new(&out.join(NODE_CERT), cert.as_bytes(), 0o644)?;
    write_new(&out.join(CA_CERT), ca.as_bytes(), 0o644)?;
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| CaError::Io { path: dir.display().to_string(), source: e })
}

/// Writes a file that must not exist yet, with `mode` from the start (a key is never readable by
/// others, not even for a moment).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = path.display().to_string();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => CaError::Exists { path: p.clone() },
        _ => CaError::Io { path: p.clone(), source: e },
    })?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| CaError::Io { path: p, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        for ok in ["node1", "a", "gpu-17", &"x".repeat(63)] {
            assert!(valid_node_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Node1", "a.b", "a b", "*", "../x", &"x".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn init_and_issue_write_private_keys_and_never_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        init(&ca, "test").unwrap();
        assert!(matches!(init(&ca, "test"), Err(CaError::Exists { .. })), "a second init replaced the CA");
        let node = ca.join("node1");
        issue(&ca, "node1", &["10.99.0.1".parse().unwrap()], &node).unwrap();
        for (f, mode) in [(ca.join(CA_KEY), 0o600), (node.join(NODE_KEY), 0o600), (node.join(NODE_CERT), 0o644), (node.join(CA_CERT), 0o644)] {
            assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, mode, "{}", f.display());
        }
        assert!(matches!(issue(&ca, "node1", &[], &node), Err(CaError::Exists { .. })));
        assert!(matches!(issue(&ca, "Node 1", &[], &ca.join("x")), Err(CaError::Name(_))));
        // The node's identity loads, names the node, and chains to the CA.
        let id = crate::tls::Identity::load(&node).unwrap();
        assert_eq!(id.name(), "node1");
    }
}
