"""Live Rooms end to end, continued: the mix against each host's picture on the one wall clock, a
lone host reconnecting, a host killed mid-live, a clip of one host's video. Real ffmpeg
publishers over RTMP, the embedded store, segments decoded by PyAV.

Wall times are read as a player with EXT-X-PROGRAM-DATE-TIME reads them: a segment's date is the
wall-clock time of its first frame (video: its opening keyframe; the mix: its first AAC frame),
and a frame inside it sits at that date plus its timestamp's distance from that first one."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from storage import keys as K
from tests.e2e.test_live_rooms import auth, clip_done, finished, hosts_of, invite
from tests.utils.media import FFMPEG, publish_rtmp, tones_per_second
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service
from transcode.playlists import parse_master_playlist, parse_media_playlist

GRACE_S = 3
RATE = 30

service = module_service(
    "rooms_more", AFTERLIVE_RECONNECT_GRACE=f"{GRACE_S}s", AFTERLIVE_PUBLISHER_TIMEOUT="4s"
)


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Ana")


def publish_host(
    url: str,
    *,
    seconds: float,
    colour: str = "0x204080",
    tone_hz: int | None = None,
    flash_at_s: float | None = None,
    beep_hz: int = 2000,
    video: bool = True,
) -> subprocess.Popen[str]:
    """ffmpeg publishing a plain `colour` picture (one white frame at `flash_at_s`) and, in
    the same instant, a 150 ms beep; `tone_hz`: a steady tone under it (else silence)."""
    picture = f"color=c={colour}:size=320x240:rate={RATE}"
    sound = []
    if tone_hz is not None:
        sound.append(f"0.2*sin(2*PI*{tone_hz}*t)")
    if flash_at_s is not None:
        frame = round(flash_at_s * RATE)
        picture += f",drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='eq(n,{frame})'"
        at = frame / RATE
        sound.append(f"if(between(t,{at},{at + 0.15}),0.8*sin(2*PI*{beep_hz}*t),0)")
    expr = "+".join(sound) or "0"
    gop = str(2 * RATE)
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re"]
    if video:
        args += ["-f", "lavfi", "-i", picture]
    args += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s=44100:c=mono", "-t", str(seconds)]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", gop]
        args += ["-keyint_min", gop, "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-f", "flv", url]
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


class Dated:
    """A stored rendition decoded in one piece, every frame dated by its segment's
    PROGRAM-DATE-TIME."""

    def __init__(self, service: Service, key: str, tmp_path: Path, *, video: bool) -> None:
        store = service.store()
        self.playlist = parse_media_playlist(store.get(key).decode())
        base = key.rsplit("/", 1)[0]
        whole = tmp_path / (key.replace("/", "_") + ".ts")
        self.anchors: list[tuple[float, datetime]] = []  # (first frame's time, segment's date)
        with whole.open("wb") as out:
            for seg in self.playlist.segments:
                data = store.get(f"{base}/{seg.uri}")
                part = tmp_path / "part.ts"
                part.write_bytes(data)
                with av.open(str(part)) as media:
                    stream = media.streams.video[0] if video else media.streams.audio[0]
                    times = [
                        float(p.pts * p.time_base)
                        for p in media.demux(stream)
                        if p.size and p.pts is not None
                    ]
                self.anchors.append((min(times), seg.program_date_time))
                out.write(data)
        self.path = whole

    def wall(self, t: float) -> datetime:
        """The wall time of media time `t`: by the segment it falls in."""
        first, date = max((a for a in self.anchors if a[0] <= t + 1e-6), key=lambda a: a[0])
        return date + timedelta(seconds=t - first)


def flashes(dated: Dated) -> list[datetime]:
    """Wall times of the white frames."""
    found = []
    with av.open(str(dated.path)) as media:
        for frame in media.decode(media.streams.video[0]):
            if frame.to_ndarray(format="gray").mean() > 200:
                found.append(dated.wall(float(frame.pts * frame.time_base)))
    return found


def decoded_audio(path: Path) -> tuple[np.ndarray, int, float]:
    """One channel, its rate, and the media time of its first sample."""
    chunks, first, rate = [], None, 0
    with av.open(str(path)) as media:
        stream = media.streams.audio[0]
        rate = stream.rate
        for frame in media.decode(stream):
            if first is None:
                first = float(frame.pts * frame.time_base)
            chunks.append(frame.to_ndarray()[0])
    return np.concatenate(chunks), rate, first or 0.0


def beep_onset(samples: np.ndarray, rate: int, hz: int) -> float:
    """Seconds from the first sample to where a beep at `hz` starts: the first 5 ms window
    (1 ms steps) whose amplitude at `hz` reaches half the beep's (0.8 full scale). Other hosts'
    steady tones, hundreds of hertz away, hardly leak into it."""
    size, hop = rate // 200, rate // 1000
    probe = np.exp(-2j * np.pi * hz * np.arange(size) / rate)
    for start in range(0, len(samples) - size, hop):
        if 2 * abs(np.dot(samples[start : start + size], probe)) / size >= 0.4:
            return start / rate
    raise AssertionError(f"no beep at {hz} Hz")


def test_the_mix_and_each_hosts_picture_agree_within_40_ms(service, token, tmp_path) -> None:
    room = service.new_room(token, "video", "Flash and beep")
    hosts = [invite(service, token, room, name) for name in ("Bea", "Cai")]
    urls = {1: room["rtmp_url"], 2: hosts[0]["rtmp_url"], 3: hosts[1]["rtmp_url"]}
    # Each host flashes and beeps together, on its own clock, at a different moment.
    moments = {1: 4.0, 2: 5.5, 3: 7.0}
    publishers = [
        publish_host(urls[n], seconds=10, flash_at_s=moments[n], beep_hz=1000 + 500 * n)
        for n in sorted(urls)
    ]
    finished(*publishers)
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id

    mix = Dated(service, K.media_playlist(rid, "mix"), tmp_path, video=False)
    samples, rate, first = decoded_audio(mix.path)
    measured = {}
    for seat in (1, 2, 3):
        beep = mix.wall(first + beep_onset(samples, rate, 1000 + 500 * seat))
        name = "source" if seat == 1 else f"hosts/{seat}/source"
        picture = Dated(service, K.media_playlist(rid, name), tmp_path, video=True)
        [flash] = flashes(picture)
        measured[seat] = round((beep - flash).total_seconds() * 1000, 1)
    print(f"beep in the mix minus flash in the host's video, ms: {measured}")
    assert all(abs(ms) <= 40 for ms in measured.values()), measured


def test_a_lone_host_reconnecting_within_the_grace_keeps_one_recording(
    service, token, tmp_path
) -> None:
    room = service.new_room(token, "audio", "Lone speaker")
    bea = invite(service, token, room, "Bea")  # the creator never goes live: Bea is alone
    first = publish_rtmp(bea["rtmp_url"], seconds=30, video=False, tone_hz=500)
    time.sleep(5)
    first.send_signal(signal.SIGKILL)  # a drop, not a clean unpublish: the grace runs
    first.wait(timeout=10)
    time.sleep(1)
    back = publish_rtmp(bea["rtmp_url"], seconds=5, video=False, tone_hz=500)
    finished(back)
    [recording] = service.wait_ended(room["id"], timeout=30)  # one recording: no split
    rid = recording.id
    assert len(service.recordings_of(room["id"])) == 1

    store = service.store()
    seat = parse_media_playlist(store.get(K.media_playlist(rid, "hosts/2/source")).decode())
    assert seat.ended and [s.discontinuity for s in seat.segments].count(True) == 1
    mix = Dated(service, K.media_playlist(rid, "mix"), tmp_path, video=False)
    assert mix.playlist.ended
    assert not any(s.discontinuity for s in mix.playlist.segments)  # the mix runs on
    samples, rate, first = decoded_audio(mix.path)
    heard = tones_per_second(samples, rate, [500])
    assert all(t == {500} for t in heard[:4]), heard  # the tone before the drop
    assert all(t == {500} for t in heard[-4:-1]), heard  # and after the return

    # The mix runs on through the time she was away (silence there), one timeline from her
    # first sample to her last.
    back = next(i for i, s in enumerate(seat.segments) if s.discontinuity)
    before = seat.segments[back - 1]
    left_at = before.program_date_time + timedelta(seconds=before.duration_s)
    back_at = seat.segments[back].program_date_time
    away = (back_at - left_at).total_seconds()
    assert 0.4 <= away <= GRACE_S, away  # 1 s asleep, less -re's initial burst
    last = seat.segments[-1]
    span = last.program_date_time + timedelta(seconds=last.duration_s)
    span_s = (span - seat.segments[0].program_date_time).total_seconds()
    assert abs(mix.playlist.duration_s() - span_s) <= 0.6, (mix.playlist.duration_s(), span_s)
    assert abs(seat.duration_s() - (span_s - away)) <= 0.6, (seat.duration_s(), span_s, away)
    origin = mix.wall(first)
    a = (left_at - origin).total_seconds() + 0.25 * away
    b = (back_at - origin).total_seconds() - 0.25 * away
    quiet = samples[round(a * rate) : round(b * rate)]
    assert len(quiet) > 0.3 * rate and np.sqrt((quiet**2).mean()) < 0.01, (a, b)


def test_a_host_killed_mid_live_ends_after_its_grace_the_room_goes_on(
    service, token, tmp_path
) -> None:
    room = service.new_room(token, "video", "Killed")
    tones = {1: 300, 2: 500, 3: 700}
    hosts = [invite(service, token, room, name) for name in ("Bea", "Cai")]
    urls = {1: room["rtmp_url"], 2: hosts[0]["rtmp_url"], 3: hosts[1]["rtmp_url"]}
    publishers = {n: publish_host(urls[n], seconds=14, tone_hz=tones[n]) for n in sorted(urls)}
    wait_until(
        lambda: all(h["live"] for h in hosts_of(service, token, room)), timeout=10, what="all live"
    )
    time.sleep(4)
    publishers[3].send_signal(signal.SIGKILL)
    publishers[3].wait(timeout=10)
    killed = time.monotonic()
    [current] = service.recordings_of(room["id"])
    gone = f"seat 3 left recording {current.id} (reconnect grace expired)"
    wait_until(lambda: gone in service.log.read_text(), timeout=GRACE_S + 10, what="seat 3 gone")
    after = time.monotonic() - killed
    assert GRACE_S - 0.5 <= after <= GRACE_S + 2.5, after
    live = {h["seat"]: h["live"] for h in hosts_of(service, token, room)}
    assert live == {1: True, 2: True, 3: False}, live
    finished(publishers[1], publishers[2])
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id
    ended = (recording.ended_at - recording.started_at).total_seconds()
    assert 12 <= ended <= 17, ended  # with the last host, not with the killed one

    store = service.store()
    names = {1: "source", 2: "hosts/2/source", 3: "hosts/3/source"}
    for seat, name in names.items():
        playlist = parse_media_playlist(store.get(K.media_playlist(rid, name)).decode())
        assert playlist.ended, name
        dated = Dated(service, K.media_playlist(rid, name), tmp_path, video=True)
        with av.open(str(dated.path)) as media:
            frames = sum(1 for _ in media.decode(media.streams.video[0]))
        length = 14 if seat != 3 else 4
        assert abs(frames / RATE - length) <= 2.5, (name, frames)
    mix = Dated(service, K.media_playlist(rid, "mix"), tmp_path, video=False)
    assert mix.playlist.ended
    samples, rate, _ = decoded_audio(mix.path)
    heard = tones_per_second(samples, rate, list(tones.values()))
    assert sum(1 for t in heard if t == {300, 500, 700}) >= 3, heard
    # After the kill: the other two go on, the killed host's tone is gone.
    assert sum(1 for t in heard if t == {300, 500}) >= 6, heard
    assert not any(700 in t for t in heard[9:]), heard


COLOURS = {1: ("0xC02020", (1, 0, 0)), 2: ("0x20C020", (0, 1, 0)), 3: ("0x2020C0", (0, 0, 1))}


def test_a_clip_of_one_hosts_video_has_their_picture_and_the_rooms_sound(
    service, token, tmp_path
) -> None:
    room = service.new_room(token, "video", "Three colours")
    tones = {1: 300, 2: 500, 3: 700, 4: 900}
    hosts = [invite(service, token, room, name) for name in ("Bea", "Cai")]
    hosts.append(invite(service, token, room, "Dan", recorded=False))
    urls = {1: room["rtmp_url"], **{h["seat"]: h["rtmp_url"] for h in hosts}}
    ana = publish_host(urls[1], seconds=12, colour="0xC02020", tone_hz=tones[1])
    cai = publish_host(urls[3], seconds=12, tone_hz=tones[3], video=False)  # no camera
    dan = publish_host(urls[4], seconds=3, tone_hz=tones[4], video=False)
    time.sleep(3)
    # Bea (green) joins 3 s late, and flashes and beeps together 3 s into her own media.
    bea = publish_host(urls[2], seconds=8, colour="0x20C020", tone_hz=tones[2], flash_at_s=3.0)
    finished(ana, cai, dan, bea)
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id

    clip = seat_clip(service, token, rid, 4.5, 8.9, seat=2)
    assert clip["seat"] == 2 and clip["host"] == "Bea"
    assert abs(clip["duration_s"] - 4.4) <= 0.05, clip
    master = parse_master_playlist(httpx.get(clip["playback_url"], timeout=10).text)
    [variant] = master.variants
    assert variant.uri == "host/index.m3u8", variant
    assert variant.codecs.startswith("avc1") and variant.codecs.endswith(",mp4a.40.2"), variant
    media = httpx.get(f"{service.api}/api/clips/{clip['id']}/host/index.m3u8", timeout=10)
    playlist = parse_media_playlist(media.text)
    assert playlist.ended and abs(playlist.duration_s() - clip["duration_s"]) <= 0.002
    local = tmp_path / "clip.ts"
    with local.open("wb") as out:
        for seg in playlist.segments:
            out.write(httpx.get(seg.uri, timeout=10, follow_redirects=True).content)

    # Bea's picture (green) alone, frame-accurate: 4.4 s at 30 fps; one flash.
    with av.open(str(local)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        frames = [
            (float(f.pts * f.time_base), f.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0))
            for f in container.decode(container.streams.video[0])
        ]
    assert abs(len(frames) - 4.4 * RATE) <= 1, len(frames)
    white = [t for t, c in frames if c.min() > 200]
    assert len(white) == 1, white
    coloured = [c for _, c in frames if c.min() <= 200]
    assert all(c[1] > 150 and c[0] < 80 and c[2] < 80 for c in coloured), coloured[:3]
    # The room's sound: the recorded hosts' tones (Dan's never), in the stream and the .m4a.
    samples, rate, first = decoded_audio(local)
    assert abs(len(samples) / rate - 4.4) <= 0.05, len(samples) / rate
    heard = tones_per_second(samples, rate, list(tones.values()))
    assert len(heard) == 4 and all(t == {300, 500, 700} for t in heard), heard
    # Picture and sound in step: Bea's beep (from the mix) against her flash, in the clip.
    skew_ms = (first + beep_onset(samples, rate, 2000) - white[0]) * 1000
    print(f"clip: beep minus flash {skew_ms:.1f} ms")
    assert abs(skew_ms) <= 40, skew_ms
    m4a = tmp_path / "clip.m4a"
    m4a.write_bytes(httpx.get(clip["audio_url"], timeout=10, follow_redirects=True).content)
    audio, rate, _ = decoded_audio(m4a)
    # FFmpeg's MP4 demuxer trims the start by the edit list, not the last frame's end: up to
    # one AAC frame more.
    assert -0.001 <= len(audio) / rate - clip["duration_s"] <= 1024 / rate, len(audio) / rate
    heard = tones_per_second(audio, rate, list(tones.values()))
    assert len(heard) == 4 and all(t == {300, 500, 700} for t in heard), heard

    # Clear refusals, each saying why.
    def refused(seat: int, start_s: float = 4.5, end_s: float = 6.0) -> tuple[int, str]:
        reply = httpx.post(
            f"{service.api}/api/recordings/{rid}/clips",
            json={"title": "x", "start_s": start_s, "end_s": end_s, "seat": seat},
            headers=auth(token),
            timeout=10,
        )
        return reply.status_code, reply.json()["detail"]

    code, why = refused(5)
    assert code == 404 and "nobody sat in seat 5" in why, why
    code, why = refused(4)
    assert code == 422 and "seat 4 (Dan) was not recorded" in why, why
    code, why = refused(3)
    assert code == 422 and "seat 3 (Cai) has no video" in why, why
    code, why = refused(2, 0.5, 2.0)  # before Bea joined
    assert code == 422 and "seat 2 (Bea) has no video in [0.5, 2) s" in why, why

    # Bea removed from the recording: no clip can show her from then on; the one made stays.
    removal = httpx.delete(
        f"{service.api}/api/recordings/{rid}/hosts/2", headers=auth(token), timeout=10
    )
    assert removal.status_code == 202, removal.text
    job_id = removal.json()["job_id"]
    code, why = refused(2)
    assert code in (409, 410), why  # being removed, then removed
    wait_until(
        lambda: service.catalog().job(job_id).status == "done", timeout=60, what="the removal"
    )
    code, why = refused(2)
    assert code == 410 and "seat 2 was removed" in why, why
    assert httpx.get(clip["playback_url"], timeout=10).status_code == 200


def seat_clip(service: Service, token: str, rid: str, start_s, end_s, *, seat: int) -> dict:
    reply = httpx.post(
        f"{service.api}/api/recordings/{rid}/clips",
        json={"title": "One host", "start_s": start_s, "end_s": end_s, "seat": seat},
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    assert reply.json()["seat"] == seat
    return wait_until(
        lambda: clip_done(reply.json()["status_url"], token), timeout=90, what="the clip"
    )
