//! The `[tv]` part of the configuration: inputs, guides and source timing,
//! and loading them into the yard.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::ProgramSelector;
use crate::{ChannelSpec, Input, Yard, input_source};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TvConfig {
    /// Serve the embedded demo channels.
    pub demo: bool,
    /// Seconds a source keeps running after its last reader left.
    pub grace_secs: f64,
    /// Queue bound of each reader, KiB.
    pub reader_queue_kib: usize,
    /// Channel inputs: TS files, HTTP(S), UDP/RTP, M3U playlists.
    pub inputs: Vec<InputConfig>,
    /// XMLTV guides (files or URLs), matched to channels by `epg_id` / `tvg-id`.
    pub xmltv: Vec<String>,
    /// How often guides are read again.
    pub epg_refresh_minutes: u64,
}

impl Default for TvConfig {
    fn default() -> Self {
        TvConfig {
            demo: true,
            grace_secs: 5.0,
            reader_queue_kib: 2048,
            inputs: Vec::new(),
            xmltv: Vec::new(),
            epg_refresh_minutes: 360,
        }
    }
}

impl TvConfig {
    pub fn source_policy(&self) -> crate::SourcePolicy {
        crate::SourcePolicy {
            grace: Duration::from_secs_f64(self.grace_secs.clamp(0.0, 3600.0)),
            ..crate::SourcePolicy::default()
        }
    }
}

/// Which programmes of an input become channels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(untagged)]
pub enum Programs {
    /// "first": the first programme only; "all": every programme a channel
    /// (names from the SDT).
    Named(ProgramsNamed),
    Number(u16),
    #[default]
    #[serde(skip)]
    Auto,
}

impl Programs {
    fn is_auto(&self) -> bool {
        *self == Programs::Auto
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProgramsNamed {
    First,
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// A path, file://, http(s)://, udp://host:port, rtp://host:port; a
    /// playlist when it ends in .m3u/.m3u8 or `playlist = true`.
    pub url: String,
    pub playlist: bool,
    pub name: Option<String>,
    pub number: Option<u32>,
    pub icon: Option<String>,
    pub tags: Vec<String>,
    pub epg_id: Option<String>,
    /// "first", "all" or a programme number. Default: all for files, first otherwise.
    /// (The default has no TOML spelling: `--print-config` leaves it out.)
    #[serde(skip_serializing_if = "Programs::is_auto")]
    pub programs: Programs,
}

impl InputConfig {
    fn is_playlist(&self) -> bool {
        let path = self
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        self.playlist || path.ends_with(".m3u") || path.ends_with(".m3u8")
    }
}

/// Read a file or URL whole (playlists and guides).
pub(crate) async fn fetch_text(location: &str) -> Result<Vec<u8>, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        let resp = reqwest::get(location).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    } else {
        let path = location.strip_prefix("file://").unwrap_or(location);
        tokio::fs::read(path).await.map_err(|e| e.to_string())
    }
}

/// Add every input of the configuration; returns one warning per problem.
pub(crate) async fn load(yard: &Yard, config: &TvConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.demo {
        yard.add_demo();
    }
    for (idx, ic) in config.inputs.iter().enumerate() {
        if ic.is_playlist() {
            match fetch_text(&ic.url).await {
                Err(e) => warnings.push(format!("playlist {}: {e}", ic.url)),
                Ok(text) => warnings.extend(load_playlist(yard, ic, &text)),
            }
            continue;
        }
        match Input::parse(&ic.url) {
            Err(e) => warnings.push(format!("inputs[{idx}]: {e}")),
            Ok(input) => {
                if let Err(e) = add_input(yard, ic, input).await {
                    warnings.push(e);
                }
            }
        }
    }
    crate::guide::start(yard, config, &mut warnings).await;
    warnings
}

fn load_playlist(yard: &Yard, ic: &InputConfig, text: &[u8]) -> Vec<String> {
    let parsed = media::m3u::parse_m3u(text);
    let mut warnings: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| format!("playlist {} line {}: {}", ic.url, w.line, w.message))
        .collect();
    for entry in parsed.entries {
        let input = match Input::parse(&entry.url) {
            Ok(i) => i,
            Err(e) => {
                warnings.push(format!("playlist {} line {}: {e}", ic.url, entry.line));
                continue;
            }
        };
        let mut tags: Vec<u32> = ic
            .tags
            .iter()
            .map(|t| yard.inner.catalog.tag_id(t))
            .collect();
        // Tvheadend reads `tvh-tags`, else `group-title`, several names
        // separated by `|` (`;` is accepted too).
        let groups = entry
            .attribute("tvh-tags")
            .or(entry.group_title.as_deref())
            .unwrap_or("");
        for g in groups
            .split(['|', ';'])
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let id = yard.inner.catalog.tag_id(g);
            if !tags.contains(&id) {
                tags.push(id);
            }
        }
        let (number, number_minor) = entry
            .attribute("tvh-chnum")
            .or(entry.tvg_chno.as_deref())
            .or(entry.attribute("channel-number"))
            .map_or((None, None), channel_number);
        let name = entry
            .tvg_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| Some(entry.name.clone()).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| entry.url.clone());
        yard.add_channel(
            input_source(input),
            ProgramSelector::First,
            ChannelSpec {
                name,
                number,
                number_minor,
                icon: entry
                    .tvg_logo
                    .clone()
                    .or_else(|| entry.attribute("logo").map(str::to_owned)),
                tags,
                epg_id: entry.tvg_id.clone(),
                uuid_seed: format!("m3u:{}", entry.url),
            },
        );
    }
    warnings
}

/// A channel number as playlists write it: `5` or `5.1` (major.minor).
fn channel_number(text: &str) -> (Option<u32>, Option<u32>) {
    let (major, minor) = match text.trim().split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (text.trim(), None),
    };
    match major.parse::<u32>() {
        Ok(n) => (Some(n), minor.and_then(|m| m.parse().ok())),
        Err(_) => (None, None),
    }
}

async fn add_input(yard: &Yard, ic: &InputConfig, input: Input) -> Result<(), String> {
    let tags: Vec<u32> = ic
        .tags
        .iter()
        .map(|t| yard.inner.catalog.tag_id(t))
        .collect();
    let spec = |name: String, number: Option<u32>, seed: String| ChannelSpec {
        name,
        number,
        number_minor: None,
        icon: ic.icon.clone(),
        tags: tags.clone(),
        epg_id: ic.epg_id.clone(),
        uuid_seed: seed,
    };
    let default_name = ic.name.clone().unwrap_or_else(|| input.describe());
    let programs = match (&ic.programs, input.is_looped_file()) {
        (Programs::Auto, true) | (Programs::Named(ProgramsNamed::All), _) => None,
        (Programs::Number(n), _) => Some(ProgramSelector::Number(*n)),
        _ => Some(ProgramSelector::First),
    };
    let source = input_source(input.clone());
    match programs {
        Some(sel) => {
            yard.add_channel(
                source,
                sel,
                spec(default_name, ic.number, format!("{}#{sel:?}", ic.url)),
            );
        }
        None => {
            let found = crate::pipeline::probe(&input)
                .await
                .map_err(|e| format!("input {}: {e}", ic.url))?;
            let single = found.len() == 1;
            for (i, p) in found.into_iter().enumerate() {
                let name = match (&ic.name, single, &p.service_name) {
                    (Some(n), true, _) => n.clone(),
                    (_, _, Some(s)) if !s.is_empty() => s.clone(),
                    (Some(n), false, _) => format!("{n} {}", p.program_number),
                    (None, _, _) => format!("{default_name} {}", p.program_number),
                };
                let number = ic.number.map(|n| n + i as u32);
                let id = yard.add_channel(
                    source.clone(),
                    ProgramSelector::Number(p.program_number),
                    spec(name, number, format!("{}#{}", ic.url, p.program_number)),
                );
                yard.note_probed(id, &p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_accepts_words_and_numbers() {
        #[derive(Deserialize)]
        struct W {
            programs: Programs,
        }
        let w: W = toml::from_str("programs = \"all\"").unwrap();
        assert_eq!(w.programs, Programs::Named(ProgramsNamed::All));
        let w: W = toml::from_str("programs = 7").unwrap();
        assert_eq!(w.programs, Programs::Number(7));
    }

    #[test]
    fn channel_numbers_with_a_minor_part() {
        assert_eq!(channel_number("5"), (Some(5), None));
        assert_eq!(channel_number(" 701.1 "), (Some(701), Some(1)));
        assert_eq!(channel_number("5.x"), (Some(5), None));
        assert_eq!(channel_number("five"), (None, None));
        assert_eq!(channel_number(""), (None, None));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<TvConfig>("demo = true\nfrobnicate = 1").unwrap_err();
        assert!(e.to_string().contains("frobnicate"), "{e}");
    }
}
