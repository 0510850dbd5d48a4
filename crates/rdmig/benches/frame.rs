//! Where a transfer's time goes, per 1 MiB frame: the keyed checks an RDMA chunk could get
//! (HMAC-SHA256 is `DataSum`'s; SipHash-2-4 was wire v2's frame MAC), checksums, copies, and the
//! whole TLS channel (encrypt, write, read, decrypt) over an in-memory pipe.
//!
//!     cargo bench --bench frame
//!
//! The lab's nodes are TCG guests: run the same binary inside one to see what counts there
//! (`rdmig lab exec node1 -- <bench binary> --bench --warm-up-time 1 --measurement-time 3`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const FRAME: usize = 1 << 20;

fn primitives(c: &mut Criterion) {
    let data: Vec<u8> = (0..FRAME).map(|i| (i * 7 + i / 4096) as u8).collect();
    let key = [0x42u8; 32];
    let mut g = c.benchmark_group("per_frame_1MiB");
    g.throughput(Throughput::Bytes(FRAME as u64));
    let mut dst = vec![0u8; FRAME];
    g.bench_function("copy", |b| b.iter(|| dst.copy_from_slice(black_box(&data))));
    g.bench_function("zeroed_alloc", |b| b.iter(|| black_box(vec![0u8; FRAME])));
    g.bench_function("crc32fast", |b| b.iter(|| crc32fast::hash(black_box(&data))));
    g.bench_function("xxh3_64", |b| b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&data))));
    g.bench_function("hmac_sha256", |b| {
        use hmac::{Hmac, Mac};
        let m = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        b.iter(|| {
            let mut m = m.clone();
            m.update(black_box(&data));
            m.finalize().into_bytes()
        })
    });
    g.bench_function("siphash24_128 (wire v2's MAC)", |b| {
        use siphasher::sip128::{Hasher128, SipHasher24};
        use std::hash::Hasher;
        b.iter(|| {
            let mut m = SipHasher24::new_with_key(&[7u8; 16]);
            m.write(black_box(&data));
            m.finish128()
        })
    });
    g.bench_function("blake3_keyed", |b| b.iter(|| blake3::keyed_hash(&key, black_box(&data))));
    g.bench_function("chacha20poly1305_aad_only", |b| {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let a = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            a.encrypt_in_place_detached(&nonce.into(), black_box(&data), &mut []).unwrap()
        })
    });
    // An RDMA chunk's seal (encrypt and tag, `transport::rdma::ChunkKey`) and the alternatives.
    let mut buf = data.clone();
    g.bench_function("chacha20poly1305_seal (RustCrypto)", |b| {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let a = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            a.encrypt_in_place_detached(&nonce.into(), b"", black_box(&mut buf)).unwrap()
        })
    });
    for (name, alg) in
        [("aes256gcm_seal (aws-lc-rs, RDMA chunks)", &aws_lc_rs::aead::AES_256_GCM), ("chacha20poly1305_seal (aws-lc-rs)", &aws_lc_rs::aead::CHACHA20_POLY1305)]
    {
        g.bench_function(name, |b| {
            use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
            let k = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                k.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), black_box(&mut buf)).unwrap()
            })
        });
    }
    // Authentication alone (the chunk's data in clear, `--encrypt` not given): GMAC, i.e.
    // AES-256-GCM with the chunk as additional data and nothing to encrypt (NIST SP 800-38D).
    g.bench_function("gmac_aes256 (aws-lc-rs, data as AAD)", |b| {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            k.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(black_box(&data[..])), &mut []).unwrap()
        })
    });
    g.bench_function("hmac_sha256 (aws-lc-rs)", |b| {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        b.iter(|| aws_lc_rs::hmac::sign(&k, black_box(&data)))
    });
    g.finish();
}

fn channel(c: &mut Criterion) {
    use rdmig_proto::wire::{Channel, Limits};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ca = rdmig_proto::tls::testing::TestCa::new();
    let (ctls, stls) = (ca.node("src", &[]).client(Some("dst")).unwrap(), ca.node("dst", &[]).server().unwrap());
    let (mut tx, mut rx) = rt.block_on(async {
        let (a, b) = tokio::io::duplex(4 << 20);
        let name = ctls.server_name(std::net::Ipv4Addr::LOCALHOST.into());
        let (c, s) = tokio::join!(Channel::client_within(a, &ctls, name, Limits::default()), Channel::server_within(b, &stls, Limits::default()));
        (c.unwrap(), s.unwrap())
    });
    let data = vec![0x5au8; FRAME];
    let mut g = c.benchmark_group("channel");
    g.throughput(Throughput::Bytes(FRAME as u64));
    g.bench_function("tls_send_recv_1MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (s, r) = tokio::join!(tx.send_raw(&data), async { rx.recv_frame().await.map(|p| p.len()) });
                s.unwrap();
                black_box(r.unwrap());
            })
        })
    });
    g.finish();
}

criterion_group!(benches, primitives, channel);
criterion_main!(benches);
