#![no_main]
use libfuzzer_sys::fuzz_target;

// A Socket.IO event array `["name", data]` as a client would send it; also the token and
// ticket decoders, which take attacker-chosen strings at login.
fuzz_target!(|data: &[u8]| {
    let _ = owt::wire::decode_event_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = owt::token::Token::decode(s);
        let _ = owt::token::Ticket::verify("key", s, 0);
        let _ = owt::rest::MAuth::parse(s).verify("id", "key");
    }
});
