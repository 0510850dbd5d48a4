//! Runs perftest (`ib_send_bw` and friends) between two lab nodes over overlay addresses and
//! parses what both sides report.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::proto::ExecSpec;
use super::{ExecOutcome, Lab, LabError, Output};
use crate::plan::RXE_DEV;

/// perftest programs this runner knows how to drive (all share the same options we use).
pub const TESTS: &[&str] = &["ib_send_bw", "ib_write_bw", "ib_read_bw", "ib_send_lat", "ib_write_lat", "ib_read_lat"];
const PORT: u16 = 18515;

/// perftest's `-F`, which `Lab::perftest` and every lab scenario pass: a failed clock
/// calibration does not end the run. perftest times itself with the TSC and, at its end, calibrates the TSC against
/// gettimeofday() over about 0.2 s. If the fit is poor (r^2 < 0.9), it prints "Can't produce a
/// report" and exits 1, unless `-F` is given. A lab node's vCPU is a host thread that shares
/// this machine's 2 cores with the other nodes: a few milliseconds of host preemption between
/// a pair of clock reads spoils the fit. That happens to nodes that were never migrated as
/// well (f22: the client on node2, while node1 and node3 moved a container). With `-F` the run
/// still ends with its counts; its bandwidth figures are void then (perftest prints 0). The
/// scenarios check counts, not bandwidth, and the lab tests' `perftest_calibration` says when it
/// happened. It also keeps perftest from refusing a latency test over the odd CPU frequencies
/// that TCG guests report.
pub const KEEP_GOING: &str = "-F";

#[derive(Debug, Clone)]
pub struct PerftestOptions {
    pub test: String,
    pub server: String,
    pub client: String,
    /// Overlay address the server uses (its node's own by default; may be an extra address).
    pub server_addr: Option<Ipv4Addr>,
    pub client_addr: Option<Ipv4Addr>,
    pub iters: u64,
    pub size: u64,
    pub bidirectional: bool,
    pub qps: u32,
    pub timeout: Duration,
}

/// One row of perftest's result table, by column name (`#bytes`, `#iterations`, ...).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResultRow(pub BTreeMap<String, f64>);

impl ResultRow {
    pub fn iterations(&self) -> Option<u64> {
        self.0.get("#iterations").map(|v| *v as u64)
    }
    pub fn bw_avg_mb_s(&self) -> Option<f64> {
        self.0.get("BW average[MB/sec]").copied()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub node: String,
    pub addr: Ipv4Addr,
    pub gid_index: u32,
    pub argv: Vec<String>,
    pub exit_code: i32,
    pub result: Option<ResultRow>,
    pub output: String,
    pub stderr: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerftestReport {
    pub test: String,
    /// Iterations per QP (perftest's `-n`).
    pub iters: u64,
    pub qps: u32,
    pub size: u64,
    pub server: Side,
    pub client: Side,
    pub wall_ms: u64,
}

impl PerftestReport {
    /// Both sides exited 0 and reported exactly the asked iteration count (perftest reports
    /// the total of all QPs: `-n` times `-q`).
    pub fn complete(&self) -> bool {
        let want = self.iters * u64::from(self.qps.max(1));
        [&self.server, &self.client].iter().all(|s| s.exit_code == 0 && s.result.as_ref().and_then(ResultRow::iterations) == Some(want))
    }
}

/// Splits perftest's header into column names. Names may contain a space ("BW peak[MB/sec]",
/// "99% percentile[usec]") while columns may be one space apart ("#bytes #iterations"): a
/// token starting with '#' is a name of its own, other tokens run up to one ending in ']'.
fn header_columns(line: &str) -> Vec<String> {
    let mut cols = vec![];
    let mut cur: Vec<&str> = vec![];
    for tok in line.split_whitespace() {
        if tok.starts_with('#') && cur.is_empty() {
            cols.push(tok.to_string());
            continue;
        }
        cur.push(tok);
        if tok.ends_with(']') {
            cols.push(cur.join(" "));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        cols.push(cur.join(" "));
    }
    cols
}

/// Parses perftest's result table: a header line naming the columns (starting `#bytes`), then
/// one line of numbers.
pub fn parse_result(output: &str) -> Option<ResultRow> {
    let lines: Vec<&str> = output.lines().collect();
    let hi = lines.iter().position(|l| l.trim_start().starts_with("#bytes"))?;
    let header = header_columns(lines[hi]);
    let values: Vec<f64> = lines[hi + 1..].iter().find(|l| !l.trim().is_empty())?.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    if values.len() < 2 || values.len() != header.len() {
        return None;
    }
    Some(ResultRow(header.into_iter().zip(values).collect()))
}

impl Lab {
    async fn gid_index(&self, node: &str, addr: Ipv4Addr) -> Result<u32, LabError> {
        let st = self.load()?;
        let bin = st.rdmig_bin.display().to_string();
        let out = self.run_ok(node, &[&bin, "rxe", "gid-index", "--device", RXE_DEV, "--ip", &addr.to_string()]).await?;
        out.trim().parse().map_err(|_| LabError::Invalid(format!("{node}: unexpected gid-index output {out:?}")))
    }

    /// Waits until something listens on `port` on `node`.
    async fn wait_listening(&self, node: &str, port: u16, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let filter = format!("sport = :{port}");
        loop {
            let out = self.run_ok(node, &["ss", "-Hltn", &filter]).await?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Invalid(format!("{node}: nothing listens on port {port} after {} s", timeout.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn perftest(&self, o: &PerftestOptions) -> Result<PerftestReport, LabError> {
        if !TESTS.contains(&o.test.as_str()) {
            return Err(LabError::Invalid(format!("unknown perftest {:?}; one of {}", o.test, TESTS.join(", "))));
        }
        if o.server == o.client {
            return Err(LabError::Invalid("server and client must be different nodes".into()));
        }
        let st = self.load()?;
        let saddr = o.server_addr.unwrap_or(st.plan.node(&o.server)?.overlay_ip);
        let caddr = o.client_addr.unwrap_or(st.plan.node(&o.client)?.overlay_ip);
        let sgid = self.gid_index(&o.server, saddr).await?;
        let cgid = self.gid_index(&o.client, caddr).await?;

        let common = |gid: u32| {
            let mut a: Vec<String> = vec![
                o.test.clone(),
                "-d".into(),
                RXE_DEV.into(),
                "-x".into(),
                gid.to_string(),
                "-p".into(),
                PORT.to_string(),
                "-s".into(),
                o.size.to_string(),
                "-n".into(),
                o.iters.to_string(),
                KEEP_GOING.into(),
            ];
            if o.bidirectional && !o.test.ends_with("_lat") {
                a.push("-b".into());
            }
            if o.qps > 1 {
                a.extend(["-q".into(), o.qps.to_string()]);
            }
            a
        };
        let sargv = common(sgid);
        let mut cargv = common(cgid);
        cargv.push(saddr.to_string());
        let timeout_ms = Some(o.timeout.as_millis() as u64);

        let t0 = Instant::now();
        let server = {
            let lab = Lab { name: self.name.clone(), base: self.base.clone() };
            let spec = ExecSpec { argv: sargv.clone(), timeout_ms, ..Default::default() };
            let node = o.server.clone();
            tokio::spawn(async move { lab.exec(&node, spec, Output::Capture).await })
        };
        if let Err(e) = self.wait_listening(&o.server, PORT, Duration::from_secs(20)).await {
            server.abort();
            return Err(e);
        }
        let spec = ExecSpec { argv: cargv.clone(), timeout_ms, ..Default::default() };
        let client = self.exec(&o.client, spec, Output::Capture).await;
        // Aborting the server's request closes its connection, which kills the server process.
        let server = if client.as_ref().is_ok_and(ExecOutcome::success) {
            server.await.map_err(|e| LabError::io("server task", std::io::Error::other(e)))??
        } else {
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(joined) => joined.map_err(|e| LabError::io("server task", std::io::Error::other(e)))??,
                Err(_) => ExecOutcome { node: o.server.clone(), code: None, timed_out: true, ..Default::default() },
            }
        };
        let client = client?;
        let side = |node: &str, addr, gid, argv: Vec<String>, out: ExecOutcome| Side {
            node: node.to_string(),
            addr,
            gid_index: gid,
            argv,
            exit_code: out.shell_code(),
            result: parse_result(&out.stdout_str()),
            output: out.stdout_str(),
            stderr: out.stderr_str(),
        };
        Ok(PerftestReport {
            test: o.test.clone(),
            iters: o.iters,
            qps: o.qps,
            size: o.size,
            server: side(&o.server, saddr, sgid, sargv, server),
            client: side(&o.client, caddr, cgid, cargv, client),
            wall_ms: t0.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
---------------------------------------------------------------------------------------
                    Send BW Test
 Dual-port       : OFF\t\tDevice         : rxe0
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 65536      1000             7.70               7.69   \t\t   0.000123
---------------------------------------------------------------------------------------
";

    #[test]
    fn parses_bw_table() {
        let r = parse_result(SAMPLE).unwrap();
        assert_eq!(r.iterations(), Some(1000));
        assert_eq!(r.bw_avg_mb_s(), Some(7.69));
        assert_eq!(r.0.get("#bytes"), Some(&65536.0));
        assert_eq!(r.0.get("MsgRate[Mpps]"), Some(&0.000123));
    }

    #[test]
    fn complete_counts_the_iterations_of_every_qp() {
        let side = |table: &str| Side {
            node: "node1".into(),
            addr: "10.0.1.11".parse().unwrap(),
            gid_index: 1,
            argv: vec![],
            exit_code: 0,
            result: parse_result(table),
            output: table.into(),
            stderr: String::new(),
        };
        // SAMPLE reports 1000 iterations: -n 250 -q 4, or -n 1000 alone.
        let r = |iters, qps| PerftestReport { test: "ib_send_bw".into(), iters, qps, size: 65536, server: side(SAMPLE), client: side(SAMPLE), wall_ms: 1 };
        assert!(r(250, 4).complete());
        assert!(r(1000, 1).complete());
        assert!(!r(1000, 4).complete());
        assert!(!r(250, 1).complete());
    }

    #[test]
    fn parses_lat_table() {
        let t = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] \n 8       200          200.00         9286.22      321.58          988.15         1751.78         1585.18                 6509.66\n";
        let r = parse_result(t).unwrap();
        assert_eq!(r.iterations(), Some(200));
        assert_eq!(r.0.get("t_typical[usec]"), Some(&321.58));
        assert_eq!(r.0.get("99.9% percentile[usec]"), Some(&6509.66));
        assert_eq!(r.0.len(), 9);
    }

    #[test]
    fn no_table_no_result() {
        assert!(parse_result("Couldn't connect to 10.0.1.11:18515").is_none());
        assert!(parse_result(" #bytes  #iterations\n garbage here\n").is_none());
    }
}
