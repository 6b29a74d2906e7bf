//! Channels as front ends see them: what a probed input tells about its
//! programme (radio or TV) before anybody watches, and channels removed at
//! run time.

use std::time::Duration;

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use yard::{ReaderOptions, SourcePolicy, TvConfig, Yard, YardEvent};

fn fixture(name: &str) -> String {
    format!("{}/../../demo/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn yard_with(files: &[&str]) -> (Yard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = SourcePolicy {
        grace: Duration::from_millis(200),
        ..SourcePolicy::default()
    };
    let yard = Yard::new(dir.path(), policy, CancellationToken::new()).unwrap();
    let config = TvConfig {
        demo: false,
        inputs: files
            .iter()
            .map(|f| yard::InputConfig {
                url: fixture(f),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let warnings = yard.load(&config).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    (yard, dir)
}

#[tokio::test]
async fn a_probed_audio_only_input_is_a_radio_channel_before_anyone_watches() {
    let (yard, _dir) = yard_with(&["radio.ts", "channel-1.ts"]).await;
    let chans = yard.channels();
    let radio = chans.iter().find(|c| c.name == "Switchyard Radio").unwrap();
    let tv = chans.iter().find(|c| c.name == "Switchyard One").unwrap();
    assert!(radio.has_audio && !radio.has_video, "{radio:?}");
    assert!(radio.is_radio());
    assert!(tv.has_video && tv.has_audio, "{tv:?}");
    assert!(!tv.is_radio());
    // The probed programme is what `program` reports, without a reader.
    let p = yard.program(radio.id).expect("probed programme");
    assert_eq!(p.tracks.len(), 1);
    assert!(p.tracks[0].codec.is_audio());
    let p = yard.program(tv.id).expect("probed programme");
    assert!(p.tracks.iter().any(|t| t.codec.is_video()));
}

#[tokio::test]
async fn the_first_programme_of_an_unprobed_channel_updates_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let yard = Yard::demo_for_tests(dir.path());
    assert!(
        !yard.channel(1).unwrap().has_video,
        "unknown before playing"
    );
    assert!(yard.program(1).is_none());
    let mut feed = yard.events();
    let mut reader = yard.subscribe(1, ReaderOptions::frames("test")).unwrap();
    timeout(Duration::from_secs(10), async {
        loop {
            if let YardEvent::ChannelUpdated(1) = feed.recv().await.unwrap() {
                let c = yard.channel(1).unwrap();
                if c.has_video && c.has_audio {
                    break;
                }
            }
        }
    })
    .await
    .expect("ChannelUpdated with the programme's streams");
    assert!(reader.recv().await.is_some());
}

#[tokio::test]
async fn removing_a_channel_ends_its_readers_and_tells_front_ends() {
    let dir = tempfile::tempdir().unwrap();
    let yard = Yard::demo_for_tests(dir.path());
    let events: Vec<u32> = yard
        .epg_events(2, 0, i64::MAX)
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(!events.is_empty());
    let mut feed = yard.events();
    let mut reader = yard.subscribe(2, ReaderOptions::ts("test")).unwrap();
    assert!(yard.remove_channel(2));
    // The reader drains what it had, then ends.
    timeout(Duration::from_secs(5), async {
        while reader.recv().await.is_some() {}
    })
    .await
    .expect("reader ends");
    assert!(yard.channel(2).is_none());
    assert_eq!(yard.channels().len(), 1);
    assert!(yard.epg_events(2, 0, i64::MAX).is_empty());
    assert!(yard.epg_event(events[0]).is_none());
    assert!(yard.program(2).is_none());
    assert!(matches!(
        yard.subscribe(2, ReaderOptions::ts("late")),
        Err(yard::YardError::NoSuchChannel(2))
    ));
    let mut seen = Vec::new();
    while let Ok(ev) = feed.try_recv() {
        seen.push(ev);
    }
    assert!(seen.contains(&YardEvent::ChannelRemoved(2)), "{seen:?}");
    for id in &events {
        assert!(seen.contains(&YardEvent::EpgEventRemoved(*id)), "{id}");
    }
    assert!(!yard.remove_channel(2), "a second removal finds nothing");
    // The other channel still plays.
    let mut one = yard.subscribe(1, ReaderOptions::ts("test")).unwrap();
    assert!(
        timeout(Duration::from_secs(10), one.recv())
            .await
            .unwrap()
            .is_some()
    );
}
