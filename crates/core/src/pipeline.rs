//! From input bytes to what readers get: packets are aligned once, demuxed
//! into frames per programme, and remuxed into one single-programme TS per
//! channel, cut into chunks at random-access points so a TS reader can join
//! or skip ahead at a keyframe.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use media::Program;
use media::demux::{DemuxEvent, Demuxer};
use media::remux::{RemuxOutput, SptsRemuxer};
use media::ts::{Packet, TsAligner};
use tokio_util::sync::CancellationToken;

use crate::channel::ProgramSelector;
use crate::fanout::{Hub, Unit};
use crate::input::{Input, run_input};

struct Output {
    selector: ProgramSelector,
    hub: Arc<Hub>,
    program_number: Option<u16>,
    remux: Option<SptsRemuxer>,
    out: RemuxOutput,
    ready: bool,
    /// Frames demuxed before every track's parameters were known (the first
    /// keyframe usually comes before the first audio frame): published once
    /// they are, so a new source's first GOP is not lost.
    held: Vec<media::Frame>,
    held_bytes: usize,
}

/// Bound of the frames held while a programme is not ready (a track whose
/// parameters never come must not grow memory).
const HELD_MAX_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct Pipeline {
    aligner: TsAligner,
    demux: Demuxer,
    events: Vec<DemuxEvent>,
    outputs: Vec<Output>,
    received: bool,
    /// What was already counted into metrics.
    counted: media::ts::DemuxStats,
}

impl Pipeline {
    pub(crate) fn new(outputs: Vec<(ProgramSelector, Arc<Hub>)>) -> Self {
        let mut demux = Demuxer::new();
        if let [(ProgramSelector::Number(n), _)] = outputs.as_slice() {
            demux.set_program_filter(Some(*n));
        }
        Pipeline {
            aligner: TsAligner::new(),
            demux,
            events: Vec::new(),
            outputs: outputs
                .into_iter()
                .map(|(selector, hub)| Output {
                    selector,
                    hub,
                    program_number: None,
                    remux: None,
                    out: RemuxOutput::new(),
                    ready: false,
                    held: Vec::new(),
                    held_bytes: 0,
                })
                .collect(),
            received: false,
            counted: media::ts::DemuxStats::default(),
        }
    }

    pub(crate) fn received_any(&self) -> bool {
        self.received
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if !self.received {
            self.received = true;
            for o in &self.outputs {
                o.hub.source_resumed();
            }
        }
        let Pipeline {
            aligner,
            demux,
            events,
            outputs,
            ..
        } = self;
        aligner.push(data, &mut |pkt: &Packet| {
            demux.push_packet(pkt, events);
            for o in outputs.iter_mut() {
                if let Some(r) = &mut o.remux {
                    r.push(pkt, &mut o.out);
                }
            }
            if !events.is_empty() {
                for ev in events.drain(..) {
                    handle_event(outputs, ev);
                }
            }
        });
        for o in &mut self.outputs {
            flush_chunks(o);
        }
        self.count_errors();
    }

    /// Damage in the input is repaired (resync, dropped PES) and counted, never fatal.
    fn count_errors(&mut self) {
        let now = self.demux.stats();
        let (_, resyncs, skipped) = self.aligner.counters();
        let was = self.counted;
        let add = |name: &'static str, new: u64, old: u64| {
            if new > old {
                metrics::counter!(name).increment(new - old);
            }
        };
        add("switchyard_demux_resyncs_total", resyncs, was.resyncs);
        add(
            "switchyard_demux_dropped_bytes_total",
            skipped,
            was.dropped_bytes,
        );
        add(
            "switchyard_demux_continuity_errors_total",
            now.continuity_errors,
            was.continuity_errors,
        );
        add(
            "switchyard_demux_transport_errors_total",
            now.transport_errors,
            was.transport_errors,
        );
        add(
            "switchyard_demux_crc_errors_total",
            now.crc_errors,
            was.crc_errors,
        );
        add(
            "switchyard_demux_truncated_pes_total",
            now.truncated_pes,
            was.truncated_pes,
        );
        add(
            "switchyard_demux_invalid_pes_total",
            now.invalid_pes,
            was.invalid_pes,
        );
        self.counted = media::ts::DemuxStats {
            resyncs,
            dropped_bytes: skipped,
            ..now
        };
    }
}

fn handle_event(outputs: &mut [Output], ev: DemuxEvent) {
    match ev {
        DemuxEvent::Programs(list) => {
            for o in outputs.iter_mut() {
                let found = match o.selector {
                    ProgramSelector::First => list.first(),
                    ProgramSelector::Number(n) => list.iter().find(|p| p.program_number == n),
                };
                let Some(program) = found else { continue };
                if o.program_number != Some(program.program_number) {
                    o.program_number = Some(program.program_number);
                    o.remux = Some(SptsRemuxer::new(program.program_number));
                    o.held.clear();
                    o.held_bytes = 0;
                }
                if program.is_ready() {
                    o.ready = true;
                    o.hub.set_program(Arc::new(program.clone()));
                    for frame in o.held.drain(..) {
                        o.hub.publish(Unit::Frame(frame));
                    }
                    o.held_bytes = 0;
                }
            }
        }
        DemuxEvent::Frame {
            program_number,
            frame,
        } => {
            for o in outputs
                .iter_mut()
                .filter(|o| o.program_number == Some(program_number))
            {
                if o.ready {
                    o.hub.publish(Unit::Frame(frame.clone()));
                } else if o.held_bytes + frame.data.len() <= HELD_MAX_BYTES {
                    o.held_bytes += frame.data.len();
                    o.held.push(frame.clone());
                }
            }
        }
        DemuxEvent::Pcr { .. } | DemuxEvent::Eit(_) => {}
    }
}

/// Publish the remuxed bytes, one chunk per stretch between random-access points.
fn flush_chunks(o: &mut Output) {
    if o.out.data.is_empty() {
        return;
    }
    let data = Bytes::copy_from_slice(&o.out.data);
    let mut cuts: Vec<usize> = o
        .out
        .random_access
        .iter()
        .copied()
        .filter(|&c| c < data.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut start = 0;
    let mut starts_key = false;
    for cut in cuts {
        if cut > start {
            o.hub.publish(Unit::Ts {
                data: data.slice(start..cut),
                starts_key,
            });
        }
        start = cut;
        starts_key = true;
    }
    o.hub.publish(Unit::Ts {
        data: data.slice(start..),
        starts_key,
    });
    o.out.clear();
}

/// How long a live input may take to show its programmes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the PAT and PMTs, how long to wait for an SDT with names.
const SDT_WAIT: Duration = Duration::from_millis(1500);
/// How much of a file is read to find its programmes.
const PROBE_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Which programmes an input carries: a file from its first megabytes, a
/// live input until its PAT, PMTs and SDT are known (or a few seconds).
pub(crate) async fn probe(input: &Input) -> Result<Vec<Program>, String> {
    let mut demux = Demuxer::new();
    let mut events = Vec::new();
    let file_data = match input {
        Input::File(path) => {
            use tokio::io::AsyncReadExt;
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            f.take(PROBE_FILE_BYTES as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            Some(Bytes::from(buf))
        }
        Input::Memory { data, .. } => Some(data.slice(..data.len().min(PROBE_FILE_BYTES))),
        _ => None,
    };
    if let Some(data) = file_data {
        demux.push(&data, &mut events);
        demux.flush(&mut events);
        return programs_or_error(demux.programs());
    }
    let stop = CancellationToken::new();
    let mut complete_at: Option<tokio::time::Instant> = None;
    let run_stop = stop.clone();
    let mut sink = |b: &[u8]| {
        demux.push(b, &mut events);
        events.clear();
        let programs = demux.programs();
        if !programs.is_empty() {
            let named = programs.iter().all(|p| p.service_name.is_some());
            let now = tokio::time::Instant::now();
            let since = *complete_at.get_or_insert(now);
            if named || now.duration_since(since) > SDT_WAIT {
                run_stop.cancel();
            }
        }
    };
    let result = tokio::time::timeout(PROBE_TIMEOUT, run_input(input, &stop, &mut sink)).await;
    let programs = demux.programs().to_vec();
    match result {
        Ok(Err(e)) if programs.is_empty() => Err(e.to_string()),
        _ => programs_or_error(&programs),
    }
}

fn programs_or_error(programs: &[Program]) -> Result<Vec<Program>, String> {
    if programs.is_empty() {
        Err("no programme found (no PAT/PMT in the stream)".into())
    } else {
        Ok(programs.to_vec())
    }
}
