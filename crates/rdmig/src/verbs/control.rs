//! The test programs' TCP control channel: one JSON message per line (endpoints, progress,
//! reports), beside the RDMA traffic they check.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use anyhow::{ensure, Context as _, Result};
use serde::{Deserialize, Serialize};

pub fn send_line<T: Serialize>(s: &mut TcpStream, v: &T) -> Result<()> {
    let mut line = serde_json::to_vec(v)?;
    line.push(b'\n');
    s.write_all(&line)?;
    Ok(())
}

pub fn recv_line<T: for<'de> Deserialize<'de>>(r: &mut BufReader<TcpStream>) -> Result<T> {
    let mut line = String::new();
    ensure!(r.read_line(&mut line)? > 0, "the other side closed the control connection");
    serde_json::from_str(&line).with_context(|| format!("bad control message {line:?}"))
}
