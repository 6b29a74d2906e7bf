//! Single-program transport stream (SPTS) remux: one programme of a
//! (possibly multi-programme) input, as its own transport stream, for the
//! TS-speaking readers (HTTP TV, HeliosTv player/recorder, recordings).
//!
//! What comes out, per input packet:
//! * PID 0: a PAT rewritten by us listing only this programme (its own
//!   version, bumped when the content changes, and its own counters);
//! * the PMT PID: the programme's PMT sections as received, packetized by
//!   us (so their continuity counters are ours too);
//! * the PCR PID and every elementary PID of the PMT: byte for byte;
//! * optionally PID 0x11 with an SDT rewritten to this one service, and
//!   PID 0x12 with the EIT sections of this service only;
//! * nothing else (other programmes, NIT, CAT, null packets).
//!
//! PAT and PMT are emitted when they change, at least every
//! `psi_interval_27mhz` of input (measured on the PCR) and, by default,
//! right before every video keyframe, so a reader that starts at a
//! random-access offset gets PAT, PMT and a keyframe in that order.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::pes::{PCR_PERIOD, Unwrapper, parse_pes_header};
use crate::program::{Codec, FrameKind};
use crate::psi::{
    EIT_PID, Pat, Pmt, SDT_PID, Sdt, SectionAssembler, TABLE_EIT_PF_ACTUAL, TABLE_PAT, TABLE_PMT,
    TABLE_SDT_ACTUAL, packetize_section, parse_long_section, section_packet_count,
};
use crate::ts::{Packet, PacketHeader, adaptation_field, payload};
use crate::video::inspect_access_unit;

/// How the remuxer shapes its output. `Default` is what the brief of the
/// HTTP/HeliosTv readers asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemuxOptions {
    /// Carry an SDT rewritten to this one service on PID 0x11.
    pub include_sdt: bool,
    /// Carry this service's EIT sections on PID 0x12.
    pub include_eit: bool,
    /// Repeat PAT and PMT at least this often, in 27 MHz PCR ticks.
    pub psi_interval_27mhz: u64,
    /// Emit PAT and PMT right before each keyframe, and report the offset
    /// of that PAT as the random-access point.
    pub psi_before_keyframe: bool,
    /// Report new or changed sections in `RemuxOutput::sections` (the
    /// HeliosTv `section` role).
    pub collect_sections: bool,
}

impl Default for RemuxOptions {
    fn default() -> Self {
        RemuxOptions {
            include_sdt: true,
            include_eit: true,
            psi_interval_27mhz: 2_700_000,
            psi_before_keyframe: true,
            collect_sections: false,
        }
    }
}

/// A complete PSI/SI section with a correct CRC_32, as the `section` role
/// forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSection {
    pub table_id: u8,
    pub table_id_extension: u16,
    pub section_number: u8,
    /// From table_id through CRC_32.
    pub data: Bytes,
}

/// What `SptsRemuxer::push` appends to. Offsets are into `data`; call
/// `clear` (or take the fields) between batches.
#[derive(Debug, Default, Clone)]
pub struct RemuxOutput {
    /// Whole 188-byte packets of the single-programme stream.
    pub data: Vec<u8>,
    /// Offsets in `data` where a reader may start: with
    /// `psi_before_keyframe` the PAT that precedes a keyframe's first
    /// packet, otherwise the keyframe's first packet itself. For a
    /// programme without video, the start of each audio PES.
    pub random_access: Vec<usize>,
    /// New or changed sections (only with `collect_sections`).
    pub sections: Vec<TableSection>,
    /// The PMT (set of PIDs, codecs) changed in this batch.
    pub pmt_changed: bool,
}

impl RemuxOutput {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.random_access.clear();
        self.sections.clear();
        self.pmt_changed = false;
    }
}

const PID_DROP: u8 = 0;
const PID_PASS: u8 = 1;
/// Pass, and look for random-access points at PES starts.
const PID_RAP: u8 = 2;

/// Extracts one programme of a transport stream. Feed aligned packets.
pub struct SptsRemuxer {
    program_number: u16,
    opts: RemuxOptions,
    pass: Box<[u8]>,
    pat_asm: SectionAssembler,
    pmt_asm: SectionAssembler,
    sdt_asm: SectionAssembler,
    eit_asm: SectionAssembler,
    transport_stream_id: Option<u16>,
    pmt_pid: Option<u16>,
    /// The PMT section as received.
    pmt_section: Option<Vec<u8>>,
    pmt: Option<Pmt>,
    rap_codec: Option<Codec>,
    /// Our PAT section.
    pat_section: Option<Vec<u8>>,
    pat_version: u8,
    pat_cc: u8,
    pmt_cc: u8,
    sdt_cc: u8,
    eit_cc: u8,
    sdt_version: u8,
    sdt_service: Option<crate::psi::SdtService>,
    pcr_pid: Option<u16>,
    pcr: Unwrapper,
    last_pcr: Option<i64>,
    /// Distance between the last two PCRs.
    pcr_gap: i64,
    last_psi_pcr: Option<i64>,
    packets_since_psi: u32,
    latest: BTreeMap<(u8, u16, u8), Bytes>,
    sec_scratch: Vec<Vec<u8>>,
}

/// Packets forwarded without a PCR-measured PAT/PMT repetition before one
/// is forced anyway (streams without PCR).
const PSI_PACKET_FALLBACK: u32 = 4000;

impl SptsRemuxer {
    pub fn new(program_number: u16) -> Self {
        Self::with_options(program_number, RemuxOptions::default())
    }

    pub fn with_options(program_number: u16, opts: RemuxOptions) -> Self {
        SptsRemuxer {
            program_number,
            opts,
            pass: vec![PID_DROP; 8192].into_boxed_slice(),
            pat_asm: SectionAssembler::new(),
            pmt_asm: SectionAssembler::new(),
            sdt_asm: SectionAssembler::new(),
            eit_asm: SectionAssembler::new(),
            transport_stream_id: None,
            pmt_pid: None,
            pmt_section: None,
            pmt: None,
            rap_codec: None,
            pat_section: None,
            pat_version: 0,
            pat_cc: 0,
            pmt_cc: 0,
            sdt_cc: 0,
            eit_cc: 0,
            sdt_version: 0,
            sdt_service: None,
            pcr_pid: None,
            pcr: Unwrapper::new(),
            last_pcr: None,
            pcr_gap: 0,
            last_psi_pcr: None,
            packets_since_psi: 0,
            latest: BTreeMap::new(),
            sec_scratch: Vec::new(),
        }
    }

    pub fn program_number(&self) -> u16 {
        self.program_number
    }

    /// The programme's PMT as last received.
    pub fn pmt(&self) -> Option<&Pmt> {
        self.pmt.as_ref()
    }

    /// Both PAT and PMT are known: output has started.
    pub fn is_ready(&self) -> bool {
        self.pat_section.is_some() && self.pmt_section.is_some()
    }

    /// Feed one aligned input packet.
    pub fn push(&mut self, pkt: &Packet, out: &mut RemuxOutput) {
        let h = PacketHeader::parse(pkt);
        if h.transport_error {
            return;
        }
        let pid = h.pid;
        match self.pass.get(usize::from(pid)).copied().unwrap_or(PID_DROP) {
            PID_PASS | PID_RAP if Some(pid) != self.pmt_pid => self.forward(pkt, &h, out),
            _ if pid == 0 => self.on_psi_packet(pkt, &h, out),
            _ if Some(pid) == self.pmt_pid => self.on_psi_packet(pkt, &h, out),
            _ if pid == SDT_PID && (self.opts.include_sdt || self.opts.collect_sections) => {
                self.on_psi_packet(pkt, &h, out)
            }
            _ if pid == EIT_PID && (self.opts.include_eit || self.opts.collect_sections) => {
                self.on_psi_packet(pkt, &h, out)
            }
            _ => {}
        }
    }

    /// PAT and PMT packets to put in front of a new reader's first chunk.
    /// Their continuity counters are those of the packets last emitted on
    /// PIDs 0 and the PMT PID, so the shared stream that follows continues
    /// them without a discontinuity (a repeated packet is a legal
    /// duplicate). Empty until PAT and PMT are known.
    pub fn psi_packets(&self, out: &mut Vec<u8>) {
        let (Some(pat), Some(pmt), Some(pmt_pid)) =
            (&self.pat_section, &self.pmt_section, self.pmt_pid)
        else {
            return;
        };
        let mut cc = self.pat_cc.wrapping_sub(1) & 0x0f;
        packetize_section(0, pat, &mut cc, out);
        let n = section_packet_count(pmt.len()) as u8;
        let mut cc = self.pmt_cc.wrapping_sub(n) & 0x0f;
        packetize_section(pmt_pid, pmt, &mut cc, out);
    }

    /// The latest section held for each (table_id, table_id_extension,
    /// section_number): our PAT, the PMT, SDT actual (as received) and this
    /// service's EIT. Needs `collect_sections`.
    pub fn current_sections(&self) -> Vec<TableSection> {
        self.latest
            .iter()
            .map(
                |(&(table_id, table_id_extension, section_number), data)| TableSection {
                    table_id,
                    table_id_extension,
                    section_number,
                    data: data.clone(),
                },
            )
            .collect()
    }

    fn forward(&mut self, pkt: &Packet, h: &PacketHeader, out: &mut RemuxOutput) {
        let af = if h.has_adaptation {
            adaptation_field(pkt)
        } else {
            None
        };
        if Some(h.pid) == self.pcr_pid
            && let Some(pcr) = af.and_then(|a| a.pcr)
        {
            let now = self.pcr.unwrap(pcr, PCR_PERIOD);
            if let Some(prev) = self.last_pcr {
                self.pcr_gap = now.saturating_sub(prev).clamp(0, 27_000_000);
            }
            self.last_pcr = Some(now);
        }
        let rap = h.payload_unit_start
            && self.pass.get(usize::from(h.pid)) == Some(&PID_RAP)
            && (af.is_some_and(|a| a.random_access) || self.starts_keyframe(pkt));
        if rap && self.opts.psi_before_keyframe {
            out.random_access.push(out.data.len());
            self.emit_psi(out);
        } else {
            self.psi_if_due(out);
            if rap {
                out.random_access.push(out.data.len());
            }
        }
        out.data.extend_from_slice(pkt);
        self.packets_since_psi = self.packets_since_psi.saturating_add(1);
    }

    fn starts_keyframe(&self, pkt: &Packet) -> bool {
        let Some(codec) = self.rap_codec else {
            return false;
        };
        if !codec.is_video() {
            // Audio-only programme: every PES start is a random-access point.
            return true;
        }
        let data = payload(pkt);
        let Some(h) = parse_pes_header(data) else {
            return false;
        };
        let es = data.get(h.payload_offset..).unwrap_or(&[]);
        let au = inspect_access_unit(codec, es);
        match au.kind {
            Some(k) => k == FrameKind::Key,
            // The picture did not start in this packet: parameter sets in
            // front of it mark a keyframe in every encoder we know.
            None => au.sps.is_some(),
        }
    }

    fn psi_if_due(&mut self, out: &mut RemuxOutput) {
        let due = match (self.last_pcr, self.last_psi_pcr) {
            // Emit at the last PCR before the interval would be exceeded,
            // so the gap between repetitions stays within the interval.
            (Some(now), Some(then)) => {
                now < then
                    || now.saturating_sub(then).saturating_add(self.pcr_gap) as u64
                        >= self.opts.psi_interval_27mhz
            }
            (Some(_), None) => true,
            _ => false,
        };
        if due || self.packets_since_psi >= PSI_PACKET_FALLBACK {
            self.emit_psi(out);
        }
    }

    fn emit_psi(&mut self, out: &mut RemuxOutput) {
        let (Some(pat), Some(pmt), Some(pmt_pid)) =
            (&self.pat_section, &self.pmt_section, self.pmt_pid)
        else {
            return;
        };
        packetize_section(0, pat, &mut self.pat_cc, &mut out.data);
        packetize_section(pmt_pid, pmt, &mut self.pmt_cc, &mut out.data);
        self.last_psi_pcr = self.last_pcr;
        self.packets_since_psi = 0;
    }

    fn on_psi_packet(&mut self, pkt: &Packet, h: &PacketHeader, out: &mut RemuxOutput) {
        let data = payload(pkt);
        if h.scrambling != 0 || data.is_empty() {
            return;
        }
        let pid = h.pid;
        let asm = if pid == 0 {
            &mut self.pat_asm
        } else if Some(pid) == self.pmt_pid {
            &mut self.pmt_asm
        } else if pid == SDT_PID {
            &mut self.sdt_asm
        } else {
            &mut self.eit_asm
        };
        let mut sections = std::mem::take(&mut self.sec_scratch);
        let mut n = 0usize;
        asm.push(h.payload_unit_start, data, &mut |s: &[u8]| {
            if let Some(slot) = sections.get_mut(n) {
                slot.clear();
                slot.extend_from_slice(s);
            } else {
                sections.push(s.to_vec());
            }
            n += 1;
        });
        for sec in sections.iter().take(n) {
            if pid == 0 {
                self.on_pat(sec, out);
            } else if Some(pid) == self.pmt_pid {
                self.on_pmt(sec, out);
            } else if pid == SDT_PID {
                self.on_sdt(sec, out);
            } else {
                self.on_eit(sec, out);
            }
        }
        self.sec_scratch = sections;
    }

    fn on_pat(&mut self, sec: &[u8], out: &mut RemuxOutput) {
        if sec.first() != Some(&TABLE_PAT) {
            return;
        }
        let Ok(pat) = Pat::parse(sec) else { return };
        if sec.get(5).is_some_and(|b| b & 1 == 0) {
            return;
        }
        let pmt_pid = pat
            .programs
            .iter()
            .find(|(n, _)| *n == self.program_number)
            .map(|&(_, pid)| pid);
        let changed =
            Some(pat.transport_stream_id) != self.transport_stream_id || pmt_pid != self.pmt_pid;
        if !changed {
            return;
        }
        if self.pat_section.is_some() {
            self.pat_version = (self.pat_version + 1) & 0x1f;
        }
        self.transport_stream_id = Some(pat.transport_stream_id);
        if pmt_pid != self.pmt_pid {
            self.pmt_asm.reset();
            self.pmt_section = None;
            self.pmt = None;
            self.pmt_pid = pmt_pid;
            self.update_pass();
            out.pmt_changed = true;
        }
        let Some(pmt_pid) = pmt_pid else {
            self.pat_section = None;
            return;
        };
        let ours = Pat {
            transport_stream_id: pat.transport_stream_id,
            version: self.pat_version,
            programs: vec![(self.program_number, pmt_pid)],
            nit_pid: None,
        }
        .build();
        self.collect(&ours, out);
        self.pat_section = Some(ours);
        self.emit_psi(out);
    }

    fn on_pmt(&mut self, sec: &[u8], out: &mut RemuxOutput) {
        if sec.first() != Some(&TABLE_PMT) {
            return;
        }
        let Ok(pmt) = Pmt::parse(sec) else { return };
        if pmt.program_number != self.program_number || sec.get(5).is_some_and(|b| b & 1 == 0) {
            return;
        }
        if self.pmt_section.as_deref() == Some(sec) {
            return;
        }
        self.collect(sec, out);
        self.pmt_section = Some(sec.to_vec());
        self.pmt = Some(pmt);
        self.update_pass();
        out.pmt_changed = true;
        self.emit_psi(out);
    }

    fn update_pass(&mut self) {
        for p in self.pass.iter_mut() {
            *p = PID_DROP;
        }
        self.rap_codec = None;
        self.pcr_pid = None;
        let Some(pmt) = &self.pmt else { return };
        let video = pmt.streams.iter().find(|s| s.codec().is_video());
        let rap = video.or_else(|| pmt.streams.iter().find(|s| s.codec().is_audio()));
        for s in &pmt.streams {
            if let Some(p) = self.pass.get_mut(usize::from(s.pid)) {
                *p = PID_PASS;
            }
        }
        if let Some(s) = rap {
            self.rap_codec = Some(s.codec());
            if let Some(p) = self.pass.get_mut(usize::from(s.pid)) {
                *p = PID_RAP;
            }
        }
        if pmt.pcr_pid != 0x1fff {
            self.pcr_pid = Some(pmt.pcr_pid);
            if let Some(p) = self.pass.get_mut(usize::from(pmt.pcr_pid))
                && *p == PID_DROP
            {
                *p = PID_PASS;
            }
        }
        // Never forward what we generate ourselves.
        for pid in [0, SDT_PID, EIT_PID] {
            if let Some(p) = self.pass.get_mut(usize::from(pid)) {
                *p = PID_DROP;
            }
        }
    }

    fn on_sdt(&mut self, sec: &[u8], out: &mut RemuxOutput) {
        if sec.first() != Some(&TABLE_SDT_ACTUAL) {
            return;
        }
        let Ok(sdt) = Sdt::parse(sec) else { return };
        if sec.get(5).is_some_and(|b| b & 1 == 0) {
            return;
        }
        self.collect(sec, out);
        if !self.opts.include_sdt || !self.is_ready() {
            return;
        }
        let Some(service) = sdt
            .services
            .into_iter()
            .find(|s| s.service_id == self.program_number)
        else {
            return;
        };
        if self.sdt_service.as_ref() != Some(&service) {
            if self.sdt_service.is_some() {
                self.sdt_version = (self.sdt_version + 1) & 0x1f;
            }
            self.sdt_service = Some(service.clone());
        }
        let ours = Sdt {
            transport_stream_id: sdt.transport_stream_id,
            original_network_id: sdt.original_network_id,
            version: self.sdt_version,
            section_number: 0,
            last_section_number: 0,
            services: vec![service],
        }
        .build();
        packetize_section(SDT_PID, &ours, &mut self.sdt_cc, &mut out.data);
    }

    fn on_eit(&mut self, sec: &[u8], out: &mut RemuxOutput) {
        let Some(&table_id) = sec.first() else { return };
        if table_id != TABLE_EIT_PF_ACTUAL && !(0x50..=0x5f).contains(&table_id) {
            return;
        }
        let Ok((h, _)) = parse_long_section(sec) else {
            return;
        };
        if h.table_id_extension != self.program_number || !h.current_next {
            return;
        }
        self.collect(sec, out);
        if self.opts.include_eit && self.is_ready() {
            packetize_section(EIT_PID, sec, &mut self.eit_cc, &mut out.data);
        }
    }

    /// Remember a valid section and report it when its content is new.
    fn collect(&mut self, sec: &[u8], out: &mut RemuxOutput) {
        if !self.opts.collect_sections {
            return;
        }
        let Ok((h, _)) = parse_long_section(sec) else {
            return;
        };
        let key = (h.table_id, h.table_id_extension, h.section_number);
        if self.latest.get(&key).is_some_and(|b| b.as_ref() == sec) {
            return;
        }
        if self.latest.len() >= 1024 && !self.latest.contains_key(&key) {
            return;
        }
        let data = Bytes::copy_from_slice(sec);
        self.latest.insert(key, data.clone());
        out.sections.push(TableSection {
            table_id: h.table_id,
            table_id_extension: h.table_id_extension,
            section_number: h.section_number,
            data,
        });
    }
}
