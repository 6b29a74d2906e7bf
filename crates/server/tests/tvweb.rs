//! TV in the browser: the fragmented MP4 muxer fed by a frames reader of a
//! demo channel (what `/fmp4/channel/{id}` sends) makes a file ffprobe reads
//! as H.264 640x360 + AAC.

use std::process::Command;
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
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "default=nw=1"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"codec_name=h264"), "{text}");
    assert!(lines.contains(&"codec_name=aac"), "{text}");
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
