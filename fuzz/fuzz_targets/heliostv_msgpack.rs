#![no_main]
//! Arbitrary bytes, split arbitrarily, into the HeliosTv stream decoder and
//! message parser for both directions (the body lives in the crate, where
//! its tests compile and run it).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    heliostv::wire::fuzz_stream(data);
});
