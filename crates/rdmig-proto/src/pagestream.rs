//! The pieces of CRIU's page stream as the agents relay it (rdmig's `transport::pagestream`):
//! each piece is a kind byte and its bytes. A data piece carries page-server protocol bytes; the
//! end piece carries how many data bytes came before it and their `DataSum`, which the receiver
//! checks before anything the page server wrote is used.

/// Kind byte of a data piece.
pub const DATA: u8 = 0;
/// Kind byte of the end piece.
pub const END: u8 = 1;
/// Length of a `DataSum` (an HMAC-SHA-256).
pub const SUM: usize = 32;

/// One piece of the stream, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Page-server bytes (never empty).
    Data(&'a [u8]),
    /// Bytes of data before it and their `DataSum`.
    End { len: u64, sum: &'a [u8] },
}

/// A data piece of `bytes`.
pub fn data_piece(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(DATA);
    v.extend_from_slice(bytes);
    v
}

/// The end piece: `len` bytes came before it, and `sum` is their `DataSum`.
pub fn end_piece(len: u64, sum: &[u8]) -> Vec<u8> {
    let mut v = vec![END];
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(sum);
    v
}

/// Decodes one piece as received; anything else than exactly what [`data_piece`] or
/// [`end_piece`] makes is refused.
pub fn decode(p: &[u8]) -> Result<Piece<'_>, String> {
    match p.split_first() {
        Some((&DATA, rest)) if !rest.is_empty() => Ok(Piece::Data(rest)),
        Some((&END, rest)) if rest.len() == 8 + SUM => Ok(Piece::End { len: u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")), sum: &rest[8..] }),
        _ => Err(format!("malformed page-stream piece ({} bytes, kind {:?})", p.len(), p.first())),
    }
}
