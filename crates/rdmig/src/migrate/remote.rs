//! The control channel to the destination agent: connecting, one request and its reply, pings
//! while this side is busy, and the fresh connections a failing migration opens to ask what
//! became of it or to abort it there.
//!
//! Every wait is bounded: connecting by [`CONNECT`], the hello and each frame by the channel's
//! [`Limits`] (each wait [`IO_WAIT`] at most, none past the migration's deadline), and the
//! questions asked after a failure by the time they are given.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::warn;

use super::Step;
use rdmig_proto::msg::{MigState, MigrationId, MsgError, Reply, Request};
use rdmig_proto::tls::ClientTls;
use rdmig_proto::wire::{self, Channel, Limits};

/// Longest wait for a TCP connection to the agent.
pub(super) const CONNECT: Duration = Duration::from_secs(10);
/// Longest wait for a reply (or for any frame to move): the agent answers every request but
/// the restore at once (a page server's end may take it up to a minute).
pub(crate) const IO_WAIT: Duration = Duration::from_secs(90);
/// Longest wait for the restore's reply: the agent gives CRIU 600 s.
pub(super) const RESTORE_WAIT: Duration = Duration::from_secs(630);
/// How often a busy source (dumping, running a hook) pings: well within the agent's idle
/// deadline.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long the source keeps asking what became of a restore whose reply was lost.
pub(super) const ASK_WINDOW: Duration = Duration::from_secs(15);
/// How long the source tries to tell the destination to abort (it aborts by itself later).
const ABORT_WINDOW: Duration = Duration::from_secs(10);

/// Connects to the agent at `to`; the TLS handshake and every later wait within `limits`.
pub(crate) async fn connect(to: SocketAddr, tls: &ClientTls, limits: Limits) -> Result<Channel<TcpStream>, String> {
    let until = limits.deadline.map_or(Instant::now() + CONNECT, |d| d.min(Instant::now() + CONNECT));
    let sock = tokio::time::timeout_at(until, TcpStream::connect(to))
        .await
        .map_err(|_| format!("cannot reach the destination agent at {to}: timed out"))?
        .map_err(|e| format!("cannot reach the destination agent at {to}: {e}"))?;
    sock.set_nodelay(true).ok();
    if let Err(e) = wire::keepalive(&sock) {
        warn!("keepalive on the connection to {to}: {e}");
    }
    Channel::client_within(sock, tls, tls.server_name(to.ip()), limits).await.map_err(|e| format!("destination agent at {to}: {e}"))
}

pub(super) async fn call(ch: &mut Channel<TcpStream>, req: &Request) -> Result<Reply, MsgError> {
    ch.send_msg(req).await?;
    ch.recv_msg().await
}

pub(super) fn expect_ack(r: Reply, what: &str) -> Result<(), Step> {
    match r {
        Reply::Ack => Ok(()),
        Reply::Failed(e) => Err(Step::Fail(format!("{what}: {e}"))),
        other => Err(Step::Fail(format!("{what}: unexpected reply {other:?}"))),
    }
}

/// Runs local `work` (a dump, a hook) while the destination keeps hearing from us: a `Ping`
/// every [`HEARTBEAT`], so that its idle deadline does not drop a source that is only busy.
/// Returns the work's result and whether the channel stayed alive (pings stop at the first
/// failure; the work is never cut short).
pub(super) async fn busy<T>(ch: &mut Channel<TcpStream>, work: impl Future<Output = T>) -> (T, Result<(), MsgError>) {
    busy_pinging(ch, HEARTBEAT, work).await
}

async fn busy_pinging<T>(ch: &mut Channel<TcpStream>, every: Duration, work: impl Future<Output = T>) -> (T, Result<(), MsgError>) {
    let mut work = std::pin::pin!(work);
    let mut alive = Ok(());
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            r = &mut work => return (r, alive),
            // A ping runs to its end (its reply must not be left on the channel); the work goes
            // on meanwhile, only its completion is noticed later.
            _ = tick.tick(), if alive.is_ok() => {
                alive = match call(ch, &Request::Ping).await {
                    Ok(Reply::Ack) => Ok(()),
                    Ok(other) => Err(MsgError::Decode(format!("unexpected reply {other:?} to a ping"))),
                    Err(e) => Err(e),
                };
            }
        }
    }
}

/// Asks the destination (on fresh connections) what became of a migration whose reply was
/// lost, until it gives a final answer or `until`. A restore still running is no answer yet:
/// the last state heard is returned then.
pub(super) async fn ask_state(to: SocketAddr, tls: &ClientTls, id: &MigrationId, until: Instant) -> Option<MigState> {
    let mut heard = None;
    while Instant::now() < until {
        if let Ok(mut ch) = connect(to, tls, Limits::idle(IO_WAIT).until(until)).await {
            if let Ok(Reply::State(s)) = call(&mut ch, &Request::Status { id: id.clone() }).await {
                if s != MigState::Restoring {
                    return Some(s);
                }
                heard = Some(s);
            }
        }
        tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(500))).await;
    }
    heard
}

/// Tells the destination (on fresh connections, by `until` and within [`ABORT_WINDOW`]) to
/// drop the migration: its images, and any copy it restored. An agent that is restarting is
/// asked again until the window ends. (If it cannot be told, it drops the migration itself once
/// this source has been silent for its `--orphan-after`.)
pub(super) async fn abort_remote(to: SocketAddr, tls: &ClientTls, id: &MigrationId, until: Instant) {
    let until = until.min(Instant::now() + ABORT_WINDOW);
    let mut last = String::from("no time left to ask");
    while Instant::now() < until {
        match connect(to, tls, Limits::idle(IO_WAIT).until(until)).await {
            Ok(mut ch) => match call(&mut ch, &Request::Abort { id: id.clone() }).await {
                Ok(_) => return,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e,
        }
        tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(500))).await;
    }
    warn!("abort at the destination: {last}");
}

/// Commits on a fresh connection (by `until`), for when the migration's own connection failed:
/// `Ok` once the destination says it is committed (with the time it let the copy run, when this
/// call did it), else its last known state.
pub(super) async fn commit_again(to: SocketAddr, tls: &ClientTls, id: &MigrationId, until: Instant) -> Result<Option<u64>, Option<MigState>> {
    while Instant::now() < until {
        if let Ok(mut ch) = connect(to, tls, Limits::idle(IO_WAIT).until(until)).await {
            match call(&mut ch, &Request::Status { id: id.clone() }).await {
                Ok(Reply::State(MigState::Committed)) => return Ok(None),
                Ok(Reply::State(MigState::Restored { .. })) => {
                    if let Ok(Reply::Committed { resumed_ns }) = call(&mut ch, &Request::Commit { id: id.clone() }).await {
                        return Ok(Some(resumed_ns));
                    }
                }
                Ok(Reply::State(s)) => return Err(Some(s)),
                _ => {}
            }
        }
        tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(500))).await;
    }
    Err(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rdmig_proto::tls::testing::TestCa;
    use rdmig_proto::tls::ServerTls;

    /// One CA for all tests here: the source's client side, and an agent on 127.0.0.1.
    fn ca() -> &'static TestCa {
        static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
        CA.get_or_init(TestCa::new)
    }

    fn tls() -> ClientTls {
        ca().node("src", &[]).client(None).unwrap()
    }

    fn agent_tls() -> ServerTls {
        ca().node("dst", &["127.0.0.1"]).server().unwrap()
    }

    /// Accepts connections and never says a word.
    async fn silent_agent() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut keep = vec![];
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_silent_agent_cannot_hold_the_source() {
        let to = silent_agent().await;
        let t = std::time::Instant::now();
        let e = connect(to, &tls(), Limits::idle(Duration::from_millis(300))).await.err().expect("a silent agent cannot complete the handshake");
        assert!(e.contains("nothing moved"), "{e}");
        // Asking what became of a migration gives up at its time, with no answer.
        let t1 = std::time::Instant::now();
        assert_eq!(ask_state(to, &tls(), &MigrationId::new("m-1").unwrap(), Instant::now() + Duration::from_millis(700)).await, None);
        assert!(t1.elapsed() < Duration::from_secs(3), "{:?}", t1.elapsed());
        let t2 = std::time::Instant::now();
        abort_remote(to, &tls(), &MigrationId::new("m-1").unwrap(), Instant::now() + Duration::from_millis(500)).await;
        assert!(t2.elapsed() < Duration::from_secs(3), "{:?}", t2.elapsed());
        assert_eq!(commit_again(to, &tls(), &MigrationId::new("m-1").unwrap(), Instant::now() + Duration::from_millis(500)).await, Err(None));
        assert!(t.elapsed() < Duration::from_secs(8));
    }

    #[tokio::test]
    async fn an_agent_that_hangs_after_the_handshake_times_the_call_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut ch = Channel::server_within(l.accept().await.unwrap().0, &agent_tls(), Limits::default()).await.unwrap();
            while ch.recv_raw().await.is_ok() {}
        });
        let mut ch = connect(to, &tls(), Limits::idle(Duration::from_millis(300))).await.unwrap();
        let t = std::time::Instant::now();
        let e = call(&mut ch, &Request::Time).await.unwrap_err();
        assert!(e.to_string().contains("nothing moved"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn busy_work_pings_and_notices_a_dead_channel() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = l.local_addr().unwrap();
        // An agent that answers two pings, then stops answering.
        let agent = tokio::spawn(async move {
            let mut ch = Channel::server_within(l.accept().await.unwrap().0, &agent_tls(), Limits::default()).await.unwrap();
            let mut pings = 0;
            while let Ok(Request::Ping) = ch.recv_msg::<Request>().await {
                pings += 1;
                if pings > 2 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                ch.send_msg(&Reply::Ack).await.unwrap();
            }
        });
        let mut ch = connect(to, &tls(), Limits::idle(Duration::from_millis(300))).await.unwrap();
        let every = Duration::from_millis(100);
        let (v, alive) = busy_pinging(&mut ch, every, async {
            tokio::time::sleep(every * 2 + every / 2).await;
            7
        })
        .await;
        assert_eq!(v, 7);
        assert!(alive.is_ok(), "{alive:?}");
        let (v, alive) = busy_pinging(&mut ch, every, async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            8
        })
        .await;
        assert_eq!(v, 8, "the work finished although the channel died");
        assert!(alive.unwrap_err().to_string().contains("nothing moved"));
        agent.abort();
    }
}
