//! MPEG-TS packets (ISO/IEC 13818-1 §2.4.3) and the aligner that finds them
//! in an arbitrary byte stream.
//!
//! Inputs arrive from files, HTTP and UDP in chunks that need not respect
//! packet boundaries, and a lossy network may insert or drop bytes. The
//! [`TsAligner`] hands out 188-byte packets without copying whenever a chunk
//! is aligned, copies only the packet that straddles two chunks, and on lost
//! sync searches for three sync bytes 188 apart before it trusts a position
//! again, counting what it skipped.

/// Bytes in one transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// The first byte of every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// The null packet PID: stuffing, always discarded.
pub const NULL_PID: u16 = 0x1fff;

/// One TS packet, as handed around by the aligner, demuxer and remuxer.
pub type Packet = [u8; PACKET_SIZE];

/// Counters of what went wrong (or simply happened) while demuxing. Cheap to
/// copy; front ends export them as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// Aligned packets handed out.
    pub packets: u64,
    /// Times the aligner lost sync and had to search for it again.
    pub resyncs: u64,
    /// Bytes skipped while searching for sync (garbage, partial packets).
    pub dropped_bytes: u64,
    /// Packets whose continuity_counter did not follow the previous one.
    pub continuity_errors: u64,
    /// Packets with transport_error_indicator set (discarded).
    pub transport_errors: u64,
    /// PSI sections whose CRC_32 did not match (discarded).
    pub crc_errors: u64,
    /// PES packets that were cut short (a new PES started early, or a
    /// continuity error broke them); their data is discarded.
    pub truncated_pes: u64,
    /// PES packets without a valid PES header.
    pub invalid_pes: u64,
}

/// The fixed 4-byte header of a packet, plus where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub transport_error: bool,
    pub payload_unit_start: bool,
    pub priority: bool,
    pub pid: u16,
    /// 0 = not scrambled.
    pub scrambling: u8,
    pub has_adaptation: bool,
    pub has_payload: bool,
    pub continuity_counter: u8,
}

impl PacketHeader {
    /// Parse the header of an aligned packet. The sync byte is not checked
    /// here: the aligner already did.
    #[inline]
    pub fn parse(pkt: &Packet) -> PacketHeader {
        let b1 = pkt[1];
        let b3 = pkt[3];
        PacketHeader {
            transport_error: b1 & 0x80 != 0,
            payload_unit_start: b1 & 0x40 != 0,
            priority: b1 & 0x20 != 0,
            pid: (u16::from(b1 & 0x1f) << 8) | u16::from(pkt[2]),
            scrambling: b3 >> 6,
            has_adaptation: b3 & 0x20 != 0,
            has_payload: b3 & 0x10 != 0,
            continuity_counter: b3 & 0x0f,
        }
    }
}

/// The interesting fields of an adaptation field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdaptationField {
    pub discontinuity: bool,
    pub random_access: bool,
    pub es_priority: bool,
    /// Program clock reference in 27 MHz ticks (base * 300 + extension).
    pub pcr: Option<u64>,
}

/// Read the PID of an aligned packet.
#[inline]
pub fn packet_pid(pkt: &Packet) -> u16 {
    (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2])
}

/// Parse the adaptation field of a packet, if it has one.
pub fn adaptation_field(pkt: &Packet) -> Option<AdaptationField> {
    if pkt[3] & 0x20 == 0 {
        return None;
    }
    let len = usize::from(pkt[4]);
    if len == 0 {
        return Some(AdaptationField::default());
    }
    let body = pkt.get(5..5 + len)?;
    let flags = *body.first()?;
    let pcr = if flags & 0x10 != 0 {
        body.get(1..7).map(pcr_from_bytes)
    } else {
        None
    };
    Some(AdaptationField {
        discontinuity: flags & 0x80 != 0,
        random_access: flags & 0x40 != 0,
        es_priority: flags & 0x20 != 0,
        pcr,
    })
}

fn pcr_from_bytes(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &x in b.iter().take(6) {
        v = (v << 8) | u64::from(x);
    }
    let base = v >> 15;
    let ext = v & 0x1ff;
    base * 300 + ext
}

/// The payload bytes of a packet (after header and adaptation field). Empty
/// when the packet carries none or its adaptation field length is invalid.
#[inline]
pub fn payload(pkt: &Packet) -> &[u8] {
    let afc = pkt[3] & 0x30;
    match afc {
        0x10 => pkt.get(4..).unwrap_or(&[]),
        0x30 => {
            let start = 5 + usize::from(pkt[4]);
            pkt.get(start..).unwrap_or(&[])
        }
        _ => &[],
    }
}

/// Write a 188-byte packet header into `pkt` (used by the builders).
pub fn write_header(pkt: &mut Packet, pid: u16, pusi: bool, cc: u8) {
    pkt[0] = SYNC_BYTE;
    pkt[1] = (if pusi { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f);
    pkt[2] = pid as u8;
    pkt[3] = 0x10 | (cc & 0x0f);
}

/// How many consecutive sync bytes, 188 apart, confirm a position after lost
/// sync (fewer are accepted at the very end of the input, see `flush`).
const CONFIRMATIONS: usize = 3;
const LOOKAHEAD: usize = PACKET_SIZE * (CONFIRMATIONS - 1) + 1;

/// Turns a byte stream split anywhere into aligned packets.
#[derive(Debug)]
pub struct TsAligner {
    /// Bytes carried over from the previous chunk (a partial packet, or the
    /// window being searched for sync). Never longer than `LOOKAHEAD`.
    carry: Vec<u8>,
    synced: bool,
    /// Searching because input began off-sync: not counted as a resync.
    initial: bool,
    resyncs: u64,
    dropped_bytes: u64,
    packets: u64,
}

impl Default for TsAligner {
    fn default() -> Self {
        Self::new()
    }
}

impl TsAligner {
    pub fn new() -> TsAligner {
        TsAligner {
            carry: Vec::with_capacity(LOOKAHEAD),
            synced: true,
            initial: true,
            resyncs: 0,
            dropped_bytes: 0,
            packets: 0,
        }
    }

    /// Feed bytes; `f` is called once per aligned packet, in order.
    pub fn push(&mut self, mut data: &[u8], f: &mut impl FnMut(&Packet)) {
        // Finish whatever straddles the previous chunk first, topping the
        // carry up only as far as needed so it empties as soon as possible
        // and the rest of `data` goes the zero-copy way.
        while !self.carry.is_empty() && !data.is_empty() {
            let target = if self.synced { PACKET_SIZE } else { LOOKAHEAD };
            let want = target.saturating_sub(self.carry.len()).max(1);
            let take = want.min(data.len());
            let (head, rest) = data.split_at(take);
            self.carry.extend_from_slice(head);
            data = rest;
            let carry = std::mem::take(&mut self.carry);
            let used = self.scan(&carry, false, f);
            self.carry = carry;
            self.carry.drain(..used.min(self.carry.len()));
        }
        if self.carry.is_empty() && !data.is_empty() {
            let used = self.scan(data, false, f);
            if let Some(rest) = data.get(used..) {
                self.carry.extend_from_slice(rest);
            }
        }
    }

    /// End of input: accept a final packet even without sync confirmations
    /// after it, and count whatever partial packet is left as dropped.
    pub fn flush(&mut self, f: &mut impl FnMut(&Packet)) {
        let carry = std::mem::take(&mut self.carry);
        let used = self.scan(&carry, true, f);
        self.dropped_bytes += carry.len().saturating_sub(used) as u64;
        self.carry = carry;
        self.carry.clear();
    }

    /// Consume as much of `s` as can be decided on; returns bytes used.
    fn scan(&mut self, s: &[u8], at_end: bool, f: &mut impl FnMut(&Packet)) -> usize {
        let mut pos = 0usize;
        loop {
            if self.synced {
                let Some(chunk) = s.get(pos..pos + PACKET_SIZE) else {
                    break;
                };
                if chunk.first() == Some(&SYNC_BYTE) {
                    if let Ok(pkt) = <&Packet>::try_from(chunk) {
                        self.packets += 1;
                        self.initial = false;
                        f(pkt);
                    }
                    pos += PACKET_SIZE;
                    continue;
                }
                self.synced = false;
                if !std::mem::replace(&mut self.initial, false) {
                    self.resyncs += 1;
                }
            } else {
                let rest = s.get(pos..).unwrap_or(&[]);
                let Some(off) = rest.iter().position(|&b| b == SYNC_BYTE) else {
                    self.dropped_bytes += rest.len() as u64;
                    pos = s.len();
                    break;
                };
                self.dropped_bytes += off as u64;
                pos += off;
                match confirm(s, pos, at_end) {
                    Confirm::Yes => {
                        self.synced = true;
                        continue;
                    }
                    // Not enough bytes to decide: wait for more.
                    Confirm::NeedMore => break,
                    Confirm::No => {
                        self.dropped_bytes += 1;
                        pos += 1;
                    }
                }
            }
        }
        pos
    }

    /// (packets, resyncs, dropped_bytes) so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.packets, self.resyncs, self.dropped_bytes)
    }
}

enum Confirm {
    Yes,
    No,
    NeedMore,
}

fn confirm(s: &[u8], pos: usize, at_end: bool) -> Confirm {
    let mut seen = 0;
    for i in 0..CONFIRMATIONS {
        match s.get(pos + i * PACKET_SIZE) {
            Some(&SYNC_BYTE) => seen += 1,
            Some(_) => return Confirm::No,
            None if at_end => {
                // At the very end a packet is accepted when it is whole.
                return if seen >= 1 && s.len() >= pos + PACKET_SIZE * seen {
                    Confirm::Yes
                } else {
                    Confirm::No
                };
            }
            None => return Confirm::NeedMore,
        }
    }
    Confirm::Yes
}

/// Tracks continuity counters for up to 8192 PIDs without allocation per
/// packet. `check` answers whether the packet is new data (not a duplicate)
/// and whether a gap was seen.
#[derive(Debug, Clone)]
pub struct ContinuityTracker {
    /// 0xff = not seen yet; otherwise the last counter.
    last: Box<[u8; 8192]>,
}

/// What the continuity check concluded about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    Ok,
    /// The same counter as the previous packet: a permitted duplicate.
    Duplicate,
    /// Packets are missing before this one.
    Gap,
}

impl Default for ContinuityTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ContinuityTracker {
    pub fn new() -> Self {
        ContinuityTracker {
            last: Box::new([0xff; 8192]),
        }
    }

    pub fn check(&mut self, h: &PacketHeader, discontinuity: bool) -> Continuity {
        let Some(slot) = self.last.get_mut(usize::from(h.pid)) else {
            return Continuity::Ok;
        };
        let prev = *slot;
        if !h.has_payload {
            // The counter does not advance on packets without payload.
            return Continuity::Ok;
        }
        *slot = h.continuity_counter;
        if prev == 0xff || discontinuity || h.pid == NULL_PID {
            return Continuity::Ok;
        }
        if prev == h.continuity_counter {
            return Continuity::Duplicate;
        }
        if (prev + 1) & 0x0f == h.continuity_counter {
            Continuity::Ok
        } else {
            Continuity::Gap
        }
    }

    pub fn reset(&mut self, pid: u16) {
        if let Some(slot) = self.last.get_mut(usize::from(pid)) {
            *slot = 0xff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(pid: u16, cc: u8) -> Packet {
        let mut p = [0xffu8; PACKET_SIZE];
        write_header(&mut p, pid, false, cc);
        p
    }

    fn collect(a: &mut TsAligner, data: &[u8]) -> Vec<Packet> {
        let mut v = Vec::new();
        a.push(data, &mut |p: &Packet| v.push(*p));
        v
    }

    #[test]
    fn aligned_any_split() {
        let stream: Vec<u8> = (0..10).flat_map(|i| pkt(100, i)).collect();
        for split in [1usize, 7, 187, 188, 189, 400, 5000] {
            let mut a = TsAligner::new();
            let mut got = Vec::new();
            for c in stream.chunks(split) {
                got.extend(collect(&mut a, c));
            }
            a.flush(&mut |p: &Packet| got.push(*p));
            assert_eq!(got.len(), 10, "split {split}");
            assert_eq!(a.counters(), (10, 0, 0));
        }
    }

    #[test]
    fn resync_after_garbage() {
        let mut stream: Vec<u8> = (0..5).flat_map(|i| pkt(100, i)).collect();
        stream.extend_from_slice(&[0x47, 1, 2, 3, 0x47, 9, 9]);
        stream.extend((5..10).flat_map(|i| pkt(100, i)));
        let mut a = TsAligner::new();
        let mut got = collect(&mut a, &stream);
        a.flush(&mut |p: &Packet| got.push(*p));
        assert_eq!(got.len(), 10);
        let (_, resyncs, dropped) = a.counters();
        assert_eq!(resyncs, 1);
        assert_eq!(dropped, 7);
    }

    #[test]
    fn adaptation_pcr() {
        let mut p = pkt(0x100, 0);
        p[3] = 0x30;
        p[4] = 7;
        p[5] = 0x50; // RAI + PCR
        // base = 1, ext = 2
        p[6..12].copy_from_slice(&[0, 0, 0, 0, 0x80, 0x02]);
        let af = adaptation_field(&p).unwrap();
        assert!(af.random_access);
        assert_eq!(af.pcr, Some(302));
        assert_eq!(payload(&p).len(), 188 - 12);
    }
}
