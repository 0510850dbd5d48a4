//! The channel's frame reader (`wire::read_frame`, under TLS in the agent) over an in-memory
//! stream that delivers the input in pieces: no panic, and exactly the frames and the error a
//! plain reading of the bytes gives (a length over the receiver's cap or the frame limit is
//! refused before its payload is read, a cut frame is the peer closing). What was read, written
//! again with `write_frame`, is the stream read.
//!
//! Input: the duplex buffer's size less one (so reads see every split of the stream), the
//! receiver's cap (0: the frame limit, 1: a message's, 2: none of its own, else that many
//! bytes), then the stream.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rdmig_proto::msg::MAX_MSG;
use rdmig_proto::wire::fuzzing::{read_frame, write_frame};
use rdmig_proto::wire::{WireError, MAX_PAYLOAD};
use tokio::io::AsyncWriteExt;

/// One runtime for every input: building one per input would cost more than the input.
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime"));

/// What reading `stream` must give: its whole frames, then how it ends.
enum End {
    /// The peer closed (mid-header or mid-payload, or at a frame's end).
    Closed,
    TooLarge(usize),
}

fn expected(mut stream: &[u8], cap: usize) -> (Vec<&[u8]>, End) {
    let mut frames = vec![];
    loop {
        let Some((len, rest)) = stream.split_first_chunk::<4>() else { return (frames, End::Closed) };
        let len = u32::from_le_bytes(*len) as usize;
        if len > cap.min(MAX_PAYLOAD) {
            return (frames, End::TooLarge(len));
        }
        if rest.len() < len {
            return (frames, End::Closed);
        }
        frames.push(&rest[..len]);
        stream = &rest[len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let [buf, cap, stream @ ..] = data else { return };
    let buf = *buf as usize + 1;
    let cap = match cap {
        0 => MAX_PAYLOAD,
        1 => MAX_MSG,
        2 => usize::MAX,
        n => *n as usize,
    };
    let (want, end) = expected(stream, cap);
    RT.block_on(async {
        let (mut tx, mut rx) = tokio::io::duplex(buf);
        let send = async move {
            // The reader may stop early (a refused length): then this write fails, which is fine.
            let _ = tx.write_all(stream).await;
            // Dropping `tx` closes the stream: the reader sees the end.
        };
        let receive = async move {
            // One buffer for all frames, as a channel reuses its own.
            let mut rbuf = vec![];
            let mut got = vec![];
            let err = loop {
                match read_frame(&mut rx, &mut rbuf, cap).await {
                    Ok(n) => got.push(rbuf[..n].to_vec()),
                    Err(e) => break e,
                }
            };
            // `rx` is dropped here, so a writer still blocked on a full buffer fails.
            (got, err)
        };
        let ((), (got, err)) = tokio::join!(send, receive);
        assert_eq!(got, want);
        match (end, &err) {
            (End::Closed, WireError::Closed) => {}
            (End::TooLarge(n), WireError::TooLarge(m)) if n == *m => {}
            (_, e) => panic!("the stream ended with {e:?}"),
        }
        let mut again = vec![];
        for f in &got {
            write_frame(&mut again, f).await.expect("a frame read is written");
        }
        assert_eq!(again, stream[..again.len()]);
    });
});
