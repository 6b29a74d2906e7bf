#![no_main]
//! Feeds arbitrary bytes to the HeliosTv stream decoder in arbitrary splits,
//! and every complete object to the message parser for both directions.
use heliostv::wire::{Decoder, Limits, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let chunk = usize::from(split).max(1);
    for origin in [Origin::Client, Origin::Server] {
        let mut decoder = Decoder::new(Limits { max_message: 4096, max_nesting: 16 });
        'feed: for piece in rest.chunks(chunk) {
            decoder.push(piece);
            loop {
                match decoder.next_object() {
                    Ok(Some(object)) => {
                        if let Ok(message) = object.into_message(origin) {
                            // Whatever decodes must survive a re-encoding unchanged
                            // (compared as bytes: a NaN inside is not equal to itself).
                            let bytes = message.to_bytes();
                            let mut again = Decoder::new(Limits::CLIENT);
                            again.push(&bytes);
                            let back = again.next_object().ok().flatten().map(|o| o.into_message(origin));
                            let back = back.and_then(Result::ok).map(|m| m.to_bytes());
                            assert_eq!(back, Some(bytes));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
});
