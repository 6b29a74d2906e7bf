#!/usr/bin/env bash
# Regenerates the embedded demo media (committed; the binary embeds them).
# Synthetic sources only, so the files are ours and small: two 8 s channels
# (H.264 Main, 25 fps, GOP 1 s, 2 B-frames, AAC-LC 48 kHz stereo) and one movie.
set -euo pipefail
cd "$(dirname "$0")"
common=(-hide_banner -loglevel error -y)
ffmpeg "${common[@]}" -f lavfi -i "testsrc2=size=640x360:rate=25" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:beep_factor=4" -t 8 \
  -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -g 25 -bf 2 \
  -b:v 900k -maxrate 900k -bufsize 900k -x264-params "nal-hrd=cbr:force-cfr=1" \
  -c:a aac -b:a 96k -ac 2 -f mpegts -mpegts_service_id 1 \
  -metadata service_provider=Switchyard -metadata service_name="Switchyard One" \
  -mpegts_pmt_start_pid 0x1000 -mpegts_start_pid 0x100 channel-1.ts
ffmpeg "${common[@]}" -f lavfi -i "smptehdbars=size=640x360:rate=25,drawtext=text='%{pts\:hms}':x=20:y=20:fontsize=32:fontcolor=white" \
  -f lavfi -i "sine=frequency=880:sample_rate=48000" -t 8 \
  -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -g 25 -bf 2 \
  -b:v 700k -maxrate 700k -bufsize 700k \
  -c:a aac -b:a 96k -ac 2 -f mpegts -mpegts_service_id 2 \
  -metadata service_provider=Switchyard -metadata service_name="Switchyard Two" channel-2.ts
ffmpeg "${common[@]}" -f lavfi -i "mandelbrot=size=320x180:rate=25" \
  -f lavfi -i "sine=frequency=330:sample_rate=48000" -t 10 \
  -c:v libx264 -preset veryfast -pix_fmt yuv420p -b:v 300k -c:a aac -b:a 64k \
  -movflags +faststart -metadata title="Switchyard Demo Movie" demo-movie.mp4
# An audio-only service for tests of radio channels (not embedded).
ffmpeg "${common[@]}" -f lavfi -i "sine=frequency=660:sample_rate=48000" -t 4 \
  -c:a aac -b:a 48k -ac 2 -f mpegts -mpegts_service_id 7 \
  -metadata service_provider=Switchyard -metadata service_name="Switchyard Radio" radio.ts
