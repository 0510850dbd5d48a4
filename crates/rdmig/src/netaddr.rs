//! Moving an IPv4 address between hosts with the process that uses it: `ip addr` and an
//! unsolicited ARP, so that neighbours (RoCE peers and TCP peers alike) send to the new host at
//! once. rxe derives its RoCE v2 GIDs from the device's addresses, so the GID moves too.

use std::process::Command;

use rdmig_proto::msg::MovedAddr;

fn run(argv: &[&str]) -> Result<(), String> {
    let o = Command::new(argv[0]).args(&argv[1..]).output().map_err(|e| format!("{}: {e}", argv[0]))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", argv.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

fn cidr(m: &MovedAddr) -> String {
    format!("{}/{}", m.addr, m.prefix)
}

/// Whether the address is configured on its device here.
pub fn present(m: &MovedAddr) -> bool {
    Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &m.dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().any(|w| w == cidr(m)))
        .unwrap_or(false)
}

/// Adds the address (if missing) and announces it with unsolicited ARP.
pub fn add(m: &MovedAddr) -> Result<(), String> {
    if !present(m) {
        run(&["ip", "addr", "add", &cidr(m), "dev", &m.dev])?;
    }
    // The announcement leaves at once; arping then lingers for its interval, which must not
    // count as downtime: it is reaped in the background. (It exits 1 when nobody answers,
    // which is normal for unsolicited ARP.)
    let addr = m.addr.to_string();
    let mut child = Command::new("arping").args(["-q", "-U", "-c", "2", "-w", "2", "-I", &m.dev, &addr]).spawn().map_err(|e| format!("arping: {e}"))?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Removes the address (if present).
pub fn del(m: &MovedAddr) -> Result<(), String> {
    if present(m) {
        run(&["ip", "addr", "del", &cidr(m), "dev", &m.dev])?;
    }
    Ok(())
}

/// The device that holds `addr` here, and the prefix length.
pub fn find(addr: std::net::Ipv4Addr) -> Option<(String, u8)> {
    let o = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().ok()?;
    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let i = f.iter().position(|w| *w == "inet")?;
        let (a, p) = f.get(i + 1)?.split_once('/')?;
        (a.parse::<std::net::Ipv4Addr>().ok()? == addr).then(|| Some((f.get(1)?.trim_end_matches(':').to_string(), p.parse().ok()?)))?
    })
}
