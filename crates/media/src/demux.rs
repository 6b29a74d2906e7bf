//! The transport stream demuxer: bytes in, programmes and frames out.
//!
//! Design for speed: PID dispatch is a flat 8192-entry table; packets of
//! PIDs nobody asked for cost one header parse and one table lookup; PES
//! data is appended into a per-PID `BytesMut` carved out of large blocks and
//! handed out with `split().freeze()`, so frames (and the several AAC frames
//! of one PES) are `Bytes` slices of a shared block, not one allocation each;
//! repeated PSI sections are recognised by their CRC_32 and not parsed again.

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};

use crate::audio::{eac3_is_dependent, frame_header};
use crate::bits::array_at;
use crate::pes::{PCR_PERIOD, PTS_PERIOD, Unwrapper, parse_pes_header};
use crate::program::{
    AudioParams, Codec, Frame, FrameKind, Program, TS_CLOCK_HZ, Track, TrackParams, VideoParams,
};
use crate::psi::{
    EIT_PID, Eit, PAT_PID, Pat, Pmt, SDT_PID, Sdt, SectionAssembler, TABLE_EIT_PF_ACTUAL,
    TABLE_PAT, TABLE_PMT, TABLE_SDT_ACTUAL,
};
use crate::ts::{
    Continuity, ContinuityTracker, DemuxStats, Packet, PacketHeader, TsAligner, adaptation_field,
    payload,
};
use crate::video::{
    h264_sps, hevc_sps, hevc_vps_frame_rate, inspect_access_unit, mpeg2_sequence_header,
};

/// What the demuxer reports, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemuxEvent {
    /// Every programme of the transport stream whose PMT is known, in PAT
    /// order. Sent whenever the PAT, a PMT, the SDT or any track's codec
    /// parameters change, and always before the first frame that carries
    /// new parameters. A programme is usable once `Program::is_ready()`.
    Programs(Vec<Program>),
    /// One access unit (video) or one codec frame (audio: an ADTS PES with
    /// several AAC frames yields several events).
    Frame { program_number: u16, frame: Frame },
    /// A programme clock reference seen on a PCR PID, in 27 MHz ticks,
    /// unwrapped like the PTS so it only grows (except on real jumps).
    Pcr { pid: u16, pcr_27mhz: i64 },
    /// A new or changed EIT section (present/following or schedule, actual
    /// transport stream only). Repetitions with unchanged content are not
    /// reported.
    Eit(Eit),
}

/// The demuxer. Feed it bytes split anywhere with `push`, or aligned packets
/// with `push_packet`, and call `flush` at the end of a finite input.
pub struct Demuxer {
    aligner: TsAligner,
    core: DemuxCore,
}

impl Default for Demuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl Demuxer {
    pub fn new() -> Demuxer {
        Demuxer {
            aligner: TsAligner::new(),
            core: DemuxCore::new(),
        }
    }

    /// Only reassemble the elementary streams of this programme (all
    /// programmes are still listed in `Programs`). Saves work on
    /// multi-programme inputs where a channel uses one programme.
    pub fn set_program_filter(&mut self, program_number: Option<u16>) {
        self.core.filter = program_number;
        self.core.rebuild_routes();
    }

    /// Feed bytes; events are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<DemuxEvent>) {
        let core = &mut self.core;
        self.aligner
            .push(data, &mut |pkt: &Packet| core.packet(pkt, out));
    }

    /// Feed one aligned packet (when the caller already runs a `TsAligner`,
    /// for instance to share it with a `SptsRemuxer`).
    pub fn push_packet(&mut self, pkt: &Packet, out: &mut Vec<DemuxEvent>) {
        self.core.packet(pkt, out);
    }

    /// End of input: deliver the PES packets still open (unbounded video
    /// PES are otherwise only complete when the next one starts).
    pub fn flush(&mut self, out: &mut Vec<DemuxEvent>) {
        let core = &mut self.core;
        self.aligner
            .flush(&mut |pkt: &Packet| core.packet(pkt, out));
        core.flush(out);
    }

    pub fn stats(&self) -> DemuxStats {
        let (_, resyncs, dropped) = self.aligner.counters();
        DemuxStats {
            resyncs,
            dropped_bytes: dropped,
            ..self.core.stats
        }
    }

    /// The programmes as last reported.
    pub fn programs(&self) -> &[Program] {
        &self.core.programs
    }
}

const NO_SLOT: u16 = u16::MAX;
const MAX_SEEN_SECTIONS: usize = 4096;

#[derive(Clone, Copy)]
struct Route {
    slot: u16,
    pcr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Pat,
    Pmt,
    Sdt,
    Eit,
}

enum Slot {
    Psi {
        pid: u16,
        table: Table,
        asm: SectionAssembler,
    },
    Pes(Box<PesState>),
}

impl Slot {
    fn pid(&self) -> u16 {
        match self {
            Slot::Psi { pid, .. } => *pid,
            Slot::Pes(p) => p.pid,
        }
    }
}

struct DemuxCore {
    stats: DemuxStats,
    cc: ContinuityTracker,
    routes: Box<[Route]>,
    slots: Vec<Slot>,
    filter: Option<u16>,
    pat: Option<Pat>,
    pmts: BTreeMap<u16, Pmt>,
    /// service_id -> (provider, name)
    sdt: BTreeMap<u16, (Option<String>, Option<String>)>,
    /// (pid, table_id, table_id_extension, section_number) -> CRC_32
    seen: HashMap<(u16, u8, u16, u8), u32>,
    pcr_unwrap: Vec<(u16, Unwrapper)>,
    sec_buf: Vec<u8>,
    sec_ends: Vec<usize>,
    frames: Vec<(u16, Frame)>,
    programs: Vec<Program>,
    dirty: bool,
}

impl DemuxCore {
    fn new() -> Self {
        let mut core = DemuxCore {
            stats: DemuxStats::default(),
            cc: ContinuityTracker::new(),
            routes: vec![
                Route {
                    slot: NO_SLOT,
                    pcr: false
                };
                8192
            ]
            .into_boxed_slice(),
            slots: Vec::new(),
            filter: None,
            pat: None,
            pmts: BTreeMap::new(),
            sdt: BTreeMap::new(),
            seen: HashMap::new(),
            pcr_unwrap: Vec::new(),
            sec_buf: Vec::new(),
            sec_ends: Vec::new(),
            frames: Vec::new(),
            programs: Vec::new(),
            dirty: false,
        };
        core.rebuild_routes();
        core
    }

    fn packet(&mut self, pkt: &Packet, out: &mut Vec<DemuxEvent>) {
        self.stats.packets += 1;
        let h = PacketHeader::parse(pkt);
        if h.transport_error {
            self.stats.transport_errors += 1;
            return;
        }
        let Some(route) = self.routes.get(usize::from(h.pid)).copied() else {
            return;
        };
        if route.slot == NO_SLOT && !route.pcr {
            return;
        }
        let af = if h.has_adaptation {
            adaptation_field(pkt)
        } else {
            None
        };
        if route.pcr
            && let Some(pcr) = af.and_then(|a| a.pcr)
        {
            let v = self.unwrap_pcr(h.pid, pcr);
            out.push(DemuxEvent::Pcr {
                pid: h.pid,
                pcr_27mhz: v,
            });
        }
        if route.slot == NO_SLOT {
            return;
        }
        let gap = match self.cc.check(&h, af.is_some_and(|a| a.discontinuity)) {
            Continuity::Duplicate => return,
            Continuity::Gap => {
                self.stats.continuity_errors += 1;
                true
            }
            Continuity::Ok => false,
        };
        let Some(slot) = self.slots.get_mut(usize::from(route.slot)) else {
            return;
        };
        let data = payload(pkt);
        match slot {
            Slot::Psi { asm, .. } => {
                if gap {
                    asm.reset();
                }
                if h.scrambling != 0 || data.is_empty() {
                    return;
                }
                let buf = &mut self.sec_buf;
                let ends = &mut self.sec_ends;
                buf.clear();
                ends.clear();
                asm.push(h.payload_unit_start, data, &mut |s: &[u8]| {
                    buf.extend_from_slice(s);
                    ends.push(buf.len());
                });
                if !self.sec_ends.is_empty() {
                    self.handle_sections(h.pid, out);
                }
            }
            Slot::Pes(p) => {
                if gap {
                    p.damaged = true;
                }
                if h.scrambling != 0 {
                    return;
                }
                p.push(
                    h.payload_unit_start,
                    data,
                    &mut self.stats,
                    &mut self.frames,
                );
                if std::mem::take(&mut p.params_changed) {
                    self.dirty = true;
                }
            }
        }
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<DemuxEvent>) {
        if std::mem::take(&mut self.dirty) {
            self.emit_programs(out);
        }
        for (program_number, frame) in self.frames.drain(..) {
            out.push(DemuxEvent::Frame {
                program_number,
                frame,
            });
        }
    }

    fn flush(&mut self, out: &mut Vec<DemuxEvent>) {
        for slot in &mut self.slots {
            if let Slot::Pes(p) = slot {
                if p.active {
                    p.finish(&mut self.stats, &mut self.frames, true);
                }
                if std::mem::take(&mut p.params_changed) {
                    self.dirty = true;
                }
            }
        }
        self.drain(out);
    }

    fn unwrap_pcr(&mut self, pid: u16, pcr: u64) -> i64 {
        if let Some((_, u)) = self.pcr_unwrap.iter_mut().find(|(p, _)| *p == pid) {
            return u.unwrap(pcr, PCR_PERIOD);
        }
        let mut u = Unwrapper::new();
        let v = u.unwrap(pcr, PCR_PERIOD);
        if self.pcr_unwrap.len() < 64 {
            self.pcr_unwrap.push((pid, u));
        }
        v
    }

    fn handle_sections(&mut self, pid: u16, out: &mut Vec<DemuxEvent>) {
        let buf = std::mem::take(&mut self.sec_buf);
        let ends = std::mem::take(&mut self.sec_ends);
        let mut start = 0;
        for &end in &ends {
            if let Some(sec) = buf.get(start..end) {
                self.handle_section(pid, sec, out);
            }
            start = end;
        }
        self.sec_buf = buf;
        self.sec_ends = ends;
    }

    fn handle_section(&mut self, pid: u16, sec: &[u8], out: &mut Vec<DemuxEvent>) {
        let table = self.slots.iter().find_map(|s| match s {
            Slot::Psi { pid: p, table, .. } if *p == pid => Some(*table),
            _ => None,
        });
        let (Some(table), Some(&table_id)) = (table, sec.first()) else {
            return;
        };
        let wanted = match table {
            Table::Pat => table_id == TABLE_PAT,
            Table::Pmt => table_id == TABLE_PMT,
            Table::Sdt => table_id == TABLE_SDT_ACTUAL,
            Table::Eit => table_id == TABLE_EIT_PF_ACTUAL || (0x50..=0x5f).contains(&table_id),
        };
        if !wanted || sec.len() < 12 {
            return;
        }
        let ext = u16::from_be_bytes([
            sec.get(3).copied().unwrap_or(0),
            sec.get(4).copied().unwrap_or(0),
        ]);
        let section_number = sec.get(6).copied().unwrap_or(0);
        let crc = array_at::<4>(sec, sec.len() - 4).map_or(0, |c| u32::from_be_bytes(*c));
        let key = (pid, table_id, ext, section_number);
        if self.seen.get(&key) == Some(&crc) {
            return;
        }
        let current = sec.get(5).is_some_and(|b| b & 1 == 1);
        match table {
            Table::Pat => match Pat::parse(sec) {
                Ok(pat) if current => {
                    self.remember(key, crc);
                    self.on_pat(pat);
                }
                Ok(_) => {}
                Err(_) => self.stats.crc_errors += 1,
            },
            Table::Pmt => match Pmt::parse(sec) {
                Ok(pmt) if current => {
                    let expected = self
                        .pat
                        .as_ref()
                        .is_some_and(|p| p.programs.contains(&(pmt.program_number, pid)));
                    if expected {
                        self.remember(key, crc);
                        self.pmts.insert(pmt.program_number, pmt);
                        self.rebuild_routes();
                        self.dirty = true;
                    }
                }
                Ok(_) => {}
                Err(_) => self.stats.crc_errors += 1,
            },
            Table::Sdt => match Sdt::parse(sec) {
                Ok(sdt) if current => {
                    self.remember(key, crc);
                    for s in sdt.services {
                        let names = (s.provider_name, s.service_name);
                        if self.sdt.get(&s.service_id) != Some(&names) {
                            self.sdt.insert(s.service_id, names);
                            self.dirty = true;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => self.stats.crc_errors += 1,
            },
            Table::Eit => match Eit::parse(sec) {
                Ok(eit) if current => {
                    self.remember(key, crc);
                    out.push(DemuxEvent::Eit(eit));
                }
                Ok(_) => {}
                Err(_) => self.stats.crc_errors += 1,
            },
        }
    }

    fn remember(&mut self, key: (u16, u8, u16, u8), crc: u32) {
        if self.seen.len() >= MAX_SEEN_SECTIONS {
            self.seen.clear();
        }
        self.seen.insert(key, crc);
    }

    fn on_pat(&mut self, pat: Pat) {
        if self.pat.as_ref() == Some(&pat) {
            return;
        }
        self.pmts.retain(|n, pmt| {
            pat.programs.iter().any(|(pn, _)| pn == n) && pmt.program_number == *n
        });
        // A PMT PID may now belong to another programme: parse again.
        self.seen.retain(|k, _| k.0 == PAT_PID);
        self.pat = Some(pat);
        self.rebuild_routes();
        self.dirty = true;
    }

    fn rebuild_routes(&mut self) {
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        for r in self.routes.iter_mut() {
            *r = Route {
                slot: NO_SLOT,
                pcr: false,
            };
        }
        let mut take_old = |pid: u16, want_pes: Option<Codec>| -> Option<Slot> {
            let i = old.iter().position(|s| {
                s.pid() == pid
                    && match (s, want_pes) {
                        (Slot::Pes(p), Some(c)) => p.codec == c,
                        (Slot::Psi { .. }, None) => true,
                        _ => false,
                    }
            })?;
            Some(old.swap_remove(i))
        };
        let mut slots: Vec<Slot> = Vec::new();
        let psi = |pid: u16,
                   table: Table,
                   slots: &mut Vec<Slot>,
                   routes: &mut [Route],
                   take: &mut dyn FnMut(u16, Option<Codec>) -> Option<Slot>| {
            if routes
                .get(usize::from(pid))
                .is_none_or(|r| r.slot != NO_SLOT)
            {
                return;
            }
            let slot = match take(pid, None) {
                Some(Slot::Psi { asm, .. }) => Slot::Psi { pid, table, asm },
                _ => Slot::Psi {
                    pid,
                    table,
                    asm: SectionAssembler::new(),
                },
            };
            if let Some(r) = routes.get_mut(usize::from(pid)) {
                r.slot = slots.len() as u16;
            }
            slots.push(slot);
        };
        psi(
            PAT_PID,
            Table::Pat,
            &mut slots,
            &mut self.routes,
            &mut take_old,
        );
        psi(
            SDT_PID,
            Table::Sdt,
            &mut slots,
            &mut self.routes,
            &mut take_old,
        );
        psi(
            EIT_PID,
            Table::Eit,
            &mut slots,
            &mut self.routes,
            &mut take_old,
        );
        let programs: Vec<(u16, u16)> = self
            .pat
            .as_ref()
            .map(|p| p.programs.clone())
            .unwrap_or_default();
        for &(_, pmt_pid) in &programs {
            psi(
                pmt_pid,
                Table::Pmt,
                &mut slots,
                &mut self.routes,
                &mut take_old,
            );
        }
        for &(pn, _) in &programs {
            let Some(pmt) = self.pmts.get(&pn) else {
                continue;
            };
            if let Some(r) = self.routes.get_mut(usize::from(pmt.pcr_pid)) {
                r.pcr = true;
            }
            if self.filter.is_some_and(|f| f != pn) {
                continue;
            }
            for s in &pmt.streams {
                let codec = s.codec();
                let reassemble = codec.is_video() || codec.is_audio() || s.stream_type == 0x06;
                let free = self
                    .routes
                    .get(usize::from(s.pid))
                    .is_some_and(|r| r.slot == NO_SLOT);
                if !reassemble || !free {
                    continue;
                }
                let slot = match take_old(s.pid, Some(codec)) {
                    Some(Slot::Pes(mut p)) => {
                        p.program_number = pn;
                        Slot::Pes(p)
                    }
                    _ => Slot::Pes(Box::new(PesState::new(s.pid, pn, codec))),
                };
                if let Some(r) = self.routes.get_mut(usize::from(s.pid)) {
                    r.slot = slots.len() as u16;
                }
                slots.push(slot);
            }
        }
        self.slots = slots;
    }

    fn emit_programs(&mut self, out: &mut Vec<DemuxEvent>) {
        let Some(pat) = &self.pat else { return };
        let mut programs = Vec::new();
        for &(pn, pmt_pid) in &pat.programs {
            let Some(pmt) = self.pmts.get(&pn) else {
                continue;
            };
            let (provider, name) = self.sdt.get(&pn).cloned().unwrap_or((None, None));
            let tracks = pmt
                .streams
                .iter()
                .map(|s| {
                    let params = self
                        .slots
                        .iter()
                        .find_map(|slot| match slot {
                            Slot::Pes(p) if p.pid == s.pid => Some(p.params.clone()),
                            _ => None,
                        })
                        .unwrap_or(TrackParams::None);
                    Track {
                        pid: s.pid,
                        stream_type: s.stream_type,
                        codec: s.codec(),
                        language: s.language(),
                        params,
                    }
                })
                .collect();
            programs.push(Program {
                program_number: pn,
                pmt_pid,
                pcr_pid: pmt.pcr_pid,
                service_name: name,
                provider_name: provider,
                tracks,
            });
        }
        if programs != self.programs {
            self.programs = programs.clone();
            out.push(DemuxEvent::Programs(programs));
        }
    }
}

/// Largest PES we reassemble; anything longer is corrupt or hostile.
const MAX_PES: usize = 8 * 1024 * 1024;
/// A partial audio frame carried into the next PES is never longer.
const MAX_AUDIO_CARRY: usize = 8192;

struct PesState {
    pid: u16,
    program_number: u16,
    codec: Codec,
    buf: BytesMut,
    active: bool,
    /// Total PES length from PES_packet_length (None: not known yet or
    /// unbounded, see `len_known`).
    expected: Option<usize>,
    len_known: bool,
    damaged: bool,
    unwrap: Unwrapper,
    params: TrackParams,
    params_changed: bool,
    // video
    vps: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    frame_duration: Option<u32>,
    // audio
    carry: Vec<u8>,
    carry_pts: Option<i64>,
    next_pts: Option<i64>,
}

impl PesState {
    fn new(pid: u16, program_number: u16, codec: Codec) -> Self {
        PesState {
            pid,
            program_number,
            codec,
            buf: BytesMut::new(),
            active: false,
            expected: None,
            len_known: false,
            damaged: false,
            unwrap: Unwrapper::new(),
            params: TrackParams::None,
            params_changed: false,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
            frame_duration: None,
            carry: Vec::new(),
            carry_pts: None,
            next_pts: None,
        }
    }

    fn push(
        &mut self,
        pusi: bool,
        data: &[u8],
        stats: &mut DemuxStats,
        frames: &mut Vec<(u16, Frame)>,
    ) {
        if pusi {
            if self.active {
                self.finish(stats, frames, true);
            }
            self.start();
        }
        if !self.active {
            return;
        }
        if self.buf.len() + data.len() > MAX_PES {
            stats.truncated_pes += 1;
            self.buf.clear();
            self.active = false;
            return;
        }
        self.buf.extend_from_slice(data);
        if !self.len_known
            && let Some(h) = array_at::<6>(&self.buf, 0)
        {
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            self.len_known = true;
            self.expected = (len != 0).then_some(6 + len);
        }
        if let Some(want) = self.expected
            && self.buf.len() >= want
        {
            self.buf.truncate(want);
            self.finish(stats, frames, false);
        }
    }

    fn start(&mut self) {
        let block = if self.codec.is_video() {
            64 * 1024
        } else {
            16 * 1024
        };
        if self.buf.capacity() - self.buf.len() < block / 8 {
            self.buf.reserve(block);
        }
        self.buf.clear();
        self.active = true;
        self.damaged = false;
        self.expected = None;
        self.len_known = false;
    }

    fn finish(&mut self, stats: &mut DemuxStats, frames: &mut Vec<(u16, Frame)>, cut_short: bool) {
        self.active = false;
        let incomplete = cut_short && self.expected.is_some_and(|w| self.buf.len() < w);
        if self.damaged || incomplete {
            stats.truncated_pes += 1;
            self.buf.clear();
            self.carry.clear();
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        let data = self.buf.split().freeze();
        let Some(h) = parse_pes_header(&data) else {
            stats.invalid_pes += 1;
            return;
        };
        let payload = data.slice(h.payload_offset.min(data.len())..);
        let pts = h.pts.map(|v| self.unwrap.unwrap(v, PTS_PERIOD));
        let dts = h.dts.map(|v| self.unwrap.unwrap(v, PTS_PERIOD));
        if self.codec.is_video() {
            self.video_frame(payload, pts, dts.or(pts), frames);
        } else if self.codec.is_audio() {
            self.audio_frames(payload, pts, frames);
        } else {
            frames.push((
                self.program_number,
                Frame {
                    pid: self.pid,
                    pts,
                    dts: dts.or(pts),
                    duration: None,
                    kind: FrameKind::Other,
                    data: payload,
                },
            ));
        }
    }

    fn video_frame(
        &mut self,
        payload: Bytes,
        pts: Option<i64>,
        dts: Option<i64>,
        frames: &mut Vec<(u16, Frame)>,
    ) {
        let au = inspect_access_unit(self.codec, &payload);
        let mut changed = false;
        for (range, store) in [
            (au.vps, &mut self.vps),
            (au.sps, &mut self.sps),
            (au.pps, &mut self.pps),
        ] {
            if let Some(bytes) = range.and_then(|(s, e)| payload.get(s..e))
                && bytes != store.as_slice()
            {
                store.clear();
                store.extend_from_slice(bytes);
                changed = true;
            }
        }
        if changed {
            self.update_video_params();
        }
        let kind = au.kind.unwrap_or(FrameKind::Predicted);
        let missing = match self.codec {
            Codec::Hevc => au.vps.is_none() || au.sps.is_none() || au.pps.is_none(),
            Codec::H264 => au.sps.is_none() || au.pps.is_none(),
            _ => au.sps.is_none(),
        };
        let data = match (&self.params, kind == FrameKind::Key && missing) {
            (TrackParams::Video(v), true) if !v.parameter_sets.is_empty() => {
                let at = au.insert_at.min(payload.len());
                let mut b = BytesMut::with_capacity(payload.len() + v.parameter_sets.len());
                b.extend_from_slice(payload.get(..at).unwrap_or(&[]));
                b.extend_from_slice(&v.parameter_sets);
                b.extend_from_slice(payload.get(at..).unwrap_or(&[]));
                b.freeze()
            }
            _ => payload,
        };
        frames.push((
            self.program_number,
            Frame {
                pid: self.pid,
                pts,
                dts,
                duration: self.frame_duration,
                kind,
                data,
            },
        ));
    }

    fn update_video_params(&mut self) {
        let (info, sets) = match self.codec {
            Codec::H264 => (h264_sps(&self.sps), annexb(&[&self.sps, &self.pps])),
            Codec::Hevc => {
                let info = hevc_sps(&self.sps).map(|mut i| {
                    i.frame_rate = i.frame_rate.or_else(|| hevc_vps_frame_rate(&self.vps));
                    i
                });
                (info, annexb(&[&self.vps, &self.sps, &self.pps]))
            }
            Codec::Mpeg2Video => {
                let mut sets = Vec::with_capacity(self.sps.len() + 3);
                sets.extend_from_slice(&[0, 0, 1]);
                sets.extend_from_slice(&self.sps);
                (mpeg2_sequence_header(&self.sps), sets)
            }
            _ => (None, Vec::new()),
        };
        let Some(info) = info else { return };
        self.frame_duration = info
            .frame_rate
            .and_then(|(n, d)| (n > 0).then(|| (TS_CLOCK_HZ * u64::from(d) / u64::from(n)) as u32));
        let params = TrackParams::Video(VideoParams {
            width: info.width,
            height: info.height,
            frame_rate: info.frame_rate,
            aspect: info.aspect,
            parameter_sets: Bytes::from(sets),
        });
        if params != self.params {
            self.params = params;
            self.params_changed = true;
        }
    }

    fn audio_frames(&mut self, payload: Bytes, pts: Option<i64>, frames: &mut Vec<(u16, Frame)>) {
        let mut base = pts.or(self.next_pts);
        let data = if self.carry.is_empty() {
            payload
        } else {
            let mut b = BytesMut::with_capacity(self.carry.len() + payload.len());
            b.extend_from_slice(&self.carry);
            b.extend_from_slice(&payload);
            self.carry.clear();
            base = self.carry_pts.or(base);
            b.freeze()
        };
        let sync = if matches!(self.codec, Codec::Ac3 | Codec::Eac3) {
            0x0b
        } else {
            0xff
        };
        let mut off = 0usize;
        let mut ticks_base_samples: u64 = 0;
        let mut rate = 0u32;
        while let Some(rest) = data.get(off..) {
            if rest.is_empty() {
                break;
            }
            let Some(h) =
                frame_header(self.codec, rest).filter(|h| h.length > 0 && h.sample_rate > 0)
            else {
                // Lost the frame boundary: look for the next sync byte.
                match rest
                    .get(1..)
                    .and_then(|r| r.iter().position(|&b| b == sync))
                {
                    Some(p) => {
                        off += 1 + p;
                        continue;
                    }
                    None => break,
                }
            };
            if h.length > rest.len() {
                if rest.len() <= MAX_AUDIO_CARRY {
                    self.carry.extend_from_slice(rest);
                    self.carry_pts = base.map(|b| {
                        b.saturating_add(samples_to_ticks(ticks_base_samples, h.sample_rate))
                    });
                }
                break;
            }
            let mut len = h.length;
            let mut samples = h.samples;
            if self.codec == Codec::Eac3 {
                while let Some(next) = data.get(off + len..) {
                    if !eac3_is_dependent(next) {
                        break;
                    }
                    match frame_header(self.codec, next) {
                        Some(d) if d.length > 0 && d.length <= next.len() => {
                            len += d.length;
                            samples = samples.max(d.samples);
                        }
                        _ => break,
                    }
                }
            }
            self.update_audio_params(&h);
            rate = h.sample_rate;
            let fpts =
                base.map(|b| b.saturating_add(samples_to_ticks(ticks_base_samples, h.sample_rate)));
            frames.push((
                self.program_number,
                Frame {
                    pid: self.pid,
                    pts: fpts,
                    dts: fpts,
                    duration: Some(samples_to_ticks(u64::from(samples), h.sample_rate) as u32),
                    kind: FrameKind::Audio,
                    data: data.slice(off..off + len),
                },
            ));
            ticks_base_samples += u64::from(samples);
            off += len;
        }
        if rate > 0 {
            self.next_pts =
                base.map(|b| b.saturating_add(samples_to_ticks(ticks_base_samples, rate)));
        }
    }

    fn update_audio_params(&mut self, h: &crate::audio::AudioFrameHeader) {
        if let TrackParams::Audio(a) = &self.params {
            let same_config = match h.aac_config {
                Some(c) => a.codec_config.as_ref() == c.as_slice(),
                None => a.codec_config.is_empty(),
            };
            if a.sample_rate == h.sample_rate && a.channels == h.channels && same_config {
                return;
            }
        }
        self.params = TrackParams::Audio(AudioParams {
            sample_rate: h.sample_rate,
            channels: h.channels,
            codec_config: h
                .aac_config
                .map_or_else(Bytes::new, |c| Bytes::copy_from_slice(&c)),
        });
        self.params_changed = true;
    }
}

fn samples_to_ticks(samples: u64, rate: u32) -> i64 {
    if rate == 0 {
        return 0;
    }
    (samples * TS_CLOCK_HZ / u64::from(rate)) as i64
}

fn annexb(units: &[&Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for u in units {
        if !u.is_empty() {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(u);
        }
    }
    v
}
