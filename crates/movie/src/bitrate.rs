//! A movie's bit rate, for `interval_from_bitrate` (§6.4): the protocol
//! sends files byte for byte, but to stream a movie in real time the server
//! must know how many bytes make a second of it.
//!
//! Two container layouts are understood, which covers the library's usual
//! files and the embedded demo movie:
//!
//! * MPEG transport stream: the bytes between the first and the last PCR of
//!   one PID, over the time between those PCRs (the rate the stream was
//!   multiplexed at);
//! * MP4 (ISO BMFF): the file size over the duration in `moov/mvhd`.
//!
//! Anything else, or a file whose timing fields make no sense, gives `None`
//! and the session keeps the configured default. Only the head and the tail
//! of a file are read, and a file's content can never make this panic.

use crate::library::MovieReader;

/// How much of the head and of the tail of a transport stream is searched
/// for PCRs; PCRs come at least every 100 ms, so this is plenty.
const TS_SPAN: u64 = 1024 * 1024;
const TS_PACKET: u64 = 188;
/// PCR runs at 27 MHz and wraps at 2^33 × 300.
const PCR_HZ: u128 = 27_000_000;
const PCR_WRAP: u64 = (1 << 33) * 300;
/// At least this much stream time between the two PCRs, so that jitter in
/// PCR placement cannot distort the rate much.
const MIN_PCR_SPAN: u64 = 27_000_000 / 10;
/// Top-level MP4 boxes looked at before giving up (fragmented files have
/// many; their `moov` comes first anyway).
const MAX_BOXES: usize = 1024;

/// The movie's bit rate in bit/s, if its container says.
pub fn bit_rate(reader: &mut MovieReader, size: u64) -> Option<u64> {
    ts_bit_rate(reader, size).or_else(|| mp4_bit_rate(reader, size))
}

/// D of §6.4: the interval at which chunks of `chunk_size` bytes carry
/// `bits_per_second`, in µs, at least 1.
pub fn interval_for(chunk_size: u16, bits_per_second: u64) -> Option<u32> {
    if bits_per_second == 0 {
        return None;
    }
    let us = u128::from(chunk_size) * 8 * 1_000_000 / u128::from(bits_per_second);
    Some(u32::try_from(us).unwrap_or(u32::MAX).max(1))
}

fn ts_bit_rate(reader: &mut MovieReader, size: u64) -> Option<u64> {
    let head = reader
        .read(0, usize::try_from(size.min(TS_SPAN)).ok()?)
        .ok()?;
    // Files cut from a capture need not start on a packet boundary.
    let sync = (0..TS_PACKET as usize)
        .find(|&o| (0..3).all(|i| head.get(o + i * TS_PACKET as usize) == Some(&0x47)))?
        as u64;
    let (pid, first_pcr, first_at) = pcrs(&head, sync, 0).next()?;
    let packets = (size - sync) / TS_PACKET;
    let tail_packets = (TS_SPAN / TS_PACKET).min(packets);
    let tail_start = sync + (packets - tail_packets) * TS_PACKET;
    let tail = reader
        .read(tail_start, usize::try_from(tail_packets * TS_PACKET).ok()?)
        .ok()?;
    let (last_pcr, last_at) = pcrs(&tail, 0, tail_start)
        .filter(|p| p.0 == pid)
        .map(|p| (p.1, p.2))
        .last()?;
    let bytes = last_at.checked_sub(first_at).filter(|&b| b > 0)?;
    let ticks = if last_pcr >= first_pcr {
        last_pcr - first_pcr
    } else {
        PCR_WRAP - first_pcr + last_pcr
    };
    if ticks < MIN_PCR_SPAN {
        return None;
    }
    u64::try_from(u128::from(bytes) * 8 * PCR_HZ / u128::from(ticks)).ok()
}

/// `(pid, pcr in 27 MHz ticks, file offset of its packet)` for each packet
/// of `data` (from `start`) that carries a PCR; `base` is `data`'s offset
/// in the file.
fn pcrs(data: &[u8], start: u64, base: u64) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
    data.get(start as usize..)
        .unwrap_or_default()
        .chunks_exact(TS_PACKET as usize)
        .enumerate()
        .filter_map(move |(i, p)| {
            let pcr = packet_pcr(p)?;
            Some((pcr.0, pcr.1, base + start + i as u64 * TS_PACKET))
        })
}

fn packet_pcr(p: &[u8]) -> Option<(u16, u64)> {
    let &[0x47, b1, b2, b3, af_len, flags, c0, c1, c2, c3, c4, c5, ..] = p else {
        return None;
    };
    let has_adaptation = b3 & 0x20 != 0;
    if !has_adaptation || af_len < 7 || flags & 0x10 == 0 {
        return None;
    }
    let pid = (u16::from(b1 & 0x1f) << 8) | u16::from(b2);
    let base = (u64::from(c0) << 25)
        | (u64::from(c1) << 17)
        | (u64::from(c2) << 9)
        | (u64::from(c3) << 1)
        | (u64::from(c4) >> 7);
    let ext = (u64::from(c4 & 1) << 8) | u64::from(c5);
    Some((pid, base * 300 + ext))
}

fn mp4_bit_rate(reader: &mut MovieReader, size: u64) -> Option<u64> {
    let mut at = 0u64;
    for i in 0..MAX_BOXES {
        let (kind, body, end) = mp4_box(reader, at, size)?;
        // A file that does not open with `ftyp` is not taken for an MP4.
        if i == 0 && &kind != b"ftyp" {
            return None;
        }
        if &kind == b"moov" {
            let (timescale, duration) = mvhd(reader, body, end)?;
            if timescale == 0 || duration == 0 {
                return None;
            }
            let rate = u128::from(size) * 8 * u128::from(timescale) / u128::from(duration);
            return u64::try_from(rate).ok().filter(|&r| r > 0);
        }
        at = end;
        if at >= size {
            return None;
        }
    }
    None
}

/// The box at `at`: its type, where its body starts and where it ends.
fn mp4_box(reader: &mut MovieReader, at: u64, limit: u64) -> Option<([u8; 4], u64, u64)> {
    let header = reader.read(at, 8).ok()?;
    let &[s0, s1, s2, s3, t0, t1, t2, t3] = header.as_ref() else {
        return None;
    };
    let kind = [t0, t1, t2, t3];
    let (len, body) = match u32::from_be_bytes([s0, s1, s2, s3]) {
        0 => (limit.checked_sub(at)?, at + 8),
        1 => {
            let large = reader.read(at + 8, 8).ok()?;
            (u64::from_be_bytes(large.as_ref().try_into().ok()?), at + 16)
        }
        n => (u64::from(n), at + 8),
    };
    let end = at.checked_add(len)?;
    (end >= body && end <= limit).then_some((kind, body, end))
}

/// `(timescale, duration)` of the `mvhd` inside the `moov` body
/// `[at, end)`.
fn mvhd(reader: &mut MovieReader, mut at: u64, end: u64) -> Option<(u32, u64)> {
    for _ in 0..MAX_BOXES {
        let (kind, body, next) = mp4_box(reader, at, end)?;
        if &kind == b"mvhd" {
            let version = *reader.read(body, 1).ok()?.first()?;
            // Version 1 widens the times and the duration to 64 bits.
            let (scale_at, wide) = if version == 1 {
                (body + 20, true)
            } else {
                (body + 12, false)
            };
            let fields = reader.read(scale_at, if wide { 12 } else { 8 }).ok()?;
            if scale_at + fields.len() as u64 > next {
                return None;
            }
            let timescale = u32::from_be_bytes(fields.get(0..4)?.try_into().ok()?);
            let duration = if wide {
                u64::from_be_bytes(fields.get(4..12)?.try_into().ok()?)
            } else {
                u64::from(u32::from_be_bytes(fields.get(4..8)?.try_into().ok()?))
            };
            return Some((timescale, duration));
        }
        at = next;
        if at >= end {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::library::Movie;

    fn rate_of(data: Vec<u8>) -> Option<u64> {
        let movie = Movie::in_memory("m", Bytes::from(data));
        bit_rate(&mut movie.open().unwrap(), movie.size)
    }

    /// `packets` transport stream packets at exactly `bps`, a PCR on PID
    /// 0x100 every 10th packet, the first PCR at `pcr0` ticks, after
    /// `skip` bytes of a cut packet.
    fn ts(packets: u64, bps: u64, pcr0: u64, skip: usize) -> Vec<u8> {
        let ticks_per_packet = 188 * 8 * 27_000_000 / bps;
        let mut out = vec![0xaa; skip];
        for i in 0..packets {
            let mut p = [0xffu8; 188];
            p[0] = 0x47;
            if i % 10 == 3 {
                let pcr = (pcr0 + i * ticks_per_packet) % PCR_WRAP;
                let (base, ext) = (pcr / 300, pcr % 300);
                p[1..6].copy_from_slice(&[0x01, 0x00, 0x30, 7, 0x10]);
                p[6] = (base >> 25) as u8;
                p[7] = (base >> 17) as u8;
                p[8] = (base >> 9) as u8;
                p[9] = (base >> 1) as u8;
                p[10] = ((base & 1) << 7) as u8 | 0x7e | (ext >> 8) as u8;
                p[11] = ext as u8;
            } else {
                p[1..4].copy_from_slice(&[0x01, 0x01, 0x10]);
            }
            out.extend_from_slice(&p);
        }
        out
    }

    fn mp4(timescale: u32, duration: u64, v1: bool, mdat: usize) -> Vec<u8> {
        let mut mvhd = vec![if v1 { 1 } else { 0 }, 0, 0, 0];
        if v1 {
            mvhd.extend_from_slice(&[0; 16]);
            mvhd.extend_from_slice(&timescale.to_be_bytes());
            mvhd.extend_from_slice(&duration.to_be_bytes());
        } else {
            mvhd.extend_from_slice(&[0; 8]);
            mvhd.extend_from_slice(&timescale.to_be_bytes());
            mvhd.extend_from_slice(&(duration as u32).to_be_bytes());
        }
        mvhd.extend_from_slice(&[0; 80]);
        let boxed = |kind: &[u8], body: &[u8]| {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        };
        let mut out = boxed(b"ftyp", b"isom\0\0\x02\0isomiso2");
        out.extend(boxed(b"mdat", &vec![7u8; mdat]));
        let mut moov = boxed(b"udta", &[0; 12]);
        moov.extend(boxed(b"mvhd", &mvhd));
        out.extend(boxed(b"moov", &moov));
        out
    }

    #[test]
    fn transport_stream_rate_comes_from_its_pcrs() {
        assert_eq!(rate_of(ts(3_000, 2_000_000, 900_000, 0)), Some(2_000_000));
        // Cut in the middle of a packet, and with the PCR wrapping around.
        assert_eq!(
            rate_of(ts(3_000, 4_000_000, PCR_WRAP - 27_000_000, 100)),
            Some(4_000_000)
        );
        // Less than 100 ms between the PCRs: not trusted.
        assert_eq!(rate_of(ts(40, 2_000_000, 0, 0)), None);
    }

    #[test]
    fn the_demo_channel_rate_matches_ffprobe() {
        // ffprobe: 1 113 937 bit/s from the PTS; the PCRs say 1 115 656.
        let demo = include_bytes!("../../../demo/channel-1.ts").to_vec();
        assert_eq!(rate_of(demo), Some(1_115_656));
    }

    #[test]
    fn mp4_rate_is_size_over_mvhd_duration() {
        let file = mp4(1_000, 10_000, false, 50_000);
        let expect = file.len() as u64 * 8 / 10;
        assert_eq!(rate_of(file), Some(expect));
        let file = mp4(90_000, 900_000, true, 50_000);
        let expect = file.len() as u64 * 8 / 10;
        assert_eq!(rate_of(file), Some(expect));
        // Fragmented files with no duration, and files that are not MP4.
        assert_eq!(rate_of(mp4(1_000, 0, false, 10)), None);
        let mut not_mp4 = mp4(1_000, 10_000, false, 10);
        not_mp4[4..8].copy_from_slice(b"free");
        assert_eq!(rate_of(not_mp4), None);
        // ffprobe: 10 s, 490 282 bytes, 392 225 bit/s.
        let demo = include_bytes!("../../../demo/demo-movie.mp4").to_vec();
        assert_eq!(rate_of(demo), Some(392_225));
    }

    #[test]
    fn garbage_and_truncated_files_give_no_rate() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 7, 8, 9, 187, 188, 600, 5_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            assert_eq!(rate_of(data), None, "{len} random bytes");
        }
        let whole = mp4(1_000, 10_000, false, 100);
        for cut in (0..whole.len()).step_by(7) {
            let _ = rate_of(whole[..cut].to_vec());
        }
        let whole = ts(100, 1_000_000, 0, 0);
        for cut in (0..whole.len()).step_by(97) {
            let _ = rate_of(whole[..cut].to_vec());
        }
    }

    #[test]
    fn interval_is_chunk_bits_over_rate() {
        // 1316 × 8 × 10^6 / 2 000 000 = 5264 µs.
        assert_eq!(interval_for(1316, 2_000_000), Some(5_264));
        assert_eq!(interval_for(1316, 392_225), Some(26_841));
        assert_eq!(interval_for(1316, u64::MAX), Some(1));
        assert_eq!(interval_for(1391, 1), Some(u32::MAX));
        assert_eq!(interval_for(1316, 0), None);
    }
}
