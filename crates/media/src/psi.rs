//! PSI/SI sections: reassembly from TS packets, the CRC_32, the tables the
//! yard needs (PAT, PMT, SDT, EIT) and builders for the ones we send
//! ourselves (PAT, PMT, SDT), plus packetizing sections back into TS.
//!
//! References: ISO/IEC 13818-1 §2.4.4 (PAT/PMT), ETSI EN 300 468 (SDT, EIT,
//! descriptors, Annex A text encoding).

use crate::bits::array_at;
use crate::program::Codec;
use crate::ts::{PACKET_SIZE, Packet, write_header};

/// The PIDs of the DVB SI tables we read.
pub const PAT_PID: u16 = 0x0000;
pub const NIT_PID: u16 = 0x0010;
pub const SDT_PID: u16 = 0x0011;
pub const EIT_PID: u16 = 0x0012;

pub const TABLE_PAT: u8 = 0x00;
pub const TABLE_PMT: u8 = 0x02;
pub const TABLE_SDT_ACTUAL: u8 = 0x42;
pub const TABLE_EIT_PF_ACTUAL: u8 = 0x4e;

/// Longest section: private sections may be 4096 bytes including the
/// 3-byte header.
pub const MAX_SECTION: usize = 4096;

// ---------------------------------------------------------------- CRC_32

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        // const fn: `i < 256` is the loop bound, checked at compile time.
        #[allow(clippy::indexing_slicing)]
        {
            t[i] = c;
        }
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection, no xor).
/// A whole section including its CRC_32 field yields 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        let idx = ((crc >> 24) as u8 ^ b) as usize;
        crc = (crc << 8) ^ CRC_TABLE.get(idx).copied().unwrap_or(0);
    }
    crc
}

// ---------------------------------------------------------- reassembly

/// Collects the sections of one PID from its packets' payloads.
#[derive(Debug, Default, Clone)]
pub struct SectionAssembler {
    buf: Vec<u8>,
    /// Total length of the section being collected (3 + section_length),
    /// once its header is complete.
    want: Option<usize>,
    /// Collecting a section (false: waiting for the next PUSI).
    active: bool,
}

impl SectionAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget a partial section (after a continuity error).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.want = None;
        self.active = false;
    }

    /// Feed one packet's payload; `f` gets every complete section (CRC not
    /// yet checked).
    pub fn push(&mut self, pusi: bool, payload: &[u8], f: &mut impl FnMut(&[u8])) {
        if pusi {
            let Some((&pointer, rest)) = payload.split_first() else {
                self.reset();
                return;
            };
            let pointer = usize::from(pointer);
            let (tail, fresh) = match (rest.get(..pointer), rest.get(pointer..)) {
                (Some(t), Some(n)) => (t, n),
                _ => {
                    self.reset();
                    return;
                }
            };
            if self.active {
                self.append(tail, f);
            }
            self.reset();
            self.active = true;
            self.append(fresh, f);
        } else if self.active {
            self.append(payload, f);
        }
    }

    fn append(&mut self, mut data: &[u8], f: &mut impl FnMut(&[u8])) {
        while self.active && !data.is_empty() {
            if self.buf.is_empty() && data.first() == Some(&0xff) {
                // Stuffing: nothing more in this packet.
                self.active = false;
                return;
            }
            let want = match self.want {
                Some(w) => w,
                None => {
                    let need = 3usize.saturating_sub(self.buf.len());
                    let take = need.min(data.len());
                    let (head, rest) = data.split_at(take);
                    self.buf.extend_from_slice(head);
                    data = rest;
                    match self.buf.get(..3) {
                        Some(h) => {
                            let len = usize::from(u16::from_be_bytes([
                                h.get(1).copied().unwrap_or(0) & 0x0f,
                                h.get(2).copied().unwrap_or(0),
                            ]));
                            let total = 3 + len;
                            if total > MAX_SECTION {
                                self.reset();
                                return;
                            }
                            self.want = Some(total);
                            total
                        }
                        None => continue,
                    }
                }
            };
            let need = want.saturating_sub(self.buf.len());
            let take = need.min(data.len());
            let (head, rest) = data.split_at(take);
            self.buf.extend_from_slice(head);
            data = rest;
            if self.buf.len() >= want {
                f(&self.buf);
                // The next section may follow directly in the same payload.
                self.buf.clear();
                self.want = None;
            }
        }
    }
}

// --------------------------------------------------- generic section

/// The long-form header common to PAT, PMT, SDT, EIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    pub table_id: u8,
    pub table_id_extension: u16,
    pub version: u8,
    pub current_next: bool,
    pub section_number: u8,
    pub last_section_number: u8,
}

/// Why a section was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    #[error("section shorter than its header")]
    Short,
    #[error("section_syntax_indicator is 0 where a long section was expected")]
    NotLongForm,
    #[error("CRC_32 mismatch")]
    Crc,
    #[error("section body malformed")]
    Malformed,
    #[error("unexpected table_id {0:#04x}")]
    Table(u8),
}

/// Check a long-form section (header, length, CRC) and return its header and
/// the body between the 8-byte header and the CRC.
pub fn parse_long_section(sec: &[u8]) -> Result<(SectionHeader, &[u8]), SectionError> {
    let h: &[u8; 8] = array_at(sec, 0).ok_or(SectionError::Short)?;
    let len = (usize::from(h[1] & 0x0f) << 8) | usize::from(h[2]);
    let total = 3 + len;
    let sec = sec.get(..total).ok_or(SectionError::Short)?;
    if h[1] & 0x80 == 0 {
        return Err(SectionError::NotLongForm);
    }
    if total < 12 {
        return Err(SectionError::Short);
    }
    if crc32_mpeg2(sec) != 0 {
        return Err(SectionError::Crc);
    }
    let header = SectionHeader {
        table_id: h[0],
        table_id_extension: u16::from_be_bytes([h[3], h[4]]),
        version: (h[5] >> 1) & 0x1f,
        current_next: h[5] & 1 != 0,
        section_number: h[6],
        last_section_number: h[7],
    };
    let body = sec.get(8..total - 4).ok_or(SectionError::Short)?;
    Ok((header, body))
}

/// Assemble a long-form section from header fields and body, appending the
/// CRC_32.
pub fn build_long_section(h: &SectionHeader, private: bool, body: &[u8]) -> Vec<u8> {
    let len = body.len() + 5 + 4;
    let mut s = Vec::with_capacity(len + 3);
    s.push(h.table_id);
    // section_syntax_indicator 1, '0' (PSI) or '1' (private/DVB), reserved 11
    let b1 = 0x80 | if private { 0x40 } else { 0 } | 0x30 | ((len >> 8) as u8 & 0x0f);
    s.push(b1);
    s.push(len as u8);
    s.extend_from_slice(&h.table_id_extension.to_be_bytes());
    s.push(0xc0 | ((h.version & 0x1f) << 1) | u8::from(h.current_next));
    s.push(h.section_number);
    s.push(h.last_section_number);
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// Split a section into TS packets on `pid`, the first with PUSI and
/// pointer_field 0, stuffing the last with 0xff. `cc` is the counter of the
/// first packet and is advanced past the last one.
pub fn packetize_section(pid: u16, section: &[u8], cc: &mut u8, out: &mut Vec<u8>) {
    let mut rest = section;
    let mut first = true;
    loop {
        let mut pkt: Packet = [0xff; PACKET_SIZE];
        write_header(&mut pkt, pid, first, *cc);
        *cc = (*cc + 1) & 0x0f;
        let start = if first {
            pkt[4] = 0;
            5
        } else {
            4
        };
        let room = PACKET_SIZE - start;
        let take = room.min(rest.len());
        let (head, tail) = rest.split_at(take);
        if let Some(dst) = pkt.get_mut(start..start + take) {
            dst.copy_from_slice(head);
        }
        out.extend_from_slice(&pkt);
        rest = tail;
        first = false;
        if rest.is_empty() {
            break;
        }
    }
}

/// How many packets `packetize_section` produces for a section.
pub fn section_packet_count(section_len: usize) -> usize {
    let first = PACKET_SIZE - 5;
    if section_len <= first {
        1
    } else {
        1 + (section_len - first).div_ceil(PACKET_SIZE - 4)
    }
}

// --------------------------------------------------------------- PAT

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pat {
    pub transport_stream_id: u16,
    pub version: u8,
    /// (program_number, PMT PID); program 0 (the NIT) is kept out of here.
    pub programs: Vec<(u16, u16)>,
    pub nit_pid: Option<u16>,
}

impl Pat {
    /// Parse a PAT section (single-section PATs, as every TS in practice).
    pub fn parse(sec: &[u8]) -> Result<Pat, SectionError> {
        let (h, body) = parse_long_section(sec)?;
        if h.table_id != TABLE_PAT {
            return Err(SectionError::Table(h.table_id));
        }
        let mut programs = Vec::new();
        let mut nit_pid = None;
        for e in body.chunks_exact(4).filter_map(|c| array_at::<4>(c, 0)) {
            let n = u16::from_be_bytes([e[0], e[1]]);
            let pid = u16::from_be_bytes([e[2] & 0x1f, e[3]]);
            if n == 0 {
                nit_pid = Some(pid);
            } else {
                programs.push((n, pid));
            }
        }
        Ok(Pat {
            transport_stream_id: h.table_id_extension,
            version: h.version,
            programs,
            nit_pid,
        })
    }

    pub fn build(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 * (self.programs.len() + 1));
        if let Some(nit) = self.nit_pid {
            body.extend_from_slice(&[0, 0, 0xe0 | (nit >> 8) as u8, nit as u8]);
        }
        for &(n, pid) in &self.programs {
            body.extend_from_slice(&n.to_be_bytes());
            body.push(0xe0 | ((pid >> 8) as u8 & 0x1f));
            body.push(pid as u8);
        }
        build_long_section(
            &SectionHeader {
                table_id: TABLE_PAT,
                table_id_extension: self.transport_stream_id,
                version: self.version,
                current_next: true,
                section_number: 0,
                last_section_number: 0,
            },
            false,
            &body,
        )
    }
}

// --------------------------------------------------------------- PMT

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtStream {
    pub stream_type: u8,
    pub pid: u16,
    /// The ES_info descriptors, raw.
    pub descriptors: Vec<u8>,
}

impl PmtStream {
    /// ISO 639 language code (descriptor 0x0a), when present and printable.
    pub fn language(&self) -> Option<String> {
        descriptors(&self.descriptors)
            .find(|(tag, _)| *tag == 0x0a)
            .and_then(|(_, d)| d.get(..3))
            .filter(|l| l.iter().all(|c| c.is_ascii_alphabetic()))
            .map(|l| String::from_utf8_lossy(l).into_owned())
    }

    /// The codec, looking at descriptors for private PES (stream_type 0x06).
    pub fn codec(&self) -> Codec {
        if self.stream_type == 0x06 {
            for (tag, d) in descriptors(&self.descriptors) {
                match tag {
                    0x6a => return Codec::Ac3,
                    0x7a => return Codec::Eac3,
                    // registration descriptor with a format identifier
                    0x05 => match d.get(..4) {
                        Some(b"AC-3") => return Codec::Ac3,
                        Some(b"EAC3") => return Codec::Eac3,
                        Some(b"HEVC") => return Codec::Hevc,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Codec::from_stream_type(self.stream_type)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pmt {
    pub program_number: u16,
    pub version: u8,
    pub pcr_pid: u16,
    /// program_info descriptors, raw.
    pub program_info: Vec<u8>,
    pub streams: Vec<PmtStream>,
}

impl Pmt {
    pub fn parse(sec: &[u8]) -> Result<Pmt, SectionError> {
        let (h, body) = parse_long_section(sec)?;
        if h.table_id != TABLE_PMT {
            return Err(SectionError::Table(h.table_id));
        }
        let fixed: &[u8; 4] = array_at(body, 0).ok_or(SectionError::Malformed)?;
        let pcr_pid = u16::from_be_bytes([fixed[0] & 0x1f, fixed[1]]);
        let info_len = usize::from(u16::from_be_bytes([fixed[2] & 0x0f, fixed[3]]));
        let program_info = body
            .get(4..4 + info_len)
            .ok_or(SectionError::Malformed)?
            .to_vec();
        let mut rest = body.get(4 + info_len..).ok_or(SectionError::Malformed)?;
        let mut streams = Vec::new();
        while !rest.is_empty() {
            let e: &[u8; 5] = array_at(rest, 0).ok_or(SectionError::Malformed)?;
            let es_len = usize::from(u16::from_be_bytes([e[3] & 0x0f, e[4]]));
            let descriptors = rest
                .get(5..5 + es_len)
                .ok_or(SectionError::Malformed)?
                .to_vec();
            streams.push(PmtStream {
                stream_type: e[0],
                pid: u16::from_be_bytes([e[1] & 0x1f, e[2]]),
                descriptors,
            });
            rest = rest.get(5 + es_len..).unwrap_or(&[]);
        }
        Ok(Pmt {
            program_number: h.table_id_extension,
            version: h.version,
            pcr_pid,
            program_info,
            streams,
        })
    }

    pub fn build(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        body.push(0xe0 | ((self.pcr_pid >> 8) as u8 & 0x1f));
        body.push(self.pcr_pid as u8);
        let info_len = self.program_info.len().min(0x3ff);
        body.push(0xf0 | (info_len >> 8) as u8);
        body.push(info_len as u8);
        body.extend_from_slice(self.program_info.get(..info_len).unwrap_or(&[]));
        for s in &self.streams {
            body.push(s.stream_type);
            body.push(0xe0 | ((s.pid >> 8) as u8 & 0x1f));
            body.push(s.pid as u8);
            let l = s.descriptors.len().min(0x3ff);
            body.push(0xf0 | (l >> 8) as u8);
            body.push(l as u8);
            body.extend_from_slice(s.descriptors.get(..l).unwrap_or(&[]));
        }
        build_long_section(
            &SectionHeader {
                table_id: TABLE_PMT,
                table_id_extension: self.program_number,
                version: self.version,
                current_next: true,
                section_number: 0,
                last_section_number: 0,
            },
            false,
            &body,
        )
    }
}

/// Iterate (tag, body) over a descriptor loop, stopping at the first
/// descriptor that overruns the loop.
pub fn descriptors(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = data.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let body = rest.get(..usize::from(len))?;
        data = rest.get(usize::from(len)..).unwrap_or(&[]);
        Some((tag, body))
    })
}

// --------------------------------------------------------------- SDT

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdtService {
    pub service_id: u16,
    pub eit_schedule: bool,
    pub eit_present_following: bool,
    pub running_status: u8,
    pub free_ca: bool,
    /// From the service_descriptor (0x48); 0 when absent.
    pub service_type: u8,
    pub provider_name: Option<String>,
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdt {
    pub transport_stream_id: u16,
    pub original_network_id: u16,
    pub version: u8,
    pub section_number: u8,
    pub last_section_number: u8,
    pub services: Vec<SdtService>,
}

impl Sdt {
    /// Parse an SDT section (actual 0x42 or other 0x46).
    pub fn parse(sec: &[u8]) -> Result<Sdt, SectionError> {
        let (h, body) = parse_long_section(sec)?;
        if h.table_id != TABLE_SDT_ACTUAL && h.table_id != 0x46 {
            return Err(SectionError::Table(h.table_id));
        }
        let fixed: &[u8; 3] = array_at(body, 0).ok_or(SectionError::Malformed)?;
        let original_network_id = u16::from_be_bytes([fixed[0], fixed[1]]);
        let mut rest = body.get(3..).unwrap_or(&[]);
        let mut services = Vec::new();
        while !rest.is_empty() {
            let e: &[u8; 5] = array_at(rest, 0).ok_or(SectionError::Malformed)?;
            let dl = usize::from(u16::from_be_bytes([e[3] & 0x0f, e[4]]));
            let descs = rest.get(5..5 + dl).ok_or(SectionError::Malformed)?;
            let mut svc = SdtService {
                service_id: u16::from_be_bytes([e[0], e[1]]),
                eit_schedule: e[2] & 0x02 != 0,
                eit_present_following: e[2] & 0x01 != 0,
                running_status: e[3] >> 5,
                free_ca: e[3] & 0x10 != 0,
                service_type: 0,
                provider_name: None,
                service_name: None,
            };
            for (tag, d) in descriptors(descs) {
                if tag != 0x48 {
                    continue;
                }
                let Some((&stype, d)) = d.split_first() else {
                    continue;
                };
                svc.service_type = stype;
                let Some((&pl, d)) = d.split_first() else {
                    continue;
                };
                let provider = d.get(..usize::from(pl));
                let d = d.get(usize::from(pl)..).unwrap_or(&[]);
                let name = d
                    .split_first()
                    .and_then(|(&nl, d)| d.get(..usize::from(nl)));
                svc.provider_name = provider.map(decode_dvb_text);
                svc.service_name = name.map(decode_dvb_text);
            }
            services.push(svc);
            rest = rest.get(5 + dl..).unwrap_or(&[]);
        }
        Ok(Sdt {
            transport_stream_id: h.table_id_extension,
            original_network_id,
            version: h.version,
            section_number: h.section_number,
            last_section_number: h.last_section_number,
            services,
        })
    }

    /// Build an SDT actual section.
    pub fn build(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&self.original_network_id.to_be_bytes());
        body.push(0xff);
        for s in &self.services {
            let mut desc = Vec::new();
            if s.service_name.is_some() || s.provider_name.is_some() || s.service_type != 0 {
                // 3 + 120 + 120 keeps the descriptor within its 255 bytes.
                let p = encode_dvb_text(s.provider_name.as_deref().unwrap_or(""), 120);
                let n = encode_dvb_text(s.service_name.as_deref().unwrap_or(""), 120);
                desc.push(0x48);
                desc.push((3 + p.len() + n.len()) as u8);
                desc.push(s.service_type);
                desc.push(p.len() as u8);
                desc.extend_from_slice(&p);
                desc.push(n.len() as u8);
                desc.extend_from_slice(&n);
            }
            body.extend_from_slice(&s.service_id.to_be_bytes());
            body.push(0xfc | (u8::from(s.eit_schedule) << 1) | u8::from(s.eit_present_following));
            let dl = desc.len();
            body.push(((s.running_status & 7) << 5) | (u8::from(s.free_ca) << 4) | (dl >> 8) as u8);
            body.push(dl as u8);
            body.extend_from_slice(&desc);
        }
        build_long_section(
            &SectionHeader {
                table_id: TABLE_SDT_ACTUAL,
                table_id_extension: self.transport_stream_id,
                version: self.version,
                current_next: true,
                section_number: self.section_number,
                last_section_number: self.last_section_number,
            },
            true,
            &body,
        )
    }
}

// --------------------------------------------------------------- EIT

/// One event of an EIT section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EitEvent {
    pub event_id: u16,
    /// Unix seconds (UTC); `None` when the start is undefined (all ones).
    pub start: Option<i64>,
    /// Seconds.
    pub duration: u32,
    pub running_status: u8,
    pub language: Option<String>,
    pub title: Option<String>,
    /// short_event_descriptor text (often the subtitle / short synopsis).
    pub short_text: Option<String>,
    /// extended_event_descriptor texts, concatenated in descriptor order.
    pub extended_text: Option<String>,
    /// content_descriptor nibbles (level 1 << 4 | level 2).
    pub content: Vec<u8>,
    /// parental_rating_descriptor: minimum age (rating + 3), first country.
    pub min_age: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eit {
    pub table_id: u8,
    pub service_id: u16,
    pub version: u8,
    pub section_number: u8,
    pub transport_stream_id: u16,
    pub original_network_id: u16,
    pub events: Vec<EitEvent>,
}

impl Eit {
    pub fn parse(sec: &[u8]) -> Result<Eit, SectionError> {
        let (h, body) = parse_long_section(sec)?;
        if !(0x4e..=0x6f).contains(&h.table_id) {
            return Err(SectionError::Table(h.table_id));
        }
        let fixed: &[u8; 6] = array_at(body, 0).ok_or(SectionError::Malformed)?;
        let mut rest = body.get(6..).unwrap_or(&[]);
        let mut events = Vec::new();
        while !rest.is_empty() {
            let e: &[u8; 12] = array_at(rest, 0).ok_or(SectionError::Malformed)?;
            let dl = usize::from(u16::from_be_bytes([e[10] & 0x0f, e[11]]));
            let descs = rest.get(12..12 + dl).ok_or(SectionError::Malformed)?;
            let mut ev = EitEvent {
                event_id: u16::from_be_bytes([e[0], e[1]]),
                start: mjd_bcd_to_unix(&[e[2], e[3], e[4], e[5], e[6]]),
                duration: bcd_duration(&[e[7], e[8], e[9]]).unwrap_or(0),
                running_status: e[10] >> 5,
                language: None,
                title: None,
                short_text: None,
                extended_text: None,
                content: Vec::new(),
                min_age: None,
            };
            let mut ext = String::new();
            for (tag, d) in descriptors(descs) {
                match tag {
                    0x4d => {
                        let Some(lang) = d.get(..3) else { continue };
                        ev.language = Some(String::from_utf8_lossy(lang).into_owned());
                        let d = d.get(3..).unwrap_or(&[]);
                        let Some((&nl, d)) = d.split_first() else {
                            continue;
                        };
                        ev.title = d.get(..usize::from(nl)).map(decode_dvb_text);
                        let d = d.get(usize::from(nl)..).unwrap_or(&[]);
                        ev.short_text = d
                            .split_first()
                            .and_then(|(&tl, d)| d.get(..usize::from(tl)))
                            .map(decode_dvb_text)
                            .filter(|t| !t.is_empty());
                    }
                    0x4e => {
                        // number/last (1), lang (3), items (len + items), text
                        let Some(d) = d.get(4..) else { continue };
                        let Some((&il, d)) = d.split_first() else {
                            continue;
                        };
                        let d = d.get(usize::from(il)..).unwrap_or(&[]);
                        if let Some(t) = d
                            .split_first()
                            .and_then(|(&tl, d)| d.get(..usize::from(tl)))
                        {
                            ext.push_str(&decode_dvb_text(t));
                        }
                    }
                    0x54 => {
                        ev.content.extend(d.iter().step_by(2).take(d.len() / 2));
                    }
                    0x55 => {
                        if let Some(&r) = d.get(3)
                            && (1..=0x0f).contains(&r)
                        {
                            ev.min_age = Some(r + 3);
                        }
                    }
                    _ => {}
                }
            }
            if !ext.is_empty() {
                ev.extended_text = Some(ext);
            }
            events.push(ev);
            rest = rest.get(12 + dl..).unwrap_or(&[]);
        }
        Ok(Eit {
            table_id: h.table_id,
            service_id: h.table_id_extension,
            version: h.version,
            section_number: h.section_number,
            transport_stream_id: u16::from_be_bytes([fixed[0], fixed[1]]),
            original_network_id: u16::from_be_bytes([fixed[2], fixed[3]]),
            events,
        })
    }
}

fn bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0f);
    if hi > 9 || lo > 9 {
        return None;
    }
    Some(u32::from(hi) * 10 + u32::from(lo))
}

fn bcd_duration(b: &[u8; 3]) -> Option<u32> {
    Some(bcd(b[0])? * 3600 + bcd(b[1])? * 60 + bcd(b[2])?)
}

/// 16-bit Modified Julian Date plus 24-bit BCD hh:mm:ss -> unix seconds.
pub fn mjd_bcd_to_unix(b: &[u8; 5]) -> Option<i64> {
    if b.iter().all(|&x| x == 0xff) {
        return None;
    }
    let mjd = i64::from(u16::from_be_bytes([b[0], b[1]]));
    let secs = bcd_duration(&[b[2], b[3], b[4]])?;
    Some((mjd - 40587) * 86400 + i64::from(secs))
}

/// Unix seconds -> MJD + BCD time (the inverse, for tests and generators).
pub fn unix_to_mjd_bcd(t: i64) -> [u8; 5] {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400) as u32;
    let mjd = (days + 40587).clamp(0, 0xffff) as u16;
    let to_bcd = |v: u32| (((v / 10) << 4) | (v % 10)) as u8;
    let m = mjd.to_be_bytes();
    [
        m[0],
        m[1],
        to_bcd(secs / 3600),
        to_bcd(secs / 60 % 60),
        to_bcd(secs % 60),
    ]
}

// --------------------------------------------------- DVB text (Annex A)

/// Decode a DVB string (EN 300 468 Annex A): the optional first byte(s)
/// select the character table. Supported: the default table (ISO/IEC 6937,
/// with its combining diacritics for common Latin letters), ISO-8859-1,
/// -5, -9 (approximated as -1), -15, UCS-2 (0x11) and UTF-8 (0x15).
/// Control codes are dropped except the CR/LF code 0x8a (a newline).
pub fn decode_dvb_text(b: &[u8]) -> String {
    let Some(&first) = b.first() else {
        return String::new();
    };
    match first {
        0x20..=0xff => decode_6937(b),
        0x01 => decode_8859(b.get(1..).unwrap_or(&[]), 5),
        0x05 => decode_8859(b.get(1..).unwrap_or(&[]), 9),
        0x0b => decode_8859(b.get(1..).unwrap_or(&[]), 15),
        0x02..=0x0a => decode_8859(b.get(1..).unwrap_or(&[]), u32::from(first) + 4),
        0x10 => {
            let part = array_at::<2>(b, 1).map_or(0, |p| u16::from_be_bytes(*p));
            decode_8859(b.get(3..).unwrap_or(&[]), u32::from(part))
        }
        0x11 => {
            let s: String = char::decode_utf16(
                b.get(1..)
                    .unwrap_or(&[])
                    .chunks_exact(2)
                    .filter_map(|c| array_at::<2>(c, 0))
                    .map(|c| u16::from_be_bytes(*c)),
            )
            .map(|r| r.unwrap_or('\u{fffd}'))
            .collect();
            clean_controls(&s)
        }
        0x15 => clean_controls(&String::from_utf8_lossy(b.get(1..).unwrap_or(&[]))),
        _ => decode_6937(b.get(1..).unwrap_or(&[])),
    }
}

fn clean_controls(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\u{8a}' => Some('\n'),
            '\u{80}'..='\u{9f}' => None,
            c if c < ' ' && c != '\n' => None,
            c => Some(c),
        })
        .collect()
}

fn decode_8859(b: &[u8], part: u32) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        let ch = match (part, c) {
            (_, 0x8a) => '\n',
            (_, 0x00..=0x1f) | (_, 0x80..=0x9f) => continue,
            (_, 0x20..=0x7f) => char::from(c),
            (5, 0xa1..=0xac) | (5, 0xae..=0xef) | (5, 0xf1..=0xfc) | (5, 0xfe..=0xff) => {
                char::from_u32(u32::from(c) + 0x360).unwrap_or('\u{fffd}')
            }
            (5, 0xf0) => '№',
            (5, 0xfd) => '§',
            (15, 0xa4) => '€',
            (15, 0xa6) => 'Š',
            (15, 0xa8) => 'š',
            (15, 0xb4) => 'Ž',
            (15, 0xb8) => 'ž',
            (15, 0xbc) => 'Œ',
            (15, 0xbd) => 'œ',
            (15, 0xbe) => 'Ÿ',
            (1 | 5 | 9 | 15, _) => char::from(c),
            // Tables we do not carry: keep the text readable where it is
            // ASCII and mark the rest.
            _ => '\u{fffd}',
        };
        s.push(ch);
    }
    s
}

/// ISO/IEC 6937 as used by DVB's default table: ASCII, a few symbols in the
/// upper half, and non-spacing diacritics (0xc1-0xcf) that precede the
/// letter they modify.
fn decode_6937(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    let mut accent: Option<u8> = None;
    for &c in b {
        match c {
            0x8a => s.push('\n'),
            0x00..=0x1f | 0x7f..=0x9f => {}
            0xc1..=0xcf => accent = Some(c),
            _ => {
                let base = if c < 0x80 {
                    char::from(c)
                } else {
                    upper_6937(c)
                };
                match accent.take() {
                    Some(a) => s.push(compose(a, base)),
                    None => s.push(base),
                }
            }
        }
    }
    s
}

fn upper_6937(c: u8) -> char {
    match c {
        0xa0 => '\u{a0}',
        0xa1 => '¡',
        0xa2 => '¢',
        0xa3 => '£',
        0xa5 => '¥',
        0xa7 => '§',
        0xa8 => '¤',
        0xab => '«',
        0xb0 => '°',
        0xb1 => '±',
        0xb2 => '²',
        0xb3 => '³',
        0xb4 => '×',
        0xb5 => 'µ',
        0xb6 => '¶',
        0xb7 => '·',
        0xb8 => '÷',
        0xbb => '»',
        0xbc => '¼',
        0xbd => '½',
        0xbe => '¾',
        0xbf => '¿',
        0xe1 => 'Æ',
        0xe2 => 'Đ',
        0xe8 => 'Ł',
        0xe9 => 'Ø',
        0xea => 'Œ',
        0xf1 => 'æ',
        0xf2 => 'đ',
        0xf5 => 'ı',
        0xf8 => 'ł',
        0xf9 => 'ø',
        0xfa => 'œ',
        0xfb => 'ß',
        _ => '\u{fffd}',
    }
}

/// Precompose an ISO 6937 diacritic with a base letter; falls back to the
/// base letter plus the Unicode combining mark.
fn compose(accent: u8, base: char) -> char {
    const TABLE: &[(u8, &str, &str)] = &[
        (0xc1, "AEIOUaeiou", "ÀÈÌÒÙàèìòù"),
        (0xc2, "AEIOUYaeiouyCcNnSsZz", "ÁÉÍÓÚÝáéíóúýĆćŃńŚśŹź"),
        (0xc3, "AEIOUaeiou", "ÂÊÎÔÛâêîôû"),
        (0xc4, "ANOano", "ÃÑÕãñõ"),
        (0xc8, "AEIOUaeiouy", "ÄËÏÖÜäëïöüÿ"),
        (0xca, "Aa", "Åå"),
        (0xcb, "CcSsTt", "ÇçŞşŢţ"),
        (0xcf, "CcSsZzRrEeNn", "ČčŠšŽžŘřĚěŇň"),
    ];
    for (a, from, to) in TABLE {
        if *a == accent
            && let Some(i) = from.chars().position(|c| c == base)
            && let Some(c) = to.chars().nth(i)
        {
            return c;
        }
    }
    base
}

/// Encode text for a DVB string: printable ASCII as-is (the default table),
/// anything else as UTF-8 behind the 0x15 selector. Truncated on a char
/// boundary to fit `max` bytes.
pub fn encode_dvb_text(s: &str, max: usize) -> Vec<u8> {
    let ascii = s.bytes().all(|b| (0x20..0x7f).contains(&b));
    let mut out = Vec::with_capacity(s.len() + 1);
    if !ascii {
        out.push(0x15);
    }
    for c in s.chars() {
        let mut buf = [0u8; 4];
        let e = c.encode_utf8(&mut buf).as_bytes();
        if out.len() + e.len() > max {
            break;
        }
        out.extend_from_slice(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_reference_pat() {
        // The worked example of the HeliosTv reference §9.2.
        let pat = Pat {
            transport_stream_id: 1,
            version: 0,
            programs: vec![(1, 0x1000)],
            nit_pid: None,
        };
        let sec = pat.build();
        assert_eq!(
            sec,
            vec![
                0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1,
                0x04, 0xb2
            ]
        );
        assert_eq!(Pat::parse(&sec).unwrap(), pat);
        let mut cc = 0;
        let mut out = Vec::new();
        packetize_section(0, &sec, &mut cc, &mut out);
        assert_eq!(&out[..5], &[0x47, 0x40, 0x00, 0x10, 0x00]);
        assert_eq!(out.len(), 188);
        assert_eq!(cc, 1);
    }

    #[test]
    fn reference_pmt_bytes() {
        let pmt = Pmt {
            program_number: 1,
            version: 0,
            pcr_pid: 0x100,
            program_info: vec![],
            streams: vec![
                PmtStream {
                    stream_type: 0x1b,
                    pid: 0x100,
                    descriptors: vec![],
                },
                PmtStream {
                    stream_type: 0x0f,
                    pid: 0x101,
                    descriptors: vec![],
                },
            ],
        };
        let sec = pmt.build();
        assert_eq!(
            sec,
            vec![
                0x02, 0xb0, 0x17, 0x00, 0x01, 0xc1, 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00, 0x1b, 0xe1,
                0x00, 0xf0, 0x00, 0x0f, 0xe1, 0x01, 0xf0, 0x00, 0x2f, 0x44, 0xb9, 0x9b
            ]
        );
        assert_eq!(Pmt::parse(&sec).unwrap(), pmt);
    }

    #[test]
    fn assembler_multiple_sections_and_split() {
        let a = Pat {
            transport_stream_id: 7,
            version: 3,
            programs: vec![(1, 0x100)],
            nit_pid: Some(0x10),
        }
        .build();
        let b = Pat {
            transport_stream_id: 7,
            version: 4,
            programs: vec![(2, 0x200)],
            nit_pid: None,
        }
        .build();
        let mut payload = vec![0u8];
        payload.extend_from_slice(&a);
        payload.extend_from_slice(&b[..5]);
        let mut asm = SectionAssembler::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        asm.push(true, &payload, &mut |s: &[u8]| got.push(s.to_vec()));
        assert_eq!(got, vec![a.clone()]);
        // The rest of b, then a new section after the pointer.
        let mut p2 = vec![(b.len() - 5) as u8];
        p2.extend_from_slice(&b[5..]);
        p2.extend_from_slice(&a);
        p2.extend_from_slice(&[0xff; 10]);
        asm.push(true, &p2, &mut |s: &[u8]| got.push(s.to_vec()));
        assert_eq!(got, vec![a.clone(), b, a]);
    }

    #[test]
    fn dvb_text() {
        assert_eq!(decode_dvb_text(b"Das Erste"), "Das Erste");
        assert_eq!(decode_dvb_text(b"\x10\x00\x01Caf\xe9"), "Café");
        assert_eq!(decode_dvb_text("\u{15}Café".as_bytes()), "Café");
        assert_eq!(decode_dvb_text(b"Caf\xc2e"), "Café");
        assert_eq!(decode_dvb_text(b"a\x86b\x87\x8ac"), "ab\nc");
        assert_eq!(encode_dvb_text("Café", 255), "\u{15}Café".as_bytes());
    }

    #[test]
    fn mjd() {
        // EN 300 468 Annex C example: 93/10/13 12:45:00 = 0xC079 12 45 00
        let t = mjd_bcd_to_unix(&[0xc0, 0x79, 0x12, 0x45, 0x00]).unwrap();
        assert_eq!(t, 750_516_300);
        assert_eq!(unix_to_mjd_bcd(t), [0xc0, 0x79, 0x12, 0x45, 0x00]);
    }
}
