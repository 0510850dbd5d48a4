//! A piece of CRIU's page stream as the agents decode it (`rdmig_proto::pagestream::decode`: the
//! destination's forward pieces, the source's answers): no panic on any bytes; a piece that
//! decodes is exactly what `data_piece` / `end_piece` make of its contents; and both of those
//! decode back to what they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdmig_proto::pagestream::{data_piece, decode, end_piece, Piece, SUM};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Piece::Data(d)) => {
            assert!(!d.is_empty(), "an empty data piece");
            assert_eq!(data_piece(d), data);
        }
        Ok(Piece::End { len, sum }) => {
            assert_eq!(sum.len(), SUM);
            assert_eq!(end_piece(len, sum), data);
        }
        Err(_) => {}
    }
    // The other way round: the input as a piece's contents.
    if !data.is_empty() {
        assert_eq!(decode(&data_piece(data)), Ok(Piece::Data(data)));
    }
    if let Some((len, sum)) = data.split_first_chunk::<8>() {
        if sum.len() >= SUM {
            let (len, sum) = (u64::from_le_bytes(*len), &sum[..SUM]);
            assert_eq!(decode(&end_piece(len, sum)), Ok(Piece::End { len, sum }));
        }
    }
});
