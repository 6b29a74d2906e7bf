//! XMLTV programme guides (the DTD at xmltv.org): parse what providers
//! publish, write what `/xmltv` serves.
//!
//! Parsing goes over the whole document in memory with `quick-xml` (no I/O
//! here). A programme that lacks what the yard needs (channel, a parseable
//! start, a title) is skipped with a [`Warning`] naming the line of its
//! `<programme>` tag; an XML syntax error ends the parse with a warning and
//! keeps what came before it.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

pub use crate::m3u::Warning;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmltvChannel {
    pub id: String,
    /// All display names, the first being the primary one.
    pub display_names: Vec<String>,
    pub icon: Option<String>,
    /// 1-based line of the `<channel>` tag.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmltvProgramme {
    pub channel: String,
    /// Unix seconds.
    pub start: i64,
    pub stop: Option<i64>,
    pub title: String,
    pub sub_title: Option<String>,
    pub desc: Option<String>,
    pub categories: Vec<String>,
    /// `episode-num system="xmltv_ns"`, raw (zero-based "season.episode.part").
    pub episode_xmltv_ns: Option<String>,
    /// `episode-num system="onscreen"` (e.g. "S03E10").
    pub episode_onscreen: Option<String>,
    /// One-based, from xmltv_ns (or onscreen "SxxEyy" when that is all).
    pub season: Option<u32>,
    pub episode: Option<u32>,
    pub icon: Option<String>,
    /// The first `<rating><value>`, raw (e.g. "12", "FSK 16", "TV-14").
    pub rating: Option<String>,
    /// 1-based line of the `<programme>` tag.
    pub line: usize,
}

impl XmltvProgramme {
    /// A minimum age from the rating when it has one (the first number).
    pub fn age_rating(&self) -> Option<u32> {
        let r = self.rating.as_deref()?;
        let digits: String = r
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|&a| a <= 21)
    }

    /// The episode label for display: onscreen if given, else "SxxEyy".
    pub fn episode_label(&self) -> Option<String> {
        if let Some(o) = &self.episode_onscreen {
            return Some(o.clone());
        }
        match (self.season, self.episode) {
            (Some(s), Some(e)) => Some(format!("S{s:02}E{e:02}")),
            (None, Some(e)) => Some(format!("E{e:02}")),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guide {
    pub channels: Vec<XmltvChannel>,
    pub programmes: Vec<XmltvProgramme>,
    pub warnings: Vec<Warning>,
}

/// Which text field a character event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    None,
    DisplayName,
    Title,
    SubTitle,
    Desc,
    Category,
    EpisodeNs,
    EpisodeOnscreen,
    EpisodeOther,
    RatingValue,
}

struct ProgrammeDraft {
    p: XmltvProgramme,
    start_raw: Option<String>,
    stop_raw: Option<String>,
    /// Titles are repeated per language; keep the first.
    has_title: bool,
}

/// Tracks line numbers as the reader advances, counting newlines once.
struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
}

impl Lines<'_> {
    fn at(&mut self, pos: usize) -> usize {
        let pos = pos.min(self.input.len());
        if pos > self.pos {
            let newlines = self
                .input
                .get(self.pos..pos)
                .map_or(0, |s| s.iter().filter(|&&b| b == b'\n').count());
            self.line += newlines;
            self.pos = pos;
        }
        self.line
    }
}

/// Parse an XMLTV document.
pub fn parse_xmltv(input: &[u8]) -> Guide {
    let mut guide = Guide::default();
    let latin1 = declares_latin1(input);
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    let mut lines = Lines {
        input,
        pos: 0,
        line: 1,
    };
    let mut channel: Option<XmltvChannel> = None;
    let mut prog: Option<ProgrammeDraft> = None;
    let mut field = Field::None;
    let mut text = String::new();
    let mut in_rating = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let line = lines.at(reader.error_position() as usize);
                guide.warnings.push(Warning {
                    line,
                    message: format!("XML error, rest of the guide ignored: {e}"),
                });
                break;
            }
        };
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            {
                // Line of the tag's '<' (skipping leading whitespace text).
                let tag_line = lines.at(before + leading_ws(input, before));
                let name = e.local_name();
                match name.as_ref() {
                    b"channel" if prog.is_none() => {
                        let id = attr(e, b"id", latin1);
                        channel = Some(XmltvChannel {
                            id: id.unwrap_or_default(),
                            line: tag_line,
                            ..Default::default()
                        });
                    }
                    b"programme" if channel.is_none() => {
                        prog = Some(ProgrammeDraft {
                            p: XmltvProgramme {
                                channel: attr(e, b"channel", latin1).unwrap_or_default(),
                                line: tag_line,
                                ..Default::default()
                            },
                            start_raw: attr(e, b"start", latin1),
                            stop_raw: attr(e, b"stop", latin1),
                            has_title: false,
                        });
                    }
                    b"display-name" if channel.is_some() => field = Field::DisplayName,
                    b"icon" => {
                        let src = attr(e, b"src", latin1);
                        if let Some(c) = channel.as_mut() {
                            c.icon = c.icon.take().or(src);
                        } else if let Some(p) = prog.as_mut() {
                            p.p.icon = p.p.icon.take().or(src);
                        }
                    }
                    b"title" if prog.is_some() => field = Field::Title,
                    b"sub-title" if prog.is_some() => field = Field::SubTitle,
                    b"desc" if prog.is_some() => field = Field::Desc,
                    b"category" if prog.is_some() => field = Field::Category,
                    b"episode-num" if prog.is_some() => {
                        field = match attr(e, b"system", latin1).as_deref() {
                            Some("xmltv_ns") => Field::EpisodeNs,
                            Some("onscreen") => Field::EpisodeOnscreen,
                            _ => Field::EpisodeOther,
                        };
                    }
                    b"rating" if prog.is_some() => in_rating = true,
                    b"value" if in_rating => field = Field::RatingValue,
                    _ => {}
                }
                text.clear();
                if empty {
                    // <x/> is a start and an end at once.
                    end_element(
                        name.as_ref(),
                        &mut guide,
                        &mut channel,
                        &mut prog,
                        &mut field,
                        &mut text,
                        &mut in_rating,
                    );
                }
            }
            continue;
        }
        match event {
            Event::Eof => break,
            Event::Text(t) if field != Field::None => {
                push_text(&mut text, &t, latin1);
            }
            Event::CData(t) if field != Field::None => {
                push_text(&mut text, &t, latin1);
            }
            Event::GeneralRef(r) if field != Field::None => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => match r.as_ref() {
                    b"amp" => text.push('&'),
                    b"lt" => text.push('<'),
                    b"gt" => text.push('>'),
                    b"quot" => text.push('"'),
                    b"apos" => text.push('\''),
                    other => {
                        text.push('&');
                        text.push_str(&String::from_utf8_lossy(other));
                        text.push(';');
                    }
                },
            },
            Event::End(e) => {
                let name = e.local_name();
                end_element(
                    name.as_ref(),
                    &mut guide,
                    &mut channel,
                    &mut prog,
                    &mut field,
                    &mut text,
                    &mut in_rating,
                );
            }
            _ => {}
        }
    }
    guide
}

fn leading_ws(input: &[u8], at: usize) -> usize {
    input.get(at..).map_or(0, |s| {
        s.iter().take_while(|b| b.is_ascii_whitespace()).count()
    })
}

#[allow(clippy::too_many_arguments)]
fn end_element(
    name: &[u8],
    guide: &mut Guide,
    channel: &mut Option<XmltvChannel>,
    prog: &mut Option<ProgrammeDraft>,
    field: &mut Field,
    text: &mut String,
    in_rating: &mut bool,
) {
    // Control characters XML 1.0 forbids are dropped, as the writer does.
    let value: String = std::mem::take(text)
        .trim()
        .chars()
        .filter(|&c| c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let value = value.trim().to_string();
    match (name, *field) {
        (b"display-name", Field::DisplayName) => {
            if let Some(c) = channel.as_mut()
                && !value.is_empty()
            {
                c.display_names.push(value);
            }
            *field = Field::None;
        }
        (b"title", Field::Title) => {
            if let Some(p) = prog.as_mut()
                && !p.has_title
                && !value.is_empty()
            {
                p.p.title = value;
                p.has_title = true;
            }
            *field = Field::None;
        }
        (b"sub-title", Field::SubTitle) => {
            if let Some(p) = prog.as_mut() {
                p.p.sub_title =
                    p.p.sub_title
                        .take()
                        .or((!value.is_empty()).then_some(value));
            }
            *field = Field::None;
        }
        (b"desc", Field::Desc) => {
            if let Some(p) = prog.as_mut() {
                p.p.desc = p.p.desc.take().or((!value.is_empty()).then_some(value));
            }
            *field = Field::None;
        }
        (b"category", Field::Category) => {
            if let Some(p) = prog.as_mut()
                && !value.is_empty()
                && !p.p.categories.contains(&value)
            {
                p.p.categories.push(value);
            }
            *field = Field::None;
        }
        (b"episode-num", f) => {
            if let Some(p) = prog.as_mut() {
                match f {
                    Field::EpisodeNs if !value.is_empty() => p.p.episode_xmltv_ns = Some(value),
                    Field::EpisodeOnscreen if !value.is_empty() => {
                        p.p.episode_onscreen = Some(value)
                    }
                    _ => {}
                }
            }
            *field = Field::None;
        }
        (b"value", Field::RatingValue) => {
            if let Some(p) = prog.as_mut()
                && p.p.rating.is_none()
                && !value.is_empty()
            {
                p.p.rating = Some(value);
            }
            *field = Field::None;
        }
        (b"rating", _) => *in_rating = false,
        (b"channel", _) => {
            if let Some(c) = channel.take() {
                if c.id.is_empty() {
                    guide.warnings.push(Warning {
                        line: c.line,
                        message: "channel without id, skipped".into(),
                    });
                } else {
                    guide.channels.push(c);
                }
            }
        }
        (b"programme", _) => {
            if let Some(d) = prog.take() {
                match finish_programme(d) {
                    Ok(p) => guide.programmes.push(p),
                    Err((line, message)) => guide.warnings.push(Warning { line, message }),
                }
            }
            *field = Field::None;
        }
        _ => {}
    }
}

fn finish_programme(d: ProgrammeDraft) -> Result<XmltvProgramme, (usize, String)> {
    let mut p = d.p;
    let line = p.line;
    if p.channel.is_empty() {
        return Err((line, "programme without channel, skipped".into()));
    }
    let Some(start_raw) = d.start_raw else {
        return Err((line, "programme without start, skipped".into()));
    };
    p.start = parse_xmltv_time(&start_raw).ok_or_else(|| {
        (
            line,
            format!("programme start {start_raw:?} is not an XMLTV time, skipped"),
        )
    })?;
    p.stop = d.stop_raw.as_deref().and_then(parse_xmltv_time);
    if p.stop.is_some_and(|s| s < p.start) {
        p.stop = None;
    }
    if !d.has_title {
        return Err((line, "programme without title, skipped".into()));
    }
    if let Some(ns) = &p.episode_xmltv_ns {
        let (s, e) = parse_xmltv_ns(ns);
        p.season = s;
        p.episode = e;
    }
    if p.season.is_none()
        && p.episode.is_none()
        && let Some(o) = &p.episode_onscreen
    {
        let (s, e) = parse_onscreen(o);
        p.season = s;
        p.episode = e;
    }
    Ok(p)
}

fn push_text(out: &mut String, raw: &[u8], latin1: bool) {
    if latin1 {
        out.extend(raw.iter().map(|&b| char::from(b)));
    } else {
        out.push_str(&String::from_utf8_lossy(raw));
    }
}

fn attr(e: &BytesStart, key: &[u8], latin1: bool) -> Option<String> {
    for a in e.attributes().with_checks(false).flatten() {
        if a.key.local_name().as_ref() != key {
            continue;
        }
        if !latin1 && let Ok(v) = a.unescape_value() {
            return Some(v.into_owned());
        }
        let mut s = String::new();
        push_text(&mut s, &a.value, latin1);
        return Some(quick_xml::escape::unescape(&s).map_or(s.clone(), |c| c.into_owned()));
    }
    None
}

fn declares_latin1(input: &[u8]) -> bool {
    let head = input.get(..input.len().min(200)).unwrap_or(&[]);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.starts_with("<?xml")
        && (head.contains("iso-8859-1") || head.contains("latin1") || head.contains("windows-1252"))
}

/// "2.9.0/1" -> (Some(3), Some(10)): xmltv_ns counts from zero.
pub fn parse_xmltv_ns(s: &str) -> (Option<u32>, Option<u32>) {
    let mut parts = s.split('.');
    let num = |p: Option<&str>| -> Option<u32> {
        let p = p?.trim();
        let first = p.split('/').next()?.trim();
        first.parse::<u32>().ok().and_then(|v| v.checked_add(1))
    };
    let season = num(parts.next());
    let episode = num(parts.next());
    (season, episode)
}

/// "S03E10", "s3 e10", "3x10" -> (Some(3), Some(10)).
pub fn parse_onscreen(s: &str) -> (Option<u32>, Option<u32>) {
    let lower = s.to_ascii_lowercase();
    let number_after = |key: char| -> Option<u32> {
        let i = lower.find(key)?;
        let digits: String = lower
            .get(i + 1..)?
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    if let (Some(s), Some(e)) = (number_after('s'), number_after('e')) {
        return (Some(s), Some(e));
    }
    if let Some((a, b)) = lower.split_once('x')
        && let (Ok(s), Ok(e)) = (a.trim().parse(), b.trim().parse())
    {
        return (Some(s), Some(e));
    }
    (None, number_after('e'))
}

/// Parse an XMLTV time: "YYYYMMDDhhmmss +hhmm", with trailing fields of the
/// date part optional (missing ones are zero), and the zone optional (UTC).
pub fn parse_xmltv_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, zone) = s.split_at(digits_end);
    if digits.len() < 8 || digits.len() > 14 || digits.len() % 2 != 0 {
        return None;
    }
    let field = |a: usize, b: usize| -> Option<i64> {
        match digits.get(a..b) {
            Some(d) => d.parse().ok(),
            None => Some(0),
        }
    };
    let (y, mo, d) = (field(0, 4)?, field(4, 6)?, field(6, 8)?);
    let (h, mi, se) = (field(8, 10)?, field(10, 12)?, field(12, 14)?);
    // Years outside 1900-9999 are garbage in a programme guide (and could
    // not be written back as four digits).
    if !(1900..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let zone = zone.trim();
    let offset =
        if zone.is_empty() || zone.eq_ignore_ascii_case("z") || zone == "UTC" || zone == "GMT" {
            0
        } else {
            let (sign, rest) = match zone.split_at_checked(1)? {
                ("+", r) => (1, r),
                ("-", r) => (-1, r),
                _ => return None,
            };
            let rest = rest.replace(':', "");
            if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let zh: i64 = rest.get(..2)?.parse().ok()?;
            let zm: i64 = rest.get(2..)?.parse().ok()?;
            sign * (zh * 3600 + zm * 60)
        };
    let days = days_from_civil(y, mo, d);
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Format unix seconds as an XMLTV time in UTC: "YYYYMMDDhhmmss +0000".
pub fn format_xmltv_time(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02} +0000",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// Write an XMLTV document.
pub fn write_xmltv(
    generator: &str,
    channels: &[XmltvChannel],
    programmes: &[XmltvProgramme],
) -> String {
    let mut s = String::with_capacity(256 + programmes.len() * 256);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE tv SYSTEM \"xmltv.dtd\">\n");
    let _ = writeln!(s, "<tv generator-info-name=\"{}\">", esc(generator));
    for c in channels {
        let _ = writeln!(s, "  <channel id=\"{}\">", esc(&c.id));
        for n in &c.display_names {
            let _ = writeln!(s, "    <display-name>{}</display-name>", esc(n));
        }
        if let Some(i) = &c.icon {
            let _ = writeln!(s, "    <icon src=\"{}\"/>", esc(i));
        }
        s.push_str("  </channel>\n");
    }
    for p in programmes {
        let _ = write!(s, "  <programme start=\"{}\"", format_xmltv_time(p.start));
        if let Some(stop) = p.stop {
            let _ = write!(s, " stop=\"{}\"", format_xmltv_time(stop));
        }
        let _ = writeln!(s, " channel=\"{}\">", esc(&p.channel));
        let _ = writeln!(s, "    <title>{}</title>", esc(&p.title));
        if let Some(v) = &p.sub_title {
            let _ = writeln!(s, "    <sub-title>{}</sub-title>", esc(v));
        }
        if let Some(v) = &p.desc {
            let _ = writeln!(s, "    <desc>{}</desc>", esc(v));
        }
        for c in &p.categories {
            let _ = writeln!(s, "    <category>{}</category>", esc(c));
        }
        if let Some(i) = &p.icon {
            let _ = writeln!(s, "    <icon src=\"{}\"/>", esc(i));
        }
        let ns = p
            .episode_xmltv_ns
            .clone()
            .or_else(|| match (p.season, p.episode) {
                (None, None) => None,
                (s, e) => Some(format!(
                    "{}.{}.",
                    s.and_then(|v| v.checked_sub(1))
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    e.and_then(|v| v.checked_sub(1))
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                )),
            });
        if let Some(ns) = ns {
            let _ = writeln!(
                s,
                "    <episode-num system=\"xmltv_ns\">{}</episode-num>",
                esc(&ns)
            );
        }
        if let Some(o) = &p.episode_onscreen {
            let _ = writeln!(
                s,
                "    <episode-num system=\"onscreen\">{}</episode-num>",
                esc(o)
            );
        }
        if let Some(r) = &p.rating {
            let _ = writeln!(
                s,
                "    <rating>\n      <value>{}</value>\n    </rating>",
                esc(r)
            );
        }
        s.push_str("  </programme>\n");
    }
    s.push_str("</tv>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE tv SYSTEM "xmltv.dtd">
<tv generator-info-name="test">
  <channel id="one.de">
    <display-name lang="de">Eins</display-name>
    <display-name>One</display-name>
    <icon src="http://l/1.png"/>
  </channel>
  <programme start="20261122143000 +0100" stop="20261122151500 +0100" channel="one.de">
    <title lang="de">Nachrichten &amp; Wetter</title>
    <title lang="en">News</title>
    <sub-title>Am Mittag</sub-title>
    <desc>Die Lage &#x2014; kurz.</desc>
    <category>News</category>
    <category>Weather</category>
    <episode-num system="xmltv_ns">2.9.0/1</episode-num>
    <episode-num system="onscreen">S03E10</episode-num>
    <icon src="http://i/p.jpg" />
    <rating system="FSK"><value>12</value></rating>
  </programme>
  <programme start="garbage" channel="one.de"><title>Bad time</title></programme>
  <programme start="20261122160000 +0000" channel="one.de"></programme>
  <programme start="20261122170000" channel="one.de"><title><![CDATA[Film <1>]]></title></programme>
</tv>
"#;

    #[test]
    fn sample_guide() {
        let g = parse_xmltv(SAMPLE.as_bytes());
        assert_eq!(g.channels.len(), 1);
        let c = &g.channels[0];
        assert_eq!(c.id, "one.de");
        assert_eq!(c.display_names, vec!["Eins", "One"]);
        assert_eq!(c.icon.as_deref(), Some("http://l/1.png"));
        assert_eq!(g.programmes.len(), 2);
        let p = &g.programmes[0];
        assert_eq!(p.title, "Nachrichten & Wetter");
        assert_eq!(p.start, parse_xmltv_time("20261122133000 +0000").unwrap());
        assert_eq!(p.stop.unwrap() - p.start, 45 * 60);
        assert_eq!(p.sub_title.as_deref(), Some("Am Mittag"));
        assert_eq!(p.desc.as_deref(), Some("Die Lage \u{2014} kurz."));
        assert_eq!(p.categories, vec!["News", "Weather"]);
        assert_eq!((p.season, p.episode), (Some(3), Some(10)));
        assert_eq!(p.episode_onscreen.as_deref(), Some("S03E10"));
        assert_eq!(p.icon.as_deref(), Some("http://i/p.jpg"));
        assert_eq!(p.age_rating(), Some(12));
        assert_eq!(p.line, 9);
        assert_eq!(g.programmes[1].title, "Film <1>");
        let w: Vec<(usize, bool)> = g
            .warnings
            .iter()
            .map(|w| {
                (
                    w.line,
                    w.message.contains("start") || w.message.contains("title"),
                )
            })
            .collect();
        assert_eq!(w, vec![(21, true), (22, true)]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_xmltv_time("19700101000000 +0000"), Some(0));
        assert_eq!(parse_xmltv_time("19700101010000 +0100"), Some(0));
        assert_eq!(parse_xmltv_time("197001010000"), Some(0));
        assert_eq!(
            parse_xmltv_time("20000229120000 -0130"),
            Some(951_825_600 + 5400)
        );
        assert_eq!(parse_xmltv_time("2026"), None);
        assert_eq!(parse_xmltv_time("20261322000000"), None);
        let t = 1_795_000_000;
        assert_eq!(parse_xmltv_time(&format_xmltv_time(t)), Some(t));
    }

    #[test]
    fn writer_round_trips() {
        let g = parse_xmltv(SAMPLE.as_bytes());
        let text = write_xmltv("Switchyard", &g.channels, &g.programmes);
        let again = parse_xmltv(text.as_bytes());
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        assert_eq!(again.channels.len(), 1);
        assert_eq!(again.channels[0].display_names, g.channels[0].display_names);
        for (a, b) in again.programmes.iter().zip(&g.programmes) {
            assert_eq!((&a.title, a.start, a.stop), (&b.title, b.start, b.stop));
            assert_eq!(
                (&a.desc, &a.categories, a.season, a.episode),
                (&b.desc, &b.categories, b.season, b.episode)
            );
            assert_eq!(a.rating, b.rating);
        }
    }

    #[test]
    fn broken_xml_keeps_what_came_before() {
        let doc = "<tv>\n<programme start=\"20260101000000\" channel=\"a\"><title>A</title></programme>\n<programme start=\"20260101010000\" channel=\"a\"><title>B</titel></programme></tv>";
        let g = parse_xmltv(doc.as_bytes());
        assert_eq!(g.programmes.len(), 1);
        assert_eq!(g.warnings.len(), 1);
        assert_eq!(g.warnings[0].line, 3);
    }
}
