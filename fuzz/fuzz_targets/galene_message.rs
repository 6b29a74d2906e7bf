#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = galene::wire::decode(data) {
        // what decodes must encode and decode again to the same message
        let again = galene::wire::decode(galene::wire::encode(&message).as_bytes());
        assert_eq!(again.ok(), Some(message));
    }
});
