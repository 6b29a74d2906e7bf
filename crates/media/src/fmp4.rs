//! A fragmented MP4 (ISO BMFF) writer for H.264 + AAC, sans-IO: the yard's
//! [`Program`] becomes an init segment (`ftyp` + `moov` with `avcC` and
//! `esds`), and its [`Frame`]s become `moof` + `mdat` fragments. Browsers
//! play such a stream straight from a `<video src>` that never ends, which is
//! what live TV in the browser needs.
//!
//! Frames arrive as they do from MPEG-TS: video in Annex-B with start codes,
//! AAC in ADTS. MP4 wants length-prefixed NAL units (4-byte lengths, parameter
//! sets in `avcC`) and raw AAC access units, so both are converted here.
//!
//! A fragment is cut at every video keyframe and whenever the buffered media
//! spans [`Fmp4Muxer::fragment_ms`]; audio and video samples of the same span
//! share one fragment. The stream starts at the first video keyframe (audio
//! before it is dropped), and that keyframe's decode time is time zero for
//! every track, so the tracks stay in sync.

use crate::bits::AnnexB;
use crate::program::{Codec, Frame, Program, TS_CLOCK_HZ, TrackParams};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    #[error("the programme has no H.264 track with known parameter sets")]
    NoVideo,
    #[error("the H.264 parameter sets lack an SPS or a PPS")]
    BadParameterSets,
}

/// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) built from
/// Annex-B parameter sets (SPS and PPS, as in `VideoParams::parameter_sets`
/// or at the head of a keyframe). `None` without an SPS and a PPS.
pub fn avc_decoder_config(annexb: &[u8]) -> Option<Vec<u8>> {
    let mut sps: Vec<&[u8]> = Vec::new();
    let mut pps: Vec<&[u8]> = Vec::new();
    for (_, nal) in AnnexB::new(annexb) {
        match nal.first().map(|h| h & 0x1f) {
            Some(7) if nal.len() >= 4 && sps.len() < 31 => sps.push(nal),
            Some(8) if !nal.is_empty() && pps.len() < 255 => pps.push(nal),
            _ => {}
        }
    }
    let first = sps.first()?;
    if pps.is_empty() {
        return None;
    }
    let mut out = vec![
        1,
        *first.get(1)?,
        *first.get(2)?,
        *first.get(3)?,
        0xFF, // 4-byte NAL lengths
        0xE0 | sps.len() as u8,
    ];
    for s in &sps {
        out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_be_bytes());
        out.extend_from_slice(s);
    }
    out.push(pps.len() as u8);
    for p in &pps {
        out.extend_from_slice(&u16::try_from(p.len()).ok()?.to_be_bytes());
        out.extend_from_slice(p);
    }
    Some(out)
}

/// Annex-B (start codes) to 4-byte length prefixes, dropping access unit
/// delimiters and filler, which MP4 has no use for. With `keep_parameter_sets`
/// false, SPS and PPS are dropped too (they live in `avcC`).
pub fn annexb_to_length_prefixed(annexb: &[u8], keep_parameter_sets: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(annexb.len() + 8);
    for (_, nal) in AnnexB::new(annexb) {
        let t = nal.first().map_or(0, |h| h & 0x1f);
        let drop = t == 9 || t == 12 || (!keep_parameter_sets && (t == 7 || t == 8));
        if nal.is_empty() || drop {
            continue;
        }
        let Ok(len) = u32::try_from(nal.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The raw AAC access unit inside an ADTS frame (header and CRC removed); a
/// frame without an ADTS header is returned as is.
pub fn strip_adts(frame: &[u8]) -> &[u8] {
    match crate::audio::adts_header(frame) {
        Some(h) => {
            let protection_absent = frame.get(1).is_some_and(|b| b & 1 == 1);
            let header = if protection_absent { 7 } else { 9 };
            frame.get(header..h.length.min(frame.len())).unwrap_or(&[])
        }
        None => frame,
    }
}

#[derive(Debug, Clone)]
enum TrackKind {
    Video {
        avcc: Vec<u8>,
        width: u32,
        height: u32,
    },
    Audio {
        config: Vec<u8>,
        sample_rate: u32,
        channels: u8,
    },
}

#[derive(Debug, Clone)]
struct Sample {
    /// Decode time in the track's timescale, from the stream's start.
    time: u64,
    duration: u32,
    cts_offset: i32,
    key: bool,
    data: Vec<u8>,
}

#[derive(Debug)]
struct MuxTrack {
    id: u32,
    pid: u16,
    kind: TrackKind,
    timescale: u32,
    /// The latest sample, held back until its successor gives its duration.
    pending: Option<(i64, i64, bool, Vec<u8>)>,
    ready: Vec<Sample>,
    last_duration: u32,
}

impl MuxTrack {
    fn scale(&self, ticks_90k: i64) -> u64 {
        let t = ticks_90k.max(0) as u128 * u128::from(self.timescale) / u128::from(TS_CLOCK_HZ);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Makes the pending sample ready, ending it at `next_dts` (90 kHz,
    /// relative) or, without a successor, after the usual duration.
    fn commit(&mut self, next_dts: Option<i64>) {
        let Some((dts, pts, key, data)) = self.pending.take() else {
            return;
        };
        let time = self.scale(dts);
        let duration = match next_dts {
            Some(n) if n > dts => {
                u32::try_from(self.scale(n).saturating_sub(time)).unwrap_or(u32::MAX)
            }
            _ => self.last_duration,
        };
        self.last_duration = duration;
        let cts =
            pts.saturating_sub(dts) as i128 * i128::from(self.timescale) / i128::from(TS_CLOCK_HZ);
        self.ready.push(Sample {
            time,
            duration,
            cts_offset: i32::try_from(cts).unwrap_or(0),
            key,
            data,
        });
    }
}

/// The muxer. Feed frames with [`push`](Self::push); each call may return a
/// finished fragment to send after [`init_segment`](Self::init_segment).
#[derive(Debug)]
pub struct Fmp4Muxer {
    tracks: Vec<MuxTrack>,
    sequence: u32,
    /// 90 kHz decode time of the first keyframe: time zero.
    base: Option<i64>,
    /// Relative 90 kHz time at which the fragment being built started.
    fragment_start: i64,
    /// The longest span of media in one fragment, in milliseconds.
    pub fragment_ms: u32,
}

impl Fmp4Muxer {
    /// Picks the programme's first H.264 track and first AAC track (if any).
    pub fn new(program: &Program) -> Result<Self, Fmp4Error> {
        let mut tracks = Vec::new();
        let video = program
            .tracks
            .iter()
            .find_map(|t| match (&t.codec, &t.params) {
                (Codec::H264, TrackParams::Video(v)) if !v.parameter_sets.is_empty() => {
                    Some((t, v))
                }
                _ => None,
            });
        let Some((vt, v)) = video else {
            return Err(Fmp4Error::NoVideo);
        };
        let avcc = avc_decoder_config(&v.parameter_sets).ok_or(Fmp4Error::BadParameterSets)?;
        tracks.push(MuxTrack {
            id: 1,
            pid: vt.pid,
            kind: TrackKind::Video {
                avcc,
                width: v.width,
                height: v.height,
            },
            timescale: TS_CLOCK_HZ as u32,
            pending: None,
            ready: Vec::new(),
            last_duration: 3600,
        });
        let audio = program
            .tracks
            .iter()
            .find_map(|t| match (&t.codec, &t.params) {
                (Codec::Aac, TrackParams::Audio(a)) if a.sample_rate > 0 => Some((t, a)),
                _ => None,
            });
        if let Some((at, a)) = audio {
            let config = if a.codec_config.len() >= 2 {
                a.codec_config.to_vec()
            } else {
                aac_config(a.sample_rate, a.channels)
            };
            tracks.push(MuxTrack {
                id: 2,
                pid: at.pid,
                kind: TrackKind::Audio {
                    config,
                    sample_rate: a.sample_rate,
                    channels: a.channels,
                },
                timescale: a.sample_rate,
                pending: None,
                ready: Vec::new(),
                last_duration: 1024,
            });
        }
        Ok(Fmp4Muxer {
            tracks,
            sequence: 0,
            base: None,
            fragment_start: 0,
            fragment_ms: 500,
        })
    }

    /// Whether the programme's audio made it into the file.
    pub fn has_audio(&self) -> bool {
        self.tracks.len() > 1
    }

    /// `ftyp` + `moov`, to send before any fragment.
    pub fn init_segment(&self) -> Vec<u8> {
        let mut out = Vec::new();
        bx(&mut out, b"ftyp", |b| {
            b.extend_from_slice(b"isom");
            b.extend_from_slice(&0x200u32.to_be_bytes());
            for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
                b.extend_from_slice(brand);
            }
        });
        bx(&mut out, b"moov", |moov| {
            full(moov, b"mvhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]); // creation, modification
                b.extend_from_slice(&1000u32.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes()); // duration unknown
                b.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
                b.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
                b.extend_from_slice(&[0; 10]);
                matrix(b);
                b.extend_from_slice(&[0; 24]);
                b.extend_from_slice(&(self.tracks.len() as u32 + 1).to_be_bytes());
            });
            for t in &self.tracks {
                trak(moov, t);
            }
            bx(moov, b"mvex", |mvex| {
                for t in &self.tracks {
                    full(mvex, b"trex", 0, 0, |b| {
                        b.extend_from_slice(&t.id.to_be_bytes());
                        b.extend_from_slice(&1u32.to_be_bytes());
                        b.extend_from_slice(&[0; 12]);
                    });
                }
            });
        });
        out
    }

    /// Adds a frame of the programme (frames of other tracks are ignored).
    /// Returns a `moof` + `mdat` fragment when one was completed.
    pub fn push(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        let index = self.tracks.iter().position(|t| t.pid == frame.pid)?;
        let is_video = index == 0;
        let dts = frame.dts.or(frame.pts)?;
        let pts = frame.pts.unwrap_or(dts);
        let base = match self.base {
            Some(b) => b,
            None if is_video && frame.is_key() => {
                self.base = Some(dts);
                dts
            }
            None => return None,
        };
        let rel = dts.saturating_sub(base);
        if rel < 0 {
            // from before the start (audio ahead of the first keyframe)
            return None;
        }
        let mut out = None;
        let span_ms =
            rel.saturating_sub(self.fragment_start).saturating_mul(1000) / TS_CLOCK_HZ as i64;
        let cut = (is_video && frame.is_key()) || span_ms >= i64::from(self.fragment_ms);
        if cut {
            // Every sample that starts before `rel` belongs to this fragment.
            if let Some(track) = self.tracks.get_mut(index) {
                track.commit(Some(rel));
            }
            out = self.fragment();
            self.fragment_start = rel;
        }
        let track = self.tracks.get_mut(index)?;
        track.commit(Some(rel));
        let data = if is_video {
            annexb_to_length_prefixed(&frame.data, false)
        } else {
            strip_adts(&frame.data).to_vec()
        };
        if data.is_empty() {
            return out;
        }
        track.pending = Some((
            rel,
            pts.saturating_sub(base),
            frame.is_key() || !is_video,
            data,
        ));
        out
    }

    /// Everything still buffered as a last fragment.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        for t in &mut self.tracks {
            t.commit(None);
        }
        self.fragment()
    }

    fn fragment(&mut self) -> Option<Vec<u8>> {
        if self.tracks.iter().all(|t| t.ready.is_empty()) {
            return None;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let samples: Vec<(u32, Vec<Sample>)> = self
            .tracks
            .iter_mut()
            .filter(|t| !t.ready.is_empty())
            .map(|t| (t.id, std::mem::take(&mut t.ready)))
            .collect();
        // The moof's size does not depend on the offsets written into it.
        let probe = moof(self.sequence, &samples, &[]);
        let mut offsets = Vec::new();
        let mut at = probe.len() as u64 + 8;
        for (_, s) in &samples {
            offsets.push(i32::try_from(at).unwrap_or(i32::MAX));
            at += s.iter().map(|x| x.data.len() as u64).sum::<u64>();
        }
        let mut out = moof(self.sequence, &samples, &offsets);
        let mdat_len = at - probe.len() as u64;
        match u32::try_from(mdat_len) {
            Ok(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(b"mdat");
            }
            Err(_) => return None,
        }
        for (_, s) in &samples {
            for x in s {
                out.extend_from_slice(&x.data);
            }
        }
        Some(out)
    }
}

/// An AudioSpecificConfig for AAC-LC when the programme gives none.
fn aac_config(sample_rate: u32, channels: u8) -> Vec<u8> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let index = RATES.iter().position(|r| *r == sample_rate).unwrap_or(3) as u8;
    vec![
        (2 << 3) | (index >> 1),
        ((index & 1) << 7) | ((channels & 0x0f) << 3),
    ]
}

fn moof(sequence: u32, tracks: &[(u32, Vec<Sample>)], offsets: &[i32]) -> Vec<u8> {
    let mut out = Vec::new();
    bx(&mut out, b"moof", |moof| {
        full(moof, b"mfhd", 0, 0, |b| {
            b.extend_from_slice(&sequence.to_be_bytes())
        });
        for (i, (id, samples)) in tracks.iter().enumerate() {
            bx(moof, b"traf", |traf| {
                // default-base-is-moof: data offsets count from the moof
                full(traf, b"tfhd", 0, 0x02_0000, |b| {
                    b.extend_from_slice(&id.to_be_bytes())
                });
                full(traf, b"tfdt", 1, 0, |b| {
                    let t = samples.first().map_or(0, |s| s.time);
                    b.extend_from_slice(&t.to_be_bytes());
                });
                full(traf, b"trun", 1, 0x0F01, |b| {
                    b.extend_from_slice(&(samples.len() as u32).to_be_bytes());
                    let off = offsets.get(i).copied().unwrap_or(0);
                    b.extend_from_slice(&off.to_be_bytes());
                    for s in samples {
                        b.extend_from_slice(&s.duration.to_be_bytes());
                        b.extend_from_slice(&(s.data.len() as u32).to_be_bytes());
                        let flags: u32 = if s.key { 0x0200_0000 } else { 0x0101_0000 };
                        b.extend_from_slice(&flags.to_be_bytes());
                        b.extend_from_slice(&s.cts_offset.to_be_bytes());
                    }
                });
            });
        }
    });
    out
}

fn trak(out: &mut Vec<u8>, t: &MuxTrack) {
    let video = matches!(t.kind, TrackKind::Video { .. });
    bx(out, b"trak", |trak| {
        full(trak, b"tkhd", 0, 3, |b| {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&t.id.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&0u32.to_be_bytes()); // duration
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&0u16.to_be_bytes()); // layer
            b.extend_from_slice(&0u16.to_be_bytes()); // alternate group
            let volume: u16 = if video { 0 } else { 0x0100 };
            b.extend_from_slice(&volume.to_be_bytes());
            b.extend_from_slice(&[0; 2]);
            matrix(b);
            let (w, h) = match &t.kind {
                TrackKind::Video { width, height, .. } => (*width, *height),
                TrackKind::Audio { .. } => (0, 0),
            };
            b.extend_from_slice(&(w << 16).to_be_bytes());
            b.extend_from_slice(&(h << 16).to_be_bytes());
        });
        bx(trak, b"mdia", |mdia| {
            full(mdia, b"mdhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]);
                b.extend_from_slice(&t.timescale.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&0x55C4u16.to_be_bytes()); // "und"
                b.extend_from_slice(&[0; 2]);
            });
            full(mdia, b"hdlr", 0, 0, |b| {
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(if video { b"vide" } else { b"soun" });
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(if video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            bx(mdia, b"minf", |minf| {
                if video {
                    full(minf, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                } else {
                    full(minf, b"smhd", 0, 0, |b| b.extend_from_slice(&[0; 4]));
                }
                bx(minf, b"dinf", |dinf| {
                    full(dinf, b"dref", 0, 0, |b| {
                        b.extend_from_slice(&1u32.to_be_bytes());
                        full(b, b"url ", 0, 1, |_| {});
                    });
                });
                bx(minf, b"stbl", |stbl| {
                    full(stbl, b"stsd", 0, 0, |b| {
                        b.extend_from_slice(&1u32.to_be_bytes());
                        sample_entry(b, &t.kind);
                    });
                    for name in [b"stts", b"stsc", b"stco"] {
                        full(stbl, name, 0, 0, |b| b.extend_from_slice(&[0; 4]));
                    }
                    full(stbl, b"stsz", 0, 0, |b| b.extend_from_slice(&[0; 8]));
                });
            });
        });
    });
}

fn sample_entry(out: &mut Vec<u8>, kind: &TrackKind) {
    match kind {
        TrackKind::Video {
            avcc,
            width,
            height,
        } => bx(out, b"avc1", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&(*width as u16).to_be_bytes());
            b.extend_from_slice(&(*height as u16).to_be_bytes());
            b.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
            b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&1u16.to_be_bytes()); // frame count
            b.extend_from_slice(&[0; 32]); // compressor name
            b.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
            b.extend_from_slice(&0xFFFFu16.to_be_bytes());
            bx(b, b"avcC", |c| c.extend_from_slice(avcc));
        }),
        TrackKind::Audio {
            config,
            sample_rate,
            channels,
        } => bx(out, b"mp4a", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&u16::from(*channels).to_be_bytes());
            b.extend_from_slice(&16u16.to_be_bytes()); // sample size
            b.extend_from_slice(&[0; 4]);
            let rate = u16::try_from(*sample_rate).unwrap_or(0);
            b.extend_from_slice(&(u32::from(rate) << 16).to_be_bytes());
            full(b, b"esds", 0, 0, |e| esds(e, config));
        }),
    }
}

/// ES_Descriptor (ISO/IEC 14496-1 §7.2.6.5) for AAC.
fn esds(out: &mut Vec<u8>, config: &[u8]) {
    let config = config.get(..config.len().min(100)).unwrap_or(&[]);
    let mut dsi = vec![0x05, config.len() as u8];
    dsi.extend_from_slice(config);
    let mut dcd = vec![0x40, 0x15, 0, 0, 0];
    dcd.extend_from_slice(&0u32.to_be_bytes()); // max bitrate
    dcd.extend_from_slice(&0u32.to_be_bytes()); // average bitrate
    dcd.extend_from_slice(&dsi);
    let mut es = vec![0, 0, 0]; // ES_ID, flags
    es.push(0x04);
    es.push(dcd.len() as u8);
    es.extend_from_slice(&dcd);
    es.extend_from_slice(&[0x06, 0x01, 0x02]); // SLConfigDescriptor
    out.push(0x03);
    out.push(es.len() as u8);
    out.extend_from_slice(&es);
}

fn matrix(b: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.extend_from_slice(&v.to_be_bytes());
    }
}

fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    bx(out, kind, |b| {
        b.push(version);
        b.extend_from_slice(flags.to_be_bytes().get(1..).unwrap_or(&[0, 0, 0]));
        body(b);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_from_annexb() {
        let ps = [
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xaa, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        let c = avc_decoder_config(&ps).unwrap();
        assert_eq!(
            c,
            [
                1, 0x42, 0xe0, 0x1f, 0xff, 0xe1, 0, 5, 0x67, 0x42, 0xe0, 0x1f, 0xaa, 1, 0, 4, 0x68,
                0xce, 0x3c, 0x80
            ]
        );
        assert_eq!(avc_decoder_config(&ps[..9]), None);
    }

    #[test]
    fn annexb_becomes_length_prefixed_without_aud() {
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 7, 8,
        ];
        assert_eq!(
            annexb_to_length_prefixed(&au, false),
            [0, 0, 0, 3, 0x65, 7, 8]
        );
        assert_eq!(
            annexb_to_length_prefixed(&au, true),
            [0, 0, 0, 2, 0x67, 1, 0, 0, 0, 3, 0x65, 7, 8]
        );
    }

    #[test]
    fn adts_is_stripped() {
        // AAC-LC 48 kHz stereo, 10-byte frame, no CRC
        let f = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 0xaa, 0xbb, 0xcc];
        assert_eq!(strip_adts(&f), [0xaa, 0xbb, 0xcc]);
        assert_eq!(strip_adts(&[1, 2]), [1, 2]);
    }

    #[test]
    fn default_aac_config() {
        assert_eq!(aac_config(48000, 2), [0x11, 0x90]);
    }
}
