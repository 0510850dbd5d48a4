//! CRIU's page stream between the agents, so that dumping, sending and writing at the
//! destination overlap (issue 7).
//!
//! At the source, `criu pre-dump|dump --page-server --ps-socket FD` writes its page-server
//! protocol into one end of a socket pair; [`source`] relays it to the destination agent, whose
//! [`destination`] feeds it to `criu page-server --ps-socket FD` writing the page images there.
//! The page server's few answers (has-parent flags, the final status) travel back the same way.
//!
//! Forward, the stream rides the migration's transport (RDMA ring or the authenticated TCP
//! channel); backward, always the TCP channel. Each piece is a kind byte and its bytes; the last
//! piece carries the length and the `DataSum` (an HMAC under a key of this stream exported from
//! the TLS session) and always travels over TLS, so the destination checks the stream end to
//! end before the migration may use what the page server wrote. Over RDMA each chunk is opened
//! (authenticated, `rdma::ChunkKey`) before a byte of it reaches the page server.
//!
//! Every wait is bounded: the channel's limits hold for its frames, except the page server's
//! answers while CRIU dumps (they come now and then): those get the channel's idle bound only
//! once the stream has ended, and are not waited for at all once it broke. RDMA chunks are bounded by the lanes' own stall detection and the
//! channel's deadline.

use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::rdma::{RdmaReceiver, RdmaSender, SLOT};
use super::DataSum;
use rdmig_proto::pagestream::{decode, end_piece, Piece, DATA, SUM};
use rdmig_proto::wire::Channel;

/// A piece fits an RDMA slot with its kind byte.
const PIECE: usize = SLOT - 1;
/// The destination gives up when the source sends nothing for this long (CRIU pauses between
/// pages while it freezes and walks the process, but not for minutes).
const IDLE: Duration = Duration::from_secs(120);

/// Socket buffers of a page-stream socket pair, each way. The default (about 200 KiB) makes
/// CRIU block, and the relay read, in small steps: per-piece costs (a frame's MAC, an RDMA
/// write, two task switches on one emulated CPU) then add up.
const SOCK_BUF: libc::c_int = 4 << 20;

/// Enlarges both buffers of one end of a page-stream socket pair (root may exceed the
/// system's maximum; if even that fails, the defaults only cost speed).
pub fn enlarge_buffers(fd: std::os::fd::RawFd) {
    for (force, plain) in [(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF), (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)] {
        let v = SOCK_BUF;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: setsockopt(2) reads `len` bytes from a live local.
        unsafe {
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, &v as *const _ as *const libc::c_void, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, &v as *const _ as *const libc::c_void, len);
            }
        }
    }
}

/// Makes CRIU's end of the socket fail at once (it may be blocked writing to us).
fn hang_up(fd: std::os::fd::RawFd) {
    // SAFETY: shutdown(2) on a descriptor the caller keeps open; no memory is involved.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Sends one RDMA piece, within `deadline`.
async fn send_rdma(r: &RdmaSender, piece: Vec<u8>, deadline: Option<tokio::time::Instant>) -> Result<(), String> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, r.send(piece)).await.map_err(|_| "RDMA stream: the deadline passed".to_string())?,
        None => r.send(piece).await,
    }
    .map_err(|e| e.to_string())
}

/// Source side: relays CRIU's page stream (`criu` holds the other end of `sock`) to the
/// destination until CRIU closes it; returns the bytes relayed.
pub async fn source(mut sock: UnixStream, ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>) -> Result<u64, String> {
    let mut sum = DataSum::for_sending(ch);
    let limits = ch.limits();
    let (mut rd, mut wr) = ch.split();
    // The answers wait on CRIU's pace: only the deadline bounds them until the stream's end.
    rd.set_idle(None);
    let forward_done = tokio::sync::Notify::new();
    let forward_failed = std::sync::atomic::AtomicBool::new(false);
    // The answers were not read to their end: the channel is out of step.
    let cut_short = std::sync::atomic::AtomicBool::new(false);
    // Valid as long as `sock`, which lives until this function returns.
    let fd = sock.as_raw_fd();
    let (mut from_criu, mut to_criu) = sock.split();
    let forward = async {
        let mut len = 0u64;
        let mut buf = vec![0u8; PIECE + 1];
        loop {
            let n = from_criu.read(&mut buf[1..]).await.map_err(|e| format!("reading CRIU's page stream: {e}"))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            buf[0] = DATA;
            let piece = &buf[..=n];
            match rdma {
                Some(r) => {
                    sum.update(piece);
                    send_rdma(r, piece.to_vec(), limits.deadline).await?
                }
                None => {
                    wr.send_raw(piece).await.map_err(|e| format!("destination: {e}"))?;
                    sum.update(piece);
                }
            }
        }
        // The end (length and check) always travels over TLS, also after data over RDMA.
        wr.send_raw(&end_piece(len, &sum.finish())).await.map_err(|e| format!("destination: {e}"))?;
        Ok::<u64, String>(len)
    };
    let forward = async {
        let r = forward.await;
        if r.is_err() {
            hang_up(fd);
            forward_failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        forward_done.notify_one();
        r
    };
    let backward = async {
        // The page server's answers; CRIU may be gone (then they are dropped, but read to the
        // end so the channel stays in step).
        let mut criu_gone = false;
        loop {
            let frame = rd.recv_raw().await.map_err(|e| format!("destination: {e}"))?;
            match decode(&frame)? {
                Piece::Data(d) => {
                    if !criu_gone && to_criu.write_all(d).await.is_err() {
                        criu_gone = true;
                    }
                }
                Piece::End { .. } => return Ok::<(), String>(()),
            }
        }
    };
    let backward = async {
        let mut answers = std::pin::pin!(backward);
        tokio::select! {
            r = &mut answers => r,
            _ = forward_done.notified() => match limits.idle {
                // The stream broke on its way (a dead RDMA lane, say): the destination waits
                // for the rest until its own bound, and its answers with it. They are not waited
                // for: the migration fails over the break at once (the process is frozen during
                // the final dump), and the destination is told to abort on a fresh connection.
                _ if forward_failed.load(std::sync::atomic::Ordering::Relaxed) => {
                    cut_short.store(true, std::sync::atomic::Ordering::Relaxed);
                    Err("destination: its answers were not awaited after the page stream broke".to_string())
                }
                // The stream has ended: the rest of the answers come at once, or never.
                Some(idle) => tokio::time::timeout(idle, answers).await.unwrap_or_else(|_| {
                    cut_short.store(true, std::sync::atomic::Ordering::Relaxed);
                    Err(format!("destination: no answer for {} s after the page stream", idle.as_secs()))
                }),
                None => answers.await,
            },
        }
    };
    let (f, b) = tokio::join!(forward, backward);
    if cut_short.load(std::sync::atomic::Ordering::Relaxed) {
        // Cut short mid-frame perhaps: the channel is out of step.
        ch.abandon();
    }
    // A broken forward path is the cause when the answers failed too (they were not waited
    // for after the break).
    let n = f?;
    b?;
    Ok(n)
}

/// Destination side: feeds the stream to the page server (`server` holds the other end of
/// `sock`) and relays its answers back, until the source's end piece and the server's exit.
/// `stop_server` is called when the stream breaks: the server would otherwise wait forever.
pub async fn destination(
    mut sock: UnixStream,
    ch: &mut Channel<TcpStream>,
    rdma: Option<&mut RdmaReceiver>,
    stop_server: impl FnOnce(),
) -> Result<u64, String> {
    let sum = DataSum::for_receiving(ch);
    let (mut rd, mut wr) = ch.split();
    if rdma.is_some() {
        // The data comes over RDMA, watched for silence below; the channel carries nothing
        // until the end (a read of it only notices a source that went away).
        rd.set_idle(None);
    }
    let (mut from_server, mut to_server) = sock.split();
    let forward = async {
        let mut len = 0u64;
        let mut server_gone: Option<String> = None;
        let mut rdma = rdma;
        let mut sum = sum;
        // Over RDMA the end (length and check) comes over TLS, maybe before the last data.
        let mut end: Option<(u64, Vec<u8>)> = None;
        let (sent, want) = loop {
            if let Some((sent, _)) = &end {
                if len >= *sent {
                    break end.take().expect("just seen");
                }
            }
            let owned;
            let piece: &[u8] = match rdma.as_deref_mut() {
                // Each chunk was opened (authenticated) in its lane before it gets here.
                Some(r) => tokio::select! {
                    c = r.recv() => match c {
                        Some(Ok(c)) => {
                            owned = c;
                            &owned[..]
                        }
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("the RDMA path closed mid page stream".into()),
                    },
                    // Nothing but the end may come on the channel, once.
                    f = rd.recv_raw(), if end.is_none() => {
                        let f = f.map_err(|e| format!("source: {e}"))?;
                        match decode(&f)? {
                            Piece::End { len: sent, sum } => {
                                end = Some((sent, sum.to_vec()));
                                continue;
                            }
                            Piece::Data(_) => return Err("page data on the channel mid RDMA page stream".into()),
                        }
                    },
                    _ = tokio::time::sleep(IDLE) => return Err(format!("no page data for {} s", IDLE.as_secs())),
                },
                None => match tokio::time::timeout(IDLE, rd.recv_frame()).await {
                    Ok(Ok(f)) => f,
                    Ok(Err(e)) => return Err(format!("source: {e}")),
                    Err(_) => return Err(format!("no page data for {} s", IDLE.as_secs())),
                },
            };
            match decode(piece)? {
                Piece::Data(d) => {
                    sum.update(piece);
                    len += d.len() as u64;
                    if end.as_ref().is_some_and(|(sent, _)| len > *sent) {
                        return Err("more page data than the source announced".into());
                    }
                    if server_gone.is_none() {
                        if let Err(e) = to_server.write_all(d).await {
                            server_gone = Some(e.to_string());
                        }
                    }
                }
                Piece::End { .. } if rdma.is_some() => return Err("an end piece over RDMA (ends travel over TLS)".into()),
                Piece::End { len: sent, sum: want } => break (sent, want.to_vec()),
            }
        };
        let _ = to_server.shutdown().await;
        if sent != len || !sum.matches(&want) {
            return Err(format!("page stream damaged: {len} bytes arrived of {sent}, or their checksum differs"));
        }
        Ok::<u64, String>(len)
    };
    let forward = async {
        let r = forward.await;
        if r.is_err() {
            // The server would wait for the rest forever: stop it, so its answers end too.
            stop_server();
        }
        r
    };
    let backward = async {
        let mut buf = vec![0u8; (64 << 10) + 1];
        loop {
            // A read error means the server is gone: the same as its end.
            let n = from_server.read(&mut buf[1..]).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf[0] = DATA;
            wr.send_raw(&buf[..=n]).await.map_err(|e| format!("source: {e}"))?;
        }
        // The answers' end: TLS already protects them; no sum to check.
        wr.send_raw(&end_piece(0, &[0; SUM])).await.map_err(|e| format!("source: {e}"))
    };
    let (f, b) = tokio::join!(forward, backward);
    b?;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdmig_proto::pagestream::{data_piece, END};

    async fn channels() -> (Channel<TcpStream>, Channel<TcpStream>) {
        let ca = rdmig_proto::tls::testing::TestCa::new();
        let (ctls, stls) = (ca.node("src", &[]).client(Some("dst")).unwrap(), ca.node("dst", &[]).server().unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = rdmig_proto::wire::Limits::default();
        let (c, s) = tokio::join!(
            async { Channel::client_within(TcpStream::connect(addr).await.unwrap(), &ctls, ctls.server_name(addr.ip()), limits).await.unwrap() },
            async { Channel::server_within(l.accept().await.unwrap().0, &stls, limits).await.unwrap() }
        );
        (c, s)
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (a, b)
    }

    /// A stream bigger than a piece goes through whole and in order; the server's answer comes
    /// back to "CRIU" before it hangs up; both sides count the same bytes.
    #[tokio::test]
    async fn stream_and_answers_cross_over_the_channel() {
        let (mut src_ch, mut dst_ch) = channels().await;
        let (mut criu, relay_src) = pair();
        let (mut server, relay_dst) = pair();
        let data: Vec<u8> = (0..(3 * SLOT + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let want = data.clone();
        let fake_criu = async move {
            criu.write_all(&data).await.unwrap();
            let mut answer = [0u8; 4];
            criu.read_exact(&mut answer).await.unwrap();
            answer
        };
        let fake_server = async move {
            let mut got = vec![0u8; want.len()];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"done").await.unwrap();
            let mut rest = vec![];
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "bytes after the stream");
            assert!(got == want, "the server got other bytes");
        };
        let (answer, (), sent, received) =
            tokio::join!(fake_criu, fake_server, source(relay_src, &mut src_ch, None), destination(relay_dst, &mut dst_ch, None, || panic!("not broken")));
        assert_eq!(&answer, b"done");
        assert_eq!(sent.unwrap(), 3 * SLOT as u64 + 12345);
        assert_eq!(received.unwrap(), 3 * SLOT as u64 + 12345);
        // The channel is in step afterwards.
        src_ch.send_raw(b"next").await.unwrap();
        assert_eq!(dst_ch.recv_raw().await.unwrap(), b"next");
    }

    /// The source's connection dies mid-stream: the destination stops its server and fails.
    #[tokio::test]
    async fn a_dead_source_stops_the_server() {
        let (mut src_ch, mut dst_ch) = channels().await;
        let (server, relay_dst) = pair();
        src_ch.send_raw(&data_piece(b"some pages")).await.unwrap();
        drop(src_ch);
        let stopped = std::cell::Cell::new(false);
        // Stopping the server closes its end of the socket, as its exit does.
        let r = destination(relay_dst, &mut dst_ch, None, || {
            drop(server);
            stopped.set(true);
        })
        .await;
        assert!(r.unwrap_err().contains("source"));
        assert!(stopped.get());
    }

    /// The destination takes the stream but never sends the answers' end: the source gives up
    /// once its idle bound has passed after the stream, and the channel is given up with it.
    #[tokio::test]
    async fn a_destination_that_never_answers_does_not_hold_the_source() {
        let (mut src_ch, mut dst_ch) = channels().await;
        src_ch.set_limits(rdmig_proto::wire::Limits::idle(Duration::from_millis(300)));
        let (mut criu, relay_src) = pair();
        let swallow = tokio::spawn(async move { while dst_ch.recv_raw().await.is_ok() {} });
        let t = std::time::Instant::now();
        let fake_criu = async move {
            // Slower than the idle bound: answers are not expected while CRIU works.
            tokio::time::sleep(Duration::from_millis(500)).await;
            criu.write_all(b"pages").await.unwrap();
        };
        let ((), r) = tokio::join!(fake_criu, source(relay_src, &mut src_ch, None));
        assert!(r.unwrap_err().contains("no answer"));
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(src_ch.send_raw(b"next").await.is_err(), "the channel is out of step");
        swallow.abort();
    }

    /// The stream breaks on its way (here: the destination stops reading, so a send waits
    /// past the idle bound): the source fails at once, without waiting for the answers (the
    /// destination would send them only once its own bound for data has passed), and gives the
    /// channel up.
    #[tokio::test]
    async fn a_broken_stream_does_not_wait_for_the_answers() {
        let (mut src_ch, dst_ch) = channels().await;
        let idle = Duration::from_secs(2);
        src_ch.set_limits(rdmig_proto::wire::Limits::idle(idle));
        let (mut criu, relay_src) = pair();
        let t = std::time::Instant::now();
        let fake_criu = async move {
            // More than the sockets between the two channels hold; the write fails once the
            // relay hangs up.
            let _ = criu.write_all(&vec![7u8; 64 << 20]).await;
        };
        let ((), r) = tokio::join!(fake_criu, source(relay_src, &mut src_ch, None));
        let took = t.elapsed();
        assert!(r.is_err(), "a stream nobody read was relayed");
        // Waiting for the answers would add another `idle` (2 x idle in all, 4.07 s measured
        // before the fix); the margin below that is for a loaded machine.
        assert!(took >= idle && took < idle * 2 - Duration::from_millis(300), "the source gave up after {took:?}");
        assert!(src_ch.send_raw(b"next").await.is_err(), "the channel is out of step");
        drop(dst_ch);
    }

    /// The pieces the relays send: the seeds of the fuzz target `pagestream_decode`
    /// (fuzz/corpus/pagestream_decode/; `RDMIG_WRITE_FUZZ_SEEDS=1 cargo test -p rdmig --lib`
    /// rewrites them).
    #[test]
    fn fuzz_seeds_are_current() {
        let pages: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        let seeds = [
            ("data.bin", data_piece(&pages)),
            ("data_1.bin", data_piece(b"p")),
            ("end.bin", end_piece(1 << 33, &[0x5a; SUM])),
            // The end of the page server's answers (no sum).
            ("answers_end.bin", end_piece(0, &[0; SUM])),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pagestream_decode");
        for (name, bytes) in seeds {
            assert!(decode(&bytes).is_ok());
            let seed = dir.join(name);
            if std::env::var_os("RDMIG_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&seed, &bytes).unwrap();
            }
            assert!(std::fs::read(&seed).is_ok_and(|b| b == bytes), "{} is not the seed this test builds", seed.display());
        }
    }

    #[test]
    fn pieces_round_trip_and_garbage_is_refused() {
        assert_eq!(decode(&data_piece(b"pages")).unwrap(), Piece::Data(b"pages"));
        assert_eq!(decode(&end_piece(1 << 40, &[9; SUM])).unwrap(), Piece::End { len: 1 << 40, sum: &[9; SUM] });
        for bad in [&b""[..], &[DATA][..], &[END, 1, 2][..], &[7, 1][..]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
