//! Guides: XMLTV files or URLs, matched to channels by their EPG id
//! (`tvg-id`), then by name, and read again on a schedule.

use std::collections::HashMap;
use std::time::Duration;

use crate::catalog::EpgEntry;
use crate::config::fetch_text;
use crate::{TvConfig, Yard};

/// Load every guide once (warnings are returned), then refresh in the background.
pub(crate) async fn start(yard: &Yard, config: &TvConfig, warnings: &mut Vec<String>) {
    if config.xmltv.is_empty() {
        return;
    }
    for location in &config.xmltv {
        warnings.extend(load_one(yard, location).await);
    }
    let yard = yard.clone();
    let locations = config.xmltv.clone();
    let every = Duration::from_secs(config.epg_refresh_minutes.max(1) * 60);
    tokio::spawn(async move {
        let shutdown = yard.shutdown_token().clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            for location in &locations {
                for w in load_one(&yard, location).await {
                    tracing::warn!("{w}");
                }
            }
        }
    });
}

/// Read one guide and replace the schedules of the channels it covers.
pub async fn load_one(yard: &Yard, location: &str) -> Vec<String> {
    match fetch_text(location).await {
        Err(e) => vec![format!("guide {location}: {e}")],
        Ok(text) => apply(yard, location, &text),
    }
}

/// Parse an XMLTV document and apply it to the yard's channels.
pub fn apply(yard: &Yard, location: &str, text: &[u8]) -> Vec<String> {
    let guide = media::xmltv::parse_xmltv(text);
    let mut warnings: Vec<String> = guide
        .warnings
        .iter()
        .map(|w| format!("guide {location} line {}: {}", w.line, w.message))
        .collect();
    // XMLTV channel id → our channel: by epg_id, else by display name.
    let channels = yard.channels();
    let mut target: HashMap<&str, u32> = HashMap::new();
    for xc in &guide.channels {
        let by_id = channels
            .iter()
            .find(|c| c.epg_id.as_deref() == Some(xc.id.as_str()));
        let by_name = || {
            channels.iter().find(|c| {
                xc.display_names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&c.name))
            })
        };
        if let Some(c) = by_id.or_else(by_name) {
            target.insert(xc.id.as_str(), c.id);
        }
    }
    for c in &channels {
        if let Some(id) = &c.epg_id {
            target.entry(id.as_str()).or_insert(c.id);
        }
    }
    let mut schedules: HashMap<u32, Vec<EpgEntry>> = HashMap::new();
    let mut unmatched = 0usize;
    for p in &guide.programmes {
        let Some(&channel_id) = target.get(p.channel.as_str()) else {
            unmatched += 1;
            continue;
        };
        let Some(stop) = p.stop.filter(|s| *s > p.start) else {
            warnings.push(format!(
                "guide {location} line {}: programme {:?} has no usable stop time, skipped",
                p.line, p.title
            ));
            continue;
        };
        schedules.entry(channel_id).or_default().push(EpgEntry {
            start: p.start,
            stop,
            title: p.title.clone(),
            subtitle: p.sub_title.clone(),
            description: p.desc.clone(),
            categories: p.categories.clone(),
            episode: p.episode_label(),
            season_number: p.season,
            episode_number: p.episode,
            image: p.icon.clone(),
            age_rating: p.age_rating(),
        });
    }
    if unmatched > 0 {
        tracing::debug!(
            location,
            unmatched,
            "guide programmes for channels we do not have"
        );
    }
    for (channel_id, entries) in schedules {
        yard.set_schedule(channel_id, entries);
    }
    warnings
}
