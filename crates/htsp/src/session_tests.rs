//! Session-level behaviour with a fake yard: requests in, frames out.

use super::*;
use crate::wire::{decode_body, encode_body};
use parking_lot::Mutex;

const NOW: i64 = 1_700_000_000;

struct Fake {
    channels: Mutex<Vec<Arc<ChannelInfo>>>,
    tags: Vec<Arc<Tag>>,
    events: Vec<Arc<EpgEvent>>,
}

fn chan(id: u32, name: &str, tags: Vec<u32>, icon: Option<&str>) -> Arc<ChannelInfo> {
    Arc::new(ChannelInfo {
        id,
        number: id,
        number_minor: None,
        name: name.into(),
        icon: icon.map(Into::into),
        tags,
        epg_id: None,
        service_name: None,
        provider_name: None,
        program_number: 0,
        uuid: format!("{:032x}", id),
        has_video: true,
        has_audio: true,
    })
}

fn ev(id: u32, ch: u32, start: i64, title: &str) -> Arc<EpgEvent> {
    Arc::new(EpgEvent {
        id,
        channel_id: ch,
        start,
        stop: start + 1800,
        title: title.into(),
        description: Some(format!("About {title}")),
        ..EpgEvent::default()
    })
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            channels: Mutex::new(vec![
                chan(1, "One", vec![1], Some("imagecache/7")),
                chan(2, "Two", vec![1, 2], Some("http://logo/x.png")),
            ]),
            tags: vec![
                Arc::new(Tag {
                    id: 1,
                    name: "Demo".into(),
                    icon: None,
                }),
                Arc::new(Tag {
                    id: 2,
                    name: "News".into(),
                    icon: None,
                }),
            ],
            events: vec![
                ev(10, 1, NOW - 600, "Morning News"),
                ev(11, 1, NOW + 1200, "Film"),
                ev(12, 1, NOW + 3000, "Late news"),
                ev(13, 1, NOW + 7200 * 3, "Far future"),
                ev(20, 2, NOW - 100, "Sports"),
            ],
        })
    }
}

impl Backend for Fake {
    fn verify(&self, username: &str, proof: &dyn Fn(&str) -> bool) -> Option<Rights> {
        match username {
            "kodi" if proof("secret") => Some(Rights {
                streaming: true,
                dvr: true,
                username: Some("kodi".into()),
                ..Rights::default()
            }),
            "news" if proof("pw") => Some(Rights {
                streaming: true,
                channel_tags: vec!["News".into()],
                username: Some("news".into()),
                ..Rights::default()
            }),
            _ => None,
        }
    }
    fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        self.channels.lock().clone()
    }
    fn channel(&self, id: u32) -> Option<Arc<ChannelInfo>> {
        self.channels.lock().iter().find(|c| c.id == id).cloned()
    }
    fn tags(&self) -> Vec<Arc<Tag>> {
        self.tags.clone()
    }
    fn tag(&self, id: u32) -> Option<Arc<Tag>> {
        self.tags.iter().find(|t| t.id == id).cloned()
    }
    fn events(&self, channel_id: u32, from: i64, to: i64) -> Vec<Arc<EpgEvent>> {
        self.events
            .iter()
            .filter(|e| e.channel_id == channel_id && e.stop > from && e.start < to)
            .cloned()
            .collect()
    }
    fn event(&self, id: u32) -> Option<Arc<EpgEvent>> {
        self.events.iter().find(|e| e.id == id).cloned()
    }
    fn search(&self, title: &str) -> Vec<Arc<EpgEvent>> {
        let t = title.to_lowercase();
        self.events
            .iter()
            .filter(|e| e.title.to_lowercase().contains(&t))
            .cloned()
            .collect()
    }
    fn utc_offset_minutes(&self, _now: i64) -> i32 {
        120
    }
    fn disk_space(&self) -> Option<DiskSpace> {
        Some(DiskSpace {
            free: 10,
            used: 5,
            total: 15,
        })
    }
    fn create_ticket(&self, _path: &str, _rights: &Rights) -> String {
        "ab".repeat(20)
    }
}

fn challenge() -> [u8; 32] {
    let mut c = [0u8; 32];
    for (i, b) in c.iter_mut().enumerate() {
        *b = i as u8;
    }
    c
}

fn session_with(rights: Rights) -> Session {
    Session::new(Fake::new(), challenge(), rights)
}

fn open() -> Session {
    session_with(Rights {
        streaming: true,
        dvr: true,
        ..Rights::default()
    })
}

fn closed() -> Session {
    session_with(Rights::default())
}

/// Every frame goes through the real codec, and must only use types 1–5.
fn sent(out: &[Output]) -> Vec<Msg> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m)
            | Output::SendActivating { msg: m, .. }
            | Output::SendSub { msg: m, .. } => Some(m),
            _ => None,
        })
        .map(|m| {
            let body = encode_body(m);
            assert_only_basic_types(&body);
            decode_body(&body).unwrap()
        })
        .collect()
}

fn assert_only_basic_types(mut b: &[u8]) {
    while b.len() > 5 {
        let ty = b[0];
        assert!((1..=5).contains(&ty), "field type {ty} emitted");
        let nl = b[1] as usize;
        let dl = u32::from_be_bytes([b[2], b[3], b[4], b[5]]) as usize;
        if ty == 1 || ty == 5 {
            assert_only_basic_types(&b[6 + nl..6 + nl + dl]);
        }
        b = &b[6 + nl + dl..];
    }
}

fn one(s: &mut Session, req: Msg) -> Msg {
    let out = s.handle(NOW, &req);
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1, "{out:?}");
    msgs.into_iter().next().unwrap()
}

fn m(method: &str) -> Msg {
    Msg::new().with("method", method)
}

#[test]
fn seq_is_echoed_as_number_and_replies_have_no_method() {
    let mut s = open();
    let r = one(&mut s, m("getSysTime").with("seq", "9"));
    assert_eq!(r.get("seq"), Some(&Value::S64(9)));
    assert!(!r.contains("method"));
    let r = one(&mut s, m("getSysTime"));
    assert!(!r.contains("seq"));
    assert_eq!(r.get_s64("time"), Some(NOW));
    assert_eq!(r.get_s64("gmtoffset"), Some(120));
    assert_eq!(r.get_s64("timezone"), Some(-2));
}

#[test]
fn missing_and_unknown_methods() {
    let mut s = open();
    let r = one(&mut s, Msg::new().with("seq", 1i64));
    assert!(r.get_str("error").unwrap().starts_with("Invalid arguments"));
    assert_eq!(r.get_s64("seq"), Some(1));
    let r = one(&mut s, m("nope").with("seq", 2i64));
    assert_eq!(r.get_str("error").as_deref(), Some("Method not found"));
    let r = one(&mut s, m("login").with("seq", 3i64));
    assert_eq!(r.get_str("error").as_deref(), Some("Method not found"));
}

#[test]
fn hello_negotiates_and_keeps_its_challenge() {
    let mut s = open();
    let r = one(&mut s, m("hello").with("htspversion", 38i64));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Invalid arguments: missing clientname")
    );
    let r = one(&mut s, m("hello").with("clientname", "x"));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Invalid arguments: missing htspversion")
    );
    let r = one(
        &mut s,
        m("hello")
            .with("htspversion", 38i64)
            .with("clientname", "Kodi"),
    );
    assert_eq!(r.get_s64("htspversion"), Some(44));
    assert!(r.get_str("servername").is_some() && r.get_str("serverversion").is_some());
    assert_eq!(r.get_bin("challenge").unwrap().len(), 32);
    assert!(
        r.get_list("servercapability").unwrap().is_empty(),
        "no timeshift capability"
    );
    assert_eq!(s.version(), 38);
    let r2 = one(
        &mut s,
        m("hello")
            .with("htspversion", 50i64)
            .with("clientname", "Kodi"),
    );
    assert_eq!(r.get_bin("challenge"), r2.get_bin("challenge"));
    assert_eq!(s.version(), 44);
}

#[test]
fn hello_reply_matches_example_c() {
    let mut s = open();
    let mut r = one(
        &mut s,
        m("hello")
            .with("htspversion", 44i64)
            .with("clientname", "x")
            .with("seq", 1i64),
    );
    r.set("serverversion", "0.1.0");
    assert_eq!(
        crate::wire::hex(&crate::wire::encode_frame(&r)),
        "000000a5020b000000016874737076657273696f6e2c030a0000000a7365727665726e616d6553776974636879617264030d0000000573657276657276657273696f6e302e312e300409000000206368616c6c656e6765000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0510000000007365727665726361706162696c697479020b000000016170695f76657273696f6e1302030000000173657101"
    );
}

fn auth(user: &str, password: &str) -> Msg {
    m("authenticate")
        .with("username", user)
        .with("digest", digest(password, &challenge()).to_vec())
}

#[test]
fn digest_vector() {
    assert_eq!(
        crate::wire::hex(&digest("secret", &challenge())),
        "470e797136d0d56df28783dde96302ea3a8e18ac"
    );
    assert_eq!(
        crate::wire::hex(&digest("", &challenge())),
        "ae5bd8efea5322c4d9986d06680a781392f9a642"
    );
}

#[test]
fn authenticate_right_and_wrong() {
    let mut s = closed();
    one(
        &mut s,
        m("hello")
            .with("htspversion", 38i64)
            .with("clientname", "Kodi"),
    );
    let out = s.handle(NOW, &auth("kodi", "wrong"));
    assert_eq!(out.first(), Some(&Output::Pause(NOACCESS_DELAY)));
    assert_eq!(sent(&out)[0].get_s64("noaccess"), Some(1));
    // Privilege failure: delayed noaccess.
    let out = s.handle(
        NOW,
        &m("getChannel").with("channelId", 1i64).with("seq", 4i64),
    );
    assert_eq!(out.first(), Some(&Output::Pause(NOACCESS_DELAY)));
    let r = &sent(&out)[0];
    assert_eq!(r.get_s64("noaccess"), Some(1));
    assert_eq!(r.get_s64("seq"), Some(4));

    let r = one(&mut s, auth("kodi", "secret"));
    for f in [
        "admin",
        "streaming",
        "dvr",
        "faileddvr",
        "anonymous",
        "limitall",
        "limitdvr",
        "limitstreaming",
        "uilevel",
        "uilanguage",
    ] {
        assert!(r.contains(f), "missing {f}");
    }
    assert_eq!(r.get_s64("streaming"), Some(1));
    assert!(one(&mut s, m("getChannel").with("channelId", 1i64)).contains("channelName"));
}

#[test]
fn authenticate_reply_is_empty_before_26() {
    let mut s = closed();
    one(
        &mut s,
        m("hello")
            .with("htspversion", 25i64)
            .with("clientname", "old"),
    );
    let r = one(&mut s, auth("kodi", "secret"));
    assert!(r.fields.is_empty());
}

#[test]
fn empty_username_keeps_address_rights() {
    let mut s = open();
    let out = s.handle(NOW, &auth("", ""));
    assert!(!out.contains(&Output::Pause(NOACCESS_DELAY)));
    assert_eq!(sent(&out)[0].get_s64("streaming"), Some(1));
    let out = s.handle(
        NOW,
        &m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", 1i64),
    );
    assert!(matches!(out[0], Output::Subscribe(_)));
}

#[test]
fn per_request_credentials_elevate() {
    let mut s = closed();
    let mut req = m("subscribe")
        .with("subscriptionId", 3i64)
        .with("channelId", 2i64);
    req.add("username", "kodi")
        .add("digest", digest("secret", &challenge()).to_vec());
    let out = s.handle(NOW, &req);
    assert!(matches!(
        out[0],
        Output::Subscribe(SubscribeParams {
            subscription_id: 3,
            channel_id: 2,
            ..
        })
    ));
    // and later requests keep the rights
    assert!(one(&mut s, m("getChannel").with("channelId", 1i64)).contains("channelName"));
}

#[test]
fn dvr_methods_need_the_dvr_right() {
    let mut s = session_with(Rights {
        streaming: true,
        ..Rights::default()
    });
    let out = s.handle(NOW, &m("fileOpen").with("file", "dvr/1"));
    assert_eq!(out[0], Output::Pause(NOACCESS_DELAY));
    assert_eq!(sent(&out)[0].get_s64("noaccess"), Some(1));
}

fn methods(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| m.get_str("method").unwrap_or_default())
        .collect()
}

#[test]
fn initial_sync_order() {
    let mut s = open();
    let out = s.handle(
        NOW,
        &m("enableAsyncMetadata").with("epg", 1i64).with("seq", 5i64),
    );
    let msgs = sent(&out);
    assert_eq!(msgs[0].get_s64("seq"), Some(5));
    assert!(!msgs[0].contains("method"));
    let ms = methods(&msgs[1..]);
    let order = [
        "tagAdd",
        "channelAdd",
        "tagUpdate",
        "autorecEntryAdd",
        "timerecEntryAdd",
        "dvrEntryAdd",
        "eventAdd",
        "initialSyncCompleted",
    ];
    let rank = |m: &str| order.iter().position(|o| *o == m).unwrap();
    assert!(ms.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "{ms:?}");
    assert_eq!(
        ms.iter().filter(|m| *m == "initialSyncCompleted").count(),
        1
    );
    assert_eq!(ms.last().map(String::as_str), Some("initialSyncCompleted"));
    assert_eq!(ms.iter().filter(|m| *m == "eventAdd").count(), 5);
    for msg in &msgs[1..] {
        assert!(!msg.contains("seq") && !msg.contains("subscriptionId"));
    }
    for t in msgs
        .iter()
        .filter(|m| m.get_str("method").as_deref() == Some("tagAdd"))
    {
        assert!(!t.contains("members"));
    }
    for t in msgs
        .iter()
        .filter(|m| m.get_str("method").as_deref() == Some("tagUpdate"))
    {
        assert!(t.contains("members"));
    }
    for c in msgs
        .iter()
        .filter(|m| m.get_str("method").as_deref() == Some("channelAdd"))
    {
        for f in [
            "channelId",
            "channelIdStr",
            "channelNumber",
            "channelName",
            "eventId",
            "nextEventId",
            "services",
            "tags",
        ] {
            assert!(c.contains(f), "{f}");
        }
        assert_eq!(c.get_str("channelIdStr").unwrap().len(), 32);
        let svc = c.get_list("services").unwrap();
        let Value::Map(svc) = &svc[0] else { panic!() };
        assert!(svc.contains("name") && svc.contains("type") && svc.get_s64("content") == Some(1));
    }
    let one_ch = msgs
        .iter()
        .find(|m| m.get_s64("channelId") == Some(1) && m.contains("channelName"))
        .unwrap();
    assert_eq!(one_ch.get_s64("eventId"), Some(10));
    assert_eq!(one_ch.get_s64("nextEventId"), Some(11));
    assert_eq!(
        one_ch.get_str("channelIcon").as_deref(),
        Some("imagecache/7")
    );
    for e in msgs
        .iter()
        .filter(|m| m.get_str("method").as_deref() == Some("eventAdd"))
    {
        for f in ["eventId", "channelId", "start", "stop"] {
            assert!(e.contains(f));
        }
    }
}

#[test]
fn no_epg_then_epg_later_without_second_sync() {
    let mut s = open();
    let ms = methods(&sent(&s.handle(NOW, &m("enableAsyncMetadata").with("epg", 0i64)))[1..]);
    assert!(!ms.iter().any(|m| m == "eventAdd"));
    let ms = methods(&sent(&s.handle(NOW, &m("enableAsyncMetadata").with("epg", 1i64)))[1..]);
    assert!(ms.iter().all(|m| m == "eventAdd"), "{ms:?}");
    assert_eq!(ms.len(), 5);
}

#[test]
fn epg_max_time_limits_the_window() {
    let mut s = open();
    let msgs = sent(
        &s.handle(
            NOW,
            &m("enableAsyncMetadata")
                .with("epg", 1i64)
                .with("epgMaxTime", NOW + 3600),
        ),
    );
    let evs: Vec<_> = msgs
        .iter()
        .filter(|m| m.get_str("method").as_deref() == Some("eventAdd"))
        .collect();
    assert_eq!(evs.len(), 4);
    assert!(
        evs.iter()
            .all(|e| e.get_s64("start").unwrap() <= NOW + 3600)
    );
    // The window moves: the far event arrives later.
    let later: Vec<Msg> = sent(&s.tick(NOW + 7200 * 3))
        .into_iter()
        .filter(|m| m.get_str("method").as_deref() == Some("eventAdd"))
        .collect();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].get_s64("eventId"), Some(13));
}

#[test]
fn old_clients_get_collapsed_texts_and_old_icon_form() {
    let mut s = open();
    one(
        &mut s,
        m("hello")
            .with("htspversion", 14i64)
            .with("clientname", "old"),
    );
    let r = one(&mut s, m("getChannel").with("channelId", 1i64));
    assert_eq!(r.get_str("channelIcon").as_deref(), Some("/imagecache/7"));
    let r = one(&mut s, m("getChannel").with("channelId", 2i64));
    assert_eq!(
        r.get_str("channelIcon").as_deref(),
        Some("http://logo/x.png")
    );
    let r = one(&mut s, m("getEvent").with("eventId", 10i64));
    assert_eq!(
        r.get_str("description").as_deref(),
        Some("About Morning News")
    );
}

#[test]
fn live_changes() {
    let fake = Fake::new();
    let mut s = Session::new(
        fake.clone(),
        challenge(),
        Rights {
            streaming: true,
            dvr: true,
            ..Rights::default()
        },
    );
    assert!(
        s.on_change(NOW, &Change::Yard(YardEvent::ChannelUpdated(1)))
            .is_empty(),
        "not async yet"
    );
    s.handle(NOW, &m("enableAsyncMetadata").with("epg", 1i64));
    let r = sent(&s.on_change(NOW, &Change::Yard(YardEvent::ChannelUpdated(1))));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].get_str("method").as_deref(), Some("channelUpdate"));
    fake.channels.lock().retain(|c| c.id != 2);
    let r = sent(&s.on_change(NOW, &Change::Yard(YardEvent::ChannelUpdated(2))));
    assert_eq!(r[0].get_str("method").as_deref(), Some("channelDelete"));
    let r = sent(&s.on_change(NOW, &Change::Yard(YardEvent::EpgEventRemoved(11))));
    assert_eq!(r[0].get_str("method").as_deref(), Some("eventDelete"));
    assert_eq!(r[0].get_s64("eventId"), Some(11));
    let r = sent(&s.on_change(NOW, &Change::Dvr(DvrEvent::EntryRemoved(77))));
    assert_eq!(r[0].get_str("method").as_deref(), Some("dvrEntryDelete"));
}

#[test]
fn channel_tags_limit_what_a_user_sees() {
    let mut s = closed();
    one(&mut s, auth("news", "pw"));
    let r = one(&mut s, m("getChannel").with("channelId", 1i64));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Channel does not exist")
    );
    assert!(one(&mut s, m("getChannel").with("channelId", 2i64)).contains("channelName"));
    let msgs = sent(&s.handle(NOW, &m("enableAsyncMetadata")));
    let ms = methods(&msgs[1..]);
    assert_eq!(ms.iter().filter(|m| *m == "channelAdd").count(), 1);
    assert_eq!(ms.iter().filter(|m| *m == "tagAdd").count(), 1);
}

#[test]
fn queries() {
    let mut s = open();
    let r = one(&mut s, m("getChannel"));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Invalid arguments: missing channelId")
    );
    let r = one(&mut s, m("getChannel").with("channelId", 99i64));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Channel does not exist")
    );
    let r = one(&mut s, m("getEvent").with("eventId", 999i64));
    assert_eq!(r.get_str("error").as_deref(), Some("Event does not exist"));

    let r = one(
        &mut s,
        m("getEvents")
            .with("channelId", 1i64)
            .with("numFollowing", 3i64),
    );
    let evs = r.get_list("events").unwrap();
    assert_eq!(evs.len(), 3);
    let Value::Map(first) = &evs[0] else { panic!() };
    assert_eq!(first.get_s64("eventId"), Some(10));
    let r = one(&mut s, m("getEvents"));
    assert!(r.get_list("events").is_some());

    let r = one(&mut s, m("epgQuery").with("query", "NEWS"));
    let ids: Vec<_> = r.get_list("eventIds").unwrap().to_vec();
    assert_eq!(ids, vec![Value::S64(10), Value::S64(12)]);
    let r = one(&mut s, m("epgQuery").with("query", "zzz").with("seq", 1i64));
    assert_eq!(r.fields.len(), 1, "only seq: {r:?}");
    let r = one(
        &mut s,
        m("epgQuery").with("query", "film").with("full", 1i64),
    );
    assert_eq!(r.get_list("events").unwrap().len(), 1);
    let r = one(&mut s, m("epgQuery"));
    assert!(r.get_str("error").unwrap().contains("query"));

    let r = one(&mut s, m("getEpgObject").with("id", 10i64));
    for f in ["id", "tp", "up", "start", "stop", "ch", "tit"] {
        assert!(r.contains(f), "{f}");
    }
    assert_eq!(
        r.get_map("tit").unwrap().get_str("und").as_deref(),
        Some("Morning News")
    );

    let r = one(&mut s, m("getDiskSpace"));
    assert!(
        r.contains("freediskspace") && r.contains("useddiskspace") && r.contains("totaldiskspace")
    );

    let r = one(&mut s, m("getProfiles"));
    let Value::Map(p) = &r.get_list("profiles").unwrap()[0] else {
        panic!()
    };
    assert_eq!(p.get_str("name").as_deref(), Some("htsp"));
    assert_eq!(p.get_str("uuid").unwrap().len(), 32);

    let r = one(&mut s, m("getTicket").with("channelId", 1i64));
    assert_eq!(r.get_str("path").as_deref(), Some("/stream/channelid/1"));
    assert_eq!(r.get_str("ticket").unwrap().len(), 40);

    let r = one(&mut s, m("api").with("path", "serverinfo"));
    let resp = r.get_map("response").unwrap();
    assert_eq!(resp.get_s64("api_version"), Some(19));
    assert!(resp.get_list("capabilities").is_some());
    assert!(
        one(&mut s, m("api").with("path", "no/such").with("seq", 1i64))
            .fields
            .len()
            == 1
    );
    assert!(one(&mut s, m("api")).contains("error"));
}

#[test]
fn subscription_controls() {
    let mut s = open();
    let r = one(
        &mut s,
        m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", 99i64),
    );
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Channel does not exist")
    );
    let r = one(&mut s, m("subscribe").with("channelId", 1i64));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Invalid arguments: missing subscriptionId")
    );

    let out = s.handle(
        NOW,
        &m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", 1i64)
            .with("90khz", 1i64)
            .with("seq", 3i64),
    );
    let Output::Subscribe(p) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(p.ninety_khz);
    assert_eq!(p.queue_depth, DEFAULT_QUEUE_DEPTH);
    let Output::SendActivating {
        msg,
        subscription_id: 1,
    } = &out[1]
    else {
        panic!()
    };
    assert_eq!(msg.get_s64("90khz"), Some(1));
    assert_eq!(msg.get_s64("normts"), Some(1));
    assert_eq!(msg.get_s64("seq"), Some(3));
    let r = one(
        &mut s,
        m("subscribe")
            .with("subscriptionId", 1i64)
            .with("channelId", 2i64),
    );
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Subscription already exists")
    );

    for method in [
        "subscriptionChangeWeight",
        "subscriptionSpeed",
        "subscriptionSkip",
        "subscriptionFilterStream",
    ] {
        let r = one(
            &mut s,
            m(method)
                .with("subscriptionId", 42i64)
                .with("speed", 100i64)
                .with("time", 0i64),
        );
        assert_eq!(
            r.get_str("error").as_deref(),
            Some("Subscription does not exist"),
            "{method}"
        );
    }
    let r = one(
        &mut s,
        m("subscriptionSeek")
            .with("subscriptionId", 1i64)
            .with("time", 5i64)
            .with("absolute", 1i64),
    );
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Timeshift not available")
    );
    let r = one(
        &mut s,
        m("subscriptionSpeed")
            .with("subscriptionId", 1i64)
            .with("speed", 0i64),
    );
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Timeshift not available")
    );
    let out = s.handle(
        NOW,
        &m("subscriptionSpeed")
            .with("subscriptionId", 1i64)
            .with("speed", 100i64),
    );
    let msgs = sent(&out);
    assert!(msgs[0].fields.is_empty());
    assert_eq!(
        msgs[1].get_str("method").as_deref(),
        Some("subscriptionSpeed")
    );
    assert_eq!(msgs[1].get_s64("speed"), Some(100));
    assert!(matches!(
        out[1],
        Output::SendSub {
            subscription_id: 1,
            ..
        }
    ));

    let out = s.handle(
        NOW,
        &m("subscriptionFilterStream")
            .with("subscriptionId", 1i64)
            .with("disable", vec![Value::S64(2)]),
    );
    assert!(out.contains(&Output::FilterStreams {
        subscription_id: 1,
        enable: vec![],
        disable: vec![2]
    }));

    let r = one(&mut s, m("unsubscribe").with("subscriptionId", 77i64));
    assert!(r.fields.is_empty());
    let out = s.handle(NOW, &m("unsubscribe").with("subscriptionId", 1i64));
    assert_eq!(out[0], Output::Unsubscribe { subscription_id: 1 });
}

#[test]
fn dvr_errors_without_entries() {
    let mut s = open();
    for method in [
        "updateDvrEntry",
        "stopDvrEntry",
        "cancelDvrEntry",
        "deleteDvrEntry",
    ] {
        let r = one(&mut s, m(method).with("id", 5i64));
        assert_eq!(
            r.get_str("error").as_deref(),
            Some("DVR entry not found"),
            "{method}"
        );
        let r = one(&mut s, m(method));
        assert_eq!(
            r.get_str("error").as_deref(),
            Some("Invalid arguments: missing id"),
            "{method}"
        );
    }
    let r = one(
        &mut s,
        m("addDvrEntry")
            .with("channelId", 1i64)
            .with("start", NOW)
            .with("stop", NOW + 60),
    );
    assert!(r.get_str("error").unwrap().contains("title"));
    assert_eq!(r.get_s64("success"), Some(0));
    let r = one(&mut s, m("fileRead").with("id", 3i64).with("size", 10i64));
    assert_eq!(r.get_str("error").as_deref(), Some("Invalid file"));
    let r = one(&mut s, m("fileOpen").with("file", "/etc/passwd"));
    assert_eq!(r.get_str("error").as_deref(), Some("Unknown file"));
    let r = one(&mut s, m("getDvrCutpoints").with("id", 1i64));
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("DVR schedule not found")
    );
}

#[test]
fn content_types() {
    assert_eq!(content_type(&["News".into()]), Some(0x20));
    assert_eq!(
        content_type(&["Unknown".into(), "Movie".into()]),
        Some(0x10)
    );
    assert_eq!(content_type(&[]), None);
}

#[test]
fn now_next_changes_are_announced() {
    let mut s = open();
    s.handle(NOW, &m("enableAsyncMetadata"));
    assert!(sent(&s.tick(NOW + 10)).is_empty(), "nothing changed");
    // event 10 ends at NOW+1200; event 11 runs from NOW+1200
    let up = sent(&s.tick(NOW + 1300));
    let ch1 = up
        .iter()
        .find(|m| m.get_s64("channelId") == Some(1))
        .expect("channelUpdate");
    assert_eq!(ch1.get_str("method").as_deref(), Some("channelUpdate"));
    assert_eq!(ch1.get_s64("eventId"), Some(11));
    assert_eq!(ch1.get_s64("nextEventId"), Some(12));
}

#[test]
fn a_channel_without_video_is_announced_as_radio() {
    let fake = Fake::new();
    let rights = Rights {
        streaming: true,
        ..Rights::default()
    };
    let mut s = Session::new(fake.clone(), challenge(), rights);
    let service = |r: &Msg| match r.get("services") {
        Some(Value::List(l)) => match l.first() {
            Some(Value::Map(m)) => m.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let tv = service(&one(&mut s, m("getChannel").with("channelId", 1i64)));
    assert_eq!(tv.get_s64("content"), Some(1));
    assert_eq!(tv.get_str("type").as_deref(), Some("HDTV"));
    s.handle(NOW, &m("enableAsyncMetadata"));
    // The channel's programme turns out to carry sound only.
    {
        let mut chans = fake.channels.lock();
        let mut radio = (*chans[1]).clone();
        radio.has_video = false;
        chans[1] = Arc::new(radio);
    }
    let r = sent(&s.on_change(NOW, &Change::Yard(YardEvent::ChannelUpdated(2))));
    assert_eq!(r[0].get_str("method").as_deref(), Some("channelUpdate"));
    let radio = service(&r[0]);
    assert_eq!(radio.get_s64("content"), Some(2));
    assert_eq!(radio.get_str("type").as_deref(), Some("Radio"));
    let got = service(&one(&mut s, m("getChannel").with("channelId", 2i64)));
    assert_eq!(got.get_s64("content"), Some(2));
}
