//! Who may do what here: the agent's authorisation policy, from its configuration.
//!
//! TLS proves which node a peer is (its certificate, of the cluster CA, names it); the policy
//! says whether that node may migrate processes to this agent at all (`--allow-peer`), and which
//! addresses a migration may bring along (`--allow-move-addr DEV=NET/PREFIX`: a moved address
//! must lie in one of these subnets, on that device). Everything else a peer asks is checked by
//! the message validation (`msg`) and by where the agent keeps its files.

use std::net::Ipv4Addr;

use rdmig_proto::msg::{ChunkProtection, MovedAddr, Request};

/// Which devices and subnets a moved address may use: `DEV=NET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrRule {
    pub dev: String,
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for AddrRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected DEV=NET/PREFIX, e.g. vxlan0=10.0.1.0/24");
        let (dev, net) = s.split_once('=').ok_or_else(bad)?;
        let (addr, prefix) = net.split_once('/').ok_or_else(bad)?;
        let (net, prefix): (Ipv4Addr, u8) = (addr.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?);
        // The device name as a moved address must spell it (`MovedAddr::validate`).
        let probe = MovedAddr { addr: Ipv4Addr::new(10, 0, 0, 1), prefix: 24, dev: dev.to_string() };
        if prefix > 32 || probe.validate().is_err() {
            return Err(bad());
        }
        if u32::from(net) & !mask(prefix) != 0 {
            return Err(format!("{s:?}: {net} has host bits set for /{prefix}"));
        }
        Ok(Self { dev: dev.to_string(), net, prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl AddrRule {
    /// `m` lies in this rule's subnet (its whole configured subnet, not only the address) on
    /// this rule's device.
    fn admits(&self, m: &MovedAddr) -> bool {
        m.dev == self.dev && m.prefix >= self.prefix && u32::from(m.addr) & mask(self.prefix) == u32::from(self.net)
    }
}

impl std::fmt::Display for AddrRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}/{}", self.dev, self.net, self.prefix)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Node names that may migrate to this agent; `*`: every node of the cluster CA.
    pub peers: Vec<String>,
    /// Where a moved address may go (none: migrations that move an address are refused).
    pub move_addr: Vec<AddrRule>,
    /// Take RDMA data only encrypted (`--require-encryption`): a source must ask with
    /// `--encrypt`, else its RDMA data path is refused (TCP, always encrypted, still serves).
    pub require_encryption: bool,
}

impl Policy {
    /// May node `peer` (as its certificate names it) use this agent at all?
    pub fn admits(&self, peer: &str) -> Result<(), String> {
        if self.peers.iter().any(|p| p == "*" || p == peer) {
            Ok(())
        } else {
            Err(format!("node {peer:?} may not migrate to this agent (its --allow-peer list: {})", self.peers.join(", ")))
        }
    }

    /// May an RDMA data path protect its chunks so?
    pub fn admits_rdma(&self, protection: ChunkProtection) -> Result<(), String> {
        if self.require_encryption && protection != ChunkProtection::Encrypted {
            return Err("this agent takes RDMA data only encrypted (--require-encryption): migrate with --encrypt, or over TCP".into());
        }
        Ok(())
    }

    /// May an admitted peer ask this? (Only what the policy restricts; `validate` did the rest.)
    pub fn allows(&self, req: &Request) -> Result<(), String> {
        if let Request::Restore { opts, .. } | Request::RestoreContainer { opts, .. } = req {
            if let Some(m) = &opts.move_addr {
                if !self.move_addr.iter().any(|r| r.admits(m)) {
                    let rules: Vec<String> = self.move_addr.iter().map(|r| r.to_string()).collect();
                    return Err(format!(
                        "moving {}/{} onto {} is not allowed here (--allow-move-addr: {})",
                        m.addr,
                        m.prefix,
                        m.dev,
                        if rules.is_empty() { "none".to_string() } else { rules.join(", ") }
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdmig_proto::msg::{MigrationId, RelPath, Reply, RestoreOpts};
    use rdmig_proto::tls::testing::TestCa;
    use rdmig_proto::wire::{Channel, Limits, WireError};
    use std::time::Duration;

    fn restore(addr: &str, prefix: u8, dev: &str) -> Request {
        Request::Restore {
            id: MigrationId::new("m-1").unwrap(),
            dir: RelPath::new("final").unwrap(),
            opts: RestoreOpts { verbs: false, tcp_established: false, move_addr: Some(MovedAddr { addr: addr.parse().unwrap(), prefix, dev: dev.into() }) },
        }
    }

    #[test]
    fn peers_and_moved_addresses_follow_the_rules() {
        let p = Policy { peers: vec!["node1".into(), "node3".into()], move_addr: vec!["vxlan0=10.0.1.0/24".parse().unwrap()], require_encryption: false };
        assert!(p.admits("node1").is_ok() && p.admits("node3").is_ok());
        let e = p.admits("node2").unwrap_err();
        assert!(e.contains("\"node2\" may not migrate") && e.contains("node1, node3"), "{e}");
        assert!(Policy { peers: vec!["*".into()], ..Policy::default() }.admits("anyone").is_ok());
        assert!(Policy::default().admits("node1").is_err(), "an empty list lets nobody in");
        assert!(p.allows(&restore("10.0.1.7", 24, "vxlan0")).is_ok());
        assert!(p.allows(&restore("10.0.1.7", 32, "vxlan0")).is_ok());
        for (a, pre, dev) in [("10.0.2.7", 24, "vxlan0"), ("10.0.1.7", 24, "eth0"), ("10.0.1.7", 16, "vxlan0"), ("192.168.0.1", 24, "vxlan0")] {
            let e = p.allows(&restore(a, pre, dev)).unwrap_err();
            assert!(e.contains("not allowed here") && e.contains("vxlan0=10.0.1.0/24"), "{e}");
        }
        assert!(Policy::default().allows(&restore("10.0.1.7", 24, "vxlan0")).unwrap_err().contains("none"));
        assert!(Policy::default().allows(&Request::Time).is_ok());
        // RDMA data in clear (authenticated chunks) unless the agent wants it encrypted.
        assert!(p.admits_rdma(ChunkProtection::Authenticated).is_ok() && p.admits_rdma(ChunkProtection::Encrypted).is_ok());
        let strict = Policy { require_encryption: true, ..p };
        assert!(strict.admits_rdma(ChunkProtection::Encrypted).is_ok());
        assert!(strict.admits_rdma(ChunkProtection::Authenticated).unwrap_err().contains("--encrypt"));
    }

    #[test]
    fn address_rules_parse_strictly() {
        assert_eq!("vxlan0=10.0.1.0/24".parse::<AddrRule>().unwrap(), AddrRule { dev: "vxlan0".into(), net: Ipv4Addr::new(10, 0, 1, 0), prefix: 24 });
        for bad in ["vxlan0", "10.0.1.0/24", "vxlan0=10.0.1.0", "vxlan0=10.0.1.1/24", "vxlan0=10.0.1.0/33", "a b=10.0.0.0/8", "=10.0.0.0/8"] {
            assert!(bad.parse::<AddrRule>().is_err(), "{bad}");
        }
    }

    /// An agent's connection handler with this policy, on a socket of its own; returns where it
    /// listens and the client side's TLS for `node`.
    async fn agent(ca: &TestCa, policy: Policy) -> std::net::SocketAddr {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = super::super::tests::config(d.path());
        cfg.tls = ca.node("dst", &["127.0.0.1"]).server().unwrap();
        cfg.policy = policy;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (cfg, table, gate) = (std::sync::Arc::new(cfg), super::super::Table::default(), super::super::gate::Gate::new(8));
            while let Ok((s, _)) = l.accept().await {
                let (cfg, table, gate) = (cfg.clone(), table.clone(), gate.clone());
                tokio::spawn(async move { super::super::connection(s, &cfg, &table, &gate).await });
            }
            drop(d);
        });
        addr
    }

    async fn dial(ca: &TestCa, node: &str, to: std::net::SocketAddr) -> Channel<tokio::net::TcpStream> {
        let tls = ca.node(node, &[]).client(None).unwrap();
        let sock = tokio::net::TcpStream::connect(to).await.unwrap();
        Channel::client_within(sock, &tls, tls.server_name(to.ip()), Limits::idle(Duration::from_secs(5))).await.unwrap()
    }

    #[tokio::test]
    async fn an_agent_serves_allowed_peers_and_refuses_others_clearly() {
        let ca = TestCa::new();
        let to = agent(&ca, Policy { peers: vec!["node1".into()], move_addr: vec!["vxlan0=10.0.1.0/24".parse().unwrap()], require_encryption: false }).await;
        // An allowed node is served.
        let mut ch = dial(&ca, "node1", to).await;
        ch.send_msg(&Request::Time).await.unwrap();
        assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Time { .. }));
        // ... but may not bring an address the policy does not name; the connection goes on.
        ch.send_msg(&restore("10.0.9.7", 24, "vxlan0")).await.unwrap();
        match ch.recv_msg::<Reply>().await.unwrap() {
            Reply::Failed(e) => assert!(e.contains("not allowed here"), "{e}"),
            other => panic!("a moved address outside the policy was let through: {other:?}"),
        }
        ch.send_msg(&Request::Ping).await.unwrap();
        assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Ack));
        // A node of the cluster that the policy does not name gets a clear refusal, and no more.
        let mut ch = dial(&ca, "node2", to).await;
        ch.send_msg(&Request::Facts { pid: None }).await.unwrap();
        match ch.recv_msg::<Reply>().await.unwrap() {
            Reply::Failed(e) => assert!(e.contains("node \"node2\" may not migrate to this agent"), "{e}"),
            other => panic!("an unauthorised node was served: {other:?}"),
        }
        ch.send_msg(&Request::Time).await.ok();
        assert!(ch.recv_msg::<Reply>().await.is_err(), "the refused connection stayed open");
        // A client whose certificate is not of the cluster CA does not get past the handshake.
        let intruder = TestCa::new().intruder("node1", &ca);
        let sock = tokio::net::TcpStream::connect(to).await.unwrap();
        let mut ch = Channel::client_within(sock, &intruder, intruder.server_name(to.ip()), Limits::idle(Duration::from_secs(5))).await.unwrap();
        let _ = ch.send_msg(&Request::Time).await;
        assert!(matches!(ch.recv_msg::<Reply>().await, Err(rdmig_proto::msg::MsgError::Wire(WireError::Tls(_)))));
    }

    #[tokio::test]
    async fn an_agent_that_requires_encryption_refuses_rdma_data_in_clear_and_stays_in_step() {
        use rdmig_proto::msg::Endpoint;
        let ca = TestCa::new();
        let to = agent(&ca, Policy { peers: vec!["node1".into()], require_encryption: true, ..Policy::default() }).await;
        let mut ch = dial(&ca, "node1", to).await;
        let ep = Endpoint { qpn: 17, psn: 1, gid: [0; 16] };
        // Chunks in clear are refused by the policy; encrypted ones pass it (and then meet this
        // test agent's lack of RDMA).
        for (protection, want) in [(ChunkProtection::Authenticated, "--encrypt"), (ChunkProtection::Encrypted, "no RDMA address")] {
            // As `rdmig migrate` does: the data path's key first, then the request.
            let _ = ch.next_stream_key();
            ch.send_msg(&Request::RdmaSetup { eps: vec![ep], protection }).await.unwrap();
            match ch.recv_msg::<Reply>().await.unwrap() {
                Reply::Failed(e) => assert!(e.contains(want), "{protection:?}: {e}"),
                other => panic!("{protection:?}: {other:?}"),
            }
        }
        // Both ends still key their streams alike: a TCP probe's check matches.
        ch.send_msg(&Request::Probe { len: 4096, via_rdma: false }).await.unwrap();
        let mut sum = crate::transport::DataSum::for_sending(&ch);
        let data = [7u8; 4096];
        ch.send_raw(&data).await.unwrap();
        sum.update(&data);
        ch.send_raw(&sum.finish()).await.unwrap();
        assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Ack), "the probe's check did not match after the refusals");
    }
}
