//! A bounds-checked MSB-first bit reader with Exp-Golomb codes, and the
//! emulation-prevention removal that H.264/HEVC NAL units need before their
//! bits can be read. Every read returns `None` past the end instead of
//! panicking, so codec parsers can use `?` throughout.

/// `N` bytes at `at` as an array reference, so fixed-layout headers can be
/// read with constant indices that cannot go out of bounds.
#[inline]
pub fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<&[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let v = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }

    pub fn flag(&mut self) -> Option<bool> {
        self.bit().map(|b| b == 1)
    }

    /// Read `n` (<= 32) bits.
    pub fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.data.len().checked_mul(8)? {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// Unsigned Exp-Golomb (ue(v)); values above u32 range are rejected.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        if zeros == 0 {
            return Some(0);
        }
        let rest = u64::from(self.bits(zeros)?);
        let v = (1u64 << zeros) - 1 + rest;
        u32::try_from(v).ok()
    }

    /// Signed Exp-Golomb (se(v)).
    pub fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }

    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }
}

/// Copy a NAL unit's payload with emulation-prevention bytes (the 0x03 in
/// 00 00 03) removed, into `out`, stopping after `max` output bytes.
pub fn unescape_rbsp(nal: &[u8], max: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut zeros = 0u32;
    for &b in nal {
        if out.len() >= max {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
}

/// Iterate over the NAL units of an Annex-B byte stream (start codes
/// 00 00 01 or 00 00 00 01). Each item is the NAL unit without its start
/// code and with trailing zero bytes (of a following 4-byte start code)
/// removed.
pub struct AnnexB<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> AnnexB<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let pos = find_start_code(data, 0).map_or(data.len(), |(_, after)| after);
        AnnexB { data, pos }
    }

    /// Offset of the next NAL (the byte after its start code).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for AnnexB<'a> {
    /// (offset of the NAL unit's first byte, NAL unit bytes)
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start = self.pos;
        let (end, next) = match find_start_code(self.data, start) {
            Some((sc, after)) => (sc, after),
            None => (self.data.len(), self.data.len()),
        };
        self.pos = next;
        let mut nal = self.data.get(start..end)?;
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        Some((start, nal))
    }
}

/// Find the next 00 00 01 at or after `from`: returns (offset of the first
/// 00, offset after the 01).
pub fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let hay = data.get(from..)?;
    let mut i = 0usize;
    // Skip two bytes at a time looking at the third: a start code's 01 is
    // preceded by two zeros, so any byte > 1 rules out a code ending there
    // or at the next position.
    while i + 2 < hay.len() {
        let b2 = *hay.get(i + 2)?;
        if b2 > 1 {
            i += 3;
            continue;
        }
        if b2 == 1 && hay.get(i) == Some(&0) && hay.get(i + 1) == Some(&0) {
            return Some((from + i, from + i + 3));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 -> 0, 1, 2, 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.ue(), None);
    }

    #[test]
    fn start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 5, 0, 0, 0, 1, 0x65, 9,
        ];
        let nals: Vec<_> = AnnexB::new(&data).map(|(_, n)| n.to_vec()).collect();
        assert_eq!(nals, vec![vec![0x67, 1, 2], vec![0x68, 5], vec![0x65, 9]]);
    }

    #[test]
    fn unescape() {
        let mut out = Vec::new();
        unescape_rbsp(&[1, 0, 0, 3, 1, 0, 0, 3], 100, &mut out);
        assert_eq!(out, vec![1, 0, 0, 1, 0, 0]);
    }
}
