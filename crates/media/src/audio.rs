//! Audio frame headers: AAC in ADTS, MPEG-1/2 audio layers I-III, AC-3 and
//! E-AC-3. Each parser reads one header at the start of a slice and says how
//! long the frame is, so a PES holding several frames can be split into one
//! `Frame` per codec frame.

use crate::bits::array_at;
use crate::program::Codec;

/// What one audio frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrameHeader {
    /// Whole frame length in bytes, header included.
    pub length: usize,
    /// PCM samples per channel the frame decodes to.
    pub samples: u32,
    pub sample_rate: u32,
    pub channels: u8,
    /// AAC only: the 2-byte AudioSpecificConfig.
    pub aac_config: Option<[u8; 2]>,
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Parse the header of the frame at the start of `b` for `codec`.
pub fn frame_header(codec: Codec, b: &[u8]) -> Option<AudioFrameHeader> {
    match codec {
        Codec::Aac => adts_header(b),
        Codec::MpegAudio => mpeg_audio_header(b),
        Codec::Ac3 | Codec::Eac3 => ac3_header(b),
        _ => None,
    }
}

/// ADTS (ISO/IEC 13818-7 / 14496-3 §1.A.2).
pub fn adts_header(b: &[u8]) -> Option<AudioFrameHeader> {
    let h: &[u8; 7] = array_at(b, 0)?;
    if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
        return None;
    }
    let profile = h[2] >> 6;
    let sf_index = (h[2] >> 2) & 0x0f;
    let chan_cfg = ((h[2] & 1) << 2) | (h[3] >> 6);
    let length =
        (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
    let blocks = u32::from(h[6] & 0x03) + 1;
    let header_len = if h[1] & 1 == 0 { 9 } else { 7 };
    let sample_rate = *AAC_RATES.get(usize::from(sf_index))?;
    if length < header_len {
        return None;
    }
    let object_type = profile + 1;
    let config = [
        (object_type << 3) | (sf_index >> 1),
        ((sf_index & 1) << 7) | (chan_cfg << 3),
    ];
    Some(AudioFrameHeader {
        length,
        samples: 1024 * blocks,
        sample_rate,
        channels: match chan_cfg {
            7 => 8,
            c => c,
        },
        aac_config: Some(config),
    })
}

const MPA_BITRATES: [[u32; 15]; 5] = [
    // MPEG-1 layer I, II, III
    [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    // MPEG-2/2.5 layer I, layers II and III
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// MPEG-1/2/2.5 audio, layers I-III (ISO/IEC 11172-3 §2.4.2.3).
pub fn mpeg_audio_header(b: &[u8]) -> Option<AudioFrameHeader> {
    let h: &[u8; 4] = array_at(b, 0)?;
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    let layer = (h[1] >> 1) & 3; // 3 = I, 2 = II, 1 = III
    if version == 1 || layer == 0 {
        return None;
    }
    let br_index = usize::from(h[2] >> 4);
    let sr_index = (h[2] >> 2) & 3;
    let padding = u32::from((h[2] >> 1) & 1);
    let base_rate = match sr_index {
        0 => 44100,
        1 => 48000,
        2 => 32000,
        _ => return None,
    };
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let table = match (version, layer) {
        (3, 3) => 0,
        (3, 2) => 1,
        (3, _) => 2,
        (_, 3) => 3,
        _ => 4,
    };
    let kbps = *MPA_BITRATES.get(table)?.get(br_index)?;
    if kbps == 0 {
        // free format: length unknown
        return None;
    }
    let bps = kbps * 1000;
    let (length, samples) = match layer {
        3 => ((12 * bps / sample_rate + padding) * 4, 384),
        2 => (144 * bps / sample_rate + padding, 1152),
        _ if version == 3 => (144 * bps / sample_rate + padding, 1152),
        _ => (72 * bps / sample_rate + padding, 576),
    };
    Some(AudioFrameHeader {
        length: length as usize,
        samples,
        sample_rate,
        channels: if h[3] >> 6 == 3 { 1 } else { 2 },
        aac_config: None,
    })
}

const AC3_KBPS: [u32; 19] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640,
];
const AC3_CHANNELS: [u8; 8] = [2, 1, 2, 3, 3, 4, 4, 5];

/// AC-3 (ATSC A/52 §5.4) and E-AC-3 (Annex E) sync frames.
pub fn ac3_header(b: &[u8]) -> Option<AudioFrameHeader> {
    let h: &[u8; 8] = array_at(b, 0)?;
    if h[0] != 0x0b || h[1] != 0x77 {
        return None;
    }
    let bsid = h[5] >> 3;
    if bsid <= 10 {
        let fscod = h[4] >> 6;
        let frmsizecod = usize::from(h[4] & 0x3f);
        let kbps = *AC3_KBPS.get(frmsizecod / 2)?;
        let (sample_rate, words) = match fscod {
            0 => (48000, kbps * 2),
            1 => (
                44100,
                kbps * 1000 * 1536 / 44100 / 16 + (frmsizecod as u32 & 1),
            ),
            2 => (32000, kbps * 3),
            _ => return None,
        };
        let acmod = h[6] >> 5;
        // lfeon follows optional 2-bit fields whose presence depends on acmod.
        let mut bit = 3u32;
        if acmod & 1 != 0 && acmod != 1 {
            bit += 2; // cmixlev
        }
        if acmod & 4 != 0 {
            bit += 2; // surmixlev
        }
        if acmod == 2 {
            bit += 2; // dsurmod
        }
        let byte = 6 + (bit / 8) as usize;
        let lfe = h.get(byte).map_or(0, |v| (v >> (7 - bit % 8)) & 1);
        Some(AudioFrameHeader {
            length: words as usize * 2,
            samples: 1536,
            sample_rate,
            channels: AC3_CHANNELS.get(usize::from(acmod)).copied().unwrap_or(2) + lfe,
            aac_config: None,
        })
    } else if bsid <= 16 {
        let frmsiz = (usize::from(h[2] & 0x07) << 8) | usize::from(h[3]);
        let fscod = h[4] >> 6;
        let (sample_rate, blocks) = if fscod == 3 {
            let rate = match (h[4] >> 4) & 3 {
                0 => 24000,
                1 => 22050,
                2 => 16000,
                _ => return None,
            };
            (rate, 6)
        } else {
            let rate = [48000, 44100, 32000].get(usize::from(fscod)).copied()?;
            let blocks = [1, 2, 3, 6].get(usize::from((h[4] >> 4) & 3)).copied()?;
            (rate, blocks)
        };
        let acmod = (h[4] >> 1) & 7;
        let lfe = h[4] & 1;
        Some(AudioFrameHeader {
            length: (frmsiz + 1) * 2,
            samples: 256 * blocks,
            sample_rate,
            channels: AC3_CHANNELS.get(usize::from(acmod)).copied().unwrap_or(2) + lfe,
            aac_config: None,
        })
    } else {
        None
    }
}

/// E-AC-3 dependent substreams (strmtyp 1) belong to the frame before them.
pub fn eac3_is_dependent(b: &[u8]) -> bool {
    b.get(5).is_some_and(|v| v >> 3 > 10) && b.get(2).is_some_and(|v| v >> 6 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_48k_stereo() {
        // AAC-LC, 48 kHz (index 3), 2 channels, length 0x173, 1 raw block
        let h = [0xff, 0xf1, 0x4c, 0x80, 0x2e, 0x7f, 0xfc];
        let a = adts_header(&h).unwrap();
        assert_eq!(a.sample_rate, 48000);
        assert_eq!(a.channels, 2);
        assert_eq!(a.length, 0x173);
        assert_eq!(a.samples, 1024);
        assert_eq!(a.aac_config, Some([0x11, 0x90]));
    }

    #[test]
    fn mp2_frame() {
        // MPEG-1 layer II, 192 kbps, 48 kHz, stereo: 576 bytes
        let h = [0xff, 0xfd, 0xa4, 0x00];
        let a = mpeg_audio_header(&h).unwrap();
        assert_eq!(
            (a.length, a.samples, a.sample_rate, a.channels),
            (576, 1152, 48000, 2)
        );
    }

    #[test]
    fn ac3_frame() {
        // 48 kHz, 384 kbps (frmsizecod 28), bsid 8, acmod 7 (3/2), lfe on
        let h = [0x0b, 0x77, 0, 0, 0x1c, 0x40, 0xe1, 0x40];
        let a = ac3_header(&h).unwrap();
        assert_eq!(a.length, 1536);
        assert_eq!(a.sample_rate, 48000);
        assert_eq!(a.channels, 6);
    }
}
