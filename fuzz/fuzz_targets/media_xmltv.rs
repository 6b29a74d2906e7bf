#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let guide = media::xmltv::parse_xmltv(data);
    let text = media::xmltv::write_xmltv("fuzz", &guide.channels, &guide.programmes);
    let again = media::xmltv::parse_xmltv(text.as_bytes());
    // Our own output is well-formed and loses nothing we parsed.
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.channels.len(), guide.channels.len());
    assert_eq!(again.programmes.len(), guide.programmes.len());
});
