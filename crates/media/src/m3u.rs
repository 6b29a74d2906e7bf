//! Extended M3U playlists, as IPTV providers publish them and as our
//! `/playlist` serves them:
//!
//! ```text
//! #EXTM3U url-tvg="http://example/epg.xml"
//! #EXTINF:-1 tvg-id="one.de" tvg-name="One" tvg-logo="http://l/1.png" tvg-chno="1" group-title="News",One HD
//! http://example/stream/1.ts
//! ```
//!
//! The parser is lenient the way players are: BOM, CRLF, blank lines,
//! unquoted attribute values, `#EXTGRP` and `#EXTVLCOPT` lines are
//! accepted; an entry it cannot make sense of is skipped and reported as a
//! [`Warning`] naming its line, never logged (the caller decides).

use std::fmt::Write as _;

/// A problem found at a 1-based line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// One playlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct M3uEntry {
    /// The display name after the comma of `#EXTINF`.
    pub name: String,
    pub url: String,
    /// The `#EXTINF` duration (-1 for live streams).
    pub duration: i64,
    pub tvg_id: Option<String>,
    pub tvg_name: Option<String>,
    pub tvg_logo: Option<String>,
    pub tvg_chno: Option<String>,
    pub group_title: Option<String>,
    /// Every attribute of the `#EXTINF` line in order, including those
    /// above (keys lower-cased).
    pub attributes: Vec<(String, String)>,
    /// `#EXTVLCOPT:` options that applied to this entry.
    pub vlc_options: Vec<String>,
    /// 1-based line of the URL.
    pub line: usize,
}

impl M3uEntry {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Playlist {
    /// Attributes of the `#EXTM3U` header (`url-tvg`, `x-tvg-url`, ...).
    pub header_attributes: Vec<(String, String)>,
    pub entries: Vec<M3uEntry>,
    pub warnings: Vec<Warning>,
}

impl Playlist {
    /// The guide URL the header names, if any.
    pub fn epg_url(&self) -> Option<&str> {
        self.header_attributes
            .iter()
            .find(|(k, _)| k == "url-tvg" || k == "x-tvg-url")
            .map(|(_, v)| v.as_str())
    }
}

/// Longest line considered; longer ones are skipped with a warning.
const MAX_LINE: usize = 64 * 1024;

struct PendingInfo {
    line: usize,
    duration: i64,
    attributes: Vec<(String, String)>,
    name: String,
}

/// Parse a playlist. Invalid UTF-8 is replaced, not rejected.
pub fn parse_m3u(input: &[u8]) -> Playlist {
    let text = String::from_utf8_lossy(input);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut pl = Playlist::default();
    let mut pending: Option<PendingInfo> = None;
    let mut group: Option<String> = None;
    let mut vlc: Vec<String> = Vec::new();
    let mut seen_header = false;
    let mut skip_url = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            warn(&mut pl, line_no, "line too long, skipped");
            continue;
        }
        if let Some(rest) = strip_prefix_ci(line, "#EXTM3U") {
            if seen_header || !pl.entries.is_empty() {
                warn(&mut pl, line_no, "repeated #EXTM3U header ignored");
                continue;
            }
            seen_header = true;
            match parse_attributes(rest) {
                Ok(a) => pl.header_attributes = a,
                Err(e) => warn(&mut pl, line_no, &format!("#EXTM3U attributes: {e}")),
            }
            continue;
        }
        if let Some(rest) = strip_prefix_ci(line, "#EXTINF:") {
            if let Some(p) = pending.take() {
                warn(&mut pl, p.line, "#EXTINF without a URL after it, skipped");
            }
            group = None;
            vlc.clear();
            skip_url = false;
            match parse_extinf(rest) {
                Ok(p) => pending = Some(PendingInfo { line: line_no, ..p }),
                Err(e) => {
                    warn(
                        &mut pl,
                        line_no,
                        &format!("malformed #EXTINF ({e}), entry skipped"),
                    );
                    skip_url = true;
                }
            }
            continue;
        }
        if let Some(rest) = strip_prefix_ci(line, "#EXTGRP:") {
            group = Some(rest.trim().to_string());
            continue;
        }
        if let Some(rest) = strip_prefix_ci(line, "#EXTVLCOPT:") {
            vlc.push(rest.trim().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // A URL line.
        if line.chars().any(char::is_whitespace) && !line.contains("://") {
            warn(&mut pl, line_no, "not a URL, skipped");
            pending = None;
            continue;
        }
        let mut entry = M3uEntry {
            url: line.to_string(),
            duration: -1,
            line: line_no,
            ..Default::default()
        };
        if let Some(p) = pending.take() {
            entry.duration = p.duration;
            entry.name = p.name;
            entry.attributes = p.attributes;
        } else if std::mem::take(&mut skip_url) {
            // The URL of an entry whose #EXTINF was rejected.
            continue;
        }
        for (k, v) in &entry.attributes {
            let slot = match k.as_str() {
                "tvg-id" => &mut entry.tvg_id,
                "tvg-name" => &mut entry.tvg_name,
                "tvg-logo" => &mut entry.tvg_logo,
                "tvg-chno" | "channel-number" => &mut entry.tvg_chno,
                "group-title" => &mut entry.group_title,
                _ => continue,
            };
            if slot.is_none() && !v.is_empty() {
                *slot = Some(v.clone());
            }
        }
        if entry.group_title.is_none() {
            entry.group_title = group.take();
        }
        entry.vlc_options = std::mem::take(&mut vlc);
        if entry.name.is_empty() {
            entry.name = entry
                .tvg_name
                .clone()
                .unwrap_or_else(|| name_from_url(&entry.url));
        }
        pl.entries.push(entry);
    }
    if let Some(p) = pending {
        warn(&mut pl, p.line, "#EXTINF without a URL after it, skipped");
    }
    pl
}

fn warn(pl: &mut Playlist, line: usize, message: &str) {
    pl.warnings.push(Warning {
        line,
        message: message.to_string(),
    });
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn name_from_url(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(url)
        .to_string()
}

/// `-1 key="v" key2=v2,Display Name`
fn parse_extinf(s: &str) -> Result<PendingInfo, String> {
    let s = s.trim_start();
    let dur_end = s
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(s.len());
    let (dur, rest) = s.split_at(dur_end);
    let duration = if dur.is_empty() {
        -1
    } else {
        dur.parse::<f64>()
            .map_err(|_| format!("duration {dur:?} is not a number"))? as i64
    };
    let comma = find_unquoted_comma(rest).ok_or_else(|| {
        if rest.matches('"').count() % 2 == 1 {
            "unterminated quote".to_string()
        } else {
            "no comma before the display name".to_string()
        }
    })?;
    let (attrs, name) = rest.split_at(comma);
    let attributes = parse_attributes(attrs)?;
    let name = name.get(1..).unwrap_or("").trim().to_string();
    Ok(PendingInfo {
        line: 0,
        duration,
        attributes,
        name,
    })
}

fn find_unquoted_comma(s: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_attributes(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!("attribute {rest:?} without a value"));
        };
        let key = rest.get(..eq).unwrap_or("").trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {key:?}"));
        }
        let after = rest.get(eq + 1..).unwrap_or("");
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or("unterminated quote")?;
            (q.get(..end).unwrap_or(""), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (
                after.get(..end).unwrap_or(""),
                after.get(end..).unwrap_or(""),
            )
        };
        out.push((key.to_ascii_lowercase(), value.to_string()));
        rest = remaining.trim_start();
    }
    Ok(out)
}

/// Write an extended M3U playlist. Attribute values lose characters that
/// would break the line syntax (quotes, line breaks); names lose line
/// breaks.
pub fn write_m3u(header_attributes: &[(String, String)], entries: &[M3uEntry]) -> String {
    let mut s = String::from("#EXTM3U");
    for (k, v) in header_attributes {
        let k = clean_key(k);
        if !k.is_empty() {
            let _ = write!(s, " {}=\"{}\"", k, clean_value(v));
        }
    }
    s.push('\n');
    for e in entries {
        let _ = write!(s, "#EXTINF:{}", e.duration);
        let mut attrs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("tvg-id", &e.tvg_id),
            ("tvg-name", &e.tvg_name),
            ("tvg-logo", &e.tvg_logo),
            ("tvg-chno", &e.tvg_chno),
            ("group-title", &e.group_title),
        ] {
            if let Some(v) = v {
                attrs.push((k, v));
            }
        }
        for (k, v) in &e.attributes {
            if !attrs.iter().any(|(a, _)| a.eq_ignore_ascii_case(k)) {
                attrs.push((k, v));
            }
        }
        for (k, v) in attrs {
            let k = clean_key(k);
            if !k.is_empty() {
                let _ = write!(s, " {}=\"{}\"", k, clean_value(v));
            }
        }
        let _ = writeln!(s, ",{}", e.name.replace(['\r', '\n'], " "));
        for o in &e.vlc_options {
            let _ = writeln!(s, "#EXTVLCOPT:{}", o.replace(['\r', '\n'], " "));
        }
        let _ = writeln!(s, "{}", e.url.replace(['\r', '\n'], ""));
    }
    s
}

fn clean_key(k: &str) -> String {
    k.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '=' | ','))
        .collect()
}

fn clean_value(v: &str) -> String {
    v.chars()
        .filter(|c| !matches!(c, '"' | '\r' | '\n'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_playlist() {
        let input = "\u{feff}#EXTM3U url-tvg=\"http://e/epg.xml\"\r\n\
            #EXTINF:-1 tvg-id=\"one.de\" tvg-name=\"One HD\" tvg-logo=\"http://l/1.png\" tvg-chno=\"1\" group-title=\"News, Info\",One HD\r\n\
            http://example/1.ts\r\n\
            \r\n\
            #EXTINF:0,Two\n\
            #EXTGRP:Sport\n\
            #EXTVLCOPT:http-user-agent=Foo\n\
            udp://@239.0.0.1:1234\n";
        let pl = parse_m3u(input.as_bytes());
        assert_eq!(pl.warnings, vec![]);
        assert_eq!(pl.epg_url(), Some("http://e/epg.xml"));
        assert_eq!(pl.entries.len(), 2);
        let a = &pl.entries[0];
        assert_eq!(a.name, "One HD");
        assert_eq!(a.url, "http://example/1.ts");
        assert_eq!(a.tvg_id.as_deref(), Some("one.de"));
        assert_eq!(a.tvg_logo.as_deref(), Some("http://l/1.png"));
        assert_eq!(a.tvg_chno.as_deref(), Some("1"));
        assert_eq!(a.group_title.as_deref(), Some("News, Info"));
        assert_eq!(a.line, 3);
        let b = &pl.entries[1];
        assert_eq!((b.name.as_str(), b.duration), ("Two", 0));
        assert_eq!(b.group_title.as_deref(), Some("Sport"));
        assert_eq!(b.vlc_options, vec!["http-user-agent=Foo".to_string()]);
    }

    #[test]
    fn malformed_entries_are_skipped_with_line_numbers() {
        let input = "#EXTM3U\n\
            #EXTINF:-1 tvg-id=\"broken,Bad\n\
            http://bad/1\n\
            #EXTINF:abc,Worse\n\
            http://bad/2\n\
            #EXTINF:-1 tvg-id=\"ok\",Good\n\
            http://good/3\n\
            #EXTINF:-1,Orphan\n\
            #EXTINF:-1,Last\n";
        let pl = parse_m3u(input.as_bytes());
        let lines: Vec<usize> = pl.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![2, 4, 8, 9]);
        assert!(pl.warnings[0].message.contains("unterminated quote"));
        let names: Vec<&str> = pl.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["Good"]);
        // A plain playlist names entries from their URLs.
        let plain = parse_m3u(
            b"http://h/a/one.ts
http://h/b/two.ts
",
        );
        assert_eq!(plain.entries[1].name, "two.ts");
        assert!(plain.warnings.is_empty());
    }

    #[test]
    fn writer_round_trips() {
        let entries = vec![M3uEntry {
            name: "One \"HD\"".into(),
            url: "http://h/stream/channelid/1".into(),
            duration: -1,
            tvg_id: Some("1".into()),
            tvg_name: Some("One".into()),
            tvg_logo: Some("http://h/logo/1".into()),
            tvg_chno: Some("1".into()),
            group_title: Some("TV; Radio".into()),
            ..Default::default()
        }];
        let text = write_m3u(&[("url-tvg".into(), "http://h/xmltv".into())], &entries);
        let pl = parse_m3u(text.as_bytes());
        assert!(pl.warnings.is_empty());
        let e = &pl.entries[0];
        assert_eq!(e.name, "One \"HD\"");
        assert_eq!(e.url, entries[0].url);
        assert_eq!(e.tvg_logo, entries[0].tvg_logo);
        assert_eq!(e.group_title, entries[0].group_title);
        assert_eq!(pl.epg_url(), Some("http://h/xmltv"));
    }
}
