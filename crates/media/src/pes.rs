//! PES packet headers (ISO/IEC 13818-1 §2.4.3.6) and the unwrapping of
//! 33-bit timestamps into a monotonic line.

use crate::bits::array_at;

/// 2^33: the period of PTS/DTS (and of the PCR base).
pub const PTS_PERIOD: i64 = 1 << 33;
/// The PCR's period in 27 MHz ticks.
pub const PCR_PERIOD: i64 = (1 << 33) * 300;

/// The parts of a PES header the demuxer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    pub stream_id: u8,
    /// PES_packet_length (0 = unbounded, video only).
    pub packet_length: u16,
    /// Raw 33-bit values.
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// Offset of the elementary stream data from the PES start.
    pub payload_offset: usize,
    pub data_alignment: bool,
}

/// Stream ids whose PES packets have no optional header (§2.4.3.7).
fn has_optional_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff
    )
}

/// Parse the header at the start of a PES packet.
pub fn parse_pes_header(b: &[u8]) -> Option<PesHeader> {
    let h: &[u8; 6] = array_at(b, 0)?;
    if h[0] != 0 || h[1] != 0 || h[2] != 1 {
        return None;
    }
    let stream_id = h[3];
    let packet_length = u16::from_be_bytes([h[4], h[5]]);
    if !has_optional_header(stream_id) {
        return Some(PesHeader {
            stream_id,
            packet_length,
            pts: None,
            dts: None,
            payload_offset: 6,
            data_alignment: false,
        });
    }
    let o: &[u8; 3] = array_at(b, 6)?;
    if o[0] & 0xc0 != 0x80 {
        return None;
    }
    let flags = o[1];
    let header_len = usize::from(o[2]);
    let payload_offset = 9 + header_len;
    if b.len() < payload_offset {
        return None;
    }
    let opt = b.get(9..payload_offset)?;
    let (pts, dts) = match flags >> 6 {
        2 => (opt.get(..5).map(timestamp), None),
        3 => (opt.get(..5).map(timestamp), opt.get(5..10).map(timestamp)),
        _ => (None, None),
    };
    Some(PesHeader {
        stream_id,
        packet_length,
        pts,
        dts,
        payload_offset,
        data_alignment: o[0] & 0x04 != 0,
    })
}

fn timestamp(b: &[u8]) -> u64 {
    let g = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
    ((g(0) >> 1) & 0x07) << 30 | g(1) << 22 | (g(2) >> 1) << 15 | g(3) << 7 | g(4) >> 1
}

/// Encode a 33-bit timestamp with the given 4-bit prefix (for tests and
/// muxers).
pub fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) & 7) as u8) << 1 | 1,
        (ts >> 22) as u8,
        (((ts >> 15) & 0x7f) as u8) << 1 | 1,
        (ts >> 7) as u8,
        ((ts & 0x7f) as u8) << 1 | 1,
    ]
}

/// Maps wrapped counters onto an unbounded line: each value is placed at
/// the unwrapped position nearest to the previous one, so the line follows
/// the 33-bit wrap (and small steps backwards, as B-frame PTS take).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwrap a value of period `period` (> 0).
    pub fn unwrap(&mut self, raw: u64, period: i64) -> i64 {
        let period = period.max(2);
        let raw = (raw % period as u64) as i64;
        let v = match self.last {
            None => raw,
            Some(last) => {
                let diff = (raw - last.rem_euclid(period)).rem_euclid(period);
                let diff = if diff >= period / 2 {
                    diff - period
                } else {
                    diff
                };
                last.saturating_add(diff)
            }
        };
        self.last = Some(v);
        v
    }

    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_roundtrip() {
        for ts in [0u64, 1, 90_000, (1 << 33) - 1, 0x1_2345_6789] {
            let b = encode_timestamp(2, ts);
            assert_eq!(timestamp(&b), ts);
        }
    }

    #[test]
    fn unwrap_across_wrap() {
        let mut u = Unwrapper::new();
        let near = PTS_PERIOD as u64 - 3000;
        assert_eq!(u.unwrap(near, PTS_PERIOD), PTS_PERIOD - 3000);
        assert_eq!(u.unwrap(600, PTS_PERIOD), PTS_PERIOD + 600);
        // a B-frame slightly before the wrap again
        assert_eq!(u.unwrap(near + 10, PTS_PERIOD), PTS_PERIOD - 2990);
        assert_eq!(u.unwrap(4200, PTS_PERIOD), PTS_PERIOD + 4200);
    }
}
