#![no_main]
use libfuzzer_sys::fuzz_target;

// Feeds arbitrary bytes to the htsmsg decoder, both as a stream of framed
// messages (as the server reads them) and as a bare body; whatever decodes
// must re-encode to a stable byte form (the encoder normalises BOOL/UUID).
fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some((prefix, tail)) = rest.split_first_chunk::<4>() {
        let Ok(len) = htsp::wire::frame_body_len(*prefix) else { break };
        let Some((body, tail)) = tail.split_at_checked(len) else { break };
        if htsp::wire::decode_body(body).is_err() {
            break;
        }
        rest = tail;
    }
    if let Ok(msg) = htsp::wire::decode_body(data) {
        let body = htsp::wire::encode_body(&msg);
        let again = htsp::wire::decode_body(&body).expect("re-encoded message decodes");
        assert_eq!(body, htsp::wire::encode_body(&again));
    }
});
