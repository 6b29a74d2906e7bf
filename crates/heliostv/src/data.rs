//! What a data connection carries after its RESULT (reference §9.2, §9.4),
//! sans-IO: the yard's single-program TS chunks are adjusted to HeliosTv's
//! rules, or turned into the section sequence of the `section` role.

use std::collections::HashMap;

use bytes::Bytes;
use media::psi::{self, SectionAssembler};
use media::ts::{PACKET_SIZE, SYNC_BYTE};

use crate::session::Tables;

const SDT_PID: u16 = psi::SDT_PID;
const EIT_PID: u16 = psi::EIT_PID;
const TABLE_EIT_SCHEDULE_FIRST: u8 = 0x50;
const TABLE_EIT_SCHEDULE_LAST: u8 = 0x5f;

fn pid_of(packet: &[u8]) -> Option<u16> {
    let b1 = *packet.get(1)?;
    let b2 = *packet.get(2)?;
    Some((u16::from(b1 & 0x1f) << 8) | u16::from(b2))
}

/// PIDs a `ts` connection must not carry although the yard's stream may:
/// DVB SI (NIT, SDT, EIT, ... on 0x10–0x1F) and null packets. A HeliosTv
/// `ts` stream holds only PID 0, the PMT, the PCR and the elementary streams
/// (checklist 33).
fn is_si_or_null(pid: u16) -> bool {
    (0x10..=0x1f).contains(&pid) || pid == 0x1fff
}

/// Removes SI and null packets from a chunk of whole packets; returns the
/// chunk itself when there is nothing to remove, so the common case copies
/// nothing. A trailing partial packet is dropped, keeping 188-byte alignment.
pub fn strip_si(chunk: Bytes) -> Bytes {
    let whole = chunk.len() - chunk.len() % PACKET_SIZE;
    let keep = |p: &[u8]| pid_of(p).is_some_and(|pid| !is_si_or_null(pid));
    let all_kept = chunk
        .get(..whole)
        .unwrap_or_default()
        .chunks_exact(PACKET_SIZE)
        .all(keep);
    if all_kept {
        return if whole == chunk.len() {
            chunk
        } else {
            chunk.slice(..whole)
        };
    }
    let mut out = Vec::with_capacity(whole);
    for p in chunk.chunks_exact(PACKET_SIZE).filter(|p| keep(p)) {
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

/// Extracts the selected tables' sections from a single-program TS and
/// passes on each one the first time its content is seen (§9.4).
#[derive(Debug)]
pub struct SectionFilter {
    tables: Tables,
    /// (program_number, PMT PID) from the (already rewritten) PAT.
    program: Option<(u16, u16)>,
    assemblers: HashMap<u16, SectionAssembler>,
    /// Last content sent per (table_id, table_id_extension, section_number).
    sent: HashMap<(u8, u16, u8), Vec<u8>>,
}

/// Bound on remembered section keys: EIT schedules can have many sections,
/// but a single service's never come near this.
const MAX_REMEMBERED: usize = 4096;

impl SectionFilter {
    pub fn new(tables: Tables) -> SectionFilter {
        SectionFilter {
            tables,
            program: None,
            assemblers: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    /// Feeds whole TS packets; `emit` gets each section to send, complete
    /// from `table_id` through its CRC_32.
    pub fn push(&mut self, ts: &[u8], emit: &mut impl FnMut(&[u8])) {
        for packet in ts.chunks_exact(PACKET_SIZE) {
            self.push_packet(packet, emit);
        }
    }

    fn push_packet(&mut self, packet: &[u8], emit: &mut impl FnMut(&[u8])) {
        let Some(pid) = pid_of(packet) else { return };
        if packet.first() != Some(&SYNC_BYTE) {
            return;
        }
        let pmt_pid = self.program.map(|(_, p)| p);
        if !(pid == psi::PAT_PID || Some(pid) == pmt_pid || pid == SDT_PID || pid == EIT_PID) {
            return;
        }
        let Some(b1) = packet.get(1) else { return };
        let Some(b3) = packet.get(3) else { return };
        let pusi = b1 & 0x40 != 0;
        let payload = match b3 & 0x30 {
            0x10 => packet.get(4..),
            0x30 => packet
                .get(4)
                .and_then(|len| packet.get(5 + usize::from(*len)..)),
            _ => None,
        };
        let Some(payload) = payload else { return };
        let mut sections: Vec<Vec<u8>> = Vec::new();
        self.assemblers
            .entry(pid)
            .or_default()
            .push(pusi, payload, &mut |s| sections.push(s.to_vec()));
        for section in sections {
            self.section(&section, emit);
        }
    }

    fn section(&mut self, section: &[u8], emit: &mut impl FnMut(&[u8])) {
        let Ok((header, _)) = psi::parse_long_section(section) else {
            return;
        };
        if !header.current_next {
            return;
        }
        if header.table_id == psi::TABLE_PAT
            && let Ok(pat) = psi::Pat::parse(section)
        {
            let first = pat.programs.first().copied();
            if first.is_some() && first != self.program {
                if let Some((_, old)) = self.program {
                    self.assemblers.remove(&old);
                }
                self.program = first;
            }
        }
        let program_number = self.program.map(|(n, _)| n);
        let wanted = match header.table_id {
            psi::TABLE_PAT => self.tables.pat,
            psi::TABLE_PMT => self.tables.pmt && Some(header.table_id_extension) == program_number,
            psi::TABLE_SDT_ACTUAL => self.tables.sdt,
            psi::TABLE_EIT_PF_ACTUAL | TABLE_EIT_SCHEDULE_FIRST..=TABLE_EIT_SCHEDULE_LAST => {
                self.tables.eit && Some(header.table_id_extension) == program_number
            }
            _ => false,
        };
        if !wanted {
            return;
        }
        let key = (
            header.table_id,
            header.table_id_extension,
            header.section_number,
        );
        if self.sent.get(&key).is_some_and(|s| s.as_slice() == section) {
            return;
        }
        if self.sent.len() >= MAX_REMEMBERED && !self.sent.contains_key(&key) {
            return;
        }
        self.sent.insert(key, section.to_vec());
        emit(section);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::psi::{Pat, Pmt, PmtStream, SectionHeader, build_long_section, packetize_section};

    fn pat(version: u8) -> Vec<u8> {
        Pat {
            transport_stream_id: 1,
            version,
            programs: vec![(1, 0x1000)],
            nit_pid: None,
        }
        .build()
    }

    fn pmt() -> Vec<u8> {
        Pmt {
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
        }
        .build()
    }

    fn eit(service: u16, table_id: u8) -> Vec<u8> {
        let h = SectionHeader {
            table_id,
            table_id_extension: service,
            version: 0,
            current_next: true,
            section_number: 0,
            last_section_number: 0,
        };
        build_long_section(&h, true, &[0, 1, 0, 1, 0, table_id])
    }

    fn packets(pid: u16, section: &[u8], cc: &mut u8) -> Vec<u8> {
        let mut out = Vec::new();
        packetize_section(pid, section, cc, &mut out);
        out
    }

    #[test]
    fn the_reference_pat_and_pmt_examples() {
        // §9.2/§9.4 worked examples: our builders produce them byte for byte.
        let expect_pat = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1,
            0x04, 0xb2,
        ];
        assert_eq!(pat(0), expect_pat);
        let expect_pmt = [
            0x02, 0xb0, 0x17, 0x00, 0x01, 0xc1, 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00, 0x1b, 0xe1,
            0x00, 0xf0, 0x00, 0x0f, 0xe1, 0x01, 0xf0, 0x00, 0x2f, 0x44, 0xb9, 0x9b,
        ];
        assert_eq!(pmt(), expect_pmt);
    }

    #[test]
    fn sections_are_sent_once_per_content_and_filtered() {
        let mut cc = 0;
        let mut ts = Vec::new();
        for _ in 0..3 {
            ts.extend(packets(0, &pat(0), &mut cc));
            ts.extend(packets(0x1000, &pmt(), &mut cc));
            ts.extend(packets(EIT_PID, &eit(1, 0x4e), &mut cc));
            ts.extend(packets(EIT_PID, &eit(2, 0x4e), &mut cc));
            ts.extend(packets(EIT_PID, &eit(1, 0x50), &mut cc));
        }
        ts.extend(packets(0, &pat(1), &mut cc));
        let mut got = Vec::new();
        SectionFilter::new(Tables::ALL).push(&ts, &mut |s| got.push(s.to_vec()));
        assert_eq!(got, vec![pat(0), pmt(), eit(1, 0x4e), eit(1, 0x50), pat(1)]);

        let mut got = Vec::new();
        let tables = Tables {
            pat: false,
            pmt: true,
            sdt: false,
            eit: false,
        };
        SectionFilter::new(tables).push(&ts, &mut |s| got.push(s.to_vec()));
        assert_eq!(got, vec![pmt()]);
    }

    #[test]
    fn bad_crc_and_next_sections_are_not_sent() {
        let mut bad = pat(0);
        *bad.last_mut().unwrap() ^= 1;
        let mut next = pat(0);
        next[5] &= !1;
        let len = next.len();
        let crc = psi::crc32_mpeg2(&next[..len - 4]).to_be_bytes();
        next[len - 4..].copy_from_slice(&crc);
        let mut cc = 0;
        let mut ts = packets(0, &bad, &mut cc);
        ts.extend(packets(0, &next, &mut cc));
        let mut got = 0;
        SectionFilter::new(Tables::ALL).push(&ts, &mut |_| got += 1);
        assert_eq!(got, 0);
    }

    #[test]
    fn strip_si_keeps_alignment_and_media() {
        let mut cc = 0;
        let mut ts = packets(0, &pat(0), &mut cc);
        ts.extend(packets(SDT_PID, &eit(1, 0x42), &mut cc));
        ts.extend(packets(0x100, &[0u8; 10], &mut cc));
        let kept = strip_si(Bytes::from(ts.clone()));
        assert_eq!(kept.len(), 2 * PACKET_SIZE);
        assert_eq!(&kept[..PACKET_SIZE], &ts[..PACKET_SIZE]);
        assert_eq!(&kept[PACKET_SIZE..], &ts[2 * PACKET_SIZE..]);
        let media_only = Bytes::from(ts[2 * PACKET_SIZE..].to_vec());
        assert_eq!(strip_si(media_only.clone()), media_only);
    }
}
