//! Video elementary stream inspection: H.264 and HEVC parameter sets and
//! picture types, MPEG-2 sequence and picture headers. Only what the yard
//! needs (size, frame rate, aspect, keyframes) is parsed; parsing stops at
//! the first picture so the cost does not grow with the frame size.

use crate::bits::{BitReader, array_at, find_start_code, unescape_rbsp};
use crate::program::{Codec, FrameKind};

/// Picture geometry and timing found in a sequence-level header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<(u32, u32)>,
    pub aspect: Option<(u32, u32)>,
}

/// What one access unit (or the start of one) contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessUnit {
    /// `None` when no picture header was reached.
    pub kind: Option<FrameKind>,
    /// Byte ranges (from the NAL header / start code value, without start
    /// code) of the parameter sets present: H.264 SPS, PPS; HEVC VPS, SPS,
    /// PPS; MPEG-2 sequence header and its extensions (one range).
    pub vps: Option<(usize, usize)>,
    pub sps: Option<(usize, usize)>,
    pub pps: Option<(usize, usize)>,
    /// Where parameter sets may be inserted: after an access unit delimiter,
    /// else 0.
    pub insert_at: usize,
}

/// Inspect the start of an access unit in Annex-B form (MPEG-2 video uses
/// the same start codes). Stops at the first picture/slice without
/// scanning it, so the cost is that of the headers, not of the frame.
pub fn inspect_access_unit(codec: Codec, data: &[u8]) -> AccessUnit {
    let mut au = AccessUnit::default();
    let mut scratch = [0u8; 24];
    let mut seq_start: Option<usize> = None;
    let mut seq_end = 0usize;
    let mut next = find_start_code(data, 0);
    while let Some((_, start)) = next {
        let Some(rest) = data.get(start..) else { break };
        let Some(&h) = rest.first() else { break };
        // Pictures end the walk before their extent is searched for.
        match codec {
            Codec::H264 => match h & 0x1f {
                5 => {
                    au.kind = Some(FrameKind::Key);
                    break;
                }
                1..=4 => {
                    au.kind = h264_slice_kind(rest, &mut scratch);
                    break;
                }
                _ => {}
            },
            Codec::Hevc => match (h >> 1) & 0x3f {
                16..=23 => {
                    au.kind = Some(FrameKind::Key);
                    break;
                }
                t @ 0..=15 => {
                    au.kind = Some(if t % 2 == 0 && t <= 14 {
                        FrameKind::Bidirectional
                    } else {
                        FrameKind::Predicted
                    });
                    break;
                }
                _ => {}
            },
            Codec::Mpeg2Video if h == 0x00 => {
                au.kind = match rest.get(2).map(|b| (b >> 3) & 7) {
                    Some(1) => Some(FrameKind::Key),
                    Some(2) => Some(FrameKind::Predicted),
                    Some(3) => Some(FrameKind::Bidirectional),
                    _ => None,
                };
                break;
            }
            Codec::Mpeg2Video => {}
            _ => break,
        }
        next = find_start_code(data, start);
        let mut end = next.map_or(data.len(), |(sc, _)| sc);
        while end > start && data.get(end - 1) == Some(&0) {
            end -= 1;
        }
        let range = Some((start, end));
        match codec {
            Codec::H264 => match h & 0x1f {
                9 => au.insert_at = end,
                7 => au.sps = au.sps.or(range),
                8 => au.pps = au.pps.or(range),
                _ => {}
            },
            Codec::Hevc => match (h >> 1) & 0x3f {
                35 => au.insert_at = end,
                32 => au.vps = au.vps.or(range),
                33 => au.sps = au.sps.or(range),
                34 => au.pps = au.pps.or(range),
                _ => {}
            },
            _ => match h {
                0xb3 => {
                    seq_start = seq_start.or(Some(start));
                    seq_end = end;
                }
                0xb5 if seq_start.is_some() => seq_end = end,
                _ => {}
            },
        }
    }
    if codec == Codec::Mpeg2Video {
        au.sps = seq_start.map(|s| (s, seq_end));
    }
    au
}

fn h264_slice_kind(nal: &[u8], scratch: &mut [u8; 24]) -> Option<FrameKind> {
    let ref_idc = nal.first()? >> 5;
    let rbsp = unescape_small(nal.get(1..)?, scratch);
    let mut r = BitReader::new(rbsp);
    let _first_mb = r.ue()?;
    let slice_type = r.ue()? % 5;
    Some(match slice_type {
        2 | 4 => FrameKind::Key,
        _ if ref_idc == 0 => FrameKind::Bidirectional,
        _ => FrameKind::Predicted,
    })
}

/// Emulation-prevention removal into a stack buffer, for the few leading
/// bytes of a slice header.
fn unescape_small<'a>(data: &[u8], out: &'a mut [u8; 24]) -> &'a [u8] {
    let mut n = 0;
    let mut zeros = 0;
    for &b in data {
        if n >= out.len() {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if let Some(slot) = out.get_mut(n) {
            *slot = b;
        }
        n += 1;
    }
    out.get(..n).unwrap_or(&[])
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn reduce(n: u64, d: u64) -> Option<(u32, u32)> {
    if n == 0 || d == 0 {
        return None;
    }
    let (mut a, mut b) = (n, d);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    Some((u32::try_from(n / a).ok()?, u32::try_from(d / a).ok()?))
}

const H264_SAR: [(u32, u32); 17] = [
    (0, 0),
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];

/// Parse an H.264 SPS NAL unit (header byte included).
pub fn h264_sps(nal: &[u8]) -> Option<VideoInfo> {
    let mut buf = Vec::new();
    unescape_rbsp(nal.get(1..)?, 512, &mut buf);
    let mut r = BitReader::new(&buf);
    let profile = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_planes = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_planes = r.flag()?;
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.skip(1)?; // qpprime_y_zero_transform_bypass
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            let delta = i64::from(r.se()?);
                            next = (last + delta + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.skip(1)?;
        r.se()?;
        r.se()?;
        let n = r.ue()?;
        if n > 255 {
            return None;
        }
        for _ in 0..n {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_allowed
    let w_mbs = u64::from(r.ue()?) + 1;
    let h_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.skip(1)?;
    }
    r.skip(1)?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let chroma_array_type = if separate_planes {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let fm = if frame_mbs_only { 1 } else { 2 };
    let (crop_x, crop_y) = if chroma_array_type == 0 {
        (1, fm)
    } else {
        (sub_w, sub_h * fm)
    };
    let width = (w_mbs * 16).checked_sub(crop_x * (cl + cr))?;
    let height = (h_units * 16 * fm).checked_sub(crop_y * (ct + cb))?;
    let mut info = VideoInfo {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        frame_rate: None,
        aspect: None,
    };
    // VUI: missing or truncated VUI still leaves a usable size.
    if r.flag() == Some(true) {
        let _ = h264_vui(&mut r, &mut info);
    }
    Some(info)
}

fn h264_vui(r: &mut BitReader, info: &mut VideoInfo) -> Option<()> {
    if r.flag()? {
        let idc = r.bits(8)?;
        if idc == 255 {
            let w = r.bits(16)?;
            let h = r.bits(16)?;
            if w != 0 && h != 0 {
                let g = gcd(w, h);
                info.aspect = Some((w / g, h / g));
            }
        } else if let Some(&(w, h)) = H264_SAR.get(idc as usize)
            && w != 0
        {
            info.aspect = Some((w, h));
        }
    }
    if r.flag()? {
        r.skip(1)?; // overscan_appropriate
    }
    if r.flag()? {
        r.skip(4)?; // video_format, full_range
        if r.flag()? {
            r.skip(24)?;
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    if r.flag()? {
        let units = u64::from(r.bits(32)?);
        let scale = u64::from(r.bits(32)?);
        info.frame_rate = reduce(scale, units * 2);
    }
    Some(())
}

fn hevc_profile_tier_level(r: &mut BitReader, max_sub_layers_minus1: u32) -> Option<()> {
    r.skip(96)?; // general profile/tier/level
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (r.flag()?, r.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?;
        }
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    Some(())
}

/// Parse an HEVC SPS NAL unit (2-byte header included): size only (the
/// frame rate comes from the VPS, see `hevc_vps_frame_rate`).
pub fn hevc_sps(nal: &[u8]) -> Option<VideoInfo> {
    let mut buf = Vec::new();
    unescape_rbsp(nal.get(2..)?, 512, &mut buf);
    let mut r = BitReader::new(&buf);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub = r.bits(3)?;
    r.skip(1)?;
    hevc_profile_tier_level(&mut r, max_sub)?;
    r.ue()?; // sps_seq_parameter_set_id
    let chroma = r.ue()?;
    if chroma == 3 {
        r.skip(1)?;
    }
    let w = u64::from(r.ue()?);
    let h = u64::from(r.ue()?);
    let (sub_w, sub_h) = match chroma {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (mut cw, mut ch) = (0u64, 0u64);
    if r.flag()? {
        let l = u64::from(r.ue()?);
        let rr = u64::from(r.ue()?);
        let t = u64::from(r.ue()?);
        let b = u64::from(r.ue()?);
        cw = sub_w * (l + rr);
        ch = sub_h * (t + b);
    }
    let mut info = VideoInfo {
        width: u32::try_from(w.checked_sub(cw)?).ok()?,
        height: u32::try_from(h.checked_sub(ch)?).ok()?,
        frame_rate: None,
        aspect: None,
    };
    // Aspect and timing sit in the VUI at the end; a stream we cannot walk
    // that far still has its size.
    let _ = hevc_sps_vui(&mut r, max_sub, &mut info);
    Some(info)
}

/// Walk the rest of an HEVC SPS (H.265 §7.3.2.2) up to the VUI and read its
/// aspect ratio and timing.
fn hevc_sps_vui(r: &mut BitReader, max_sub: u32, info: &mut VideoInfo) -> Option<()> {
    r.ue()?; // bit_depth_luma_minus8
    r.ue()?; // bit_depth_chroma_minus8
    let log2_max_poc_lsb = r.ue()?.checked_add(4)?;
    if log2_max_poc_lsb > 16 {
        return None;
    }
    let all = r.flag()?;
    for _ in (if all { 0 } else { max_sub })..=max_sub {
        r.ue()?;
        r.ue()?;
        r.ue()?;
    }
    for _ in 0..6 {
        r.ue()?; // coding/transform block sizes and hierarchy depths
    }
    if r.flag()? && r.flag()? {
        // scaling_list_data()
        for size_id in 0..4u32 {
            let step = if size_id == 3 { 3 } else { 1 };
            for _ in (0..6).step_by(step) {
                if !r.flag()? {
                    r.ue()?;
                } else {
                    let coefs = 64.min(1u32 << (4 + (size_id << 1)));
                    if size_id > 1 {
                        r.se()?;
                    }
                    for _ in 0..coefs {
                        r.se()?;
                    }
                }
            }
        }
    }
    r.skip(2)?; // amp, sample_adaptive_offset
    if r.flag()? {
        // pcm: bit depths, sizes, loop filter flag
        r.skip(8)?;
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    let num_sets = r.ue()?;
    if num_sets > 64 {
        return None;
    }
    let mut num_delta_pocs = [0u32; 65];
    for idx in 0..num_sets as usize {
        let inter = idx != 0 && r.flag()?;
        let count = if inter {
            r.skip(1)?; // delta_rps_sign
            r.ue()?; // abs_delta_rps_minus1
            let reference = *num_delta_pocs.get(idx - 1)?;
            let mut n = 0;
            for _ in 0..=reference {
                let used = r.flag()?;
                let use_delta = used || r.flag()?;
                if use_delta {
                    n += 1;
                }
            }
            n
        } else {
            let neg = r.ue()?;
            let pos = r.ue()?;
            if neg > 16 || pos > 16 {
                return None;
            }
            for _ in 0..neg + pos {
                r.ue()?;
                r.skip(1)?;
            }
            neg + pos
        };
        *num_delta_pocs.get_mut(idx)? = count;
    }
    if r.flag()? {
        let n = r.ue()?;
        if n > 32 {
            return None;
        }
        for _ in 0..n {
            r.skip(log2_max_poc_lsb as usize + 1)?;
        }
    }
    r.skip(2)?; // temporal_mvp, strong_intra_smoothing
    if !r.flag()? {
        return Some(());
    }
    // vui_parameters()
    if r.flag()? {
        let idc = r.bits(8)?;
        if idc == 255 {
            let (w, h) = (r.bits(16)?, r.bits(16)?);
            if w != 0 && h != 0 {
                let g = gcd(w, h);
                info.aspect = Some((w / g, h / g));
            }
        } else if let Some(&(w, h)) = H264_SAR.get(idc as usize)
            && w != 0
        {
            info.aspect = Some((w, h));
        }
    }
    if r.flag()? {
        r.skip(1)?;
    }
    if r.flag()? {
        r.skip(4)?;
        if r.flag()? {
            r.skip(24)?;
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    r.skip(3)?; // neutral_chroma, field_seq, frame_field_info
    if r.flag()? {
        for _ in 0..4 {
            r.ue()?;
        }
    }
    if r.flag()? {
        let units = u64::from(r.bits(32)?);
        let scale = u64::from(r.bits(32)?);
        info.frame_rate = reduce(scale, units);
    }
    Some(())
}

/// The frame rate from an HEVC VPS's timing info, when present.
pub fn hevc_vps_frame_rate(nal: &[u8]) -> Option<(u32, u32)> {
    let mut buf = Vec::new();
    unescape_rbsp(nal.get(2..)?, 256, &mut buf);
    let mut r = BitReader::new(&buf);
    r.skip(4 + 1 + 1 + 6)?;
    let max_sub = r.bits(3)?;
    r.skip(1 + 16)?;
    hevc_profile_tier_level(&mut r, max_sub)?;
    let ordering_all = r.flag()?;
    let first = if ordering_all { 0 } else { max_sub };
    for _ in first..=max_sub {
        r.ue()?;
        r.ue()?;
        r.ue()?;
    }
    let max_layer_id = r.bits(6)?;
    let num_sets = r.ue()?;
    if num_sets > 1023 {
        return None;
    }
    for _ in 0..num_sets {
        r.skip(max_layer_id as usize + 1)?;
    }
    if !r.flag()? {
        return None;
    }
    let units = u64::from(r.bits(32)?);
    let scale = u64::from(r.bits(32)?);
    reduce(scale, units)
}

/// Parse an MPEG-2 sequence header (the bytes after 00 00 01, starting with
/// 0xb3) and, when it follows in `rest`, nothing else: the size extension
/// bits are rarely used in broadcast.
pub fn mpeg2_sequence_header(unit: &[u8]) -> Option<VideoInfo> {
    let b: &[u8; 7] = array_at(unit, 1)?;
    let width = (u32::from(b[0]) << 4) | u32::from(b[1] >> 4);
    let height = (u32::from(b[1] & 0x0f) << 8) | u32::from(b[2]);
    let aspect_code = b[3] >> 4;
    let rate_code = b[3] & 0x0f;
    let frame_rate = match rate_code {
        1 => Some((24000, 1001)),
        2 => Some((24, 1)),
        3 => Some((25, 1)),
        4 => Some((30000, 1001)),
        5 => Some((30, 1)),
        6 => Some((50, 1)),
        7 => Some((60000, 1001)),
        8 => Some((60, 1)),
        _ => None,
    };
    // aspect_ratio_information is a display aspect ratio in MPEG-2;
    // turn it into a sample aspect ratio.
    let dar = match aspect_code {
        1 => Some((1u64, 1u64)),
        2 => Some((4, 3)),
        3 => Some((16, 9)),
        4 => Some((221, 100)),
        _ => None,
    };
    let aspect = match (aspect_code, dar) {
        (1, _) => Some((1, 1)),
        (_, Some((dw, dh))) if width > 0 && height > 0 => {
            reduce(dw * u64::from(height), dh * u64::from(width))
        }
        _ => None,
    };
    Some(VideoInfo {
        width,
        height,
        frame_rate,
        aspect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_sps_1080p_cropped() {
        // A 1920x1080 High profile SPS (x264), with VUI timing 50/2 = 25 fps.
        let sps = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc6, 0x58,
        ];
        let info = h264_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!(info.frame_rate, Some((25, 1)));
        assert_eq!(info.aspect, Some((1, 1)));
    }

    #[test]
    fn mpeg2_header() {
        // 720x576, 4:3, 25 fps
        let unit = [0xb3, 0x2d, 0x02, 0x40, 0x23, 0xff, 0xff, 0xe0];
        let info = mpeg2_sequence_header(&unit).unwrap();
        assert_eq!((info.width, info.height), (720, 576));
        assert_eq!(info.frame_rate, Some((25, 1)));
        assert_eq!(info.aspect, Some((16, 15)));
    }
}
