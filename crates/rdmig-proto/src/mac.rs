//! The channel's frame MAC: hash, then PRF (the Carter-Wegman/UMAC shape).
//!
//! Every byte of a TCP transfer goes through the MAC on both ends, and inside the lab's TCG nodes
//! the MAC was the whole gap to iperf3 (a measurement build without it matched iperf3). So the
//! bulk of the bytes goes through NH, the universal hash of UMAC (RFC 4418, Black et al.,
//! "UMAC: Fast and Secure Message Authentication"), here with 64-bit words: for a block of
//! 64-bit little-endian words m_0..m_{2n-1} and key words k_i,
//!
//! ```text
//! NH_K(M) = sum over i of ((m_2i + k_2i) mod 2^64) * ((m_2i+1 + k_2i+1) mod 2^64)   mod 2^128
//! ```
//!
//! one multiplication per 16 bytes where SipHash-2-4 needs two SipRounds per 8. NH is
//! 2^-64-almost-universal on equal-length blocks: for two different blocks of the same length
//! and a random secret key, the hashes collide with probability at most 2^-64.
//!
//! The frame's tag is SipHash-2-4-128 under a second, independent key, over
//! `counter | payload length | NH(block 0) | NH(block 1) | ...` (1 KiB blocks, the last one
//! zero-padded to whole words: the length, inside the PRF, tells padded frames apart). NH's
//! outputs are never shown, only the PRF of them; the counter makes every PRF input unique. To get
//! a different payload accepted in place of frame `c`, a forger must either make NH collide on a
//! block (at most 2^-64, the key being secret) or guess SipHash's 128-bit output; a failed guess
//! closes the connection.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};

/// Bytes hashed by NH into one 16-byte value.
pub const BLOCK: usize = 1024;
/// NH key words: one per 8 bytes of a block.
pub const NH_WORDS: usize = BLOCK / 8;

/// One direction's frame MAC keys. Both come from the connection's key derivation.
#[derive(Clone)]
pub struct FrameMac {
    nh: [u64; NH_WORDS],
    prf: [u8; 16],
}

impl FrameMac {
    pub fn new(nh: [u64; NH_WORDS], prf: [u8; 16]) -> Self {
        Self { nh, prf }
    }

    /// The tag of frame number `counter` carrying `payload`.
    pub fn tag(&self, counter: u64, payload: &[u8]) -> [u8; 16] {
        let mut prf = SipHasher24::new_with_key(&self.prf);
        prf.write(&counter.to_le_bytes());
        prf.write(&(payload.len() as u64).to_le_bytes());
        for block in payload.chunks(BLOCK) {
            prf.write(&nh(&self.nh, block).to_le_bytes());
        }
        prf.finish128().as_bytes()
    }
}

/// NH of one block of at most `BLOCK` bytes; a partial last word pair is padded with zeros.
fn nh(key: &[u64; NH_WORDS], block: &[u8]) -> u128 {
    debug_assert!(block.len() <= BLOCK);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut sum = 0u128;
    let mut pairs = block.chunks_exact(16);
    let mut k = key.chunks_exact(2);
    for (p, k) in (&mut pairs).zip(&mut k) {
        let a = word(&p[..8]).wrapping_add(k[0]);
        let b = word(&p[8..]).wrapping_add(k[1]);
        sum = sum.wrapping_add(a as u128 * b as u128);
    }
    let rest = pairs.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        let k = k.next().expect("a block has at most NH_WORDS words");
        let a = word(&last[..8]).wrapping_add(k[0]);
        let b = word(&last[8..]).wrapping_add(k[1]);
        sum = sum.wrapping_add(a as u128 * b as u128);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(seed: u64) -> FrameMac {
        let mut nh = [0u64; NH_WORDS];
        let mut x = seed;
        for w in nh.iter_mut() {
            // A fixed, unremarkable key for tests (splitmix64).
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *w = z ^ (z >> 31);
        }
        FrameMac::new(nh, (seed as u128).to_le_bytes())
    }

    #[test]
    fn nh_follows_its_definition() {
        let m = mac(1);
        let block: Vec<u8> = (0..BLOCK).map(|i| (i * 7 + 3) as u8).collect();
        let mut want = 0u128;
        for i in 0..NH_WORDS / 2 {
            let a = u64::from_le_bytes(block[16 * i..16 * i + 8].try_into().unwrap()).wrapping_add(m.nh[2 * i]);
            let b = u64::from_le_bytes(block[16 * i + 8..16 * i + 16].try_into().unwrap()).wrapping_add(m.nh[2 * i + 1]);
            want = want.wrapping_add((a as u128).wrapping_mul(b as u128));
        }
        assert_eq!(nh(&m.nh, &block), want);
        // A partial block hashes like its zero-padded whole.
        let mut padded = [0u8; 32];
        padded[..21].copy_from_slice(&block[..21]);
        assert_eq!(nh(&m.nh, &block[..21]), nh(&m.nh, &padded));
    }

    #[test]
    fn tag_depends_on_every_byte_counter_length_and_keys() {
        let m = mac(2);
        // Not periodic over a block (blocks must differ for the order check).
        let data: Vec<u8> = (0..(3 * BLOCK + 77) as u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8).collect();
        assert_ne!(data[..BLOCK], data[BLOCK..2 * BLOCK]);
        let base = m.tag(9, &data);
        assert_eq!(base, m.tag(9, &data));
        for i in [0, 1, 15, 16, BLOCK - 1, BLOCK, 2 * BLOCK + 500, data.len() - 1] {
            let mut d = data.clone();
            d[i] ^= 0x40;
            assert_ne!(base, m.tag(9, &d), "byte {i}");
        }
        assert_ne!(base, m.tag(10, &data), "counter");
        // Trailing zeros change the length, which the PRF sees, though NH pads with zeros.
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(base, m.tag(9, &longer), "length");
        assert_ne!(base, m.tag(9, &data[..data.len() - 1]));
        // Swapping two blocks changes the order of NH outputs.
        let mut swapped = data.clone();
        swapped[..BLOCK].copy_from_slice(&data[BLOCK..2 * BLOCK]);
        swapped[BLOCK..2 * BLOCK].copy_from_slice(&data[..BLOCK]);
        assert_ne!(base, m.tag(9, &swapped), "block order");
        assert_ne!(base, mac(3).tag(9, &data), "keys");
        assert_ne!(m.tag(0, b""), m.tag(1, b""));
    }
}
