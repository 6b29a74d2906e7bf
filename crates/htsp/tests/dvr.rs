//! Recording over HTSP: scheduling, rules, a real 10 s recording played back
//! through the file methods, and persistence across restarts.

mod htsp_client;

use std::time::Duration;

use htsp::wire::{Msg, Value};
use htsp_client::*;

const T: Duration = Duration::from_secs(5);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn synced(addr: std::net::SocketAddr, version: i64) -> Client {
    let mut c = Client::connect(addr).await;
    c.hello(version).await;
    c.request(m("enableAsyncMetadata")).await;
    c.wait_for(T, |m| method_of(m) == "initialSyncCompleted")
        .await
        .expect("sync");
    c.pending.clear();
    c
}

fn is(method: &'static str, id: i64) -> impl Fn(&Msg) -> bool {
    move |m: &Msg| method_of(m) == method && m.get_s64("id") == Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = synced(s.addr, 38).await;

    let event = s.yard.epg_now_next(1, now()).1.expect("next event");
    let r = c
        .request(
            m("addDvrEntry")
                .with("eventId", event.id)
                .with("startExtra", 2i64)
                .with("stopExtra", 5i64),
        )
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    let id = r.get_s64("id").unwrap();
    let add = c
        .wait_for(T, is("dvrEntryAdd", id))
        .await
        .expect("dvrEntryAdd");
    for f in [
        "id",
        "start",
        "stop",
        "startExtra",
        "stopExtra",
        "removal",
        "priority",
        "state",
    ] {
        assert!(add.contains(f), "{f}");
    }
    assert_eq!(add.get_str("state").as_deref(), Some("scheduled"));
    assert!([0, 1, 2, 3, 4, 6].contains(&add.get_s64("priority").unwrap()));
    assert_eq!(add.get_s64("startExtra"), Some(2));
    assert_eq!(add.get_str("title").as_deref(), Some(event.title.as_str()));

    let r = c
        .request(
            m("addDvrEntry")
                .with("channelId", 1i64)
                .with("start", now() + 600)
                .with("stop", now() + 700),
        )
        .await;
    assert!(r.contains("error"), "manual timer without title");

    for method in [
        "updateDvrEntry",
        "stopDvrEntry",
        "cancelDvrEntry",
        "deleteDvrEntry",
    ] {
        let r = c.request(m(method).with("id", 12345i64)).await;
        assert_eq!(
            r.get_str("error").as_deref(),
            Some("DVR entry not found"),
            "{method}"
        );
    }
    let r = c
        .request(m("updateDvrEntry").with("id", id).with("title", "Renamed"))
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    let up = c.wait_for(T, is("dvrEntryUpdate", id)).await.unwrap();
    assert_eq!(up.get_str("title").as_deref(), Some("Renamed"));
    let r = c.request(m("stopDvrEntry").with("id", id)).await;
    assert_eq!(r.get_s64("success"), Some(1));
    let r = c.request(m("cancelDvrEntry").with("id", id)).await;
    assert_eq!(r.get_s64("success"), Some(1));
    c.wait_for(T, is("dvrEntryDelete", id))
        .await
        .expect("cancel of a scheduled entry deletes it");

    // manual timer, then delete
    let r = c
        .request(
            m("addDvrEntry")
                .with("channelId", 2i64)
                .with("start", now() + 3600)
                .with("stop", now() + 7200)
                .with("title", "Manual"),
        )
        .await;
    let id = r.get_s64("id").unwrap();
    let r = c.request(m("deleteDvrEntry").with("id", id)).await;
    assert_eq!(r.get_s64("success"), Some(1));
    c.wait_for(T, is("dvrEntryDelete", id))
        .await
        .expect("dvrEntryDelete");

    // autorec: title match creates entries; deleting the rule removes them
    let r = c
        .request(
            m("addAutorecEntry")
                .with("title", "news")
                .with("channelId", -1i64),
        )
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    let rule = r.get_str("id").unwrap();
    assert_eq!(rule.len(), 32);
    let add = c
        .wait_for(T, |m| method_of(m) == "autorecEntryAdd")
        .await
        .unwrap();
    for f in [
        "id",
        "enabled",
        "removal",
        "daysOfWeek",
        "priority",
        "start",
        "startWindow",
        "startExtra",
        "stopExtra",
        "dupDetect",
    ] {
        assert!(add.contains(f), "{f}");
    }
    let made = c
        .wait_for(T, |m| {
            method_of(m) == "dvrEntryAdd"
                && m.get_str("autorecId").as_deref() == Some(rule.as_str())
        })
        .await
        .expect("autorec scheduled a recording");
    assert!(
        made.get_str("title")
            .unwrap()
            .to_lowercase()
            .contains("news")
    );
    let r = c
        .request(
            m("updateAutorecEntry")
                .with("id", rule.as_str())
                .with("name", "All news"),
        )
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    c.wait_for(T, |m| method_of(m) == "autorecEntryUpdate")
        .await
        .unwrap();
    let r = c
        .request(m("deleteAutorecEntry").with("id", rule.as_str()))
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    c.wait_for(T, |m| method_of(m) == "autorecEntryDelete")
        .await
        .unwrap();
    c.wait_for(T, is("dvrEntryDelete", made.get_s64("id").unwrap()))
        .await
        .expect("its entries go too");
    let r = c
        .request(m("deleteAutorecEntry").with("id", rule.as_str()))
        .await;
    assert_eq!(
        r.get_str("error").as_deref(),
        Some("Automatic schedule entry not found")
    );

    // timerec: a daily slot creates an entry
    let r = c
        .request(
            m("addTimerecEntry")
                .with("title", "Daily")
                .with("channelId", 1i64)
                .with("daysOfWeek", 127i64)
                .with("start", 600i64)
                .with("stop", 660i64),
        )
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    let rule = r.get_str("id").unwrap();
    let add = c
        .wait_for(T, |m| method_of(m) == "timerecEntryAdd")
        .await
        .unwrap();
    for f in [
        "id",
        "enabled",
        "daysOfWeek",
        "removal",
        "priority",
        "start",
        "stop",
    ] {
        assert!(add.contains(f), "{f}");
    }
    c.wait_for(T, |m| {
        method_of(m) == "dvrEntryAdd" && m.get_str("timerecId").as_deref() == Some(rule.as_str())
    })
    .await
    .expect("timerec scheduled a recording");
    let r = c
        .request(m("deleteTimerecEntry").with("id", rule.as_str()))
        .await;
    assert_eq!(r.get_s64("success"), Some(1));

    // a second connection sees the rules in its initial sync order
    let r = c
        .request(
            m("addTimerecEntry")
                .with("title", "Kept")
                .with("channelId", 2i64)
                .with("start", 100i64)
                .with("stop", 160i64),
        )
        .await;
    assert_eq!(r.get_s64("success"), Some(1));
    let mut c2 = Client::connect(s.addr).await;
    c2.hello(38).await;
    c2.request(m("enableAsyncMetadata")).await;
    let mut seen = Vec::new();
    loop {
        let msg = c2.read(T).await.unwrap();
        let mth = method_of(&msg);
        if mth == "initialSyncCompleted" {
            break;
        }
        seen.push(mth);
    }
    let t = seen.iter().position(|m| m == "timerecEntryAdd").unwrap();
    let d = seen.iter().position(|m| m == "dvrEntryAdd").unwrap();
    assert!(t < d);
}

async fn wait_state(c: &mut Client, id: i64, state: &str, timeout: Duration) -> Msg {
    let state = state.to_owned();
    c.wait_for(timeout, move |m| {
        method_of(m) == "dvrEntryUpdate"
            && m.get_s64("id") == Some(id)
            && m.get_str("state").as_deref() == Some(state.as_str())
    })
    .await
    .unwrap_or_else(|| panic!("entry {id} never became {}", "the wanted state"))
}

fn ffprobe_codecs(path: &std::path::Path) -> String {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_ten_seconds_play_back_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = synced(s.addr, 38).await;
    let start_at = now();
    let r = c
        .request(
            m("addDvrEntry")
                .with("channelId", 1i64)
                .with("start", start_at)
                .with("stop", start_at + 10)
                .with("title", "Ten seconds"),
        )
        .await;
    let id = r.get_s64("id").expect("id");
    wait_state(&mut c, id, "recording", T).await;
    let done = wait_state(&mut c, id, "completed", Duration::from_secs(20)).await;
    assert!(!done.contains("error"), "{done:?}");
    assert!(done.get_s64("dataSize").unwrap() > 100_000);

    let path = s.dvr.file_path(id as u32).unwrap();
    let probe = ffprobe_codecs(&path);
    assert!(probe.contains("h264,640,360"), "{probe}");
    assert!(probe.contains("aac"), "{probe}");

    // playback through the file methods
    let size = std::fs::metadata(&path).unwrap().len() as i64;
    for name in [format!("dvr/{id}"), format!("/dvrfile/{id}")] {
        let r = c.request(m("fileOpen").with("file", name.as_str())).await;
        assert_eq!(r.get_s64("size"), Some(size), "{name}");
        assert!(r.contains("mtime") && r.contains("id"));
    }
    let r = c
        .request(m("fileOpen").with("file", format!("dvr/{id}")))
        .await;
    let fid = r.get_s64("id").unwrap();
    let r = c
        .request(
            m("fileRead")
                .with("id", fid)
                .with("size", 65536i64)
                .with("offset", 0i64),
        )
        .await;
    let data = r.get_bin("data").unwrap();
    assert_eq!(data.len(), 65536);
    assert_eq!(data[0], 0x47);
    assert_eq!(&data[..], &std::fs::read(&path).unwrap()[..65536]);
    let r = c
        .request(
            m("fileSeek")
                .with("id", fid)
                .with("offset", 0i64)
                .with("whence", "SEEK_END"),
        )
        .await;
    assert_eq!(r.get_s64("offset"), Some(size));
    let r = c
        .request(m("fileRead").with("id", fid).with("size", 100i64))
        .await;
    assert!(r.get_bin("data").unwrap().is_empty(), "EOF reads empty");
    let r = c.request(m("fileStat").with("id", fid)).await;
    assert_eq!(r.get_s64("size"), Some(size));
    let r = c
        .request(
            m("fileSeek")
                .with("id", fid)
                .with("offset", 0i64)
                .with("whence", "SEEK_NOWHERE"),
        )
        .await;
    assert!(r.contains("error"));
    c.pending.clear();
    let r = c.request(m("fileClose").with("id", fid)).await;
    assert!(!r.contains("error"));
    let up = c
        .wait_for(T, |m| {
            method_of(m) == "dvrEntryUpdate" && m.get_s64("playcount") == Some(1)
        })
        .await
        .expect("play count incremented");
    assert_eq!(up.get_s64("id"), Some(id));
    let r = c
        .request(m("fileRead").with("id", fid).with("size", 10i64))
        .await;
    assert_eq!(r.get_str("error").as_deref(), Some("Invalid file"));

    // cut list: none, then an EDL next to the recording
    let r = c.request(m("getDvrCutpoints").with("id", id)).await;
    assert!(!r.contains("cutpoints") && !r.contains("error"));
    std::fs::write(path.with_extension("edl"), "1.5 3.0 3\n").unwrap();
    let r = c.request(m("getDvrCutpoints").with("id", id)).await;
    let cp = map(&r.get_list("cutpoints").unwrap()[0]);
    assert_eq!(
        (cp.get_s64("start"), cp.get_s64("end"), cp.get_s64("type")),
        (Some(1500), Some(3000), Some(3))
    );

    // HTTP side: ticket and file access check
    let r = c.request(m("getTicket").with("dvrId", id)).await;
    assert_eq!(r.get_str("path"), Some(format!("/dvrfile/{id}")));
    let rights = s
        .ctx
        .check_ticket(&r.get_str("ticket").unwrap(), &format!("/dvrfile/{id}"))
        .unwrap();
    assert_eq!(s.ctx.dvr_file(id as u32, &rights).unwrap(), path);
    assert_eq!(
        s.ctx.dvr_file(424242, &rights),
        Err(htsp::DvrFileError::NotFound)
    );

    // restart: entry and file are still there
    s.shutdown.cancel();
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s2 = start(dir.path(), open_access()).await;
    let mut c = Client::connect(s2.addr).await;
    c.hello(38).await;
    c.request(m("enableAsyncMetadata")).await;
    let add = c
        .wait_for(T, is("dvrEntryAdd", id))
        .await
        .expect("entry survives restart");
    assert_eq!(add.get_str("state").as_deref(), Some("completed"));
    assert_eq!(add.get_s64("playcount"), Some(1));
    assert!(path.exists());
    let r = c.request(m("deleteDvrEntry").with("id", id)).await;
    assert_eq!(r.get_s64("success"), Some(1));
    c.wait_for(T, is("dvrEntryDelete", id))
        .await
        .expect("dvrEntryDelete");
    assert!(!path.exists(), "file removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_recording_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), open_access()).await;
    let mut c = synced(s.addr, 38).await;
    let t0 = now();
    let r = c
        .request(
            m("addDvrEntry")
                .with("channelId", 2i64)
                .with("start", t0)
                .with("stop", t0 + 7)
                .with("title", "Interrupted"),
        )
        .await;
    let id = r.get_s64("id").unwrap();
    wait_state(&mut c, id, "recording", T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.shutdown.cancel();
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = s.dvr.file_path(id as u32).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    assert!(before > 0);

    let s2 = start(dir.path(), open_access()).await;
    assert_eq!(s2.dvr.entry(id as u32).unwrap().state.as_str(), "recording");
    let mut c = synced(s2.addr, 38).await;
    let done = wait_state(&mut c, id, "completed", Duration::from_secs(15)).await;
    assert!(!done.contains("error"), "{done:?}");
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after > before,
        "resumed recording appended ({before} -> {after})"
    );
    assert!(ffprobe_codecs(&path).contains("h264"));
    let _ = Value::S64(0);
}
