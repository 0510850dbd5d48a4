//! The lab's address plan: node names, MACs, underlay and overlay addresses.
//!
//! Everything here is derived from the node count, so the host and every guest compute the same
//! plan and nothing about the network has to be discovered at run time.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::LabError;

/// Most nodes a lab may have: the address plan uses one octet per node, and more than a handful
/// of TCG virtual machines would not fit the machines this runs on anyway.
pub const MAX_NODES: usize = 16;

/// The underlay: a private L2 segment (a bridge in the lab's own network namespace).
pub const UNDERLAY_PREFIX: [u8; 3] = [10, 99, 0];
/// The host's own address on the underlay bridge, used to reach the node agents.
pub const UNDERLAY_HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
pub const UNDERLAY_MTU: u32 = 9000;

/// The overlay: VXLAN over the underlay, like Docker's overlay network in the MigrOS artifact.
pub const OVERLAY_PREFIX: [u8; 3] = [10, 0, 1];
pub const OVERLAY_PREFIX_LEN: u8 = 24;
/// VXLAN adds 50 bytes of headers to every frame.
pub const OVERLAY_MTU: u32 = UNDERLAY_MTU - 50;
pub const VXLAN_ID: u32 = 42;
pub const VXLAN_PORT: u16 = 4789;
pub const OVERLAY_DEV: &str = "vxlan0";
pub const RXE_DEV: &str = "rxe0";

/// Overlay host part of node `i` (1-based): 10.0.1.11, 10.0.1.12, ... Addresses below 10 are left
/// for the "container" addresses that move between nodes (10.0.1.3, 10.0.1.7 in MigrOS's scripts).
const OVERLAY_NODE_BASE: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// 1-based.
    pub index: usize,
    pub name: String,
    pub mac: String,
    pub tap: String,
    pub underlay_ip: Ipv4Addr,
    pub overlay_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    pub nodes: Vec<NodePlan>,
}

impl LabPlan {
    pub fn new(count: usize) -> Result<Self, LabError> {
        if count == 0 || count > MAX_NODES {
            return Err(LabError::Invalid(format!("a lab has 1 to {MAX_NODES} nodes, not {count}")));
        }
        let nodes = (1..=count)
            .map(|i| {
                let n = i as u8;
                NodePlan {
                    index: i,
                    name: format!("node{i}"),
                    // Locally administered, unicast; the last octet is the node index.
                    mac: format!("52:54:00:99:00:{n:02x}"),
                    tap: format!("rdmtap{i}"),
                    underlay_ip: Ipv4Addr::new(UNDERLAY_PREFIX[0], UNDERLAY_PREFIX[1], UNDERLAY_PREFIX[2], n),
                    overlay_ip: Ipv4Addr::new(OVERLAY_PREFIX[0], OVERLAY_PREFIX[1], OVERLAY_PREFIX[2], OVERLAY_NODE_BASE + n),
                }
            })
            .collect();
        Ok(Self { nodes })
    }

    pub fn node(&self, name: &str) -> Result<&NodePlan, LabError> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<_> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            LabError::Invalid(format!("no node named {name:?}; the lab has {}", names.join(", ")))
        })
    }
}

/// Checks that `addr` may be used as an extra ("container") overlay address: inside the overlay
/// subnet, not the network or broadcast address, and not a node's own address.
pub fn check_extra_overlay_addr(plan: &LabPlan, addr: Ipv4Addr) -> Result<(), LabError> {
    let o = addr.octets();
    if o[..3] != OVERLAY_PREFIX {
        return Err(LabError::Invalid(format!(
            "{addr} is outside the overlay subnet {}.{}.{}.0/{OVERLAY_PREFIX_LEN}",
            OVERLAY_PREFIX[0], OVERLAY_PREFIX[1], OVERLAY_PREFIX[2]
        )));
    }
    if o[3] == 0 || o[3] == 255 {
        return Err(LabError::Invalid(format!("{addr} is the overlay's network or broadcast address")));
    }
    if let Some(n) = plan.nodes.iter().find(|n| n.overlay_ip == addr) {
        return Err(LabError::Invalid(format!("{addr} is {}'s own overlay address; extra addresses must be others", n.name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_disjoint() {
        let p = LabPlan::new(3).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[0].name, "node1");
        assert_eq!(p.nodes[2].underlay_ip, Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(p.nodes[1].overlay_ip, Ipv4Addr::new(10, 0, 1, 12));
        assert_eq!(p.nodes[2].mac, "52:54:00:99:00:03");
        let mut macs: Vec<_> = p.nodes.iter().map(|n| &n.mac).collect();
        macs.dedup();
        assert_eq!(macs.len(), 3);
        assert_eq!(p, LabPlan::new(3).unwrap());
    }

    #[test]
    fn node_count_is_bounded() {
        assert!(LabPlan::new(0).is_err());
        assert!(LabPlan::new(MAX_NODES + 1).is_err());
        assert!(LabPlan::new(MAX_NODES).is_ok());
    }

    #[test]
    fn unknown_node_names_the_known_ones() {
        let p = LabPlan::new(2).unwrap();
        let e = p.node("node9").unwrap_err().to_string();
        assert!(e.contains("node1, node2"), "{e}");
    }

    #[test]
    fn extra_addresses_are_checked() {
        let p = LabPlan::new(3).unwrap();
        assert!(check_extra_overlay_addr(&p, Ipv4Addr::new(10, 0, 1, 7)).is_ok());
        assert!(check_extra_overlay_addr(&p, Ipv4Addr::new(10, 0, 2, 7)).is_err());
        assert!(check_extra_overlay_addr(&p, Ipv4Addr::new(10, 0, 1, 255)).is_err());
        let e = check_extra_overlay_addr(&p, Ipv4Addr::new(10, 0, 1, 12)).unwrap_err();
        assert!(e.to_string().contains("node2"));
    }
}
