//! TV in the browser: the fragmented MP4 muxer fed by a frames reader of a
//! demo channel (what `/fmp4/channel/{id}` sends) makes a file ffprobe reads
//! as H.264 640x360 + AAC; and the `switchyard` binary serves it at
//! `/fmp4/channel/{id}` and `/watch/{id}` under the streaming rights of
//! `/stream/...`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use media::fmp4::Fmp4Muxer;
use yard::{ReaderEvent, ReaderOptions, Yard};

#[tokio::test]
async fn demo_channel_as_fragmented_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let yard = Yard::demo_for_tests(dir.path());
    let mut reader = yard.subscribe(1, ReaderOptions::frames("fmp4")).unwrap();
    let mut mux = None;
    let mut file = Vec::new();
    let mut fragments = 0;
    // ~3 s of the channel (the demo loops in real time)
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        while fragments < 6 {
            match reader.recv().await.expect("reader alive") {
                ReaderEvent::Program(p) if mux.is_none() && p.is_ready() => {
                    let m = Fmp4Muxer::new(&p).expect("H.264 + AAC");
                    assert!(m.has_audio());
                    file.extend(m.init_segment());
                    mux = Some(m);
                }
                ReaderEvent::Frame(f) => {
                    if let Some(frag) = mux.as_mut().and_then(|m| m.push(&f)) {
                        file.extend(frag);
                        fragments += 1;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(result.is_ok(), "only {fragments} fragments");
    let path = dir.path().join("live.mp4");
    std::fs::write(&path, &file).unwrap();
    let text = probe_h264_aac(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&"width=640") && lines.contains(&"height=360"),
        "{text}"
    );
    // and it decodes without complaint
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        decoded.status.success() && decoded.stderr.is_empty(),
        "{decoded:?}"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The binary on a free loopback port with only the web port open.
struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(access: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[web]\nlisten = \"127.0.0.1:{port}\"\n\n[access]\n{access}\n\n\
                 [htsp]\nenabled = false\n\n[heliostv]\nenabled = false\n\n\
                 [movie]\nenabled = false\n\n[galene]\nenabled = false\n\n[owt]\nenabled = false\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--http")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        for _ in 0..400 {
            if let Ok(r) = reqwest::get(server.url("/healthz")).await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not come up; its log:\n{}", server.log());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Top-level MP4 box types in `data`, in order (a box cut off at the end
/// still counts).
fn box_types(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        if size < 8 {
            break;
        }
        at += size;
    }
    out
}

#[tokio::test]
async fn the_binary_serves_a_channel_as_fragmented_mp4_and_a_watch_page() {
    let server = Server::start("anonymous = true").await;
    let mut resp = reqwest::get(server.url("/fmp4/channel/1")).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", server.log());
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    // About three seconds of the channel: the init segment and six fragments.
    let mut body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while box_types(&body).iter().filter(|t| *t == "moof").count() < 6 {
            match resp.chunk().await.unwrap() {
                Some(c) => body.extend_from_slice(&c),
                None => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "boxes so far: {:?}", box_types(&body));
    let boxes = box_types(&body);
    assert_eq!(&boxes[..2], ["ftyp", "moov"], "{boxes:?}");
    drop(resp);
    let path = server.dir.path().join("live.mp4");
    std::fs::write(&path, &body).unwrap();
    probe_h264_aac(&path);

    // The watch page plays that URL; the home page links to it.
    let page = reqwest::get(server.url("/watch/1")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("src=\"/fmp4/channel/1\""), "{html}");
    let home = reqwest::get(server.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("href=\"/watch/1\""), "{home}");

    let missing = reqwest::get(server.url("/fmp4/channel/999")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "no channel with id 999\n");
}

#[tokio::test]
async fn browser_tv_needs_the_streaming_right_as_stream_does() {
    let server = Server::start(
        "anonymous = false\n\n[[access.users]]\nname = \"ann\"\npassword = \"secret\"",
    )
    .await;
    let client = reqwest::Client::new();
    for path in ["/stream/channel/1", "/fmp4/channel/1", "/watch/1"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            "streaming needs a login\n",
            "{path}"
        );
        let wrong = client
            .get(server.url(path))
            .basic_auth("ann", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let page = client
        .get(server.url("/watch/1"))
        .basic_auth("ann", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let live = client
        .get(server.url("/fmp4/channel/1"))
        .basic_auth("ann", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "{}", server.log());
    assert_eq!(live.headers()["content-type"], "video/mp4");
}

/// ffprobe's stream fields of `path` (`key=value` lines), after checking it
/// reads the file and finds H.264 and AAC in it.
fn probe_h264_aac(path: &std::path::Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "default=nw=1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"codec_name=h264"), "{text}");
    assert!(lines.contains(&"codec_name=aac"), "{text}");
    text
}
