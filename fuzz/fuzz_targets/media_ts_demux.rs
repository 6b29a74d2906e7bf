#![no_main]
use libfuzzer_sys::fuzz_target;
use media::remux::{RemuxOptions, RemuxOutput, SptsRemuxer};
use media::ts::{Packet, TsAligner};
use media::Demuxer;

// The first byte picks a chunk size so the aligner's carry-over paths are
// exercised; the rest is the transport stream. The same bytes also go
// through the single-programme remuxer.
fuzz_target!(|data: &[u8]| {
    let Some((&split, ts)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1) * 7;
    let mut demuxer = Demuxer::new();
    let mut events = Vec::new();
    for c in ts.chunks(chunk) {
        demuxer.push(c, &mut events);
        events.clear();
    }
    demuxer.flush(&mut events);
    let _ = demuxer.stats();

    let program = u16::from(split % 4);
    let mut remuxer = SptsRemuxer::with_options(
        program,
        RemuxOptions { collect_sections: true, ..Default::default() },
    );
    let mut out = RemuxOutput::new();
    let mut aligner = TsAligner::new();
    aligner.push(ts, &mut |p: &Packet| remuxer.push(p, &mut out));
    let mut psi = Vec::new();
    remuxer.psi_packets(&mut psi);
    assert_eq!(out.data.len() % 188, 0);
});
