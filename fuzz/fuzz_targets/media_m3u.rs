#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let playlist = media::m3u::parse_m3u(data);
    // What we parsed must be writable and parse again without panicking.
    let text = media::m3u::write_m3u(&playlist.header_attributes, &playlist.entries);
    let again = media::m3u::parse_m3u(text.as_bytes());
    assert_eq!(again.entries.len(), playlist.entries.len());
});
