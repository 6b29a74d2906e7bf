//! The embedded demo: two looped channels and a guide that covers "now", so
//! that `switchyard` with no configuration has something to watch.

use bytes::Bytes;

use crate::catalog::EpgEntry;

pub struct DemoChannel {
    pub name: &'static str,
    pub number: u32,
    pub epg_id: &'static str,
    pub tags: &'static [&'static str],
    pub ts: &'static [u8],
}

pub const CHANNELS: &[DemoChannel] = &[
    DemoChannel {
        name: "Switchyard One",
        number: 1,
        epg_id: "one.switchyard",
        tags: &["Demo", "Test patterns"],
        ts: include_bytes!("../../../demo/channel-1.ts"),
    },
    DemoChannel {
        name: "Switchyard Two",
        number: 2,
        epg_id: "two.switchyard",
        tags: &["Demo"],
        ts: include_bytes!("../../../demo/channel-2.ts"),
    },
];

/// The demo movie, served by the movie protocol.
pub const MOVIE_NAME: &str = "switchyard-demo-movie.mp4";
pub const MOVIE: &[u8] = include_bytes!("../../../demo/demo-movie.mp4");

pub fn movie() -> Bytes {
    Bytes::from_static(MOVIE)
}

const SHOWS: &[(&str, &str, &str)] = &[
    (
        "Morning Bars",
        "Colour bars, carefully aligned.",
        "Documentary",
    ),
    (
        "The Test Card Hour",
        "A classic of the genre.",
        "Entertainment",
    ),
    (
        "Tone at 440 Hz",
        "An A, held for a whole half hour.",
        "Music",
    ),
    (
        "Switchyard News",
        "What happened on the yard today.",
        "News",
    ),
    (
        "Loops and Loops",
        "Eight seconds, again and again.",
        "Series",
    ),
    ("Late Night Noise", "For the insomniac viewer.", "Movie"),
];

/// Half-hour programmes from six hours ago to a day ahead, aligned to the
/// half hour, so "now" and "next" always exist. `offset` varies the order per channel.
pub fn schedule(now: i64, offset: usize) -> Vec<EpgEntry> {
    const SLOT: i64 = 1800;
    let first = now - now.rem_euclid(SLOT) - 6 * 3600;
    (0..60)
        .map(|i| {
            let start = first + i * SLOT;
            let idx = (i as usize + offset) % SHOWS.len();
            let (title, desc, genre) = SHOWS[idx];
            EpgEntry {
                start,
                stop: start + SLOT,
                title: title.to_string(),
                description: Some(desc.to_string()),
                categories: vec![genre.to_string()],
                episode: Some(format!("E{}", i + 1)),
                episode_number: Some(i as u32 + 1),
                season_number: Some(1),
                ..EpgEntry::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_covers_now() {
        let now = 1_795_000_123;
        let s = schedule(now, 0);
        assert!(s.iter().any(|e| e.start <= now && now < e.stop));
        assert!(s.windows(2).all(|w| w[0].stop == w[1].start));
    }
}
