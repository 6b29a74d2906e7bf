//! Over loopback: channels from an M3U playlist with an XMLTV guide as
//! Tvheadend's IPTV automatic network makes them (checklist 49), and a
//! channel removed at run time reaching async clients (checklist 23).

mod htsp_client;

use std::time::Duration;

use htsp::wire::Msg;
use htsp_client::*;
use tokio_util::sync::CancellationToken;
use yard::{InputConfig, SourcePolicy, TvConfig, Yard};

const T: Duration = Duration::from_secs(10);

async fn synced(addr: std::net::SocketAddr) -> (Client, Vec<Msg>) {
    let mut c = Client::connect(addr).await;
    c.hello(38).await;
    let r = c.request(m("enableAsyncMetadata").with("epg", 1i64)).await;
    assert!(!r.contains("error"), "{r:?}");
    c.wait_for(T, |m| method_of(m) == "initialSyncCompleted")
        .await
        .expect("initial sync");
    let dump: Vec<Msg> = c.pending.drain(..).collect();
    (c, dump)
}

// 49
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3u_numbers_logos_groups_and_xmltv_events() {
    let dir = tempfile::tempdir().unwrap();
    let demo = format!("{}/../../demo/channel-1.ts", env!("CARGO_MANIFEST_DIR"));
    let m3u = dir.path().join("list.m3u");
    std::fs::write(
        &m3u,
        format!(
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"five.example\" tvg-logo=\"http://logos.example/five.png\" \
             tvg-chno=\"5.1\" group-title=\"A|B\",Channel Five\n\
             {demo}\n"
        ),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let start = now - now.rem_euclid(1800);
    let t = media::xmltv::format_xmltv_time;
    let xml = dir.path().join("guide.xml");
    std::fs::write(
        &xml,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n\
             <channel id=\"five.example\"><display-name>Channel Five</display-name></channel>\n\
             <programme start=\"{}\" stop=\"{}\" channel=\"five.example\"><title>Five at Five</title></programme>\n\
             <programme start=\"{}\" stop=\"{}\" channel=\"five.example\"><title>Later on Five</title></programme>\n\
             </tv>\n",
            t(start),
            t(start + 1800),
            t(start + 1800),
            t(start + 3600),
        ),
    )
    .unwrap();
    let yard = Yard::new(
        dir.path().join("yard"),
        SourcePolicy::default(),
        CancellationToken::new(),
    )
    .unwrap();
    let warnings = yard
        .load(&TvConfig {
            demo: false,
            inputs: vec![InputConfig {
                url: m3u.display().to_string(),
                ..Default::default()
            }],
            xmltv: vec![xml.display().to_string()],
            ..Default::default()
        })
        .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let s = start_with(yard, dir.path(), open_access()).await;
    let (_c, dump) = synced(s.addr).await;

    let chans: Vec<&Msg> = dump
        .iter()
        .filter(|m| method_of(m) == "channelAdd")
        .collect();
    assert_eq!(chans.len(), 1, "{dump:?}");
    let ch = chans[0];
    assert_eq!(ch.get_str("channelName").as_deref(), Some("Channel Five"));
    assert_eq!(ch.get_s64("channelNumber"), Some(5));
    assert_eq!(ch.get_s64("channelNumberMinor"), Some(1));
    assert_eq!(
        ch.get_str("channelIcon").as_deref(),
        Some("http://logos.example/five.png"),
        "a remote logo is passed unchanged"
    );
    let id = ch.get_s64("channelId").unwrap();

    // Tags A and B, with the channel as a member.
    let tag_names: Vec<(i64, String)> = dump
        .iter()
        .filter(|m| method_of(m) == "tagAdd")
        .map(|t| (t.get_s64("tagId").unwrap(), t.get_str("tagName").unwrap()))
        .collect();
    let mut names: Vec<&str> = tag_names.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["A", "B"]);
    let mut member_of: Vec<i64> = ch
        .get_list("tags")
        .unwrap()
        .iter()
        .filter_map(|v| v.as_s64())
        .collect();
    member_of.sort();
    let mut want: Vec<i64> = tag_names.iter().map(|(i, _)| *i).collect();
    want.sort();
    assert_eq!(member_of, want);
    for upd in dump.iter().filter(|m| method_of(m) == "tagUpdate") {
        let members: Vec<i64> = upd
            .get_list("members")
            .unwrap()
            .iter()
            .filter_map(|v| v.as_s64())
            .collect();
        assert_eq!(members, [id]);
    }

    // The XMLTV programmes of its tvg-id are its events.
    let titles: Vec<String> = dump
        .iter()
        .filter(|m| method_of(m) == "eventAdd" && m.get_s64("channelId") == Some(id))
        .map(|e| e.get_str("title").unwrap())
        .collect();
    assert_eq!(titles, ["Five at Five", "Later on Five"]);
    let now_event = ch.get_s64("eventId").unwrap();
    assert!(
        now_event > 0,
        "the current programme is the channel's event"
    );
}

// 23: a removed channel is deleted on every async connection, with its
// events; a subscription of it gets `subscriptionStop` (§8.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_channel_sends_channel_delete_and_event_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let (mut a, _) = synced(s.addr).await;
    let (mut b, _) = synced(s.addr).await;
    let events: Vec<i64> = s
        .yard
        .epg_events(2, 0, i64::MAX)
        .iter()
        .map(|e| i64::from(e.id))
        .collect();
    // A subscription of the channel is stopped, its connection stays.
    let r = b
        .request(
            m("subscribe")
                .with("subscriptionId", 4i64)
                .with("channelId", 2i64),
        )
        .await;
    assert!(!r.contains("error"), "{r:?}");
    b.wait_for(T, |m| method_of(m) == "muxpkt")
        .await
        .expect("packets before the removal");
    assert!(s.yard.remove_channel(2));
    let stop = b
        .wait_for(T, |m| method_of(m) == "subscriptionStop")
        .await
        .expect("subscriptionStop");
    assert_eq!(stop.get_s64("subscriptionId"), Some(4));
    assert_eq!(stop.get_str("status").as_deref(), Some("Source deleted"));
    for c in [&mut a, &mut b] {
        let del = c
            .wait_for(T, |m| method_of(m) == "channelDelete")
            .await
            .expect("channelDelete");
        assert_eq!(del.get_s64("channelId"), Some(2));
        assert!(!del.contains("seq") && !del.contains("subscriptionId"));
        let first = c
            .wait_for(T, |m| {
                method_of(m) == "eventDelete" && m.get_s64("eventId") == Some(events[0])
            })
            .await;
        assert!(first.is_some(), "its events are deleted too");
    }
    let r = a.request(m("getChannel").with("channelId", 2i64)).await;
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Channel does not exist")
    );
    let r = a
        .request(
            m("subscribe")
                .with("subscriptionId", 1i64)
                .with("channelId", 2i64),
        )
        .await;
    assert!(r.contains("error"), "{r:?}");
    let r = b
        .request(m("unsubscribe").with("subscriptionId", 4i64))
        .await;
    assert!(
        !r.contains("error"),
        "the connection is still served: {r:?}"
    );
}
