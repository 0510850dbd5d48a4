//! GID tables of rxe ports, read from sysfs: which GID index carries an IPv4 address as RoCE v2.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RxeError {
    #[error("RDMA device {0} does not exist (is rdma_rxe loaded and `rdma link add` done?)")]
    NoDevice(String),
    #[error("{dev} has no RoCE v2 GID for {ip} (GIDs follow the addresses of the device's netdev)")]
    NoGid { dev: String, ip: Ipv4Addr },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GidEntry {
    pub index: u32,
    pub gid: String,
    pub kind: String,
}

fn port_dir(dev: &str, port: u32) -> PathBuf {
    PathBuf::from(format!("/sys/class/infiniband/{dev}/ports/{port}"))
}

/// The non-empty GIDs of a port with their types ("RoCE v2", "IB/RoCE v1").
pub fn gid_table(dev: &str, port: u32) -> Result<Vec<GidEntry>, RxeError> {
    let dir = port_dir(dev, port);
    if !dir.exists() {
        return Err(RxeError::NoDevice(dev.to_string()));
    }
    let gids = dir.join("gids");
    let rd = fs::read_dir(&gids).map_err(|e| RxeError::Io { path: gids.display().to_string(), source: e })?;
    let mut out = vec![];
    for e in rd.flatten() {
        let Some(index) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        // Unused entries read as zero (or fail to read on some kernels).
        let Ok(gid) = fs::read_to_string(e.path()) else { continue };
        let gid = gid.trim().to_string();
        if gid.chars().all(|c| c == '0' || c == ':') {
            continue;
        }
        let kind = fs::read_to_string(dir.join(format!("gid_attrs/types/{index}"))).map(|s| s.trim().to_string()).unwrap_or_default();
        out.push(GidEntry { index, gid, kind });
    }
    out.sort_by_key(|g| g.index);
    Ok(out)
}

/// The sysfs spelling of the IPv4-mapped GID of `ip`: `0000:...:ffff:0a00:010b`.
pub fn ipv4_mapped_gid(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0000:0000:0000:0000:0000:ffff:{:02x}{:02x}:{:02x}{:02x}", o[0], o[1], o[2], o[3])
}

/// Picks the RoCE v2 GID of `ip` from a table.
pub fn find_gid(table: &[GidEntry], ip: Ipv4Addr) -> Option<u32> {
    let want = ipv4_mapped_gid(ip);
    table.iter().find(|g| g.gid == want && g.kind == "RoCE v2").map(|g| g.index)
}

/// The GID index perftest's `-x` needs to use `ip` on `dev` port 1.
pub fn gid_index(dev: &str, ip: Ipv4Addr) -> Result<u32, RxeError> {
    find_gid(&gid_table(dev, 1)?, ip).ok_or(RxeError::NoGid { dev: dev.to_string(), ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_gid_spelling() {
        assert_eq!(ipv4_mapped_gid(Ipv4Addr::new(10, 0, 1, 11)), "0000:0000:0000:0000:0000:ffff:0a00:010b");
    }

    #[test]
    fn finds_only_roce_v2_of_the_address() {
        let g = ipv4_mapped_gid(Ipv4Addr::new(10, 0, 1, 7));
        let t = vec![
            GidEntry { index: 0, gid: "fe80:0000:0000:0000:5054:00ff:fe99:0001".into(), kind: "IB/RoCE v1".into() },
            GidEntry { index: 2, gid: g.clone(), kind: "IB/RoCE v1".into() },
            GidEntry { index: 3, gid: g, kind: "RoCE v2".into() },
        ];
        assert_eq!(find_gid(&t, Ipv4Addr::new(10, 0, 1, 7)), Some(3));
        assert_eq!(find_gid(&t, Ipv4Addr::new(10, 0, 1, 8)), None);
    }
}
